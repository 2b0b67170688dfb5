//! Log compaction (`cleanup.policy=compact`): keep at least the latest record of every key.
//!
//! A pass has three steps, so that the partition lock is held only for the last, short one:
//! 1. [`PartitionLog::plan_clean`] (shared lock) picks the cleanable segments: never the active
//!    one, only segments wholly below the high watermark whose newest record is older than
//!    `min.compaction.lag.ms`. The part above the cleaner checkpoint is dirty; a pass is due when
//!    dirty / cleanable bytes reaches `min.cleanable.dirty.ratio`, or when a dirty segment is older
//!    than `max.compaction.lag.ms`.
//! 2. [`CleanPlan::run`] (no lock, blocking I/O, rate limited) maps each key of the dirty part to
//!    its latest offset ([`OffsetMap`], bounded; a pass stops where the map is full), then rewrites
//!    every cleanable segment up to there into `.cleaned` files, merging neighbours while the sum
//!    stays under `segment.bytes`. A record is dropped when a later offset holds its key, when it
//!    has no key, or when it is a tombstone (null value) that an earlier pass already cleaned and
//!    whose segment was last written more than `delete.retention.ms` ago. The records of aborted
//!    transactions go as well (their COMMIT/ABORT markers stay). Batches keep their base
//!    offset, producer id, epoch and sequence, codec and leader epoch; a batch whose records all
//!    go is dropped, unless it is its producer's last batch (kept empty so that idempotent
//!    producers' sequence checks survive cleaning).
//! 3. [`PartitionLog::install_clean`] (exclusive lock) swaps the cleaned segments in (see
//!    `swap.rs` for the crash-safe protocol), if the segments it read are still there.
//!
//! Offsets never move: a reader positioned anywhere continues at the next retained offset, and the
//! latest record of each key is never removed, so a consumer never sees one go missing.

mod offset_map;
pub(crate) mod swap;

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub use offset_map::{OffsetMap, SLOT_BYTES};

use crate::batch::BatchHeader;
use crate::codec::{Codec, MAX_DECOMPRESSED};
use crate::config::LogConfig;
use crate::durable::{remove_if_exists, sync_dir, write_atomically};
use crate::error::{Error, Result};
use crate::log::PartitionLog;
use crate::records::{rebuild_batch, records_section, walk_records};
use crate::segment::{file_name, ChunkReader, Probe, Segment, INDEX_EXT, LOG_EXT, TIME_INDEX_EXT};

/// The first offset not yet cleaned (Kafka's `cleaner-offset-checkpoint`, one per partition here).
pub(crate) const CHECKPOINT_FILE: &str = "cleaner-offset-checkpoint";
/// Bytes of cleaned batches gathered before one write.
const WRITE_CHUNK: usize = 1 << 20;

/// Where a test can stop a pass as if the process died there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultPoint {
    /// A cleaned segment is written and synced, not yet committed.
    AfterCleaned,
    /// The swap file is committed; the old segments are all still there.
    AfterSwap,
    /// Some replaced segments are deleted, the swap not yet renamed into place.
    AfterDelete,
}

impl FaultPoint {
    pub fn parse(s: &str) -> Option<FaultPoint> {
        match s {
            "after-cleaned" => Some(FaultPoint::AfterCleaned),
            "after-swap" => Some(FaultPoint::AfterSwap),
            "after-delete" => Some(FaultPoint::AfterDelete),
            _ => None,
        }
    }
}

/// Called at each [`FaultPoint`]; an error stops the pass right there, leaving the files as a
/// crash would (the log must then be dropped and reopened).
pub type FaultHook<'a> = &'a dyn Fn(FaultPoint) -> std::io::Result<()>;

/// How much of a compacted log is waiting for the cleaner.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct DirtyStats {
    pub first_dirty_offset: i64,
    /// Bytes of cleanable segments (dirty or not).
    pub cleanable_bytes: u64,
    /// Bytes of cleanable segments not cleaned yet.
    pub dirty_bytes: u64,
    /// A dirty segment is older than `max.compaction.lag.ms`.
    pub overdue: bool,
}

impl DirtyStats {
    pub fn ratio(&self) -> f64 {
        if self.cleanable_bytes == 0 {
            0.0
        } else {
            self.dirty_bytes as f64 / self.cleanable_bytes as f64
        }
    }
}

/// Rate limit on the cleaner's reads and writes (Kafka's `log.cleaner.io.max.bytes.per.second`).
#[derive(Debug)]
pub struct Throttle {
    bytes_per_sec: f64,
    start: Instant,
    bytes: f64,
}

impl Throttle {
    /// `bytes_per_sec <= 0` or infinite: no limit.
    pub fn new(bytes_per_sec: f64) -> Throttle {
        Throttle {
            bytes_per_sec,
            start: Instant::now(),
            bytes: 0.0,
        }
    }

    /// Account for `n` bytes of I/O, sleeping as long as the rate requires.
    pub fn pace(&mut self, n: usize) {
        if !(self.bytes_per_sec > 0.0 && self.bytes_per_sec.is_finite()) {
            return;
        }
        self.bytes += n as f64;
        let due = Duration::from_secs_f64(self.bytes / self.bytes_per_sec);
        if let Some(wait) = due.checked_sub(self.start.elapsed()) {
            std::thread::sleep(wait);
        }
    }
}

/// One cleanable segment as seen when the pass was planned.
#[derive(Debug, Clone)]
struct Planned {
    base: i64,
    /// Base offset of the segment after it (the active one at least).
    next_base: i64,
    next_offset: i64,
    size: u64,
    file: Arc<File>,
    modified_ms: i64,
}

/// A pass to run outside the partition lock.
#[derive(Debug)]
pub struct CleanPlan {
    dir: PathBuf,
    config: LogConfig,
    first_dirty: i64,
    segments: Vec<Planned>,
    /// Last offset of each producer's last batch: such batches are kept even when emptied.
    producer_last: HashMap<i64, i64>,
    /// Aborted transactions, as sorted (first, last offset) ranges per producer: their records
    /// stay out of the map and out of cleaned segments.
    aborted: HashMap<i64, Vec<(i64, i64)>>,
    now_ms: i64,
}

/// A cleaned segment waiting to be swapped in.
#[derive(Debug)]
struct CleanedGroup {
    replaced: Vec<Planned>,
    end: i64,
    segment: Segment,
}

/// What [`CleanPlan::run`] produced; install it with [`PartitionLog::install_clean`].
#[derive(Debug)]
pub struct Cleaned {
    dir: PathBuf,
    groups: Vec<CleanedGroup>,
    checkpoint: i64,
    pub stats: CleanStats,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CleanStats {
    /// Bytes of segments read and rewritten.
    pub bytes_read: u64,
    pub bytes_written: u64,
    /// Bytes of the dirty part the pass covered.
    pub dirty_bytes: u64,
    pub records_removed: u64,
    pub records_kept: u64,
    pub segments_before: usize,
    pub segments_after: usize,
}

fn modified_ms(file: &File) -> i64 {
    file.metadata()
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_millis() as i64)
}

fn read_checkpoint(dir: &Path) -> Option<i64> {
    std::fs::read_to_string(dir.join(CHECKPOINT_FILE))
        .ok()
        .and_then(|t| t.trim().parse().ok())
}

pub(crate) fn load_checkpoint(dir: &Path) -> i64 {
    read_checkpoint(dir).unwrap_or(i64::MIN)
}

pub(crate) fn write_checkpoint(dir: &Path, offset: i64) -> std::io::Result<()> {
    write_atomically(dir, CHECKPOINT_FILE, format!("{offset}\n").as_bytes())
}

impl PartitionLog {
    /// How many leading non-active segments may be cleaned now.
    fn cleanable_count(&self, now_ms: i64, high_watermark: i64) -> usize {
        let segments = self.segments();
        let lag = self.config().min_compaction_lag_ms;
        // Never past an open transaction: it may still abort, and its
        // records must not replace committed values of their keys.
        let high_watermark = self
            .first_unstable_offset()
            .map_or(high_watermark, |o| o.min(high_watermark));
        segments[..segments.len() - 1]
            .iter()
            .enumerate()
            .take_while(|(i, s)| {
                segments[i + 1].base_offset <= high_watermark
                    && (lag <= 0 || s.max_timestamp <= now_ms.saturating_sub(lag))
            })
            .count()
    }

    /// The cleaner's view of this log: what is dirty and whether a pass is overdue.
    pub fn dirty_stats(&self, now_ms: i64, high_watermark: i64) -> DirtyStats {
        let first_dirty = self.clean_offset().max(self.log_start_offset());
        let count = self.cleanable_count(now_ms, high_watermark);
        let max_lag = self.config().max_compaction_lag_ms;
        let mut stats = DirtyStats {
            first_dirty_offset: first_dirty,
            ..DirtyStats::default()
        };
        for s in &self.segments()[..count] {
            stats.cleanable_bytes += s.size;
            if s.next_offset > first_dirty {
                stats.dirty_bytes += s.size;
                stats.overdue |= max_lag > 0
                    && s.max_timestamp >= 0
                    && s.max_timestamp < now_ms.saturating_sub(max_lag);
            }
        }
        stats
    }

    /// A pass to run if this log is compacted and due (or `force`), else `None`.
    pub fn plan_clean(&self, now_ms: i64, high_watermark: i64, force: bool) -> Option<CleanPlan> {
        let config = self.config();
        // Never on a poisoned log, nor on one whose directory was moved away to be deleted.
        if !config.compact || self.writable().is_err() {
            return None;
        }
        let stats = self.dirty_stats(now_ms, high_watermark);
        let due = stats.overdue || stats.ratio() >= config.min_cleanable_dirty_ratio;
        if stats.dirty_bytes == 0 || !(due || force) {
            return None;
        }
        let count = self.cleanable_count(now_ms, high_watermark);
        let all = self.segments();
        let segments = all[..count]
            .iter()
            .enumerate()
            .map(|(i, s)| Planned {
                base: s.base_offset,
                next_base: all[i + 1].base_offset,
                next_offset: s.next_offset,
                size: s.size,
                file: Arc::clone(&s.log),
                modified_ms: modified_ms(&s.log),
            })
            .collect();
        let producer_last = self
            .producer_states()
            .entries()
            .filter_map(|(id, e)| e.batches.back().map(|b| (id, b.last_offset)))
            .collect();
        let mut aborted: HashMap<i64, Vec<(i64, i64)>> = HashMap::new();
        for t in self.aborted_transactions(self.log_start_offset(), i64::MAX) {
            aborted
                .entry(t.producer_id)
                .or_default()
                .push((t.first_offset, t.last_offset));
        }
        for ranges in aborted.values_mut() {
            ranges.sort_unstable();
        }
        Some(CleanPlan {
            aborted,
            dir: self.dir().to_path_buf(),
            config: config.clone(),
            first_dirty: stats.first_dirty_offset,
            segments,
            producer_last,
            now_ms,
        })
    }

    /// Swaps cleaned segments in. Groups whose segments changed meanwhile (retention, truncation)
    /// are discarded. Returns how many groups were installed.
    pub fn install_clean(
        &mut self,
        cleaned: Cleaned,
        fault: Option<FaultHook<'_>>,
    ) -> Result<usize> {
        self.writable()?;
        if cleaned.dir != self.dir() {
            return Err(Error::InvalidRecord(
                "cleaned segments of another log".into(),
            ));
        }
        let mut installed = 0;
        let mut all_installed = true;
        let dir = cleaned.dir.clone();
        for group in cleaned.groups {
            let at = self
                .segments()
                .iter()
                .position(|s| s.base_offset == group.replaced[0].base);
            let still_there = at.is_some_and(|at| {
                let segs = self.segments();
                at + group.replaced.len() < segs.len()
                    && group.replaced.iter().enumerate().all(|(k, p)| {
                        let s = &segs[at + k];
                        s.base_offset == p.base && s.size == p.size && Arc::ptr_eq(&s.log, &p.file)
                    })
            });
            let (Some(at), true) = (at, still_there) else {
                all_installed = false;
                remove_if_exists(&swap::cleaned_path(&dir, group.replaced[0].base))?;
                continue;
            };
            let base = group.replaced[0].base;
            if let Some(hook) = fault {
                hook(FaultPoint::AfterCleaned)?;
            }
            std::fs::rename(
                swap::cleaned_path(&dir, base),
                swap::swap_path(&dir, base, group.end),
            )?;
            sync_dir(&dir)?;
            if let Some(hook) = fault {
                hook(FaultPoint::AfterSwap)?;
            }
            // Replaced segments other than the first go; the first is replaced by the rename.
            for p in &group.replaced[1..] {
                remove_if_exists(&dir.join(file_name(p.base, LOG_EXT)))?;
                if let Some(hook) = fault {
                    hook(FaultPoint::AfterDelete)?;
                }
            }
            let bases: Vec<i64> = group.replaced.iter().map(|p| p.base).collect();
            swap::complete(&dir, base, group.end, &bases)?;
            let mut segment = group.segment;
            write_atomically(
                &dir,
                &file_name(base, INDEX_EXT),
                &segment.offset_index.encode_all(),
            )?;
            write_atomically(
                &dir,
                &file_name(base, TIME_INDEX_EXT),
                &segment.time_index.encode_all(),
            )?;
            segment.offset_index.mark_persisted();
            segment.time_index.mark_persisted();
            self.replace_segments(at, group.replaced.len(), segment);
            installed += 1;
        }
        if all_installed {
            write_checkpoint(&dir, cleaned.checkpoint)?;
            self.set_clean_offset(cleaned.checkpoint);
        }
        Ok(installed)
    }
}

/// Reads the batches of one planned segment in order.
fn for_each_batch(
    p: &Planned,
    cap: usize,
    throttle: &mut Throttle,
    mut f: impl FnMut(&BatchHeader, &[u8], &mut Throttle) -> Result<()>,
) -> Result<()> {
    let mut reader = ChunkReader::new(&p.file, p.size, 1 << 20);
    let mut pos = 0u64;
    loop {
        match reader.probe(pos, cap)? {
            Probe::End => return Ok(()),
            Probe::Bad(reason) => {
                return Err(Error::Corrupt {
                    segment: PathBuf::from(file_name(p.base, LOG_EXT)),
                    position: pos,
                    reason,
                })
            }
            Probe::Batch(h) => {
                let size = h.total_size();
                throttle.pace(size);
                f(&h, reader.get(pos, size)?, throttle)?;
                pos += size as u64;
            }
        }
    }
}

impl CleanPlan {
    /// Whether `h` belongs to a transaction that was aborted.
    fn is_aborted(&self, h: &BatchHeader) -> bool {
        // One producer's transactions do not overlap: the last one starting at or before the
        // batch is the only candidate.
        h.is_transactional()
            && self.aborted.get(&h.producer_id).is_some_and(|ranges| {
                let after = ranges.partition_point(|(first, _)| *first <= h.base_offset);
                after > 0 && h.base_offset <= ranges[after - 1].1
            })
    }

    /// Maps the dirty part and writes the cleaned segments (blocking I/O, no partition lock).
    pub fn run(self, dedupe_buffer_bytes: usize, throttle: &mut Throttle) -> Result<Cleaned> {
        let cap = self.config.disk_batch_cap();
        let mut map = OffsetMap::with_memory(dedupe_buffer_bytes);
        let mut map_end = self.first_dirty;
        let mut stats = CleanStats::default();
        'segments: for p in self
            .segments
            .iter()
            .filter(|p| p.next_offset > self.first_dirty)
        {
            let mut full = false;
            for_each_batch(p, cap, throttle, |h, batch, _| {
                if full || h.last_offset() < self.first_dirty {
                    return Ok(());
                }
                // Aborted records never replace a key's committed value.
                if !h.is_control() && !self.is_aborted(h) {
                    if map.len() + h.records_count.max(0) as usize > map.capacity() {
                        full = true;
                        return Ok(());
                    }
                    let body = records_section(batch, h, MAX_DECOMPRESSED)?;
                    walk_records(&body, h.base_offset, h.records_count, |r| {
                        if let (Some(key), true) = (r.key, r.offset >= self.first_dirty) {
                            map.put(key, r.offset);
                        }
                        Ok(())
                    })?;
                }
                map_end = h.last_offset() + 1;
                Ok(())
            })?;
            stats.dirty_bytes += p.size;
            if full {
                break 'segments;
            }
        }
        if map_end == self.first_dirty {
            return Err(Error::InvalidRecord(format!(
                "the cleaner's offset map ({dedupe_buffer_bytes} bytes) cannot hold one batch"
            )));
        }

        let to_clean: Vec<&Planned> = self.segments.iter().filter(|p| p.base < map_end).collect();
        stats.segments_before = to_clean.len();
        let mut groups = Vec::new();
        let limit = self.config.effective_segment_bytes();
        let mut i = 0;
        while i < to_clean.len() {
            let mut j = i + 1;
            let mut size = to_clean[i].size;
            while j < to_clean.len()
                && size + to_clean[j].size <= limit
                && to_clean[j].next_base - to_clean[i].base <= i64::from(i32::MAX)
            {
                size += to_clean[j].size;
                j += 1;
            }
            let group: Vec<Planned> = to_clean[i..j].iter().map(|p| (*p).clone()).collect();
            groups.push(self.clean_group(group, &map, map_end, throttle, &mut stats)?);
            i = j;
        }
        stats.segments_after = groups.len();
        Ok(Cleaned {
            dir: self.dir,
            groups,
            checkpoint: map_end,
            stats,
        })
    }

    /// Whether a record stays: see the module docs.
    fn keep(
        &self,
        map: &OffsetMap,
        map_end: i64,
        r: &crate::records::RecordRef<'_>,
        tombstones_expired: bool,
    ) -> bool {
        if r.offset >= map_end {
            return true;
        }
        let Some(key) = r.key else {
            return false;
        };
        if map.get(key).is_some_and(|latest| latest > r.offset) {
            return false;
        }
        !(r.value.is_none() && r.offset < self.first_dirty && tombstones_expired)
    }

    fn clean_group(
        &self,
        replaced: Vec<Planned>,
        map: &OffsetMap,
        map_end: i64,
        throttle: &mut Throttle,
        stats: &mut CleanStats,
    ) -> Result<CleanedGroup> {
        let base = replaced[0].base;
        let end = replaced[replaced.len() - 1].next_base;
        let path = swap::cleaned_path(&self.dir, base);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)?;
        let mut segment = Segment::from_file(&self.dir, base, file);
        let interval = self.config.index_interval_bytes;
        let cap = self.config.disk_batch_cap();
        let mut pending: Vec<u8> = Vec::with_capacity(WRITE_CHUNK);
        let mut headers: Vec<BatchHeader> = Vec::new();
        let flush = |segment: &mut Segment,
                     pending: &mut Vec<u8>,
                     headers: &mut Vec<BatchHeader>,
                     throttle: &mut Throttle|
         -> Result<()> {
            if !pending.is_empty() {
                throttle.pace(pending.len());
                segment.append(pending, headers, interval, self.now_ms)?;
                pending.clear();
                headers.clear();
            }
            Ok(())
        };
        let horizon = self
            .now_ms
            .saturating_sub(self.config.delete_retention_ms.max(0));
        let mut modified = 0i64;
        for p in &replaced {
            modified = modified.max(p.modified_ms);
            stats.bytes_read += p.size;
            let tombstones_expired = p.modified_ms < horizon;
            for_each_batch(p, cap, throttle, |h, batch, throttle| {
                if h.is_control() {
                    pending.extend_from_slice(batch);
                    headers.push(h.clone());
                } else {
                    // Nobody reads an aborted transaction's records once a pass covered them
                    // (read_committed never did), as in Kafka.
                    let aborted = h.last_offset() < map_end && self.is_aborted(h);
                    let body = records_section(batch, h, MAX_DECOMPRESSED)?;
                    let mut kept = Vec::with_capacity(body.len());
                    let mut count = 0i32;
                    walk_records(&body, h.base_offset, h.records_count, |r| {
                        if !aborted && self.keep(map, map_end, &r, tombstones_expired) {
                            kept.extend_from_slice(r.raw);
                            count += 1;
                        }
                        Ok(())
                    })?;
                    stats.records_kept += count as u64;
                    stats.records_removed += (h.records_count - count).max(0) as u64;
                    let producers_last = h.producer_id >= 0
                        && self.producer_last.get(&h.producer_id) == Some(&h.last_offset());
                    if count == h.records_count {
                        pending.extend_from_slice(batch);
                        headers.push(h.clone());
                    } else if count > 0 || producers_last {
                        let rebuilt =
                            rebuild_batch(h, Codec::new(h.compression(), None), &kept, count)?;
                        let mut header = BatchHeader::parse(&rebuilt)?;
                        header.base_offset = h.base_offset;
                        pending.extend_from_slice(&rebuilt);
                        headers.push(header);
                    }
                }
                if pending.len() >= WRITE_CHUNK {
                    flush(&mut segment, &mut pending, &mut headers, throttle)?;
                }
                Ok(())
            })?;
        }
        flush(&mut segment, &mut pending, &mut headers, throttle)?;
        // The cleaned segment keeps the replaced ones' last-write time: it drives tombstone expiry.
        let when = UNIX_EPOCH + Duration::from_millis(u64::try_from(modified).unwrap_or(0));
        segment.log.set_modified(when.min(SystemTime::now()))?;
        segment.log.sync_all()?;
        segment.seal()?;
        stats.bytes_written += segment.size;
        Ok(CleanedGroup {
            replaced,
            end,
            segment,
        })
    }
}

#[cfg(test)]
mod tests;
