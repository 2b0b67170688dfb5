//! Kafka v2 record batch framing: header parsing, produce-time validation, and the in-place rewrites
//! the broker is allowed to make (base offset, partition leader epoch, LogAppendTime).
//!
//! The CRC-32C covers bytes `[21, end)`: everything from `attributes` on. `base_offset`,
//! `batch_length` and `partition_leader_epoch` sit before it, so assigning offsets and stamping the
//! epoch never touches the CRC; switching to LogAppendTime rewrites `attributes` and
//! `max_timestamp`, which does.

use crate::error::{Error, Result};

/// Size of the fixed v2 batch header; records start here.
pub const HEADER_LEN: usize = 61;
/// Bytes counted by `batch_length` precede it: base offset (8) + the length field itself (4).
pub const LOG_OVERHEAD: usize = 12;
/// Smallest legal `batch_length`: a header with no records.
pub const MIN_BATCH_LENGTH: i32 = (HEADER_LEN - LOG_OVERHEAD) as i32;

const PARTITION_LEADER_EPOCH_AT: usize = 12;
const MAGIC_AT: usize = 16;
const CRC_AT: usize = 17;
const ATTRIBUTES_AT: usize = 21;
const MAX_TIMESTAMP_AT: usize = 35;

const CODEC_MASK: i16 = 0x07;
const TIMESTAMP_TYPE_BIT: i16 = 0x08;
const TRANSACTIONAL_BIT: i16 = 0x10;
const CONTROL_BIT: i16 = 0x20;

/// Compression codec from the low three attribute bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
    /// Codec ids 5..=7 are not defined by Kafka; `validate_records` rejects them.
    Unknown(u8),
}

/// The fixed 61-byte header of a v2 record batch, decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: i64,
    pub batch_length: i32,
    pub partition_leader_epoch: i32,
    pub magic: i8,
    pub crc: u32,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub records_count: i32,
}

fn i16_at(buf: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([buf[at], buf[at + 1]])
}

fn i32_at(buf: &[u8], at: usize) -> i32 {
    i32::from_be_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]])
}

fn i64_at(buf: &[u8], at: usize) -> i64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&buf[at..at + 8]);
    i64::from_be_bytes(b)
}

impl BatchHeader {
    /// Decode the header at the start of `buf`. Checks only what the header alone can tell: there
    /// are 61 bytes, `magic == 2` and `batch_length >= 49`. It does not check that the whole batch
    /// is present or that the CRC matches (see [`validate_records`]).
    pub fn parse(buf: &[u8]) -> Result<BatchHeader> {
        if buf.len() < HEADER_LEN {
            return Err(Error::CorruptRecord(format!(
                "record batch header needs {HEADER_LEN} bytes, got {}",
                buf.len()
            )));
        }
        let magic = buf[MAGIC_AT] as i8;
        if magic != 2 {
            return Err(Error::InvalidRecord(format!(
                "unsupported record batch magic {magic} (only v2 is accepted)"
            )));
        }
        let batch_length = i32_at(buf, 8);
        if batch_length < MIN_BATCH_LENGTH {
            return Err(Error::CorruptRecord(format!(
                "batch length {batch_length} is below the minimum {MIN_BATCH_LENGTH}"
            )));
        }
        Ok(BatchHeader {
            base_offset: i64_at(buf, 0),
            batch_length,
            partition_leader_epoch: i32_at(buf, PARTITION_LEADER_EPOCH_AT),
            magic,
            crc: i32_at(buf, CRC_AT) as u32,
            attributes: i16_at(buf, ATTRIBUTES_AT),
            last_offset_delta: i32_at(buf, 23),
            base_timestamp: i64_at(buf, 27),
            max_timestamp: i64_at(buf, MAX_TIMESTAMP_AT),
            producer_id: i64_at(buf, 43),
            producer_epoch: i16_at(buf, 51),
            base_sequence: i32_at(buf, 53),
            records_count: i32_at(buf, 57),
        })
    }

    /// Bytes the whole batch occupies: `12 + batch_length`.
    pub fn total_size(&self) -> usize {
        LOG_OVERHEAD + self.batch_length.max(0) as usize
    }

    /// `base_offset + last_offset_delta` (saturating: headers read back from damaged files may
    /// hold anything).
    pub fn last_offset(&self) -> i64 {
        self.base_offset
            .saturating_add(i64::from(self.last_offset_delta))
    }

    pub fn compression(&self) -> Compression {
        match (self.attributes & CODEC_MASK) as u8 {
            0 => Compression::None,
            1 => Compression::Gzip,
            2 => Compression::Snappy,
            3 => Compression::Lz4,
            4 => Compression::Zstd,
            other => Compression::Unknown(other),
        }
    }

    pub fn is_transactional(&self) -> bool {
        self.attributes & TRANSACTIONAL_BIT != 0
    }

    pub fn is_control(&self) -> bool {
        self.attributes & CONTROL_BIT != 0
    }

    pub fn timestamp_type_log_append(&self) -> bool {
        self.attributes & TIMESTAMP_TYPE_BIT != 0
    }
}

/// CRC-32C of a complete batch as Kafka defines it (from `attributes` to the end).
pub(crate) fn compute_crc(batch: &[u8]) -> u32 {
    crc32c::crc32c(&batch[ATTRIBUTES_AT..])
}

/// Validate a produce request's record set: one or more complete v2 batches back to back, nothing
/// trailing. Checks magic == 2, batch_length bounds (>= 49 and not beyond the buffer), CRC32C,
/// records_count >= 1 and last_offset_delta == records_count - 1, a known compression codec, no
/// control batches (only the broker writes those), and each batch's total size <= `max_message_bytes`.
/// Returns the headers in order. Costs one CRC pass per batch and nothing per record.
pub fn validate_records(records: &[u8], max_message_bytes: usize) -> Result<Vec<BatchHeader>> {
    validate_inner(records, max_message_bytes, false, false)
}

/// As [`validate_records`], but control batches may be allowed (transaction markers written by the
/// broker's own coordinator), and `cleaned` batches (copied from a leader whose cleaner ran) may
/// hold fewer records than their offset range, down to none.
pub(crate) fn validate_inner(
    records: &[u8],
    max_message_bytes: usize,
    allow_control: bool,
    cleaned: bool,
) -> Result<Vec<BatchHeader>> {
    if records.is_empty() {
        return Err(Error::CorruptRecord("empty record set".into()));
    }
    let mut headers = Vec::new();
    let mut pos = 0usize;
    while pos < records.len() {
        let rest = &records[pos..];
        if rest.len() < HEADER_LEN {
            return Err(Error::CorruptRecord(format!(
                "{} trailing bytes at position {pos} are not a whole batch header",
                rest.len()
            )));
        }
        let header = BatchHeader::parse(rest)?;
        let size = header.total_size();
        if size > rest.len() {
            return Err(Error::CorruptRecord(format!(
                "batch at position {pos} claims {size} bytes but only {} remain",
                rest.len()
            )));
        }
        if size > max_message_bytes {
            return Err(Error::RecordTooLarge {
                size,
                max: max_message_bytes,
            });
        }
        let batch = &rest[..size];
        let actual = compute_crc(batch);
        if actual != header.crc {
            return Err(Error::CorruptRecord(format!(
                "batch at position {pos}: CRC mismatch (stored {:#010x}, computed {actual:#010x})",
                header.crc
            )));
        }
        let count_ok = if cleaned {
            header.records_count >= 0
                && header.last_offset_delta >= 0
                && i64::from(header.records_count) <= i64::from(header.last_offset_delta) + 1
        } else {
            header.records_count >= 1
        };
        if !count_ok {
            return Err(Error::InvalidRecord(format!(
                "batch at position {pos} has records_count {}",
                header.records_count
            )));
        }
        if !cleaned && i64::from(header.last_offset_delta) != i64::from(header.records_count) - 1 {
            return Err(Error::InvalidRecord(format!(
                "batch at position {pos}: last_offset_delta {} does not match records_count {}",
                header.last_offset_delta, header.records_count
            )));
        }
        if let Compression::Unknown(codec) = header.compression() {
            return Err(Error::InvalidRecord(format!(
                "batch at position {pos} uses unknown compression codec {codec}"
            )));
        }
        if header.is_control() && !allow_control {
            return Err(Error::InvalidRecord(format!(
                "batch at position {pos} is a control batch; clients may not produce those"
            )));
        }
        headers.push(header);
        pos += size;
    }
    Ok(headers)
}

/// Overwrite `base_offset` (not covered by the CRC).
pub(crate) fn set_base_offset(batch: &mut [u8], base_offset: i64) {
    batch[..8].copy_from_slice(&base_offset.to_be_bytes());
}

/// Overwrite `partition_leader_epoch` (not covered by the CRC).
pub(crate) fn set_partition_leader_epoch(batch: &mut [u8], epoch: i32) {
    batch[PARTITION_LEADER_EPOCH_AT..PARTITION_LEADER_EPOCH_AT + 4]
        .copy_from_slice(&epoch.to_be_bytes());
}

/// Switch a complete batch to LogAppendTime: set the timestamp-type bit, set `max_timestamp` to
/// `now_ms` and recompute the CRC. Record-level timestamp deltas stay as produced; readers ignore
/// them for LogAppendTime batches. Returns the new CRC.
pub(crate) fn set_log_append_time(batch: &mut [u8], now_ms: i64) -> u32 {
    let attributes = i16_at(batch, ATTRIBUTES_AT) | TIMESTAMP_TYPE_BIT;
    batch[ATTRIBUTES_AT..ATTRIBUTES_AT + 2].copy_from_slice(&attributes.to_be_bytes());
    batch[MAX_TIMESTAMP_AT..MAX_TIMESTAMP_AT + 8].copy_from_slice(&now_ms.to_be_bytes());
    let crc = compute_crc(batch);
    batch[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
    crc
}

/// Reads one zigzag varint of at most `max_bytes` bytes; `None` when truncated or overlong.
fn read_varlong(buf: &[u8], pos: &mut usize, max_bytes: usize) -> Option<i64> {
    let mut raw: u64 = 0;
    for i in 0..max_bytes {
        let byte = *buf.get(*pos)?;
        *pos += 1;
        raw |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((raw >> 1) as i64 ^ -((raw & 1) as i64));
        }
    }
    None
}

/// Iterates `(offset, timestamp)` of the records of an uncompressed batch by walking the
/// varint-encoded record headers (length, attributes, timestampDelta, offsetDelta) and skipping the
/// bodies. Stops at the first malformed record and sets `malformed`, because record bodies are not
/// validated on the produce path.
pub(crate) struct RecordTimestamps<'a> {
    batch: &'a [u8],
    pos: usize,
    remaining: i32,
    base_offset: i64,
    base_timestamp: i64,
    pub malformed: bool,
}

impl<'a> RecordTimestamps<'a> {
    /// `batch` must be a whole uncompressed batch described by `header`.
    pub(crate) fn new(batch: &'a [u8], header: &BatchHeader) -> Self {
        Self {
            batch,
            pos: HEADER_LEN,
            remaining: header.records_count,
            base_offset: header.base_offset,
            base_timestamp: header.base_timestamp,
            malformed: false,
        }
    }

    fn next_record(&mut self) -> Option<(i64, i64)> {
        let len = read_varlong(self.batch, &mut self.pos, 5)?;
        let start = self.pos;
        let end = start.checked_add(usize::try_from(len).ok()?)?;
        if end > self.batch.len() {
            return None;
        }
        let body = &self.batch[..end];
        let mut p = start + 1; // attributes (unused)
        let ts_delta = read_varlong(body, &mut p, 10)?;
        let offset_delta = read_varlong(body, &mut p, 5)?;
        self.pos = end;
        Some((
            self.base_offset.checked_add(offset_delta)?,
            self.base_timestamp.checked_add(ts_delta)?,
        ))
    }
}

impl Iterator for RecordTimestamps<'_> {
    type Item = (i64, i64);

    fn next(&mut self) -> Option<(i64, i64)> {
        if self.remaining <= 0 || self.malformed {
            return None;
        }
        self.remaining -= 1;
        let item = self.next_record();
        if item.is_none() {
            self.malformed = true;
        }
        item
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{build_batch, build_opaque_batch};
    use proptest::prelude::*;

    fn two_records() -> Vec<u8> {
        build_batch(&[(Some(b"k"), Some(b"v1"), 1000), (None, Some(b"v2"), 1005)])
    }

    #[test]
    fn parses_builder_output() {
        let b = two_records();
        let h = BatchHeader::parse(&b).unwrap();
        assert_eq!(h.magic, 2);
        assert_eq!(h.total_size(), b.len());
        assert_eq!(h.records_count, 2);
        assert_eq!(h.last_offset_delta, 1);
        assert_eq!(h.base_timestamp, 1000);
        assert_eq!(h.max_timestamp, 1005);
        assert_eq!(h.producer_id, -1);
        assert_eq!(h.compression(), Compression::None);
        assert!(!h.is_transactional() && !h.is_control() && !h.timestamp_type_log_append());
        assert_eq!(validate_records(&b, 1 << 20).unwrap(), vec![h]);
    }

    #[test]
    fn rejects_bad_crc() {
        let mut b = two_records();
        let last = b.len() - 1;
        b[last] ^= 0x01;
        assert!(
            matches!(validate_records(&b, 1 << 20), Err(Error::CorruptRecord(m)) if m.contains("CRC"))
        );
    }

    #[test]
    fn rejects_bad_magic() {
        let mut b = two_records();
        b[MAGIC_AT] = 1;
        assert!(matches!(
            validate_records(&b, 1 << 20),
            Err(Error::InvalidRecord(_))
        ));
    }

    #[test]
    fn rejects_truncated_and_trailing() {
        let b = two_records();
        assert!(matches!(
            validate_records(&b[..b.len() - 1], 1 << 20),
            Err(Error::CorruptRecord(_))
        ));
        assert!(matches!(
            validate_records(&b[..30], 1 << 20),
            Err(Error::CorruptRecord(_))
        ));
        assert!(matches!(
            validate_records(&[], 1 << 20),
            Err(Error::CorruptRecord(_))
        ));
        let mut trailing = b.clone();
        trailing.extend_from_slice(&[0, 0, 0]);
        assert!(matches!(
            validate_records(&trailing, 1 << 20),
            Err(Error::CorruptRecord(_))
        ));
        let mut short_len = b.clone();
        short_len[8..12].copy_from_slice(&48i32.to_be_bytes());
        assert!(matches!(
            validate_records(&short_len, 1 << 20),
            Err(Error::CorruptRecord(_))
        ));
    }

    #[test]
    fn rejects_too_large() {
        let b = two_records();
        let err = validate_records(&b, b.len() - 1).unwrap_err();
        assert!(
            matches!(err, Error::RecordTooLarge { size, max } if size == b.len() && max == b.len() - 1)
        );
    }

    #[test]
    fn rejects_count_mismatch_zero_count_codec_and_control() {
        let bad_delta = build_opaque_batch(0, 3, 0, 0, b"xyz");
        let mut b = bad_delta;
        b[23..27].copy_from_slice(&5i32.to_be_bytes());
        let crc = compute_crc(&b);
        b[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
        assert!(matches!(
            validate_records(&b, 1 << 20),
            Err(Error::InvalidRecord(_))
        ));

        let zero = build_opaque_batch(0, 0, 0, 0, b"");
        assert!(matches!(
            validate_records(&zero, 1 << 20),
            Err(Error::InvalidRecord(_))
        ));
        let codec = build_opaque_batch(6, 1, 0, 0, b"z");
        assert!(matches!(
            validate_records(&codec, 1 << 20),
            Err(Error::InvalidRecord(_))
        ));
        let control = build_opaque_batch(CONTROL_BIT, 1, 0, 0, b"z");
        assert!(matches!(
            validate_records(&control, 1 << 20),
            Err(Error::InvalidRecord(_))
        ));
        assert!(validate_inner(&control, 1 << 20, true, false).is_ok());
    }

    #[test]
    fn multiple_batches_back_to_back() {
        let mut set = two_records();
        set.extend(build_batch(&[(None, None, 7)]));
        let headers = validate_records(&set, 1 << 20).unwrap();
        assert_eq!(headers.len(), 2);
        assert_eq!(headers[1].records_count, 1);
    }

    #[test]
    fn rewrites_keep_crc_valid() {
        let mut b = two_records();
        set_base_offset(&mut b, 42);
        set_partition_leader_epoch(&mut b, 7);
        assert!(validate_records(&b, 1 << 20).is_ok());
        set_log_append_time(&mut b, 99_999);
        let h = validate_records(&b, 1 << 20).unwrap().remove(0);
        assert_eq!(
            (h.base_offset, h.partition_leader_epoch, h.max_timestamp),
            (42, 7, 99_999)
        );
        assert!(h.timestamp_type_log_append());
    }

    #[test]
    fn walks_record_timestamps() {
        let b = build_batch(&[
            (None, Some(b"a"), 50),
            (Some(b"kk"), None, 40),
            (None, None, 70),
        ]);
        let mut h = BatchHeader::parse(&b).unwrap();
        h.base_offset = 10;
        let got: Vec<_> = RecordTimestamps::new(&b, &h).collect();
        assert_eq!(got, vec![(10, 50), (11, 40), (12, 70)]);
    }

    proptest! {
        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = BatchHeader::parse(&bytes);
            let _ = validate_records(&bytes, 1 << 20);
        }

        #[test]
        fn walker_never_panics_on_garbage(bytes in proptest::collection::vec(any::<u8>(), 0..120), count in 0i32..10) {
            let mut b = build_opaque_batch(0, count.max(1), 0, 0, &bytes);
            b[57..61].copy_from_slice(&count.to_be_bytes());
            let h = BatchHeader::parse(&b).unwrap();
            let _ = RecordTimestamps::new(&b, &h).count();
        }

        #[test]
        fn builder_batches_validate(recs in proptest::collection::vec(
            (proptest::option::of(proptest::collection::vec(any::<u8>(), 0..20)),
             proptest::option::of(proptest::collection::vec(any::<u8>(), 0..50)),
             -5i64..1_000_000), 1..20)) {
            let view: Vec<crate::testing::TestRecord<'_>> =
                recs.iter().map(|(k, v, t)| (k.as_deref(), v.as_deref(), *t)).collect();
            let b = build_batch(&view);
            let h = validate_records(&b, 1 << 20).unwrap().remove(0);
            prop_assert_eq!(h.records_count as usize, recs.len());
            let walked: Vec<_> = RecordTimestamps::new(&b, &h).map(|(_, t)| t).collect();
            let expected: Vec<_> = recs.iter().map(|r| r.2).collect();
            prop_assert_eq!(walked, expected);
        }
    }
}
