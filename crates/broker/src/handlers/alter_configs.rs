//! AlterConfigs (legacy): the given configs replace *all* of a topic's
//! overrides, or all of a broker resource's dynamic configs; a config left
//! out reverts to its default (Kafka's semantics, which is why
//! IncrementalAlterConfigs exists).
//!
//! A BROKER resource is "" (every node) or this node's id, as in Kafka; only
//! dynamic configs may be set ([`crate::broker_configs`]). The resource
//! checks shared with IncrementalAlterConfigs live here.

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

/// Checks that an alter request may touch this resource: a topic, or a
/// broker resource naming every node ("") or this one, named at most once
/// in the request.
pub(crate) fn check_resource(
    resource_type: i8,
    name: &str,
    repeated: bool,
    node_id: i32,
) -> Result<(), Failure> {
    if repeated {
        return Err((
            ResponseError::InvalidRequest,
            "each resource must appear at most once".into(),
        ));
    }
    match resource_type {
        RESOURCE_TOPIC => Ok(()),
        RESOURCE_BROKER if name.is_empty() => Ok(()),
        RESOURCE_BROKER => match name.parse::<i32>() {
            Ok(id) if id == node_id => Ok(()),
            // Kafka's clients send a broker's own resource to that broker.
            Ok(_) => Err((
                ResponseError::InvalidRequest,
                format!("Unexpected broker id, expected {node_id}, but received {name}"),
            )),
            Err(_) => Err((
                ResponseError::InvalidRequest,
                format!("Node id must be an integer, but it is: {name}"),
            )),
        },
        other => Err((
            ResponseError::InvalidRequest,
            format!(
                "resource type {other} cannot be altered; only TOPIC (2) and BROKER (4) configs can"
            ),
        )),
    }
}

/// Keys sent without a value, refused as Kafka does for broker resources.
pub(crate) fn null_values<'a>(
    entries: impl IntoIterator<Item = (&'a str, bool)>,
) -> Result<(), Failure> {
    let nulls: Vec<&str> = entries
        .into_iter()
        .filter_map(|(name, has_value)| (!has_value).then_some(name))
        .collect();
    if nulls.is_empty() {
        Ok(())
    } else {
        Err((
            ResponseError::InvalidRequest,
            format!("Null value not supported for : {}", nulls.join(", ")),
        ))
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

/// The command replacing a broker resource's dynamic configs with `configs`.
fn replace_broker_configs(
    ctx: &RequestContext,
    target: &str,
    configs: &[(&str, Option<&str>)],
) -> Result<MetaCommand, Failure> {
    null_values(configs.iter().map(|(k, v)| (*k, v.is_some())))?;
    crate::broker_configs::check_alterable(configs.iter().map(|(k, _)| *k))?;
    let set = replacement(configs.iter().copied());
    let remove = ctx
        .broker
        .with_meta(|s| s.broker_configs(target).cloned())
        .unwrap_or_default()
        .into_keys()
        .filter(|k| !set.contains_key(k))
        .collect();
    Ok(MetaCommand::UpdateBrokerConfigs {
        target: target.to_owned(),
        set,
        remove,
    })
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
            check_resource(resource.resource_type, name, repeated, ctx.broker.node_id())?;
            if let Some(key) = duplicate_key(resource.configs.iter().map(|c| c.name.as_str())) {
                return Err((
                    ResponseError::InvalidRequest,
                    format!("config '{key}' appears more than once"),
                ));
            }
            let configs: Vec<(&str, Option<&str>)> = resource
                .configs
                .iter()
                .map(|c| (c.name.as_str(), c.value.as_deref()))
                .collect();
            let cmd = if resource.resource_type == RESOURCE_BROKER {
                replace_broker_configs(ctx, name, &configs)?
            } else {
                if !ctx.blind_visible(name) {
                    return Err((
                        ResponseError::UnknownTopicOrPartition,
                        format!("topic '{name}' does not exist"),
                    ));
                }
                MetaCommand::ReplaceTopicConfigs {
                    name: name.to_owned(),
                    configs: replacement(configs),
                }
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
    fn topics_every_broker_and_this_broker_may_be_altered() {
        check_resource(RESOURCE_TOPIC, "t", false, 3).unwrap();
        check_resource(RESOURCE_BROKER, "", false, 3).unwrap();
        check_resource(RESOURCE_BROKER, "3", false, 3).unwrap();
        let (error, message) = check_resource(RESOURCE_BROKER, "0", false, 3).unwrap_err();
        assert_eq!(error, ResponseError::InvalidRequest);
        assert_eq!(message, "Unexpected broker id, expected 3, but received 0");
        let (_, message) = check_resource(RESOURCE_BROKER, "e", false, 3).unwrap_err();
        assert_eq!(message, "Node id must be an integer, but it is: e");
        assert_eq!(
            check_resource(8, "0", false, 3).unwrap_err().0,
            ResponseError::InvalidRequest
        );
        assert_eq!(
            check_resource(RESOURCE_TOPIC, "t", true, 3).unwrap_err().0,
            ResponseError::InvalidRequest
        );
    }

    #[tokio::test]
    async fn broker_resources_replace_every_dynamic_config() {
        use kafka_protocol::messages::alter_configs_request::{
            AlterConfigsResource, AlterableConfig,
        };

        use crate::test_fixture as fixture;

        let (_dir, ctx) = fixture::context(2).await;
        let resource = |name: &'static str, pairs: &[(&'static str, Option<&'static str>)]| {
            AlterConfigsResource::default()
                .with_resource_type(RESOURCE_BROKER)
                .with_resource_name(StrBytes::from_static_str(name))
                .with_configs(
                    pairs
                        .iter()
                        .map(|(k, v)| {
                            AlterableConfig::default()
                                .with_name(StrBytes::from_static_str(k))
                                .with_value(v.map(StrBytes::from_static_str))
                        })
                        .collect(),
                )
        };
        let run = |resources: Vec<AlterConfigsResource>| {
            let ctx = ctx.clone();
            async move {
                let resp = handle(
                    &ctx,
                    AlterConfigsRequest::default().with_resources(resources),
                )
                .await;
                fixture::encodes(&resp, 0..=2);
                resp.responses
                    .into_iter()
                    .map(|r| (r.error_code, r.error_message.map(|m| m.to_string())))
                    .collect::<Vec<_>>()
            }
        };
        let stored = |target: &str| {
            ctx.broker
                .with_meta(|s| s.broker_configs(target).cloned())
                .unwrap_or_default()
        };
        let out = run(vec![
            resource(
                "",
                &[
                    ("log.retention.ms", Some("5000")),
                    ("max.connections", Some("50")),
                ],
            ),
            resource("0", &[("max.connections", Some("40"))]),
        ])
        .await;
        assert_eq!(out, vec![(0, None), (0, None)]);
        assert_eq!(stored("").len(), 2);
        assert_eq!(stored("0")["max.connections"], "40");
        assert_eq!(
            ctx.broker.connection_limits.limits().total,
            40,
            "this node's value wins"
        );
        // Replacing the default's set drops what is left out.
        let out = run(vec![resource("", &[("max.connections", Some("60"))])]).await;
        assert_eq!(out, vec![(0, None)]);
        assert_eq!(
            stored("").keys().collect::<Vec<_>>(),
            vec!["max.connections"]
        );
        let refused = [
            (
                resource(
                    "",
                    &[("log.dirs", Some("/x")), ("max.connections", Some("1"))],
                ),
                42,
                "Cannot update these configs dynamically: Set(log.dirs)",
            ),
            (
                resource("0", &[("no.such.config", Some("1"))]),
                40,
                "no.such.config",
            ),
            (
                resource("0", &[("max.connections", None)]),
                42,
                "Null value not supported for : max.connections",
            ),
            (
                resource("", &[("max.connections", Some("0"))]),
                40,
                "max.connections",
            ),
            (
                resource("9", &[("max.connections", Some("5"))]),
                42,
                "expected 0, but received 9",
            ),
        ];
        for (res, code, text) in refused {
            let out = run(vec![res]).await;
            assert_eq!(out[0].0, code, "{out:?}");
            let message = out[0].1.clone().unwrap_or_default();
            assert!(message.contains(text), "{message}");
        }
        assert_eq!(
            stored("")["max.connections"],
            "60",
            "nothing refused was applied"
        );
    }
}
