use std::fs::{self, OpenOptions};
use std::path::{Path, PathBuf};

use proptest::prelude::*;

use crate::batch::validate_records;
use crate::error::Error;
use crate::testing::build_simple_batch;
use crate::{LogConfig, PartitionLog, RecoveryReport};

const NOW: i64 = 1_700_000_000_000;

type Stored = (i64, i64, Vec<u8>);

fn config(segment_bytes: u64) -> LogConfig {
    LogConfig {
        segment_bytes,
        index_interval_bytes: 100,
        ..LogConfig::default()
    }
}

fn open(dir: &Path, cfg: &LogConfig) -> crate::Result<(PartitionLog, RecoveryReport)> {
    PartitionLog::open(dir, cfg.clone(), NOW)
}

/// Appends one batch per spec `(records, value bytes, timestamp)` with `epoch`, then drops the log
/// without `close` (a crash, as far as the files are concerned).
fn fill(dir: &Path, cfg: &LogConfig, specs: &[(usize, usize, i64)], epoch: i32) -> Vec<Stored> {
    let (mut log, _) = open(dir, cfg).unwrap();
    let stored = specs
        .iter()
        .map(|&(n, len, ts)| {
            let mut b = build_simple_batch(n, len, ts);
            let info = log.append(&mut b, epoch, NOW).unwrap();
            (info.first_offset, info.last_offset, b)
        })
        .collect();
    drop(log);
    stored
}

fn read_all(log: &PartitionLog) -> Vec<u8> {
    let mut out = Vec::new();
    let mut offset = log.log_start_offset();
    while offset < log.log_end_offset() {
        let r = log.read(offset, usize::MAX, i64::MAX, true).unwrap();
        offset = validate_records(&r.records, usize::MAX)
            .unwrap()
            .last()
            .unwrap()
            .last_offset()
            + 1;
        out.extend_from_slice(&r.records);
    }
    out
}

fn concat(batches: &[Stored]) -> Vec<u8> {
    batches.iter().flat_map(|b| b.2.clone()).collect()
}

fn seg_path(dir: &Path, base: i64, ext: &str) -> PathBuf {
    dir.join(format!("{base:020}.{ext}"))
}

fn bases(dir: &Path) -> Vec<i64> {
    let mut v: Vec<i64> = fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| crate::segment::parse_file_name(e.unwrap().file_name().to_str()?, "log"))
        .collect();
    v.sort_unstable();
    v
}

/// Timestamps close to `NOW`, so reopening does not roll the active segment for its age.
const TS: i64 = NOW - 10_000;

fn specs(n: usize) -> Vec<(usize, usize, i64)> {
    (0..n)
        .map(|i| (1 + i % 3, 40 + i * 7 % 50, TS + 10 * i as i64))
        .collect()
}

#[test]
fn creates_missing_directory() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a").join("t-0");
    let (log, report) = open(&path, &config(1000)).unwrap();
    assert_eq!(
        (
            report.segments,
            report.log_end_offset,
            report.truncated_bytes
        ),
        (1, 0, 0)
    );
    assert!(seg_path(&path, 0, "log").exists());
    assert_eq!(log.log_start_offset(), 0);
}

#[test]
fn missing_indexes_of_older_segments_are_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(400);
    let stored = fill(dir.path(), &cfg, &specs(20), 0);
    close(dir.path(), &cfg);
    let segs = bases(dir.path());
    assert!(segs.len() >= 4);
    fs::remove_file(seg_path(dir.path(), segs[0], "index")).unwrap();
    fs::remove_file(seg_path(dir.path(), segs[1], "timeindex")).unwrap();
    let (log, report) = open(dir.path(), &cfg).unwrap();
    assert_eq!(
        report.rebuilt_indexes, 3,
        "two older segments plus the active one"
    );
    assert!(seg_path(dir.path(), segs[0], "index").exists());
    assert!(seg_path(dir.path(), segs[1], "timeindex").exists());
    assert_eq!(read_all(&log), concat(&stored));
    // Batch 3 holds timestamps TS+30.. (see `specs`).
    assert_eq!(
        log.offset_for_timestamp(TS + 25).unwrap(),
        Some((stored[3].0, TS + 30))
    );
    drop(log);
    // The rebuilt files are trusted next time.
    assert_eq!(open(dir.path(), &cfg).unwrap().1.rebuilt_indexes, 1);
}

#[test]
fn corrupt_indexes_are_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(400);
    let stored = fill(dir.path(), &cfg, &specs(30), 0);
    close(dir.path(), &cfg);
    let segs = bases(dir.path());
    assert!(segs.len() >= 5);
    // Not a multiple of the entry size.
    fs::write(seg_path(dir.path(), segs[0], "index"), [0u8; 7]).unwrap();
    // Timestamps going backwards.
    let mut back = Vec::new();
    back.extend_from_slice(&9i64.to_be_bytes());
    back.extend_from_slice(&0u32.to_be_bytes());
    back.extend_from_slice(&8i64.to_be_bytes());
    back.extend_from_slice(&1u32.to_be_bytes());
    fs::write(seg_path(dir.path(), segs[1], "timeindex"), back).unwrap();
    // A position beyond the log file.
    let mut beyond = Vec::new();
    beyond.extend_from_slice(&1u32.to_be_bytes());
    beyond.extend_from_slice(&1_000_000u32.to_be_bytes());
    fs::write(seg_path(dir.path(), segs[2], "index"), beyond).unwrap();
    // Sane-looking but pointing into the middle of a batch.
    let mut inside = Vec::new();
    inside.extend_from_slice(&1u32.to_be_bytes());
    inside.extend_from_slice(&5u32.to_be_bytes());
    fs::write(seg_path(dir.path(), segs[3], "index"), inside).unwrap();
    let (log, report) = open(dir.path(), &cfg).unwrap();
    assert_eq!(report.rebuilt_indexes, 5);
    assert_eq!(read_all(&log), concat(&stored));
    for (base, last, bytes) in &stored {
        assert_eq!(
            &log.read(*last, 1, i64::MAX, true).unwrap().records,
            bytes,
            "{base}"
        );
    }
}

/// Syncs and checkpoints everything `fill` wrote, as a clean shutdown does.
fn close(dir: &Path, cfg: &LogConfig) {
    let (log, _) = open(dir, cfg).unwrap();
    log.close().unwrap();
}

#[test]
fn damage_below_the_recovery_point_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(400);
    fill(dir.path(), &cfg, &specs(12), 0);
    close(dir.path(), &cfg);
    let segs = bases(dir.path());
    let path = seg_path(dir.path(), segs[0], "log");
    let mut bytes = fs::read(&path).unwrap();
    bytes[70] ^= 0x40; // inside the first batch's records
    fs::write(&path, bytes).unwrap();
    fs::remove_file(seg_path(dir.path(), segs[0], "index")).unwrap();
    match open(dir.path(), &cfg) {
        Err(Error::Corrupt {
            segment, position, ..
        }) => assert_eq!((segment, position), (path.clone(), 0)),
        other => panic!("expected Corrupt, got {:?}", other.map(|r| r.1)),
    }
    assert_eq!(
        fs::read(&path).unwrap().len(),
        fs::metadata(&path).unwrap().len() as usize
    );
}

#[test]
fn a_torn_tail_below_the_recovery_point_is_an_error_not_a_truncation() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(400);
    fill(dir.path(), &cfg, &specs(12), 0);
    close(dir.path(), &cfg);
    let segs = bases(dir.path());
    let path = seg_path(dir.path(), segs[1], "log");
    let len = fs::metadata(&path).unwrap().len();
    OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(len - 3)
        .unwrap();
    assert!(matches!(open(dir.path(), &cfg), Err(Error::Corrupt { .. })));
    assert_eq!(fs::metadata(&path).unwrap().len(), len - 3);
}

#[test]
fn an_old_clean_shutdown_without_a_recovery_point_trusts_older_segments() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(400);
    fill(dir.path(), &cfg, &specs(12), 0);
    close(dir.path(), &cfg);
    fs::remove_file(dir.path().join("recovery-point")).unwrap();
    let segs = bases(dir.path());
    let path = seg_path(dir.path(), segs[1], "log");
    let len = fs::metadata(&path).unwrap().len();
    OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(len - 3)
        .unwrap();
    assert!(matches!(open(dir.path(), &cfg), Err(Error::Corrupt { .. })));
}

#[test]
fn a_torn_older_segment_beyond_the_recovery_point_is_cut_and_the_rest_set_aside() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(400);
    let stored = fill(dir.path(), &cfg, &specs(12), 0);
    let segs = bases(dir.path());
    assert!(segs.len() >= 4, "{segs:?}");
    // Power loss: the second segment lost its last 3 bytes, nothing had been synced.
    let path = seg_path(dir.path(), segs[1], "log");
    let len = fs::metadata(&path).unwrap().len();
    OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(len - 3)
        .unwrap();
    let later: u64 = segs[2..]
        .iter()
        .map(|&b| fs::metadata(seg_path(dir.path(), b, "log")).unwrap().len())
        .sum();
    let (mut log, report) = open(dir.path(), &cfg).unwrap();
    let kept: Vec<Stored> = stored
        .iter()
        .filter(|b| b.1 < segs[2] - 1)
        .cloned()
        .collect();
    let cut_batch = &stored[kept.len()];
    assert_eq!(report.log_end_offset, cut_batch.0);
    assert_eq!(report.segments, 2);
    assert_eq!(
        report.recovery_point, 0,
        "nothing was checkpointed after creation"
    );
    assert_eq!(report.truncated_bytes, cut_batch.2.len() as u64 - 3 + later);
    assert_eq!(read_all(&log), concat(&kept));
    assert_eq!(bases(dir.path()), segs[..2].to_vec());
    for &b in &segs[2..] {
        let aside = dir.path().join(format!("{b:020}.log.truncated"));
        assert!(aside.exists(), "{}", aside.display());
        assert!(!seg_path(dir.path(), b, "index").exists());
    }
    assert!(dir
        .path()
        .join(format!("{:020}.log.truncated", segs[1]))
        .exists());
    // The log continues from the cut, and the recovery point moved to it.
    let mut b = build_simple_batch(1, 10, 0);
    assert_eq!(
        log.append(&mut b, 0, NOW).unwrap().first_offset,
        cut_batch.0
    );
    let text = fs::read_to_string(dir.path().join("recovery-point")).unwrap();
    assert_eq!(text.trim(), cut_batch.0.to_string());
}

#[test]
fn the_recovery_point_follows_syncs_and_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(400);
    let (mut log, report) = open(dir.path(), &cfg).unwrap();
    assert_eq!(report.recovery_point, i64::MIN);
    for _ in 0..6 {
        let mut b = build_simple_batch(1, 100, 0);
        log.append(&mut b, 0, NOW).unwrap();
    }
    assert!(
        !log.checkpoint_recovery_point().unwrap(),
        "nothing synced yet"
    );
    log.sync().unwrap();
    assert!(log.checkpoint_recovery_point().unwrap());
    assert!(!log.checkpoint_recovery_point().unwrap(), "unchanged");
    let end = log.log_end_offset();
    drop(log);
    let (_, report) = open(dir.path(), &cfg).unwrap();
    assert_eq!((report.recovery_point, report.log_end_offset), (end, end));
}

#[test]
fn cleans_up_leftovers() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(1 << 20);
    fill(dir.path(), &cfg, &specs(3), 0);
    let junk = [
        "00000000000000000000.log.deleted",
        "leader-epoch-checkpoint.tmp",
        "00000000000000000099.index",
        "00000000000000000099.timeindex",
    ];
    for name in junk {
        fs::write(dir.path().join(name), b"x").unwrap();
    }
    fs::write(
        dir.path().join("00000000000000000000.log.truncated"),
        b"kept",
    )
    .unwrap();
    open(dir.path(), &cfg).unwrap();
    for name in junk {
        assert!(!dir.path().join(name).exists(), "{name}");
    }
    assert!(dir
        .path()
        .join("00000000000000000000.log.truncated")
        .exists());
}

#[test]
fn epochs_beyond_the_recovered_end_are_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(1 << 20);
    let first = fill(dir.path(), &cfg, &specs(2), 1);
    fill(dir.path(), &cfg, &specs(1), 4);
    let path = seg_path(dir.path(), 0, "log");
    let keep = (first[0].2.len() + first[1].2.len()) as u64;
    OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(keep + 10)
        .unwrap();
    let (log, report) = open(dir.path(), &cfg).unwrap();
    assert_eq!(
        (report.truncated_bytes, report.log_end_offset),
        (10, first[1].1 + 1)
    );
    assert_eq!(log.epoch_entries(), vec![(1, 0)]);
    let text = fs::read_to_string(dir.path().join("leader-epoch-checkpoint")).unwrap();
    assert_eq!(text, "0\n1\n1 0\n");
}

#[test]
fn epochs_are_rebuilt_from_the_active_segment() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(1 << 20);
    fill(dir.path(), &cfg, &specs(2), 1);
    fill(dir.path(), &cfg, &specs(1), 3);
    fs::remove_file(dir.path().join("leader-epoch-checkpoint")).unwrap();
    let (log, _) = open(dir.path(), &cfg).unwrap();
    assert_eq!(log.epoch_entries(), vec![(1, 0), (3, 3)]);
}

#[test]
fn log_start_offset_beyond_end_starts_afresh() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(1 << 20);
    fill(dir.path(), &cfg, &specs(2), 0);
    fs::write(dir.path().join("log-start-offset"), "50\n").unwrap();
    let (mut log, report) = open(dir.path(), &cfg).unwrap();
    assert_eq!(
        (
            log.log_start_offset(),
            report.log_end_offset,
            report.segments
        ),
        (50, 50, 1)
    );
    assert_eq!(bases(dir.path()), vec![50]);
    let mut b = build_simple_batch(1, 1, 0);
    assert_eq!(log.append(&mut b, 0, NOW).unwrap().first_offset, 50);
    fs::write(dir.path().join("log-start-offset"), "fifty").unwrap();
    drop(log);
    assert!(matches!(open(dir.path(), &cfg), Err(Error::Corrupt { .. })));
}

#[derive(Clone, Debug)]
enum Damage {
    Truncate(prop::sample::Index),
    Flip(prop::sample::Index, u8),
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        any::<prop::sample::Index>().prop_map(Damage::Truncate),
        (any::<prop::sample::Index>(), 1u8..=255).prop_map(|(i, x)| Damage::Flip(i, x)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn recovers_from_a_damaged_active_segment(
        specs in proptest::collection::vec((1usize..4, 0usize..200, 0i64..5000), 1..30),
        segment_bytes in 300u64..3000,
        damage in damage(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(segment_bytes);
        let stored = fill(dir.path(), &cfg, &specs, 0);
        let active_base = *bases(dir.path()).last().unwrap();
        let split = stored.iter().position(|b| b.0 >= active_base).unwrap_or(stored.len());
        let (older, active) = stored.split_at(split);
        let path = seg_path(dir.path(), active_base, "log");
        let mut bytes = fs::read(&path).unwrap();
        prop_assume!(!bytes.is_empty());
        // Batch start positions in the active segment.
        let starts: Vec<usize> = active.iter().scan(0, |p, b| { let s = *p; *p += b.2.len(); Some(s) }).collect();
        let (intact, damaged_len) = match damage {
            Damage::Truncate(i) => {
                let cut = i.index(bytes.len());
                let intact = starts.iter().zip(active).take_while(|(s, b)| **s + b.2.len() <= cut).count();
                bytes.truncate(cut);
                (intact, cut - starts.get(intact).copied().unwrap_or(cut))
            }
            Damage::Flip(i, x) => {
                let mut at = i.index(bytes.len());
                let victim = starts.iter().rposition(|s| *s <= at).unwrap();
                // The base offset and the leader epoch are outside the CRC (as in Kafka), and a
                // forward jump of the base offset is what a cleaned leader's gaps look like on a
                // follower: hit the magic byte instead.
                let rel = at - starts[victim];
                if (0..8).contains(&rel) || (12..16).contains(&rel) {
                    at = starts[victim] + 16;
                }
                bytes[at] ^= x;
                (victim, bytes.len() - starts[victim])
            }
        };
        let damaged_tail = bytes[bytes.len() - damaged_len..].to_vec();
        fs::write(&path, &bytes).unwrap();

        let (mut log, report) = open(dir.path(), &cfg).unwrap();
        let survivors: Vec<Stored> = older.iter().chain(&active[..intact]).cloned().collect();
        let end = survivors.last().map_or(active_base, |b| b.1 + 1);
        prop_assert_eq!(report.log_end_offset, end);
        prop_assert_eq!(log.log_end_offset(), end);
        prop_assert_eq!(report.truncated_bytes, damaged_len as u64);
        prop_assert_eq!(read_all(&log), concat(&survivors));
        let sidecar = dir.path().join(format!("{active_base:020}.log.truncated"));
        if damaged_len > 0 {
            prop_assert_eq!(fs::read(&sidecar).unwrap(), damaged_tail);
        } else {
            prop_assert!(!sidecar.exists());
        }
        let mut b = build_simple_batch(2, 10, 7);
        prop_assert_eq!(log.append(&mut b, 0, NOW).unwrap().first_offset, end);
        drop(log);
        let (log, report) = open(dir.path(), &cfg).unwrap();
        prop_assert_eq!((report.truncated_bytes, log.log_end_offset()), (0, end + 2));
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Mirrors the `log_recovery` fuzz target on stable: garbage after a valid prefix and a garbage
    /// index never panic, the prefix survives, and appends continue at the log end.
    #[test]
    fn arbitrary_tail_and_index_bytes(
        tail in proptest::collection::vec(any::<u8>(), 0..400),
        index in proptest::collection::vec(any::<u8>(), 0..40),
        fake_header in any::<bool>(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(1 << 20);
        let stored = fill(dir.path(), &cfg, &specs(3), 0);
        let path = seg_path(dir.path(), 0, "log");
        let mut bytes = fs::read(&path).unwrap();
        let prefix = bytes.len();
        if fake_header && tail.len() >= 61 {
            // A plausible header (right offset, magic 2) with a wrong CRC or length.
            let mut t = tail.clone();
            t[..8].copy_from_slice(&(stored[2].1 + 1).to_be_bytes());
            t[16] = 2;
            bytes.extend_from_slice(&t);
        } else {
            bytes.extend_from_slice(&tail);
        }
        fs::write(&path, &bytes).unwrap();
        fs::write(seg_path(dir.path(), 0, "index"), &index).unwrap();
        let (mut log, report) = open(dir.path(), &cfg).unwrap();
        prop_assert_eq!(report.truncated_bytes, (bytes.len() - prefix) as u64);
        prop_assert_eq!(read_all(&log), concat(&stored));
        let end = log.log_end_offset();
        let mut b = build_simple_batch(1, 1, TS);
        prop_assert_eq!(log.append(&mut b, 0, NOW).unwrap().first_offset, end);
    }
}
