//! Operating a three-node cluster through the Kafka protocol: `veil cluster
//! status` (DescribeCluster + DescribeQuorum), dynamic broker configs set
//! once for every node, and a voter whose metadata disk fills up. Real
//! processes on 127.0.0.1/.2/.3; timings are printed, never asserted.

mod common;
#[path = "common/raw.rs"]
mod raw;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{eventually, rt, BIN};
use veil_client::{Admin, TopicSpec};
use veil_testkit::{ClusterOptions, TestCluster};

fn quick() -> ClusterOptions {
    ClusterOptions {
        cluster: "request_timeout_ms = 3000\nsession_timeout_ms = 3000\n".into(),
        ..ClusterOptions::default()
    }
}

/// `veil cluster status` against `bootstrap`: (success, stdout, stderr).
fn status(bootstrap: &str) -> (bool, String, String) {
    let out = Command::new(BIN)
        .args(["cluster", "status", "-b", bootstrap, "--timeout-ms", "3000"])
        .env("VEIL_LOG", "warn")
        .output()
        .expect("run veil cluster status");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The whitespace-separated columns of node `id`'s row.
fn row(table: &str, id: usize) -> Vec<String> {
    table
        .lines()
        .find(|l| l.split_whitespace().next() == Some(&id.to_string()))
        .unwrap_or_else(|| panic!("no row for node {id}:\n{table}"))
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

async fn create(bootstrap: &str, name: &str, rf: i16) -> Result<(), String> {
    let mut admin = Admin::connect(bootstrap).await.map_err(|e| e.to_string())?;
    let spec = TopicSpec {
        name: name.into(),
        partitions: 1,
        replication_factor: rf,
        configs: BTreeMap::new(),
    };
    admin
        .create_topic(&spec, false)
        .await
        .map_err(|e| e.to_string())
}

#[test]
fn status_shows_voters_controller_and_nodes_and_fails_without_a_leader() {
    let mut cluster = TestCluster::start_with(BIN, 3, &quick());
    let controller = cluster.wait_controller(&[1, 2, 3], Duration::from_secs(20));
    rt().block_on(create(&cluster.node(1).bootstrap(), "status", 3))
        .unwrap();
    // Only the controller describes the quorum; the others say so.
    rt().block_on(async {
        for id in 1..=3 {
            let mut admin = Admin::connect(&cluster.node(id).bootstrap()).await.unwrap();
            match admin.describe_quorum().await {
                Ok(q) => {
                    assert_eq!(id, controller, "only the controller answers");
                    assert_eq!(q.leader_id as usize, controller);
                    let voters: Vec<i32> = q.voters.iter().map(|v| v.node_id).collect();
                    assert_eq!(voters, vec![1, 2, 3]);
                    assert!(q.observers.is_empty());
                    assert!(q.high_watermark > 0);
                }
                Err(e) => {
                    assert_ne!(id, controller, "{e}");
                    assert_eq!(e.code(), Some(6), "NOT_LEADER_OR_FOLLOWER: {e}");
                }
            }
        }
    });
    let bystander = (1..=3).find(|i| *i != controller).unwrap();
    eventually(Duration::from_secs(15), "three alive nodes", || {
        let (ok, table, err) = status(&cluster.node(bystander).bootstrap());
        if !ok {
            return Err(err);
        }
        for id in 1..=3 {
            let r = row(&table, id);
            if r[2] != "alive" && !(r[2] == "(controller)" && r[3] == "alive") {
                return Err(table);
            }
        }
        Ok(())
    });
    let (_, table, _) = status(&cluster.node(bystander).bootstrap());
    println!("{table}");
    assert!(
        table.contains(&format!("controller: node {controller}")),
        "{table}"
    );
    assert!(table.contains("voters: 1, 2, 3"), "{table}");
    assert_eq!(row(&table, controller)[1..3], ["voter", "(controller)"]);

    // One node gone: fenced, and its replica falls behind.
    let gone = (1..=3)
        .find(|i| *i != controller && *i != bystander)
        .unwrap();
    cluster.kill(gone);
    for i in 0..3 {
        rt().block_on(create(
            &cluster.node(bystander).bootstrap(),
            &format!("after-{i}"),
            2,
        ))
        .unwrap();
    }
    eventually(Duration::from_secs(20), "the killed node fenced", || {
        let (ok, table, err) = status(&cluster.node(bystander).bootstrap());
        let r = row(&table, gone);
        if ok && r[2] == "fenced" && r[6].parse::<i64>().is_ok_and(|lag| lag >= 3) {
            Ok(())
        } else {
            Err(format!("{table}{err}"))
        }
    });
    println!("{}", status(&cluster.node(bystander).bootstrap()).1);

    // No majority: no leader, and the command says so with its exit status.
    cluster.kill(controller);
    eventually(
        Duration::from_secs(20),
        "status to fail without a leader",
        || {
            let (ok, out, err) = status(&cluster.node(bystander).bootstrap());
            if ok {
                Err(out)
            } else if err.contains("no leader") {
                Ok(())
            } else {
                Err(format!("{out}{err}"))
            }
        },
    );
}

/// Configs of broker resource `name` as node `id` describes them.
async fn broker_configs(
    cluster: &TestCluster,
    id: usize,
    name: &str,
) -> BTreeMap<String, (Option<String>, i8)> {
    let mut admin = Admin::connect(&cluster.node(id).bootstrap()).await.unwrap();
    admin
        .describe_broker_configs(name)
        .await
        .unwrap()
        .into_iter()
        .map(|c| (c.name, (c.value, c.source)))
        .collect()
}

fn rejected(cluster: &TestCluster, id: usize) -> u64 {
    let (_, metrics) = cluster.node(id).http_get("/metrics");
    // One series per listener: the sum over them.
    metrics
        .lines()
        .filter(|l| l.starts_with("veil_connections_rejected_total"))
        .filter_map(|l| l.rsplit(' ').next()?.trim().parse::<f64>().ok())
        .map(|v| v as u64)
        .sum()
}

#[test]
fn a_cluster_wide_default_set_on_one_node_applies_on_all_three() {
    let cluster = TestCluster::start_with(BIN, 3, &quick());
    rt().block_on(create(&cluster.node(2).bootstrap(), "retained", 3))
        .unwrap();
    // kafka-configs --entity-type brokers --entity-default --alter
    //   --add-config max.connections=3,log.retention.ms=3600000
    rt().block_on(async {
        let mut admin = Admin::connect(&cluster.node(1).bootstrap()).await.unwrap();
        let set: BTreeMap<String, String> = [
            ("max.connections".to_owned(), "3".to_owned()),
            ("log.retention.ms".to_owned(), "3600000".to_owned()),
        ]
        .into();
        admin.alter_broker_configs("", &set, &[]).await.unwrap();
        let err = admin
            .alter_broker_configs("", &[("log.dirs".into(), "/x".into())].into(), &[])
            .await
            .unwrap_err();
        assert_eq!(err.code(), Some(42), "{err}");
        assert!(
            err.to_string()
                .contains("Cannot update these configs dynamically: Set(log.dirs)"),
            "{err}"
        );
    });
    for id in 1..=3 {
        let name = id.to_string();
        eventually(Duration::from_secs(10), "the default on every node", || {
            let configs = rt().block_on(broker_configs(&cluster, id, &name));
            match configs.get("max.connections") {
                Some((Some(v), 3)) if v == "3" => Ok(()),
                other => Err(format!("node {id}: {other:?}")),
            }
        });
        let defaults = rt().block_on(broker_configs(&cluster, id, ""));
        assert_eq!(
            defaults.keys().collect::<Vec<_>>(),
            vec!["log.retention.ms", "max.connections"],
            "node {id} describes only what is set cluster-wide"
        );
        let topic = rt().block_on(async {
            let mut admin = Admin::connect(&cluster.node(id).bootstrap()).await.unwrap();
            admin.describe_configs("retained").await.unwrap()
        });
        let retention = topic.iter().find(|c| c.0 == "retention.ms").unwrap();
        assert_eq!(
            (retention.1.as_deref(), retention.2),
            (Some("3600000"), 3),
            "node {id}: the topic follows the dynamic default"
        );
        // Three client connections at once, no more (retried while the
        // connections of the checks above are still closing).
        let before = rejected(&cluster, id);
        let addr = cluster.node(id).kafka_addr();
        eventually(
            Duration::from_secs(10),
            "three admitted, a fourth refused",
            || {
                let mut held = Vec::new();
                for _ in 0..3 {
                    let mut s = std::net::TcpStream::connect(addr).map_err(|e| e.to_string())?;
                    if !raw::api_versions(&mut s, 1) {
                        return Err(format!("node {id} refused one of the first three"));
                    }
                    held.push(s);
                }
                let mut fourth = std::net::TcpStream::connect(addr).map_err(|e| e.to_string())?;
                if raw::closed_within(&mut fourth, Duration::from_secs(5)) {
                    Ok(())
                } else {
                    Err(format!("node {id} admitted a fourth"))
                }
            },
        );
        assert!(
            rejected(&cluster, id) > before,
            "node {id} counts the refusal"
        );
    }
    // The quorum is not a client: it kept working through all of that.
    rt().block_on(create(&cluster.node(3).bootstrap(), "still-writable", 3))
        .unwrap();
    // Removing the default lifts the limit everywhere.
    rt().block_on(async {
        let mut admin = Admin::connect(&cluster.node(3).bootstrap()).await.unwrap();
        admin
            .alter_broker_configs("", &BTreeMap::new(), &["max.connections".into()])
            .await
            .unwrap();
    });
    for id in 1..=3 {
        eventually(Duration::from_secs(10), "the limit lifted", || {
            let addr = cluster.node(id).kafka_addr();
            let mut held = Vec::new();
            for _ in 0..5 {
                let mut s = std::net::TcpStream::connect(addr).map_err(|e| e.to_string())?;
                if !raw::api_versions(&mut s, 1) {
                    return Err(format!("node {id} still refuses"));
                }
                held.push(s);
            }
            Ok(())
        });
    }
}

/// A small tmpfs mounted for one node's data, unmounted on drop (after the
/// cluster, declared later, has stopped its processes).
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// `None` where mounting is not allowed (not root, no CAP_SYS_ADMIN).
    fn mount(size: &str) -> Option<Tmpfs> {
        let dir = tempfile::Builder::new()
            .prefix("veil-tmpfs-")
            .tempdir()
            .ok()?;
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(Tmpfs { dir })
    }

    /// Fills what is left with a file (bounded by the mount's size).
    fn fill(&self) {
        let _ = Command::new("dd")
            .args(["if=/dev/zero", "bs=64k"])
            .arg(format!("of={}", self.dir.path().join("filler").display()))
            .stderr(std::process::Stdio::null())
            .status();
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

#[test]
fn a_voter_whose_metadata_disk_fills_stops_voting_and_the_others_carry_on() {
    let Some(disk) = Tmpfs::mount("16m") else {
        println!(
            "skipped: mounting a tmpfs needs root; the log store's unit tests cover poisoning"
        );
        return;
    };
    let data = disk.dir.path().join("node3");
    let options = ClusterOptions {
        data_dirs: vec![(3, data)],
        ..quick()
    };
    let mut cluster = TestCluster::start_with(BIN, 3, &options);
    if cluster.wait_controller(&[1, 2, 3], Duration::from_secs(20)) == 3 {
        // The disk is to fail under a follower: move the leadership away.
        cluster.kill(3);
        cluster.wait_controller(&[1, 2], Duration::from_secs(20));
        cluster.start_node(3);
        cluster.wait_ready(&[3], Duration::from_secs(60));
    }
    rt().block_on(create(&cluster.node(1).bootstrap(), "before", 3))
        .unwrap();
    disk.fill();
    // Every change now reaches node 3's full disk; the majority acknowledges.
    let started = Instant::now();
    for i in 0..40 {
        rt().block_on(create(
            &cluster.node(1 + i % 2).bootstrap(),
            &format!("full-{i}"),
            2,
        ))
        .unwrap_or_else(|e| panic!("write {i} with node 3's disk full: {e}"));
    }
    println!(
        "40 metadata writes with one voter's disk full took {:?}",
        started.elapsed()
    );
    eventually(Duration::from_secs(20), "node 3 to stop", || {
        let (code, body) = cluster.node(3).http_get("/healthz");
        if code == 503 && body.contains("metadata") {
            Ok(())
        } else {
            Err(format!("{code} {body}"))
        }
    });
    let (_, why) = cluster.node(3).http_get("/healthz");
    println!("node 3 /healthz: {why}");
    let log = cluster.node(3).log();
    assert!(
        log.contains("metadata log append failed") || log.contains("poisoned"),
        "{log}"
    );
    // The other two keep the quorum, and status shows node 3 out of it.
    rt().block_on(create(&cluster.node(2).bootstrap(), "after", 2))
        .unwrap();
    eventually(Duration::from_secs(20), "node 3 fenced and behind", || {
        let (ok, table, err) = status(&cluster.node(1).bootstrap());
        let r = row(&table, 3);
        if ok && r[2] == "fenced" && r[6].parse::<i64>().is_ok_and(|lag| lag > 0) {
            Ok(())
        } else {
            Err(format!("{table}{err}"))
        }
    });
    println!("{}", status(&cluster.node(1).bootstrap()).1);
    drop(cluster);
}

/// Partition 0 of `topic` as node `id` describes it.
fn partition_0(
    cluster: &TestCluster,
    id: usize,
    topic: &str,
) -> Result<veil_client::admin::PartitionDescription, String> {
    rt().block_on(async {
        let mut admin = Admin::connect(&cluster.node(id).bootstrap())
            .await
            .map_err(|e| e.to_string())?;
        let t = admin
            .describe_topic(topic)
            .await
            .map_err(|e| e.to_string())?;
        t.partitions
            .into_iter()
            .find(|p| p.partition == 0)
            .ok_or_else(|| "no partition 0".to_owned())
    })
}

/// Kills the preferred leader of `topic`-0, waits for another leader,
/// restarts it and waits until it is in sync again; returns its id and a
/// node that stayed up.
fn bounce_preferred_leader(cluster: &mut TestCluster, topic: &str) -> (usize, usize) {
    let p = partition_0(cluster, 1, topic).unwrap();
    let preferred = usize::try_from(p.replicas[0]).unwrap();
    assert_eq!(
        p.leader, p.replicas[0],
        "a new topic is led by its first replica"
    );
    let other = if preferred == 1 { 2 } else { 1 };
    cluster.kill(preferred);
    eventually(Duration::from_secs(30), "a new leader", || {
        let p = partition_0(cluster, other, topic)?;
        (p.leader > 0 && p.leader != p.replicas[0])
            .then_some(())
            .ok_or(format!("{p:?}"))
    });
    cluster.start_node(preferred);
    cluster.wait_ready(&[preferred], Duration::from_secs(60));
    eventually(
        Duration::from_secs(60),
        "the restarted node back in the ISR",
        || {
            let p = partition_0(cluster, other, topic)?;
            p.isr
                .contains(&p.replicas[0])
                .then_some(())
                .ok_or(format!("{p:?}"))
        },
    );
    (preferred, other)
}

#[test]
fn elect_leaders_moves_leadership_back_to_the_preferred_replica() {
    let options = ClusterOptions {
        cluster: "request_timeout_ms = 3000\nsession_timeout_ms = 3000\nauto_leader_rebalance_enable = false\n".into(),
        ..ClusterOptions::default()
    };
    let mut cluster = TestCluster::start_with(BIN, 3, &options);
    rt().block_on(create(&cluster.node(1).bootstrap(), "preferred", 3))
        .unwrap();
    let (preferred, other) = bounce_preferred_leader(&mut cluster, "preferred");
    let elect = |args: &[&str]| {
        let bootstrap = cluster.node(other).bootstrap();
        let out = Command::new(BIN)
            .args(["partitions", "elect-leaders", "-b", &bootstrap])
            .args(args)
            .env("VEIL_LOG", "warn")
            .output()
            .expect("run veil partitions elect-leaders");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    // Off: nothing moves it back on its own.
    std::thread::sleep(Duration::from_secs(2));
    assert_ne!(
        partition_0(&cluster, other, "preferred").unwrap().leader,
        i32::try_from(preferred).unwrap()
    );
    let (ok, out) = elect(&["--topic", "preferred"]);
    assert!(ok, "{out}");
    assert_eq!(out.trim(), "preferred-0\telected");
    eventually(
        Duration::from_secs(10),
        "the preferred replica leads",
        || {
            let p = partition_0(&cluster, other, "preferred")?;
            (p.leader == p.replicas[0])
                .then_some(())
                .ok_or(format!("{p:?}"))
        },
    );
    let (ok, out) = elect(&[]);
    assert!(ok, "{out}");
    assert!(out.contains("preferred-0\tnot needed"), "{out}");
    // An unclean election is refused while the leader is alive.
    let (ok, out) = elect(&["--topic", "preferred", "--unclean"]);
    assert!(ok, "{out}");
    assert_eq!(out.trim(), "preferred-0\tnot needed");
}

#[test]
fn the_controller_rebalances_leadership_back_on_its_own() {
    let options = ClusterOptions {
        cluster: "request_timeout_ms = 3000\nsession_timeout_ms = 3000\nleader_imbalance_check_interval_ms = 1000\n".into(),
        ..ClusterOptions::default()
    };
    let mut cluster = TestCluster::start_with(BIN, 3, &options);
    rt().block_on(create(&cluster.node(1).bootstrap(), "rebalanced", 3))
        .unwrap();
    let started = Instant::now();
    let (_, other) = bounce_preferred_leader(&mut cluster, "rebalanced");
    eventually(
        Duration::from_secs(30),
        "the preferred replica leads again",
        || {
            let p = partition_0(&cluster, other, "rebalanced")?;
            (p.leader == p.replicas[0])
                .then_some(())
                .ok_or(format!("{p:?}"))
        },
    );
    println!(
        "rebalance: preferred leader back {:?} after the kill",
        started.elapsed()
    );
}

/// `veil ARGS -b bootstrap` with `input` on stdin: (success, stdout, stderr).
fn veil_cli(bootstrap: &str, args: &[&str], input: &str) -> (bool, String, String) {
    let mut child = Command::new(BIN)
        .args(args)
        .args(["-b", bootstrap])
        .env("VEIL_LOG", "warn")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run veil");
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), input.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_partition_moves_to_other_nodes_while_it_is_written() {
    let mut cluster = TestCluster::start_with(BIN, 3, &quick());
    rt().block_on(create(&cluster.node(1).bootstrap(), "moving", 1))
        .unwrap();
    let from = partition_0(&cluster, 1, "moving").unwrap().replicas;
    let old = usize::try_from(from[0]).unwrap();
    let target: Vec<i32> = (1..=3).filter(|n| *n != from[0]).collect();
    let lines = |range: std::ops::Range<usize>| {
        range.fold(String::new(), |mut out, i| {
            let _ = writeln!(out, "record-{i}");
            out
        })
    };
    let boot = cluster.bootstrap();
    let (ok, _, err) = veil_cli(&boot, &["produce", "--topic", "moving"], &lines(0..500));
    assert!(ok, "{err}");
    let target_arg = target
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let reassign = [
        "partitions",
        "reassign",
        "--topic",
        "moving",
        "--partition",
        "0",
        "--replicas",
        &target_arg,
    ];
    let (ok, out, err) = veil_cli(&cluster.node(2).bootstrap(), &reassign, "");
    assert!(ok, "{err}");
    assert_eq!(out.trim(), format!("moving-0\tmoving to {target_arg}"));
    // Written while the move is under way.
    let (ok, _, err) = veil_cli(&boot, &["produce", "--topic", "moving"], &lines(500..1000));
    assert!(ok, "{err}");
    eventually(Duration::from_secs(60), "the move completes", || {
        let p = partition_0(&cluster, 2, "moving")?;
        (p.replicas == target && target.contains(&p.leader))
            .then_some(())
            .ok_or(format!("{p:?}"))
    });
    let (ok, out, _) = veil_cli(
        &cluster.node(3).bootstrap(),
        &["partitions", "reassignments"],
        "",
    );
    assert!(ok);
    assert_eq!(out.trim(), "no reassignment in progress");
    // The old node lets its copy go, and a consumer reads all 1000 in order.
    eventually(Duration::from_secs(30), "the old replica deleted", || {
        let left: Vec<_> = std::fs::read_dir(cluster.data_dir(old))
            .map_err(|e| e.to_string())?
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy() == "moving-0")
            .collect();
        left.is_empty().then_some(()).ok_or(format!("{left:?}"))
    });
    cluster.kill(old);
    let (ok, out, err) = veil_cli(
        &cluster.bootstrap_of(&[2, 3].map(|n| if n == old { 1 } else { n })),
        &[
            "consume",
            "--topic",
            "moving",
            "--from-beginning",
            "--max-messages",
            "1000",
            "--timeout-ms",
            "30000",
        ],
        "",
    );
    assert!(ok, "{err}");
    assert_eq!(out, lines(0..1000));
    // Cancelling when nothing moves is Kafka's NO_REASSIGNMENT_IN_PROGRESS.
    let cancel = [
        "partitions",
        "reassign",
        "--topic",
        "moving",
        "--partition",
        "0",
        "--cancel",
    ];
    let (ok, _, err) = veil_cli(&cluster.node(target[0] as usize).bootstrap(), &cancel, "");
    assert!(!ok);
    assert!(err.contains("not being reassigned"), "{err}");
}
