//! Builders for valid v2 record batches, for tests here, in the broker and in the fuzz crate.
//! Enabled by the `testing` feature. Not used by the log itself.

/// One record for the builders: `(key, value, timestamp)`.
pub type TestRecord<'a> = (Option<&'a [u8]>, Option<&'a [u8]>, i64);

/// CRC-32C over `[21, end)`, written at 17.
fn seal(batch: &mut [u8]) {
    let crc = crc32c::crc32c(&batch[21..]);
    batch[17..21].copy_from_slice(&crc.to_be_bytes());
}

fn put_varlong(out: &mut Vec<u8>, value: i64) {
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

fn put_bytes(out: &mut Vec<u8>, bytes: Option<&[u8]>) {
    match bytes {
        None => put_varlong(out, -1),
        Some(b) => {
            put_varlong(out, b.len() as i64);
            out.extend_from_slice(b);
        }
    }
}

/// A batch with arbitrary header fields around an opaque `payload` (e.g. fake "compressed" bytes),
/// with a correct CRC. base_offset 0, leader epoch -1, no producer; `last_offset_delta` is
/// `records_count - 1`.
pub fn build_opaque_batch(
    attributes: i16,
    records_count: i32,
    base_timestamp: i64,
    max_timestamp: i64,
    payload: &[u8],
) -> Vec<u8> {
    build_raw(
        attributes,
        records_count,
        base_timestamp,
        max_timestamp,
        (-1, -1, -1),
        payload,
    )
}

fn build_raw(
    attributes: i16,
    records_count: i32,
    base_timestamp: i64,
    max_timestamp: i64,
    (producer_id, producer_epoch, base_sequence): (i64, i16, i32),
    payload: &[u8],
) -> Vec<u8> {
    let mut b = Vec::with_capacity(61 + payload.len());
    b.extend_from_slice(&0i64.to_be_bytes());
    b.extend_from_slice(&((49 + payload.len()) as i32).to_be_bytes());
    b.extend_from_slice(&(-1i32).to_be_bytes());
    b.push(2);
    b.extend_from_slice(&0u32.to_be_bytes());
    b.extend_from_slice(&attributes.to_be_bytes());
    b.extend_from_slice(&(records_count - 1).max(0).to_be_bytes());
    b.extend_from_slice(&base_timestamp.to_be_bytes());
    b.extend_from_slice(&max_timestamp.to_be_bytes());
    b.extend_from_slice(&producer_id.to_be_bytes());
    b.extend_from_slice(&producer_epoch.to_be_bytes());
    b.extend_from_slice(&base_sequence.to_be_bytes());
    b.extend_from_slice(&records_count.to_be_bytes());
    b.extend_from_slice(payload);
    seal(&mut b);
    b
}

/// A valid uncompressed (CreateTime) v2 batch of `(key, value, timestamp)` records with no headers;
/// producer id/epoch/base sequence -1. The first record's timestamp is the base timestamp.
pub fn build_batch(records: &[TestRecord<'_>]) -> Vec<u8> {
    build_batch_with_producer(records, -1, -1, -1)
}

/// As [`build_batch`] with idempotent-producer fields set.
pub fn build_batch_with_producer(
    records: &[TestRecord<'_>],
    producer_id: i64,
    producer_epoch: i16,
    base_sequence: i32,
) -> Vec<u8> {
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
    build_raw(
        0,
        records.len() as i32,
        base_timestamp,
        max_timestamp,
        (producer_id, producer_epoch, base_sequence),
        &payload,
    )
}

/// A batch of `count` records with values of `value_len` bytes, timestamps `ts, ts+1, …`.
pub fn build_simple_batch(count: usize, value_len: usize, ts: i64) -> Vec<u8> {
    let value = vec![0xabu8; value_len];
    let records: Vec<TestRecord<'_>> = (0..count)
        .map(|i| (None, Some(value.as_slice()), ts + i as i64))
        .collect();
    build_batch(&records)
}
