//! The broker under hostile input, crashes, pipelining and retention:
//! real binary, ephemeral loopback ports.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use bytes::{BufMut, BytesMut};
use common::{batch, create, fetch, produce, rt, BIN};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, MetadataRequest, RequestHeader, ResponseHeader,
};
use kafka_protocol::protocol::{Decodable, Encodable, Request, StrBytes};
use veil_client::Connection;
use veil_testkit::TestBroker;

/// Encodes a whole request frame (size prefix included).
fn frame<R: Request>(req: &R, version: i16, correlation_id: i32) -> Vec<u8> {
    let header = RequestHeader::default()
        .with_request_api_key(R::KEY)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from_static_str("raw")));
    let mut body = BytesMut::new();
    header
        .encode(&mut body, R::header_version(version))
        .unwrap();
    req.encode(&mut body, version).unwrap();
    let mut out = Vec::with_capacity(body.len() + 4);
    out.put_i32(body.len() as i32);
    out.extend_from_slice(&body);
    out
}

fn read_frame(s: &mut TcpStream) -> Vec<u8> {
    let mut size = [0u8; 4];
    s.read_exact(&mut size).unwrap();
    let mut buf = vec![0u8; i32::from_be_bytes(size) as usize];
    s.read_exact(&mut buf).unwrap();
    buf
}

fn alive(broker: &TestBroker) {
    rt().block_on(async {
        let mut conn = Connection::connect(&broker.bootstrap(), "probe")
            .await
            .unwrap();
        conn.send(&MetadataRequest::default().with_topics(None))
            .await
            .unwrap();
    });
}

#[test]
fn wire_counts_of_billions_do_not_take_the_broker_down() {
    let mut broker = TestBroker::start(BIN);
    // api key, version, then a body whose first field is an array count.
    let attacks: Vec<Vec<u8>> = vec![
        // Metadata v0: topics array of i32::MAX entries.
        [
            &3i16.to_be_bytes()[..],
            &0i16.to_be_bytes(),
            &1i32.to_be_bytes(),
            &(-1i16).to_be_bytes(),
            &i32::MAX.to_be_bytes(),
        ]
        .concat(),
        // Metadata v9 (flexible): compact array of u32::MAX - 1 entries.
        [
            &3i16.to_be_bytes()[..],
            &9i16.to_be_bytes(),
            &1i32.to_be_bytes(),
            &(-1i16).to_be_bytes(),
            &[0u8],
            &[0xff, 0xff, 0xff, 0xff, 0x0f],
        ]
        .concat(),
        // CreateTopics v2: topics array of i32::MAX entries.
        [
            &19i16.to_be_bytes()[..],
            &2i16.to_be_bytes(),
            &1i32.to_be_bytes(),
            &(-1i16).to_be_bytes(),
            &i32::MAX.to_be_bytes(),
        ]
        .concat(),
        // ListOffsets v1: replica id, then topics array of i32::MAX entries.
        [
            &2i16.to_be_bytes()[..],
            &1i16.to_be_bytes(),
            &1i32.to_be_bytes(),
            &(-1i16).to_be_bytes(),
            &(-1i32).to_be_bytes(),
            &i32::MAX.to_be_bytes(),
        ]
        .concat(),
    ];
    for body in attacks {
        let mut s = TcpStream::connect(broker.kafka_addr()).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(&(body.len() as i32).to_be_bytes()).unwrap();
        s.write_all(&body).unwrap();
        let mut buf = [0u8; 8];
        assert_eq!(
            s.read(&mut buf).unwrap_or(0),
            0,
            "malformed request closes the connection"
        );
        assert!(broker.is_running(), "broker died; log:\n{}", broker.log());
    }
    alive(&broker);
}

#[test]
fn unsupported_api_versions_version_is_answered_at_v0() {
    let broker = TestBroker::start(BIN);
    let mut s = TcpStream::connect(broker.kafka_addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    // ApiVersions v99: header v2 layout, body irrelevant.
    let mut body = Vec::new();
    body.extend_from_slice(&18i16.to_be_bytes());
    body.extend_from_slice(&99i16.to_be_bytes());
    body.extend_from_slice(&42i32.to_be_bytes());
    body.extend_from_slice(&(-1i16).to_be_bytes());
    body.push(0);
    s.write_all(&(body.len() as i32).to_be_bytes()).unwrap();
    s.write_all(&body).unwrap();
    let mut resp = bytes::Bytes::from(read_frame(&mut s));
    let header = ResponseHeader::decode(&mut resp, 0).unwrap();
    assert_eq!(header.correlation_id, 42);
    let r = ApiVersionsResponse::decode(&mut resp, 0).unwrap();
    assert_eq!(r.error_code, 35, "UNSUPPORTED_VERSION");
    assert!(r
        .api_keys
        .iter()
        .any(|k| k.api_key == ApiKey::Produce as i16));
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let broker = TestBroker::start(BIN);
    rt().block_on(create(&broker.bootstrap(), "pipe", 1));
    let mut s = TcpStream::connect(broker.kafka_addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut all = Vec::new();
    for i in 0..40 {
        let f = if i % 3 == 0 {
            frame(&ApiVersionsRequest::default(), 2, i)
        } else {
            let req = kafka_protocol::messages::ProduceRequest::default()
                .with_acks(-1)
                .with_timeout_ms(5000)
                .with_topic_data(vec![kafka_protocol::messages::produce_request::TopicProduceData::default()
                    .with_name(common::topic("pipe"))
                    .with_partition_data(vec![kafka_protocol::messages::produce_request::PartitionProduceData::default()
                        .with_index(0)
                        .with_records(Some(batch(&[&format!("r{i}")], i64::from(i)).into()))])]);
            frame(&req, 7, i)
        };
        all.extend_from_slice(&f);
    }
    s.write_all(&all).unwrap();
    let mut offsets = Vec::new();
    for i in 0..40 {
        let mut resp = bytes::Bytes::from(read_frame(&mut s));
        let header = ResponseHeader::decode(&mut resp, 0).unwrap();
        assert_eq!(
            header.correlation_id, i,
            "responses come back in request order"
        );
        if i % 3 != 0 {
            let r = kafka_protocol::messages::ProduceResponse::decode(&mut resp, 7).unwrap();
            offsets.push(r.responses[0].partition_responses[0].base_offset);
        }
    }
    let expected: Vec<i64> = (0..offsets.len() as i64).collect();
    assert_eq!(offsets, expected, "appends happen in request order");
}

#[test]
fn group_commit_covers_many_acks_all_requests_per_fsync() {
    let broker = TestBroker::start(BIN);
    let rt = rt();
    rt.block_on(create(&broker.bootstrap(), "gc", 1));
    let clients = 8;
    let per_client = 25;
    let threads: Vec<_> = (0..clients)
        .map(|c| {
            let addr = broker.kafka_addr();
            std::thread::spawn(move || {
                let mut s = TcpStream::connect(addr).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
                let mut all = Vec::new();
                for i in 0..per_client {
                    let req = kafka_protocol::messages::ProduceRequest::default()
                        .with_acks(-1)
                        .with_timeout_ms(5000)
                        .with_topic_data(vec![kafka_protocol::messages::produce_request::TopicProduceData::default()
                            .with_name(common::topic("gc"))
                            .with_partition_data(vec![kafka_protocol::messages::produce_request::PartitionProduceData::default()
                                .with_index(0)
                                .with_records(Some(batch(&[&format!("{c}-{i}")], 1).into()))])]);
                    all.extend_from_slice(&frame(&req, 7, i));
                }
                s.write_all(&all).unwrap();
                for _ in 0..per_client {
                    let mut resp = bytes::Bytes::from(read_frame(&mut s));
                    ResponseHeader::decode(&mut resp, 0).unwrap();
                    let r = kafka_protocol::messages::ProduceResponse::decode(&mut resp, 7).unwrap();
                    assert_eq!(r.responses[0].partition_responses[0].error_code, 0);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let (_, metrics) = broker.http_get("/metrics");
    let fsyncs: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("veil_fsync_duration_seconds_count "))
        .and_then(|v| v.trim().parse().ok())
        .expect("fsync count exported");
    let requests = f64::from(clients * per_client);
    assert!(
        fsyncs >= 1.0 && fsyncs < requests,
        "{fsyncs} fsyncs for {requests} acks=all requests"
    );
    rt.block_on(async {
        let mut conn = Connection::connect(&broker.bootstrap(), "t").await.unwrap();
        let f = fetch(&mut conn, "gc", 0, 0, 0).await;
        assert_eq!(
            f.responses[0].partitions[0].high_watermark,
            i64::from(clients * per_client)
        );
    });
}

#[test]
fn torn_write_is_truncated_on_restart_and_nothing_valid_is_lost() {
    let mut broker = TestBroker::start(BIN);
    let rt = rt();
    rt.block_on(async {
        create(&broker.bootstrap(), "torn", 1).await;
        let mut conn = Connection::connect(&broker.bootstrap(), "t").await.unwrap();
        for i in 0..3 {
            produce(&mut conn, "torn", 0, -1, batch(&[&format!("ok{i}")], 1)).await;
        }
    });
    broker.kill();
    let segment = broker
        .data_dir()
        .join("torn-0")
        .join("00000000000000000000.log");
    let mut partial = batch(&["half-written"], 1);
    partial.truncate(partial.len() / 2);
    std::fs::OpenOptions::new()
        .append(true)
        .open(&segment)
        .unwrap()
        .write_all(&partial)
        .unwrap();
    broker.restart();
    rt.block_on(async {
        let mut conn = Connection::connect(&broker.bootstrap(), "t").await.unwrap();
        let f = fetch(&mut conn, "torn", 0, 0, 0).await;
        assert_eq!(f.responses[0].partitions[0].high_watermark, 3);
        let r = produce(&mut conn, "torn", 0, -1, batch(&["next"], 1)).await;
        assert_eq!(r.responses[0].partition_responses[0].base_offset, 3);
    });
    let sidecar = broker
        .data_dir()
        .join("torn-0")
        .join("00000000000000000000.log.truncated");
    assert_eq!(
        std::fs::read(sidecar).unwrap(),
        partial,
        "the torn bytes are kept aside"
    );
}

#[test]
fn retention_deletes_old_segments_and_advances_the_log_start() {
    let broker = TestBroker::start_with(BIN, &["--set", "log.retention_check_interval_ms=100"]);
    let rt = rt();
    rt.block_on(async {
        let mut admin = veil_client::Admin::connect(&broker.bootstrap())
            .await
            .unwrap();
        let spec = veil_client::TopicSpec {
            name: "old".into(),
            partitions: 1,
            replication_factor: 1,
            // Every batch gets its own segment; anything older than a minute expires.
            configs: [("segment.bytes", "100"), ("retention.ms", "60000")]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
        };
        admin.create_topic(&spec, false).await.unwrap();
        let mut conn = Connection::connect(&broker.bootstrap(), "t").await.unwrap();
        for i in 0..5 {
            // Timestamps from 1970: long expired.
            produce(
                &mut conn,
                "old",
                0,
                -1,
                batch(&[&format!("{i:0>80}")], 1_000 + i),
            )
            .await;
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        let start = loop {
            let f = fetch(&mut conn, "old", 0, 4, 0).await;
            let start = f.responses[0].partitions[0].log_start_offset;
            if start == 4 || Instant::now() > deadline {
                break start;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert_eq!(start, 4, "all but the active segment deleted");
        let f = fetch(&mut conn, "old", 0, 0, 0).await;
        assert_eq!(
            f.responses[0].partitions[0].error_code, 1,
            "OFFSET_OUT_OF_RANGE below the log start"
        );
    });
}

#[test]
fn connection_limit_refuses_extra_clients_and_idle_ones_are_closed() {
    let broker = TestBroker::start_with(
        BIN,
        &[
            "--set",
            "network.max_connections=2",
            "--set",
            "network.idle_timeout_ms=500",
        ],
    );
    let a = TcpStream::connect(broker.kafka_addr()).unwrap();
    let b = TcpStream::connect(broker.kafka_addr()).unwrap();
    let mut c = TcpStream::connect(broker.kafka_addr()).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut buf = [0u8; 4];
    assert_eq!(c.read(&mut buf).unwrap_or(0), 0, "third connection refused");
    // The first two idle out, after which new clients are served again.
    let mut a = a;
    a.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    assert_eq!(a.read(&mut buf).unwrap_or(0), 0, "idle connection closed");
    drop(b);
    std::thread::sleep(Duration::from_millis(700));
    alive(&broker);
}
