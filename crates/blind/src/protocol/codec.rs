//! Kafka's primitive types as used by flexible (compact) versions: fixed-width
//! big-endian integers, unsigned varints, compact strings/bytes/arrays
//! (length + 1), and tagged-field sections.
//!
//! Every length read is checked against a per-field cap *and* the bytes left
//! before anything is allocated, so a hostile length costs nothing.

use crate::error::{Error, Result};

fn malformed(what: &str) -> Error {
    Error::Format(format!("malformed {what}"))
}

/// A forward-only reader over a request or response body.
pub(crate) struct Decoder<'a, 'b> {
    buf: &'b mut &'a [u8],
}

impl<'a, 'b> Decoder<'a, 'b> {
    pub(crate) fn new(buf: &'b mut &'a [u8]) -> Self {
        Decoder { buf }
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len()
    }

    fn take(&mut self, len: usize, what: &str) -> Result<&'a [u8]> {
        if len > self.buf.len() {
            return Err(Error::Format(format!("truncated {what}")));
        }
        let (head, tail) = self.buf.split_at(len);
        *self.buf = tail;
        Ok(head)
    }

    fn fixed<const N: usize>(&mut self, what: &str) -> Result<[u8; N]> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, what)?);
        Ok(out)
    }

    pub(crate) fn i16(&mut self, what: &str) -> Result<i16> {
        Ok(i16::from_be_bytes(self.fixed(what)?))
    }

    pub(crate) fn i32(&mut self, what: &str) -> Result<i32> {
        Ok(i32::from_be_bytes(self.fixed(what)?))
    }

    pub(crate) fn i64(&mut self, what: &str) -> Result<i64> {
        Ok(i64::from_be_bytes(self.fixed(what)?))
    }

    pub(crate) fn uuid(&mut self, what: &str) -> Result<[u8; 16]> {
        self.fixed(what)
    }

    /// Kafka booleans are one byte, 0 or 1; anything else is refused.
    pub(crate) fn bool(&mut self, what: &str) -> Result<bool> {
        match self.fixed::<1>(what)?[0] {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(malformed(what)),
        }
    }

    /// Unsigned LEB128, at most 5 bytes (a u32).
    pub(crate) fn uvarint(&mut self, what: &str) -> Result<u32> {
        let mut value: u32 = 0;
        for i in 0..5 {
            let b = self.fixed::<1>(what)?[0];
            if i == 4 && b > 0x0f {
                return Err(malformed(what));
            }
            value |= u32::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(malformed(what))
    }

    /// Compact length: varint N+1, 0 meaning null. Checked against `max`
    /// and the remaining bytes.
    fn compact_len(&mut self, max: usize, what: &str) -> Result<Option<usize>> {
        let raw = self.uvarint(what)? as usize;
        let Some(len) = raw.checked_sub(1) else {
            return Ok(None);
        };
        if len > max || len > self.remaining() {
            return Err(Error::Format(format!("{what} length {len} too long")));
        }
        Ok(Some(len))
    }

    pub(crate) fn bytes(&mut self, max: usize, what: &str) -> Result<&'a [u8]> {
        let len = self
            .compact_len(max, what)?
            .ok_or_else(|| malformed(what))?;
        self.take(len, what)
    }

    pub(crate) fn string(&mut self, max: usize, what: &str) -> Result<String> {
        let raw = self.bytes(max, what)?;
        String::from_utf8(raw.to_vec()).map_err(|_| malformed(what))
    }

    pub(crate) fn nullable_string(&mut self, max: usize, what: &str) -> Result<Option<String>> {
        match self.compact_len(max, what)? {
            None => Ok(None),
            Some(len) => {
                let raw = self.take(len, what)?;
                String::from_utf8(raw.to_vec())
                    .map(Some)
                    .map_err(|_| malformed(what))
            }
        }
    }

    /// Compact array count. Every element takes at least `min_elem` bytes,
    /// so the count is bounded by what is left before anything is reserved.
    pub(crate) fn array_len(&mut self, max: usize, min_elem: usize, what: &str) -> Result<usize> {
        let raw = self.uvarint(what)? as usize;
        let len = raw.checked_sub(1).ok_or_else(|| malformed(what))?;
        if len > max || len.saturating_mul(min_elem.max(1)) > self.remaining() {
            return Err(Error::Format(format!("{what} count {len} too large")));
        }
        Ok(len)
    }

    /// A tagged-field section whose tags are all unknown here: every field
    /// is skipped (after bounds checks), as Kafka requires.
    pub(crate) fn tagged_fields(&mut self) -> Result<()> {
        self.tagged(|_, _| Ok(()))
    }

    /// A tagged-field section that may carry one nullable string under
    /// `tag` (capped at `max`); other tags are skipped.
    pub(crate) fn tagged_string(
        &mut self,
        tag: u32,
        max: usize,
        what: &str,
    ) -> Result<Option<String>> {
        let mut found = None;
        self.tagged(|t, mut field| {
            if t == tag {
                found = Decoder::new(&mut field).nullable_string(max, what)?;
                if !field.is_empty() {
                    return Err(malformed(what));
                }
            }
            Ok(())
        })?;
        Ok(found)
    }

    fn tagged(&mut self, mut field: impl FnMut(u32, &'a [u8]) -> Result<()>) -> Result<()> {
        let count = self.uvarint("tagged fields")? as usize;
        if count > self.remaining() {
            return Err(malformed("tagged fields"));
        }
        for _ in 0..count {
            let tag = self.uvarint("tag")?;
            let size = self.uvarint("tag size")? as usize;
            field(tag, self.take(size, "tagged field")?)?;
        }
        Ok(())
    }
}

/// Appends Kafka primitives to a buffer.
pub(crate) struct Encoder<'b> {
    buf: &'b mut Vec<u8>,
}

impl<'b> Encoder<'b> {
    pub(crate) fn new(buf: &'b mut Vec<u8>) -> Self {
        Encoder { buf }
    }

    pub(crate) fn i16(&mut self, v: i16) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }

    pub(crate) fn i32(&mut self, v: i32) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }

    pub(crate) fn i64(&mut self, v: i64) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }

    pub(crate) fn uuid(&mut self, v: &[u8; 16]) {
        self.buf.extend_from_slice(v);
    }

    pub(crate) fn uvarint(&mut self, mut v: u32) {
        while v >= 0x80 {
            self.buf.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.buf.push(v as u8);
    }

    /// The encoder refuses what the decoder would refuse, so a peer never
    /// receives a message it must reject.
    fn len_plus_one(&mut self, len: usize, max: usize, what: &str) -> Result<()> {
        if len > max {
            return Err(Error::Format(format!("{what} length {len} too long")));
        }
        let v = u32::try_from(len + 1).map_err(|_| malformed(what))?;
        self.uvarint(v);
        Ok(())
    }

    pub(crate) fn bytes(&mut self, v: &[u8], max: usize, what: &str) -> Result<()> {
        self.len_plus_one(v.len(), max, what)?;
        self.buf.extend_from_slice(v);
        Ok(())
    }

    pub(crate) fn string(&mut self, v: &str, max: usize, what: &str) -> Result<()> {
        self.bytes(v.as_bytes(), max, what)
    }

    pub(crate) fn nullable_string(
        &mut self,
        v: Option<&str>,
        max: usize,
        what: &str,
    ) -> Result<()> {
        match v {
            None => {
                self.uvarint(0);
                Ok(())
            }
            Some(s) => self.string(s, max, what),
        }
    }

    pub(crate) fn array_len(&mut self, len: usize, max: usize, what: &str) -> Result<()> {
        self.len_plus_one(len, max, what)
    }

    /// An empty tagged-field section.
    pub(crate) fn tagged_fields(&mut self) {
        self.uvarint(0);
    }

    /// A tagged-field section carrying `value` under `tag` if present.
    pub(crate) fn tagged_string(
        &mut self,
        tag: u32,
        value: Option<&str>,
        max: usize,
        what: &str,
    ) -> Result<()> {
        let Some(v) = value else {
            self.uvarint(0);
            return Ok(());
        };
        let mut field = Vec::new();
        Encoder::new(&mut field).string(v, max, what)?;
        self.uvarint(1);
        self.uvarint(tag);
        self.uvarint(u32::try_from(field.len()).map_err(|_| malformed(what))?);
        self.buf.extend_from_slice(&field);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varint_round_trip_and_limits() {
        for v in [0u32, 1, 127, 128, 300, 16_383, 16_384, u32::MAX] {
            let mut buf = Vec::new();
            Encoder::new(&mut buf).uvarint(v);
            let mut s = &buf[..];
            assert_eq!(Decoder::new(&mut s).uvarint("v").unwrap(), v);
            assert!(s.is_empty());
        }
        // Six-byte and overflowing varints are refused.
        let mut s = &[0xff, 0xff, 0xff, 0xff, 0xff, 0x01][..];
        assert!(Decoder::new(&mut s).uvarint("v").is_err());
        let mut s = &[0xff, 0xff, 0xff, 0xff, 0x10][..];
        assert!(Decoder::new(&mut s).uvarint("v").is_err());
    }

    #[test]
    fn lengths_are_capped_before_allocation() {
        // Claims a 2^28-byte string with 1 byte behind it.
        let mut s = &[0x80, 0x80, 0x80, 0x80, 0x01, b'a'][..];
        assert!(Decoder::new(&mut s).string(usize::MAX, "s").is_err());
        // Over the per-field cap even though the bytes are there.
        let mut s = &[4, b'a', b'b', b'c'][..];
        assert!(Decoder::new(&mut s).string(2, "s").is_err());
        // A huge array count with nothing behind it.
        let mut s = &[0xff, 0xff, 0xff, 0xff, 0x0f][..];
        assert!(Decoder::new(&mut s).array_len(usize::MAX, 1, "a").is_err());
        // Null where a non-null string is required.
        let mut s = &[0][..];
        assert!(Decoder::new(&mut s).string(10, "s").is_err());
    }

    #[test]
    fn unknown_tags_are_skipped() {
        let mut s = &[2, 0, 1, 9, 7, 2, 1, 2, 0xaa][..];
        Decoder::new(&mut s).tagged_fields().unwrap();
        assert_eq!(s, &[0xaa]);
        let mut s = &[1, 0, 5, 1][..];
        assert!(Decoder::new(&mut s).tagged_fields().is_err());
    }
}
