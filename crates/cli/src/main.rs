//! `veil`: one binary for the broker and its tools. Each subcommand lives in
//! its own file; this one only parses flags and sets up logging.

mod acl;
mod broker;
mod certs;
mod cluster;
mod consume;
mod groups;
mod kms;
mod kms_bench;
mod produce;
mod secure;
mod topics;
mod user;

use clap::{Parser, Subcommand};

/// mimalloc maps large blocks with MAP_NORESERVE where the kernel
/// overcommits. The Kafka codec reserves `Vec` capacity from array counts
/// read off the wire before it reads the elements, so a 10-byte request can
/// ask for hundreds of GiB; with this allocator that reservation costs only
/// address space until the decode fails, instead of aborting the broker.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "veil",
    version,
    about = "Kafka-compatible event streaming with blind topics"
)]
struct Cli {
    /// Log filter, e.g. `info` or `veil_broker=debug` (also VEIL_LOG / RUST_LOG).
    #[arg(long, global = true, env = "VEIL_LOG", default_value = "info")]
    log: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a broker.
    Broker(broker::Args),
    /// Add, list and remove Kafka ACLs.
    Acl(acl::Args),
    /// Create, list, describe, alter and delete topics on any Kafka-compatible broker.
    Topics(topics::Args),
    /// List, describe, delete consumer groups and reset their offsets.
    Groups(groups::Args),
    /// Create a development CA and broker, node and client certificates.
    Certs(certs::Args),
    /// The metadata quorum and each node's state (`veil cluster status`).
    Cluster(cluster::Args),
    /// Manage SCRAM users (and hash PLAIN users-file entries).
    User(user::Args),
    /// Blind-topic key management: key epochs, user keys, revocation, ACLs.
    Kms(kms::Args),
    /// Write lines to a topic (a blind topic with --blind).
    Produce(produce::Args),
    /// Read a topic's records (a blind topic with --blind).
    Consume(consume::Args),
}

/// The default filter for the Raft library (see `main`).
const QUIET_RAFT: &str = "openraft=error,openraft::replication=off";

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // The Raft library narrates every vote and append at info and repeats
    // each failed call to an unreachable peer several times a second; Veil
    // reports peers it cannot reach itself (fencing), so by default only
    // the library's errors outside replication show, unless the filter asks.
    let spec = if cli.log.contains("openraft") {
        cli.log.clone()
    } else {
        format!("{},{QUIET_RAFT}", cli.log)
    };
    let filter = tracing_subscriber::EnvFilter::try_new(&spec)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("info,{QUIET_RAFT}")));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour codes only for a terminal, never into log files.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Broker(args) => broker::run(args).await,
            Command::Acl(args) => acl::run(args).await,
            Command::Topics(args) => topics::run(args).await,
            Command::Groups(args) => groups::run(args).await,
            Command::Certs(args) => certs::run(args),
            Command::Cluster(args) => cluster::run(args).await,
            Command::User(args) => user::run(args).await,
            Command::Kms(args) => kms::run(args).await,
            Command::Produce(args) => produce::run(args).await,
            Command::Consume(args) => consume::run(args).await,
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
