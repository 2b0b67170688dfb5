//! OffsetFetch: a group's committed offsets (all of them when `topics` is
//! null); v8+ asks for several groups at once. Partitions without a commit
//! answer offset -1 and empty metadata, as Kafka does. Offsets are read
//! once the group's records appended so far are replicated, so a consumer
//! never resumes from a commit that a failover then takes back. With
//! `require_stable` (v7+), a partition whose offset an open transaction may
//! still replace answers UNSTABLE_OFFSET_COMMIT.
//!
//! Authorization, as in Kafka: DESCRIBE on the group first (refused, the
//! group's error in v8+, the top-level error in v2-7, every requested
//! partition's before that); then DESCRIBE on each topic: a requested topic
//! without it is TOPIC_AUTHORIZATION_FAILED per partition, checked before
//! anything is read, and fetching all topics silently leaves it out. A
//! blind topic the principal may not see is left out of "all topics" and
//! answers offset -1 when named, as an unknown topic does.

use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::{OffsetFetchRequest, OffsetFetchResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use crate::auth::{Operation, ResourceType};
use crate::context::RequestContext;
use crate::group::coordinator::TopicPartition;
use crate::group::record::CommittedOffset;

type Fetched = Vec<(TopicPartition, Option<CommittedOffset>)>;
/// A partition's committed offset, or the error that withholds it.
type Answer = Result<Option<CommittedOffset>, ResponseError>;
/// A topic's partitions and their answers.
type TopicOffsets = (String, Vec<(i32, Answer)>);
/// Requested topics and their partitions; `None` asks for all of them.
type Requested<'a> = Option<Vec<(&'a str, &'a [i32])>>;

fn fetch(ctx: &RequestContext, group: &str, wanted: Option<Vec<TopicPartition>>) -> Fetched {
    ctx.broker
        .groups
        .read(|c| c.fetch(group, wanted.as_deref()))
}

/// Whether this node coordinates `group` and every commit it acknowledged
/// or is still replicating for it is replicated: an offset read here is
/// one a failover keeps.
async fn settled(ctx: &RequestContext, group: &str) -> Result<(), ResponseError> {
    crate::group::offsets_topic::ready(&ctx.broker, group).await?;
    ctx.broker.groups.settled(group).await
}

/// Groups consecutive results by topic, keeping the order.
fn by_topic(fetched: Fetched) -> Vec<TopicOffsets> {
    let mut out: Vec<TopicOffsets> = Vec::new();
    for ((topic, partition), o) in fetched {
        match out.last_mut() {
            Some((t, parts)) if *t == topic => parts.push((partition, Ok(o))),
            _ => out.push((topic, vec![(partition, Ok(o))])),
        }
    }
    out
}

/// (offset, leader epoch, metadata, error code) of one partition.
fn values(answer: Answer) -> (i64, i32, StrBytes, i16) {
    match answer {
        Ok(Some(o)) => (
            o.offset,
            o.leader_epoch,
            StrBytes::from_string(o.metadata),
            0,
        ),
        Ok(None) => (-1, -1, StrBytes::default(), 0),
        Err(e) => (-1, -1, StrBytes::default(), e.code()),
    }
}

/// One group's offsets after the group and topic checks, or the group's error.
fn offsets(
    ctx: &RequestContext,
    group: &str,
    requested: Requested<'_>,
    hosted: Result<(), ResponseError>,
    require_stable: bool,
) -> Result<Vec<TopicOffsets>, ResponseError> {
    let mut topics = offsets_of(ctx, group, requested, hosted)?;
    if require_stable {
        // v7+ (KIP-447): an offset an open transaction may still replace is
        // withheld; the client retries once the transaction is decided.
        ctx.broker.groups.read(|c| {
            for (topic, parts) in &mut topics {
                for (p, answer) in parts.iter_mut() {
                    if answer.is_ok() && c.has_pending(group, &(topic.clone(), *p)) {
                        ctx.count(ResponseError::UnstableOffsetCommit.code());
                        *answer = Err(ResponseError::UnstableOffsetCommit);
                    }
                }
            }
        });
    }
    Ok(topics)
}

fn offsets_of(
    ctx: &RequestContext,
    group: &str,
    requested: Requested<'_>,
    hosted: Result<(), ResponseError>,
) -> Result<Vec<TopicOffsets>, ResponseError> {
    if !ctx.authorize(Operation::Describe, ResourceType::Group, group) {
        ctx.count(ResponseError::GroupAuthorizationFailed.code());
        return Err(ResponseError::GroupAuthorizationFailed);
    }
    if let Err(e) = hosted {
        ctx.count(e.code());
        return Err(e);
    }
    let may_describe = |topic: &str| ctx.authorize(Operation::Describe, ResourceType::Topic, topic);
    let Some(requested) = requested else {
        let mut topics = by_topic(fetch(ctx, group, None));
        topics.retain(|(name, _)| may_describe(name) && ctx.blind_visible(name));
        return Ok(topics);
    };
    let (allowed, denied): (Vec<_>, Vec<_>) = requested
        .into_iter()
        .partition(|(name, _)| may_describe(name));
    // A blind topic the principal may not see answers like a topic with no
    // commit (what Kafka answers for an unknown topic); nothing is read.
    let (allowed, hidden): (Vec<_>, Vec<_>) = allowed
        .into_iter()
        .partition(|(name, _)| ctx.blind_visible(name));
    let wanted = allowed
        .iter()
        .flat_map(|(name, parts)| parts.iter().map(|p| ((*name).to_owned(), *p)))
        .collect();
    let mut topics = by_topic(fetch(ctx, group, Some(wanted)));
    for (name, parts) in hidden {
        topics.push((
            name.to_owned(),
            parts.iter().map(|&p| (p, Ok(None))).collect(),
        ));
    }
    let error = ResponseError::TopicAuthorizationFailed;
    for (name, parts) in denied {
        let parts = parts
            .iter()
            .map(|&p| {
                ctx.count(error.code());
                (p, Err(error))
            })
            .collect();
        topics.push((name.to_owned(), parts));
    }
    Ok(topics)
}

pub async fn handle(ctx: &RequestContext, req: OffsetFetchRequest) -> OffsetFetchResponse {
    let require_stable = ctx.api_version >= 7 && req.require_stable;
    if ctx.api_version >= 8 {
        let mut hosted = Vec::with_capacity(req.groups.len());
        for g in &req.groups {
            hosted.push(settled(ctx, &g.group_id).await);
        }
        let groups = req
            .groups
            .into_iter()
            .zip(hosted)
            .map(|(g, hosted)| {
                let requested = g.topics.as_ref().map(|ts| {
                    ts.iter()
                        .map(|t| (t.name.as_str(), t.partition_indexes.as_slice()))
                        .collect()
                });
                let answer = offsets(ctx, &g.group_id, requested, hosted, require_stable);
                let group = OffsetFetchResponseGroup::default().with_group_id(g.group_id);
                let topics = match answer {
                    Ok(topics) => topics,
                    Err(e) => return group.with_error_code(e.code()),
                };
                let topics = topics
                    .into_iter()
                    .map(|(name, parts)| {
                        OffsetFetchResponseTopics::default()
                            .with_name(TopicName(StrBytes::from_string(name)))
                            .with_partitions(
                                parts
                                    .into_iter()
                                    .map(|(index, answer)| {
                                        let (offset, epoch, metadata, code) = values(answer);
                                        OffsetFetchResponsePartitions::default()
                                            .with_partition_index(index)
                                            .with_committed_offset(offset)
                                            .with_committed_leader_epoch(epoch)
                                            .with_metadata(Some(metadata))
                                            .with_error_code(code)
                                    })
                                    .collect(),
                            )
                    })
                    .collect();
                group.with_topics(topics)
            })
            .collect();
        return OffsetFetchResponse::default().with_groups(groups);
    }
    let requested = req.topics.as_ref().map(|ts| {
        ts.iter()
            .map(|t| (t.name.as_str(), t.partition_indexes.as_slice()))
            .collect()
    });
    let hosted = settled(ctx, &req.group_id).await;
    let topics = match offsets(ctx, &req.group_id, requested, hosted, require_stable) {
        Ok(topics) => topics,
        Err(e) if ctx.api_version >= 2 => {
            return OffsetFetchResponse::default().with_error_code(e.code())
        }
        // v0-1 have no top-level error: each requested partition carries it.
        Err(e) => req
            .topics
            .iter()
            .flatten()
            .map(|t| {
                let parts = t.partition_indexes.iter().map(|&p| (p, Err(e)));
                (t.name.to_string(), parts.collect())
            })
            .collect(),
    };
    let topics = topics
        .into_iter()
        .map(|(name, parts)| {
            OffsetFetchResponseTopic::default()
                .with_name(TopicName(StrBytes::from_string(name)))
                .with_partitions(
                    parts
                        .into_iter()
                        .map(|(index, answer)| {
                            let (offset, epoch, metadata, code) = values(answer);
                            OffsetFetchResponsePartition::default()
                                .with_partition_index(index)
                                .with_committed_offset(offset)
                                .with_committed_leader_epoch(epoch)
                                .with_metadata(Some(metadata))
                                .with_error_code(code)
                        })
                        .collect(),
                )
        })
        .collect();
    OffsetFetchResponse::default().with_topics(topics)
}

#[cfg(test)]
mod tests {
    use kafka_protocol::messages::offset_fetch_request::{
        OffsetFetchRequestGroup, OffsetFetchRequestTopic,
    };
    use kafka_protocol::messages::GroupId;

    use super::*;
    use crate::handlers::offset_commit;
    use crate::test_fixture as fixture;

    #[tokio::test]
    async fn specific_all_and_batched_fetches() {
        let (_dir, mut ctx) = fixture::groups_context(8).await;
        fixture::create_topic(&ctx, "t", 2).await;
        ctx.api_version = 8;
        let r =
            offset_commit::handle(&ctx, offset_commit::tests::commit_request("g", "t", 1, 7)).await;
        assert_eq!(r.topics[0].partitions[0].error_code, 0);
        ctx.api_version = 7;
        let g = GroupId(StrBytes::from_static_str("g"));
        let req = OffsetFetchRequest::default()
            .with_group_id(g.clone())
            .with_topics(Some(vec![OffsetFetchRequestTopic::default()
                .with_name(TopicName(StrBytes::from_static_str("t")))
                .with_partition_indexes(vec![0, 1])]));
        let r = handle(&ctx, req).await;
        fixture::encodes(&r, 1..=7);
        let p = &r.topics[0].partitions;
        assert_eq!(
            (
                p[0].committed_offset,
                p[1].committed_offset,
                p[1].committed_leader_epoch
            ),
            (-1, 7, 4)
        );
        assert_eq!(p[1].metadata.as_deref(), Some("meta"));
        let all = handle(
            &ctx,
            OffsetFetchRequest::default()
                .with_group_id(g.clone())
                .with_topics(None),
        )
        .await;
        assert_eq!(
            all.topics[0].partitions.len(),
            1,
            "null topics means every committed partition"
        );
        ctx.api_version = 8;
        let req = OffsetFetchRequest::default().with_groups(vec![
            OffsetFetchRequestGroup::default()
                .with_group_id(g)
                .with_topics(None),
            OffsetFetchRequestGroup::default()
                .with_group_id(GroupId(StrBytes::from_static_str("none")))
                .with_topics(None),
        ]);
        let r = handle(&ctx, req).await;
        fixture::encodes(&r, 8..=9);
        assert_eq!(r.groups[0].topics[0].partitions[0].committed_offset, 7);
        assert!(r.groups[1].topics.is_empty());
    }
}
