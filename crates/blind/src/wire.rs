//! Byte encodings: group elements as carried by the Veil extension requests
//! (`BlindResolve`, `BlindCreateTopic`, `BlindKeyPut`, `BlindKeyGet`), and a
//! strict cursor for the crate's own formats.
//!
//! A group element on the wire is I2OSP(x, k): exactly k = |n|/8 big-endian
//! bytes (256 for 2048-bit n, 384 for 3072). Receivers reject any other
//! length and any value outside [2, n−2] (§5.1, §9 rule 3); 0, 1 and n−1
//! are the values that would let a peer probe or cancel an exponent.

use openssl::bn::{BigNum, BigNumRef};

use crate::error::{Error, Result};

/// Validate a received group element against modulus `n` (k = `len`) and
/// return it as an integer.
pub(crate) fn decode_element(bytes: &[u8], n: &BigNumRef, len: usize) -> Result<BigNum> {
    if bytes.len() != len {
        return Err(Error::InvalidElement);
    }
    let x = BigNum::from_slice(bytes)?;
    let upper = n_minus(n, 2)?;
    if x.num_bits() < 2 || x > upper {
        return Err(Error::InvalidElement);
    }
    Ok(x)
}

/// Check a received group element without keeping it.
///
/// `modulus` is I2OSP(n, k) as returned by `UserKey::modulus` /
/// `ServerShare::modulus`. Handlers can use this to reject bad requests before
/// queueing any modexp.
pub fn check_element(bytes: &[u8], modulus: &[u8]) -> Result<()> {
    let n = BigNum::from_slice(modulus)?;
    decode_element(bytes, &n, modulus.len()).map(|_| ())
}

/// `n − v`.
pub(crate) fn n_minus(n: &BigNumRef, v: u32) -> Result<BigNum> {
    let mut out = n.to_owned()?;
    out.sub_word(v)?;
    Ok(out)
}

/// A strict forward-only reader: every read checks bounds first, so no length
/// field can cause an allocation or a panic.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    pub(crate) fn take(&mut self, len: usize, what: &str) -> Result<&'a [u8]> {
        let end = self
            .pos
            .checked_add(len)
            .filter(|&end| end <= self.buf.len())
            .ok_or_else(|| Error::Format(format!("truncated {what}")))?;
        let out = &self.buf[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    pub(crate) fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N]> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, what)?);
        Ok(out)
    }

    pub(crate) fn u8(&mut self, what: &str) -> Result<u8> {
        Ok(self.array::<1>(what)?[0])
    }

    pub(crate) fn u16(&mut self, what: &str) -> Result<u16> {
        Ok(u16::from_be_bytes(self.array(what)?))
    }

    pub(crate) fn u32(&mut self, what: &str) -> Result<u32> {
        Ok(u32::from_be_bytes(self.array(what)?))
    }

    pub(crate) fn u64(&mut self, what: &str) -> Result<u64> {
        Ok(u64::from_be_bytes(self.array(what)?))
    }

    /// `enc(x)` with the length checked against `min..=max` before slicing.
    pub(crate) fn enc(&mut self, min: usize, max: usize, what: &str) -> Result<&'a [u8]> {
        let len = self.u32(what)? as usize;
        if len < min || len > max {
            return Err(Error::Format(format!(
                "{what} length {len} outside {min}..={max}"
            )));
        }
        self.take(len, what)
    }

    pub(crate) fn rest(&mut self) -> &'a [u8] {
        let out = &self.buf[self.pos..];
        self.pos = self.buf.len();
        out
    }

    pub(crate) fn finish(&self, what: &str) -> Result<()> {
        if self.pos == self.buf.len() {
            Ok(())
        } else {
            Err(Error::Format(format!("trailing bytes after {what}")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn element_bounds() {
        let n = BigNum::from_u32(0xFFF1).unwrap(); // any odd modulus, k = 2
        let ok = |v: u32| decode_element(&(v as u16).to_be_bytes(), &n, 2).is_ok();
        assert!(!ok(0));
        assert!(!ok(1));
        assert!(ok(2));
        assert!(ok(0xFFF1 - 2));
        assert!(!ok(0xFFF1 - 1));
        assert!(!ok(0xFFF1));
        assert!(!ok(0xFFFF));
        assert!(decode_element(&[0, 0, 5], &n, 2).is_err());
        assert!(decode_element(&[5], &n, 2).is_err());
    }

    #[test]
    fn reader_is_strict() {
        let mut r = Reader::new(&[0, 0, 0, 9, 1]);
        assert!(r.enc(0, 255, "x").is_err());
        let mut r = Reader::new(&[0xff, 0xff, 0xff, 0xff]);
        assert!(r.enc(0, 255, "x").is_err());
        let mut r = Reader::new(&[0, 0, 0, 1, 7, 8]);
        assert_eq!(r.enc(0, 255, "x").unwrap(), &[7]);
        assert!(r.finish("x").is_err());
    }
}
