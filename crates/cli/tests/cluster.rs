//! Three real `veil` processes on 127.0.0.1/.2/.3 forming one cluster:
//! the metadata quorum elects a controller, survives the loss of any one
//! node (kill -9, a network partition), refuses writes without a majority,
//! and keeps everything acknowledged across restarts and a lost disk.
//! Timings are printed, never asserted.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::rt;
use veil_client::{Admin, TopicSpec};
use veil_testkit::{ClusterOptions, TestCluster};

/// Retriable errors a metadata write may get while the quorum has no
/// majority: NOT_CONTROLLER (41) or REQUEST_TIMED_OUT (7).
const RETRIABLE: [i16; 2] = [41, 7];

fn spec(name: &str, partitions: i32, rf: i16) -> TopicSpec {
    TopicSpec {
        name: name.into(),
        partitions,
        replication_factor: rf,
        configs: std::collections::BTreeMap::new(),
    }
}

/// Creates a topic through `bootstrap`; the Kafka error code on failure.
async fn create(bootstrap: &str, name: &str, rf: i16) -> Result<(), i16> {
    let mut admin = Admin::connect(bootstrap).await.map_err(|_| -1i16)?;
    admin
        .create_topic(&spec(name, 1, rf), false)
        .await
        .map_err(|e| e.code().unwrap_or(-1))
}

async fn topics(bootstrap: &str) -> BTreeSet<String> {
    let mut admin = Admin::connect(bootstrap).await.unwrap();
    admin.list_topics().await.unwrap().into_iter().collect()
}

/// Short timeouts so the failure cases finish quickly.
fn quick() -> ClusterOptions {
    ClusterOptions {
        cluster: "request_timeout_ms = 3000\n".into(),
        ..ClusterOptions::default()
    }
}

/// Node `id`'s topics once they include every one of `names` (polled for
/// at most 20 s: a node that was cut off or restarted catches up after it
/// is ready).
fn caught_up(cluster: &TestCluster, id: usize, names: &[&str]) -> BTreeSet<String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let seen = rt().block_on(topics(&cluster.node(id).bootstrap()));
        if names.iter().all(|n| seen.contains(*n)) {
            return seen;
        }
        assert!(
            Instant::now() < deadline,
            "node {id} lacks some of {names:?}: {seen:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn three_nodes_elect_a_controller_and_spread_replicas() {
    let cluster = TestCluster::start(common::BIN, 3);
    let controller = cluster.wait_controller(&[1, 2, 3], Duration::from_secs(20));
    println!("controller: node {controller}");
    rt().block_on(async {
        let mut admin = Admin::connect(&cluster.node(2).bootstrap()).await.unwrap();
        admin
            .create_topic(&spec("spread", 3, 3), false)
            .await
            .unwrap();
        for id in 1..=3 {
            let mut admin = Admin::connect(&cluster.node(id).bootstrap()).await.unwrap();
            let t = admin.describe_topic("spread").await.unwrap();
            let leaders: BTreeSet<i32> = t.partitions.iter().map(|p| p.leader).collect();
            assert_eq!(leaders, BTreeSet::from([1, 2, 3]), "node {id}: {t:?}");
            for p in &t.partitions {
                let replicas: BTreeSet<i32> = p.replicas.iter().copied().collect();
                assert_eq!(replicas, BTreeSet::from([1, 2, 3]));
                assert_eq!(p.isr.len(), 3);
            }
        }
        let mut admin = Admin::connect(&cluster.node(3).bootstrap()).await.unwrap();
        let err = admin
            .create_topic(&spec("too-many", 1, 4), false)
            .await
            .unwrap_err();
        assert_eq!(err.code(), Some(38), "INVALID_REPLICATION_FACTOR: {err}");
    });
    // Every node lists all three brokers.
    for id in 1..=3 {
        let (_, metrics) = cluster.node(id).http_get("/metrics");
        assert!(metrics.contains("veil_brokers_registered 3"), "{metrics}");
        assert!(metrics.contains("veil_brokers_fenced 0"), "{metrics}");
    }
}

#[test]
fn killing_the_controller_elects_another_and_writes_resume() {
    let mut cluster = TestCluster::start_with(common::BIN, 3, &quick());
    let old = cluster.wait_controller(&[1, 2, 3], Duration::from_secs(20));
    let rest: Vec<usize> = (1..=3).filter(|i| *i != old).collect();
    rt().block_on(create(&cluster.node(rest[0]).bootstrap(), "before", 3))
        .unwrap();
    let killed = Instant::now();
    cluster.kill(old);
    let bootstrap = cluster.node(rest[1]).bootstrap();
    let mut attempts = 0;
    loop {
        attempts += 1;
        match rt().block_on(create(&bootstrap, "after", 2)) {
            Ok(()) => break,
            Err(code) => assert!(
                RETRIABLE.contains(&code) && killed.elapsed() < Duration::from_secs(30),
                "code {code} after {:?}",
                killed.elapsed()
            ),
        }
    }
    println!(
        "controller {old} killed: metadata writes succeeded again after {:?} ({attempts} attempts)",
        killed.elapsed()
    );
    let new = cluster.wait_controller(&rest, Duration::from_secs(20));
    assert_ne!(new, old);
    let seen = rt().block_on(topics(&cluster.node(rest[0]).bootstrap()));
    assert!(
        seen.contains("before") && seen.contains("after"),
        "{seen:?}"
    );
}

#[test]
fn without_a_majority_writes_fail_retriably_and_reads_still_work() {
    let mut cluster = TestCluster::start_with(common::BIN, 3, &quick());
    rt().block_on(create(&cluster.node(1).bootstrap(), "kept", 3))
        .unwrap();
    cluster.kill(2);
    cluster.kill(3);
    let bootstrap = cluster.node(1).bootstrap();
    let started = Instant::now();
    let code = rt().block_on(create(&bootstrap, "refused", 1)).unwrap_err();
    println!(
        "write without a majority answered {code} after {:?}",
        started.elapsed()
    );
    assert!(RETRIABLE.contains(&code), "retriable, got {code}");
    let seen = rt().block_on(topics(&bootstrap));
    assert!(
        seen.contains("kept"),
        "reads of existing metadata work: {seen:?}"
    );
    assert!(!seen.contains("refused"));
    // One node back: a majority again.
    cluster.start_node(2);
    cluster.wait_ready(&[1, 2], Duration::from_secs(30));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match rt().block_on(create(&bootstrap, "resumed", 2)) {
            Ok(()) => break,
            Err(code) => assert!(
                RETRIABLE.contains(&code) && Instant::now() < deadline,
                "code {code}"
            ),
        }
    }
    // Ready means registered and applied what it has, not caught up with
    // the leader: node 2 may still be receiving the newest change.
    let seen = caught_up(&cluster, 2, &["kept", "resumed"]);
    assert!(
        !seen.contains("refused"),
        "an unacknowledged write did not happen later either: {seen:?}"
    );
}

#[test]
fn an_isolated_controller_steps_aside_and_only_the_majority_acknowledges() {
    let cluster = TestCluster::start_with(common::BIN, 3, &quick());
    let old = cluster.wait_controller(&[1, 2, 3], Duration::from_secs(20));
    let majority: Vec<usize> = (1..=3).filter(|i| *i != old).collect();
    cluster.isolate(old);
    let cut = Instant::now();
    let new = cluster.wait_controller(&majority, Duration::from_secs(30));
    println!(
        "controller {old} cut off: node {new} took over after {:?}",
        cut.elapsed()
    );
    // Writes to both sides: only the majority's are acknowledged.
    let mut acknowledged = Vec::new();
    for i in 0..3 {
        let name = format!("majority-{i}");
        if rt()
            .block_on(create(&cluster.node(majority[i % 2]).bootstrap(), &name, 2))
            .is_ok()
        {
            acknowledged.push(name);
        }
        let name = format!("minority-{i}");
        let code = rt()
            .block_on(create(&cluster.node(old).bootstrap(), &name, 1))
            .unwrap_err();
        assert!(RETRIABLE.contains(&code), "minority write answered {code}");
    }
    assert!(
        !acknowledged.is_empty(),
        "the majority side acknowledges writes"
    );
    assert_ne!(
        cluster.controller_seen_by(old),
        Some(old),
        "the isolated node no longer acts as controller"
    );
    cluster.heal();
    cluster.wait_controller(&[1, 2, 3], Duration::from_secs(30));
    cluster.wait_ready(&[1, 2, 3], Duration::from_secs(30));
    let acknowledged: Vec<&str> = acknowledged.iter().map(String::as_str).collect();
    for id in 1..=3 {
        let seen = caught_up(&cluster, id, &acknowledged);
        assert!(
            seen.iter().all(|t| !t.starts_with("minority-")),
            "node {id} has a minority write: {seen:?}"
        );
    }
}

#[test]
fn everything_survives_a_full_restart_and_a_wiped_node_catches_up() {
    // Snapshots every 20 changes, so the wiped node gets one.
    let options = ClusterOptions {
        cluster: "snapshot_every = 20\nrequest_timeout_ms = 5000\n".into(),
        ..ClusterOptions::default()
    };
    let mut cluster = TestCluster::start_with(common::BIN, 3, &options);
    let mut expected = BTreeSet::new();
    for i in 0..30 {
        let name = format!("t{i}");
        rt().block_on(create(&cluster.node(1 + i % 3).bootstrap(), &name, 3))
            .unwrap();
        expected.insert(name);
    }
    for id in 1..=3 {
        cluster.terminate(id);
    }
    for id in 1..=3 {
        cluster.start_node(id);
    }
    cluster.wait_ready(&[1, 2, 3], Duration::from_secs(60));
    for id in 1..=3 {
        let seen = rt().block_on(topics(&cluster.node(id).bootstrap()));
        assert_eq!(seen, expected, "node {id} after a full restart");
    }
    // A lost disk: the node rejoins without voting and catches up from a snapshot.
    let wiped = cluster.wait_controller(&[1, 2, 3], Duration::from_secs(20)) % 3 + 1;
    cluster.wipe_and_restart(wiped);
    cluster.wait_ready(&[wiped], Duration::from_secs(60));
    let seen = rt().block_on(topics(&cluster.node(wiped).bootstrap()));
    assert_eq!(seen, expected, "the wiped node {wiped} caught up");
    let log = cluster.node(wiped).log();
    assert!(
        log.contains("rejoining without voting") && log.contains("installed a metadata snapshot"),
        "{log}"
    );
}
