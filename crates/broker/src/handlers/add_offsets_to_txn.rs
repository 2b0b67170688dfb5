//! AddOffsetsToTxn: a transactional producer will commit a group's offsets
//! in its transaction (`send_offsets_to_transaction`). The group's
//! `__consumer_offsets` partition joins the transaction, so its marker
//! commits or drops the offsets there.
//!
//! Authorization, as in Kafka: WRITE on the transactional id, then READ on
//! the group.

use std::collections::BTreeSet;

use kafka_protocol::messages::{AddOffsetsToTxnRequest, AddOffsetsToTxnResponse};
use kafka_protocol::ResponseError;

use super::add_partitions_to_txn::{fenced_for, FENCED_FROM};
use crate::auth::{Operation, ResourceType};
use crate::context::RequestContext;
use crate::group::offsets_topic;

pub async fn handle(ctx: &RequestContext, req: AddOffsetsToTxnRequest) -> AddOffsetsToTxnResponse {
    let code = match add(ctx, &req).await {
        Ok(()) => 0,
        Err(e) => fenced_for(ctx, e, FENCED_FROM).code(),
    };
    ctx.count(code);
    AddOffsetsToTxnResponse::default().with_error_code(code)
}

async fn add(ctx: &RequestContext, req: &AddOffsetsToTxnRequest) -> Result<(), ResponseError> {
    let id = req.transactional_id.0.as_str();
    if !ctx.authorize(Operation::Write, ResourceType::TransactionalId, id) {
        return Err(ResponseError::TransactionalIdAuthorizationFailed);
    }
    let group = req.group_id.0.as_str();
    if !ctx.authorize(Operation::Read, ResourceType::Group, group) {
        return Err(ResponseError::GroupAuthorizationFailed);
    }
    if !crate::group::limits::names_fit([group]) {
        return Err(ResponseError::InvalidRequest);
    }
    let topic = offsets_topic::ensure(&ctx.broker).await?;
    let partition = offsets_topic::partition_for(group, topic.partition_count());
    let partitions = BTreeSet::from([(offsets_topic::NAME.to_owned(), partition)]);
    ctx.broker
        .transactions
        .add_partitions(
            &ctx.broker,
            id,
            (req.producer_id.0, req.producer_epoch),
            &partitions,
        )
        .await
}
