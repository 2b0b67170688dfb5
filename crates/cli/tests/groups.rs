//! Consumer groups against the real binary: committed offsets and group
//! metadata survive `kill -9` and a restart.

mod common;

use bytes::Bytes;
use common::{create, rt, topic, BIN};
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::{
    DescribeGroupsRequest, GroupId, HeartbeatRequest, JoinGroupRequest, OffsetCommitRequest,
    OffsetFetchRequest, SyncGroupRequest,
};
use kafka_protocol::protocol::StrBytes;
use veil_client::Connection;
use veil_testkit::TestBroker;

fn group() -> GroupId {
    GroupId(StrBytes::from_static_str("orders-app"))
}

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_owned())
}

/// Joins (answering MEMBER_ID_REQUIRED) and syncs as the only member;
/// returns (member id, generation).
async fn join_and_sync(conn: &mut Connection) -> (String, i32) {
    let mut req = JoinGroupRequest::default()
        .with_group_id(group())
        .with_session_timeout_ms(30_000)
        .with_rebalance_timeout_ms(30_000)
        .with_protocol_type(s("consumer"))
        .with_protocols(vec![JoinGroupRequestProtocol::default()
            .with_name(s("range"))
            .with_metadata(Bytes::from_static(b"subscription"))]);
    let first = conn.send_at(&req, 9).await.unwrap();
    assert_eq!(first.error_code, 79, "MEMBER_ID_REQUIRED");
    req.member_id = first.member_id;
    let joined = conn.send_at(&req, 9).await.unwrap();
    assert_eq!(joined.error_code, 0);
    let sync = SyncGroupRequest::default()
        .with_group_id(group())
        .with_generation_id(joined.generation_id)
        .with_member_id(joined.member_id.clone())
        .with_assignments(vec![SyncGroupRequestAssignment::default()
            .with_member_id(joined.member_id.clone())
            .with_assignment(Bytes::from_static(b"all of it"))]);
    let synced = conn.send_at(&sync, 5).await.unwrap();
    assert_eq!(synced.error_code, 0);
    assert_eq!(synced.assignment, Bytes::from_static(b"all of it"));
    (joined.member_id.to_string(), joined.generation_id)
}

async fn commit(conn: &mut Connection, member: &str, generation: i32, offsets: &[(i32, i64)]) {
    let req = OffsetCommitRequest::default()
        .with_group_id(group())
        .with_generation_id_or_member_epoch(generation)
        .with_member_id(s(member))
        .with_topics(vec![OffsetCommitRequestTopic::default()
            .with_name(topic("events"))
            .with_partitions(
                offsets
                    .iter()
                    .map(|&(p, o)| {
                        OffsetCommitRequestPartition::default()
                            .with_partition_index(p)
                            .with_committed_offset(o)
                            .with_committed_leader_epoch(0)
                            .with_committed_metadata(Some(s(&format!("meta-{p}"))))
                    })
                    .collect(),
            )]);
    let resp = conn.send_at(&req, 8).await.unwrap();
    for p in &resp.topics[0].partitions {
        assert_eq!(p.error_code, 0, "partition {}", p.partition_index);
    }
}

/// (partition, offset, metadata) of every committed partition.
async fn fetch_all(conn: &mut Connection) -> Vec<(i32, i64, String)> {
    let req = OffsetFetchRequest::default()
        .with_group_id(group())
        .with_topics(None);
    let resp = conn.send_at(&req, 7).await.unwrap();
    assert_eq!(resp.error_code, 0);
    resp.topics
        .iter()
        .flat_map(|t| {
            t.partitions.iter().map(|p| {
                (
                    p.partition_index,
                    p.committed_offset,
                    p.metadata.as_deref().unwrap_or("").to_owned(),
                )
            })
        })
        .collect()
}

#[test]
fn committed_offsets_and_group_metadata_survive_kill_9() {
    let mut broker = TestBroker::start_with(BIN, &["--set", "groups.initial_rebalance_delay_ms=0"]);
    let rt = rt();
    let (member, generation) = rt.block_on(async {
        create(&broker.bootstrap(), "events", 3).await;
        let mut conn = Connection::connect(&broker.bootstrap(), "groups-test")
            .await
            .unwrap();
        let (member, generation) = join_and_sync(&mut conn).await;
        commit(&mut conn, &member, generation, &[(0, 10), (1, 20)]).await;
        commit(&mut conn, &member, generation, &[(1, 21), (2, 30)]).await;
        (member, generation)
    });
    broker.kill();
    broker.restart();
    rt.block_on(async {
        let mut conn = Connection::connect(&broker.bootstrap(), "groups-test")
            .await
            .unwrap();
        let committed = fetch_all(&mut conn).await;
        assert_eq!(
            committed,
            vec![
                (0, 10, "meta-0".into()),
                (1, 21, "meta-1".into()),
                (2, 30, "meta-2".into())
            ]
        );
        // The group came back Stable with its member, generation and assignment.
        let hb = HeartbeatRequest::default()
            .with_group_id(group())
            .with_generation_id(generation)
            .with_member_id(s(&member));
        assert_eq!(conn.send_at(&hb, 4).await.unwrap().error_code, 0);
        let described = conn
            .send_at(
                &DescribeGroupsRequest::default().with_groups(vec![group()]),
                5,
            )
            .await
            .unwrap();
        let g = &described.groups[0];
        assert_eq!(
            (
                g.group_state.as_str(),
                g.protocol_type.as_str(),
                g.protocol_data.as_str()
            ),
            ("Stable", "consumer", "range")
        );
        assert_eq!(g.members.len(), 1);
        assert_eq!(g.members[0].member_id.as_str(), member);
        assert_eq!(
            g.members[0].member_assignment,
            Bytes::from_static(b"all of it")
        );
        assert_eq!(
            g.members[0].member_metadata,
            Bytes::from_static(b"subscription")
        );
        // And the member keeps committing in its generation.
        commit(&mut conn, &member, generation, &[(0, 11)]).await;
        assert_eq!(fetch_all(&mut conn).await[0].1, 11);
    });
    let (status, body) = broker.http_get("/metrics");
    assert_eq!(status, 200);
    assert!(
        body.contains("veil_group_lag{group=\"orders-app\",partition=\"0\",topic=\"events\"} 0"),
        "lag is exported (empty partitions: committed beyond the end counts as 0)"
    );
}

/// Runs `veil groups …` against `broker`; returns (success, stdout, stderr).
fn veil_groups(broker: &TestBroker, args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(BIN)
        .args(["groups", "--bootstrap", &broker.bootstrap()])
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn groups_cli_resets_describes_lists_and_deletes() {
    let broker = TestBroker::start(BIN);
    rt().block_on(async {
        create(&broker.bootstrap(), "clicks", 2).await;
        let mut conn = Connection::connect(&broker.bootstrap(), "t").await.unwrap();
        for p in 0..2 {
            for i in 0..5 {
                common::produce(
                    &mut conn,
                    "clicks",
                    p,
                    -1,
                    common::batch(&[&format!("{i}")], 1_000 + i64::from(i)),
                )
                .await;
            }
        }
    });
    // Dry run by default: shows the plan, commits nothing.
    let (ok, out, err) = veil_groups(
        &broker,
        &[
            "reset-offsets",
            "readers",
            "--topic",
            "clicks",
            "--to-offset",
            "3",
        ],
    );
    assert!(ok, "{err}");
    assert!(out.contains("dry run"), "{out}");
    let (ok, _, err) = veil_groups(&broker, &["describe", "readers"]);
    assert!(!ok && err.contains("does not exist"), "{err}");

    let (ok, out, err) = veil_groups(
        &broker,
        &[
            "reset-offsets",
            "readers",
            "--topic",
            "clicks",
            "--to-offset",
            "3",
            "--execute",
        ],
    );
    assert!(ok, "{err}");
    assert!(out.contains("committed new offsets"), "{out}");
    let (ok, out, err) = veil_groups(&broker, &["describe", "readers"]);
    assert!(ok, "{err}");
    let rows: Vec<Vec<&str>> = out
        .lines()
        .filter(|l| l.starts_with("clicks"))
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        rows,
        vec![
            vec!["clicks", "0", "3", "5", "2", "-"],
            vec!["clicks", "1", "3", "5", "2", "-"]
        ],
        "{out}"
    );

    // Shift back beyond the start clamps to the earliest offset.
    let (ok, out, err) = veil_groups(
        &broker,
        &[
            "reset-offsets",
            "readers",
            "--topic",
            "clicks",
            "--shift-by",
            "-10",
            "--execute",
        ],
    );
    assert!(ok, "{err}");
    assert_eq!(
        out.lines()
            .filter(|l| l.starts_with("clicks") && l.trim_end().ends_with(" 0"))
            .count(),
        2,
        "{out}"
    );
    let (_, out, _) = veil_groups(&broker, &["describe", "readers"]);
    let committed: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with("clicks"))
        .map(|l| l.split_whitespace().nth(2).unwrap())
        .collect();
    assert_eq!(committed, vec!["0", "0"], "{out}");
    // By timestamp: the record stamped 1003 is offset 3 in each partition.
    let (ok, out, err) = veil_groups(
        &broker,
        &[
            "reset-offsets",
            "readers",
            "--topic",
            "clicks",
            "--to-timestamp",
            "1003",
            "--execute",
        ],
    );
    assert!(ok, "{err}");
    assert_eq!(
        out.lines()
            .filter(|l| l.starts_with("clicks") && l.trim_end().ends_with(" 3"))
            .count(),
        2,
        "{out}"
    );

    let (ok, out, _) = veil_groups(&broker, &["list"]);
    assert!(ok && out.lines().any(|l| l.starts_with("readers")), "{out}");
    let (ok, _, err) = veil_groups(&broker, &["delete", "readers"]);
    assert!(ok, "{err}");
    let (_, out, _) = veil_groups(&broker, &["list"]);
    assert!(!out.lines().any(|l| l.starts_with("readers")), "{out}");
}

const INVALID_REQUEST: i16 = 42;
const OFFSET_METADATA_TOO_LARGE: i16 = 12;

/// OffsetFetch of `group` for partition 0 of `t`: (offset, metadata).
async fn fetch_t0(conn: &mut Connection, group: &str) -> (i64, String) {
    let req = OffsetFetchRequest::default()
        .with_group_id(GroupId(s(group)))
        .with_topics(None);
    let resp = conn.send_at(&req, 7).await.unwrap();
    assert_eq!(resp.error_code, 0);
    let p = resp
        .topics
        .iter()
        .filter(|t| t.name.as_str() == "t")
        .flat_map(|t| &t.partitions)
        .find(|p| p.partition_index == 0)
        .expect("partition 0 of t is committed");
    (
        p.committed_offset,
        p.metadata.as_deref().unwrap_or("").to_owned(),
    )
}

/// A simple consumer's commit (generation -1) of `t`/0, once per entry.
fn simple_commit(group: &str, entries: &[(i64, &str)]) -> OffsetCommitRequest {
    OffsetCommitRequest::default()
        .with_group_id(GroupId(s(group)))
        .with_generation_id_or_member_epoch(-1)
        .with_topics(vec![OffsetCommitRequestTopic::default()
            .with_name(topic("t"))
            .with_partitions(
                entries
                    .iter()
                    .map(|&(offset, metadata)| {
                        OffsetCommitRequestPartition::default()
                            .with_partition_index(0)
                            .with_committed_offset(offset)
                            .with_committed_leader_epoch(-1)
                            .with_committed_metadata(Some(s(metadata)))
                    })
                    .collect(),
            )])
}

#[test]
fn a_commit_repeating_one_partition_with_large_metadata_survives_a_restart() {
    let mut broker = TestBroker::start(BIN);
    let rt = rt();
    // 700 entries for partition 0, each with offset.metadata.max.bytes of
    // \x01 (about 2.9 MB on the wire); the last one wins, as in Kafka.
    let metadata = "\u{1}".repeat(4096);
    rt.block_on(async {
        create(&broker.bootstrap(), "t", 1).await;
        let mut conn = Connection::connect(&broker.bootstrap(), "t").await.unwrap();
        let entries: Vec<(i64, &str)> = (0..700).map(|i| (i, metadata.as_str())).collect();
        let resp = conn
            .send_at(&simple_commit("g", &entries), 7)
            .await
            .unwrap();
        let codes: Vec<i16> = resp.topics[0]
            .partitions
            .iter()
            .map(|p| p.error_code)
            .collect();
        assert_eq!(codes, vec![0; 700], "every entry is answered");
        let too_large = "\u{1}".repeat(4097);
        let resp = conn
            .send_at(&simple_commit("g", &[(1, &too_large)]), 7)
            .await
            .unwrap();
        assert_eq!(
            resp.topics[0].partitions[0].error_code,
            OFFSET_METADATA_TOO_LARGE
        );
    });
    assert!(broker.terminate().success());
    broker.restart();
    rt.block_on(async {
        let mut conn = Connection::connect(&broker.bootstrap(), "t").await.unwrap();
        assert_eq!(fetch_t0(&mut conn, "g").await, (699, metadata.clone()));
    });
}

#[test]
fn a_group_with_megabytes_of_protocol_metadata_cannot_stop_a_restart() {
    let mut broker = TestBroker::start_with(BIN, &["--set", "groups.initial_rebalance_delay_ms=0"]);
    let rt = rt();
    let (join_code, sync_code) = rt.block_on(async {
        create(&broker.bootstrap(), "t", 1).await;
        let mut conn = Connection::connect(&broker.bootstrap(), "t").await.unwrap();
        let resp = conn
            .send_at(&simple_commit("big", &[(5, "kept")]), 7)
            .await
            .unwrap();
        assert_eq!(resp.topics[0].partitions[0].error_code, 0);
        let mut join = JoinGroupRequest::default()
            .with_group_id(GroupId(s("big")))
            .with_session_timeout_ms(30_000)
            .with_rebalance_timeout_ms(30_000)
            .with_protocol_type(s("consumer"))
            .with_protocols(vec![JoinGroupRequestProtocol::default()
                .with_name(s("range"))
                .with_metadata(Bytes::from(vec![0xff; 5 << 20]))]);
        let mut joined = conn.send_at(&join, 9).await.unwrap();
        if joined.error_code == 79 {
            join.member_id = joined.member_id.clone();
            joined = conn.send_at(&join, 9).await.unwrap();
        }
        if joined.error_code != 0 {
            return (joined.error_code, None);
        }
        let sync = SyncGroupRequest::default()
            .with_group_id(GroupId(s("big")))
            .with_generation_id(joined.generation_id)
            .with_member_id(joined.member_id.clone())
            .with_assignments(vec![SyncGroupRequestAssignment::default()
                .with_member_id(joined.member_id.clone())
                .with_assignment(Bytes::from_static(b"t-0"))]);
        let synced = conn.send_at(&sync, 5).await.unwrap();
        (joined.error_code, Some(synced.error_code))
    });
    assert!(broker.terminate().success());
    broker.restart();
    rt.block_on(async {
        let mut conn = Connection::connect(&broker.bootstrap(), "t").await.unwrap();
        assert_eq!(fetch_t0(&mut conn, "big").await, (5, "kept".into()));
    });
    // Kafka has no setting for this; a member's protocol metadata is capped
    // so that its group record stays far below what the store reads back.
    assert_eq!((join_code, sync_code), (INVALID_REQUEST, None));
}
