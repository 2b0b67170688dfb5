//! InitProducerId: producer ids for idempotent producers.
//!
//! Kafka's rules, from its transaction coordinator:
//! * no transactional id → always a fresh producer id with epoch 0. This holds for KIP-360
//!   re-initialisation too (v3+ requests carrying the old id and epoch): for a non-transactional
//!   producer Kafka never bumps an epoch server-side; the Java client bumps idempotent epochs
//!   itself and asks for a new id only when the epoch is exhausted, so a fresh id is exactly what
//!   it expects. The old id's partition state is left to expire.
//! * exactly one of producer id / epoch set to -1 → INVALID_REQUEST (Kafka's `KafkaApis` check).
//! * an empty transactional id → INVALID_REQUEST.
//! * a transactional id → the transaction coordinator ([`crate::txn`]): a new producer id, or the
//!   id's producer with its epoch bumped (fencing the previous producer; an open transaction of
//!   that producer is aborted first and the client told CONCURRENT_TRANSACTIONS, which it
//!   retries). PRODUCER_FENCED is INVALID_PRODUCER_EPOCH before v4, as in Kafka.

use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};
use kafka_protocol::ResponseError;

use crate::auth::{Operation, ResourceType};
use crate::context::RequestContext;

pub async fn handle(ctx: &RequestContext, req: InitProducerIdRequest) -> InitProducerIdResponse {
    let failed = |error: ResponseError| {
        ctx.count(error.code());
        InitProducerIdResponse::default()
            .with_error_code(error.code())
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1)
    };
    // Kafka authorizes first: WRITE on the transactional id; without one,
    // IDEMPOTENT_WRITE on the cluster or WRITE on any topic (KIP-679).
    let denied = match req.transactional_id.as_ref() {
        Some(id) => (!ctx.authorize(
            Operation::Write,
            ResourceType::TransactionalId,
            id.0.as_str(),
        ))
        .then_some(ResponseError::TransactionalIdAuthorizationFailed),
        None => (!ctx.authorize_cluster(Operation::IdempotentWrite)
            && !ctx.authorize_any(Operation::Write, ResourceType::Topic))
        .then_some(ResponseError::ClusterAuthorizationFailed),
    };
    if let Some(error) = denied {
        return failed(error);
    }
    if (req.producer_id.0 == -1) != (req.producer_epoch == -1) {
        return failed(ResponseError::InvalidRequest);
    }
    match req.transactional_id.as_ref().map(|t| t.0.as_str()) {
        None => {}
        Some("") => return failed(ResponseError::InvalidRequest),
        Some(id) => {
            let expected = (req.producer_id.0, req.producer_epoch);
            return match ctx
                .broker
                .transactions
                .init_producer_id(&ctx.broker, id, req.transaction_timeout_ms, expected)
                .await
            {
                Ok((producer_id, epoch)) => InitProducerIdResponse::default()
                    .with_producer_id(ProducerId(producer_id))
                    .with_producer_epoch(epoch),
                Err(e) => failed(super::add_partitions_to_txn::fenced_for(ctx, e, 4)),
            };
        }
    }
    match ctx.broker.producer_ids.next(&ctx.broker).await {
        Ok(id) => InitProducerIdResponse::default()
            .with_producer_id(ProducerId(id))
            .with_producer_epoch(0),
        Err(e) => {
            tracing::error!(error = %e, "reserving producer ids failed");
            // Retriable for clients; the metadata store's own error says what broke.
            failed(ResponseError::CoordinatorNotAvailable)
        }
    }
}
