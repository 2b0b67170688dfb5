//! What an unauthenticated or failing client can make a SASL listener do:
//! frame sizes and the deadline before authentication, the failed-login
//! backoff, and password derivations kept off the async workers. Real
//! binary on loopback.

mod common;
#[path = "common/raw.rs"]
mod raw;

use std::io::Write;
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{batch, produce, rt, BIN};
use kafka_protocol::messages::{ApiVersionsRequest, MetadataRequest};
use veil_broker::auth::plain::hash_entry;
use veil_client::{Admin, Connection, TopicSpec};
use veil_testkit::TestBroker;

const MIB: u64 = 1024 * 1024;

fn start(
    dir: &Path,
    users: &[(&str, &str, u32)],
    extra: &[&str],
    env: &[(&str, &str)],
) -> TestBroker {
    let file = dir.join("plain-users.toml");
    let entries: String = users.iter().map(|(u, p, i)| hash_entry(u, p, *i)).collect();
    std::fs::write(&file, entries).unwrap();
    let toml = format!(
        r#"
[[listeners]]
name = "SASL"
protocol = "SASL_PLAINTEXT"
bind = "127.0.0.1:0"

[sasl]
plain_users_file = "{}"
"#,
        file.display()
    );
    TestBroker::start_with_config_env(BIN, &toml, extra, env)
}

async fn plain(broker: &TestBroker, user: &str, pw: &str) -> veil_client::Result<Connection> {
    let mut conn = Connection::connect(&broker.bootstrap(), "auth-test").await?;
    conn.sasl_handshake("PLAIN").await?;
    conn.sasl_authenticate(format!("\0{user}\0{pw}").into_bytes())
        .await?;
    Ok(conn)
}

/// An authenticated client can still do its work.
fn served(broker: &TestBroker) -> bool {
    rt().block_on(async {
        let Ok(mut conn) = plain(broker, "alice", "alice-pw").await else {
            return false;
        };
        conn.send(&MetadataRequest::default().with_topics(None))
            .await
            .is_ok()
    })
}

/// Issue item 4: before authentication, a frame larger than
/// `sasl.server_max_receive_size` (Kafka's 512 KiB) closes the connection
/// as soon as its size is read. Sixteen clients announcing 90 MB each are
/// all closed; the broker grows by at most 32 MiB and serves everyone else.
/// After authentication, the ordinary request limit applies again.
#[test]
fn unauthenticated_clients_cannot_announce_large_frames() {
    const BOUND: u64 = 32 * MIB;
    let dir = tempfile::tempdir().unwrap();
    let broker = start(dir.path(), &[("alice", "alice-pw", 4096)], &[], &[]);
    assert!(served(&broker));
    let before = broker.rss_bytes();
    let chunk = vec![0u8; 64 * 1024];
    let mut held = Vec::new();
    for _ in 0..16 {
        let mut s = TcpStream::connect(broker.kafka_addr()).unwrap();
        s.write_all(&(90_000_000i32).to_be_bytes()).unwrap();
        // A SaslHandshake header, then filler trickled after it.
        s.write_all(&[0, 17, 0, 1, 0, 0, 0, 1]).unwrap();
        let _ = s.write_all(&chunk);
        held.push(s);
    }
    for (i, s) in held.iter_mut().enumerate() {
        assert!(
            raw::closed_within(s, Duration::from_secs(10)),
            "connection {i} with a 90 MB frame before authentication stays open"
        );
    }
    let grown = broker.rss_bytes().saturating_sub(before);
    assert!(grown < BOUND, "broker grew by {} MiB", grown / MIB);
    assert!(served(&broker), "authenticated clients are still served");
    rt().block_on(async {
        let conn = plain(&broker, "alice", "alice-pw").await.unwrap();
        let mut admin = Admin::from_connection(conn);
        let spec = TopicSpec {
            name: "after-auth".into(),
            partitions: 1,
            replication_factor: -1,
            configs: std::collections::BTreeMap::new(),
        };
        admin.create_topic(&spec, false).await.unwrap();
        let value = "x".repeat(600 * 1024);
        let r = produce(admin.connection(), "after-auth", 0, 1, batch(&[&value], 1)).await;
        assert_eq!(r.responses[0].partition_responses[0].error_code, 0);
    });
}

/// Issue item 4: before authentication only ApiVersions, SaslHandshake and
/// SaslAuthenticate are decoded; anything else closes the connection on its
/// header alone. A Metadata request whose topic array claims four billion
/// entries used to be decoded (reserving memory for them) and only then
/// refused.
#[test]
fn requests_before_authentication_are_refused_undecoded() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start(
        dir.path(),
        &[("alice", "alice-pw", 4096)],
        &[],
        &[("VEIL_LOG", "veil_broker=debug")],
    );
    let mut s = TcpStream::connect(broker.kafka_addr()).unwrap();
    // Metadata v9 (flexible): header, then a compact array of u32::MAX - 1.
    let body = [
        &3i16.to_be_bytes()[..],
        &9i16.to_be_bytes(),
        &1i32.to_be_bytes(),
        &(-1i16).to_be_bytes(),
        &[0u8],
        &[0xff, 0xff, 0xff, 0xff, 0x0f],
    ]
    .concat();
    s.write_all(&(body.len() as i32).to_be_bytes()).unwrap();
    s.write_all(&body).unwrap();
    assert!(raw::closed_within(&mut s, Duration::from_secs(10)));
    assert!(served(&broker));
    let log = broker.log();
    assert!(
        log.contains("request before SASL authentication"),
        "refused for being unauthenticated; log:\n{log}"
    );
    assert!(
        !log.contains("cannot be served"),
        "the body was decoded first; log:\n{log}"
    );
}

/// Issue item 4: a connection that has not authenticated within
/// `sasl.authentication_timeout_ms` is closed, long before the idle timeout
/// (ten minutes, which used to be how long it could stay). Two hundred
/// such connections are all closed and their memory is given back (the
/// broker ends at most 8 MiB above where it started); an authenticated
/// connection opened at the same time stays and others are served.
#[test]
fn unauthenticated_connections_are_closed_at_the_authentication_deadline() {
    const BOUND: u64 = 8 * MIB;
    let dir = tempfile::tempdir().unwrap();
    let broker = start(
        dir.path(),
        &[("alice", "alice-pw", 4096)],
        &["--set", "sasl.authentication_timeout_ms=1000"],
        &[],
    );
    let rt = rt();
    assert!(served(&broker));
    let before = broker.rss_bytes();
    let mut idle: Vec<TcpStream> = (0..200)
        .map(|i| {
            let mut s = TcpStream::connect(broker.kafka_addr()).unwrap();
            assert!(
                raw::api_versions(&mut s, i),
                "ApiVersions is served before authentication"
            );
            s
        })
        .collect();
    let mut authed = rt.block_on(plain(&broker, "alice", "alice-pw")).unwrap();
    let started = Instant::now();
    for (i, s) in idle.iter_mut().enumerate() {
        assert!(
            raw::closed_within(s, Duration::from_secs(20)),
            "unauthenticated connection {i} still open after {:?}",
            started.elapsed()
        );
    }
    std::thread::sleep(Duration::from_millis(500));
    rt.block_on(async {
        authed
            .send(&MetadataRequest::default().with_topics(None))
            .await
            .expect("the authenticated connection stays open");
    });
    assert!(served(&broker));
    let grown = broker.rss_bytes().saturating_sub(before);
    assert!(grown < BOUND, "broker grew by {} KiB", grown / 1024);
}

/// Issue item 7: failures for one user keep backing off even when another
/// user logs in successfully from the same address in between. Failures
/// for bob are answered after 100, 200, 400, 800, 1600, 3200 ms; they used
/// to stay at about 100 ms because alice's success wiped the address's
/// count. (A lower bound on a deliberate delay, so noise cannot fail it.)
#[test]
fn a_success_for_one_user_does_not_reset_another_users_backoff() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start(
        dir.path(),
        &[("alice", "alice-pw", 4096), ("bob", "bob-pw", 4096)],
        &[],
        &[],
    );
    rt().block_on(async {
        let mut last = Duration::ZERO;
        for round in 0..6 {
            plain(&broker, "alice", "alice-pw").await.unwrap();
            let mut conn = Connection::connect(&broker.bootstrap(), "t").await.unwrap();
            conn.sasl_handshake("PLAIN").await.unwrap();
            let asked = Instant::now();
            let r = conn.sasl_authenticate(b"\0bob\0wrong".to_vec()).await;
            last = asked.elapsed();
            assert!(r.is_err(), "round {round}: a wrong password fails");
        }
        assert!(
            last >= Duration::from_millis(1500),
            "the sixth failure for bob was answered after {last:?}"
        );
    });
}

/// Issue item 7: PBKDF2 runs on the blocking pool. With one async worker
/// thread, a PLAIN login whose hash takes a million iterations must not
/// stop another connection from completing twenty ApiVersions round trips
/// first; it used to block the only worker for the whole derivation.
#[test]
fn password_derivations_leave_the_async_workers_free() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start(
        dir.path(),
        &[("alice", "alice-pw", 4096), ("slow", "slow-pw", 1 << 20)],
        &[],
        &[("TOKIO_WORKER_THREADS", "1")],
    );
    let bootstrap = broker.bootstrap();
    let runtime = rt();
    let mut other = runtime
        .block_on(Connection::connect(&bootstrap, "other"))
        .unwrap();
    let login = std::thread::spawn(move || {
        rt().block_on(async {
            let mut conn = Connection::connect(&bootstrap, "slow").await.unwrap();
            conn.sasl_handshake("PLAIN").await.unwrap();
            conn.set_timeout(Duration::from_secs(120));
            conn.sasl_authenticate(b"\0slow\0slow-pw".to_vec())
                .await
                .unwrap();
            Instant::now()
        })
    });
    // Let the login reach the broker's derivation.
    std::thread::sleep(Duration::from_millis(300));
    runtime.block_on(async {
        for _ in 0..20 {
            other.send(&ApiVersionsRequest::default()).await.unwrap();
        }
    });
    let others_done = Instant::now();
    let login_done = login.join().unwrap();
    assert!(
        others_done < login_done,
        "twenty ApiVersions waited for another connection's password derivation"
    );
}
