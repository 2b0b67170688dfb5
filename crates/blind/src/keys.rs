//! Key material (BLIND.md §1 IGen/UGen, §4).
//!
//! * [`MasterKey`] — (p, q, n, φ, e, d) of one tenant epoch. KMS only.
//! * [`UserKey`] — (n, e_i1, d_i1) of user i, held by the client.
//! * [`ServerShare`] — (n, e_i2, d_i2) of user i, held by the broker.
//!
//! Secrets live in `SecretBn` (secure heap, `BN_FLG_CONSTTIME`, cleared on
//! drop); `Debug` prints only the kid, tenant and size.
//!
//! # Key file format (versions 1 and 2)
//!
//! `to_bytes` / `from_bytes`; all integers big-endian, k = |n|/8:
//!
//! ```text
//! "VBK" ‖ u8 version ‖ u8 kind ‖ u16 |n| (2048|3072) ‖ enc(kid) [1..=255]
//! kind 1 master: enc(tenant) [0..=255] ‖ p (k/2) ‖ q (k/2) ‖ e (k) ‖ d (k)
//! kind 2 user:   enc(tenant) [0..=255] ‖ [v2: enc(user) [1..=128]] ‖ n (k) ‖ e_i1 (k) ‖ d_i1 (k)
//! kind 3 share:                          n (k) ‖ e_i2 (k) ‖ d_i2 (k)
//! ```
//!
//! Version 2 binds a user key to the user it was issued for (the SASL name
//! whose principal `User:<user>` holds the matching share), so a client can
//! refuse to use another user's key file before sending anything. Version 1
//! (unbound) user keys are still read; master keys and shares stay version 1.
//!
//! Loading rejects any other length, trailing bytes, and keys that fail
//! validation: for a master key everything is recomputed and checked (safe
//! primes, n, φ, e·d ≡ 1, bit lengths); for the halves, |n| exact, n odd, and
//! each exponent odd with bit length ≥ |n| − 64 and below n.

use std::fmt;

use openssl::bn::{BigNum, BigNumRef};
use zeroize::Zeroizing;

use crate::bignum::{self, i2osp, SecretBn};
use crate::error::{Error, Result};
use crate::params::{
    self, check_tenant, is_safe_prime, Entropy, Kid, ModulusBits, OsEntropy, MAX_KID_LEN,
    MAX_TENANT_LEN,
};
use crate::wire::Reader;

const MAGIC: &[u8; 3] = b"VBK";
const FILE_VERSION: u8 = 1;
/// User keys that name their user.
const FILE_VERSION_BOUND: u8 = 2;
const KIND_MASTER: u8 = 1;
const KIND_USER: u8 = 2;
const KIND_SHARE: u8 = 3;
/// User names are at most this long (see `kms::check_user_name`).
const MAX_USER_LEN: usize = 128;

/// The master key of one tenant epoch: IGen's output (§1). KMS only.
pub struct MasterKey {
    pub(crate) kid: Kid,
    pub(crate) tenant: String,
    pub(crate) bits: ModulusBits,
    pub(crate) p: SecretBn,
    pub(crate) q: SecretBn,
    pub(crate) n: BigNum,
    pub(crate) phi: SecretBn,
    pub(crate) e: SecretBn,
    pub(crate) d: SecretBn,
}

/// User i's half of the split: what the client holds.
pub struct UserKey {
    pub(crate) kid: Kid,
    pub(crate) tenant: String,
    /// The user the KMS issued the key for; `None` in version 1 files.
    pub(crate) user: Option<String>,
    pub(crate) bits: ModulusBits,
    pub(crate) n: BigNum,
    pub(crate) e1: SecretBn,
    pub(crate) d1: SecretBn,
}

/// The broker's share for user i (registered per authenticated principal).
pub struct ServerShare {
    pub(crate) kid: Kid,
    pub(crate) bits: ModulusBits,
    pub(crate) n: BigNum,
    pub(crate) e2: SecretBn,
    pub(crate) d2: SecretBn,
}

/// Counters of the deterministic samplers (for the known-answer tests).
#[cfg_attr(not(test), allow(dead_code))]
pub(crate) struct SplitCtrs {
    pub(crate) e1: u32,
    pub(crate) d1: u32,
}

impl MasterKey {
    /// IGen: generate fresh safe primes, e and d from the OS CSPRNG.
    ///
    /// `progress` receives the number of safe-prime candidates tried (p's
    /// search, then q's). Minutes at 3072 bits.
    pub fn generate(
        kid: Kid,
        tenant: &str,
        bits: ModulusBits,
        progress: &mut dyn FnMut(u64),
    ) -> Result<Self> {
        let half = bits.bits() / 2;
        let mut src = OsEntropy;
        let (p, _) = params::safe_prime_search(&mut src, "p", half, progress)?;
        let (q, _) = params::safe_prime_search(&mut src, "q", half, progress)?;
        let (key, _) = Self::from_primes_with(&mut src, kid, tenant, bits, &p, &q)?;
        Ok(key)
    }

    /// Import an existing key from its primes and public-exponent-that-is-not-
    /// public e (all big-endian). Everything is validated; d is recomputed.
    pub fn from_components(
        kid: Kid,
        tenant: &str,
        bits: ModulusBits,
        p: &[u8],
        q: &[u8],
        e: &[u8],
    ) -> Result<Self> {
        let p = SecretBn::from_be(p)?;
        let q = SecretBn::from_be(q)?;
        let e = SecretBn::from_be(e)?;
        Self::assemble(kid, tenant, bits, p, q, e)
    }

    /// From validated-here primes, sample e with `src` (label "master/e").
    pub(crate) fn from_primes_with(
        src: &mut dyn Entropy,
        kid: Kid,
        tenant: &str,
        bits: ModulusBits,
        p: &BigNumRef,
        q: &BigNumRef,
    ) -> Result<(Self, u32)> {
        let p = SecretBn::copy_of(p)?;
        let q = SecretBn::copy_of(q)?;
        let phi = phi_of(&p, &q)?;
        let (e, ctr) = params::sample_exponent(src, "master/e", &phi, bits, &mut |_| Ok(true))?;
        Ok((Self::assemble(kid, tenant, bits, p, q, e)?, ctr))
    }

    fn assemble(
        kid: Kid,
        tenant: &str,
        bits: ModulusBits,
        p: SecretBn,
        q: SecretBn,
        e: SecretBn,
    ) -> Result<Self> {
        check_tenant(tenant)?;
        let half = (bits.bits() / 2) as i32;
        if p.num_bits() != half || q.num_bits() != half {
            return Err(Error::InvalidKey("p and q must be |n|/2 bits"));
        }
        if *p == *q {
            return Err(Error::InvalidKey("p == q"));
        }
        if !is_safe_prime(&p)? || !is_safe_prime(&q)? {
            return Err(Error::InvalidKey("p and q must be safe primes"));
        }
        let mut ctx = bignum::ctx()?;
        let mut n = BigNum::new()?;
        n.checked_mul(&p, &q, &mut ctx)?;
        if n.num_bits() != bits.bits() as i32 {
            return Err(Error::InvalidKey("|n| does not match the modulus size"));
        }
        let phi = phi_of(&p, &q)?;
        if e.num_bits() < bits.min_exponent_bits() || *e >= *phi {
            return Err(Error::InvalidKey("e out of range"));
        }
        if !bignum::coprime(&e, &phi, &mut ctx)? {
            return Err(Error::InvalidKey("e not invertible mod phi"));
        }
        let d = bignum::mod_inverse(&e, &phi, &mut ctx)?;
        Ok(MasterKey {
            kid,
            tenant: tenant.to_owned(),
            bits,
            p,
            q,
            n,
            phi,
            e,
            d,
        })
    }

    /// UGen: a fresh split (e_i1, d_i1) / (e_i2, d_i2) from the OS CSPRNG.
    pub fn split(&self) -> Result<(UserKey, ServerShare)> {
        let (u, s, _) = self.split_with(&mut OsEntropy, "")?;
        Ok((u, s))
    }

    /// UGen with an explicit source; labels are "user/{user}/e1" and
    /// "user/{user}/d1". Checks all four conditions of §4 before returning.
    pub(crate) fn split_with(
        &self,
        src: &mut dyn Entropy,
        user: &str,
    ) -> Result<(UserKey, ServerShare, SplitCtrs)> {
        let bits = self.bits;
        let min = bits.min_exponent_bits();
        let mut ctx = bignum::ctx()?;

        // e_i1: resample while e_i2 = e·e_i1⁻¹ comes out short.
        let mut e2 = None;
        let (e1, e1_ctr) =
            params::sample_exponent(src, &format!("user/{user}/e1"), &self.phi, bits, &mut |x| {
                let inv = bignum::mod_inverse(x, &self.phi, &mut ctx)?;
                let cand = bignum::mod_mul(&self.e, &inv, &self.phi, &mut ctx)?;
                let ok = cand.num_bits() >= min;
                e2 = Some(cand);
                Ok(ok)
            })?;
        let e2 = e2.ok_or_else(|| Error::Crypto("split: e2 missing".into()))?;

        // d_i1: independent, never e_i1⁻¹ (§3 item 6); same resample rule.
        let mut d2 = None;
        let (d1, d1_ctr) =
            params::sample_exponent(src, &format!("user/{user}/d1"), &self.phi, bits, &mut |x| {
                let prod = bignum::mod_mul(x, &e1, &self.phi, &mut ctx)?;
                if bignum::is_one(&prod) {
                    return Ok(false);
                }
                let inv = bignum::mod_inverse(x, &self.phi, &mut ctx)?;
                let cand = bignum::mod_mul(&self.d, &inv, &self.phi, &mut ctx)?;
                let ok = cand.num_bits() >= min;
                d2 = Some(cand);
                Ok(ok)
            })?;
        let d2 = d2.ok_or_else(|| Error::Crypto("split: d2 missing".into()))?;

        self.check_split(&e1, &e2, &d1, &d2)?;
        let user_key = UserKey {
            kid: self.kid.clone(),
            tenant: self.tenant.clone(),
            user: None,
            bits,
            n: self.n.to_owned()?,
            e1,
            d1,
        };
        let share = ServerShare {
            kid: self.kid.clone(),
            bits,
            n: self.n.to_owned()?,
            e2,
            d2,
        };
        Ok((
            user_key,
            share,
            SplitCtrs {
                e1: e1_ctr,
                d1: d1_ctr,
            },
        ))
    }

    /// The four release conditions of §4.
    fn check_split(
        &self,
        e1: &SecretBn,
        e2: &SecretBn,
        d1: &SecretBn,
        d2: &SecretBn,
    ) -> Result<()> {
        let mut ctx = bignum::ctx()?;
        let min = self.bits.min_exponent_bits();
        let ee = bignum::mod_mul(e1, e2, &self.phi, &mut ctx)?;
        let dd = bignum::mod_mul(d1, d2, &self.phi, &mut ctx)?;
        let ed = bignum::mod_mul(&self.e, &self.d, &self.phi, &mut ctx)?;
        let ok = *ee == *self.e
            && *dd == *self.d
            && bignum::is_one(&ed)
            && [e1, e2, d1, d2].iter().all(|x| x.num_bits() >= min);
        if ok {
            Ok(())
        } else {
            Err(Error::InvalidKey("split failed its congruence checks"))
        }
    }

    /// The key epoch id.
    pub fn kid(&self) -> &Kid {
        &self.kid
    }

    /// The tenant this epoch belongs to.
    pub fn tenant(&self) -> &str {
        &self.tenant
    }

    /// Modulus size.
    pub fn bits(&self) -> ModulusBits {
        self.bits
    }

    /// I2OSP(n, k): the public modulus.
    pub fn modulus(&self) -> Result<Vec<u8>> {
        Ok(i2osp(&self.n, self.bits.element_len())?.to_vec())
    }

    /// Serialize (format in the module docs). Contains p, q, e, d.
    pub fn to_bytes(&self) -> Result<Zeroizing<Vec<u8>>> {
        let k = self.bits.element_len();
        let mut out = header(KIND_MASTER, self.bits, &self.kid)?;
        crate::hash::put_enc(&mut out, self.tenant.as_bytes())?;
        out.extend_from_slice(&i2osp(&self.p, k / 2)?);
        out.extend_from_slice(&i2osp(&self.q, k / 2)?);
        out.extend_from_slice(&i2osp(&self.e, k)?);
        out.extend_from_slice(&i2osp(&self.d, k)?);
        Ok(out)
    }

    /// Parse and fully re-validate (safe primes, e, d = e⁻¹).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let mut r = Reader::new(bytes);
        let (bits, kid) = read_header(&mut r, KIND_MASTER)?;
        let tenant = read_tenant(&mut r)?;
        let k = bits.element_len();
        let key = Self::from_components(
            kid,
            &tenant,
            bits,
            r.take(k / 2, "p")?,
            r.take(k / 2, "q")?,
            r.take(k, "e")?,
        )?;
        let d = SecretBn::from_be(r.take(k, "d")?)?;
        r.finish("master key")?;
        if *d != *key.d {
            return Err(Error::InvalidKey("d does not match e"));
        }
        Ok(key)
    }
}

fn phi_of(p: &SecretBn, q: &SecretBn) -> Result<SecretBn> {
    let mut ctx = bignum::ctx()?;
    let mut pm = SecretBn::copy_of(p)?;
    pm.sub_word(1)?;
    let mut qm = SecretBn::copy_of(q)?;
    qm.sub_word(1)?;
    let mut phi = SecretBn::zero()?;
    phi.checked_mul(&pm, &qm, &mut ctx)?;
    Ok(phi.ct())
}

impl UserKey {
    /// The key epoch id.
    pub fn kid(&self) -> &Kid {
        &self.kid
    }

    /// The tenant, bound into every token, DEK and AAD.
    pub fn tenant(&self) -> &str {
        &self.tenant
    }

    /// The user the key was issued for (`None` for a version 1 file).
    pub fn user(&self) -> Option<&str> {
        self.user.as_deref()
    }

    /// Binds the key to the user it is issued for (the KMS does, at issue).
    pub fn bind_user(mut self, user: &str) -> Result<Self> {
        crate::kms::check_user_name(user)?;
        self.user = Some(user.to_owned());
        Ok(self)
    }

    /// The same key without its user, as a version 1 file has it.
    #[cfg(any(test, feature = "testing"))]
    pub fn unbound(mut self) -> Self {
        self.user = None;
        self
    }

    /// Modulus size.
    pub fn bits(&self) -> ModulusBits {
        self.bits
    }

    /// I2OSP(n, k): the public modulus.
    pub fn modulus(&self) -> Result<Vec<u8>> {
        Ok(i2osp(&self.n, self.bits.element_len())?.to_vec())
    }

    /// Serialize (format in the module docs): version 2 when bound to a user.
    pub fn to_bytes(&self) -> Result<Zeroizing<Vec<u8>>> {
        let k = self.bits.element_len();
        let mut out = header(KIND_USER, self.bits, &self.kid)?;
        crate::hash::put_enc(&mut out, self.tenant.as_bytes())?;
        if let Some(user) = &self.user {
            out[3] = FILE_VERSION_BOUND;
            crate::hash::put_enc(&mut out, user.as_bytes())?;
        }
        out.extend_from_slice(&i2osp(&self.n, k)?);
        out.extend_from_slice(&i2osp(&self.e1, k)?);
        out.extend_from_slice(&i2osp(&self.d1, k)?);
        Ok(out)
    }

    /// Parse and validate.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let mut r = Reader::new(bytes);
        let bound = bytes.get(3) == Some(&FILE_VERSION_BOUND);
        let (bits, kid) = read_header(&mut r, KIND_USER)?;
        let tenant = read_tenant(&mut r)?;
        let user = if bound {
            let raw = r.enc(1, MAX_USER_LEN, "user")?;
            let user = std::str::from_utf8(raw)
                .map_err(|_| Error::Format("user is not UTF-8".into()))?
                .to_owned();
            crate::kms::check_user_name(&user)?;
            Some(user)
        } else {
            None
        };
        let (n, e1, d1) = read_half(&mut r, bits)?;
        r.finish("user key")?;
        Ok(UserKey {
            kid,
            tenant,
            user,
            bits,
            n,
            e1,
            d1,
        })
    }
}

impl ServerShare {
    /// The key epoch id.
    pub fn kid(&self) -> &Kid {
        &self.kid
    }

    /// Modulus size.
    pub fn bits(&self) -> ModulusBits {
        self.bits
    }

    /// I2OSP(n, k): the public modulus.
    pub fn modulus(&self) -> Result<Vec<u8>> {
        Ok(i2osp(&self.n, self.bits.element_len())?.to_vec())
    }

    /// Serialize (format in the module docs).
    pub fn to_bytes(&self) -> Result<Zeroizing<Vec<u8>>> {
        let k = self.bits.element_len();
        let mut out = header(KIND_SHARE, self.bits, &self.kid)?;
        out.extend_from_slice(&i2osp(&self.n, k)?);
        out.extend_from_slice(&i2osp(&self.e2, k)?);
        out.extend_from_slice(&i2osp(&self.d2, k)?);
        Ok(out)
    }

    /// From the fields of a `BlindShareRegister` request: I2OSP(n, k),
    /// I2OSP(e_i2, k), I2OSP(d_i2, k); validated like a share file.
    pub fn from_parts(kid: Kid, modulus: &[u8], e2: &[u8], d2: &[u8]) -> Result<Self> {
        let bits = u32::try_from(modulus.len() * 8)
            .map_err(|_| Error::InvalidKey("modulus too long"))
            .and_then(ModulusBits::from_bits)?;
        if e2.len() != modulus.len() || d2.len() != modulus.len() {
            return Err(Error::InvalidKey("exponents must be k bytes"));
        }
        let mut joined = Zeroizing::new(Vec::with_capacity(modulus.len() * 3));
        for part in [modulus, e2, d2] {
            joined.extend_from_slice(part);
        }
        let mut r = Reader::new(&joined);
        let (n, e2, d2) = read_half(&mut r, bits)?;
        r.finish("server share")?;
        Ok(ServerShare {
            kid,
            bits,
            n,
            e2,
            d2,
        })
    }

    /// Parse and validate.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let mut r = Reader::new(bytes);
        let (bits, kid) = read_header(&mut r, KIND_SHARE)?;
        let (n, e2, d2) = read_half(&mut r, bits)?;
        r.finish("server share")?;
        Ok(ServerShare {
            kid,
            bits,
            n,
            e2,
            d2,
        })
    }
}

fn header(kind: u8, bits: ModulusBits, kid: &Kid) -> Result<Zeroizing<Vec<u8>>> {
    let mut out = Zeroizing::new(Vec::with_capacity(16 + 4 * bits.element_len()));
    out.extend_from_slice(MAGIC);
    out.push(FILE_VERSION);
    out.push(kind);
    out.extend_from_slice(&(bits.bits() as u16).to_be_bytes());
    crate::hash::put_enc(&mut out, kid.as_bytes())?;
    Ok(out)
}

fn read_header(r: &mut Reader<'_>, kind: u8) -> Result<(ModulusBits, Kid)> {
    if r.take(3, "magic")? != MAGIC {
        return Err(Error::Format("not a Veil blind key file".into()));
    }
    let version = r.u8("version")?;
    let known = version == FILE_VERSION || version == FILE_VERSION_BOUND && kind == KIND_USER;
    if !known {
        return Err(Error::Format(format!(
            "unsupported key file version {version}"
        )));
    }
    let got = r.u8("kind")?;
    if got != kind {
        return Err(Error::Format(format!(
            "key file kind {got}, expected {kind}"
        )));
    }
    let bits = ModulusBits::from_bits(u32::from(r.u16("modulus bits")?))?;
    let kid = Kid::new(r.enc(1, MAX_KID_LEN, "kid")?)?;
    Ok((bits, kid))
}

fn read_tenant(r: &mut Reader<'_>) -> Result<String> {
    let raw = r.enc(0, MAX_TENANT_LEN, "tenant")?;
    String::from_utf8(raw.to_vec()).map_err(|_| Error::Format("tenant is not UTF-8".into()))
}

/// n and two exponents of a user key or server share, validated.
fn read_half(r: &mut Reader<'_>, bits: ModulusBits) -> Result<(BigNum, SecretBn, SecretBn)> {
    let k = bits.element_len();
    let n = BigNum::from_slice(r.take(k, "n")?)?;
    if n.num_bits() != bits.bits() as i32 || !n.is_odd() {
        return Err(Error::InvalidKey("modulus has the wrong size or is even"));
    }
    let a = SecretBn::from_be(r.take(k, "exponent")?)?;
    let b = SecretBn::from_be(r.take(k, "exponent")?)?;
    for x in [&a, &b] {
        // Units of Z_φ are odd (φ is even); full size (§3 item 6).
        if x.num_bits() < bits.min_exponent_bits() || !x.is_odd() || **x >= *n {
            return Err(Error::InvalidKey("exponent out of range"));
        }
    }
    Ok((n, a, b))
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MasterKey")
            .field("kid", &self.kid)
            .field("tenant", &self.tenant)
            .field("bits", &self.bits.bits())
            .field("secrets", &"<redacted>")
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for UserKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UserKey")
            .field("kid", &self.kid)
            .field("tenant", &self.tenant)
            .field("user", &self.user)
            .field("bits", &self.bits.bits())
            .field("secrets", &"<redacted>")
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for ServerShare {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerShare")
            .field("kid", &self.kid)
            .field("bits", &self.bits.bits())
            .field("secrets", &"<redacted>")
            .finish_non_exhaustive()
    }
}
