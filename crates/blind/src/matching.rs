//! Topic tokens and physical names (BLIND.md §5.3).
//!
//! ```text
//! client i : c = σ^{e_i1} mod n                       UserKey::token
//! broker   : check c; T = c^{e_i2} = σ^e mod n         ServerShare::resolve
//! broker   : "vb1-" ‖ base32(SHA-256(enc("veil/v1/topic-name") ‖ enc(kid) ‖ enc(I2OSP(T, k))))
//! ```
//!
//! Note: the physical-name hash length-prefixes I2OSP(T, k) with `enc()`,
//! exactly as `kat.py` does; BLIND.md §5.3 writes the field without `enc`,
//! the KAT is authoritative (the length is fixed, so both are unambiguous).
//!
//! T exists only inside [`ServerShare::resolve`] and is wiped before it
//! returns; only the physical name leaves.

use std::fmt;

use openssl::bn::BigNumRef;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::bignum::{self, i2osp};
use crate::error::Result;
use crate::hash::{self, encs, LABEL_TOPIC_NAME};
use crate::keys::{MasterKey, ServerShare, UserKey};
use crate::params::{Kid, ModulusBits};
use crate::wire::decode_element;

/// Prefix of every blind topic's physical (Kafka) name.
pub const PHYSICAL_PREFIX: &str = "vb1-";
/// Length of a physical name: "vb1-" + 52 base32 characters.
pub const PHYSICAL_NAME_LEN: usize = 56;

/// A client's topic token c = σ^{e_i1}: I2OSP(c, k), sent in `BlindResolve`
/// and `BlindCreateTopic`. Deterministic per (user, kid, topic), so cache it;
/// never log it (Debug is redacted).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Token(Vec<u8>);

impl Token {
    /// The k wire bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Take the wire bytes.
    pub fn into_bytes(self) -> Vec<u8> {
        self.0
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Token(<{} bytes>)", self.0.len())
    }
}

/// The Kafka topic name of a blind topic: 56 characters of `[a-z2-7-]`,
/// starting with "vb1-". Not secret.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PhysicalName(String);

impl PhysicalName {
    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Take the name.
    pub fn into_string(self) -> String {
        self.0
    }

    /// Does `name` have the shape of a physical blind-topic name?
    pub fn is_physical(name: &str) -> bool {
        name.len() == PHYSICAL_NAME_LEN
            && name.starts_with(PHYSICAL_PREFIX)
            && name.as_bytes()[PHYSICAL_PREFIX.len()..]
                .iter()
                .all(|b| b.is_ascii_lowercase() || (b'2'..=b'7').contains(b))
    }
}

impl fmt::Display for PhysicalName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for PhysicalName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// Physical name from T (I2OSP(T, k) bytes).
pub(crate) fn physical_name(kid: &Kid, t_bytes: &[u8]) -> Result<PhysicalName> {
    let input = encs(&[LABEL_TOPIC_NAME, kid.as_bytes(), t_bytes])?;
    let digest = Sha256::digest(&*input);
    let mut name = String::with_capacity(PHYSICAL_NAME_LEN);
    name.push_str(PHYSICAL_PREFIX);
    base32_lower_nopad(&digest, &mut name);
    Ok(PhysicalName(name))
}

/// RFC 4648 base32, lowercase alphabet, no padding.
fn base32_lower_nopad(data: &[u8], out: &mut String) {
    const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
    let mut acc: u32 = 0;
    let mut nbits = 0u32;
    for &b in data {
        acc = (acc << 8) | u32::from(b);
        nbits += 8;
        while nbits >= 5 {
            nbits -= 5;
            out.push(char::from(ALPHABET[((acc >> nbits) & 31) as usize]));
        }
        acc &= (1 << nbits) - 1;
    }
    if nbits > 0 {
        out.push(char::from(ALPHABET[((acc << (5 - nbits)) & 31) as usize]));
    }
}

fn sigma(
    n: &BigNumRef,
    bits: ModulusBits,
    kid: &Kid,
    tenant: &str,
    topic: &str,
) -> Result<crate::bignum::SecretBn> {
    hash::fdh(n, bits, kid.as_bytes(), tenant.as_bytes(), topic.as_bytes())
}

impl UserKey {
    /// The token c = σ^{e_i1} for `topic` (exact application bytes, not
    /// normalized) under this key's kid and tenant. One constant-time modexp.
    pub fn token(&self, topic: &str) -> Result<Token> {
        let s = sigma(&self.n, self.bits, &self.kid, &self.tenant, topic)?;
        let mut ctx = bignum::ctx()?;
        let c = bignum::mod_exp(&s, &self.e1, &self.n, &mut ctx)?;
        Ok(Token(i2osp(&c, self.bits.element_len())?.to_vec()))
    }
}

impl ServerShare {
    /// Broker side of `BlindResolve` / `BlindCreateTopic`: validate the
    /// received token `c` (exact length k, value in [2, n−2]), compute
    /// T = c^{e_i2} in constant time, and return the physical name. T is
    /// wiped before returning.
    ///
    /// `self` must be the share of the *authenticated* principal.
    pub fn resolve(&self, c: &[u8]) -> Result<PhysicalName> {
        let t = self.transform_token(c)?;
        physical_name(&self.kid, &t)
    }

    /// T = c^{e_i2} as I2OSP(T, k). Kept crate-private so T cannot escape.
    pub(crate) fn transform_token(&self, c: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        let k = self.bits.element_len();
        let c = decode_element(c, &self.n, k)?;
        let mut ctx = bignum::ctx()?;
        let t = bignum::mod_exp(&c, &self.e2, &self.n, &mut ctx)?;
        i2osp(&t, k)
    }
}

impl MasterKey {
    /// The physical name of `topic` computed directly as σ^e (KMS only), e.g.
    /// to attach ordinary ACLs to a blind topic by plaintext name (§6b).
    pub fn physical_name(&self, topic: &str) -> Result<PhysicalName> {
        let s = sigma(&self.n, self.bits, &self.kid, &self.tenant, topic)?;
        let mut ctx = bignum::ctx()?;
        let t = bignum::mod_exp(&s, &self.e, &self.n, &mut ctx)?;
        physical_name(&self.kid, &i2osp(&t, self.bits.element_len())?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base32_matches_rfc4648_vectors() {
        for (input, want) in [
            (&b""[..], ""),
            (b"f", "my"),
            (b"fo", "mzxq"),
            (b"foo", "mzxw6"),
            (b"foob", "mzxw6yq"),
            (b"fooba", "mzxw6ytb"),
            (b"foobar", "mzxw6ytboi"),
        ] {
            let mut s = String::new();
            base32_lower_nopad(input, &mut s);
            assert_eq!(s, want);
        }
    }

    #[test]
    fn physical_shape() {
        let kid = Kid::new("k").unwrap();
        let name = physical_name(&kid, &[7u8; 256]).unwrap();
        assert!(PhysicalName::is_physical(name.as_str()));
        assert!(!PhysicalName::is_physical("orders.eu"));
    }
}
