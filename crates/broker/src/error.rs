//! The broker's error type and its mapping to Kafka error codes, which
//! happens here and only here.

use kafka_protocol::ResponseError;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Log(#[from] veil_log::Error),
    #[error(transparent)]
    Meta(#[from] veil_meta::Error),
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    #[error("unknown topic or partition")]
    UnknownTopicOrPartition,
    #[error("unknown topic id")]
    UnknownTopicId,
    #[error("the partition's log failed to sync and refuses writes")]
    Poisoned,
    #[error("the partition is offline: its log could not be opened")]
    Offline,
    #[error("{0}")]
    InvalidRequest(String),
    #[error("invalid configuration: {0}")]
    Config(String),
    /// An ACL refused the action; the code names the resource kind
    /// (TOPIC_, GROUP_, CLUSTER_, TRANSACTIONAL_ID_AUTHORIZATION_FAILED).
    #[error("authorization failed")]
    Unauthorized(ResponseError),
    /// Another node leads the partition (or none does right now).
    #[error("this node does not lead the partition (leader: {leader}, epoch {leader_epoch})")]
    NotLeader { leader: i32, leader_epoch: i32 },
    /// Fewer in-sync replicas than `min.insync.replicas` (before or after
    /// the append).
    #[error("not enough in-sync replicas")]
    NotEnoughReplicas { after_append: bool },
    /// acks=all was not reached within the request's timeout.
    #[error("the record was not replicated within the request timeout")]
    ProduceTimeout,
    /// The metadata quorum has no reachable leader.
    #[error("the metadata quorum has no controller right now; retry")]
    NoController,
    /// A metadata change was sent but not confirmed in time: it may or may
    /// not have happened.
    #[error("the metadata change was not confirmed in time: {0}")]
    MetadataTimeout(String),
}

impl Error {
    /// The Kafka error a client should see for this failure.
    pub fn response_error(&self) -> ResponseError {
        use veil_log::Error as L;
        use veil_meta::Error as M;
        match self {
            Error::Log(e) => match e {
                L::CorruptRecord(_) => ResponseError::CorruptMessage,
                L::InvalidRecord(_) => ResponseError::InvalidRecord,
                L::RecordTooLarge { .. } => ResponseError::MessageTooLarge,
                L::OffsetOutOfRange { .. } => ResponseError::OffsetOutOfRange,
                L::OutOfOrderSequence { .. } => ResponseError::OutOfOrderSequenceNumber,
                // Since Kafka 2.7 a stale epoch on produce is INVALID_PRODUCER_EPOCH, not the
                // fatal PRODUCER_FENCED, for every Produce version.
                L::InvalidProducerEpoch { .. } => ResponseError::InvalidProducerEpoch,
                L::InvalidTxnState { .. } => ResponseError::InvalidTxnState,
                L::Removed => ResponseError::UnknownTopicOrPartition,
                L::Io(_) | L::Corrupt { .. } | L::Poisoned => ResponseError::KafkaStorageError,
            },
            Error::Meta(e) => match e {
                M::TopicExists(_) => ResponseError::TopicAlreadyExists,
                M::UnknownTopic(_) => ResponseError::UnknownTopicOrPartition,
                M::InvalidTopicName(_) => ResponseError::InvalidTopicException,
                M::InvalidPartitions(_) => ResponseError::InvalidPartitions,
                M::InvalidReplicationFactor(_) => ResponseError::InvalidReplicationFactor,
                M::InvalidConfig(_) => ResponseError::InvalidConfig,
                M::InvalidAcl(_) | M::Blind(_) | M::InvalidBroker(_) => {
                    ResponseError::InvalidRequest
                }
                M::StaleEpoch(_) => ResponseError::FencedLeaderEpoch,
                M::NoReassignment(_) => ResponseError::NoReassignmentInProgress,
                M::TxnConflict(_) => ResponseError::ConcurrentTransactions,
                M::DuplicateTopicId
                | M::InvalidProducerIdBlock(_)
                | M::Io(_)
                | M::Corrupt { .. } => ResponseError::UnknownServerError,
            },
            Error::Io(_) | Error::Poisoned | Error::Offline => ResponseError::KafkaStorageError,
            Error::UnknownTopicOrPartition => ResponseError::UnknownTopicOrPartition,
            Error::UnknownTopicId => ResponseError::UnknownTopicId,
            Error::InvalidRequest(_) => ResponseError::InvalidRequest,
            Error::Config(_) => ResponseError::InvalidConfig,
            Error::Unauthorized(error) => *error,
            Error::NotLeader { .. } => ResponseError::NotLeaderOrFollower,
            Error::NoController => ResponseError::NotController,
            Error::NotEnoughReplicas {
                after_append: false,
            } => ResponseError::NotEnoughReplicas,
            Error::NotEnoughReplicas { after_append: true } => {
                ResponseError::NotEnoughReplicasAfterAppend
            }
            Error::ProduceTimeout | Error::MetadataTimeout(_) => ResponseError::RequestTimedOut,
        }
    }

    pub fn code(&self) -> i16 {
        self.response_error().code()
    }

    /// A message safe to send to clients: validation errors say what to fix;
    /// storage failures stay generic (details go to the broker log).
    pub fn client_message(&self) -> String {
        match self {
            Error::Log(veil_log::Error::Io(_) | veil_log::Error::Corrupt { .. })
            | Error::Io(_)
            | Error::Meta(veil_meta::Error::Io(_) | veil_meta::Error::Corrupt { .. }) => {
                "storage error on the broker".to_owned()
            }
            other => other.to_string(),
        }
    }
}
