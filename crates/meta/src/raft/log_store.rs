//! The durable Raft log of the metadata quorum.
//!
//! Files in the store's directory:
//! * `raft.log` — CRC frames ([`crate::framing`]), one JSON [`Entry`] each,
//!   in index order. Entries up to the purged log id may still be at its
//!   head until the file is next rewritten; they are skipped on open.
//! * `vote` — the last vote, replaced atomically and fsynced before
//!   openraft hears it was saved (a vote forgotten in a crash could be cast
//!   twice in one term).
//! * `purged` — the last purged log id (everything up to it is in a
//!   snapshot), replaced atomically.
//! * `committed` — a hint of the committed log id so a restarted node
//!   re-applies what it knows is committed without waiting for a leader; not
//!   fsynced (losing it only delays applying), and failing to write it is
//!   logged, not fatal.
//!
//! Appends are written and fdatasynced before openraft is told they are
//! durable, so a voter never acknowledges an entry a crash could take away.
//! A failed write or fsync poisons the store: every later call fails, and
//! openraft stops the node rather than let it vote on a log it cannot trust.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::ops::RangeBounds;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{LogState, RaftLogId, RaftLogReader, StorageIOError};
use parking_lot::Mutex;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{Entry, LogId, NodeId, StorageError, TypeConfig, Vote};
use crate::framing;

const LOG_FILE: &str = "raft.log";
const VOTE_FILE: &str = "vote";
const PURGED_FILE: &str = "purged";
const COMMITTED_FILE: &str = "committed";
/// Rewrite `raft.log` without its purged head once that head is this large.
const REWRITE_AFTER_BYTES: u64 = 1 << 20;
/// The largest entry the store writes: the reader refuses frames over
/// [`framing::MAX_FRAME`], so nothing larger may ever reach the disk.
pub const MAX_ENTRY_BYTES: usize = framing::MAX_FRAME;

/// The append-only file under the log. A seam for tests that inject a full
/// disk or a failing fsync.
pub trait LogFile: Send + 'static {
    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()>;
    fn sync_data(&mut self) -> io::Result<()>;
    fn set_len(&mut self, len: u64) -> io::Result<()>;
}

impl LogFile for File {
    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        Write::write_all(self, bytes)
    }
    fn sync_data(&mut self) -> io::Result<()> {
        File::sync_data(self)
    }
    fn set_len(&mut self, len: u64) -> io::Result<()> {
        File::set_len(self, len)
    }
}

/// Opens `raft.log` for appending; tests wrap the file to inject faults.
pub type OpenLogFile = dyn Fn(&Path) -> io::Result<Box<dyn LogFile>> + Send + Sync;

fn open_plain(path: &Path) -> io::Result<Box<dyn LogFile>> {
    let f = OpenOptions::new().append(true).create(true).open(path)?;
    Ok(Box::new(f))
}

struct Inner {
    dir: PathBuf,
    file: Box<dyn LogFile>,
    open_file: Arc<OpenLogFile>,
    /// Entries after the last purge, each with the file offset of its frame.
    entries: BTreeMap<u64, (Entry, u64)>,
    /// Length of `raft.log` (where the next frame goes).
    len: u64,
    last_purged: Option<LogId>,
    vote: Option<Vote>,
    committed: Option<LogId>,
    /// A write or fsync failed: the file's tail is unknown.
    poisoned: bool,
    /// The last write of the `committed` hint failed (said once).
    hint_failed: bool,
}

/// The Raft log store; clones share the same log (the reader is a clone).
#[derive(Clone)]
pub struct LogStore {
    inner: Arc<Mutex<Inner>>,
}

impl Debug for LogStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let inner = self.inner.lock();
        f.debug_struct("LogStore")
            .field("dir", &inner.dir)
            .field("entries", &inner.entries.len())
            .field("poisoned", &inner.poisoned)
            .finish_non_exhaustive()
    }
}

fn corrupt(path: &Path, position: u64, reason: impl Into<String>) -> crate::Error {
    crate::Error::Corrupt {
        path: path.to_owned(),
        position,
        reason: reason.into(),
    }
}

/// Reads a small JSON value kept in one CRC frame; `None` if absent.
fn read_framed<T: DeserializeOwned>(path: &Path) -> crate::Result<Option<T>> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let scan = framing::scan(&bytes).map_err(|d| corrupt(path, d.position as u64, d.reason))?;
    match scan.frames.first() {
        Some((_, payload)) if scan.valid_len == bytes.len() => serde_json::from_slice(payload)
            .map(Some)
            .map_err(|e| corrupt(path, 0, e.to_string())),
        _ => Err(corrupt(path, 0, "incomplete file")),
    }
}

fn framed<T: Serialize>(value: &T) -> io::Result<Vec<u8>> {
    let payload = serde_json::to_vec(value).map_err(io::Error::other)?;
    let mut out = Vec::with_capacity(payload.len() + 8);
    framing::encode(&payload, &mut out);
    Ok(out)
}

impl LogStore {
    /// Opens (or creates) the log in `dir`, dropping a torn last frame.
    pub fn open(dir: &Path) -> crate::Result<LogStore> {
        Self::open_with(dir, Arc::new(open_plain))
    }

    /// [`LogStore::open`] with a custom file opener (fault injection).
    pub fn open_with(dir: &Path, open_file: Arc<OpenLogFile>) -> crate::Result<LogStore> {
        fs::create_dir_all(dir)?;
        let vote: Option<Vote> = read_framed(&dir.join(VOTE_FILE))?;
        let last_purged: Option<LogId> = read_framed(&dir.join(PURGED_FILE))?;
        // The committed hint is not fsynced: a damaged one is just absent.
        let committed: Option<LogId> = read_framed(&dir.join(COMMITTED_FILE)).unwrap_or(None);
        let path = dir.join(LOG_FILE);
        let mut bytes = Vec::new();
        match File::open(&path) {
            Ok(mut f) => {
                f.read_to_end(&mut bytes)?;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
        let scan =
            framing::scan(&bytes).map_err(|d| corrupt(&path, d.position as u64, d.reason))?;
        let mut entries = BTreeMap::new();
        let mut expected: Option<u64> = None;
        let purged_index = last_purged.map(|l| l.index);
        for (pos, payload) in &scan.frames {
            let entry: Entry = serde_json::from_slice(payload)
                .map_err(|e| corrupt(&path, *pos as u64, e.to_string()))?;
            let index = entry.get_log_id().index;
            // Entries a snapshot covers may still head the file (it is only
            // rewritten once that head is large), with gaps after a snapshot
            // install; only what follows the purge point must be contiguous.
            if purged_index.is_some_and(|p| index <= p) {
                continue;
            }
            let want = expected.or(purged_index.map(|p| p + 1));
            if want.is_some_and(|w| index != w) {
                return Err(corrupt(
                    &path,
                    *pos as u64,
                    format!("expected entry {}, found {index}", want.unwrap_or_default()),
                ));
            }
            expected = Some(index + 1);
            entries.insert(index, (entry, *pos as u64));
        }
        if scan.valid_len < bytes.len() {
            tracing::warn!(path = %path.display(), position = scan.valid_len,
                dropped = bytes.len() - scan.valid_len, "truncating a torn Raft log frame");
            let f = OpenOptions::new().write(true).open(&path)?;
            f.set_len(scan.valid_len as u64)?;
            f.sync_all()?;
        }
        let file = open_file(&path)?;
        Ok(LogStore {
            inner: Arc::new(Mutex::new(Inner {
                dir: dir.to_owned(),
                file,
                open_file,
                entries,
                len: scan.valid_len as u64,
                last_purged,
                vote,
                committed,
                poisoned: false,
                hint_failed: false,
            })),
        })
    }

    /// Nothing was ever written: no entry, purge or vote.
    pub fn is_pristine(&self) -> bool {
        let inner = self.inner.lock();
        inner.entries.is_empty() && inner.last_purged.is_none() && inner.vote.is_none()
    }

    /// Whether a failed write or fsync has stopped the store.
    pub fn is_poisoned(&self) -> bool {
        self.inner.lock().poisoned
    }

    /// The last log id written (or purged).
    pub fn last_log_id(&self) -> Option<LogId> {
        let inner = self.inner.lock();
        inner
            .entries
            .values()
            .next_back()
            .map(|(e, _)| *e.get_log_id())
            .or(inner.last_purged)
    }

    /// Runs blocking file work off the async workers.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Inner) -> io::Result<T> + Send + 'static,
    ) -> io::Result<T> {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || f(&mut inner.lock()))
            .await
            .map_err(io::Error::other)?
    }
}

impl Inner {
    fn check(&self) -> io::Result<()> {
        if self.poisoned {
            Err(io::Error::other(
                "the metadata log failed to write or sync earlier and refuses further work",
            ))
        } else {
            Ok(())
        }
    }

    /// Runs a write; any failure poisons the store.
    fn guarded<T>(&mut self, f: impl FnOnce(&mut Inner) -> io::Result<T>) -> io::Result<T> {
        self.check()?;
        let out = f(self);
        if out.is_err() {
            self.poisoned = true;
        }
        out
    }

    fn append(&mut self, entries: Vec<Entry>) -> io::Result<()> {
        self.guarded(|inner| {
            let mut buf = Vec::new();
            let mut placed = Vec::with_capacity(entries.len());
            for entry in entries {
                let payload = serde_json::to_vec(&entry).map_err(io::Error::other)?;
                if payload.len() > MAX_ENTRY_BYTES {
                    return Err(io::Error::other(format!(
                        "a metadata entry of {} bytes exceeds the {MAX_ENTRY_BYTES}-byte limit",
                        payload.len()
                    )));
                }
                let pos = inner.len + buf.len() as u64;
                framing::encode(&payload, &mut buf);
                placed.push((entry, pos));
            }
            if let Err(e) = inner.file.write_all(&buf) {
                // Cut off whatever part landed; poisoned either way.
                let _ = inner.file.set_len(inner.len);
                return Err(e);
            }
            inner.file.sync_data()?;
            inner.len += buf.len() as u64;
            for (entry, pos) in placed {
                inner.entries.insert(entry.get_log_id().index, (entry, pos));
            }
            Ok(())
        })
    }

    fn truncate(&mut self, index: u64) -> io::Result<()> {
        self.guarded(|inner| {
            let Some((_, pos)) = inner.entries.get(&index).map(|(e, p)| (e.clone(), *p)) else {
                return Ok(());
            };
            inner.file.set_len(pos)?;
            inner.file.sync_data()?;
            inner.len = pos;
            inner.entries.split_off(&index);
            Ok(())
        })
    }

    fn purge(&mut self, log_id: LogId) -> io::Result<()> {
        self.guarded(|inner| {
            framing::write_atomically(&inner.dir, PURGED_FILE, &framed(&log_id)?)?;
            inner.last_purged = Some(log_id);
            inner.entries = inner.entries.split_off(&(log_id.index + 1));
            let head = inner
                .entries
                .values()
                .next()
                .map_or(inner.len, |(_, pos)| *pos);
            if head >= REWRITE_AFTER_BYTES {
                inner.rewrite()?;
            }
            Ok(())
        })
    }

    /// Replaces `raft.log` with only the entries still held.
    fn rewrite(&mut self) -> io::Result<()> {
        let mut buf = Vec::new();
        let mut positions = Vec::with_capacity(self.entries.len());
        for (index, (entry, _)) in &self.entries {
            positions.push((*index, buf.len() as u64));
            let payload = serde_json::to_vec(entry).map_err(io::Error::other)?;
            framing::encode(&payload, &mut buf);
        }
        framing::write_atomically(&self.dir, LOG_FILE, &buf)?;
        self.file = (self.open_file)(&self.dir.join(LOG_FILE))?;
        self.len = buf.len() as u64;
        for (index, pos) in positions {
            if let Some(slot) = self.entries.get_mut(&index) {
                slot.1 = pos;
            }
        }
        Ok(())
    }

    fn save_vote(&mut self, vote: Vote) -> io::Result<()> {
        self.guarded(|inner| {
            framing::write_atomically(&inner.dir, VOTE_FILE, &framed(&vote)?)?;
            inner.vote = Some(vote);
            Ok(())
        })
    }

    fn save_committed(&mut self, committed: Option<LogId>) -> io::Result<()> {
        self.check()?;
        self.committed = committed;
        // A hint: written whole via rename, but not fsynced. Failing to
        // write it (a full disk) only delays applying after a restart, so
        // it is no reason to stop; the log's own writes decide that.
        let tmp = self.dir.join(format!("{COMMITTED_FILE}.tmp"));
        let written = framed(&committed)
            .and_then(|bytes| fs::write(&tmp, bytes))
            .and_then(|()| fs::rename(&tmp, self.dir.join(COMMITTED_FILE)));
        match written {
            Ok(()) => self.hint_failed = false,
            Err(e) if !self.hint_failed => {
                self.hint_failed = true;
                tracing::warn!(error = %e, "cannot write the committed-index hint of the metadata log");
            }
            Err(_) => {}
        }
        Ok(())
    }

    fn range(&self, range: impl RangeBounds<u64>) -> Vec<Entry> {
        self.entries
            .range(range)
            .map(|(_, (e, _))| e.clone())
            .collect()
    }
}

fn io_err(e: &io::Error) -> io::Error {
    io::Error::new(e.kind(), e.to_string())
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        Ok(self.inner.lock().range(range))
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let inner = self.inner.lock();
        inner
            .check()
            .map_err(|e| StorageIOError::<NodeId>::read_logs(&e))?;
        let last = inner
            .entries
            .values()
            .next_back()
            .map(|(e, _)| *e.get_log_id())
            .or(inner.last_purged);
        Ok(LogState {
            last_purged_log_id: inner.last_purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> LogStore {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        let vote = *vote;
        self.blocking(move |inner| inner.save_vote(vote))
            .await
            .map_err(|e| StorageIOError::<NodeId>::write_vote(&e).into())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        Ok(self.inner.lock().vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        self.blocking(move |inner| inner.save_committed(committed))
            .await
            .map_err(|e| StorageIOError::<NodeId>::write(&e).into())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self.inner.lock().committed)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        let outcome = self.blocking(move |inner| inner.append(entries)).await;
        match outcome {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                tracing::error!(error = %e, "metadata log append failed; this node stops taking part in the quorum");
                callback.log_io_completed(Err(io_err(&e)));
                Err(StorageIOError::<NodeId>::write_logs(&e).into())
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.blocking(move |inner| inner.truncate(log_id.index))
            .await
            .map_err(|e| StorageIOError::<NodeId>::write_logs(&e).into())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.blocking(move |inner| inner.purge(log_id))
            .await
            .map_err(|e| StorageIOError::<NodeId>::write_logs(&e).into())
    }
}
