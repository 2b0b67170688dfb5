//! CreatePartitions: grow a topic to `count` partitions.
//!
//! Explicit assignments must list one entry per new partition, each a single
//! replica on this broker (the only one). A topic named twice in one request
//! fails every occurrence with INVALID_REQUEST, as in Kafka.

use std::collections::HashMap;

use kafka_protocol::messages::create_partitions_request::CreatePartitionsAssignment;
use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::{CreatePartitionsRequest, CreatePartitionsResponse};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use veil_meta::MetaCommand;

use crate::auth::{Operation, ResourceType};
use crate::context::RequestContext;

/// Checks explicit assignments for growing from `current` to `count` partitions.
fn check_assignments(
    assignments: &[CreatePartitionsAssignment],
    current: i32,
    count: i32,
    node_id: i32,
) -> Result<(), String> {
    let added = i64::from(count) - i64::from(current);
    if added > 0 && assignments.len() as i64 != added {
        return Err(format!(
            "increasing the number of partitions by {added} but {} assignments provided",
            assignments.len()
        ));
    }
    match assignments
        .iter()
        .position(|a| a.broker_ids.len() != 1 || a.broker_ids[0].0 != node_id)
    {
        Some(i) => Err(format!(
            "the assignment of new partition {} must be a single replica on broker {node_id} \
             (the only broker)",
            i64::from(current) + i as i64
        )),
        None => Ok(()),
    }
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
        let current = ctx
            .broker
            .with_meta(|s| s.topic(name).map(|t| t.partitions));
        if !ctx.blind_visible(name) {
            let message = format!("topic '{name}' does not exist");
            results.push(fail(ResponseError::UnknownTopicOrPartition, message));
            continue;
        }
        if let (Some(current), Some(assignments)) = (current, &topic.assignments) {
            let checked =
                check_assignments(assignments, current, topic.count, ctx.broker.node_id());
            if let Err(message) = checked {
                results.push(fail(ResponseError::InvalidReplicaAssignment, message));
                continue;
            }
        }
        let cmd = MetaCommand::CreatePartitions {
            name: name.to_owned(),
            count: topic.count,
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
    fn one_single_replica_assignment_per_new_partition() {
        check_assignments(&[on(&[3]), on(&[3])], 2, 4, 3).unwrap();
        let err = check_assignments(&[on(&[3])], 2, 4, 3).unwrap_err();
        assert!(err.contains("by 2 but 1"), "{err}");
        let err = check_assignments(&[on(&[3]), on(&[4])], 2, 4, 3).unwrap_err();
        assert!(err.contains("partition 3"), "{err}");
        assert!(check_assignments(&[on(&[3, 3])], 2, 3, 3).is_err());
        assert!(check_assignments(&[on(&[])], 2, 3, 3).is_err());
    }

    #[tokio::test]
    async fn grows_topics_and_refuses_what_kafka_refuses() {
        use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
        use kafka_protocol::messages::TopicName;

        use crate::test_fixture as fixture;

        let (_dir, ctx) = fixture::context(3);
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
            ctx.broker.topics.get("t").unwrap().partitions.len(),
            1,
            "validate only"
        );
        let req = CreatePartitionsRequest::default().with_topics(vec![
            grow("t", 3, Some(vec![on(&[0]), on(&[0])])),
            grow("u", 2, None),
            grow("v", 2, None),
            grow("v", 2, None),
        ]);
        let resp = handle(&ctx, req).await;
        fixture::encodes(&resp, 0..=3);
        let codes: Vec<i16> = resp.results.iter().map(|r| r.error_code).collect();
        assert_eq!(codes, vec![0, 3, 42, 42]);
        assert_eq!(ctx.broker.topics.get("t").unwrap().partitions.len(), 3);
        let req = CreatePartitionsRequest::default()
            .with_topics(vec![grow("t", 3, None), grow("t", 5, Some(vec![on(&[0])]))]);
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
            Some(vec![on(&[0])]),
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
        check_assignments(&[], 4, 4, 0).unwrap();
        check_assignments(&[], 4, 2, 0).unwrap();
    }
}
