//! What the group coordinator persists: committed offsets, group metadata,
//! and their deletions. Encoded by [`super::codec`]; kept by
//! [`super::store`].
//!
//! `Deserialize` only reads the JSON records of stores written before the
//! binary format (see `codec::decode`); nothing is written as JSON any more.

use serde::Deserialize;

/// A committed offset as stored and served by OffsetFetch.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct CommittedOffset {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: String,
    pub commit_timestamp: i64,
    /// OffsetCommit v2–v4 could ask for its own retention; -1 otherwise.
    pub expire_timestamp: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct MemberRecord {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub rebalance_timeout_ms: i32,
    pub session_timeout_ms: i32,
    /// The member's metadata for the group's selected protocol.
    pub subscription: Vec<u8>,
    pub assignment: Vec<u8>,
}

/// A group's metadata when it became Stable or Empty.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct GroupRecord {
    pub group_id: String,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub generation_id: i32,
    pub leader: Option<String>,
    pub state_timestamp: i64,
    pub members: Vec<MemberRecord>,
}

/// `(topic, partition)`; committed offsets are kept per partition.
pub type TopicPartition = (String, i32);

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub enum Record {
    Group(GroupRecord),
    Offsets {
        group_id: String,
        offsets: Vec<(String, i32, CommittedOffset)>,
    },
    DeleteOffsets {
        group_id: String,
        partitions: Vec<TopicPartition>,
    },
    DeleteGroup {
        group_id: String,
    },
    /// Offsets committed inside a transaction (TxnOffsetCommit): pending
    /// until the transaction's marker reaches this partition.
    TxnOffsets {
        group_id: String,
        producer_id: i64,
        producer_epoch: i16,
        offsets: Vec<(String, i32, CommittedOffset)>,
    },
    /// The producer's transaction ended: its pending offsets of this group
    /// become committed (`commit`) or are dropped.
    TxnEnd {
        group_id: String,
        producer_id: i64,
        commit: bool,
    },
}

impl Record {
    pub fn group_id(&self) -> &str {
        match self {
            Record::Group(g) => &g.group_id,
            Record::Offsets { group_id, .. }
            | Record::DeleteOffsets { group_id, .. }
            | Record::DeleteGroup { group_id }
            | Record::TxnOffsets { group_id, .. }
            | Record::TxnEnd { group_id, .. } => group_id,
        }
    }
}
