//! Thin, crate-private helpers over OpenSSL `BigNum`.
//!
//! The one rule this module exists for (BLIND.md §9 rule 1): every secret
//! value lives in a [`SecretBn`], which is allocated with `BN_secure_new`,
//! carries `BN_FLG_CONSTTIME` (so `BN_mod_exp` takes the constant-time
//! Montgomery ladder, `BN_mod_inverse` the branch-free path), and is wiped
//! with `BN_clear` on drop. [`mod_exp`] refuses an exponent without the flag.

use std::ops::{Deref, DerefMut};

use openssl::bn::{BigNum, BigNumContext, BigNumRef};
use zeroize::Zeroizing;

use crate::error::{Error, Result};

/// A secret big integer: secure heap, constant-time flag, cleared on drop.
pub(crate) struct SecretBn(BigNum);

impl SecretBn {
    /// A fresh secret zero.
    pub(crate) fn zero() -> Result<Self> {
        let mut b = BigNum::new_secure()?;
        b.set_const_time();
        Ok(Self(b))
    }

    /// OS2IP of `bytes` into secret storage.
    pub(crate) fn from_be(bytes: &[u8]) -> Result<Self> {
        let mut s = Self::zero()?;
        s.0.copy_from_slice(bytes)?;
        s.0.set_const_time();
        Ok(s)
    }

    /// A secret copy of `x` (OpenSSL's `BN_dup` does not carry the flag).
    pub(crate) fn copy_of(x: &BigNumRef) -> Result<Self> {
        let bytes = Zeroizing::new(x.to_vec());
        Self::from_be(&bytes)
    }

    /// Re-assert the constant-time flag after an operation wrote into `self`.
    pub(crate) fn ct(mut self) -> Self {
        self.0.set_const_time();
        self
    }
}

impl Deref for SecretBn {
    type Target = BigNumRef;
    fn deref(&self) -> &BigNumRef {
        &self.0
    }
}

impl DerefMut for SecretBn {
    fn deref_mut(&mut self) -> &mut BigNumRef {
        &mut self.0
    }
}

impl Drop for SecretBn {
    fn drop(&mut self) {
        self.0.clear();
    }
}

/// A BN_CTX whose temporaries are secure-heap allocated (cleared on free).
pub(crate) fn ctx() -> Result<BigNumContext> {
    Ok(BigNumContext::new_secure()?)
}

/// `base^exp mod m` with a secret exponent, constant time.
///
/// Fails closed if `exp` lacks `BN_FLG_CONSTTIME`, so a forgotten flag is a
/// test failure rather than a silent timing leak.
pub(crate) fn mod_exp(
    base: &BigNumRef,
    exp: &BigNumRef,
    m: &BigNumRef,
    ctx: &mut BigNumContext,
) -> Result<SecretBn> {
    if !exp.is_const_time() {
        return Err(Error::Crypto(
            "secret exponent without BN_FLG_CONSTTIME".into(),
        ));
    }
    let mut r = SecretBn::zero()?;
    r.mod_exp(base, exp, m, ctx)?;
    Ok(r.ct())
}

/// `a * b mod m` into secret storage.
pub(crate) fn mod_mul(
    a: &BigNumRef,
    b: &BigNumRef,
    m: &BigNumRef,
    ctx: &mut BigNumContext,
) -> Result<SecretBn> {
    let mut r = SecretBn::zero()?;
    r.mod_mul(a, b, m, ctx)?;
    Ok(r.ct())
}

/// `a^-1 mod m` into secret storage (branch-free path: both flagged).
pub(crate) fn mod_inverse(a: &SecretBn, m: &SecretBn, ctx: &mut BigNumContext) -> Result<SecretBn> {
    let mut r = SecretBn::zero()?;
    r.mod_inverse(a, m, ctx)?;
    Ok(r.ct())
}

/// `gcd(a, b) == 1`.
pub(crate) fn coprime(a: &BigNumRef, b: &BigNumRef, ctx: &mut BigNumContext) -> Result<bool> {
    let mut g = SecretBn::zero()?;
    g.gcd(a, b, ctx)?;
    Ok(is_one(&g))
}

/// I2OSP(x, k): big-endian, exactly `k` bytes; fails if `x` does not fit.
pub(crate) fn i2osp(x: &BigNumRef, k: usize) -> Result<Zeroizing<Vec<u8>>> {
    let k = i32::try_from(k).map_err(|_| Error::Crypto("I2OSP length".into()))?;
    Ok(Zeroizing::new(x.to_vec_padded(k)?))
}

/// `x == 1` for a non-negative `x`.
pub(crate) fn is_one(x: &BigNumRef) -> bool {
    x.num_bits() == 1 && !x.is_negative()
}
