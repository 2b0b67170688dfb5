//! The KMS's files (pure: bytes in, bytes out; the CLI does the IO).
//!
//! * The **sealed master key**: [`MasterKey::to_bytes`] encrypted at rest
//!   under a passphrase. Argon2id turns the passphrase into a 256-bit key
//!   (memory-hard, so a stolen file costs an attacker real memory per guess);
//!   XChaCha20-Poly1305 seals the key file with a random 192-bit nonce (one
//!   seal per write, so random nonces are safe). The header is the AAD, so
//!   the KDF cost parameters cannot be lowered by editing the file.
//! * The **registry**: the KMS's record of which users it issued keys to and
//!   whether they are revoked. Not secret (no key material); a small line
//!   format so `veil kms list` works without the passphrase.
//!
//! ```text
//! sealed file = "VKMS" ‖ u8 version=1 ‖ u32 m_cost_kib ‖ u32 t_cost ‖ u32 p_cost
//!               ‖ salt (16) ‖ nonce (24) ‖ XChaCha20-Poly1305(key file) ‖ tag (16)
//! ```

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use zeroize::Zeroizing;

use crate::error::{Error, Result};
use crate::keys::MasterKey;

const MAGIC: &[u8; 4] = b"VKMS";
const VERSION: u8 = 1;
const SALT_LEN: usize = 16;
const NONCE_LEN: usize = 24;
const HEADER_LEN: usize = 4 + 1 + 12 + SALT_LEN + NONCE_LEN;
const TAG_LEN: usize = 16;

/// Argon2id cost parameters, stored in the sealed file's header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KdfParams {
    /// Memory in KiB.
    pub m_cost_kib: u32,
    /// Passes over the memory.
    pub t_cost: u32,
    /// Lanes.
    pub p_cost: u32,
}

impl KdfParams {
    /// RFC 9106's second recommended option (64 MiB, 3 passes, 4 lanes):
    /// about a quarter second per guess on a server core.
    pub const DEFAULT: KdfParams = KdfParams {
        m_cost_kib: 64 * 1024,
        t_cost: 3,
        p_cost: 4,
    };

    /// Cheap parameters for tests only; never for a real key.
    pub const INSECURE_FOR_TESTS: KdfParams = KdfParams {
        m_cost_kib: 64,
        t_cost: 1,
        p_cost: 1,
    };

    /// Upper bounds on what a file may ask for, so a crafted file cannot make
    /// the KMS allocate or spin without limit (1 GiB, 64 passes, 16 lanes).
    fn check(self) -> Result<Self> {
        if self.m_cost_kib > 1024 * 1024 || self.t_cost > 64 || self.p_cost > 16 {
            return Err(Error::Format(
                "sealed master key asks for an unreasonable KDF cost".into(),
            ));
        }
        Ok(self)
    }

    fn derive(self, passphrase: &[u8], salt: &[u8]) -> Result<Zeroizing<[u8; 32]>> {
        let params = argon2::Params::new(self.m_cost_kib, self.t_cost, self.p_cost, Some(32))
            .map_err(|e| Error::Format(format!("KDF parameters: {e}")))?;
        let kdf = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
        let mut key = Zeroizing::new([0u8; 32]);
        kdf.hash_password_into(passphrase, salt, key.as_mut())
            .map_err(|e| Error::Crypto(format!("argon2: {e}")))?;
        Ok(key)
    }
}

/// Encrypt `key` under `passphrase` (format in the module docs).
pub fn seal_master_key(key: &MasterKey, passphrase: &[u8], params: KdfParams) -> Result<Vec<u8>> {
    let params = params.check()?;
    let mut salt = [0u8; SALT_LEN];
    let mut nonce = [0u8; NONCE_LEN];
    getrandom::fill(&mut salt).map_err(|_| Error::Rng)?;
    getrandom::fill(&mut nonce).map_err(|_| Error::Rng)?;
    let mut out = Vec::with_capacity(HEADER_LEN + 2048);
    out.extend_from_slice(MAGIC);
    out.push(VERSION);
    for v in [params.m_cost_kib, params.t_cost, params.p_cost] {
        out.extend_from_slice(&v.to_be_bytes());
    }
    out.extend_from_slice(&salt);
    out.extend_from_slice(&nonce);
    let kek = params.derive(passphrase, &salt)?;
    let plain = key.to_bytes()?;
    let sealed = XChaCha20Poly1305::new(kek.as_ref().into())
        .encrypt(
            XNonce::from_slice(&nonce),
            Payload {
                msg: &plain,
                aad: &out,
            },
        )
        .map_err(|_| Error::Crypto("sealing the master key failed".into()))?;
    out.extend_from_slice(&sealed);
    Ok(out)
}

/// Decrypt and fully re-validate a sealed master key. A wrong passphrase and
/// a tampered file both give [`Error::Decrypt`].
pub fn open_master_key(bytes: &[u8], passphrase: &[u8]) -> Result<MasterKey> {
    if bytes.len() < HEADER_LEN + TAG_LEN || &bytes[..4] != MAGIC {
        return Err(Error::Format("not a sealed Veil master key".into()));
    }
    if bytes[4] != VERSION {
        return Err(Error::Format(format!(
            "unsupported sealed master key version {}",
            bytes[4]
        )));
    }
    let u32_at =
        |i: usize| u32::from_be_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
    let params = KdfParams {
        m_cost_kib: u32_at(5),
        t_cost: u32_at(9),
        p_cost: u32_at(13),
    }
    .check()?;
    let (header, sealed) = bytes.split_at(HEADER_LEN);
    let salt = &header[17..17 + SALT_LEN];
    let nonce = &header[17 + SALT_LEN..];
    let kek = params.derive(passphrase, salt)?;
    let plain = Zeroizing::new(
        XChaCha20Poly1305::new(kek.as_ref().into())
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: sealed,
                    aad: header,
                },
            )
            .map_err(|_| Error::Decrypt)?,
    );
    MasterKey::from_bytes(&plain)
}

/// Whether a user may still use their key (as far as the KMS knows).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UserStatus {
    Active,
    Revoked,
}

impl UserStatus {
    /// The registry's spelling.
    pub fn label(self) -> &'static str {
        match self {
            UserStatus::Active => "active",
            UserStatus::Revoked => "revoked",
        }
    }
}

/// One issued user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserEntry {
    pub status: UserStatus,
    /// Splits issued so far (1 after add-user, +1 per rotate-user).
    pub generation: u32,
}

/// The KMS registry of one key epoch (format: [`Registry::to_text`]).
#[derive(Clone, PartialEq, Eq)]
pub struct Registry {
    pub kid: String,
    pub tenant: String,
    pub bits: u32,
    pub users: BTreeMap<String, UserEntry>,
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registry")
            .field("kid", &self.kid)
            .field("tenant", &self.tenant)
            .field("users", &self.users.len())
            .finish_non_exhaustive()
    }
}

const REGISTRY_HEADER: &str = "# veil kms registry v1";

/// User names become SASL principals (`User:NAME`) and file names
/// (`NAME.key`), so only a conservative alphabet is accepted.
pub fn check_user_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'@'));
    if ok {
        Ok(())
    } else {
        Err(Error::Format(format!(
            "user name '{name}' must be 1-128 characters of [A-Za-z0-9._@-], not starting with '.'"
        )))
    }
}

fn check_field(what: &str, v: &str) -> Result<()> {
    if v.is_empty() || v.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(Error::Format(format!(
            "{what} must be non-empty without spaces"
        )));
    }
    Ok(())
}

impl Registry {
    /// A fresh registry for a new epoch.
    pub fn new(kid: &str, tenant: &str, bits: u32) -> Result<Self> {
        check_field("kid", kid)?;
        check_field("tenant", tenant)?;
        Ok(Registry {
            kid: kid.to_owned(),
            tenant: tenant.to_owned(),
            bits,
            users: BTreeMap::new(),
        })
    }

    /// `kid K`, `tenant T`, `bits B`, then one `user NAME STATUS GENERATION`
    /// line per user, sorted by name.
    pub fn to_text(&self) -> String {
        let mut s = format!(
            "{REGISTRY_HEADER}\nkid {}\ntenant {}\nbits {}\n",
            self.kid, self.tenant, self.bits
        );
        for (name, u) in &self.users {
            // Writing to a String cannot fail.
            let _ = writeln!(s, "user {name} {} {}", u.status.label(), u.generation);
        }
        s
    }

    /// Parse [`Registry::to_text`]'s output; any other line is an error.
    pub fn parse(text: &str) -> Result<Self> {
        let bad = |n: usize, why: &str| Error::Format(format!("registry line {n}: {why}"));
        let mut lines = text.lines().enumerate().map(|(i, l)| (i + 1, l.trim()));
        if lines.next().map(|(_, l)| l) != Some(REGISTRY_HEADER) {
            return Err(Error::Format("not a veil kms registry".into()));
        }
        let (mut kid, mut tenant, mut bits) = (None, None, None);
        let mut users = BTreeMap::new();
        for (n, line) in lines {
            let f: Vec<&str> = line.split_whitespace().collect();
            match f[..] {
                [] => {}
                ["kid", v] => kid = Some(v.to_owned()),
                ["tenant", v] => tenant = Some(v.to_owned()),
                ["bits", v] => bits = Some(v.parse().map_err(|_| bad(n, "bad bits"))?),
                ["user", name, status, generation] => {
                    check_user_name(name).map_err(|_| bad(n, "bad user name"))?;
                    let status = match status {
                        "active" => UserStatus::Active,
                        "revoked" => UserStatus::Revoked,
                        _ => return Err(bad(n, "status must be active or revoked")),
                    };
                    let generation = generation.parse().map_err(|_| bad(n, "bad generation"))?;
                    if users
                        .insert(name.to_owned(), UserEntry { status, generation })
                        .is_some()
                    {
                        return Err(bad(n, "duplicate user"));
                    }
                }
                _ => return Err(bad(n, "unrecognised line")),
            }
        }
        let missing = |w: &str| Error::Format(format!("registry has no {w} line"));
        let mut reg = Registry::new(
            &kid.ok_or_else(|| missing("kid"))?,
            &tenant.ok_or_else(|| missing("tenant"))?,
            bits.ok_or_else(|| missing("bits"))?,
        )?;
        reg.users = users;
        Ok(reg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::{Kid, ModulusBits};

    /// A real 2048-bit master key from the KAT's primes (no prime search).
    fn key() -> MasterKey {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../../shared/blind/kat-2048.json"
        );
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).expect("KAT file")).unwrap();
        let hex = |k: &str| -> Vec<u8> {
            let s = v[k].as_str().expect(k);
            (0..s.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
                .collect()
        };
        MasterKey::from_components(
            Kid::new("kms-test").unwrap(),
            "tenant-a",
            ModulusBits::B2048,
            &hex("p"),
            &hex("q"),
            &hex("e"),
        )
        .unwrap()
    }

    #[test]
    fn sealed_master_key_round_trips() {
        let k = key();
        let sealed = seal_master_key(&k, b"correct horse", KdfParams::INSECURE_FOR_TESTS).unwrap();
        let plain = k.to_bytes().unwrap();
        assert!(!sealed
            .windows(32)
            .any(|w| plain.windows(32).any(|p| p == w)));
        let back = open_master_key(&sealed, b"correct horse").unwrap();
        assert_eq!(*back.to_bytes().unwrap(), *plain);
        // Two seals of the same key differ (fresh salt and nonce).
        let again = seal_master_key(&k, b"correct horse", KdfParams::INSECURE_FOR_TESTS).unwrap();
        assert_ne!(sealed, again);
    }

    #[test]
    fn wrong_passphrase_or_tampering_is_a_decrypt_error() {
        let sealed = seal_master_key(&key(), b"right", KdfParams::INSECURE_FOR_TESTS).unwrap();
        assert!(matches!(
            open_master_key(&sealed, b"wrong"),
            Err(Error::Decrypt)
        ));
        // Lowering the KDF cost in the header breaks the AAD.
        let mut t = sealed.clone();
        t[8] ^= 1;
        assert!(matches!(open_master_key(&t, b"right"), Err(Error::Decrypt)));
        let mut t = sealed.clone();
        *t.last_mut().unwrap() ^= 1;
        assert!(matches!(open_master_key(&t, b"right"), Err(Error::Decrypt)));
        assert!(matches!(
            open_master_key(b"junk", b"right"),
            Err(Error::Format(_))
        ));
        // A crafted header cannot demand unbounded memory.
        let mut t = sealed;
        t[5..9].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(matches!(
            open_master_key(&t, b"right"),
            Err(Error::Format(_))
        ));
    }

    #[test]
    fn registry_round_trips_and_rejects_junk() {
        let mut r = Registry::new("t42-e1", "tenant-a", 3072).unwrap();
        r.users.insert(
            "alice".into(),
            UserEntry {
                status: UserStatus::Active,
                generation: 2,
            },
        );
        r.users.insert(
            "bob".into(),
            UserEntry {
                status: UserStatus::Revoked,
                generation: 1,
            },
        );
        let text = r.to_text();
        assert!(text.contains("user bob revoked 1\n"), "{text}");
        assert_eq!(Registry::parse(&text).unwrap(), r);
        for junk in [
            "",
            "kid x\n",
            &format!("{REGISTRY_HEADER}\nkid k\ntenant t\n"),
            &format!("{REGISTRY_HEADER}\nkid k\ntenant t\nbits 2048\nuser ../x active 1\n"),
            &format!("{REGISTRY_HEADER}\nkid k\ntenant t\nbits 2048\nuser a gone 1\n"),
            &format!("{REGISTRY_HEADER}\nkid k\ntenant t\nbits 2048\nfoo\n"),
        ] {
            assert!(Registry::parse(junk).is_err(), "{junk:?}");
        }
        assert!(check_user_name("../etc").is_err());
        assert!(check_user_name("alice@corp").is_ok());
    }
}
