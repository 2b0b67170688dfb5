//! Durable committed offsets and group metadata in `<data_dir>/groups/`.
//!
//! `groups.log` holds [`codec`] entries in CRC frames (`veil_meta::framing`);
//! `snapshot.log` holds the same kind of entries describing the whole state,
//! replaced atomically, after which the log is emptied. Replay = snapshot
//! then log, each record applied in order; a torn last frame is truncated.
//! Every entry is at most [`codec::MAX_RECORD_BYTES`], so nothing written
//! here is ever too large to read back.
//!
//! Stores written before the binary format hold JSON records. They are read
//! as they are (frames of any size) and [`GroupStore::needs_rewrite`] asks
//! for a snapshot in the binary format right after the replay.
//!
//! Writes happen under the coordinator's lock (so records keep their order);
//! the fsync runs afterwards on a cloned handle, outside the lock.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use veil_meta::framing;

use super::codec::{self, Assembler, Entry, Malformed};
use super::record::Record;

const LOG_FILE: &str = "groups.log";
const SNAPSHOT_FILE: &str = "snapshot.log";
/// Compact into a snapshot after this many entries.
const SNAPSHOT_EVERY: u64 = 10_000;
/// Frames as large as this are read back: JSON records of the format before
/// could outgrow `framing::MAX_FRAME`, and such stores must still open.
const LEGACY_MAX_FRAME: usize = 256 << 20;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("group store i/o error: {0}")]
    Io(#[from] std::io::Error),
    #[error("group store {path} is corrupt at byte {position}: {reason}")]
    Corrupt {
        path: PathBuf,
        position: usize,
        reason: String,
    },
    #[error("the group store failed to sync earlier and refuses writes")]
    Poisoned,
    #[error("a group record cannot be stored: {0}")]
    Unencodable(#[from] Malformed),
}

#[derive(Debug)]
pub struct GroupStore {
    dir: PathBuf,
    log: File,
    since_snapshot: u64,
    poisoned: bool,
    /// Records were read in the JSON format; write them again as entries.
    legacy: bool,
}

/// What one file held.
struct Replayed {
    valid_len: usize,
    records: Vec<Record>,
    entries: u64,
    legacy: bool,
}

impl GroupStore {
    /// Opens the store and returns every record to replay, in order.
    pub fn open(dir: &Path) -> Result<(GroupStore, Vec<Record>), StoreError> {
        fs::create_dir_all(dir)?;
        let mut records = Vec::new();
        let mut legacy = false;
        let snapshot_path = dir.join(SNAPSHOT_FILE);
        match fs::read(&snapshot_path) {
            Ok(bytes) => {
                let replayed = replay(&snapshot_path, &bytes, true)?;
                if replayed.valid_len != bytes.len() {
                    // Snapshots are renamed into place whole; a short one is damage.
                    return Err(StoreError::Corrupt {
                        path: snapshot_path,
                        position: replayed.valid_len,
                        reason: "truncated snapshot".into(),
                    });
                }
                legacy |= replayed.legacy;
                records.extend(replayed.records);
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
        let log_path = dir.join(LOG_FILE);
        let mut log = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&log_path)?;
        let mut bytes = Vec::new();
        log.read_to_end(&mut bytes)?;
        let replayed = replay(&log_path, &bytes, false)?;
        if replayed.valid_len < bytes.len() {
            tracing::warn!(path = %log_path.display(), position = replayed.valid_len,
                dropped = bytes.len() - replayed.valid_len, "truncating a torn group store record");
            log.set_len(replayed.valid_len as u64)?;
            log.sync_all()?;
        }
        legacy |= replayed.legacy;
        records.extend(replayed.records);
        Ok((
            GroupStore {
                dir: dir.to_owned(),
                log,
                since_snapshot: replayed.entries,
                poisoned: false,
                legacy,
            },
            records,
        ))
    }

    /// Whether the store holds records of the JSON format, which the next
    /// [`GroupStore::snapshot`] replaces.
    pub fn needs_rewrite(&self) -> bool {
        self.legacy
    }

    /// Appends records (page cache only); returns a handle to fsync them with.
    /// A record that cannot be encoded fails the whole append, which then
    /// writes nothing.
    pub fn append(&mut self, records: &[Record]) -> Result<File, StoreError> {
        if self.poisoned {
            return Err(StoreError::Poisoned);
        }
        let (buf, entries) = frames(records)?;
        if let Err(e) = self.log.write_all(&buf) {
            self.poisoned = true;
            return Err(e.into());
        }
        self.since_snapshot += entries;
        Ok(self.log.try_clone()?)
    }

    /// Marks the store failed: after a failed fsync nothing is acknowledged.
    pub fn poison(&mut self) {
        self.poisoned = true;
    }

    pub fn wants_snapshot(&self) -> bool {
        self.since_snapshot >= SNAPSHOT_EVERY
    }

    /// Replaces the snapshot with `state` (the whole live state as records)
    /// and empties the log.
    pub fn snapshot(&mut self, state: &[Record]) -> Result<(), StoreError> {
        if self.poisoned {
            return Err(StoreError::Poisoned);
        }
        let (buf, _) = frames(state)?;
        framing::write_atomically(&self.dir, SNAPSHOT_FILE, &buf)?;
        // The log's records are all in the snapshot now. A crash before the
        // truncation replays them again on top of it: harmless, since every
        // record sets state rather than adding to it.
        self.log.set_len(0)?;
        self.log.sync_all()?;
        self.since_snapshot = 0;
        self.legacy = false;
        Ok(())
    }
}

/// Fsyncs a handle returned by [`GroupStore::append`].
pub fn sync(handle: &File) -> std::io::Result<()> {
    handle.sync_data()
}

/// Every record's entries, framed; and how many entries that is.
fn frames(records: &[Record]) -> Result<(Vec<u8>, u64), StoreError> {
    let mut buf = Vec::new();
    let mut entries = 0;
    for r in records {
        for entry in codec::encode(r)? {
            framing::encode(&entry, &mut buf);
            entries += 1;
        }
    }
    Ok((buf, entries))
}

/// Decodes one file. In a snapshot (`whole`) a group cut short is damage; at
/// the end of the log it is the torn tail of a write never acknowledged.
fn replay(path: &Path, bytes: &[u8], whole: bool) -> Result<Replayed, StoreError> {
    let corrupt = |position: usize, reason: String| StoreError::Corrupt {
        path: path.to_owned(),
        position,
        reason,
    };
    let scan = framing::scan_with_limit(bytes, LEGACY_MAX_FRAME)
        .map_err(|d| corrupt(d.position, d.reason))?;
    let mut replayed = Replayed {
        valid_len: scan.valid_len,
        records: Vec::with_capacity(scan.frames.len()),
        entries: scan.frames.len() as u64,
        legacy: false,
    };
    let mut assembler = Assembler::default();
    for (position, payload) in scan.frames {
        let mut entry = codec::decode(payload).map_err(|e| corrupt(position, e.0))?;
        if payload.first() == Some(&b'{') {
            replayed.legacy = true;
            let Some(fitted) = fit_legacy(entry) else {
                continue;
            };
            entry = fitted;
        } else if payload.len() > codec::MAX_RECORD_BYTES {
            return Err(corrupt(position, "entry beyond the record cap".into()));
        }
        if let Some(r) = assembler.push(entry).map_err(|e| corrupt(position, e.0))? {
            replayed.records.push(r);
        }
    }
    for group in assembler.finish() {
        if whole {
            return Err(corrupt(
                bytes.len(),
                format!("group {group} lacks some of its members"),
            ));
        }
        tracing::warn!(path = %path.display(), group = %group,
            "dropping group metadata whose members were torn off; its previous state stands");
    }
    Ok(replayed)
}

/// A JSON record that the binary format cannot hold (fields beyond its caps,
/// which older brokers accepted) loses its members, or is dropped, so that
/// the rewrite succeeds; members then simply rejoin.
fn fit_legacy(entry: Entry) -> Option<Entry> {
    let Entry::Record(mut record) = entry else {
        return Some(entry);
    };
    if codec::encode(&record).is_ok() {
        return Some(Entry::Record(record));
    }
    if let Record::Group(g) = &mut record {
        g.members.clear();
        if codec::encode(&record).is_ok() {
            tracing::warn!(group = %record.group_id(),
                "an old group record exceeds the record caps; its members must rejoin");
            return Some(Entry::Record(record));
        }
    }
    tracing::warn!(group = %record.group_id(), "dropping an old group record that exceeds the record caps");
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::group::record::{CommittedOffset, GroupRecord, MemberRecord};

    fn offsets(group: &str, offset: i64) -> Record {
        Record::Offsets {
            group_id: group.into(),
            offsets: vec![(
                "t".into(),
                0,
                CommittedOffset {
                    offset,
                    leader_epoch: 3,
                    metadata: "m".into(),
                    commit_timestamp: 1,
                    expire_timestamp: -1,
                },
            )],
        }
    }

    #[test]
    fn reopen_replays_snapshot_then_log() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, recs) = GroupStore::open(dir.path()).unwrap();
        assert!(recs.is_empty());
        sync(&store.append(&[offsets("a", 1)]).unwrap()).unwrap();
        store.snapshot(&[offsets("a", 1)]).unwrap();
        sync(
            &store
                .append(&[
                    offsets("b", 2),
                    Record::DeleteGroup {
                        group_id: "a".into(),
                    },
                ])
                .unwrap(),
        )
        .unwrap();
        drop(store);
        let (_, recs) = GroupStore::open(dir.path()).unwrap();
        assert_eq!(
            recs,
            vec![
                offsets("a", 1),
                offsets("b", 2),
                Record::DeleteGroup {
                    group_id: "a".into()
                }
            ]
        );
    }

    #[test]
    fn torn_tail_is_truncated_and_later_appends_survive() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, _) = GroupStore::open(dir.path()).unwrap();
        store.append(&[offsets("a", 1), offsets("a", 2)]).unwrap();
        drop(store);
        let path = dir.path().join(LOG_FILE);
        let full = fs::read(&path).unwrap();
        fs::write(&path, &full[..full.len() - 5]).unwrap();
        let (mut store, recs) = GroupStore::open(dir.path()).unwrap();
        assert_eq!(recs, vec![offsets("a", 1)]);
        store.append(&[offsets("a", 3)]).unwrap();
        drop(store);
        let (_, recs) = GroupStore::open(dir.path()).unwrap();
        assert_eq!(recs, vec![offsets("a", 1), offsets("a", 3)]);
    }

    #[test]
    fn damage_before_the_end_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, _) = GroupStore::open(dir.path()).unwrap();
        store.append(&[offsets("a", 1), offsets("a", 2)]).unwrap();
        drop(store);
        let path = dir.path().join(LOG_FILE);
        let mut bytes = fs::read(&path).unwrap();
        bytes[12] ^= 0xff;
        fs::write(&path, &bytes).unwrap();
        assert!(matches!(
            GroupStore::open(dir.path()),
            Err(StoreError::Corrupt { .. })
        ));
    }

    fn fixture(dir: &Path) {
        let from = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/groups-json");
        for name in [LOG_FILE, SNAPSHOT_FILE] {
            fs::copy(from.join(name), dir.join(name)).unwrap();
        }
    }

    fn committed(offset: i64, metadata: &str) -> CommittedOffset {
        CommittedOffset {
            offset,
            leader_epoch: 2,
            metadata: metadata.into(),
            commit_timestamp: 1_700_000_000_500,
            expire_timestamp: -1,
        }
    }

    fn fixture_records() -> Vec<Record> {
        let group = |generation_id| {
            Record::Group(GroupRecord {
                group_id: "orders-app".into(),
                protocol_type: Some("consumer".into()),
                protocol_name: Some("range".into()),
                generation_id,
                leader: Some("app-1".into()),
                state_timestamp: 1_700_000_000_000,
                members: vec![MemberRecord {
                    member_id: "app-1".into(),
                    instance_id: Some("instance-1".into()),
                    client_id: "app".into(),
                    client_host: "/127.0.0.1".into(),
                    rebalance_timeout_ms: 30_000,
                    session_timeout_ms: 10_000,
                    subscription: vec![0, 1, 2, 255, b'{'],
                    assignment: b"all of it".to_vec(),
                }],
            })
        };
        let offsets = |group: &str, partition, o: CommittedOffset| Record::Offsets {
            group_id: group.into(),
            offsets: vec![("events".into(), partition, o)],
        };
        vec![
            group(1),
            offsets("orders-app", 0, committed(10, "m0")),
            offsets("gone", 0, committed(1, "")),
            group(2),
            offsets("orders-app", 1, committed(21, "\u{1}caf\u{e9}\"q\"")),
            offsets("orders-app", 2, committed(30, "")),
            Record::DeleteOffsets {
                group_id: "orders-app".into(),
                partitions: vec![("events".into(), 2)],
            },
            Record::DeleteGroup {
                group_id: "gone".into(),
            },
        ]
    }

    #[test]
    fn a_json_store_of_the_previous_format_is_read_then_rewritten() {
        let dir = tempfile::tempdir().unwrap();
        fixture(dir.path());
        let (mut store, recs) = GroupStore::open(dir.path()).unwrap();
        assert_eq!(recs, fixture_records());
        assert!(store.needs_rewrite());
        store.snapshot(&recs).unwrap();
        assert!(!store.needs_rewrite());
        drop(store);
        let snapshot = fs::read(dir.path().join(SNAPSHOT_FILE)).unwrap();
        assert_eq!(snapshot[8], codec::VERSION, "binary entries now");
        assert_eq!(fs::metadata(dir.path().join(LOG_FILE)).unwrap().len(), 0);
        let (store, again) = GroupStore::open(dir.path()).unwrap();
        assert_eq!(again, recs);
        assert!(!store.needs_rewrite());
    }

    #[test]
    fn a_json_record_beyond_the_old_frame_cap_is_read_back() {
        // What a 700-entry commit of 4 KiB of \x01 each left: 17 MB of JSON.
        let entry = format!(
            r#"["t",0,{{"offset":1,"leader_epoch":-1,"metadata":"{}","commit_timestamp":1,"expire_timestamp":-1}}]"#,
            "\\u0001".repeat(4096)
        );
        let json = format!(
            r#"{{"Offsets":{{"group_id":"g","offsets":[{}]}}}}"#,
            vec![entry; 700].join(",")
        );
        assert!(json.len() > framing::MAX_FRAME);
        let dir = tempfile::tempdir().unwrap();
        let mut bytes = Vec::new();
        framing::encode(json.as_bytes(), &mut bytes);
        fs::write(dir.path().join(LOG_FILE), bytes).unwrap();
        let (store, recs) = GroupStore::open(dir.path()).unwrap();
        assert!(store.needs_rewrite());
        let Record::Offsets { offsets, .. } = &recs[0] else {
            panic!("offsets")
        };
        assert_eq!(offsets.len(), 700);
        assert_eq!(offsets[0].2.metadata, "\u{1}".repeat(4096));
    }

    #[test]
    fn many_partitions_of_large_metadata_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, _) = GroupStore::open(dir.path()).unwrap();
        let record = Record::Offsets {
            group_id: "g".into(),
            offsets: (0..700)
                .map(|p| {
                    (
                        "t".to_owned(),
                        p,
                        committed(i64::from(p), &"\u{1}".repeat(4096)),
                    )
                })
                .collect(),
        };
        sync(&store.append(std::slice::from_ref(&record)).unwrap()).unwrap();
        drop(store);
        let (_, recs) = GroupStore::open(dir.path()).unwrap();
        let mut merged = Vec::new();
        for r in recs {
            let Record::Offsets { offsets, .. } = r else {
                panic!("offsets")
            };
            merged.extend(offsets);
        }
        let Record::Offsets { offsets, .. } = record else {
            unreachable!()
        };
        assert_eq!(merged, offsets);
    }
}
