//! `veil cluster status`: the metadata quorum and every node, from the
//! Kafka protocol only. DescribeCluster (any node) names the controller and
//! the brokers, fenced ones included; DescribeQuorum, which only the quorum
//! leader answers, gives each replica's log end offset and when the leader
//! last heard from it. Exits non-zero when no node leads the quorum.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use veil_client::{Admin, ClusterDescription, QuorumDescription, QuorumReplica};

use crate::secure::ConnectArgs;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Show the voters, the controller and each node's state.
    ///
    /// Columns: ROLE is voter or observer (a broker-only node that receives
    /// the metadata log without voting), marked "controller" for the quorum
    /// leader. STATE is alive (registered and unfenced), fenced (registered
    /// but not serving: its heartbeats stopped or it is catching up) or
    /// unregistered (no broker registration, e.g. it never started or its
    /// voter set differs). HEARTBEAT is the time since the node's last broker
    /// heartbeat reached the controller. FETCH is the time since the quorum
    /// leader last heard back from the node's replica of the metadata log,
    /// CAUGHT-UP the time since that replica last held everything the leader
    /// had. LAG is how many metadata entries the replica lacks (the leader's
    /// log end offset minus its own). "-" means unknown.
    ///
    /// Exits with status 1 when the quorum has no leader (or none can be
    /// reached), so scripts can wait on it.
    Status {
        #[command(flatten)]
        connect: ConnectArgs,
        /// How long to wait for each node.
        #[arg(long, default_value_t = 5000)]
        timeout_ms: u64,
    },
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    match args.command {
        Command::Status {
            connect,
            timeout_ms,
        } => status(&connect, Duration::from_millis(timeout_ms)).await,
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

async fn admin_at(connect: &ConnectArgs, addr: &str, timeout: Duration) -> anyhow::Result<Admin> {
    let mut args = connect.clone();
    args.bootstrap = addr.to_owned();
    let conn = tokio::time::timeout(timeout, args.connect("veil-cluster"))
        .await
        .with_context(|| format!("{addr} did not answer within {timeout:?}"))??;
    Ok(Admin::from_connection(conn))
}

/// Asks `addr` for the quorum and, from the same node, the cluster.
async fn ask(
    connect: &ConnectArgs,
    addr: &str,
    timeout: Duration,
) -> anyhow::Result<(QuorumDescription, ClusterDescription)> {
    let mut admin = admin_at(connect, addr, timeout).await?;
    let work = async {
        let quorum = admin.describe_quorum().await?;
        let cluster = admin.describe_cluster().await?;
        anyhow::Ok((quorum, cluster))
    };
    tokio::time::timeout(timeout, work)
        .await
        .with_context(|| format!("{addr} did not answer within {timeout:?}"))?
}

async fn status(connect: &ConnectArgs, timeout: Duration) -> anyhow::Result<()> {
    let mut admin = admin_at(connect, &connect.bootstrap, timeout).await?;
    let seen = tokio::time::timeout(timeout, admin.describe_cluster())
        .await
        .context("DescribeCluster timed out")??;
    // The controller first, then every other node: a node that does not
    // lead answers NOT_LEADER_OR_FOLLOWER, one that is down not at all.
    let mut order: Vec<&veil_client::BrokerInfo> = seen.brokers.iter().collect();
    order.sort_by_key(|b| (Some(b.node_id) != seen.controller, b.node_id));
    let mut answer = None;
    let mut problems = Vec::new();
    for b in order {
        let addr = format!("{}:{}", b.host, b.port);
        match ask(connect, &addr, timeout).await {
            Ok(a) => {
                answer = Some(a);
                break;
            }
            Err(e) => problems.push(format!("node {} ({addr}): {e:#}", b.node_id)),
        }
    }
    let Some((quorum, cluster)) = answer else {
        println!("cluster {}", seen.cluster_id);
        println!("controller: none (the metadata quorum has no leader)");
        for b in &seen.brokers {
            let state = if b.fenced { "fenced" } else { "alive" };
            println!("  node {} {}:{} {state}", b.node_id, b.host, b.port);
        }
        for p in &problems {
            eprintln!("  {p}");
        }
        bail!("the metadata quorum has no leader");
    };
    print!("{}", render(&quorum, &cluster, now_ms()));
    Ok(())
}

fn ago(now_ms: i64, at_ms: i64) -> String {
    if at_ms < 0 {
        return "-".into();
    }
    let ms = now_ms.saturating_sub(at_ms).max(0);
    seconds(ms)
}

fn seconds(ms: i64) -> String {
    format!("{:.1}s", ms as f64 / 1000.0)
}

/// The status table (pure, for tests).
pub fn render(quorum: &QuorumDescription, cluster: &ClusterDescription, now_ms: i64) -> String {
    let leader_end = quorum
        .voters
        .iter()
        .chain(&quorum.observers)
        .find(|r| r.node_id == quorum.leader_id)
        .map_or(-1, |r| r.log_end_offset);
    let mut out = format!(
        "cluster {}\ncontroller: node {} (epoch {}), metadata high watermark {}\nvoters: {}\n\n",
        cluster.cluster_id,
        quorum.leader_id,
        quorum.leader_epoch,
        quorum.high_watermark,
        quorum
            .voters
            .iter()
            .map(|v| v.node_id.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    let _ = writeln!(
        out,
        "{:<6} {:<18} {:<13} {:>9} {:>9} {:>9} {:>6}  ADDRESS",
        "NODE", "ROLE", "STATE", "HEARTBEAT", "FETCH", "CAUGHT-UP", "LAG"
    );
    let mut ids: BTreeSet<i32> = cluster.brokers.iter().map(|b| b.node_id).collect();
    let replicas: Vec<(&QuorumReplica, &str)> = quorum
        .voters
        .iter()
        .map(|r| (r, "voter"))
        .chain(quorum.observers.iter().map(|r| (r, "observer")))
        .collect();
    ids.extend(replicas.iter().map(|(r, _)| r.node_id));
    for id in ids {
        let broker = cluster.brokers.iter().find(|b| b.node_id == id);
        let replica = replicas.iter().find(|(r, _)| r.node_id == id);
        let mut role = replica.map_or("broker", |(_, role)| role).to_owned();
        if id == quorum.leader_id {
            role.push_str(" (controller)");
        }
        let state = match broker {
            Some(b) if b.fenced => "fenced",
            Some(_) => "alive",
            None => "unregistered",
        };
        let heartbeat = broker
            .and_then(|b| b.heartbeat_age_ms)
            .map_or_else(|| "-".to_owned(), seconds);
        let (fetch, caught_up, lag) = match replica {
            Some((r, _)) => (
                ago(now_ms, r.last_fetch_ms),
                ago(now_ms, r.last_caught_up_ms),
                if r.log_end_offset >= 0 && leader_end >= 0 {
                    (leader_end - r.log_end_offset).max(0).to_string()
                } else {
                    "-".into()
                },
            ),
            None => ("-".into(), "-".into(), "-".into()),
        };
        let address = broker.map_or_else(|| "-".to_owned(), |b| format!("{}:{}", b.host, b.port));
        let _ = writeln!(
            out,
            "{id:<6} {role:<18} {state:<13} {heartbeat:>9} {fetch:>9} {caught_up:>9} {lag:>6}  {address}"
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use veil_client::BrokerInfo;

    use super::*;

    fn replica(node_id: i32, end: i64, at: i64) -> QuorumReplica {
        QuorumReplica {
            node_id,
            log_end_offset: end,
            last_fetch_ms: at,
            last_caught_up_ms: at,
        }
    }

    fn broker(node_id: i32, fenced: bool, age: Option<i64>) -> BrokerInfo {
        BrokerInfo {
            node_id,
            host: format!("127.0.0.{node_id}"),
            port: 9092,
            rack: None,
            fenced,
            heartbeat_age_ms: age,
        }
    }

    #[test]
    fn the_table_shows_roles_states_ages_and_lag() {
        let quorum = QuorumDescription {
            leader_id: 2,
            leader_epoch: 4,
            high_watermark: 57,
            voters: vec![
                replica(1, 57, 9_800),
                replica(2, 57, 10_000),
                replica(3, 50, 1_000),
            ],
            observers: vec![replica(4, -1, -1)],
        };
        let cluster = ClusterDescription {
            cluster_id: "c1".into(),
            controller: Some(2),
            brokers: vec![
                broker(1, false, Some(200)),
                broker(2, false, Some(0)),
                broker(3, true, Some(9_000)),
            ],
        };
        let text = render(&quorum, &cluster, 10_000);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[1].contains("controller: node 2 (epoch 4)"), "{text}");
        assert!(lines[2].contains("voters: 1, 2, 3"), "{text}");
        let row = |id: &str| {
            lines
                .iter()
                .find(|l| l.starts_with(id))
                .unwrap_or_else(|| panic!("{id}: {text}"))
                .split_whitespace()
                .collect::<Vec<_>>()
        };
        assert_eq!(
            row("1 "),
            [
                "1",
                "voter",
                "alive",
                "0.2s",
                "0.2s",
                "0.2s",
                "0",
                "127.0.0.1:9092"
            ]
        );
        assert_eq!(row("2 ")[1..3], ["voter", "(controller)"]);
        assert_eq!(row("3 ")[2..7], ["fenced", "9.0s", "9.0s", "9.0s", "7"]);
        assert_eq!(
            row("4 ")[1..],
            ["observer", "unregistered", "-", "-", "-", "-", "-"]
        );
    }
}
