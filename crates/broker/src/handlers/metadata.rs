//! Metadata: brokers, cluster id, controller, and topics with partitions.
//!
//! Unknown topics are created only when both the broker
//! (`topics.auto_create`) and the request (`allow_auto_topic_creation`,
//! v4+) allow it; otherwise they answer UNKNOWN_TOPIC_OR_PARTITION.
//!
//! Authorization, as in Kafka: listing all topics silently leaves out those
//! the principal may not DESCRIBE; a topic asked for by name without DESCRIBE
//! is TOPIC_AUTHORIZATION_FAILED whether or not it exists (so existence does
//! not leak); auto-creation also needs CREATE on the cluster or the topic.

use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use uuid::Uuid;

use crate::auth::acl::OPERATIONS_NOT_REQUESTED;
use crate::auth::{Operation, ResourceType};
use crate::context::RequestContext;
use crate::topics::Topic;

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
    let ops = req.include_topic_authorized_operations;
    let may_describe = |name: &str| ctx.authorize(Operation::Describe, ResourceType::Topic, name);

    let topics = match requested {
        None => broker
            .topics
            .all()
            .iter()
            .filter(|t| may_describe(&t.name) && ctx.blind_visible(&t.name))
            .map(|t| describe(ctx, t, ops))
            .collect(),
        Some(list) => {
            let mut out = Vec::with_capacity(list.len());
            for (name, id) in list {
                out.push(match name {
                    Some(name) if !may_describe(&name) => unauthorized(ctx, Some(name), id),
                    Some(name) => by_name(ctx, &name, auto_create, ops).await,
                    None => {
                        // Topic ids are not secret, so Kafka reports the
                        // failure with the id (but never the name).
                        if let Some(t) = ctx.visible_topic_by_id(id) {
                            if may_describe(&t.name) {
                                describe(ctx, &t, ops)
                            } else {
                                unauthorized(ctx, None, id)
                            }
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
        .broker_endpoints(&ctx.listener)
        .into_iter()
        .map(|b| {
            MetadataResponseBroker::default()
                .with_node_id(BrokerId(b.node_id))
                .with_host(StrBytes::from_string(b.host))
                .with_port(b.port)
                .with_rack(b.rack.map(StrBytes::from_string))
        })
        .collect();

    MetadataResponse::default()
        .with_brokers(brokers)
        .with_cluster_id(Some(StrBytes::from_string(broker.cluster_id())))
        .with_controller_id(BrokerId(broker.cluster.quorum.controller().unwrap_or(-1)))
        .with_topics(topics)
        .with_cluster_authorized_operations(cluster_operations(
            ctx,
            req.include_cluster_authorized_operations,
        ))
}

/// v8-10: the cluster bitfield, 0 without DESCRIBE on the cluster (Kafka).
fn cluster_operations(ctx: &RequestContext, requested: bool) -> i32 {
    if !requested {
        OPERATIONS_NOT_REQUESTED
    } else if ctx.authorize_cluster(Operation::Describe) {
        ctx.authorized_operations(ResourceType::Cluster, crate::auth::CLUSTER_NAME)
    } else {
        0
    }
}

fn unauthorized(ctx: &RequestContext, name: Option<String>, id: Uuid) -> MetadataResponseTopic {
    let code = ResponseError::TopicAuthorizationFailed.code();
    ctx.count(code);
    MetadataResponseTopic::default()
        .with_name(name.map(|n| TopicName(StrBytes::from_string(n))))
        .with_topic_id(id)
        .with_error_code(code)
}

async fn by_name(
    ctx: &RequestContext,
    name: &str,
    auto_create: bool,
    ops: bool,
) -> MetadataResponseTopic {
    let broker = &ctx.broker;
    if let Some(t) = ctx.visible_topic(name) {
        return describe(ctx, &t, ops);
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
    if !ctx.authorize_cluster(Operation::Create)
        && !ctx.authorize(Operation::Create, ResourceType::Topic, name)
    {
        return unknown(ResponseError::TopicAuthorizationFailed.code());
    }
    let cmd = match broker.create_topic_command(
        name,
        broker.config.topics.default_partitions,
        broker.config.topics.default_replication_factor,
        veil_meta::TopicConfigs::new(),
    ) {
        Ok(cmd) => cmd,
        Err(e) => return unknown(ctx.code(&e)),
    };
    match broker.commit(cmd).await {
        // Another request may have created it first: that is fine.
        Ok(()) | Err(crate::Error::Meta(veil_meta::Error::TopicExists(_))) => {}
        Err(e) => return unknown(ctx.code(&e)),
    }
    match ctx.visible_topic(name) {
        // Kafka answers LEADER_NOT_AVAILABLE for a topic it just created;
        // ours is ready at once, so describe it.
        Some(t) => describe(ctx, &t, ops),
        None => unknown(ResponseError::UnknownTopicOrPartition.code()),
    }
}

fn describe(ctx: &RequestContext, topic: &Topic, ops: bool) -> MetadataResponseTopic {
    let available = ctx.broker.available_brokers();
    let in_contact = ctx.broker.cluster.in_contact();
    let ids = |nodes: &[i32]| nodes.iter().map(|n| BrokerId(*n)).collect::<Vec<_>>();
    let partitions = topic
        .records
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let node = ctx.broker.node_id();
            // A replica whose log this node could not open counts as
            // offline; if it leads, the partition has no usable leader.
            let offline_here = topic.offline_here(i as i32);
            let offline: Vec<i32> =
                p.offline_replicas(|r| available.contains(&r) && !(offline_here && r == node));
            // Nor does a leader cut off from the controller for a session:
            // it has been fenced, clients must ask the others.
            let cut_off = p.leader == node && !in_contact;
            let leader = if (offline_here && p.leader == node) || cut_off {
                veil_meta::cluster::NO_LEADER
            } else {
                p.leader
            };
            let error = if leader == veil_meta::cluster::NO_LEADER {
                let code = ResponseError::LeaderNotAvailable.code();
                ctx.count(code);
                code
            } else {
                0
            };
            MetadataResponsePartition::default()
                .with_error_code(error)
                .with_partition_index(i as i32)
                .with_leader_id(BrokerId(leader))
                .with_leader_epoch(if leader == veil_meta::cluster::NO_LEADER {
                    -1
                } else {
                    p.leader_epoch
                })
                .with_replica_nodes(ids(&p.replicas))
                .with_isr_nodes(ids(&p.isr))
                .with_offline_replicas(ids(&offline))
        })
        .collect();
    MetadataResponseTopic::default()
        .with_name(Some(TopicName(StrBytes::from_string(topic.name.clone()))))
        .with_topic_id(topic.id)
        .with_is_internal(crate::group::offsets_topic::is_internal(&topic.name))
        .with_partitions(partitions)
        .with_topic_authorized_operations(if ops {
            ctx.authorized_operations(ResourceType::Topic, &topic.name)
        } else {
            OPERATIONS_NOT_REQUESTED
        })
}
