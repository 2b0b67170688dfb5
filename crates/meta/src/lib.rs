//! Cluster metadata for Veil.
//!
//! Every change to what the cluster knows (topics, their ids, partition
//! counts and configs) is a [`MetaCommand`]. Commands are checked and applied
//! by one deterministic state machine, [`MetaState`], so that a replicated
//! log (Raft) can later drive the same code. On a single node, [`MetaStore`]
//! persists commands in a local append-only log with periodic snapshots.
//!
//! Start reading at [`command`], then [`state_machine`], then [`store`].
//! [`framing`] is the CRC-framed record format both the metadata log and
//! the broker's group store use.
//! [`topic_config`] knows the Kafka topic configs Veil serves and validates them.

pub mod acl;
pub mod blind;
pub mod command;
pub mod error;
pub mod framing;
pub mod scram;
pub mod state_machine;
pub mod store;
pub mod topic_config;

pub use acl::AclBinding;
pub use blind::{BlindCommand, BlindState};
pub use command::MetaCommand;
pub use error::{Error, Result};
pub use scram::ScramCredentialRecord;
pub use state_machine::{MetaState, TopicRecord};
pub use store::MetaStore;
pub use topic_config::{ConfigSource, TopicConfigs};
