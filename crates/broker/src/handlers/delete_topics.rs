//! DeleteTopics: by name (v1-5 `topic_names`) or by name or id (v6 `topics`).
//!
//! As in Kafka: a v6 entry naming both a name and an id, or neither, is
//! INVALID_REQUEST; a topic named twice in one request fails every
//! occurrence with INVALID_REQUEST; an unknown id is UNKNOWN_TOPIC_ID.
//! Authorization: DELETE on the topic, checked before existence; a topic
//! named by id also needs DESCRIBE, or its name would leak.

use std::collections::HashMap;

use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{DeleteTopicsRequest, DeleteTopicsResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use uuid::Uuid;
use veil_meta::MetaCommand;

use crate::auth::{Operation, ResourceType};
use crate::context::RequestContext;
use crate::error::Error;

/// One request entry, whichever way the client named the topic.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Target {
    Name(String),
    Id(Uuid),
    /// Both or neither given (v6).
    Ambiguous(Option<String>, Uuid),
}

fn targets(req: DeleteTopicsRequest, version: i16) -> Vec<Target> {
    if version < 6 {
        return req
            .topic_names
            .into_iter()
            .map(|n| Target::Name(n.to_string()))
            .collect();
    }
    req.topics
        .into_iter()
        .map(|t| match (t.name, t.topic_id) {
            (Some(name), id) if id.is_nil() => Target::Name(name.to_string()),
            (None, id) if !id.is_nil() => Target::Id(id),
            (name, id) => Target::Ambiguous(name.map(|n| n.to_string()), id),
        })
        .collect()
}

pub async fn handle(ctx: &RequestContext, req: DeleteTopicsRequest) -> DeleteTopicsResponse {
    let targets = targets(req, ctx.api_version);
    let mut counts: HashMap<&Target, usize> = HashMap::new();
    for t in &targets {
        *counts.entry(t).or_default() += 1;
    }
    let may = |op, name: &str| ctx.authorize(op, ResourceType::Topic, name);
    let denied = || Error::Unauthorized(kafka_protocol::ResponseError::TopicAuthorizationFailed);
    let mut responses = Vec::with_capacity(targets.len());
    for target in &targets {
        let duplicate = counts[target] > 1;
        // Resolve to (name, id) from metadata, the source of truth.
        let resolved: Result<(String, Uuid), Error> = match target {
            Target::Ambiguous(..) => Err(Error::InvalidRequest(
                "give either a topic name or a topic id, not both or neither".into(),
            )),
            _ if duplicate => Err(Error::InvalidRequest(
                "the topic appears more than once in the request".into(),
            )),
            Target::Name(name) if !may(Operation::Delete, name) => Err(denied()),
            Target::Name(name) => ctx
                .broker
                .with_meta(|s| s.topic(name).map(|t| t.topic_id))
                .filter(|_| ctx.blind_visible(name))
                .map(|id| (name.clone(), id))
                .ok_or(Error::UnknownTopicOrPartition),
            Target::Id(id) => ctx
                .broker
                .with_meta(|s| s.topic_by_id(*id).map(|t| t.name.clone()))
                .filter(|name| ctx.blind_visible(name))
                .map(|name| (name, *id))
                .ok_or(Error::UnknownTopicId)
                .and_then(|(name, id)| {
                    if may(Operation::Describe, &name) && may(Operation::Delete, &name) {
                        Ok((name, id))
                    } else {
                        Err(denied())
                    }
                }),
        };
        let resolved = resolved.and_then(|(name, id)| {
            if crate::group::offsets_topic::is_internal(&name) {
                Err(Error::InvalidRequest(format!(
                    "'{name}' is internal and holds every group's committed offsets"
                )))
            } else {
                Ok((name, id))
            }
        });
        let outcome = match resolved {
            Ok((name, id)) => ctx
                .broker
                .commit(MetaCommand::DeleteTopic {
                    name: name.clone(),
                    topic_id: id,
                })
                .await
                .map(|()| (name, id)),
            Err(e) => Err(e),
        };
        let (name, id) = match target {
            Target::Name(n) => (Some(n.clone()), Uuid::nil()),
            Target::Id(id) => (None, *id),
            Target::Ambiguous(n, id) => (n.clone(), *id),
        };
        let result = DeletableTopicResult::default().with_error_message(None);
        responses.push(match outcome {
            Ok((name, id)) => result
                .with_name(Some(TopicName(StrBytes::from_string(name))))
                .with_topic_id(id),
            Err(e) => {
                let code = ctx.code(&e);
                result
                    .with_name(name.map(|n| TopicName(StrBytes::from_string(n))))
                    .with_topic_id(id)
                    .with_error_code(code)
                    .with_error_message(Some(StrBytes::from_string(e.client_message())))
            }
        });
    }
    DeleteTopicsResponse::default().with_responses(responses)
}

#[cfg(test)]
mod tests {
    use kafka_protocol::messages::delete_topics_request::DeleteTopicState;

    use super::*;

    #[test]
    fn v6_entries_need_exactly_one_of_name_and_id() {
        let id = Uuid::new_v4();
        let state = |name: Option<&'static str>, id: Uuid| {
            DeleteTopicState::default()
                .with_name(name.map(|n| TopicName(StrBytes::from_static_str(n))))
                .with_topic_id(id)
        };
        let req = DeleteTopicsRequest::default().with_topics(vec![
            state(Some("a"), Uuid::nil()),
            state(None, id),
            state(Some("b"), id),
            state(None, Uuid::nil()),
        ]);
        assert_eq!(
            targets(req, 6),
            vec![
                Target::Name("a".into()),
                Target::Id(id),
                Target::Ambiguous(Some("b".into()), id),
                Target::Ambiguous(None, Uuid::nil()),
            ]
        );
    }

    #[tokio::test]
    async fn deletes_by_name_or_id_and_reports_both() {
        let (_dir, ctx) = crate::test_fixture::context(6).await;
        crate::test_fixture::create_topic(&ctx, "a", 1).await;
        crate::test_fixture::create_topic(&ctx, "b", 1).await;
        let a = ctx.broker.topics.get("a").unwrap().id;
        let by = |name: Option<&'static str>, id: Uuid| {
            DeleteTopicState::default()
                .with_name(name.map(|n| TopicName(StrBytes::from_static_str(n))))
                .with_topic_id(id)
        };
        let missing = Uuid::new_v4();
        let req = DeleteTopicsRequest::default().with_topics(vec![
            by(None, a),
            by(Some("b"), Uuid::nil()),
            by(None, missing),
            by(Some("c"), Uuid::nil()),
        ]);
        let resp = handle(&ctx, req).await;
        crate::test_fixture::encodes(&resp, 1..=6);
        let got: Vec<(Option<&str>, Uuid, i16)> = resp
            .responses
            .iter()
            .map(|r| {
                (
                    r.name.as_ref().map(|n| n.as_str()),
                    r.topic_id,
                    r.error_code,
                )
            })
            .collect();
        let b = got[1].1;
        assert!(!b.is_nil());
        assert_eq!(
            got,
            vec![
                (Some("a"), a, 0),
                (Some("b"), b, 0),
                (None, missing, 100),
                (Some("c"), Uuid::nil(), 3)
            ]
        );
        assert!(ctx.broker.topics.all().is_empty());
    }

    #[test]
    fn before_v6_names_come_from_topic_names() {
        let req = DeleteTopicsRequest::default()
            .with_topic_names(vec![TopicName(StrBytes::from_static_str("a"))]);
        assert_eq!(targets(req, 5), vec![Target::Name("a".into())]);
    }
}
