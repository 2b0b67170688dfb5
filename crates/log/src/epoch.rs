//! The leader-epoch cache and its `leader-epoch-checkpoint` file (KIP-101): which leader epoch
//! started at which offset. Kafka's text format: a version line `0`, a count line, then one
//! `epoch start_offset` line per entry. Rewritten atomically on every change.

use std::fmt::Write;
use std::path::{Path, PathBuf};

use crate::durable::write_atomically;
use crate::error::{Error, Result};

pub(crate) const CHECKPOINT_FILE: &str = "leader-epoch-checkpoint";

/// Upper bound on entries accepted from the file, so a damaged count cannot drive allocation.
const MAX_ENTRIES: usize = 1 << 20;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct EpochEntry {
    pub epoch: i32,
    pub start_offset: i64,
}

/// Entries have strictly increasing epochs and strictly increasing start offsets.
#[derive(Debug)]
pub(crate) struct LeaderEpochCache {
    dir: PathBuf,
    entries: Vec<EpochEntry>,
}

fn corrupt(path: &Path, reason: &str) -> Error {
    Error::Corrupt {
        segment: path.to_path_buf(),
        position: 0,
        reason: reason.to_string(),
    }
}

impl LeaderEpochCache {
    /// Load the checkpoint in `dir`; a missing file is an empty cache.
    pub(crate) fn load(dir: &Path) -> Result<Self> {
        let path = dir.join(CHECKPOINT_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(e.into()),
        };
        let entries = if text.trim().is_empty() {
            Vec::new()
        } else {
            parse(&text).map_err(|reason| corrupt(&path, reason))?
        };
        Ok(Self {
            dir: dir.to_path_buf(),
            entries,
        })
    }

    pub(crate) fn entries(&self) -> &[EpochEntry] {
        &self.entries
    }

    pub(crate) fn latest_epoch(&self) -> Option<i32> {
        self.entries.last().map(|e| e.epoch)
    }

    /// Record that `epoch` starts at `start_offset` if it is newer than the latest epoch. Entries
    /// starting at or after `start_offset` are superseded (they never received data). Persists.
    pub(crate) fn assign(&mut self, epoch: i32, start_offset: i64) -> Result<bool> {
        if !self.assign_in_memory(epoch, start_offset) {
            return Ok(false);
        }
        self.persist()?;
        Ok(true)
    }

    pub(crate) fn assign_in_memory(&mut self, epoch: i32, start_offset: i64) -> bool {
        if epoch < 0 || self.latest_epoch().is_some_and(|latest| epoch <= latest) {
            return false;
        }
        while self
            .entries
            .last()
            .is_some_and(|e| e.start_offset >= start_offset)
        {
            self.entries.pop();
        }
        self.entries.push(EpochEntry {
            epoch,
            start_offset,
        });
        true
    }

    /// Drop entries starting at or beyond `end_offset` (they describe data that does not exist).
    pub(crate) fn truncate_from_end(&mut self, end_offset: i64) -> bool {
        let before = self.entries.len();
        self.entries.retain(|e| e.start_offset < end_offset);
        before != self.entries.len()
    }

    /// Kafka's OffsetForLeaderEpoch answer: `(largest epoch <= requested,
    /// start offset of the next epoch)`, `(latest, log_end_offset)` for the
    /// latest epoch, `(requested, first start offset)` when the request is
    /// older than every known epoch, and `None` (UNDEFINED) when it is newer
    /// than all of them, the request is UNDEFINED (negative), or the cache is empty.
    pub(crate) fn end_offset_for(&self, epoch: i32, log_end_offset: i64) -> Option<(i32, i64)> {
        if epoch < 0 {
            return None;
        }
        let latest = self.entries.last()?;
        if epoch == latest.epoch {
            return Some((epoch, log_end_offset));
        }
        let idx = self.entries.partition_point(|e| e.epoch <= epoch);
        let higher = self.entries.get(idx)?;
        match idx.checked_sub(1).and_then(|i| self.entries.get(i)) {
            Some(floor) => Some((floor.epoch, higher.start_offset)),
            None => Some((epoch, higher.start_offset)),
        }
    }

    pub(crate) fn persist(&self) -> Result<()> {
        let mut text = format!("0\n{}\n", self.entries.len());
        for e in &self.entries {
            // Writing to a String cannot fail.
            let _ = writeln!(text, "{} {}", e.epoch, e.start_offset);
        }
        write_atomically(&self.dir, CHECKPOINT_FILE, text.as_bytes())?;
        Ok(())
    }
}

fn parse(text: &str) -> std::result::Result<Vec<EpochEntry>, &'static str> {
    let mut lines = text.lines();
    if lines.next().map(str::trim) != Some("0") {
        return Err("unsupported leader-epoch-checkpoint version");
    }
    let count: usize = lines
        .next()
        .and_then(|l| l.trim().parse().ok())
        .ok_or("bad entry count")?;
    if count > MAX_ENTRIES {
        return Err("entry count too large");
    }
    let mut entries: Vec<EpochEntry> = Vec::with_capacity(count.min(1024));
    for _ in 0..count {
        let line = lines.next().ok_or("fewer entries than the count")?;
        let mut parts = line.split_whitespace();
        let epoch = parts
            .next()
            .and_then(|p| p.parse().ok())
            .ok_or("bad epoch")?;
        let start_offset = parts
            .next()
            .and_then(|p| p.parse().ok())
            .ok_or("bad start offset")?;
        if parts.next().is_some() {
            return Err("extra fields on an entry line");
        }
        let entry = EpochEntry {
            epoch,
            start_offset,
        };
        if entries
            .last()
            .is_some_and(|l| l.epoch >= epoch || l.start_offset >= start_offset)
        {
            return Err("entries out of order");
        }
        entries.push(entry);
    }
    if lines.any(|l| !l.trim().is_empty()) {
        return Err("more entries than the count");
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn persists_and_reloads() {
        let dir = tempfile::tempdir().unwrap();
        let mut cache = LeaderEpochCache::load(dir.path()).unwrap();
        assert_eq!(cache.latest_epoch(), None);
        assert!(cache.assign(0, 0).unwrap());
        assert!(!cache.assign(0, 10).unwrap());
        assert!(cache.assign(3, 10).unwrap());
        assert!(cache.assign(5, 25).unwrap());
        let text = std::fs::read_to_string(dir.path().join(CHECKPOINT_FILE)).unwrap();
        assert_eq!(text, "0\n3\n0 0\n3 10\n5 25\n");
        let reloaded = LeaderEpochCache::load(dir.path()).unwrap();
        assert_eq!(reloaded.entries(), cache.entries());
        assert!(!dir.path().join("leader-epoch-checkpoint.tmp").exists());
    }

    #[test]
    fn end_offsets() {
        let dir = tempfile::tempdir().unwrap();
        let mut cache = LeaderEpochCache::load(dir.path()).unwrap();
        assert_eq!(cache.end_offset_for(1, 50), None);
        cache.assign_in_memory(2, 0);
        cache.assign_in_memory(4, 10);
        cache.assign_in_memory(7, 30);
        // Older than every known epoch: the requested epoch, ending where the first starts.
        assert_eq!(cache.end_offset_for(1, 50), Some((1, 0)));
        assert_eq!(cache.end_offset_for(2, 50), Some((2, 10)));
        assert_eq!(cache.end_offset_for(3, 50), Some((2, 10)));
        assert_eq!(cache.end_offset_for(4, 50), Some((4, 30)));
        assert_eq!(cache.end_offset_for(7, 50), Some((7, 50)));
        // Newer than every known epoch: undefined.
        assert_eq!(cache.end_offset_for(9, 50), None);
        assert!(cache.truncate_from_end(30));
        assert_eq!(cache.latest_epoch(), Some(4));
        // A newer epoch at the same start offset supersedes an epoch that never got data.
        cache.assign_in_memory(5, 10);
        assert_eq!(cache.entries().len(), 2);
        assert_eq!(cache.end_offset_for(4, 50), Some((2, 10)));
    }

    #[test]
    fn rejects_damaged_files() {
        for bad in [
            "1\n0\n",
            "0\nx\n",
            "0\n2\n1 0\n",
            "0\n1\n1 0\n2 5\n",
            "0\n2\n3 0\n2 5\n",
        ] {
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(dir.path().join(CHECKPOINT_FILE), bad).unwrap();
            assert!(
                matches!(
                    LeaderEpochCache::load(dir.path()),
                    Err(Error::Corrupt { .. })
                ),
                "{bad:?}"
            );
        }
    }
}
