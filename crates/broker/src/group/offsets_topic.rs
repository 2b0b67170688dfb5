//! `__consumer_offsets`: the internal topic that makes groups and committed
//! offsets as durable and as available as any replicated partition.
//!
//! A group lives in one partition, chosen from its id as Kafka chooses it
//! (the Java string hash of the id, made non-negative, modulo the partition
//! count), and the leader of that partition is the group's coordinator.
//! The topic is created at the first request that needs a coordinator, with
//! `groups.offsets_topic_partitions` partitions and as many replicas as
//! `groups.offsets_topic_replication_factor` and the voters allow.
//!
//! The records are the group coordinator's own ([`super::codec`] entries as
//! values, the group id as key); nothing else may produce to the topic.

use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::ResponseError;
use veil_meta::{topic_config, TopicConfigs};

use crate::state::BrokerState;
use crate::topics::Topic;

/// The topic's name, as Kafka clients and tools know it.
pub const NAME: &str = "__consumer_offsets";

/// Segments roll at this size; older ones go once a snapshot covers them.
const SEGMENT_BYTES: u64 = 100 << 20;

/// How long a request waits for the topic to exist and its partition to be
/// loaded before answering a retriable error instead.
const READY_WAIT: Duration = Duration::from_secs(5);

/// Whether clients may not produce to, create or delete `topic`.
pub fn is_internal(topic: &str) -> bool {
    topic == NAME
}

/// The partition that holds `group` among `partitions`.
pub fn partition_for(group: &str, partitions: i32) -> i32 {
    let mut hash: i32 = 0;
    for unit in group.encode_utf16() {
        hash = hash.wrapping_mul(31).wrapping_add(i32::from(unit));
    }
    (hash & 0x7fff_ffff) % partitions.max(1)
}

/// The topic's settings: kept until the coordinator itself deletes what a
/// snapshot covers.
fn configs() -> TopicConfigs {
    TopicConfigs::from([
        (topic_config::CLEANUP_POLICY.to_owned(), "delete".to_owned()),
        (topic_config::RETENTION_MS.to_owned(), "-1".to_owned()),
        (topic_config::RETENTION_BYTES.to_owned(), "-1".to_owned()),
        (
            topic_config::SEGMENT_BYTES.to_owned(),
            SEGMENT_BYTES.to_string(),
        ),
    ])
}

/// The topic, created now if it does not exist yet. COORDINATOR_NOT_AVAILABLE
/// (retriable) while it cannot be created, e.g. too few brokers are up.
pub async fn ensure(state: &Arc<BrokerState>) -> Result<Arc<Topic>, ResponseError> {
    if let Some(t) = state.topics.get(NAME) {
        return Ok(t);
    }
    let _single = state.groups.creating.lock().await;
    if let Some(t) = state.topics.get(NAME) {
        return Ok(t);
    }
    let g = &state.config.groups;
    let voters = if state.config.cluster.is_clustered() {
        state
            .config
            .cluster
            .voter_map()
            .map_or(1, |v| v.len().max(1))
    } else {
        1
    };
    let replication_factor = g
        .offsets_topic_replication_factor
        .min(i16::try_from(voters).unwrap_or(i16::MAX));
    let created = match state.create_topic_command(
        NAME,
        g.offsets_topic_partitions,
        replication_factor,
        configs(),
    ) {
        Ok(cmd) => state.commit(cmd).await,
        Err(e) => Err(e),
    };
    match created {
        Ok(()) => tracing::info!(
            partitions = g.offsets_topic_partitions,
            replication_factor,
            "created {NAME}"
        ),
        // Another node created it first, or not enough brokers are up yet.
        Err(e) => tracing::debug!(error = %e, "{NAME} not created"),
    }
    state
        .topics
        .get(NAME)
        .ok_or(ResponseError::CoordinatorNotAvailable)
}

/// The leader of `group`'s partition as this node's metadata has it.
fn leader_of(topic: &Topic, group: &str) -> Option<i32> {
    topic
        .record(partition_for(group, topic.partition_count()))
        .map(|r| r.leader)
        .filter(|l| *l >= 0)
}

/// Where `group`'s coordinator is: `Ok(node)` with the leader of its
/// partition, once the topic exists.
pub async fn coordinator_of(state: &Arc<BrokerState>, group: &str) -> Result<i32, ResponseError> {
    let topic = ensure(state).await?;
    leader_of(&topic, group).ok_or(ResponseError::CoordinatorNotAvailable)
}

/// Succeeds once this node coordinates `group` with its partition loaded;
/// NOT_COORDINATOR when another node leads the partition, and
/// COORDINATOR_LOAD_IN_PROGRESS or COORDINATOR_NOT_AVAILABLE (both
/// retriable) when that does not settle within a few seconds.
pub async fn ready(state: &Arc<BrokerState>, group: &str) -> Result<(), ResponseError> {
    // An empty id is INVALID_GROUP_ID, answered by the coordinator itself
    // before any coordinator check, as Kafka does.
    if group.is_empty() || state.groups.status(group) == Ok(()) {
        return Ok(());
    }
    ensure(state).await?;
    let deadline = tokio::time::Instant::now() + READY_WAIT;
    loop {
        let changed = state.groups.changed();
        tokio::pin!(changed);
        changed.as_mut().enable();
        let Err(e) = state.groups.status(group) else {
            return Ok(());
        };
        // Not hosted here: final once metadata names another leader.
        let elsewhere = state
            .topics
            .get(NAME)
            .and_then(|t| leader_of(&t, group))
            .is_some_and(|l| l != state.node_id());
        if e == ResponseError::NotCoordinator && elsewhere {
            return Err(e);
        }
        if tokio::time::Instant::now() >= deadline {
            // Still unsettled: retriable either way.
            return Err(match e {
                ResponseError::NotCoordinator => ResponseError::CoordinatorNotAvailable,
                other => other,
            });
        }
        let _ = tokio::time::timeout_at(
            deadline.min(tokio::time::Instant::now() + Duration::from_millis(100)),
            changed,
        )
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_follow_the_java_string_hash() {
        // "".hashCode() == 0; "a".hashCode() == 97;
        // "group".hashCode() == 98629247.
        assert_eq!(partition_for("", 50), 0);
        assert_eq!(partition_for("a", 50), 97 % 50);
        assert_eq!(partition_for("group", 50), 98_629_247 % 50);
        // A negative hash is made non-negative by clearing the sign bit.
        let negative = "polygenelubricants"; // hashCode() == i32::MIN
        assert_eq!(partition_for(negative, 50), 0);
        for id in ["x", "consumers-of-sensors", "ünïcode-grüppe", "🛰️"] {
            let p = partition_for(id, 7);
            assert!((0..7).contains(&p), "{id} -> {p}");
        }
    }
}
