//! WriteTxnMarkers: the transaction coordinator asks this node, the leader
//! of some partitions of a transaction, to write its COMMIT or ABORT marker
//! there. Served to other nodes (the inter-node listener) and to principals
//! with CLUSTER_ACTION, as in Kafka.
//!
//! Each partition answers once its marker is replicated as an `acks=all`
//! produce would be; NOT_LEADER_OR_FOLLOWER when this node does not lead it
//! (the coordinator looks the leader up again and retries).

use std::sync::Arc;

use kafka_protocol::messages::write_txn_markers_response::{
    WritableTxnMarkerPartitionResult, WritableTxnMarkerResult, WritableTxnMarkerTopicResult,
};
use kafka_protocol::messages::{WriteTxnMarkersRequest, WriteTxnMarkersResponse};
use kafka_protocol::ResponseError;

use crate::auth::Operation;
use crate::context::RequestContext;
use crate::dispatch::{Handled, Response};
use crate::txn::markers::write_local;

pub async fn handle(ctx: &RequestContext, req: WriteTxnMarkersRequest) -> Handled {
    let allowed = ctx.listener == crate::server::INTERNAL_LISTENER
        || ctx.authorize_cluster(Operation::ClusterAction);
    let broker = Arc::clone(&ctx.broker);
    let counter = ctx.clone();
    // Deferred: markers wait for replication; the connection keeps reading.
    Handled::Deferred(Box::pin(async move {
        let mut markers = Vec::with_capacity(req.markers.len());
        for m in req.markers {
            let producer = (m.producer_id.0, m.producer_epoch);
            let mut topics = Vec::with_capacity(m.topics.len());
            for t in m.topics {
                let mut partitions = Vec::with_capacity(t.partition_indexes.len());
                for p in t.partition_indexes {
                    let outcome = if allowed {
                        write_local(
                            &broker,
                            t.name.0.as_str(),
                            p,
                            producer,
                            m.transaction_result,
                            m.coordinator_epoch,
                        )
                        .await
                    } else {
                        Err(ResponseError::ClusterAuthorizationFailed)
                    };
                    let code = outcome.map_or_else(|e| e.code(), |()| 0);
                    counter.count(code);
                    partitions.push(
                        WritableTxnMarkerPartitionResult::default()
                            .with_partition_index(p)
                            .with_error_code(code),
                    );
                }
                topics.push(
                    WritableTxnMarkerTopicResult::default()
                        .with_name(t.name)
                        .with_partitions(partitions),
                );
            }
            markers.push(
                WritableTxnMarkerResult::default()
                    .with_producer_id(m.producer_id)
                    .with_topics(topics),
            );
        }
        Response::WriteTxnMarkers(WriteTxnMarkersResponse::default().with_markers(markers))
    }))
}
