//! One file per Kafka API. Each has `pub async fn handle(ctx, request)`
//! returning its response (or a [`crate::dispatch::Handled`] when the
//! response may be deferred or absent).

// Every handler is async so the dispatch table can await them uniformly,
// even those that never wait.
#![allow(clippy::unused_async)]

pub mod alter_configs;
pub mod api_versions;
pub mod create_partitions;
pub mod create_topics;
pub mod delete_records;
pub mod delete_topics;
pub mod describe_cluster;
pub mod describe_configs;
pub mod fetch;
pub mod incremental_alter_configs;
pub mod list_offsets;
pub mod metadata;
pub mod offset_for_leader_epoch;
pub mod produce;
