//! Blind topics, data path: ordinary Kafka (librdkafka through `rdkafka`)
//! on the physical name that [`BlindClient`] resolved, so batching,
//! retries and consumer groups come from a mature client. Values travel as
//! the application gives them, or sealed ([`crate::sealed`]) when the
//! producer is built [`BlindProducer::with_seal`] and, on the consumer,
//! whenever the topic is sealed.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::Message;
use tokio::sync::watch;

use crate::blind::{BlindClient, BlindError};
use crate::sealed::{self, Opener, SealOptions, SealedTopic, Sequence};

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

/// How often a producer of unsealed blind records re-resolves its topics
/// (a cache hit on the broker) to notice that its key was revoked. Sealing
/// producers do the same every [`SealOptions::epoch_check`].
const PRODUCER_REVOCATION_CHECK: Duration = Duration::from_millis(250);

/// Produces to blind topics by plaintext name. A revoked key fails the next
/// send within about 250 ms.
pub struct BlindProducer {
    client: Arc<BlindClient>,
    producer: FutureProducer,
    /// Partitions of a topic this producer creates.
    partitions: i32,
    /// topic → (physical name, last revocation check).
    physical: tokio::sync::Mutex<HashMap<String, (String, Instant)>>,
    /// `Some` when every record is sealed.
    seal: Option<SealOptions>,
    sealed: tokio::sync::Mutex<HashMap<String, SealedTopic>>,
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
            seal: None,
            sealed: tokio::sync::Mutex::new(HashMap::new()),
        })
    }

    /// Seal every record (BLIND.md §6.2); the topic becomes sealed on first use.
    #[must_use]
    pub fn with_seal(mut self, opts: SealOptions) -> Self {
        self.seal = Some(opts);
        self
    }

    /// The physical name of `topic`, creating the topic on first use. A
    /// non-sealing producer refuses a sealed topic.
    pub async fn physical_name(&self, topic: &str) -> Result<String, BlindError> {
        if let Some(opts) = self.seal {
            let mut cache = self.sealed.lock().await;
            if let Some(t) = cache.get(topic) {
                return Ok(t.physical.clone());
            }
            let t = SealedTopic::open(&self.client, topic, self.partitions, opts).await?;
            let physical = t.physical.clone();
            cache.insert(topic.to_owned(), t);
            return Ok(physical);
        }
        let mut cache = self.physical.lock().await;
        if let Some((p, checked)) = cache.get_mut(topic) {
            if checked.elapsed() >= PRODUCER_REVOCATION_CHECK {
                // A revoked key stops the producer within one interval. A
                // transient failure (broker restarting) does not: these
                // records are not sealed, no key is at stake.
                match self.client.resolve(topic).await {
                    Err(e) if e.fatal_copy().is_some() => return Err(e),
                    _ => *checked = Instant::now(),
                }
            }
            return Ok(p.clone());
        }
        let r = self.client.create_topic(topic, self.partitions).await?;
        if sealed::topic_key(&self.client, topic, &r.physical_name, false)
            .await?
            .is_some()
        {
            return Err(BlindError::SealedTopic {
                topic: topic.to_owned(),
            });
        }
        cache.insert(topic.to_owned(), (r.physical_name.clone(), Instant::now()));
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
        if self.seal.is_some() {
            return self.send_record(topic, key, Some(value), &[]).await;
        }
        let physical = self.physical_name(topic).await?;
        enqueue(&self.producer, &physical, key, value).await
    }

    /// Queue one record with headers and a possibly null value. On a sealing
    /// producer, key, value and headers travel only inside the envelopes.
    pub async fn send_record(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[veil_blind::Header],
    ) -> Result<DeliveryFuture, BlindError> {
        if self.seal.is_none() {
            let physical = self.physical_name(topic).await?;
            let mut h = rdkafka::message::OwnedHeaders::new_with_capacity(headers.len());
            for (name, v) in headers {
                h = h.insert(rdkafka::message::Header {
                    key: name,
                    value: v.as_deref(),
                });
            }
            return enqueue_to(&self.producer, &physical, None, key, value, Some(&h)).await;
        }
        let mut cache = self.sealed.lock().await;
        if !cache.contains_key(topic) {
            drop(cache);
            self.physical_name(topic).await?;
            cache = self.sealed.lock().await;
        }
        let t = cache
            .get_mut(topic)
            .ok_or_else(|| BlindError::Scheme("sealed topic state missing".into()))?;
        let out = match (key, value) {
            // A delete on a sealed (compacted) topic: a clear tombstone under the key tag.
            (Some(k), None) if headers.is_empty() => t.tombstone(k)?,
            (Some(_), None) => {
                return Err(BlindError::Scheme(
                    "a sealed delete (null value) cannot carry headers".into(),
                ))
            }
            _ => t.seal(&self.client, key, value, headers).await?,
        };
        // Enqueue while still holding the topic state: concurrent senders
        // then queue a data key's records in counter order, so consumers
        // see no false reordering.
        enqueue_to(
            &self.producer,
            &t.physical,
            Some(out.partition),
            out.key.as_ref().map(<[u8; 32]>::as_slice),
            out.value.as_deref(),
            None,
        )
        .await
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
    enqueue_to(producer, topic, None, key, Some(value), None).await
}

/// [`enqueue`] with an explicit partition, a possibly null value and headers
/// (borrowed: librdkafka takes a copy per attempt anyway).
pub async fn enqueue_to(
    producer: &FutureProducer,
    topic: &str,
    partition: Option<i32>,
    key: Option<&[u8]>,
    value: Option<&[u8]>,
    headers: Option<&rdkafka::message::OwnedHeaders>,
) -> Result<DeliveryFuture, BlindError> {
    loop {
        let mut record = FutureRecord::<[u8], [u8]>::to(topic);
        if let Some(v) = value {
            record = record.payload(v);
        }
        if let Some(k) = key {
            record = record.key(k);
        }
        if let Some(p) = partition {
            record = record.partition(p);
        }
        if let Some(h) = headers {
            record = record.headers(h.clone());
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
    pub headers: Vec<veil_blind::Header>,
    /// Kafka timestamp in ms (in clear also on sealed topics: retention needs it).
    pub timestamp: Option<i64>,
    /// On a sealed topic: the record verified, and where it stands in its
    /// producer session (the application decides what a gap or replay means).
    /// `None` on a topic that is not sealed.
    pub sealed: Option<Sequence>,
}

/// A partition's high watermark. A topic created a moment ago may not be
/// in librdkafka's metadata yet: asked again a few times, briefly.
fn high_watermark(
    consumer: &StreamConsumer,
    topic: &str,
    partition: i32,
) -> Result<i64, BlindError> {
    const ATTEMPTS: u32 = 10;
    let mut attempt = 1;
    loop {
        match consumer.fetch_watermarks(topic, partition, Duration::from_secs(10)) {
            Ok((_, high)) => return Ok(high),
            Err(e) if attempt >= ATTEMPTS => return Err(kafka(&e)),
            Err(_) => {
                attempt += 1;
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }
}

/// Attempts at opening one record whose data key could not be fetched for
/// a reason that may pass, and the longest pause between two.
const OPEN_ATTEMPTS: u32 = 10;
const OPEN_MAX_PAUSE: Duration = Duration::from_secs(2);

/// Opens one record, asking again while fetching its data key fails for a
/// reason that may pass (the broker throttling key requests, a lost
/// connection): the record is already taken from the Kafka consumer, so
/// giving up at once would skip it.
async fn open_retrying(
    opener: &mut Opener,
    client: &BlindClient,
    partition: i32,
    offset: i64,
    value: Option<&[u8]>,
) -> Result<(veil_blind::OpenedRecord, Sequence), BlindError> {
    let mut pause = Duration::from_millis(100);
    let mut attempt = 1;
    loop {
        match opener.open(client, partition, offset, value).await {
            Err(
                BlindError::Throttled
                | BlindError::Kafka(_)
                | BlindError::Connect(_)
                | BlindError::Client(_),
            ) if attempt < OPEN_ATTEMPTS => {
                attempt += 1;
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(OPEN_MAX_PAUSE);
            }
            result => return result,
        }
    }
}

/// Numbers the group ids of [`BlindConsumer::from_end`] readers.
static FROM_END_READERS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

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
    /// `Some` on a sealed topic: every record must verify. Set at subscribe,
    /// or later when a record that looks sealed arrives and the broker now
    /// holds the topic key (the topic was sealed after we subscribed).
    opener: tokio::sync::Mutex<Option<Opener>>,
    fatal: watch::Receiver<bool>,
    fatal_error: Arc<std::sync::Mutex<Option<BlindError>>>,
    watchdog: tokio::task::JoinHandle<()>,
    /// Where each assigned partition started ([`BlindConsumer::from_positions`]).
    started: HashMap<i32, i64>,
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
        Self::start(client, topic, physical, consumer, check_interval).await
    }

    /// Resolve `topic` and read each of its partitions from its current
    /// end, outside any consumer group (nothing is committed): for a reader
    /// that only wants what is produced from now on. Ready when it returns:
    /// every record produced afterwards is received. Partitions added later
    /// are not read.
    pub async fn from_end(
        client: Arc<BlindClient>,
        topic: &str,
        props: &KafkaProps,
        check_interval: Duration,
    ) -> Result<Self, BlindError> {
        Self::from_positions(client, topic, props, &HashMap::new(), check_interval).await
    }

    /// [`BlindConsumer::from_end`], except that the partitions in
    /// `positions` start at the offset given (where a reader left off; one
    /// that retention removed starts at the oldest record kept).
    pub async fn from_positions(
        client: Arc<BlindClient>,
        topic: &str,
        props: &KafkaProps,
        positions: &HashMap<i32, i64>,
        check_interval: Duration,
    ) -> Result<Self, BlindError> {
        let resolved = client.resolve(topic).await?;
        let physical = resolved.physical_name;
        let mut c = config(props);
        // librdkafka wants a group id even for assigned partitions; nothing
        // is committed under it.
        let n = FROM_END_READERS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        c.set(
            "group.id",
            format!("veil-from-end-{}-{n}", std::process::id()),
        )
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "false")
        .set("allow.auto.create.topics", "false")
        .set("fetch.queue.backoff.ms", "10");
        let name = physical.clone();
        let partitions = resolved.partitions;
        let positions = positions.clone();
        // Asking for the high watermarks blocks (a metadata round trip).
        let (consumer, started) = tokio::task::spawn_blocking(move || {
            let consumer: StreamConsumer = c.create().map_err(|e| kafka(&e))?;
            let mut list = rdkafka::TopicPartitionList::new();
            let mut started = HashMap::new();
            for p in 0..partitions {
                let at = match positions.get(&p) {
                    Some(&at) => at,
                    None => high_watermark(&consumer, &name, p)?,
                };
                list.add_partition_offset(&name, p, rdkafka::Offset::Offset(at))
                    .map_err(|e| kafka(&e))?;
                started.insert(p, at);
            }
            consumer.assign(&list).map_err(|e| kafka(&e))?;
            Ok::<_, BlindError>((consumer, started))
        })
        .await
        .map_err(|_| BlindError::Kafka("the consumer could not be set up".into()))??;
        let mut c = Self::start(client, topic, physical, consumer, check_interval).await?;
        c.started = started;
        Ok(c)
    }

    /// Where each partition started, for a consumer made by
    /// [`BlindConsumer::from_positions`] or [`BlindConsumer::from_end`]
    /// (empty for a group member): the position of a partition no record
    /// has come from yet.
    pub fn started(&self) -> &HashMap<i32, i64> {
        &self.started
    }

    async fn start(
        client: Arc<BlindClient>,
        topic: &str,
        physical: String,
        consumer: StreamConsumer,
        check_interval: Duration,
    ) -> Result<Self, BlindError> {
        let opener = sealed::topic_key(&client, topic, &physical, false)
            .await?
            .map(|_| Opener::new(topic, &physical));
        let opener = tokio::sync::Mutex::new(opener);
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
            opener,
            fatal,
            fatal_error,
            watchdog,
            started: HashMap::new(),
        })
    }

    /// Whether the topic is sealed (records are verified and opened).
    pub async fn is_sealed(&self) -> bool {
        self.opener.lock().await.is_some()
    }

    /// The key tag of `key` on this sealed topic: what a [`Sequence::Deleted`] record carries as
    /// its key. `None` when the topic is not sealed.
    pub async fn key_tag(&self, key: &[u8]) -> Result<Option<[u8; 32]>, BlindError> {
        let Some(tags) =
            sealed::topic_key(&self.client, &self.topic, &self.physical, false).await?
        else {
            return Ok(None);
        };
        tags.keytag(key)
            .map(Some)
            .map_err(|e| BlindError::Scheme(e.to_string()))
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
            m = self.consumer.recv() => match m {
                Ok(m) => {
                let mut opener = self.opener.lock().await;
                if opener.is_none()
                    && m.payload().is_some_and(|v| veil_blind::record_dek(v).is_ok())
                    && sealed::topic_key(&self.client, &self.topic, &self.physical, false)
                        .await?
                        .is_some()
                {
                    *opener = Some(Opener::new(&self.topic, &self.physical));
                }
                match opener.as_mut() {
                    // A sealed delete: the key tag and no value, in clear.
                    Some(_) if m.payload().is_none() && m.key().is_some_and(|k| k.len() == 32) => {
                        Ok(Record {
                            partition: m.partition(),
                            offset: m.offset(),
                            key: m.key().map(<[u8]>::to_vec),
                            value: None,
                            headers: Vec::new(),
                            timestamp: m.timestamp().to_millis(),
                            sealed: Some(Sequence::Deleted),
                        })
                    }
                    None => Ok(Record {
                        partition: m.partition(),
                        offset: m.offset(),
                        key: m.key().map(<[u8]>::to_vec),
                        value: m.payload().map(<[u8]>::to_vec),
                        headers: headers_of(&m),
                        timestamp: m.timestamp().to_millis(),
                        sealed: None,
                    }),
                    Some(o) => {
                        let (rec, seq) =
                            open_retrying(o, &self.client, m.partition(), m.offset(), m.payload())
                                .await?;
                        Ok(Record {
                            partition: m.partition(),
                            offset: m.offset(),
                            key: rec.key,
                            value: rec.value,
                            headers: rec.headers,
                            timestamp: m.timestamp().to_millis(),
                            sealed: Some(seq),
                        })
                    }
                }
                }
                Err(e) => Err(e),
            },
            // The guard `wait_for` returns is dropped inside, so `recv`
            // stays `Send` (a reader may run on a spawned task).
            () = async { drop(fatal.wait_for(|f| *f).await); } => {
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

/// A message's Kafka headers, as the application gave them.
pub fn headers_of<M: Message>(m: &M) -> Vec<veil_blind::Header> {
    use rdkafka::message::Headers as _;
    m.headers()
        .map(|h| {
            h.iter()
                .map(|h| (h.key.to_owned(), h.value.map(<[u8]>::to_vec)))
                .collect()
        })
        .unwrap_or_default()
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
        .set("allow.auto.create.topics", "false")
        // librdkafka pauses a partition's fetching for this long once its
        // local queue is over queued.min.messages (1 s by default): a fast
        // reader then drains the queue and waits out the rest of the second.
        .set("fetch.queue.backoff.ms", "10");
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
