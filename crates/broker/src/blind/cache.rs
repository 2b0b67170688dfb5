//! The (principal, kid, c) → physical name cache (BLIND.md §5.3): a hit
//! skips a modexp. Keys hold SHA-256(c), not c, to keep entries small.

use std::collections::HashMap;

use sha2::{Digest, Sha256};

type Key = (String, String, [u8; 32]);

#[derive(Debug)]
pub struct TokenCache {
    capacity: usize,
    map: HashMap<Key, String>,
}

impl TokenCache {
    pub fn new(capacity: usize) -> Self {
        TokenCache {
            capacity,
            map: HashMap::new(),
        }
    }

    fn key(principal: &str, kid_hex: &str, token: &[u8]) -> Key {
        (
            principal.to_owned(),
            kid_hex.to_owned(),
            Sha256::digest(token).into(),
        )
    }

    pub fn get(&self, principal: &str, kid_hex: &str, token: &[u8]) -> Option<String> {
        self.map.get(&Self::key(principal, kid_hex, token)).cloned()
    }

    pub fn insert(&mut self, principal: &str, kid_hex: &str, token: &[u8], physical: String) {
        if self.capacity == 0 {
            return;
        }
        if self.map.len() >= self.capacity {
            // Evict an arbitrary entry (HashMap order is randomized): cheap,
            // and good enough when the working set mostly fits.
            if let Some(k) = self.map.keys().next().cloned() {
                self.map.remove(&k);
            }
        }
        self.map
            .insert(Self::key(principal, kid_hex, token), physical);
    }

    /// Drop every entry of `principal` (its share changed or was revoked).
    pub fn flush_principal(&mut self, principal: &str) {
        self.map.retain(|k, _| k.0 != principal);
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_and_flushed_per_principal() {
        let mut c = TokenCache::new(2);
        c.insert("a", "k", b"1", "x".into());
        c.insert("b", "k", b"1", "y".into());
        c.insert("a", "k", b"2", "z".into());
        assert_eq!(c.len(), 2);
        c.flush_principal("a");
        assert!(c.get("a", "k", b"1").is_none() && c.get("a", "k", b"2").is_none());
    }
}
