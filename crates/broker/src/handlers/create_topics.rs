//! CreateTopics: one metadata command per topic, checked only when
//! `validate_only`.
//!
//! Kafka's rules: -1 partitions / replication factor take the broker
//! defaults; explicit replica assignments exclude both counts and must name a
//! consecutive 0-based list of partitions; a name given twice in one request
//! fails every entry with INVALID_REQUEST; a config without a value is
//! INVALID_CONFIG. Without assignments the controller's placement spreads
//! replicas over the live brokers (rack-aware); a replication factor above
//! their number is INVALID_REPLICATION_FACTOR. `timeout_ms` is not needed:
//! the change returns once committed by the metadata quorum.
//!
//! Authorization, as in Kafka: CREATE on the cluster or on the topic, else
//! TOPIC_AUTHORIZATION_FAILED (checked after the duplicate check); the
//! configs of a created topic are returned only with DESCRIBE_CONFIGS on it.

use std::collections::HashMap;

use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult,
};
use kafka_protocol::messages::{CreateTopicsRequest, CreateTopicsResponse};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use uuid::Uuid;
use veil_meta::{MetaCommand, TopicConfigs};

use super::describe_configs::{topic_default_levels, topic_entries};
use crate::auth::{Operation, ResourceType};
use crate::context::RequestContext;

/// A validated request entry: what to create.
#[derive(Debug, PartialEq, Eq)]
struct Spec {
    partitions: i32,
    replication_factor: i16,
    configs: TopicConfigs,
    /// Replica lists the client chose, by partition.
    assignments: Option<Vec<Vec<i32>>>,
}

type Failure = (ResponseError, String);

/// Request-level checks of one topic that need no metadata.
fn spec(
    topic: &CreatableTopic,
    default_partitions: i32,
    default_replication_factor: i16,
) -> Result<Spec, Failure> {
    let mut configs = TopicConfigs::new();
    for c in &topic.configs {
        let Some(value) = &c.value else {
            return Err((
                ResponseError::InvalidConfig,
                format!("null value not supported for topic config '{}'", &*c.name),
            ));
        };
        // Kafka keeps the last of repeated keys.
        configs.insert(c.name.to_string(), value.to_string());
    }
    if topic.assignments.is_empty() {
        let partitions = match topic.num_partitions {
            -1 => default_partitions,
            n => n,
        };
        let replication_factor = match topic.replication_factor {
            -1 => default_replication_factor,
            n => n,
        };
        return Ok(Spec {
            partitions,
            replication_factor,
            configs,
            assignments: None,
        });
    }
    if topic.num_partitions != -1 || topic.replication_factor != -1 {
        return Err((
            ResponseError::InvalidRequest,
            "num_partitions and replication_factor must be -1 when assignments are given".into(),
        ));
    }
    let assignment_error = |why: String| Err((ResponseError::InvalidReplicaAssignment, why));
    let mut indexes: Vec<i32> = topic
        .assignments
        .iter()
        .map(|a| a.partition_index)
        .collect();
    indexes.sort_unstable();
    if indexes
        .iter()
        .zip(0..)
        .any(|(&index, expected)| index != expected)
    {
        return assignment_error(
            "partitions should be a consecutive 0-based integer sequence".into(),
        );
    }
    let mut sorted: Vec<_> = topic.assignments.iter().collect();
    sorted.sort_by_key(|a| a.partition_index);
    let lists: Vec<Vec<i32>> = sorted
        .iter()
        .map(|a| a.broker_ids.iter().map(|b| b.0).collect())
        .collect();
    let rf = lists.first().map_or(0, Vec::len);
    for (p, list) in lists.iter().enumerate() {
        if list.is_empty() || list.len() != rf {
            return assignment_error(
                "all partitions should have the same number of replicas, at least one".into(),
            );
        }
        let mut distinct = list.clone();
        distinct.sort_unstable();
        distinct.dedup();
        if distinct.len() != list.len() {
            return assignment_error(format!("partition {p} lists a broker twice: {list:?}"));
        }
    }
    Ok(Spec {
        partitions: lists.len() as i32,
        replication_factor: i16::try_from(rf).unwrap_or(i16::MAX),
        configs,
        assignments: Some(lists),
    })
}

pub async fn handle(ctx: &RequestContext, req: CreateTopicsRequest) -> CreateTopicsResponse {
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for t in &req.topics {
        *counts.entry(t.name.as_str()).or_default() += 1;
    }
    let broker = &ctx.broker;
    let cluster_create = ctx.authorize_cluster(Operation::Create);
    let mut results = Vec::with_capacity(req.topics.len());
    for topic in &req.topics {
        let result = CreatableTopicResult::default()
            .with_name(topic.name.clone())
            .with_error_message(None);
        if counts[topic.name.as_str()] > 1 {
            let message = format!("topic '{}' appears more than once", &*topic.name);
            results.push(fail(ctx, result, (ResponseError::InvalidRequest, message)));
            continue;
        }
        if !cluster_create && !ctx.authorize(Operation::Create, ResourceType::Topic, &topic.name) {
            let failure = (
                ResponseError::TopicAuthorizationFailed,
                "Authorization failed.".to_owned(),
            );
            results.push(fail(ctx, result, failure));
            continue;
        }
        if crate::group::offsets_topic::is_internal(&topic.name) {
            let message = format!(
                "'{}' is internal: the group coordinator creates it",
                &*topic.name
            );
            results.push(fail(ctx, result, (ResponseError::InvalidRequest, message)));
            continue;
        }
        if topic.name.starts_with(veil_blind::PHYSICAL_PREFIX) {
            // Blind topics are created only by BlindCreateTopic, which
            // derives the name; a squatted name would pass as blind later.
            let message = format!(
                "topic names starting with '{}' are reserved for blind topics",
                veil_blind::PHYSICAL_PREFIX
            );
            results.push(fail(
                ctx,
                result,
                (ResponseError::InvalidTopicException, message),
            ));
            continue;
        }
        let spec = match spec(
            topic,
            broker.config.topics.default_partitions,
            broker.config.topics.default_replication_factor,
        ) {
            Ok(spec) => spec,
            Err(failure) => {
                results.push(fail(ctx, result, failure));
                continue;
            }
        };
        let cmd = match &spec.assignments {
            Some(lists) => {
                let unknown = broker.with_meta(|s| {
                    lists
                        .iter()
                        .flatten()
                        .find(|b| s.broker(**b).is_none())
                        .copied()
                });
                if let Some(b) = unknown {
                    let message =
                        format!("replica assignment names broker {b}, which is not registered");
                    results.push(fail(
                        ctx,
                        result,
                        (ResponseError::InvalidReplicaAssignment, message),
                    ));
                    continue;
                }
                MetaCommand::CreateTopic {
                    name: topic.name.to_string(),
                    topic_id: Uuid::new_v4(),
                    partitions: spec.partitions,
                    replication_factor: spec.replication_factor,
                    configs: spec.configs.clone(),
                    assignments: lists.clone(),
                }
            }
            None => match broker.create_topic_command(
                &topic.name,
                spec.partitions,
                spec.replication_factor,
                spec.configs.clone(),
            ) {
                Ok(cmd) => cmd,
                Err(e) => {
                    let code = ctx.code(&e);
                    results.push(
                        result
                            .with_error_code(code)
                            .with_error_message(Some(StrBytes::from_string(e.client_message()))),
                    );
                    continue;
                }
            },
        };
        let topic_id = match &cmd {
            // A validate-only request creates nothing, so names no id.
            MetaCommand::CreateTopic { topic_id, .. } if !req.validate_only => *topic_id,
            _ => Uuid::nil(),
        };
        let outcome = if req.validate_only {
            broker.check(&cmd)
        } else {
            broker.commit(cmd).await
        };
        if let Err(e) = outcome {
            let code = ctx.code(&e);
            results.push(
                result
                    .with_error_code(code)
                    .with_error_message(Some(StrBytes::from_string(e.client_message()))),
            );
            continue;
        }
        let result = result
            .with_topic_id(topic_id)
            .with_num_partitions(spec.partitions)
            .with_replication_factor(spec.replication_factor);
        if !ctx.authorize(Operation::DescribeConfigs, ResourceType::Topic, &topic.name) {
            let code = ResponseError::TopicAuthorizationFailed.code();
            results.push(result.with_topic_config_error_code(code).with_configs(None));
            continue;
        }
        let configs = topic_entries(&spec.configs, &topic_default_levels(broker), None)
            .into_iter()
            .map(|e| {
                CreatableTopicConfigs::default()
                    .with_name(StrBytes::from_static_str(e.name))
                    .with_value(Some(StrBytes::from_string(e.value)))
                    .with_config_source(e.source.code())
            })
            .collect();
        results.push(result.with_configs(Some(configs)));
    }
    CreateTopicsResponse::default().with_topics(results)
}

fn fail(
    ctx: &RequestContext,
    result: CreatableTopicResult,
    (error, message): Failure,
) -> CreatableTopicResult {
    ctx.count(error.code());
    result
        .with_error_code(error.code())
        .with_error_message(Some(StrBytes::from_string(message)))
}

#[cfg(test)]
mod tests {
    use kafka_protocol::messages::create_topics_request::{
        CreatableReplicaAssignment, CreatableTopicConfig,
    };
    use kafka_protocol::messages::{BrokerId, TopicName};

    use super::*;

    fn topic(partitions: i32, rf: i16) -> CreatableTopic {
        CreatableTopic::default()
            .with_num_partitions(partitions)
            .with_replication_factor(rf)
    }

    fn assignment(index: i32, brokers: &[i32]) -> CreatableReplicaAssignment {
        CreatableReplicaAssignment::default()
            .with_partition_index(index)
            .with_broker_ids(brokers.iter().map(|&b| BrokerId(b)).collect())
    }

    #[test]
    fn minus_one_takes_the_defaults() {
        let s = spec(&topic(-1, -1), 3, 1).unwrap();
        assert_eq!((s.partitions, s.replication_factor), (3, 1));
        let s = spec(&topic(5, 2), 3, 1).unwrap();
        assert_eq!((s.partitions, s.replication_factor), (5, 2));
    }

    #[test]
    fn configs_need_values_and_the_last_repeat_wins() {
        let config = |v: Option<&'static str>| {
            CreatableTopicConfig::default()
                .with_name(StrBytes::from_static_str("retention.ms"))
                .with_value(v.map(StrBytes::from_static_str))
        };
        let t = topic(1, 1).with_configs(vec![config(Some("1")), config(Some("2"))]);
        assert_eq!(spec(&t, 1, 1).unwrap().configs["retention.ms"], "2");
        let t = topic(1, 1).with_configs(vec![config(None)]);
        let (error, message) = spec(&t, 1, 1).unwrap_err();
        assert_eq!(error, ResponseError::InvalidConfig);
        assert!(message.contains("retention.ms"), "{message}");
    }

    #[tokio::test]
    async fn creates_once_refuses_repeats_and_validates_without_creating() {
        let (_dir, ctx) = crate::test_fixture::context(7).await;
        let named = |name: &'static str, partitions| {
            topic(partitions, -1).with_name(TopicName(StrBytes::from_static_str(name)))
        };
        let req = CreateTopicsRequest::default().with_topics(vec![
            named("a", 3),
            named("b", 1),
            named("b", 1),
        ]);
        let resp = handle(&ctx, req.clone()).await;
        crate::test_fixture::encodes(&resp, 2..=7);
        let codes: Vec<i16> = resp.topics.iter().map(|t| t.error_code).collect();
        assert_eq!(codes, vec![0, 42, 42], "INVALID_REQUEST for both repeats");
        let a = &resp.topics[0];
        assert_eq!((a.num_partitions, a.replication_factor), (3, 1));
        assert_eq!(Some(a.topic_id), ctx.broker.topics.get("a").map(|t| t.id));
        assert_eq!(
            a.configs.as_ref().map(Vec::len),
            Some(veil_meta::topic_config::KNOWN.len())
        );
        assert!(ctx.broker.topics.get("b").is_none());
        let again = handle(&ctx, req).await;
        assert_eq!(
            again.topics[0].error_code,
            ResponseError::TopicAlreadyExists.code()
        );

        let dry = CreateTopicsRequest::default()
            .with_topics(vec![named("c", 2)])
            .with_validate_only(true);
        let resp = handle(&ctx, dry).await;
        assert_eq!(
            (resp.topics[0].error_code, resp.topics[0].topic_id),
            (0, Uuid::nil())
        );
        assert!(ctx.broker.topics.get("c").is_none());

        // The blind-topic prefix is reserved, also for validate-only requests.
        let squat = "vb1-0123456789abcdef0123456789abcdef";
        for validate_only in [true, false] {
            let req = CreateTopicsRequest::default()
                .with_topics(vec![
                    topic(1, -1).with_name(TopicName(StrBytes::from_static_str(squat)))
                ])
                .with_validate_only(validate_only);
            let resp = handle(&ctx, req).await;
            assert_eq!(
                resp.topics[0].error_code,
                ResponseError::InvalidTopicException.code()
            );
            let message = resp.topics[0].error_message.as_deref().unwrap_or_default();
            assert!(message.contains("reserved for blind topics"), "{message}");
        }
        assert!(ctx.broker.topics.get(squat).is_none());
    }

    #[test]
    fn assignments_must_be_consecutive_with_equal_distinct_replica_lists() {
        let t =
            topic(-1, -1).with_assignments(vec![assignment(1, &[7, 8]), assignment(0, &[8, 7])]);
        let s = spec(&t, 1, 1).unwrap();
        assert_eq!((s.partitions, s.replication_factor), (2, 2));
        assert_eq!(s.assignments, Some(vec![vec![8, 7], vec![7, 8]]));
        let t = topic(-1, -1).with_assignments(vec![assignment(0, &[7, 7])]);
        assert_eq!(
            spec(&t, 1, 1).unwrap_err().0,
            ResponseError::InvalidReplicaAssignment
        );
        let t = topic(-1, -1).with_assignments(vec![assignment(0, &[7]), assignment(1, &[7, 8])]);
        assert_eq!(
            spec(&t, 1, 1).unwrap_err().0,
            ResponseError::InvalidReplicaAssignment
        );
        let t = topic(-1, -1).with_assignments(vec![assignment(0, &[7]), assignment(2, &[7])]);
        assert_eq!(
            spec(&t, 1, 1).unwrap_err().0,
            ResponseError::InvalidReplicaAssignment
        );
        let t = topic(2, -1).with_assignments(vec![assignment(0, &[7])]);
        assert_eq!(spec(&t, 1, 1).unwrap_err().0, ResponseError::InvalidRequest);
    }

    #[tokio::test]
    async fn unknown_brokers_and_too_many_replicas_are_refused() {
        let (_dir, ctx) = crate::test_fixture::context(7).await;
        let node = ctx.broker.node_id();
        let named = |t: CreatableTopic, name: &'static str| {
            t.with_name(TopicName(StrBytes::from_static_str(name)))
        };
        let req = CreateTopicsRequest::default().with_topics(vec![
            named(topic(1, 3), "rf3"),
            named(
                topic(-1, -1).with_assignments(vec![assignment(0, &[node + 5])]),
                "elsewhere",
            ),
            named(
                topic(-1, -1).with_assignments(vec![assignment(0, &[node])]),
                "here",
            ),
        ]);
        let resp = handle(&ctx, req).await;
        let codes: Vec<i16> = resp.topics.iter().map(|t| t.error_code).collect();
        assert_eq!(
            codes,
            vec![
                ResponseError::InvalidReplicationFactor.code(),
                ResponseError::InvalidReplicaAssignment.code(),
                0
            ]
        );
    }
}
