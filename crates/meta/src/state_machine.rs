//! The deterministic metadata state machine.
//!
//! [`MetaState::check`] decides whether a command is valid against the
//! current state without changing it; [`MetaState::apply`] checks and then
//! applies. Both are pure: no clock, no randomness, no I/O.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{
    scram, topic_config, AclBinding, Error, MetaCommand, Result, ScramCredentialRecord,
    TopicConfigs,
};

/// Kafka's limit on topic name length.
pub const MAX_TOPIC_NAME_LEN: usize = 249;
/// An upper bound on partitions per topic, so one request cannot make a
/// broker open a million files.
pub const MAX_PARTITIONS: i32 = 10_000;
/// An upper bound on stored ACL bindings: every authorization scans the
/// bindings of one resource type, so their number must stay bounded.
pub const MAX_ACLS: usize = 100_000;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicRecord {
    pub name: String,
    pub topic_id: Uuid,
    pub partitions: i32,
    pub replication_factor: i16,
    pub configs: TopicConfigs,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetaState {
    topics: BTreeMap<String, TopicRecord>,
    /// ACL bindings, sorted and deduplicated (Kafka stores each once).
    /// `default` keeps snapshots written before ACLs existed readable.
    #[serde(default)]
    acls: BTreeSet<AclBinding>,
    /// SCRAM credentials: user → mechanism name → credential.
    #[serde(default)]
    scram: BTreeMap<String, BTreeMap<String, ScramCredentialRecord>>,
    /// The first producer id not yet reserved by `AllocateProducerIds`. `default` (0) keeps
    /// older snapshots readable.
    #[serde(default)]
    next_producer_id: i64,
    /// Blind topics (shares sealed by the broker, grants, wraps).
    #[serde(default)]
    blind: crate::blind::BlindState,
    /// Index of the last command applied; a snapshot records it so that
    /// replay starts after it.
    last_applied: u64,
}

/// Checks a topic name by Kafka's rules: 1–249 chars of `[a-zA-Z0-9._-]`,
/// not `.` or `..`.
pub fn validate_topic_name(name: &str) -> Result<()> {
    let bad = |why: &str| Err(Error::InvalidTopicName(format!("'{name}' {why}")));
    if name.is_empty() {
        return bad("is empty");
    }
    if name.len() > MAX_TOPIC_NAME_LEN {
        return bad("is longer than 249 characters");
    }
    if name == "." || name == ".." {
        return bad("is not allowed");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return bad("may contain only ASCII letters, digits, '.', '_' and '-'");
    }
    Ok(())
}

impl MetaState {
    pub fn topics(&self) -> impl Iterator<Item = &TopicRecord> {
        self.topics.values()
    }

    pub fn topic(&self, name: &str) -> Option<&TopicRecord> {
        self.topics.get(name)
    }

    pub fn topic_by_id(&self, id: Uuid) -> Option<&TopicRecord> {
        self.topics.values().find(|t| t.topic_id == id)
    }

    /// Every stored ACL binding, sorted by resource type first.
    pub fn acls(&self) -> impl Iterator<Item = &AclBinding> {
        self.acls.iter()
    }

    /// The first producer id no block has reserved yet.
    pub fn next_producer_id(&self) -> i64 {
        self.next_producer_id
    }

    /// The SCRAM credential of `user` for `mechanism` (e.g. `SCRAM-SHA-256`).
    pub fn scram_credential(&self, user: &str, mechanism: &str) -> Option<&ScramCredentialRecord> {
        self.scram.get(user)?.get(mechanism)
    }

    /// Every user with SCRAM credentials, with their credentials by mechanism.
    pub fn scram_users(
        &self,
    ) -> impl Iterator<Item = (&String, &BTreeMap<String, ScramCredentialRecord>)> {
        self.scram.iter()
    }

    /// Blind-topic metadata.
    pub fn blind(&self) -> &crate::blind::BlindState {
        &self.blind
    }

    pub fn last_applied(&self) -> u64 {
        self.last_applied
    }

    /// Whether `cmd` would apply cleanly, without changing anything.
    pub fn check(&self, cmd: &MetaCommand) -> Result<()> {
        match cmd {
            MetaCommand::CreateTopic {
                name,
                topic_id,
                partitions,
                replication_factor,
                configs,
            } => {
                validate_topic_name(name)?;
                if self.topics.contains_key(name) {
                    return Err(Error::TopicExists(name.clone()));
                }
                if self.topic_collides(name) {
                    return Err(Error::InvalidTopicName(format!(
                        "'{name}' collides with an existing topic once '.' and '_' are treated alike"
                    )));
                }
                if topic_id.is_nil() || self.topic_by_id(*topic_id).is_some() {
                    return Err(Error::DuplicateTopicId);
                }
                check_partitions(*partitions)?;
                if *replication_factor != 1 {
                    return Err(Error::InvalidReplicationFactor(format!(
                        "replication factor {replication_factor} needs more brokers than this cluster has (1)"
                    )));
                }
                topic_config::validate_all(configs)
            }
            MetaCommand::DeleteTopic { name, topic_id } => match self.existing(name)? {
                t if t.topic_id == *topic_id => Ok(()),
                _ => Err(Error::UnknownTopic(name.clone())),
            },
            MetaCommand::CreatePartitions { name, count } => {
                let topic = self.existing(name)?;
                check_partitions(*count)?;
                if *count <= topic.partitions {
                    return Err(Error::InvalidPartitions(format!(
                        "topic '{name}' has {} partitions; the new count must be larger, got {count}",
                        topic.partitions
                    )));
                }
                Ok(())
            }
            MetaCommand::ReplaceTopicConfigs { name, configs } => {
                self.existing(name)?;
                topic_config::validate_all(configs)
            }
            MetaCommand::UpdateTopicConfigs { name, set, remove } => {
                self.existing(name)?;
                topic_config::validate_all(set)?;
                match remove
                    .iter()
                    .find(|k| topic_config::definition(k).is_none())
                {
                    Some(k) => Err(Error::InvalidConfig(format!("unknown topic config '{k}'"))),
                    None => Ok(()),
                }
            }
            MetaCommand::CreateAcls { bindings } => {
                bindings.iter().try_for_each(AclBinding::validate)?;
                let new = bindings.iter().filter(|b| !self.acls.contains(*b)).count();
                if self.acls.len() + new > MAX_ACLS {
                    return Err(Error::InvalidAcl(format!(
                        "the cluster already holds {} ACLs; at most {MAX_ACLS} are allowed",
                        self.acls.len()
                    )));
                }
                Ok(())
            }
            // Deleting what is not stored is a no-op: a concurrent DeleteAcls
            // may have removed it first.
            MetaCommand::DeleteAcls { .. } => Ok(()),
            MetaCommand::AllocateProducerIds {
                block_start,
                block_size,
            } => check_producer_id_block(self.next_producer_id, *block_start, *block_size),
            MetaCommand::UpsertScramCredential {
                user,
                mechanism,
                credential,
            } => scram::validate(user, mechanism, Some(credential)),
            // Deleting an absent credential is refused by the handler
            // (RESOURCE_NOT_FOUND); here it is a harmless no-op.
            MetaCommand::DeleteScramCredential { user, mechanism } => {
                scram::validate(user, mechanism, None)
            }
            MetaCommand::Blind(c) => self.blind.check(c, |n| self.topics.contains_key(n)),
        }
    }

    /// Checks and applies `cmd` as command number `index`.
    pub fn apply(&mut self, index: u64, cmd: &MetaCommand) -> Result<()> {
        self.check(cmd)?;
        match cmd.clone() {
            MetaCommand::CreateTopic {
                name,
                topic_id,
                partitions,
                replication_factor,
                configs,
            } => {
                self.topics.insert(
                    name.clone(),
                    TopicRecord {
                        name,
                        topic_id,
                        partitions,
                        replication_factor,
                        configs,
                    },
                );
            }
            MetaCommand::DeleteTopic { name, .. } => {
                self.topics.remove(&name);
                self.blind.forget_topic(&name);
            }
            MetaCommand::CreatePartitions { name, count } => {
                self.existing_mut(&name)?.partitions = count;
            }
            MetaCommand::ReplaceTopicConfigs { name, configs } => {
                self.existing_mut(&name)?.configs = configs;
            }
            MetaCommand::UpdateTopicConfigs { name, set, remove } => {
                let topic = self.existing_mut(&name)?;
                for key in remove {
                    topic.configs.remove(&key);
                }
                topic.configs.extend(set);
            }
            MetaCommand::CreateAcls { bindings } => self.acls.extend(bindings),
            MetaCommand::DeleteAcls { bindings } => {
                for b in &bindings {
                    self.acls.remove(b);
                }
            }
            MetaCommand::AllocateProducerIds {
                block_start,
                block_size,
            } => self.next_producer_id = block_start + block_size,
            MetaCommand::UpsertScramCredential {
                user,
                mechanism,
                credential,
            } => {
                self.scram
                    .entry(user)
                    .or_default()
                    .insert(mechanism, credential);
            }
            MetaCommand::DeleteScramCredential { user, mechanism } => {
                if let Some(m) = self.scram.get_mut(&user) {
                    m.remove(&mechanism);
                    if m.is_empty() {
                        self.scram.remove(&user);
                    }
                }
            }
            MetaCommand::Blind(c) => self.blind.apply(c),
        }
        self.last_applied = index;
        Ok(())
    }

    fn existing(&self, name: &str) -> Result<&TopicRecord> {
        self.topics
            .get(name)
            .ok_or_else(|| Error::UnknownTopic(name.to_owned()))
    }

    fn existing_mut(&mut self, name: &str) -> Result<&mut TopicRecord> {
        self.topics
            .get_mut(name)
            .ok_or_else(|| Error::UnknownTopic(name.to_owned()))
    }

    /// Kafka forbids topics whose names differ only by '.' vs '_' because
    /// their metric names would collide.
    fn topic_collides(&self, name: &str) -> bool {
        let norm = |s: &str| s.replace('.', "_");
        let wanted = norm(name);
        self.topics.keys().any(|k| norm(k) == wanted)
    }
}

/// Largest producer-id block one command may reserve (Kafka's blocks hold 1000).
pub const MAX_PRODUCER_ID_BLOCK: i64 = 1_000_000;

/// A block must start at the next free id and stay below `i64::MAX`.
fn check_producer_id_block(next: i64, start: i64, size: i64) -> Result<()> {
    if start != next {
        return Err(Error::InvalidProducerIdBlock(format!(
            "block starts at {start} but the next free producer id is {next}"
        )));
    }
    if !(1..=MAX_PRODUCER_ID_BLOCK).contains(&size) || start.checked_add(size).is_none() {
        return Err(Error::InvalidProducerIdBlock(format!(
            "block of {size} ids at {start} is empty, too large or overflows"
        )));
    }
    Ok(())
}

fn check_partitions(count: i32) -> Result<()> {
    if (1..=MAX_PARTITIONS).contains(&count) {
        Ok(())
    } else {
        Err(Error::InvalidPartitions(format!(
            "partition count must be between 1 and {MAX_PARTITIONS}, got {count}"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn create(name: &str, partitions: i32) -> MetaCommand {
        MetaCommand::CreateTopic {
            name: name.into(),
            topic_id: Uuid::new_v4(),
            partitions,
            replication_factor: 1,
            configs: TopicConfigs::new(),
        }
    }

    #[test]
    fn create_delete_and_grow() {
        let mut s = MetaState::default();
        s.apply(1, &create("a", 3)).unwrap();
        assert_eq!(s.topic("a").unwrap().partitions, 3);
        assert!(matches!(
            s.apply(2, &create("a", 1)),
            Err(Error::TopicExists(_))
        ));
        assert_eq!(s.last_applied(), 1, "a failed command is not applied");
        s.apply(
            2,
            &MetaCommand::CreatePartitions {
                name: "a".into(),
                count: 5,
            },
        )
        .unwrap();
        assert_eq!(s.topic("a").unwrap().partitions, 5);
        assert!(matches!(
            s.apply(
                3,
                &MetaCommand::CreatePartitions {
                    name: "a".into(),
                    count: 5
                }
            ),
            Err(Error::InvalidPartitions(_))
        ));
        let id = s.topic("a").unwrap().topic_id;
        assert!(
            s.check(&MetaCommand::DeleteTopic {
                name: "a".into(),
                topic_id: Uuid::new_v4()
            })
            .is_err(),
            "a delete aimed at another incarnation of the name is refused"
        );
        s.apply(
            3,
            &MetaCommand::DeleteTopic {
                name: "a".into(),
                topic_id: id,
            },
        )
        .unwrap();
        assert!(s.topic("a").is_none());
        assert!(matches!(
            s.apply(
                4,
                &MetaCommand::DeleteTopic {
                    name: "a".into(),
                    topic_id: id
                }
            ),
            Err(Error::UnknownTopic(_))
        ));
    }

    #[test]
    fn names_partitions_and_configs_are_validated() {
        let s = MetaState::default();
        for bad in ["", ".", "..", "a b", "ü", &"x".repeat(250)] {
            assert!(s.check(&create(bad, 1)).is_err(), "{bad:?}");
        }
        assert!(s.check(&create("ok.name_-1", 1)).is_ok());
        assert!(s.check(&create("t", 0)).is_err());
        assert!(s.check(&create("t", MAX_PARTITIONS + 1)).is_err());
        let mut with_cfg = create("t", 1);
        if let MetaCommand::CreateTopic { configs, .. } = &mut with_cfg {
            configs.insert("retention.ms".into(), "abc".into());
        }
        assert!(matches!(s.check(&with_cfg), Err(Error::InvalidConfig(_))));
    }

    #[test]
    fn dot_underscore_collision_is_refused() {
        let mut s = MetaState::default();
        s.apply(1, &create("a.b", 1)).unwrap();
        assert!(matches!(
            s.check(&create("a_b", 1)),
            Err(Error::InvalidTopicName(_))
        ));
    }

    #[test]
    fn incremental_and_replacing_config_updates() {
        let mut s = MetaState::default();
        s.apply(1, &create("t", 1)).unwrap();
        let set = TopicConfigs::from([("retention.ms".to_owned(), "10".to_owned())]);
        s.apply(
            2,
            &MetaCommand::UpdateTopicConfigs {
                name: "t".into(),
                set,
                remove: vec![],
            },
        )
        .unwrap();
        assert_eq!(s.topic("t").unwrap().configs["retention.ms"], "10");
        s.apply(
            3,
            &MetaCommand::UpdateTopicConfigs {
                name: "t".into(),
                set: TopicConfigs::new(),
                remove: vec!["retention.ms".into()],
            },
        )
        .unwrap();
        assert!(s.topic("t").unwrap().configs.is_empty());
        let replace = TopicConfigs::from([("segment.ms".to_owned(), "100".to_owned())]);
        s.apply(
            4,
            &MetaCommand::ReplaceTopicConfigs {
                name: "t".into(),
                configs: replace,
            },
        )
        .unwrap();
        assert_eq!(s.topic("t").unwrap().configs.len(), 1);
    }

    #[test]
    fn producer_id_blocks_are_contiguous_and_never_reissued() {
        let mut s = MetaState::default();
        let block = |block_start, block_size| MetaCommand::AllocateProducerIds {
            block_start,
            block_size,
        };
        s.apply(1, &block(0, 1000)).unwrap();
        assert_eq!(s.next_producer_id(), 1000);
        // A proposer that read the old high-water mark lost the race.
        assert!(matches!(
            s.apply(2, &block(0, 1000)),
            Err(Error::InvalidProducerIdBlock(_))
        ));
        for bad in [
            block(1000, 0),
            block(1000, -5),
            block(1000, MAX_PRODUCER_ID_BLOCK + 1),
        ] {
            assert!(s.check(&bad).is_err(), "{bad:?}");
        }
        s.apply(2, &block(1000, 10)).unwrap();
        assert_eq!(s.next_producer_id(), 1010);
        // The high-water mark survives serialization (what a snapshot stores).
        let copy: MetaState = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        assert_eq!(copy.next_producer_id(), 1010);
        let near_end = MetaState {
            next_producer_id: i64::MAX - 5,
            ..MetaState::default()
        };
        assert!(near_end.check(&block(i64::MAX - 5, 10)).is_err());
        // Snapshots from before producer ids existed still load.
        let old: MetaState = serde_json::from_str(r#"{"topics":{},"last_applied":3}"#).unwrap();
        assert_eq!(old.next_producer_id(), 0);
    }
}
