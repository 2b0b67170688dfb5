//! Data keys by wrapping a random group element (BLIND.md §6.1), and the
//! per-topic key-tag secret r_T (§6.2 "Record keys / compaction").
//!
//! ```text
//! producer : r uniform in [2, n−2], gcd(r, n) = 1; dek_id 16 random bytes
//!            K = HKDF-SHA256(salt "veil/v1/dek", ikm I2OSP(r, k),
//!                            info enc(kid) ‖ enc(tenant) ‖ enc(topic) ‖ enc(dek_id), 32)
//!            w = r^{e_i1}                       UserKey::create_dek  → BlindKeyPut
//! broker   : W = w^{e_i2} = r^e                 ServerShare::store_wrap
//! broker   : x = W^{d_j2}                       ServerShare::unwrap_for → BlindKeyGet
//! consumer : r = x^{d_j1}; K as above           UserKey::open_dek
//! ```
//!
//! A tampered wrap yields an unrelated r, hence an unrelated K, and the AEAD
//! fails: wraps need no separate authentication.
//!
//! Key tags: r_T is made and transported exactly like a DEK's r (stored under
//! the id [`TOPIC_KEY_ID`]); the tag key is
//! `HKDF-SHA256(salt "veil/v1/keytag", ikm I2OSP(r_T, k), info enc(kid) ‖ enc(tenant) ‖ enc(topic), 32)`
//! and a record's Kafka key is `HMAC-SHA256(tag key, real key)`.

use std::fmt;

use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::bignum::{self, i2osp, SecretBn};
use crate::error::{Error, Result};
use crate::hash::{encs, LABEL_DEK, LABEL_KEYTAG};
use crate::keys::{ServerShare, UserKey};
use crate::params::{self, Entropy, Kid, OsEntropy};
use crate::wire::decode_element;

/// Storage id under which the broker keeps a topic's wrapped r_T.
pub const TOPIC_KEY_ID: &[u8] = b"topic-key";

/// Identifies one DEK within a topic: 16 random bytes, public.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DekId(pub [u8; 16]);

impl DekId {
    /// The bytes.
    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }
}

/// A data-encryption key K with everything it is bound to. Seal with a
/// [`crate::Sealer`] (producer), open with [`DataKey::open`] (consumer).
pub struct DataKey {
    pub(crate) kid: Kid,
    pub(crate) tenant: String,
    pub(crate) topic: String,
    pub(crate) dek_id: DekId,
    pub(crate) key: Zeroizing<[u8; 32]>,
    /// Expanded AEAD keys (ring's and RustCrypto's schedules are not
    /// zeroized on drop; the DEK's raw bytes are).
    pub(crate) ciphers: crate::seal::CipherCache,
}

impl DataKey {
    /// The DEK id (carried in every envelope).
    pub fn dek_id(&self) -> DekId {
        self.dek_id
    }

    /// The key epoch.
    pub fn kid(&self) -> &Kid {
        &self.kid
    }

    /// The plaintext topic name this key is bound to.
    pub fn topic(&self) -> &str {
        &self.topic
    }
}

impl fmt::Debug for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DataKey")
            .field("kid", &self.kid)
            .field("dek_id", &self.dek_id)
            .field("key", &"<redacted>")
            .finish_non_exhaustive()
    }
}

/// The per-topic key-tag key (derived from r_T).
pub struct TopicKey {
    key: Zeroizing<[u8; 32]>,
}

impl TopicKey {
    /// The 32-byte Kafka key for a record whose real key is `record_key`.
    /// Equal keys give equal tags (compaction needs that); nothing else leaks.
    pub fn keytag(&self, record_key: &[u8]) -> Result<[u8; 32]> {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&*self.key)
            .map_err(|e| Error::Crypto(e.to_string()))?;
        mac.update(record_key);
        Ok(mac.finalize().into_bytes().into())
    }
}

impl fmt::Debug for TopicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TopicKey(<redacted>)")
    }
}

fn hkdf32(salt: &[u8], ikm: &[u8], info: &[u8]) -> Result<Zeroizing<[u8; 32]>> {
    let mut out = Zeroizing::new([0u8; 32]);
    Hkdf::<Sha256>::new(Some(salt), ikm)
        .expand(info, &mut *out)
        .map_err(|e| Error::Crypto(e.to_string()))?;
    Ok(out)
}

/// Counters of the deterministic samplers (for the known-answer tests).
#[cfg_attr(not(test), allow(dead_code))]
pub(crate) struct DekDraw {
    pub(crate) key: DataKey,
    pub(crate) wrap: Vec<u8>,
    pub(crate) r: Zeroizing<Vec<u8>>,
    pub(crate) r_ctr: u32,
}

impl UserKey {
    fn derive_dek(&self, topic: &str, dek_id: DekId, r_bytes: &[u8]) -> Result<DataKey> {
        let info = encs(&[
            self.kid.as_bytes(),
            self.tenant.as_bytes(),
            topic.as_bytes(),
            &dek_id.0,
        ])?;
        Ok(DataKey {
            kid: self.kid.clone(),
            tenant: self.tenant.clone(),
            topic: topic.to_owned(),
            dek_id,
            key: hkdf32(LABEL_DEK, r_bytes, &info)?,
            ciphers: crate::seal::CipherCache::default(),
        })
    }

    fn derive_topic_key(&self, topic: &str, r_bytes: &[u8]) -> Result<TopicKey> {
        let info = encs(&[
            self.kid.as_bytes(),
            self.tenant.as_bytes(),
            topic.as_bytes(),
        ])?;
        Ok(TopicKey {
            key: hkdf32(LABEL_KEYTAG, r_bytes, &info)?,
        })
    }

    /// Sample r and return (r, I2OSP(r), w = r^{e_i1}, attempt counter).
    fn fresh_wrapped(&self, src: &mut dyn Entropy) -> Result<(Zeroizing<Vec<u8>>, Vec<u8>, u32)> {
        let k = self.bits.element_len();
        let (r, ctr) = params::sample_element(src, "dek/r", &self.n, self.bits)?;
        let mut ctx = bignum::ctx()?;
        let w = bignum::mod_exp(&r, &self.e1, &self.n, &mut ctx)?;
        Ok((i2osp(&r, k)?, i2osp(&w, k)?.to_vec(), ctr))
    }

    pub(crate) fn create_dek_with(&self, src: &mut dyn Entropy, topic: &str) -> Result<DekDraw> {
        let (r, wrap, r_ctr) = self.fresh_wrapped(src)?;
        let mut id = [0u8; 16];
        src.fill("dek/id", 0, &mut id)?;
        let key = self.derive_dek(topic, DekId(id), &r)?;
        Ok(DekDraw {
            key,
            wrap,
            r,
            r_ctr,
        })
    }

    /// Producer: a fresh DEK for `topic` and its wrap w = r^{e_i1} (k bytes)
    /// to send with `key.dek_id()` in `BlindKeyPut`. One DEK per producer
    /// session per topic; never persist it.
    pub fn create_dek(&self, topic: &str) -> Result<(DataKey, Vec<u8>)> {
        let draw = self.create_dek_with(&mut OsEntropy, topic)?;
        Ok((draw.key, draw.wrap))
    }

    /// Consumer: the DEK from the broker's `BlindKeyGet` answer
    /// x = W^{d_j2}: r = x^{d_j1}, then K. A wrong or tampered x is not
    /// detected here; it gives a key under which every envelope fails.
    pub fn open_dek(&self, topic: &str, dek_id: DekId, x: &[u8]) -> Result<DataKey> {
        let r = self.unwrap_element(x)?;
        self.derive_dek(topic, dek_id, &r)
    }

    /// Topic creator: a fresh r_T for `topic`, returning the tag key and the
    /// wrap to store under [`TOPIC_KEY_ID`] with `BlindKeyPut`.
    pub fn create_topic_key(&self, topic: &str) -> Result<(TopicKey, Vec<u8>)> {
        let (r, wrap, _) = self.fresh_wrapped(&mut OsEntropy)?;
        Ok((self.derive_topic_key(topic, &r)?, wrap))
    }

    /// Any client: the tag key from the broker's answer x = W_T^{d_j2}.
    pub fn open_topic_key(&self, topic: &str, x: &[u8]) -> Result<TopicKey> {
        let r = self.unwrap_element(x)?;
        self.derive_topic_key(topic, &r)
    }

    fn unwrap_element(&self, x: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        let k = self.bits.element_len();
        let x = decode_element(x, &self.n, k)?;
        let mut ctx = bignum::ctx()?;
        let r: SecretBn = bignum::mod_exp(&x, &self.d1, &self.n, &mut ctx)?;
        i2osp(&r, k)
    }
}

/// Raw key material, so integration tests can search the broker's disk,
/// logs and traffic for it. Only in tests and with the `testing` feature;
/// no product path exposes it.
#[cfg(any(test, feature = "testing"))]
impl DataKey {
    /// K.
    pub fn key_bytes_for_tests(&self) -> [u8; 32] {
        *self.key
    }
}

#[cfg(any(test, feature = "testing"))]
impl TopicKey {
    /// The key-tag (HMAC) key derived from r_T.
    pub fn key_bytes_for_tests(&self) -> [u8; 32] {
        *self.key
    }
}

#[cfg(any(test, feature = "testing"))]
impl UserKey {
    /// I2OSP(r, k) from a `BlindKeyGet` answer x (a DEK's r, or r_T).
    pub fn unwrap_element_for_tests(&self, x: &[u8]) -> Result<Vec<u8>> {
        Ok(self.unwrap_element(x)?.to_vec())
    }

    /// The DEK derived from I2OSP(r, k) directly (to check an unwrapped r).
    pub fn dek_from_element_for_tests(
        &self,
        topic: &str,
        dek_id: DekId,
        r: &[u8],
    ) -> Result<DataKey> {
        self.derive_dek(topic, dek_id, r)
    }

    /// The tag key derived from I2OSP(r_T, k) directly.
    pub fn topic_key_from_element_for_tests(&self, topic: &str, r: &[u8]) -> Result<TopicKey> {
        self.derive_topic_key(topic, r)
    }
}

impl ServerShare {
    /// Broker side of `BlindKeyPut`: validate w, return W = w^{e_i2} = r^e to
    /// store as topic metadata under the DEK id.
    pub fn store_wrap(&self, w: &[u8]) -> Result<Vec<u8>> {
        self.apply(w, &self.e2)
    }

    /// Broker side of `BlindKeyGet`: validate the stored W, return W^{d_j2}
    /// for the authenticated consumer j.
    pub fn unwrap_for(&self, stored: &[u8]) -> Result<Vec<u8>> {
        self.apply(stored, &self.d2)
    }

    fn apply(&self, x: &[u8], exp: &SecretBn) -> Result<Vec<u8>> {
        let k = self.bits.element_len();
        let x = decode_element(x, &self.n, k)?;
        let mut ctx = bignum::ctx()?;
        let y = bignum::mod_exp(&x, exp, &self.n, &mut ctx)?;
        Ok(i2osp(&y, k)?.to_vec())
    }
}
