//! The metadata quorum's storage: a Raft log of [`MetaCommand`]s and the
//! state machine that applies them to [`MetaState`].
//!
//! Raft itself is openraft's; what lives here is what openraft asks of an
//! application (storage API v2):
//! * [`log_store::LogStore`] — the durable Raft log, vote and committed
//!   index. Every append and vote is fsynced before openraft is told it is
//!   done; after a failed write or fsync the store is poisoned and refuses
//!   everything, so the node stops voting instead of acknowledging what it
//!   did not persist.
//! * [`state_machine::MetaStateMachine`] — applies committed commands to the
//!   shared [`MetaView`], builds and installs snapshots.
//! * [`node::QuorumNode`] — starts a member: forms the quorum, or rejoins
//!   it without voting when its directory was lost.
//! * [`legacy`] — reads a data directory written before metadata was
//!   replicated, so it can be migrated into the first snapshot.
//!
//! The network is the broker's (it owns the listeners); this crate stays
//! free of sockets.

pub mod legacy;
pub mod log_store;
pub mod node;
pub mod state_machine;
mod view;

use serde::{Deserialize, Serialize};

use crate::{Error, MetaCommand};

pub use log_store::LogStore;
pub use node::{Peers, Probe, QuorumNode};
pub use state_machine::MetaStateMachine;
pub use view::{Changes, MetaView};

/// Raft node ids are Kafka node ids (never negative).
pub type NodeId = u64;

openraft::declare_raft_types!(
    /// The metadata quorum's Raft types: commands in, outcomes out.
    pub TypeConfig:
        D = MetaCommand,
        R = CommandOutcome,
        NodeId = NodeId,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = std::io::Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

/// The Raft handle of the metadata quorum.
pub type MetaRaft = openraft::Raft<TypeConfig>;
pub type LogId = openraft::LogId<NodeId>;
pub type Vote = openraft::Vote<NodeId>;
pub type Entry = openraft::Entry<TypeConfig>;
pub type StorageError = openraft::StorageError<NodeId>;
pub type StoredMembership = openraft::StoredMembership<NodeId, openraft::BasicNode>;
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, openraft::BasicNode>;

/// What applying one command did: committed entries always apply, but a
/// command that no longer fits the state (a topic created twice by racing
/// proposers) changes nothing and reports why.
pub type CommandOutcome = Result<(), Rejection>;

/// A command the state machine refused, in a form that crosses the network
/// (a forwarded proposal's answer) and turns back into [`Error`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "message", rename_all = "snake_case")]
pub enum Rejection {
    TopicExists(String),
    UnknownTopic(String),
    InvalidTopicName(String),
    InvalidPartitions(String),
    InvalidReplicationFactor(String),
    InvalidConfig(String),
    DuplicateTopicId,
    InvalidProducerIdBlock(String),
    InvalidAcl(String),
    Blind(String),
    InvalidBroker(String),
    StaleEpoch(String),
    NoReassignment(String),
    /// Anything else (never expected from `check`); the text is for logs.
    Other(String),
}

impl From<Error> for Rejection {
    fn from(e: Error) -> Rejection {
        match e {
            Error::TopicExists(s) => Rejection::TopicExists(s),
            Error::UnknownTopic(s) => Rejection::UnknownTopic(s),
            Error::InvalidTopicName(s) => Rejection::InvalidTopicName(s),
            Error::InvalidPartitions(s) => Rejection::InvalidPartitions(s),
            Error::InvalidReplicationFactor(s) => Rejection::InvalidReplicationFactor(s),
            Error::InvalidConfig(s) => Rejection::InvalidConfig(s),
            Error::DuplicateTopicId => Rejection::DuplicateTopicId,
            Error::InvalidProducerIdBlock(s) => Rejection::InvalidProducerIdBlock(s),
            Error::InvalidAcl(s) => Rejection::InvalidAcl(s),
            Error::Blind(s) => Rejection::Blind(s),
            Error::InvalidBroker(s) => Rejection::InvalidBroker(s),
            Error::StaleEpoch(s) => Rejection::StaleEpoch(s),
            Error::NoReassignment(s) => Rejection::NoReassignment(s),
            other => Rejection::Other(other.to_string()),
        }
    }
}

impl From<Rejection> for Error {
    fn from(r: Rejection) -> Error {
        match r {
            Rejection::TopicExists(s) => Error::TopicExists(s),
            Rejection::UnknownTopic(s) => Error::UnknownTopic(s),
            Rejection::InvalidTopicName(s) => Error::InvalidTopicName(s),
            Rejection::InvalidPartitions(s) => Error::InvalidPartitions(s),
            Rejection::InvalidReplicationFactor(s) => Error::InvalidReplicationFactor(s),
            Rejection::InvalidConfig(s) => Error::InvalidConfig(s),
            Rejection::DuplicateTopicId => Error::DuplicateTopicId,
            Rejection::InvalidProducerIdBlock(s) => Error::InvalidProducerIdBlock(s),
            Rejection::InvalidAcl(s) => Error::InvalidAcl(s),
            Rejection::Blind(s) => Error::Blind(s),
            Rejection::InvalidBroker(s) => Error::InvalidBroker(s),
            Rejection::StaleEpoch(s) => Error::StaleEpoch(s),
            Rejection::NoReassignment(s) => Error::NoReassignment(s),
            Rejection::Other(s) => Error::Io(std::io::Error::other(s)),
        }
    }
}

/// Raft timing and log-size settings of the quorum.
#[derive(Debug, Clone)]
pub struct QuorumSettings {
    /// The leader's heartbeat (empty AppendEntries) interval.
    pub heartbeat_ms: u64,
    /// A follower that hears nothing for a random time in
    /// `[election_timeout_ms, 2 * election_timeout_ms)` starts an election.
    pub election_timeout_ms: u64,
    /// Snapshot after this many applied entries; the log before it is purged.
    pub snapshot_every: u64,
    /// Entries kept behind a snapshot so a briefly lagging follower catches
    /// up from the log rather than from a whole snapshot.
    pub keep_behind_snapshot: u64,
}

impl Default for QuorumSettings {
    fn default() -> Self {
        QuorumSettings {
            heartbeat_ms: 150,
            election_timeout_ms: 1000,
            snapshot_every: 1000,
            keep_behind_snapshot: 200,
        }
    }
}

impl QuorumSettings {
    /// openraft's config for these settings.
    pub fn raft_config(&self, cluster_name: &str) -> Result<openraft::Config, String> {
        let config = openraft::Config {
            cluster_name: cluster_name.to_owned(),
            heartbeat_interval: self.heartbeat_ms,
            election_timeout_min: self.election_timeout_ms,
            election_timeout_max: self.election_timeout_ms * 2,
            install_snapshot_timeout: self.election_timeout_ms.max(1000) * 4,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(self.snapshot_every),
            max_in_snapshot_log_to_keep: self.keep_behind_snapshot,
            ..openraft::Config::default()
        };
        config.validate().map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests;
