//! `PartitionLog`: the segments of one partition, the append and read paths, durability
//! bookkeeping, DeleteRecords and retention. Timestamp lookups live in `log/timestamps.rs`.
//!
//! Locking: writers take `&mut self`, reads take `&self` (positional `read_at`), so the broker can
//! wrap a log in a `RwLock`. Group commit: take a [`SyncHandle`] under the lock, fdatasync its files
//! outside it, then call [`PartitionLog::mark_synced`] (or [`PartitionLog::poison`] on failure).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::batch::{
    set_base_offset, set_log_append_time, set_partition_leader_epoch, validate_inner, BatchHeader,
};
use crate::config::LogConfig;
use crate::durable::sync_dir;
use crate::epoch::LeaderEpochCache;
use crate::error::{Error, Result};
use crate::producer_state::{snapshot, BatchMetadata, ProducerStates};
use crate::recovery::{recover, write_log_start_offset, write_recovery_point, CLEAN_SHUTDOWN_FILE};
use crate::segment::Segment;

mod replica;
mod timestamps;

/// What one successful append did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppendInfo {
    pub first_offset: i64,
    pub last_offset: i64,
    /// Largest batch max_timestamp of the append (the broker's time under LogAppendTime).
    pub max_timestamp: i64,
    /// Last offset of the batch holding `max_timestamp` (batch granularity, as Kafka's v2 path);
    /// `first_offset` under LogAppendTime; -1 if no batch carried a timestamp.
    pub offset_of_max_timestamp: i64,
    /// The stamped time under LogAppendTime, else -1.
    pub log_append_time: i64,
    pub bytes: usize,
    /// Headers as stored: offsets, leader epoch and (LogAppendTime) timestamps/CRC assigned.
    pub batches: Vec<BatchHeader>,
    /// The request repeated an idempotent producer's batch: nothing was written and the offsets
    /// are the original batch's (Kafka answers such a retry with them and no error).
    pub duplicate: bool,
}

/// Whole batches for a fetch, plus the log bounds at the time of the read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadResult {
    pub records: Vec<u8>,
    pub log_start_offset: i64,
    pub log_end_offset: i64,
}

/// What `open` found and repaired.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecoveryReport {
    pub segments: usize,
    /// Bytes cut from the active segment's tail (kept in `<base>.log.truncated`).
    pub truncated_bytes: u64,
    /// Segments whose index files were rewritten; the active segment's always are, so this is >= 1.
    pub rebuilt_indexes: usize,
    pub log_end_offset: i64,
    /// A clean-shutdown marker was present (the previous `close` completed).
    pub clean_shutdown: bool,
    /// The checkpointed offset below which segments were trusted rather than validated
    /// (`i64::MIN`: none, everything was validated; `i64::MAX`: an old clean shutdown).
    pub recovery_point: i64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetentionReport {
    pub deleted_segments: usize,
    pub deleted_bytes: u64,
    pub log_start_offset: i64,
}

/// Files to fdatasync outside the partition lock (group commit) and the offset they make durable.
#[derive(Clone, Debug)]
pub struct SyncHandle {
    pub files: Vec<Arc<File>>,
    pub end_offset: i64,
}

/// Who produced the batches of an append.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AppendOrigin {
    /// A client's produce request: control batches are refused.
    Client,
    /// The broker itself (transaction coordinator markers): control batches allowed.
    Coordinator,
}

/// Files of a rolled segment (and the directory, which gained a file) still owed an fsync.
#[derive(Debug)]
struct PendingSync {
    /// Offset at which the roll happened; any sync reaching past it covered these files.
    rolled_at: i64,
    files: Vec<Arc<File>>,
}

/// A segmented, append-only partition log.
#[derive(Debug)]
pub struct PartitionLog {
    dir: PathBuf,
    dir_handle: Arc<File>,
    config: LogConfig,
    /// Never empty; the last one is the active segment.
    segments: Vec<Segment>,
    log_start_offset: i64,
    epochs: LeaderEpochCache,
    synced_offset: i64,
    /// The recovery point last written to disk (see `recovery.rs`). It is the synced offset, so
    /// anything that ever cuts the log below it must lower both first.
    checkpointed: i64,
    pending_sync: Vec<PendingSync>,
    poisoned: bool,
    /// The directory was moved away to be deleted; its path may already belong to a new log of
    /// the same name, so nothing is written by path any more.
    detached: bool,
    /// Idempotent producers' last batches; snapshotted on roll and close (`producer_state.rs`).
    producers: ProducerStates,
    /// The cleaner's checkpoint: offsets below it were cleaned at least once (compacted logs).
    clean_offset: i64,
}

impl PartitionLog {
    /// Open or create the log in `dir`, running recovery. `now_ms` is only used for segment ages.
    pub fn open(
        dir: &Path,
        config: LogConfig,
        now_ms: i64,
    ) -> Result<(PartitionLog, RecoveryReport)> {
        let recovered = recover(dir, &config, now_ms)?;
        let log_end_offset = recovered.report.log_end_offset;
        let (producers, rebuilt) = snapshot::recover(
            dir,
            &recovered.segments,
            log_end_offset,
            config.disk_batch_cap(),
        )?;
        tracing::debug!(
            dir = %dir.display(),
            snapshot = ?rebuilt.snapshot,
            replayed_batches = rebuilt.replayed_batches,
            producers = producers.len(),
            "rebuilt producer state"
        );
        let log = PartitionLog {
            dir: dir.to_path_buf(),
            dir_handle: Arc::new(File::open(dir)?),
            config,
            segments: recovered.segments,
            log_start_offset: recovered.log_start_offset,
            epochs: recovered.epochs,
            // Recovery synced what it validated and checkpointed the log end.
            synced_offset: log_end_offset,
            checkpointed: log_end_offset,
            pending_sync: Vec::new(),
            poisoned: false,
            detached: false,
            producers,
            clean_offset: crate::cleaner::load_checkpoint(dir),
        };
        Ok((log, recovered.report))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn config(&self) -> &LogConfig {
        &self.config
    }

    /// New settings apply from the next append / roll / retention run.
    pub fn set_config(&mut self, config: LogConfig) {
        self.config = config;
    }

    pub(crate) fn segments(&self) -> &[Segment] {
        &self.segments
    }

    pub(crate) fn clean_offset(&self) -> i64 {
        self.clean_offset
    }

    pub(crate) fn set_clean_offset(&mut self, offset: i64) {
        self.clean_offset = offset;
    }

    /// The cleaner swapped `count` segments from `at` for one cleaned `segment`.
    pub(crate) fn replace_segments(&mut self, at: usize, count: usize, segment: Segment) {
        self.segments
            .splice(at..at + count, std::iter::once(segment));
    }

    fn active(&self) -> &Segment {
        &self.segments[self.segments.len() - 1]
    }

    fn active_mut(&mut self) -> &mut Segment {
        let last = self.segments.len() - 1;
        &mut self.segments[last]
    }

    /// Append a client's record set (see [`PartitionLog::append_as`]).
    pub fn append(
        &mut self,
        records: &mut [u8],
        leader_epoch: i32,
        now_ms: i64,
    ) -> Result<AppendInfo> {
        self.append_as(records, leader_epoch, now_ms, AppendOrigin::Client)
    }

    /// Validate, assign offsets from the log end in place, stamp the leader epoch, apply
    /// LogAppendTime if configured, roll if due, append with one write, index, and record a new
    /// leader epoch. A validation error writes nothing.
    pub fn append_as(
        &mut self,
        records: &mut [u8],
        leader_epoch: i32,
        now_ms: i64,
        origin: AppendOrigin,
    ) -> Result<AppendInfo> {
        self.writable()?;
        let mut headers = validate_inner(
            records,
            self.config.max_message_bytes,
            origin == AppendOrigin::Coordinator,
            false,
        )?;
        let first_offset = self.log_end_offset();
        let mut next = first_offset;
        for h in &mut headers {
            h.base_offset = next;
            next = next
                .checked_add(i64::from(h.last_offset_delta) + 1)
                .ok_or_else(|| Error::InvalidRecord("offsets overflow".into()))?;
        }
        let last_offset = next - 1;
        if records.len() > i32::MAX as usize {
            return Err(Error::RecordTooLarge {
                size: records.len(),
                max: i32::MAX as usize,
            });
        }
        if origin == AppendOrigin::Client {
            if let Some(duplicate) = self.producers.check_append(&headers)? {
                return Ok(self.duplicate_info(&duplicate));
            }
        } else {
            for h in headers.iter().filter(|h| h.is_control()) {
                self.producers.check_marker(h)?;
            }
        }

        if self.roll_needed(records.len() as u64, last_offset, now_ms) {
            self.roll()?;
        }
        if last_offset - self.active().base_offset > i64::from(i32::MAX) {
            return Err(Error::InvalidRecord(
                "one append spans more offsets than a segment can address".into(),
            ));
        }
        if leader_epoch >= 0 {
            // Before the data: a checkpoint entry without data is dropped by recovery, the
            // opposite would leave data with an unknown epoch.
            self.epochs.assign(leader_epoch, first_offset)?;
        }

        let log_append_time = self.config.message_timestamp_log_append_time;
        let mut pos = 0usize;
        let (mut max_timestamp, mut offset_of_max_timestamp) = (-1i64, -1i64);
        for h in &mut headers {
            let batch = &mut records[pos..pos + h.total_size()];
            set_base_offset(batch, h.base_offset);
            set_partition_leader_epoch(batch, leader_epoch);
            h.partition_leader_epoch = leader_epoch;
            if log_append_time {
                h.crc = set_log_append_time(batch, now_ms);
                h.attributes |= 0x08;
                h.max_timestamp = now_ms;
            }
            if h.max_timestamp > max_timestamp {
                max_timestamp = h.max_timestamp;
                offset_of_max_timestamp = h.last_offset();
            }
            pos += h.total_size();
        }
        if log_append_time {
            offset_of_max_timestamp = first_offset;
        }

        let interval = self.config.index_interval_bytes;
        let active = self.active_mut();
        if let Err(e) = active.append(records, &headers, interval, now_ms) {
            // Cut off whatever part of the write landed; if even that fails the file's tail is
            // unknown and only recovery can sort it out.
            if active.log.set_len(active.size).is_err() {
                self.poisoned = true;
            }
            return Err(e.into());
        }
        if let Err(e) = active.write_pending_indexes() {
            // The data is in; the active segment's indexes are rebuilt by recovery anyway and
            // pending entries are retried on the next append.
            tracing::warn!(segment = %active.path.display(), error = %e, "index write failed");
        }
        let markers = crate::markers::markers_in(records, &headers);
        for (h, marker) in headers.iter().zip(markers) {
            self.producers.record(h, marker);
        }
        Ok(AppendInfo {
            first_offset,
            last_offset,
            max_timestamp,
            offset_of_max_timestamp,
            log_append_time: if log_append_time { now_ms } else { -1 },
            bytes: records.len(),
            batches: headers,
            duplicate: false,
        })
    }

    /// The answer to a retried batch: the original's offsets and timestamp.
    fn duplicate_info(&self, original: &BatchMetadata) -> AppendInfo {
        let log_append_time = self.config.message_timestamp_log_append_time;
        AppendInfo {
            first_offset: original.first_offset,
            last_offset: original.last_offset,
            max_timestamp: original.max_timestamp,
            offset_of_max_timestamp: if log_append_time {
                original.first_offset
            } else {
                original.last_offset
            },
            log_append_time: if log_append_time {
                original.max_timestamp
            } else {
                -1
            },
            bytes: 0,
            batches: Vec::new(),
            duplicate: true,
        }
    }

    /// Idempotent producers' state (last batches per producer id).
    pub fn producer_states(&self) -> &ProducerStates {
        &self.producers
    }

    /// Where `read_committed` reads stop, before the high watermark is
    /// applied: the first offset of the oldest open transaction.
    pub fn first_unstable_offset(&self) -> Option<i64> {
        self.producers.first_unstable_offset()
    }

    /// Aborted transactions overlapping `[from, upto)` (see
    /// [`ProducerStates::aborted_between`]).
    pub fn aborted_transactions(&self, from: i64, upto: i64) -> Vec<crate::AbortedTxn> {
        self.producers.aborted_between(from, upto)
    }

    /// Forgets producers idle longer than `expiration_ms` (Kafka's `producer.id.expiration.ms`).
    pub fn expire_producers(&mut self, now_ms: i64, expiration_ms: i64) -> usize {
        self.producers.expire(now_ms, expiration_ms)
    }

    /// Snapshot the producer state at the log end. A failure is only logged: recovery then starts
    /// from an older snapshot and replays more headers.
    fn snapshot_producers(&mut self) {
        if self.detached {
            return;
        }
        self.producers.prune_aborted(self.log_start_offset());
        let offset = self.log_end_offset();
        if let Err(e) = snapshot::write(&self.dir, offset, &self.producers) {
            tracing::warn!(dir = %self.dir.display(), offset, error = %e, "producer snapshot failed");
        }
    }

    fn age_due(&self, now_ms: i64) -> bool {
        self.active()
            .rolling_timestamp
            .is_some_and(|t| now_ms.saturating_sub(t) > self.config.segment_ms)
    }

    fn roll_needed(&self, bytes: u64, last_offset: i64, now_ms: i64) -> bool {
        let active = self.active();
        !active.is_empty()
            && (active.size + bytes > self.config.effective_segment_bytes()
                || self.age_due(now_ms)
                || last_offset - active.base_offset > i64::from(i32::MAX))
    }

    /// Start a new active segment at the log end; the old one's files join the pending fsyncs.
    fn roll(&mut self) -> Result<()> {
        let base = self.log_end_offset();
        let new = Segment::create(&self.dir, base)?;
        let mut files = match self.active_mut().seal() {
            Ok(files) => files,
            Err(e) => {
                let _ = new.delete_files();
                return Err(e.into());
            }
        };
        files.push(Arc::clone(&self.dir_handle));
        self.pending_sync.push(PendingSync {
            rolled_at: base,
            files,
        });
        self.segments.push(new);
        // The new segment's base is where retention will later cut: keep the state there.
        self.snapshot_producers();
        tracing::debug!(dir = %self.dir.display(), base_offset = base, "rolled segment");
        Ok(())
    }

    /// Age-based roll without an append. Returns whether a new segment was started.
    pub fn roll_if_due(&mut self, now_ms: i64) -> Result<bool> {
        self.writable()?;
        if self.active().is_empty() || !self.age_due(now_ms) {
            return Ok(false);
        }
        self.roll()?;
        Ok(true)
    }

    /// Whole batches starting with the one containing `offset`, up to `max_bytes`, never a batch
    /// whose base offset is `>= max_offset` (the high watermark). If the first batch is larger than
    /// `max_bytes` it is returned alone when `min_one` (KIP-74), else nothing. Reads come from one
    /// segment at a time; the caller fetches again from the next offset.
    pub fn read(
        &self,
        offset: i64,
        max_bytes: usize,
        max_offset: i64,
        min_one: bool,
    ) -> Result<ReadResult> {
        let log_end_offset = self.log_end_offset();
        if offset < self.log_start_offset || offset > log_end_offset {
            return Err(Error::OffsetOutOfRange {
                offset,
                log_start_offset: self.log_start_offset,
                log_end_offset,
            });
        }
        let mut result = ReadResult {
            records: Vec::new(),
            log_start_offset: self.log_start_offset,
            log_end_offset,
        };
        if offset == log_end_offset {
            return Ok(result);
        }
        let cap = self.config.disk_batch_cap();
        let first = self
            .segments
            .partition_point(|s| s.base_offset <= offset)
            .saturating_sub(1);
        for seg in &self.segments[first..] {
            if seg.next_offset <= offset {
                continue;
            }
            if let Some(pos) = seg.find_batch(offset, cap)? {
                result.records = seg.read_from(pos, max_bytes, max_offset, min_one, cap)?;
                break;
            }
        }
        Ok(result)
    }

    pub fn log_start_offset(&self) -> i64 {
        self.log_start_offset
    }

    pub fn log_end_offset(&self) -> i64 {
        self.active().next_offset
    }

    pub fn size_bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.size).sum()
    }

    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// fdatasync everything appended so far, including rolled-but-unsynced segments. A failure
    /// poisons the log.
    pub fn sync(&mut self) -> Result<()> {
        if self.poisoned {
            return Err(Error::Poisoned);
        }
        let handle = self.sync_handle();
        for file in &handle.files {
            if let Err(e) = file.sync_data() {
                self.poisoned = true;
                return Err(e.into());
            }
        }
        self.mark_synced(handle.end_offset);
        Ok(())
    }

    /// Handles for group commit. Sync them all outside the lock, then `mark_synced(end_offset)`;
    /// on any failure call `poison()`.
    pub fn sync_handle(&self) -> SyncHandle {
        let mut files: Vec<Arc<File>> = self
            .pending_sync
            .iter()
            .flat_map(|p| p.files.iter().cloned())
            .collect();
        files.push(Arc::clone(&self.active().log));
        SyncHandle {
            files,
            end_offset: self.log_end_offset(),
        }
    }

    pub fn mark_synced(&mut self, end_offset: i64) {
        let end_offset = end_offset.min(self.log_end_offset());
        self.synced_offset = self.synced_offset.max(end_offset);
        // A roll at exactly `end_offset` may have happened after the handle was taken.
        self.pending_sync.retain(|p| p.rolled_at >= end_offset);
    }

    /// Log end offset known to be on disk.
    pub fn synced_offset(&self) -> i64 {
        self.synced_offset
    }

    /// Refuse further writes (after a failed fsync the page cache cannot be trusted).
    pub fn poison(&mut self) {
        self.poisoned = true;
    }

    pub fn is_poisoned(&self) -> bool {
        self.poisoned
    }

    /// Writes fail once the log is poisoned, or detached from its directory.
    pub(crate) fn writable(&self) -> Result<()> {
        if self.poisoned {
            return Err(Error::Poisoned);
        }
        if self.detached {
            return Err(Error::Removed);
        }
        Ok(())
    }

    /// Writes the recovery point (everything synced so far) to disk if it moved, so that
    /// recovery trusts the segments below it instead of validating them (Kafka does this every
    /// `log.flush.offset.checkpoint.interval.ms`). Returns whether it wrote.
    pub fn checkpoint_recovery_point(&mut self) -> Result<bool> {
        if self.detached || self.synced_offset == self.checkpointed {
            return Ok(false);
        }
        write_recovery_point(&self.dir, self.synced_offset)?;
        self.checkpointed = self.synced_offset;
        Ok(true)
    }

    /// The directory is being moved away to be deleted: from now on nothing is written by path
    /// (the path may soon belong to a new log of the same name) and writes are refused.
    pub fn detach(&mut self) {
        self.detached = true;
    }

    /// OffsetForLeaderEpoch, with Kafka's semantics: the largest known epoch `<= epoch` and the
    /// offset where the next epoch starts (the log end offset for the latest epoch); for an epoch
    /// older than all known ones, that epoch and the first epoch's start offset; `None`
    /// (UNDEFINED) for an epoch newer than all known ones or an empty cache.
    pub fn end_offset_for_epoch(&self, epoch: i32) -> Option<(i32, i64)> {
        self.epochs.end_offset_for(epoch, self.log_end_offset())
    }

    pub fn latest_epoch(&self) -> Option<i32> {
        self.epochs.latest_epoch()
    }

    /// The leader-epoch cache as `(epoch, start_offset)` pairs, oldest first.
    pub fn epoch_entries(&self) -> Vec<(i32, i64)> {
        self.epochs
            .entries()
            .iter()
            .map(|e| (e.epoch, e.start_offset))
            .collect()
    }

    /// DeleteRecords: advance (never move back) `log_start_offset` to `offset`, persist it, then
    /// delete segments wholly below it (never the active one). Returns the new log start offset.
    pub fn delete_records_before(&mut self, offset: i64) -> Result<i64> {
        self.writable()?;
        let log_end_offset = self.log_end_offset();
        if offset > log_end_offset || offset < 0 {
            return Err(Error::OffsetOutOfRange {
                offset,
                log_start_offset: self.log_start_offset,
                log_end_offset,
            });
        }
        if offset <= self.log_start_offset {
            return Ok(self.log_start_offset);
        }
        write_log_start_offset(&self.dir, offset)?;
        self.log_start_offset = offset;
        let below = self.segments[..self.segments.len() - 1]
            .iter()
            .take_while(|s| s.next_offset <= offset)
            .count();
        self.delete_oldest(below)?;
        Ok(self.log_start_offset)
    }

    /// Time retention (a segment's largest timestamp older than `now_ms - retention_ms`) then size
    /// retention (drop the oldest while the rest stays `>= retention_bytes`). Whole non-active
    /// segments only, oldest first, stopping at the first one that must stay. Nothing when the
    /// cleanup policy lacks `delete`.
    pub fn enforce_retention(&mut self, now_ms: i64) -> Result<RetentionReport> {
        self.writable()?;
        let candidates = if self.config.delete {
            self.segments.len() - 1
        } else {
            // `cleanup.policy=compact` alone: the cleaner, not retention, bounds the log.
            0
        };
        let mut count = 0;
        if self.config.retention_ms >= 0 {
            let threshold = now_ms.saturating_sub(self.config.retention_ms);
            count = self.segments[..candidates]
                .iter()
                .take_while(|s| s.max_timestamp < threshold)
                .count();
        }
        if let Ok(limit) = u64::try_from(self.config.retention_bytes) {
            let mut remaining: u64 = self.segments[count..].iter().map(|s| s.size).sum();
            while count < candidates && remaining - self.segments[count].size >= limit {
                remaining -= self.segments[count].size;
                count += 1;
            }
        }
        let deleted_bytes = self.segments[..count].iter().map(|s| s.size).sum();
        self.delete_oldest(count)?;
        Ok(RetentionReport {
            deleted_segments: count,
            deleted_bytes,
            log_start_offset: self.log_start_offset,
        })
    }

    /// Delete the `count` oldest segments (count < number of segments) one by one.
    fn delete_oldest(&mut self, count: usize) -> Result<()> {
        if count == 0 {
            return Ok(());
        }
        for _ in 0..count {
            self.segments[0].delete_files()?;
            let seg = self.segments.remove(0);
            self.log_start_offset = self.log_start_offset.max(self.segments[0].base_offset);
            tracing::info!(segment = %seg.path.display(), "deleted segment");
        }
        if let Err(e) = snapshot::delete_below(&self.dir, self.segments[0].base_offset) {
            tracing::warn!(dir = %self.dir.display(), error = %e, "deleting old producer snapshots failed");
        }
        sync_dir(&self.dir)?;
        Ok(())
    }

    /// Sync everything and leave a clean-shutdown marker.
    pub fn close(mut self) -> Result<()> {
        self.active_mut().write_pending_indexes()?;
        if let Some(files) = &self.active().files {
            files.offset.sync_data()?;
            files.time.sync_data()?;
        }
        self.sync()?;
        snapshot::write(&self.dir, self.log_end_offset(), &self.producers)?;
        self.checkpoint_recovery_point()?;
        File::create(self.dir.join(CLEAN_SHUTDOWN_FILE))?.sync_all()?;
        sync_dir(&self.dir)?;
        Ok(())
    }

    /// Remove the partition directory and everything in it.
    pub fn delete(self) -> Result<()> {
        let dir = self.dir.clone();
        drop(self);
        std::fs::remove_dir_all(&dir)?;
        Ok(())
    }
}

// The broker shares logs across threads behind a RwLock.
const _: () = {
    const fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<PartitionLog>();
};

#[cfg(test)]
mod tests;
