//! Writing transaction markers: a COMMIT or ABORT control batch in every
//! partition of a prepared transaction, on that partition's leader.
//!
//! The coordinator writes to partitions it leads directly and sends Kafka's
//! WriteTxnMarkers to other leaders over the inter-node listener; both end
//! in [`write_local`]. A marker counts as written once it is replicated as
//! an `acks=all` produce would be (so a failover cannot lose it). In
//! `__consumer_offsets` the group coordinator resolves the producer's
//! pending offsets instead (see `group::service`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::messages::write_txn_markers_request::{
    WritableTxnMarker, WritableTxnMarkerTopic,
};
use kafka_protocol::messages::{ProducerId, TopicName, WriteTxnMarkersRequest};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use veil_log::markers::{encode_marker, Marker};
use veil_meta::TxnRecord;

use crate::cluster::client::Lane;
use crate::group::offsets_topic;
use crate::state::BrokerState;

/// The WriteTxnMarkers version nodes speak to each other.
pub const WRITE_TXN_MARKERS_VERSION: i16 = 1;

/// The coordinator epoch written into markers: the metadata quorum's term,
/// which grows with every new controller (Kafka uses the transaction log
/// partition's leader epoch the same way).
pub fn coordinator_epoch(state: &BrokerState) -> i32 {
    i32::try_from(state.cluster.quorum.metrics().current_term).unwrap_or(i32::MAX)
}

/// Writes one marker on this node (which must lead the partition) and waits
/// until it is replicated. `UNKNOWN_TOPIC_OR_PARTITION` means the topic is
/// gone: nothing is left to mark.
pub async fn write_local(
    state: &Arc<BrokerState>,
    topic: &str,
    index: i32,
    producer: (i64, i16),
    commit: bool,
    coordinator_epoch: i32,
) -> Result<(), ResponseError> {
    let t = state
        .topics
        .get(topic)
        .ok_or(ResponseError::UnknownTopicOrPartition)?;
    let partition = t
        .partition(index)
        .ok_or(ResponseError::UnknownTopicOrPartition)?;
    if !partition.is_leader() {
        return Err(ResponseError::NotLeaderOrFollower);
    }
    if topic == offsets_topic::NAME {
        return state.groups.complete_txn(index, producer.0, commit).await;
    }
    let now = state.clock.now_ms();
    let mut batch = encode_marker(
        producer.0,
        producer.1,
        Marker::from_commit(commit),
        coordinator_epoch,
        now,
    );
    let info = partition
        .append_marker(&mut batch, now)
        .map_err(|e| e.response_error())?;
    let min_insync = state.topics.min_insync(&t, index);
    let deadline = tokio::time::Instant::now()
        + Duration::from_millis(state.config.cluster.request_timeout_ms);
    partition
        .wait_replicated(
            info.last_offset + 1,
            min_insync,
            state.cluster.session_timeout,
            deadline,
        )
        .await
        .map_err(|e| e.response_error())
}

/// Writes the markers of `record`'s transaction to `due` partitions; returns
/// those that now hold one (or whose topic is gone).
pub async fn write_all(
    state: &Arc<BrokerState>,
    record: &TxnRecord,
    commit: bool,
    due: &[(String, i32)],
) -> Vec<(String, i32)> {
    let producer = (record.producer_id, record.producer_epoch);
    let epoch = coordinator_epoch(state);
    let me = state.node_id();
    let mut by_leader: BTreeMap<i32, Vec<(String, i32)>> = BTreeMap::new();
    let mut done = Vec::new();
    for (topic, index) in due {
        match state.topics.get(topic) {
            // Deleted mid-transaction: no marker is owed.
            None => done.push((topic.clone(), *index)),
            Some(t) => {
                let leader = t.record(*index).map_or(-1, |p| p.leader);
                by_leader
                    .entry(leader)
                    .or_default()
                    .push((topic.clone(), *index));
            }
        }
    }
    for (leader, partitions) in by_leader {
        if leader < 0 {
            continue; // no leader now: the next round tries again
        }
        if leader == me {
            for (topic, index) in partitions {
                match write_local(state, &topic, index, producer, commit, epoch).await {
                    Ok(()) | Err(ResponseError::UnknownTopicOrPartition) => {
                        done.push((topic, index));
                    }
                    Err(e) => tracing::debug!(%topic, index, error = %e, "marker not written yet"),
                }
            }
        } else {
            done.extend(write_remote(state, leader, producer, commit, epoch, partitions).await);
        }
    }
    done
}

/// Sends WriteTxnMarkers to `leader`; returns the partitions it wrote.
async fn write_remote(
    state: &Arc<BrokerState>,
    leader: i32,
    producer: (i64, i16),
    commit: bool,
    epoch: i32,
    partitions: Vec<(String, i32)>,
) -> Vec<(String, i32)> {
    let Some(addr) = state.with_meta(|s| {
        s.broker(leader)
            .and_then(|b| b.internal.as_ref())
            .map(|e| format!("{}:{}", e.host, e.port))
    }) else {
        return Vec::new();
    };
    let mut topics: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for (t, p) in &partitions {
        topics.entry(t.as_str()).or_default().push(*p);
    }
    let marker = WritableTxnMarker::default()
        .with_producer_id(ProducerId(producer.0))
        .with_producer_epoch(producer.1)
        .with_transaction_result(commit)
        .with_coordinator_epoch(epoch)
        .with_topics(
            topics
                .into_iter()
                .map(|(t, ps)| {
                    WritableTxnMarkerTopic::default()
                        .with_name(TopicName(StrBytes::from_string(t.to_owned())))
                        .with_partition_indexes(ps)
                })
                .collect(),
        );
    let req = WriteTxnMarkersRequest::default().with_markers(vec![marker]);
    let timeout = Duration::from_millis(state.config.cluster.request_timeout_ms) * 2;
    let resp = match state
        .cluster
        .client
        .kafka(
            &addr,
            Lane::Control,
            WRITE_TXN_MARKERS_VERSION,
            &req,
            timeout,
        )
        .await
    {
        Ok(r) => r,
        Err(e) => {
            tracing::debug!(leader, error = %e, "WriteTxnMarkers failed");
            return Vec::new();
        }
    };
    let mut done = Vec::new();
    for m in resp
        .markers
        .iter()
        .filter(|m| m.producer_id.0 == producer.0)
    {
        for t in &m.topics {
            for p in &t.partitions {
                let code = p.error_code;
                if code == 0 || code == ResponseError::UnknownTopicOrPartition.code() {
                    done.push((t.name.0.to_string(), p.partition_index));
                }
            }
        }
    }
    done
}
