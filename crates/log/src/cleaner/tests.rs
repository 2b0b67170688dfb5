use std::collections::BTreeMap;
use std::path::Path;

use super::*;
use crate::batch::Compression;
use crate::codec::Codec;
use crate::records::{encode_batch, encode_payload, encode_raw, BatchFields};

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn compacted() -> LogConfig {
    LogConfig {
        segment_bytes: 1024,
        compact: true,
        delete: false,
        min_cleanable_dirty_ratio: 0.0,
        index_interval_bytes: 128,
        ..LogConfig::default()
    }
}

fn open(dir: &Path, config: LogConfig) -> PartitionLog {
    PartitionLog::open(dir, config, now()).unwrap().0
}

fn put(log: &mut PartitionLog, key: &str, value: Option<&str>) -> i64 {
    let mut batch = encode_batch(&[(Some(key.as_bytes()), value.map(str::as_bytes))], now());
    log.append(&mut batch, 0, now()).unwrap().first_offset
}

/// Every record readable from the log start: (offset, key, value).
type Rows = Vec<(i64, String, Option<String>)>;

fn read_rows(log: &PartitionLog) -> Rows {
    let mut rows = Vec::new();
    let mut offset = log.log_start_offset();
    while offset < log.log_end_offset() {
        let r = log.read(offset, 1 << 20, i64::MAX, true).unwrap();
        assert!(!r.records.is_empty(), "nothing readable at {offset}");
        let mut pos = 0;
        while pos < r.records.len() {
            let h = BatchHeader::parse(&r.records[pos..]).unwrap();
            let batch = &r.records[pos..pos + h.total_size()];
            assert_eq!(
                crate::batch::compute_crc(batch),
                h.crc,
                "CRC of a cleaned batch"
            );
            let body = records_section(batch, &h, 1 << 20).unwrap();
            walk_records(&body, h.base_offset, h.records_count, |rec| {
                assert!(rec.offset >= offset, "offsets never go backwards");
                rows.push((
                    rec.offset,
                    String::from_utf8(rec.key.unwrap().to_vec()).unwrap(),
                    rec.value.map(|v| String::from_utf8(v.to_vec()).unwrap()),
                ));
                Ok(())
            })
            .unwrap();
            offset = h.last_offset() + 1;
            pos += h.total_size();
        }
    }
    rows
}

fn clean(log: &mut PartitionLog, at: i64, buffer: usize) -> Option<CleanStats> {
    let plan = log.plan_clean(at, log.log_end_offset(), false)?;
    let cleaned = plan.run(buffer, &mut Throttle::new(0.0)).unwrap();
    let stats = cleaned.stats;
    log.install_clean(cleaned, None).unwrap();
    Some(stats)
}

/// The latest (offset, value) per key.
fn latest(rows: &Rows) -> BTreeMap<String, (i64, Option<String>)> {
    rows.iter()
        .map(|(o, k, v)| (k.clone(), (*o, v.clone())))
        .collect()
}

fn fill(log: &mut PartitionLog, updates: usize, keys: usize) {
    for i in 0..updates {
        put(
            log,
            &format!("key-{}", i % keys),
            Some(&format!("value-{i}")),
        );
    }
}

#[test]
fn keeps_the_latest_record_per_key_at_its_offset_and_merges_segments() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), compacted());
    fill(&mut log, 400, 10);
    let segments_before = log.segment_count();
    assert!(segments_before > 5);
    let mut last = Rows::new();
    // Full segments are rewritten one by one; once they are small, the next pass merges them.
    for pass in 0..2 {
        fill(&mut log, 30, 10);
        let before = read_rows(&log);
        let stats = clean(&mut log, now(), 1 << 20).unwrap();
        assert!(stats.records_removed > 30, "{stats:?}");
        let after = read_rows(&log);
        // Same latest value per key, each at its original offset.
        assert_eq!(latest(&after), latest(&before), "pass {pass}");
        for row in &after {
            assert!(before.contains(row), "{row:?} was not in the log before");
        }
        // Only the active segment may still hold several records of one key.
        let active_base = log.segments().last().unwrap().base_offset;
        let cleaned: Vec<_> = after.iter().filter(|r| r.0 < active_base).collect();
        let mut keys: Vec<_> = cleaned.iter().map(|r| &r.1).collect();
        keys.sort();
        keys.dedup();
        assert_eq!(
            keys.len(),
            cleaned.len(),
            "one record per key below the active segment"
        );
        last = after;
    }
    assert!(
        log.segment_count() < segments_before / 2,
        "small cleaned segments are merged"
    );

    // The cleaned log survives a restart, gaps and all, and a log with nothing dirty is left alone.
    drop(log);
    let mut log = open(dir.path(), compacted());
    assert_eq!(read_rows(&log), last);
    assert!(clean(&mut log, now(), 1 << 20).is_none());
}

#[test]
fn dirty_ratio_and_compaction_lag_gate_a_pass() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        min_cleanable_dirty_ratio: 0.5,
        ..compacted()
    };
    let mut log = open(dir.path(), config.clone());
    fill(&mut log, 200, 100);
    let stats = log.dirty_stats(now(), log.log_end_offset());
    assert!((stats.ratio() - 1.0).abs() < 1e-9, "all dirty: {stats:?}");
    assert!(clean(&mut log, now(), 1 << 20).is_some());
    fill(&mut log, 20, 100);
    let stats = log.dirty_stats(now(), log.log_end_offset());
    assert!(stats.ratio() < 0.5 && stats.dirty_bytes > 0, "{stats:?}");
    assert!(log.plan_clean(now(), log.log_end_offset(), false).is_none());
    assert!(log.plan_clean(now(), log.log_end_offset(), true).is_some());

    // Nothing above the high watermark, nothing younger than min.compaction.lag.ms.
    assert_eq!(log.dirty_stats(now(), 0).cleanable_bytes, 0);
    log.set_config(LogConfig {
        min_compaction_lag_ms: 60_000,
        ..config.clone()
    });
    assert_eq!(log.dirty_stats(now(), i64::MAX).cleanable_bytes, 0);
    // max.compaction.lag.ms makes an old dirty segment due whatever the ratio.
    log.set_config(LogConfig {
        max_compaction_lag_ms: 1,
        ..config
    });
    let later = now() + 10_000;
    assert!(log.dirty_stats(later, i64::MAX).overdue);
    assert!(log.plan_clean(later, i64::MAX, false).is_some());
}

#[test]
fn tombstones_stay_until_cleaned_once_and_delete_retention_ms_passed() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        delete_retention_ms: 60_000,
        ..compacted()
    };
    let mut log = open(dir.path(), config);
    put(&mut log, "gone", Some("v1"));
    put(&mut log, "kept", Some("v1"));
    let tombstone = put(&mut log, "gone", None);
    fill(&mut log, 60, 3);
    clean(&mut log, now(), 1 << 20).unwrap();
    let rows = read_rows(&log);
    assert!(
        rows.contains(&(tombstone, "gone".into(), None)),
        "first pass keeps it"
    );
    assert!(
        !rows.iter().any(|r| r.1 == "gone" && r.2.is_some()),
        "the value it deletes is gone"
    );

    // Cleaned once, but its segment was written less than delete.retention.ms ago.
    fill(&mut log, 60, 3);
    clean(&mut log, now(), 1 << 20).unwrap();
    assert!(read_rows(&log).iter().any(|r| r.0 == tombstone));

    // Past the horizon the next pass removes it; other keys are untouched.
    fill(&mut log, 60, 3);
    clean(&mut log, now() + 120_000, 1 << 20).unwrap();
    let rows = read_rows(&log);
    assert!(!rows.iter().any(|r| r.1 == "gone"), "{rows:?}");
    assert!(rows.iter().any(|r| r.1 == "kept"));
}

#[test]
fn a_small_offset_map_cleans_in_several_passes() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), compacted());
    fill(&mut log, 300, 30);
    let expected = latest(&read_rows(&log));
    // Room for 9 keys a pass.
    let buffer = 10 * SLOT_BYTES;
    let first = clean(&mut log, now(), buffer).unwrap();
    assert!(log.clean_offset() < log.segments().last().unwrap().base_offset);
    let mut passes = 1;
    while clean(&mut log, now(), buffer).is_some() {
        passes += 1;
        assert!(passes < 200);
    }
    assert!(passes > 1, "{first:?}");
    assert_eq!(latest(&read_rows(&log)), expected);
    let err = log
        .plan_clean(now(), i64::MAX, true)
        .map(|p| p.run(1, &mut Throttle::new(0.0)));
    assert!(err.is_none() || err.unwrap().is_err());
}

#[test]
fn compressed_batches_keep_their_codec_and_producer_batches_their_ids() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), compacted());
    // Producer 7: two records per batch, gzip, sequences 0, 2, 4, ...
    for seq in 0..30 {
        let (payload, base, max) = encode_payload(&[
            (
                Some(b"p".as_slice()),
                Some(format!("{seq}a").as_bytes()),
                now(),
            ),
            (
                Some(format!("q{}", seq % 3).as_bytes()),
                Some(b"x".as_slice()),
                now(),
            ),
        ]);
        let packed = crate::codec::compress(Codec::new(Compression::Gzip, None), &payload).unwrap();
        let fields = BatchFields {
            attributes: 1,
            base_timestamp: base,
            max_timestamp: max,
            producer_id: 7,
            producer_epoch: 0,
            base_sequence: seq * 2,
        };
        let mut batch = encode_raw(fields, 2, &packed);
        log.append(&mut batch, 0, now()).unwrap();
    }
    // A plain record supersedes the producer's last "p" (its last batch still holds "q2").
    put(&mut log, "p", Some("last"));
    fill(&mut log, 40, 2);
    let expected = latest(&read_rows(&log));
    clean(&mut log, now(), 1 << 20).unwrap();
    assert_eq!(latest(&read_rows(&log)), expected);
    let mut seen = 0;
    let mut offset = log.log_start_offset();
    while offset < log.log_end_offset() {
        let r = log.read(offset, 1 << 20, i64::MAX, true).unwrap();
        let h = BatchHeader::parse(&r.records).unwrap();
        if h.producer_id == 7 {
            seen += 1;
            assert_eq!(h.compression(), Compression::Gzip);
            assert!(h.records_count < 2, "only its latest keys remain");
        }
        offset = h.last_offset() + 1;
    }
    assert!(seen >= 1);
    drop(log);
    let log = open(dir.path(), compacted());
    let entry = log
        .producer_states()
        .get(7)
        .expect("producer 7 survives cleaning");
    assert_eq!(entry.batches.back().unwrap().last_seq, 59);
}

#[test]
fn producers_last_batch_is_kept_empty_when_all_its_records_go() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), compacted());
    let (payload, base, max) =
        encode_payload(&[(Some(b"k".as_slice()), Some(b"old".as_slice()), now())]);
    let fields = BatchFields {
        attributes: 0,
        base_timestamp: base,
        max_timestamp: max,
        producer_id: 9,
        producer_epoch: 3,
        base_sequence: 0,
    };
    let mut batch = encode_raw(fields, 1, &payload);
    let at = log.append(&mut batch, 0, now()).unwrap().first_offset;
    put(&mut log, "k", Some("new"));
    fill(&mut log, 40, 2);
    clean(&mut log, now(), 1 << 20).unwrap();
    let r = log.read(at, 1 << 20, i64::MAX, true).unwrap();
    let h = BatchHeader::parse(&r.records).unwrap();
    assert_eq!((h.base_offset, h.producer_id, h.records_count), (at, 9, 0));
    assert!(!read_rows(&log)
        .iter()
        .any(|r| r.2.as_deref() == Some("old")));
}

/// The cleaned log replicates: a follower appends the leader's cleaned batches byte for byte.
#[test]
fn a_follower_copies_a_cleaned_log_with_its_gaps() {
    let leader_dir = tempfile::tempdir().unwrap();
    let follower_dir = tempfile::tempdir().unwrap();
    let mut leader = open(leader_dir.path(), compacted());
    fill(&mut leader, 300, 7);
    clean(&mut leader, now(), 1 << 20).unwrap();
    let mut follower = open(follower_dir.path(), compacted());
    let mut offset = 0;
    while offset < leader.log_end_offset() {
        let r = leader.read(offset, 4096, i64::MAX, true).unwrap();
        let info = follower.append_replicated(&r.records, now()).unwrap();
        offset = info.last_offset + 1;
    }
    assert_eq!(follower.log_end_offset(), leader.log_end_offset());
    assert_eq!(read_rows(&follower), read_rows(&leader));
    // And the follower's own cleaner, run independently, keeps the same latest values.
    clean(&mut follower, now(), 1 << 20);
    assert_eq!(latest(&read_rows(&follower)), latest(&read_rows(&leader)));
}

/// A pass stopped at each step (as a crash would stop it) leaves, after reopening, a log with
/// every record a full pass keeps, and the next pass finishes the job.
#[test]
fn an_interrupted_pass_recovers_at_every_fault_point() {
    for point in [
        FaultPoint::AfterCleaned,
        FaultPoint::AfterSwap,
        FaultPoint::AfterDelete,
    ] {
        let dir = tempfile::tempdir().unwrap();
        let mut log = open(dir.path(), compacted());
        fill(&mut log, 400, 10);
        // A first pass shrinks the segments, so that the interrupted one merges several.
        clean(&mut log, now(), 1 << 20).unwrap();
        fill(&mut log, 100, 10);
        let before = read_rows(&log);
        let plan = log.plan_clean(now(), log.log_end_offset(), false).unwrap();
        let cleaned = plan.run(1 << 20, &mut Throttle::new(0.0)).unwrap();
        let hook = |at: FaultPoint| {
            if at == point {
                Err(std::io::Error::other("crash"))
            } else {
                Ok(())
            }
        };
        assert!(
            log.install_clean(cleaned, Some(&hook)).is_err(),
            "{point:?}"
        );
        drop(log);

        let mut log = open(dir.path(), compacted());
        let after = read_rows(&log);
        assert_eq!(latest(&after), latest(&before), "{point:?}");
        for row in &after {
            assert!(before.contains(row), "{point:?}: {row:?}");
        }
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert!(
            !names.iter().any(|n| Path::new(n)
                .extension()
                .is_some_and(|e| e == "swap" || e == "cleaned")),
            "{point:?}: {names:?}"
        );
        if point != FaultPoint::AfterCleaned {
            assert!(
                after.len() < before.len(),
                "{point:?}: the committed swap was completed"
            );
        }
        while clean(&mut log, now(), 1 << 20).is_some() {}
        assert_eq!(latest(&read_rows(&log)), latest(&before));
    }
}

/// Retention or truncation that changed the segments while a pass ran: the pass is discarded.
#[test]
fn a_pass_over_segments_that_changed_is_discarded() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), compacted());
    fill(&mut log, 200, 5);
    let plan = log.plan_clean(now(), log.log_end_offset(), false).unwrap();
    let cleaned = plan.run(1 << 20, &mut Throttle::new(0.0)).unwrap();
    let second = log.segments()[1].base_offset;
    log.delete_records_before(second).unwrap();
    let before = read_rows(&log);
    let checkpoint = log.clean_offset();
    let groups = cleaned.stats.segments_after;
    assert_eq!(
        log.install_clean(cleaned, None).unwrap(),
        groups - 1,
        "all but the deleted one"
    );
    let after = read_rows(&log);
    assert_eq!(latest(&after), latest(&before));
    assert!(after.iter().all(|r| before.contains(r)));
    assert_eq!(
        log.clean_offset(),
        checkpoint,
        "no checkpoint for a partial install"
    );
    assert!(!std::fs::read_dir(dir.path()).unwrap().any(|e| e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .ends_with(".cleaned")));
}

/// Appends one transactional record of producer `id`.
fn put_txn(log: &mut PartitionLog, id: i64, seq: i32, key: &str, value: &str) -> i64 {
    let (payload, base, max) =
        encode_payload(&[(Some(key.as_bytes()), Some(value.as_bytes()), now())]);
    let fields = BatchFields {
        attributes: 0x10,
        base_timestamp: base,
        max_timestamp: max,
        producer_id: id,
        producer_epoch: 0,
        base_sequence: seq,
    };
    let mut batch = encode_raw(fields, 1, &payload);
    log.append(&mut batch, 0, now()).unwrap().first_offset
}

fn end_txn(log: &mut PartitionLog, id: i64, marker: crate::Marker) -> i64 {
    let mut batch = crate::markers::encode_marker(id, 0, marker, 0, now());
    log.append_as(&mut batch, 0, now(), crate::log::AppendOrigin::Coordinator)
        .unwrap()
        .first_offset
}

#[test]
fn aborted_records_never_replace_committed_values_and_open_transactions_stay_dirty() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), compacted());
    let committed = put(&mut log, "k", Some("committed"));
    put_txn(&mut log, 9, 0, "k", "aborted");
    end_txn(&mut log, 9, crate::Marker::Abort);
    fill(&mut log, 60, 5);
    let open_at = put_txn(&mut log, 10, 0, "k", "open");
    fill(&mut log, 60, 5);
    assert_eq!(log.first_unstable_offset(), Some(open_at));
    assert!(log.segment_count() > 4, "the test needs several segments");

    clean(&mut log, now(), 1 << 20).expect("a pass runs");
    let rows = read_rows(&log);
    // The committed value survives: the aborted record did not win its key.
    assert!(rows.contains(&(committed, "k".into(), Some("committed".into()))));
    // Nothing at or after the open transaction was cleaned: every record there is still readable.
    let after: Vec<_> = rows.iter().filter(|r| r.0 >= open_at).collect();
    assert_eq!(
        after.len(),
        61,
        "the open transaction's record and 60 updates after it"
    );
    // The aborted transaction is still known to read_committed fetches.
    let aborted = log.aborted_transactions(0, i64::MAX);
    assert_eq!(aborted.len(), 1);
    assert_eq!(aborted[0].producer_id, 9);
}

#[test]
fn a_pass_removes_aborted_records_and_keeps_markers_committed_records_and_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), compacted());
    let aborted_at = put_txn(&mut log, 9, 0, "only-aborted", "aborted");
    let abort_marker = end_txn(&mut log, 9, crate::Marker::Abort);
    let committed_at = put_txn(&mut log, 11, 0, "only-committed", "committed");
    let commit_marker = end_txn(&mut log, 11, crate::Marker::Commit);
    fill(&mut log, 60, 5);
    assert!(log.segment_count() > 3, "the test needs several segments");

    let stats = clean(&mut log, now(), 1 << 20).expect("a pass runs");
    assert!(stats.records_removed > 0);
    let rows = read_rows(&log);
    let at = |offset: i64| rows.iter().find(|r| r.0 == offset);
    // The aborted record is gone even though no later record has its key.
    assert_eq!(at(aborted_at), None, "{rows:?}");
    assert!(!rows.iter().any(|r| r.1 == "only-aborted"));
    // The committed one stays at its offset, and both markers stay.
    assert_eq!(
        at(committed_at).map(|r| r.2.clone()),
        Some(Some("committed".to_owned()))
    );
    assert!(at(abort_marker).is_some() && at(commit_marker).is_some());
    // A second pass over a clean log, and a reopen, change none of it.
    let before = read_rows(&log);
    drop(log);
    let mut log = open(dir.path(), compacted());
    let _ = clean(&mut log, now(), 1 << 20);
    assert_eq!(read_rows(&log), before);
}

#[test]
fn the_throttle_holds_io_to_its_rate() {
    // 1 MB/s: 100 kB of I/O cannot be done in less than 100 ms (sleeps never end early).
    let mut t = Throttle::new(1e6);
    let start = Instant::now();
    for _ in 0..10 {
        t.pace(10_000);
    }
    assert!(start.elapsed() >= Duration::from_millis(100));
    // No limit: no sleep at all is needed, whatever the volume.
    let mut free = Throttle::new(0.0);
    free.pace(usize::MAX);
}
