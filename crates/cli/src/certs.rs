//! `veil certs init`: a development PKI — a CA, a broker certificate, node
//! certificates for the inter-node listener (`CN=node-<id>`, usable as
//! server and client: `[cluster.tls]`) and client certificates — written as
//! PEM files, with the configs and kcat/librdkafka settings to use them.
//! Not for production CAs.

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
    /// Create ca.pem, broker.pem, one certificate per node and per client in DIR.
    Init {
        /// Where to write the PEM files.
        #[arg(long)]
        dir: PathBuf,
        /// Names and addresses clients dial the broker by (its certificate's
        /// SANs); node certificates get them too, so they must cover the
        /// addresses nodes dial each other at (the cluster.voters hosts).
        #[arg(long, value_delimiter = ',', default_value = "localhost,127.0.0.1")]
        hosts: Vec<String>,
        /// Node certificates for the inter-node listener, one per node id
        /// (node-<id>.pem, CN=node-<id>), e.g. --nodes 1,2,3.
        #[arg(long, value_delimiter = ',')]
        nodes: Vec<i32>,
        /// A name or address only one node has, as ID=HOST (repeatable or
        /// comma-separated), added to that node's certificate.
        #[arg(long = "node-host", value_delimiter = ',', value_name = "ID=HOST")]
        node_hosts: Vec<String>,
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
            node_hosts,
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
            let nodes = node_names(&nodes, &hosts, &node_hosts)?;
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

/// Each node's id with the names its certificate carries.
fn node_names(
    nodes: &[i32],
    hosts: &[String],
    node_hosts: &[String],
) -> anyhow::Result<Vec<(i32, Vec<String>)>> {
    let mut out: Vec<(i32, Vec<String>)> = Vec::with_capacity(nodes.len());
    for &id in nodes {
        if id < 0 {
            bail!("node id {id} is negative");
        }
        if out.iter().any(|(n, _)| *n == id) {
            bail!("node {id} is named twice in --nodes");
        }
        out.push((id, hosts.to_vec()));
    }
    for entry in node_hosts {
        let (id, host) = entry
            .split_once('=')
            .and_then(|(id, host)| Some((id.trim().parse::<i32>().ok()?, host.trim())))
            .filter(|(_, host)| !host.is_empty())
            .with_context(|| format!("--node-host '{entry}' is not ID=HOST"))?;
        let Some((_, names)) = out.iter_mut().find(|(n, _)| *n == id) else {
            bail!("--node-host '{entry}' names node {id}, which is not in --nodes");
        };
        if !names.iter().any(|n| n == host) {
            names.push(host.to_owned());
        }
    }
    Ok(out)
}

/// Writes `<name>.pem` and `<name>-key.pem`, signed by the CA.
fn issue(
    dir: &Path,
    name: &str,
    mut params: CertificateParams,
    ca: (&rcgen::Certificate, &KeyPair),
    days: i64,
    force: bool,
) -> anyhow::Result<()> {
    let key = KeyPair::generate()?;
    validity(&mut params, days);
    let cert = params.signed_by(&key, ca.0, ca.1)?;
    write(&dir.join(format!("{name}.pem")), &cert.pem(), false, force)?;
    write(
        &dir.join(format!("{name}-key.pem")),
        &key.serialize_pem(),
        true,
        force,
    )
}

fn init(
    dir: &Path,
    hosts: &[String],
    nodes: &[(i32, Vec<String>)],
    clients: &[String],
    days: i64,
    force: bool,
) -> anyhow::Result<()> {
    if hosts.is_empty() {
        bail!("--hosts needs at least one name or address");
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

    let mut params = CertificateParams::new(hosts.to_vec())?;
    params.distinguished_name = name(&hosts[0]);
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    issue(dir, "broker", params, (&ca, &ca_key), days, force)?;

    for (id, names) in nodes {
        // A node both accepts calls and makes them with one certificate.
        let mut params = CertificateParams::new(names.clone())?;
        params.distinguished_name = name(&format!("node-{id}"));
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        issue(
            dir,
            &format!("node-{id}"),
            params,
            (&ca, &ca_key),
            days,
            force,
        )?;
    }

    for client in clients {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name = name(client);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        issue(dir, client, params, (&ca, &ca_key), days, force)?;
    }

    let d = fs::canonicalize(dir)?;
    let d = d.display();
    println!(
        "Wrote a development CA, a broker certificate, {} node certificate(s) and {} client certificate(s) to {d}\n",
        nodes.len(),
        clients.len()
    );
    for (id, _) in nodes {
        println!("# Inter-node mTLS of node {id} (its veil.toml, after [cluster])");
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

#[cfg(test)]
mod tests {
    use super::node_names;

    #[test]
    fn each_node_gets_the_shared_hosts_and_its_own() {
        let hosts = vec!["10.0.0.1".to_owned(), "10.0.0.2".to_owned()];
        let nodes = node_names(&[1, 2], &hosts, &["2=node-2.internal".into()]).unwrap();
        assert_eq!(nodes[0], (1, hosts.clone()));
        assert_eq!(
            nodes[1].1.last().map(String::as_str),
            Some("node-2.internal")
        );
        assert!(node_names(&[1, 1], &hosts, &[]).is_err(), "an id twice");
        assert!(node_names(&[-1], &hosts, &[]).is_err());
        let e = node_names(&[1], &hosts, &["3=x".into()]).unwrap_err();
        assert!(e.to_string().contains("not in --nodes"), "{e}");
        assert!(node_names(&[1], &hosts, &["1:x".into()]).is_err());
    }
}
