//! Durable committed offsets and group metadata in `<data_dir>/groups/`.
//!
//! `groups.log` holds [`Record`]s as JSON in CRC frames (`veil_meta::framing`);
//! `snapshot.log` holds the same kind of records describing the whole state,
//! replaced atomically, after which the log is emptied. Replay = snapshot
//! then log, each record applied in order; a torn last frame is truncated.
//!
//! Writes happen under the coordinator's lock (so records keep their order);
//! the fsync runs afterwards on a cloned handle, outside the lock.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use veil_meta::framing;

const LOG_FILE: &str = "groups.log";
const SNAPSHOT_FILE: &str = "snapshot.log";
/// Compact into a snapshot after this many records.
const SNAPSHOT_EVERY: u64 = 10_000;

/// A committed offset as stored and served by OffsetFetch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommittedOffset {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: String,
    pub commit_timestamp: i64,
    /// OffsetCommit v2–v4 could ask for its own retention; -1 otherwise.
    pub expire_timestamp: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberRecord {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub rebalance_timeout_ms: i32,
    pub session_timeout_ms: i32,
    /// The member's metadata for the group's selected protocol.
    pub subscription: Vec<u8>,
    pub assignment: Vec<u8>,
}

/// A group's metadata when it became Stable or Empty.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupRecord {
    pub group_id: String,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub generation_id: i32,
    pub leader: Option<String>,
    pub state_timestamp: i64,
    pub members: Vec<MemberRecord>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Record {
    Group(GroupRecord),
    Offsets {
        group_id: String,
        offsets: Vec<(String, i32, CommittedOffset)>,
    },
    DeleteOffsets {
        group_id: String,
        partitions: Vec<(String, i32)>,
    },
    DeleteGroup {
        group_id: String,
    },
}

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
}

#[derive(Debug)]
pub struct GroupStore {
    dir: PathBuf,
    log: File,
    since_snapshot: u64,
    poisoned: bool,
}

impl GroupStore {
    /// Opens the store and returns every record to replay, in order.
    pub fn open(dir: &Path) -> Result<(GroupStore, Vec<Record>), StoreError> {
        fs::create_dir_all(dir)?;
        let mut records = Vec::new();
        let snapshot_path = dir.join(SNAPSHOT_FILE);
        match fs::read(&snapshot_path) {
            Ok(bytes) => {
                let (valid, mut recs) = decode(&snapshot_path, &bytes)?;
                if valid != bytes.len() {
                    // Snapshots are renamed into place whole; a short one is damage.
                    return Err(StoreError::Corrupt {
                        path: snapshot_path,
                        position: valid,
                        reason: "truncated snapshot".into(),
                    });
                }
                records.append(&mut recs);
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
        let (valid, mut recs) = decode(&log_path, &bytes)?;
        if valid < bytes.len() {
            tracing::warn!(path = %log_path.display(), position = valid,
                dropped = bytes.len() - valid, "truncating a torn group store record");
            log.set_len(valid as u64)?;
            log.sync_all()?;
        }
        let since_snapshot = recs.len() as u64;
        records.append(&mut recs);
        Ok((
            GroupStore {
                dir: dir.to_owned(),
                log,
                since_snapshot,
                poisoned: false,
            },
            records,
        ))
    }

    /// Appends records (page cache only); returns a handle to fsync them with.
    pub fn append(&mut self, records: &[Record]) -> Result<File, StoreError> {
        if self.poisoned {
            return Err(StoreError::Poisoned);
        }
        let mut buf = Vec::new();
        for r in records {
            let payload = serde_json::to_vec(r).map_err(std::io::Error::other)?;
            framing::encode(&payload, &mut buf);
        }
        if let Err(e) = self.log.write_all(&buf) {
            self.poisoned = true;
            return Err(e.into());
        }
        self.since_snapshot += records.len() as u64;
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
        let mut buf = Vec::new();
        for r in state {
            let payload = serde_json::to_vec(r).map_err(std::io::Error::other)?;
            framing::encode(&payload, &mut buf);
        }
        framing::write_atomically(&self.dir, SNAPSHOT_FILE, &buf)?;
        // The log's records are all in the snapshot now. A crash before the
        // truncation replays them again on top of it: harmless, since every
        // record sets state rather than adding to it.
        self.log.set_len(0)?;
        self.log.sync_all()?;
        self.since_snapshot = 0;
        Ok(())
    }
}

/// Fsyncs a handle returned by [`GroupStore::append`].
pub fn sync(handle: &File) -> std::io::Result<()> {
    handle.sync_data()
}

fn decode(path: &Path, bytes: &[u8]) -> Result<(usize, Vec<Record>), StoreError> {
    let scan = framing::scan(bytes).map_err(|d| StoreError::Corrupt {
        path: path.to_owned(),
        position: d.position,
        reason: d.reason,
    })?;
    let mut records = Vec::with_capacity(scan.frames.len());
    for (position, payload) in scan.frames {
        records.push(
            serde_json::from_slice(payload).map_err(|e| StoreError::Corrupt {
                path: path.to_owned(),
                position,
                reason: e.to_string(),
            })?,
        );
    }
    Ok((scan.valid_len, records))
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
