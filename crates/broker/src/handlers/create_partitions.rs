//! CreatePartitions: grow a topic to `count` partitions.
//!
//! Explicit assignments must list one entry per new partition, each as
//! many distinct registered brokers as the topic's replication factor;
//! without them the new partitions are placed over the live brokers. A
//! topic named twice in one request fails every occurrence with
//! INVALID_REQUEST, as in Kafka.

use std::collections::HashMap;

use kafka_protocol::messages::create_partitions_request::CreatePartitionsAssignment;
use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::{CreatePartitionsRequest, CreatePartitionsResponse};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use veil_meta::MetaCommand;

use crate::auth::{Operation, ResourceType};
use crate::context::RequestContext;

/// Checks explicit assignments for growing from `current` to `count`
/// partitions of `rf` replicas, and returns them as replica lists.
fn check_assignments(
    assignments: &[CreatePartitionsAssignment],
    current: i32,
    count: i32,
    rf: usize,
    registered: &dyn Fn(i32) -> bool,
) -> Result<Vec<Vec<i32>>, String> {
    let added = i64::from(count) - i64::from(current);
    if added > 0 && assignments.len() as i64 != added {
        return Err(format!(
            "increasing the number of partitions by {added} but {} assignments provided",
            assignments.len()
        ));
    }
    let mut lists = Vec::with_capacity(assignments.len());
    for (i, a) in assignments.iter().enumerate() {
        let partition = i64::from(current) + i as i64;
        let list: Vec<i32> = a.broker_ids.iter().map(|b| b.0).collect();
        let mut distinct = list.clone();
        distinct.sort_unstable();
        distinct.dedup();
        if list.len() != rf || distinct.len() != list.len() {
            return Err(format!(
                "the assignment of new partition {partition} must name {rf} distinct brokers, got {list:?}"
            ));
        }
        if let Some(b) = list.iter().find(|b| !registered(**b)) {
            return Err(format!(
                "the assignment of new partition {partition} names broker {b}, which is not registered"
            ));
        }
        lists.push(list);
    }
    Ok(lists)
}

pub async fn handle(
    ctx: &RequestContext,
    req: CreatePartitionsRequest,
) -> CreatePartitionsResponse {
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for t in &req.topics {
        *counts.entry(t.name.as_str()).or_default() += 1;
    }
    let mut results = Vec::with_capacity(req.topics.len());
    for topic in &req.topics {
        let name = topic.name.as_str();
        let result = CreatePartitionsTopicResult::default().with_name(topic.name.clone());
        let fail = |error: ResponseError, message: String| {
            ctx.count(error.code());
            result
                .clone()
                .with_error_code(error.code())
                .with_error_message(Some(StrBytes::from_string(message)))
        };
        if counts[name] > 1 {
            results.push(fail(
                ResponseError::InvalidRequest,
                format!("topic '{name}' appears more than once in the request"),
            ));
            continue;
        }
        // Kafka: ALTER on the topic, checked before existence.
        if !ctx.authorize(Operation::Alter, ResourceType::Topic, name) {
            results.push(fail(
                ResponseError::TopicAuthorizationFailed,
                "Authorization failed.".into(),
            ));
            continue;
        }
        let current = ctx.broker.with_meta(|s| {
            s.topic(name).map(|t| {
                let rf = t
                    .assignments
                    .first()
                    .map_or(t.replication_factor as usize, |p| p.replicas.len());
                (t.partitions, rf)
            })
        });
        if !ctx.blind_visible(name) {
            let message = format!("topic '{name}' does not exist");
            results.push(fail(ResponseError::UnknownTopicOrPartition, message));
            continue;
        }
        let lists =
            match (current, &topic.assignments) {
                (Some((current, rf)), Some(assignments)) => {
                    let registered = |b: i32| ctx.broker.with_meta(|s| s.broker(b).is_some());
                    match check_assignments(assignments, current, topic.count, rf, &registered) {
                        Ok(lists) => lists,
                        Err(message) => {
                            results.push(fail(ResponseError::InvalidReplicaAssignment, message));
                            continue;
                        }
                    }
                }
                (Some((current, rf)), None) if topic.count > current => {
                    match ctx.broker.assign_replicas(
                        topic.count - current,
                        i16::try_from(rf).unwrap_or(i16::MAX),
                    ) {
                        Ok(lists) => lists,
                        Err(e) => {
                            let code = ctx.code(&e);
                            results.push(result.clone().with_error_code(code).with_error_message(
                                Some(StrBytes::from_string(e.client_message())),
                            ));
                            continue;
                        }
                    }
                }
                _ => Vec::new(),
            };
        let cmd = MetaCommand::CreatePartitions {
            name: name.to_owned(),
            count: topic.count,
            assignments: lists,
        };
        let outcome = if req.validate_only {
            ctx.broker.check(&cmd)
        } else {
            ctx.broker.commit(cmd).await
        };
        results.push(match outcome {
            Ok(()) => result,
            Err(e) => {
                let code = ctx.code(&e);
                result
                    .with_error_code(code)
                    .with_error_message(Some(StrBytes::from_string(e.client_message())))
            }
        });
    }
    CreatePartitionsResponse::default().with_results(results)
}

#[cfg(test)]
mod tests {
    use kafka_protocol::messages::BrokerId;

    use super::*;

    fn on(brokers: &[i32]) -> CreatePartitionsAssignment {
        CreatePartitionsAssignment::default()
            .with_broker_ids(brokers.iter().map(|&b| BrokerId(b)).collect())
    }

    #[test]
    fn one_assignment_of_rf_distinct_registered_brokers_per_new_partition() {
        let known = |b: i32| (1..=3).contains(&b);
        let lists = check_assignments(&[on(&[3, 1]), on(&[2, 3])], 2, 4, 2, &known).unwrap();
        assert_eq!(lists, vec![vec![3, 1], vec![2, 3]]);
        let err = check_assignments(&[on(&[3, 1])], 2, 4, 2, &known).unwrap_err();
        assert!(err.contains("by 2 but 1"), "{err}");
        let err = check_assignments(&[on(&[3, 1]), on(&[4, 1])], 2, 4, 2, &known).unwrap_err();
        assert!(
            err.contains("partition 3") && err.contains("broker 4"),
            "{err}"
        );
        assert!(check_assignments(&[on(&[3, 3])], 2, 3, 2, &known).is_err());
        assert!(check_assignments(&[on(&[3])], 2, 3, 2, &known).is_err());
        assert!(check_assignments(&[on(&[])], 2, 3, 1, &known).is_err());
    }

    #[tokio::test]
    async fn grows_topics_and_refuses_what_kafka_refuses() {
        use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
        use kafka_protocol::messages::TopicName;

        use crate::test_fixture as fixture;

        let (_dir, ctx) = fixture::context(3).await;
        let node = ctx.broker.node_id();
        fixture::create_topic(&ctx, "t", 1).await;
        let grow = |name: &'static str, count, assignments: Option<Vec<_>>| {
            CreatePartitionsTopic::default()
                .with_name(TopicName(StrBytes::from_static_str(name)))
                .with_count(count)
                .with_assignments(assignments)
        };
        let req = CreatePartitionsRequest::default().with_validate_only(true);
        let resp = handle(&ctx, req.with_topics(vec![grow("t", 2, None)])).await;
        assert_eq!(resp.results[0].error_code, 0);
        assert_eq!(
            ctx.broker.topics.get("t").unwrap().partition_count(),
            1,
            "validate only"
        );
        let req = CreatePartitionsRequest::default().with_topics(vec![
            grow("t", 3, Some(vec![on(&[node]), on(&[node])])),
            grow("u", 2, None),
            grow("v", 2, None),
            grow("v", 2, None),
        ]);
        let resp = handle(&ctx, req).await;
        fixture::encodes(&resp, 0..=3);
        let codes: Vec<i16> = resp.results.iter().map(|r| r.error_code).collect();
        assert_eq!(codes, vec![0, 3, 42, 42]);
        assert_eq!(ctx.broker.topics.get("t").unwrap().partition_count(), 3);
        let req = CreatePartitionsRequest::default().with_topics(vec![
            grow("t", 3, None),
            grow("t", 5, Some(vec![on(&[node])])),
        ]);
        let resp = handle(&ctx, req).await;
        assert_eq!(resp.results[0].error_code, 42, "repeated topic");
        let req = CreatePartitionsRequest::default().with_topics(vec![grow("t", 2, None)]);
        let resp = handle(&ctx, req).await;
        assert_eq!(
            resp.results[0].error_code,
            ResponseError::InvalidPartitions.code()
        );
        assert!(resp.results[0].error_message.is_some());
        let req = CreatePartitionsRequest::default().with_topics(vec![grow(
            "t",
            5,
            Some(vec![on(&[node])]),
        )]);
        let resp = handle(&ctx, req).await;
        assert_eq!(
            resp.results[0].error_code,
            ResponseError::InvalidReplicaAssignment.code()
        );
    }

    #[test]
    fn a_count_that_does_not_grow_is_left_to_the_metadata_check() {
        // Kafka reports "already has N partitions" (INVALID_PARTITIONS) rather
        // than an assignment mismatch when nothing would be added.
        check_assignments(&[], 4, 4, 1, &|_| true).unwrap();
        check_assignments(&[], 4, 2, 1, &|_| true).unwrap();
    }
}
