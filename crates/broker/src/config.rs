//! The broker's one typed configuration.
//!
//! Layering: built-in defaults ← TOML file ← `VEIL_*` environment ← flags.
//! Environment keys map onto TOML paths: `VEIL_DATA_DIR` is `data_dir`,
//! `VEIL_LOG__RETENTION_MS` is `log.retention_ms`, and
//! `VEIL_LISTENERS__0__BIND` is `listeners[0].bind`. Unknown keys and invalid
//! values are errors that say which key and what is allowed.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;
use veil_meta::{topic_config, TopicConfigs};

mod network;

pub use network::NetworkConfig;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// This broker's id in Metadata responses.
    pub node_id: i32,
    /// Where logs and metadata live.
    pub data_dir: PathBuf,
    /// Kafka listeners; the first is the one advertised in Metadata.
    pub listeners: Vec<ListenerConfig>,
    pub admin: AdminConfig,
    pub network: NetworkConfig,
    pub log: LogDefaults,
    pub topics: TopicDefaults,
    /// The consumer-group coordinator (Kafka's `group.*` and `offsets.*`).
    pub groups: GroupsConfig,
    /// The transaction coordinator (Kafka's `transaction.*`).
    pub transactions: crate::txn::TransactionsConfig,
    /// Binding a plaintext listener to a non-loopback address exposes data
    /// and credentials on the network; it must be asked for explicitly.
    pub allow_plaintext_on_network: bool,
    /// SASL settings shared by every SASL listener.
    pub sasl: SaslConfig,
    /// Kafka ACLs (`authorizer.class.name`, `super.users`, ...).
    pub authorizer: AuthorizerConfig,
    /// Blind topics: share sealing key, transform rate limits, token cache.
    pub blind: crate::blind::BlindConfig,
    /// Several nodes: the metadata quorum's voters, the inter-node listener.
    pub cluster: crate::cluster::ClusterConfig,
    /// Followers fetching from leaders, ISR upkeep (Kafka's `replica.*`).
    pub replication: crate::replication::ReplicationConfig,
    /// `text` for people, `json` for log collectors: one JSON object per
    /// line (read by `veil broker` before it logs anything).
    pub log_format: LogFormat,
    /// The MQTT front end: listeners, MQTT-to-Kafka topic mappings, limits.
    pub mqtt: crate::mqtt::MqttConfig,
}

/// How log events are written to standard error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SecurityProtocol {
    Plaintext,
    Ssl,
    SaslPlaintext,
    SaslSsl,
}

impl SecurityProtocol {
    pub fn uses_tls(self) -> bool {
        matches!(self, SecurityProtocol::Ssl | SecurityProtocol::SaslSsl)
    }

    pub fn uses_sasl(self) -> bool {
        matches!(
            self,
            SecurityProtocol::SaslPlaintext | SecurityProtocol::SaslSsl
        )
    }
}

/// Whether a TLS listener asks for client certificates (Kafka's `ssl.client.auth`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuth {
    #[default]
    None,
    /// Verified if presented; a client without one is `User:ANONYMOUS`.
    Requested,
    /// mTLS: the handshake fails without a certificate from `ca_file`'s CA.
    Required,
}

/// TLS settings of an SSL or SASL_SSL listener. Files are PEM and are
/// reloaded when they change or on SIGHUP.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// The broker's certificate chain, leaf first.
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    /// CA certificates that client certificates must chain to.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    #[serde(default)]
    pub client_auth: ClientAuth,
    /// Kafka's `ssl.principal.mapping.rules`, one rule per entry:
    /// `RULE:pattern/replacement/[LU]` or `DEFAULT` (the full DN).
    #[serde(default)]
    pub principal_mapping_rules: Vec<String>,
}

/// SASL settings (Kafka's `sasl.*` and `connections.max.reauth.ms`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SaslConfig {
    /// PLAIN users and their salted hashes (see `veil user hash-plain`).
    pub plain_users_file: Option<PathBuf>,
    /// KIP-368: sessions last this long unless re-authenticated; 0 = no limit.
    pub max_reauth_ms: u64,
    /// Failed logins are answered after a delay that doubles per failure
    /// (per address and user, and more slowly per address) up to this cap.
    pub max_failure_delay_ms: u64,
    /// Kafka's `sasl.server.max.receive.size`: before authentication, a
    /// frame announcing more than this closes the connection unread.
    pub server_max_receive_size: usize,
    /// A connection on a SASL listener that has not authenticated this long
    /// after it was accepted is closed (Kafka has no such deadline and keeps
    /// it for `connections.max.idle.ms`).
    pub authentication_timeout_ms: u64,
}

impl Default for SaslConfig {
    fn default() -> Self {
        SaslConfig {
            plain_users_file: None,
            max_reauth_ms: 0,
            max_failure_delay_ms: 5_000,
            server_max_receive_size: 512 * 1024,
            authentication_timeout_ms: 10_000,
        }
    }
}

/// ACL enforcement. Off by default so a fresh broker works like Kafka without
/// `authorizer.class.name`; once on, nothing is allowed that no ACL allows.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthorizerConfig {
    pub enabled: bool,
    /// Principals allowed everything, whatever the ACLs say (`super.users`).
    pub super_users: Vec<String>,
    /// Allow a resource that no ACL mentions (`allow.everyone.if.no.acl.found`).
    pub allow_everyone_if_no_acl_found: bool,
}

/// SASL mechanisms Veil serves.
pub const SASL_MECHANISMS: &[&str] = &["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"];

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    pub name: String,
    #[serde(default = "default_protocol")]
    pub protocol: SecurityProtocol,
    pub bind: SocketAddr,
    /// `host:port` clients should connect to; defaults to the bound address.
    #[serde(default)]
    pub advertised: Option<String>,
    /// Required for SSL and SASL_SSL listeners.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// SASL mechanisms offered on SASL listeners (default: all served).
    #[serde(default)]
    pub sasl_mechanisms: Vec<String>,
}

/// The default listener as TOML, for partial overrides of it.
#[derive(serde::Serialize)]
struct DefaultListener {
    name: &'static str,
    bind: &'static str,
}

impl Default for DefaultListener {
    fn default() -> Self {
        DefaultListener {
            name: "PLAINTEXT",
            bind: "127.0.0.1:9092",
        }
    }
}

fn default_protocol() -> SecurityProtocol {
    SecurityProtocol::Plaintext
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Serve `/metrics` and `/healthz`.
    pub enabled: bool,
    pub bind: SocketAddr,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Flush {
    /// acks=all waits for fdatasync (group commit).
    Sync,
    /// Never fsync on the produce path; the OS writes back when it likes.
    None,
}

/// Broker-wide defaults for topic configs (Kafka's `log.*` settings).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogDefaults {
    pub flush: Flush,
    pub segment_bytes: i64,
    pub segment_ms: i64,
    pub retention_ms: i64,
    pub retention_bytes: i64,
    pub max_message_bytes: i64,
    pub index_interval_bytes: usize,
    /// How often retention and age-based rolling run.
    pub retention_check_interval_ms: u64,
    /// `log.flush.interval.ms`: appends nothing else fsyncs (acks=0/1,
    /// `flush = none`) are fsynced within about this long, bounding what a
    /// power loss can take.
    pub flush_interval_ms: u64,
    /// `log.flush.offset.checkpoint.interval.ms`: how often each partition's
    /// recovery point (everything below it is synced) is written, which
    /// bounds what recovery validates after a crash.
    pub flush_offset_checkpoint_interval_ms: u64,
    /// `log.cleanup.policy`: the default `cleanup.policy` of topics.
    pub cleanup_policy: String,
    /// `log.cleaner.min.cleanable.ratio`: the default `min.cleanable.dirty.ratio`.
    pub min_cleanable_dirty_ratio: f64,
    /// `log.cleaner.delete.retention.ms`: the default `delete.retention.ms`.
    pub delete_retention_ms: i64,
    /// The log cleaner of compacted topics (Kafka's `log.cleaner.*`).
    pub cleaner: CleanerConfig,
}

/// Kafka's `log.cleaner.*` broker settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CleanerConfig {
    /// `log.cleaner.enable`.
    pub enabled: bool,
    /// `log.cleaner.backoff.ms`: pause between rounds over the compacted partitions.
    pub backoff_ms: u64,
    /// `log.cleaner.dedupe.buffer.size`: memory for one pass's key → offset map.
    pub dedupe_buffer_size: usize,
    /// `log.cleaner.io.max.bytes.per.second`: read + write rate of the cleaner; 0 = unlimited.
    pub io_max_bytes_per_second: u64,
}

impl Default for CleanerConfig {
    fn default() -> Self {
        CleanerConfig {
            enabled: true,
            backoff_ms: 15_000,
            dedupe_buffer_size: 128 << 20,
            io_max_bytes_per_second: 0,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TopicDefaults {
    /// Create unknown topics on Metadata/Produce (Kafka's `auto.create.topics.enable`).
    pub auto_create: bool,
    pub default_partitions: i32,
    /// Replicas of topics created without a replication factor (Kafka's
    /// `default.replication.factor`).
    pub default_replication_factor: i16,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            node_id: 0,
            data_dir: PathBuf::from("./veil-data"),
            listeners: vec![ListenerConfig {
                name: DefaultListener::default().name.into(),
                protocol: SecurityProtocol::Plaintext,
                bind: SocketAddr::from(([127, 0, 0, 1], 9092)),
                advertised: None,
                tls: None,
                sasl_mechanisms: Vec::new(),
            }],
            admin: AdminConfig::default(),
            network: NetworkConfig::default(),
            log: LogDefaults::default(),
            topics: TopicDefaults::default(),
            groups: GroupsConfig::default(),
            transactions: crate::txn::TransactionsConfig::default(),
            allow_plaintext_on_network: false,
            sasl: SaslConfig::default(),
            authorizer: AuthorizerConfig::default(),
            blind: crate::blind::BlindConfig::default(),
            cluster: crate::cluster::ClusterConfig::default(),
            replication: crate::replication::ReplicationConfig::default(),
            log_format: LogFormat::Text,
            mqtt: crate::mqtt::MqttConfig::default(),
        }
    }
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            enabled: true,
            bind: SocketAddr::from(([127, 0, 0, 1], 9644)),
        }
    }
}

impl Default for LogDefaults {
    fn default() -> Self {
        LogDefaults {
            flush: Flush::Sync,
            segment_bytes: 1 << 30,
            segment_ms: 7 * 24 * 3_600_000,
            retention_ms: 7 * 24 * 3_600_000,
            retention_bytes: -1,
            max_message_bytes: 1_048_588,
            index_interval_bytes: 4096,
            retention_check_interval_ms: 30_000,
            // Kafka leaves this unbounded and relies on replicas for
            // durability; a single Veil node has none.
            flush_interval_ms: 1_000,
            flush_offset_checkpoint_interval_ms: 60_000,
            cleanup_policy: "delete".into(),
            min_cleanable_dirty_ratio: 0.5,
            delete_retention_ms: 86_400_000,
            cleaner: CleanerConfig::default(),
        }
    }
}

impl Default for TopicDefaults {
    fn default() -> Self {
        TopicDefaults {
            auto_create: false,
            default_partitions: 1,
            default_replication_factor: 1,
        }
    }
}

/// Group coordinator settings, named after Kafka's broker configs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GroupsConfig {
    /// `group.initial.rebalance.delay.ms`: how long the first rebalance of an
    /// empty group waits for more members (0 in tests).
    pub initial_rebalance_delay_ms: i64,
    /// `offsets.retention.minutes`: offsets of a group expire this long after
    /// it became empty (or, for simple consumers, after their commit).
    pub offsets_retention_minutes: i64,
    /// `group.min.session.timeout.ms` / `group.max.session.timeout.ms`:
    /// JoinGroup outside this range gets INVALID_SESSION_TIMEOUT.
    pub min_session_timeout_ms: i32,
    pub max_session_timeout_ms: i32,
    /// `offset.metadata.max.bytes`: longer committed metadata is answered
    /// OFFSET_METADATA_TOO_LARGE.
    pub offset_metadata_max_bytes: usize,
    /// `offsets.topic.num.partitions`: partitions of `__consumer_offsets`,
    /// fixed when the topic is created (groups are spread over them).
    pub offsets_topic_partitions: i32,
    /// `offsets.topic.replication.factor`: replicas of each of them, capped
    /// at the number of voters.
    pub offsets_topic_replication_factor: i16,
}

impl Default for GroupsConfig {
    fn default() -> Self {
        GroupsConfig {
            initial_rebalance_delay_ms: 3000,
            offsets_retention_minutes: 7 * 24 * 60,
            min_session_timeout_ms: 6000,
            max_session_timeout_ms: 1_800_000,
            offset_metadata_max_bytes: crate::group::limits::DEFAULT_OFFSET_METADATA_MAX_BYTES,
            offsets_topic_partitions: 50,
            offsets_topic_replication_factor: 3,
        }
    }
}

impl GroupsConfig {
    fn validate(&self) -> Result<(), String> {
        if self.initial_rebalance_delay_ms < 0 {
            return Err("groups.initial_rebalance_delay_ms must not be negative".into());
        }
        if self.offsets_retention_minutes < 1 {
            return Err("groups.offsets_retention_minutes must be at least 1".into());
        }
        if self.min_session_timeout_ms < 1
            || self.min_session_timeout_ms > self.max_session_timeout_ms
        {
            return Err("groups.min_session_timeout_ms must be at least 1 and not above groups.max_session_timeout_ms".into());
        }
        if !(1..=1000).contains(&self.offsets_topic_partitions) {
            return Err("groups.offsets_topic_partitions must be between 1 and 1000".into());
        }
        if self.offsets_topic_replication_factor < 1 {
            return Err("groups.offsets_topic_replication_factor must be at least 1".into());
        }
        let max = crate::group::limits::MAX_OFFSET_METADATA_BYTES;
        if self.offset_metadata_max_bytes > max {
            return Err(format!(
                "groups.offset_metadata_max_bytes must be at most {max}"
            ));
        }
        Ok(())
    }
}

impl Config {
    /// Parses TOML text, then applies `overrides` (dotted key, raw value) in order.
    pub fn from_toml_with_overrides(
        text: &str,
        overrides: &[(String, String)],
    ) -> Result<Config, String> {
        let mut table: toml::Table = text.parse().map_err(|e| format!("invalid TOML: {e}"))?;
        if !table.contains_key("listeners")
            && overrides.iter().any(|(k, _)| k.starts_with("listeners."))
        {
            // Overriding one field of the default listener keeps the others.
            let defaults =
                toml::Value::try_from(DefaultListener::default()).map_err(|e| e.to_string())?;
            table.insert("listeners".into(), toml::Value::Array(vec![defaults]));
        }
        for (key, value) in overrides {
            set_path(&mut table, key, value)?;
        }
        let config: Config = toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| e.message().to_owned())?;
        config.validate()?;
        Ok(config)
    }

    /// Every check that does not need the network or the disk.
    pub fn validate(&self) -> Result<(), String> {
        self.groups.validate()?;
        self.transactions.validate()?;
        self.blind.validate()?;
        self.cluster
            .validate(self.node_id, self.allow_plaintext_on_network)?;
        self.replication.validate()?;
        self.mqtt.validate(self.allow_plaintext_on_network)?;
        if self.topics.default_replication_factor < 1 {
            return Err("topics.default_replication_factor must be at least 1".into());
        }
        if self.listeners.is_empty() {
            return Err("at least one entry in [[listeners]] is required".into());
        }
        let mut names = std::collections::HashSet::new();
        for l in &self.listeners {
            if l.name == crate::server::INTERNAL_LISTENER {
                return Err(format!(
                    "listener name '{}' is reserved for the inter-node listener",
                    l.name
                ));
            }
            if l.name.is_empty() || !names.insert(l.name.as_str()) {
                return Err(format!(
                    "listener names must be unique and non-empty, got '{}'",
                    l.name
                ));
            }
            let clear = matches!(
                l.protocol,
                SecurityProtocol::Plaintext | SecurityProtocol::SaslPlaintext
            );
            if clear && !l.bind.ip().is_loopback() && !self.allow_plaintext_on_network {
                return Err(format!(
                    "listener '{}' binds {} without TLS, which sends data and credentials in clear; \
                     bind a loopback address or set allow_plaintext_on_network = true",
                    l.name, l.bind
                ));
            }
            l.validate_security()?;
        }
        self.network.validate()?;
        if self.sasl.server_max_receive_size < 1024 || self.sasl.authentication_timeout_ms == 0 {
            return Err("sasl.server_max_receive_size must be at least 1024 and sasl.authentication_timeout_ms at least 1".into());
        }
        for (key, value) in self.log.topic_defaults() {
            topic_config::validate(&key, &value).map_err(|e| format!("log: {e}"))?;
        }
        if self.log.cleaner.backoff_ms == 0
            || self.log.cleaner.dedupe_buffer_size < veil_log::cleaner::SLOT_BYTES * 1024
        {
            return Err(format!(
                "log.cleaner.backoff_ms must be at least 1 and log.cleaner.dedupe_buffer_size at least {} bytes",
                veil_log::cleaner::SLOT_BYTES * 1024
            ));
        }
        if self.log.index_interval_bytes == 0 || self.log.retention_check_interval_ms == 0 {
            return Err(
                "log.index_interval_bytes and log.retention_check_interval_ms must be at least 1"
                    .into(),
            );
        }
        if self.log.flush_interval_ms == 0 || self.log.flush_offset_checkpoint_interval_ms == 0 {
            return Err(
                "log.flush_interval_ms and log.flush_offset_checkpoint_interval_ms must be at least 1"
                    .into(),
            );
        }
        if !(1..=veil_meta::state_machine::MAX_PARTITIONS).contains(&self.topics.default_partitions)
        {
            return Err("topics.default_partitions must be between 1 and 10000".into());
        }
        for (key, value) in self.log.topic_defaults() {
            topic_config::validate(&key, &value)
                .map_err(|e| format!("log.{}: {e}", key.replace('.', "_")))?;
        }
        if let Some(bad) = self.authorizer.super_users.iter().find(|u| {
            !u.split_once(':')
                .is_some_and(|(kind, name)| !kind.is_empty() && !name.is_empty())
        }) {
            return Err(format!(
                "authorizer.super_users: '{bad}' is not a principal of the form Type:name (e.g. User:admin)"
            ));
        }
        Ok(())
    }
}

impl ListenerConfig {
    /// TLS and SASL settings fit the protocol.
    fn validate_security(&self) -> Result<(), String> {
        let name = &self.name;
        match (&self.tls, self.protocol.uses_tls()) {
            (None, true) => {
                return Err(format!(
                    "listener '{name}': {:?} needs [listeners.tls] with cert_file and key_file",
                    self.protocol
                ))
            }
            (Some(_), false) => {
                return Err(format!(
                    "listener '{name}': tls settings need protocol SSL or SASL_SSL"
                ))
            }
            (Some(t), true) => {
                if t.client_auth != ClientAuth::None && t.ca_file.is_none() {
                    return Err(format!(
                        "listener '{name}': client_auth = {:?} needs ca_file",
                        t.client_auth
                    ));
                }
            }
            (None, false) => {}
        }
        if !self.sasl_mechanisms.is_empty() && !self.protocol.uses_sasl() {
            return Err(format!(
                "listener '{name}': sasl_mechanisms need protocol SASL_PLAINTEXT or SASL_SSL"
            ));
        }
        if let Some(m) = self
            .sasl_mechanisms
            .iter()
            .find(|m| !SASL_MECHANISMS.contains(&m.as_str()))
        {
            return Err(format!(
                "listener '{name}': unknown SASL mechanism '{m}' (one of {})",
                SASL_MECHANISMS.join(", ")
            ));
        }
        Ok(())
    }

    /// The SASL mechanisms this listener offers.
    pub fn mechanisms(&self) -> Vec<String> {
        if self.sasl_mechanisms.is_empty() {
            SASL_MECHANISMS.iter().map(|m| (*m).to_owned()).collect()
        } else {
            self.sasl_mechanisms.clone()
        }
    }
}

impl LogDefaults {
    /// The broker-level defaults as topic config values.
    pub fn topic_defaults(&self) -> TopicConfigs {
        TopicConfigs::from([
            (
                topic_config::SEGMENT_BYTES.into(),
                self.segment_bytes.to_string(),
            ),
            (topic_config::SEGMENT_MS.into(), self.segment_ms.to_string()),
            (
                topic_config::RETENTION_MS.into(),
                self.retention_ms.to_string(),
            ),
            (
                topic_config::RETENTION_BYTES.into(),
                self.retention_bytes.to_string(),
            ),
            (
                topic_config::MAX_MESSAGE_BYTES.into(),
                self.max_message_bytes.to_string(),
            ),
            (
                topic_config::CLEANUP_POLICY.into(),
                self.cleanup_policy.clone(),
            ),
            (
                topic_config::MIN_CLEANABLE_DIRTY_RATIO.into(),
                self.min_cleanable_dirty_ratio.to_string(),
            ),
            (
                topic_config::DELETE_RETENTION_MS.into(),
                self.delete_retention_ms.to_string(),
            ),
        ])
    }
}

/// Sets `a.b.0.c = value` inside a TOML table. The value is read as TOML
/// (numbers, booleans, arrays) when it parses as such, else as a string.
fn set_path(table: &mut toml::Table, key: &str, raw: &str) -> Result<(), String> {
    let value = parse_scalar(raw);
    let parts: Vec<&str> = key.split('.').collect();
    let mut cur = table;
    for (i, part) in parts.iter().enumerate() {
        let last = i + 1 == parts.len();
        if last {
            cur.insert((*part).to_owned(), value);
            return Ok(());
        }
        let next_is_index = parts[i + 1].parse::<usize>().is_ok();
        let entry = cur.entry((*part).to_owned()).or_insert_with(|| {
            if next_is_index {
                toml::Value::Array(Vec::new())
            } else {
                toml::Value::Table(toml::Table::new())
            }
        });
        cur = match entry {
            toml::Value::Table(t) => t,
            toml::Value::Array(items) => {
                let idx: usize = parts[i + 1]
                    .parse()
                    .map_err(|_| format!("'{key}': expected an index after '{part}'"))?;
                while items.len() <= idx {
                    items.push(toml::Value::Table(toml::Table::new()));
                }
                let toml::Value::Table(t) = &mut items[idx] else {
                    return Err(format!("'{key}': '{part}[{idx}]' is not a table"));
                };
                if i + 2 == parts.len() {
                    return Err(format!("'{key}': cannot replace a whole list entry"));
                }
                return set_path(t, &parts[i + 2..].join("."), raw);
            }
            _ => return Err(format!("'{key}': '{part}' is not a table")),
        };
    }
    Ok(())
}

fn parse_scalar(raw: &str) -> toml::Value {
    format!("v = {raw}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_owned()))
}

/// Top-level keys that hold a value, and those that hold a table.
const ENV_SCALARS: &[&str] = &[
    "node_id",
    "data_dir",
    "allow_plaintext_on_network",
    "log_format",
];
const ENV_TABLES: &[&str] = &[
    "listeners",
    "admin",
    "network",
    "log",
    "topics",
    "groups",
    "sasl",
    "authorizer",
    "blind",
    "cluster",
    "replication",
];

/// Turns `VEIL_*` environment variables into overrides (`VEIL_LOG__FLUSH` →
/// `log.flush`). Variables whose first segment is no config key (such as
/// `VEIL_LOG`, the log filter, or `VEIL_CONFIG`) belong to the command line
/// and are left alone; a misspelt key inside a known table is still an error.
pub fn env_overrides(vars: impl Iterator<Item = (String, String)>) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = vars
        .filter_map(|(k, v)| {
            let key = k
                .strip_prefix("VEIL_")?
                .to_ascii_lowercase()
                .replace("__", ".");
            let (first, rest) = key
                .split_once('.')
                .map_or((key.as_str(), None), |(f, r)| (f, Some(r)));
            let known = match rest {
                None => ENV_SCALARS.contains(&first),
                Some(_) => ENV_TABLES.contains(&first),
            };
            known.then(|| (key.clone(), v))
        })
        .collect();
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_loopback() {
        let c = Config::from_toml_with_overrides("", &[]).unwrap();
        assert_eq!(c.listeners[0].bind.to_string(), "127.0.0.1:9092");
        assert_eq!(c.admin.bind.to_string(), "127.0.0.1:9644");
        assert_eq!(c.data_dir, PathBuf::from("./veil-data"));
        assert_eq!(c.log.flush, Flush::Sync);
    }

    #[test]
    fn unknown_keys_and_bad_values_are_errors_naming_the_key() {
        let err = Config::from_toml_with_overrides("dta_dir = 'x'", &[]).unwrap_err();
        assert!(err.contains("dta_dir"), "{err}");
        let err = Config::from_toml_with_overrides("[log]\nflush = 'sometimes'", &[]).unwrap_err();
        assert!(err.contains("sometimes"), "{err}");
        let err = Config::from_toml_with_overrides("[log]\nretention_ms = -5", &[]).unwrap_err();
        assert!(err.contains("retention"), "{err}");
    }

    #[test]
    fn env_and_flags_override_the_file() {
        let env = env_overrides(
            [
                ("VEIL_DATA_DIR".to_owned(), "/tmp/x".to_owned()),
                ("VEIL_LOG__FLUSH".to_owned(), "none".to_owned()),
                (
                    "VEIL_LISTENERS__0__BIND".to_owned(),
                    "127.0.0.1:0".to_owned(),
                ),
                ("OTHER".to_owned(), "1".to_owned()),
                ("VEIL_LOG".to_owned(), "debug".to_owned()),
                ("VEIL_BIN".to_owned(), "/usr/bin/veil".to_owned()),
                ("VEIL_LOG_FORMAT".to_owned(), "json".to_owned()),
            ]
            .into_iter(),
        );
        let c =
            Config::from_toml_with_overrides("data_dir = '/var/veil'\n[log]\nsegment_ms = 5", &env)
                .unwrap();
        assert_eq!(c.data_dir, PathBuf::from("/tmp/x"));
        assert_eq!(c.log.flush, Flush::None);
        assert_eq!(c.log_format, LogFormat::Json);
        assert_eq!(c.log.segment_ms, 5);
        assert_eq!(c.listeners[0].bind.port(), 0);
        assert_eq!(
            c.listeners[0].name, "PLAINTEXT",
            "other listener fields kept"
        );
    }

    #[test]
    fn plaintext_on_network_needs_opt_in() {
        let toml = "[[listeners]]\nname = 'A'\nbind = '0.0.0.0:9092'\n";
        let err = Config::from_toml_with_overrides(toml, &[]).unwrap_err();
        assert!(err.contains("allow_plaintext_on_network"), "{err}");
        let ok = format!("allow_plaintext_on_network = true\n{toml}");
        Config::from_toml_with_overrides(&ok, &[]).unwrap();
        let sasl =
            "[[listeners]]\nname = 'A'\nprotocol = 'SASL_PLAINTEXT'\nbind = '0.0.0.0:9092'\n";
        let err = Config::from_toml_with_overrides(sasl, &[]).unwrap_err();
        assert!(err.contains("allow_plaintext_on_network"), "{err}");
        let tls = "[[listeners]]\nname = 'A'\nprotocol = 'SASL_SSL'\nbind = '0.0.0.0:9092'\n\
                   [listeners.tls]\ncert_file = 'c.pem'\nkey_file = 'k.pem'\n";
        Config::from_toml_with_overrides(tls, &[]).unwrap();
    }

    #[test]
    fn security_settings_must_fit_the_protocol() {
        for (toml, want) in [
            ("protocol = 'SSL'", "needs [listeners.tls]"),
            ("[listeners.tls]\ncert_file = 'c'\nkey_file = 'k'", "need protocol SSL"),
            ("protocol = 'SSL'\n[listeners.tls]\ncert_file = 'c'\nkey_file = 'k'\nclient_auth = 'required'", "needs ca_file"),
            ("sasl_mechanisms = ['PLAIN']", "need protocol SASL"),
            ("protocol = 'SASL_PLAINTEXT'\nsasl_mechanisms = ['GSSAPI']", "unknown SASL mechanism"),
        ] {
            let text = format!("[[listeners]]\nname = 'A'\nbind = '127.0.0.1:0'\n{toml}\n");
            let err = Config::from_toml_with_overrides(&text, &[]).unwrap_err();
            assert!(err.contains(want), "{toml}: {err}");
        }
    }
}
