//! A follower's fetcher for one leader: first cut any partition whose log
//! may hold what the new leader does not (OffsetForLeaderEpoch, KIP-101 and
//! KIP-279), then fetch every followed partition in one request, append
//! what came back byte for byte, make it durable, and fetch again from the
//! new log end — which tells the leader what this replica has stored.

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::offset_for_leader_epoch_request::{
    OffsetForLeaderPartition, OffsetForLeaderTopic,
};
use kafka_protocol::messages::{
    BrokerId, FetchRequest, FetchResponse, OffsetForLeaderEpochRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::cluster::client::Lane;
use crate::partition::Partition;
use crate::state::BrokerState;

/// Fetch v12 names topics (ids from v13 would work as well).
const FETCH_VERSION: i16 = 12;
const EPOCH_VERSION: i16 = 4;
/// Beyond the long poll, how long a fetch may take.
const CALL_SLACK: Duration = Duration::from_secs(10);

type Key = (String, i32);

/// Fetches from `leader` until stopped or it no longer leads anything here.
pub async fn run(
    state: Weak<BrokerState>,
    leader: i32,
    mut partitions: watch::Receiver<Vec<Arc<Partition>>>,
    stop: CancellationToken,
) {
    loop {
        if stop.is_cancelled() {
            return;
        }
        let list = partitions.borrow_and_update().clone();
        let Some(st) = state.upgrade() else { return };
        let pause = if list.is_empty() {
            None
        } else {
            match round(&st, leader, &list).await {
                Ok(()) => None,
                Err(reason) => {
                    tracing::debug!(leader, %reason, "replica fetch failed; backing off");
                    Some(super::backoff(&st.config.replication))
                }
            }
        };
        drop(st);
        match pause {
            Some(p) => {
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(p) => {}
                }
            }
            None if list.is_empty() => {
                tokio::select! {
                    () = stop.cancelled() => return,
                    r = partitions.changed() => if r.is_err() { return },
                }
            }
            None => {}
        }
    }
}

/// The leader's inter-node address.
fn leader_address(state: &BrokerState, leader: i32) -> Option<String> {
    state.with_meta(|s| {
        s.broker(leader)
            .and_then(|b| b.internal.as_ref())
            .map(|e| format!("{}:{}", e.host, e.port))
    })
}

/// One truncation pass (if needed) and one fetch.
async fn round(
    state: &Arc<BrokerState>,
    leader: i32,
    list: &[Arc<Partition>],
) -> Result<(), String> {
    let addr = leader_address(state, leader).ok_or("the leader's address is unknown")?;
    let diverged: Vec<&Arc<Partition>> = list.iter().filter(|p| p.needs_truncation()).collect();
    if !diverged.is_empty() {
        truncate(state, &addr, &diverged).await?;
    }
    let ready: Vec<&Arc<Partition>> = list.iter().filter(|p| !p.needs_truncation()).collect();
    if ready.is_empty() {
        return Err("waiting for truncation".into());
    }
    fetch(state, &addr, &ready).await
}

/// Asks the leader where each diverged partition's last common epoch ends
/// and cuts the log there.
async fn truncate(
    state: &Arc<BrokerState>,
    addr: &str,
    list: &[&Arc<Partition>],
) -> Result<(), String> {
    let mut by_topic: HashMap<&str, Vec<OffsetForLeaderPartition>> = HashMap::new();
    let mut epochs: HashMap<Key, i32> = HashMap::new();
    for p in list {
        let Some((_, epoch)) = p.following() else {
            continue;
        };
        let latest = p
            .with_log(veil_log::PartitionLog::latest_epoch)
            .unwrap_or(-1);
        epochs.insert((p.topic.clone(), p.index), epoch);
        by_topic.entry(p.topic.as_str()).or_default().push(
            OffsetForLeaderPartition::default()
                .with_partition(p.index)
                .with_current_leader_epoch(epoch)
                .with_leader_epoch(latest),
        );
    }
    let req = OffsetForLeaderEpochRequest::default()
        .with_replica_id(BrokerId(state.node_id()))
        .with_topics(
            by_topic
                .into_iter()
                .map(|(t, ps)| {
                    OffsetForLeaderTopic::default()
                        .with_topic(TopicName(StrBytes::from_string(t.to_owned())))
                        .with_partitions(ps)
                })
                .collect(),
        );
    let resp = state
        .cluster
        .client
        .kafka(addr, Lane::Replica, EPOCH_VERSION, &req, CALL_SLACK)
        .await
        .map_err(|e| e.to_string())?;
    let now = state.clock.now_ms();
    for t in resp.topics {
        for r in t.partitions {
            let key = (t.topic.0.to_string(), r.partition);
            let Some(p) = list.iter().find(|p| p.topic == key.0 && p.index == key.1) else {
                continue;
            };
            let Some(&epoch) = epochs.get(&key) else {
                continue;
            };
            if r.error_code != 0 {
                tracing::debug!(topic = %p.topic, partition = p.index, code = r.error_code,
                    "the leader cannot say where our epoch ends yet");
                continue;
            }
            let offset = truncation_offset(p, r.leader_epoch, r.end_offset);
            if let Err(e) = p.truncate_for_leader(epoch, offset, now) {
                tracing::error!(topic = %p.topic, partition = p.index, error = %e, "truncation failed");
            }
        }
    }
    Ok(())
}

/// Where to cut, from the leader's answer `(epoch, end offset)` for our
/// latest epoch (KIP-279): the smaller of the leader's end of that epoch and
/// ours. An undefined answer (the leader knows no epoch as old as ours)
/// leaves only what is known committed: our high watermark.
fn truncation_offset(p: &Partition, leader_epoch: i32, end_offset: i64) -> i64 {
    let local_end = p.log_end_offset();
    if leader_epoch < 0 || end_offset < 0 {
        return p.high_watermark().min(local_end);
    }
    let ours = p
        .with_log(|l| l.end_offset_for_epoch(leader_epoch))
        .map_or(local_end, |(_, end)| end);
    end_offset.min(ours).min(local_end)
}

/// One Fetch for every ready partition; appends, makes durable, learns the
/// high watermark.
async fn fetch(
    state: &Arc<BrokerState>,
    addr: &str,
    list: &[&Arc<Partition>],
) -> Result<(), String> {
    let net = &state.config.network;
    let cap = i32::try_from(net.replica_fetch_max_bytes).unwrap_or(i32::MAX);
    let mut by_topic: HashMap<&str, Vec<FetchPartition>> = HashMap::new();
    let mut asked: HashMap<Key, (i32, i64)> = HashMap::new();
    for p in list {
        let Some((_, epoch)) = p.following() else {
            continue;
        };
        let offset = p.log_end_offset();
        asked.insert((p.topic.clone(), p.index), (epoch, offset));
        by_topic.entry(p.topic.as_str()).or_default().push(
            FetchPartition::default()
                .with_partition(p.index)
                .with_current_leader_epoch(epoch)
                .with_fetch_offset(offset)
                .with_last_fetched_epoch(-1)
                .with_log_start_offset(p.log_start_offset())
                .with_partition_max_bytes(cap),
        );
    }
    let config = &state.config.replication;
    let req = FetchRequest::default()
        .with_replica_id(BrokerId(state.node_id()))
        .with_max_wait_ms(config.replica_fetch_wait_max_ms)
        .with_min_bytes(1)
        .with_max_bytes(i32::try_from(net.replica_fetch_response_max_bytes).unwrap_or(i32::MAX))
        .with_session_epoch(-1)
        .with_topics(
            by_topic
                .into_iter()
                .map(|(t, ps)| {
                    FetchTopic::default()
                        .with_topic(TopicName(StrBytes::from_string(t.to_owned())))
                        .with_partitions(ps)
                })
                .collect(),
        );
    let wait = Duration::from_millis(u64::try_from(config.replica_fetch_wait_max_ms).unwrap_or(0));
    let resp: FetchResponse = state
        .cluster
        .client
        .kafka(addr, Lane::Replica, FETCH_VERSION, &req, wait + CALL_SLACK)
        .await
        .map_err(|e| e.to_string())?;
    if resp.error_code != 0 {
        return Err(format!("fetch failed with error {}", resp.error_code));
    }
    let now = state.clock.now_ms();
    let mut appended: Vec<(&Arc<Partition>, i64)> = Vec::new();
    let mut stalled = false;
    for t in &resp.responses {
        for d in &t.partitions {
            let key = (t.topic.0.to_string(), d.partition_index);
            let Some(p) = list.iter().find(|p| p.topic == key.0 && p.index == key.1) else {
                continue;
            };
            let Some(&(epoch, offset)) = asked.get(&key) else {
                continue;
            };
            match ResponseError::try_from_code(d.error_code) {
                None => {
                    if let Some(records) = d.records.as_ref().filter(|r| !r.is_empty()) {
                        match p.append_replicated(records, epoch, now) {
                            Ok(_) => {}
                            // Leadership moved while the fetch was out: its answer is stale
                            // and the fetcher of the new leader takes over.
                            Err(e @ crate::error::Error::NotLeader { .. }) => {
                                tracing::debug!(topic = %p.topic, partition = p.index, error = %e,
                                    "dropping a fetch answered under a leadership that has ended");
                                stalled = true;
                                continue;
                            }
                            Err(e) => {
                                tracing::warn!(topic = %p.topic, partition = p.index, error = %e,
                                    "could not append replicated batches");
                                stalled = true;
                                continue;
                            }
                        }
                    }
                    p.learn_log_start(d.log_start_offset);
                    appended.push((p, d.high_watermark));
                }
                Some(ResponseError::OffsetOutOfRange) => {
                    if offset < d.log_start_offset {
                        // Behind the leader's log start: start over there.
                        if let Err(e) = p.restart_at(epoch, d.log_start_offset, now) {
                            tracing::error!(topic = %p.topic, partition = p.index, error = %e,
                                "could not restart the log at the leader's log start");
                        }
                    } else {
                        // Ahead of the leader: a suffix it does not have.
                        tracing::warn!(topic = %p.topic, partition = p.index, offset,
                            "fetch offset beyond the leader's log end; truncating");
                        p.mark_diverged(epoch);
                    }
                }
                Some(e) => {
                    // Stale metadata on one side (a leader change in flight):
                    // the publisher will tell us; meanwhile back off.
                    tracing::debug!(topic = %p.topic, partition = p.index, error = %e, "replica fetch refused");
                    stalled = true;
                }
            }
        }
    }
    // Durable before the next fetch reports these offsets to the leader.
    let mut waits = tokio::task::JoinSet::new();
    for (p, _) in &appended {
        let p = Arc::clone(p);
        waits.spawn(async move { p.make_durable().await });
    }
    while let Some(r) = waits.join_next().await {
        if let Ok(Err(e)) = r {
            return Err(format!("replicated records could not be made durable: {e}"));
        }
    }
    for (p, hw) in appended {
        p.learn_high_watermark(hw);
    }
    if stalled {
        Err("some partitions were refused".into())
    } else {
        Ok(())
    }
}
