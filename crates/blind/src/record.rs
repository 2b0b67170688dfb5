//! A whole Kafka record, sealed (BLIND.md §6.2): the Kafka value is a short
//! sequence of §6.2 envelopes, one per part, and nothing else travels in
//! clear except the key tag (the Kafka key) and the timestamp.
//!
//! ```text
//! kafka value = u32_be(len) ‖ envelope(part "value",   counter c)
//!             [ ‖ u32_be(len) ‖ envelope(part "key",     counter c+1) ]
//!             [ ‖ u32_be(len) ‖ envelope(part "headers", next counter) ]
//! value part plaintext   = flags (1) ‖ value        flags: 1 key, 2 headers, 4 null value
//! headers part plaintext = u32_be(count) ‖ count × ( u32_be(name_len) ‖ name (UTF-8)
//!                                                   ‖ i32_be(value_len, -1 = null) ‖ value )
//! ```
//!
//! The flags are inside the authenticated value part, so stripping or adding
//! a key or headers envelope fails; the parts of one record take consecutive
//! counters (each part is its own AEAD call, [`Sealer`]'s rule), and the
//! consumer checks that too. No Kafka headers are sent.

use crate::error::{Error, Result};
use crate::seal::{Envelope, Part, Sealer};
use crate::wrap::{DataKey, DekId};

const FLAG_KEY: u8 = 1;
const FLAG_HEADERS: u8 = 2;
const FLAG_NULL_VALUE: u8 = 4;

/// One record header: a UTF-8 name and an optional value (Kafka's shape).
pub type Header = (String, Option<Vec<u8>>);

/// Serialize headers for the "headers" part.
pub fn encode_headers(headers: &[Header]) -> Result<Vec<u8>> {
    let len32 = |n: usize| u32::try_from(n).map_err(|_| Error::Format("header too long".into()));
    let mut out = Vec::new();
    out.extend_from_slice(&len32(headers.len())?.to_be_bytes());
    for (name, value) in headers {
        out.extend_from_slice(&len32(name.len())?.to_be_bytes());
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

/// Split a sealed Kafka value into its envelopes (1 to 3), strictly.
fn split_parts(mut value: &[u8]) -> Result<Vec<&[u8]>> {
    let mut parts = Vec::with_capacity(3);
    while !value.is_empty() {
        if parts.len() == 3 {
            return Err(Error::Format("more than three sealed parts".into()));
        }
        let n = take_u32(&mut value, "part length")? as usize;
        parts.push(take(&mut value, n, "part")?);
    }
    if parts.is_empty() {
        return Err(Error::Format("no sealed parts".into()));
    }
    Ok(parts)
}

/// Which DEK sealed a record (so the consumer can fetch it), without
/// authenticating anything yet.
pub fn record_dek(value: &[u8]) -> Result<(&[u8], DekId)> {
    let parts = split_parts(value)?;
    let env = Envelope::parse(parts[0])?;
    Ok((env.kid, env.dek_id))
}

fn push_part(out: &mut Vec<u8>, env: &[u8]) -> Result<()> {
    let n = u32::try_from(env.len()).map_err(|_| Error::Format("part too long".into()))?;
    out.extend_from_slice(&n.to_be_bytes());
    out.extend_from_slice(env);
    Ok(())
}

impl Sealer {
    /// Seal a whole record for `partition`: value, real key and headers
    /// each in their own envelope, consecutive counters. Returns the Kafka
    /// value.
    pub fn seal_record(
        &mut self,
        partition: u32,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[Header],
    ) -> Result<Vec<u8>> {
        let mut flags = 0u8;
        if key.is_some() {
            flags |= FLAG_KEY;
        }
        if !headers.is_empty() {
            flags |= FLAG_HEADERS;
        }
        if value.is_none() {
            flags |= FLAG_NULL_VALUE;
        }
        let v = value.unwrap_or_default();
        let mut pt = Vec::with_capacity(1 + v.len());
        pt.push(flags);
        pt.extend_from_slice(v);
        let mut out = Vec::with_capacity(pt.len() + 64);
        push_part(&mut out, &self.seal(partition, Part::Value, &pt)?)?;
        if let Some(k) = key {
            push_part(&mut out, &self.seal(partition, Part::Key, k)?)?;
        }
        if !headers.is_empty() {
            let h = encode_headers(headers)?;
            push_part(&mut out, &self.seal(partition, Part::Headers, &h)?)?;
        }
        Ok(out)
    }
}

/// A verified record. `Debug` shows shapes, never the bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct OpenedRecord {
    /// Counter of the value part (the record's first counter).
    pub first_counter: u64,
    /// Counter of the record's last part; the producer's next record
    /// starts at `last_counter + 1`.
    pub last_counter: u64,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<Header>,
}

impl std::fmt::Debug for OpenedRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenedRecord")
            .field("first_counter", &self.first_counter)
            .field("last_counter", &self.last_counter)
            .field("key_len", &self.key.as_ref().map(Vec::len))
            .field("value_len", &self.value.as_ref().map(Vec::len))
            .field("headers", &self.headers.len())
            .finish()
    }
}

impl DataKey {
    /// Open a sealed Kafka value fetched from `partition`. Any mismatch
    /// (tampered bytes, other partition/topic/DEK, stripped or added part,
    /// non-consecutive counters) fails.
    pub fn open_record(&self, partition: u32, value: &[u8]) -> Result<OpenedRecord> {
        let parts = split_parts(value)?;
        let v = self.open(partition, Part::Value, parts[0])?;
        let (&flags, body) = v.plaintext.split_first().ok_or(Error::Decrypt)?;
        if flags & !(FLAG_KEY | FLAG_HEADERS | FLAG_NULL_VALUE) != 0 {
            return Err(Error::Format("unknown record flags".into()));
        }
        let want = 1 + usize::from(flags & FLAG_KEY != 0) + usize::from(flags & FLAG_HEADERS != 0);
        if parts.len() != want {
            return Err(Error::Format(
                "sealed parts do not match the record flags".into(),
            ));
        }
        let mut counter = v.counter;
        let mut next = |part: Part, env: &[u8]| -> Result<Vec<u8>> {
            let o = self.open(partition, part, env)?;
            if Some(o.counter) != counter.checked_add(1) {
                return Err(Error::Format("record parts are not consecutive".into()));
            }
            counter = o.counter;
            Ok(o.plaintext)
        };
        let mut rest = parts[1..].iter();
        let key = if flags & FLAG_KEY != 0 {
            Some(next(Part::Key, rest.next().ok_or(Error::Decrypt)?)?)
        } else {
            None
        };
        let headers = if flags & FLAG_HEADERS != 0 {
            decode_headers(&next(Part::Headers, rest.next().ok_or(Error::Decrypt)?)?)?
        } else {
            Vec::new()
        };
        let value = (flags & FLAG_NULL_VALUE == 0).then(|| body.to_vec());
        if value.is_none() && !body.is_empty() {
            return Err(Error::Format("null value with a body".into()));
        }
        Ok(OpenedRecord {
            first_counter: v.counter,
            last_counter: counter,
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
    fn stripped_part_and_other_dek_fail() {
        let mut s = Sealer::new(key(1), AeadId::Aes256Gcm, DekLimits::default());
        let rec = s
            .seal_record(0, Some(b"k"), Some(b"v"), &[("h".into(), None)])
            .unwrap();
        let parts = split_parts(&rec).unwrap();
        let mut stripped = Vec::new();
        push_part(&mut stripped, parts[0]).unwrap();
        push_part(&mut stripped, parts[2]).unwrap();
        assert!(key(1).open_record(0, &stripped).is_err());
        assert!(key(2).open_record(0, &rec).is_err());
        assert!(key(1).open_record(1, &rec).is_err());
        assert_eq!(record_dek(&rec).unwrap().1, DekId([1; 16]));
        // Two records: swapping their key parts breaks the counter chain.
        let rec2 = s.seal_record(0, Some(b"k"), Some(b"v"), &[]).unwrap();
        let p2 = split_parts(&rec2).unwrap();
        let mut mixed = Vec::new();
        push_part(&mut mixed, parts[0]).unwrap();
        push_part(&mut mixed, p2[1]).unwrap();
        push_part(&mut mixed, parts[2]).unwrap();
        assert!(key(1).open_record(0, &mixed).is_err());
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
            prop_assert_eq!(o.first_counter, 2);
            prop_assert_eq!(o.last_counter, s.next_counter() - 1);
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
