//! Blind topics, data path: ordinary Kafka (librdkafka through `rdkafka`)
//! on the physical name that [`BlindClient`] resolved, so batching,
//! retries and consumer groups come from a mature client. Values travel as
//! the application gives them (sealing is a separate layer).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::Message;
use tokio::sync::watch;

use crate::blind::{BlindClient, BlindError};

/// librdkafka properties (`bootstrap.servers`, `security.protocol`,
/// `sasl.*`, `ssl.*`, …) shared by producers and consumers.
pub type KafkaProps = Vec<(String, String)>;

fn config(props: &KafkaProps) -> ClientConfig {
    let mut c = ClientConfig::new();
    for (k, v) in props {
        c.set(k, v);
    }
    c
}

fn kafka(e: &KafkaError) -> BlindError {
    BlindError::Kafka(e.to_string())
}

/// A librdkafka producer with Veil's defaults (also for plain topics).
pub fn kafka_producer(props: &KafkaProps) -> Result<FutureProducer, BlindError> {
    let mut c = config(props);
    c.set("linger.ms", "5");
    c.create().map_err(|e| kafka(&e))
}

impl BlindError {
    /// Whether retrying cannot help (the key, the topic or the login is the
    /// problem), as opposed to a transient Kafka client error.
    pub fn is_fatal(&self) -> bool {
        !matches!(self, BlindError::Kafka(_) | BlindError::Throttled)
    }

    /// A copy of the fatal, data-free variants (the others hold IO errors).
    fn fatal_copy(&self) -> Option<BlindError> {
        match self {
            BlindError::Revoked { tenant } => Some(BlindError::Revoked {
                tenant: tenant.clone(),
            }),
            BlindError::UnknownTopic { topic } => Some(BlindError::UnknownTopic {
                topic: topic.clone(),
            }),
            BlindError::NotAuthenticated => Some(BlindError::NotAuthenticated),
            _ => None,
        }
    }
}

/// Produces to blind topics by plaintext name.
pub struct BlindProducer {
    client: Arc<BlindClient>,
    producer: FutureProducer,
    /// Partitions of a topic this producer creates.
    partitions: i32,
    physical: tokio::sync::Mutex<HashMap<String, String>>,
}

impl BlindProducer {
    pub fn new(
        client: Arc<BlindClient>,
        props: &KafkaProps,
        partitions: i32,
    ) -> Result<Self, BlindError> {
        Ok(BlindProducer {
            client,
            producer: kafka_producer(props)?,
            partitions,
            physical: tokio::sync::Mutex::new(HashMap::new()),
        })
    }

    /// The physical name of `topic`, creating the topic on first use.
    pub async fn physical_name(&self, topic: &str) -> Result<String, BlindError> {
        let mut cache = self.physical.lock().await;
        if let Some(p) = cache.get(topic) {
            return Ok(p.clone());
        }
        let r = self.client.create_topic(topic, self.partitions).await?;
        cache.insert(topic.to_owned(), r.physical_name.clone());
        Ok(r.physical_name)
    }

    /// Queue one record; the returned future completes on delivery. Waits
    /// while librdkafka's queue is full.
    pub async fn send(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        value: &[u8],
    ) -> Result<DeliveryFuture, BlindError> {
        let physical = self.physical_name(topic).await?;
        enqueue(&self.producer, &physical, key, value).await
    }

    /// Wait until everything queued is delivered (or `timeout` passes).
    pub fn flush(&self, timeout: Duration) -> Result<(), BlindError> {
        use rdkafka::producer::Producer as _;
        self.producer.flush(timeout).map_err(|e| kafka(&e))
    }
}

/// Queue one record on `producer`, backing off while its queue is full.
pub async fn enqueue(
    producer: &FutureProducer,
    topic: &str,
    key: Option<&[u8]>,
    value: &[u8],
) -> Result<DeliveryFuture, BlindError> {
    loop {
        let mut record = FutureRecord::<[u8], [u8]>::to(topic).payload(value);
        if let Some(k) = key {
            record = record.key(k);
        }
        match producer.send_result(record) {
            Ok(f) => return Ok(f),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Err((e, _)) => return Err(kafka(&e)),
        }
    }
}

/// Await a delivery and turn its failure into one sentence.
pub async fn delivered(f: DeliveryFuture) -> Result<(i32, i64), BlindError> {
    match f.await {
        Ok(Ok(d)) => Ok((d.partition, d.offset)),
        Ok(Err((e, _))) => Err(kafka(&e)),
        Err(_) => Err(BlindError::Kafka("the producer shut down".into())),
    }
}

/// One consumed record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
}

/// Consumes one blind topic by plaintext name in a consumer group.
///
/// Revocation must stop a running consumer promptly even if librdkafka only
/// sees fetch errors later, so a watchdog re-resolves the name every
/// `check_interval` (a cache hit on the broker: no modexp) and fails
/// [`BlindConsumer::recv`] as soon as the broker says the key is revoked.
pub struct BlindConsumer {
    client: Arc<BlindClient>,
    topic: String,
    physical: String,
    consumer: StreamConsumer,
    fatal: watch::Receiver<bool>,
    fatal_error: Arc<std::sync::Mutex<Option<BlindError>>>,
    watchdog: tokio::task::JoinHandle<()>,
}

impl BlindConsumer {
    /// Resolve `topic` and subscribe its physical name with `group`.
    pub async fn subscribe(
        client: Arc<BlindClient>,
        topic: &str,
        group: &str,
        from_beginning: bool,
        props: &KafkaProps,
        check_interval: Duration,
    ) -> Result<Self, BlindError> {
        let physical = client.resolve(topic).await?.physical_name;
        let consumer = kafka_consumer(props, group, from_beginning)?;
        consumer
            .subscribe(&[physical.as_str()])
            .map_err(|e| kafka(&e))?;
        let (tx, fatal) = watch::channel(false);
        let fatal_error = Arc::new(std::sync::Mutex::new(None));
        let watchdog = tokio::spawn(watch_revocation(
            client.clone(),
            topic.to_owned(),
            check_interval,
            tx,
            fatal_error.clone(),
        ));
        Ok(BlindConsumer {
            client,
            topic: topic.to_owned(),
            physical,
            consumer,
            fatal,
            fatal_error,
            watchdog,
        })
    }

    /// The physical Kafka name being consumed.
    pub fn physical_name(&self) -> &str {
        &self.physical
    }

    /// The next record. Fatal errors (revoked key, topic gone) end the
    /// stream; [`BlindError::Kafka`] errors are transient.
    pub async fn recv(&self) -> Result<Record, BlindError> {
        if let Some(e) = self.take_fatal() {
            return Err(e);
        }
        let mut fatal = self.fatal.clone();
        let got = tokio::select! {
            m = self.consumer.recv() => m.map(|m| Record {
                partition: m.partition(),
                offset: m.offset(),
                key: m.key().map(<[u8]>::to_vec),
                value: m.payload().map(<[u8]>::to_vec),
            }),
            _ = fatal.wait_for(|f| *f) => {
                return Err(self.take_fatal().unwrap_or(BlindError::Revoked { tenant: self.client.tenant().to_owned() }));
            }
        };
        match got {
            Ok(r) => Ok(r),
            Err(KafkaError::MessageConsumption(
                RDKafkaErrorCode::UnknownTopicOrPartition
                | RDKafkaErrorCode::UnknownTopic
                | RDKafkaErrorCode::TopicAuthorizationFailed,
            )) => {
                // Ask the broker why, for a precise sentence.
                match self.client.resolve(&self.topic).await {
                    Err(e) => Err(e),
                    Ok(_) => Err(BlindError::Kafka(
                        "the topic is temporarily unavailable".into(),
                    )),
                }
            }
            Err(e) => Err(kafka(&e)),
        }
    }

    fn take_fatal(&self) -> Option<BlindError> {
        self.fatal_error
            .lock()
            .expect("fatal error slot")
            .as_ref()
            .and_then(BlindError::fatal_copy)
    }

    /// Commit the offsets of what was consumed so far (synchronously).
    pub fn commit(&self) -> Result<(), BlindError> {
        self.consumer
            .commit_consumer_state(rdkafka::consumer::CommitMode::Sync)
            .map_err(|e| kafka(&e))
    }
}

impl Drop for BlindConsumer {
    fn drop(&mut self) {
        self.watchdog.abort();
    }
}

/// A librdkafka group consumer (also for plain topics).
pub fn kafka_consumer(
    props: &KafkaProps,
    group: &str,
    from_beginning: bool,
) -> Result<StreamConsumer, BlindError> {
    let mut c = config(props);
    c.set("group.id", group)
        .set(
            "auto.offset.reset",
            if from_beginning { "earliest" } else { "latest" },
        )
        .set("enable.partition.eof", "false")
        .set("allow.auto.create.topics", "false");
    c.create().map_err(|e| kafka(&e))
}

async fn watch_revocation(
    client: Arc<BlindClient>,
    topic: String,
    every: Duration,
    tx: watch::Sender<bool>,
    slot: Arc<std::sync::Mutex<Option<BlindError>>>,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(e) = client.resolve(&topic).await {
            // Transient failures (broker restarting) are retried next tick.
            if let Some(fatal) = e.fatal_copy() {
                *slot.lock().expect("fatal error slot") = Some(fatal);
                let _ = tx.send(true);
                return;
            }
        }
    }
}
