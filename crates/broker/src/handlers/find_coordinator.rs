//! FindCoordinator: a group's coordinator is the leader of its partition of
//! `__consumer_offsets` (created by the first lookup).
//!
//! Key type 0 (group) answers that broker's address on the listener the
//! request came in on (COORDINATOR_NOT_AVAILABLE, retriable, while the
//! partition has no leader or the topic cannot be created yet); key type 1
//! (transaction) answers the controller, which coordinates every
//! transactional id (see [`crate::txn`]); any other type is INVALID_REQUEST, as Kafka
//! answers an unknown type. v4+ batches keys in `coordinator_keys`.
//!
//! Authorization, as in Kafka, before anything else per key: DESCRIBE on the
//! group (GROUP_AUTHORIZATION_FAILED) or on the transactional id
//! (TRANSACTIONAL_ID_AUTHORIZATION_FAILED).

use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{BrokerId, FindCoordinatorRequest, FindCoordinatorResponse};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use crate::auth::{Operation, ResourceType};
use crate::context::RequestContext;

const GROUP: i8 = 0;
const TRANSACTION: i8 = 1;

/// (error, node id, host, port) for one key.
async fn locate(
    ctx: &RequestContext,
    key_type: i8,
    key: &str,
) -> (Option<ResponseError>, i32, String, i32) {
    let may_describe = |resource_type| ctx.authorize(Operation::Describe, resource_type, key);
    let error = match key_type {
        GROUP if !may_describe(ResourceType::Group) => {
            Some(ResponseError::GroupAuthorizationFailed)
        }
        TRANSACTION if !may_describe(ResourceType::TransactionalId) => {
            Some(ResponseError::TransactionalIdAuthorizationFailed)
        }
        GROUP | TRANSACTION => None,
        _ => Some(ResponseError::InvalidRequest),
    };
    if let Some(e) = error {
        return (Some(e), -1, String::new(), -1);
    }
    let unavailable = |e| (Some(e), -1, String::new(), -1);
    let node = if key_type == TRANSACTION {
        match crate::txn::TransactionCoordinator::coordinator_node(&ctx.broker) {
            Some(node) => node,
            None => return unavailable(ResponseError::CoordinatorNotAvailable),
        }
    } else {
        match crate::group::offsets_topic::coordinator_of(&ctx.broker, key).await {
            Ok(node) => node,
            Err(e) => return unavailable(e),
        }
    };
    if node == ctx.broker.node_id() {
        return match ctx.broker.advertised_for(&ctx.listener) {
            Some(a) => (None, node, a.host, a.port),
            None => unavailable(ResponseError::CoordinatorNotAvailable),
        };
    }
    match ctx
        .broker
        .broker_endpoints(&ctx.listener)
        .into_iter()
        .find(|b| b.node_id == node)
    {
        Some(b) => (None, node, b.host, b.port),
        // Fenced or unknown: its partitions move soon.
        None => unavailable(ResponseError::CoordinatorNotAvailable),
    }
}

pub async fn handle(ctx: &RequestContext, req: FindCoordinatorRequest) -> FindCoordinatorResponse {
    let resp = FindCoordinatorResponse::default();
    if ctx.api_version >= 4 {
        let mut located = Vec::with_capacity(req.coordinator_keys.len());
        for key in &req.coordinator_keys {
            located.push(locate(ctx, req.key_type, key).await);
        }
        let coordinators = req
            .coordinator_keys
            .into_iter()
            .zip(located)
            .map(|(key, (error, node, host, port))| {
                let code = error.map_or(0, |e| e.code());
                ctx.count(code);
                Coordinator::default()
                    .with_key(key)
                    .with_node_id(BrokerId(node))
                    .with_host(StrBytes::from_string(host))
                    .with_port(port)
                    .with_error_code(code)
                    .with_error_message(error.map(|e| StrBytes::from_string(e.to_string())))
            })
            .collect();
        return resp.with_coordinators(coordinators);
    }
    let (error, node, host, port) = locate(ctx, req.key_type, &req.key).await;
    let code = error.map_or(0, |e| e.code());
    ctx.count(code);
    resp.with_error_code(code)
        .with_error_message(error.map(|e| StrBytes::from_string(e.to_string())))
        .with_node_id(BrokerId(node))
        .with_host(StrBytes::from_string(host))
        .with_port(port)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_fixture as fixture;

    #[tokio::test]
    async fn answers_this_broker_for_groups_in_every_version() {
        for v in 0..=5 {
            let (_dir, mut ctx) = fixture::context(v).await;
            ctx.api_version = v;
            let req = FindCoordinatorRequest::default()
                .with_key(StrBytes::from_static_str("g"))
                .with_coordinator_keys(vec![
                    StrBytes::from_static_str("g"),
                    StrBytes::from_static_str("h"),
                ]);
            let resp = handle(&ctx, req).await;
            fixture::encodes(&resp, v..=v);
            if v >= 4 {
                assert_eq!(resp.coordinators.len(), 2);
                assert_eq!(
                    (resp.coordinators[1].port, resp.coordinators[1].error_code),
                    (9092, 0)
                );
            } else {
                assert_eq!((resp.error_code, resp.node_id.0, resp.port), (0, 0, 9092));
                assert_eq!(resp.host.as_str(), "localhost");
            }
        }
        let (_dir, ctx) = fixture::context(4).await;
        let req = FindCoordinatorRequest::default()
            .with_key_type(1)
            .with_coordinator_keys(vec![StrBytes::from_static_str("tx")]);
        let resp = handle(&ctx, req).await;
        assert_eq!(
            (resp.coordinators[0].error_code, resp.coordinators[0].port),
            (0, 9092),
            "the controller coordinates transactions"
        );
        let req = FindCoordinatorRequest::default()
            .with_key_type(7)
            .with_coordinator_keys(vec![StrBytes::from_static_str("x")]);
        assert_eq!(
            handle(&ctx, req).await.coordinators[0].error_code,
            ResponseError::InvalidRequest.code()
        );
    }
}
