//! The crate's single error type. Messages carry offsets, sizes and positions, never record bytes.

use std::path::PathBuf;

/// Result alias used throughout `veil-log`.
pub type Result<T> = std::result::Result<T, Error>;

/// Everything that can go wrong in the partition log. The broker maps these to Kafka error codes at
/// the handler edge (`CorruptRecord` → CORRUPT_MESSAGE, `InvalidRecord` → INVALID_RECORD,
/// `RecordTooLarge` → MESSAGE_TOO_LARGE, `OffsetOutOfRange` → OFFSET_OUT_OF_RANGE,
/// `OutOfOrderSequence` → OUT_OF_ORDER_SEQUENCE_NUMBER, `InvalidProducerEpoch` →
/// INVALID_PRODUCER_EPOCH, `InvalidTxnState` → INVALID_TXN_STATE, `Removed` → UNKNOWN_TOPIC_OR_PARTITION, the rest → KAFKA_STORAGE_ERROR).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),

    /// A produced record set is structurally damaged: bad CRC, impossible length, truncated, trailing bytes.
    #[error("corrupt record: {0}")]
    CorruptRecord(String),

    /// A produced record set is well-formed but not acceptable: wrong magic, count/delta mismatch,
    /// unknown codec, control batch from a client.
    #[error("invalid record: {0}")]
    InvalidRecord(String),

    /// One batch is larger than `max_message_bytes`.
    #[error("record batch of {size} bytes exceeds the maximum of {max} bytes")]
    RecordTooLarge { size: usize, max: usize },

    #[error("offset {offset} is out of range [{log_start_offset}, {log_end_offset}]")]
    OffsetOutOfRange {
        offset: i64,
        log_start_offset: i64,
        log_end_offset: i64,
    },

    /// On-disk damage that recovery must not repair by itself (it would lose valid data).
    #[error("corrupt log segment {} at position {position}: {reason}", segment.display())]
    Corrupt {
        segment: PathBuf,
        position: u64,
        reason: String,
    },

    /// An idempotent producer's batch does not follow its last one (a gap, or a new epoch not
    /// starting at 0): OUT_OF_ORDER_SEQUENCE_NUMBER.
    #[error("out of order sequence number for producer {producer_id} epoch {epoch}: expected {expected}, received {received}")]
    OutOfOrderSequence {
        producer_id: i64,
        epoch: i16,
        expected: i32,
        received: i32,
    },

    /// An idempotent producer's epoch is older than the one the partition has seen:
    /// INVALID_PRODUCER_EPOCH.
    #[error("producer {producer_id} epoch {epoch} is older than the current epoch {current}")]
    InvalidProducerEpoch {
        producer_id: i64,
        epoch: i16,
        current: i16,
    },

    /// A batch that breaks the producer's transaction state: a
    /// non-transactional batch while its transaction is open (Kafka's
    /// INVALID_TXN_STATE).
    #[error("producer {producer_id}: {reason}")]
    InvalidTxnState { producer_id: i64, reason: String },

    /// A write or fsync failed earlier; the log refuses writes until it is reopened (recovery decides
    /// what actually reached the disk).
    #[error("partition log is poisoned after an I/O failure; reopen it to recover")]
    Poisoned,

    /// The log's directory was moved away to be deleted (its topic is gone).
    #[error("partition log was removed")]
    Removed,
}
