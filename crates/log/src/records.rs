//! Writing and reading the records inside v2 batches: what the broker's own
//! internal topics need (the group coordinator stores its entries as record
//! values), and what compacted topics and topic-level `compression.type`
//! need (walking records for their keys, rebuilding a batch around a subset
//! of its records with the same base offset). Client batches on other topics
//! stay opaque bytes from produce to fetch.
//!
//! ```text
//! record = varint length ‖ i8 attributes ‖ varlong timestamp_delta ‖ varint offset_delta
//!          ‖ varint key_len ‖ key ‖ varint value_len ‖ value ‖ varint header_count ‖ headers
//! ```
//!
//! Every length is checked against the bytes left before anything is
//! allocated or sliced. [`for_each_record`] skips headers;
//! [`for_each_record_with_headers`] hands them over (the MQTT front end
//! carries MQTT 5 properties in them).

use crate::batch::{BatchHeader, Compression, HEADER_LEN, LOG_OVERHEAD};
use crate::error::{Error, Result};

/// One record as written: key and value, either may be null.
pub type Record<'a> = (Option<&'a [u8]>, Option<&'a [u8]>);

const MAGIC: u8 = 2;

pub(crate) fn put_varlong(out: &mut Vec<u8>, value: i64) {
    let mut zigzag = ((value << 1) ^ (value >> 63)) as u64;
    loop {
        let byte = (zigzag & 0x7f) as u8;
        zigzag >>= 7;
        if zigzag == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

pub(crate) fn put_bytes(out: &mut Vec<u8>, bytes: Option<&[u8]>) {
    match bytes {
        None => put_varlong(out, -1),
        Some(b) => {
            put_varlong(out, b.len() as i64);
            out.extend_from_slice(b);
        }
    }
}

/// The fields of a batch header a writer chooses.
#[derive(Debug, Clone, Copy)]
pub struct BatchFields {
    pub attributes: i16,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
}

/// A v2 batch around already encoded `payload` records, CRC sealed; base
/// offset 0 and leader epoch -1 (the log assigns both on append).
pub fn encode_raw(fields: BatchFields, records_count: i32, payload: &[u8]) -> Vec<u8> {
    let mut b = Vec::with_capacity(HEADER_LEN + payload.len());
    let batch_length = (HEADER_LEN - LOG_OVERHEAD + payload.len()) as i32;
    b.extend_from_slice(&0i64.to_be_bytes());
    b.extend_from_slice(&batch_length.to_be_bytes());
    b.extend_from_slice(&(-1i32).to_be_bytes());
    b.push(MAGIC);
    b.extend_from_slice(&0u32.to_be_bytes());
    b.extend_from_slice(&fields.attributes.to_be_bytes());
    b.extend_from_slice(&(records_count - 1).max(0).to_be_bytes());
    b.extend_from_slice(&fields.base_timestamp.to_be_bytes());
    b.extend_from_slice(&fields.max_timestamp.to_be_bytes());
    b.extend_from_slice(&fields.producer_id.to_be_bytes());
    b.extend_from_slice(&fields.producer_epoch.to_be_bytes());
    b.extend_from_slice(&fields.base_sequence.to_be_bytes());
    b.extend_from_slice(&records_count.to_be_bytes());
    b.extend_from_slice(payload);
    let crc = crate::batch::compute_crc(&b);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    b
}

/// One record to encode: key, value (either may be null) and timestamp.
pub type PlainRecord<'a> = (Option<&'a [u8]>, Option<&'a [u8]>, i64);

/// Encodes `(key, value, timestamp)` records without headers as the
/// payload of a batch; returns it with the base and max timestamps.
pub fn encode_payload(records: &[PlainRecord<'_>]) -> (Vec<u8>, i64, i64) {
    let base_timestamp = records.first().map_or(-1, |r| r.2);
    let max_timestamp = records.iter().map(|r| r.2).max().unwrap_or(-1);
    let mut payload = Vec::new();
    let mut body = Vec::new();
    for (i, (key, value, ts)) in records.iter().enumerate() {
        body.clear();
        body.push(0); // record attributes
        put_varlong(&mut body, ts - base_timestamp);
        put_varlong(&mut body, i as i64);
        put_bytes(&mut body, *key);
        put_bytes(&mut body, *value);
        put_varlong(&mut body, 0); // header count
        put_varlong(&mut payload, body.len() as i64);
        payload.extend_from_slice(&body);
    }
    (payload, base_timestamp, max_timestamp)
}

/// A header as written: name and value (the value may be null).
pub type Header<'a> = (&'a [u8], Option<&'a [u8]>);

/// One record with headers: key, value, headers.
pub type HeadedRecord<'a> = (Option<&'a [u8]>, Option<&'a [u8]>, &'a [Header<'a>]);

/// An uncompressed, non-idempotent batch of records with headers, all
/// stamped `timestamp`.
pub fn encode_batch_with_headers(records: &[HeadedRecord<'_>], timestamp: i64) -> Vec<u8> {
    let mut payload = Vec::new();
    let mut body = Vec::new();
    for (i, (key, value, headers)) in records.iter().enumerate() {
        body.clear();
        body.push(0); // record attributes
        put_varlong(&mut body, 0);
        put_varlong(&mut body, i as i64);
        put_bytes(&mut body, *key);
        put_bytes(&mut body, *value);
        put_varlong(&mut body, headers.len() as i64);
        for (name, value) in *headers {
            put_bytes(&mut body, Some(name));
            put_bytes(&mut body, *value);
        }
        put_varlong(&mut payload, body.len() as i64);
        payload.extend_from_slice(&body);
    }
    encode_raw(
        BatchFields {
            attributes: 0,
            base_timestamp: timestamp,
            max_timestamp: timestamp,
            producer_id: -1,
            producer_epoch: -1,
            base_sequence: -1,
        },
        records.len() as i32,
        &payload,
    )
}

/// An uncompressed, non-idempotent batch of `records`, all stamped `timestamp`.
pub fn encode_batch(records: &[Record<'_>], timestamp: i64) -> Vec<u8> {
    let stamped: Vec<_> = records.iter().map(|(k, v)| (*k, *v, timestamp)).collect();
    let (payload, base_timestamp, max_timestamp) = encode_payload(&stamped);
    encode_raw(
        BatchFields {
            attributes: 0,
            base_timestamp,
            max_timestamp,
            producer_id: -1,
            producer_epoch: -1,
            base_sequence: -1,
        },
        records.len() as i32,
        &payload,
    )
}

/// Bytes a record adds to [`encode_batch`]'s output at most, for callers
/// that keep batches under a size.
pub fn record_overhead() -> usize {
    // length, attributes, timestamp delta, offset delta, two lengths, header count.
    5 + 1 + 10 + 5 + 5 + 5 + 1
}

/// Reads a zigzag varint of at most `max_bytes` bytes.
fn varlong(buf: &[u8], pos: &mut usize, max_bytes: usize) -> Result<i64> {
    let mut raw: u64 = 0;
    for i in 0..max_bytes {
        let Some(&byte) = buf.get(*pos) else {
            return Err(Error::CorruptRecord("record ends inside a varint".into()));
        };
        *pos += 1;
        raw |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Ok((raw >> 1) as i64 ^ -((raw & 1) as i64));
        }
    }
    Err(Error::CorruptRecord("varint longer than allowed".into()))
}

/// A length-prefixed field: null for -1, else that many bytes of what is left.
fn field<'a>(buf: &'a [u8], pos: &mut usize) -> Result<Option<&'a [u8]>> {
    let len = varlong(buf, pos, 5)?;
    if len == -1 {
        return Ok(None);
    }
    let len = usize::try_from(len)
        .map_err(|_| Error::CorruptRecord(format!("negative field length {len}")))?;
    let end = pos
        .checked_add(len)
        .filter(|&e| e <= buf.len())
        .ok_or_else(|| {
            Error::CorruptRecord(format!("a field of {len} bytes overruns its record"))
        })?;
    let out = &buf[*pos..end];
    *pos = end;
    Ok(Some(out))
}

/// One record inside a batch's (decompressed) records section.
#[derive(Debug, Clone, Copy)]
pub struct RecordRef<'a> {
    pub offset: i64,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    /// The whole record as stored, length prefix included: copying it into a batch with the same
    /// base offset and base timestamp keeps its offset and timestamp.
    pub raw: &'a [u8],
}

/// Calls `f` for each of `count` records of a records section (`body`, already decompressed) of a
/// batch starting at `base_offset`. Trailing bytes after the last record are corruption.
pub fn walk_records<'a>(
    body: &'a [u8],
    base_offset: i64,
    count: i32,
    mut f: impl FnMut(RecordRef<'a>) -> Result<()>,
) -> Result<()> {
    walk_body(body, base_offset, 0, count, None, |r, raw| {
        f(RecordRef {
            offset: r.offset,
            key: r.key,
            value: r.value,
            raw,
        })
    })
}

/// The records section of one whole batch, decompressed (at most `cap` bytes).
pub fn records_section(batch: &[u8], header: &BatchHeader, cap: usize) -> Result<Vec<u8>> {
    let end = header.total_size();
    if end > batch.len() || end < HEADER_LEN {
        return Err(Error::CorruptRecord(format!(
            "batch of {end} bytes in a buffer of {}",
            batch.len()
        )));
    }
    crate::codec::decompress(header.compression(), &batch[HEADER_LEN..end], cap)
}

/// Rebuilds a batch around `records` (`count` raw records, uncompressed) with `codec`: every
/// header field is kept (base offset, last offset delta, leader epoch, timestamps, producer id,
/// epoch and sequence) except the codec bits, the records count and the CRC.
pub fn rebuild_batch(
    header: &BatchHeader,
    codec: crate::codec::Codec,
    records: &[u8],
    count: i32,
) -> Result<Vec<u8>> {
    let payload = crate::codec::compress(codec, records)?;
    let codec_id: i16 = match codec.compression {
        Compression::None => 0,
        Compression::Gzip => 1,
        Compression::Snappy => 2,
        Compression::Lz4 => 3,
        Compression::Zstd => 4,
        Compression::Unknown(id) => i16::from(id),
    };
    let attributes = (header.attributes & !0x07) | codec_id;
    let mut b = Vec::with_capacity(HEADER_LEN + payload.len());
    let batch_length = i32::try_from(HEADER_LEN - LOG_OVERHEAD + payload.len())
        .map_err(|_| Error::InvalidRecord("rebuilt batch exceeds 2 GiB".into()))?;
    b.extend_from_slice(&header.base_offset.to_be_bytes());
    b.extend_from_slice(&batch_length.to_be_bytes());
    b.extend_from_slice(&header.partition_leader_epoch.to_be_bytes());
    b.push(MAGIC);
    b.extend_from_slice(&0u32.to_be_bytes());
    b.extend_from_slice(&attributes.to_be_bytes());
    b.extend_from_slice(&header.last_offset_delta.to_be_bytes());
    b.extend_from_slice(&header.base_timestamp.to_be_bytes());
    b.extend_from_slice(&header.max_timestamp.to_be_bytes());
    b.extend_from_slice(&header.producer_id.to_be_bytes());
    b.extend_from_slice(&header.producer_epoch.to_be_bytes());
    b.extend_from_slice(&header.base_sequence.to_be_bytes());
    b.extend_from_slice(&count.to_be_bytes());
    b.extend_from_slice(&payload);
    let crc = crate::batch::compute_crc(&b);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    Ok(b)
}

/// Calls `f(offset, key, value)` for each record of one whole, uncompressed
/// batch (`batch` starts at its base offset and holds exactly
/// `header.total_size()` bytes). Compressed batches are refused.
pub fn for_each_record(
    batch: &[u8],
    mut f: impl FnMut(i64, Option<&[u8]>, Option<&[u8]>) -> Result<()>,
) -> Result<()> {
    walk(batch, None, |r| f(r.offset, r.key, r.value))
}

/// One record read back with its headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordView<'a> {
    pub offset: i64,
    pub timestamp: i64,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    pub headers: Vec<Header<'a>>,
}

/// [`for_each_record`] with timestamps and headers; a record with more
/// than `max_headers` headers is refused (the count is read from the batch,
/// so it is capped before anything is kept).
pub fn for_each_record_with_headers(
    batch: &[u8],
    max_headers: usize,
    f: impl FnMut(RecordView<'_>) -> Result<()>,
) -> Result<()> {
    walk(batch, Some(max_headers), f)
}

/// Walks the records; headers are kept only when `max_headers` is given.
fn walk(
    batch: &[u8],
    max_headers: Option<usize>,
    mut f: impl FnMut(RecordView<'_>) -> Result<()>,
) -> Result<()> {
    let header = BatchHeader::parse(batch)?;
    if header.compression() != Compression::None {
        return Err(Error::InvalidRecord(
            "only uncompressed batches are read record by record".into(),
        ));
    }
    let end = header.total_size();
    if end > batch.len() || end < HEADER_LEN {
        return Err(Error::CorruptRecord(format!(
            "batch of {end} bytes in a buffer of {}",
            batch.len()
        )));
    }
    walk_body(
        &batch[HEADER_LEN..end],
        header.base_offset,
        header.base_timestamp,
        header.records_count,
        max_headers,
        |r, _| f(r),
    )
}

/// The one record parser: `count` records of a records section (`body`,
/// uncompressed) of a batch at `base_offset`/`base_timestamp`, each with
/// its raw bytes (length prefix included). Headers are read only with
/// `max_headers` (a larger count is refused before anything is kept).
/// Trailing bytes after the last record are corruption.
fn walk_body<'a>(
    body: &'a [u8],
    base_offset: i64,
    base_timestamp: i64,
    count: i32,
    max_headers: Option<usize>,
    mut f: impl FnMut(RecordView<'a>, &'a [u8]) -> Result<()>,
) -> Result<()> {
    let mut pos = 0usize;
    for _ in 0..count.max(0) {
        let start = pos;
        let len = varlong(body, &mut pos, 5)?;
        let len = usize::try_from(len)
            .map_err(|_| Error::CorruptRecord(format!("negative record length {len}")))?;
        let record_end = pos
            .checked_add(len)
            .filter(|&e| e <= body.len())
            .ok_or_else(|| Error::CorruptRecord("a record overruns its batch".into()))?;
        let record = &body[pos..record_end];
        let mut at = 1usize; // attributes
        if record.is_empty() {
            return Err(Error::CorruptRecord("empty record".into()));
        }
        let timestamp_delta = varlong(record, &mut at, 10)?;
        let offset_delta = varlong(record, &mut at, 5)?;
        let key = field(record, &mut at)?;
        let value = field(record, &mut at)?;
        let mut headers = Vec::new();
        if let Some(max) = max_headers {
            let count = varlong(record, &mut at, 5)?;
            let count = usize::try_from(count)
                .ok()
                .filter(|&c| c <= max)
                .ok_or_else(|| {
                    Error::CorruptRecord(format!("{count} headers (at most {max} are read)"))
                })?;
            headers.reserve(count);
            for _ in 0..count {
                let name = field(record, &mut at)?
                    .ok_or_else(|| Error::CorruptRecord("a header without a name".into()))?;
                headers.push((name, field(record, &mut at)?));
            }
        }
        f(
            RecordView {
                offset: base_offset + offset_delta,
                timestamp: base_timestamp.wrapping_add(timestamp_delta),
                key,
                value,
                headers,
            },
            &body[start..record_end],
        )?;
        pos = record_end;
    }
    if pos != body.len() {
        return Err(Error::CorruptRecord(format!(
            "{} bytes after the last record of a batch",
            body.len() - pos
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_with_null_and_empty_fields() {
        let big = vec![7u8; 300];
        let records: Vec<Record<'_>> = vec![
            (Some(b"k"), Some(b"v")),
            (None, Some(&big)),
            (Some(b""), None),
        ];
        let batch = encode_batch(&records, 1_700_000_000_000);
        let headers = crate::validate_records(&batch, usize::MAX).unwrap();
        assert_eq!(headers[0].records_count, 3);
        let mut seen = Vec::new();
        for_each_record(&batch, |offset, k, v| {
            seen.push((offset, k.map(<[u8]>::to_vec), v.map(<[u8]>::to_vec)));
            Ok(())
        })
        .unwrap();
        assert_eq!(
            seen,
            vec![
                (0, Some(b"k".to_vec()), Some(b"v".to_vec())),
                (1, None, Some(big.clone())),
                (2, Some(Vec::new()), None),
            ]
        );
    }

    #[test]
    fn lengths_beyond_the_record_are_refused_before_slicing() {
        let batch = encode_batch(&[(Some(b"key"), Some(b"value"))], 1);
        // Every cut of the body is an error, never a panic or a short read.
        for cut in HEADER_LEN..batch.len() {
            let mut b = batch[..cut].to_vec();
            let len = (b.len() - LOG_OVERHEAD) as i32;
            b[8..12].copy_from_slice(&len.to_be_bytes());
            assert!(
                for_each_record(&b, |_, _, _| Ok(())).is_err(),
                "cut at {cut}"
            );
        }
        // A value length that claims more than the record holds.
        let mut b = batch.clone();
        let value_len_at = b.len() - 1 - 5 - 1;
        b[value_len_at] = 0x7e;
        assert!(for_each_record(&b, |_, _, _| Ok(())).is_err());
    }

    #[test]
    fn headers_round_trip_and_their_count_is_capped() {
        let headers: Vec<Header<'_>> = vec![(b"a", Some(b"1")), (b"b", None)];
        let batch =
            encode_batch_with_headers(&[(Some(b"k"), Some(b"v"), &headers), (None, None, &[])], 42);
        crate::validate_records(&batch, usize::MAX).unwrap();
        let mut seen = Vec::new();
        for_each_record_with_headers(&batch, 2, |r| {
            seen.push((
                r.offset,
                r.timestamp,
                r.key.map(<[u8]>::to_vec),
                r.headers.len(),
            ));
            if r.offset == 0 {
                assert_eq!(r.headers, headers);
            }
            Ok(())
        })
        .unwrap();
        assert_eq!(
            seen,
            vec![(0, 42, Some(b"k".to_vec()), 2), (1, 42, None, 0)]
        );
        assert!(for_each_record_with_headers(&batch, 1, |_| Ok(())).is_err());
        // Skipping headers still walks the same records.
        let mut n = 0;
        for_each_record(&batch, |_, _, _| {
            n += 1;
            Ok(())
        })
        .unwrap();
        assert_eq!(n, 2);
    }
}
