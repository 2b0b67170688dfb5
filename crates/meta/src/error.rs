//! The metadata crate's error type. Handlers map these to Kafka error codes.

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("metadata i/o error: {0}")]
    Io(#[from] std::io::Error),
    #[error("metadata store {path} is corrupt at byte {position}: {reason}")]
    Corrupt {
        path: PathBuf,
        position: u64,
        reason: String,
    },
    #[error("topic '{0}' already exists")]
    TopicExists(String),
    #[error("topic '{0}' does not exist")]
    UnknownTopic(String),
    #[error("invalid topic name: {0}")]
    InvalidTopicName(String),
    #[error("invalid partition count: {0}")]
    InvalidPartitions(String),
    #[error("invalid replication factor: {0}")]
    InvalidReplicationFactor(String),
    #[error("invalid config: {0}")]
    InvalidConfig(String),
    #[error("a topic id collision happened; retry")]
    DuplicateTopicId,
    /// An `AllocateProducerIds` that does not start at the next free id (a lost race) or has a bad size.
    #[error("invalid producer id block: {0}")]
    InvalidProducerIdBlock(String),
    #[error("invalid ACL: {0}")]
    InvalidAcl(String),
    /// A blind-topic command that does not fit the state (no share, a wrap
    /// already stored, ...). Never carries secret material.
    #[error("blind topic metadata: {0}")]
    Blind(String),
    /// A broker registration or broker config that does not fit the state.
    #[error("invalid broker: {0}")]
    InvalidBroker(String),
    /// A partition or broker change made against an epoch that has moved on.
    #[error("stale epoch: {0}")]
    StaleEpoch(String),
    /// Cancelling or completing a partition move that is not under way.
    #[error("no reassignment: {0}")]
    NoReassignment(String),
    /// A transaction state change made against a record that has moved on
    /// (two coordinators raced; the loser retries or steps aside).
    #[error("transaction state: {0}")]
    TxnConflict(String),
}
