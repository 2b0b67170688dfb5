//! Security between nodes, with real processes on 127.0.0.1/.2/.3: mTLS
//! with certificates from `veil certs init --nodes`, a node with a
//! certificate from another CA or of another node, garbage and plaintext on
//! the inter-node listener, and a node whose voter set differs. Every
//! refusal leaves the quorum working; the refused node says why, once.

mod common;
#[path = "common/raw.rs"]
mod raw;

use std::collections::BTreeMap;
use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{eventually, rt, BIN};
use rand::{RngCore, SeedableRng};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use veil_broker::cluster::rpc::{self, Call, Envelope, Reply};
use veil_client::{Admin, TopicSpec};
use veil_testkit::{ClusterOptions, TestCluster};

/// `veil certs init --nodes 1,2,3` into `dir`.
fn pki(dir: &Path) -> PathBuf {
    let out = Command::new(BIN)
        .args(["certs", "init", "--nodes", "1,2,3"])
        .args(["--hosts", "localhost,127.0.0.1,127.0.0.2,127.0.0.3"])
        .arg("--dir")
        .arg(dir)
        .output()
        .expect("run veil certs init");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("[cluster.tls]"),
        "prints the node config: {text}"
    );
    dir.to_owned()
}

/// A node's `[cluster.tls]`: the certificate of `cert_of` from `certs`,
/// trusting the CA in `ca`.
fn tls_table(certs: &Path, cert_of: usize, ca: &Path) -> String {
    let d = certs.display();
    format!(
        "[cluster.tls]\ncert_file = \"{d}/node-{cert_of}.pem\"\nkey_file = \"{d}/node-{cert_of}-key.pem\"\nca_file = \"{}/ca.pem\"\n",
        ca.display()
    )
}

fn options(node_tables: Vec<String>, wait_for: Option<Vec<usize>>) -> ClusterOptions {
    ClusterOptions {
        cluster: "request_timeout_ms = 3000\n".into(),
        node_tables,
        wait_for,
        ..ClusterOptions::default()
    }
}

async fn create(bootstrap: &str, name: &str, rf: i16) -> Result<(), String> {
    let mut admin = Admin::connect(bootstrap).await.map_err(|e| e.to_string())?;
    let spec = TopicSpec {
        name: name.into(),
        partitions: 1,
        replication_factor: rf,
        configs: BTreeMap::new(),
    };
    admin
        .create_topic(&spec, false)
        .await
        .map_err(|e| e.to_string())
}

/// Node `id` stays unready for `period` (checked every 200 ms).
fn never_ready(cluster: &TestCluster, id: usize, period: Duration) {
    let deadline = Instant::now() + period;
    while Instant::now() < deadline {
        let (code, body) = cluster.node(id).http_get("/healthz");
        assert_ne!(code, 200, "node {id} must not become ready: {body}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn handshake_failures(cluster: &TestCluster, id: usize) -> u64 {
    let (_, metrics) = cluster.node(id).http_get("/metrics");
    metrics
        .lines()
        .find(|l| {
            l.starts_with("veil_tls_handshake_failures_total")
                && l.contains("listener=\"INTERNAL\"")
        })
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

fn lines_with(log: &str, needle: &str) -> usize {
    log.lines().filter(|l| l.contains(needle)).count()
}

type Tls = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

/// A TLS connection to `addr` trusting `ca`, presenting `client` if given.
async fn tls(
    addr: SocketAddr,
    ca: &Path,
    client: Option<(PathBuf, PathBuf)>,
) -> std::io::Result<Tls> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots);
    let config = match client {
        Some((cert, key)) => {
            let chain = CertificateDer::pem_file_iter(cert)
                .unwrap()
                .collect::<Result<Vec<_>, _>>()
                .unwrap();
            builder
                .with_client_auth_cert(chain, PrivateKeyDer::from_pem_file(key).unwrap())
                .unwrap()
        }
        None => builder.with_no_client_auth(),
    };
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let name = ServerName::try_from(addr.ip().to_string()).unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
}

/// Sends one inter-node call claiming to be `from`; the reply, or `None`
/// when the connection fails or closes.
async fn call(stream: &mut Tls, from: i32) -> Option<Reply> {
    let envelope = Envelope {
        from,
        cluster_id: None,
        voters: String::new(),
        body: Call::Probe,
    };
    let frame = rpc::encode_request(1, "intruder", &envelope).unwrap();
    stream.write_all(&frame).await.ok()?;
    stream.flush().await.ok()?;
    let work = async {
        let size = stream.read_i32().await.ok()?;
        let mut body = vec![0u8; usize::try_from(size).ok()?.min(1 << 20)];
        stream.read_exact(&mut body).await.ok()?;
        rpc::decode_response(&Bytes::from(body)).ok()
    };
    let (_, reply) = tokio::time::timeout(Duration::from_secs(5), work)
        .await
        .ok()??;
    Some(reply.body)
}

#[test]
fn three_nodes_with_mutual_tls_work_and_strangers_do_no_harm() {
    let temp = tempfile::tempdir().unwrap();
    let certs = pki(&temp.path().join("pki"));
    let other = pki(&temp.path().join("other-ca"));
    let tables = (1..=3).map(|i| tls_table(&certs, i, &certs)).collect();
    let cluster = TestCluster::start_with(BIN, 3, &options(tables, None));
    let controller = cluster.wait_controller(&[1, 2, 3], Duration::from_secs(20));
    rt().block_on(create(&cluster.node(1).bootstrap(), "over-mtls", 3))
        .unwrap();
    let target = (1..=3).find(|i| *i != controller).unwrap();
    let addr = cluster.internal_addr(target);
    let before = handshake_failures(&cluster, target);

    // Garbage, then a plaintext Kafka request: the TLS handshake fails.
    let seed: u64 = rand::random();
    println!("garbage seed {seed}");
    let mut garbage = vec![0u8; 4096];
    rand::rngs::StdRng::seed_from_u64(seed).fill_bytes(&mut garbage);
    let mut s = TcpStream::connect(addr).unwrap();
    let _ = s.write_all(&garbage);
    assert!(
        raw::closed_within(&mut s, Duration::from_secs(15)),
        "garbage is cut off"
    );
    let mut s = TcpStream::connect(addr).unwrap();
    assert!(!raw::api_versions(&mut s, 1), "plaintext is refused");

    rt().block_on(async {
        let own = |n: usize, from: &Path| {
            Some((
                from.join(format!("node-{n}.pem")),
                from.join(format!("node-{n}-key.pem")),
            ))
        };
        // TLS without a client certificate, or with one from another CA.
        for (what, client) in [("no certificate", None), ("another CA", own(1, &other))] {
            let refused = match tls(addr, &certs.join("ca.pem"), client).await {
                Err(_) => true,
                Ok(mut s) => call(&mut s, 1).await.is_none(),
            };
            assert!(refused, "{what}: refused");
        }
        // A real node certificate claiming to be another node.
        let mut s = tls(addr, &certs.join("ca.pem"), own(2, &certs))
            .await
            .unwrap();
        match call(&mut s, 1).await {
            Some(Reply::Refused(reason)) => {
                assert!(
                    reason.contains("names node 2 but it calls as node 1"),
                    "{reason}"
                );
            }
            other => panic!("an impostor's call is refused: {other:?}"),
        }
        // A real node sending garbage inside TLS is cut off.
        let mut s = tls(addr, &certs.join("ca.pem"), own(2, &certs))
            .await
            .unwrap();
        s.write_all(&[0, 0, 0, 12, 0x7d, 0xc8, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8])
            .await
            .unwrap();
        let mut buf = [0u8; 16];
        let closed = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf)).await;
        assert!(matches!(closed, Ok(Ok(0) | Err(_))), "{closed:?}");
    });
    assert!(
        handshake_failures(&cluster, target) >= before + 3,
        "failed handshakes are counted"
    );
    // No harm done: same controller, every node ready, writes go through.
    assert_eq!(
        cluster.wait_controller(&[1, 2, 3], Duration::from_secs(5)),
        controller
    );
    cluster.wait_ready(&[1, 2, 3], Duration::from_secs(10));
    rt().block_on(create(
        &cluster.node(target).bootstrap(),
        "after-strangers",
        3,
    ))
    .unwrap();
    let log = cluster.node(target).log();
    assert!(
        lines_with(&log, "refusing inter-node calls") <= 1,
        "said once:\n{log}"
    );
}

#[test]
fn a_node_with_a_certificate_from_another_ca_is_refused() {
    let temp = tempfile::tempdir().unwrap();
    let certs = pki(&temp.path().join("pki"));
    let other = pki(&temp.path().join("other-ca"));
    let tables = vec![
        tls_table(&certs, 1, &certs),
        tls_table(&certs, 2, &certs),
        tls_table(&other, 3, &other),
    ];
    let cluster = TestCluster::start_with(BIN, 3, &options(tables, Some(vec![1, 2])));
    rt().block_on(create(&cluster.node(1).bootstrap(), "two-of-three", 2))
        .unwrap();
    never_ready(&cluster, 3, Duration::from_secs(5));
    cluster.wait_ready(&[1, 2], Duration::from_secs(5));
    rt().block_on(create(&cluster.node(2).bootstrap(), "still-two", 2))
        .unwrap();
    let log3 = cluster.node(3).log();
    let said = lines_with(&log3, "TLS handshake with");
    assert!(
        (1..=4).contains(&said),
        "node 3 says why, once per peer ({said}):\n{log3}"
    );
    assert!(log3.contains("[cluster.tls] CA"), "{log3}");
    let log1 = cluster.node(1).log();
    assert!(
        log1.contains("refused an inter-node connection"),
        "node 1 says whom it refused:\n{log1}"
    );
    assert!(handshake_failures(&cluster, 1) > 0);
}

#[test]
fn a_node_presenting_another_nodes_certificate_is_refused() {
    let temp = tempfile::tempdir().unwrap();
    let certs = pki(&temp.path().join("pki"));
    let tables = vec![
        tls_table(&certs, 1, &certs),
        tls_table(&certs, 2, &certs),
        // Node 3 holds node 2's certificate and key.
        tls_table(&certs, 2, &certs),
    ];
    let cluster = TestCluster::start_with(BIN, 3, &options(tables, Some(vec![1, 2])));
    never_ready(&cluster, 3, Duration::from_secs(5));
    rt().block_on(create(&cluster.node(1).bootstrap(), "two-of-three", 2))
        .unwrap();
    let logs: String = (1..=3).map(|i| cluster.node(i).log()).collect();
    assert!(
        logs.contains("names node 2 but it calls as node 3")
            || logs.contains("names node 2 but it answers as node 3"),
        "{logs}"
    );
    let log3 = cluster.node(3).log();
    assert!(
        lines_with(&log3, "names node 2") <= 4,
        "no flood on node 3:\n{log3}"
    );
}

#[test]
fn a_node_started_with_another_voter_set_is_refused_and_says_what_to_fix() {
    let mut cluster = TestCluster::start_with(BIN, 3, &options(Vec::new(), None));
    rt().block_on(create(&cluster.node(1).bootstrap(), "before", 3))
        .unwrap();
    cluster.terminate(3);
    let path = cluster.config_path(3);
    let text = std::fs::read_to_string(&path).unwrap();
    let changed: String = text
        .lines()
        .map(|l| match l.strip_prefix("voters = [") {
            Some(rest) => format!(
                "voters = [{}, \"4@127.0.0.4:9\"]",
                rest.trim_end_matches(']')
            ),
            None => l.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("\n");
    assert_ne!(changed, text);
    std::fs::write(&path, changed).unwrap();
    cluster.start_node(3);
    eventually(
        Duration::from_secs(20),
        "node 3 to say what is wrong",
        || {
            let log = cluster.node(3).log();
            if log.contains("voter sets differ") {
                Ok(())
            } else {
                Err(log)
            }
        },
    );
    never_ready(&cluster, 3, Duration::from_secs(5));
    cluster.wait_ready(&[1, 2], Duration::from_secs(5));
    rt().block_on(create(&cluster.node(2).bootstrap(), "after", 2))
        .unwrap();
    let log3 = cluster.node(3).log();
    let said = lines_with(&log3, "voter sets differ");
    println!("node 3 said it {said} time(s)");
    assert!(
        (1..=4).contains(&said),
        "once per peer and direction, not a flood:\n{log3}"
    );
    assert!(
        log3.contains("every node needs the same cluster.voters"),
        "{log3}"
    );
    assert!(log3.contains("4@127.0.0.4:9"), "names the sets:\n{log3}");
    for id in [1, 2] {
        let log = cluster.node(id).log();
        assert!(
            lines_with(&log, "voter sets differ") <= 2,
            "node {id}:\n{log}"
        );
    }
}
