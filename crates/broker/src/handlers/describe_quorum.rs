//! DescribeQuorum (KIP-595): the metadata quorum as its leader sees it —
//! leader, epoch (the Raft term), high watermark, and for every voter and
//! observer (broker-only learners) its log end offset and when the leader
//! last heard from it and last saw it caught up.
//!
//! As in Kafka, only the leader answers; any other node answers
//! NOT_LEADER_OR_FOLLOWER for the partition, and a client asks the
//! controller (DescribeCluster names it). The metadata log is Kafka's
//! `__cluster_metadata` partition 0; anything else is
//! UNKNOWN_TOPIC_OR_PARTITION. Needs DESCRIBE on the cluster.

use kafka_protocol::messages::describe_quorum_response::{
    Listener, Node, PartitionData, ReplicaState, TopicData,
};
use kafka_protocol::messages::{
    BrokerId, DescribeQuorumRequest, DescribeQuorumResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use crate::auth::Operation;
use crate::cluster::quorum;
use crate::context::RequestContext;

/// The metadata log's name and partition in Kafka's protocol.
pub const METADATA_TOPIC: &str = "__cluster_metadata";
pub const METADATA_PARTITION: i32 = 0;

fn replica(r: &quorum::ReplicaState) -> ReplicaState {
    ReplicaState::default()
        .with_replica_id(BrokerId(r.node))
        .with_log_end_offset(r.log_end_offset)
        .with_last_fetch_timestamp(r.last_fetch_ms)
        .with_last_caught_up_timestamp(r.last_caught_up_ms)
}

fn topic(partitions: Vec<PartitionData>) -> TopicData {
    TopicData::default()
        .with_topic_name(TopicName(StrBytes::from_static_str(METADATA_TOPIC)))
        .with_partitions(partitions)
}

/// Every requested partition answered with `error`.
fn partition_errors(req: &DescribeQuorumRequest, error: ResponseError) -> Vec<TopicData> {
    req.topics
        .iter()
        .map(|t| {
            TopicData::default()
                .with_topic_name(t.topic_name.clone())
                .with_partitions(
                    t.partitions
                        .iter()
                        .map(|p| {
                            PartitionData::default()
                                .with_partition_index(p.partition_index)
                                .with_error_code(error.code())
                        })
                        .collect(),
                )
        })
        .collect()
}

/// The voters' inter-node endpoints (v2), so a client can tell where they are.
fn nodes(ctx: &RequestContext, voters: &[quorum::ReplicaState]) -> Vec<Node> {
    voters
        .iter()
        .filter_map(|v| {
            let addr = ctx.broker.cluster.quorum.voter_address(v.node)?;
            let (host, port) = addr.rsplit_once(':')?;
            Some(
                Node::default()
                    .with_node_id(BrokerId(v.node))
                    .with_listeners(vec![Listener::default()
                        .with_name(StrBytes::from_static_str(crate::server::INTERNAL_LISTENER))
                        .with_host(StrBytes::from_string(
                            host.trim_matches(['[', ']']).to_owned(),
                        ))
                        .with_port(port.parse().ok()?)]),
            )
        })
        .collect()
}

// Every handler is async so `dispatch` can await them alike.
pub async fn handle(ctx: &RequestContext, req: DescribeQuorumRequest) -> DescribeQuorumResponse {
    if !ctx.authorize_cluster(Operation::Describe) {
        let error = ResponseError::ClusterAuthorizationFailed;
        ctx.count(error.code());
        return DescribeQuorumResponse::default()
            .with_error_code(error.code())
            .with_error_message(Some(StrBytes::from_static_str(
                "DESCRIBE on the cluster is needed to describe the metadata quorum",
            )));
    }
    let valid = matches!(&req.topics[..], [t] if t.topic_name.0.as_str() == METADATA_TOPIC
        && matches!(&t.partitions[..], [p] if p.partition_index == METADATA_PARTITION));
    if !valid {
        let error = ResponseError::UnknownTopicOrPartition;
        ctx.count(error.code());
        return DescribeQuorumResponse::default().with_topics(partition_errors(&req, error));
    }
    let Some(q) = ctx.broker.cluster.quorum.describe() else {
        let error = ResponseError::NotLeaderOrFollower;
        ctx.count(error.code());
        return DescribeQuorumResponse::default().with_topics(vec![topic(vec![
            PartitionData::default()
                .with_partition_index(METADATA_PARTITION)
                .with_error_code(error.code())
                .with_error_message(Some(StrBytes::from_string(format!(
                    "node {} does not lead the metadata quorum; ask the controller",
                    ctx.broker.node_id()
                )))),
        ])]);
    };
    let partition = PartitionData::default()
        .with_partition_index(METADATA_PARTITION)
        .with_leader_id(BrokerId(q.leader))
        .with_leader_epoch(q.epoch)
        .with_high_watermark(q.high_watermark)
        .with_current_voters(q.voters.iter().map(replica).collect())
        .with_observers(q.observers.iter().map(replica).collect());
    // Endpoints exist from v2 on; earlier versions cannot carry them.
    let nodes = if ctx.api_version >= 2 {
        nodes(ctx, &q.voters)
    } else {
        Vec::new()
    };
    DescribeQuorumResponse::default()
        .with_topics(vec![topic(vec![partition])])
        .with_nodes(nodes)
}

#[cfg(test)]
mod tests {
    use kafka_protocol::messages::describe_quorum_request::{
        PartitionData as RequestPartition, TopicData as RequestTopic,
    };

    use super::*;
    use crate::test_fixture as fixture;

    fn request(name: &'static str, partition: i32) -> DescribeQuorumRequest {
        DescribeQuorumRequest::default().with_topics(vec![RequestTopic::default()
            .with_topic_name(TopicName(StrBytes::from_static_str(name)))
            .with_partitions(vec![
                RequestPartition::default().with_partition_index(partition)
            ])])
    }

    #[tokio::test]
    async fn the_leader_describes_itself_and_other_partitions_are_unknown() {
        let (_dir, ctx) = fixture::context(2).await;
        fixture::create_topic(&ctx, "t", 1).await;
        let resp = handle(&ctx, request(METADATA_TOPIC, 0)).await;
        fixture::encodes(&resp, 2..=2);
        let v1 = RequestContext {
            api_version: 1,
            ..ctx.clone()
        };
        fixture::encodes(&handle(&v1, request(METADATA_TOPIC, 0)).await, 0..=1);
        assert_eq!(resp.error_code, 0);
        let p = &resp.topics[0].partitions[0];
        assert_eq!((p.error_code, p.leader_id.0), (0, ctx.broker.node_id()));
        assert!(p.leader_epoch >= 1, "a term was elected");
        assert!(
            p.high_watermark >= 2,
            "the registration and the topic are committed"
        );
        assert_eq!(p.current_voters.len(), 1);
        let me = &p.current_voters[0];
        assert_eq!(me.replica_id.0, ctx.broker.node_id());
        assert!(me.log_end_offset >= p.high_watermark);
        assert!(me.last_fetch_timestamp > 0 && me.last_caught_up_timestamp > 0);
        assert!(p.observers.is_empty());
        for (name, partition) in [("other", 0), (METADATA_TOPIC, 1)] {
            let resp = handle(&ctx, request(name, partition)).await;
            assert_eq!(
                resp.topics[0].partitions[0].error_code, 3,
                "{name}-{partition}"
            );
        }
        let resp = handle(&ctx, DescribeQuorumRequest::default()).await;
        assert!(resp.topics.is_empty());
    }

    #[tokio::test]
    async fn needs_describe_on_the_cluster() {
        let (_dir, ctx) = fixture::context_with(2, |c| {
            c.authorizer.enabled = true;
            c.authorizer.super_users = vec!["User:admin".into()];
        })
        .await;
        let resp = handle(&ctx, request(METADATA_TOPIC, 0)).await;
        assert_eq!(resp.error_code, 31, "CLUSTER_AUTHORIZATION_FAILED");
        assert!(resp.topics.is_empty());
        let admin = RequestContext {
            principal: "User:admin".into(),
            ..ctx.clone()
        };
        assert_eq!(
            handle(&admin, request(METADATA_TOPIC, 0)).await.error_code,
            0
        );
    }
}
