//! What a follower replica does to its log: append the leader's batches as
//! they are (offsets, leader epochs and timestamps already assigned), and
//! cut its log back to where it agrees with a new leader (KIP-101/279).
//! A leader records the epoch it starts leading at.

use crate::batch::validate_inner;
use crate::epoch::LeaderEpochCache;
use crate::error::{Error, Result};
use crate::log::{AppendInfo, PartitionLog};
use crate::recovery::{write_log_start_offset, write_recovery_point};
use crate::segment::{ChunkReader, Probe, Segment};

impl PartitionLog {
    /// Appends batches copied from the leader, byte for byte: each must
    /// start at or after where the previous one ended (the first at or after
    /// the log end; compaction leaves gaps). Leader
    /// epochs are taken from the batches; idempotent producers' state is
    /// tracked as on the leader, so a new leader still recognises retries.
    pub fn append_replicated(&mut self, records: &[u8], now_ms: i64) -> Result<AppendInfo> {
        self.writable()?;
        let headers = validate_inner(records, self.config.disk_batch_cap(), true, true)?;
        let first_offset = self.log_end_offset();
        let mut next = first_offset;
        for h in &headers {
            // Gaps are where the leader's cleaner removed records.
            if h.base_offset < next {
                return Err(Error::InvalidRecord(format!(
                    "replicated batch starts at offset {}, expected {next} or later",
                    h.base_offset
                )));
            }
            next = h.last_offset() + 1;
        }
        let last_offset = next - 1;
        if self.roll_needed(records.len() as u64, last_offset, now_ms) {
            self.roll()?;
        }
        if last_offset - self.active().base_offset > i64::from(i32::MAX) {
            return Err(Error::InvalidRecord(
                "one append spans more offsets than a segment can address".into(),
            ));
        }
        for h in &headers {
            // Before the data, as on the leader.
            self.epochs
                .assign(h.partition_leader_epoch, h.base_offset)?;
        }
        let interval = self.config.index_interval_bytes;
        let active = self.active_mut();
        if let Err(e) = active.append(records, &headers, interval, now_ms) {
            if active.log.set_len(active.size).is_err() {
                self.poisoned = true;
            }
            return Err(e.into());
        }
        if let Err(e) = active.write_pending_indexes() {
            tracing::warn!(segment = %active.path.display(), error = %e, "index write failed");
        }
        let (mut max_timestamp, mut offset_of_max_timestamp) = (-1i64, -1i64);
        let markers = crate::markers::markers_in(records, &headers);
        for (h, marker) in headers.iter().zip(markers) {
            self.producers.record(h, marker);
            if h.max_timestamp > max_timestamp {
                max_timestamp = h.max_timestamp;
                offset_of_max_timestamp = h.last_offset();
            }
        }
        Ok(AppendInfo {
            first_offset,
            last_offset,
            max_timestamp,
            offset_of_max_timestamp,
            log_append_time: -1,
            bytes: records.len(),
            batches: headers,
            duplicate: false,
        })
    }

    /// A new leader records that its epoch starts at its log end, so a
    /// follower asking where an older epoch ended gets this offset.
    pub fn assign_epoch(&mut self, epoch: i32) -> Result<()> {
        self.writable()?;
        let end = self.log_end_offset();
        self.epochs.assign(epoch, end)?;
        Ok(())
    }

    /// Empties the log and starts it over at `offset`: a follower whose log
    /// ends before the leader's log start cannot catch up by fetching.
    pub fn truncate_fully_and_start_at(&mut self, offset: i64, now_ms: i64) -> Result<()> {
        self.writable()?;
        let offset = offset.max(0);
        write_recovery_point(&self.dir, offset)?;
        self.checkpointed = offset;
        self.reset_files(offset)?;
        crate::durable::sync_dir(&self.dir)?;
        let (reopened, _) = PartitionLog::open(&self.dir, self.config.clone(), now_ms)?;
        *self = reopened;
        tracing::info!(dir = %self.dir.display(), offset, "emptied the log to restart at the leader's log start");
        Ok(())
    }

    /// Deletes every segment and the epoch checkpoint; the log starts at
    /// `offset` when reopened.
    fn reset_files(&self, offset: i64) -> Result<()> {
        for seg in &self.segments {
            seg.delete_files()?;
        }
        write_log_start_offset(&self.dir, offset)?;
        // No batch is left to have an epoch, or to be clean.
        crate::durable::remove_if_exists(&self.dir.join(crate::epoch::CHECKPOINT_FILE))?;
        crate::durable::remove_if_exists(&self.dir.join(crate::cleaner::CHECKPOINT_FILE))?;
        let fresh = Segment::create(&self.dir, offset)?;
        fresh.log.sync_data()?;
        Ok(())
    }

    /// Cuts the log back to `offset` (a follower diverged from its new
    /// leader): everything at or after it goes; a batch straddling it goes
    /// whole. Below the log start, the log starts over empty at `offset`.
    /// Returns the new log end offset.
    pub fn truncate_to(&mut self, offset: i64, now_ms: i64) -> Result<i64> {
        self.writable()?;
        if offset >= self.log_end_offset() {
            return Ok(self.log_end_offset());
        }
        // Lower the recovery point first: recovery must not trust what we cut.
        let point = self.synced_offset.min(offset).max(0);
        write_recovery_point(&self.dir, point)?;
        self.checkpointed = point;
        if offset <= self.log_start_offset {
            self.reset_files(offset.max(0))?;
        } else {
            let keep = self
                .segments
                .partition_point(|s| s.base_offset < offset)
                .max(1);
            for seg in &self.segments[keep..] {
                seg.delete_files()?;
            }
            let last = &self.segments[keep - 1];
            let cut = cut_position(last, offset, self.config.disk_batch_cap())?;
            last.log.set_len(cut)?;
            last.log.sync_data()?;
        }
        if self.clean_offset > offset {
            crate::cleaner::write_checkpoint(&self.dir, offset)?;
        }
        let mut epochs = LeaderEpochCache::load(&self.dir)?;
        if epochs.truncate_from_end(offset) {
            epochs.persist()?;
        }
        crate::durable::sync_dir(&self.dir)?;
        let (reopened, _) = PartitionLog::open(&self.dir, self.config.clone(), now_ms)?;
        *self = reopened;
        tracing::info!(dir = %self.dir.display(), offset, log_end_offset = self.log_end_offset(),
            "truncated the log to follow a new leader");
        Ok(self.log_end_offset())
    }
}

/// Where the first batch ending at or after `offset` starts in `seg`.
fn cut_position(seg: &Segment, offset: i64, cap: usize) -> Result<u64> {
    let mut reader = ChunkReader::new(&seg.log, seg.size, 64 * 1024);
    let mut pos = 0u64;
    loop {
        match reader.probe(pos, cap)? {
            Probe::End => return Ok(pos),
            Probe::Bad(reason) => return Err(seg.corrupt(pos, reason)),
            Probe::Batch(h) if h.last_offset() >= offset => return Ok(pos),
            Probe::Batch(h) => pos += h.total_size() as u64,
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::batch::validate_records;
    use crate::testing::{build_batch_with_producer, build_simple_batch};
    use crate::{LogConfig, PartitionLog};

    const NOW: i64 = 1_700_000_000_000;

    fn open(dir: &std::path::Path, config: LogConfig) -> PartitionLog {
        PartitionLog::open(dir, config, NOW).unwrap().0
    }

    /// Appends `count` one-record batches at leader epoch `epoch`; returns their bytes as stored.
    fn lead(log: &mut PartitionLog, count: usize, epoch: i32) -> Vec<u8> {
        let mut out = Vec::new();
        for i in 0..count {
            let mut b = build_simple_batch(1, 20, NOW + i as i64);
            log.append(&mut b, epoch, NOW).unwrap();
            out.extend_from_slice(&b);
        }
        out
    }

    fn read_all(log: &PartitionLog) -> Vec<u8> {
        let mut out = Vec::new();
        let mut offset = log.log_start_offset();
        while offset < log.log_end_offset() {
            let r = log.read(offset, usize::MAX, i64::MAX, true).unwrap();
            let headers = validate_records(&r.records, usize::MAX).unwrap();
            offset = headers.last().unwrap().last_offset() + 1;
            out.extend_from_slice(&r.records);
        }
        out
    }

    #[test]
    fn replicated_batches_are_stored_byte_for_byte_with_their_epochs() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let mut leader = open(a.path(), LogConfig::default());
        let mut follower = open(b.path(), LogConfig::default());
        let mut bytes = lead(&mut leader, 3, 0);
        bytes.extend(lead(&mut leader, 2, 4));
        let info = follower.append_replicated(&bytes, NOW).unwrap();
        assert_eq!((info.first_offset, info.last_offset), (0, 4));
        assert_eq!(read_all(&follower), read_all(&leader));
        assert_eq!(follower.epoch_entries(), vec![(0, 0), (4, 3)]);
        assert_eq!(follower.end_offset_for_epoch(0), Some((0, 3)));
        // A gap or an overlap is refused and writes nothing.
        assert!(follower.append_replicated(&bytes, NOW).is_err());
        assert_eq!(follower.log_end_offset(), 5);
        drop(follower);
        let follower = open(b.path(), LogConfig::default());
        assert_eq!(read_all(&follower), read_all(&leader));
        assert_eq!(follower.epoch_entries(), vec![(0, 0), (4, 3)]);
    }

    #[test]
    fn idempotent_state_follows_replicated_batches() {
        let dir = tempfile::tempdir().unwrap();
        let leader_dir = tempfile::tempdir().unwrap();
        let mut leader = open(leader_dir.path(), LogConfig::default());
        let mut b = build_batch_with_producer(&[(None, Some(b"v"), NOW)], 42, 0, 0);
        leader.append(&mut b, 1, NOW).unwrap();
        let mut follower = open(dir.path(), LogConfig::default());
        follower.append_replicated(&b, NOW).unwrap();
        // The follower, now leader, recognises the producer's retry.
        let mut retry = build_batch_with_producer(&[(None, Some(b"v"), NOW)], 42, 0, 0);
        let info = follower.append(&mut retry, 2, NOW).unwrap();
        assert!(info.duplicate);
        assert_eq!(follower.log_end_offset(), 1);
    }

    #[test]
    fn truncation_cuts_whole_batches_across_segments_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let config = LogConfig {
            segment_bytes: 300,
            ..LogConfig::default()
        };
        let mut log = open(dir.path(), config.clone());
        let mut first = lead(&mut log, 6, 1);
        lead(&mut log, 6, 2);
        assert!(log.segment_count() > 2, "{}", log.segment_count());
        assert_eq!(log.truncate_to(4, NOW).unwrap(), 4);
        first.truncate(first.len() / 6 * 4);
        assert_eq!(read_all(&log), first);
        assert_eq!(log.epoch_entries(), vec![(1, 0)]);
        // The log goes on from the cut, in a new epoch.
        lead(&mut log, 2, 3);
        assert_eq!(log.log_end_offset(), 6);
        assert_eq!(log.epoch_entries(), vec![(1, 0), (3, 4)]);
        let expected = read_all(&log);
        drop(log);
        let log = open(dir.path(), config);
        assert_eq!(read_all(&log), expected);
        assert_eq!(log.log_end_offset(), 6);
    }

    #[test]
    fn truncating_below_the_log_start_starts_over_empty() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = open(dir.path(), LogConfig::default());
        lead(&mut log, 5, 0);
        log.delete_records_before(3).unwrap();
        assert_eq!(log.truncate_to(2, NOW).unwrap(), 2);
        assert_eq!((log.log_start_offset(), log.log_end_offset()), (2, 2));
        assert!(log.epoch_entries().is_empty());
        log.assign_epoch(7).unwrap();
        assert_eq!(log.end_offset_for_epoch(7), Some((7, 2)));
        // Behind the leader's log start: start over there.
        log.truncate_fully_and_start_at(40, NOW).unwrap();
        assert_eq!((log.log_start_offset(), log.log_end_offset()), (40, 40));
        lead(&mut log, 1, 8);
        assert_eq!(log.log_end_offset(), 41);
    }
}
