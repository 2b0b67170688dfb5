use std::path::Path;

use proptest::prelude::*;

use super::*;
use crate::batch::validate_records;
use crate::testing::{build_opaque_batch, build_simple_batch};

const NOW: i64 = 1_700_000_000_000;

fn open(dir: &Path, config: LogConfig) -> PartitionLog {
    PartitionLog::open(dir, config, NOW).unwrap().0
}

/// Appends a batch of `count` records at timestamp `ts`; returns the stored bytes.
fn append(
    log: &mut PartitionLog,
    count: usize,
    value_len: usize,
    ts: i64,
) -> (AppendInfo, Vec<u8>) {
    let mut batch = build_simple_batch(count, value_len, ts);
    let info = log.append(&mut batch, 0, NOW).unwrap();
    (info, batch)
}

fn read_all(log: &PartitionLog, from: i64) -> Vec<u8> {
    let mut out = Vec::new();
    let mut offset = from;
    while offset < log.log_end_offset() {
        let r = log.read(offset, usize::MAX, i64::MAX, true).unwrap();
        let headers = validate_records(&r.records, usize::MAX).unwrap();
        offset = headers.last().unwrap().last_offset() + 1;
        out.extend_from_slice(&r.records);
    }
    out
}

#[test]
fn append_assigns_offsets_and_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), LogConfig::default());
    let (a, a_bytes) = append(&mut log, 3, 10, NOW);
    assert_eq!(
        (a.first_offset, a.last_offset, a.log_append_time),
        (0, 2, -1)
    );
    assert_eq!(a.max_timestamp, NOW + 2);
    assert_eq!(a.offset_of_max_timestamp, 2);
    let mut two = build_simple_batch(2, 5, NOW);
    two.extend(build_simple_batch(1, 5, NOW + 10));
    let b = log.append(&mut two, 0, NOW).unwrap();
    assert_eq!((b.first_offset, b.last_offset, b.batches.len()), (3, 5, 2));
    assert_eq!(b.batches[1].base_offset, 5);
    assert_eq!((b.max_timestamp, b.offset_of_max_timestamp), (NOW + 10, 5));
    assert_eq!(log.log_end_offset(), 6);

    let r = log.read(1, usize::MAX, i64::MAX, false).unwrap();
    assert_eq!((r.log_start_offset, r.log_end_offset), (0, 6));
    let mut expected = a_bytes.clone();
    expected.extend_from_slice(&two);
    assert_eq!(r.records, expected);
    // The high watermark excludes batches at or beyond it.
    let r = log.read(0, usize::MAX, 4, false).unwrap();
    assert_eq!(r.records.len(), a_bytes.len() + b.batches[0].total_size());
    assert!(log.read(6, 100, i64::MAX, true).unwrap().records.is_empty());
    // KIP-74: the first batch is returned alone if it is too big, and only with min_one.
    assert_eq!(log.read(0, 10, i64::MAX, true).unwrap().records, a_bytes);
    assert!(log.read(0, 10, i64::MAX, false).unwrap().records.is_empty());
    assert_eq!(
        log.read(0, a_bytes.len() + 1, i64::MAX, false)
            .unwrap()
            .records,
        a_bytes
    );
}

#[test]
fn offset_out_of_range() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), LogConfig::default());
    append(&mut log, 2, 1, NOW);
    assert!(matches!(
        log.read(3, 100, i64::MAX, true),
        Err(Error::OffsetOutOfRange {
            offset: 3,
            log_start_offset: 0,
            log_end_offset: 2
        })
    ));
    assert!(matches!(
        log.read(-1, 100, i64::MAX, true),
        Err(Error::OffsetOutOfRange { .. })
    ));
    log.delete_records_before(1).unwrap();
    assert!(matches!(
        log.read(0, 100, i64::MAX, true),
        Err(Error::OffsetOutOfRange { .. })
    ));
    // Reading at the start offset returns the batch containing it.
    assert_eq!(
        validate_records(&log.read(1, 1000, i64::MAX, true).unwrap().records, 1 << 20).unwrap()[0]
            .base_offset,
        0
    );
}

#[test]
fn validation_error_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), LogConfig::default());
    let mut good = build_simple_batch(1, 10, NOW);
    let mut bad = build_simple_batch(1, 10, NOW);
    let last = bad.len() - 1;
    bad[last] ^= 0xff;
    good.extend_from_slice(&bad);
    assert!(matches!(
        log.append(&mut good, 0, NOW),
        Err(Error::CorruptRecord(_))
    ));
    assert_eq!((log.log_end_offset(), log.size_bytes()), (0, 0));
    let mut big = build_simple_batch(1, 2000, NOW);
    log.set_config(LogConfig {
        max_message_bytes: 1000,
        ..LogConfig::default()
    });
    assert!(matches!(
        log.append(&mut big, 0, NOW),
        Err(Error::RecordTooLarge { .. })
    ));
    assert_eq!(log.size_bytes(), 0);
    assert_eq!(log.latest_epoch(), None);
}

#[test]
fn control_batches_only_from_the_coordinator() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), LogConfig::default());
    let mut marker = build_opaque_batch(0x30, 1, NOW, NOW, &[0; 8]);
    assert!(matches!(
        log.append(&mut marker, 0, NOW),
        Err(Error::InvalidRecord(_))
    ));
    let info = log
        .append_as(&mut marker, 0, NOW, AppendOrigin::Coordinator)
        .unwrap();
    assert!(info.batches[0].is_control() && info.batches[0].is_transactional());
}

#[test]
fn rolls_by_size() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(
        dir.path(),
        LogConfig {
            segment_bytes: 500,
            ..LogConfig::default()
        },
    );
    let (_, b) = append(&mut log, 1, 100, NOW);
    let per = b.len() as u64;
    let mut appended = 1;
    while log.segment_count() == 1 {
        append(&mut log, 1, 100, NOW);
        appended += 1;
    }
    // The roll happened on the append that would have pushed the segment past 500 bytes.
    assert_eq!(appended, 500 / per + 1);
    assert_eq!(
        log.active().base_offset,
        i64::try_from(appended - 1).unwrap()
    );
    assert!(dir.path().join("00000000000000000000.log").exists());
    assert!(dir
        .path()
        .join(format!("{:020}.log", appended - 1))
        .exists());
    // A single batch larger than the segment size still goes into an empty segment.
    log.set_config(LogConfig {
        segment_bytes: 10,
        ..LogConfig::default()
    });
    let before = log.segment_count();
    append(&mut log, 1, 100, NOW);
    append(&mut log, 1, 100, NOW);
    assert_eq!(log.segment_count(), before + 2);
    assert_eq!(read_all(&log, 0).len() as u64, log.size_bytes());
}

#[test]
fn rolls_by_age() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(
        dir.path(),
        LogConfig {
            segment_ms: 1000,
            ..LogConfig::default()
        },
    );
    assert!(
        !log.roll_if_due(NOW + 5000).unwrap(),
        "an empty segment never rolls"
    );
    let mut b = build_simple_batch(1, 1, NOW);
    log.append(&mut b, 0, NOW).unwrap();
    assert!(!log.roll_if_due(NOW + 1000).unwrap());
    assert!(log.roll_if_due(NOW + 1001).unwrap());
    assert_eq!(log.segment_count(), 2);
    let mut b = build_simple_batch(1, 1, NOW);
    log.append(&mut b, 0, NOW + 1500).unwrap();
    let mut b = build_simple_batch(1, 1, NOW);
    log.append(&mut b, 0, NOW + 2400).unwrap();
    assert_eq!(log.segment_count(), 2);
    let mut b = build_simple_batch(1, 1, NOW);
    log.append(&mut b, 0, NOW + 2501).unwrap();
    assert_eq!(log.segment_count(), 3);
    assert_eq!(log.active().base_offset, 3);
}

#[test]
fn retention_by_time() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(
        dir.path(),
        LogConfig {
            segment_bytes: 1,
            retention_ms: 1000,
            ..LogConfig::default()
        },
    );
    for ts in [100, 200, 5000, 300] {
        let mut b = build_simple_batch(2, 10, ts);
        log.append(&mut b, 0, NOW).unwrap();
    }
    assert_eq!(log.segment_count(), 4);
    let size = log.size_bytes();
    // Threshold 4000: segments 0 and 1 expire; segment 2 (ts 5001) stops the sweep.
    let r = log.enforce_retention(5000).unwrap();
    assert_eq!((r.deleted_segments, r.log_start_offset), (2, 4));
    assert_eq!(log.size_bytes(), size - r.deleted_bytes);
    assert!(!dir.path().join("00000000000000000000.log").exists());
    assert!(!dir.path().join("00000000000000000002.index").exists());
    // The active segment is never deleted, however old.
    let r = log.enforce_retention(i64::MAX).unwrap();
    assert_eq!((r.deleted_segments, r.log_start_offset), (1, 6));
    assert_eq!(log.segment_count(), 1);
    let reopened = open(dir.path(), log.config().clone());
    assert_eq!(
        (reopened.log_start_offset(), reopened.log_end_offset()),
        (6, 8)
    );
}

#[test]
fn retention_by_size() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(
        dir.path(),
        LogConfig {
            segment_bytes: 1,
            retention_ms: -1,
            ..LogConfig::default()
        },
    );
    for _ in 0..5 {
        append(&mut log, 1, 50, NOW);
    }
    let seg = log.segments[0].size;
    log.config.retention_bytes = i64::try_from(seg * 2).unwrap();
    let r = log.enforce_retention(NOW).unwrap();
    assert_eq!(
        (r.deleted_segments, r.deleted_bytes, r.log_start_offset),
        (3, seg * 3, 3)
    );
    assert_eq!(log.size_bytes(), seg * 2);
    log.config.retention_bytes = 0;
    let r = log.enforce_retention(NOW).unwrap();
    assert_eq!(
        (
            r.deleted_segments,
            log.segment_count(),
            log.log_start_offset()
        ),
        (1, 1, 4)
    );
    assert_eq!(log.enforce_retention(NOW).unwrap().deleted_segments, 0);
}

#[test]
fn delete_records_before_advances_and_persists() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(
        dir.path(),
        LogConfig {
            segment_bytes: 1,
            ..LogConfig::default()
        },
    );
    for _ in 0..4 {
        append(&mut log, 3, 10, NOW); // segments at 0, 3, 6, 9
    }
    assert!(matches!(
        log.delete_records_before(13),
        Err(Error::OffsetOutOfRange { .. })
    ));
    assert_eq!(log.delete_records_before(4).unwrap(), 4);
    assert_eq!(
        log.segment_count(),
        3,
        "only the segment wholly below 4 goes"
    );
    assert_eq!(
        log.delete_records_before(2).unwrap(),
        4,
        "never moves backwards"
    );
    assert_eq!(
        log.read(4, 1 << 20, i64::MAX, true)
            .unwrap()
            .log_start_offset,
        4
    );
    drop(log);
    let mut log = open(
        dir.path(),
        LogConfig {
            segment_bytes: 1,
            ..LogConfig::default()
        },
    );
    assert_eq!(log.log_start_offset(), 4);
    assert_eq!(log.delete_records_before(12).unwrap(), 12);
    assert_eq!(log.segment_count(), 1, "the active segment stays");
    assert!(log
        .read(12, 100, i64::MAX, true)
        .unwrap()
        .records
        .is_empty());
    let (info, _) = append(&mut log, 1, 1, NOW);
    assert_eq!(info.first_offset, 12);
    drop(log);
    assert_eq!(
        open(dir.path(), LogConfig::default()).log_start_offset(),
        12
    );
}

#[test]
fn leader_epochs_are_checkpointed() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), LogConfig::default());
    for epoch in [0, 0, 2, 2, 5] {
        let mut b = build_simple_batch(2, 1, NOW);
        let info = log.append(&mut b, epoch, NOW).unwrap();
        assert_eq!(info.batches[0].partition_leader_epoch, epoch);
        assert_eq!(
            BatchHeader::parse(&b).unwrap().partition_leader_epoch,
            epoch
        );
    }
    assert_eq!(log.epoch_entries(), vec![(0, 0), (2, 4), (5, 8)]);
    assert_eq!(log.end_offset_for_epoch(0), Some((0, 4)));
    assert_eq!(log.end_offset_for_epoch(3), Some((2, 8)));
    assert_eq!(log.end_offset_for_epoch(5), Some((5, 10)));
    assert_eq!(
        log.end_offset_for_epoch(9),
        None,
        "newer than every known epoch"
    );
    assert_eq!(log.latest_epoch(), Some(5));
    let text = std::fs::read_to_string(dir.path().join("leader-epoch-checkpoint")).unwrap();
    assert_eq!(text, "0\n3\n0 0\n2 4\n5 8\n");
    drop(log);
    let log = open(dir.path(), LogConfig::default());
    assert_eq!(log.epoch_entries(), vec![(0, 0), (2, 4), (5, 8)]);
    assert_eq!(log.end_offset_for_epoch(-1), None);
}

#[test]
fn log_append_time_rewrites_with_valid_crc() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        message_timestamp_log_append_time: true,
        ..LogConfig::default()
    };
    let mut log = open(dir.path(), config);
    let mut b = build_simple_batch(3, 10, 42);
    let info = log.append(&mut b, 1, NOW).unwrap();
    assert_eq!(
        (
            info.log_append_time,
            info.max_timestamp,
            info.offset_of_max_timestamp
        ),
        (NOW, NOW, 0)
    );
    let stored = log.read(0, 1 << 20, i64::MAX, true).unwrap().records;
    assert_eq!(stored, b);
    let h = validate_records(&stored, 1 << 20).unwrap().remove(0);
    assert!(h.timestamp_type_log_append());
    assert_eq!(
        (h.max_timestamp, h.base_timestamp, h.crc),
        (NOW, 42, info.batches[0].crc)
    );
    assert_eq!(log.offset_for_timestamp(NOW).unwrap(), Some((0, NOW)));
    assert_eq!(log.offset_for_timestamp(NOW + 1).unwrap(), None);
    assert_eq!(log.max_timestamp().unwrap(), Some((NOW, 0)));
}

#[test]
fn compressed_batches_answer_at_batch_granularity() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), LogConfig::default());
    append(&mut log, 2, 1, 100); // offsets 0-1, ts 100-101
    let mut zstd = build_opaque_batch(4, 5, 150, 190, b"opaque compressed bytes");
    log.append(&mut zstd, 0, NOW).unwrap(); // offsets 2-6
    append(&mut log, 2, 1, 120); // offsets 7-8, ts 120-121
    assert_eq!(log.offset_for_timestamp(0).unwrap(), Some((0, 100)));
    assert_eq!(log.offset_for_timestamp(101).unwrap(), Some((1, 101)));
    assert_eq!(log.offset_for_timestamp(160).unwrap(), Some((2, 190)));
    assert_eq!(log.offset_for_timestamp(191).unwrap(), None);
    assert_eq!(log.max_timestamp().unwrap(), Some((190, 6)));
}

#[test]
fn poisoned_log_refuses_writes() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), LogConfig::default());
    append(&mut log, 1, 1, NOW);
    log.poison();
    assert!(log.is_poisoned());
    let mut b = build_simple_batch(1, 1, NOW);
    assert!(matches!(log.append(&mut b, 0, NOW), Err(Error::Poisoned)));
    assert!(matches!(log.sync(), Err(Error::Poisoned)));
    assert!(matches!(log.delete_records_before(1), Err(Error::Poisoned)));
    assert_eq!(
        log.read(0, 100, i64::MAX, true).unwrap().log_end_offset,
        1,
        "reads still work"
    );
    assert!(matches!(log.close(), Err(Error::Poisoned)));
    let (mut log, report) = PartitionLog::open(dir.path(), LogConfig::default(), NOW).unwrap();
    assert!(!report.clean_shutdown);
    append(&mut log, 1, 1, NOW);
}

#[test]
fn group_commit_bookkeeping() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(
        dir.path(),
        LogConfig {
            segment_bytes: 1,
            ..LogConfig::default()
        },
    );
    assert_eq!(log.synced_offset(), 0);
    append(&mut log, 2, 1, NOW);
    let handle = log.sync_handle();
    assert_eq!((handle.end_offset, handle.files.len()), (2, 1));
    append(&mut log, 2, 1, NOW); // rolls: old log + two indexes + the directory are owed a sync
    let later = log.sync_handle();
    assert_eq!((later.end_offset, later.files.len()), (4, 5));
    for f in &handle.files {
        f.sync_data().unwrap();
    }
    log.mark_synced(handle.end_offset);
    assert_eq!(log.synced_offset(), 2);
    assert_eq!(
        log.sync_handle().files.len(),
        5,
        "the roll at 2 is not covered by a sync up to 2"
    );
    log.sync().unwrap();
    assert_eq!(log.synced_offset(), 4);
    assert_eq!(log.sync_handle().files.len(), 1);
}

#[test]
fn close_marks_clean_and_delete_removes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("topic-0");
    let mut log = open(&path, LogConfig::default());
    append(&mut log, 1, 1, NOW);
    log.close().unwrap();
    assert!(path.join("clean-shutdown").exists());
    let (log, report) = PartitionLog::open(&path, LogConfig::default(), NOW).unwrap();
    assert!(report.clean_shutdown);
    assert!(!path.join("clean-shutdown").exists());
    assert_eq!(report.log_end_offset, 1);
    log.delete().unwrap();
    assert!(!path.exists());
}

type Spec = (usize, usize, i64);

fn batch_specs(max: usize) -> impl Strategy<Value = Vec<Spec>> {
    proptest::collection::vec((1usize..5, 0usize..300, 0i64..10_000), 1..max)
}

/// Appends the specs and returns each batch's (base offset, last offset, stored bytes).
fn fill(log: &mut PartitionLog, specs: &[Spec]) -> Vec<(i64, i64, Vec<u8>)> {
    specs
        .iter()
        .map(|&(count, len, ts)| {
            let mut b = build_simple_batch(count, len, ts);
            let info = log.append(&mut b, 0, NOW).unwrap();
            (info.first_offset, info.last_offset, b)
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn append_read_round_trip(
        specs in batch_specs(40),
        segment_bytes in 200u64..4000,
        interval in 0usize..600,
        queries in proptest::collection::vec((any::<prop::sample::Index>(), 1usize..3000), 1..20),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let config = LogConfig { segment_bytes, index_interval_bytes: interval, ..LogConfig::default() };
        let mut log = open(dir.path(), config.clone());
        let batches = fill(&mut log, &specs);
        let end = batches.last().unwrap().1 + 1;
        prop_assert_eq!(log.log_end_offset(), end);
        let all: Vec<u8> = batches.iter().flat_map(|b| b.2.clone()).collect();
        prop_assert_eq!(read_all(&log, 0), all.clone());
        for (index, max_bytes) in &queries {
            let offset = index.index(usize::try_from(end).unwrap()) as i64;
            let first = batches.iter().position(|b| b.1 >= offset).unwrap();
            let r = log.read(offset, *max_bytes, i64::MAX, true).unwrap();
            let got = validate_records(&r.records, usize::MAX).unwrap();
            prop_assert!(!got.is_empty());
            prop_assert!(r.records.len() <= *max_bytes || got.len() == 1);
            for (i, h) in got.iter().enumerate() {
                let (base, _, bytes) = &batches[first + i];
                prop_assert_eq!(h.base_offset, *base);
                let at: usize = got[..i].iter().map(BatchHeader::total_size).sum();
                prop_assert_eq!(&r.records[at..at + h.total_size()], bytes.as_slice());
            }
            prop_assert_eq!(read_all(&log, offset), batches[first..].iter().flat_map(|b| b.2.clone()).collect::<Vec<u8>>());
        }
        drop(log);
        let reopened = open(dir.path(), config);
        prop_assert_eq!(reopened.log_end_offset(), end);
        prop_assert_eq!(read_all(&reopened, 0), all);
    }

    #[test]
    fn index_lookups_match_linear_scan(
        specs in batch_specs(60),
        segment_bytes in 150u64..1200,
        interval in 0usize..200,
        probes in proptest::collection::vec(-10i64..10_100, 1..30),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let config = LogConfig { segment_bytes, index_interval_bytes: interval, ..LogConfig::default() };
        let mut log = open(dir.path(), config.clone());
        let batches = fill(&mut log, &specs);
        // Every record's (offset, timestamp), in offset order.
        let records: Vec<(i64, i64)> = specs
            .iter()
            .zip(&batches)
            .flat_map(|(&(count, _, ts), b)| (0..count as i64).map(move |i| (b.0 + i, ts + i)))
            .collect();
        let mut targets = probes.clone();
        targets.extend(records.iter().flat_map(|r| [r.1 - 1, r.1, r.1 + 1]));
        check_lookups(&log, &batches, &records, &targets)?;
        drop(log);
        // Again with older segments' indexes loaded from disk by recovery.
        check_lookups(&open(dir.path(), config), &batches, &records, &targets)?;
    }
}

fn check_lookups(
    log: &PartitionLog,
    batches: &[(i64, i64, Vec<u8>)],
    records: &[(i64, i64)],
    targets: &[i64],
) -> std::result::Result<(), TestCaseError> {
    for (base, last, bytes) in batches {
        for offset in *base..=*last {
            let r = log.read(offset, 1, i64::MAX, true).unwrap();
            prop_assert_eq!(&r.records, bytes);
        }
    }
    for &t in targets {
        let expected = records.iter().find(|r| r.1 >= t).copied();
        prop_assert_eq!(
            log.offset_for_timestamp(t).unwrap(),
            expected,
            "timestamp {}",
            t
        );
    }
    let max = records.iter().map(|r| r.1).max().unwrap();
    let max_at = records.iter().find(|r| r.1 == max).unwrap().0;
    prop_assert_eq!(log.max_timestamp().unwrap(), Some((max, max_at)));
    Ok(())
}
