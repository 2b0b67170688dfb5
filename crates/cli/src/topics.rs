//! `veil topics`: topic administration through the standard Kafka admin APIs.

use std::collections::BTreeMap;

use anyhow::{bail, Context};
use clap::Subcommand;
use veil_client::{Admin, TopicSpec};

use crate::secure::ConnectArgs;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    connect: ConnectArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create a topic.
    Create {
        name: String,
        /// Number of partitions (default: the broker's).
        #[arg(long, short = 'p', default_value_t = -1)]
        partitions: i32,
        /// Replication factor (default: the broker's).
        #[arg(long, short = 'r', default_value_t = -1)]
        replication_factor: i16,
        /// Topic config as key=value, e.g. retention.ms=86400000; repeatable.
        #[arg(long = "config", value_name = "KEY=VALUE")]
        configs: Vec<String>,
        /// Ask the broker to validate without creating.
        #[arg(long)]
        validate_only: bool,
    },
    /// List topic names.
    List,
    /// Show partitions, leaders and configs of a topic.
    Describe { name: String },
    /// Delete a topic and all its data.
    Delete { name: String },
    /// Change configs or grow the partition count.
    Alter {
        name: String,
        /// Set a config, key=value; repeatable.
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
        /// Remove a config override (back to the default); repeatable.
        #[arg(long = "delete", value_name = "KEY")]
        delete: Vec<String>,
        /// Grow the topic to this many partitions.
        #[arg(long)]
        partitions: Option<i32>,
        #[arg(long)]
        validate_only: bool,
    },
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let mut admin = Admin::from_connection(args.connect.connect("veil-topics").await?);
    match args.command {
        Command::Create {
            name,
            partitions,
            replication_factor,
            configs,
            validate_only,
        } => {
            let spec = TopicSpec {
                name: name.clone(),
                partitions,
                replication_factor,
                configs: parse_pairs(&configs)?,
            };
            admin.create_topic(&spec, validate_only).await?;
            if validate_only {
                println!("topic '{name}' would be created");
            } else {
                println!("created topic '{name}'");
            }
        }
        Command::List => {
            for t in admin.list_topics().await? {
                println!("{t}");
            }
        }
        Command::Describe { name } => {
            let d = admin.describe_topic(&name).await?;
            println!(
                "Topic: {}\tTopicId: {}\tPartitionCount: {}",
                d.name,
                d.topic_id,
                d.partitions.len()
            );
            for p in &d.partitions {
                println!(
                    "\tPartition: {}\tLeader: {}\tLeaderEpoch: {}\tReplicas: {:?}\tIsr: {:?}",
                    p.partition, p.leader, p.leader_epoch, p.replicas, p.isr
                );
            }
            println!("Configs:");
            for (k, v, source) in &d.configs {
                println!(
                    "\t{k}={}\t({})",
                    v.as_deref().unwrap_or("<null>"),
                    source_name(*source)
                );
            }
        }
        Command::Delete { name } => {
            admin.delete_topic(&name).await?;
            println!("deleted topic '{name}'");
        }
        Command::Alter {
            name,
            set,
            delete,
            partitions,
            validate_only,
        } => {
            if set.is_empty() && delete.is_empty() && partitions.is_none() {
                bail!("nothing to change: give --set KEY=VALUE, --delete KEY or --partitions N");
            }
            if !set.is_empty() || !delete.is_empty() {
                admin
                    .alter_configs(&name, &parse_pairs(&set)?, &delete, validate_only)
                    .await?;
            }
            if let Some(count) = partitions {
                admin.create_partitions(&name, count, validate_only).await?;
            }
            println!(
                "{} topic '{name}'",
                if validate_only {
                    "validated changes to"
                } else {
                    "altered"
                }
            );
        }
    }
    Ok(())
}

fn parse_pairs(pairs: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    pairs
        .iter()
        .map(|kv| {
            let (k, v) = kv
                .split_once('=')
                .with_context(|| format!("expected KEY=VALUE, got '{kv}'"))?;
            Ok((k.trim().to_owned(), v.trim().to_owned()))
        })
        .collect()
}

fn source_name(code: i8) -> &'static str {
    match code {
        1 => "topic",
        2 => "dynamic broker config",
        3 => "dynamic default broker config",
        4 => "broker config",
        5 => "default",
        _ => "other",
    }
}
