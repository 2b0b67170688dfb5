//! Metadata commands: the only way cluster metadata changes.
//!
//! Commands carry every value the state machine needs (topic ids are chosen
//! by the proposer, not the state machine), so applying the same sequence of
//! commands on any node gives the same state.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{AclBinding, ScramCredentialRecord, TopicConfigs};

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
    /// `CreateAcls`: stores bindings; one already stored is left as it is.
    CreateAcls { bindings: Vec<AclBinding> },
    /// `DeleteAcls`, with filters already resolved to the bindings they
    /// matched (as KRaft does), so applying it needs no filter logic and a
    /// binding that is already gone is simply skipped.
    DeleteAcls { bindings: Vec<AclBinding> },
    /// Reserves producer ids `[block_start, block_start + block_size)` for idempotent producers
    /// (InitProducerId). `block_start` must equal the state's next free id, so two proposers
    /// racing for the same block cannot both win and no id is ever handed out twice, even across
    /// restarts.
    AllocateProducerIds { block_start: i64, block_size: i64 },
    /// `AlterUserScramCredentials` upsertion: the broker derived the keys
    /// from the salted password, which is not kept.
    UpsertScramCredential {
        user: String,
        mechanism: String,
        credential: ScramCredentialRecord,
    },
    /// `AlterUserScramCredentials` deletion.
    DeleteScramCredential { user: String, mechanism: String },
    /// Blind topics: shares, grants, blind-topic records, DEK wraps.
    Blind(crate::blind::BlindCommand),
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
            MetaCommand::CreateAcls { .. } => "create_acls",
            MetaCommand::DeleteAcls { .. } => "delete_acls",
            MetaCommand::AllocateProducerIds { .. } => "allocate_producer_ids",
            MetaCommand::UpsertScramCredential { .. } => "upsert_scram_credential",
            MetaCommand::DeleteScramCredential { .. } => "delete_scram_credential",
            MetaCommand::Blind(c) => c.kind(),
        }
    }
}
