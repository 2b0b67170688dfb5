//! ListTransactions (KIP-664): the transactional ids this node coordinates,
//! filtered by state, producer id and (v1) how long they have been open.
//!
//! Admin clients ask every broker and merge the answers, so only the
//! coordinator (the controller) lists transactions; other nodes answer an
//! empty list. Ids the principal may not DESCRIBE are left out. State
//! filters Kafka does not know come back in `unknown_state_filters`.

use kafka_protocol::messages::list_transactions_response::TransactionState;
use kafka_protocol::messages::{ListTransactionsRequest, ListTransactionsResponse, ProducerId};
use kafka_protocol::protocol::StrBytes;

use crate::auth::{Operation, ResourceType};
use crate::context::RequestContext;

/// The state names Kafka lists.
const KNOWN_STATES: [&str; 7] = [
    "Empty",
    "Ongoing",
    "PrepareCommit",
    "PrepareAbort",
    "CompleteCommit",
    "CompleteAbort",
    "Dead",
];

pub async fn handle(
    ctx: &RequestContext,
    req: ListTransactionsRequest,
) -> ListTransactionsResponse {
    let unknown: Vec<StrBytes> = req
        .state_filters
        .iter()
        .filter(|s| !KNOWN_STATES.contains(&s.as_str()))
        .cloned()
        .collect();
    let resp = ListTransactionsResponse::default().with_unknown_state_filters(unknown);
    if !ctx.broker.cluster.quorum.is_controller() {
        return resp;
    }
    let now = ctx.now_ms();
    let states = ctx.broker.with_meta(|m| {
        m.transactions()
            .filter(|(_, r)| {
                req.state_filters.is_empty()
                    || req
                        .state_filters
                        .iter()
                        .any(|s| s.as_str() == r.state.kafka_name())
            })
            .filter(|(_, r)| {
                req.producer_id_filters.is_empty()
                    || req.producer_id_filters.contains(&ProducerId(r.producer_id))
            })
            .filter(|(_, r)| {
                // v1: only transactions open longer than the filter.
                req.duration_filter < 0
                    || (r.start_ms >= 0 && now.saturating_sub(r.start_ms) > req.duration_filter)
            })
            .map(|(id, r)| (id.clone(), r.producer_id, r.state.kafka_name()))
            .collect::<Vec<_>>()
    });
    let states = states
        .into_iter()
        .filter(|(id, _, _)| ctx.authorize(Operation::Describe, ResourceType::TransactionalId, id))
        .map(|(id, producer_id, state)| {
            TransactionState::default()
                .with_transactional_id(kafka_protocol::messages::TransactionalId(
                    StrBytes::from_string(id),
                ))
                .with_producer_id(ProducerId(producer_id))
                .with_transaction_state(StrBytes::from_static_str(state))
        })
        .collect();
    resp.with_transaction_states(states)
}
