//! DescribeTransactions (KIP-664): the state, producer, timeout and
//! partitions of transactional ids. Every node holds the coordinator's
//! state (it is in the metadata quorum), so any node answers.
//!
//! Authorization, as in Kafka: DESCRIBE on each transactional id
//! (TRANSACTIONAL_ID_AUTHORIZATION_FAILED); partitions of topics the
//! principal may not DESCRIBE are left out.

use std::collections::BTreeMap;

use kafka_protocol::messages::describe_transactions_response::{TopicData, TransactionState};
use kafka_protocol::messages::{
    DescribeTransactionsRequest, DescribeTransactionsResponse, ProducerId, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use crate::auth::{Operation, ResourceType};
use crate::context::RequestContext;

pub async fn handle(
    ctx: &RequestContext,
    req: DescribeTransactionsRequest,
) -> DescribeTransactionsResponse {
    let states = req
        .transactional_ids
        .into_iter()
        .map(|id| {
            let base = TransactionState::default()
                .with_transactional_id(id.clone())
                .with_producer_id(ProducerId(-1))
                .with_producer_epoch(-1)
                .with_transaction_start_time_ms(-1);
            let error = (!ctx.authorize(Operation::Describe, ResourceType::TransactionalId, &id))
                .then_some(ResponseError::TransactionalIdAuthorizationFailed);
            let record = ctx
                .broker
                .with_meta(|m| m.transaction(id.0.as_str()).cloned());
            let (code, state) = match (error, record) {
                (Some(e), _) => (e.code(), base),
                (None, None) => (ResponseError::TransactionalIdNotFound.code(), base),
                (None, Some(r)) => {
                    let mut topics: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
                    for (t, p) in &r.partitions {
                        if ctx.authorize(Operation::Describe, ResourceType::Topic, t) {
                            topics.entry(t.as_str()).or_default().push(*p);
                        }
                    }
                    let topics = topics
                        .into_iter()
                        .map(|(t, ps)| {
                            TopicData::default()
                                .with_topic(TopicName(StrBytes::from_string(t.to_owned())))
                                .with_partitions(ps)
                        })
                        .collect();
                    let state = base
                        .with_transaction_state(StrBytes::from_static_str(r.state.kafka_name()))
                        .with_transaction_timeout_ms(r.timeout_ms)
                        .with_transaction_start_time_ms(r.start_ms)
                        .with_producer_id(ProducerId(r.producer_id))
                        .with_producer_epoch(r.producer_epoch)
                        .with_topics(topics);
                    (0, state)
                }
            };
            ctx.count(code);
            state.with_error_code(code)
        })
        .collect();
    DescribeTransactionsResponse::default().with_transaction_states(states)
}
