//! Metadata commands: the only way cluster metadata changes.
//!
//! Commands carry every value the state machine needs (topic ids are chosen
//! by the proposer, not the state machine), so applying the same sequence of
//! commands on any node gives the same state.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::TopicConfigs;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum MetaCommand {
    CreateTopic {
        name: String,
        topic_id: Uuid,
        partitions: i32,
        replication_factor: i16,
        configs: TopicConfigs,
    },
    /// Deletes `name`, but only while it is still the topic with
    /// `topic_id`, so a topic recreated under the same name in between is
    /// never deleted by mistake.
    DeleteTopic { name: String, topic_id: Uuid },
    /// Grows a topic to `count` partitions (Kafka never shrinks).
    CreatePartitions { name: String, count: i32 },
    /// `AlterConfigs`: the given map replaces every topic override.
    ReplaceTopicConfigs { name: String, configs: TopicConfigs },
    /// `IncrementalAlterConfigs`: set some keys, remove others.
    UpdateTopicConfigs {
        name: String,
        set: TopicConfigs,
        remove: Vec<String>,
    },
}

impl MetaCommand {
    /// A short name for logs and metrics (never includes values).
    pub fn kind(&self) -> &'static str {
        match self {
            MetaCommand::CreateTopic { .. } => "create_topic",
            MetaCommand::DeleteTopic { .. } => "delete_topic",
            MetaCommand::CreatePartitions { .. } => "create_partitions",
            MetaCommand::ReplaceTopicConfigs { .. } => "replace_topic_configs",
            MetaCommand::UpdateTopicConfigs { .. } => "update_topic_configs",
        }
    }
}
