//! TxnOffsetCommit: a group's offsets committed inside a transaction
//! (consume-transform-produce). They are stored at once, replicated before
//! the answer, and stay invisible to OffsetFetch until the transaction's
//! marker reaches the group's `__consumer_offsets` partition: committed
//! with the output, or dropped with it.
//!
//! Checks, as in Kafka: WRITE on the transactional id (else every partition
//! is TRANSACTIONAL_ID_AUTHORIZATION_FAILED), READ on the group, READ on
//! each topic (TOPIC_AUTHORIZATION_FAILED), then existence and metadata
//! size; the group's partition must be in the producer's open transaction
//! (AddOffsetsToTxn first; else INVALID_TXN_STATE) and, from v3, the member
//! and generation must be current when given.

use kafka_protocol::messages::txn_offset_commit_response::{
    TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic,
};
use kafka_protocol::messages::{TxnOffsetCommitRequest, TxnOffsetCommitResponse};
use kafka_protocol::ResponseError;

use super::add_partitions_to_txn::fenced_for;
use super::offset_commit::refusal;
use crate::auth::{Operation, ResourceType};
use crate::context::RequestContext;
use crate::group::record::CommittedOffset;
use crate::group::{limits, offsets_topic};
use crate::txn::TransactionCoordinator;

/// The first version answering PRODUCER_FENCED.
const FENCED_FROM: i16 = 3;

pub async fn handle(ctx: &RequestContext, req: TxnOffsetCommitRequest) -> TxnOffsetCommitResponse {
    let id = req.transactional_id.0.to_string();
    let group_id = req.group_id.0.to_string();
    let request_error = if !ctx.authorize(Operation::Write, ResourceType::TransactionalId, &id) {
        Some(ResponseError::TransactionalIdAuthorizationFailed)
    } else if !ctx.authorize(Operation::Read, ResourceType::Group, &group_id) {
        Some(ResponseError::GroupAuthorizationFailed)
    } else if !limits::names_fit([group_id.as_str()]) {
        Some(ResponseError::InvalidRequest)
    } else {
        None
    };
    let max_metadata = ctx.broker.config.groups.offset_metadata_max_bytes;
    let now = ctx.now_ms();
    let mut results: Vec<Vec<(i32, Option<ResponseError>)>> = Vec::new();
    let mut to_store = Vec::new();
    for t in &req.topics {
        let topic_denied = !ctx.authorize(Operation::Read, ResourceType::Topic, &t.name);
        let topic = ctx.visible_topic(&t.name);
        let mut parts = Vec::new();
        for p in &t.partitions {
            let metadata = p.committed_metadata.as_deref().unwrap_or_default();
            let error = if let Some(e) = request_error.or_else(|| {
                refusal(
                    topic_denied,
                    topic.as_deref(),
                    p.partition_index,
                    metadata,
                    max_metadata,
                )
            }) {
                Some(e)
            } else {
                to_store.push((
                    t.name.to_string(),
                    p.partition_index,
                    CommittedOffset {
                        offset: p.committed_offset,
                        leader_epoch: if ctx.api_version >= 2 {
                            p.committed_leader_epoch
                        } else {
                            -1
                        },
                        metadata: metadata.to_owned(),
                        commit_timestamp: now,
                        expire_timestamp: -1,
                    },
                ));
                None
            };
            parts.push((p.partition_index, error));
        }
        results.push(parts);
    }
    let group_error = if request_error.is_some() || to_store.is_empty() {
        None
    } else {
        store(ctx, &req, &id, &group_id, to_store)
            .await
            .err()
            .map(|e| fenced_for(ctx, e, FENCED_FROM))
    };
    let topics = req
        .topics
        .into_iter()
        .zip(results)
        .map(|(t, parts)| {
            let partitions = parts
                .into_iter()
                .map(|(index, error)| {
                    let code = error.or(group_error).map_or(0, |e| e.code());
                    ctx.count(code);
                    TxnOffsetCommitResponsePartition::default()
                        .with_partition_index(index)
                        .with_error_code(code)
                })
                .collect();
            TxnOffsetCommitResponseTopic::default()
                .with_name(t.name)
                .with_partitions(partitions)
        })
        .collect();
    TxnOffsetCommitResponse::default().with_topics(topics)
}

/// Checks the transaction and the group, stores the pending offsets and
/// waits until they are replicated.
async fn store(
    ctx: &RequestContext,
    req: &TxnOffsetCommitRequest,
    id: &str,
    group_id: &str,
    offsets: Vec<(String, i32, CommittedOffset)>,
) -> Result<(), ResponseError> {
    let producer = (req.producer_id.0, req.producer_epoch);
    offsets_topic::ready(&ctx.broker, group_id).await?;
    let topic = offsets_topic::ensure(&ctx.broker).await?;
    let partition = (
        offsets_topic::NAME.to_owned(),
        offsets_topic::partition_for(group_id, topic.partition_count()),
    );
    TransactionCoordinator::verify(&ctx.broker, id, producer, &partition).await?;
    // v3+ carries the member and generation (KIP-447); -1 skips the check.
    let member_id = req.member_id.to_string();
    let instance = req.group_instance_id.as_ref().map(ToString::to_string);
    let generation = if ctx.api_version >= 3 {
        req.generation_id
    } else {
        -1
    };
    let (checked, durable) = ctx.broker.groups.run(|core, now, out| {
        if generation >= 0 {
            core.check_commit(group_id, &member_id, instance.as_deref(), generation)?;
        }
        core.commit_txn(group_id, &member_id, producer, offsets, now, out)
    });
    checked?;
    durable.wait().await.map_or(Ok(()), Err)
}
