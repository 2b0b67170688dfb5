//! The metadata state machine: committed entries applied to the shared
//! [`MetaView`], and snapshots of it.
//!
//! Applying is deterministic (the same entries give the same state on every
//! node). The state itself lives in memory; it is rebuilt on start from the
//! last snapshot plus the committed log tail, which openraft re-applies.
//!
//! `snapshot` (one file, replaced atomically) holds
//! `frame(meta json) ‖ u64 length ‖ u32 crc32c ‖ state json`: the metadata
//! is read without parsing the state, and the state bytes are exactly what
//! is streamed to a follower that needs the snapshot.

use std::fs;
use std::io::{self, Cursor};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use openraft::storage::RaftStateMachine;
use openraft::{EntryPayload, RaftLogId, RaftSnapshotBuilder, Snapshot, StorageIOError};

use super::view::{Changes, MetaView};
use super::{
    CommandOutcome, Entry, LogId, NodeId, SnapshotMeta, StorageError, StoredMembership, TypeConfig,
};
use crate::{framing, MetaState};

const SNAPSHOT_FILE: &str = "snapshot";

#[derive(Debug)]
pub struct MetaStateMachine {
    view: Arc<MetaView>,
    dir: PathBuf,
    last_applied: Option<LogId>,
    membership: StoredMembership,
    /// Counts snapshots so ids are unique even for the same log id.
    snapshots_built: u64,
}

/// A snapshot file, split into its parts.
struct StoredSnapshot {
    meta: SnapshotMeta,
    state: Vec<u8>,
}

fn encode_snapshot(meta: &SnapshotMeta, state: &[u8]) -> io::Result<Vec<u8>> {
    let meta_json = serde_json::to_vec(meta).map_err(io::Error::other)?;
    let mut out = Vec::with_capacity(meta_json.len() + state.len() + 24);
    framing::encode(&meta_json, &mut out);
    out.extend_from_slice(&(state.len() as u64).to_be_bytes());
    out.extend_from_slice(&crc32c::crc32c(state).to_be_bytes());
    out.extend_from_slice(state);
    Ok(out)
}

fn decode_snapshot(path: &Path, bytes: &[u8]) -> crate::Result<StoredSnapshot> {
    let corrupt = |reason: String| crate::Error::Corrupt {
        path: path.to_owned(),
        position: 0,
        reason,
    };
    // The first frame is the metadata; the state follows, outside any frame.
    if bytes.len() < 8 {
        return Err(corrupt("snapshot header is short".into()));
    }
    let meta_len = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize;
    let meta_crc = u32::from_be_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
    let Some(meta_json) = bytes.get(8..8 + meta_len) else {
        return Err(corrupt("snapshot metadata is short".into()));
    };
    if crc32c::crc32c(meta_json) != meta_crc {
        return Err(corrupt("snapshot metadata is damaged".into()));
    }
    let meta: SnapshotMeta =
        serde_json::from_slice(meta_json).map_err(|e| corrupt(e.to_string()))?;
    let rest = &bytes[8 + meta_json.len()..];
    if rest.len() < 12 {
        return Err(corrupt("snapshot state header is short".into()));
    }
    let len = u64::from_be_bytes(rest[..8].try_into().unwrap_or_default());
    let crc = u32::from_be_bytes(rest[8..12].try_into().unwrap_or_default());
    let state = &rest[12..];
    if state.len() as u64 != len || crc32c::crc32c(state) != crc {
        return Err(corrupt("snapshot state is damaged".into()));
    }
    Ok(StoredSnapshot {
        meta,
        state: state.to_vec(),
    })
}

fn read_snapshot(dir: &Path) -> crate::Result<Option<StoredSnapshot>> {
    let path = dir.join(SNAPSHOT_FILE);
    match fs::read(&path) {
        Ok(bytes) => decode_snapshot(&path, &bytes).map(Some),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e.into()),
    }
}

fn parse_state(path: &Path, bytes: &[u8]) -> crate::Result<MetaState> {
    serde_json::from_slice(bytes).map_err(|e| crate::Error::Corrupt {
        path: path.to_owned(),
        position: 0,
        reason: format!("snapshot state does not parse: {e}"),
    })
}

/// Writes `state` as the snapshot of `dir` (used to seed a migrated store).
pub fn write_snapshot(dir: &Path, meta: &SnapshotMeta, state: &MetaState) -> crate::Result<()> {
    fs::create_dir_all(dir)?;
    let bytes = serde_json::to_vec(state).map_err(io::Error::other)?;
    framing::write_atomically(dir, SNAPSHOT_FILE, &encode_snapshot(meta, &bytes)?)?;
    Ok(())
}

impl MetaStateMachine {
    /// Opens the state machine of `dir`: the last snapshot, if any, is the
    /// starting state; openraft re-applies the committed log after it.
    pub fn open(dir: &Path) -> crate::Result<MetaStateMachine> {
        fs::create_dir_all(dir)?;
        let (state, last_applied, membership) = match read_snapshot(dir)? {
            Some(s) => {
                let state = parse_state(&dir.join(SNAPSHOT_FILE), &s.state)?;
                (state, s.meta.last_log_id, s.meta.last_membership)
            }
            None => (MetaState::default(), None, StoredMembership::default()),
        };
        Ok(MetaStateMachine {
            view: Arc::new(MetaView::new(state)),
            dir: dir.to_owned(),
            last_applied,
            membership,
            snapshots_built: 0,
        })
    }

    /// Whether a snapshot (built, installed or migrated) exists.
    pub fn has_snapshot(&self) -> bool {
        self.dir.join(SNAPSHOT_FILE).exists()
    }

    /// The applied state, shared with the rest of the node.
    pub fn view(&self) -> Arc<MetaView> {
        Arc::clone(&self.view)
    }

    fn apply_one(&mut self, entry: Entry) -> CommandOutcome {
        let log_id = *entry.get_log_id();
        let index = log_id.index;
        self.last_applied = Some(log_id);
        match entry.payload {
            EntryPayload::Normal(cmd) => {
                let encoded = serde_json::to_vec(&cmd).unwrap_or_default();
                self.view.update(|state| {
                    let out = match state.apply(index, &cmd) {
                        Ok(()) => (Ok(()), cmd.changes()),
                        Err(e) => {
                            state.skip_to(index);
                            (Err(e.into()), Changes::default())
                        }
                    };
                    state.record_in_digest(index, &encoded);
                    out
                })
            }
            EntryPayload::Membership(m) => {
                self.membership = StoredMembership::new(Some(log_id), m);
                self.view.update(|state| {
                    state.skip_to(index);
                    ((), Changes::default())
                });
                Ok(())
            }
            EntryPayload::Blank => {
                self.view.update(|state| {
                    state.skip_to(index);
                    ((), Changes::default())
                });
                Ok(())
            }
        }
    }
}

fn sm_err(e: impl std::fmt::Display) -> StorageError {
    StorageIOError::<NodeId>::write_state_machine(&io::Error::other(e.to_string())).into()
}

/// Builds a snapshot from a copy of the state taken when it was asked for.
pub struct MetaSnapshotBuilder {
    dir: PathBuf,
    state: MetaState,
    meta: SnapshotMeta,
}

impl RaftSnapshotBuilder<TypeConfig> for MetaSnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let dir = self.dir.clone();
        let meta = self.meta.clone();
        let state = std::mem::take(&mut self.state);
        let bytes = tokio::task::spawn_blocking(move || -> io::Result<Vec<u8>> {
            let bytes = serde_json::to_vec(&state).map_err(io::Error::other)?;
            framing::write_atomically(&dir, SNAPSHOT_FILE, &encode_snapshot(&meta, &bytes)?)?;
            Ok(bytes)
        })
        .await
        .map_err(sm_err)?
        .map_err(|e| StorageIOError::<NodeId>::write_snapshot(Some(self.meta.signature()), &e))?;
        tracing::debug!(last_log_id = ?self.meta.last_log_id, bytes = bytes.len(), "metadata snapshot written");
        Ok(Snapshot {
            meta: self.meta.clone(),
            snapshot: Box::new(Cursor::new(bytes)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for MetaStateMachine {
    type SnapshotBuilder = MetaSnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        Ok((self.last_applied, self.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<CommandOutcome>, StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        Ok(entries.into_iter().map(|e| self.apply_one(e)).collect())
    }

    async fn get_snapshot_builder(&mut self) -> MetaSnapshotBuilder {
        self.snapshots_built += 1;
        let snapshot_id = match self.last_applied {
            Some(l) => format!("{}-{}-{}", l.leader_id, l.index, self.snapshots_built),
            None => format!("none-{}", self.snapshots_built),
        };
        MetaSnapshotBuilder {
            dir: self.dir.clone(),
            state: self.view.clone_state(),
            meta: SnapshotMeta {
                last_log_id: self.last_applied,
                last_membership: self.membership.clone(),
                snapshot_id,
            },
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let bytes = snapshot.into_inner();
        let path = self.dir.join(SNAPSHOT_FILE);
        let mut state = parse_state(&path, &bytes).map_err(sm_err)?;
        if let Some(l) = meta.last_log_id {
            state.skip_to(l.index);
        }
        let dir = self.dir.clone();
        let owned_meta = meta.clone();
        tokio::task::spawn_blocking(move || -> io::Result<()> {
            framing::write_atomically(&dir, SNAPSHOT_FILE, &encode_snapshot(&owned_meta, &bytes)?)
        })
        .await
        .map_err(sm_err)?
        .map_err(|e| StorageIOError::<NodeId>::write_snapshot(Some(meta.signature()), &e))?;
        tracing::info!(last_log_id = ?meta.last_log_id, "installed a metadata snapshot from the leader");
        self.view.update(move |s| {
            *s = state;
            ((), Changes::ALL)
        });
        self.last_applied = meta.last_log_id;
        self.membership = meta.last_membership.clone();
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        let dir = self.dir.clone();
        let stored = tokio::task::spawn_blocking(move || read_snapshot(&dir))
            .await
            .map_err(sm_err)?
            .map_err(sm_err)?;
        Ok(stored.map(|s| Snapshot {
            meta: s.meta,
            snapshot: Box::new(Cursor::new(s.state)),
        }))
    }
}
