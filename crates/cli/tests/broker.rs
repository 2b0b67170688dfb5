//! End-to-end tests of the real `veil` binary on ephemeral loopback ports.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{batch, create, fetch, produce, rt, BIN};
use veil_client::Connection;
use veil_testkit::TestBroker;

#[test]
fn produce_fetch_round_trip_assigns_offsets_and_keeps_bytes() {
    let broker = TestBroker::start(BIN);
    rt().block_on(async {
        create(&broker.bootstrap(), "events", 2).await;
        let mut conn = Connection::connect(&broker.bootstrap(), "t").await.unwrap();
        let first = batch(&["a", "b", "c"], 1_000);
        let resp = produce(&mut conn, "events", 1, -1, first.clone()).await;
        let p = &resp.responses[0].partition_responses[0];
        assert_eq!((p.error_code, p.base_offset), (0, 0));
        let resp = produce(&mut conn, "events", 1, 1, batch(&["d"], 2_000)).await;
        assert_eq!(resp.responses[0].partition_responses[0].base_offset, 3);

        // acks=1 did not wait for the fsync; the record is served once it
        // is durable (a waiting consumer has group commit sync it at once).
        let deadline = Instant::now() + Duration::from_secs(10);
        let f = loop {
            let f = fetch(&mut conn, "events", 1, 3, 1_000).await;
            if f.responses[0].partitions[0].high_watermark == 4 || Instant::now() > deadline {
                break fetch(&mut conn, "events", 1, 0, 0).await;
            }
        };
        let part = &f.responses[0].partitions[0];
        assert_eq!(part.error_code, 0);
        assert_eq!(part.high_watermark, 4);
        let records = part.records.clone().unwrap();
        // The first batch comes back byte for byte (its base offset was 0
        // already), except the partition leader epoch the broker stamps.
        assert_eq!(&records[..12], &first[..12]);
        assert_eq!(&records[12..16], &0i32.to_be_bytes());
        assert_eq!(&records[16..first.len()], &first[16..]);
        let headers = veil_log::validate_records(&records, 1 << 20).unwrap();
        assert_eq!(
            headers.iter().map(|h| h.base_offset).collect::<Vec<_>>(),
            vec![0, 3]
        );

        // Fetching at the end waits for data, then returns empty at the deadline.
        let started = Instant::now();
        let f = fetch(&mut conn, "events", 1, 4, 300).await;
        assert!(started.elapsed() >= Duration::from_millis(250));
        assert!(f.responses[0].partitions[0]
            .records
            .as_ref()
            .unwrap()
            .is_empty());
        // Beyond the end is out of range.
        let f = fetch(&mut conn, "events", 1, 99, 0).await;
        assert_eq!(f.responses[0].partitions[0].error_code, 1);
    });
}

#[test]
fn long_poll_wakes_on_append_from_another_connection() {
    let broker = TestBroker::start(BIN);
    let rt = rt();
    rt.block_on(async {
        create(&broker.bootstrap(), "wake", 1).await;
        let bootstrap = broker.bootstrap();
        let producer = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let mut c = Connection::connect(&bootstrap, "p").await.unwrap();
            produce(&mut c, "wake", 0, 1, batch(&["x"], 5)).await
        });
        let mut conn = Connection::connect(&broker.bootstrap(), "c").await.unwrap();
        let started = Instant::now();
        let f = fetch(&mut conn, "wake", 0, 0, 10_000).await;
        assert!(
            started.elapsed() < Duration::from_secs(8),
            "woken by the append, not the deadline"
        );
        assert!(!f.responses[0].partitions[0]
            .records
            .as_ref()
            .unwrap()
            .is_empty());
        producer.await.unwrap();
    });
}

#[test]
fn bad_input_gets_kafka_errors_and_the_broker_keeps_serving() {
    let broker = TestBroker::start(BIN);
    rt().block_on(async {
        create(&broker.bootstrap(), "safe", 1).await;
        let mut conn = Connection::connect(&broker.bootstrap(), "t").await.unwrap();
        // Unknown topic.
        let r = produce(&mut conn, "nope", 0, 1, batch(&["a"], 1)).await;
        assert_eq!(r.responses[0].partition_responses[0].error_code, 3);
        // Unknown partition.
        let r = produce(&mut conn, "safe", 7, 1, batch(&["a"], 1)).await;
        assert_eq!(r.responses[0].partition_responses[0].error_code, 3);
        // Bad CRC.
        let mut bad = batch(&["a"], 1);
        let last = bad.len() - 1;
        bad[last] ^= 0xff;
        let r = produce(&mut conn, "safe", 0, 1, bad).await;
        assert_eq!(
            r.responses[0].partition_responses[0].error_code, 2,
            "CORRUPT_MESSAGE"
        );
        // Invalid acks.
        let r = produce(&mut conn, "safe", 0, 5, batch(&["a"], 1)).await;
        assert_eq!(r.responses[0].partition_responses[0].error_code, 21);
        // Batch above max.message.bytes.
        let big = "x".repeat(1_100_000);
        let r = produce(&mut conn, "safe", 0, 1, batch(&[big.as_str()], 1)).await;
        assert_eq!(
            r.responses[0].partition_responses[0].error_code, 10,
            "MESSAGE_TOO_LARGE"
        );
        // Nothing was appended by any of those.
        let r = produce(&mut conn, "safe", 0, -1, batch(&["ok"], 1)).await;
        assert_eq!(r.responses[0].partition_responses[0].base_offset, 0);
    });

    // A frame claiming 2 GiB is refused before allocation: the connection closes.
    let mut raw = TcpStream::connect(broker.kafka_addr()).unwrap();
    raw.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    raw.write_all(&[0x7f, 0xff, 0xff, 0xff, 0, 0, 0, 0])
        .unwrap();
    let mut buf = [0u8; 16];
    assert_eq!(
        raw.read(&mut buf).unwrap_or(0),
        0,
        "closed without a response"
    );
    // Garbage header: unknown API key 999.
    let mut raw = TcpStream::connect(broker.kafka_addr()).unwrap();
    raw.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    raw.write_all(&[0, 0, 0, 10, 0x03, 0xe7, 0, 0, 0, 0, 0, 1, 0, 0])
        .unwrap();
    assert_eq!(raw.read(&mut buf).unwrap_or(0), 0);

    // The broker still serves everyone else.
    rt().block_on(async {
        let mut conn = Connection::connect(&broker.bootstrap(), "t").await.unwrap();
        let f = fetch(&mut conn, "safe", 0, 0, 0).await;
        assert_eq!(f.responses[0].partitions[0].high_watermark, 1);
    });
}

#[test]
fn acknowledged_writes_survive_kill_9_and_sigterm_exits_zero() {
    let mut broker = TestBroker::start(BIN);
    let rt = rt();
    rt.block_on(async {
        create(&broker.bootstrap(), "durable", 1).await;
        let mut conn = Connection::connect(&broker.bootstrap(), "t").await.unwrap();
        for i in 0..50 {
            let r = produce(&mut conn, "durable", 0, -1, batch(&[&format!("v{i}")], i)).await;
            assert_eq!(r.responses[0].partition_responses[0].error_code, 0);
        }
    });
    broker.kill();
    broker.restart();
    rt.block_on(async {
        let mut conn = Connection::connect(&broker.bootstrap(), "t").await.unwrap();
        let f = fetch(&mut conn, "durable", 0, 0, 0).await;
        assert_eq!(f.responses[0].partitions[0].high_watermark, 50);
        let r = produce(&mut conn, "durable", 0, -1, batch(&["after"], 99)).await;
        assert_eq!(r.responses[0].partition_responses[0].base_offset, 50);
    });
    let status = broker.terminate();
    assert!(status.success(), "SIGTERM exit status {status:?}");
}

#[test]
fn metrics_and_health_endpoints() {
    let broker = TestBroker::start(BIN);
    rt().block_on(async {
        create(&broker.bootstrap(), "observed", 1).await;
        let mut conn = Connection::connect(&broker.bootstrap(), "t").await.unwrap();
        produce(&mut conn, "observed", 0, -1, batch(&["m"], 1)).await;
        produce(&mut conn, "missing", 0, 1, batch(&["m"], 1)).await;
    });
    let (status, body) = broker.http_get("/healthz");
    assert_eq!((status, body.trim()), (200, "ok"));
    let (status, metrics) = broker.http_get("/metrics");
    assert_eq!(status, 200);
    for needle in [
        "veil_requests_total{api=\"produce\"}",
        "veil_request_duration_seconds_bucket{api=\"produce\"",
        "veil_errors_total{api=\"produce\",code=\"3\"} 1",
        "veil_partition_log_end_offset{partition=\"0\",topic=\"observed\"} 1",
        "veil_partition_log_size_bytes{partition=\"0\",topic=\"observed\"}",
        "veil_fsync_duration_seconds_count",
        "veil_network_bytes_in_total",
    ] {
        assert!(metrics.contains(needle), "missing {needle} in:\n{metrics}");
    }
    assert_eq!(broker.http_get("/nope").0, 404);
}

#[test]
fn topics_cli_round_trip() {
    let broker = TestBroker::start(BIN);
    let veil = |args: &[&str]| {
        let out = std::process::Command::new(BIN)
            .args(["topics", "--bootstrap", &broker.bootstrap()])
            .args(args)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, _, err) = veil(&[
        "create",
        "cli-topic",
        "-p",
        "3",
        "--config",
        "retention.ms=60000",
    ]);
    assert!(ok, "{err}");
    let (ok, _, err) = veil(&["create", "cli-topic"]);
    assert!(!ok);
    assert!(err.contains("TOPIC_ALREADY_EXISTS"), "{err}");
    let (_, out, _) = veil(&["list"]);
    assert_eq!(out.trim(), "cli-topic");
    let (ok, out, err) = veil(&["describe", "cli-topic"]);
    assert!(ok, "{err}");
    assert!(out.contains("PartitionCount: 3"), "{out}");
    assert!(out.contains("retention.ms=60000\t(topic)"), "{out}");
    let (ok, _, err) = veil(&[
        "alter",
        "cli-topic",
        "--set",
        "retention.ms=1000",
        "--partitions",
        "4",
    ]);
    assert!(ok, "{err}");
    let (_, out, _) = veil(&["describe", "cli-topic"]);
    assert!(
        out.contains("PartitionCount: 4") && out.contains("retention.ms=1000"),
        "{out}"
    );
    let (ok, _, err) = veil(&["alter", "cli-topic", "--set", "retention.ms=soon"]);
    assert!(!ok);
    assert!(
        err.contains("INVALID_CONFIG") && err.contains("retention.ms"),
        "{err}"
    );
    let (ok, _, err) = veil(&["delete", "cli-topic"]);
    assert!(ok, "{err}");
    let (_, out, _) = veil(&["list"]);
    assert!(out.trim().is_empty(), "{out}");
}

#[test]
fn produce_headers_and_print_them_on_a_plain_topic() {
    let broker = TestBroker::start(BIN);
    rt().block_on(create(&broker.bootstrap(), "with-headers", 1));
    let veil = |args: &[&str], input: &str| {
        let mut child = std::process::Command::new(BIN)
            .args(args)
            .args([
                "--topic",
                "with-headers",
                "--bootstrap",
                &broker.bootstrap(),
            ])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let headers = [
        "--header",
        "trace=t-1",
        "--header",
        "eq=a=b",
        "--header",
        "e=",
    ];
    let (code, _, err) = veil(&[&["produce"][..], &headers].concat(), "one\ntwo\n");
    assert_eq!(code, Some(0), "{err}");
    let (code, _, err) = veil(&["produce"], "three\n");
    assert_eq!(code, Some(0), "{err}");
    let (code, _, err) = veil(&["produce", "--header", "no-equals-sign"], "four\n");
    assert_eq!(code, Some(2), "a usage error");
    assert!(
        err.contains("--header") && err.contains("NAME=VALUE"),
        "{err}"
    );
    let (code, out, err) = veil(
        &[
            "consume",
            "--from-beginning",
            "--print-headers",
            "--max-messages",
            "3",
            "--timeout-ms",
            "20000",
        ],
        "",
    );
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(
        out,
        "trace:t-1,eq:a=b,e:\tone\ntrace:t-1,eq:a=b,e:\ttwo\nNO_HEADERS\tthree\n"
    );
}

#[test]
fn invalid_config_is_a_startup_error_that_names_the_key() {
    let out = std::process::Command::new(BIN)
        .args(["broker", "--set", "log.retention_ms=-7", "--data-dir"])
        .arg(std::env::temp_dir().join("veil-never-created"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("retention"), "{err}");
    let out = std::process::Command::new(BIN)
        .args(["broker", "--set", "no_such_key=1"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no_such_key"));
}

/// A data directory written before metadata was replicated (by the broker
/// of that time: topic `legacy` with two partitions and a retention
/// override, four records, an ACL, and the offsets of group
/// `legacy-group`) opens as a cluster of one: migrated once into the Raft
/// store, with the old files kept aside, and everything still served.
#[test]
fn a_data_dir_from_before_replicated_metadata_is_migrated_once() {
    let temp = tempfile::tempdir().unwrap();
    let data = temp.path().join("data");
    let fixture =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/pre-raft-data-dir");
    veil_testkit::copy_dir(&fixture, &data);
    let mut broker = TestBroker::start_on(
        BIN,
        &data,
        &[
            "--set",
            "authorizer.enabled=true",
            "--set",
            "authorizer.super_users=[\"User:ANONYMOUS\"]",
        ],
    );
    let check = |bootstrap: String| {
        rt().block_on(async move {
            let mut admin = veil_client::Admin::connect(&bootstrap).await.unwrap();
            let t = admin.describe_topic("legacy").await.unwrap();
            assert_eq!(t.partitions.len(), 2);
            for p in &t.partitions {
                assert_eq!(
                    (p.error_code, p.replicas.len(), p.leader),
                    (0, 1, p.replicas[0])
                );
            }
            let retention = t
                .configs
                .iter()
                .find(|(k, _, _)| k == "retention.ms")
                .and_then(|(_, v, _)| v.clone());
            assert_eq!(retention.as_deref(), Some("86400000"));
            let any = veil_client::AclFilter {
                resource_type: 1,
                resource_name: None,
                pattern_type: 1,
                principal: None,
                host: None,
                operation: 1,
                permission: 1,
            };
            let acls = admin.describe_acls(&any).await.unwrap();
            assert!(
                acls.iter()
                    .any(|a| a.principal == "User:alice" && a.resource_name == "legacy"),
                "{acls:?}"
            );
            let mut conn = Connection::connect(&bootstrap, "t").await.unwrap();
            let f = fetch(&mut conn, "legacy", 0, 0, 0).await;
            let part = &f.responses[0].partitions[0];
            assert_eq!((part.error_code, part.high_watermark), (0, 3));
            let offsets = admin.committed_offsets("legacy-group").await.unwrap();
            assert!(
                offsets.values().any(|o| *o == 3),
                "committed offsets survive: {offsets:?}"
            );
        });
    };
    check(broker.bootstrap());
    assert!(
        data.join("meta/pre-raft/meta.log").exists(),
        "old log kept aside"
    );
    assert!(!data.join("meta/meta.log").exists());
    assert!(data.join("meta/raft").is_dir());
    assert!(broker.log().contains("migrated single-node metadata"));
    // The second start reads the Raft store; nothing is migrated again.
    assert!(broker.terminate().success());
    broker.restart();
    check(broker.bootstrap());
    assert_eq!(
        broker
            .log()
            .matches("migrated single-node metadata")
            .count(),
        1
    );
}
