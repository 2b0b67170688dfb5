//! Parameters (BLIND.md §4): modulus sizes, key epochs, safe primes and the
//! rejection samplers that turn random bytes into exponents and group
//! elements.
//!
//! All sampling goes through the crate-private [`Entropy`] trait. Production
//! uses [`OsEntropy`] (the OS CSPRNG via `getrandom`); the known-answer tests
//! plug in the KAT's SHAKE256 DRBG, so the *same* rejection logic that runs in
//! production is what reproduces the vectors.

use std::fmt;
use std::sync::OnceLock;

use openssl::bn::{BigNum, BigNumRef};
use zeroize::Zeroizing;

use crate::bignum::{self, SecretBn};
use crate::error::{Error, Result};

/// Size of the RSA modulus n.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ModulusBits {
    /// 112-bit security; only for data that expires before 2031 (§4).
    B2048,
    /// 128-bit security; the default.
    B3072,
}

impl ModulusBits {
    /// |n| in bits.
    pub const fn bits(self) -> u32 {
        match self {
            ModulusBits::B2048 => 2048,
            ModulusBits::B3072 => 3072,
        }
    }

    /// k = |n|/8: the fixed byte length of every serialized group element.
    pub const fn element_len(self) -> usize {
        (self.bits() / 8) as usize
    }

    /// L = ceil((|n| + 128) / 8): bytes of SHAKE256 output for the FDH (§5.2).
    pub const fn fdh_len(self) -> usize {
        ((self.bits() + 128).div_ceil(8)) as usize
    }

    /// Minimum bit length of every exponent and exponent share: |n| − 64.
    pub const fn min_exponent_bits(self) -> i32 {
        self.bits() as i32 - 64
    }

    /// Parse from a bit count.
    pub fn from_bits(bits: u32) -> Result<Self> {
        match bits {
            2048 => Ok(ModulusBits::B2048),
            3072 => Ok(ModulusBits::B3072),
            _ => Err(Error::InvalidKey("modulus must be 2048 or 3072 bits")),
        }
    }
}

/// Longest accepted key-epoch id, in bytes (also the envelope's cap).
pub const MAX_KID_LEN: usize = 255;
/// Longest accepted tenant id, in bytes.
pub const MAX_TENANT_LEN: usize = 255;

/// A key epoch id (`kid`, e.g. `t42-e3`): names one (tenant, n, e, d).
///
/// Bound into every hash, KDF and AAD for domain separation and rotation.
/// 1..=255 bytes; not secret.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Kid(Vec<u8>);

impl Kid {
    /// Validate and wrap. Any bytes, 1..=[`MAX_KID_LEN`] long.
    pub fn new(bytes: impl Into<Vec<u8>>) -> Result<Self> {
        let bytes = bytes.into();
        if bytes.is_empty() || bytes.len() > MAX_KID_LEN {
            return Err(Error::Format(format!(
                "kid must be 1..={MAX_KID_LEN} bytes, got {}",
                bytes.len()
            )));
        }
        Ok(Kid(bytes))
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Kid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Kid({:?})", String::from_utf8_lossy(&self.0))
    }
}

impl fmt::Display for Kid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&String::from_utf8_lossy(&self.0))
    }
}

pub(crate) fn check_tenant(tenant: &str) -> Result<()> {
    if tenant.len() > MAX_TENANT_LEN {
        return Err(Error::Format(format!(
            "tenant longer than {MAX_TENANT_LEN} bytes"
        )));
    }
    Ok(())
}

/// Source of random bytes for the samplers.
///
/// `label` and `ctr` identify the draw (the KAT DRBG derives its output from
/// them); the OS source ignores both. `ctr` is the rejection-sampling attempt.
pub(crate) trait Entropy {
    fn fill(&mut self, label: &str, ctr: u32, out: &mut [u8]) -> Result<()>;
}

/// The OS CSPRNG (`getrandom`), the only production source (§9 rule 2).
pub(crate) struct OsEntropy;

impl Entropy for OsEntropy {
    fn fill(&mut self, _label: &str, _ctr: u32, out: &mut [u8]) -> Result<()> {
        getrandom::fill(out).map_err(|_| Error::Rng)
    }
}

/// Rejection sampling gives up after this many attempts. Each attempt passes
/// with probability about 1/2, so hitting it means a broken RNG.
const MAX_SAMPLE_ATTEMPTS: u32 = 1024;

/// A uniform unit of Z_φ with bit length ≥ |n| − 64 (§4), for which
/// `accept` also holds (used by the split to resample on a short e_i2/d_i2).
///
/// Draws |n|/8 + 16 bytes per attempt and reduces mod φ (bias < 2^-128).
/// Returns the value (constant-time flagged) and the attempt counter that
/// produced it.
pub(crate) fn sample_exponent(
    src: &mut dyn Entropy,
    label: &str,
    phi: &SecretBn,
    bits: ModulusBits,
    accept: &mut dyn FnMut(&SecretBn) -> Result<bool>,
) -> Result<(SecretBn, u32)> {
    let mut ctx = bignum::ctx()?;
    let mut buf = Zeroizing::new(vec![0u8; bits.element_len() + 16]);
    for ctr in 0..MAX_SAMPLE_ATTEMPTS {
        src.fill(label, ctr, &mut buf)?;
        let raw = SecretBn::from_be(&buf)?;
        let mut x = SecretBn::zero()?;
        x.nnmod(&raw, phi, &mut ctx)?;
        let x = x.ct();
        if x.num_bits() >= bits.min_exponent_bits()
            && bignum::coprime(&x, phi, &mut ctx)?
            && accept(&x)?
        {
            return Ok((x, ctr));
        }
    }
    Err(Error::Crypto("exponent sampling did not converge".into()))
}

/// A uniform element of [2, n−2] coprime to n (§6.1): k + 16 bytes mod n.
///
/// `kat.py` only rejects r ≤ 1; we also reject n−1 as §6.1 says. The two
/// differ with probability 2^-2048 per draw, so the vectors are unaffected.
pub(crate) fn sample_element(
    src: &mut dyn Entropy,
    label: &str,
    n: &BigNumRef,
    bits: ModulusBits,
) -> Result<(SecretBn, u32)> {
    let mut ctx = bignum::ctx()?;
    let mut buf = Zeroizing::new(vec![0u8; bits.element_len() + 16]);
    let upper = crate::wire::n_minus(n, 2)?;
    for ctr in 0..MAX_SAMPLE_ATTEMPTS {
        src.fill(label, ctr, &mut buf)?;
        let raw = SecretBn::from_be(&buf)?;
        let mut x = SecretBn::zero()?;
        x.nnmod(&raw, n, &mut ctx)?;
        let x = x.ct();
        if x.num_bits() >= 2 && *x <= *upper && bignum::coprime(&x, n, &mut ctx)? {
            return Ok((x, ctr));
        }
    }
    Err(Error::Crypto("element sampling did not converge".into()))
}

/// Odd primes below 20 000 (the KAT's sieve bound; any bound gives the same
/// first passing candidate, this one is a speed choice).
fn small_primes() -> &'static [u32] {
    static PRIMES: OnceLock<Vec<u32>> = OnceLock::new();
    PRIMES.get_or_init(|| {
        const LIMIT: usize = 20_000;
        let mut composite = vec![false; LIMIT];
        let mut out = Vec::new();
        for i in 2..LIMIT {
            if !composite[i] {
                if i > 2 {
                    out.push(i as u32);
                }
                let mut j = i * i;
                while j < LIMIT {
                    composite[j] = true;
                    j += i;
                }
            }
        }
        out
    })
}

/// Miller–Rabin rounds for the final primality decision. OpenSSL 3 raises any
/// smaller request to at least 64 for these sizes anyway.
const MR_ROUNDS: i32 = 64;

/// Smallest accepted safe-prime size (keeps the candidate construction sane).
pub const MIN_SAFE_PRIME_BITS: u32 = 64;

/// Is `p` a safe prime (p and (p−1)/2 both prime)? Uses OpenSSL's
/// Miller–Rabin with trial division, error probability below 2^-128.
pub fn is_safe_prime(p: &BigNumRef) -> Result<bool> {
    let mut ctx = bignum::ctx()?;
    if p.is_negative() || p.num_bits() < 3 || !p.is_odd() {
        return Ok(false);
    }
    let mut half = BigNum::new_secure()?;
    half.rshift1(p)?;
    Ok(half.is_prime_fasttest(MR_ROUNDS, &mut ctx, true)?
        && p.is_prime_fasttest(MR_ROUNDS, &mut ctx, true)?)
}

/// Generate a `bits`-bit safe prime p = 2p′ + 1 with its top two bits set,
/// from the OS CSPRNG. `progress` is called with the number of candidates
/// tried so far (every 256 candidates and once at the end).
///
/// Takes seconds to minutes at 1536 bits; a KMS-only operation.
pub fn generate_safe_prime(bits: u32, progress: &mut dyn FnMut(u64)) -> Result<BigNum> {
    let (p, _) = safe_prime_search(&mut OsEntropy, "p", bits, progress)?;
    Ok(p)
}

/// The safe-prime search of `kat.py`: attempt `ctr` draws ceil((bits−1)/8)
/// bytes, keeps the low bits−1 bits, sets the top two bits and the low bit to
/// get p′, and accepts if p′ and p = 2p′+1 are both prime. Returns p and the
/// first accepted counter.
pub(crate) fn safe_prime_search(
    src: &mut dyn Entropy,
    label: &str,
    bits: u32,
    progress: &mut dyn FnMut(u64),
) -> Result<(BigNum, u32)> {
    if bits < MIN_SAFE_PRIME_BITS {
        return Err(Error::Crypto(format!(
            "safe primes below {MIN_SAFE_PRIME_BITS} bits are not supported"
        )));
    }
    let qbits = bits - 1;
    let qbits_i = qbits as i32;
    let mut buf = Zeroizing::new(vec![0u8; qbits.div_ceil(8) as usize]);
    let mut ctx = bignum::ctx()?;
    let primes = small_primes();
    let mut ctr: u32 = 0;
    loop {
        src.fill(label, ctr, &mut buf)?;
        let mut c = SecretBn::from_be(&buf)?;
        if c.num_bits() > qbits_i {
            c.mask_bits(qbits_i)?;
        }
        c.set_bit(qbits_i - 1)?;
        c.set_bit(qbits_i - 2)?;
        c.set_bit(0)?;
        // Sieve: reject if s | p′ or s | 2p′+1, i.e. p′ ≡ 0 or (s−1)/2 (mod s).
        let mut survives = true;
        for &s in primes {
            let r = c.mod_word(s)?;
            if r == 0 || r == u64::from((s - 1) / 2) {
                survives = false;
                break;
            }
        }
        if survives && c.is_prime(MR_ROUNDS, &mut ctx)? {
            let mut p = BigNum::new_secure()?;
            p.lshift1(&c)?;
            p.add_word(1)?;
            if p.is_prime(MR_ROUNDS, &mut ctx)? {
                progress(u64::from(ctr) + 1);
                return Ok((p, ctr));
            }
        }
        if ctr % 256 == 255 {
            progress(u64::from(ctr) + 1);
        }
        ctr = ctr
            .checked_add(1)
            .ok_or_else(|| Error::Crypto("safe-prime search exhausted".into()))?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_safe_prime_generation_passes_checks() {
        let mut calls = 0u64;
        let mut last = 0u64;
        let p = generate_safe_prime(256, &mut |n| {
            calls += 1;
            last = n;
        })
        .unwrap();
        assert_eq!(p.num_bits(), 256);
        assert!(p.is_bit_set(254), "top two bits set");
        assert!(is_safe_prime(&p).unwrap());
        assert!(calls >= 1 && last >= 1);
    }

    #[test]
    fn non_safe_primes_rejected() {
        // 23 = 2*11+1 is safe; 29 is prime but 14 is not.
        assert!(is_safe_prime(&BigNum::from_u32(23).unwrap()).unwrap());
        assert!(!is_safe_prime(&BigNum::from_u32(29).unwrap()).unwrap());
        assert!(!is_safe_prime(&BigNum::from_u32(21).unwrap()).unwrap());
        assert!(!is_safe_prime(&BigNum::from_u32(2).unwrap()).unwrap());
    }

    #[test]
    fn kid_bounds() {
        assert!(Kid::new(Vec::new()).is_err());
        assert!(Kid::new(vec![b'a'; 256]).is_err());
        assert!(Kid::new(vec![b'a'; 255]).is_ok());
    }

    #[test]
    fn lengths() {
        assert_eq!(ModulusBits::B2048.fdh_len(), 272);
        assert_eq!(ModulusBits::B3072.fdh_len(), 400);
        assert_eq!(ModulusBits::B3072.element_len(), 384);
    }
}
