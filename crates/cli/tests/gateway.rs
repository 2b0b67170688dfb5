//! `veil gateway` end to end: a real broker with blind topics, two gateways
//! run by two users of one tenant, MQTT devices on each. What devices
//! publish through one gateway reaches subscribers of both, a QoS 1 PUBACK
//! waits for the broker's acknowledgement, and the broker's disk and log
//! never show an MQTT topic, a clear topic name or a payload.

#[path = "common/blind_env.rs"]
mod blind_env;
mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::sync::mpsc;
use veil_testkit::TestBroker;

use blind_env::{all_files, config, ok, setup_users, PASSPHRASE};
use common::BIN;

const DEVICE_USER: &str = "device-1";
const DEVICE_PW: &str = "device-1-password";
/// How long any one wait in this test may take.
const WAIT: Duration = Duration::from_secs(60);

/// A gateway process, stopped when dropped.
struct Gateway {
    child: Child,
    port: u16,
    /// The MQTTS listener's port (0: none).
    tls_port: u16,
    log: std::path::PathBuf,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Gateway {
    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// The gateway's config; with `certs`, also an MQTTS listener on which a
/// device certificate is the login.
fn gateway_config(dir: &Path, name: &str, certs: Option<&Path>) -> std::path::PathBuf {
    let mqtts = certs.map_or_else(String::new, |d| {
        let d = d.display();
        format!(
            r#"
[[mqtt.listeners]]
name = "MQTTS"
bind = "127.0.0.1:0"
[mqtt.listeners.tls]
cert_file = "{d}/broker.pem"
key_file = "{d}/broker-key.pem"
ca_file = "{d}/ca.pem"
client_auth = "required"
principal_mapping_rules = ["RULE:^CN=(.*?),O=.*$/$1/L", "DEFAULT"]
"#
        )
    });
    let users = dir.join(format!("{name}-devices.toml"));
    std::fs::write(
        &users,
        veil_broker::auth::plain::hash_entry(DEVICE_USER, DEVICE_PW, 4096),
    )
    .unwrap();
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(
        &path,
        format!(
            r#"
users_file = "{}"
data_dir = "{}"

[mqtt]
[[mqtt.listeners]]
name = "MQTT"
bind = "127.0.0.1:0"
{mqtts}
[[mqtt.mappings]]
filter = "plant-gw/+/line/#"
topic = "gw-clear-telemetry"

[[mqtt.mappings]]
filter = "alarms-gw/+/#"
topic = "gw-clear-alarms"
key = "site-{{1}}"
"#,
            users.display(),
            dir.join(format!("{name}-data")).display()
        ),
    )
    .unwrap();
    path
}

fn start_gateway(
    dir: &Path,
    name: &str,
    user: &str,
    bootstrap: &str,
    key: &Path,
    certs: Option<&Path>,
) -> Gateway {
    let log = dir.join(format!("{name}.log"));
    let mut child = Command::new(BIN)
        .arg("gateway")
        .arg("--config")
        .arg(gateway_config(dir, name, certs))
        .arg("--key-file")
        .arg(key)
        .args([
            "--bootstrap",
            bootstrap,
            "--security-protocol",
            "SASL_PLAINTEXT",
        ])
        .args(["--user", user, "--print-addresses"])
        .env("VEIL_PASSWORD", format!("{user}-pw"))
        .env("VEIL_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::from(std::fs::File::create(&log).unwrap()))
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut g = Gateway {
        child,
        port: 0,
        tls_port: 0,
        log,
    };
    let port = |listener: &str| {
        let line = rx
            .recv_timeout(WAIT)
            .unwrap_or_else(|_| panic!("gateway {name} did not start; log:\n{}", g.log()));
        let addr = line
            .strip_prefix(&format!("LISTENING mqtt:{listener} "))
            .unwrap_or_else(|| panic!("unexpected line '{line}'"));
        addr.parse::<std::net::SocketAddr>().unwrap().port()
    };
    let plain = port("MQTT");
    let tls = if certs.is_some() { port("MQTTS") } else { 0 };
    g.port = plain;
    g.tls_port = tls;
    g
}

/// Everything both directions of a TCP relay carried.
type Recording = std::sync::Arc<std::sync::Mutex<Vec<u8>>>;

/// A TCP relay on loopback to `target` that records every byte it carries
/// (the gateway↔broker traffic, scanned at the end). Returns its address.
fn recording_relay(target: String) -> (String, Recording) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let recording: Recording = Recording::default();
    let rec = recording.clone();
    std::thread::spawn(move || {
        for client in listener.incoming().map_while(Result::ok) {
            let Ok(server) = std::net::TcpStream::connect(&target) else {
                continue;
            };
            for (mut from, mut to) in [
                (client.try_clone().unwrap(), server.try_clone().unwrap()),
                (server, client),
            ] {
                let rec = rec.clone();
                std::thread::spawn(move || {
                    use std::io::{Read, Write};
                    let mut buf = [0u8; 16 * 1024];
                    while let Ok(n) = from.read(&mut buf) {
                        if n == 0 || to.write_all(&buf[..n]).is_err() {
                            break;
                        }
                        rec.lock().unwrap().extend_from_slice(&buf[..n]);
                    }
                    let _ = to.shutdown(std::net::Shutdown::Both);
                });
            }
        }
    });
    (addr, recording)
}

/// `mosquitto_sub` on the gateway for one message of `topic` while
/// `mosquitto_pub` publishes it at QoS 1; the line the subscriber printed.
/// `None` when the mosquitto clients cannot be started.
fn mosquitto_round_trip(port: u16, topic: &str, payload: &str) -> Option<String> {
    let port = port.to_string();
    let login = ["-u", DEVICE_USER, "-P", DEVICE_PW];
    let sub = Command::new("mosquitto_sub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-q",
            "1",
            "-C",
            "1",
            "-W",
            "60",
            "-v",
        ])
        .args(["-i", "mosq-sub", "-t", topic])
        .args(login)
        .stdout(Stdio::piped())
        .spawn();
    let Ok(sub) = sub else {
        return None;
    };
    // The subscription must exist before the publish: retry the publish
    // until the subscriber has printed its line (bounded).
    let out = std::sync::Arc::new(std::sync::Mutex::new(None));
    let done = out.clone();
    let waiter = std::thread::spawn(move || {
        let o = sub.wait_with_output().unwrap();
        *done.lock().unwrap() = Some(String::from_utf8_lossy(&o.stdout).trim().to_owned());
    });
    for _ in 0..20 {
        std::thread::sleep(Duration::from_millis(500));
        if out.lock().unwrap().is_some() {
            break;
        }
        let status = Command::new("mosquitto_pub")
            .args(["-h", "127.0.0.1", "-p", &port, "-q", "1", "-i", "mosq-pub"])
            .args(["-t", topic, "-m", payload])
            .args(login)
            .status()
            .unwrap();
        assert!(status.success(), "mosquitto_pub through the gateway failed");
    }
    waiter.join().unwrap();
    let line = out.lock().unwrap().take();
    line
}

/// An MQTT 3.1.1 device logging in with its certificate alone (no user
/// name) over TLS, publishing one message at QoS 1: whether the CONNACK
/// accepted it and the PUBACK came.
async fn tls_device(port: u16, certs: &Path, topic: &str, payload: &str) {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(certs.join("ca.pem")).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let chain = CertificateDer::pem_file_iter(certs.join("sensor-1.pem"))
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(certs.join("sensor-1-key.pem")).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_client_auth_cert(chain, key)
    .unwrap();
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
        .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
        .await
        .unwrap();
    // CONNECT, MQTT 3.1.1, clean session, keep-alive 30 s, no user name.
    let id = b"tls-device";
    let mut connect = vec![0x10, u8::try_from(12 + id.len()).unwrap()];
    connect.extend_from_slice(&[0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 30, 0]);
    connect.push(u8::try_from(id.len()).unwrap());
    connect.extend_from_slice(id);
    tls.write_all(&connect).await.unwrap();
    let mut connack = [0u8; 4];
    tokio::time::timeout(WAIT, tls.read_exact(&mut connack))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        connack,
        [0x20, 2, 0, 0],
        "CONNACK with a device certificate"
    );
    // PUBLISH at QoS 1, packet id 1.
    let mut body = Vec::new();
    body.extend_from_slice(&u16::try_from(topic.len()).unwrap().to_be_bytes());
    body.extend_from_slice(topic.as_bytes());
    body.extend_from_slice(&[0, 1]);
    body.extend_from_slice(payload.as_bytes());
    let mut publish = vec![0x32, u8::try_from(body.len()).unwrap()];
    publish.extend_from_slice(&body);
    tls.write_all(&publish).await.unwrap();
    let mut puback = [0u8; 4];
    tokio::time::timeout(WAIT, tls.read_exact(&mut puback))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(puback, [0x40, 2, 0, 1], "PUBACK over MQTTS");
}

/// An MQTT device logged in to a gateway; its incoming packets arrive on the receiver.
fn device(port: u16, id: &str) -> (AsyncClient, mpsc::UnboundedReceiver<Packet>) {
    let mut opts = MqttOptions::new(id, "127.0.0.1", port);
    opts.set_keep_alive(Duration::from_secs(30));
    opts.set_credentials(DEVICE_USER, DEVICE_PW);
    let (client, mut events) = AsyncClient::new(opts, 64);
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            match events.poll().await {
                Ok(Event::Incoming(p)) => {
                    if tx.send(p).is_err() {
                        return;
                    }
                }
                Ok(Event::Outgoing(_)) => {}
                Err(_) => return,
            }
        }
    });
    (client, rx)
}

/// A device with a persistent session (MQTT 3.1.1, clean session off).
fn persistent_device(port: u16) -> (AsyncClient, mpsc::UnboundedReceiver<Packet>) {
    let mut opts = MqttOptions::new("keeper-1", "127.0.0.1", port);
    opts.set_keep_alive(Duration::from_secs(30));
    opts.set_clean_session(false);
    opts.set_credentials(DEVICE_USER, DEVICE_PW);
    let (client, mut events) = AsyncClient::new(opts, 64);
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok(e) = events.poll().await {
            if let Event::Incoming(p) = e {
                if tx.send(p).is_err() {
                    return;
                }
            }
        }
    });
    (client, rx)
}

/// Waits (bounded) until the gateway wrote the session of a device that
/// left (its `disconnected_ms` set).
fn wait_for_saved_session(data_dir: &Path) {
    let dir = data_dir.join("mqtt").join("sessions");
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let saved = std::fs::read_dir(&dir)
            .into_iter()
            .flatten()
            .flatten()
            .any(|e| {
                std::fs::read_to_string(e.path()).is_ok_and(|s| {
                    s.contains("disconnected_ms") && !s.contains("\"disconnected_ms\":0")
                })
            });
        if saved {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the session was not saved"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits (bounded) for the first packet `want` accepts.
async fn until<T>(
    rx: &mut mpsc::UnboundedReceiver<Packet>,
    what: &str,
    mut want: impl FnMut(&Packet) -> Option<T>,
) -> T {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let p = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
            .unwrap_or_else(|| panic!("connection closed while waiting for {what}"));
        if let Some(t) = want(&p) {
            return t;
        }
    }
}

async fn subscribe(client: &AsyncClient, rx: &mut mpsc::UnboundedReceiver<Packet>, filter: &str) {
    client.subscribe(filter, QoS::AtLeastOnce).await.unwrap();
    let codes = until(rx, "SUBACK", |p| match p {
        Packet::SubAck(s) => Some(s.return_codes.clone()),
        _ => None,
    })
    .await;
    assert_eq!(
        codes,
        vec![rumqttc::SubscribeReasonCode::Success(QoS::AtLeastOnce)],
        "subscription to {filter}"
    );
}

/// Collects `n` PUBLISHes: (topic, payload).
async fn receive(rx: &mut mpsc::UnboundedReceiver<Packet>, n: usize) -> Vec<(String, String)> {
    let mut got = Vec::new();
    while got.len() < n {
        let m = until(rx, "a message", |p| match p {
            Packet::Publish(m) => Some((
                m.topic.clone(),
                String::from_utf8_lossy(&m.payload).into_owned(),
            )),
            _ => None,
        })
        .await;
        got.push(m);
    }
    got.sort();
    got
}

/// An MQTT 5 device; its incoming packets arrive on the receiver.
fn device_v5(
    port: u16,
    id: &str,
) -> (
    rumqttc::v5::AsyncClient,
    mpsc::UnboundedReceiver<rumqttc::v5::mqttbytes::v5::Packet>,
) {
    let mut opts = rumqttc::v5::MqttOptions::new(id, "127.0.0.1", port);
    opts.set_keep_alive(Duration::from_secs(30));
    opts.set_credentials(DEVICE_USER, DEVICE_PW);
    let (client, mut events) = rumqttc::v5::AsyncClient::new(opts, 64);
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok(e) = events.poll().await {
            if let rumqttc::v5::Event::Incoming(p) = e {
                if tx.send(p).is_err() {
                    return;
                }
            }
        }
    });
    (client, rx)
}

async fn next_v5<T>(
    rx: &mut mpsc::UnboundedReceiver<rumqttc::v5::mqttbytes::v5::Packet>,
    what: &str,
    mut want: impl FnMut(&rumqttc::v5::mqttbytes::v5::Packet) -> Option<T>,
) -> T {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let p = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
            .unwrap_or_else(|| panic!("connection closed while waiting for {what}"));
        if let Some(t) = want(&p) {
            return t;
        }
    }
}

async fn v5_round_trip(pub_port: u16, sub_port: u16) {
    use rumqttc::v5::mqttbytes::v5::{Packet as P5, PubAckReason, PublishProperties};
    use rumqttc::v5::mqttbytes::QoS as Q5;
    let (sub, mut rx_s) = device_v5(sub_port, "sub-v5");
    sub.subscribe("alarms-gw/+/smoke", Q5::AtLeastOnce)
        .await
        .unwrap();
    next_v5(&mut rx_s, "SUBACK", |p| {
        matches!(p, P5::SubAck(_)).then_some(())
    })
    .await;
    let (publisher, mut rx_p) = device_v5(pub_port, "pub-v5");
    let props = PublishProperties {
        user_properties: vec![("gw-secret-prop".into(), "celsius-secret-unit".into())],
        content_type: Some("text/gw-secret-type".into()),
        ..PublishProperties::default()
    };
    publisher
        .publish_with_properties(
            "alarms-gw/hamburg/smoke",
            Q5::AtLeastOnce,
            false,
            b"gw-secret-smoke".to_vec(),
            props,
        )
        .await
        .unwrap();
    let reason = next_v5(&mut rx_p, "PUBACK", |p| match p {
        P5::PubAck(a) => Some(a.reason),
        _ => None,
    })
    .await;
    assert_eq!(reason, PubAckReason::Success);
    let (topic, payload, props) = next_v5(&mut rx_s, "a message", |p| match p {
        P5::Publish(m) => Some((m.topic.clone(), m.payload.clone(), m.properties.clone())),
        _ => None,
    })
    .await;
    assert_eq!(&topic[..], b"alarms-gw/hamburg/smoke");
    assert_eq!(&payload[..], b"gw-secret-smoke");
    let props = props.expect("properties");
    assert_eq!(
        props.user_properties,
        vec![(
            "gw-secret-prop".to_owned(),
            "celsius-secret-unit".to_owned()
        )]
    );
    assert_eq!(props.content_type.as_deref(), Some("text/gw-secret-type"));
    publisher
        .publish("unmapped-v5/topic", Q5::AtLeastOnce, false, b"x".to_vec())
        .await
        .unwrap();
    let reason = next_v5(&mut rx_p, "PUBACK", |p| match p {
        P5::PubAck(a) => Some(a.reason),
        _ => None,
    })
    .await;
    assert_eq!(reason, PubAckReason::TopicNameInvalid);
}

#[test]
#[allow(clippy::too_many_lines)]
fn gateway_seals_mqtt_into_blind_topics() {
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("plain-users.toml");
    std::fs::write(
        &users,
        veil_broker::auth::plain::hash_entry("admin", "admin-pw", 4096),
    )
    .unwrap();
    // Debug logs: the scan below also covers what the broker logs in detail.
    let broker =
        TestBroker::start_with_config_env(BIN, &config(&users), &[], &[("VEIL_LOG", "debug")]);
    let sasl = broker.listener_addr("SASL").unwrap().to_string();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(setup_users(&sasl));
    let kms = dir.path().join("kms");
    let out = Command::new(BIN)
        .args(["kms", "init", "--kid", "plant-e1", "--tenant", "plant"])
        .args(["--bits", "2048", "--insecure-fast-kdf"])
        .env("VEIL_KMS_DIR", &kms)
        .env("VEIL_KMS_PASSPHRASE", PASSPHRASE)
        .output()
        .unwrap();
    ok(&out, "kms init");
    for u in ["alice", "bob"] {
        let out = Command::new(BIN)
            .args(["kms", "add-user", u, "--bootstrap", &sasl])
            .args(["--security-protocol", "SASL_PLAINTEXT", "--user", "admin"])
            .args(["--sasl-mechanism", "PLAIN"])
            .env("VEIL_PASSWORD", "admin-pw")
            .env("VEIL_KMS_DIR", &kms)
            .env("VEIL_KMS_PASSPHRASE", PASSPHRASE)
            .env("VEIL_LOG", "warn")
            .output()
            .unwrap();
        ok(&out, u);
    }
    let certs = dir.path().join("certs");
    let out = Command::new(BIN)
        .args(["certs", "init", "--dir"])
        .arg(&certs)
        .args(["--clients", "sensor-1"])
        .output()
        .unwrap();
    ok(&out, "certs init");
    // Another user's key file is refused before anything starts.
    let wrong = Command::new(BIN)
        .arg("gateway")
        .arg("--config")
        .arg(gateway_config(dir.path(), "gw-wrong", None))
        .arg("--key-file")
        .arg(kms.join("bob.key"))
        .args([
            "--bootstrap",
            &sasl,
            "--security-protocol",
            "SASL_PLAINTEXT",
        ])
        .args(["--user", "alice"])
        .env("VEIL_PASSWORD", "alice-pw")
        .env("VEIL_LOG", "warn")
        .output()
        .unwrap();
    assert!(!wrong.status.success());
    let err = String::from_utf8_lossy(&wrong.stderr);
    assert!(err.contains("issued for User:bob"), "{err}");

    // Gateway A reaches the broker through a recording relay.
    let (relayed, recording) = recording_relay(sasl.clone());
    let a = start_gateway(
        dir.path(),
        "gw-a",
        "alice",
        &relayed,
        &kms.join("alice.key"),
        Some(&certs),
    );
    let mut b = start_gateway(dir.path(), "gw-b", "bob", &sasl, &kms.join("bob.key"), None);

    let mut want: Vec<(String, String)> = (0..6)
        .map(|i| {
            (
                format!("plant-gw/7/line/{}/temperature", i % 2),
                format!("gw-secret-reading-{i}"),
            )
        })
        .collect();
    want.push(("alarms-gw/berlin/fire".into(), "gw-secret-alarm".into()));
    want.sort();

    rt.block_on(async {
        // Subscribers on both gateways first: they receive what follows.
        let (sub_a, mut rx_a) = device(a.port, "sub-a");
        subscribe(&sub_a, &mut rx_a, "plant-gw/#").await;
        subscribe(&sub_a, &mut rx_a, "alarms-gw/+/fire").await;
        let (sub_b, mut rx_b) = device(b.port, "sub-b");
        subscribe(&sub_b, &mut rx_b, "plant-gw/+/line/#").await;
        subscribe(&sub_b, &mut rx_b, "alarms-gw/#").await;

        // QoS 0 and QoS 1 through gateway A; every QoS 1 publish is
        // acknowledged (after the broker's acks=all).
        let (publisher, mut rx_p) = device(a.port, "pub-a");
        let mut qos1 = 0;
        for (i, (topic, payload)) in want.iter().enumerate() {
            let qos = if i % 2 == 0 {
                QoS::AtMostOnce
            } else {
                QoS::AtLeastOnce
            };
            if qos == QoS::AtLeastOnce {
                qos1 += 1;
            }
            publisher
                .publish(topic.clone(), qos, false, payload.clone().into_bytes())
                .await
                .unwrap();
        }
        for _ in 0..qos1 {
            until(&mut rx_p, "PUBACK", |p| {
                matches!(p, Packet::PubAck(_)).then_some(())
            })
            .await;
        }
        assert_eq!(receive(&mut rx_a, want.len()).await, want);
        assert_eq!(receive(&mut rx_b, want.len()).await, want);

        // The PUBACK waits for the broker: none while it is stopped, one
        // once it runs again.
        broker.pause();
        let late = (
            "plant-gw/7/line/9/pressure".to_owned(),
            "gw-secret-late".to_owned(),
        );
        publisher
            .publish(
                late.0.clone(),
                QoS::AtLeastOnce,
                false,
                late.1.clone().into_bytes(),
            )
            .await
            .unwrap();
        let early = tokio::time::timeout(
            Duration::from_secs(3),
            until(&mut rx_p, "PUBACK", |p| {
                matches!(p, Packet::PubAck(_)).then_some(())
            }),
        )
        .await;
        broker.resume();
        assert!(early.is_err(), "PUBACK while the broker was stopped");
        until(&mut rx_p, "PUBACK", |p| {
            matches!(p, Packet::PubAck(_)).then_some(())
        })
        .await;
        assert_eq!(receive(&mut rx_a, 1).await, vec![late.clone()]);
        assert_eq!(receive(&mut rx_b, 1).await, vec![late]);

        // MQTTS: a device certificate is the login.
        let tls_msg = (
            "plant-gw/9/line/1/humidity".to_owned(),
            "gw-secret-tls".to_owned(),
        );
        tls_device(a.tls_port, &certs, &tls_msg.0, &tls_msg.1).await;
        assert_eq!(receive(&mut rx_b, 1).await, vec![tls_msg]);

        // MQTT 5: user properties and the content type travel sealed and
        // come back as properties; an unmapped topic gets PUBACK 0x90.
        v5_round_trip(a.port, b.port).await;

        // A persistent session on gateway B outlives its connection and a
        // restart of the gateway: what was published meanwhile arrives.
        let (keeper, mut rx_k) = persistent_device(b.port);
        let present = until(&mut rx_k, "CONNACK", |p| match p {
            Packet::ConnAck(c) => Some(c.session_present),
            _ => None,
        })
        .await;
        assert!(!present);
        subscribe(&keeper, &mut rx_k, "plant-gw/+/line/#").await;
        keeper.disconnect().await.unwrap();
        wait_for_saved_session(&dir.path().join("gw-b-data"));
        b.stop();
        let missed: Vec<(String, String)> = (0..3)
            .map(|i| {
                (
                    format!("plant-gw/5/line/{i}/flow"),
                    format!("gw-secret-missed-{i}"),
                )
            })
            .collect();
        for (topic, payload) in &missed {
            publisher
                .publish(
                    topic.clone(),
                    QoS::AtLeastOnce,
                    false,
                    payload.clone().into_bytes(),
                )
                .await
                .unwrap();
            until(&mut rx_p, "PUBACK", |p| {
                matches!(p, Packet::PubAck(_)).then_some(())
            })
            .await;
        }
        b = start_gateway(dir.path(), "gw-b", "bob", &sasl, &kms.join("bob.key"), None);
        let (_keeper, mut rx_k) = persistent_device(b.port);
        let present = until(&mut rx_k, "CONNACK", |p| match p {
            Packet::ConnAck(c) => Some(c.session_present),
            _ => None,
        })
        .await;
        assert!(present, "the session was not resumed");
        assert_eq!(receive(&mut rx_k, missed.len()).await, missed);

        // A topic no rule maps is refused (MQTT 3.1.1: the connection closes).
        publisher
            .publish("unmapped/topic", QoS::AtLeastOnce, false, b"x".to_vec())
            .await
            .unwrap();
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let next = tokio::time::timeout_at(deadline, rx_p.recv())
                .await
                .expect("the connection stayed open after an unmapped publish");
            match next {
                None => break,
                Some(Packet::PubAck(_)) => panic!("an unmapped publish was acknowledged"),
                Some(_) => {}
            }
        }

        // A wrong password is refused.
        let mut opts = MqttOptions::new("intruder", "127.0.0.1", a.port);
        opts.set_credentials(DEVICE_USER, "wrong");
        let (_c, mut events) = AsyncClient::new(opts, 8);
        let refused = tokio::time::timeout(WAIT, events.poll()).await.unwrap();
        assert!(refused.is_err(), "{refused:?}");
    });

    // Debian's mosquitto clients on gateway A: a QoS 1 round trip over the broker.
    let line = mosquitto_round_trip(a.port, "plant-gw/7/line/5/humidity", "gw-secret-mosquitto")
        .expect("mosquitto_pub and mosquitto_sub (mosquitto-clients, installed by scripts/test)");
    assert_eq!(line, "plant-gw/7/line/5/humidity gw-secret-mosquitto");

    // The broker saw none of it: no MQTT topic, clear topic name or
    // payload on its disk, in its log, or on the wire from gateway A.
    let mut files = Vec::new();
    all_files(broker.data_dir(), &mut files);
    files.push(("broker log".into(), broker.log().into_bytes()));
    let wire = recording.lock().unwrap().clone();
    assert!(
        wire.len() > 10_000,
        "the relay must have carried gateway A's traffic ({} bytes)",
        wire.len()
    );
    files.push(("gateway A <-> broker traffic".into(), wire));
    assert!(
        broker.log().contains("vb1-"),
        "the scan must see blind-topic activity"
    );
    let needles = [
        "plant-gw",
        "alarms-gw",
        "gw-clear-telemetry",
        "gw-clear-alarms",
        "berlin",
        "gw-secret-reading",
        "gw-secret-alarm",
        "gw-secret-late",
        "pressure",
        "hamburg",
        "gw-secret-smoke",
        "gw-secret-prop",
        "celsius-secret-unit",
        "gw-secret-type",
        "gw-secret-tls",
        "gw-secret-missed",
        "gw-secret-mosquitto",
        "keeper-1",
        "humidity",
        "temperature",
    ];
    for (path, bytes) in &files {
        for n in needles {
            assert!(
                !bytes.windows(n.len()).any(|w| w == n.as_bytes()),
                "{n} found in {}",
                path.display()
            );
        }
    }
    // Nor did the gateways log secrets or payloads.
    for g in [&a, &b] {
        let log = g.log();
        for secret in [DEVICE_PW, "alice-pw", "bob-pw", "gw-secret"] {
            assert!(!log.contains(secret), "{secret} in a gateway log:\n{log}");
        }
    }
    drop(rt);
}
