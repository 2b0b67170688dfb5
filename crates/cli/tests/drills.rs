//! Fault drills on three real nodes with librdkafka producers
//! (`enable.idempotence=true`, `acks=all`) and a consumer, checked by
//! `veil_testkit::checker`: every acknowledged record present exactly once
//! and in order per key, nothing read that was later lost, offsets
//! contiguous. Each drill prints its figures; rounds and seeds come from
//! `VEIL_DRILL_ROUNDS` / `VEIL_DRILL_SEED` (printed), so `scripts/drills`
//! can run long campaigns and CI a short one.

mod common;

use std::time::{Duration, Instant};

use common::{eventually, rt};
use rand::{Rng, SeedableRng};
use veil_client::{Admin, TopicSpec};
use veil_testkit::checker::Workload;
use veil_testkit::{ClusterOptions, TestCluster};

/// Short enough timeouts that a paused node is fenced within seconds.
fn options() -> ClusterOptions {
    ClusterOptions {
        cluster: "session_timeout_ms = 3000\nrequest_timeout_ms = 5000\n".into(),
        tables: "[replication]\nreplica_lag_time_max_ms = 5000\n".into(),
        ..ClusterOptions::default()
    }
}

fn rounds(default: usize) -> usize {
    std::env::var("VEIL_DRILL_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn seeded(name: &str) -> rand::rngs::StdRng {
    let seed = std::env::var("VEIL_DRILL_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(rand::random::<u64>);
    println!("{name}: VEIL_DRILL_SEED={seed}");
    rand::rngs::StdRng::seed_from_u64(seed)
}

fn create_topic(cluster: &TestCluster, name: &str, partitions: i32) {
    rt().block_on(async {
        let mut admin = Admin::connect(&cluster.node(1).bootstrap()).await.unwrap();
        let spec = TopicSpec {
            name: name.into(),
            partitions,
            replication_factor: 3,
            configs: std::collections::BTreeMap::new(),
        };
        admin.create_topic(&spec, false).await.unwrap();
    });
}

/// `topic`-`partition` as node `id` describes it.
fn partition_seen_by(
    cluster: &TestCluster,
    id: usize,
    topic: &str,
    partition: i32,
) -> Option<veil_client::PartitionDescription> {
    rt().block_on(async {
        let mut admin = Admin::connect(&cluster.node(id).bootstrap()).await.ok()?;
        let t = admin.describe_topic(topic).await.ok()?;
        t.partitions.into_iter().find(|p| p.partition == partition)
    })
}

/// The leader of `topic`-`partition` as the `live` nodes report it: the newest leader epoch
/// wins, since a node that just woke up may still answer from metadata it has not caught up on.
fn leader_of(cluster: &TestCluster, live: &[usize], topic: &str, partition: i32) -> Option<usize> {
    live.iter()
        .filter_map(|id| partition_seen_by(cluster, *id, topic, partition))
        .filter(|p| p.leader > 0)
        .max_by_key(|p| p.leader_epoch)
        .and_then(|p| usize::try_from(p.leader).ok())
}

/// Waits (bounded) until every node sees every replica of `topic`-`partition` in sync again
/// after the previous round's fault: a leader taken away with no other in-sync replica is
/// rightly not replaced (no unclean election), which is not what a round tests.
fn wait_in_sync(cluster: &TestCluster, topic: &str, partition: i32, round: usize) {
    eventually(
        Duration::from_secs(60),
        &format!("round {round}: every replica back in sync"),
        || {
            for id in 1..=cluster.size() {
                match partition_seen_by(cluster, id, topic, partition) {
                    Some(p) if p.isr.len() == p.replicas.len() => {}
                    seen => return Err(format!("node {id} sees {seen:?}")),
                }
            }
            Ok(())
        },
    );
}

fn assert_clean(name: &str, report: &veil_testkit::checker::Report) {
    println!("{name}: {}", report.summary());
    assert!(report.ok(), "{name}: {report:#?}");
    assert!(report.acknowledged > 0, "{name}: nothing was acknowledged");
}

#[test]
fn killing_the_leader_again_and_again_loses_nothing() {
    let mut rng = seeded("kill-leader");
    let mut cluster = TestCluster::start_with(common::BIN, 3, &options());
    create_topic(&cluster, "hot", 1);
    let workload = Workload::start(&cluster.bootstrap(), "hot", 1, 4, Duration::from_millis(10));
    assert!(workload.wait_progress(50, Duration::from_secs(30)));
    let mut windows = Vec::new();
    for round in 0..rounds(10) {
        wait_in_sync(&cluster, "hot", 0, round);
        let live: Vec<usize> = (1..=3).collect();
        let Some(leader) = leader_of(&cluster, &live, "hot", 0) else {
            panic!("round {round}: no leader");
        };
        let killed = Instant::now();
        cluster.kill(leader);
        assert!(
            workload.wait_progress(20, Duration::from_secs(60)),
            "round {round}: no progress after killing {leader}"
        );
        windows.push(killed.elapsed());
        std::thread::sleep(Duration::from_millis(rng.random_range(0..500)));
        cluster.start_node(leader);
        cluster.wait_ready(&[leader], Duration::from_secs(60));
    }
    windows.sort();
    println!(
        "kill-leader: time to the next acknowledgement after each kill: median {:?}, max {:?}",
        windows[windows.len() / 2],
        windows.last().unwrap()
    );
    let report = workload.finish(&cluster.bootstrap());
    assert_clean("kill-leader", &report);
}

#[test]
fn a_paused_leader_is_replaced_and_never_acknowledges_afterwards() {
    let mut rng = seeded("pause-leader");
    let cluster = TestCluster::start_with(common::BIN, 3, &options());
    create_topic(&cluster, "paused", 1);
    let workload = Workload::start(
        &cluster.bootstrap(),
        "paused",
        1,
        4,
        Duration::from_millis(10),
    );
    assert!(workload.wait_progress(50, Duration::from_secs(30)));
    for round in 0..rounds(2) {
        wait_in_sync(&cluster, "paused", 0, round);
        let leader = leader_of(&cluster, &[1, 2, 3], "paused", 0).expect("a leader");
        cluster.pause(leader);
        let paused = Instant::now();
        // Longer than the session timeout: the others fence it and elect
        // (after electing a new controller first, if it was the controller).
        let others: Vec<usize> = (1..=3).filter(|i| *i != leader).collect();
        let deadline = Instant::now() + Duration::from_secs(30);
        let new = loop {
            let new = leader_of(&cluster, &others, "paused", 0).filter(|n| *n != leader);
            if new.is_some() || Instant::now() > deadline {
                break new;
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        println!(
            "round {round}: paused {leader}; leader {new:?} after {:?}",
            paused.elapsed()
        );
        assert!(new.is_some(), "a new leader took over");
        std::thread::sleep(Duration::from_millis(rng.random_range(0..2000)));
        assert!(workload.wait_progress(20, Duration::from_secs(60)));
        cluster.resume(leader);
        cluster.wait_ready(&[leader], Duration::from_secs(60));
    }
    let report = workload.finish(&cluster.bootstrap());
    assert_clean("pause-leader", &report);
}

#[test]
fn a_controller_that_wakes_up_deposed_fences_nobody() {
    let cluster = TestCluster::start_with(common::BIN, 3, &options());
    let mut old = None;
    eventually(Duration::from_secs(30), "a controller", || {
        old = cluster.controller_seen_by(1);
        old.map(|_| ()).ok_or_else(|| "none known to node 1".into())
    });
    let old = old.unwrap();
    let others: Vec<usize> = (1..=3).filter(|i| *i != old).collect();
    cluster.pause(old);
    // The others elect a controller, which fences the paused node once its lease is over.
    let mut new = None;
    eventually(
        Duration::from_secs(30),
        &format!("a new controller fencing node {old}"),
        || {
            new = cluster
                .controller_seen_by(others[0])
                .filter(|c| *c != old && cluster.fenced_seen_by(*c) == 1);
            new.map(|_| ()).ok_or_else(|| "not yet".into())
        },
    );
    let new = new.unwrap();
    // Woken up, the old controller finds every lease it kept "expired" by its own clock; it
    // must decide nothing on that, neither itself nor through the new controller.
    cluster.resume(old);
    let watch = Instant::now();
    let mut most = 0;
    while watch.elapsed() < Duration::from_secs(5) {
        most = most.max(cluster.fenced_seen_by(new));
        std::thread::sleep(Duration::from_millis(25));
    }
    assert!(
        most <= 1,
        "{most} brokers fenced at once: only the paused node may be"
    );
    cluster.wait_ready(&[1, 2, 3], Duration::from_secs(60));
    assert_eq!(cluster.fenced_seen_by(new), 0);
}

#[test]
fn a_leader_cut_off_from_the_others_is_replaced_and_heals() {
    let cluster = TestCluster::start_with(common::BIN, 3, &options());
    create_topic(&cluster, "cut", 1);
    let workload = Workload::start(&cluster.bootstrap(), "cut", 1, 4, Duration::from_millis(10));
    assert!(workload.wait_progress(50, Duration::from_secs(30)));
    let leader = leader_of(&cluster, &[1, 2, 3], "cut", 0).expect("a leader");
    cluster.isolate(leader);
    let cut = Instant::now();
    let others: Vec<usize> = (1..=3).filter(|i| *i != leader).collect();
    assert!(
        workload.wait_progress(20, Duration::from_secs(60)),
        "writes resume on the majority side"
    );
    println!(
        "partition: writes resumed {:?} after cutting off leader {leader}",
        cut.elapsed()
    );
    let new = leader_of(&cluster, &others, "cut", 0);
    assert!(new.is_some_and(|n| n != leader));
    cluster.heal();
    cluster.wait_ready(&[1, 2, 3], Duration::from_secs(60));
    assert!(workload.wait_progress(20, Duration::from_secs(60)));
    let report = workload.finish(&cluster.bootstrap());
    assert_clean("partition", &report);
}

#[test]
fn a_rolling_restart_under_load_fails_no_delivery() {
    let mut cluster = TestCluster::start_with(common::BIN, 3, &options());
    create_topic(&cluster, "rolling", 3);
    let workload = Workload::start(
        &cluster.bootstrap(),
        "rolling",
        3,
        6,
        Duration::from_millis(10),
    );
    assert!(workload.wait_progress(50, Duration::from_secs(30)));
    for id in 1..=3 {
        let stopping = Instant::now();
        let status = cluster.terminate(id);
        assert!(status.success(), "node {id} stopped cleanly");
        println!("rolling: node {id} stopped in {:?}", stopping.elapsed());
        cluster.start_node(id);
        cluster.wait_ready(&[id], Duration::from_secs(60));
        assert!(workload.wait_progress(20, Duration::from_secs(60)));
    }
    let report = workload.finish(&cluster.bootstrap());
    assert_clean("rolling", &report);
    assert_eq!(report.failed, 0, "no delivery failed: {report:#?}");
}

#[test]
fn two_nodes_down_refuses_acks_all_and_loses_nothing() {
    let mut cluster = TestCluster::start_with(common::BIN, 3, &options());
    create_topic(&cluster, "quorum", 1);
    let workload = Workload::start(
        &cluster.bootstrap(),
        "quorum",
        1,
        2,
        Duration::from_millis(20),
    );
    assert!(workload.wait_progress(50, Duration::from_secs(30)));
    let leader = leader_of(&cluster, &[1, 2, 3], "quorum", 0).expect("a leader");
    let down: Vec<usize> = (1..=3).filter(|i| *i != leader).collect();
    for id in &down {
        cluster.kill(*id);
    }
    // A direct acks=all produce is refused (NOT_ENOUGH_REPLICAS, or a
    // timeout while the ISR still names the dead), never acknowledged.
    let code = rt().block_on(async {
        let mut conn = veil_client::Connection::connect(&cluster.node(leader).bootstrap(), "drill")
            .await
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let resp =
                common::produce(&mut conn, "quorum", 0, -1, common::batch(&["direct"], 1)).await;
            let code = resp.responses[0].partition_responses[0].error_code;
            println!(
                "two-down: direct acks=all produce answered {code} ({:?})",
                resp.responses[0].partition_responses[0].error_message
            );
            if code == 19 || Instant::now() > deadline {
                break code;
            }
            assert!([7, 20].contains(&code), "refused, got {code}");
        }
    });
    assert_eq!(code, 19, "NOT_ENOUGH_REPLICAS once the ISR shrank");
    for id in &down {
        cluster.start_node(*id);
    }
    cluster.wait_ready(&[1, 2, 3], Duration::from_secs(60));
    assert!(
        workload.wait_progress(20, Duration::from_secs(90)),
        "writes resume once a majority of replicas is back"
    );
    let report = workload.finish(&cluster.bootstrap());
    assert_clean("two-down", &report);
}

/// A batch of `values` from producer `pid` (epoch 0) starting at `seq`.
fn idempotent_batch(values: &[&str], pid: i64, seq: i32) -> Vec<u8> {
    let records: Vec<veil_log::testing::TestRecord> = values
        .iter()
        .map(|v| (None, Some(v.as_bytes()), 1_700_000_000_000))
        .collect();
    veil_log::testing::build_batch_with_producer(&records, pid, 0, seq)
}

/// (error code, base offset) of an acks=all produce to partition 0.
async fn send(conn: &mut veil_client::Connection, topic: &str, batch: Vec<u8>) -> (i16, i64) {
    let resp = common::produce(conn, topic, 0, -1, batch).await;
    let p = &resp.responses[0].partition_responses[0];
    (p.error_code, p.base_offset)
}

#[test]
fn a_retry_sent_to_the_new_leader_is_still_a_duplicate() {
    use kafka_protocol::messages::{InitProducerIdRequest, ProducerId};
    let mut cluster = TestCluster::start_with(common::BIN, 3, &options());
    create_topic(&cluster, "dedup", 1);
    let leader = leader_of(&cluster, &[1, 2, 3], "dedup", 0).expect("a leader");
    let pid = rt().block_on(async {
        let mut conn = veil_client::Connection::connect(&cluster.node(leader).bootstrap(), "idem")
            .await
            .unwrap();
        let init = InitProducerIdRequest::default()
            .with_transactional_id(None)
            .with_transaction_timeout_ms(60_000)
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1);
        let pid = conn.send(&init).await.unwrap().producer_id.0;
        assert!(pid >= 0);
        for i in 0..4 {
            let values = [format!("v{}", 2 * i), format!("v{}", 2 * i + 1)];
            let values: Vec<&str> = values.iter().map(String::as_str).collect();
            let sent = send(&mut conn, "dedup", idempotent_batch(&values, pid, 2 * i)).await;
            assert_eq!(sent, (0, i64::from(2 * i)));
        }
        pid
    });
    // The leader dies before the producer sees the last answer; the
    // producer sends the batch again, to whichever node leads now.
    cluster.kill(leader);
    let live: Vec<usize> = (1..=3).filter(|n| *n != leader).collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    let next = loop {
        if let Some(l) = leader_of(&cluster, &live, "dedup", 0).filter(|l| *l != leader) {
            break l;
        }
        assert!(
            Instant::now() < deadline,
            "no new leader after killing {leader}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    println!("dedup: leader {leader} killed, node {next} leads");
    rt().block_on(async {
        let mut conn = veil_client::Connection::connect(&cluster.node(next).bootstrap(), "retry")
            .await
            .unwrap();
        // The new leader may still be settling: NOT_LEADER is retriable.
        let mut last = (-1, -1);
        for _ in 0..100 {
            last = send(&mut conn, "dedup", idempotent_batch(&["v6", "v7"], pid, 6)).await;
            if last.0 == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(last, (0, 6), "the retry was not recognised as the original");
        assert_eq!(
            send(&mut conn, "dedup", idempotent_batch(&["v2", "v3"], pid, 2)).await,
            (0, 2)
        );
        assert_eq!(
            send(&mut conn, "dedup", idempotent_batch(&["v8"], pid, 8)).await,
            (0, 8)
        );
        let hw = common::fetch(&mut conn, "dedup", 0, 0, 0).await.responses[0].partitions[0]
            .high_watermark;
        assert_eq!(hw, 9, "a duplicate was appended again");
    });
}
