//! `veil user`: SCRAM users through AlterUserScramCredentials and
//! DescribeUserScramCredentials (works against Kafka too), and users-file
//! entries for PLAIN. Salted passwords are computed here; the password
//! itself is never sent.

use std::io::BufRead as _;

use anyhow::{bail, Context};
use veil_broker::auth::plain::hash_entry;
use veil_broker::auth::scram::{Mechanism, MAX_ITERATIONS, MIN_ITERATIONS};
use veil_client::{Admin, ScramUpsert};

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
    /// Create or update a user's SCRAM credentials. The new password comes
    /// from VEIL_USER_PASSWORD or the first line of standard input.
    Add {
        name: String,
        /// SCRAM-SHA-256, SCRAM-SHA-512; repeatable (default: both).
        #[arg(long = "mechanism")]
        mechanisms: Vec<String>,
        #[arg(long, default_value_t = 8192)]
        iterations: u32,
    },
    /// Delete a user's SCRAM credentials (all mechanisms unless given).
    Remove {
        name: String,
        #[arg(long = "mechanism")]
        mechanisms: Vec<String>,
    },
    /// List users with SCRAM credentials.
    List,
    /// Print a PLAIN users-file entry (salted hash) for `[sasl] plain_users_file`.
    HashPlain {
        name: String,
        #[arg(long, default_value_t = 8192)]
        iterations: u32,
    },
}

fn mechanisms(names: &[String]) -> anyhow::Result<Vec<Mechanism>> {
    if names.is_empty() {
        return Ok(Mechanism::ALL.to_vec());
    }
    names
        .iter()
        .map(|n| {
            Mechanism::from_name(&n.to_ascii_uppercase())
                .with_context(|| format!("unknown SCRAM mechanism '{n}'"))
        })
        .collect()
}

fn new_password() -> anyhow::Result<String> {
    if let Ok(p) = std::env::var("VEIL_USER_PASSWORD") {
        return Ok(p);
    }
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    let p = line.trim_end_matches(['\r', '\n']).to_owned();
    if p.is_empty() {
        bail!("no password: set VEIL_USER_PASSWORD or pipe it on standard input");
    }
    Ok(p)
}

fn check_iterations(iterations: u32) -> anyhow::Result<()> {
    if !(MIN_ITERATIONS..=MAX_ITERATIONS).contains(&iterations) {
        bail!("--iterations must be between {MIN_ITERATIONS} and {MAX_ITERATIONS}");
    }
    Ok(())
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    if let Command::HashPlain { name, iterations } = &args.command {
        check_iterations(*iterations)?;
        print!("{}", hash_entry(name, &new_password()?, *iterations));
        return Ok(());
    }
    let mut admin = Admin::from_connection(args.connect.connect("veil-user").await?);
    match args.command {
        Command::Add {
            name,
            mechanisms: m,
            iterations,
        } => {
            check_iterations(iterations)?;
            let password = new_password()?;
            let upserts = mechanisms(&m)?
                .into_iter()
                .map(|mech| {
                    let salt: [u8; 32] = rand::random();
                    ScramUpsert {
                        user: name.clone(),
                        mechanism: mech.code(),
                        iterations: iterations as i32,
                        salted_password: mech.salted_password(
                            password.as_bytes(),
                            &salt,
                            iterations,
                        ),
                        salt: salt.to_vec(),
                    }
                })
                .collect();
            admin.alter_scram_credentials(upserts, Vec::new()).await?;
            println!("stored SCRAM credentials for '{name}'");
        }
        Command::Remove {
            name,
            mechanisms: m,
        } => {
            let wanted = if m.is_empty() {
                let users = admin
                    .describe_scram_credentials(Some(vec![name.clone()]))
                    .await?;
                users
                    .iter()
                    .flat_map(|u| u.credentials.iter().map(|(code, _)| *code))
                    .collect()
            } else {
                mechanisms(&m)?
                    .into_iter()
                    .map(Mechanism::code)
                    .collect::<Vec<_>>()
            };
            let deletions = wanted
                .into_iter()
                .map(|code| (name.clone(), code))
                .collect();
            admin.alter_scram_credentials(Vec::new(), deletions).await?;
            println!("removed SCRAM credentials of '{name}'");
        }
        Command::List => {
            for u in admin.describe_scram_credentials(None).await? {
                let creds: Vec<String> = u
                    .credentials
                    .iter()
                    .map(|(code, it)| {
                        let name = Mechanism::from_code(*code).map_or("unknown", Mechanism::name);
                        format!("{name} (iterations={it})")
                    })
                    .collect();
                println!("{}\t{}", u.user, creds.join(", "));
            }
        }
        Command::HashPlain { .. } => {}
    }
    Ok(())
}
