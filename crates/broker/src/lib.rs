//! The Veil broker: Kafka listeners, request dispatch and partition serving.
//!
//! Start reading at [`server::Broker::start`]: it opens [`state::BrokerState`]
//! (metadata from `veil-meta`, partition logs from `veil-log`), binds the
//! listeners and hands each connection to [`connection::serve`]. A connection
//! reads size-prefixed frames ([`frame`]), decodes them against the served-API
//! table in [`dispatch`], and runs the API's file in [`handlers`].
//! Durability (group commit) lives in [`partition`], the background flush and
//! recovery-point checkpoints in [`flusher`]; topic lifecycle in [`topics`],
//! partition directories on disk in [`log_dir`]; `/metrics` and `/healthz` in
//! [`admin`].

pub mod admin;
pub mod auth;
pub mod blind;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod connection;
pub mod context;
pub mod dispatch;
pub mod error;
pub mod flusher;
pub mod frame;
pub mod group;
pub mod handlers;
pub mod housekeeping;
pub mod log_dir;
pub mod metrics;
pub mod partition;
pub mod producer_ids;
pub mod server;
pub mod state;
#[cfg(test)]
mod test_fixture;
pub mod topics;

pub use config::Config;
pub use error::{Error, Result};
pub use server::Broker;
