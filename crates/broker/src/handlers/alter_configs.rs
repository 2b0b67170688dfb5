//! AlterConfigs (legacy): the given configs replace *all* of a topic's
//! overrides; a config left out, or sent with a null value, reverts to its
//! default (Kafka's semantics, which is why IncrementalAlterConfigs exists).
//!
//! Broker configs are static (the TOML file), so broker resources are
//! refused. The resource checks shared with IncrementalAlterConfigs live here.

use std::collections::{HashMap, HashSet};

use kafka_protocol::messages::alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::{AlterConfigsRequest, AlterConfigsResponse};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use veil_meta::{MetaCommand, TopicConfigs};

use super::describe_configs::{RESOURCE_BROKER, RESOURCE_TOPIC};
use crate::auth::{Operation, ResourceType};
use crate::context::RequestContext;

/// A Kafka error and the message telling the client what to fix.
pub(crate) type Failure = (ResponseError, String);

/// Which entries of `keys` occur more than once.
pub(crate) fn repeated<K: std::hash::Hash + Eq>(keys: &[K]) -> Vec<bool> {
    let mut counts: HashMap<&K, usize> = HashMap::new();
    for k in keys {
        *counts.entry(k).or_default() += 1;
    }
    keys.iter().map(|k| counts[k] > 1).collect()
}

/// The first config name given twice in one resource, if any.
pub(crate) fn duplicate_key<'a>(names: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let mut seen = HashSet::new();
    names.into_iter().find(|n| !seen.insert(*n))
}

/// Checks that an alter request may touch this resource: a topic, named at
/// most once in the request.
pub(crate) fn check_resource(resource_type: i8, name: &str, repeated: bool) -> Result<(), Failure> {
    if repeated {
        return Err((
            ResponseError::InvalidRequest,
            "each resource must appear at most once".into(),
        ));
    }
    match resource_type {
        RESOURCE_TOPIC => Ok(()),
        RESOURCE_BROKER => Err((
            ResponseError::InvalidRequest,
            format!(
                "broker '{name}' configs are static; edit the broker's config file and restart it"
            ),
        )),
        other => Err((
            ResponseError::InvalidRequest,
            format!("resource type {other} cannot be altered; only TOPIC (2) configs can"),
        )),
    }
}

/// Kafka's check, after the duplicate check and before any other: ALTER_CONFIGS
/// on the topic, or on the cluster for a broker resource.
pub(crate) fn authorize_alter(
    ctx: &RequestContext,
    resource_type: i8,
    name: &str,
    repeated: bool,
) -> Result<(), Failure> {
    let (allowed, error) = match resource_type {
        _ if repeated => return Ok(()),
        RESOURCE_TOPIC => (
            ctx.authorize(Operation::AlterConfigs, ResourceType::Topic, name),
            ResponseError::TopicAuthorizationFailed,
        ),
        RESOURCE_BROKER => (
            ctx.authorize_cluster(Operation::AlterConfigs),
            ResponseError::ClusterAuthorizationFailed,
        ),
        _ => return Ok(()),
    };
    if allowed {
        Ok(())
    } else {
        Err((error, "Authorization failed.".into()))
    }
}

/// Validates (`validate_only`) or commits a config change.
pub(crate) async fn apply(
    ctx: &RequestContext,
    cmd: MetaCommand,
    validate_only: bool,
) -> Result<(), Failure> {
    let outcome = if validate_only {
        ctx.broker.check(&cmd)
    } else {
        ctx.broker.commit(cmd).await
    };
    outcome.map_err(|e| (e.response_error(), e.client_message()))
}

/// The response's error code and message, counting the error.
pub(crate) fn error_parts(
    ctx: &RequestContext,
    outcome: Result<(), Failure>,
) -> (i16, Option<StrBytes>) {
    match outcome {
        Ok(()) => (0, None),
        Err((error, message)) => {
            ctx.count(error.code());
            (error.code(), Some(StrBytes::from_string(message)))
        }
    }
}

/// The new override set: every entry with a value (Kafka keeps the last of
/// repeated keys, but those are refused before this).
fn replacement<'a>(entries: impl IntoIterator<Item = (&'a str, Option<&'a str>)>) -> TopicConfigs {
    entries
        .into_iter()
        .filter_map(|(k, v)| Some((k.to_owned(), v?.to_owned())))
        .collect()
}

pub async fn handle(ctx: &RequestContext, req: AlterConfigsRequest) -> AlterConfigsResponse {
    let keys: Vec<(i8, &str)> = req
        .resources
        .iter()
        .map(|r| (r.resource_type, r.resource_name.as_str()))
        .collect();
    let repeated = repeated(&keys);
    let mut responses = Vec::with_capacity(req.resources.len());
    for (resource, repeated) in req.resources.iter().zip(repeated) {
        let name = resource.resource_name.as_str();
        let outcome = async {
            authorize_alter(ctx, resource.resource_type, name, repeated)?;
            check_resource(resource.resource_type, name, repeated)?;
            if !ctx.blind_visible(name) {
                return Err((
                    ResponseError::UnknownTopicOrPartition,
                    format!("topic '{name}' does not exist"),
                ));
            }
            if let Some(key) = duplicate_key(resource.configs.iter().map(|c| c.name.as_str())) {
                return Err((
                    ResponseError::InvalidRequest,
                    format!("config '{key}' appears more than once"),
                ));
            }
            let configs = replacement(
                resource
                    .configs
                    .iter()
                    .map(|c| (c.name.as_str(), c.value.as_deref())),
            );
            let cmd = MetaCommand::ReplaceTopicConfigs {
                name: name.to_owned(),
                configs,
            };
            apply(ctx, cmd, req.validate_only).await
        }
        .await;
        let (code, message) = error_parts(ctx, outcome);
        responses.push(
            AlterConfigsResourceResponse::default()
                .with_error_code(code)
                .with_error_message(message)
                .with_resource_type(resource.resource_type)
                .with_resource_name(resource.resource_name.clone()),
        );
    }
    AlterConfigsResponse::default().with_responses(responses)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn replaces_every_override() {
        use kafka_protocol::messages::alter_configs_request::{
            AlterConfigsResource, AlterableConfig,
        };

        use crate::test_fixture as fixture;

        let (_dir, ctx) = fixture::context(2).await;
        let configs: TopicConfigs = [("retention.ms".to_owned(), "5".to_owned())].into();
        ctx.broker
            .commit(ctx.broker.create_topic_command("t", 1, 1, configs).unwrap())
            .await
            .unwrap();
        let resource = |name: &'static str, key: &'static str, value: &'static str| {
            let config = AlterableConfig::default()
                .with_name(StrBytes::from_static_str(key))
                .with_value(Some(StrBytes::from_static_str(value)));
            AlterConfigsResource::default()
                .with_resource_type(RESOURCE_TOPIC)
                .with_resource_name(StrBytes::from_static_str(name))
                .with_configs(vec![config])
        };
        let req = AlterConfigsRequest::default().with_resources(vec![
            resource("t", "segment.bytes", "1048576"),
            resource("u", "segment.ms", "1"),
        ]);
        let resp = handle(&ctx, req).await;
        fixture::encodes(&resp, 0..=2);
        let codes: Vec<i16> = resp.responses.iter().map(|r| r.error_code).collect();
        assert_eq!(codes, vec![0, 3]);
        let overrides = ctx
            .broker
            .with_meta(|s| s.topic("t").unwrap().configs.clone());
        let expected: TopicConfigs = [("segment.bytes".to_owned(), "1048576".to_owned())].into();
        assert_eq!(overrides, expected, "retention.ms reverted to its default");
        let req = AlterConfigsRequest::default().with_resources(vec![
            resource("t", "segment.bytes", "1"),
            resource("t", "segment.ms", "1"),
        ]);
        let codes: Vec<i16> = handle(&ctx, req)
            .await
            .responses
            .iter()
            .map(|r| r.error_code)
            .collect();
        assert_eq!(codes, vec![42, 42]);
    }

    #[test]
    fn null_values_drop_the_override() {
        let configs = replacement([("retention.ms", Some("5")), ("segment.ms", None)]);
        assert_eq!(configs.len(), 1);
        assert_eq!(configs["retention.ms"], "5");
    }

    #[test]
    fn repeats_are_flagged_everywhere_they_occur() {
        assert_eq!(repeated(&["a", "b", "a"]), vec![true, false, true]);
        assert_eq!(duplicate_key(["x", "y", "x"]), Some("x"));
        assert_eq!(duplicate_key(["x", "y"]), None);
    }

    #[test]
    fn only_topics_may_be_altered() {
        check_resource(RESOURCE_TOPIC, "t", false).unwrap();
        let (error, message) = check_resource(RESOURCE_BROKER, "0", false).unwrap_err();
        assert_eq!(error, ResponseError::InvalidRequest);
        assert!(message.contains("static"), "{message}");
        assert_eq!(
            check_resource(8, "0", false).unwrap_err().0,
            ResponseError::InvalidRequest
        );
        assert_eq!(
            check_resource(RESOURCE_TOPIC, "t", true).unwrap_err().0,
            ResponseError::InvalidRequest
        );
    }
}
