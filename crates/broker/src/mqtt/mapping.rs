//! From MQTT topics to Kafka topics and back: the `[[mqtt.mappings]]` rules.
//!
//! A rule maps an MQTT topic filter to a Kafka topic and says what the
//! record key is: the whole MQTT topic (the default) or a template over the
//! filter's wildcard levels (`{1}` is the first `+`, `{#}` what `#`
//! matched). The first rule whose filter matches a published topic wins.
//! When the key is not the whole topic, the topic travels in the
//! [`TOPIC_HEADER`] header so subscribers can still be served by topic.
//! A subscription reads every Kafka topic whose rule's filter overlaps its
//! own, and keeps the records whose MQTT topic its filter matches.

use serde::Deserialize;

use super::filter;

/// Kafka header carrying the MQTT topic when the record key is not it.
pub const TOPIC_HEADER: &str = "mqtt.topic";

/// One mapping rule as configured.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MappingRule {
    /// MQTT topic filter, e.g. `factory/+/line/#`.
    pub filter: String,
    /// The Kafka topic records land in (on the gateway: the blind topic's
    /// plaintext name).
    pub topic: String,
    /// Record key template: `{topic}` (default), `{1}`…`{9}` for the `+`
    /// levels, `{#}` for what `#` matched, and literal text.
    #[serde(default)]
    pub key: Option<String>,
}

/// The rules, checked once.
#[derive(Debug, Clone, Default)]
pub struct Mappings {
    rules: Vec<MappingRule>,
}

/// Where a published MQTT message goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub kafka_topic: String,
    pub key: Vec<u8>,
    /// Whether the key is the whole MQTT topic (else the topic needs the header).
    pub key_is_topic: bool,
}

impl Mappings {
    /// Validates every rule: a valid filter, a non-empty topic, a template
    /// that names only wildcard levels the filter has.
    pub fn new(rules: Vec<MappingRule>) -> Result<Mappings, String> {
        for (i, r) in rules.iter().enumerate() {
            filter::validate_filter(&r.filter)
                .map_err(|e| format!("mqtt.mappings[{i}].filter '{}': {e}", r.filter))?;
            if r.topic.is_empty() || r.topic.len() > 249 {
                return Err(format!(
                    "mqtt.mappings[{i}].topic must be 1 to 249 characters"
                ));
            }
            if let Some(t) = &r.key {
                let plus = r.filter.split('/').filter(|l| *l == "+").count();
                let hash = r.filter.ends_with('#');
                check_template(t, plus, hash)
                    .map_err(|e| format!("mqtt.mappings[{i}].key '{t}': {e}"))?;
            }
        }
        Ok(Mappings { rules })
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    pub fn rules(&self) -> &[MappingRule] {
        &self.rules
    }

    /// The Kafka topic and key for a message published to `topic`, or
    /// `None` when no rule maps it (the publish is refused, never dropped).
    pub fn target(&self, topic: &str) -> Option<Target> {
        self.rules.iter().find_map(|r| {
            let caps = filter::captures(&r.filter, topic)?;
            let (key, key_is_topic) = match &r.key {
                None => (topic.as_bytes().to_vec(), true),
                Some(t) => {
                    let k = expand(t, topic, &caps);
                    let is_topic = k == topic;
                    (k.into_bytes(), is_topic)
                }
            };
            Some(Target {
                kafka_topic: r.topic.clone(),
                key,
                key_is_topic,
            })
        })
    }

    /// The Kafka topics a subscription to `filter` reads, without repeats.
    pub fn topics_for_filter(&self, filter: &str) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for r in &self.rules {
            if filter::overlap(&r.filter, filter) && !out.contains(&r.topic) {
                out.push(r.topic.clone());
            }
        }
        out
    }

    /// Whether a record read from `kafka_topic` for MQTT topic `topic`
    /// belongs there: the rule that maps `topic` names this Kafka topic
    /// (so a record is never delivered under a topic that maps elsewhere).
    pub fn routes_to(&self, topic: &str, kafka_topic: &str) -> bool {
        self.target(topic)
            .is_some_and(|t| t.kafka_topic == kafka_topic)
    }
}

/// The MQTT topic of a record read back: the [`TOPIC_HEADER`] header, else
/// the key, if either is a valid topic name.
pub fn record_topic<'a>(key: Option<&'a [u8]>, header: Option<&'a [u8]>) -> Option<&'a str> {
    let raw = header.or(key)?;
    let s = std::str::from_utf8(raw).ok()?;
    filter::validate_name(s).ok()?;
    Some(s)
}

fn check_template(t: &str, plus: usize, hash: bool) -> Result<(), String> {
    let mut rest = t;
    while let Some(open) = rest.find('{') {
        let after = &rest[open + 1..];
        let close = after.find('}').ok_or_else(|| "unclosed '{'".to_owned())?;
        let name = &after[..close];
        match name {
            "topic" => {}
            "#" if hash => {}
            "#" => return Err("{#} needs a filter ending in '#'".into()),
            n => {
                let i: usize = n
                    .parse()
                    .map_err(|_| format!("unknown placeholder {{{n}}}"))?;
                if i == 0 || i > plus {
                    return Err(format!("{{{i}}} but the filter has {plus} '+' level(s)"));
                }
            }
        }
        rest = &after[close + 1..];
    }
    if t.is_empty() {
        return Err("an empty key template".into());
    }
    Ok(())
}

fn expand(t: &str, topic: &str, caps: &[&str]) -> String {
    let mut out = String::with_capacity(t.len() + topic.len());
    let mut rest = t;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let Some(close) = after.find('}') else {
            out.push_str(&rest[open..]);
            return out;
        };
        match &after[..close] {
            "topic" => out.push_str(topic),
            // `#` is always the last capture when the filter has one.
            "#" => out.push_str(caps.last().copied().unwrap_or("")),
            n => {
                if let Some(c) = n
                    .parse::<usize>()
                    .ok()
                    .and_then(|i| caps.get(i.wrapping_sub(1)))
                {
                    out.push_str(c);
                }
            }
        }
        rest = &after[close + 1..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(filter: &str, topic: &str, key: Option<&str>) -> MappingRule {
        MappingRule {
            filter: filter.into(),
            topic: topic.into(),
            key: key.map(Into::into),
        }
    }

    #[test]
    fn the_first_matching_rule_picks_topic_and_key() {
        let m = Mappings::new(vec![
            rule("factory/+/line/#", "telemetry", None),
            rule("alarms/+/#", "alarms", Some("site-{1}")),
            rule("#", "other", None),
        ])
        .unwrap();
        let t = m.target("factory/7/line/3/temp").unwrap();
        assert_eq!(t.kafka_topic, "telemetry");
        assert_eq!(t.key, b"factory/7/line/3/temp");
        assert!(t.key_is_topic);
        let t = m.target("alarms/berlin/fire").unwrap();
        assert_eq!(
            (t.kafka_topic.as_str(), t.key.as_slice()),
            ("alarms", &b"site-berlin"[..])
        );
        assert!(!t.key_is_topic);
        assert_eq!(m.target("x").unwrap().kafka_topic, "other");
        assert!(m.routes_to("x", "other"));
        assert!(!m.routes_to("x", "telemetry"));
    }

    #[test]
    fn unmapped_topics_have_no_target() {
        let m = Mappings::new(vec![rule("a/#", "t", None)]).unwrap();
        assert!(m.target("b/c").is_none());
    }

    #[test]
    fn subscriptions_read_every_overlapping_rule_once() {
        let m = Mappings::new(vec![
            rule("factory/+/line/#", "telemetry", None),
            rule("factory/+/oven", "telemetry", None),
            rule("alarms/#", "alarms", None),
        ])
        .unwrap();
        assert_eq!(m.topics_for_filter("#"), ["telemetry", "alarms"]);
        assert_eq!(m.topics_for_filter("factory/7/#"), ["telemetry"]);
        assert!(m.topics_for_filter("nothing/here").is_empty());
    }

    #[test]
    fn bad_rules_are_refused_naming_the_rule() {
        for (r, want) in [
            (rule("a/#/b", "t", None), "filter"),
            (rule("a", "", None), "topic"),
            (rule("a/+", "t", Some("{2}")), "1 '+'"),
            (rule("a/+", "t", Some("{#}")), "ending in '#'"),
            (rule("a/+", "t", Some("{x}")), "unknown placeholder"),
            (rule("a/+", "t", Some("{1")), "unclosed"),
        ] {
            let err = Mappings::new(vec![r]).unwrap_err();
            assert!(
                err.contains("mqtt.mappings[0]") && err.contains(want),
                "{err}"
            );
        }
    }

    #[test]
    fn the_record_topic_prefers_the_header_and_needs_a_valid_name() {
        assert_eq!(record_topic(Some(b"a/b"), None), Some("a/b"));
        assert_eq!(record_topic(Some(b"k"), Some(b"a/b")), Some("a/b"));
        assert_eq!(record_topic(Some(b"a/+"), None), None);
        assert_eq!(record_topic(Some(&[0xff]), None), None);
        assert_eq!(record_topic(None, None), None);
    }
}
