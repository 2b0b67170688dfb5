//! The deterministic metadata state machine.
//!
//! [`MetaState::check`] decides whether a command is valid against the
//! current state without changing it; [`MetaState::apply`] checks and then
//! applies. Both are pure: no clock, no randomness, no I/O.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{topic_config, Error, MetaCommand, Result, TopicConfigs};

/// Kafka's limit on topic name length.
pub const MAX_TOPIC_NAME_LEN: usize = 249;
/// An upper bound on partitions per topic, so one request cannot make a
/// broker open a million files.
pub const MAX_PARTITIONS: i32 = 10_000;

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
}
