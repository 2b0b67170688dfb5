//! Durable single-node metadata: an append-only command log plus snapshots.
//!
//! `meta.log` holds frames of `u32 length ‖ u32 crc32c ‖ json {index, command}`.
//! `snapshot.json` holds a whole [`MetaState`] (with the index it covers),
//! replaced atomically. A commit is checked, written, fsynced, and only then
//! applied, so a command that was acknowledged survives a crash.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::{framing, Error, MetaCommand, MetaState, Result};

const LOG_FILE: &str = "meta.log";
const SNAPSHOT_FILE: &str = "snapshot.json";
/// Write a snapshot and empty the log after this many commands.
const SNAPSHOT_EVERY: u64 = 1000;

#[derive(Serialize, Deserialize)]
struct Entry {
    index: u64,
    command: MetaCommand,
}

#[derive(Debug)]
pub struct MetaStore {
    dir: PathBuf,
    log: File,
    state: MetaState,
    since_snapshot: u64,
}

impl MetaStore {
    /// Opens (or creates) the store in `dir` and replays it.
    pub fn open(dir: &Path) -> Result<MetaStore> {
        fs::create_dir_all(dir)?;
        let snapshot_path = dir.join(SNAPSHOT_FILE);
        let mut state = match fs::read(&snapshot_path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| Error::Corrupt {
                path: snapshot_path.clone(),
                position: 0,
                reason: e.to_string(),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => MetaState::default(),
            Err(e) => return Err(e.into()),
        };
        let log_path = dir.join(LOG_FILE);
        let mut log = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&log_path)?;
        let mut bytes = Vec::new();
        log.read_to_end(&mut bytes)?;
        let (valid_len, replayed) = replay(&log_path, &bytes, &mut state)?;
        if valid_len < bytes.len() {
            tracing::warn!(
                path = %log_path.display(),
                position = valid_len,
                dropped = bytes.len() - valid_len,
                "truncating a torn metadata log record"
            );
            log.set_len(valid_len as u64)?;
            log.sync_all()?;
        }
        Ok(MetaStore {
            dir: dir.to_owned(),
            log,
            state,
            since_snapshot: replayed,
        })
    }

    pub fn state(&self) -> &MetaState {
        &self.state
    }

    /// Checks, persists (fsync) and applies `cmd`; returns its index.
    pub fn commit(&mut self, cmd: MetaCommand) -> Result<u64> {
        self.state.check(&cmd)?;
        let index = self.state.last_applied() + 1;
        let payload = serde_json::to_vec(&Entry {
            index,
            command: cmd.clone(),
        })
        .map_err(|e| Error::Io(std::io::Error::other(e)))?;
        let mut frame = Vec::new();
        framing::encode(&payload, &mut frame);
        self.log.write_all(&frame)?;
        self.log.sync_data()?;
        self.state.apply(index, &cmd)?;
        self.since_snapshot += 1;
        if self.since_snapshot >= SNAPSHOT_EVERY {
            self.snapshot()?;
        }
        Ok(index)
    }

    /// Writes the whole state atomically and empties the log.
    pub fn snapshot(&mut self) -> Result<()> {
        let bytes =
            serde_json::to_vec(&self.state).map_err(|e| Error::Io(std::io::Error::other(e)))?;
        crate::framing::write_atomically(&self.dir, SNAPSHOT_FILE, &bytes)?;
        // Replay skips indexes the snapshot covers, so a crash between the
        // rename and this truncation is harmless.
        self.log.set_len(0)?;
        self.log.sync_all()?;
        self.since_snapshot = 0;
        Ok(())
    }
}

/// Applies every complete frame after the snapshot; returns the length of the
/// valid prefix and how many commands were applied. Only a damaged *last*
/// frame is a torn write; damage followed by more data is corruption.
fn replay(path: &Path, bytes: &[u8], state: &mut MetaState) -> Result<(usize, u64)> {
    let scan = framing::scan(bytes).map_err(|d| Error::Corrupt {
        path: path.to_owned(),
        position: d.position as u64,
        reason: d.reason,
    })?;
    let mut applied = 0u64;
    for (pos, payload) in scan.frames {
        let corrupt = |reason: String| Error::Corrupt {
            path: path.to_owned(),
            position: pos as u64,
            reason,
        };
        let entry: Entry = serde_json::from_slice(payload).map_err(|e| corrupt(e.to_string()))?;
        if entry.index > state.last_applied() {
            if entry.index != state.last_applied() + 1 {
                return Err(corrupt(format!(
                    "expected command {}, found {}",
                    state.last_applied() + 1,
                    entry.index
                )));
            }
            state
                .apply(entry.index, &entry.command)
                .map_err(|e| corrupt(format!("command does not apply: {e}")))?;
            applied += 1;
        }
    }
    Ok((scan.valid_len, applied))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TopicConfigs;
    use uuid::Uuid;

    fn create(name: &str) -> MetaCommand {
        MetaCommand::CreateTopic {
            name: name.into(),
            topic_id: Uuid::new_v4(),
            partitions: 2,
            replication_factor: 1,
            configs: TopicConfigs::new(),
        }
    }

    #[test]
    fn commits_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = MetaStore::open(dir.path()).unwrap();
        store.commit(create("a")).unwrap();
        store.commit(create("b")).unwrap();
        let id = store.state().topic("a").unwrap().topic_id;
        store
            .commit(MetaCommand::DeleteTopic {
                name: "a".into(),
                topic_id: id,
            })
            .unwrap();
        let before = store.state().clone();
        drop(store);
        let store = MetaStore::open(dir.path()).unwrap();
        assert_eq!(store.state(), &before);
        assert!(store.state().topic("b").is_some());
        assert_eq!(store.state().last_applied(), 3);
    }

    #[test]
    fn invalid_commands_are_not_persisted() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = MetaStore::open(dir.path()).unwrap();
        assert!(store
            .commit(MetaCommand::DeleteTopic {
                name: "x".into(),
                topic_id: Uuid::new_v4()
            })
            .is_err());
        assert_eq!(fs::metadata(dir.path().join(LOG_FILE)).unwrap().len(), 0);
    }

    #[test]
    fn snapshot_then_more_commands_replay() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = MetaStore::open(dir.path()).unwrap();
        store.commit(create("a")).unwrap();
        store.snapshot().unwrap();
        store.commit(create("b")).unwrap();
        let before = store.state().clone();
        drop(store);
        let store = MetaStore::open(dir.path()).unwrap();
        assert_eq!(store.state(), &before);
    }

    #[test]
    fn torn_last_frame_is_truncated_but_middle_damage_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = MetaStore::open(dir.path()).unwrap();
        store.commit(create("a")).unwrap();
        store.commit(create("b")).unwrap();
        drop(store);
        let path = dir.path().join(LOG_FILE);
        let full = fs::read(&path).unwrap();
        // Torn: cut the last frame short.
        fs::write(&path, &full[..full.len() - 3]).unwrap();
        let store = MetaStore::open(dir.path()).unwrap();
        assert!(store.state().topic("a").is_some());
        assert!(store.state().topic("b").is_none());
        drop(store);
        // Corrupt: flip a byte in the first of two frames.
        let mut damaged = full.clone();
        damaged[10] ^= 0xff;
        fs::write(&path, &damaged).unwrap();
        assert!(matches!(
            MetaStore::open(dir.path()),
            Err(Error::Corrupt { .. })
        ));
    }
}
