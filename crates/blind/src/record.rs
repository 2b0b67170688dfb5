//! A whole Kafka record, sealed (BLIND.md §6.2): the Kafka value is exactly
//! one envelope, and nothing else travels in clear except the key tag (the
//! Kafka key) and the timestamp.
//!
//! ```text
//! kafka value = envelope(part "value", counter c)      one AEAD call per record
//! plaintext   = value                                  flags & 4: null value (then empty)
//!             [ ‖ key ‖ u32_be(key_len) ]              flags & 1: the real record key
//!             [ ‖ headers ‖ u32_be(headers_len) ]      flags & 2: the user headers
//!             ‖ flags (1)
//! headers     = u32_be(count) ‖ count × ( u32_be(name_len) ‖ name (UTF-8)
//!                                         ‖ i32_be(value_len, -1 = null) ‖ value )
//! ```
//!
//! The key and the headers are the §6.2 parts "key" and "headers"; they are
//! sealed as sections of the value part's plaintext rather than as envelopes
//! of their own, so a record costs one nonce, one tag and about 50 bytes, and
//! its counter advances by exactly one per record (what the consumer's gap
//! check relies on). The sections are read from the end, so the value is
//! the front of the decrypted buffer and is handed over without a copy.
//! Everything, flags included, is authenticated; no Kafka headers are sent.

use crate::error::{Error, Result};
use crate::seal::{Envelope, Part, Sealer};
use crate::wrap::{DataKey, DekId};

const FLAG_KEY: u8 = 1;
const FLAG_HEADERS: u8 = 2;
const FLAG_NULL_VALUE: u8 = 4;

/// One record header: a UTF-8 name and an optional value (Kafka's shape).
pub type Header = (String, Option<Vec<u8>>);

fn len32(n: usize, what: &str) -> Result<[u8; 4]> {
    u32::try_from(n)
        .map(u32::to_be_bytes)
        .map_err(|_| Error::Format(format!("{what} too long")))
}

/// Serialize headers for the "headers" section.
pub fn encode_headers(headers: &[Header]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    out.extend_from_slice(&len32(headers.len(), "header list")?);
    for (name, value) in headers {
        out.extend_from_slice(&len32(name.len(), "header name")?);
        out.extend_from_slice(name.as_bytes());
        match value {
            None => out.extend_from_slice(&(-1i32).to_be_bytes()),
            Some(v) => {
                let n = i32::try_from(v.len())
                    .map_err(|_| Error::Format("header value too long".into()))?;
                out.extend_from_slice(&n.to_be_bytes());
                out.extend_from_slice(v);
            }
        }
    }
    Ok(out)
}

fn take<'a>(buf: &mut &'a [u8], n: usize, what: &str) -> Result<&'a [u8]> {
    if buf.len() < n {
        return Err(Error::Format(format!("truncated {what}")));
    }
    let (head, rest) = buf.split_at(n);
    *buf = rest;
    Ok(head)
}

fn take_u32(buf: &mut &[u8], what: &str) -> Result<u32> {
    let b = take(buf, 4, what)?;
    Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

/// [`take`] from the end of `buf`.
fn take_back<'a>(buf: &mut &'a [u8], n: usize, what: &str) -> Result<&'a [u8]> {
    let at = buf
        .len()
        .checked_sub(n)
        .ok_or_else(|| Error::Format(format!("truncated {what}")))?;
    let (rest, tail) = buf.split_at(at);
    *buf = rest;
    Ok(tail)
}

fn take_back_u32(buf: &mut &[u8], what: &str) -> Result<u32> {
    let b = take_back(buf, 4, what)?;
    Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

/// Strict inverse of [`encode_headers`]: no trailing bytes, valid UTF-8
/// names, lengths checked before any allocation.
pub fn decode_headers(mut buf: &[u8]) -> Result<Vec<Header>> {
    let count = take_u32(&mut buf, "header count")? as usize;
    // Each header takes at least 8 bytes: bounds the allocation.
    if count > buf.len() / 8 {
        return Err(Error::Format("header count exceeds the input".into()));
    }
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        let n = take_u32(&mut buf, "header name length")? as usize;
        let name = std::str::from_utf8(take(&mut buf, n, "header name")?)
            .map_err(|_| Error::Format("header name is not UTF-8".into()))?
            .to_owned();
        let len = i32::from_be_bytes(take_u32(&mut buf, "header value length")?.to_be_bytes());
        let value = match len {
            -1 => None,
            n if n >= 0 => {
                Some(take(&mut buf, n.unsigned_abs() as usize, "header value")?.to_vec())
            }
            _ => return Err(Error::Format("negative header value length".into())),
        };
        out.push((name, value));
    }
    if !buf.is_empty() {
        return Err(Error::Format("trailing bytes after headers".into()));
    }
    Ok(out)
}

/// Which DEK sealed a record (so the consumer can fetch it), without
/// authenticating anything yet.
pub fn record_dek(value: &[u8]) -> Result<(&[u8], DekId)> {
    let env = Envelope::parse(value)?;
    Ok((env.kid, env.dek_id))
}

impl Sealer {
    /// Seal a whole record for `partition`: value, real key and headers in
    /// one envelope under one counter. Returns the Kafka value.
    pub fn seal_record(
        &mut self,
        partition: u32,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[Header],
    ) -> Result<Vec<u8>> {
        let flag = |on: bool, bit: u8| if on { bit } else { 0 };
        let flags = [flag(key.is_some(), FLAG_KEY)
            | flag(!headers.is_empty(), FLAG_HEADERS)
            | flag(value.is_none(), FLAG_NULL_VALUE)];
        let key_len = len32(key.map_or(0, <[u8]>::len), "record key")?;
        let encoded = if headers.is_empty() {
            Vec::new()
        } else {
            encode_headers(headers)?
        };
        let headers_len = len32(encoded.len(), "headers")?;
        let mut pieces: Vec<&[u8]> = Vec::with_capacity(6);
        pieces.push(value.unwrap_or_default());
        if let Some(k) = key {
            pieces.extend([k, &key_len[..]]);
        }
        if !encoded.is_empty() {
            pieces.extend([&encoded[..], &headers_len[..]]);
        }
        pieces.push(&flags);
        self.seal_pieces(partition, Part::Value, &pieces)
    }
}

/// A verified record. `Debug` shows shapes, never the bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct OpenedRecord {
    /// The record's counter in its producer session (one per record).
    pub counter: u64,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<Header>,
}

impl std::fmt::Debug for OpenedRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenedRecord")
            .field("counter", &self.counter)
            .field("key_len", &self.key.as_ref().map(Vec::len))
            .field("value_len", &self.value.as_ref().map(Vec::len))
            .field("headers", &self.headers.len())
            .finish()
    }
}

impl DataKey {
    /// Open a sealed Kafka value fetched from `partition`. Any mismatch
    /// (tampered bytes, other partition/topic/DEK, malformed sections) fails.
    pub fn open_record(&self, partition: u32, value: &[u8]) -> Result<OpenedRecord> {
        let opened = self.open(partition, Part::Value, value)?;
        let mut plaintext = opened.plaintext;
        let mut rest: &[u8] = &plaintext;
        let flags = take_back(&mut rest, 1, "record flags")?[0];
        if flags & !(FLAG_KEY | FLAG_HEADERS | FLAG_NULL_VALUE) != 0 {
            return Err(Error::Format("unknown record flags".into()));
        }
        let headers = if flags & FLAG_HEADERS != 0 {
            let n = take_back_u32(&mut rest, "headers length")? as usize;
            decode_headers(take_back(&mut rest, n, "headers")?)?
        } else {
            Vec::new()
        };
        let key = if flags & FLAG_KEY != 0 {
            let n = take_back_u32(&mut rest, "key length")? as usize;
            Some(take_back(&mut rest, n, "key")?.to_vec())
        } else {
            None
        };
        let value_len = rest.len();
        let value = if flags & FLAG_NULL_VALUE == 0 {
            plaintext.truncate(value_len);
            Some(plaintext)
        } else if value_len == 0 {
            None
        } else {
            return Err(Error::Format("null value with a body".into()));
        };
        Ok(OpenedRecord {
            counter: opened.counter,
            key,
            value,
            headers,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::Kid;
    use crate::seal::{AeadId, DekLimits};
    use proptest::prelude::*;
    use zeroize::Zeroizing;

    fn key(id: u8) -> DataKey {
        DataKey {
            kid: Kid::new("kid-1").unwrap(),
            tenant: "t".into(),
            topic: "orders".into(),
            dek_id: DekId([id; 16]),
            key: Zeroizing::new([id; 32]),
            ciphers: crate::seal::CipherCache::default(),
        }
    }

    fn header_strategy() -> impl Strategy<Value = Vec<Header>> {
        proptest::collection::vec(
            (
                "[a-z\u{e9}]{0,8}",
                proptest::option::of(proptest::collection::vec(any::<u8>(), 0..16)),
            ),
            0..4,
        )
    }

    #[test]
    fn decode_headers_is_strict() {
        assert!(decode_headers(&[]).is_err());
        assert_eq!(decode_headers(&[0, 0, 0, 0]).unwrap(), vec![]);
        assert!(decode_headers(&[0, 0, 0, 0, 1]).is_err());
        assert!(decode_headers(&[255, 255, 255, 255]).is_err());
        let mut bad = encode_headers(&[("a".into(), Some(vec![1]))]).unwrap();
        bad[9..13].copy_from_slice(&(-2i32).to_be_bytes());
        assert!(decode_headers(&bad).is_err());
        let bad = encode_headers(&[("\u{e9}".into(), None)]).unwrap();
        let mut cut = bad.clone();
        cut[8] = 0xff;
        assert!(decode_headers(&cut).is_err());
    }

    #[test]
    fn one_envelope_per_record_and_other_dek_fails() {
        let mut s = Sealer::new(key(1), AeadId::Aes256Gcm, DekLimits::default());
        let rec = s
            .seal_record(0, Some(b"k"), Some(b"v"), &[("h".into(), None)])
            .unwrap();
        let env = Envelope::parse(&rec).unwrap();
        assert_eq!(env.counter, 0);
        assert_eq!(s.next_counter(), 1, "one counter per record");
        // flags, key section, headers section, value, tag: ~50 bytes of overhead.
        let overhead = rec.len() - 1 - (4 + 1) - (4 + 4 + 4 + 1 + 4) - 1;
        assert_eq!(overhead, Envelope::header_len(5) + crate::seal::TAG_LEN);
        assert!(key(2).open_record(0, &rec).is_err());
        assert!(key(1).open_record(1, &rec).is_err());
        assert_eq!(record_dek(&rec).unwrap().1, DekId([1; 16]));
        // A key or header section sealed on its own is not a record.
        let lone = s.seal(0, Part::Key, b"k").unwrap();
        assert!(key(1).open_record(0, &lone).is_err());
        // A well-sealed plaintext with unknown flags or a short section.
        for bad in [&[8u8][..], &[b'k', 0, 0, 0, 9, 1], &[b'x', 4], &[]] {
            let env = s.seal(0, Part::Value, bad).unwrap();
            assert!(
                matches!(key(1).open_record(0, &env), Err(Error::Format(_))),
                "{bad:?}"
            );
        }
        let empty = s.seal_record(0, None, None, &[]).unwrap();
        let o = key(1).open_record(0, &empty).unwrap();
        assert_eq!((o.key, o.value, o.headers.len()), (None, None, 0));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn headers_round_trip(h in header_strategy()) {
            prop_assert_eq!(decode_headers(&encode_headers(&h).unwrap()).unwrap(), h);
        }

        #[test]
        fn record_round_trip_and_bit_flips(
            k in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..32)),
            v in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..200)),
            h in header_strategy(),
            partition in any::<u32>(),
            xchacha in any::<bool>(),
            bit in any::<proptest::sample::Index>(),
        ) {
            let aead = if xchacha { AeadId::XChaCha20Poly1305 } else { AeadId::Aes256Gcm };
            let mut s = Sealer::new(key(3), aead, DekLimits::default());
            let first = s.seal_record(partition, Some(b"x"), None, &[]).unwrap();
            let rec = s.seal_record(partition, k.as_deref(), v.as_deref(), &h).unwrap();
            let o = key(3).open_record(partition, &rec).unwrap();
            prop_assert_eq!(o.counter, 1);
            prop_assert_eq!(s.next_counter(), 2);
            prop_assert_eq!(&o.key, &k);
            prop_assert_eq!(&o.value, &v);
            prop_assert_eq!(&o.headers, &h);
            prop_assert!(key(3).open_record(partition, &first).is_ok());
            let mut bad = rec.clone();
            let i = bit.index(bad.len() * 8);
            bad[i / 8] ^= 1 << (i % 8);
            prop_assert!(key(3).open_record(partition, &bad).is_err());
        }
    }
}
