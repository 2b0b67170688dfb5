use std::collections::VecDeque;

use proptest::prelude::*;

use super::*;

/// A header of `count` records from producer `pid` at `epoch` starting at `seq`, placed at `offset`.
fn header(pid: i64, epoch: i16, seq: i32, count: i32, offset: i64) -> BatchHeader {
    BatchHeader {
        base_offset: offset,
        batch_length: 100,
        partition_leader_epoch: 0,
        magic: 2,
        crc: 0,
        attributes: 0,
        last_offset_delta: count - 1,
        base_timestamp: 1_000,
        max_timestamp: 1_000 + offset,
        producer_id: pid,
        producer_epoch: epoch,
        base_sequence: seq,
        records_count: count,
    }
}

/// Check then, unless refused or a duplicate, record (what `PartitionLog::append` does).
fn append(s: &mut ProducerStates, h: &BatchHeader) -> Result<Option<BatchMetadata>> {
    let verdict = s.check_append(std::slice::from_ref(h))?;
    if verdict.is_none() {
        s.record(h, None);
    }
    Ok(verdict)
}

#[test]
fn in_order_batches_are_accepted_and_retries_get_their_offsets() {
    let mut s = ProducerStates::default();
    assert_eq!(append(&mut s, &header(7, 0, 0, 3, 0)).unwrap(), None);
    assert_eq!(append(&mut s, &header(7, 0, 3, 2, 3)).unwrap(), None);
    // The retry of the first batch, wherever it would land now, is answered with offsets 0..=2.
    let dup = append(&mut s, &header(7, 0, 0, 3, 5)).unwrap().unwrap();
    assert_eq!((dup.first_offset, dup.last_offset), (0, 2));
    assert_eq!(
        s.get(7).unwrap().batches.len(),
        2,
        "a duplicate is not recorded"
    );
}

#[test]
fn only_five_batches_are_remembered() {
    let mut s = ProducerStates::default();
    for i in 0..6 {
        append(&mut s, &header(1, 0, i, 1, i64::from(i))).unwrap();
    }
    assert_eq!(s.get(1).unwrap().batches.len(), RETAINED_BATCHES);
    // Batch 0 fell out of the cache: as in Kafka its retry is out of order, not a duplicate.
    assert!(matches!(
        append(&mut s, &header(1, 0, 0, 1, 6)),
        Err(Error::OutOfOrderSequence {
            expected: 6,
            received: 0,
            ..
        })
    ));
    assert!(append(&mut s, &header(1, 0, 1, 1, 6)).unwrap().is_some());
}

#[test]
fn a_gap_or_a_partial_overlap_is_out_of_order() {
    let mut s = ProducerStates::default();
    append(&mut s, &header(1, 0, 0, 5, 0)).unwrap();
    assert!(matches!(
        append(&mut s, &header(1, 0, 6, 1, 5)),
        Err(Error::OutOfOrderSequence {
            expected: 5,
            received: 6,
            ..
        })
    ));
    // Same first sequence but a different length is not the same batch.
    assert!(matches!(
        append(&mut s, &header(1, 0, 0, 4, 5)),
        Err(Error::OutOfOrderSequence { .. })
    ));
}

#[test]
fn epochs_fence_and_restart_sequences() {
    let mut s = ProducerStates::default();
    append(&mut s, &header(1, 3, 0, 2, 0)).unwrap();
    assert!(matches!(
        append(&mut s, &header(1, 2, 2, 1, 2)),
        Err(Error::InvalidProducerEpoch {
            epoch: 2,
            current: 3,
            ..
        })
    ));
    assert!(
        matches!(
            append(&mut s, &header(1, 4, 5, 1, 2)),
            Err(Error::OutOfOrderSequence { expected: 0, .. })
        ),
        "a new epoch starts at sequence 0"
    );
    assert_eq!(append(&mut s, &header(1, 4, 0, 1, 2)).unwrap(), None);
    let e = s.get(1).unwrap();
    assert_eq!(
        (e.epoch, e.batches.len()),
        (4, 1),
        "an epoch bump clears the cache"
    );
    // The old epoch's batch is now stale, not a duplicate.
    assert!(matches!(
        append(&mut s, &header(1, 3, 0, 2, 3)),
        Err(Error::InvalidProducerEpoch { .. })
    ));
}

#[test]
fn unknown_producers_may_start_anywhere() {
    // KIP-360: state may have been removed by retention or expiry.
    let mut s = ProducerStates::default();
    assert_eq!(append(&mut s, &header(9, 0, 42, 1, 0)).unwrap(), None);
    assert!(append(&mut s, &header(9, 0, 44, 1, 1)).is_err());
    assert_eq!(append(&mut s, &header(9, 0, 43, 1, 1)).unwrap(), None);
}

#[test]
fn sequences_wrap_at_i32_max() {
    assert_eq!(last_sequence(i32::MAX, 0), i32::MAX);
    assert_eq!(last_sequence(i32::MAX - 1, 2), 0);
    assert_eq!(last_sequence(i32::MAX, 3), 2);
    let mut s = ProducerStates::default();
    append(&mut s, &header(1, 0, i32::MAX - 1, 3, 0)).unwrap();
    assert_eq!(s.get(1).unwrap().batches[0].last_seq, 0);
    assert_eq!(append(&mut s, &header(1, 0, 1, 1, 3)).unwrap(), None);
    let mut s = ProducerStates::default();
    append(&mut s, &header(1, 0, i32::MAX, 1, 0)).unwrap();
    assert_eq!(append(&mut s, &header(1, 0, 0, 1, 1)).unwrap(), None);
}

#[test]
fn batches_of_one_request_are_checked_in_order_and_as_a_whole() {
    let s = ProducerStates::default();
    let ok = [
        header(1, 0, 0, 2, 0),
        header(1, 0, 2, 2, 2),
        header(2, 0, 0, 1, 4),
    ];
    assert_eq!(s.check_append(&ok).unwrap(), None);
    let gap = [header(1, 0, 0, 2, 0), header(1, 0, 3, 2, 2)];
    assert!(s.check_append(&gap).is_err());
}

#[test]
fn non_idempotent_and_malformed_batches() {
    let mut s = ProducerStates::default();
    assert_eq!(append(&mut s, &header(-1, -1, -1, 1, 0)).unwrap(), None);
    assert!(s.is_empty(), "batches without a producer id leave no state");
    assert!(matches!(
        append(&mut s, &header(1, 0, -1, 1, 0)),
        Err(Error::InvalidRecord(_))
    ));
}

fn txn(pid: i64, epoch: i16, seq: i32, offset: i64) -> BatchHeader {
    let mut h = header(pid, epoch, seq, 1, offset);
    h.attributes |= 0x10;
    h
}

fn marker(pid: i64, epoch: i16, offset: i64) -> BatchHeader {
    let mut h = header(pid, epoch, -1, 1, offset);
    h.attributes |= 0x30;
    h
}

#[test]
fn transactions_bound_the_stable_offset_and_aborts_are_listed() {
    use crate::markers::Marker;
    let mut s = ProducerStates::default();
    assert_eq!(s.first_unstable_offset(), None);
    append(&mut s, &txn(1, 0, 0, 10)).unwrap();
    append(&mut s, &txn(2, 0, 0, 11)).unwrap();
    append(&mut s, &txn(1, 0, 1, 12)).unwrap();
    assert_eq!(s.first_unstable_offset(), Some(10));
    // A non-transactional batch of a producer inside a transaction is refused.
    assert!(matches!(
        append(&mut s, &header(1, 0, 2, 1, 13)),
        Err(Error::InvalidTxnState { .. })
    ));
    // Producer 1 aborts: the stable offset moves to producer 2's open transaction.
    s.check_marker(&marker(1, 0, 13)).unwrap();
    s.record(&marker(1, 0, 13), Some(Marker::Abort));
    assert_eq!(s.first_unstable_offset(), Some(11));
    let aborted = s.aborted_between(0, 100);
    assert_eq!(aborted.len(), 1);
    assert_eq!((aborted[0].first_offset, aborted[0].last_offset), (10, 13));
    assert!(s.aborted_between(14, 100).is_empty());
    assert!(s.aborted_between(0, 10).is_empty());
    // Producer 2 commits: nothing is unstable, no new abort.
    s.record(&marker(2, 0, 14), Some(Marker::Commit));
    assert_eq!(s.first_unstable_offset(), None);
    assert_eq!(s.aborted_between(0, 100).len(), 1);
    // A marker with a bumped epoch fences the old epoch; an older marker is refused.
    s.record(&marker(1, 1, 15), Some(Marker::Abort));
    assert!(matches!(
        append(&mut s, &txn(1, 0, 3, 16)),
        Err(Error::InvalidProducerEpoch { .. })
    ));
    assert!(s.check_marker(&marker(1, 0, 16)).is_err());
    append(&mut s, &txn(1, 1, 0, 16)).unwrap();
    // Snapshots keep open transactions and the aborted list.
    let bytes = super::snapshot::encode(17, &s);
    assert_eq!(super::snapshot::decode(&bytes, 17).unwrap(), s);
    s.prune_aborted(14);
    assert!(s.aborted_between(0, 100).is_empty());
    // Producers with an open transaction do not expire.
    assert_eq!(s.expire(i64::MAX, 1), 1);
    assert_eq!(s.first_unstable_offset(), Some(16));
}

#[test]
fn idle_producers_expire() {
    let mut s = ProducerStates::default();
    s.record(&header(1, 0, 0, 1, 0), None); // max_timestamp 1000
    s.record(&header(2, 0, 0, 1, 5_000), None); // max_timestamp 6000
    assert_eq!(s.expire(6_000, 5_000), 1);
    assert!(s.get(1).is_none() && s.get(2).is_some());
}

#[test]
fn snapshot_round_trip_and_damage() {
    let mut s = ProducerStates::default();
    for i in 0..7 {
        s.record(&header(1, 2, i * 2, 2, i64::from(i) * 2), None);
    }
    s.record(&header(i64::MAX, 0, 0, 1, 20), None);
    let bytes = snapshot::encode(21, &s);
    assert_eq!(snapshot::decode(&bytes, 21).unwrap(), s);
    assert!(
        snapshot::decode(&bytes, 20).is_err(),
        "offset must match the name"
    );
    for at in [0, 5, 12, bytes.len() - 1] {
        let mut bad = bytes.clone();
        bad[at] ^= 0x40;
        assert!(snapshot::decode(&bad, 21).is_err(), "flip at {at}");
    }
    assert!(snapshot::decode(&bytes[..bytes.len() - 1], 21).is_err());
}

/// The simple model: per producer, its epoch, the next expected sequence, and every batch it got
/// appended in that epoch (the unit under test keeps only five).
#[derive(Default, Clone)]
struct Model {
    epoch: Option<i16>,
    next_seq: i32,
    appended: Vec<(i32, i32, i64)>,
}

#[derive(Clone, Debug)]
enum Op {
    /// Send the next batch of `count` records.
    Next { pid: usize, count: i32 },
    /// Resend the batch `back` batches ago (a retry).
    Retry { pid: usize, back: usize },
    /// Skip `skip` sequence numbers (a lost batch).
    Gap { pid: usize, skip: i32 },
    /// Bump the epoch (KIP-360 style) and restart at 0.
    Bump { pid: usize },
    /// Send with an older epoch (a zombie).
    Stale { pid: usize },
}

fn op() -> impl Strategy<Value = Op> {
    let pid = 0..3usize;
    prop_oneof![
        4 => (pid.clone(), 1..4i32).prop_map(|(pid, count)| Op::Next { pid, count }),
        3 => (pid.clone(), 0..8usize).prop_map(|(pid, back)| Op::Retry { pid, back }),
        1 => (pid.clone(), 1..3i32).prop_map(|(pid, skip)| Op::Gap { pid, skip }),
        1 => pid.clone().prop_map(|pid| Op::Bump { pid }),
        1 => pid.prop_map(|pid| Op::Stale { pid }),
    ]
}

proptest! {
    #[test]
    fn matches_the_model(ops in proptest::collection::vec(op(), 1..80)) {
        let mut s = ProducerStates::default();
        let mut models = vec![Model::default(); 3];
        let mut log_end = 0i64;
        // Everything ever appended: (pid, epoch, first_seq) must never repeat.
        let mut written = std::collections::HashSet::new();
        for op in ops {
            let (pid, epoch, seq, count) = match op {
                Op::Next { pid, count } => {
                    let m = &models[pid];
                    (pid, m.epoch.unwrap_or(0), m.next_seq, count)
                }
                Op::Retry { pid, back } => {
                    let m = &models[pid];
                    let Some(&(first, last, _)) = m.appended.iter().rev().nth(back) else { continue };
                    (pid, m.epoch.unwrap_or(0), first, last - first + 1)
                }
                Op::Gap { pid, skip } => {
                    let m = &models[pid];
                    (pid, m.epoch.unwrap_or(0), m.next_seq + skip, 1)
                }
                Op::Bump { pid } => {
                    let m = &models[pid];
                    (pid, m.epoch.map_or(0, |e| e + 1), 0, 1)
                }
                Op::Stale { pid } => {
                    let m = &models[pid];
                    let Some(e) = m.epoch.filter(|&e| e > 0) else { continue };
                    (pid, e - 1, m.next_seq, 1)
                }
            };
            let h = header(pid as i64 + 100, epoch, seq, count, log_end);
            let got = append(&mut s, &h);
            let m = &mut models[pid];
            let cached = m.appended.len().saturating_sub(RETAINED_BATCHES);
            let duplicate = (m.epoch == Some(epoch))
                .then(|| m.appended[cached..].iter().find(|b| b.0 == seq && b.1 == seq + count - 1))
                .flatten();
            match (m.epoch, duplicate) {
                (_, Some(&(_, _, offset))) => {
                    let dup = got.unwrap().expect("a retry of a cached batch is a duplicate");
                    prop_assert_eq!(dup.first_offset, offset);
                }
                (Some(current), None) if epoch < current => {
                    let refused = matches!(got, Err(Error::InvalidProducerEpoch { .. }));
                    prop_assert!(refused);
                }
                (Some(current), None) if (epoch == current && seq != m.next_seq)
                    || (epoch > current && seq != 0) => {
                    let refused = matches!(got, Err(Error::OutOfOrderSequence { .. }));
                    prop_assert!(refused);
                }
                _ => {
                    prop_assert_eq!(got.unwrap(), None);
                    prop_assert!(written.insert((pid, epoch, seq)), "appended twice");
                    if m.epoch != Some(epoch) {
                        m.appended.clear();
                    }
                    m.epoch = Some(epoch);
                    m.appended.push((seq, seq + count - 1, log_end));
                    m.next_seq = seq + count;
                    log_end += i64::from(count);
                }
            }
            // The unit keeps exactly the model's last five batches of the current epoch.
            if let Some(e) = s.get(pid as i64 + 100) {
                let expect: VecDeque<(i32, i32, i64)> =
                    m.appended.iter().rev().take(RETAINED_BATCHES).rev().copied().collect();
                let have: VecDeque<(i32, i32, i64)> =
                    e.batches.iter().map(|b| (b.first_seq, b.last_seq, b.first_offset)).collect();
                prop_assert_eq!(have, expect);
            }
        }
    }
}
