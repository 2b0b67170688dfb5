//! `veil partitions`: partition leadership and placement through Kafka's
//! admin APIs.
//!
//! * `elect-leaders`: ElectLeaders (what `kafka-leader-election.sh` does).
//!   Preferred by default: each partition goes back to its first replica if
//!   that one is live and in sync; `--unclean` gives a leaderless partition
//!   any live replica, which may lose what only the dead replicas had.
//! * `reassign` / `reassignments`: AlterPartitionReassignments and
//!   ListPartitionReassignments (what `kafka-reassign-partitions.sh` does):
//!   new replicas copy the log by replication while the partition serves.

use anyhow::bail;
use veil_client::Admin;

use crate::secure::ConnectArgs;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Elect preferred (or, with --unclean, any live) leaders.
    ///
    /// Without --topic every partition of every topic is considered.
    /// Prints one line per partition: "elected", "not needed" (it already
    /// has that leader) or why not. Exits with status 1 if any election
    /// that was needed failed.
    ElectLeaders {
        #[command(flatten)]
        connect: ConnectArgs,
        /// Only this topic.
        #[arg(long)]
        topic: Option<String>,
        /// Only these partitions of --topic (repeat or comma-separate).
        #[arg(long, value_delimiter = ',', requires = "topic")]
        partition: Vec<i32>,
        /// Unclean election: a partition without a live leader takes any
        /// live replica, in sync or not. Records only the others had are lost.
        #[arg(long)]
        unclean: bool,
    },
    /// Move a partition's replicas to other nodes (or --cancel a move).
    ///
    /// The new replicas copy the log from the leader while producers and
    /// consumers carry on; once all of them are in sync the controller makes
    /// them the replica set (the first one is the preferred leader) and the
    /// nodes left out delete their copy. Returns at once: follow the move
    /// with `veil partitions reassignments` or `veil topics describe`.
    Reassign {
        #[command(flatten)]
        connect: ConnectArgs,
        #[arg(long)]
        topic: String,
        #[arg(long)]
        partition: i32,
        /// The new replica node ids, preferred leader first (comma-separated).
        #[arg(long, value_delimiter = ',', required_unless_present = "cancel")]
        replicas: Vec<i32>,
        /// Cancel the partition's move: back to its replicas before it.
        #[arg(long, conflicts_with = "replicas")]
        cancel: bool,
    },
    /// List partition moves under way (replicas, adding, removing).
    Reassignments {
        #[command(flatten)]
        connect: ConnectArgs,
    },
}

/// ELECTION_NOT_NEEDED.
const NOT_NEEDED: i16 = 84;

fn list(v: &[i32]) -> String {
    v.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    match args.command {
        Command::ElectLeaders {
            connect,
            topic,
            partition,
            unclean,
        } => elect_leaders(&connect, topic, partition, unclean).await,
        Command::Reassign {
            connect,
            topic,
            partition,
            replicas,
            cancel,
        } => {
            let mut admin = Admin::from_connection(connect.connect("veil-partitions").await?);
            let target = (!cancel).then_some(replicas);
            admin
                .reassign_partition(&topic, partition, target.clone())
                .await?;
            match target {
                Some(r) => println!("{topic}-{partition}\tmoving to {}", list(&r)),
                None => println!("{topic}-{partition}\tmove cancelled"),
            }
            Ok(())
        }
        Command::Reassignments { connect } => {
            let mut admin = Admin::from_connection(connect.connect("veil-partitions").await?);
            let moves = admin.list_reassignments().await?;
            if moves.is_empty() {
                println!("no reassignment in progress");
            }
            for m in moves {
                println!(
                    "{}-{}\treplicas {}\tadding {}\tremoving {}",
                    m.topic,
                    m.partition,
                    list(&m.replicas),
                    list(&m.adding),
                    list(&m.removing)
                );
            }
            Ok(())
        }
    }
}

async fn elect_leaders(
    connect: &ConnectArgs,
    topic: Option<String>,
    partition: Vec<i32>,
    unclean: bool,
) -> anyhow::Result<()> {
    let mut admin = Admin::from_connection(connect.connect("veil-partitions").await?);
    let wanted = match topic {
        None => None,
        Some(t) => {
            let partitions = if partition.is_empty() {
                let described = admin.describe_topic(&t).await?;
                described.partitions.iter().map(|p| p.partition).collect()
            } else {
                partition
            };
            Some(vec![(t, partitions)])
        }
    };
    let results = admin.elect_leaders(unclean, wanted).await?;
    let mut failed = 0;
    for r in &results {
        let outcome = match r.error_code {
            0 => "elected".to_owned(),
            NOT_NEEDED => "not needed".to_owned(),
            code => {
                failed += 1;
                let reason = r.message.clone().unwrap_or_else(|| format!("error {code}"));
                format!("failed: {reason}")
            }
        };
        println!("{}-{}\t{outcome}", r.topic, r.partition);
    }
    if failed > 0 {
        bail!("{failed} of {} election(s) failed", results.len());
    }
    Ok(())
}
