//! Compressed records sections and the produce-time rewrite (keys on compacted topics,
//! recompression): any bytes are an error or a result, never a panic or an allocation beyond the
//! cap.
#![no_main]

use libfuzzer_sys::fuzz_target;
use veil_log::codec::{decompress, Codec};
use veil_log::rewrite::{prepare_produce, ProducePolicy};
use veil_log::Compression;

fuzz_target!(|data: &[u8]| {
    for c in [
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ] {
        if let Ok(out) = decompress(c, data, 1 << 20) {
            assert!(out.len() <= 1 << 20);
        }
    }
    let policy = ProducePolicy {
        require_keys: true,
        target: Some(Codec::new(Compression::Lz4, None)),
        max_message_bytes: 1 << 20,
    };
    let _ = prepare_produce(data, &policy);
});
