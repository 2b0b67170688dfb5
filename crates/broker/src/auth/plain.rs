//! SASL PLAIN (RFC 4616) and its users file.
//!
//! The file holds a salted PBKDF2-HMAC-SHA256 hash per user, never a
//! password; `veil user hash-plain` prints an entry:
//!
//! ```toml
//! [users.alice]
//! iterations = 4096
//! salt = "base64"
//! hash = "base64 of PBKDF2-HMAC-SHA256(password, salt, iterations, 32 bytes)"
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde::Deserialize;
use sha2::Sha256;

use super::scram::{MAX_ITERATIONS, MIN_ITERATIONS};

/// A parsed PLAIN message. The password never appears in Debug output.
#[derive(Clone, PartialEq, Eq)]
pub struct PlainMessage {
    pub username: String,
    pub password: String,
}

impl fmt::Debug for PlainMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PlainMessage")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PlainError {
    #[error("malformed PLAIN message")]
    Malformed,
    #[error("authorization id differs from the user name")]
    AuthzId,
}

/// Parses `[authzid] NUL authcid NUL passwd`. Like Kafka, an authzid must be
/// empty or equal to the user name.
pub fn parse(msg: &[u8]) -> Result<PlainMessage, PlainError> {
    let text = std::str::from_utf8(msg).map_err(|_| PlainError::Malformed)?;
    let mut parts = text.split('\0');
    let (Some(authzid), Some(user), Some(pass), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(PlainError::Malformed);
    };
    if user.is_empty() || pass.is_empty() || user.len() > 255 || pass.len() > 255 {
        return Err(PlainError::Malformed);
    }
    if !authzid.is_empty() && authzid != user {
        return Err(PlainError::AuthzId);
    }
    Ok(PlainMessage {
        username: user.to_owned(),
        password: pass.to_owned(),
    })
}

/// One user's salted hash.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    iterations: u32,
    salt: String,
    hash: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    users: BTreeMap<String, Entry>,
}

#[derive(Clone)]
struct Hashed {
    iterations: u32,
    salt: Vec<u8>,
    hash: [u8; 32],
}

/// The PLAIN users, loaded from the users file.
#[derive(Clone, Default)]
pub struct PlainUsers {
    users: BTreeMap<String, Hashed>,
}

impl fmt::Debug for PlainUsers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PlainUsers")
            .field("count", &self.users.len())
            .finish()
    }
}

fn pbkdf2_sha256(password: &[u8], salt: &[u8], iterations: u32) -> [u8; 32] {
    pbkdf2::pbkdf2_hmac_array::<Sha256, 32>(password, salt, iterations)
}

impl PlainUsers {
    pub fn load(path: &Path) -> Result<PlainUsers, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read PLAIN users file {}: {e}", path.display()))?;
        PlainUsers::parse(&text).map_err(|e| format!("PLAIN users file {}: {e}", path.display()))
    }

    pub fn parse(text: &str) -> Result<PlainUsers, String> {
        let file: File = toml::from_str(text).map_err(|e| e.to_string())?;
        let mut users = BTreeMap::new();
        for (name, e) in file.users {
            if !(MIN_ITERATIONS..=MAX_ITERATIONS * 64).contains(&e.iterations) {
                return Err(format!(
                    "user '{name}': iterations must be at least {MIN_ITERATIONS}"
                ));
            }
            let salt = B64
                .decode(&e.salt)
                .map_err(|_| format!("user '{name}': salt is not base64"))?;
            let hash: [u8; 32] = B64
                .decode(&e.hash)
                .ok()
                .and_then(|h| h.try_into().ok())
                .ok_or_else(|| format!("user '{name}': hash is not 32 bytes of base64"))?;
            users.insert(
                name,
                Hashed {
                    iterations: e.iterations,
                    salt,
                    hash,
                },
            );
        }
        Ok(PlainUsers { users })
    }

    /// The user's salt, iteration count and hash, if the file has them
    /// (checked by [`super::plain_check::PlainCheck`]).
    pub fn entry(&self, user: &str) -> Option<(&[u8], u32, &[u8; 32])> {
        self.users
            .get(user)
            .map(|h| (h.salt.as_slice(), h.iterations, &h.hash))
    }

    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }
}

/// A users-file entry for `user` (TOML), with a fresh random salt.
pub fn hash_entry(user: &str, password: &str, iterations: u32) -> String {
    let salt: [u8; 16] = rand::random();
    let hash = pbkdf2_sha256(password.as_bytes(), &salt, iterations);
    format!(
        "[users.{}]\niterations = {iterations}\nsalt = \"{}\"\nhash = \"{}\"\n",
        toml::Value::String(user.to_owned()),
        B64.encode(salt),
        B64.encode(hash)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plain_messages() {
        let m = parse(b"\0alice\0secret").unwrap();
        assert_eq!(
            (m.username.as_str(), m.password.as_str()),
            ("alice", "secret")
        );
        assert_eq!(parse(b"alice\0alice\0pw").unwrap().username, "alice");
        assert_eq!(parse(b"bob\0alice\0pw"), Err(PlainError::AuthzId));
        for bad in [
            &b""[..],
            b"\0alice",
            b"\0\0pw",
            b"\0alice\0",
            b"\0a\0b\0c",
            b"\0\xff\0pw",
        ] {
            assert_eq!(parse(bad), Err(PlainError::Malformed), "{bad:?}");
        }
        assert!(!format!("{m:?}").contains("secret"));
    }

    #[test]
    fn users_file_verifies_salted_hashes() {
        let text = format!(
            "{}{}",
            hash_entry("alice", "pw1", 4096),
            hash_entry("bob", "pw2", 4096)
        );
        assert!(!text.contains("pw1"));
        let users = PlainUsers::parse(&text).unwrap();
        let verify = |user: &str, pw: &str| {
            super::super::plain_check::PlainCheck::new(user, &users, |_| None, vec![0; 16])
                .verify(pw)
        };
        assert!(verify("alice", "pw1"));
        assert!(!verify("alice", "pw2"));
        assert!(!verify("carol", "pw1"));
        assert!(PlainUsers::parse("[users.x]\niterations = 1\nsalt = \"\"\nhash = \"\"").is_err());
        assert!(PlainUsers::parse("[users.x]\npassword = \"plain\"").is_err());
    }
}
