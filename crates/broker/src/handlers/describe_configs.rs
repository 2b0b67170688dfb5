//! DescribeConfigs: a topic's effective configs with where each value came
//! from, and the broker's own configs (Kafka's BROKER resource: this node's
//! id for every config with its source, "" for the cluster-wide dynamic
//! defaults only), see [`crate::broker_configs`].
//!
//! [`topic_entries`] is the one place the describe-style list is built; the
//! CreateTopics response (v5+) reuses it.

use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult, DescribeConfigsSynonym,
};
use kafka_protocol::messages::{DescribeConfigsRequest, DescribeConfigsResponse};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use veil_meta::topic_config::{self, ConfigDef, ConfigSource, KNOWN};
use veil_meta::TopicConfigs;

use crate::auth::{Operation, ResourceType};
use crate::context::RequestContext;
use crate::state::BrokerState;

/// Kafka's resource type codes (`org.apache.kafka.common.resource.ResourceType`).
pub(crate) const RESOURCE_TOPIC: i8 = 2;
pub(crate) const RESOURCE_BROKER: i8 = 4;

/// One config as DescribeConfigs and CreateTopics report it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ConfigEntry {
    pub name: &'static str,
    pub value: String,
    pub source: ConfigSource,
    /// Every level that defines the config, most specific first (Kafka's
    /// order: topic override, broker setting, built-in default).
    pub synonyms: Vec<(String, String, ConfigSource)>,
    pub def: &'static ConfigDef,
}

/// The broker property a topic config falls back to (Kafka's
/// `ServerTopicConfigSynonyms`), used as the synonym name at broker level.
pub(crate) fn broker_synonym(topic_key: &str) -> &str {
    match topic_key {
        topic_config::RETENTION_MS => "log.retention.ms",
        topic_config::RETENTION_BYTES => "log.retention.bytes",
        topic_config::SEGMENT_BYTES => "log.segment.bytes",
        topic_config::SEGMENT_MS => "log.roll.ms",
        topic_config::MAX_MESSAGE_BYTES => "message.max.bytes",
        topic_config::CLEANUP_POLICY => "log.cleanup.policy",
        topic_config::MESSAGE_TIMESTAMP_TYPE => "log.message.timestamp.type",
        other => other,
    }
}

/// The broker-level topic defaults of this node as (topic key, value,
/// source), most specific level first.
pub(crate) fn topic_default_levels(broker: &BrokerState) -> Vec<(String, String, ConfigSource)> {
    crate::broker_configs::topic_defaults(&broker.config, &broker.broker_config_layers())
}

/// The effective topic configs, restricted to `keys` when given (unknown
/// keys are omitted, as Kafka does), in [`KNOWN`] order. `levels` are the
/// broker-level defaults from [`topic_default_levels`].
pub(crate) fn topic_entries(
    overrides: &TopicConfigs,
    levels: &[(String, String, ConfigSource)],
    keys: Option<&[String]>,
) -> Vec<ConfigEntry> {
    KNOWN
        .iter()
        .filter(|def| keys.is_none_or(|k| k.iter().any(|k| k == def.name)))
        .map(|def| {
            let mut synonyms = Vec::with_capacity(4);
            if let Some(v) = overrides.get(def.name) {
                synonyms.push((def.name.to_owned(), v.clone(), ConfigSource::Topic));
            }
            let broker_name = broker_synonym(def.name).to_owned();
            for (_, v, source) in levels.iter().filter(|(k, ..)| k == def.name) {
                synonyms.push((broker_name.clone(), v.clone(), *source));
            }
            synonyms.push((broker_name, def.default.to_owned(), ConfigSource::Default));
            let (_, value, source) = synonyms[0].clone();
            ConfigEntry {
                name: def.name,
                value,
                source,
                synonyms,
                def,
            }
        })
        .collect()
}

/// What a request asked to be included.
struct Wanted<'a> {
    keys: Option<&'a [String]>,
    synonyms: bool,
    docs: bool,
}

// Every handler is async so `dispatch` can await them alike.
pub async fn handle(ctx: &RequestContext, req: DescribeConfigsRequest) -> DescribeConfigsResponse {
    let results = req
        .resources
        .into_iter()
        .map(|res| {
            // Kafka treats an empty key list like a null one: everything.
            let keys: Option<Vec<String>> = res
                .configuration_keys
                .filter(|k| !k.is_empty())
                .map(|k| k.iter().map(ToString::to_string).collect());
            let wanted = Wanted {
                keys: keys.as_deref(),
                synonyms: req.include_synonyms,
                docs: ctx.api_version >= 3 && req.include_documentation,
            };
            // Kafka: DESCRIBE_CONFIGS on the topic, or on the cluster for a
            // broker, checked before existence.
            let denied = match res.resource_type {
                RESOURCE_TOPIC => (!ctx.authorize(
                    Operation::DescribeConfigs,
                    ResourceType::Topic,
                    &res.resource_name,
                ))
                .then_some(ResponseError::TopicAuthorizationFailed),
                RESOURCE_BROKER => (!ctx.authorize_cluster(Operation::DescribeConfigs))
                    .then_some(ResponseError::ClusterAuthorizationFailed),
                _ => None,
            };
            let outcome = match (denied, res.resource_type) {
                (Some(error), _) => Err((error, "Authorization failed.".into())),
                (None, RESOURCE_TOPIC) => describe_topic(ctx, &res.resource_name, &wanted),
                (None, RESOURCE_BROKER) => describe_broker(ctx, &res.resource_name, &wanted),
                (None, other) => Err((
                    ResponseError::InvalidRequest,
                    format!("resource type {other} is not supported; use TOPIC (2) or BROKER (4)"),
                )),
            };
            let result = DescribeConfigsResult::default()
                .with_resource_type(res.resource_type)
                .with_resource_name(res.resource_name);
            match outcome {
                Ok(configs) => result.with_configs(configs).with_error_message(None),
                Err((error, message)) => {
                    ctx.count(error.code());
                    result
                        .with_error_code(error.code())
                        .with_error_message(Some(StrBytes::from_string(message)))
                }
            }
        })
        .collect();
    DescribeConfigsResponse::default().with_results(results)
}

type Outcome = Result<Vec<DescribeConfigsResourceResult>, (ResponseError, String)>;

fn describe_topic(ctx: &RequestContext, name: &str, wanted: &Wanted) -> Outcome {
    let Some(topic) = ctx.visible_topic(name) else {
        let message = format!("topic '{name}' does not exist");
        return Err((ResponseError::UnknownTopicOrPartition, message));
    };
    let levels = topic_default_levels(&ctx.broker);
    Ok(topic_entries(&topic.configs, &levels, wanted.keys)
        .into_iter()
        .map(|e| {
            let synonyms = e.synonyms.into_iter().filter(|_| wanted.synonyms);
            DescribeConfigsResourceResult::default()
                .with_name(StrBytes::from_static_str(e.name))
                .with_value(Some(StrBytes::from_string(e.value)))
                .with_config_source(e.source.code())
                .with_synonyms(
                    synonyms
                        .map(|(n, v, source)| synonym(n, v, source))
                        .collect(),
                )
                .with_config_type(e.def.type_code)
                .with_documentation(wanted.docs.then(|| StrBytes::from_static_str(e.def.doc)))
        })
        .collect())
}

fn describe_broker(ctx: &RequestContext, name: &str, wanted: &Wanted) -> Outcome {
    let node_id = ctx.broker.node_id();
    if !name.is_empty() && name.parse::<i32>().ok() != Some(node_id) {
        let message = format!(
            "Unexpected broker id, expected {node_id} or empty string, but received {name}"
        );
        return Err((ResponseError::InvalidRequest, message));
    }
    let layers = ctx.broker.broker_config_layers();
    let entries = crate::broker_configs::describe(&ctx.broker.config, &layers, !name.is_empty());
    Ok(entries
        .into_iter()
        .filter(|e| wanted.keys.is_none_or(|k| k.iter().any(|k| k == e.name)))
        .map(|e| {
            let synonyms = e
                .synonyms
                .into_iter()
                .filter(|_| wanted.synonyms)
                .map(|(v, source)| synonym(e.name.to_owned(), v, source))
                .collect();
            DescribeConfigsResourceResult::default()
                .with_name(StrBytes::from_static_str(e.name))
                .with_value(Some(StrBytes::from_string(e.value)))
                .with_read_only(e.read_only)
                .with_config_source(e.source.code())
                .with_synonyms(synonyms)
                .with_config_type(e.type_code)
                .with_documentation(wanted.docs.then(|| StrBytes::from_string(e.doc)))
        })
        .collect())
}

fn synonym(name: String, value: String, source: ConfigSource) -> DescribeConfigsSynonym {
    DescribeConfigsSynonym::default()
        .with_name(StrBytes::from_string(name))
        .with_value(Some(StrBytes::from_string(value)))
        .with_source(source.code())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn configs(pairs: &[(&str, &str)]) -> TopicConfigs {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    /// Static broker-level defaults.
    fn levels(pairs: &[(&str, &str)]) -> Vec<(String, String, ConfigSource)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned(), ConfigSource::Broker))
            .collect()
    }

    #[test]
    fn synonyms_run_from_topic_to_broker_to_default() {
        let topic = configs(&[(topic_config::RETENTION_MS, "1000")]);
        let mut broker = levels(&[(topic_config::RETENTION_MS, "5000")]);
        broker.insert(
            0,
            (
                topic_config::RETENTION_MS.to_owned(),
                "3000".to_owned(),
                ConfigSource::DynamicDefault,
            ),
        );
        let keys = vec![topic_config::RETENTION_MS.to_owned()];
        let entries = topic_entries(&topic, &broker, Some(&keys));
        assert_eq!(entries.len(), 1);
        let e = &entries[0];
        assert_eq!((e.value.as_str(), e.source), ("1000", ConfigSource::Topic));
        let names: Vec<_> = e
            .synonyms
            .iter()
            .map(|(n, v, s)| (n.as_str(), v.as_str(), *s))
            .collect();
        assert_eq!(
            names,
            vec![
                ("retention.ms", "1000", ConfigSource::Topic),
                ("log.retention.ms", "3000", ConfigSource::DynamicDefault),
                ("log.retention.ms", "5000", ConfigSource::Broker),
                ("log.retention.ms", "604800000", ConfigSource::Default),
            ]
        );
    }

    #[test]
    fn without_overrides_the_source_is_the_broker_or_the_default() {
        let broker = levels(&[(topic_config::SEGMENT_BYTES, "1048576")]);
        let entries = topic_entries(&TopicConfigs::new(), &broker, None);
        assert_eq!(
            entries.len(),
            KNOWN.len(),
            "every known config is described"
        );
        let seg = entries
            .iter()
            .find(|e| e.name == topic_config::SEGMENT_BYTES)
            .unwrap();
        assert_eq!(
            (seg.value.as_str(), seg.source),
            ("1048576", ConfigSource::Broker)
        );
        assert_eq!(seg.synonyms[0].0, "log.segment.bytes");
        let policy = entries
            .iter()
            .find(|e| e.name == topic_config::CLEANUP_POLICY)
            .unwrap();
        assert_eq!(
            (policy.value.as_str(), policy.source),
            ("delete", ConfigSource::Default)
        );
        assert_eq!(policy.synonyms.len(), 1);
    }

    #[test]
    fn unknown_requested_keys_are_omitted() {
        let keys = vec![
            "no.such.config".to_owned(),
            topic_config::CLEANUP_POLICY.to_owned(),
        ];
        let entries = topic_entries(&TopicConfigs::new(), &[], Some(&keys));
        let names: Vec<_> = entries.iter().map(|e| e.name).collect();
        assert_eq!(names, vec![topic_config::CLEANUP_POLICY]);
    }

    #[tokio::test]
    async fn describes_topics_and_this_broker() {
        use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;

        use crate::test_fixture as fixture;

        let (_dir, ctx) = fixture::context(4).await;
        let overrides = configs(&[(topic_config::RETENTION_MS, "5")]);
        let cmd = ctx
            .broker
            .create_topic_command("t", 1, 1, overrides)
            .unwrap();
        ctx.broker.commit(cmd).await.unwrap();
        let resource = |kind, name: &'static str, keys: Option<&[&'static str]>| {
            DescribeConfigsResource::default()
                .with_resource_type(kind)
                .with_resource_name(StrBytes::from_static_str(name))
                .with_configuration_keys(
                    keys.map(|k| k.iter().map(|k| StrBytes::from_static_str(k)).collect()),
                )
        };
        let req = DescribeConfigsRequest::default()
            .with_include_synonyms(true)
            .with_include_documentation(true)
            .with_resources(vec![
                resource(RESOURCE_TOPIC, "t", Some(&[topic_config::RETENTION_MS])),
                resource(RESOURCE_TOPIC, "missing", None),
                resource(RESOURCE_BROKER, "", Some(&[])),
                resource(RESOURCE_BROKER, "7", None),
                resource(8, "0", None),
            ]);
        let resp = handle(&ctx, req).await;
        fixture::encodes(&resp, 1..=4);
        let codes: Vec<i16> = resp.results.iter().map(|r| r.error_code).collect();
        assert_eq!(codes, vec![0, 3, 0, 42, 42]);
        let retention = &resp.results[0].configs;
        assert_eq!(retention.len(), 1);
        assert_eq!(retention[0].value.as_deref(), Some("5"));
        assert_eq!(retention[0].config_source, 1);
        let sources: Vec<i8> = retention[0].synonyms.iter().map(|s| s.source).collect();
        assert_eq!(
            sources,
            vec![1, 4, 5],
            "topic, broker (log.retention_ms), default"
        );
        assert!(retention[0].documentation.is_some());
        assert!(
            resp.results[2].configs.is_empty(),
            "the cluster default shows only what is set there: nothing yet"
        );
        let message = resp.results[3].error_message.as_deref().unwrap_or("");
        assert_eq!(
            message,
            "Unexpected broker id, expected 0 or empty string, but received 7"
        );
        let req = DescribeConfigsRequest::default()
            .with_include_synonyms(true)
            .with_resources(vec![resource(RESOURCE_BROKER, "0", None)]);
        let resp = handle(&ctx, req).await;
        let broker = &resp.results[0].configs;
        assert!(broker.len() > 30, "every broker config: {}", broker.len());
        let get = |n: &str| broker.iter().find(|c| c.name.as_str() == n).unwrap();
        let listeners = get("listeners");
        assert!(listeners.read_only);
        assert_eq!(listeners.config_source, 5, "the built-in listener");
        let dirs = get("log.dirs");
        assert_eq!(
            (dirs.read_only, dirs.config_source),
            (true, 4),
            "the fixture's own data dir"
        );
        assert!(!get("max.connections").read_only);
    }
}
