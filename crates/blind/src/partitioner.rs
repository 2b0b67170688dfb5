//! Kafka's default partitioner for keyed records: `murmur2(key)` made
//! positive, modulo the partition count. The sealed-record producer and the
//! broker's MQTT front end both use it, so a key lands in the partition a
//! Kafka client would pick for it. Pure arithmetic.

/// Kafka's murmur2 (the Java client's `Utils.murmur2`), for partitioning
/// by key tag the way Kafka's default partitioner does.
pub fn murmur2(data: &[u8]) -> i32 {
    const M: u32 = 0x5bd1_e995;
    const SEED: u32 = 0x9747_b28c;
    let len = u32::try_from(data.len()).unwrap_or(u32::MAX);
    let mut h = SEED ^ len;
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> 24;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M) ^ k;
    }
    let rest = chunks.remainder();
    if rest.len() >= 3 {
        h ^= u32::from(rest[2]) << 16;
    }
    if rest.len() >= 2 {
        h ^= u32::from(rest[1]) << 8;
    }
    if !rest.is_empty() {
        h ^= u32::from(rest[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    i32::from_be_bytes(h.to_be_bytes())
}

/// The partition Kafka's default partitioner picks for `key` among `partitions` (> 0).
pub fn partition_for_key(key: &[u8], partitions: u32) -> u32 {
    (u32::from_be_bytes(murmur2(key).to_be_bytes()) & 0x7fff_ffff) % partitions.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn murmur2_matches_kafka() {
        // Values from Kafka's own UtilsTest.
        assert_eq!(murmur2(b"21"), -973_932_308);
        assert_eq!(murmur2(b"foobar"), -790_332_482);
        assert_eq!(murmur2(b"a-little-bit-long-string"), -985_981_536);
        assert_eq!(murmur2(b"a-little-bit-longer-string"), -1_486_304_829);
        assert_eq!(
            murmur2(b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8"),
            -58_897_971
        );
        assert_eq!(murmur2(b"abc"), 479_470_107);
    }

    #[test]
    fn partitions_are_in_range_and_stable() {
        for n in 1..8 {
            assert!(partition_for_key(b"factory/7/line/3", n) < n);
        }
        assert_eq!(partition_for_key(b"abc", 3), 479_470_107 % 3);
    }
}
