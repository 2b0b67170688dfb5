//! `veil certs init`: a development PKI — a CA, a broker certificate, node
//! certificates for the inter-node listener (`CN=node-<id>`, server and
//! client: `[cluster.tls]`) and client certificates — written as PEM files,
//! with the broker config and the kcat/librdkafka client settings to use
//! them. Not for production CAs.

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Create ca.pem, broker.pem and one certificate per client in DIR.
    Init {
        /// Where to write the PEM files.
        #[arg(long)]
        dir: PathBuf,
        /// Names and addresses clients dial the broker by (its certificate's SANs).
        #[arg(long, value_delimiter = ',', default_value = "localhost,127.0.0.1")]
        hosts: Vec<String>,
        /// Node certificates for the inter-node listener, one per node id
        /// (node-<id>.pem, CN=node-<id>, with the --hosts names), e.g. --nodes 1,2,3.
        #[arg(long, value_delimiter = ',')]
        nodes: Vec<i32>,
        /// Client certificates to create (CN=<name>).
        #[arg(long, value_delimiter = ',')]
        clients: Vec<String>,
        /// Validity of the certificates, in days.
        #[arg(long, default_value_t = 825)]
        days: i64,
        /// Overwrite existing files.
        #[arg(long)]
        force: bool,
        /// If DIR already holds ca.pem, change nothing and succeed (for
        /// setup steps that run on every start).
        #[arg(long, conflicts_with = "force")]
        keep_existing: bool,
    },
}

pub fn run(args: Args) -> anyhow::Result<()> {
    match args.command {
        Command::Init {
            dir,
            hosts,
            nodes,
            clients,
            days,
            force,
            keep_existing,
        } => {
            if keep_existing && dir.join("ca.pem").exists() {
                println!(
                    "{} already holds a CA (ca.pem); nothing changed",
                    dir.display()
                );
                return Ok(());
            }
            init(&dir, &hosts, &nodes, &clients, days, force)
        }
    }
}

fn name(cn: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Veil development");
    dn.push(DnType::CommonName, cn);
    dn
}

fn validity(params: &mut CertificateParams, days: i64) {
    let now = time::OffsetDateTime::now_utc();
    // A little slack for clocks that lag behind.
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(days);
}

/// Writes a file; keys are readable by the owner only.
fn write(path: &Path, text: &str, secret: bool, force: bool) -> anyhow::Result<()> {
    if path.exists() && !force {
        bail!("{} exists; pass --force to overwrite", path.display());
    }
    let mut opts = fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    if secret {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    opts.open(path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .with_context(|| format!("cannot write {}", path.display()))
}

fn init(
    dir: &Path,
    hosts: &[String],
    nodes: &[i32],
    clients: &[String],
    days: i64,
    force: bool,
) -> anyhow::Result<()> {
    if hosts.is_empty() {
        bail!("--hosts needs at least one name or address");
    }
    if let Some(bad) = nodes.iter().find(|&&id| id < 0) {
        bail!("node id {bad} is negative");
    }
    if let Some(bad) = clients.iter().find(|c| {
        c.is_empty()
            || !c
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || "-_.".contains(ch))
    }) {
        bail!("client name '{bad}' may contain only letters, digits, '-', '_' and '.'");
    }
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;

    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.distinguished_name = name("Veil development CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    validity(&mut ca_params, days);
    let ca = ca_params.self_signed(&ca_key)?;
    write(&dir.join("ca.pem"), &ca.pem(), false, force)?;
    write(
        &dir.join("ca-key.pem"),
        &ca_key.serialize_pem(),
        true,
        force,
    )?;

    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(hosts.to_vec())?;
    params.distinguished_name = name(&hosts[0]);
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    validity(&mut params, days);
    let cert = params.signed_by(&key, &ca, &ca_key)?;
    write(&dir.join("broker.pem"), &cert.pem(), false, force)?;
    write(
        &dir.join("broker-key.pem"),
        &key.serialize_pem(),
        true,
        force,
    )?;

    for id in nodes {
        // A node accepts calls and makes them with the same certificate.
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(hosts.to_vec())?;
        params.distinguished_name = name(&format!("node-{id}"));
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        validity(&mut params, days);
        let cert = params.signed_by(&key, &ca, &ca_key)?;
        write(
            &dir.join(format!("node-{id}.pem")),
            &cert.pem(),
            false,
            force,
        )?;
        write(
            &dir.join(format!("node-{id}-key.pem")),
            &key.serialize_pem(),
            true,
            force,
        )?;
    }

    for client in clients {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name = name(client);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        validity(&mut params, days);
        let cert = params.signed_by(&key, &ca, &ca_key)?;
        write(
            &dir.join(format!("{client}.pem")),
            &cert.pem(),
            false,
            force,
        )?;
        write(
            &dir.join(format!("{client}-key.pem")),
            &key.serialize_pem(),
            true,
            force,
        )?;
    }

    let d = fs::canonicalize(dir)?;
    let d = d.display();
    println!(
        "Wrote a development CA, a broker certificate, {} node certificate(s) and {} client certificate(s) to {d}\n",
        nodes.len(),
        clients.len()
    );
    for id in nodes {
        println!("# Inter-node mTLS of node {id} (its veil.toml)");
        println!("[cluster.tls]\ncert_file = \"{d}/node-{id}.pem\"\nkey_file = \"{d}/node-{id}-key.pem\"");
        println!("ca_file = \"{d}/ca.pem\"\n");
    }
    println!("# Broker listener (veil.toml); principals are User:CN=<name>,O=Veil development");
    println!("[[listeners]]\nname = \"SSL\"\nprotocol = \"SSL\"\nbind = \"127.0.0.1:9093\"");
    println!("[listeners.tls]\ncert_file = \"{d}/broker.pem\"\nkey_file = \"{d}/broker-key.pem\"");
    println!("ca_file = \"{d}/ca.pem\"\nclient_auth = \"required\"\n");
    for client in clients {
        println!("# kcat / librdkafka settings for {client} (kcat -F FILE, or -X key=value)");
        println!("security.protocol=ssl\nssl.ca.location={d}/ca.pem");
        println!(
            "ssl.certificate.location={d}/{client}.pem\nssl.key.location={d}/{client}-key.pem\n"
        );
    }
    if clients.is_empty() {
        println!("# kcat / librdkafka settings\nsecurity.protocol=ssl\nssl.ca.location={d}/ca.pem");
    }
    Ok(())
}
