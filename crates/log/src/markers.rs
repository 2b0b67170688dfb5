//! Transaction markers: the control batches a transaction coordinator writes
//! to every partition of a transaction when it commits or aborts (KIP-98).
//!
//! A marker is a one-record batch with the control and transactional bits
//! set, the producer's id and epoch, no sequence, a key of
//! `version: i16 = 0 | type: i16` (0 = abort, 1 = commit) and a value of
//! `version: i16 = 0 | coordinator_epoch: i32`, as Kafka writes them.

use crate::batch::BatchHeader;
use crate::records::{encode_raw, for_each_record, put_bytes, put_varlong, BatchFields};

const CONTROL_BIT: i16 = 0x20;
const TRANSACTIONAL_BIT: i16 = 0x10;
const ABORT: i16 = 0;
const COMMIT: i16 = 1;

/// How a transaction ended in a partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Marker {
    Abort,
    Commit,
}

impl Marker {
    pub fn from_commit(commit: bool) -> Marker {
        if commit {
            Marker::Commit
        } else {
            Marker::Abort
        }
    }
}

/// The marker batch for `producer_id` at `producer_epoch` (offsets assigned
/// by the log on append).
pub fn encode_marker(
    producer_id: i64,
    producer_epoch: i16,
    marker: Marker,
    coordinator_epoch: i32,
    timestamp: i64,
) -> Vec<u8> {
    let kind = match marker {
        Marker::Abort => ABORT,
        Marker::Commit => COMMIT,
    };
    let mut key = Vec::with_capacity(4);
    key.extend_from_slice(&0i16.to_be_bytes());
    key.extend_from_slice(&kind.to_be_bytes());
    let mut value = Vec::with_capacity(6);
    value.extend_from_slice(&0i16.to_be_bytes());
    value.extend_from_slice(&coordinator_epoch.to_be_bytes());
    let mut body = vec![0u8]; // record attributes
    put_varlong(&mut body, 0); // timestamp delta
    put_varlong(&mut body, 0); // offset delta
    put_bytes(&mut body, Some(&key));
    put_bytes(&mut body, Some(&value));
    put_varlong(&mut body, 0); // no headers
    let mut payload = Vec::with_capacity(body.len() + 2);
    put_varlong(&mut payload, body.len() as i64);
    payload.extend_from_slice(&body);
    encode_raw(
        BatchFields {
            attributes: CONTROL_BIT | TRANSACTIONAL_BIT,
            base_timestamp: timestamp,
            max_timestamp: timestamp,
            producer_id,
            producer_epoch,
            base_sequence: -1,
        },
        1,
        &payload,
    )
}

/// The marker a stored control batch carries; `None` for a batch that is
/// not a transaction marker (or whose key does not decode: Kafka skips
/// unknown control types the same way).
pub fn read_marker(header: &BatchHeader, batch: &[u8]) -> Option<Marker> {
    if !header.is_control() || !header.is_transactional() {
        return None;
    }
    let mut found = None;
    let walked = for_each_record(batch, |_, key, _| {
        if found.is_none() {
            found =
                key.filter(|k| k.len() >= 4)
                    .and_then(|k| match i16::from_be_bytes([k[2], k[3]]) {
                        ABORT => Some(Marker::Abort),
                        COMMIT => Some(Marker::Commit),
                        _ => None,
                    });
        }
        Ok(())
    });
    walked.ok().and(found)
}

/// The markers of the control batches in a record set of whole batches,
/// in order, paired with each batch's header index.
pub(crate) fn markers_in(records: &[u8], headers: &[BatchHeader]) -> Vec<Option<Marker>> {
    let mut pos = 0usize;
    headers
        .iter()
        .map(|h| {
            let batch = records.get(pos..pos + h.total_size()).unwrap_or_default();
            pos += h.total_size();
            if h.is_control() {
                read_marker(h, batch)
            } else {
                None
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::validate_inner;

    #[test]
    fn markers_round_trip_and_validate_as_control_batches() {
        for marker in [Marker::Abort, Marker::Commit] {
            let bytes = encode_marker(42, 3, marker, 7, 1_700_000_000_000);
            let headers = validate_inner(&bytes, 1 << 20, true, false).unwrap();
            let h = &headers[0];
            assert!(h.is_control() && h.is_transactional());
            assert_eq!(
                (h.producer_id, h.producer_epoch, h.base_sequence),
                (42, 3, -1)
            );
            assert_eq!(read_marker(h, &bytes), Some(marker));
            assert_eq!(markers_in(&bytes, &headers), vec![Some(marker)]);
        }
        // Client batches may not carry control batches.
        let bytes = encode_marker(1, 0, Marker::Commit, 0, 0);
        assert!(validate_inner(&bytes, 1 << 20, false, false).is_err());
    }
}
