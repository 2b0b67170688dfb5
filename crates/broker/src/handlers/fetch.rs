//! Fetch: whole batches from each requested partition, with long polling.
//!
//! Limits follow KIP-74: `max_bytes` bounds the response and
//! `partition_max_bytes` each partition, both capped by the broker
//! ([`crate::fetch_limits`]), except that the first partition
//! with data returns at least one batch so a large batch never wedges a
//! consumer. If fewer than `min_bytes` are available the response waits up
//! to `max_wait_ms` for appends to any requested partition. Fetch sessions
//! (KIP-227) are not created: the broker answers session id 0, which tells
//! clients to keep sending full requests. Only a partition's leader serves
//! it; other nodes answer NOT_LEADER_OR_FOLLOWER with the leader they know
//! (v12+ `current_leader`, v16+ `node_endpoints`, KIP-951).
//!
//! Consumers read below the high watermark and wait for it to move. A
//! follower (a replica id, on the inter-node listener only) reads up to the
//! log end and waits for appends; its fetch offset tells the leader what it
//! has stored, which moves the high watermark and may bring it back into
//! the ISR. On a client listener a replica id is only a read, as it always
//! was: no client can make the leader believe a follower caught up.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::fetch_response::{
    AbortedTransaction, FetchableTopicResponse, LeaderIdAndEpoch, NodeEndpoint, PartitionData,
};
use kafka_protocol::messages::{BrokerId, FetchRequest, FetchResponse, ProducerId, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use crate::auth::{Operation, ResourceType};
use crate::context::RequestContext;
use crate::dispatch::{Handled, Response};
use crate::fetch_limits::FetchLimits;
use crate::handlers::list_offsets::check_current_leader_epoch;
use crate::partition::CommittedRead;
use crate::partition::Partition;

/// Fetch versions from which topics are named by id.
const TOPIC_ID_VERSION: i16 = 13;
/// Upper bound on a long poll, whatever the client asks for.
const MAX_WAIT_MS: i32 = 60_000;

/// One requested partition, resolved once.
struct Wanted {
    topic: usize,
    partition_index: i32,
    target: Result<Arc<Partition>, i16>,
    /// The leader and epoch this node knows, when it does not lead.
    leader: Option<(i32, i32)>,
    fetch_offset: i64,
    current_leader_epoch: i32,
    max_bytes: usize,
    /// `isolation_level = 1` (READ_COMMITTED): up to the last stable offset,
    /// with the aborted transactions in range.
    committed: bool,
}

/// The replica a fetch on the inter-node listener speaks for.
fn follower_of(ctx: &RequestContext, req: &FetchRequest) -> Option<i32> {
    if ctx.listener != crate::server::INTERNAL_LISTENER {
        return None;
    }
    let id = if req.replica_state.replica_id.0 >= 0 {
        req.replica_state.replica_id.0
    } else {
        req.replica_id.0
    };
    if id < 0 {
        return None;
    }
    // Under mTLS the certificate names the node; it must be the same one.
    match crate::cluster::handler::certified_node(&ctx.principal) {
        Some(certified) if certified != id => None,
        _ => Some(id),
    }
}

pub async fn handle(ctx: &RequestContext, req: FetchRequest) -> Handled {
    if req.session_id != 0 || req.session_epoch > 0 {
        let code = ResponseError::FetchSessionIdNotFound.code();
        ctx.count(code);
        return Handled::Ready(Response::Fetch(
            FetchResponse::default().with_error_code(code),
        ));
    }
    let replica = follower_of(ctx, &req);
    let (shells, mut wanted) = resolve(ctx, &req, replica);
    // The broker's caps; the connection reserved room for `limits.response`.
    let limits = FetchLimits::of(&req, &ctx.broker.config.network);
    for w in &mut wanted {
        w.max_bytes = limits.partition(w.max_bytes);
    }
    let min_bytes = usize::try_from(req.min_bytes.max(0)).unwrap_or(0);
    let max_bytes = limits.response;
    let wait_ms = req.max_wait_ms.clamp(0, MAX_WAIT_MS);

    let (response, bytes) = collect(ctx, &shells, &wanted, max_bytes, replica);
    let any_error = response
        .responses
        .iter()
        .flat_map(|t| &t.partitions)
        .any(|p| p.error_code != 0);
    if bytes >= min_bytes.max(1) || wait_ms == 0 || any_error || wanted.is_empty() {
        return Handled::Ready(Response::Fetch(response));
    }
    let ctx = ctx.clone();
    Handled::Deferred(Box::pin(async move {
        let deadline = tokio::time::Instant::now() + Duration::from_millis(wait_ms as u64);
        loop {
            let partitions: Vec<&Arc<Partition>> = wanted
                .iter()
                .filter_map(|w| w.target.as_ref().ok())
                .collect();
            // Followers wait for appends, consumers for the high watermark.
            let mut waits: Vec<_> = partitions
                .iter()
                .map(|p| {
                    Box::pin(if replica.is_some() {
                        p.appended()
                    } else {
                        p.visible_changed()
                    })
                })
                .collect();
            for w in &mut waits {
                w.as_mut().enable();
            }
            if replica.is_none() {
                for p in &partitions {
                    p.expedite();
                }
            }
            let (response, bytes) = collect(&ctx, &shells, &wanted, max_bytes, replica);
            if bytes >= min_bytes.max(1) || tokio::time::Instant::now() >= deadline {
                return Response::Fetch(response);
            }
            let any_append = std::future::poll_fn(|cx| {
                for w in &mut waits {
                    if w.as_mut().poll(cx).is_ready() {
                        return std::task::Poll::Ready(());
                    }
                }
                std::task::Poll::Pending
            });
            if tokio::time::timeout_at(deadline, any_append).await.is_err() {
                let (response, _) = collect(&ctx, &shells, &wanted, max_bytes, replica);
                return Response::Fetch(response);
            }
        }
    }))
}

/// Resolves topics once; returns the per-topic response shells and the
/// partitions in request order.
fn resolve(
    ctx: &RequestContext,
    req: &FetchRequest,
    replica: Option<i32>,
) -> (Vec<FetchableTopicResponse>, Vec<Wanted>) {
    let by_id = ctx.api_version >= TOPIC_ID_VERSION;
    // Kafka: a follower (replica id >= 0) needs CLUSTER_ACTION, a consumer
    // READ on each topic; either way a refusal is TOPIC_AUTHORIZATION_FAILED
    // per partition. By name, the check comes before existence; by id, an
    // unknown id stays UNKNOWN_TOPIC_ID (ids are not secret).
    let follower = req.replica_id.0 >= 0 || req.replica_state.replica_id.0 >= 0;
    // Nodes on the inter-node listener are trusted (mTLS there names them).
    let follower_allowed =
        follower && (replica.is_some() || ctx.authorize_cluster(Operation::ClusterAction));
    let denied = ResponseError::TopicAuthorizationFailed.code();
    let mut shells = Vec::with_capacity(req.topics.len());
    let mut wanted = Vec::new();
    for (ti, t) in req.topics.iter().enumerate() {
        // A replica replicates every topic it holds, blind ones included:
        // blind visibility is about principals, and a node is not one.
        let topic = match (by_id, replica.is_some()) {
            (true, true) => ctx.broker.topics.get_by_id(t.topic_id),
            (false, true) => ctx.broker.topics.get(t.topic.0.as_str()),
            (true, false) => ctx.visible_topic_by_id(t.topic_id),
            (false, false) => ctx.visible_topic(t.topic.0.as_str()),
        };
        let missing = if by_id {
            ResponseError::UnknownTopicId.code()
        } else {
            ResponseError::UnknownTopicOrPartition.code()
        };
        shells.push(
            FetchableTopicResponse::default()
                .with_topic(t.topic.clone())
                .with_topic_id(t.topic_id),
        );
        let name = topic
            .as_ref()
            .map_or(t.topic.0.as_str(), |t| t.name.as_str());
        let allowed = if follower {
            follower_allowed
        } else {
            (by_id && topic.is_none()) || ctx.authorize(Operation::Read, ResourceType::Topic, name)
        };
        for p in &t.partitions {
            let mut leader = None;
            let target = if allowed {
                topic.as_ref().ok_or(missing).and_then(|topic| {
                    match topic.led_here(p.partition, ctx.broker.node_id()) {
                        // A follower must be one of the partition's replicas.
                        Ok(partition)
                            if replica
                                .is_some_and(|r| !partition.replica().replicas.contains(&r)) =>
                        {
                            Err(ResponseError::NotLeaderOrFollower.code())
                        }
                        Ok(partition) => Ok(Arc::clone(partition)),
                        Err(crate::Error::NotLeader {
                            leader: l,
                            leader_epoch,
                        }) => {
                            leader = Some((l, leader_epoch));
                            Err(ResponseError::NotLeaderOrFollower.code())
                        }
                        Err(e) => Err(e.code()),
                    }
                })
            } else {
                Err(denied)
            };
            wanted.push(Wanted {
                topic: ti,
                partition_index: p.partition,
                target,
                leader,
                fetch_offset: p.fetch_offset,
                current_leader_epoch: p.current_leader_epoch,
                max_bytes: usize::try_from(p.partition_max_bytes.max(0)).unwrap_or(0),
                committed: replica.is_none() && req.isolation_level == 1,
            });
        }
    }
    (shells, wanted)
}

/// Reads every wanted partition once; returns the response and its record bytes.
fn collect(
    ctx: &RequestContext,
    shells: &[FetchableTopicResponse],
    wanted: &[Wanted],
    max_bytes: usize,
    replica: Option<i32>,
) -> (FetchResponse, usize) {
    let mut topics: Vec<FetchableTopicResponse> = shells.to_vec();
    let mut total = 0usize;
    let mut leaders: Vec<i32> = Vec::new();
    for w in wanted {
        let mut data = read_one(ctx, w, max_bytes.saturating_sub(total), total == 0, replica);
        total += data.records.as_ref().map_or(0, Bytes::len);
        if let (Some((leader, epoch)), true) = (w.leader, ctx.api_version >= 12) {
            data = data.with_current_leader(
                LeaderIdAndEpoch::default()
                    .with_leader_id(BrokerId(leader))
                    .with_leader_epoch(epoch),
            );
            if leader >= 0 && !leaders.contains(&leader) {
                leaders.push(leader);
            }
        }
        topics[w.topic].partitions.push(data);
    }
    let node_endpoints = if ctx.api_version >= 16 && !leaders.is_empty() {
        ctx.broker
            .broker_endpoints(&ctx.listener)
            .into_iter()
            .filter(|b| leaders.contains(&b.node_id))
            .map(|b| {
                NodeEndpoint::default()
                    .with_node_id(BrokerId(b.node_id))
                    .with_host(StrBytes::from_string(b.host))
                    .with_port(b.port)
                    .with_rack(b.rack.map(StrBytes::from_string))
            })
            .collect()
    } else {
        Vec::new()
    };
    if ctx.api_version < TOPIC_ID_VERSION {
        for t in &mut topics {
            t.topic_id = uuid::Uuid::nil();
        }
    } else {
        for t in &mut topics {
            t.topic = TopicName(StrBytes::default());
        }
    }
    (
        FetchResponse::default()
            .with_responses(topics)
            .with_node_endpoints(node_endpoints),
        total,
    )
}

fn read_one(
    ctx: &RequestContext,
    w: &Wanted,
    budget: usize,
    first: bool,
    replica: Option<i32>,
) -> PartitionData {
    let empty = PartitionData::default()
        .with_partition_index(w.partition_index)
        .with_high_watermark(-1)
        .with_last_stable_offset(-1)
        .with_log_start_offset(-1)
        .with_preferred_read_replica(kafka_protocol::messages::BrokerId(-1))
        .with_aborted_transactions(Some(Vec::new()))
        .with_records(Some(Bytes::new()));
    let fail = |code: i16| {
        ctx.count(code);
        empty.clone().with_error_code(code)
    };
    let partition = match &w.target {
        Ok(p) => p,
        Err(code) => return fail(*code),
    };
    if let Err(e) = check_current_leader_epoch(w.current_leader_epoch, partition.leader_epoch()) {
        return fail(e.code());
    }
    let limit = w.max_bytes.min(budget);
    let read = match replica {
        Some(node) => {
            // What the follower asks for next, it has stored.
            if partition.record_follower_fetch(node, w.fetch_offset, std::time::Instant::now()) {
                ctx.broker.replication.isr_changed();
            }
            partition
                .read_for_follower(w.fetch_offset, limit)
                .map(CommittedRead::from)
        }
        None if w.committed => partition.read_committed(w.fetch_offset, limit, first),
        None => partition
            .read(w.fetch_offset, limit, first)
            .map(CommittedRead::from),
    };
    let high_watermark = partition.high_watermark();
    let last_stable = partition.last_stable_offset();
    match read {
        Ok(r) => {
            let aborted = r
                .aborted
                .iter()
                .map(|t| {
                    AbortedTransaction::default()
                        .with_producer_id(ProducerId(t.producer_id))
                        .with_first_offset(t.first_offset)
                })
                .collect();
            empty
                .with_high_watermark(high_watermark)
                .with_last_stable_offset(last_stable)
                .with_log_start_offset(r.log_start_offset)
                .with_aborted_transactions(Some(aborted))
                .with_records(Some(Bytes::from(r.records)))
        }
        Err(e) => {
            let code = ctx.code(&e);
            let start = partition.log_start_offset();
            empty
                .with_error_code(code)
                .with_high_watermark(high_watermark)
                .with_last_stable_offset(last_stable)
                .with_log_start_offset(start)
        }
    }
}
