//! Device logins at the gateway: user names and passwords from a users
//! file in the broker's PLAIN format, checked with the broker's PBKDF2
//! check (on the blocking pool; an unknown user costs the same as a known
//! one).

use std::path::Path;

use veil_broker::auth::plain::PlainUsers;
use veil_broker::auth::plain_check::PlainCheck;

/// The device users.
pub(crate) struct Users {
    plain: PlainUsers,
    /// Salt of the decoy an unknown user is checked against (random per
    /// process: it only has to look like a real entry's).
    decoy_salt: Vec<u8>,
}

impl Users {
    pub(crate) fn load(path: &Path) -> Result<Users, String> {
        let plain = PlainUsers::load(path)?;
        Ok(Users {
            plain,
            decoy_salt: rand::random::<[u8; 16]>().to_vec(),
        })
    }

    /// Whether `password` is `user`'s.
    pub(crate) async fn verify(&self, user: &str, password: String) -> bool {
        let check = PlainCheck::new(user, &self.plain, |_| None, self.decoy_salt.clone());
        let password = zeroize::Zeroizing::new(password);
        tokio::task::spawn_blocking(move || check.verify(&password))
            .await
            .unwrap_or(false)
    }
}
