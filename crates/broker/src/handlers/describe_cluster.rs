//! DescribeCluster (KIP-700): cluster id, controller and brokers.
//!
//! This single node is both the only broker and the controller. As on a
//! Kafka broker, describing the cluster needs no permission; the authorized
//! operations, when asked for, are 0 without DESCRIBE on the cluster and
//! otherwise the CLUSTER operations the principal may perform (all of them
//! while the authorizer is disabled).

use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::{BrokerId, DescribeClusterRequest, DescribeClusterResponse};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use crate::auth::acl::OPERATIONS_NOT_REQUESTED;
use crate::auth::{Operation, ResourceType, CLUSTER_NAME};
use crate::context::RequestContext;

/// `endpoint_type` (v1+): brokers; 2 (controllers) is served by KRaft controllers only.
const ENDPOINT_BROKERS: i8 = 1;

// Every handler is async so `dispatch` can await them alike.
pub async fn handle(ctx: &RequestContext, req: DescribeClusterRequest) -> DescribeClusterResponse {
    let broker = &ctx.broker;
    let response = DescribeClusterResponse::default()
        .with_cluster_id(StrBytes::from_string(broker.cluster_id.clone()))
        .with_controller_id(BrokerId(broker.node_id()));
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
    let brokers = broker
        .advertised_for(&ctx.listener)
        .map(|a| {
            DescribeClusterBroker::default()
                .with_broker_id(BrokerId(broker.node_id()))
                .with_host(StrBytes::from_string(a.host))
                .with_port(a.port)
                .with_rack(None)
        })
        .into_iter()
        .collect();
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
        let (_dir, ctx) = fixture::context(1);
        let resp = handle(&ctx, DescribeClusterRequest::default()).await;
        fixture::encodes(&resp, 0..=1);
        assert_eq!(resp.cluster_id.as_str(), ctx.broker.cluster_id);
        assert_eq!(resp.controller_id, BrokerId(ctx.broker.node_id()));
        assert_eq!(resp.brokers.len(), 1);
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
