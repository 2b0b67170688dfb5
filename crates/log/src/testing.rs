//! Builders for valid v2 record batches, for tests here, in the broker and in the fuzz crate.
//! Enabled by the `testing` feature. Not used by the log itself.

/// One record for the builders: `(key, value, timestamp)`.
pub type TestRecord<'a> = (Option<&'a [u8]>, Option<&'a [u8]>, i64);

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
    crate::records::encode_raw(
        crate::records::BatchFields {
            attributes,
            base_timestamp,
            max_timestamp,
            producer_id,
            producer_epoch,
            base_sequence,
        },
        records_count,
        payload,
    )
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
    let (payload, base_timestamp, max_timestamp) = crate::records::encode_payload(records);
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
