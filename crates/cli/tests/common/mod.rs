//! Helpers shared by the integration tests: raw Kafka requests through the
//! SDK connection, and v2 batches built by the log crate's test builder.
#![allow(dead_code)]

use bytes::Bytes;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    FetchRequest, FetchResponse, ProduceRequest, ProduceResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use veil_client::{Admin, Connection, TopicSpec};

pub const BIN: &str = env!("CARGO_BIN_EXE_veil");

/// Polls `check` every 100 ms for at most `limit`; then fails with `what` and the last reason.
pub fn eventually(
    limit: std::time::Duration,
    what: &str,
    mut check: impl FnMut() -> Result<(), String>,
) {
    let deadline = std::time::Instant::now() + limit;
    loop {
        match check() {
            Ok(()) => return,
            Err(last) => assert!(
                std::time::Instant::now() < deadline,
                "{what} within {limit:?}: {last}"
            ),
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

pub async fn create(bootstrap: &str, name: &str, partitions: i32) {
    let mut admin = Admin::connect(bootstrap).await.unwrap();
    let spec = TopicSpec {
        name: name.into(),
        partitions,
        replication_factor: -1,
        configs: std::collections::BTreeMap::new(),
    };
    admin.create_topic(&spec, false).await.unwrap();
}

pub fn topic(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_owned()))
}

pub async fn produce(
    conn: &mut Connection,
    name: &str,
    partition: i32,
    acks: i16,
    records: Vec<u8>,
) -> ProduceResponse {
    let req = ProduceRequest::default()
        .with_acks(acks)
        .with_timeout_ms(10_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(topic(name))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(partition)
                .with_records(Some(Bytes::from(records)))])]);
    conn.send(&req).await.unwrap()
}

pub async fn fetch(
    conn: &mut Connection,
    name: &str,
    partition: i32,
    offset: i64,
    max_wait_ms: i32,
) -> FetchResponse {
    let req = FetchRequest::default()
        .with_replica_id(kafka_protocol::messages::BrokerId(-1))
        .with_max_wait_ms(max_wait_ms)
        .with_min_bytes(1)
        .with_max_bytes(1 << 20)
        .with_session_epoch(-1)
        .with_topics(vec![FetchTopic::default()
            .with_topic(topic(name))
            .with_partitions(vec![FetchPartition::default()
                .with_partition(partition)
                .with_fetch_offset(offset)
                .with_current_leader_epoch(-1)
                .with_partition_max_bytes(1 << 20)])]);
    // Fetch v12 names topics; v13+ would need the topic id.
    conn.send_at(&req, 12).await.unwrap()
}

pub fn batch(values: &[&str], ts: i64) -> Vec<u8> {
    let records: Vec<veil_log::testing::TestRecord> = values
        .iter()
        .map(|v| (None, Some(v.as_bytes()), ts))
        .collect();
    veil_log::testing::build_batch(&records)
}
