//! The cleaner's key → latest offset map: a fixed number of slots (from Kafka's
//! `log.cleaner.dedupe.buffer.size`), open addressing over a 128-bit digest of the key.
//!
//! Memory is bounded by construction: 24 bytes a slot, allocated zeroed (so untouched pages cost
//! nothing) and never grown. A pass maps as many dirty records as fit under the load factor and
//! cleans up to there; the rest waits for the next pass. Two keys with the same 128-bit digest
//! would be treated as one key; SHA-256 makes that practically impossible.

use sha2::{Digest, Sha256};

/// Bytes one slot costs: a 16-byte digest and an 8-byte offset.
pub const SLOT_BYTES: usize = 24;
/// Fraction of the slots a pass fills at most (Kafka's `log.cleaner.io.buffer.load.factor`).
const LOAD_FACTOR: f64 = 0.9;

#[derive(Debug)]
pub struct OffsetMap {
    digests: Vec<u128>,
    /// Offset + 1 of the slot's key; 0 marks an empty slot (so the vector starts zeroed).
    offsets: Vec<u64>,
    len: usize,
    max_len: usize,
}

fn digest(key: &[u8]) -> u128 {
    let full = Sha256::digest(key);
    let mut first = [0u8; 16];
    first.copy_from_slice(&full[..16]);
    u128::from_le_bytes(first)
}

impl OffsetMap {
    /// A map using at most `memory_bytes` (at least one slot).
    pub fn with_memory(memory_bytes: usize) -> OffsetMap {
        let slots = (memory_bytes / SLOT_BYTES).max(1);
        OffsetMap {
            digests: vec![0; slots],
            offsets: vec![0; slots],
            len: 0,
            max_len: ((slots as f64 * LOAD_FACTOR) as usize).clamp(1, slots),
        }
    }

    /// Distinct keys the map takes before it is full.
    pub fn capacity(&self) -> usize {
        self.max_len
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Slot of `d`: where it is, or the empty slot where it would go.
    fn slot(&self, d: u128) -> usize {
        let n = self.digests.len();
        let mut i = (d % n as u128) as usize;
        loop {
            if self.offsets[i] == 0 || self.digests[i] == d {
                return i;
            }
            i = (i + 1) % n;
        }
    }

    /// Records `offset` as the latest for `key`. Returns false (and changes nothing) when the key
    /// is new and the map is full.
    pub fn put(&mut self, key: &[u8], offset: i64) -> bool {
        let d = digest(key);
        let i = self.slot(d);
        if self.offsets[i] == 0 {
            if self.len >= self.max_len {
                return false;
            }
            self.len += 1;
            self.digests[i] = d;
        }
        self.offsets[i] = (offset as u64).wrapping_add(1);
        true
    }

    /// The latest offset recorded for `key`.
    pub fn get(&self, key: &[u8]) -> Option<i64> {
        let i = self.slot(digest(key));
        match self.offsets[i] {
            0 => None,
            o => Some(o.wrapping_sub(1) as i64),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn latest_offset_wins_and_absent_keys_are_none() {
        let mut m = OffsetMap::with_memory(1024);
        assert!(m.put(b"a", 0));
        assert!(m.put(b"b", 1));
        assert!(m.put(b"a", 7));
        assert_eq!(m.get(b"a"), Some(7));
        assert_eq!(m.get(b"b"), Some(1));
        assert_eq!(m.get(b"c"), None);
        assert_eq!(m.len(), 2);
    }

    #[test]
    fn a_full_map_refuses_new_keys_but_updates_known_ones() {
        let mut m = OffsetMap::with_memory(10 * SLOT_BYTES);
        assert_eq!(m.capacity(), 9);
        for i in 0..9u32 {
            assert!(m.put(&i.to_be_bytes(), i64::from(i)));
        }
        assert!(!m.put(b"one more", 100));
        assert_eq!(m.get(b"one more"), None);
        assert!(m.put(&3u32.to_be_bytes(), 50));
        assert_eq!(m.get(&3u32.to_be_bytes()), Some(50));
        assert_eq!(m.len(), 9);
    }

    #[test]
    fn agrees_with_a_hash_map_under_collisions() {
        // Few slots: long probe chains.
        let mut m = OffsetMap::with_memory(600 * SLOT_BYTES);
        let mut reference = HashMap::new();
        for offset in 0..20_000i64 {
            let key = format!("key-{}", (offset * 7919) % 500);
            assert!(m.put(key.as_bytes(), offset));
            reference.insert(key, offset);
        }
        assert_eq!(m.len(), reference.len());
        for (k, v) in &reference {
            assert_eq!(m.get(k.as_bytes()), Some(*v));
        }
        assert_eq!(m.get(b"key-500"), None);
    }

    #[test]
    fn empty_and_zero_offsets_are_distinct() {
        let mut m = OffsetMap::with_memory(SLOT_BYTES * 4);
        assert!(m.put(b"", 0));
        assert_eq!(m.get(b""), Some(0));
    }
}
