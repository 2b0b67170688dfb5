//! DescribeCluster (KIP-700): cluster id, controller and brokers.
//!
//! Brokers are the registered ones with an endpoint for the client's
//! listener; v2 can include fenced brokers (flagged). The controller is the
//! metadata quorum's leader as this node knows it (-1 when none). As on a
//! Kafka broker, describing the cluster needs no permission; the authorized
//! operations, when asked for, are 0 without DESCRIBE on the cluster and
//! otherwise the CLUSTER operations the principal may perform (all of them
//! while the authorizer is disabled).
//!
//! The controller adds to each broker a tagged field of its own,
//! [`TAG_HEARTBEAT_AGE_MS`]: milliseconds since that broker's last
//! heartbeat reached it (an 8-byte big-endian integer; absent when it has
//! not heard from the broker since it became controller). Kafka's clients
//! skip tagged fields they do not know; `veil cluster status` shows it.

use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::{BrokerId, DescribeClusterRequest, DescribeClusterResponse};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use crate::auth::acl::OPERATIONS_NOT_REQUESTED;
use crate::auth::{Operation, ResourceType, CLUSTER_NAME};
use crate::context::RequestContext;

/// `endpoint_type` (v1+): brokers; 2 (controllers) is served by KRaft controllers only.
const ENDPOINT_BROKERS: i8 = 1;

/// The tag of the heartbeat age on each broker entry.
pub const TAG_HEARTBEAT_AGE_MS: i32 = veil_blind::protocol::DESCRIBE_CLUSTER_HEARTBEAT_AGE_TAG;

/// Adds the heartbeat age the controller knows, if it is the controller.
fn with_heartbeat_age(ctx: &RequestContext, b: DescribeClusterBroker) -> DescribeClusterBroker {
    let cluster = &ctx.broker.cluster;
    if !cluster.quorum.is_controller() {
        return b;
    }
    match cluster.controller.heartbeat_age(b.broker_id.0) {
        Some(age) => {
            let ms = i64::try_from(age.as_millis()).unwrap_or(i64::MAX);
            b.with_unknown_tagged_field(
                TAG_HEARTBEAT_AGE_MS,
                bytes::Bytes::copy_from_slice(&ms.to_be_bytes()),
            )
        }
        None => b,
    }
}

// Every handler is async so `dispatch` can await them alike.
pub async fn handle(ctx: &RequestContext, req: DescribeClusterRequest) -> DescribeClusterResponse {
    let broker = &ctx.broker;
    let response = DescribeClusterResponse::default()
        .with_cluster_id(StrBytes::from_string(broker.cluster_id()))
        .with_controller_id(BrokerId(broker.cluster.quorum.controller().unwrap_or(-1)));
    if ctx.api_version >= 1 && req.endpoint_type != ENDPOINT_BROKERS {
        let code = ResponseError::UnsupportedEndpointType.code();
        ctx.count(code);
        return response
            .with_error_code(code)
            .with_error_message(Some(StrBytes::from_string(format!(
                "endpoint type {} is not served by a broker; use 1 (brokers)",
                req.endpoint_type
            ))));
    }
    let include_fenced = ctx.api_version >= 2 && req.include_fenced_brokers;
    let fenced: Vec<DescribeClusterBroker> = if include_fenced {
        broker.with_meta(|s| {
            s.brokers()
                .filter(|b| b.fenced && b.node_id != broker.node_id())
                .filter_map(|b| {
                    let e = b.listeners.iter().find(|e| e.name == ctx.listener)?;
                    Some(
                        DescribeClusterBroker::default()
                            .with_broker_id(BrokerId(b.node_id))
                            .with_host(StrBytes::from_string(e.host.clone()))
                            .with_port(i32::from(e.port))
                            .with_rack(b.rack.clone().map(StrBytes::from_string))
                            .with_is_fenced(true),
                    )
                })
                .collect()
        })
    } else {
        Vec::new()
    };
    let mut brokers: Vec<DescribeClusterBroker> = broker
        .broker_endpoints(&ctx.listener)
        .into_iter()
        .map(|b| {
            DescribeClusterBroker::default()
                .with_broker_id(BrokerId(b.node_id))
                .with_host(StrBytes::from_string(b.host))
                .with_port(b.port)
                .with_rack(b.rack.map(StrBytes::from_string))
        })
        .chain(fenced)
        .map(|b| with_heartbeat_age(ctx, b))
        .collect();
    brokers.sort_by_key(|b| b.broker_id.0);
    let operations = if !req.include_cluster_authorized_operations {
        OPERATIONS_NOT_REQUESTED
    } else if ctx.authorize_cluster(Operation::Describe) {
        ctx.authorized_operations(ResourceType::Cluster, CLUSTER_NAME)
    } else {
        0
    };
    response
        .with_endpoint_type(ENDPOINT_BROKERS)
        .with_brokers(brokers)
        .with_cluster_authorized_operations(operations)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_fixture as fixture;

    #[tokio::test]
    async fn describes_this_broker_as_the_whole_cluster() {
        let (_dir, ctx) = fixture::context(1).await;
        let resp = handle(&ctx, DescribeClusterRequest::default()).await;
        fixture::encodes(&resp, 0..=1);
        assert_eq!(resp.cluster_id.as_str(), ctx.broker.cluster_id());
        assert_eq!(resp.controller_id, BrokerId(ctx.broker.node_id()));
        assert_eq!(resp.brokers.len(), 1);
        let age = resp.brokers[0]
            .unknown_tagged_fields
            .get(&TAG_HEARTBEAT_AGE_MS)
            .expect("the controller knows its own heartbeat");
        let ms = i64::from_be_bytes(age[..].try_into().unwrap());
        assert!((0..30_000).contains(&ms), "{ms}");
        assert_eq!(
            (resp.brokers[0].host.as_str(), resp.brokers[0].port),
            ("localhost", 9092)
        );
        assert_eq!(resp.cluster_authorized_operations, OPERATIONS_NOT_REQUESTED);
        let req =
            DescribeClusterRequest::default().with_include_cluster_authorized_operations(true);
        assert_eq!(handle(&ctx, req).await.cluster_authorized_operations, 8096);
        let req = DescribeClusterRequest::default().with_endpoint_type(2);
        let resp = handle(&ctx, req).await;
        assert_eq!(
            resp.error_code,
            ResponseError::UnsupportedEndpointType.code()
        );
    }

    #[test]
    fn cluster_operations_bitfield_matches_kafka() {
        // Kafka's supported CLUSTER operations (AclEntry.supportedOperations):
        // CREATE, ALTER, DESCRIBE, CLUSTER_ACTION, DESCRIBE_CONFIGS,
        // ALTER_CONFIGS, IDEMPOTENT_WRITE.
        let bits = ResourceType::Cluster
            .supported_operations()
            .iter()
            .fold(0, |acc, op| acc | (1 << op.code()));
        assert_eq!(bits, 8096);
    }
}
