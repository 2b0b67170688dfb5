//! Encodings and the full-domain hash (BLIND.md §5.1, §5.2).

use openssl::bn::BigNumRef;
use sha3::digest::{ExtendableOutput, Update, XofReader};
use sha3::Shake256;
use zeroize::Zeroizing;

use crate::bignum::{self, SecretBn};
use crate::error::{Error, Result};
use crate::params::ModulusBits;

pub(crate) const LABEL_FDH: &[u8] = b"veil/v1/fdh";
pub(crate) const LABEL_TOPIC_NAME: &[u8] = b"veil/v1/topic-name";
pub(crate) const LABEL_DEK: &[u8] = b"veil/v1/dek";
pub(crate) const LABEL_KEYTAG: &[u8] = b"veil/v1/keytag";
pub(crate) const LABEL_REC: &[u8] = b"veil/v1/rec";

/// Append `enc(x) = u32_be(len(x)) ‖ x`.
pub(crate) fn put_enc(out: &mut Vec<u8>, x: &[u8]) -> Result<()> {
    let len = u32::try_from(x.len())
        .map_err(|_| Error::Format("field longer than 2^32-1 bytes".into()))?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(x);
    Ok(())
}

/// `enc(a) ‖ enc(b) ‖ …`.
pub(crate) fn encs(fields: &[&[u8]]) -> Result<Zeroizing<Vec<u8>>> {
    let mut out = Zeroizing::new(Vec::with_capacity(fields.iter().map(|f| f.len() + 4).sum()));
    for f in fields {
        put_enc(&mut out, f)?;
    }
    Ok(out)
}

/// σ = H(kid, tenant, topic) ∈ QR_n (§5.2):
/// h = OS2IP(SHAKE256(enc("veil/v1/fdh") ‖ enc(kid) ‖ enc(tenant) ‖ enc(topic), L)) mod n,
/// σ = h² mod n.
///
/// σ is treated as secret: anyone holding it can confirm a guessed name.
pub(crate) fn fdh(
    n: &BigNumRef,
    bits: ModulusBits,
    kid: &[u8],
    tenant: &[u8],
    topic: &[u8],
) -> Result<SecretBn> {
    let input = encs(&[LABEL_FDH, kid, tenant, topic])?;
    let mut xof = Shake256::default();
    xof.update(&input);
    let mut digest = Zeroizing::new(vec![0u8; bits.fdh_len()]);
    xof.finalize_xof().read(&mut digest);

    let mut ctx = bignum::ctx()?;
    let raw = SecretBn::from_be(&digest)?;
    let mut h = SecretBn::zero()?;
    h.nnmod(&raw, n, &mut ctx)?;
    let mut sigma = SecretBn::zero()?;
    sigma.mod_sqr(&h, n, &mut ctx)?;
    let sigma = sigma.ct();
    // Never happens for a valid n; rejecting keeps σ a unit ≠ 1.
    if sigma.num_bits() < 2 || !bignum::coprime(&sigma, n, &mut ctx)? {
        return Err(Error::Crypto("degenerate full-domain hash".into()));
    }
    Ok(sigma)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enc_is_length_prefixed() {
        let mut v = Vec::new();
        put_enc(&mut v, b"ab").unwrap();
        put_enc(&mut v, b"").unwrap();
        assert_eq!(v, [0, 0, 0, 2, b'a', b'b', 0, 0, 0, 0]);
    }
}
