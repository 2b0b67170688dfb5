//! `veil kms`: the data owner's key management for blind topics.
//!
//! A KMS directory holds one key epoch: `master.key` (the master key sealed
//! under a passphrase, see `veil_blind::kms`), `registry` (issued users and
//! their status; no secrets) and the user key files it wrote, each naming the
//! user it was issued for. The broker only ever receives server shares, over
//! an authenticated admin connection.

use std::io::{BufRead, IsTerminal};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::Parser;
use veil_blind::kms::{self as files, KdfParams, Registry, UserEntry, UserStatus};
use veil_blind::protocol::{
    error_code, ShareListRequest, ShareRegisterRequest, ShareRevokeRequest,
};
use veil_blind::{Kid, MasterKey, ModulusBits};
use veil_client::blind::veil_call;
use zeroize::Zeroizing;

use crate::secure::ConnectArgs;

const MASTER_FILE: &str = "master.key";
const REGISTRY_FILE: &str = "registry";
const PASSPHRASE_ENV: &str = "VEIL_KMS_PASSPHRASE";

#[derive(clap::Args)]
pub struct Args {
    /// The KMS directory (one key epoch).
    #[arg(long, global = true, env = "VEIL_KMS_DIR", default_value = "veil-kms")]
    dir: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Start a new key epoch: generate and seal a master key.
    Init {
        /// Key epoch id, e.g. t42-e1.
        #[arg(long)]
        kid: String,
        /// Tenant id bound into every topic token.
        #[arg(long)]
        tenant: String,
        /// Modulus size: 3072 (default) or 2048.
        #[arg(long, default_value_t = 3072)]
        bits: u32,
        /// Argon2id with tiny costs, for tests only.
        #[arg(long, hide = true)]
        insecure_fast_kdf: bool,
    },
    /// Issue a user key (writes NAME.key) and register its server share.
    AddUser(UserArgs),
    /// Delete a user's server share on the broker; mark it revoked here.
    Revoke {
        name: String,
        #[command(flatten)]
        connect: ConnectArgs,
    },
    /// Issue a fresh split for a user: new key file, old one stops working.
    RotateUser(UserArgs),
    /// List issued users, and the broker's shares if it is reachable.
    List {
        #[command(flatten)]
        connect: ConnectArgs,
        /// Do not ask the broker.
        #[arg(long)]
        offline: bool,
    },
    /// Attach Kafka ACLs to a blind topic by its plaintext name:
    /// `veil kms acl TOPIC -- [acl connection flags] add|list|remove ...`
    /// (the flags of `veil acl`, without --topic).
    Acl {
        topic: String,
        #[arg(last = true, required = true)]
        acl_args: Vec<String>,
    },
    /// Time the modexp and the resolve path (benchmark).
    #[command(hide = true)]
    Bench(crate::kms_bench::Args),
}

#[derive(clap::Args)]
struct UserArgs {
    /// The user's SASL name; the share is registered for `User:NAME`.
    name: String,
    /// Where to write the user key file (default DIR/NAME.key).
    #[arg(long)]
    out: Option<PathBuf>,
    #[command(flatten)]
    connect: ConnectArgs,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let dir = args.dir;
    match args.command {
        Command::Init {
            kid,
            tenant,
            bits,
            insecure_fast_kdf,
        } => init(&dir, &kid, &tenant, bits, insecure_fast_kdf),
        Command::AddUser(u) => issue(&dir, u, false).await,
        Command::RotateUser(u) => issue(&dir, u, true).await,
        Command::Revoke { name, connect } => revoke(&dir, &name, &connect).await,
        Command::List { connect, offline } => list(&dir, &connect, offline).await,
        Command::Acl { topic, acl_args } => acl(&dir, &topic, acl_args).await,
        Command::Bench(a) => crate::kms_bench::run(a),
    }
}

fn init(dir: &Path, kid: &str, tenant: &str, bits: u32, fast: bool) -> anyhow::Result<()> {
    let master_path = dir.join(MASTER_FILE);
    if master_path.exists() {
        bail!(
            "{} already exists; a new key epoch needs a new directory",
            master_path.display()
        );
    }
    let registry = Registry::new(kid, tenant, bits)?;
    let modulus = ModulusBits::from_bits(bits)?;
    let passphrase = passphrase(true)?;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let bar = indicatif::ProgressBar::new_spinner();
    bar.set_message(format!(
        "searching {}-bit safe primes (may take minutes)",
        bits / 2
    ));
    let key = MasterKey::generate(Kid::new(kid)?, tenant, modulus, &mut |tried| {
        if tried % 16 == 0 {
            bar.set_message(format!("safe-prime candidates tried: {tried}"));
            bar.tick();
        }
    })?;
    bar.finish_with_message("master key generated");
    let params = if fast {
        KdfParams::INSECURE_FOR_TESTS
    } else {
        KdfParams::DEFAULT
    };
    let sealed = files::seal_master_key(&key, passphrase.as_bytes(), params)?;
    write_private(&master_path, &sealed, false)?;
    save_registry(dir, &registry)?;
    println!(
        "key epoch {kid} for tenant {tenant} ({bits} bits) in {}",
        dir.display()
    );
    Ok(())
}

/// add-user (`rotate` = false) and rotate-user (`rotate` = true).
async fn issue(dir: &Path, u: UserArgs, rotate: bool) -> anyhow::Result<()> {
    files::check_user_name(&u.name)?;
    let mut registry = load_registry(dir)?;
    let generation = match (registry.users.get(&u.name), rotate) {
        (Some(_), false) => bail!(
            "user {} already has a key; use `veil kms rotate-user {}`",
            u.name,
            u.name
        ),
        (None, true) => bail!("user {} has no key; use `veil kms add-user`", u.name),
        (Some(e), true) => e.generation + 1,
        (None, false) => 1,
    };
    let master = load_master(dir)?;
    let (user_key, share) = master.split()?;
    // The file names its user, so that no one else's client uses it.
    let user_key = user_key.bind_user(&u.name)?;
    let out = u.out.unwrap_or_else(|| dir.join(format!("{}.key", u.name)));
    // Written aside first: the key becomes the user's only once the broker
    // holds the matching share.
    let staged = out.with_extension("key.new");
    write_private(&staged, &user_key.to_bytes()?, true)?;
    let principal = format!("User:{}", u.name);
    let registered = async {
        let mut conn = u.connect.connect("veil-kms").await?;
        let req = ShareRegisterRequest::new(&principal, &share)?;
        let resp = veil_call(&mut conn, &req).await?;
        check("register the share", resp.error_code, resp.error_message)
    }
    .await;
    if let Err(e) = registered {
        let _ = std::fs::remove_file(&staged);
        return Err(e);
    }
    std::fs::rename(&staged, &out)
        .with_context(|| format!("cannot move the key file into {}", out.display()))?;
    registry.users.insert(
        u.name.clone(),
        UserEntry {
            status: UserStatus::Active,
            generation,
        },
    );
    save_registry(dir, &registry)?;
    println!(
        "{} key for {principal} written to {} (generation {generation})",
        if rotate { "new" } else { "issued" },
        out.display()
    );
    Ok(())
}

async fn revoke(dir: &Path, name: &str, connect: &ConnectArgs) -> anyhow::Result<()> {
    let mut registry = load_registry(dir)?;
    let Some(entry) = registry.users.get_mut(name) else {
        bail!("user {name} was never issued a key by this KMS");
    };
    let mut conn = connect.connect("veil-kms").await?;
    let req = ShareRevokeRequest {
        principal: format!("User:{name}"),
        kid: registry.kid.as_bytes().to_vec(),
    };
    let resp = veil_call(&mut conn, &req).await?;
    // Already gone on the broker is what we want.
    if resp.error_code != error_code::NO_SHARE {
        check("revoke the share", resp.error_code, resp.error_message)?;
    }
    entry.status = UserStatus::Revoked;
    save_registry(dir, &registry)?;
    println!("revoked User:{name} (key epoch {})", registry.kid);
    Ok(())
}

async fn list(dir: &Path, connect: &ConnectArgs, offline: bool) -> anyhow::Result<()> {
    let registry = load_registry(dir)?;
    println!(
        "key epoch {} tenant {} ({} bits)",
        registry.kid, registry.tenant, registry.bits
    );
    for (name, u) in &registry.users {
        println!(
            "  User:{name}\t{}\tgeneration {}",
            u.status.label(),
            u.generation
        );
    }
    if offline {
        return Ok(());
    }
    let shares = async {
        let mut conn = connect.connect("veil-kms").await?;
        let resp = veil_call(&mut conn, &ShareListRequest {}).await?;
        check("list shares", resp.error_code, None)?;
        anyhow::Ok(resp.shares)
    }
    .await;
    match shares {
        Ok(shares) => {
            println!("broker shares:");
            for s in shares {
                println!("  {}\t{}", s.principal, String::from_utf8_lossy(&s.kid));
            }
        }
        Err(e) => println!("broker: not reachable ({e:#})"),
    }
    Ok(())
}

async fn acl(dir: &Path, topic: &str, acl_args: Vec<String>) -> anyhow::Result<()> {
    let master = load_master(dir)?;
    let physical = master.physical_name(topic)?;
    // The ordinary `veil acl` command, pointed at the physical name.
    #[derive(Parser)]
    #[command(name = "veil kms acl TOPIC --")]
    struct AclCli {
        #[command(flatten)]
        args: crate::acl::Args,
    }
    let argv = std::iter::once("veil kms acl TOPIC --".to_owned())
        .chain(acl_args)
        .chain(["--topic".to_owned(), physical.into_string()]);
    let cli = AclCli::try_parse_from(argv)?;
    crate::acl::run(cli.args).await
}

fn check(what: &str, code: i16, message: Option<String>) -> anyhow::Result<()> {
    match code {
        error_code::NONE => Ok(()),
        error_code::CLUSTER_AUTHORIZATION_FAILED => {
            bail!("the broker refused to {what}: the KMS principal needs ALTER on CLUSTER")
        }
        error_code::SASL_AUTHENTICATION_FAILED => {
            bail!("the broker refused to {what}: log in with SASL or mTLS (--user, VEIL_PASSWORD)")
        }
        code => bail!(
            "the broker could not {what}: {}{}",
            veil_client::error::error_name(code),
            message.map(|m| format!(" ({m})")).unwrap_or_default()
        ),
    }
}

fn load_registry(dir: &Path) -> anyhow::Result<Registry> {
    let path = dir.join(REGISTRY_FILE);
    let text = std::fs::read_to_string(&path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            anyhow::anyhow!("no KMS in {} (run `veil kms init` first)", dir.display())
        } else {
            anyhow::anyhow!("cannot read {}: {e}", path.display())
        }
    })?;
    Ok(Registry::parse(&text)?)
}

fn save_registry(dir: &Path, r: &Registry) -> anyhow::Result<()> {
    let path = dir.join(REGISTRY_FILE);
    let tmp = dir.join(format!("{REGISTRY_FILE}.tmp"));
    std::fs::write(&tmp, r.to_text()).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, &path).with_context(|| format!("cannot write {}", path.display()))
}

fn load_master(dir: &Path) -> anyhow::Result<MasterKey> {
    let path = dir.join(MASTER_FILE);
    let sealed = std::fs::read(&path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            anyhow::anyhow!(
                "the master key file {} does not exist (run `veil kms init`)",
                path.display()
            )
        } else {
            anyhow::anyhow!("cannot read {}: {e}", path.display())
        }
    })?;
    let passphrase = passphrase(false)?;
    match files::open_master_key(&sealed, passphrase.as_bytes()) {
        Ok(k) => Ok(k),
        Err(veil_blind::Error::Decrypt) => bail!(
            "wrong passphrase for {} (or the file was modified)",
            path.display()
        ),
        Err(e) => bail!("cannot load {}: {e}", path.display()),
    }
}

/// From VEIL_KMS_PASSPHRASE, else a prompt on a terminal, else one stdin line.
fn passphrase(confirm: bool) -> anyhow::Result<Zeroizing<String>> {
    if let Ok(p) = std::env::var(PASSPHRASE_ENV) {
        return non_empty(Zeroizing::new(p));
    }
    if std::io::stdin().is_terminal() {
        let p = Zeroizing::new(rpassword::prompt_password("KMS passphrase: ")?);
        if confirm {
            let again = Zeroizing::new(rpassword::prompt_password("again: ")?);
            if *again != *p {
                bail!("the passphrases do not match");
            }
        }
        return non_empty(p);
    }
    let mut line = Zeroizing::new(String::new());
    std::io::stdin().lock().read_line(&mut line)?;
    let trimmed = Zeroizing::new(line.trim_end_matches(['\r', '\n']).to_owned());
    non_empty(trimmed)
}

fn non_empty(p: Zeroizing<String>) -> anyhow::Result<Zeroizing<String>> {
    if p.is_empty() {
        bail!("the KMS passphrase is empty (set {PASSPHRASE_ENV} or type one)");
    }
    Ok(p)
}

/// Key files: owner-only (0600) from the moment they exist.
fn write_private(path: &Path, bytes: &[u8], overwrite: bool) -> anyhow::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true);
    if overwrite {
        opts.create(true).truncate(true);
    } else {
        opts.create_new(true);
    }
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    Ok(())
}
