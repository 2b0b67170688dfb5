//! OffsetDelete: drop committed offsets of an Empty group, or of topics no
//! member of a live consumer group subscribes to (GROUP_SUBSCRIBED_TO_TOPIC
//! otherwise).
//!
//! Authorization, as in Kafka: DELETE on the group first (refused, the
//! top-level error is GROUP_AUTHORIZATION_FAILED), then READ on each topic,
//! checked before existence (TOPIC_AUTHORIZATION_FAILED per partition).

use bytes::Buf;
use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::{
    ConsumerProtocolSubscription, OffsetDeleteRequest, OffsetDeleteResponse,
};
use kafka_protocol::protocol::Decodable;
use kafka_protocol::ResponseError;

use crate::auth::{Operation, ResourceType};
use crate::context::RequestContext;
use crate::group::Group;

/// Whether any member's consumer subscription names `topic`. Metadata that
/// does not parse counts as subscribed, so nothing is deleted by mistake.
fn subscribed(group: &Group, topic: &str) -> bool {
    let protocol = group.protocol_name.clone().unwrap_or_default();
    group.members().any(|m| {
        let mut buf = m.metadata_for(&protocol);
        if buf.remaining() < 2 {
            return true;
        }
        let version = buf.get_i16().min(3);
        ConsumerProtocolSubscription::decode(&mut buf, version)
            .map_or(true, |s| s.topics.iter().any(|t| t.as_str() == topic))
    })
}

pub async fn handle(ctx: &RequestContext, req: OffsetDeleteRequest) -> OffsetDeleteResponse {
    if !ctx.authorize(Operation::Delete, ResourceType::Group, &req.group_id) {
        let code = ResponseError::GroupAuthorizationFailed.code();
        ctx.count(code);
        return OffsetDeleteResponse::default().with_error_code(code);
    }
    let mut known = Vec::new();
    let mut unknown = Vec::new();
    let mut denied = Vec::new();
    for t in &req.topics {
        let topic_denied = !ctx.authorize(Operation::Read, ResourceType::Topic, &t.name);
        let topic = ctx.visible_topic(&t.name);
        for p in &t.partitions {
            let tp = (t.name.to_string(), p.partition_index);
            if topic_denied {
                denied.push(tp);
            } else if topic
                .as_ref()
                .is_some_and(|t| t.has_partition(p.partition_index))
            {
                known.push(tp);
            } else {
                unknown.push(tp);
            }
        }
    }
    let group_id = req.group_id.0.to_string();
    if let Err(e) = crate::group::offsets_topic::ready(&ctx.broker, &group_id).await {
        ctx.count(e.code());
        return OffsetDeleteResponse::default().with_error_code(e.code());
    }
    let (result, durable) = ctx
        .broker
        .groups
        .run(|core, _now, out| core.delete_offsets(&group_id, &known, subscribed, out));
    let failed = durable.wait().await;
    let errors = match result {
        Err(e) => {
            ctx.count(e.code());
            return OffsetDeleteResponse::default().with_error_code(e.code());
        }
        Ok(_) if failed.is_some() => {
            let e = failed.unwrap_or(ResponseError::CoordinatorNotAvailable);
            ctx.count(e.code());
            return OffsetDeleteResponse::default().with_error_code(e.code());
        }
        Ok(errors) => errors,
    };
    let error_of = |topic: &str, partition: i32| -> Option<ResponseError> {
        let tp = (topic.to_owned(), partition);
        if denied.contains(&tp) {
            return Some(ResponseError::TopicAuthorizationFailed);
        }
        if unknown.contains(&tp) {
            return Some(ResponseError::UnknownTopicOrPartition);
        }
        known.iter().position(|k| *k == tp).and_then(|i| errors[i])
    };
    let topics = req
        .topics
        .into_iter()
        .map(|t| {
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    let code = error_of(&t.name, p.partition_index).map_or(0, |e| e.code());
                    ctx.count(code);
                    OffsetDeleteResponsePartition::default()
                        .with_partition_index(p.partition_index)
                        .with_error_code(code)
                })
                .collect();
            OffsetDeleteResponseTopic::default()
                .with_name(t.name)
                .with_partitions(partitions)
        })
        .collect();
    OffsetDeleteResponse::default().with_topics(topics)
}

#[cfg(test)]
mod tests {
    use kafka_protocol::messages::offset_delete_request::{
        OffsetDeleteRequestPartition, OffsetDeleteRequestTopic,
    };
    use kafka_protocol::messages::{GroupId, TopicName};
    use kafka_protocol::protocol::StrBytes;

    use super::*;
    use crate::handlers::offset_commit;
    use crate::test_fixture as fixture;

    #[tokio::test]
    async fn deletes_offsets_of_an_empty_group() {
        let (_dir, ctx) = fixture::groups_context(0).await;
        fixture::create_topic(&ctx, "t", 1).await;
        let req = OffsetDeleteRequest::default()
            .with_group_id(GroupId(StrBytes::from_static_str("g")))
            .with_topics(vec![OffsetDeleteRequestTopic::default()
                .with_name(TopicName(StrBytes::from_static_str("t")))
                .with_partitions(vec![
                    OffsetDeleteRequestPartition::default().with_partition_index(0),
                    OffsetDeleteRequestPartition::default().with_partition_index(5),
                ])]);
        let r = handle(&ctx, req.clone()).await;
        assert_eq!(r.error_code, ResponseError::GroupIdNotFound.code());
        offset_commit::handle(&ctx, offset_commit::tests::commit_request("g", "t", 0, 3)).await;
        let r = handle(&ctx, req).await;
        fixture::encodes(&r, 0..=0);
        let codes: Vec<i16> = r.topics[0]
            .partitions
            .iter()
            .map(|p| p.error_code)
            .collect();
        assert_eq!(
            codes,
            vec![0, ResponseError::UnknownTopicOrPartition.code()]
        );
        assert_eq!(ctx.broker.groups.read(|c| c.fetch("g", None)).len(), 0);
    }
}
