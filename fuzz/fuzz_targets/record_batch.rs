//! Produce-path decoding: header parsing and record-set validation must never panic, and anything
//! accepted must append and read back byte-for-byte (apart from the fields the broker assigns).
#![no_main]

use libfuzzer_sys::fuzz_target;
use veil_log::{validate_records, BatchHeader, LogConfig, PartitionLog};

fuzz_target!(|data: &[u8]| {
    let _ = BatchHeader::parse(data);
    let Ok(headers) = validate_records(data, 1 << 20) else {
        return;
    };
    let total: usize = headers.iter().map(BatchHeader::total_size).sum();
    assert_eq!(total, data.len());

    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = PartitionLog::open(dir.path(), LogConfig::default(), 0).unwrap();
    let mut records = data.to_vec();
    let info = match log.append(&mut records, 3, 0) {
        Ok(info) => info,
        // Legitimate refusal: batches claiming more offsets than one segment can address.
        Err(veil_log::Error::InvalidRecord(_)) => return,
        Err(e) => panic!("valid record set refused: {e}"),
    };
    assert_eq!(info.first_offset, 0);
    assert_eq!(log.log_end_offset(), info.last_offset + 1);
    let read = log.read(0, usize::MAX, i64::MAX, true).unwrap();
    assert_eq!(read.records, records);
    let stored = validate_records(&read.records, 1 << 20).unwrap();
    assert_eq!(stored, info.batches);
    let _ = log.offset_for_timestamp(0).unwrap();
    let _ = log.max_timestamp().unwrap();
});
