//! `veil groups`: consumer-group administration through the standard Kafka
//! APIs (works against any Kafka-compatible broker).

use std::collections::BTreeMap;

use anyhow::{bail, Context};
use veil_client::{Admin, OffsetSpec};

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
    /// List groups with their state.
    List,
    /// Show a group's members, assignments, committed offsets and lag.
    Describe { group: String },
    /// Delete a group without members, with its committed offsets.
    Delete { group: String },
    /// Move a group's committed offsets; prints the plan unless --execute.
    ResetOffsets {
        group: String,
        /// Topic whose partitions to reset (all its partitions); repeatable.
        #[arg(long = "topic", required = true)]
        topics: Vec<String>,
        #[arg(long, group = "target")]
        to_earliest: bool,
        #[arg(long, group = "target")]
        to_latest: bool,
        /// First offset at or after this time, in ms since the epoch.
        #[arg(long, group = "target", value_name = "MS")]
        to_timestamp: Option<i64>,
        /// This exact offset (clamped to the partition's range).
        #[arg(long, group = "target", value_name = "OFFSET")]
        to_offset: Option<i64>,
        /// Move by this many offsets from the committed one (negative: back).
        #[arg(long, group = "target", value_name = "N", allow_hyphen_values = true)]
        shift_by: Option<i64>,
        /// Commit the new offsets (default: only show them).
        #[arg(long)]
        execute: bool,
    },
}

/// An admin connection to the coordinator of `group`.
async fn coordinator(connect: &ConnectArgs, group: &str) -> anyhow::Result<Admin> {
    let mut admin = Admin::from_connection(connect.connect("veil-groups").await?);
    let addr = admin.find_coordinator(group).await?;
    connect.admin_at(admin, addr, "veil-groups").await
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    match args.command {
        Command::List => {
            let mut admin = Admin::from_connection(args.connect.connect("veil-groups").await?);
            let groups = admin.list_groups().await?;
            println!("{:<40} {:<22} PROTOCOL-TYPE", "GROUP", "STATE");
            for g in groups {
                println!("{:<40} {:<22} {}", g.group_id, g.state, g.protocol_type);
            }
        }
        Command::Describe { group } => describe(&args.connect, &group).await?,
        Command::Delete { group } => {
            coordinator(&args.connect, &group)
                .await?
                .delete_group(&group)
                .await?;
            println!("deleted group '{group}'");
        }
        Command::ResetOffsets {
            group,
            topics,
            to_earliest,
            to_latest,
            to_timestamp,
            to_offset,
            shift_by,
            execute,
        } => {
            let target = match (to_earliest, to_latest, to_timestamp, to_offset, shift_by) {
                (true, ..) => Target::Spec(OffsetSpec::Earliest),
                (_, true, ..) => Target::Spec(OffsetSpec::Latest),
                (_, _, Some(ts), ..) => Target::Spec(OffsetSpec::Timestamp(ts)),
                (_, _, _, Some(o), _) => Target::Offset(o),
                (_, _, _, _, Some(n)) => Target::Shift(n),
                _ => bail!("say where to: --to-earliest, --to-latest, --to-timestamp MS, --to-offset N or --shift-by N"),
            };
            reset(&args.connect, &group, &topics, target, execute).await?;
        }
    }
    Ok(())
}

async fn describe(connect: &ConnectArgs, group: &str) -> anyhow::Result<()> {
    let mut admin = coordinator(connect, group).await?;
    let d = admin.describe_group(group).await?;
    if d.state == "Dead" {
        bail!("group '{group}' does not exist");
    }
    let committed = admin.committed_offsets(group).await?;
    let owners: BTreeMap<(String, i32), &str> = d
        .members
        .iter()
        .flat_map(|m| {
            m.assignment
                .iter()
                .map(move |tp| (tp.clone(), m.member_id.as_str()))
        })
        .collect();
    let mut partitions: Vec<(String, i32)> = committed.keys().cloned().collect();
    partitions.extend(owners.keys().cloned());
    partitions.sort();
    partitions.dedup();
    let ends = if partitions.is_empty() {
        BTreeMap::new()
    } else {
        admin.list_offsets(&partitions, OffsetSpec::Latest).await?
    };
    println!(
        "Group: {group}\tState: {}\tProtocol: {} ({})\tMembers: {}",
        d.state,
        d.protocol,
        d.protocol_type,
        d.members.len()
    );
    for m in &d.members {
        println!(
            "\tMember: {}\tInstance: {}\tClient: {}\tHost: {}\tPartitions: {}",
            m.member_id,
            m.group_instance_id.as_deref().unwrap_or("-"),
            m.client_id,
            m.client_host,
            m.assignment.len()
        );
    }
    println!(
        "{:<30} {:>9} {:>15} {:>15} {:>8}  OWNER",
        "TOPIC", "PARTITION", "COMMITTED", "LOG-END", "LAG"
    );
    for tp in &partitions {
        let c = committed.get(tp);
        let end = ends.get(tp).copied();
        let lag = match (c, end) {
            (Some(c), Some(e)) => (e - c).max(0).to_string(),
            _ => "-".into(),
        };
        println!(
            "{:<30} {:>9} {:>15} {:>15} {:>8}  {}",
            tp.0,
            tp.1,
            c.map_or("-".into(), ToString::to_string),
            end.map_or("-".into(), |e| e.to_string()),
            lag,
            owners.get(tp).copied().unwrap_or("-")
        );
    }
    Ok(())
}

enum Target {
    Spec(OffsetSpec),
    Offset(i64),
    Shift(i64),
}

async fn reset(
    connect: &ConnectArgs,
    group: &str,
    topics: &[String],
    target: Target,
    execute: bool,
) -> anyhow::Result<()> {
    let mut admin = coordinator(connect, group).await?;
    let state = admin.describe_group(group).await?.state;
    if execute && !matches!(state.as_str(), "Empty" | "Dead") {
        bail!("group '{group}' is {state}: offsets can only be reset while it has no active members (stop its consumers first)");
    }
    let mut partitions = Vec::new();
    for t in topics {
        let desc = admin
            .describe_topic(t)
            .await
            .with_context(|| format!("topic '{t}'"))?;
        partitions.extend(desc.partitions.iter().map(|p| (t.clone(), p.partition)));
    }
    let earliest = admin
        .list_offsets(&partitions, OffsetSpec::Earliest)
        .await?;
    let latest = admin.list_offsets(&partitions, OffsetSpec::Latest).await?;
    let committed = admin.committed_offsets(group).await?;
    // ListOffsets answers -1 for a timestamp newer than every record: that
    // means the end. Every target is then clamped into [earliest, latest],
    // as Kafka's tool does.
    let chosen: BTreeMap<(String, i32), i64> = match target {
        Target::Spec(spec) => admin
            .list_offsets(&partitions, spec)
            .await?
            .into_iter()
            .map(|(tp, o)| {
                let o = if o < 0 { latest[&tp] } else { o };
                (tp, o)
            })
            .collect(),
        Target::Offset(o) => partitions.iter().map(|tp| (tp.clone(), o)).collect(),
        Target::Shift(n) => partitions
            .iter()
            .map(|tp| {
                let from = committed.get(tp).copied().unwrap_or(earliest[tp]);
                (tp.clone(), from.saturating_add(n))
            })
            .collect(),
    };
    let plan: BTreeMap<(String, i32), i64> = chosen
        .into_iter()
        .map(|(tp, o)| {
            let o = o.clamp(earliest[&tp], latest[&tp]);
            (tp, o)
        })
        .collect();
    println!(
        "{:<30} {:>9} {:>15} {:>15}",
        "TOPIC", "PARTITION", "COMMITTED", "NEW-OFFSET"
    );
    for (tp, new) in &plan {
        println!(
            "{:<30} {:>9} {:>15} {:>15}",
            tp.0,
            tp.1,
            committed.get(tp).map_or("-".into(), ToString::to_string),
            new
        );
    }
    if execute {
        admin.commit_offsets(group, &plan).await?;
        println!("committed new offsets for group '{group}'");
    } else {
        println!("dry run: nothing changed; add --execute to commit these offsets");
    }
    Ok(())
}
