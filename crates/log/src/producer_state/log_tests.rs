//! Producer state through `PartitionLog`: duplicates on append, and recovery from snapshots and
//! batch headers after a clean close, a crash (no close), damage and retention.

use std::path::Path;

use crate::testing::build_batch_with_producer;
use crate::{AppendInfo, Error, LogConfig, PartitionLog};

use super::snapshot;

const NOW: i64 = 1_700_000_000_000;

fn open(dir: &Path, config: LogConfig) -> PartitionLog {
    PartitionLog::open(dir, config, NOW).unwrap().0
}

/// Appends `count` records from producer `pid` (epoch 0) starting at sequence `seq`.
fn produce(log: &mut PartitionLog, pid: i64, seq: i32, count: usize) -> crate::Result<AppendInfo> {
    let value = [0x5au8; 20];
    let records: Vec<_> = (0..count).map(|_| (None, Some(&value[..]), NOW)).collect();
    let mut batch = build_batch_with_producer(&records, pid, 0, seq);
    log.append(&mut batch, 0, NOW)
}

fn snapshots(dir: &Path) -> Vec<i64> {
    snapshot::list(dir).unwrap()
}

#[test]
fn a_retried_batch_is_answered_with_its_original_offsets_and_not_written() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), LogConfig::default());
    produce(&mut log, 5, 0, 3).unwrap();
    produce(&mut log, 6, 0, 1).unwrap();
    let size = log.size_bytes();
    let dup = produce(&mut log, 5, 0, 3).unwrap();
    assert!(dup.duplicate);
    assert_eq!((dup.first_offset, dup.last_offset), (0, 2));
    assert_eq!((log.log_end_offset(), log.size_bytes()), (4, size));
    assert!(matches!(
        produce(&mut log, 5, 4, 1),
        Err(Error::OutOfOrderSequence { expected: 3, .. })
    ));
}

#[test]
fn crash_without_snapshot_rebuilds_from_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), LogConfig::default());
    for seq in 0..3 {
        produce(&mut log, 5, seq * 2, 2).unwrap();
    }
    drop(log); // no close: no snapshot, as after kill -9
    assert!(snapshots(dir.path()).is_empty());
    let mut log = open(dir.path(), LogConfig::default());
    let dup = produce(&mut log, 5, 4, 2).unwrap();
    assert!(dup.duplicate);
    assert_eq!(dup.first_offset, 4);
    assert!(!produce(&mut log, 5, 6, 1).unwrap().duplicate);
}

#[test]
fn snapshot_at_close_plus_headers_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), LogConfig::default());
    produce(&mut log, 1, 0, 2).unwrap();
    log.close().unwrap();
    assert_eq!(snapshots(dir.path()), vec![2]);

    let mut log = open(dir.path(), LogConfig::default());
    assert_eq!(log.producer_states().get(1).unwrap().batches.len(), 1);
    produce(&mut log, 1, 2, 2).unwrap();
    produce(&mut log, 2, 0, 1).unwrap();
    drop(log); // crash: state after offset 2 comes from the headers

    let mut log = open(dir.path(), LogConfig::default());
    assert_eq!(log.producer_states().get(1).unwrap().batches.len(), 2);
    assert!(
        produce(&mut log, 1, 0, 2).unwrap().duplicate,
        "from the snapshot"
    );
    assert!(
        produce(&mut log, 2, 0, 1).unwrap().duplicate,
        "from the headers"
    );
}

#[test]
fn a_damaged_snapshot_is_discarded_and_the_log_replayed() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), LogConfig::default());
    produce(&mut log, 1, 0, 2).unwrap();
    produce(&mut log, 1, 2, 2).unwrap();
    log.close().unwrap();
    let path = snapshot::path(dir.path(), 4);
    let mut bytes = std::fs::read(&path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&path, bytes).unwrap();

    let mut log = open(dir.path(), LogConfig::default());
    assert!(!path.exists(), "the damaged snapshot is removed");
    assert!(produce(&mut log, 1, 0, 2).unwrap().duplicate);
    assert!(produce(&mut log, 1, 4, 1).is_ok());
}

#[test]
fn a_snapshot_beyond_the_recovered_end_is_stale() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), LogConfig::default());
    produce(&mut log, 1, 0, 2).unwrap();
    let first_batch_len = log.size_bytes();
    produce(&mut log, 1, 2, 2).unwrap();
    log.close().unwrap();
    // The second batch is lost (as a torn write would be); the snapshot at 4 describes it.
    let seg = dir.path().join(format!("{:020}.log", 0));
    let file = std::fs::OpenOptions::new().write(true).open(seg).unwrap();
    file.set_len(first_batch_len).unwrap();
    std::fs::remove_file(dir.path().join("clean-shutdown")).unwrap();

    let mut log = open(dir.path(), LogConfig::default());
    assert_eq!(log.log_end_offset(), 2);
    assert!(snapshots(dir.path()).is_empty());
    // Sequence 2 is the next one again, not a duplicate of the lost batch.
    let info = produce(&mut log, 1, 2, 2).unwrap();
    assert!(!info.duplicate);
    assert_eq!(info.first_offset, 2);
}

#[test]
fn retention_keeps_live_producers_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        segment_bytes: 1, // every append rolls
        retention_bytes: 1,
        ..LogConfig::default()
    };
    let mut log = open(dir.path(), config.clone());
    produce(&mut log, 1, 0, 1).unwrap();
    for seq in 0..3 {
        produce(&mut log, 2, seq, 1).unwrap();
    }
    assert!(
        snapshots(dir.path()).contains(&1),
        "a snapshot at each roll"
    );
    let report = log.enforce_retention(NOW).unwrap();
    assert!(report.deleted_segments >= 2);
    assert!(
        snapshots(dir.path())
            .iter()
            .all(|&o| o >= report.log_start_offset),
        "snapshots below the first segment are gone"
    );
    drop(log);

    let mut log = open(dir.path(), config);
    let e = log
        .producer_states()
        .get(1)
        .expect("producer 1 outlives its data");
    assert_eq!(e.batches.back().unwrap().last_seq, 0);
    assert!(matches!(
        produce(&mut log, 1, 2, 1),
        Err(Error::OutOfOrderSequence { expected: 1, .. })
    ));
    assert!(!produce(&mut log, 1, 1, 1).unwrap().duplicate);
}

/// One transactional record of `pid` (epoch 0) at sequence `seq`.
fn produce_txn(log: &mut PartitionLog, pid: i64, seq: i32) -> i64 {
    let value = [0x5au8; 20];
    let mut batch = build_batch_with_producer(&[(None, Some(&value[..]), NOW)], pid, 0, seq);
    batch[22] |= 0x10; // attributes (low byte): transactional
    let crc = crate::batch::compute_crc(&batch);
    batch[17..21].copy_from_slice(&crc.to_be_bytes());
    log.append(&mut batch, 0, NOW).unwrap().first_offset
}

fn end(log: &mut PartitionLog, pid: i64, marker: crate::Marker) -> i64 {
    let mut batch = crate::markers::encode_marker(pid, 0, marker, 0, NOW);
    log.append_as(&mut batch, 0, NOW, crate::log::AppendOrigin::Coordinator)
        .unwrap()
        .first_offset
}

#[test]
fn open_and_aborted_transactions_survive_rolls_a_crash_and_a_clean_close() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        segment_bytes: 400,
        ..LogConfig::default()
    };
    let mut log = open(dir.path(), config.clone());
    let first = produce_txn(&mut log, 1, 0);
    produce_txn(&mut log, 1, 1);
    let abort = end(&mut log, 1, crate::Marker::Abort);
    let open_at = produce_txn(&mut log, 2, 0);
    for seq in 0..8 {
        produce(&mut log, 3, seq, 1).unwrap();
    }
    assert!(
        log.segment_count() > 2,
        "the transactions span segment rolls"
    );
    let expect = |log: &PartitionLog| {
        assert_eq!(log.first_unstable_offset(), Some(open_at));
        let aborted = log.aborted_transactions(0, i64::MAX);
        assert_eq!(aborted.len(), 1);
        assert_eq!(
            (aborted[0].first_offset, aborted[0].last_offset),
            (first, abort)
        );
    };
    expect(&log);
    // A crash (no close): rebuilt from the last roll's snapshot and the log after it.
    drop(log);
    let log = open(dir.path(), config.clone());
    expect(&log);
    // With every snapshot gone, the whole log is replayed.
    for at in snapshots(dir.path()) {
        std::fs::remove_file(snapshot::path(dir.path(), at)).unwrap();
    }
    drop(log);
    let mut log = open(dir.path(), config.clone());
    expect(&log);
    end(&mut log, 2, crate::Marker::Commit);
    log.close().unwrap();
    let log = open(dir.path(), config);
    assert_eq!(log.first_unstable_offset(), None);
    assert_eq!(log.aborted_transactions(0, i64::MAX).len(), 1);
}
