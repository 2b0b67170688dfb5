//! SCRAM credentials as cluster metadata (what Kafka keeps for
//! AlterUserScramCredentials): salt, iteration count, StoredKey and
//! ServerKey per user and mechanism. Never the password or salted password.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// Mechanism names a credential may be stored under.
pub const SCRAM_MECHANISMS: &[&str] = &["SCRAM-SHA-256", "SCRAM-SHA-512"];
/// Kafka's accepted iteration range.
pub const MIN_ITERATIONS: u32 = 4096;
pub const MAX_ITERATIONS: u32 = 16384;

#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScramCredentialRecord {
    pub salt: Vec<u8>,
    pub iterations: u32,
    pub stored_key: Vec<u8>,
    pub server_key: Vec<u8>,
}

/// The keys stay out of logs: with the ServerKey anyone could impersonate
/// the broker to this user.
impl fmt::Debug for ScramCredentialRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScramCredentialRecord")
            .field("iterations", &self.iterations)
            .finish_non_exhaustive()
    }
}

/// Checks a credential command's fields.
pub fn validate(user: &str, mechanism: &str, record: Option<&ScramCredentialRecord>) -> Result<()> {
    if user.is_empty() {
        return Err(Error::InvalidConfig("SCRAM user name is empty".into()));
    }
    if !SCRAM_MECHANISMS.contains(&mechanism) {
        return Err(Error::InvalidConfig(format!(
            "unknown SCRAM mechanism '{mechanism}'"
        )));
    }
    if let Some(r) = record {
        if !(MIN_ITERATIONS..=MAX_ITERATIONS).contains(&r.iterations) {
            return Err(Error::InvalidConfig(format!(
                "SCRAM iterations must be between {MIN_ITERATIONS} and {MAX_ITERATIONS}"
            )));
        }
        if r.salt.is_empty() || r.stored_key.is_empty() || r.server_key.is_empty() {
            return Err(Error::InvalidConfig(
                "SCRAM credential is incomplete".into(),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::{MetaCommand, MetaState, ScramCredentialRecord};

    fn rec(iterations: u32) -> ScramCredentialRecord {
        ScramCredentialRecord {
            salt: vec![1; 16],
            iterations,
            stored_key: vec![2; 32],
            server_key: vec![3; 32],
        }
    }

    #[test]
    fn upsert_replace_and_delete_credentials() {
        let mut s = MetaState::default();
        let up = |user: &str, mech: &str, it| MetaCommand::UpsertScramCredential {
            user: user.into(),
            mechanism: mech.into(),
            credential: rec(it),
        };
        s.apply(1, &up("alice", "SCRAM-SHA-256", 4096)).unwrap();
        s.apply(2, &up("alice", "SCRAM-SHA-512", 8192)).unwrap();
        s.apply(3, &up("alice", "SCRAM-SHA-256", 5000)).unwrap();
        assert_eq!(
            s.scram_credential("alice", "SCRAM-SHA-256")
                .unwrap()
                .iterations,
            5000
        );
        assert!(s.check(&up("bob", "SCRAM-SHA-1", 4096)).is_err());
        assert!(s.check(&up("bob", "SCRAM-SHA-256", 100)).is_err());
        assert!(s.check(&up("", "SCRAM-SHA-256", 4096)).is_err());
        let del = |mech: &str| MetaCommand::DeleteScramCredential {
            user: "alice".into(),
            mechanism: mech.into(),
        };
        s.apply(4, &del("SCRAM-SHA-256")).unwrap();
        assert_eq!(s.scram_users().count(), 1);
        s.apply(5, &del("SCRAM-SHA-512")).unwrap();
        assert_eq!(s.scram_users().count(), 0);
        assert!(!format!("{:?}", rec(4096)).contains("[2, 2"));
    }
}
