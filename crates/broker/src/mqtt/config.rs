//! `[mqtt]`: the MQTT front end's listeners, topic mappings and limits.
//! Off by default; nothing is bound until `enabled = true`.

use std::net::SocketAddr;

use serde::Deserialize;

use super::mapping::{MappingRule, Mappings};
use crate::config::{ClientAuth, TlsConfig};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MqttConfig {
    pub enabled: bool,
    /// MQTT listeners: plain MQTT (1883 by convention) or, with `tls`,
    /// MQTTS (8883).
    pub listeners: Vec<MqttListenerConfig>,
    /// MQTT topic filter → Kafka topic rules; the first match wins.
    pub mappings: Vec<MappingRule>,
    /// Largest MQTT packet accepted or sent (checked from the fixed header,
    /// before the packet is buffered).
    pub max_packet_bytes: usize,
    /// QoS 1 messages a connection may have unacknowledged in each
    /// direction (incoming publishes awaiting durability, outgoing awaiting
    /// PUBACK); an MQTT 5 client's smaller Receive Maximum wins.
    pub max_inflight: usize,
    /// Messages read from the log and buffered for one write to a
    /// subscriber; the next are read only once those are written, so a
    /// slow subscriber stops reading the log, it never grows memory or
    /// stalls others.
    pub max_queued_messages: usize,
    /// Bytes of records read from one partition per read for a subscriber.
    pub read_bytes: usize,
    /// How long a QoS 1 publish may wait to become durable before the
    /// connection is closed without a PUBACK (the client resends).
    pub publish_timeout_ms: u64,
    /// Keep-alive a client asking for 0 (none) or more is held to, in seconds.
    pub max_keep_alive_secs: u16,
    /// Persistent sessions (MQTT 3 `clean_session = false`, MQTT 5 session
    /// expiry) not resumed within this many seconds are forgotten.
    pub max_session_expiry_secs: u32,
    /// Retained messages kept (last value per MQTT topic), at most.
    pub max_retained: usize,
}

impl Default for MqttConfig {
    fn default() -> Self {
        MqttConfig {
            enabled: false,
            listeners: Vec::new(),
            mappings: Vec::new(),
            max_packet_bytes: 1024 * 1024,
            max_inflight: 64,
            max_queued_messages: 256,
            read_bytes: 256 * 1024,
            publish_timeout_ms: 30_000,
            max_keep_alive_secs: 3_600,
            max_session_expiry_secs: 7 * 24 * 3_600,
            max_retained: 10_000,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttListenerConfig {
    pub name: String,
    pub bind: SocketAddr,
    /// MQTTS: TLS as on Kafka listeners; `client_auth = "required"` makes
    /// device certificates the credential (principal mapping rules apply).
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// Whether a client that gives neither a user name nor a client
    /// certificate is let in as `User:ANONYMOUS` (ACLs still apply).
    #[serde(default)]
    pub allow_anonymous: bool,
}

impl MqttConfig {
    /// Checks that need neither the network nor the disk.
    pub fn validate(&self, allow_plaintext_on_network: bool) -> Result<(), String> {
        self.mappings()?;
        if !self.enabled {
            return Ok(());
        }
        if self.listeners.is_empty() {
            return Err("mqtt.enabled needs at least one [[mqtt.listeners]]".into());
        }
        let mut names = std::collections::HashSet::new();
        for l in &self.listeners {
            if l.name.is_empty() || !names.insert(l.name.as_str()) {
                return Err(format!(
                    "mqtt listener names must be unique and non-empty, got '{}'",
                    l.name
                ));
            }
            if l.tls.is_none() && !l.bind.ip().is_loopback() && !allow_plaintext_on_network {
                return Err(format!(
                    "mqtt listener '{}' binds {} without TLS, which sends data and passwords in clear; \
                     bind a loopback address, add [mqtt.listeners.tls] or set allow_plaintext_on_network = true",
                    l.name, l.bind
                ));
            }
            if let Some(t) = &l.tls {
                if t.client_auth != ClientAuth::None && t.ca_file.is_none() {
                    return Err(format!(
                        "mqtt listener '{}': client_auth = {:?} needs ca_file",
                        l.name, t.client_auth
                    ));
                }
            }
        }
        if self.mappings.is_empty() {
            return Err("mqtt.enabled needs at least one [[mqtt.mappings]] rule".into());
        }
        if !(128..=268_435_455).contains(&self.max_packet_bytes) {
            return Err("mqtt.max_packet_bytes must be between 128 and 268435455".into());
        }
        if !(1..=65_535).contains(&self.max_inflight)
            || self.max_queued_messages == 0
            || self.read_bytes == 0
            || self.publish_timeout_ms == 0
            || self.max_keep_alive_secs == 0
        {
            return Err("mqtt.max_inflight (1 to 65535), mqtt.max_queued_messages, mqtt.read_bytes, mqtt.publish_timeout_ms and mqtt.max_keep_alive_secs must be at least 1".into());
        }
        Ok(())
    }

    /// The mapping rules, checked.
    pub fn mappings(&self) -> Result<Mappings, String> {
        Mappings::new(self.mappings.clone())
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    fn parse(toml: &str) -> Result<Config, String> {
        Config::from_toml_with_overrides(toml, &[])
    }

    #[test]
    fn off_by_default_and_checked_when_on() {
        let c = Config::default();
        assert!(!c.mqtt.enabled);
        let ok = parse(
            r#"
            [mqtt]
            enabled = true
            [[mqtt.listeners]]
            name = "MQTT"
            bind = "127.0.0.1:1883"
            [[mqtt.mappings]]
            filter = "factory/+/line/#"
            topic = "telemetry"
            "#,
        )
        .unwrap();
        assert_eq!(ok.mqtt.mappings().unwrap().rules().len(), 1);
        let no_rules = parse(
            "[mqtt]\nenabled = true\n[[mqtt.listeners]]\nname = \"M\"\nbind = \"127.0.0.1:0\"\n",
        )
        .unwrap_err();
        assert!(no_rules.contains("mqtt.mappings"), "{no_rules}");
        let exposed = parse(
            "[mqtt]\nenabled = true\n[[mqtt.listeners]]\nname = \"M\"\nbind = \"0.0.0.0:1883\"\n[[mqtt.mappings]]\nfilter = \"#\"\ntopic = \"t\"\n",
        )
        .unwrap_err();
        assert!(exposed.contains("without TLS"), "{exposed}");
        let bad_rule = parse("[[mqtt.mappings]]\nfilter = \"a/#/b\"\ntopic = \"t\"\n").unwrap_err();
        assert!(bad_rule.contains("mqtt.mappings[0].filter"), "{bad_rule}");
        let unknown = parse("[mqtt]\nport = 1883\n").unwrap_err();
        assert!(unknown.contains("port"), "{unknown}");
    }
}
