//! Dynamic broker configs (Kafka's BROKER resource) stored in metadata:
//! set cluster-wide (resource name "") or for one node, applied without a
//! restart. Only keys Kafka itself treats as dynamic, and that Veil has a
//! setting for, are here; static ones (listeners, node id, data dir, ...)
//! are refused by the handlers with Kafka's error.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use crate::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Long(i64),
    Int(i64),
    Bool,
    /// Kafka's `ip:count,ip:count` list.
    IpCounts,
}

/// One dynamic broker config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BrokerConfigDef {
    pub name: &'static str,
    kind: Kind,
    /// Kafka's `config_type` code (BOOLEAN=1, STRING=2, INT=3, LONG=5).
    pub type_code: i8,
    pub doc: &'static str,
}

pub const LOG_RETENTION_MS: &str = "log.retention.ms";
pub const LOG_RETENTION_BYTES: &str = "log.retention.bytes";
pub const LOG_SEGMENT_BYTES: &str = "log.segment.bytes";
pub const LOG_ROLL_MS: &str = "log.roll.ms";
pub const MESSAGE_MAX_BYTES: &str = "message.max.bytes";
pub const MIN_INSYNC_REPLICAS: &str = "min.insync.replicas";
pub const UNCLEAN_LEADER_ELECTION: &str = "unclean.leader.election.enable";
pub const MAX_CONNECTIONS: &str = "max.connections";
pub const MAX_CONNECTIONS_PER_IP: &str = "max.connections.per.ip";
pub const MAX_CONNECTIONS_PER_IP_OVERRIDES: &str = "max.connections.per.ip.overrides";
pub const CONNECTIONS_MAX_REAUTH_MS: &str = "connections.max.reauth.ms";
pub const LOG_FLUSH_INTERVAL_MS: &str = "log.flush.interval.ms";

pub const DYNAMIC: &[BrokerConfigDef] = &[
    BrokerConfigDef {
        name: LOG_RETENTION_MS,
        kind: Kind::Long(-1),
        type_code: 5,
        doc: "Default retention.ms of topics without their own.",
    },
    BrokerConfigDef {
        name: LOG_RETENTION_BYTES,
        kind: Kind::Long(-1),
        type_code: 5,
        doc: "Default retention.bytes of topics without their own.",
    },
    BrokerConfigDef {
        name: LOG_SEGMENT_BYTES,
        kind: Kind::Int(14),
        type_code: 3,
        doc: "Default segment.bytes of topics without their own.",
    },
    BrokerConfigDef {
        name: LOG_ROLL_MS,
        kind: Kind::Long(1),
        type_code: 5,
        doc: "Default segment.ms of topics without their own.",
    },
    BrokerConfigDef {
        name: MESSAGE_MAX_BYTES,
        kind: Kind::Int(0),
        type_code: 3,
        doc: "Default max.message.bytes of topics without their own.",
    },
    BrokerConfigDef {
        name: MIN_INSYNC_REPLICAS,
        kind: Kind::Int(1),
        type_code: 3,
        doc: "Default min.insync.replicas of topics without their own.",
    },
    BrokerConfigDef {
        name: UNCLEAN_LEADER_ELECTION,
        kind: Kind::Bool,
        type_code: 1,
        doc: "Default unclean.leader.election.enable of topics without their own.",
    },
    BrokerConfigDef {
        name: MAX_CONNECTIONS,
        kind: Kind::Int(1),
        type_code: 3,
        doc: "Client connections the broker accepts at once (new ones are refused beyond it).",
    },
    BrokerConfigDef {
        name: MAX_CONNECTIONS_PER_IP,
        kind: Kind::Int(1),
        type_code: 3,
        doc: "Client connections accepted from one address at once.",
    },
    BrokerConfigDef {
        name: MAX_CONNECTIONS_PER_IP_OVERRIDES,
        kind: Kind::IpCounts,
        type_code: 2,
        doc: "Per-address exceptions to max.connections.per.ip, as ip:count,ip:count.",
    },
    BrokerConfigDef {
        name: CONNECTIONS_MAX_REAUTH_MS,
        kind: Kind::Long(0),
        type_code: 5,
        doc: "SASL sessions end this long after login unless re-authenticated (KIP-368); 0 is no limit. \
              Applies to logins after the change.",
    },
    BrokerConfigDef {
        name: LOG_FLUSH_INTERVAL_MS,
        kind: Kind::Long(1),
        type_code: 5,
        doc: "Appends nothing else fsyncs (acks=0/1, log.flush = none) are fsynced within about this long.",
    },
];

pub fn definition(name: &str) -> Option<&'static BrokerConfigDef> {
    DYNAMIC.iter().find(|d| d.name == name)
}

/// Checks one dynamic broker config; unknown keys are errors naming them.
pub fn validate(name: &str, value: &str) -> Result<()> {
    let def = definition(name)
        .ok_or_else(|| Error::InvalidConfig(format!("'{name}' is not a dynamic broker config")))?;
    let ok = match def.kind {
        Kind::Long(min) => value.trim().parse::<i64>().is_ok_and(|v| v >= min),
        Kind::Int(min) => value
            .trim()
            .parse::<i64>()
            .is_ok_and(|v| v >= min && i32::try_from(v).is_ok()),
        Kind::Bool => matches!(value, "true" | "false"),
        Kind::IpCounts => parse_ip_counts(value).is_ok(),
    };
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidConfig(match def.kind {
            Kind::Long(min) | Kind::Int(min) => {
                format!("'{name}' must be an integer >= {min}, got '{value}'")
            }
            Kind::Bool => format!("'{name}' must be true or false, got '{value}'"),
            Kind::IpCounts => format!(
                "'{name}' must be ip:count pairs separated by commas (e.g. 10.0.0.1:50,[::1]:5), got '{value}'"
            ),
        }))
    }
}

pub fn validate_all(configs: &BTreeMap<String, String>) -> Result<()> {
    configs.iter().try_for_each(|(k, v)| validate(k, v))
}

/// Parses Kafka's `ip:count,ip:count` (IPv6 as `[::1]:count`; addresses
/// only, not host names). The error is the entry that does not parse.
pub fn parse_ip_counts(text: &str) -> std::result::Result<HashMap<IpAddr, usize>, String> {
    let mut out = HashMap::new();
    for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let parsed = entry.rsplit_once(':').and_then(|(ip, count)| {
            let ip: IpAddr = ip.trim_matches(['[', ']']).parse().ok()?;
            Some((ip.to_canonical(), count.parse::<usize>().ok()?))
        });
        let (ip, count) = parsed.ok_or_else(|| entry.to_owned())?;
        out.insert(ip, count);
    }
    Ok(out)
}

/// The topic config a broker-level default stands in for.
pub fn topic_config_for(name: &str) -> Option<&'static str> {
    use crate::topic_config as t;
    Some(match name {
        LOG_RETENTION_MS => t::RETENTION_MS,
        LOG_RETENTION_BYTES => t::RETENTION_BYTES,
        LOG_SEGMENT_BYTES => t::SEGMENT_BYTES,
        LOG_ROLL_MS => t::SEGMENT_MS,
        MESSAGE_MAX_BYTES => t::MAX_MESSAGE_BYTES,
        MIN_INSYNC_REPLICAS => t::MIN_INSYNC_REPLICAS,
        UNCLEAN_LEADER_ELECTION => t::UNCLEAN_LEADER_ELECTION,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validates_known_keys_and_names_the_bad_one() {
        validate(LOG_RETENTION_MS, "-1").unwrap();
        validate(UNCLEAN_LEADER_ELECTION, "true").unwrap();
        let e = validate("listeners", "x").unwrap_err().to_string();
        assert!(e.contains("listeners"), "{e}");
        assert!(validate(MIN_INSYNC_REPLICAS, "0").is_err());
        assert!(validate(UNCLEAN_LEADER_ELECTION, "yes").is_err());
        validate(MAX_CONNECTIONS_PER_IP_OVERRIDES, "127.0.0.2:5, [::1]:0").unwrap();
        let e = validate(MAX_CONNECTIONS_PER_IP_OVERRIDES, "host:5")
            .unwrap_err()
            .to_string();
        assert!(e.contains("ip:count"), "{e}");
        assert!(validate(CONNECTIONS_MAX_REAUTH_MS, "-1").is_err());
        assert!(validate(LOG_FLUSH_INTERVAL_MS, "0").is_err());
        for d in DYNAMIC {
            if let Some(t) = topic_config_for(d.name) {
                assert!(crate::topic_config::definition(t).is_some(), "{t}");
            }
        }
    }
}
