//! IncrementalAlterConfigs (KIP-339): SET, DELETE, APPEND and SUBTRACT on
//! single topic configs, leaving the others alone; SET and DELETE on the
//! dynamic configs of a BROKER resource ("" for every node, or this node's
//! id), which is what `kafka-configs --entity-type brokers` sends.
//!
//! APPEND and SUBTRACT apply to list-type configs only (here
//! `cleanup.policy`); on other configs they are INVALID_CONFIG, with Kafka's
//! message. The list they edit is the effective value (override, else broker
//! default, else built-in), as in Kafka.

use kafka_protocol::messages::incremental_alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::{IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse};
use kafka_protocol::ResponseError;
use veil_meta::topic_config;
use veil_meta::{MetaCommand, TopicConfigs};

use super::alter_configs::{
    apply, authorize_alter, check_resource, duplicate_key, error_parts, null_values, repeated,
    Failure,
};
use super::describe_configs::RESOURCE_BROKER;
use crate::context::RequestContext;

const SET: i8 = 0;
const DELETE: i8 = 1;
const APPEND: i8 = 2;
const SUBTRACT: i8 = 3;
/// Kafka's `config_type` code of LIST configs.
const TYPE_LIST: i8 = 7;

/// The keys to set and to remove once every operation of a resource applies.
#[derive(Debug, Default, PartialEq, Eq)]
struct Change {
    set: TopicConfigs,
    remove: Vec<String>,
}

fn invalid_request(message: String) -> Failure {
    (ResponseError::InvalidRequest, message)
}

fn split_list(value: &str) -> impl Iterator<Item = &str> {
    value.split(',').map(str::trim).filter(|s| !s.is_empty())
}

/// Turns `(name, operation, value)` triples into a change, or the first error.
fn plan(
    ops: &[(&str, i8, Option<&str>)],
    current: &TopicConfigs,
    broker_defaults: &TopicConfigs,
) -> Result<Change, Failure> {
    if duplicate_key(ops.iter().map(|op| op.0)).is_some() {
        return Err(invalid_request("Error due to duplicate config keys".into()));
    }
    let mut change = Change::default();
    for &(name, op, value) in ops {
        if op == DELETE {
            change.remove.push(name.to_owned());
            continue;
        }
        if !matches!(op, SET | APPEND | SUBTRACT) {
            return Err(invalid_request(format!(
                "unknown config operation {op} for '{name}'"
            )));
        }
        let Some(value) = value else {
            return Err(invalid_request(format!(
                "Null value not supported for : {name}"
            )));
        };
        if op == SET {
            change.set.insert(name.to_owned(), value.to_owned());
            continue;
        }
        let Some(def) = topic_config::definition(name) else {
            return Err((
                ResponseError::InvalidConfig,
                format!("unknown topic config '{name}'"),
            ));
        };
        if def.type_code != TYPE_LIST {
            let verb = if op == APPEND { "append" } else { "subtract" };
            return Err((
                ResponseError::InvalidConfig,
                format!("Config value {verb} is not allowed for config key: {name}"),
            ));
        }
        let existing =
            topic_config::effective(name, current, broker_defaults).map_or("", |(v, _)| v);
        let mut items: Vec<&str> = split_list(existing).collect();
        for item in split_list(value) {
            if op == APPEND && !items.contains(&item) {
                items.push(item);
            } else if op == SUBTRACT {
                items.retain(|i| *i != item);
            }
        }
        change.set.insert(name.to_owned(), items.join(","));
    }
    Ok(change)
}

/// A broker resource's change: SET and DELETE of dynamic configs (none is
/// a list, so APPEND and SUBTRACT are INVALID_CONFIG, as in Kafka).
fn broker_change(target: &str, ops: &[(&str, i8, Option<&str>)]) -> Result<MetaCommand, Failure> {
    if duplicate_key(ops.iter().map(|op| op.0)).is_some() {
        return Err(invalid_request("Error due to duplicate config keys".into()));
    }
    null_values(
        ops.iter()
            .map(|&(k, op, v)| (k, op == DELETE || v.is_some())),
    )?;
    crate::broker_configs::check_alterable(ops.iter().map(|op| op.0))?;
    let mut change = Change::default();
    for &(name, op, value) in ops {
        match (op, value) {
            (SET, Some(v)) => {
                change.set.insert(name.to_owned(), v.to_owned());
            }
            (DELETE, _) => change.remove.push(name.to_owned()),
            (APPEND | SUBTRACT, _) => {
                return Err((
                    ResponseError::InvalidConfig,
                    format!(
                        "Can't {} to key {name} because its type is not LIST.",
                        if op == APPEND { "APPEND" } else { "SUBTRACT" }
                    ),
                ))
            }
            _ => {
                return Err(invalid_request(format!(
                    "unknown config operation {op} for '{name}'"
                )))
            }
        }
    }
    Ok(MetaCommand::UpdateBrokerConfigs {
        target: target.to_owned(),
        set: change.set,
        remove: change.remove,
    })
}

pub async fn handle(
    ctx: &RequestContext,
    req: IncrementalAlterConfigsRequest,
) -> IncrementalAlterConfigsResponse {
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
            let ops: Vec<(&str, i8, Option<&str>)> = resource
                .configs
                .iter()
                .map(|c| (c.name.as_str(), c.config_operation, c.value.as_deref()))
                .collect();
            if resource.resource_type == RESOURCE_BROKER {
                let cmd = broker_change(name, &ops)?;
                return apply(ctx, cmd, req.validate_only).await;
            }
            let current = ctx
                .broker
                .with_meta(|s| s.topic(name).map(|t| t.configs.clone()))
                .filter(|_| ctx.blind_visible(name))
                .ok_or_else(|| {
                    (
                        ResponseError::UnknownTopicOrPartition,
                        format!("topic '{name}' does not exist"),
                    )
                })?;
            let change = plan(&ops, &current, &ctx.broker.topics.broker_defaults())?;
            let cmd = MetaCommand::UpdateTopicConfigs {
                name: name.to_owned(),
                set: change.set,
                remove: change.remove,
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
    IncrementalAlterConfigsResponse::default().with_responses(responses)
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: &str = topic_config::CLEANUP_POLICY;
    const RETENTION: &str = topic_config::RETENTION_MS;

    fn none() -> TopicConfigs {
        TopicConfigs::new()
    }

    #[tokio::test]
    async fn updates_only_the_named_keys() {
        use kafka_protocol::messages::incremental_alter_configs_request::{
            AlterConfigsResource, AlterableConfig,
        };
        use kafka_protocol::protocol::StrBytes;

        use crate::test_fixture as fixture;

        let (_dir, ctx) = fixture::context(1).await;
        let configs: TopicConfigs = [(RETENTION.to_owned(), "5".to_owned())].into();
        let cmd = ctx.broker.create_topic_command("t", 1, 1, configs).unwrap();
        ctx.broker.commit(cmd).await.unwrap();
        let resource =
            |kind, name: &'static str, ops: &[(&'static str, i8, Option<&'static str>)]| {
                let configs = ops
                    .iter()
                    .map(|&(key, op, value)| {
                        AlterableConfig::default()
                            .with_name(StrBytes::from_static_str(key))
                            .with_config_operation(op)
                            .with_value(value.map(StrBytes::from_static_str))
                    })
                    .collect();
                AlterConfigsResource::default()
                    .with_resource_type(kind)
                    .with_resource_name(StrBytes::from_static_str(name))
                    .with_configs(configs)
            };
        let run = |resources, validate_only| {
            let req = IncrementalAlterConfigsRequest::default()
                .with_resources(resources)
                .with_validate_only(validate_only);
            let ctx = ctx.clone();
            async move {
                let resp = handle(&ctx, req).await;
                fixture::encodes(&resp, 0..=1);
                resp.responses
                    .iter()
                    .map(|r| r.error_code)
                    .collect::<Vec<_>>()
            }
        };
        let overrides = || {
            ctx.broker
                .with_meta(|s| s.topic("t").unwrap().configs.clone())
        };
        let set_segment = [("segment.ms", SET, Some("1000")), (RETENTION, DELETE, None)];
        let codes = run(
            vec![
                resource(2, "t", &set_segment),
                resource(4, "0", &set_segment),
            ],
            false,
        );
        assert_eq!(
            codes.await,
            vec![0, 40],
            "topic configs are unknown broker configs"
        );
        let expected: TopicConfigs = [("segment.ms".to_owned(), "1000".to_owned())].into();
        assert_eq!(overrides(), expected);
        let codes = run(vec![resource(2, "t", &[(RETENTION, SET, Some("7"))])], true).await;
        assert_eq!(
            (codes, overrides()),
            (vec![0], expected.clone()),
            "validate only"
        );
        let codes = run(
            vec![
                resource(2, "t", &[(RETENTION, APPEND, Some("1"))]),
                resource(2, "t", &[(RETENTION, SET, Some("-5"))]),
                resource(2, "u", &[(RETENTION, SET, Some("1"))]),
            ],
            false,
        );
        assert_eq!(
            codes.await,
            vec![42, 42, 3],
            "a repeated resource fails every occurrence"
        );
        let codes = run(
            vec![resource(2, "t", &[(RETENTION, SET, Some("-5"))])],
            false,
        )
        .await;
        assert_eq!((codes, overrides()), (vec![40], expected));
    }

    #[tokio::test]
    async fn broker_defaults_and_overrides_take_effect_and_describe_with_their_source() {
        use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
        use kafka_protocol::messages::incremental_alter_configs_request::{
            AlterConfigsResource, AlterableConfig,
        };
        use kafka_protocol::messages::DescribeConfigsRequest;
        use kafka_protocol::protocol::StrBytes;

        use crate::test_fixture as fixture;

        let (_dir, ctx) = fixture::context(1).await;
        fixture::create_topic(&ctx, "t", 1).await;
        let alter = |name: &'static str, ops: Vec<(&'static str, i8, Option<&'static str>)>| {
            let configs = ops
                .into_iter()
                .map(|(k, op, v)| {
                    AlterableConfig::default()
                        .with_name(StrBytes::from_static_str(k))
                        .with_config_operation(op)
                        .with_value(v.map(StrBytes::from_static_str))
                })
                .collect();
            let req = IncrementalAlterConfigsRequest::default().with_resources(vec![
                AlterConfigsResource::default()
                    .with_resource_type(4)
                    .with_resource_name(StrBytes::from_static_str(name))
                    .with_configs(configs),
            ]);
            let ctx = ctx.clone();
            async move {
                let r = handle(&ctx, req).await.responses.remove(0);
                (r.error_code, r.error_message.map(|m| m.to_string()))
            }
        };
        let describe = |kind: i8, name: &'static str, key: &'static str| {
            let req = DescribeConfigsRequest::default()
                .with_include_synonyms(true)
                .with_resources(vec![DescribeConfigsResource::default()
                    .with_resource_type(kind)
                    .with_resource_name(StrBytes::from_static_str(name))
                    .with_configuration_keys(Some(vec![StrBytes::from_static_str(key)]))]);
            let ctx = ctx.clone();
            async move {
                let mut r = super::super::describe_configs::handle(&ctx, req).await;
                let result = r.results.remove(0);
                result
                    .configs
                    .into_iter()
                    .next()
                    .map(|c| (c.value.map(|v| v.to_string()), c.config_source, c.read_only))
            }
        };
        // kafka-configs --entity-type brokers --entity-default --alter --add-config
        let set = vec![
            ("log.retention.ms", SET, Some("5000")),
            ("max.connections", SET, Some("77")),
            ("max.connections.per.ip", SET, Some("5")),
            ("connections.max.reauth.ms", SET, Some("60000")),
            ("log.flush.interval.ms", SET, Some("250")),
        ];
        assert_eq!(alter("", set).await, (0, None));
        let b = &ctx.broker;
        assert_eq!(b.connection_limits.limits().total, 77);
        assert_eq!(b.connection_limits.limits().per_ip, 5);
        assert_eq!(
            b.sasl.max_reauth(),
            Some(std::time::Duration::from_secs(60))
        );
        assert_eq!(*b.flush_interval().borrow(), 250);
        assert_eq!(b.topics.broker_defaults()["retention.ms"], "5000");
        assert_eq!(
            describe(4, "", "max.connections").await,
            Some((Some("77".into()), 3, false))
        );
        assert_eq!(
            describe(2, "t", "retention.ms").await,
            Some((Some("5000".into()), 3, false)),
            "a topic without an override shows the dynamic default"
        );
        // This node's own value wins over the cluster's.
        assert_eq!(
            alter("0", vec![("max.connections", SET, Some("66"))]).await,
            (0, None)
        );
        assert_eq!(b.connection_limits.limits().total, 66);
        assert_eq!(
            describe(4, "0", "max.connections").await,
            Some((Some("66".into()), 2, false))
        );
        // Deleting both falls back to the config file.
        assert_eq!(
            alter("0", vec![("max.connections", DELETE, None)]).await,
            (0, None)
        );
        assert_eq!(
            alter("", vec![("max.connections", DELETE, None)]).await,
            (0, None)
        );
        assert_eq!(
            b.connection_limits.limits().total,
            b.config.network.max_connections
        );
        assert_eq!(describe(4, "", "max.connections").await, None);
        assert_eq!(
            describe(4, "0", "max.connections").await.map(|d| d.1),
            Some(5)
        );
        // Static keys, unknown keys, lists and nulls.
        let (code, message) = alter("", vec![("num.partitions", SET, Some("3"))]).await;
        assert_eq!(
            (code, message.as_deref()),
            (
                42,
                Some("Cannot update these configs dynamically: Set(num.partitions)")
            )
        );
        assert_eq!(
            alter("", vec![("retention.ms", SET, Some("1"))]).await.0,
            40
        );
        assert_eq!(
            alter("", vec![("max.connections", APPEND, Some("1"))])
                .await
                .0,
            40
        );
        assert_eq!(alter("", vec![("max.connections", SET, None)]).await.0, 42);
        assert_eq!(
            alter("", vec![("max.connections", SET, Some("-3"))])
                .await
                .0,
            40
        );
        assert_eq!(
            alter("1", vec![("max.connections", SET, Some("3"))])
                .await
                .0,
            42
        );
    }

    #[test]
    fn set_and_delete_become_one_update() {
        let change = plan(
            &[(RETENTION, SET, Some("5")), ("segment.ms", DELETE, None)],
            &none(),
            &none(),
        )
        .unwrap();
        assert_eq!(change.set.get(RETENTION).map(String::as_str), Some("5"));
        assert_eq!(change.remove, vec!["segment.ms".to_owned()]);
    }

    #[test]
    fn duplicate_keys_null_values_and_unknown_operations_are_invalid_requests() {
        let dup = plan(
            &[(RETENTION, SET, Some("1")), (RETENTION, DELETE, None)],
            &none(),
            &none(),
        );
        assert_eq!(dup.unwrap_err().0, ResponseError::InvalidRequest);
        let null = plan(&[(RETENTION, SET, None)], &none(), &none()).unwrap_err();
        assert_eq!(null.0, ResponseError::InvalidRequest);
        assert!(null.1.contains(RETENTION), "{}", null.1);
        assert_eq!(
            plan(&[(RETENTION, 9, Some("1"))], &none(), &none())
                .unwrap_err()
                .0,
            ResponseError::InvalidRequest
        );
    }

    #[test]
    fn append_and_subtract_only_apply_to_lists() {
        let (error, message) =
            plan(&[(RETENTION, APPEND, Some("1"))], &none(), &none()).unwrap_err();
        assert_eq!(error, ResponseError::InvalidConfig);
        assert_eq!(
            message,
            "Config value append is not allowed for config key: retention.ms"
        );
        let unknown = plan(&[("nope", SUBTRACT, Some("x"))], &none(), &none()).unwrap_err();
        assert_eq!(unknown.0, ResponseError::InvalidConfig);
    }

    #[test]
    fn list_edits_start_from_the_effective_value() {
        // The default is "delete": appending it again is a no-op, appending
        // another policy yields a list the state machine then validates.
        let change = plan(&[(POLICY, APPEND, Some("delete"))], &none(), &none()).unwrap();
        assert_eq!(change.set[POLICY], "delete");
        let change = plan(&[(POLICY, APPEND, Some("compact"))], &none(), &none()).unwrap();
        assert_eq!(change.set[POLICY], "delete,compact");
        let current: TopicConfigs = [(POLICY.to_owned(), "delete,compact".to_owned())].into();
        let change = plan(
            &[(POLICY, SUBTRACT, Some("compact, other"))],
            &current,
            &none(),
        )
        .unwrap();
        assert_eq!(change.set[POLICY], "delete");
        let change = plan(&[(POLICY, SUBTRACT, Some("delete"))], &none(), &none()).unwrap();
        assert_eq!(change.set[POLICY], "");
    }
}
