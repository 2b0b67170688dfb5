//! The group coordinator for Kafka's classic consumer-group protocol, and
//! durable committed offsets.
//!
//! Start at [`classic::Group`]: one group as a pure, clock-driven state
//! machine (Empty → PreparingRebalance → CompletingRebalance → Stable,
//! static membership, KIP-394 member ids, session and rebalance timeouts).
//! [`coordinator::Coordinator`] holds every group and its offsets and turns
//! operations into replies and [`record::Record`]s; [`codec`] encodes those
//! as bounded binary entries, written as records of the replicated internal
//! topic [`offsets_topic`] (`__consumer_offsets`); [`store`] reads the
//! `<data_dir>/groups/` store of older versions, which moves into that
//! topic. [`service::GroupCoordinator`] is the only async part (locking,
//! partition leadership and loading, waiting for replication, waking
//! waiting JoinGroup/SyncGroup requests, the timer).
//! [`limits`] holds the caps requests are checked against before anything
//! reaches a record.

pub mod classic;
pub mod codec;
pub mod coordinator;
pub mod limits;
pub mod member;
pub mod metrics;
pub mod offsets_topic;
#[cfg(test)]
mod proptests;
pub mod record;
pub mod service;
pub mod store;
#[cfg(test)]
mod tests;

pub use classic::{Group, GroupState};
pub use coordinator::{Coordinator, CoordinatorConfig, Effects};
pub use member::{JoinRequest, JoinResult, Protocol, Reply, SyncResult, Waiter};
pub use service::GroupCoordinator;

/// The protocol type of Kafka consumers; OffsetDelete and lag metrics
/// understand its subscription format.
pub const CONSUMER_PROTOCOL_TYPE: &str = "consumer";
