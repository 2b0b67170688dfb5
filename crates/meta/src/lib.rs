//! Cluster metadata for Veil.
//!
//! Every change to what the cluster knows (topics and their replicas,
//! brokers, configs, ACLs, SCRAM credentials, blind-topic records) is a
//! [`MetaCommand`]. Commands are checked and applied by one deterministic
//! state machine, [`MetaState`], driven by the metadata quorum's Raft log
//! ([`raft`]): every node applies the same committed commands in the same
//! order, so every node holds the same state.
//!
//! Start reading at [`command`], then [`state_machine`], then [`raft`] (the
//! Raft log store and state machine openraft runs on). [`cluster`] holds
//! brokers, partition replica records and the leadership rules.
//! [`framing`] is the CRC-framed record format of the Raft log and the
//! broker's group store. [`transactions`] holds transaction coordinator
//! state. [`topic_config`] and [`broker_config`] know the
//! Kafka configs Veil serves and validate them.

pub mod acl;
pub mod blind;
pub mod broker_config;
pub mod cluster;
pub mod command;
pub mod elections;
pub mod error;
pub mod framing;
pub mod raft;
pub mod scram;
pub mod state_machine;
pub mod topic_config;
pub mod transactions;

pub use acl::AclBinding;
pub use blind::{BlindCommand, BlindState};
pub use cluster::{BrokerRecord, Endpoint, PartitionRecord};
pub use command::MetaCommand;
pub use error::{Error, Result};
pub use scram::ScramCredentialRecord;
pub use state_machine::{MetaState, TopicRecord};
pub use topic_config::{ConfigSource, TopicConfigs};
pub use transactions::{TxnCommand, TxnRecord, TxnState};
