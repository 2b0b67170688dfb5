//! Log compaction with the real binary: the kill -9 drill, and compaction on every replica of a
//! three-node cluster. The broker is stopped by SIGKILL at
//! each point of a cleaner pass (a test-only hook, `VEIL_CLEANER_FAULT`, makes the pass hang
//! there), restarted without the hook, and must serve every key's latest value at its original
//! offset, with no cleaner leftovers on disk; its cleaner then carries on.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{fetch, rt, BIN};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::ProduceRequest;
use veil_client::{Admin, Connection, TopicSpec};
use veil_log::records::{encode_batch, records_section, walk_records};
use veil_log::BatchHeader;
use veil_testkit::TestBroker;

const KEYS: usize = 20;

const SETTINGS: &[&str] = &[
    "--set",
    "log.cleaner.backoff_ms=100",
    "--set",
    "log.retention_check_interval_ms=100",
];

async fn create_compacted(bootstrap: &str, name: &str) {
    let mut admin = Admin::connect(bootstrap).await.unwrap();
    let configs = [
        ("cleanup.policy", "compact"),
        ("segment.bytes", "2048"),
        ("min.cleanable.dirty.ratio", "0.01"),
    ];
    let spec = TopicSpec {
        name: name.into(),
        partitions: 1,
        replication_factor: -1,
        configs: configs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
    };
    admin.create_topic(&spec, false).await.unwrap();
}

/// Produces `key-(i % KEYS)` = `value-i` for `i` in `range`, one record per request, until the
/// broker goes away; returns how far it got (every `i` below was acknowledged).
async fn put_range(bootstrap: &str, range: std::ops::Range<usize>) -> usize {
    let Ok(mut conn) = Connection::connect(bootstrap, "drill").await else {
        return range.start;
    };
    for i in range.clone() {
        let key = format!("key-{}", i % KEYS);
        let value = format!("value-{i}");
        let batch = encode_batch(&[(Some(key.as_bytes()), Some(value.as_bytes()))], 1);
        let req = ProduceRequest::default()
            .with_acks(-1)
            .with_timeout_ms(10_000)
            .with_topic_data(vec![TopicProduceData::default()
                .with_name(common::topic("c"))
                .with_partition_data(vec![PartitionProduceData::default()
                    .with_index(0)
                    .with_records(Some(Bytes::from(batch)))])]);
        match conn.send(&req).await {
            Ok(r) if r.responses[0].partition_responses[0].error_code == 0 => {}
            _ => return i,
        }
    }
    range.end
}

/// Every record from offset 0: (offset, key, value), checking that offsets only grow.
async fn read_all(bootstrap: &str) -> Vec<(i64, String, String)> {
    let mut conn = Connection::connect(bootstrap, "drill").await.unwrap();
    let mut rows = Vec::new();
    let mut offset = 0;
    loop {
        let f = fetch(&mut conn, "c", 0, offset, 0).await;
        let p = &f.responses[0].partitions[0];
        assert_eq!(p.error_code, 0);
        let records = p.records.clone().unwrap_or_default();
        if records.is_empty() {
            assert_eq!(offset, p.high_watermark, "nothing readable at {offset}");
            return rows;
        }
        let mut pos = 0;
        while pos + 61 <= records.len() {
            let h = BatchHeader::parse(&records[pos..]).unwrap();
            if pos + h.total_size() > records.len() {
                break;
            }
            let batch = &records[pos..pos + h.total_size()];
            let body = records_section(batch, &h, 1 << 20).unwrap();
            walk_records(&body, h.base_offset, h.records_count, |r| {
                assert!(r.offset >= offset, "offset {} after {offset}", r.offset);
                rows.push((
                    r.offset,
                    String::from_utf8(r.key.unwrap().to_vec()).unwrap(),
                    String::from_utf8(r.value.unwrap().to_vec()).unwrap(),
                ));
                Ok(())
            })
            .unwrap();
            offset = h.last_offset() + 1;
            pos += h.total_size();
        }
    }
}

fn latest(rows: &[(i64, String, String)]) -> BTreeMap<String, (i64, String)> {
    rows.iter()
        .map(|(o, k, v)| (k.clone(), (*o, v.clone())))
        .collect()
}

fn leftovers(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| {
            Path::new(n)
                .extension()
                .is_some_and(|e| e == "swap" || e == "cleaned")
        })
        .collect()
}

fn metric(broker: &TestBroker, name: &str) -> f64 {
    let (_, body) = broker.http_get("/metrics");
    body.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn without_cleaner() -> Vec<&'static str> {
    let mut settings = SETTINGS.to_vec();
    settings.extend(["--set", "log.cleaner.enabled=false"]);
    settings
}

fn drill(point: &str) {
    let mut broker = TestBroker::start_with_env(BIN, SETTINGS, &[("VEIL_CLEANER_FAULT", point)]);
    let rt = rt();
    let bootstrap = broker.bootstrap();
    rt.block_on(create_compacted(&bootstrap, "c"));
    // The first passes see full segments, one group each; the later ones merge small cleaned
    // segments, which is where replaced segments get deleted.
    // The hook SIGKILLs the broker at the fault point, possibly while a produce is in flight.
    let marker = broker.data_dir().join("cleaner-fault-reached");
    let mut acknowledged = 0;
    while broker.is_running() {
        assert!(
            acknowledged < 6000,
            "{point}: the fault point was never reached"
        );
        acknowledged = rt.block_on(put_range(&bootstrap, acknowledged..acknowledged + 300));
        std::thread::sleep(Duration::from_millis(300));
    }
    assert!(
        marker.exists(),
        "{point}: the broker died elsewhere:\n{}",
        broker.log()
    );
    broker.kill();

    let data_dir = broker.data_dir().to_path_buf();
    // Recovery alone first: with the cleaner off, a pass of the restarted broker cannot put
    // its own work files next to what recovery must have cleared.
    let mut recovered = TestBroker::start_on(BIN, &data_dir, &without_cleaner());
    let bootstrap = recovered.bootstrap();
    let rows = rt.block_on(read_all(&bootstrap));
    let index = |v: &str| -> usize { v.strip_prefix("value-").unwrap().parse().unwrap() };
    let seen = latest(&rows);
    assert_eq!(seen.len(), KEYS, "{point}");
    for k in 0..KEYS {
        // The last acknowledged update of each key, or the one in flight when the broker died.
        let last_acked = (0..acknowledged).rev().find(|i| i % KEYS == k).unwrap();
        let got = index(&seen[&format!("key-{k}")].1);
        assert!(
            got == last_acked || (got == acknowledged && got % KEYS == k),
            "{point}: key-{k} reads value-{got}, last acknowledged value-{last_acked}"
        );
    }
    for (offset, _, value) in &rows {
        assert_eq!(
            *offset as usize,
            index(value),
            "{point}: records keep their offsets"
        );
    }
    let produced = acknowledged + 1;
    assert_eq!(
        leftovers(&data_dir.join("c-0")),
        Vec::<String>::new(),
        "{point}"
    );
    assert!(recovered.terminate().success());
    // The cleaner carries on after the restart.
    let restarted = TestBroker::start_on(BIN, &data_dir, SETTINGS);
    let bootstrap = restarted.bootstrap();
    let end = rt.block_on(put_range(&bootstrap, produced..produced + 300));
    assert_eq!(end, produced + 300);
    wait_for("a pass after the restart", Duration::from_secs(60), || {
        metric(&restarted, "veil_log_cleaner_passes_total") >= 1.0
    });
    let rows = rt.block_on(read_all(&bootstrap));
    assert_eq!(latest(&rows).len(), KEYS);
    assert!(rows.len() < end, "{point}: the log is compacted");
    drop(broker);
}

#[test]
fn kill_9_after_the_cleaned_segment_is_written() {
    drill("after-cleaned");
}

#[test]
fn kill_9_after_the_swap_is_committed() {
    drill("after-swap");
}

#[test]
fn kill_9_while_replaced_segments_are_deleted() {
    drill("after-delete");
}

/// Copies the files of `from` into `to` (partition directories are flat).
fn try_copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        if entry.file_type()?.is_file() {
            std::fs::copy(entry.path(), to.join(entry.file_name()))?;
        }
    }
    Ok(())
}

/// Every record of a copy of a partition directory, through the log crate: a replica's own log.
fn replica_rows(dir: &Path) -> Vec<(i64, String, String)> {
    // The broker keeps cleaning while the directory is copied: a file listed
    // may be swapped away before it is read. Copy again until one whole
    // copy succeeds (bounded).
    let copy = (0..50)
        .find_map(|_| {
            let copy = tempfile::tempdir().unwrap();
            if try_copy_dir(dir, copy.path()).is_ok() {
                return Some(copy);
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
            None
        })
        .expect("a whole copy of the replica's directory within 50 attempts");
    let (log, _) = veil_log::PartitionLog::open(copy.path(), veil_log::LogConfig::default(), 0)
        .expect("a replica's log opens");
    let mut rows = Vec::new();
    let mut offset = log.log_start_offset();
    while offset < log.log_end_offset() {
        let r = log.read(offset, 1 << 20, i64::MAX, true).unwrap();
        let mut pos = 0;
        while pos < r.records.len() {
            let h = BatchHeader::parse(&r.records[pos..]).unwrap();
            let batch = &r.records[pos..pos + h.total_size()];
            let body = records_section(batch, &h, 1 << 20).unwrap();
            walk_records(&body, h.base_offset, h.records_count, |rec| {
                rows.push((
                    rec.offset,
                    String::from_utf8(rec.key.unwrap().to_vec()).unwrap(),
                    String::from_utf8(rec.value.unwrap().to_vec()).unwrap(),
                ));
                Ok(())
            })
            .unwrap();
            offset = h.last_offset() + 1;
            pos += h.total_size();
        }
    }
    rows
}

/// Three replicas: each runs its own cleaner, followers keep fetching from a cleaned leader,
/// and every replica's log holds each key's latest value at its original offset.
#[test]
fn every_replica_compacts_its_own_log_and_replication_goes_on() {
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let options = veil_testkit::ClusterOptions {
        tables: "[log]\nretention_check_interval_ms = 100\n[log.cleaner]\nbackoff_ms = 100\n"
            .into(),
        ..veil_testkit::ClusterOptions::default()
    };
    let cluster = veil_testkit::TestCluster::start_with(BIN, 3, &options);
    let rt = rt();
    let bootstrap = cluster.bootstrap();
    rt.block_on(async {
        let mut admin = Admin::connect(&cluster.node(1).bootstrap()).await.unwrap();
        let mut spec = TopicSpec {
            name: "c".into(),
            partitions: 1,
            replication_factor: 3,
            configs: BTreeMap::new(),
        };
        for (k, v) in [
            ("cleanup.policy", "compact"),
            ("segment.bytes", "2048"),
            ("min.cleanable.dirty.ratio", "0.01"),
        ] {
            spec.configs.insert(k.into(), v.into());
        }
        admin.create_topic(&spec, false).await.unwrap();
    });
    let producer: FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("acks", "all")
        .set("linger.ms", "0")
        .create()
        .unwrap();
    let total: usize = 1200;
    rt.block_on(async {
        for i in 0..total {
            let key = format!("key-{}", i % KEYS);
            let value = format!("value-{i}");
            producer
                .send(
                    FutureRecord::to("c").key(&key).payload(&value),
                    Duration::from_secs(30),
                )
                .await
                .unwrap();
        }
    });
    let expected: BTreeMap<String, String> = (0..total)
        .map(|i| (format!("key-{}", i % KEYS), format!("value-{i}")))
        .collect();
    wait_for(
        "a cleaner pass on every replica",
        Duration::from_secs(60),
        || {
            (1..=3).all(|id| {
                let (_, body) = cluster.node(id).http_get("/metrics");
                body.lines().any(|l| {
                    l.starts_with("veil_log_cleaner_cleaned_bytes_total{topic=\"c\"}")
                        && l.rsplit(' ').next() != Some("0")
                })
            })
        },
    );
    let end_offsets = || -> Vec<f64> {
        (1..=3)
            .map(|id| {
                let (_, body) = cluster.node(id).http_get("/metrics");
                body.lines()
                    .filter(|l| {
                        l.starts_with("veil_partition_log_end_offset{") && l.contains("topic=\"c\"")
                    })
                    .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                    .sum()
            })
            .collect()
    };
    wait_for(
        "every replica at the same log end",
        Duration::from_secs(30),
        || {
            end_offsets()
                .iter()
                .all(|e| (*e - total as f64).abs() < 0.5)
        },
    );
    for id in 1..=3 {
        let rows = replica_rows(&cluster.data_dir(id).join("c-0"));
        let latest: BTreeMap<String, String> = latest(&rows)
            .into_iter()
            .map(|(k, (_, v))| (k, v))
            .collect();
        assert_eq!(latest, expected, "node {id}");
        assert!(rows.len() < total, "node {id} compacted its log");
        for (offset, _, value) in &rows {
            assert_eq!(format!("value-{offset}"), *value, "node {id}: offsets kept");
        }
    }
}
