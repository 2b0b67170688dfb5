//! One member of a classic group and the values group operations exchange.

use bytes::Bytes;
use kafka_protocol::ResponseError;

/// A token for a JoinGroup or SyncGroup response that waits for the group;
/// the async layer maps it to the waiting request.
pub type Waiter = u64;

/// A protocol a member supports, with its metadata (for consumers, the
/// serialized subscription).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Protocol {
    pub name: String,
    pub metadata: Bytes,
}

#[derive(Debug, Clone)]
pub struct Member {
    pub id: String,
    /// KIP-345 `group.instance.id`; `Some` makes the member static.
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub rebalance_timeout_ms: i32,
    pub session_timeout_ms: i32,
    /// In the member's order of preference.
    pub protocols: Vec<Protocol>,
    pub assignment: Bytes,
    /// A JoinGroup waiting for the rebalance to complete.
    pub(crate) awaiting_join: Option<Waiter>,
    /// A SyncGroup waiting for the leader's assignment.
    pub(crate) awaiting_sync: Option<Waiter>,
    /// Joined but never received a JoinGroup response; such members expire
    /// on their own (long) deadline even while awaiting the join.
    pub(crate) is_new: bool,
    /// When the member expires unless it heartbeats (or waits in a rebalance).
    pub(crate) heartbeat_deadline: i64,
}

impl Member {
    pub fn metadata_for(&self, protocol: &str) -> Bytes {
        self.protocols
            .iter()
            .find(|p| p.name == protocol)
            .map(|p| p.metadata.clone())
            .unwrap_or_default()
    }

    /// Kafka's `matches`: same protocols, same metadata, same order.
    pub(crate) fn matches(&self, protocols: &[Protocol]) -> bool {
        self.protocols == protocols
    }

    /// Members waiting inside a rebalance are alive by definition, except
    /// new ones (their socket may be gone and they would retry anyway).
    pub(crate) fn expired(&self, now: i64) -> bool {
        let keep_alive =
            !self.is_new && (self.awaiting_join.is_some() || self.awaiting_sync.is_some());
        now >= self.heartbeat_deadline && !keep_alive
    }
}

/// A JoinGroup as the state machine sees it.
#[derive(Debug, Clone)]
pub struct JoinRequest {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    pub protocol_type: String,
    pub protocols: Vec<Protocol>,
    /// JoinGroup v4+ without an instance id: answer MEMBER_ID_REQUIRED first (KIP-394).
    pub require_known_member_id: bool,
    /// The id to hand out if this join needs a new one (injected randomness).
    pub fresh_member_id: String,
    pub waiter: Waiter,
}

/// A member as the leader sees it in its JoinGroup response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinedMember {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub metadata: Bytes,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinResult {
    pub error: Option<ResponseError>,
    pub member_id: String,
    pub generation_id: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub leader: String,
    /// Filled for the leader only.
    pub members: Vec<JoinedMember>,
}

impl JoinResult {
    pub fn error(member_id: &str, error: ResponseError) -> JoinResult {
        JoinResult {
            error: Some(error),
            member_id: member_id.to_owned(),
            generation_id: -1,
            protocol_type: None,
            protocol_name: None,
            leader: String::new(),
            members: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncResult {
    pub error: Option<ResponseError>,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub assignment: Bytes,
}

impl SyncResult {
    pub fn error(error: ResponseError) -> SyncResult {
        SyncResult {
            error: Some(error),
            protocol_type: None,
            protocol_name: None,
            assignment: Bytes::new(),
        }
    }
}

/// A response the state machine completed, addressed to its waiter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Join(Waiter, JoinResult),
    Sync(Waiter, SyncResult),
}
