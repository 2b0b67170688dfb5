//! ListOffsets by timestamp and MAX_TIMESTAMP.
//!
//! Exactness: for uncompressed CreateTime batches the record headers are walked, so answers are
//! per record. Compressed batches are never decompressed: their answer is the batch's base offset
//! (or the log start offset, if later) with the batch's max_timestamp. LogAppendTime batches are
//! exact either way (every record carries the batch time).

use std::io;

use super::PartitionLog;
use crate::batch::{BatchHeader, Compression, RecordTimestamps};
use crate::error::Result;
use crate::segment::{ChunkReader, Probe, Segment};

/// Uncompressed CreateTime batches have per-record timestamps worth walking.
fn walkable(header: &BatchHeader) -> bool {
    header.compression() == Compression::None && !header.timestamp_type_log_append()
}

/// The first record of the batch at `pos` with offset `>= min_offset` satisfying `hit(timestamp)`.
fn search_batch(
    reader: &mut ChunkReader<'_>,
    pos: u64,
    header: &BatchHeader,
    min_offset: i64,
    hit: impl Fn(i64) -> bool,
) -> io::Result<Option<(i64, i64)>> {
    let coarse = (header.base_offset.max(min_offset), header.max_timestamp);
    if !walkable(header) {
        return Ok(hit(header.max_timestamp).then_some(coarse));
    }
    let bytes = reader.get(pos, header.total_size())?;
    let mut records = RecordTimestamps::new(bytes, header);
    if let Some(found) = records.find(|&(offset, ts)| offset >= min_offset && hit(ts)) {
        return Ok(Some(found));
    }
    // Record bodies are not validated on append; fall back to batch granularity.
    Ok((records.malformed && hit(header.max_timestamp)).then_some(coarse))
}

impl PartitionLog {
    /// The earliest offset (>= log start) whose record timestamp is `>= timestamp`, with that
    /// timestamp; `None` if there is none. Special Kafka timestamps (-1 latest, -2 earliest,
    /// -3 max) are the caller's business. Compressed batches answer at batch granularity (module docs).
    pub fn offset_for_timestamp(&self, timestamp: i64) -> Result<Option<(i64, i64)>> {
        let cap = self.config.disk_batch_cap();
        let start = self.log_start_offset;
        for seg in &self.segments {
            if seg.max_timestamp < timestamp || seg.next_offset <= start {
                continue;
            }
            let mut pos = seg
                .time_index
                .lookup(timestamp)
                .and_then(|t| seg.offset_index.lookup(t.relative_offset))
                .map_or(0, |e| u64::from(e.position));
            if start > seg.base_offset {
                if let Some(p) = seg.find_batch(start, cap)? {
                    pos = pos.max(p);
                }
            }
            if let Some(found) = scan_segment(seg, pos, cap, start, timestamp)? {
                return Ok(Some(found));
            }
        }
        Ok(None)
    }

    /// ListOffsets MAX_TIMESTAMP: the largest timestamp in the log and the offset of the first
    /// record carrying it (exact for uncompressed and LogAppendTime batches; for compressed
    /// CreateTime batches the last offset of the batch). `None` for an empty log or one without timestamps.
    pub fn max_timestamp(&self) -> Result<Option<(i64, i64)>> {
        if self.log_start_offset == self.log_end_offset() {
            return Ok(None);
        }
        let mut best: Option<&Segment> = None;
        for seg in &self.segments {
            if seg.next_offset > self.log_start_offset
                && best.is_none_or(|b| seg.max_timestamp > b.max_timestamp)
            {
                best = Some(seg);
            }
        }
        let Some(seg) = best.filter(|s| s.max_timestamp >= 0) else {
            return Ok(None);
        };
        let (max, batch_last) = (seg.max_timestamp, seg.offset_of_max_timestamp);
        let cap = self.config.disk_batch_cap();
        if let Some(pos) = seg.find_batch(batch_last, cap)? {
            let mut reader = ChunkReader::new(&seg.log, seg.size, 64 * 1024);
            if let Probe::Batch(h) = reader.probe(pos, cap)? {
                if h.timestamp_type_log_append() {
                    // Every record carries the batch time: the first one is exact.
                    return Ok(Some((max, h.base_offset.max(self.log_start_offset))));
                }
                if walkable(&h) {
                    let first =
                        search_batch(&mut reader, pos, &h, self.log_start_offset, |t| t == max)?;
                    if let Some((offset, _)) = first {
                        return Ok(Some((max, offset)));
                    }
                }
            }
        }
        Ok(Some((max, batch_last)))
    }
}

fn scan_segment(
    seg: &Segment,
    mut pos: u64,
    cap: usize,
    min_offset: i64,
    timestamp: i64,
) -> Result<Option<(i64, i64)>> {
    let mut reader = ChunkReader::new(&seg.log, seg.size, 64 * 1024);
    loop {
        let header = match reader.probe(pos, cap)? {
            Probe::End => return Ok(None),
            Probe::Bad(reason) => return Err(seg.corrupt(pos, reason)),
            Probe::Batch(h) => h,
        };
        if header.max_timestamp >= timestamp && header.last_offset() >= min_offset {
            if let Some(found) =
                search_batch(&mut reader, pos, &header, min_offset, |t| t >= timestamp)?
            {
                return Ok(Some(found));
            }
        }
        pos += header.total_size() as u64;
    }
}
