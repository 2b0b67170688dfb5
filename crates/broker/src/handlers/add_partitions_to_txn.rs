//! AddPartitionsToTxn: a transactional producer names the partitions it is
//! about to write (v0–v3, one transaction), or a broker checks them (v4+,
//! several transactions, `verify_only`).
//!
//! Authorization, as in Kafka: WRITE on the transactional id (refused, every
//! partition answers TRANSACTIONAL_ID_AUTHORIZATION_FAILED), then WRITE on
//! each topic (TOPIC_AUTHORIZATION_FAILED), then existence
//! (UNKNOWN_TOPIC_OR_PARTITION). If any partition fails, none is added and
//! the others answer OPERATION_NOT_ATTEMPTED. v4+ needs CLUSTER_ACTION.

use std::collections::BTreeSet;

use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
use kafka_protocol::messages::add_partitions_to_txn_response::{
    AddPartitionsToTxnPartitionResult, AddPartitionsToTxnResult, AddPartitionsToTxnTopicResult,
};
use kafka_protocol::messages::{AddPartitionsToTxnRequest, AddPartitionsToTxnResponse};
use kafka_protocol::ResponseError;

use crate::auth::{Operation, ResourceType};
use crate::context::RequestContext;
use crate::txn::TransactionCoordinator;

/// The first version with batched transactions (KIP-890).
const BATCHED: i16 = 4;
/// The first version answering PRODUCER_FENCED instead of INVALID_PRODUCER_EPOCH.
pub const FENCED_FROM: i16 = 2;

/// PRODUCER_FENCED as the request's version knows it.
pub fn fenced_for(ctx: &RequestContext, error: ResponseError, from: i16) -> ResponseError {
    if error == ResponseError::ProducerFenced && ctx.api_version < from {
        ResponseError::InvalidProducerEpoch
    } else {
        error
    }
}

pub async fn handle(
    ctx: &RequestContext,
    req: AddPartitionsToTxnRequest,
) -> AddPartitionsToTxnResponse {
    if ctx.api_version >= BATCHED {
        return batched(ctx, req).await;
    }
    let id = req.v3_and_below_transactional_id.0.to_string();
    let producer = (
        req.v3_and_below_producer_id.0,
        req.v3_and_below_producer_epoch,
    );
    let results = add(ctx, &id, producer, &req.v3_and_below_topics, false).await;
    AddPartitionsToTxnResponse::default().with_results_by_topic_v3_and_below(results)
}

/// One transaction's partitions: checked, then added (or only verified).
async fn add(
    ctx: &RequestContext,
    id: &str,
    producer: (i64, i16),
    topics: &[AddPartitionsToTxnTopic],
    verify_only: bool,
) -> Vec<AddPartitionsToTxnTopicResult> {
    let id_denied = !ctx.authorize(Operation::Write, ResourceType::TransactionalId, id);
    // Per partition: an error found up front.
    let mut checked: Vec<(usize, i32, Option<ResponseError>)> = Vec::new();
    let mut wanted = BTreeSet::new();
    for (ti, t) in topics.iter().enumerate() {
        let name = t.name.0.as_str();
        let error = if id_denied {
            Some(ResponseError::TransactionalIdAuthorizationFailed)
        } else if !ctx.authorize(Operation::Write, ResourceType::Topic, name) {
            Some(ResponseError::TopicAuthorizationFailed)
        } else if crate::group::offsets_topic::is_internal(name) {
            Some(ResponseError::InvalidTopicException)
        } else {
            None
        };
        let topic = ctx.visible_topic(name);
        for &p in &t.partitions {
            let error = error.or_else(|| {
                (!topic.as_ref().is_some_and(|t| t.has_partition(p)))
                    .then_some(ResponseError::UnknownTopicOrPartition)
            });
            if error.is_none() {
                wanted.insert((name.to_owned(), p));
            }
            checked.push((ti, p, error));
        }
    }
    let any_failed = checked.iter().any(|(_, _, e)| e.is_some());
    let outcome: Result<(), Option<ResponseError>> = if any_failed {
        Err(None)
    } else if verify_only {
        wanted
            .iter()
            .try_for_each(|tp| TransactionCoordinator::verify_only(&ctx.broker, id, producer, tp))
            .map_err(Some)
    } else {
        ctx.broker
            .transactions
            .add_partitions(&ctx.broker, id, producer, &wanted)
            .await
            .map_err(Some)
    };
    let mut results: Vec<AddPartitionsToTxnTopicResult> = topics
        .iter()
        .map(|t| AddPartitionsToTxnTopicResult::default().with_name(t.name.clone()))
        .collect();
    for (ti, p, error) in checked {
        let error = match (&outcome, error) {
            (_, Some(e)) => Some(e),
            (Err(None), None) => Some(ResponseError::OperationNotAttempted),
            (Err(Some(e)), None) => Some(fenced_for(ctx, *e, FENCED_FROM)),
            (Ok(()), None) => None,
        };
        let code = error.map_or(0, |e| e.code());
        ctx.count(code);
        results[ti].results_by_partition.push(
            AddPartitionsToTxnPartitionResult::default()
                .with_partition_index(p)
                .with_partition_error_code(code),
        );
    }
    results
}

/// v4+: brokers verifying (or adding) partitions of several transactions.
async fn batched(
    ctx: &RequestContext,
    req: AddPartitionsToTxnRequest,
) -> AddPartitionsToTxnResponse {
    let resp = AddPartitionsToTxnResponse::default();
    if !ctx.authorize_cluster(Operation::ClusterAction) {
        let code = ResponseError::ClusterAuthorizationFailed.code();
        ctx.count(code);
        return resp.with_error_code(code);
    }
    let mut results = Vec::with_capacity(req.transactions.len());
    for t in &req.transactions {
        let producer = (t.producer_id.0, t.producer_epoch);
        let topics = add(
            ctx,
            t.transactional_id.0.as_str(),
            producer,
            &t.topics,
            t.verify_only,
        )
        .await;
        results.push(
            AddPartitionsToTxnResult::default()
                .with_transactional_id(t.transactional_id.clone())
                .with_topic_results(topics),
        );
    }
    resp.with_results_by_transaction(results)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_fixture as fixture;
    use kafka_protocol::messages::{ProducerId, TopicName, TransactionalId};
    use kafka_protocol::protocol::StrBytes;

    fn request(id: &str, pid: i64, topic: &str, partitions: Vec<i32>) -> AddPartitionsToTxnRequest {
        AddPartitionsToTxnRequest::default()
            .with_v3_and_below_transactional_id(TransactionalId(StrBytes::from_string(id.into())))
            .with_v3_and_below_producer_id(ProducerId(pid))
            .with_v3_and_below_producer_epoch(0)
            .with_v3_and_below_topics(vec![AddPartitionsToTxnTopic::default()
                .with_name(TopicName(StrBytes::from_string(topic.into())))
                .with_partitions(partitions)])
    }

    fn codes(resp: &AddPartitionsToTxnResponse) -> Vec<i16> {
        resp.results_by_topic_v3_and_below
            .iter()
            .flat_map(|t| {
                t.results_by_partition
                    .iter()
                    .map(|p| p.partition_error_code)
            })
            .collect()
    }

    #[tokio::test]
    async fn unknown_partitions_fail_alone_and_the_rest_is_not_attempted() {
        let (_dir, ctx) = fixture::context(3).await;
        fixture::create_topic(&ctx, "t", 2).await;
        let (pid, epoch) = ctx
            .broker
            .transactions
            .init_producer_id(&ctx.broker, "tx", 60_000, (-1, -1))
            .await
            .unwrap();
        assert_eq!(epoch, 0);
        let resp = handle(&ctx, request("tx", pid, "t", vec![0, 7])).await;
        fixture::encodes(&resp, 3..=3);
        assert_eq!(
            codes(&resp),
            vec![
                ResponseError::OperationNotAttempted.code(),
                ResponseError::UnknownTopicOrPartition.code()
            ]
        );
        let resp = handle(&ctx, request("tx", pid, "t", vec![0, 1])).await;
        assert_eq!(codes(&resp), vec![0, 0]);
        let record = ctx
            .broker
            .with_meta(|m| m.transaction("tx").cloned())
            .unwrap();
        assert_eq!(record.state, veil_meta::TxnState::Ongoing);
        assert_eq!(record.partitions.len(), 2);
        // Another producer id, and an unknown transactional id.
        let resp = handle(&ctx, request("tx", pid + 1, "t", vec![0])).await;
        assert_eq!(
            codes(&resp),
            vec![ResponseError::InvalidProducerIdMapping.code()]
        );
        let resp = handle(&ctx, request("other", pid, "t", vec![0])).await;
        assert_eq!(
            codes(&resp),
            vec![ResponseError::InvalidProducerIdMapping.code()]
        );
    }
}
