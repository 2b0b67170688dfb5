//! The Veil broker: Kafka listeners, request dispatch and partition serving.
//!
//! Start reading at [`server::Broker::start`]: it opens [`state::BrokerState`]
//! (metadata from `veil-meta`, partition logs from `veil-log`), binds the
//! listeners, admits connections ([`connection_limits`]) and hands each to
//! [`connection::serve`]. A connection reads size-prefixed frames ([`frame`]),
//! decodes them against the served-API table in [`dispatch`], runs the API's
//! file in [`handlers`], and [`response_writer`] sends the answers in order
//! ([`response_frame`]: Fetch record sets are written without a copy;
//! [`fetch_limits`]: how large a Fetch response may be).
//! Durability (group commit) lives in [`partition`], the background flush and
//! recovery-point checkpoints in [`flusher`]; topic lifecycle in [`topics`],
//! partition directories on disk in [`log_dir`]; the metadata quorum, broker
//! registry and controller in [`cluster`]; `/metrics` and `/healthz` in
//! [`admin`]; the MQTT front end (devices publishing into and subscribing
//! from Kafka topics) in [`mqtt`].

pub mod admin;
pub mod auth;
pub mod blind;
pub mod broker_configs;
pub mod cleaner;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod connection;
pub mod connection_limits;
pub mod context;
pub mod dispatch;
pub mod error;
pub mod fetch_limits;
pub mod flusher;
pub mod frame;
pub mod group;
pub mod handlers;
pub mod housekeeping;
pub mod log_dir;
pub mod metrics;
pub mod mqtt;
pub mod partition;
pub mod producer_ids;
pub mod replication;
pub mod response_frame;
pub mod response_writer;
pub mod server;
pub mod state;
#[cfg(test)]
mod test_fixture;
pub mod topics;
pub mod txn;

pub use config::Config;
pub use error::{Error, Result};
pub use server::Broker;
