//! `veil acl`: ACL administration through CreateAcls, DescribeAcls and
//! DeleteAcls, with `kafka-acls`-style flags (works against Kafka too).

use anyhow::{bail, Context};
use veil_broker::auth::{Operation, PatternType, Permission, ResourceType, CLUSTER_NAME};
use veil_client::{Acl, AclFilter, Admin};

use crate::secure::ConnectArgs;

/// Kafka's ANY code in filters; MATCH is 2 for pattern types.
const ANY: i8 = 1;
const MATCH: i8 = 2;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    connect: ConnectArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Add ACLs: every principal × operation on the resource.
    Add {
        #[command(flatten)]
        who: Principals,
        #[command(flatten)]
        resource: Resource,
        /// read, write, create, delete, alter, describe, cluster-action,
        /// describe-configs, alter-configs, idempotent-write, all; repeatable.
        #[arg(long = "operation", required = true)]
        operations: Vec<String>,
        /// literal or prefixed.
        #[arg(long, default_value = "literal")]
        resource_pattern_type: String,
    },
    /// List ACLs, optionally only those of a resource or principal.
    List {
        #[command(flatten)]
        resource: Resource,
        /// any, match (every ACL that applies to the named resource),
        /// literal or prefixed.
        #[arg(long, default_value = "any")]
        resource_pattern_type: String,
        #[arg(long)]
        principal: Option<String>,
    },
    /// Remove ACLs of a resource; without --operation or principals, every
    /// ACL of that resource pattern.
    Remove {
        #[command(flatten)]
        who: Principals,
        #[command(flatten)]
        resource: Resource,
        #[arg(long = "operation")]
        operations: Vec<String>,
        #[arg(long, default_value = "literal")]
        resource_pattern_type: String,
    },
}

#[derive(clap::Args)]
struct Principals {
    /// Principal to allow, e.g. User:alice or User:* ; repeatable.
    #[arg(long = "allow-principal")]
    allow: Vec<String>,
    /// Principal to deny; repeatable. DENY wins over any ALLOW.
    #[arg(long = "deny-principal")]
    deny: Vec<String>,
    /// Client address the ACLs apply to; * is every host.
    #[arg(long, default_value = "*")]
    host: String,
}

#[derive(clap::Args)]
#[group(multiple = false)]
struct Resource {
    #[arg(long)]
    topic: Option<String>,
    #[arg(long)]
    group: Option<String>,
    /// The cluster resource (cluster-wide operations).
    #[arg(long)]
    cluster: bool,
    #[arg(long)]
    transactional_id: Option<String>,
}

impl Resource {
    /// (type, name) if a resource was given.
    fn get(&self) -> Option<(ResourceType, String)> {
        if let Some(t) = &self.topic {
            Some((ResourceType::Topic, t.clone()))
        } else if let Some(g) = &self.group {
            Some((ResourceType::Group, g.clone()))
        } else if self.cluster {
            Some((ResourceType::Cluster, CLUSTER_NAME.to_owned()))
        } else {
            self.transactional_id
                .as_ref()
                .map(|t| (ResourceType::TransactionalId, t.clone()))
        }
    }

    fn required(&self) -> anyhow::Result<(ResourceType, String)> {
        self.get().context(
            "give a resource: --topic NAME, --group NAME, --cluster or --transactional-id ID",
        )
    }
}

impl Principals {
    /// (principal, permission) pairs, DENY first.
    fn pairs(&self) -> anyhow::Result<Vec<(String, Permission)>> {
        let pairs: Vec<(String, Permission)> = self
            .deny
            .iter()
            .map(|p| (p.clone(), Permission::Deny))
            .chain(self.allow.iter().map(|p| (p.clone(), Permission::Allow)))
            .collect();
        if let Some((p, _)) = pairs.iter().find(|(p, _)| !p.contains(':')) {
            bail!("principal '{p}' must be of the form Type:name, e.g. User:{p}");
        }
        Ok(pairs)
    }
}

fn operation(name: &str) -> anyhow::Result<Operation> {
    Operation::parse(name).with_context(|| {
        let known: Vec<&str> = Operation::ALL_VALUES.iter().map(|o| o.label()).collect();
        format!("unknown operation '{name}'; one of {}", known.join(", "))
    })
}

/// A pattern type for bindings (`literal`, `prefixed`).
fn pattern(name: &str) -> anyhow::Result<PatternType> {
    PatternType::parse(name)
        .with_context(|| format!("unknown resource pattern type '{name}'; literal or prefixed"))
}

/// A pattern type code for filters (also `any`, `match`).
fn pattern_filter(name: &str) -> anyhow::Result<i8> {
    match name.to_ascii_lowercase().as_str() {
        "any" => Ok(ANY),
        "match" => Ok(MATCH),
        other => pattern(other).map(PatternType::code),
    }
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let mut admin = Admin::from_connection(args.connect.connect("veil-acl").await?);
    match args.command {
        Command::Add {
            who,
            resource,
            operations,
            resource_pattern_type,
        } => {
            let (kind, name) = resource.required()?;
            let pattern = pattern(&resource_pattern_type)?;
            let pairs = who.pairs()?;
            if pairs.is_empty() {
                bail!("give at least one --allow-principal or --deny-principal");
            }
            let mut acls = Vec::new();
            for op in &operations {
                let op = operation(op)?;
                acls.extend(pairs.iter().map(|(principal, permission)| Acl {
                    resource_type: kind.code(),
                    resource_name: name.clone(),
                    pattern_type: pattern.code(),
                    principal: principal.clone(),
                    host: who.host.clone(),
                    operation: op.code(),
                    permission: permission.code(),
                }));
            }
            admin.create_acls(&acls).await?;
            println!("added {} ACL(s):", acls.len());
            print(&acls);
        }
        Command::List {
            resource,
            resource_pattern_type,
            principal,
        } => {
            let (kind, name) = resource
                .get()
                .map_or((ANY, None), |(k, n)| (k.code(), Some(n)));
            let filter = AclFilter {
                resource_type: kind,
                resource_name: name,
                pattern_type: pattern_filter(&resource_pattern_type)?,
                principal,
                host: None,
                operation: ANY,
                permission: ANY,
            };
            print(&admin.describe_acls(&filter).await?);
        }
        Command::Remove {
            who,
            resource,
            operations,
            resource_pattern_type,
        } => {
            let (kind, name) = resource.required()?;
            let pattern = pattern_filter(&resource_pattern_type)?;
            let ops: Vec<i8> = if operations.is_empty() {
                vec![ANY]
            } else {
                operations
                    .iter()
                    .map(|o| operation(o).map(Operation::code))
                    .collect::<anyhow::Result<_>>()?
            };
            let pairs: Vec<(Option<String>, i8)> = match who.pairs()? {
                p if p.is_empty() => vec![(None, ANY)],
                p => p
                    .into_iter()
                    .map(|(n, perm)| (Some(n), perm.code()))
                    .collect(),
            };
            // Only narrow by host when one was given.
            let host = (who.host != "*").then(|| who.host.clone());
            let filters: Vec<AclFilter> = pairs
                .iter()
                .flat_map(|(principal, permission)| {
                    ops.iter().map(|&operation| AclFilter {
                        resource_type: kind.code(),
                        resource_name: Some(name.clone()),
                        pattern_type: pattern,
                        principal: principal.clone(),
                        host: host.clone(),
                        operation,
                        permission: *permission,
                    })
                })
                .collect();
            let removed = admin.delete_acls(&filters).await?;
            println!("removed {} ACL(s):", removed.len());
            print(&removed);
        }
    }
    Ok(())
}

fn upper(label: Option<&'static str>, code: i8) -> String {
    label.map_or_else(|| code.to_string(), str::to_ascii_uppercase)
}

/// Prints ACLs grouped by resource pattern, in `kafka-acls`' layout.
fn print(acls: &[Acl]) {
    let mut last: Option<(i8, &str, i8)> = None;
    for a in acls {
        let key = (a.resource_type, a.resource_name.as_str(), a.pattern_type);
        if last != Some(key) {
            println!(
                "Current ACLs for resource `ResourcePattern(resourceType={}, name={}, patternType={})`:",
                upper(ResourceType::from_code(a.resource_type).map(ResourceType::label), a.resource_type),
                a.resource_name,
                upper(PatternType::from_code(a.pattern_type).map(PatternType::label), a.pattern_type),
            );
            last = Some(key);
        }
        println!(
            " \t(principal={}, host={}, operation={}, permissionType={})",
            a.principal,
            a.host,
            upper(
                Operation::from_code(a.operation).map(Operation::label),
                a.operation
            ),
            upper(
                Permission::from_code(a.permission).map(Permission::label),
                a.permission
            ),
        );
    }
}
