//! `veil`: one binary for the broker and its tools. Each subcommand lives in
//! its own file; this one only parses flags and sets up logging.

mod acl;
mod broker;
mod certs;
mod cluster;
mod consume;
mod gateway;
mod groups;
mod health;
mod kms;
mod kms_bench;
mod logging;
mod partitions;
mod produce;
mod secure;
mod topics;
mod transactions;
mod user;

use clap::{Parser, Subcommand};
use veil_broker::config::LogFormat;

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
    /// Log as `text` or `json` (one object per line); for `veil broker` the
    /// default is the config's `log_format`.
    #[arg(long, global = true, env = "VEIL_LOG_FORMAT", value_parser = parse_log_format)]
    log_format: Option<LogFormat>,
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
    /// Partition leadership: preferred or unclean leader elections.
    Partitions(partitions::Args),
    /// List, describe and abort transactions.
    Transactions(transactions::Args),
    /// Manage SCRAM users (and hash PLAIN users-file entries).
    User(user::Args),
    /// Blind-topic key management: key epochs, user keys, revocation, ACLs.
    Kms(kms::Args),
    /// Write lines to a topic (a blind topic with --blind).
    Produce(produce::Args),
    /// Read a topic's records (a blind topic with --blind).
    Consume(consume::Args),
    /// Serve MQTT devices and write their messages, sealed, to blind topics
    /// of a remote broker (run by the data owner, next to the devices).
    Gateway(gateway::Args),
    /// Ask a broker's admin endpoint whether it is ready (exit 0 if so).
    Health(health::Args),
}

fn parse_log_format(s: &str) -> Result<LogFormat, String> {
    match s {
        "text" => Ok(LogFormat::Text),
        "json" => Ok(LogFormat::Json),
        _ => Err("expected text or json".into()),
    }
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // The broker's config may choose the log format: read it first.
    let mut broker_config = None;
    if let Command::Broker(args) = &cli.command {
        match broker::load(args) {
            Ok(config) => broker_config = Some(config),
            Err(e) => {
                eprintln!("error: {e:#}");
                return std::process::ExitCode::FAILURE;
            }
        }
    }
    let format = cli
        .log_format
        .or(broker_config.as_ref().map(|c| c.log_format))
        .unwrap_or_default();
    logging::init(&cli.log, format);
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
            Command::Broker(args) => match broker_config {
                Some(config) => broker::run(args, config).await,
                None => Err(anyhow::anyhow!("no broker configuration")),
            },
            Command::Acl(args) => acl::run(args).await,
            Command::Topics(args) => topics::run(args).await,
            Command::Groups(args) => groups::run(args).await,
            Command::Certs(args) => certs::run(args),
            Command::Cluster(args) => cluster::run(args).await,
            Command::Partitions(args) => partitions::run(args).await,
            Command::Transactions(args) => transactions::run(args).await,
            Command::User(args) => user::run(args).await,
            Command::Kms(args) => kms::run(args).await,
            Command::Produce(args) => produce::run(args).await,
            Command::Consume(args) => consume::run(args).await,
            Command::Gateway(args) => gateway::run(args).await,
            Command::Health(args) => health::run(args),
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
