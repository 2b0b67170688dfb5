//! Blind-topic metadata (BLIND.md §6b): server shares, grants, blind-topic
//! records, stored DEK wraps, and per-kid revocation counters.
//!
//! Shares arrive here already sealed by the broker (AES-256-GCM under a
//! broker-local key kept outside the metadata directory), so neither the
//! metadata log nor its snapshots ever hold an exponent in the clear. Kids
//! and DEK ids are kept as lowercase hex: they are bytes, and JSON map keys
//! must be strings.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// Upper bounds so one principal cannot grow metadata without limit.
pub const MAX_SHARES: usize = 100_000;
pub const MAX_WRAPS_PER_TOPIC: usize = 1_000_000;

/// A registered server share of one (principal, kid).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShareRecord {
    /// The sealed `ServerShare` file bytes (nonce ‖ ciphertext ‖ tag).
    pub sealed: Vec<u8>,
    pub created_ms: i64,
}

/// A physical topic known to be blind, and under which key epoch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlindTopicRecord {
    pub kid: String,
    /// The principal whose `BlindCreateTopic` created it (audit only).
    pub created_by: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlindState {
    /// principal → kid (hex) → share.
    shares: BTreeMap<String, BTreeMap<String, ShareRecord>>,
    /// principal → physical topics it may use.
    grants: BTreeMap<String, BTreeSet<String>>,
    /// physical topic → record.
    topics: BTreeMap<String, BlindTopicRecord>,
    /// physical topic → dek id (hex) → W.
    wraps: BTreeMap<String, BTreeMap<String, Vec<u8>>>,
    /// kid (hex) → number of revocations so far.
    revocations: BTreeMap<String, i64>,
    /// principal → kids (hex) whose share was revoked and not issued again,
    /// so a refusal can say "revoked" rather than "never issued".
    #[serde(default)]
    revoked: BTreeMap<String, BTreeSet<String>>,
}

/// The blind-topic commands, nested in [`crate::MetaCommand`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum BlindCommand {
    /// Store (or replace, on user-key rotation) a sealed share.
    RegisterShare {
        principal: String,
        kid: String,
        sealed: Vec<u8>,
        created_ms: i64,
    },
    /// Delete a share and the principal's grants on that kid's topics, and
    /// bump the kid's revocation counter.
    RevokeShare { principal: String, kid: String },
    /// Mark an existing physical topic as blind under `kid`.
    RegisterTopic {
        name: String,
        kid: String,
        created_by: String,
    },
    /// Let `principal` use the physical topic `name` (it resolved it).
    Grant { principal: String, name: String },
    /// Store W under (topic, dek id). Write-once.
    PutWrap {
        name: String,
        dek_id: String,
        wrap: Vec<u8>,
    },
}

impl BlindCommand {
    pub fn kind(&self) -> &'static str {
        match self {
            BlindCommand::RegisterShare { .. } => "blind_register_share",
            BlindCommand::RevokeShare { .. } => "blind_revoke_share",
            BlindCommand::RegisterTopic { .. } => "blind_register_topic",
            BlindCommand::Grant { .. } => "blind_grant",
            BlindCommand::PutWrap { .. } => "blind_put_wrap",
        }
    }
}

fn refuse<T>(why: &str) -> Result<T> {
    Err(Error::Blind(why.to_owned()))
}

impl BlindState {
    pub fn share(&self, principal: &str, kid: &str) -> Option<&ShareRecord> {
        self.shares.get(principal)?.get(kid)
    }

    /// Every share as (principal, kid, record).
    pub fn shares(&self) -> impl Iterator<Item = (&str, &str, &ShareRecord)> {
        self.shares
            .iter()
            .flat_map(|(p, m)| m.iter().map(move |(k, r)| (p.as_str(), k.as_str(), r)))
    }

    pub fn topic(&self, name: &str) -> Option<&BlindTopicRecord> {
        self.topics.get(name)
    }

    pub fn topics(&self) -> impl Iterator<Item = (&str, &BlindTopicRecord)> {
        self.topics.iter().map(|(n, r)| (n.as_str(), r))
    }

    pub fn has_grant(&self, principal: &str, name: &str) -> bool {
        self.grants.get(principal).is_some_and(|g| g.contains(name))
    }

    /// Every grant as (principal, topic).
    pub fn grants(&self) -> impl Iterator<Item = (&str, &str)> {
        self.grants
            .iter()
            .flat_map(|(p, g)| g.iter().map(move |t| (p.as_str(), t.as_str())))
    }

    pub fn wrap(&self, name: &str, dek_id: &str) -> Option<&[u8]> {
        self.wraps.get(name)?.get(dek_id).map(Vec::as_slice)
    }

    pub fn revocation_epoch(&self, kid: &str) -> i64 {
        self.revocations.get(kid).copied().unwrap_or(0)
    }

    /// Whether `principal`'s share for `kid` was revoked (and not issued
    /// again since). Revocations from before this was recorded are unknown.
    pub fn was_revoked(&self, principal: &str, kid: &str) -> bool {
        self.revoked.get(principal).is_some_and(|k| k.contains(kid))
    }

    /// Whether `principal` may see `name`: not blind, or an active share
    /// for its kid and a grant.
    pub fn visible(&self, principal: &str, name: &str) -> bool {
        match self.topics.get(name) {
            None => true,
            Some(t) => self.has_grant(principal, name) && self.share(principal, &t.kid).is_some(),
        }
    }

    pub(crate) fn check(
        &self,
        cmd: &BlindCommand,
        topic_exists: impl Fn(&str) -> bool,
    ) -> Result<()> {
        match cmd {
            BlindCommand::RegisterShare {
                principal, sealed, ..
            } => {
                if principal.is_empty() || sealed.is_empty() {
                    return refuse("empty principal or share");
                }
                if self.shares().count() >= MAX_SHARES {
                    return refuse("too many shares");
                }
                Ok(())
            }
            BlindCommand::RevokeShare { principal, kid } => match self.share(principal, kid) {
                Some(_) => Ok(()),
                None => refuse("no such share"),
            },
            BlindCommand::RegisterTopic { name, kid, .. } => {
                if !topic_exists(name) {
                    return Err(Error::UnknownTopic(name.clone()));
                }
                match self.topics.get(name) {
                    Some(t) if t.kid != *kid => refuse("topic is blind under another kid"),
                    _ => Ok(()),
                }
            }
            BlindCommand::Grant { principal, name } => {
                let Some(t) = self.topics.get(name) else {
                    return Err(Error::UnknownTopic(name.clone()));
                };
                if self.share(principal, &t.kid).is_none() {
                    return refuse("no such share");
                }
                Ok(())
            }
            BlindCommand::PutWrap { name, dek_id, wrap } => {
                if !self.topics.contains_key(name) {
                    return Err(Error::UnknownTopic(name.clone()));
                }
                let stored = self.wraps.get(name);
                match stored.and_then(|w| w.get(dek_id)) {
                    Some(w) if w != wrap => refuse("dek id already holds another wrap"),
                    None if stored.is_some_and(|w| w.len() >= MAX_WRAPS_PER_TOPIC) => {
                        refuse("too many data keys on this topic")
                    }
                    // Absent, or the same wrap again (idempotent retry).
                    Some(_) | None => Ok(()),
                }
            }
        }
    }

    pub(crate) fn apply(&mut self, cmd: BlindCommand) {
        match cmd {
            BlindCommand::RegisterShare {
                principal,
                kid,
                sealed,
                created_ms,
            } => {
                if let Some(k) = self.revoked.get_mut(&principal) {
                    k.remove(&kid);
                    if k.is_empty() {
                        self.revoked.remove(&principal);
                    }
                }
                self.shares
                    .entry(principal)
                    .or_default()
                    .insert(kid, ShareRecord { sealed, created_ms });
            }
            BlindCommand::RevokeShare { principal, kid } => {
                if let Some(m) = self.shares.get_mut(&principal) {
                    m.remove(&kid);
                    if m.is_empty() {
                        self.shares.remove(&principal);
                    }
                }
                if let Some(g) = self.grants.get_mut(&principal) {
                    g.retain(|t| self.topics.get(t).is_none_or(|r| r.kid != kid));
                    if g.is_empty() {
                        self.grants.remove(&principal);
                    }
                }
                self.revoked
                    .entry(principal)
                    .or_default()
                    .insert(kid.clone());
                *self.revocations.entry(kid).or_default() += 1;
            }
            BlindCommand::RegisterTopic {
                name,
                kid,
                created_by,
            } => {
                self.topics
                    .entry(name)
                    .or_insert(BlindTopicRecord { kid, created_by });
            }
            BlindCommand::Grant { principal, name } => {
                self.grants.entry(principal).or_default().insert(name);
            }
            BlindCommand::PutWrap { name, dek_id, wrap } => {
                self.wraps.entry(name).or_default().insert(dek_id, wrap);
            }
        }
    }

    /// A deleted topic takes its blind record, grants and wraps with it, so
    /// a later topic of the same name starts clean.
    pub(crate) fn forget_topic(&mut self, name: &str) {
        self.topics.remove(name);
        self.wraps.remove(name);
        for g in self.grants.values_mut() {
            g.remove(name);
        }
        self.grants.retain(|_, g| !g.is_empty());
    }
}

/// Lowercase hex, for kids and DEK ids used as keys.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apply(s: &mut BlindState, cmd: BlindCommand, exists: bool) -> Result<()> {
        s.check(&cmd, |_| exists)?;
        s.apply(cmd);
        Ok(())
    }

    #[test]
    fn grant_needs_share_and_revoke_drops_grants() {
        let mut s = BlindState::default();
        let share = |p: &str| BlindCommand::RegisterShare {
            principal: p.into(),
            kid: "6b".into(),
            sealed: vec![1],
            created_ms: 1,
        };
        let grant = |p: &str| BlindCommand::Grant {
            principal: p.into(),
            name: "vb1-x".into(),
        };
        let topic = BlindCommand::RegisterTopic {
            name: "vb1-x".into(),
            kid: "6b".into(),
            created_by: "User:a".into(),
        };
        assert!(apply(&mut s, topic.clone(), false).is_err());
        apply(&mut s, topic, true).unwrap();
        assert!(apply(&mut s, grant("User:a"), true).is_err());
        apply(&mut s, share("User:a"), true).unwrap();
        apply(&mut s, share("User:b"), true).unwrap();
        apply(&mut s, grant("User:a"), true).unwrap();
        apply(&mut s, grant("User:b"), true).unwrap();
        assert!(s.visible("User:a", "vb1-x") && s.visible("User:b", "vb1-x"));
        assert!(!s.visible("User:c", "vb1-x"));
        assert!(s.visible("User:c", "plain"));
        let revoke = BlindCommand::RevokeShare {
            principal: "User:b".into(),
            kid: "6b".into(),
        };
        apply(&mut s, revoke.clone(), true).unwrap();
        assert!(!s.visible("User:b", "vb1-x") && !s.has_grant("User:b", "vb1-x"));
        assert!(s.visible("User:a", "vb1-x"));
        assert_eq!(s.revocation_epoch("6b"), 1);
        assert!(s.was_revoked("User:b", "6b"));
        assert!(!s.was_revoked("User:c", "6b"), "never issued");
        assert!(apply(&mut s, revoke, true).is_err());
        // Re-registering does not bring the grant back.
        apply(&mut s, share("User:b"), true).unwrap();
        assert!(!s.visible("User:b", "vb1-x"));
        assert!(!s.was_revoked("User:b", "6b"), "issued again");
    }

    #[test]
    fn wraps_are_write_once() {
        let mut s = BlindState::default();
        let put = |w: u8| BlindCommand::PutWrap {
            name: "vb1-x".into(),
            dek_id: "00".into(),
            wrap: vec![w],
        };
        assert!(apply(&mut s, put(1), true).is_err());
        apply(
            &mut s,
            BlindCommand::RegisterTopic {
                name: "vb1-x".into(),
                kid: "6b".into(),
                created_by: "User:a".into(),
            },
            true,
        )
        .unwrap();
        apply(&mut s, put(1), true).unwrap();
        apply(&mut s, put(1), true).unwrap();
        assert!(apply(&mut s, put(2), true).is_err());
        assert_eq!(s.wrap("vb1-x", "00"), Some(&[1u8][..]));
        s.forget_topic("vb1-x");
        assert_eq!(s.wrap("vb1-x", "00"), None);
        assert!(s.topic("vb1-x").is_none());
    }

    #[test]
    fn hex_is_lowercase() {
        assert_eq!(hex(b"\x00\xabk"), "00ab6b");
    }
}
