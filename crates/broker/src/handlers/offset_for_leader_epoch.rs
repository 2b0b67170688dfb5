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
use crate::context::RequestContext;

// Every handler is async so `dispatch` can await them alike.
#[allow(clippy::unused_async)]
pub async fn handle(
    ctx: &RequestContext,
    req: OffsetForLeaderEpochRequest,
) -> OffsetForLeaderEpochResponse {
    let topics = req
        .topics
        .into_iter()
        .map(|t| {
            let topic = ctx.broker.topics.get(&t.topic);
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    let response = EpochEndOffset::default().with_partition(p.partition);
                    let Some(partition) = topic.as_ref().and_then(|t| t.partition(p.partition))
                    else {
                        let code = ResponseError::UnknownTopicOrPartition.code();
                        ctx.count(code);
                        return response.with_error_code(code);
                    };
                    if let Err(error) =
                        check_current_leader_epoch(p.current_leader_epoch, partition.leader_epoch())
                    {
                        ctx.count(error.code());
                        return response.with_error_code(error.code());
                    }
                    // An in-memory lookup in the epoch cache: no file access.
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
