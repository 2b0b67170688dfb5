//! Checking a PLAIN password: one PBKDF2 derivation, run on the blocking
//! pool (it takes milliseconds), whose cost does not depend on whether the
//! user exists.
//!
//! The password is checked against one credential: the user's entry in the
//! PLAIN users file, else their SCRAM-SHA-256 credential, else their
//! SCRAM-SHA-512 one (users with only SCRAM credentials may use PLAIN too).
//! A user with none is checked against a decoy shaped like a users-file
//! entry. Derivations shorter than [`DECOY_ITERATIONS`] are topped up to
//! it, so a missing user costs the same as a users-file entry or a SCRAM
//! credential made with `veil user`'s defaults.

use std::fmt;

use sha2::Sha256;
use subtle::ConstantTimeEq;

use super::plain::PlainUsers;
use super::scram::{Credential, Mechanism, DECOY_ITERATIONS};

/// What the derived key is compared with.
#[derive(Clone)]
enum Expected {
    /// A users-file hash: PBKDF2-HMAC-SHA256 of the password itself.
    Plain([u8; 32]),
    /// A SCRAM StoredKey, derived from the salted password.
    Scram(Mechanism, Vec<u8>),
    /// No such user: derive as for a users-file entry, then fail.
    Decoy,
}

/// Everything needed to check one PLAIN login, gathered under the metadata
/// lock and then run without it.
#[derive(Clone)]
pub struct PlainCheck {
    expected: Expected,
    salt: Vec<u8>,
    iterations: u32,
    decoy_salt: Vec<u8>,
}

impl fmt::Debug for PlainCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PlainCheck")
            .field("iterations", &self.iterations)
            .finish_non_exhaustive()
    }
}

/// The hash function and iteration count of one PBKDF2 run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Work {
    Sha256(u32),
    Sha512(u32),
}

impl PlainCheck {
    /// `scram` looks up the user's SCRAM credential per mechanism;
    /// `decoy_salt` is the stable secret-derived salt shown for unknown users.
    pub fn new(
        user: &str,
        plain: &PlainUsers,
        scram: impl Fn(Mechanism) -> Option<Credential>,
        decoy_salt: Vec<u8>,
    ) -> PlainCheck {
        let (expected, salt, iterations) = if let Some((salt, iterations, hash)) = plain.entry(user)
        {
            (Expected::Plain(*hash), salt.to_vec(), iterations)
        } else if let Some((mech, c)) = Mechanism::ALL
            .into_iter()
            .find_map(|m| scram(m).map(|c| (m, c)))
        {
            (Expected::Scram(mech, c.stored_key), c.salt, c.iterations)
        } else {
            (Expected::Decoy, decoy_salt.clone(), DECOY_ITERATIONS)
        };
        PlainCheck {
            expected,
            salt,
            iterations,
            decoy_salt,
        }
    }

    /// The PBKDF2 runs [`Self::verify`] makes, in order.
    pub fn work(&self) -> Vec<Work> {
        let mut work = vec![match self.expected {
            Expected::Scram(Mechanism::Sha512, _) => Work::Sha512(self.iterations),
            _ => Work::Sha256(self.iterations),
        }];
        if self.iterations < DECOY_ITERATIONS {
            work.push(Work::Sha256(DECOY_ITERATIONS - self.iterations));
        }
        work
    }

    /// Whether `password` is right. Blocking: call it on the blocking pool.
    pub fn verify(&self, password: &str) -> bool {
        let pw = password.as_bytes();
        let ok = match &self.expected {
            Expected::Plain(hash) => {
                let got = pbkdf2::pbkdf2_hmac_array::<Sha256, 32>(pw, &self.salt, self.iterations);
                got.ct_eq(hash).unwrap_u8() == 1
            }
            Expected::Scram(mech, stored_key) => {
                let derived =
                    Credential::from_password(*mech, password, &self.salt, self.iterations);
                derived.stored_key.ct_eq(stored_key).unwrap_u8() == 1
            }
            Expected::Decoy => {
                let _ = pbkdf2::pbkdf2_hmac_array::<Sha256, 32>(pw, &self.salt, self.iterations);
                false
            }
        };
        if self.iterations < DECOY_ITERATIONS {
            let _ = pbkdf2::pbkdf2_hmac_array::<Sha256, 32>(
                pw,
                &self.decoy_salt,
                DECOY_ITERATIONS - self.iterations,
            );
        }
        ok
    }
}

#[cfg(test)]
mod tests {
    use super::super::plain::hash_entry;
    use super::*;

    fn users() -> PlainUsers {
        PlainUsers::parse(&format!(
            "{}{}",
            hash_entry("file-user", "pw1", DECOY_ITERATIONS),
            hash_entry("cheap-user", "pw2", 4096)
        ))
        .unwrap()
    }

    fn credential(m: Mechanism) -> Credential {
        Credential::from_password(m, "pw3", b"salt", DECOY_ITERATIONS)
    }

    #[test]
    fn checks_the_first_credential_a_user_has() {
        let u = users();
        let none = |_| None;
        assert!(PlainCheck::new("file-user", &u, none, vec![1]).verify("pw1"));
        assert!(!PlainCheck::new("file-user", &u, none, vec![1]).verify("pw3"));
        assert!(PlainCheck::new("cheap-user", &u, none, vec![1]).verify("pw2"));
        assert!(PlainCheck::new("scram-user", &u, |m| Some(credential(m)), vec![1]).verify("pw3"));
        let sha512_only = |m| (m == Mechanism::Sha512).then(|| credential(m));
        assert!(PlainCheck::new("scram-user", &u, sha512_only, vec![1]).verify("pw3"));
        assert!(!PlainCheck::new("nobody", &u, none, vec![1]).verify("pw1"));
    }

    #[test]
    fn a_missing_user_costs_what_a_default_user_costs() {
        let u = users();
        let missing = PlainCheck::new("nobody", &u, |_| None, vec![1]).work();
        assert_eq!(missing, [Work::Sha256(DECOY_ITERATIONS)]);
        let file = PlainCheck::new("file-user", &u, |_| None, vec![1]).work();
        let scram = PlainCheck::new("scram-user", &u, |m| Some(credential(m)), vec![1]).work();
        assert_eq!(file, missing);
        assert_eq!(scram, missing);
        // Cheaper entries are topped up to the same total.
        let cheap = PlainCheck::new("cheap-user", &u, |_| None, vec![1]).work();
        assert_eq!(
            cheap,
            [Work::Sha256(4096), Work::Sha256(DECOY_ITERATIONS - 4096)]
        );
    }
}
