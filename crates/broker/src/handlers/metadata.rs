//! Metadata: brokers, cluster id, controller, and topics with partitions.
//!
//! Unknown topics are created only when both the broker
//! (`topics.auto_create`) and the request (`allow_auto_topic_creation`,
//! v4+) allow it; otherwise they answer UNKNOWN_TOPIC_OR_PARTITION.

use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use uuid::Uuid;

use crate::context::RequestContext;
use crate::state::BrokerState;
use crate::topics::Topic;

/// Kafka's "not requested" value for authorized-operation bitfields.
const OPERATIONS_NOT_REQUESTED: i32 = i32::MIN;

pub async fn handle(ctx: &RequestContext, req: MetadataRequest) -> MetadataResponse {
    let broker = &ctx.broker;
    // v0: an empty list means all topics; v1+: null means all, empty none.
    let requested: Option<Vec<(Option<String>, Uuid)>> = match req.topics {
        None => None,
        Some(t) if t.is_empty() && ctx.api_version == 0 => None,
        Some(t) => Some(
            t.into_iter()
                .map(|t| (t.name.map(|n| n.0.to_string()), t.topic_id))
                .collect(),
        ),
    };
    let auto_create =
        broker.config.topics.auto_create && (ctx.api_version < 4 || req.allow_auto_topic_creation);

    let topics = match requested {
        None => broker
            .topics
            .all()
            .iter()
            .map(|t| describe(ctx, t))
            .collect(),
        Some(list) => {
            let mut out = Vec::with_capacity(list.len());
            for (name, id) in list {
                out.push(match name {
                    Some(name) => by_name(ctx, &name, auto_create).await,
                    None => {
                        if let Some(t) = broker.topics.get_by_id(id) {
                            describe(ctx, &t)
                        } else {
                            ctx.count(ResponseError::UnknownTopicId.code());
                            MetadataResponseTopic::default()
                                .with_topic_id(id)
                                .with_error_code(ResponseError::UnknownTopicId.code())
                        }
                    }
                });
            }
            out
        }
    };

    let brokers = broker
        .advertised_for(&ctx.listener)
        .map(|a| {
            MetadataResponseBroker::default()
                .with_node_id(BrokerId(broker.node_id()))
                .with_host(StrBytes::from_string(a.host))
                .with_port(a.port)
        })
        .into_iter()
        .collect();

    MetadataResponse::default()
        .with_brokers(brokers)
        .with_cluster_id(Some(StrBytes::from_string(broker.cluster_id.clone())))
        .with_controller_id(BrokerId(broker.node_id()))
        .with_topics(topics)
        .with_cluster_authorized_operations(OPERATIONS_NOT_REQUESTED)
}

async fn by_name(ctx: &RequestContext, name: &str, auto_create: bool) -> MetadataResponseTopic {
    let broker = &ctx.broker;
    if let Some(t) = broker.topics.get(name) {
        return describe(ctx, &t);
    }
    let unknown = |code: i16| {
        ctx.count(code);
        MetadataResponseTopic::default()
            .with_name(Some(TopicName(StrBytes::from_string(name.to_owned()))))
            .with_error_code(code)
    };
    if !auto_create {
        return unknown(ResponseError::UnknownTopicOrPartition.code());
    }
    let cmd = BrokerState::create_topic_command(
        name,
        broker.config.topics.default_partitions,
        1,
        veil_meta::TopicConfigs::new(),
    );
    match broker.commit(cmd).await {
        // Another request may have created it first: that is fine.
        Ok(()) | Err(crate::Error::Meta(veil_meta::Error::TopicExists(_))) => {}
        Err(e) => return unknown(ctx.code(&e)),
    }
    match broker.topics.get(name) {
        // Kafka answers LEADER_NOT_AVAILABLE for a topic it just created;
        // ours is ready at once, so describe it.
        Some(t) => describe(ctx, &t),
        None => unknown(ResponseError::UnknownTopicOrPartition.code()),
    }
}

fn describe(ctx: &RequestContext, topic: &Topic) -> MetadataResponseTopic {
    let node = BrokerId(ctx.broker.node_id());
    let partitions = topic
        .partitions
        .iter()
        .map(|p| {
            MetadataResponsePartition::default()
                .with_partition_index(p.index)
                .with_leader_id(node)
                .with_leader_epoch(p.leader_epoch())
                .with_replica_nodes(vec![node])
                .with_isr_nodes(vec![node])
        })
        .collect();
    MetadataResponseTopic::default()
        .with_name(Some(TopicName(StrBytes::from_string(topic.name.clone()))))
        .with_topic_id(topic.id)
        .with_is_internal(false)
        .with_partitions(partitions)
        .with_topic_authorized_operations(OPERATIONS_NOT_REQUESTED)
}
