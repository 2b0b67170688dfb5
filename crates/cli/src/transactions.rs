//! `veil transactions`: list and describe transactional ids, and abort a
//! transaction its producer left open, through Kafka's APIs (KIP-664).

use veil_client::Admin;

use crate::secure::ConnectArgs;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    connect: ConnectArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand)]
enum Command {
    /// List transactional ids with their producer and state.
    List {
        /// Only these states (Kafka's names: Ongoing, PrepareCommit,
        /// PrepareAbort, CompleteCommit, CompleteAbort, Empty); repeatable.
        #[arg(long = "state")]
        states: Vec<String>,
    },
    /// Show a transactional id's producer, state, timeout and partitions.
    Describe { transactional_id: String },
    /// Abort the open transaction of a transactional id, fencing the
    /// producer that left it (its next request fails with PRODUCER_FENCED).
    Abort { transactional_id: String },
}

/// An admin connection to the coordinator of `transactional_id`.
async fn coordinator(connect: &ConnectArgs, transactional_id: &str) -> anyhow::Result<Admin> {
    let mut admin = Admin::from_connection(connect.connect("veil-transactions").await?);
    let addr = admin.find_transaction_coordinator(transactional_id).await?;
    connect.admin_at(admin, addr, "veil-transactions").await
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    match args.command {
        Command::List { states } => {
            // The coordinator (the controller) lists them; ask it.
            let mut admin = coordinator(&args.connect, "-").await?;
            let listed = admin.list_transactions(&states).await?;
            println!("{:<40} {:>12} STATE", "TRANSACTIONAL-ID", "PRODUCER-ID");
            for t in listed {
                println!(
                    "{:<40} {:>12} {}",
                    t.transactional_id, t.producer_id, t.state
                );
            }
        }
        Command::Describe { transactional_id } => {
            let mut admin = coordinator(&args.connect, &transactional_id).await?;
            let t = admin.describe_transaction(&transactional_id).await?;
            println!("transactional id: {}", t.transactional_id);
            println!("state:            {}", t.state);
            println!(
                "producer:         id {} epoch {}",
                t.producer_id, t.producer_epoch
            );
            println!("timeout:          {} ms", t.timeout_ms);
            if t.start_time_ms >= 0 {
                println!("started:          {} (ms since the epoch)", t.start_time_ms);
            }
            for (topic, partition) in &t.partitions {
                println!("partition:        {topic}-{partition}");
            }
        }
        Command::Abort { transactional_id } => {
            let mut admin = coordinator(&args.connect, &transactional_id).await?;
            let epoch = admin.abort_transaction(&transactional_id).await?;
            println!(
                "aborting the transaction of '{transactional_id}'; its producer is fenced (epoch now {epoch})"
            );
        }
    }
    Ok(())
}
