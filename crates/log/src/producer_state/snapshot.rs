//! Producer-state snapshots: `<offset>.snapshot` holds the state of every producer as of
//! `offset` (all batches below it applied). Kafka's idea, our own format:
//!
//! ```text
//! "VPS2" | crc32c u32 (of everything after it) | offset i64 | count u32 | count × entry
//!        | aborted u32 | aborted × (producer_id i64 | first i64 | last i64 | lso i64)
//! entry: producer_id i64 | epoch i16 | last_timestamp i64 | txn_first_offset i64 (-1: none)
//!        | n u8 (<= 5) | n × batch
//! batch: first_seq i32 | last_seq i32 | first_offset i64 | last_offset i64 | max_timestamp i64
//! ```
//!
//! "VPS1" snapshots (before transactions: no `txn_first_offset`, no aborted list) are still read.
//!
//! Written atomically (temp file, fsync, rename) when a segment rolls and on close. Recovery uses
//! the newest valid snapshot in `[first segment base, log end]` and replays batch headers after
//! it. Retention keeps the snapshot at the first remaining segment's base: it was written when
//! that segment started and so still holds producers whose batches retention deleted (KIP-360:
//! state outlives the data; only `producer.id.expiration.ms` forgets a producer). Snapshots below
//! it are deleted; one older than the first segment would be stale for producers that wrote in
//! the deleted range, and a stale last sequence turns their next batch into an
//! OUT_OF_ORDER_SEQUENCE error, which is worse than not knowing them at all.

use std::collections::VecDeque;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::durable::{remove_if_exists, write_atomically};
use crate::error::Result;
use crate::segment::{file_name, parse_file_name, ChunkReader, Probe, Segment};

use super::{AbortedTxn, BatchMetadata, ProducerEntry, ProducerStates, RETAINED_BATCHES};
use crate::markers::read_marker;

pub(crate) const SNAPSHOT_EXT: &str = "snapshot";
const MAGIC: &[u8; 4] = b"VPS2";
const MAGIC_V1: &[u8; 4] = b"VPS1";
const ABORTED_LEN: usize = 4 * 8;
const HEADER_LEN: usize = 4 + 4 + 8 + 4;
const BATCH_LEN: usize = 4 + 4 + 8 + 8 + 8;
const ENTRY_FIXED_LEN: usize = 8 + 2 + 8 + 1;
/// Read size while replaying batch headers.
const SCAN_CHUNK: usize = 64 * 1024;

pub(crate) fn path(dir: &Path, offset: i64) -> PathBuf {
    dir.join(file_name(offset, SNAPSHOT_EXT))
}

pub(crate) fn encode(offset: i64, states: &ProducerStates) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + states.len() * (ENTRY_FIXED_LEN + BATCH_LEN));
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&offset.to_be_bytes());
    out.extend_from_slice(
        &u32::try_from(states.len())
            .unwrap_or(u32::MAX)
            .to_be_bytes(),
    );
    for (producer_id, entry) in states.entries() {
        out.extend_from_slice(&producer_id.to_be_bytes());
        out.extend_from_slice(&entry.epoch.to_be_bytes());
        out.extend_from_slice(&entry.last_timestamp.to_be_bytes());
        out.extend_from_slice(&entry.txn_first_offset.unwrap_or(-1).to_be_bytes());
        // At most RETAINED_BATCHES (5), so the cast cannot truncate.
        out.push(entry.batches.len().min(RETAINED_BATCHES) as u8);
        for b in entry.batches.iter().take(RETAINED_BATCHES) {
            out.extend_from_slice(&b.first_seq.to_be_bytes());
            out.extend_from_slice(&b.last_seq.to_be_bytes());
            out.extend_from_slice(&b.first_offset.to_be_bytes());
            out.extend_from_slice(&b.last_offset.to_be_bytes());
            out.extend_from_slice(&b.max_timestamp.to_be_bytes());
        }
    }
    let aborted: Vec<&AbortedTxn> = states.aborted().collect();
    out.reserve(4 + aborted.len() * ABORTED_LEN);
    out.extend_from_slice(
        &u32::try_from(aborted.len())
            .unwrap_or(u32::MAX)
            .to_be_bytes(),
    );
    for t in aborted.into_iter().take(u32::MAX as usize) {
        out.extend_from_slice(&t.producer_id.to_be_bytes());
        out.extend_from_slice(&t.first_offset.to_be_bytes());
        out.extend_from_slice(&t.last_offset.to_be_bytes());
        out.extend_from_slice(&t.last_stable_offset.to_be_bytes());
    }
    let crc = crc32c::crc32c(&out[8..]);
    out[4..8].copy_from_slice(&crc.to_be_bytes());
    out
}

/// A bounds-checked big-endian reader; `None` means truncated.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let bytes = self.buf.get(self.pos..self.pos + N)?;
        self.pos += N;
        bytes.try_into().ok()
    }
    fn i16(&mut self) -> Option<i16> {
        self.take().map(i16::from_be_bytes)
    }
    fn i32(&mut self) -> Option<i32> {
        self.take().map(i32::from_be_bytes)
    }
    fn i64(&mut self) -> Option<i64> {
        self.take().map(i64::from_be_bytes)
    }
}

/// Decodes a snapshot taken at `expected_offset`; the error names what is wrong.
pub(crate) fn decode(
    bytes: &[u8],
    expected_offset: i64,
) -> std::result::Result<ProducerStates, String> {
    if bytes.len() < HEADER_LEN || (&bytes[..4] != MAGIC && &bytes[..4] != MAGIC_V1) {
        return Err("not a producer snapshot".into());
    }
    let v2 = &bytes[..4] == MAGIC;
    let stored = u32::from_be_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
    if crc32c::crc32c(&bytes[8..]) != stored {
        return Err("CRC mismatch".into());
    }
    let mut r = Reader { buf: bytes, pos: 8 };
    let truncated = || "truncated".to_owned();
    let offset = r.i64().ok_or_else(truncated)?;
    if offset != expected_offset {
        return Err(format!("holds offset {offset}, named {expected_offset}"));
    }
    let count = r
        .take::<4>()
        .map(u32::from_be_bytes)
        .ok_or_else(truncated)?;
    let mut states = ProducerStates::default();
    for _ in 0..count {
        let producer_id = r.i64().ok_or_else(truncated)?;
        let epoch = r.i16().ok_or_else(truncated)?;
        let last_timestamp = r.i64().ok_or_else(truncated)?;
        let txn_first_offset = if v2 {
            Some(r.i64().ok_or_else(truncated)?).filter(|&o| o >= 0)
        } else {
            None
        };
        let n = usize::from(r.take::<1>().ok_or_else(truncated)?[0]);
        if n > RETAINED_BATCHES {
            return Err(format!("producer {producer_id} has {n} batches"));
        }
        let mut batches = VecDeque::with_capacity(RETAINED_BATCHES);
        for _ in 0..n {
            batches.push_back(BatchMetadata {
                first_seq: r.i32().ok_or_else(truncated)?,
                last_seq: r.i32().ok_or_else(truncated)?,
                first_offset: r.i64().ok_or_else(truncated)?,
                last_offset: r.i64().ok_or_else(truncated)?,
                max_timestamp: r.i64().ok_or_else(truncated)?,
            });
        }
        states.insert(
            producer_id,
            ProducerEntry {
                epoch,
                batches,
                last_timestamp,
                txn_first_offset,
            },
        );
    }
    if v2 {
        let aborted = r
            .take::<4>()
            .map(u32::from_be_bytes)
            .ok_or_else(truncated)?;
        // Each entry is 32 bytes: a count the file cannot hold is damage.
        if (aborted as usize).saturating_mul(ABORTED_LEN) > bytes.len() - r.pos {
            return Err(format!("{aborted} aborted transactions do not fit"));
        }
        for _ in 0..aborted {
            states.push_aborted(AbortedTxn {
                producer_id: r.i64().ok_or_else(truncated)?,
                first_offset: r.i64().ok_or_else(truncated)?,
                last_offset: r.i64().ok_or_else(truncated)?,
                last_stable_offset: r.i64().ok_or_else(truncated)?,
            });
        }
    }
    if r.pos != bytes.len() {
        return Err("trailing bytes".into());
    }
    Ok(states)
}

/// Writes the snapshot for `offset` atomically.
pub(crate) fn write(dir: &Path, offset: i64, states: &ProducerStates) -> io::Result<()> {
    write_atomically(
        dir,
        &file_name(offset, SNAPSHOT_EXT),
        &encode(offset, states),
    )
}

/// Offsets of the snapshot files in `dir`, ascending.
pub(crate) fn list(dir: &Path) -> io::Result<Vec<i64>> {
    let mut offsets = Vec::new();
    for entry in fs::read_dir(dir)? {
        let name = entry?.file_name();
        if let Some(offset) = name.to_str().and_then(|n| parse_file_name(n, SNAPSHOT_EXT)) {
            offsets.push(offset);
        }
    }
    offsets.sort_unstable();
    Ok(offsets)
}

/// Deletes snapshots below `offset` (see the module docs for why that is safe).
pub(crate) fn delete_below(dir: &Path, offset: i64) -> io::Result<()> {
    for at in list(dir)?.into_iter().filter(|&o| o < offset) {
        remove_if_exists(&path(dir, at))?;
    }
    Ok(())
}

/// What recovery did to rebuild the producer state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Rebuilt {
    /// Offset of the snapshot used, if any.
    pub snapshot: Option<i64>,
    /// Batch headers replayed after it.
    pub replayed_batches: usize,
}

/// Loads the newest usable snapshot and replays the batch headers after it, deleting snapshots
/// that are stale (beyond the log end: that data was lost), too old, or damaged.
pub(crate) fn recover(
    dir: &Path,
    segments: &[Segment],
    log_end_offset: i64,
    cap: usize,
) -> Result<(ProducerStates, Rebuilt)> {
    let first_base = segments.first().map_or(log_end_offset, |s| s.base_offset);
    let mut chosen = None;
    for offset in list(dir)?.into_iter().rev() {
        let file = path(dir, offset);
        if chosen.is_some() || offset > log_end_offset || offset < first_base {
            remove_if_exists(&file)?;
            continue;
        }
        match decode(&fs::read(&file)?, offset) {
            Ok(states) => chosen = Some((offset, states)),
            Err(reason) => {
                tracing::warn!(snapshot = %file.display(), %reason, "discarding a damaged producer snapshot");
                remove_if_exists(&file)?;
            }
        }
    }
    // Older snapshots were deleted above: the chosen one supersedes them.
    let (start, mut states, snapshot) = match chosen {
        Some((offset, states)) => (offset, states, Some(offset)),
        None => (first_base, ProducerStates::default(), None),
    };
    let replayed_batches = replay(segments, start, cap, &mut states)?;
    Ok((
        states,
        Rebuilt {
            snapshot,
            replayed_batches,
        },
    ))
}

/// Applies the headers of every batch at or after `start`; reads headers only, never records.
fn replay(
    segments: &[Segment],
    start: i64,
    cap: usize,
    states: &mut ProducerStates,
) -> Result<usize> {
    let mut replayed = 0;
    for seg in segments.iter().filter(|s| s.next_offset > start) {
        let Some(mut pos) = seg.find_batch(start, cap)? else {
            continue;
        };
        let log = Arc::clone(&seg.log);
        let mut reader = ChunkReader::new(&log, seg.size, SCAN_CHUNK);
        // Recovery validated these segments; anything else ends the segment's replay.
        while let Probe::Batch(h) = reader.probe(pos, cap)? {
            if h.base_offset >= start {
                // Only markers need their record read (one small record).
                let marker = if h.is_control() {
                    read_marker(&h, reader.get(pos, h.total_size())?)
                } else {
                    None
                };
                states.record(&h, marker);
                replayed += 1;
            }
            pos += h.total_size() as u64;
        }
    }
    Ok(replayed)
}
