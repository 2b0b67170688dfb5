//! The Kafka topic configs Veil serves: names, defaults, validation.
//!
//! Only configs listed in [`KNOWN`] are accepted; anything else is an
//! `INVALID_CONFIG` error naming the key, so a typo never silently does nothing.

use std::collections::BTreeMap;

use crate::{Error, Result};

/// Where a config value came from, in Kafka's `DescribeConfigs` vocabulary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigSource {
    /// Set on the topic (Kafka's `DYNAMIC_TOPIC_CONFIG`, code 1).
    Topic,
    /// Set for one broker in the metadata (Kafka's `DYNAMIC_BROKER_CONFIG`, code 2).
    DynamicBroker,
    /// Set for every broker in the metadata (Kafka's
    /// `DYNAMIC_DEFAULT_BROKER_CONFIG`, code 3).
    DynamicDefault,
    /// The broker's configured default (Kafka's `STATIC_BROKER_CONFIG`, code 4).
    Broker,
    /// Built in (Kafka's `DEFAULT_CONFIG`, code 5).
    Default,
}

impl ConfigSource {
    /// Kafka's numeric `config_source` for DescribeConfigs v1+.
    pub fn code(self) -> i8 {
        match self {
            ConfigSource::Topic => 1,
            ConfigSource::DynamicBroker => 2,
            ConfigSource::DynamicDefault => 3,
            ConfigSource::Broker => 4,
            ConfigSource::Default => 5,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A signed 64-bit integer with a minimum.
    Long(i64),
    /// A signed 32-bit integer with a minimum.
    Int(i64),
    /// An integer in an inclusive range.
    Range(i64, i64),
    /// A floating-point number in [0, 1].
    Ratio,
    /// One of a fixed set of strings.
    Choice(&'static [&'static str]),
}

/// One served topic config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConfigDef {
    pub name: &'static str,
    pub default: &'static str,
    kind: Kind,
    /// Kafka's `config_type` code for DescribeConfigs v3+ (STRING=2, INT=3, LONG=5, LIST=7).
    pub type_code: i8,
    pub doc: &'static str,
}

pub const CLEANUP_POLICY: &str = "cleanup.policy";
pub const RETENTION_MS: &str = "retention.ms";
pub const RETENTION_BYTES: &str = "retention.bytes";
pub const SEGMENT_BYTES: &str = "segment.bytes";
pub const SEGMENT_MS: &str = "segment.ms";
pub const MAX_MESSAGE_BYTES: &str = "max.message.bytes";
pub const MESSAGE_TIMESTAMP_TYPE: &str = "message.timestamp.type";
pub const MIN_INSYNC_REPLICAS: &str = "min.insync.replicas";
pub const COMPRESSION_TYPE: &str = "compression.type";
pub const UNCLEAN_LEADER_ELECTION: &str = "unclean.leader.election.enable";
pub const COMPRESSION_GZIP_LEVEL: &str = "compression.gzip.level";
pub const COMPRESSION_LZ4_LEVEL: &str = "compression.lz4.level";
pub const COMPRESSION_ZSTD_LEVEL: &str = "compression.zstd.level";
pub const MIN_CLEANABLE_DIRTY_RATIO: &str = "min.cleanable.dirty.ratio";
pub const MIN_COMPACTION_LAG_MS: &str = "min.compaction.lag.ms";
pub const MAX_COMPACTION_LAG_MS: &str = "max.compaction.lag.ms";
pub const DELETE_RETENTION_MS: &str = "delete.retention.ms";

/// `cleanup.policy` values (a list in Kafka; these are all its combinations).
pub const CLEANUP_POLICIES: &[&str] = &["delete", "compact", "compact,delete", "delete,compact"];
/// `compression.type` values.
pub const COMPRESSION_TYPES: &[&str] =
    &["producer", "uncompressed", "gzip", "snappy", "lz4", "zstd"];

/// Every topic config Veil accepts.
pub const KNOWN: &[ConfigDef] = &[
    ConfigDef {
        name: CLEANUP_POLICY,
        default: "delete",
        kind: Kind::Choice(CLEANUP_POLICIES),
        type_code: 7,
        doc: "'delete': time/size retention; 'compact': keep the latest record per key; both together.",
    },
    ConfigDef {
        name: MIN_CLEANABLE_DIRTY_RATIO,
        default: "0.5",
        kind: Kind::Ratio,
        type_code: 6,
        doc: "Clean a compacted log when this fraction of its cleanable bytes is not yet cleaned.",
    },
    ConfigDef {
        name: MIN_COMPACTION_LAG_MS,
        default: "0",
        kind: Kind::Long(0),
        type_code: 5,
        doc: "Records younger than this stay uncompacted.",
    },
    ConfigDef {
        name: MAX_COMPACTION_LAG_MS,
        default: "9223372036854775807",
        kind: Kind::Long(1),
        type_code: 5,
        doc: "Records are compacted at most this long after they were written, whatever the dirty ratio.",
    },
    ConfigDef {
        name: DELETE_RETENTION_MS,
        default: "86400000",
        kind: Kind::Long(0),
        type_code: 5,
        doc: "Tombstones stay this long (after their segment was last written, and once cleaned) on compacted topics.",
    },
    ConfigDef {
        name: RETENTION_MS,
        default: "604800000",
        kind: Kind::Long(-1),
        type_code: 5,
        doc: "Delete whole segments whose newest record is older than this; -1 keeps forever.",
    },
    ConfigDef {
        name: RETENTION_BYTES,
        default: "-1",
        kind: Kind::Long(-1),
        type_code: 5,
        doc: "Delete the oldest segments while a partition is larger than this; -1 is unlimited.",
    },
    ConfigDef {
        name: SEGMENT_BYTES,
        default: "1073741824",
        kind: Kind::Int(14),
        type_code: 3,
        doc: "Roll a new segment file when the active one reaches this size.",
    },
    ConfigDef {
        name: SEGMENT_MS,
        default: "604800000",
        kind: Kind::Long(1),
        type_code: 5,
        doc: "Roll a new segment file when the active one is older than this.",
    },
    ConfigDef {
        name: MAX_MESSAGE_BYTES,
        default: "1048588",
        kind: Kind::Int(0),
        type_code: 3,
        doc: "Largest record batch the partition accepts.",
    },
    ConfigDef {
        name: MESSAGE_TIMESTAMP_TYPE,
        default: "CreateTime",
        kind: Kind::Choice(&["CreateTime", "LogAppendTime"]),
        type_code: 2,
        doc: "Keep the producer's timestamps or stamp the broker's append time.",
    },
    ConfigDef {
        name: MIN_INSYNC_REPLICAS,
        default: "1",
        kind: Kind::Int(1),
        type_code: 3,
        doc: "In-sync replicas an acks=all write needs (when unset: 2 for topics with two or more replicas, else 1).",
    },
    ConfigDef {
        name: UNCLEAN_LEADER_ELECTION,
        default: "false",
        kind: Kind::Choice(&["true", "false"]),
        type_code: 1,
        doc: "Let an out-of-sync replica lead when no in-sync one is left (may lose acknowledged records).",
    },
    ConfigDef {
        name: COMPRESSION_TYPE,
        default: "producer",
        kind: Kind::Choice(COMPRESSION_TYPES),
        type_code: 2,
        doc: "'producer' stores batches as produced; a codec (or 'uncompressed') recompresses batches in any other codec on append.",
    },
    ConfigDef {
        name: COMPRESSION_GZIP_LEVEL,
        default: "-1",
        kind: Kind::Range(-1, 9),
        type_code: 3,
        doc: "gzip level for compression.type=gzip (1-9; -1: the codec's default).",
    },
    ConfigDef {
        name: COMPRESSION_LZ4_LEVEL,
        default: "9",
        kind: Kind::Range(1, 17),
        type_code: 3,
        doc: "Accepted for compatibility; Veil's LZ4 encoder has one (fast) level.",
    },
    ConfigDef {
        name: COMPRESSION_ZSTD_LEVEL,
        default: "3",
        kind: Kind::Range(-131_072, 22),
        type_code: 3,
        doc: "zstd level for compression.type=zstd.",
    },
];

/// Looks up a served config by name.
pub fn definition(name: &str) -> Option<&'static ConfigDef> {
    KNOWN.iter().find(|d| d.name == name)
}

/// Checks one key/value pair; the error names the key and what is allowed.
pub fn validate(name: &str, value: &str) -> Result<()> {
    let def = definition(name)
        .ok_or_else(|| Error::InvalidConfig(format!("unknown topic config '{name}'")))?;
    match def.kind {
        Kind::Long(min) | Kind::Int(min) => {
            let is_int = matches!(def.kind, Kind::Int(_));
            match value.trim().parse::<i64>() {
                Ok(v) if v >= min && (!is_int || i32::try_from(v).is_ok()) => Ok(()),
                _ => Err(Error::InvalidConfig(format!(
                    "'{name}' must be an integer >= {min}, got '{value}'"
                ))),
            }
        }
        Kind::Range(min, max) => match value.trim().parse::<i64>() {
            Ok(v) if (min..=max).contains(&v) => Ok(()),
            _ => Err(Error::InvalidConfig(format!(
                "'{name}' must be an integer in [{min}, {max}], got '{value}'"
            ))),
        },
        Kind::Ratio => match value.trim().parse::<f64>() {
            Ok(v) if (0.0..=1.0).contains(&v) => Ok(()),
            _ => Err(Error::InvalidConfig(format!(
                "'{name}' must be a number in [0, 1], got '{value}'"
            ))),
        },
        Kind::Choice(choices) if choices.contains(&value) => Ok(()),
        Kind::Choice(choices) => Err(Error::InvalidConfig(format!(
            "'{name}' must be one of {choices:?}, got '{value}'"
        ))),
    }
}

/// A topic's explicitly set configs (only keys from [`KNOWN`]).
pub type TopicConfigs = BTreeMap<String, String>;

/// Validates every pair of a config map.
pub fn validate_all(configs: &TopicConfigs) -> Result<()> {
    configs.iter().try_for_each(|(k, v)| validate(k, v))
}

/// The effective value of `name`: topic override, then broker default, then built-in.
pub fn effective<'a>(
    name: &str,
    topic: &'a TopicConfigs,
    broker_defaults: &'a TopicConfigs,
) -> Option<(&'a str, ConfigSource)> {
    if let Some(v) = topic.get(name) {
        return Some((v.as_str(), ConfigSource::Topic));
    }
    if let Some(v) = broker_defaults.get(name) {
        return Some((v.as_str(), ConfigSource::Broker));
    }
    definition(name).map(|d| (d.default, ConfigSource::Default))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_known_values() {
        validate(RETENTION_MS, "-1").unwrap();
        validate(RETENTION_MS, "1000").unwrap();
        validate(SEGMENT_BYTES, "1048576").unwrap();
        validate(MESSAGE_TIMESTAMP_TYPE, "LogAppendTime").unwrap();
        validate(CLEANUP_POLICY, "delete").unwrap();
        validate(CLEANUP_POLICY, "compact").unwrap();
        validate(CLEANUP_POLICY, "compact,delete").unwrap();
        validate(COMPRESSION_TYPE, "zstd").unwrap();
        validate(COMPRESSION_ZSTD_LEVEL, "-5").unwrap();
        validate(MIN_CLEANABLE_DIRTY_RATIO, "0.01").unwrap();
        validate(DELETE_RETENTION_MS, "0").unwrap();
    }

    #[test]
    fn rejects_unknown_and_bad_values_with_a_reason() {
        let err = validate("retention.mss", "1").unwrap_err().to_string();
        assert!(err.contains("retention.mss"), "{err}");
        let err = validate(RETENTION_MS, "-2").unwrap_err().to_string();
        assert!(err.contains(">= -1"), "{err}");
        assert!(validate(RETENTION_MS, "soon").is_err());
        assert!(validate(SEGMENT_BYTES, "4294967296").is_err(), "beyond i32");
        let err = validate(CLEANUP_POLICY, "shred").unwrap_err().to_string();
        assert!(err.contains("compact"), "{err}");
        assert!(validate(COMPRESSION_TYPE, "brotli").is_err());
        assert!(validate(MIN_CLEANABLE_DIRTY_RATIO, "1.5").is_err());
        assert!(validate(COMPRESSION_ZSTD_LEVEL, "23").is_err());
        assert!(validate(COMPRESSION_GZIP_LEVEL, "10").is_err());
    }

    #[test]
    fn effective_prefers_topic_then_broker_then_default() {
        let mut topic = TopicConfigs::new();
        let mut broker = TopicConfigs::new();
        assert_eq!(
            effective(RETENTION_MS, &topic, &broker),
            Some(("604800000", ConfigSource::Default))
        );
        broker.insert(RETENTION_MS.into(), "5".into());
        assert_eq!(
            effective(RETENTION_MS, &topic, &broker),
            Some(("5", ConfigSource::Broker))
        );
        topic.insert(RETENTION_MS.into(), "7".into());
        assert_eq!(
            effective(RETENTION_MS, &topic, &broker),
            Some(("7", ConfigSource::Topic))
        );
        assert_eq!(effective("nope", &topic, &broker), None);
    }
}
