//! Metadata commands: the only way cluster metadata changes.
//!
//! Commands carry every value the state machine needs (topic ids are chosen
//! by the proposer, not the state machine), so applying the same sequence of
//! commands on any node gives the same state.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::cluster::Endpoint;
use crate::raft::Changes;
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
        /// Replica node ids per partition, chosen by the proposer from the
        /// live brokers it knew (the state machine checks they exist).
        /// Empty only in logs written before replicas were recorded.
        #[serde(default)]
        assignments: Vec<Vec<i32>>,
    },
    /// Deletes `name`, but only while it is still the topic with
    /// `topic_id`, so a topic recreated under the same name in between is
    /// never deleted by mistake.
    DeleteTopic { name: String, topic_id: Uuid },
    /// Grows a topic to `count` partitions (Kafka never shrinks), the new
    /// ones on `assignments` (empty only in logs written before replicas
    /// were recorded).
    CreatePartitions {
        name: String,
        count: i32,
        #[serde(default)]
        assignments: Vec<Vec<i32>>,
    },
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
    /// Names the cluster; applies only while it has no id yet.
    SetClusterId { cluster_id: String },
    /// A broker process announces itself. A new incarnation of a registered
    /// node replaces the old one (which is treated as gone: it leads nothing
    /// and leaves ISRs) and starts fenced.
    RegisterBroker {
        node_id: i32,
        incarnation: Uuid,
        listeners: Vec<Endpoint>,
        internal: Option<Endpoint>,
        rack: Option<String>,
    },
    /// The controller stopped hearing from the broker (its lease expired):
    /// it leads nothing and leaves ISRs. Ignored for another epoch.
    FenceBroker { node_id: i32, epoch: i64 },
    /// The broker heartbeats again and has caught up with metadata.
    UnfenceBroker { node_id: i32, epoch: i64 },
    /// The broker is shutting down (SIGTERM): leadership moves away first.
    ControlledShutdown { node_id: i32, epoch: i64 },
    /// Forgets a broker (`veil cluster unregister`); it must be fenced.
    UnregisterBroker { node_id: i32 },
    /// A partition leader changes the ISR (Kafka's AlterPartition). Refused
    /// unless `leader_epoch` and `partition_epoch` are current.
    AlterPartition {
        topic: String,
        partition: i32,
        leader: i32,
        leader_epoch: i32,
        partition_epoch: i32,
        isr: Vec<i32>,
    },
    /// AlterPartitionReassignments: move a partition's replicas to `target`,
    /// or cancel its move (`None`).
    ReassignPartition {
        topic: String,
        partition: i32,
        target: Option<Vec<i32>>,
    },
    /// The controller ends a move whose target replicas are all in sync.
    CompleteReassignment { topic: String, partition: i32 },
    /// Moves a partition's leadership to `leader` (preferred-leader or
    /// unclean election; the controller decides eligibility).
    ElectLeader {
        topic: String,
        partition: i32,
        leader: i32,
    },
    /// Dynamic broker configs (Kafka's BROKER resource): `target` is "" for
    /// the cluster-wide default or a node id.
    UpdateBrokerConfigs {
        target: String,
        set: TopicConfigs,
        remove: Vec<String>,
    },
    /// A transaction coordinator's state change for one transactional id.
    Transaction(crate::TxnCommand),
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
            MetaCommand::SetClusterId { .. } => "set_cluster_id",
            MetaCommand::RegisterBroker { .. } => "register_broker",
            MetaCommand::FenceBroker { .. } => "fence_broker",
            MetaCommand::UnfenceBroker { .. } => "unfence_broker",
            MetaCommand::ControlledShutdown { .. } => "controlled_shutdown",
            MetaCommand::UnregisterBroker { .. } => "unregister_broker",
            MetaCommand::AlterPartition { .. } => "alter_partition",
            MetaCommand::ElectLeader { .. } => "elect_leader",
            MetaCommand::ReassignPartition { .. } => "reassign_partition",
            MetaCommand::CompleteReassignment { .. } => "complete_reassignment",
            MetaCommand::UpdateBrokerConfigs { .. } => "update_broker_configs",
            MetaCommand::Transaction(_) => "transaction",
        }
    }

    /// Which parts of the state applying this command may change.
    pub fn changes(&self) -> Changes {
        let mut c = Changes::default();
        match self {
            MetaCommand::CreateTopic { .. }
            | MetaCommand::CreatePartitions { .. }
            | MetaCommand::ReplaceTopicConfigs { .. }
            | MetaCommand::UpdateTopicConfigs { .. }
            | MetaCommand::AlterPartition { .. }
            | MetaCommand::ElectLeader { .. }
            | MetaCommand::ReassignPartition { .. }
            | MetaCommand::CompleteReassignment { .. } => c.topics = true,
            MetaCommand::DeleteTopic { .. } => {
                c.topics = true;
                c.blind = true;
            }
            MetaCommand::CreateAcls { .. } | MetaCommand::DeleteAcls { .. } => c.acls = true,
            MetaCommand::AllocateProducerIds { .. } | MetaCommand::SetClusterId { .. } => {}
            MetaCommand::UpsertScramCredential { .. }
            | MetaCommand::DeleteScramCredential { .. } => c.scram = true,
            MetaCommand::Blind(_) => c.blind = true,
            MetaCommand::RegisterBroker { .. }
            | MetaCommand::FenceBroker { .. }
            | MetaCommand::UnfenceBroker { .. }
            | MetaCommand::ControlledShutdown { .. }
            | MetaCommand::UnregisterBroker { .. } => {
                c.brokers = true;
                c.topics = true;
            }
            MetaCommand::UpdateBrokerConfigs { .. } => c.configs = true,
            MetaCommand::Transaction(_) => c.transactions = true,
        }
        c
    }
}
