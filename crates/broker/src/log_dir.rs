//! Partition directories on disk: `<data_dir>/<topic>-<partition>`, each bound
//! to its topic by a `partition.metadata` file in Kafka's format
//! (`version: 0`, then the topic id as URL-safe base64 without padding).
//!
//! * A directory is only opened for the topic id it is bound to. One bound to
//!   another id, or to none, is an orphan (what a crash between a deletion's
//!   metadata commit and its rename leaves, and a re-created topic, blind
//!   ones included, would reuse the name): it is renamed aside to
//!   `<dir>.<random>-stray`, with a log line, and never adopted.
//! * At startup [`sweep`] sets aside every partition directory that metadata
//!   does not list, and binds the unbound ones it does list: directories
//!   written before the binding existed are adopted once.
//! * Creations, renames and deletions fsync the parent directory, so a crash
//!   cannot undo them behind the metadata log's back.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use uuid::Uuid;
use veil_meta::MetaState;

/// The binding file, named as Kafka names it.
pub const BINDING_FILE: &str = "partition.metadata";
/// Directories of deleted partitions awaiting removal end with this.
const DELETE_SUFFIX: &str = "-delete";
/// Orphaned partition directories are kept under names ending with this.
const STRAY_SUFFIX: &str = "-stray";

/// The directory of one partition: `<data_dir>/<topic>-<partition>`.
pub fn partition_dir(data_dir: &Path, topic: &str, partition: i32) -> PathBuf {
    data_dir.join(format!("{topic}-{partition}"))
}

/// Kafka's text form of a topic id.
fn kafka_id(id: Uuid) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(id.as_bytes())
}

/// What a directory says about its topic.
#[derive(Debug, PartialEq, Eq)]
enum Binding {
    /// No such directory.
    Missing,
    /// A directory without a binding file.
    Unbound,
    Bound(Uuid),
}

fn read_binding(dir: &Path) -> io::Result<Binding> {
    if !dir.is_dir() {
        return Ok(Binding::Missing);
    }
    let text = match fs::read_to_string(dir.join(BINDING_FILE)) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Binding::Unbound),
        Err(e) => return Err(e),
    };
    parse_binding(&text).map(Binding::Bound).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "{} is not `version: 0` and a topic id",
                dir.join(BINDING_FILE).display()
            ),
        )
    })
}

fn parse_binding(text: &str) -> Option<Uuid> {
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    if lines.next()? != "version: 0" {
        return None;
    }
    let id = lines.next()?.strip_prefix("topic_id:")?.trim();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(id)
        .ok()?;
    lines
        .next()
        .is_none()
        .then(|| Uuid::from_slice(&bytes).ok())
        .flatten()
}

/// Writes the binding durably: a temporary file, fsynced, renamed over, and
/// the directory fsynced.
fn write_binding(dir: &Path, id: Uuid) -> io::Result<()> {
    let tmp = dir.join(format!("{BINDING_FILE}.tmp"));
    {
        let mut f = fs::File::create(&tmp)?;
        write!(f, "version: 0\ntopic_id: {}\n", kafka_id(id))?;
        f.sync_all()?;
    }
    fs::rename(&tmp, dir.join(BINDING_FILE))?;
    sync_dir(dir)
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    fs::File::open(dir)?.sync_all()
}

/// Makes `dir` a directory bound to `topic_id`, ready for the log to open:
/// kept if already bound to it, created if absent, and anything else set
/// aside first. A binding file that cannot be read is an error (the
/// partition goes offline) rather than a guess.
pub fn prepare(data_dir: &Path, dir: &Path, topic_id: Uuid) -> io::Result<()> {
    match read_binding(dir)? {
        Binding::Bound(id) if id == topic_id => return Ok(()),
        Binding::Missing => {}
        Binding::Bound(other) => {
            set_aside(
                data_dir,
                dir,
                &format!("bound to topic id {}", kafka_id(other)),
            )?;
        }
        Binding::Unbound => {
            set_aside(data_dir, dir, "not bound to any topic id")?;
        }
    }
    fs::create_dir(dir)?;
    write_binding(dir, topic_id)?;
    sync_dir(data_dir)
}

/// The directory name and topic id of every partition metadata lists.
pub fn expected(state: &MetaState, node_id: i32) -> BTreeMap<String, Uuid> {
    state
        .topics()
        .flat_map(|t| {
            t.assignments
                .iter()
                .enumerate()
                .filter(move |(_, a)| a.replicas.contains(&node_id))
                .map(move |(p, _)| (format!("{}-{p}", t.name), t.topic_id))
        })
        .collect()
}

/// A name a partition directory could have: a topic name, `-`, an index.
fn looks_like_partition_dir(name: &str) -> bool {
    name.rsplit_once('-').is_some_and(|(topic, index)| {
        !topic.is_empty()
            && !index.is_empty()
            && index.bytes().all(|b| b.is_ascii_digit())
            && topic
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    })
}

/// At startup, before any log is opened: removes deletions a crash
/// interrupted, binds the unbound directories metadata lists, and sets aside
/// every other partition directory.
pub fn sweep(data_dir: &Path, expected: &BTreeMap<String, Uuid>) -> io::Result<()> {
    let entries = match fs::read_dir(data_dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let path = entry.path();
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        if !path.is_dir() {
            continue;
        }
        if name.ends_with(DELETE_SUFFIX) {
            remove_now(data_dir, &path);
            continue;
        }
        match expected.get(&name) {
            Some(&id) => match read_binding(&path) {
                Ok(Binding::Unbound) => {
                    write_binding(&path, id)?;
                    tracing::info!(dir = %path.display(), topic_id = %kafka_id(id),
                        "bound a partition directory written before topic ids were recorded");
                }
                Ok(Binding::Bound(other)) if other != id => {
                    set_aside(
                        data_dir,
                        &path,
                        &format!("bound to topic id {}", kafka_id(other)),
                    )?;
                }
                // Opening the log reports an unreadable binding.
                Ok(_) | Err(_) => {}
            },
            None if looks_like_partition_dir(&name) => {
                set_aside(data_dir, &path, "metadata lists no such partition")?;
            }
            None => {}
        }
    }
    Ok(())
}

/// Renames an orphaned partition directory aside (kept, never deleted).
fn set_aside(data_dir: &Path, dir: &Path, reason: &str) -> io::Result<PathBuf> {
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let stray = data_dir.join(format!("{name}.{}{STRAY_SUFFIX}", Uuid::new_v4().simple()));
    fs::rename(dir, &stray)?;
    sync_dir(data_dir)?;
    tracing::warn!(dir = %dir.display(), kept_in = %stray.display(), reason,
        "set aside an orphaned partition directory; its records will not be served");
    Ok(stray)
}

/// A deleted partition's directory: renamed at once (so a topic of the same
/// name can be created), removed in the background.
pub fn remove(data_dir: &Path, dir: &Path, topic_id: Uuid) {
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let doomed = data_dir.join(format!("{name}.{}{DELETE_SUFFIX}", topic_id.simple()));
    match fs::rename(dir, &doomed).and_then(|()| sync_dir(data_dir)) {
        Ok(()) => {
            let data_dir = data_dir.to_owned();
            std::thread::spawn(move || remove_now(&data_dir, &doomed));
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => {
            tracing::warn!(dir = %dir.display(), error = %e, "could not move deleted partition aside");
        }
    }
}

fn remove_now(data_dir: &Path, doomed: &Path) {
    if let Err(e) = fs::remove_dir_all(doomed).and_then(|()| sync_dir(data_dir)) {
        tracing::warn!(dir = %doomed.display(), error = %e, "could not remove deleted partition");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bindings_use_kafkas_format() {
        let dir = tempfile::tempdir().unwrap();
        let id = Uuid::from_bytes([7; 16]);
        let p = dir.path().join("t-0");
        prepare(dir.path(), &p, id).unwrap();
        let text = fs::read_to_string(p.join(BINDING_FILE)).unwrap();
        assert_eq!(text, "version: 0\ntopic_id: BwcHBwcHBwcHBwcHBwcHBw\n");
        assert_eq!(read_binding(&p).unwrap(), Binding::Bound(id));
        assert_eq!(
            parse_binding("version: 0\ntopic_id: BwcHBwcHBwcHBwcHBwcHBw"),
            Some(id)
        );
        for bad in [
            "",
            "version: 1\ntopic_id: BwcHBwcHBwcHBwcHBwcHBw\n",
            "version: 0\ntopic_id: nope\n",
            "version: 0\n",
            "version: 0\ntopic_id: BwcHBwcHBwcHBwcHBwcHBw\nmore\n",
        ] {
            assert_eq!(parse_binding(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn another_topics_directory_is_set_aside_never_adopted() {
        let dir = tempfile::tempdir().unwrap();
        let (old, new) = (Uuid::from_bytes([1; 16]), Uuid::from_bytes([2; 16]));
        let p = dir.path().join("t-0");
        prepare(dir.path(), &p, old).unwrap();
        fs::write(p.join("00000000000000000000.log"), b"old records").unwrap();
        prepare(dir.path(), &p, new).unwrap();
        assert_eq!(read_binding(&p).unwrap(), Binding::Bound(new));
        assert!(!p.join("00000000000000000000.log").exists());
        let strays: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("t-0.") && n.ends_with(STRAY_SUFFIX))
            .collect();
        assert_eq!(strays.len(), 1);
        // An unreadable binding is an error, not a guess.
        fs::write(p.join(BINDING_FILE), "garbage").unwrap();
        assert!(prepare(dir.path(), &p, new).is_err());
    }

    #[test]
    fn sweep_adopts_listed_directories_once_and_sets_orphans_aside() {
        let dir = tempfile::tempdir().unwrap();
        let id = Uuid::from_bytes([3; 16]);
        for name in [
            "kept-0",
            "orphan-0",
            "meta",
            "x-0.abc-stray",
            "gone-1.ff-delete",
        ] {
            fs::create_dir(dir.path().join(name)).unwrap();
        }
        let expected = BTreeMap::from([("kept-0".to_owned(), id)]);
        sweep(dir.path(), &expected).unwrap();
        assert_eq!(
            read_binding(&dir.path().join("kept-0")).unwrap(),
            Binding::Bound(id)
        );
        assert!(!dir.path().join("orphan-0").exists());
        assert!(!dir.path().join("gone-1.ff-delete").exists());
        assert!(dir.path().join("meta").exists());
        assert!(dir.path().join("x-0.abc-stray").exists());
        let names: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(
            names
                .iter()
                .any(|n| n.starts_with("orphan-0.") && n.ends_with(STRAY_SUFFIX)),
            "{names:?}"
        );
        assert!(looks_like_partition_dir("a.b_c-d-12"));
        assert!(!looks_like_partition_dir("groups"));
        assert!(!looks_like_partition_dir("t-0.5f3e-stray"));
    }
}
