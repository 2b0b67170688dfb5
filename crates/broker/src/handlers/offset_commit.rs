//! OffsetCommit: store a group's consumed positions durably.
//!
//! Unknown topics or partitions are UNKNOWN_TOPIC_OR_PARTITION, metadata
//! beyond `offset.metadata.max.bytes` OFFSET_METADATA_TOO_LARGE; the rest
//! are checked against the group (generation, member, state) as one unit
//! and stored together, fsynced before the response. A partition named twice
//! is answered twice and keeps its last offset, as in Kafka.
//!
//! Authorization, as in Kafka: READ on the group first (refused, every
//! partition is GROUP_AUTHORIZATION_FAILED and nothing is stored), then READ
//! on each topic, checked before existence (TOPIC_AUTHORIZATION_FAILED).

use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::{OffsetCommitRequest, OffsetCommitResponse};
use kafka_protocol::ResponseError;

use crate::auth::{Operation, ResourceType};
use crate::context::RequestContext;
use crate::group::limits;
use crate::group::record::CommittedOffset;

pub async fn handle(ctx: &RequestContext, req: OffsetCommitRequest) -> OffsetCommitResponse {
    if !ctx.authorize(Operation::Read, ResourceType::Group, &req.group_id) {
        return every_partition(ctx, req, ResponseError::GroupAuthorizationFailed);
    }
    if !limits::names_fit([req.group_id.as_str()]) {
        return every_partition(ctx, req, ResponseError::InvalidRequest);
    }
    let max_metadata = ctx.broker.config.groups.offset_metadata_max_bytes;
    let now = ctx.now_ms();
    let version = ctx.api_version;
    // Per (topic, partition): an error found up front, or the offset to store.
    let mut results: Vec<Vec<(i32, Option<ResponseError>)>> = Vec::new();
    let mut to_store = Vec::new();
    for t in &req.topics {
        let topic_denied = !ctx.authorize(Operation::Read, ResourceType::Topic, &t.name);
        let topic = ctx.visible_topic(&t.name);
        let mut parts = Vec::new();
        for p in &t.partitions {
            let metadata = p.committed_metadata.as_deref().unwrap_or_default();
            let error = if let Some(e) = refusal(
                topic_denied,
                topic.as_deref(),
                p.partition_index,
                metadata,
                max_metadata,
            ) {
                Some(e)
            } else {
                to_store.push((
                    t.name.to_string(),
                    p.partition_index,
                    CommittedOffset {
                        offset: p.committed_offset,
                        leader_epoch: if version >= 6 {
                            p.committed_leader_epoch
                        } else {
                            -1
                        },
                        metadata: metadata.to_owned(),
                        commit_timestamp: now,
                        // v2–v4 could set a retention for these offsets; -1 means the broker's.
                        expire_timestamp: if (2..=4).contains(&version)
                            && req.retention_time_ms >= 0
                        {
                            now.saturating_add(req.retention_time_ms)
                        } else {
                            -1
                        },
                    },
                ));
                None
            };
            parts.push((p.partition_index, error));
        }
        results.push(parts);
    }
    let group_id = req.group_id.0.to_string();
    let member_id = req.member_id.to_string();
    let instance = req.group_instance_id.as_ref().map(ToString::to_string);
    let generation = req.generation_id_or_member_epoch;
    // A commit is acknowledged only once it is replicated (and on disk).
    let group_error = if let Err(e) =
        crate::group::offsets_topic::ready(&ctx.broker, &group_id).await
    {
        Some(e)
    } else {
        let (checked, durable) = ctx.broker.groups.run(|core, now, out| {
            let checked = core.check_commit(&group_id, &member_id, instance.as_deref(), generation);
            if checked.is_ok() && !to_store.is_empty() {
                core.commit(&group_id, &member_id, to_store, now, out);
            }
            checked
        });
        match checked {
            Err(e) => Some(e),
            Ok(()) => durable.wait().await,
        }
    };
    let topics = req
        .topics
        .into_iter()
        .zip(results)
        .map(|(t, parts)| {
            let partitions = parts
                .into_iter()
                .map(|(index, error)| {
                    let code = error.or(group_error).map_or(0, |e| e.code());
                    ctx.count(code);
                    OffsetCommitResponsePartition::default()
                        .with_partition_index(index)
                        .with_error_code(code)
                })
                .collect();
            OffsetCommitResponseTopic::default()
                .with_name(t.name)
                .with_partitions(partitions)
        })
        .collect();
    OffsetCommitResponse::default().with_topics(topics)
}

/// Why one requested offset cannot be stored, checked in Kafka's order:
/// READ on the topic, then existence, then the metadata's size.
pub(crate) fn refusal(
    topic_denied: bool,
    topic: Option<&crate::topics::Topic>,
    partition: i32,
    metadata: &str,
    max_metadata: usize,
) -> Option<ResponseError> {
    if topic_denied {
        Some(ResponseError::TopicAuthorizationFailed)
    } else if !topic.is_some_and(|t| t.has_partition(partition)) {
        Some(ResponseError::UnknownTopicOrPartition)
    } else if metadata.len() > max_metadata {
        Some(ResponseError::OffsetMetadataTooLarge)
    } else {
        None
    }
}

/// The same error for every partition of the request.
fn every_partition(
    ctx: &RequestContext,
    req: OffsetCommitRequest,
    error: ResponseError,
) -> OffsetCommitResponse {
    let topics = req
        .topics
        .into_iter()
        .map(|t| {
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    ctx.count(error.code());
                    OffsetCommitResponsePartition::default()
                        .with_partition_index(p.partition_index)
                        .with_error_code(error.code())
                })
                .collect();
            OffsetCommitResponseTopic::default()
                .with_name(t.name)
                .with_partitions(partitions)
        })
        .collect();
    OffsetCommitResponse::default().with_topics(topics)
}

#[cfg(test)]
pub(crate) mod tests {
    use kafka_protocol::messages::offset_commit_request::{
        OffsetCommitRequestPartition, OffsetCommitRequestTopic,
    };
    use kafka_protocol::messages::{GroupId, TopicName};
    use kafka_protocol::protocol::StrBytes;

    use super::*;
    use crate::test_fixture as fixture;

    pub(crate) fn commit_request(
        group: &str,
        topic: &str,
        partition: i32,
        offset: i64,
    ) -> OffsetCommitRequest {
        OffsetCommitRequest::default()
            .with_group_id(GroupId(StrBytes::from_string(group.to_owned())))
            .with_generation_id_or_member_epoch(-1)
            .with_retention_time_ms(-1)
            .with_topics(vec![OffsetCommitRequestTopic::default()
                .with_name(TopicName(StrBytes::from_string(topic.to_owned())))
                .with_partitions(vec![OffsetCommitRequestPartition::default()
                    .with_partition_index(partition)
                    .with_committed_offset(offset)
                    .with_committed_leader_epoch(4)
                    .with_committed_metadata(Some(StrBytes::from_static_str(
                        "meta",
                    )))])])
    }

    #[tokio::test]
    async fn simple_commits_store_and_bad_partitions_or_generations_are_refused() {
        let (_dir, ctx) = fixture::groups_context(8).await;
        fixture::create_topic(&ctx, "t", 2).await;
        let code = |r: &OffsetCommitResponse| r.topics[0].partitions[0].error_code;
        let r = handle(&ctx, commit_request("g", "t", 1, 42)).await;
        assert_eq!(code(&r), 0);
        fixture::encodes(&r, 2..=9);
        let r = handle(&ctx, commit_request("g", "t", 2, 1)).await;
        assert_eq!(code(&r), ResponseError::UnknownTopicOrPartition.code());
        let r = handle(&ctx, commit_request("g", "nope", 0, 1)).await;
        assert_eq!(code(&r), ResponseError::UnknownTopicOrPartition.code());
        let r = handle(
            &ctx,
            commit_request("other", "t", 0, 1).with_generation_id_or_member_epoch(3),
        )
        .await;
        assert_eq!(code(&r), ResponseError::IllegalGeneration.code());
        let r = handle(
            &ctx,
            commit_request("g", "t", 0, 1).with_member_id(StrBytes::from_static_str("who")),
        )
        .await;
        assert_eq!(code(&r), ResponseError::UnknownMemberId.code());
        let fetched = ctx.broker.groups.read(|c| c.fetch("g", None));
        assert_eq!(fetched.len(), 1);
        let o = fetched[0].1.clone().unwrap();
        assert_eq!(
            (o.offset, o.leader_epoch, o.metadata.as_str()),
            (42, 4, "meta")
        );
    }
}
