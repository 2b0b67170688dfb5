//! The remote side of the gateway: a blind-topic user on a remote broker.
//!
//! Publishes become sealed records through the SDK's sealing producer
//! (acks=all: a delivery report means the broker counted the record
//! durable). Subscriptions are served by one reader per Kafka topic, shared
//! by every device connection: it starts at the topics' current ends, opens
//! each sealed record and hands the MQTT message to the connections over a
//! bounded broadcast channel; a connection too far behind is closed rather
//! than buffered for. A persistent session instead has readers of its own,
//! from where it left off, into a bounded channel of its connection.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rdkafka::producer::DeliveryFuture;
use tokio::sync::{broadcast, mpsc};
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
    pub(crate) message: Message,
}

pub(crate) struct Remote {
    client: Arc<BlindClient>,
    producer: BlindProducer,
    /// The connection settings plus a cap on what each reader prefetches.
    consumer_props: KafkaProps,
    mappings: Mappings,
    /// Kafka topics with a running reader.
    readers: Arc<tokio::sync::Mutex<HashSet<String>>>,
    deliveries: broadcast::Sender<Arc<Delivery>>,
}

impl Remote {
    pub(crate) fn new(
        client: Arc<BlindClient>,
        props: KafkaProps,
        partitions: i32,
        mappings: Mappings,
        backlog: usize,
    ) -> Result<Remote, BlindError> {
        let mut producer_props = props.clone();
        // A QoS 1 PUBACK waits for this acknowledgement.
        producer_props.push(("acks".into(), "all".into()));
        let producer = BlindProducer::new(Arc::clone(&client), &producer_props, partitions)?
            .with_seal(SealOptions::default());
        let mut consumer_props = props;
        // A reader held back by slow devices buffers at most this much
        // (librdkafka's default is 64 MiB per reader).
        consumer_props.push(("queued.max.messages.kbytes".into(), "4096".into()));
        let (deliveries, _) = broadcast::channel(backlog.max(1));
        Ok(Remote {
            client,
            producer,
            consumer_props,
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
            &self.consumer_props,
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

    /// Starts a persistent session's own reader of `topic` (created if
    /// absent): the partitions in `positions` from there, the others from
    /// their current end. Ready when it returns; with where each partition
    /// started.
    pub(crate) async fn read_from(
        &self,
        topic: &str,
        positions: &HashMap<i32, i64>,
        out: mpsc::Sender<(String, Read)>,
    ) -> Result<(tokio::task::JoinHandle<()>, HashMap<i32, i64>), BlindError> {
        self.prepare(topic).await?;
        let consumer = BlindConsumer::from_positions(
            Arc::clone(&self.client),
            topic,
            &self.consumer_props,
            positions,
            REVOCATION_CHECK,
        )
        .await?;
        let started = consumer.started().clone();
        let task = tokio::spawn(read_for_session(
            consumer,
            topic.to_owned(),
            self.mappings.clone(),
            out,
        ));
        Ok((task, started))
    }

    pub(crate) fn flush(&self, timeout: Duration) -> Result<(), BlindError> {
        self.producer.flush(timeout)
    }
}

/// What a reader makes of one record: `None` when the record is not a
/// message for subscribers (it still moves a session's position past it).
pub(crate) struct Read {
    pub(crate) partition: i32,
    pub(crate) offset: i64,
    pub(crate) message: Option<Message>,
}

/// Reads `topic` until its key is revoked or the topic goes away, handing
/// each record to `sink`; stops early when `sink` says so.
async fn read_records<F, Fut>(
    consumer: BlindConsumer,
    topic: &str,
    mappings: &Mappings,
    mut sink: F,
) where
    F: FnMut(Read) -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    loop {
        let record = match consumer.recv().await {
            Ok(r) => r,
            Err(BlindError::Integrity {
                partition,
                offset,
                reason,
            }) => {
                tracing::warn!(%topic, partition, offset, %reason, "record failed verification; not delivered");
                if !sink(Read {
                    partition,
                    offset,
                    message: None,
                })
                .await
                {
                    return;
                }
                continue;
            }
            Err(e) if is_final(&e) => {
                tracing::error!(%topic, error = %e, "stopped reading the topic");
                return;
            }
            Err(e @ BlindError::Kafka(_)) => {
                tracing::debug!(%topic, error = %e, "reading the topic");
                tokio::time::sleep(RETRY_PAUSE).await;
                continue;
            }
            // The SDK already asked again for a while: a record was taken
            // from Kafka and could not be opened.
            Err(e) => {
                tracing::warn!(%topic, error = %e, "a record could not be opened and is not delivered");
                tokio::time::sleep(RETRY_PAUSE).await;
                continue;
            }
        };
        let message = match record.sealed {
            Some(Sequence::InOrder | Sequence::Gap { .. } | Sequence::Reordered) => {
                to_message(record.key.as_deref(), record.value, &record.headers)
                    .filter(|m| mappings.routes_to(&m.topic, topic))
            }
            // The same data key and counter again: the broker replayed the
            // record (or a producer retry stored it twice); sent once.
            Some(Sequence::Duplicate) => {
                tracing::debug!(%topic, partition = record.partition, offset = record.offset, "replayed record not delivered");
                None
            }
            // Only sealed records come from a gateway: anything else was
            // written by someone else and is not a device message; deletes
            // (key tags without a value) are not messages either.
            Some(Sequence::Deleted) | None => None,
        };
        let read = Read {
            partition: record.partition,
            offset: record.offset,
            message,
        };
        if !sink(read).await {
            return;
        }
    }
}

/// The gateway-wide reader of one topic, feeding every clean session; the
/// next subscription starts it again once it stopped.
async fn read_topic(
    consumer: BlindConsumer,
    topic: String,
    mappings: Mappings,
    out: broadcast::Sender<Arc<Delivery>>,
    readers: Arc<tokio::sync::Mutex<HashSet<String>>>,
) {
    read_records(consumer, &topic, &mappings, |read| {
        if let Some(message) = read.message {
            // No receiver (no subscriber right now) is not an error.
            let _ = out.send(Arc::new(Delivery { message }));
        }
        std::future::ready(true)
    })
    .await;
    readers.lock().await.remove(&topic);
}

/// A persistent session's own reader of one topic: every record, in
/// order, into the connection's bounded channel (a slow device holds the
/// reader back); ends with the connection.
async fn read_for_session(
    consumer: BlindConsumer,
    topic: String,
    mappings: Mappings,
    out: mpsc::Sender<(String, Read)>,
) {
    read_records(consumer, &topic, &mappings, |read| {
        let out = out.clone();
        let topic = topic.clone();
        async move { out.send((topic, read)).await.is_ok() }
    })
    .await;
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
