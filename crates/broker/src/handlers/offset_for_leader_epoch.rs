//! OffsetForLeaderEpoch (KIP-101/279): the end offset of a leader epoch, so a
//! consumer (or, later, a follower) can detect log truncation.
//!
//! An epoch the log knows nothing about is answered, as Kafka does, with
//! UNDEFINED_EPOCH (-1) and UNDEFINED_EPOCH_OFFSET (-1) and no error.

use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use kafka_protocol::messages::{OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse};
use kafka_protocol::ResponseError;

use super::list_offsets::check_current_leader_epoch;
use crate::auth::{Operation, ResourceType};
use crate::context::RequestContext;

// Every handler is async so `dispatch` can await them alike.
pub async fn handle(
    ctx: &RequestContext,
    req: OffsetForLeaderEpochRequest,
) -> OffsetForLeaderEpochResponse {
    // Kafka: a follower (replica id >= 0) needs CLUSTER_ACTION or every
    // partition fails; a consumer needs DESCRIBE on each topic, checked
    // before existence.
    // Nodes on the inter-node listener are trusted (mTLS there names them)
    // and see every topic they replicate, blind ones included.
    let node = req.replica_id.0 >= 0 && ctx.listener == crate::server::INTERNAL_LISTENER;
    let follower_denied =
        req.replica_id.0 >= 0 && !node && !ctx.authorize_cluster(Operation::ClusterAction);
    let topics = req
        .topics
        .into_iter()
        .map(|t| {
            let topic = if node {
                ctx.broker.topics.get(&t.topic)
            } else {
                ctx.visible_topic(&t.topic)
            };
            let denied = if follower_denied {
                Some(ResponseError::ClusterAuthorizationFailed)
            } else if req.replica_id.0 < 0
                && !ctx.authorize(Operation::Describe, ResourceType::Topic, &t.topic)
            {
                Some(ResponseError::TopicAuthorizationFailed)
            } else {
                None
            };
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    let response = EpochEndOffset::default().with_partition(p.partition);
                    if let Some(error) = denied {
                        ctx.count(error.code());
                        return response.with_error_code(error.code());
                    }
                    let partition = match topic
                        .as_ref()
                        .map(|t| t.led_here(p.partition, ctx.broker.node_id()))
                    {
                        Some(Ok(partition)) => partition,
                        Some(Err(e)) => {
                            return response.with_error_code(ctx.code(&e));
                        }
                        _ => {
                            let code = ResponseError::UnknownTopicOrPartition.code();
                            ctx.count(code);
                            return response.with_error_code(code);
                        }
                    };
                    if let Err(error) =
                        check_current_leader_epoch(p.current_leader_epoch, partition.leader_epoch())
                    {
                        ctx.count(error.code());
                        return response.with_error_code(error.code());
                    }
                    match partition.with_log(|log| log.end_offset_for_epoch(p.leader_epoch)) {
                        Some((epoch, end_offset)) => response
                            .with_leader_epoch(epoch)
                            .with_end_offset(end_offset),
                        None => response.with_leader_epoch(-1).with_end_offset(-1),
                    }
                })
                .collect();
            OffsetForLeaderTopicResult::default()
                .with_topic(t.topic)
                .with_partitions(partitions)
        })
        .collect();
    OffsetForLeaderEpochResponse::default().with_topics(topics)
}

#[cfg(test)]
mod tests {
    use kafka_protocol::messages::offset_for_leader_epoch_request::{
        OffsetForLeaderPartition, OffsetForLeaderTopic,
    };
    use kafka_protocol::messages::TopicName;
    use kafka_protocol::protocol::StrBytes;
    use veil_log::testing::build_simple_batch;

    use super::*;
    use crate::test_fixture as fixture;

    #[tokio::test]
    async fn answers_end_offsets_and_undefined_epochs() {
        let (_dir, ctx) = fixture::context(4).await;
        fixture::create_topic(&ctx, "t", 1).await;
        let p = ctx.broker.topics.partition("t", 0).unwrap();
        p.append(&mut build_simple_batch(4, 8, 100), 0).unwrap();
        // (partition, current_leader_epoch, leader_epoch)
        let asks = [(0, -1, 0), (0, 0, -1), (0, 1, 0), (0, -1, 7), (5, -1, 0)];
        let partitions = asks
            .iter()
            .map(|&(partition, current, epoch)| {
                OffsetForLeaderPartition::default()
                    .with_partition(partition)
                    .with_current_leader_epoch(current)
                    .with_leader_epoch(epoch)
            })
            .collect();
        let topic = OffsetForLeaderTopic::default()
            .with_topic(TopicName(StrBytes::from_static_str("t")))
            .with_partitions(partitions);
        let req = OffsetForLeaderEpochRequest::default().with_topics(vec![topic]);
        let resp = handle(&ctx, req).await;
        fixture::encodes(&resp, 2..=4);
        let got: Vec<(i16, i32, i64)> = resp.topics[0]
            .partitions
            .iter()
            .map(|p| (p.error_code, p.leader_epoch, p.end_offset))
            .collect();
        let unknown_epoch = ResponseError::UnknownLeaderEpoch.code();
        let unknown_partition = ResponseError::UnknownTopicOrPartition.code();
        assert_eq!(
            got,
            vec![
                (0, 0, 4),
                (0, -1, -1),
                (unknown_epoch, -1, -1),
                (0, -1, -1),
                (unknown_partition, -1, -1),
            ]
        );
    }
}
