//! Veil's Rust SDK.
//!
//! [`connection::Connection`] speaks the Kafka protocol to one broker
//! (version negotiation through ApiVersions, pipelining-free request/response).
//! [`admin::Admin`] builds the standard admin operations on it, so the CLI
//! works against any Kafka-compatible broker; [`cluster`] adds the cluster's
//! (DescribeCluster, DescribeQuorum, broker configs).

pub mod acl;
pub mod admin;
pub mod blind;
pub mod blind_data;
pub mod cluster;
pub mod connection;
pub mod error;
pub mod groups;
pub mod scram;
pub mod sealed;
pub mod transactions;

pub use acl::{Acl, AclFilter};
pub use admin::{Admin, PartitionDescription, TopicDescription, TopicSpec};
pub use blind::{load_user_key, BlindClient, BlindError, Connector, Resolved};
pub use blind_data::{BlindConsumer, BlindProducer, KafkaProps, Record};
pub use cluster::{
    BrokerConfig, BrokerInfo, ClusterDescription, ElectionResult, OngoingReassignment,
    QuorumDescription, QuorumReplica,
};
pub use connection::Connection;
pub use error::{Error, Result};
pub use groups::{GroupDescription, GroupListing, MemberDescription, OffsetSpec};
pub use scram::{ScramUpsert, ScramUser};
pub use sealed::{SealOptions, Sequence};
pub use transactions::{TransactionDescription, TransactionListing};
