//! `veil partitions elect-leaders`: Kafka's ElectLeaders from the command
//! line (what `kafka-leader-election.sh` does). Preferred by default: each
//! partition goes back to its first replica if that one is live and in
//! sync; `--unclean` gives a leaderless partition any live replica, which
//! may lose what only the dead replicas had.

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
}

/// ELECTION_NOT_NEEDED.
const NOT_NEEDED: i16 = 84;

pub async fn run(args: Args) -> anyhow::Result<()> {
    let Command::ElectLeaders {
        connect,
        topic,
        partition,
        unclean,
    } = args.command;
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
