//! Listeners with TLS, mTLS and SASL, driven against the real binary with a
//! rustls client: what must work works, and what must be refused is.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::messages::MetadataRequest;

use common::{batch, fetch, produce, rt, BIN};
use rcgen::{CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use veil_broker::auth::scram::{Credential, Mechanism, ScramClient};
use veil_client::{Admin, Connection, ScramUpsert, TopicSpec};
use veil_testkit::TestBroker;

const SASL_FAILED: i16 = 58;

fn dn(cn: &str) -> DistinguishedName {
    // The same subject `veil certs init` gives its CA and clients.
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Veil development");
    dn.push(DnType::CommonName, cn);
    dn
}

/// Runs `veil certs init` for alice, then adds (with rcgen) an expired
/// client certificate from the same CA and one from a different CA.
fn pki(dir: &Path) {
    let out = std::process::Command::new(BIN)
        .args(["certs", "init", "--dir"])
        .arg(dir)
        .args(["--clients", "alice"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let settings = String::from_utf8(out.stdout).unwrap();
    assert!(settings.contains("security.protocol=ssl"), "{settings}");
    assert!(settings.contains("ssl.key.location="), "{settings}");

    let ca_key =
        KeyPair::from_pem(&std::fs::read_to_string(dir.join("ca-key.pem")).unwrap()).unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.distinguished_name = dn("Veil development CA");
    ca_params.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();

    let now = time::OffsetDateTime::now_utc();
    let leaf = |cn: &str| {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name = dn(cn);
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        p
    };
    let key = KeyPair::generate().unwrap();
    let mut expired = leaf("old");
    expired.not_before = now - time::Duration::days(30);
    expired.not_after = now - time::Duration::days(1);
    let cert = expired.signed_by(&key, &ca, &ca_key).unwrap();
    std::fs::write(dir.join("old.pem"), cert.pem()).unwrap();
    std::fs::write(dir.join("old-key.pem"), key.serialize_pem()).unwrap();

    let other_key = KeyPair::generate().unwrap();
    let mut other_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    other_params.distinguished_name = dn("Some other CA");
    other_params.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let other = other_params.self_signed(&other_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = leaf("mallory").signed_by(&key, &other, &other_key).unwrap();
    std::fs::write(dir.join("mallory.pem"), cert.pem()).unwrap();
    std::fs::write(dir.join("mallory-key.pem"), key.serialize_pem()).unwrap();
}

async fn tls_connect(
    addr: &str,
    dir: &Path,
    client: Option<&str>,
) -> veil_client::Result<Connection> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(dir.join("ca.pem")).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots);
    let config = match client {
        Some(name) => {
            let chain = CertificateDer::pem_file_iter(dir.join(format!("{name}.pem")))
                .unwrap()
                .collect::<Result<Vec<_>, _>>()
                .unwrap();
            let key = PrivateKeyDer::from_pem_file(dir.join(format!("{name}-key.pem"))).unwrap();
            builder.with_client_auth_cert(chain, key).unwrap()
        }
        None => builder.with_no_client_auth(),
    };
    let tcp = Connection::tcp(addr).await?;
    let name = ServerName::try_from("127.0.0.1").unwrap();
    let stream = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await?;
    Connection::over(Box::new(stream), "security-test").await
}

async fn scram_login(
    conn: &mut Connection,
    mech: Mechanism,
    user: &str,
    pw: &str,
) -> veil_client::Result<()> {
    conn.sasl_handshake(mech.name()).await?;
    let mut c = ScramClient::new(mech, user, pw, "clientnonce123");
    let server_first = conn.sasl_authenticate(c.client_first()).await?;
    let last = c.client_final(&server_first).unwrap();
    let server_final = conn.sasl_authenticate(last).await?;
    c.verify_server_final(&server_final).unwrap();
    Ok(())
}

async fn plain_login(conn: &mut Connection, user: &str, pw: &str) -> veil_client::Result<()> {
    conn.sasl_handshake("PLAIN").await?;
    conn.sasl_authenticate(format!("\0{user}\0{pw}").into_bytes())
        .await?;
    Ok(())
}

async fn round_trip(conn: Connection, topic: &str) {
    let mut admin = Admin::from_connection(conn);
    let spec = TopicSpec {
        name: topic.into(),
        partitions: 1,
        replication_factor: -1,
        configs: std::collections::BTreeMap::new(),
    };
    admin.create_topic(&spec, false).await.unwrap();
    let conn = admin.connection();
    let r = produce(conn, topic, 0, -1, batch(&["secret-payload"], 1)).await;
    assert_eq!(r.responses[0].partition_responses[0].error_code, 0);
    let f = fetch(conn, topic, 0, 0, 100).await;
    let records = f.responses[0].partitions[0].records.clone().unwrap();
    assert!(records.windows(14).any(|w| w == b"secret-payload"));
}

fn config(dir: &Path, plain_users: &Path) -> String {
    let d = dir.display();
    format!(
        r#"
[[listeners]]
name = "MTLS"
protocol = "SSL"
bind = "127.0.0.1:0"
[listeners.tls]
cert_file = "{d}/broker.pem"
key_file = "{d}/broker-key.pem"
ca_file = "{d}/ca.pem"
client_auth = "required"
principal_mapping_rules = ["RULE:^CN=(.*?),O=.*$/$1/L", "DEFAULT"]

[[listeners]]
name = "SASL_SSL"
protocol = "SASL_SSL"
bind = "127.0.0.1:0"
[listeners.tls]
cert_file = "{d}/broker.pem"
key_file = "{d}/broker-key.pem"

[sasl]
plain_users_file = "{}"
max_failure_delay_ms = 200
"#,
        plain_users.display()
    )
}

fn start(dir: &Path) -> TestBroker {
    pki(dir);
    let users = dir.join("plain-users.toml");
    std::fs::write(
        &users,
        veil_broker::auth::plain::hash_entry("admin", "admin-pw", 4096),
    )
    .unwrap();
    TestBroker::start_with_config(BIN, &config(dir, &users), &[])
}

#[test]
fn mtls_accepts_a_valid_certificate_and_refuses_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start(dir.path());
    let addr = broker.listener_addr("MTLS").unwrap().to_string();
    rt().block_on(async {
        let conn = tls_connect(&addr, dir.path(), Some("alice")).await.unwrap();
        round_trip(conn, "over-mtls").await;
        for refused in [None, Some("old"), Some("mallory")] {
            let r = tls_connect(&addr, dir.path(), refused).await;
            assert!(r.is_err(), "{refused:?} must be refused");
        }
        // A plaintext Kafka client on the TLS port gets nowhere.
        let plain = Connection::tcp(&addr).await.unwrap();
        let r = Connection::over(Box::new(plain), "plaintext").await;
        assert!(r.is_err());
    });
    let (_, metrics) = broker.http_get("/metrics");
    assert!(
        metrics.contains("veil_tls_handshake_failures_total"),
        "{metrics}"
    );
}

#[test]
fn sasl_ssl_scram_and_plain_logins() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start(dir.path());
    let addr = broker.listener_addr("SASL_SSL").unwrap().to_string();
    rt().block_on(async {
        // Before authentication only ApiVersions and SASL are served: a
        // Metadata request closes the connection.
        let conn = tls_connect(&addr, dir.path(), None).await.unwrap();
        let mut admin = Admin::from_connection(conn);
        assert!(admin.list_topics().await.is_err());

        // The PLAIN admin from the users file creates a SCRAM user.
        let mut conn = tls_connect(&addr, dir.path(), None).await.unwrap();
        plain_login(&mut conn, "admin", "admin-pw").await.unwrap();
        let mut admin = Admin::from_connection(conn);
        let salt = b"0123456789abcdef".to_vec();
        let upserts = Mechanism::ALL
            .into_iter()
            .map(|m| ScramUpsert {
                user: "alice".into(),
                mechanism: m.code(),
                iterations: 4096,
                salted_password: m.salted_password(b"alice-pw", &salt, 4096),
                salt: salt.clone(),
            })
            .collect();
        admin
            .alter_scram_credentials(upserts, Vec::new())
            .await
            .unwrap();
        let users = admin.describe_scram_credentials(None).await.unwrap();
        assert_eq!(users.len(), 1);
        assert_eq!(users[0].credentials, vec![(1, 4096), (2, 4096)]);
        let stored = Credential::from_password(Mechanism::Sha512, "alice-pw", &salt, 4096);
        assert!(!format!("{stored:?}").contains("alice-pw"));

        // SCRAM-SHA-512 with the right password: produce and fetch.
        let mut conn = tls_connect(&addr, dir.path(), None).await.unwrap();
        scram_login(&mut conn, Mechanism::Sha512, "alice", "alice-pw")
            .await
            .unwrap();
        round_trip(conn, "over-scram").await;
        // PLAIN also accepts SCRAM users' passwords.
        let mut conn = tls_connect(&addr, dir.path(), None).await.unwrap();
        plain_login(&mut conn, "alice", "alice-pw").await.unwrap();

        // Wrong password and unknown user: the same failure, then close.
        for (user, pw) in [("alice", "wrong"), ("nobody", "alice-pw")] {
            for mech in [Some(Mechanism::Sha512), Some(Mechanism::Sha256), None] {
                let mut conn = tls_connect(&addr, dir.path(), None).await.unwrap();
                let err = match mech {
                    Some(m) => scram_login(&mut conn, m, user, pw).await.unwrap_err(),
                    None => plain_login(&mut conn, user, pw).await.unwrap_err(),
                };
                assert_eq!(err.code(), Some(SASL_FAILED), "{user} {mech:?}: {err}");
                assert!(err.to_string().contains("invalid credentials"), "{err}");
                let mut admin = Admin::from_connection(conn);
                assert!(admin.list_topics().await.is_err(), "closed after failure");
            }
        }

        // Credential management needs an authenticated caller.
        let mut conn = tls_connect(&addr, dir.path(), None).await.unwrap();
        scram_login(&mut conn, Mechanism::Sha256, "alice", "alice-pw")
            .await
            .unwrap();
        let mut admin = Admin::from_connection(conn);
        admin
            .alter_scram_credentials(Vec::new(), vec![("alice".into(), 1)])
            .await
            .unwrap();
        let err = admin
            .alter_scram_credentials(Vec::new(), vec![("alice".into(), 1)])
            .await
            .unwrap_err();
        assert_eq!(err.code(), Some(91), "RESOURCE_NOT_FOUND: {err}");
    });
    let (_, metrics) = broker.http_get("/metrics");
    assert!(
        metrics.contains(
            "veil_sasl_authentications_total{mechanism=\"SCRAM-SHA-512\",result=\"failure\"}"
        ),
        "{metrics}"
    );
    assert!(!broker.log().contains("alice-pw"));
}

#[test]
fn sessions_expire_unless_the_client_reauthenticates() {
    let dir = tempfile::tempdir().unwrap();
    pki(dir.path());
    let users = dir.path().join("plain-users.toml");
    std::fs::write(
        &users,
        veil_broker::auth::plain::hash_entry("admin", "admin-pw", 4096),
    )
    .unwrap();
    // KIP-368: a session lives 1.5 s unless the client logs in again.
    let toml = format!("{}max_reauth_ms = 1500\n", config(dir.path(), &users));
    let broker = TestBroker::start_with_config(BIN, &toml, &[]);
    let addr = broker.listener_addr("SASL_SSL").unwrap().to_string();
    let metadata = || MetadataRequest::default().with_topics(None);
    rt().block_on(async {
        // Without re-authentication the next request after expiry closes the connection.
        let mut conn = tls_connect(&addr, dir.path(), None).await.unwrap();
        plain_login(&mut conn, "admin", "admin-pw").await.unwrap();
        conn.send(&metadata()).await.unwrap();
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(
            conn.send(&metadata()).await.is_err(),
            "expired session must be closed"
        );

        // Logging in again on the same connection extends the session.
        let mut conn = tls_connect(&addr, dir.path(), None).await.unwrap();
        plain_login(&mut conn, "admin", "admin-pw").await.unwrap();
        tokio::time::sleep(Duration::from_secs(1)).await;
        plain_login(&mut conn, "admin", "admin-pw").await.unwrap();
        tokio::time::sleep(Duration::from_secs(1)).await;
        conn.send(&metadata())
            .await
            .expect("re-authenticated session is still open 2 s after the first login");
    });
}
