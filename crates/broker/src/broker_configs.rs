//! The broker's settings as Kafka's BROKER config resource: each one's
//! Kafka name, whether it may change while the broker runs (the keys of
//! `veil_meta::broker_config::DYNAMIC`), and its effective value with where
//! it came from, most specific first: set for this node in the metadata
//! (DYNAMIC_BROKER_CONFIG), set for every node (DYNAMIC_DEFAULT_BROKER_CONFIG),
//! the config file (STATIC_BROKER_CONFIG) or built in (DEFAULT_CONFIG).
//!
//! [`describe`] lists them for DescribeConfigs, [`check_alterable`] says
//! which keys an alter may touch, and [`effective`] is what the dynamic ones
//! amount to, which `BrokerState::apply_dynamic_configs` puts in force.

use std::collections::BTreeMap;

use kafka_protocol::ResponseError;
use veil_meta::broker_config as dynamic;
use veil_meta::topic_config::ConfigSource;
use veil_meta::{MetaState, TopicConfigs};

use crate::config::Config;
use crate::connection_limits::Limits;

/// Kafka's `config_type` codes.
const BOOLEAN: i8 = 1;
const STRING: i8 = 2;
const INT: i8 = 3;
const LONG: i8 = 5;
const DOUBLE: i8 = 6;
const LIST: i8 = 7;

/// The dynamic configs stored in the metadata for one node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Layers {
    /// Set for this node (resource name = its id).
    pub node: BTreeMap<String, String>,
    /// Set for every node (resource name "").
    pub cluster: BTreeMap<String, String>,
}

impl Layers {
    pub fn read(state: &MetaState, node_id: i32) -> Layers {
        Layers {
            node: state
                .broker_configs(&node_id.to_string())
                .cloned()
                .unwrap_or_default(),
            cluster: state.broker_configs("").cloned().unwrap_or_default(),
        }
    }

    /// The dynamic value of `name` and its source, if one is set.
    fn dynamic(&self, name: &str) -> Option<(&str, ConfigSource)> {
        if let Some(v) = self.node.get(name) {
            return Some((v, ConfigSource::DynamicBroker));
        }
        self.cluster
            .get(name)
            .map(|v| (v.as_str(), ConfigSource::DynamicDefault))
    }
}

/// One broker setting under its Kafka name.
struct Setting {
    name: &'static str,
    type_code: i8,
    doc: &'static str,
    value: fn(&Config) -> String,
}

fn listeners(c: &Config, advertised: bool) -> String {
    c.listeners
        .iter()
        .map(|l| {
            let addr = match (&l.advertised, advertised) {
                (Some(a), true) => a.clone(),
                _ => l.bind.to_string(),
            };
            format!("{}://{addr}", l.name)
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// Every setting the BROKER resource shows, in a stable order. The dynamic
/// ones take their static value from here too.
#[rustfmt::skip]
const SETTINGS: &[Setting] = &[
    Setting { name: "node.id", type_code: INT, doc: "This node's id (node_id).", value: |c| c.node_id.to_string() },
    Setting { name: "broker.id", type_code: INT, doc: "This node's id (node_id).", value: |c| c.node_id.to_string() },
    Setting { name: "log.dirs", type_code: LIST, doc: "Where logs and metadata live (data_dir).", value: |c| c.data_dir.display().to_string() },
    Setting { name: "listeners", type_code: LIST, doc: "Client listeners ([[listeners]] bind).", value: |c| listeners(c, false) },
    Setting { name: "advertised.listeners", type_code: LIST, doc: "What clients are told to dial ([[listeners]] advertised).", value: |c| listeners(c, true) },
    Setting { name: "broker.rack", type_code: STRING, doc: "This node's rack (cluster.rack).", value: |c| c.cluster.rack.clone().unwrap_or_default() },
    Setting { name: "controller.quorum.voters", type_code: LIST, doc: "The metadata quorum's voters (cluster.voters).", value: |c| c.cluster.voters.join(",") },
    Setting { name: "controller.quorum.election.timeout.ms", type_code: INT, doc: "cluster.election_timeout_ms.", value: |c| c.cluster.election_timeout_ms.to_string() },
    Setting { name: "broker.heartbeat.interval.ms", type_code: INT, doc: "cluster.heartbeat_interval_ms.", value: |c| c.cluster.heartbeat_interval_ms.to_string() },
    Setting { name: "broker.session.timeout.ms", type_code: INT, doc: "cluster.session_timeout_ms.", value: |c| c.cluster.session_timeout_ms.to_string() },
    Setting { name: "num.partitions", type_code: INT, doc: "Partitions of topics created without a count (topics.default_partitions).", value: |c| c.topics.default_partitions.to_string() },
    Setting { name: "default.replication.factor", type_code: INT, doc: "Replicas of topics created without a replication factor (topics.default_replication_factor).", value: |c| c.topics.default_replication_factor.to_string() },
    Setting { name: "auto.create.topics.enable", type_code: BOOLEAN, doc: "Create unknown topics when clients ask for them (topics.auto_create).", value: |c| c.topics.auto_create.to_string() },
    Setting { name: dynamic::LOG_RETENTION_MS, type_code: LONG, doc: "log.retention_ms.", value: |c| c.log.retention_ms.to_string() },
    Setting { name: dynamic::LOG_RETENTION_BYTES, type_code: LONG, doc: "log.retention_bytes.", value: |c| c.log.retention_bytes.to_string() },
    Setting { name: dynamic::LOG_SEGMENT_BYTES, type_code: INT, doc: "log.segment_bytes.", value: |c| c.log.segment_bytes.to_string() },
    Setting { name: dynamic::LOG_ROLL_MS, type_code: LONG, doc: "log.segment_ms.", value: |c| c.log.segment_ms.to_string() },
    Setting { name: dynamic::MESSAGE_MAX_BYTES, type_code: INT, doc: "log.max_message_bytes.", value: |c| c.log.max_message_bytes.to_string() },
    Setting { name: dynamic::MIN_INSYNC_REPLICAS, type_code: INT, doc: "The topic default.", value: |_| "1".into() },
    Setting { name: dynamic::UNCLEAN_LEADER_ELECTION, type_code: BOOLEAN, doc: "The topic default.", value: |_| "false".into() },
    Setting { name: dynamic::LOG_FLUSH_INTERVAL_MS, type_code: LONG, doc: "log.flush_interval_ms.", value: |c| c.log.flush_interval_ms.to_string() },
    Setting { name: "log.flush.offset.checkpoint.interval.ms", type_code: INT, doc: "log.flush_offset_checkpoint_interval_ms.", value: |c| c.log.flush_offset_checkpoint_interval_ms.to_string() },
    Setting { name: "log.retention.check.interval.ms", type_code: LONG, doc: "log.retention_check_interval_ms.", value: |c| c.log.retention_check_interval_ms.to_string() },
    Setting { name: "log.cleaner.enable", type_code: BOOLEAN, doc: "log.cleaner.enabled.", value: |c| c.log.cleaner.enabled.to_string() },
    Setting { name: "log.cleaner.backoff.ms", type_code: LONG, doc: "log.cleaner.backoff_ms.", value: |c| c.log.cleaner.backoff_ms.to_string() },
    Setting { name: "log.cleaner.dedupe.buffer.size", type_code: LONG, doc: "log.cleaner.dedupe_buffer_size.", value: |c| c.log.cleaner.dedupe_buffer_size.to_string() },
    Setting { name: "log.cleaner.io.max.bytes.per.second", type_code: DOUBLE, doc: "log.cleaner.io_max_bytes_per_second (0: unlimited).", value: |c| c.log.cleaner.io_max_bytes_per_second.to_string() },
    Setting { name: "log.index.interval.bytes", type_code: INT, doc: "log.index_interval_bytes.", value: |c| c.log.index_interval_bytes.to_string() },
    Setting { name: dynamic::MAX_CONNECTIONS, type_code: INT, doc: "network.max_connections (client listeners; the inter-node listener is not counted).", value: |c| c.network.max_connections.to_string() },
    Setting { name: dynamic::MAX_CONNECTIONS_PER_IP, type_code: INT, doc: "network.max_connections_per_ip.", value: |c| c.network.max_connections_per_ip.to_string() },
    Setting { name: dynamic::MAX_CONNECTIONS_PER_IP_OVERRIDES, type_code: STRING, doc: "network.max_connections_per_ip_overrides.", value: |c| c.network.max_connections_per_ip_overrides.clone() },
    Setting { name: "socket.request.max.bytes", type_code: INT, doc: "network.max_request_bytes.", value: |c| c.network.max_request_bytes.to_string() },
    Setting { name: "connections.max.idle.ms", type_code: LONG, doc: "network.idle_timeout_ms.", value: |c| c.network.idle_timeout_ms.to_string() },
    Setting { name: "fetch.max.bytes", type_code: INT, doc: "network.fetch_max_bytes.", value: |c| c.network.fetch_max_bytes.to_string() },
    Setting { name: "replica.fetch.max.bytes", type_code: INT, doc: "network.replica_fetch_max_bytes.", value: |c| c.network.replica_fetch_max_bytes.to_string() },
    Setting { name: "replica.fetch.response.max.bytes", type_code: INT, doc: "network.replica_fetch_response_max_bytes.", value: |c| c.network.replica_fetch_response_max_bytes.to_string() },
    Setting { name: dynamic::CONNECTIONS_MAX_REAUTH_MS, type_code: LONG, doc: "sasl.max_reauth_ms.", value: |c| c.sasl.max_reauth_ms.to_string() },
    Setting { name: "sasl.server.max.receive.size", type_code: INT, doc: "sasl.server_max_receive_size.", value: |c| c.sasl.server_max_receive_size.to_string() },
    Setting { name: "super.users", type_code: LIST, doc: "authorizer.super_users.", value: |c| c.authorizer.super_users.join(";") },
    Setting { name: "allow.everyone.if.no.acl.found", type_code: BOOLEAN, doc: "authorizer.allow_everyone_if_no_acl_found.", value: |c| c.authorizer.allow_everyone_if_no_acl_found.to_string() },
    Setting { name: "group.initial.rebalance.delay.ms", type_code: INT, doc: "groups.initial_rebalance_delay_ms.", value: |c| c.groups.initial_rebalance_delay_ms.to_string() },
    Setting { name: "group.min.session.timeout.ms", type_code: INT, doc: "groups.min_session_timeout_ms.", value: |c| c.groups.min_session_timeout_ms.to_string() },
    Setting { name: "group.max.session.timeout.ms", type_code: INT, doc: "groups.max_session_timeout_ms.", value: |c| c.groups.max_session_timeout_ms.to_string() },
    Setting { name: "offsets.retention.minutes", type_code: INT, doc: "groups.offsets_retention_minutes.", value: |c| c.groups.offsets_retention_minutes.to_string() },
    Setting { name: "offset.metadata.max.bytes", type_code: INT, doc: "groups.offset_metadata_max_bytes.", value: |c| c.groups.offset_metadata_max_bytes.to_string() },
    Setting { name: "offsets.topic.num.partitions", type_code: INT, doc: "groups.offsets_topic_partitions.", value: |c| c.groups.offsets_topic_partitions.to_string() },
    Setting { name: "offsets.topic.replication.factor", type_code: INT, doc: "groups.offsets_topic_replication_factor.", value: |c| c.groups.offsets_topic_replication_factor.to_string() },
];

fn setting(name: &str) -> Option<&'static Setting> {
    SETTINGS.iter().find(|s| s.name == name)
}

/// One config as DescribeConfigs reports it on a BROKER resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub name: &'static str,
    pub value: String,
    pub source: ConfigSource,
    /// Static: cannot be changed without a restart.
    pub read_only: bool,
    pub type_code: i8,
    pub doc: String,
    /// Every level that defines it, most specific first.
    pub synonyms: Vec<(String, ConfigSource)>,
}

/// The static level of a setting: the file's value, or the built-in one
/// when the file leaves it alone. A value equal to the built-in default is
/// reported as DEFAULT_CONFIG: the merged config cannot tell the two apart.
fn static_level(s: &Setting, config: &Config, defaults: &Config) -> Vec<(String, ConfigSource)> {
    let built_in = (s.value)(defaults);
    let value = (s.value)(config);
    if value == built_in {
        vec![(built_in, ConfigSource::Default)]
    } else {
        vec![
            (value, ConfigSource::Broker),
            (built_in, ConfigSource::Default),
        ]
    }
}

fn doc(s: &Setting) -> String {
    match dynamic::definition(s.name) {
        Some(d) => format!("{} Veil: {}", d.doc, s.doc),
        None => format!("Static; edit the config file and restart. Veil: {}", s.doc),
    }
}

/// The BROKER resource's configs: for a node (`per_broker`) every setting;
/// for the cluster default ("") only the keys set there, as Kafka does.
pub fn describe(config: &Config, layers: &Layers, per_broker: bool) -> Vec<Entry> {
    let defaults = Config::default();
    SETTINGS
        .iter()
        .filter(|s| per_broker || layers.cluster.contains_key(s.name))
        .map(|s| {
            let mut synonyms = Vec::with_capacity(4);
            if per_broker {
                if let Some(v) = layers.node.get(s.name) {
                    synonyms.push((v.clone(), ConfigSource::DynamicBroker));
                }
            }
            if let Some(v) = layers.cluster.get(s.name) {
                synonyms.push((v.clone(), ConfigSource::DynamicDefault));
            }
            synonyms.extend(static_level(s, config, &defaults));
            let (value, source) = synonyms[0].clone();
            Entry {
                name: s.name,
                value,
                source,
                read_only: dynamic::definition(s.name).is_none(),
                type_code: s.type_code,
                doc: doc(s),
                synonyms,
            }
        })
        .collect()
}

/// Whether an alter may set or remove these keys: Kafka's INVALID_REQUEST
/// naming the static ones, else INVALID_CONFIG naming the unknown ones.
pub fn check_alterable<'a>(
    keys: impl IntoIterator<Item = &'a str>,
) -> Result<(), (ResponseError, String)> {
    let keys: Vec<&str> = keys.into_iter().collect();
    let fixed: Vec<&str> = keys
        .iter()
        .copied()
        .filter(|k| dynamic::definition(k).is_none() && setting(k).is_some())
        .collect();
    if !fixed.is_empty() {
        return Err((
            ResponseError::InvalidRequest,
            format!(
                "Cannot update these configs dynamically: Set({})",
                fixed.join(", ")
            ),
        ));
    }
    match keys.iter().find(|k| dynamic::definition(k).is_none()) {
        Some(k) => Err((
            ResponseError::InvalidConfig,
            format!("Unknown broker config '{k}'"),
        )),
        None => Ok(()),
    }
}

/// The broker-level topic defaults, each with where it came from: this
/// node's dynamic value, the cluster's, the config file's (topic key,
/// value, source), most specific level first.
pub fn topic_defaults(config: &Config, layers: &Layers) -> Vec<(String, String, ConfigSource)> {
    let mut out = Vec::new();
    for (level, source) in [
        (&layers.node, ConfigSource::DynamicBroker),
        (&layers.cluster, ConfigSource::DynamicDefault),
    ] {
        for (k, v) in level {
            if let Some(t) = dynamic::topic_config_for(k) {
                out.push((t.to_owned(), v.clone(), source));
            }
        }
    }
    for (k, v) in config.log.topic_defaults() {
        out.push((k, v, ConfigSource::Broker));
    }
    out
}

/// What the dynamic configs amount to on this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Effective {
    /// Broker-level topic defaults (topic config names).
    pub topic_defaults: TopicConfigs,
    pub limits: Limits,
    pub max_reauth_ms: u64,
    pub flush_interval_ms: u64,
}

/// The value in force for `name`: dynamic if set (and valid), else static.
fn pick<T: std::str::FromStr>(layers: &Layers, name: &str, fallback: T) -> T {
    match layers.dynamic(name) {
        Some((v, _)) => v.trim().parse().unwrap_or_else(|_| {
            // The state machine validated it; a value that still does not
            // parse here keeps the static setting rather than a guess.
            tracing::warn!(
                config = name,
                value = v,
                "ignoring a dynamic broker config that does not parse"
            );
            fallback
        }),
        None => fallback,
    }
}

pub fn effective(config: &Config, layers: &Layers) -> Effective {
    let mut topic_defaults = config.log.topic_defaults();
    for (k, v) in topic_defaults_from(layers) {
        topic_defaults.insert(k, v);
    }
    let net = &config.network;
    let static_overrides = net.per_ip_overrides().unwrap_or_default();
    let overrides = match layers.dynamic(dynamic::MAX_CONNECTIONS_PER_IP_OVERRIDES) {
        Some((v, _)) => dynamic::parse_ip_counts(v).unwrap_or(static_overrides),
        None => static_overrides,
    };
    Effective {
        topic_defaults,
        limits: Limits {
            total: pick(layers, dynamic::MAX_CONNECTIONS, net.max_connections),
            per_ip: pick(
                layers,
                dynamic::MAX_CONNECTIONS_PER_IP,
                net.max_connections_per_ip,
            ),
            overrides,
        },
        max_reauth_ms: pick(
            layers,
            dynamic::CONNECTIONS_MAX_REAUTH_MS,
            config.sasl.max_reauth_ms,
        ),
        flush_interval_ms: pick(
            layers,
            dynamic::LOG_FLUSH_INTERVAL_MS,
            config.log.flush_interval_ms,
        ),
    }
}

/// The dynamic topic defaults, the cluster's first so this node's win.
fn topic_defaults_from(layers: &Layers) -> Vec<(String, String)> {
    [&layers.cluster, &layers.node]
        .into_iter()
        .flat_map(|level| level.iter())
        .filter_map(|(k, v)| Some((dynamic::topic_config_for(k)?.to_owned(), v.clone())))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layers(node: &[(&str, &str)], cluster: &[(&str, &str)]) -> Layers {
        let map = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect()
        };
        Layers {
            node: map(node),
            cluster: map(cluster),
        }
    }

    #[test]
    fn every_dynamic_config_is_in_the_catalogue() {
        for d in dynamic::DYNAMIC {
            assert!(setting(d.name).is_some(), "{} has a static value", d.name);
        }
        let mut names: Vec<&str> = SETTINGS.iter().map(|s| s.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), SETTINGS.len(), "no setting twice");
    }

    #[test]
    fn sources_run_from_node_to_cluster_to_file_to_built_in() {
        let mut config = Config::default();
        config.log.retention_ms = 42;
        let l = layers(
            &[(dynamic::MAX_CONNECTIONS, "7")],
            &[
                (dynamic::MAX_CONNECTIONS, "9"),
                (dynamic::LOG_RETENTION_MS, "5"),
            ],
        );
        let all = describe(&config, &l, true);
        let get = |n: &str| all.iter().find(|e| e.name == n).unwrap().clone();
        let max = get(dynamic::MAX_CONNECTIONS);
        assert_eq!(
            (max.value.as_str(), max.source),
            ("7", ConfigSource::DynamicBroker)
        );
        let codes: Vec<i8> = max.synonyms.iter().map(|s| s.1.code()).collect();
        assert_eq!(codes, vec![2, 3, 5]);
        assert!(!max.read_only);
        let retention = get(dynamic::LOG_RETENTION_MS);
        assert_eq!(
            (retention.value.as_str(), retention.source.code()),
            ("5", 3)
        );
        let codes: Vec<i8> = retention.synonyms.iter().map(|s| s.1.code()).collect();
        assert_eq!(
            codes,
            vec![3, 4, 5],
            "the file's 42, then the built-in default"
        );
        let partitions = get("num.partitions");
        assert!(partitions.read_only);
        assert_eq!(partitions.source, ConfigSource::Default);
        // The cluster default lists only what is set there.
        let default = describe(&config, &l, false);
        let names: Vec<&str> = default.iter().map(|e| e.name).collect();
        assert_eq!(
            names,
            vec![dynamic::LOG_RETENTION_MS, dynamic::MAX_CONNECTIONS]
        );
        assert!(default
            .iter()
            .all(|e| e.source == ConfigSource::DynamicDefault));
    }

    #[test]
    fn static_keys_are_invalid_requests_and_unknown_keys_invalid_configs() {
        check_alterable([dynamic::MAX_CONNECTIONS, dynamic::LOG_FLUSH_INTERVAL_MS]).unwrap();
        let (e, m) = check_alterable(["log.dirs", "max.connections", "listeners"]).unwrap_err();
        assert_eq!(e, ResponseError::InvalidRequest);
        assert_eq!(
            m,
            "Cannot update these configs dynamically: Set(log.dirs, listeners)"
        );
        let (e, m) = check_alterable(["num.io.threads"]).unwrap_err();
        assert_eq!(e, ResponseError::InvalidConfig);
        assert!(m.contains("num.io.threads"), "{m}");
    }

    #[test]
    fn effective_values_prefer_this_node_then_the_cluster() {
        let mut config = Config::default();
        config.network.max_connections_per_ip_overrides = "10.0.0.1:3".into();
        let e = effective(&config, &Layers::default());
        assert_eq!(e.limits, Limits::from_config(&config.network).unwrap());
        assert_eq!(e.flush_interval_ms, config.log.flush_interval_ms);
        let l = layers(
            &[
                (dynamic::LOG_RETENTION_MS, "7"),
                (dynamic::CONNECTIONS_MAX_REAUTH_MS, "1000"),
            ],
            &[
                (dynamic::LOG_RETENTION_MS, "9"),
                (dynamic::MAX_CONNECTIONS, "12"),
                (dynamic::MAX_CONNECTIONS_PER_IP_OVERRIDES, "10.0.0.2:1"),
                (dynamic::LOG_FLUSH_INTERVAL_MS, "250"),
            ],
        );
        let e = effective(&config, &l);
        assert_eq!(e.topic_defaults["retention.ms"], "7");
        assert_eq!(e.limits.total, 12);
        assert_eq!(e.limits.overrides.len(), 1);
        assert_eq!(
            e.limits.overrides[&std::net::IpAddr::from([10, 0, 0, 2])],
            1
        );
        assert_eq!((e.max_reauth_ms, e.flush_interval_ms), (1000, 250));
        let levels = topic_defaults(&config, &l);
        let retention: Vec<i8> = levels
            .iter()
            .filter(|(k, ..)| k == "retention.ms")
            .map(|(_, _, s)| s.code())
            .collect();
        assert_eq!(retention, vec![2, 3, 4]);
    }
}
