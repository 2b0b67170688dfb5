//! What the broker finds on disk after crashes and damage, with the real
//! binary: partition directories bound to their topic id (a deleted topic
//! never comes back), torn segments truncated from the recovery point, and a
//! partition that cannot be opened taken offline alone.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::{batch, create, fetch, produce, rt, topic, BIN};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::{BrokerId, ListOffsetsRequest, MetadataRequest};
use veil_client::{Admin, Connection, TopicSpec};
use veil_testkit::TestBroker;

const KAFKA_STORAGE_ERROR: i16 = 56;

/// Copies the files of `from` (one level) into `to`, creating it.
fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap().map(Result::unwrap) {
        if entry.path().is_file() {
            fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
}

/// The `.log` files of a partition directory, oldest first.
fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut logs: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    logs.sort();
    logs
}

fn cut(path: &Path, bytes: u64) {
    let f = fs::OpenOptions::new().write(true).open(path).unwrap();
    let len = f.metadata().unwrap().len();
    f.set_len(len - bytes).unwrap();
}

/// Kafka's text form of a topic id: URL-safe base64 without padding.
fn kafka_uuid(id: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(id)
}

async fn create_with(bootstrap: &str, name: &str, configs: &[(&str, &str)]) {
    let mut admin = Admin::connect(bootstrap).await.unwrap();
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

/// Values of the records of every batch in `records`.
fn values(records: &[u8]) -> Vec<String> {
    let mut buf = bytes::Bytes::copy_from_slice(records);
    kafka_protocol::records::RecordBatchDecoder::decode_all(&mut buf)
        .expect("valid batches")
        .into_iter()
        .flat_map(|set| set.records)
        .map(|r| String::from_utf8_lossy(&r.value.unwrap_or_default()).into_owned())
        .collect()
}

#[test]
fn a_deleted_topic_never_comes_back_under_a_new_topic_of_the_same_name() {
    let mut broker = TestBroker::start(BIN);
    let rt = rt();
    let saved = tempfile::tempdir().unwrap();
    let dir = broker.data_dir().join("x-0");
    rt.block_on(async {
        create(&broker.bootstrap(), "x", 1).await;
        let mut conn = Connection::connect(&broker.bootstrap(), "t").await.unwrap();
        let r = produce(&mut conn, "x", 0, -1, batch(&["old-1"], 1)).await;
        assert_eq!(r.responses[0].partition_responses[0].error_code, 0);
    });
    // What a crash between the metadata commit and the rename leaves behind.
    copy_dir(&dir, saved.path());
    rt.block_on(async {
        let mut admin = Admin::connect(&broker.bootstrap()).await.unwrap();
        admin.delete_topic("x").await.unwrap();
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while dir.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(broker.terminate().success());
    copy_dir(saved.path(), &dir);
    broker.restart();
    rt.block_on(async {
        create(&broker.bootstrap(), "x", 1).await;
        let mut conn = Connection::connect(&broker.bootstrap(), "t").await.unwrap();
        let f = fetch(&mut conn, "x", 0, 0, 0).await;
        let p = &f.responses[0].partitions[0];
        assert_eq!(
            (p.error_code, p.high_watermark),
            (0, 0),
            "the new topic starts empty: {:?}",
            values(p.records.as_deref().unwrap_or_default())
        );
        let r = produce(&mut conn, "x", 0, -1, batch(&["new-1"], 2)).await;
        assert_eq!(r.responses[0].partition_responses[0].base_offset, 0);
        let f = fetch(&mut conn, "x", 0, 0, 0).await;
        let records = f.responses[0].partitions[0].records.clone().unwrap();
        assert_eq!(values(&records), vec!["new-1"]);
    });
    // The orphan was set aside, not deleted, and the log says where.
    let strays: Vec<String> = fs::read_dir(broker.data_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("x-0.") && n.ends_with("-stray"))
        .collect();
    assert_eq!(strays.len(), 1, "{strays:?}");
    let log = broker.log();
    assert!(log.contains(&strays[0]), "{log}");
}

#[test]
fn partition_directories_are_bound_to_their_topic_id_and_old_ones_adopted_once() {
    let mut broker = TestBroker::start(BIN);
    let rt = rt();
    let id = rt.block_on(async {
        create(&broker.bootstrap(), "legacy", 1).await;
        let mut conn = Connection::connect(&broker.bootstrap(), "t").await.unwrap();
        produce(&mut conn, "legacy", 0, -1, batch(&["kept"], 1)).await;
        let mut admin = Admin::connect(&broker.bootstrap()).await.unwrap();
        *admin
            .describe_topic("legacy")
            .await
            .unwrap()
            .topic_id
            .as_bytes()
    });
    let binding = broker
        .data_dir()
        .join("legacy-0")
        .join("partition.metadata");
    let expected = format!("version: 0\ntopic_id: {}\n", kafka_uuid(&id));
    assert_eq!(fs::read_to_string(&binding).ok(), Some(expected.clone()));
    assert!(broker.terminate().success());
    // A directory written before partitions were bound to their topic id.
    fs::remove_file(&binding).unwrap();
    broker.restart();
    rt.block_on(async {
        let mut conn = Connection::connect(&broker.bootstrap(), "t").await.unwrap();
        let f = fetch(&mut conn, "legacy", 0, 0, 0).await;
        let records = f.responses[0].partitions[0].records.clone().unwrap();
        assert_eq!(values(&records), vec!["kept"], "metadata lists it: adopted");
    });
    assert_eq!(fs::read_to_string(&binding).ok(), Some(expected));
}

#[test]
fn a_torn_rolled_segment_after_a_power_loss_is_cut_at_the_first_bad_batch() {
    // Nothing fsyncs the produce path, and the crash comes before the first
    // recovery-point checkpoint (a minute after start).
    let mut broker = TestBroker::start_with(BIN, &["--set", "log.flush=none"]);
    let rt = rt();
    rt.block_on(async {
        create_with(&broker.bootstrap(), "torn", &[("segment.bytes", "400")]).await;
        create(&broker.bootstrap(), "other", 1).await;
        let mut conn = Connection::connect(&broker.bootstrap(), "t").await.unwrap();
        let value = "v".repeat(100);
        for i in 0..12 {
            let r = produce(&mut conn, "torn", 0, 1, batch(&[&format!("{i}{value}")], i)).await;
            assert_eq!(r.responses[0].partition_responses[0].error_code, 0);
        }
        for i in 0..3 {
            produce(&mut conn, "other", 0, 1, batch(&[&format!("o{i}")], i)).await;
        }
    });
    broker.kill();
    let dir = broker.data_dir().join("torn-0");
    let logs = segments(&dir);
    assert!(logs.len() >= 3, "{logs:?}");
    let first = fs::read(&logs[0]).unwrap();
    let batches = veil_log::validate_records(&first, usize::MAX).unwrap();
    let damaged = batches.last().unwrap().base_offset;
    cut(&logs[0], 100);
    broker.restart();
    rt.block_on(async {
        let mut conn = Connection::connect(&broker.bootstrap(), "t").await.unwrap();
        let f = fetch(&mut conn, "other", 0, 0, 0).await;
        let records = f.responses[0].partitions[0].records.clone().unwrap();
        assert_eq!(values(&records), vec!["o0", "o1", "o2"]);
        let f = fetch(&mut conn, "torn", 0, 0, 0).await;
        let p = &f.responses[0].partitions[0];
        assert_eq!((p.error_code, p.high_watermark), (0, damaged));
        let r = produce(&mut conn, "torn", 0, -1, batch(&["after"], 99)).await;
        assert_eq!(r.responses[0].partition_responses[0].base_offset, damaged);
    });
    // The discarded bytes are kept aside: the cut batch and every later segment.
    let aside: Vec<String> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".log.truncated"))
        .collect();
    assert_eq!(aside.len(), logs.len(), "{aside:?}");
}

#[test]
fn damage_below_the_recovery_point_takes_only_that_partition_offline() {
    let mut broker = TestBroker::start(BIN);
    let rt = rt();
    rt.block_on(async {
        create_with(&broker.bootstrap(), "torn", &[("segment.bytes", "400")]).await;
        create(&broker.bootstrap(), "other", 1).await;
        let mut conn = Connection::connect(&broker.bootstrap(), "t").await.unwrap();
        for i in 0..12 {
            produce(&mut conn, "torn", 0, -1, batch(&[&"w".repeat(100)], i)).await;
        }
        for i in 0..3 {
            produce(&mut conn, "other", 0, -1, batch(&[&format!("o{i}")], i)).await;
        }
    });
    // A clean stop syncs everything: the damage hits data known to be on disk.
    assert!(broker.terminate().success());
    cut(&segments(&broker.data_dir().join("torn-0"))[0], 100);
    broker.restart();
    rt.block_on(async {
        let mut conn = Connection::connect(&broker.bootstrap(), "t").await.unwrap();
        let r = produce(&mut conn, "torn", 0, -1, batch(&["x"], 1)).await;
        assert_eq!(
            r.responses[0].partition_responses[0].error_code,
            KAFKA_STORAGE_ERROR
        );
        let f = fetch(&mut conn, "torn", 0, 0, 0).await;
        assert_eq!(f.responses[0].partitions[0].error_code, KAFKA_STORAGE_ERROR);
        let req = ListOffsetsRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_topics(vec![ListOffsetsTopic::default()
                .with_name(topic("torn"))
                .with_partitions(vec![ListOffsetsPartition::default()
                    .with_partition_index(0)
                    .with_timestamp(-1)])]);
        let l = conn.send_at(&req, 5).await.unwrap();
        assert_eq!(l.topics[0].partitions[0].error_code, KAFKA_STORAGE_ERROR);
        let m = conn
            .send_at(&MetadataRequest::default().with_topics(None), 9)
            .await
            .unwrap();
        let torn = m
            .topics
            .iter()
            .find(|t| t.name.as_ref().is_some_and(|n| n.as_str() == "torn"))
            .unwrap();
        assert_eq!(torn.partitions[0].leader_id, BrokerId(-1));
        assert_eq!(torn.partitions[0].offline_replicas, vec![BrokerId(0)]);
        // Every other partition serves as before.
        let f = fetch(&mut conn, "other", 0, 0, 0).await;
        let records = f.responses[0].partitions[0].records.clone().unwrap();
        assert_eq!(values(&records), vec!["o0", "o1", "o2"]);
        let r = produce(&mut conn, "other", 0, -1, batch(&["o3"], 3)).await;
        assert_eq!(r.responses[0].partition_responses[0].base_offset, 3);
    });
    let (_, metrics) = broker.http_get("/metrics");
    assert!(metrics.contains("veil_offline_partitions 1"), "{metrics}");
    let log = broker.log();
    assert!(log.contains("offline"), "{log}");
}
