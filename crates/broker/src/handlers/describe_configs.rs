//! DescribeConfigs: a topic's effective configs with where each value came
//! from, and the broker's static `log.*` defaults.
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
use crate::config::Config;
use crate::context::RequestContext;

/// Kafka's resource type codes (`org.apache.kafka.common.resource.ResourceType`).
pub(crate) const RESOURCE_TOPIC: i8 = 2;
pub(crate) const RESOURCE_BROKER: i8 = 4;

/// Kafka's `config_type` codes used by the broker entries.
const TYPE_BOOLEAN: i8 = 1;
const TYPE_INT: i8 = 3;
const TYPE_LONG: i8 = 5;

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

/// The effective topic configs, restricted to `keys` when given (unknown
/// keys are omitted, as Kafka does), in [`KNOWN`] order.
pub(crate) fn topic_entries(
    overrides: &TopicConfigs,
    broker_defaults: &TopicConfigs,
    keys: Option<&[String]>,
) -> Vec<ConfigEntry> {
    KNOWN
        .iter()
        .filter(|def| keys.is_none_or(|k| k.iter().any(|k| k == def.name)))
        .filter_map(|def| {
            let (value, source) = topic_config::effective(def.name, overrides, broker_defaults)?;
            let mut synonyms = Vec::with_capacity(3);
            if let Some(v) = overrides.get(def.name) {
                synonyms.push((def.name.to_owned(), v.clone(), ConfigSource::Topic));
            }
            let broker_name = broker_synonym(def.name).to_owned();
            if let Some(v) = broker_defaults.get(def.name) {
                synonyms.push((broker_name.clone(), v.clone(), ConfigSource::Broker));
            }
            synonyms.push((broker_name, def.default.to_owned(), ConfigSource::Default));
            Some(ConfigEntry {
                name: def.name,
                value: value.to_owned(),
                source,
                synonyms,
                def,
            })
        })
        .collect()
}

/// The broker's static settings: (name, value, config_type).
fn broker_entries(config: &Config) -> [(&'static str, String, i8); 7] {
    let (log, topics) = (&config.log, &config.topics);
    [
        ("log.retention.ms", log.retention_ms.to_string(), TYPE_LONG),
        (
            "log.retention.bytes",
            log.retention_bytes.to_string(),
            TYPE_LONG,
        ),
        ("log.segment.bytes", log.segment_bytes.to_string(), TYPE_INT),
        ("log.roll.ms", log.segment_ms.to_string(), TYPE_LONG),
        (
            "message.max.bytes",
            log.max_message_bytes.to_string(),
            TYPE_INT,
        ),
        (
            "num.partitions",
            topics.default_partitions.to_string(),
            TYPE_INT,
        ),
        (
            "auto.create.topics.enable",
            topics.auto_create.to_string(),
            TYPE_BOOLEAN,
        ),
    ]
}

fn broker_doc(name: &str) -> String {
    match name {
        "num.partitions" => "Partitions of topics created without a count.".into(),
        "auto.create.topics.enable" => "Create unknown topics when clients ask for them.".into(),
        _ => KNOWN
            .iter()
            .find(|d| broker_synonym(d.name) == name)
            .map(|d| format!("The default of topic config '{}'. {}", d.name, d.doc))
            .unwrap_or_default(),
    }
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
    let defaults = ctx.broker.topics.broker_defaults();
    Ok(topic_entries(&topic.configs, &defaults, wanted.keys)
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
        let message = format!("unexpected broker id '{name}': this is broker {node_id}");
        return Err((ResponseError::InvalidRequest, message));
    }
    Ok(broker_entries(&ctx.broker.config)
        .into_iter()
        .filter(|(n, ..)| wanted.keys.is_none_or(|k| k.iter().any(|k| k == n)))
        .map(|(n, value, config_type)| {
            let synonyms = wanted
                .synonyms
                .then(|| synonym(n.to_owned(), value.clone(), ConfigSource::Broker));
            DescribeConfigsResourceResult::default()
                .with_name(StrBytes::from_static_str(n))
                .with_value(Some(StrBytes::from_string(value)))
                .with_read_only(true)
                .with_config_source(ConfigSource::Broker.code())
                .with_synonyms(synonyms.into_iter().collect())
                .with_config_type(config_type)
                .with_documentation(wanted.docs.then(|| StrBytes::from_string(broker_doc(n))))
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

    #[test]
    fn synonyms_run_from_topic_to_broker_to_default() {
        let topic = configs(&[(topic_config::RETENTION_MS, "1000")]);
        let broker = configs(&[(topic_config::RETENTION_MS, "5000")]);
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
                ("log.retention.ms", "5000", ConfigSource::Broker),
                ("log.retention.ms", "604800000", ConfigSource::Default),
            ]
        );
    }

    #[test]
    fn without_overrides_the_source_is_the_broker_or_the_default() {
        let broker = configs(&[(topic_config::SEGMENT_BYTES, "1048576")]);
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
        let entries = topic_entries(&TopicConfigs::new(), &TopicConfigs::new(), Some(&keys));
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
        let broker = &resp.results[2].configs;
        assert_eq!(broker.len(), 7, "an empty key list means every config");
        assert!(broker.iter().all(|c| c.read_only && c.config_source == 4));
    }

    #[test]
    fn broker_entries_reflect_the_config() {
        let mut config = Config::default();
        config.log.retention_ms = 42;
        config.topics.default_partitions = 3;
        let entries = broker_entries(&config);
        let get = |n: &str| entries.iter().find(|e| e.0 == n).map(|e| e.1.clone());
        assert_eq!(get("log.retention.ms").as_deref(), Some("42"));
        assert_eq!(get("num.partitions").as_deref(), Some("3"));
        assert_eq!(get("auto.create.topics.enable").as_deref(), Some("false"));
        for (name, ..) in &entries {
            assert!(!broker_doc(name).is_empty(), "{name} is documented");
        }
    }
}
