//! Sparse per-segment indexes, held in memory (a sorted `Vec`) and appended to their files.
//!
//! * Offset index (`.index`): `(relative_offset u32 BE, position u32 BE)`, 8 bytes. The offset is
//!   the *base* offset of the batch starting at `position`, so a lookup lands exactly on a batch.
//! * Time index (`.timeindex`): `(timestamp i64 BE, relative_offset u32 BE)`, 12 bytes. An entry
//!   `(T, O)` says: the segment's largest timestamp so far is `T`, first reached by the batch whose
//!   last offset is `O`. Hence every batch before that batch has a max timestamp `< T`, which is
//!   what makes skipping to it safe when searching for a timestamp `>= T`. Timestamps strictly
//!   increase from entry to entry.
//!
//! Entries are added every `index_interval_bytes` of appended data, both indexes at the same batch.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// One fixed-size index record.
pub(crate) trait IndexEntry: Copy {
    const SIZE: usize;
    fn encode(&self, out: &mut Vec<u8>);
    fn decode(bytes: &[u8]) -> Self;
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct OffsetEntry {
    pub relative_offset: u32,
    pub position: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct TimeEntry {
    pub timestamp: i64,
    pub relative_offset: u32,
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

impl IndexEntry for OffsetEntry {
    const SIZE: usize = 8;
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.relative_offset.to_be_bytes());
        out.extend_from_slice(&self.position.to_be_bytes());
    }
    fn decode(b: &[u8]) -> Self {
        Self {
            relative_offset: u32_at(b, 0),
            position: u32_at(b, 4),
        }
    }
}

impl IndexEntry for TimeEntry {
    const SIZE: usize = 12;
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.timestamp.to_be_bytes());
        out.extend_from_slice(&self.relative_offset.to_be_bytes());
    }
    fn decode(b: &[u8]) -> Self {
        let mut ts = [0u8; 8];
        ts.copy_from_slice(&b[..8]);
        Self {
            timestamp: i64::from_be_bytes(ts),
            relative_offset: u32_at(b, 8),
        }
    }
}

/// An in-memory sparse index plus how much of it already reached its file.
#[derive(Debug, Default)]
pub(crate) struct SparseIndex<E> {
    entries: Vec<E>,
    /// Entries `[..persisted]` are in the file; the rest are written by `write_pending`.
    persisted: usize,
}

pub(crate) type OffsetIndex = SparseIndex<OffsetEntry>;
pub(crate) type TimeIndex = SparseIndex<TimeEntry>;

impl<E: IndexEntry> SparseIndex<E> {
    pub(crate) fn new() -> Self {
        Self {
            entries: Vec::new(),
            persisted: 0,
        }
    }

    /// Entries loaded from a file (already persisted).
    fn loaded(entries: Vec<E>) -> Self {
        let persisted = entries.len();
        Self { entries, persisted }
    }

    pub(crate) fn entries(&self) -> &[E] {
        &self.entries
    }

    pub(crate) fn last(&self) -> Option<&E> {
        self.entries.last()
    }

    pub(crate) fn push(&mut self, entry: E) {
        self.entries.push(entry);
    }

    pub(crate) fn has_pending(&self) -> bool {
        self.persisted < self.entries.len()
    }

    pub(crate) fn encode(entries: &[E]) -> Vec<u8> {
        let mut out = Vec::with_capacity(entries.len() * E::SIZE);
        for e in entries {
            e.encode(&mut out);
        }
        out
    }

    pub(crate) fn encode_all(&self) -> Vec<u8> {
        Self::encode(&self.entries)
    }

    /// Append the not-yet-written entries to `file` (one write).
    pub(crate) fn write_pending(&mut self, file: &File) -> io::Result<()> {
        if !self.has_pending() {
            return Ok(());
        }
        let bytes = Self::encode(&self.entries[self.persisted..]);
        file.write_all_at(&bytes, (self.persisted * E::SIZE) as u64)?;
        self.persisted = self.entries.len();
        Ok(())
    }

    /// Mark everything as persisted (after the whole index was written to a fresh file).
    pub(crate) fn mark_persisted(&mut self) {
        self.persisted = self.entries.len();
    }

    /// Raw entries from a file, or `None` when the file is missing, its size is not a multiple of
    /// the entry size, or it holds more than `max_entries` (checked before allocating).
    fn read_file(path: &Path, max_entries: u64) -> io::Result<Option<Vec<E>>> {
        let file = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let len = file.metadata()?.len();
        if len % E::SIZE as u64 != 0 || len / E::SIZE as u64 > max_entries {
            return Ok(None);
        }
        let mut bytes = vec![0u8; len as usize];
        file.read_exact_at(&mut bytes, 0)?;
        Ok(Some(bytes.chunks_exact(E::SIZE).map(E::decode).collect()))
    }
}

/// Upper bound on sane entries for a log file of `log_len` bytes: one per batch at most.
pub(crate) fn max_entries_for(log_len: u64) -> u64 {
    log_len / crate::batch::HEADER_LEN as u64 + 1
}

impl OffsetIndex {
    /// Largest entry whose relative offset is `<= relative_offset`.
    pub(crate) fn lookup(&self, relative_offset: u32) -> Option<OffsetEntry> {
        let idx = self
            .entries
            .partition_point(|e| e.relative_offset <= relative_offset);
        idx.checked_sub(1).map(|i| self.entries[i])
    }

    /// Load and sanity-check: offsets and positions strictly increasing, positions inside the log.
    pub(crate) fn load(path: &Path, log_len: u64) -> io::Result<Option<Self>> {
        let Some(entries) = Self::read_file(path, max_entries_for(log_len))? else {
            return Ok(None);
        };
        let ordered = entries
            .windows(2)
            .all(|w| w[0].relative_offset < w[1].relative_offset && w[0].position < w[1].position);
        let inside = entries.iter().all(|e| u64::from(e.position) < log_len);
        Ok((ordered && inside).then(|| Self::loaded(entries)))
    }
}

impl TimeIndex {
    /// Largest entry whose timestamp is `<= timestamp`.
    pub(crate) fn lookup(&self, timestamp: i64) -> Option<TimeEntry> {
        let idx = self.entries.partition_point(|e| e.timestamp <= timestamp);
        idx.checked_sub(1).map(|i| self.entries[i])
    }

    pub(crate) fn last_timestamp(&self) -> Option<i64> {
        self.entries.last().map(|e| e.timestamp)
    }

    /// Append `(timestamp, relative_offset)` if it raises the indexed maximum.
    pub(crate) fn maybe_push(&mut self, timestamp: i64, relative_offset: u32) {
        if self.last_timestamp().is_none_or(|last| timestamp > last) {
            self.push(TimeEntry {
                timestamp,
                relative_offset,
            });
        }
    }

    /// Load and sanity-check: timestamps and offsets non-decreasing.
    pub(crate) fn load(path: &Path, log_len: u64) -> io::Result<Option<Self>> {
        let Some(entries) = Self::read_file(path, max_entries_for(log_len))? else {
            return Ok(None);
        };
        let ordered = entries.windows(2).all(|w| {
            w[0].timestamp <= w[1].timestamp && w[0].relative_offset <= w[1].relative_offset
        });
        Ok(ordered.then(|| Self::loaded(entries)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn oe(relative_offset: u32, position: u32) -> OffsetEntry {
        OffsetEntry {
            relative_offset,
            position,
        }
    }

    #[test]
    fn offset_lookup_floor() {
        let mut idx = OffsetIndex::new();
        assert_eq!(idx.lookup(5), None);
        idx.push(oe(3, 100));
        idx.push(oe(10, 500));
        assert_eq!(idx.lookup(2), None);
        assert_eq!(idx.lookup(3), Some(oe(3, 100)));
        assert_eq!(idx.lookup(9), Some(oe(3, 100)));
        assert_eq!(idx.lookup(u32::MAX), Some(oe(10, 500)));
    }

    #[test]
    fn time_lookup_and_maybe_push() {
        let mut idx = TimeIndex::new();
        idx.maybe_push(100, 1);
        idx.maybe_push(100, 2);
        idx.maybe_push(90, 3);
        idx.maybe_push(200, 4);
        assert_eq!(idx.entries().len(), 2);
        assert_eq!(idx.lookup(99), None);
        assert_eq!(idx.lookup(150).map(|e| e.relative_offset), Some(1));
        assert_eq!(idx.lookup(200).map(|e| e.relative_offset), Some(4));
    }

    #[test]
    fn write_and_load_round_trip_and_sanity() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.index");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        let mut idx = OffsetIndex::new();
        idx.push(oe(1, 61));
        idx.write_pending(&file).unwrap();
        idx.push(oe(4, 300));
        idx.write_pending(&file).unwrap();
        let loaded = OffsetIndex::load(&path, 1000).unwrap().unwrap();
        assert_eq!(loaded.entries(), idx.entries());
        // Position beyond the log file, or a file of the wrong size: not sane.
        assert!(OffsetIndex::load(&path, 300).unwrap().is_none());
        std::fs::write(&path, [0u8; 7]).unwrap();
        assert!(OffsetIndex::load(&path, 1000).unwrap().is_none());
        // Out of order.
        std::fs::write(&path, OffsetIndex::encode(&[oe(4, 300), oe(1, 61)])).unwrap();
        assert!(OffsetIndex::load(&path, 1000).unwrap().is_none());
        assert!(OffsetIndex::load(&dir.path().join("missing"), 1000)
            .unwrap()
            .is_none());

        let tpath = dir.path().join("x.timeindex");
        let bad = TimeIndex::encode(&[
            TimeEntry {
                timestamp: 9,
                relative_offset: 1,
            },
            TimeEntry {
                timestamp: 8,
                relative_offset: 2,
            },
        ]);
        std::fs::write(&tpath, bad).unwrap();
        assert!(TimeIndex::load(&tpath, 1000).unwrap().is_none());
    }
}
