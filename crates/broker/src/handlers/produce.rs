//! Produce: validate and append record batches; acknowledge per `acks`.
//!
//! Appends happen in request order on the connection's task. With acks=all
//! the partition must have `min.insync.replicas` in-sync replicas before
//! the append (else NOT_ENOUGH_REPLICAS), and the response is deferred
//! until the partition's high watermark covers the append — every in-sync
//! replica stored it (fsynced, with `log.flush = "sync"`) — or the request's
//! timeout passes (REQUEST_TIMED_OUT) or the ISR shrinks below the minimum
//! (NOT_ENOUGH_REPLICAS_AFTER_APPEND). A partition this node does not lead
//! answers NOT_LEADER_OR_FOLLOWER with the leader it knows (v10+, KIP-951),
//! so clients move without a metadata round trip.

use std::sync::Arc;

use kafka_protocol::messages::produce_response::{
    LeaderIdAndEpoch, NodeEndpoint, PartitionProduceResponse, TopicProduceResponse,
};
use kafka_protocol::messages::{BrokerId, ProduceRequest, ProduceResponse};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use crate::auth::{Operation, ResourceType};
use crate::context::RequestContext;
use crate::dispatch::{Handled, Response};
use crate::error::Error;
use crate::partition::Partition;

pub async fn handle(ctx: &RequestContext, req: ProduceRequest) -> Handled {
    let acks = req.acks;
    let valid_acks = (-1..=1).contains(&acks);
    let now = ctx.now_ms();
    // (topic index, partition index, partition, end offset, min ISR) awaiting replication.
    let mut to_wait: Vec<(usize, usize, Arc<Partition>, i64, usize)> = Vec::new();
    let mut responses = Vec::with_capacity(req.topic_data.len());
    // Leaders named in NOT_LEADER_OR_FOLLOWER answers, for `node_endpoints`.
    let mut leaders: Vec<i32> = Vec::new();
    // Kafka: a transactional produce needs WRITE on its transactional id, or
    // the whole request fails; then each topic needs WRITE, checked before
    // existence so unauthorized clients cannot probe topic names.
    let transaction_denied = req.transactional_id.as_ref().is_some_and(|id| {
        !ctx.authorize(Operation::Write, ResourceType::TransactionalId, id.as_str())
    });
    let transactional_id = req.transactional_id.as_ref().map(|t| t.0.to_string());

    for (ti, topic_data) in req.topic_data.into_iter().enumerate() {
        let topic = ctx.visible_topic(topic_data.name.0.as_str());
        let denied = if transaction_denied {
            Some(ResponseError::TransactionalIdAuthorizationFailed)
        } else if !ctx.authorize(Operation::Write, ResourceType::Topic, &topic_data.name) {
            Some(ResponseError::TopicAuthorizationFailed)
        } else if crate::group::offsets_topic::is_internal(&topic_data.name) {
            // Only the group coordinator writes there, as in Kafka.
            Some(ResponseError::InvalidTopicException)
        } else {
            None
        };
        let mut partitions = Vec::with_capacity(topic_data.partition_data.len());
        for (pi, data) in topic_data.partition_data.into_iter().enumerate() {
            let base = PartitionProduceResponse::default()
                .with_index(data.index)
                .with_base_offset(-1)
                .with_log_append_time_ms(-1)
                .with_log_start_offset(-1);
            let partition = topic
                .as_ref()
                .map(|t| t.led_here(data.index, ctx.broker.node_id()).map(|p| (t, p)));
            let mut current_leader = None;
            let outcome = if let Some(error) = denied {
                Err((error.code(), None))
            } else if !valid_acks {
                Err((ResponseError::InvalidRequiredAcks.code(), None))
            } else {
                match partition {
                    Some(Ok((topic, partition))) => {
                        match ctx
                            .broker
                            .admit_append(topic, data.index, partition, acks == -1)
                        {
                            Err((e, message)) => {
                                Err((e.code(), Some(StrBytes::from_string(message))))
                            }
                            Ok(min_insync) => match verify_transaction(
                                ctx,
                                transactional_id.as_deref(),
                                partition,
                                data.records.as_ref(),
                            )
                            .await
                            {
                                Err(failure) => Err(failure),
                                Ok(()) => match prepare(partition, data.records).await {
                                    Ok(records) => append(ctx, partition, records, now),
                                    Err(failure) => Err(failure),
                                },
                            }
                            .map(|(resp, end)| {
                                if acks == -1 {
                                    to_wait.push((ti, pi, Arc::clone(partition), end, min_insync));
                                }
                                resp
                            }),
                        }
                    }
                    Some(Err(Error::NotLeader {
                        leader,
                        leader_epoch,
                    })) => {
                        current_leader = Some((leader, leader_epoch));
                        Err((ResponseError::NotLeaderOrFollower.code(), None))
                    }
                    Some(Err(e)) => Err((e.code(), None)),
                    None => Err((ResponseError::UnknownTopicOrPartition.code(), None)),
                }
            };
            let base = match current_leader {
                Some((leader, epoch)) if ctx.api_version >= 10 => {
                    if leader >= 0 && !leaders.contains(&leader) {
                        leaders.push(leader);
                    }
                    base.with_current_leader(
                        LeaderIdAndEpoch::default()
                            .with_leader_id(BrokerId(leader))
                            .with_leader_epoch(epoch),
                    )
                }
                _ => base,
            };
            partitions.push(match outcome {
                Ok(filled) => base
                    .with_base_offset(filled.base_offset)
                    .with_log_append_time_ms(filled.log_append_time_ms)
                    .with_log_start_offset(filled.log_start_offset),
                Err((code, message)) => {
                    ctx.count(code);
                    base.with_error_code(code).with_error_message(message)
                }
            });
        }
        responses.push(
            TopicProduceResponse::default()
                .with_name(topic_data.name)
                .with_partition_responses(partitions),
        );
    }

    let mut response = ProduceResponse::default().with_responses(responses);
    if ctx.api_version >= 10 && !leaders.is_empty() {
        response.node_endpoints = ctx
            .broker
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
            .collect();
    }
    if acks == 0 {
        return Handled::NoResponse;
    }
    if to_wait.is_empty() {
        return Handled::Ready(Response::Produce(response));
    }
    let ctx = ctx.clone();
    let timeout = std::time::Duration::from_millis(u64::try_from(req.timeout_ms).unwrap_or(0))
        .max(MIN_TIMEOUT);
    let deadline = tokio::time::Instant::now() + timeout;
    Handled::Deferred(Box::pin(async move {
        let mut response = response;
        for (ti, pi, partition, end, min_insync) in to_wait {
            let live_window = ctx.broker.cluster.session_timeout;
            if let Err(e) = partition
                .wait_replicated(end, min_insync, live_window, deadline)
                .await
            {
                let code = ctx.code(&e);
                let p = &mut response.responses[ti].partition_responses[pi];
                p.error_code = code;
                p.base_offset = -1;
                p.error_message = Some(StrBytes::from_string(e.client_message()));
            }
        }
        Response::Produce(response)
    }))
}

/// The shortest wait for acks=all, whatever the request says: a timeout of
/// 0 would fail even a single node's fsync.
const MIN_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(100);

struct Appended {
    base_offset: i64,
    log_append_time_ms: i64,
    log_start_offset: i64,
}

type Failure = (i16, Option<StrBytes>);

/// A transactional batch may only go to a partition of its producer's open
/// transaction, at the transaction's epoch (KIP-890 part 1): a late write of
/// an aborted or fenced producer cannot open a transaction nobody will end.
async fn verify_transaction(
    ctx: &RequestContext,
    transactional_id: Option<&str>,
    partition: &Partition,
    records: Option<&bytes::Bytes>,
) -> Result<(), Failure> {
    let Some(h) = records.and_then(|r| veil_log::BatchHeader::parse(r).ok()) else {
        return Ok(());
    };
    if !h.is_transactional() || h.producer_id < 0 {
        return Ok(());
    }
    let Some(id) = transactional_id else {
        return Err((
            ResponseError::InvalidTxnState.code(),
            Some(StrBytes::from_static_str(
                "a transactional batch in a request without a transactional id",
            )),
        ));
    };
    let key = (partition.topic.clone(), partition.index);
    crate::txn::TransactionCoordinator::verify(
        &ctx.broker,
        id,
        (h.producer_id, h.producer_epoch),
        &key,
    )
    .await
    .map_err(|e| {
        let (code, message) = if e == ResponseError::ProducerFenced {
            (
                ResponseError::InvalidProducerEpoch,
                "the producer's epoch is not its transaction's",
            )
        } else {
            (
                ResponseError::InvalidTxnState,
                "the partition is not in the producer's open transaction",
            )
        };
        (code.code(), Some(StrBytes::from_static_str(message)))
    })
}

/// What the topic's configs ask of produced batches before they are appended: keys on compacted
/// topics, recompression under `compression.type`. Decompressing and compressing are CPU work, so
/// they run on the blocking pool, never on the connection's async worker.
async fn prepare(
    partition: &Partition,
    records: Option<bytes::Bytes>,
) -> Result<Option<bytes::Bytes>, Failure> {
    let policy = partition.with_log(|log| log.config().produce_policy());
    let bytes = match records {
        Some(bytes) if !policy.is_passthrough() && !bytes.is_empty() => bytes,
        other => return Ok(other),
    };
    let prepared = tokio::task::spawn_blocking(move || {
        veil_log::rewrite::prepare_produce(&bytes, &policy)
            .map(|rewritten| rewritten.map_or(bytes, bytes::Bytes::from))
    })
    .await;
    match prepared {
        Ok(Ok(bytes)) => Ok(Some(bytes)),
        Ok(Err(e)) => {
            let e = Error::from(e);
            Err((e.code(), Some(StrBytes::from_string(e.client_message()))))
        }
        Err(_) => Err((ResponseError::UnknownServerError.code(), None)),
    }
}

/// Appends one partition's record set; on success also returns the end
/// offset (exclusive) that must become durable.
fn append(
    ctx: &RequestContext,
    partition: &Partition,
    records: Option<bytes::Bytes>,
    now: i64,
) -> Result<(Appended, i64), Failure> {
    let Some(records) = records.filter(|r| !r.is_empty()) else {
        return Err((
            ResponseError::CorruptMessage.code(),
            Some(StrBytes::from_static_str(
                "the request carries no record batch",
            )),
        ));
    };
    // Offsets are assigned in place, so the log needs its own mutable copy.
    let mut buf = records.to_vec();
    match partition.append(&mut buf, now) {
        Ok(info) => {
            ctx.broker
                .metrics
                .produced_records
                .with_label_values(&[partition.topic.as_str()])
                .inc_by(info.batches.len() as u64);
            ctx.broker
                .metrics
                .topic_bytes_in
                .with_label_values(&[partition.topic.as_str()])
                .inc_by(buf.len() as u64);
            Ok((
                Appended {
                    base_offset: info.first_offset,
                    log_append_time_ms: info.log_append_time,
                    log_start_offset: partition.log_start_offset(),
                },
                info.last_offset + 1,
            ))
        }
        Err(e) => {
            if matches!(
                e,
                Error::Log(veil_log::Error::Io(_) | veil_log::Error::Poisoned)
            ) {
                tracing::error!(topic = %partition.topic, partition = partition.index, error = %e, "append failed");
            }
            Err((e.code(), Some(StrBytes::from_string(e.client_message()))))
        }
    }
}
