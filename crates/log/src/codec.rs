//! The four Kafka batch codecs over a batch's records section: gzip, snappy (Kafka's Java
//! clients frame it the xerial way; librdkafka also reads and writes raw blocks), LZ4 frames and
//! zstd. Used where the broker has to look inside or rewrite a batch: keyless-record checks and
//! recompression on compacted or `compression.type` topics, and the log cleaner.
//!
//! Every decompression is bounded by a caller's cap on the output: a small batch claiming a huge
//! records section is refused before anything that large is allocated.

use std::io::{Read, Write};

use crate::batch::Compression;
use crate::error::{Error, Result};

/// Largest records section the broker decompresses for one batch.
pub const MAX_DECOMPRESSED: usize = 64 << 20;

/// Xerial's stream header: magic, then version and compatible version (both 1).
const XERIAL_MAGIC: [u8; 8] = [0x82, b'S', b'N', b'A', b'P', b'P', b'Y', 0];
const XERIAL_HEADER_LEN: usize = 16;
/// Uncompressed bytes per xerial block, as the Java client writes them.
const XERIAL_BLOCK: usize = 32 * 1024;

/// A target codec and its level (`None`: the codec's default).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Codec {
    pub compression: Compression,
    pub level: Option<i32>,
}

impl Codec {
    pub fn new(compression: Compression, level: Option<i32>) -> Codec {
        Codec { compression, level }
    }
}

fn corrupt(codec: &str, e: impl std::fmt::Display) -> Error {
    Error::CorruptRecord(format!("{codec} records do not decompress: {e}"))
}

fn too_large(cap: usize) -> Error {
    Error::CorruptRecord(format!(
        "records decompress to more than the cap of {cap} bytes"
    ))
}

/// Reads all of `reader`, refusing more than `cap` bytes.
fn read_capped(reader: impl Read, cap: usize, codec: &str) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    reader
        .take(cap as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| corrupt(codec, e))?;
    if out.len() > cap {
        return Err(too_large(cap));
    }
    Ok(out)
}

/// Decompresses a batch's records section (`Compression::None` copies it).
pub fn decompress(compression: Compression, input: &[u8], cap: usize) -> Result<Vec<u8>> {
    match compression {
        Compression::None => {
            if input.len() > cap {
                return Err(too_large(cap));
            }
            Ok(input.to_vec())
        }
        Compression::Gzip => read_capped(flate2::read::MultiGzDecoder::new(input), cap, "gzip"),
        Compression::Snappy => snappy_decompress(input, cap),
        Compression::Lz4 => read_capped(lz4_flex::frame::FrameDecoder::new(input), cap, "lz4"),
        Compression::Zstd => {
            let decoder =
                zstd::stream::read::Decoder::new(input).map_err(|e| corrupt("zstd", e))?;
            read_capped(decoder, cap, "zstd")
        }
        Compression::Unknown(id) => Err(Error::InvalidRecord(format!(
            "unknown compression codec {id}"
        ))),
    }
}

fn snappy_block(block: &[u8], cap: usize, out: &mut Vec<u8>) -> Result<()> {
    let len = snap::raw::decompress_len(block).map_err(|e| corrupt("snappy", e))?;
    if out.len().saturating_add(len) > cap {
        return Err(too_large(cap));
    }
    let start = out.len();
    out.resize(start + len, 0);
    let n = snap::raw::Decoder::new()
        .decompress(block, &mut out[start..])
        .map_err(|e| corrupt("snappy", e))?;
    out.truncate(start + n);
    Ok(())
}

fn snappy_decompress(input: &[u8], cap: usize) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    if !input.starts_with(&XERIAL_MAGIC) {
        snappy_block(input, cap, &mut out)?;
        return Ok(out);
    }
    if input.len() < XERIAL_HEADER_LEN {
        return Err(corrupt("snappy", "short xerial header"));
    }
    let mut pos = XERIAL_HEADER_LEN;
    while pos < input.len() {
        let Some(len_bytes) = input.get(pos..pos + 4) else {
            return Err(corrupt("snappy", "xerial block length cut short"));
        };
        let len = u32::from_be_bytes([len_bytes[0], len_bytes[1], len_bytes[2], len_bytes[3]]);
        pos += 4;
        let end = pos
            .checked_add(len as usize)
            .filter(|&e| e <= input.len())
            .ok_or_else(|| corrupt("snappy", "xerial block overruns the batch"))?;
        snappy_block(&input[pos..end], cap, &mut out)?;
        pos = end;
    }
    Ok(out)
}

/// Compresses a records section with `codec`.
pub fn compress(codec: Codec, input: &[u8]) -> Result<Vec<u8>> {
    let io = |e: std::io::Error| Error::Io(e);
    match codec.compression {
        Compression::None => Ok(input.to_vec()),
        Compression::Gzip => {
            let level = codec.level.map_or(flate2::Compression::default(), |l| {
                flate2::Compression::new(l.clamp(1, 9) as u32)
            });
            let mut enc = flate2::write::GzEncoder::new(Vec::new(), level);
            enc.write_all(input).map_err(io)?;
            enc.finish().map_err(io)
        }
        Compression::Snappy => {
            let mut out = Vec::with_capacity(input.len() / 2 + XERIAL_HEADER_LEN);
            out.extend_from_slice(&XERIAL_MAGIC);
            out.extend_from_slice(&1i32.to_be_bytes());
            out.extend_from_slice(&1i32.to_be_bytes());
            let mut encoder = snap::raw::Encoder::new();
            for chunk in input.chunks(XERIAL_BLOCK) {
                let block = encoder
                    .compress_vec(chunk)
                    .map_err(|e| Error::InvalidRecord(format!("snappy: {e}")))?;
                out.extend_from_slice(&(block.len() as u32).to_be_bytes());
                out.extend_from_slice(&block);
            }
            Ok(out)
        }
        // lz4_flex has one (fast) compressor; `compression.lz4.level` is accepted and recorded.
        Compression::Lz4 => {
            let mut enc = lz4_flex::frame::FrameEncoder::new(Vec::new());
            enc.write_all(input).map_err(io)?;
            enc.finish()
                .map_err(|e| Error::InvalidRecord(format!("lz4: {e}")))
        }
        Compression::Zstd => zstd::bulk::compress(input, codec.level.unwrap_or(3)).map_err(io),
        Compression::Unknown(id) => Err(Error::InvalidRecord(format!(
            "unknown compression codec {id}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [Compression; 5] = [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ];

    #[test]
    fn every_codec_round_trips() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        for c in ALL {
            for level in [None, Some(1), Some(9)] {
                let packed = compress(Codec::new(c, level), &data).unwrap();
                if c != Compression::None {
                    assert!(packed.len() < data.len(), "{c:?} compresses");
                }
                assert_eq!(decompress(c, &packed, data.len()).unwrap(), data, "{c:?}");
            }
        }
    }

    #[test]
    fn output_beyond_the_cap_is_refused() {
        let data = vec![0u8; 1 << 20];
        for c in ALL {
            let packed = compress(Codec::new(c, None), &data).unwrap();
            assert!(decompress(c, &packed, (1 << 20) - 1).is_err(), "{c:?}");
        }
    }

    #[test]
    fn raw_snappy_blocks_are_read_too() {
        let data = b"librdkafka writes raw snappy blocks".repeat(50);
        let raw = snap::raw::Encoder::new().compress_vec(&data).unwrap();
        assert_eq!(
            decompress(Compression::Snappy, &raw, 1 << 20).unwrap(),
            data
        );
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for c in ALL[1..].iter().copied() {
            assert!(decompress(c, b"\x82SNAPPY\x00garbage-garbage", 1 << 20).is_err());
            assert!(decompress(c, &[0xff; 40], 1 << 20).is_err(), "{c:?}");
        }
    }
}
