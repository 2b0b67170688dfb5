//! Recovery over arbitrary on-disk bytes: a valid prefix of batches followed by fuzzer bytes in the
//! active segment, and fuzzer bytes as its index. Opening must never panic; when it succeeds the
//! valid prefix survives, everything left reads back, and appends continue at the log end.
#![no_main]

use libfuzzer_sys::fuzz_target;
use veil_log::testing::build_simple_batch;
use veil_log::{BatchHeader, LogConfig, PartitionLog};

fuzz_target!(|data: &[u8]| {
    let (index, tail) =
        data.split_at(usize::from(data.first().copied().unwrap_or(0)).min(data.len()));
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        index_interval_bytes: 64,
        ..LogConfig::default()
    };
    let (mut log, _) = PartitionLog::open(dir.path(), config.clone(), 0).unwrap();
    for i in 0..3 {
        let mut batch = build_simple_batch(2, 30, i);
        log.append(&mut batch, 0, 0).unwrap();
    }
    let prefix_end = log.log_end_offset();
    drop(log);

    let segment = dir.path().join("00000000000000000000.log");
    let mut bytes = std::fs::read(&segment).unwrap();
    bytes.extend_from_slice(tail);
    std::fs::write(&segment, bytes).unwrap();
    std::fs::write(dir.path().join("00000000000000000000.index"), index).unwrap();

    let Ok((mut log, _)) = PartitionLog::open(dir.path(), config, 0) else {
        return;
    };
    assert!(log.log_end_offset() >= prefix_end);
    let mut offset = log.log_start_offset();
    while offset < log.log_end_offset() {
        let read = log.read(offset, 1 << 20, i64::MAX, true).unwrap();
        assert!(!read.records.is_empty());
        let mut pos = 0;
        while pos < read.records.len() {
            let header = BatchHeader::parse(&read.records[pos..]).unwrap();
            offset = header.last_offset() + 1;
            pos += header.total_size();
        }
        assert_eq!(pos, read.records.len());
    }
    let end = log.log_end_offset();
    let mut batch = build_simple_batch(1, 1, 0);
    assert_eq!(log.append(&mut batch, 0, 0).unwrap().first_offset, end);
});
