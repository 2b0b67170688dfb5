//! The remote side of the gateway: a blind-topic user on a remote broker.
//!
//! Publishes become sealed records through the SDK's sealing producer
//! (acks=all: a delivery report means the broker counted the record
//! durable). Subscriptions are served by one reader per Kafka topic, shared
//! by every device connection: it starts at the topics' current ends, opens
//! each sealed record and hands the MQTT message to the connections over a
//! bounded broadcast channel; a connection too far behind is closed rather
//! than buffered for.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rdkafka::producer::DeliveryFuture;
use tokio::sync::broadcast;
use veil_blind::Header;
use veil_broker::mqtt::codec::{Message, Properties};
use veil_broker::mqtt::ingest::{CONTENT_TYPE_HEADER, PAYLOAD_FORMAT_HEADER};
use veil_broker::mqtt::mapping::{record_topic, Mappings, TOPIC_HEADER};
use veil_client::blind_data::KafkaProps;
use veil_client::{BlindClient, BlindConsumer, BlindError, BlindProducer, SealOptions, Sequence};

/// How often a reader checks that the key is still valid.
const REVOCATION_CHECK: Duration = Duration::from_secs(1);
/// Pause after a transient read error, so a broker outage is not a busy loop.
const RETRY_PAUSE: Duration = Duration::from_millis(200);

/// A message read back from a Kafka topic, for the subscribers.
#[derive(Debug)]
pub(crate) struct Delivery {
    pub(crate) kafka_topic: String,
    pub(crate) message: Message,
}

pub(crate) struct Remote {
    client: Arc<BlindClient>,
    producer: BlindProducer,
    props: KafkaProps,
    mappings: Mappings,
    /// Kafka topics with a running reader.
    readers: Arc<tokio::sync::Mutex<HashSet<String>>>,
    deliveries: broadcast::Sender<Arc<Delivery>>,
}

impl Remote {
    pub(crate) fn new(
        client: Arc<BlindClient>,
        mut props: KafkaProps,
        partitions: i32,
        mappings: Mappings,
        backlog: usize,
    ) -> Result<Remote, BlindError> {
        // A QoS 1 PUBACK waits for this acknowledgement.
        props.push(("acks".into(), "all".into()));
        let producer = BlindProducer::new(Arc::clone(&client), &props, partitions)?
            .with_seal(SealOptions::default());
        let (deliveries, _) = broadcast::channel(backlog.max(1));
        Ok(Remote {
            client,
            producer,
            props,
            mappings,
            readers: Arc::new(tokio::sync::Mutex::new(HashSet::new())),
            deliveries,
        })
    }

    /// Seals and queues one record; the future completes when the remote
    /// broker acknowledged it (acks=all) or failed to.
    pub(crate) async fn send(
        &self,
        topic: &str,
        key: &[u8],
        value: &[u8],
        headers: &[Header],
    ) -> Result<DeliveryFuture, BlindError> {
        self.producer
            .send_record(topic, Some(key), Some(value), headers)
            .await
    }

    /// Finds `topic`, or creates it as a sealed blind topic.
    pub(crate) async fn prepare(&self, topic: &str) -> Result<(), BlindError> {
        self.producer.physical_name(topic).await.map(|_| ())
    }

    /// What every connection's subscriptions are fed from.
    pub(crate) fn deliveries(&self) -> broadcast::Receiver<Arc<Delivery>> {
        self.deliveries.subscribe()
    }

    /// Makes sure `topic` is read: creates the sealed blind topic if it does
    /// not exist yet and starts its reader at the current end. A record
    /// produced after this returns reaches [`Self::deliveries`].
    pub(crate) async fn read(&self, topic: &str) -> Result<(), BlindError> {
        let mut readers = self.readers.lock().await;
        if readers.contains(topic) {
            return Ok(());
        }
        self.prepare(topic).await?;
        let consumer = BlindConsumer::from_end(
            Arc::clone(&self.client),
            topic,
            &self.props,
            REVOCATION_CHECK,
        )
        .await?;
        readers.insert(topic.to_owned());
        tokio::spawn(read_topic(
            consumer,
            topic.to_owned(),
            self.mappings.clone(),
            self.deliveries.clone(),
            Arc::clone(&self.readers),
        ));
        Ok(())
    }

    pub(crate) fn flush(&self, timeout: Duration) -> Result<(), BlindError> {
        self.producer.flush(timeout)
    }
}

/// One topic's reader, until its key is revoked or the topic goes away (the
/// next subscription then starts it again).
async fn read_topic(
    consumer: BlindConsumer,
    topic: String,
    mappings: Mappings,
    out: broadcast::Sender<Arc<Delivery>>,
    readers: Arc<tokio::sync::Mutex<HashSet<String>>>,
) {
    loop {
        let record = match consumer.recv().await {
            Ok(r) => r,
            Err(e @ BlindError::Integrity { .. }) => {
                tracing::warn!(%topic, error = %e, "record not delivered");
                continue;
            }
            Err(e) if is_final(&e) => {
                tracing::error!(%topic, error = %e, "stopped reading the topic");
                break;
            }
            Err(e) => {
                tracing::debug!(%topic, error = %e, "reading the topic");
                tokio::time::sleep(RETRY_PAUSE).await;
                continue;
            }
        };
        match record.sealed {
            Some(Sequence::InOrder | Sequence::Gap { .. } | Sequence::Reordered) => {}
            // The same data key and counter again: the broker replayed the
            // record (or a producer retry stored it twice); sent once.
            Some(Sequence::Duplicate) => {
                tracing::debug!(%topic, partition = record.partition, offset = record.offset, "replayed record not delivered");
                continue;
            }
            // Only sealed records come from a gateway: anything else was
            // written by someone else and is not a device message; deletes
            // (key tags without a value) are not messages either.
            Some(Sequence::Deleted) | None => continue,
        }
        let Some(message) = to_message(record.key.as_deref(), record.value, &record.headers) else {
            continue;
        };
        if !mappings.routes_to(&message.topic, &topic) {
            continue;
        }
        // No receiver (no subscriber right now) is not an error.
        let _ = out.send(Arc::new(Delivery {
            kafka_topic: topic.clone(),
            message,
        }));
    }
    readers.lock().await.remove(&topic);
}

/// Whether trying again cannot help: the key, the login or the topic is
/// the problem. Anything else (the broker unreachable or restarting, a
/// transient Kafka error) may pass, so a publish is left for the device to
/// resend and a reader keeps reading.
pub(crate) fn is_final(e: &BlindError) -> bool {
    matches!(
        e,
        BlindError::MissingKeyFile { .. }
            | BlindError::BadKeyFile { .. }
            | BlindError::Revoked { .. }
            | BlindError::NotIssued { .. }
            | BlindError::KeyOfAnotherUser { .. }
            | BlindError::KeyUserMismatch(_)
            | BlindError::UnknownTopic { .. }
            | BlindError::NotAuthenticated
            | BlindError::Unsupported
            | BlindError::SealedTopic { .. }
    )
}

/// The MQTT message an opened record is (QoS set per subscriber).
fn to_message(key: Option<&[u8]>, value: Option<Vec<u8>>, headers: &[Header]) -> Option<Message> {
    let topic_header = headers
        .iter()
        .find(|(k, _)| k == TOPIC_HEADER)
        .and_then(|(_, v)| v.as_deref());
    let topic = record_topic(key, topic_header)?.to_owned();
    let mut properties = Properties::default();
    for (k, v) in headers {
        let Some(Ok(v)) = v.as_deref().map(std::str::from_utf8) else {
            continue;
        };
        match k.as_str() {
            TOPIC_HEADER => {}
            CONTENT_TYPE_HEADER => properties.content_type = Some(v.to_owned()),
            PAYLOAD_FORMAT_HEADER => properties.payload_format = v.parse().ok(),
            _ => properties.user.push((k.clone(), v.to_owned())),
        }
    }
    Some(Message {
        topic,
        payload: Bytes::from(value.unwrap_or_default()),
        qos: 0,
        retain: false,
        properties,
    })
}

#[cfg(test)]
mod tests {
    use super::to_message;

    #[test]
    fn opened_records_become_messages() {
        let headers = vec![
            (
                "mqtt.topic".to_owned(),
                Some(b"alarms/berlin/fire".to_vec()),
            ),
            ("mqtt.content_type".to_owned(), Some(b"text/plain".to_vec())),
            ("unit".to_owned(), Some(b"C".to_vec())),
        ];
        let m = to_message(Some(b"site-berlin"), Some(b"1".to_vec()), &headers).unwrap();
        assert_eq!(m.topic, "alarms/berlin/fire");
        assert_eq!(&m.payload[..], b"1");
        assert_eq!(m.properties.content_type.as_deref(), Some("text/plain"));
        assert_eq!(m.properties.user, vec![("unit".to_owned(), "C".to_owned())]);
        // A key that is not a topic name, and no header: not a message.
        assert!(to_message(Some(b"a/+/b"), None, &[]).is_none());
    }
}
