//! MQTT PUBLISH → a record in a Kafka partition, through the same partition
//! calls the Produce handler makes (`Partition::append`, then
//! `Partition::wait_replicated` as for `acks=all`).
//!
//! The record: key from the mapping rule (the MQTT topic by default), value
//! the payload, MQTT 5 user properties as headers, and Veil's own `mqtt.*`
//! headers for what Kafka has no field for. The partition is the one Kafka's
//! default partitioner gives the key, so Kafka producers writing the same
//! key and MQTT devices share per-topic order.
//!
//! [`append`] is synchronous and runs in PUBLISH order; the returned
//! [`Appended`] is then awaited ([`Appended::durable`]) off the read path,
//! so a connection's QoS 1 publishes share one group commit.

use std::sync::Arc;
use std::time::Duration;

use veil_log::records::{self, Header};

use super::codec::Message;
use super::mapping::{Mappings, TOPIC_HEADER};
use crate::auth::acl_matcher::Action;
use crate::auth::{Operation, ResourceType};
use crate::error::Error;
use crate::partition::Partition;
use crate::state::BrokerState;

/// Header carrying an MQTT 5 Content Type.
pub const CONTENT_TYPE_HEADER: &str = "mqtt.content_type";
/// Header carrying an MQTT 5 Payload Format Indicator.
pub const PAYLOAD_FORMAT_HEADER: &str = "mqtt.payload_format";

/// Who publishes, for ACLs.
#[derive(Debug, Clone)]
pub struct Publisher {
    pub principal: String,
    pub host: std::net::IpAddr,
}

/// Why a publish was not taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// No mapping rule matches the MQTT topic.
    Unmapped,
    /// No WRITE on the mapped Kafka topic (or it is a blind topic the
    /// principal may not see).
    NotAuthorized,
    /// The mapped Kafka topic does not exist.
    UnknownTopic(String),
    /// The partition cannot take it now (not the leader here, too few
    /// in-sync replicas, a failed disk, a timeout); the client may retry.
    Unavailable(String),
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refused::Unmapped => f.write_str("no [[mqtt.mappings]] rule maps this topic"),
            Refused::NotAuthorized => f.write_str("not authorized to write the mapped topic"),
            Refused::UnknownTopic(t) => write!(f, "the mapped Kafka topic '{t}' does not exist"),
            Refused::Unavailable(why) => f.write_str(why),
        }
    }
}

/// A record appended, not yet known durable.
#[derive(Debug)]
pub struct Appended {
    partition: Arc<Partition>,
    end_offset: i64,
    min_insync: usize,
    live_window: Duration,
}

impl Appended {
    /// Resolves once the append counts as `acks=all` would count it: the
    /// high watermark covers it (fsynced with `log.flush = "sync"`, on
    /// every in-sync replica when replicated).
    pub async fn durable(self, timeout: Duration) -> Result<(), Refused> {
        let deadline = tokio::time::Instant::now() + timeout;
        self.partition
            .wait_replicated(self.end_offset, self.min_insync, self.live_window, deadline)
            .await
            .map_err(|e| Refused::Unavailable(e.client_message()))
    }

    pub fn partition(&self) -> (&str, i32) {
        (&self.partition.topic, self.partition.index)
    }

    /// The offset of the appended record.
    pub fn offset(&self) -> i64 {
        self.end_offset - 1
    }
}

/// Record headers as owned name and value bytes.
pub type OwnedHeaders = Vec<(Vec<u8>, Vec<u8>)>;

/// The record a message becomes: key and headers (the value is the payload).
pub fn record_parts(message: &Message, key: &[u8], key_is_topic: bool) -> (Vec<u8>, OwnedHeaders) {
    let mut headers = Vec::new();
    if !key_is_topic {
        headers.push((
            TOPIC_HEADER.as_bytes().to_vec(),
            message.topic.as_bytes().to_vec(),
        ));
    }
    let p = &message.properties;
    if let Some(ct) = &p.content_type {
        headers.push((
            CONTENT_TYPE_HEADER.as_bytes().to_vec(),
            ct.as_bytes().to_vec(),
        ));
    }
    if let Some(f) = p.payload_format {
        headers.push((
            PAYLOAD_FORMAT_HEADER.as_bytes().to_vec(),
            f.to_string().into_bytes(),
        ));
    }
    for (k, v) in &p.user {
        headers.push((k.as_bytes().to_vec(), v.as_bytes().to_vec()));
    }
    (key.to_vec(), headers)
}

/// Maps, authorizes and appends one message; `Ok` once it is in the log
/// (QoS 0 needs no more), with what QoS 1 waits on.
pub fn append(
    state: &BrokerState,
    mappings: &Mappings,
    who: &Publisher,
    message: &Message,
) -> Result<Appended, Refused> {
    let target = mappings.target(&message.topic).ok_or(Refused::Unmapped)?;
    let allowed = state.authorizer.authorize(
        &state.metrics,
        Action {
            principal: &who.principal,
            host: who.host,
            operation: Operation::Write,
            resource_type: ResourceType::Topic,
            name: &target.kafka_topic,
        },
    );
    if !allowed {
        return Err(Refused::NotAuthorized);
    }
    let topic = state
        .topics
        .get(&target.kafka_topic)
        .filter(|t| state.blind.visible(&who.principal, &t.name))
        .ok_or_else(|| Refused::UnknownTopic(target.kafka_topic.clone()))?;
    let count = u32::try_from(topic.partition_count()).unwrap_or(0);
    if count == 0 {
        return Err(Refused::UnknownTopic(target.kafka_topic));
    }
    let index = veil_blind::partitioner::partition_for_key(&target.key, count) as i32;
    let partition = topic
        .led_here(index, state.node_id())
        .map_err(|e| Refused::Unavailable(e.client_message()))?;
    let min_insync = state
        .admit_append(&topic, index, partition, true)
        .map_err(|(_, message)| Refused::Unavailable(message))?;
    let live_window = state.cluster.session_timeout;
    let (key, headers) = record_parts(message, &target.key, target.key_is_topic);
    let headers: Vec<Header<'_>> = headers
        .iter()
        .map(|(k, v)| (k.as_slice(), Some(v.as_slice())))
        .collect();
    let now = state.clock.now_ms();
    let batch =
        records::encode_batch_with_headers(&[(Some(&key), Some(&message.payload), &headers)], now);
    // The topic's compression.type applies to MQTT records as to produced
    // ones (one small record: done here, in PUBLISH order).
    let policy = partition.with_log(|log| log.config().produce_policy());
    let mut batch = veil_log::rewrite::prepare_produce(&batch, &policy)
        .map_err(|e| Refused::Unavailable(Error::from(e).client_message()))?
        .unwrap_or(batch);
    let info = partition.append(&mut batch, now).map_err(|e| {
        if matches!(
            e,
            Error::Log(veil_log::Error::Io(_) | veil_log::Error::Poisoned)
        ) {
            tracing::error!(topic = %partition.topic, partition = partition.index, error = %e, "MQTT append failed");
        }
        Refused::Unavailable(e.client_message())
    })?;
    state
        .metrics
        .produced_records
        .with_label_values(&[partition.topic.as_str()])
        .inc();
    state
        .metrics
        .topic_bytes_in
        .with_label_values(&[partition.topic.as_str()])
        .inc_by(batch.len() as u64);
    Ok(Appended {
        partition: Arc::clone(partition),
        end_offset: info.last_offset + 1,
        min_insync,
        live_window,
    })
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::mqtt::codec::Properties;

    #[test]
    fn records_carry_the_topic_when_the_key_is_not_it() {
        let m = Message {
            topic: "alarms/berlin/fire".into(),
            payload: Bytes::from_static(b"1"),
            qos: 1,
            retain: false,
            properties: Properties {
                user: vec![("unit".into(), "C".into())],
                content_type: Some("text/plain".into()),
                payload_format: Some(1),
            },
        };
        let (key, headers) = record_parts(&m, b"site-berlin", false);
        assert_eq!(key, b"site-berlin");
        let names: Vec<&[u8]> = headers.iter().map(|(k, _)| k.as_slice()).collect();
        assert_eq!(
            names,
            vec![
                TOPIC_HEADER.as_bytes(),
                CONTENT_TYPE_HEADER.as_bytes(),
                PAYLOAD_FORMAT_HEADER.as_bytes(),
                b"unit"
            ]
        );
        let (_, headers) = record_parts(&m, m.topic.as_bytes(), true);
        assert!(headers.iter().all(|(k, _)| k != TOPIC_HEADER.as_bytes()));
    }
}
