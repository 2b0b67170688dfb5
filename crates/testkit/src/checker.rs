//! A Jepsen-style history checker for replicated topics, driven by
//! librdkafka (the C client under confluent-kafka, kcat and most Kafka
//! deployments): producers with `enable.idempotence=true` and `acks=all`
//! write unique values per key, a consumer reads along, a nemesis injects
//! faults meanwhile, and at the end the whole log is read back and checked:
//!
//! * every acknowledged value is present, exactly once (lost / duplicated);
//! * per key, values appear in the order they were written;
//! * nothing a consumer saw during the run is missing from the final log
//!   (no read of data that a failover later took away);
//! * offsets are contiguous in every partition.
//!
//! Producers record, per delivery, how long the topic went without any
//! acknowledgement: the longest gap is the unavailability a fault caused.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::TopicPartitionList;

/// One acknowledged write.
#[derive(Debug, Clone)]
pub struct Ack {
    pub key: String,
    pub seq: u64,
    pub partition: i32,
    pub offset: i64,
    pub at: Instant,
}

/// What the workload did and saw.
#[derive(Debug, Default)]
pub struct History {
    pub acked: Vec<Ack>,
    /// Writes the client gave up on (never acknowledged; may or may not be in the log).
    pub failed: usize,
    pub failures: BTreeMap<String, usize>,
    /// (partition, offset, value) read by the live consumer.
    pub seen: Vec<(i32, i64, String)>,
}

/// The checker's verdict.
#[derive(Debug)]
pub struct Report {
    pub acknowledged: usize,
    pub failed: usize,
    pub lost: Vec<String>,
    pub duplicated: Vec<String>,
    pub out_of_order: Vec<String>,
    pub phantom_reads: Vec<String>,
    pub gaps: Vec<String>,
    /// Longest stretch without an acknowledgement once writes started.
    pub longest_unavailable: Duration,
}

impl Report {
    pub fn ok(&self) -> bool {
        self.lost.is_empty()
            && self.duplicated.is_empty()
            && self.out_of_order.is_empty()
            && self.phantom_reads.is_empty()
            && self.gaps.is_empty()
    }

    pub fn summary(&self) -> String {
        format!(
            "acknowledged {}, failed {}, lost {}, duplicated {}, out of order {}, phantom reads {}, offset gaps {}, longest unavailability {:?}",
            self.acknowledged,
            self.failed,
            self.lost.len(),
            self.duplicated.len(),
            self.out_of_order.len(),
            self.phantom_reads.len(),
            self.gaps.len(),
            self.longest_unavailable
        )
    }
}

/// Producer settings of the workload (librdkafka names).
fn producer(bootstrap: &str) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("message.timeout.ms", "60000")
        .set("request.timeout.ms", "10000")
        .set("retry.backoff.ms", "50")
        .set("topic.metadata.refresh.interval.ms", "1000")
        // librdkafka waits this long for any request, metadata included,
        // on a connection to a paused broker (default 60 s).
        .set("socket.timeout.ms", "10000")
        .create()
        .expect("create producer")
}

fn consumer(bootstrap: &str) -> BaseConsumer {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "checker")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .set("fetch.wait.max.ms", "100")
        .set("topic.metadata.refresh.interval.ms", "1000")
        .set("socket.timeout.ms", "10000")
        .create()
        .expect("create consumer")
}

/// A running workload: producers writing `keys` keys to `topic` and a
/// consumer reading along, until [`Workload::finish`].
pub struct Workload {
    stop: Arc<AtomicBool>,
    history: Arc<Mutex<History>>,
    tasks: Vec<std::thread::JoinHandle<()>>,
    topic: String,
    partitions: i32,
}

impl Workload {
    /// Starts writing to `topic` (which has `partitions` partitions) through
    /// `bootstrap`, one value every `pace` per key.
    pub fn start(
        bootstrap: &str,
        topic: &str,
        partitions: i32,
        keys: usize,
        pace: Duration,
    ) -> Workload {
        let stop = Arc::new(AtomicBool::new(false));
        let history = Arc::new(Mutex::new(History::default()));
        let mut tasks = Vec::new();
        {
            let (stop, history, bootstrap, topic) = (
                Arc::clone(&stop),
                Arc::clone(&history),
                bootstrap.to_owned(),
                topic.to_owned(),
            );
            tasks.push(std::thread::spawn(move || {
                produce_loop(&bootstrap, &topic, keys, pace, &stop, &history);
            }));
        }
        {
            let (stop, history, bootstrap, topic) = (
                Arc::clone(&stop),
                Arc::clone(&history),
                bootstrap.to_owned(),
                topic.to_owned(),
            );
            tasks.push(std::thread::spawn(move || {
                consume_loop(&bootstrap, &topic, partitions, &stop, &history);
            }));
        }
        Workload {
            stop,
            history,
            tasks,
            topic: topic.to_owned(),
            partitions,
        }
    }

    /// Acknowledged writes so far.
    pub fn acknowledged(&self) -> usize {
        self.history.lock().expect("history").acked.len()
    }

    /// Waits (at most `limit`) until `more` further writes are acknowledged.
    pub fn wait_progress(&self, more: usize, limit: Duration) -> bool {
        let target = self.acknowledged() + more;
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if self.acknowledged() >= target {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// Stops the workload, reads the whole log back through `bootstrap` and
    /// checks the history against it.
    pub fn finish(self, bootstrap: &str) -> Report {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.tasks {
            let _ = t.join();
        }
        let history = std::mem::take(&mut *self.history.lock().expect("history"));
        let log = read_all(bootstrap, &self.topic, self.partitions);
        check(&history, &log)
    }
}

fn produce_loop(
    bootstrap: &str,
    topic: &str,
    keys: usize,
    pace: Duration,
    stop: &AtomicBool,
    history: &Mutex<History>,
) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let producer = producer(bootstrap);
        let mut inflight = tokio::task::JoinSet::new();
        let mut seq = 0u64;
        while !stop.load(Ordering::SeqCst) {
            for k in 0..keys {
                let key = format!("k{k}");
                let value = format!("{key}-{seq}");
                let p = producer.clone();
                let topic = topic.to_owned();
                inflight.spawn(async move {
                    let record = FutureRecord::to(&topic).key(&key).payload(&value);
                    let out = p.send(record, Duration::from_secs(0)).await;
                    (
                        key,
                        seq,
                        out.map(|d| (d.partition, d.offset))
                            .map_err(|(e, _)| e.to_string()),
                    )
                });
            }
            seq += 1;
            while let Some(done) = inflight.try_join_next() {
                record_delivery(done, history);
            }
            tokio::time::sleep(pace).await;
        }
        // Let what was sent settle (bounded by message.timeout.ms).
        while let Some(done) = inflight.join_next().await {
            record_delivery(done, history);
        }
    });
}

type Outcome = (String, u64, Result<(i32, i64), String>);

fn record_delivery(done: Result<Outcome, tokio::task::JoinError>, history: &Mutex<History>) {
    let Ok((key, seq, out)) = done else { return };
    let mut h = history.lock().expect("history");
    match out {
        Ok((partition, offset)) => h.acked.push(Ack {
            key,
            seq,
            partition,
            offset,
            at: Instant::now(),
        }),
        Err(e) => {
            h.failed += 1;
            *h.failures.entry(e).or_default() += 1;
        }
    }
}

fn consume_loop(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    stop: &AtomicBool,
    history: &Mutex<History>,
) {
    let c = consumer(bootstrap);
    let mut list = TopicPartitionList::new();
    for p in 0..partitions {
        let _ = list.add_partition_offset(topic, p, rdkafka::Offset::Beginning);
    }
    if c.assign(&list).is_err() {
        return;
    }
    while !stop.load(Ordering::SeqCst) {
        if let Some(Ok(m)) = c.poll(Duration::from_millis(100)) {
            let value = String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned();
            history
                .lock()
                .expect("history")
                .seen
                .push((m.partition(), m.offset(), value));
        }
    }
}

/// Every record of `topic`, per partition in offset order: (offset, value).
pub fn read_all(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
) -> BTreeMap<i32, Vec<(i64, String)>> {
    let c = consumer(bootstrap);
    let mut ends = HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    for p in 0..partitions {
        loop {
            match c.fetch_watermarks(topic, p, Duration::from_secs(5)) {
                Ok((_, high)) => {
                    ends.insert(p, high);
                    break;
                }
                Err(e) => {
                    assert!(
                        Instant::now() < deadline,
                        "no watermarks for {topic}-{p}: {e}"
                    );
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
        }
    }
    let mut list = TopicPartitionList::new();
    for p in 0..partitions {
        let _ = list.add_partition_offset(topic, p, rdkafka::Offset::Beginning);
    }
    c.assign(&list).expect("assign");
    let mut out: BTreeMap<i32, Vec<(i64, String)>> = BTreeMap::new();
    let done = |out: &BTreeMap<i32, Vec<(i64, String)>>| {
        (0..partitions).all(|p| {
            let end = ends.get(&p).copied().unwrap_or(0);
            end == 0
                || out
                    .get(&p)
                    .and_then(|v| v.last())
                    .is_some_and(|(o, _)| *o + 1 >= end)
        })
    };
    while !done(&out) {
        assert!(
            Instant::now() < deadline,
            "could not read {topic} back to its end"
        );
        if let Some(Ok(m)) = c.poll(Duration::from_millis(200)) {
            let value = String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned();
            out.entry(m.partition())
                .or_default()
                .push((m.offset(), value));
        }
    }
    out
}

/// Checks a history against the final log.
pub fn check(history: &History, log: &BTreeMap<i32, Vec<(i64, String)>>) -> Report {
    let mut count: HashMap<&str, usize> = HashMap::new();
    let mut gaps = Vec::new();
    let mut out_of_order = Vec::new();
    let mut last_seq: HashMap<String, u64> = HashMap::new();
    for (p, records) in log {
        let mut expected = records.first().map_or(0, |(o, _)| *o);
        for (offset, value) in records {
            if *offset != expected {
                gaps.push(format!(
                    "partition {p}: offset {offset}, expected {expected}"
                ));
            }
            expected = offset + 1;
            *count.entry(value.as_str()).or_default() += 1;
            if let Some((key, seq)) = value
                .rsplit_once('-')
                .and_then(|(k, s)| Some((k, s.parse::<u64>().ok()?)))
            {
                if let Some(prev) = last_seq.insert(key.to_owned(), seq) {
                    if seq <= prev {
                        out_of_order.push(format!("{key}: {seq} after {prev} (partition {p})"));
                    }
                }
            }
        }
    }
    let mut lost = Vec::new();
    let mut duplicated: HashSet<String> = HashSet::new();
    for a in &history.acked {
        let value = format!("{}-{}", a.key, a.seq);
        match count.get(value.as_str()).copied().unwrap_or(0) {
            0 => lost.push(format!(
                "{value} (acknowledged at {}:{})",
                a.partition, a.offset
            )),
            1 => {}
            _ => {
                duplicated.insert(value);
            }
        }
    }
    for (v, n) in &count {
        if *n > 1 {
            duplicated.insert((*v).to_owned());
        }
    }
    let present: HashSet<(i32, i64, &str)> = log
        .iter()
        .flat_map(|(p, rs)| rs.iter().map(move |(o, v)| (*p, *o, v.as_str())))
        .collect();
    let phantom_reads = history
        .seen
        .iter()
        .filter(|(p, o, v)| !present.contains(&(*p, *o, v.as_str())))
        .map(|(p, o, v)| format!("{v} read at {p}:{o}"))
        .collect();
    let mut times: Vec<Instant> = history.acked.iter().map(|a| a.at).collect();
    times.sort_unstable();
    let longest_unavailable = times
        .windows(2)
        .map(|w| w[1].duration_since(w[0]))
        .max()
        .unwrap_or_default();
    let mut duplicated: Vec<String> = duplicated.into_iter().collect();
    duplicated.sort();
    Report {
        acknowledged: history.acked.len(),
        failed: history.failed,
        lost,
        duplicated,
        out_of_order,
        phantom_reads,
        gaps,
        longest_unavailable,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ack(key: &str, seq: u64) -> Ack {
        Ack {
            key: key.into(),
            seq,
            partition: 0,
            offset: 0,
            at: Instant::now(),
        }
    }

    #[test]
    fn finds_lost_duplicated_reordered_phantom_and_gaps() {
        let history = History {
            acked: vec![ack("k0", 0), ack("k0", 1), ack("k1", 0)],
            failed: 0,
            failures: BTreeMap::new(),
            seen: vec![(0, 9, "k9-9".into())],
        };
        let log = BTreeMap::from([(
            0,
            vec![
                (0, "k0-1".to_owned()),
                (1, "k0-0".to_owned()),
                (3, "k0-0".to_owned()),
            ],
        )]);
        let r = check(&history, &log);
        assert_eq!(r.lost.len(), 1, "k1-0");
        assert_eq!(r.duplicated, vec!["k0-0".to_owned()]);
        assert_eq!(r.out_of_order.len(), 2);
        assert_eq!(r.phantom_reads.len(), 1);
        assert_eq!(r.gaps.len(), 1);
        assert!(!r.ok());
        let clean = check(
            &History {
                acked: vec![ack("k0", 0)],
                ..History::default()
            },
            &BTreeMap::from([(0, vec![(0, "k0-0".to_owned())])]),
        );
        assert!(clean.ok(), "{}", clean.summary());
    }
}
