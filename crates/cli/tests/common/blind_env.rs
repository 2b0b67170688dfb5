//! Setup shared by the blind-topic and sealed-record tests: a broker with
//! SASL and ANON listeners, SCRAM users alice, bob, carol and dave, and the
//! real `veil` binary run as one of them.
#![allow(dead_code)]

use std::io::Write;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;

use veil_broker::auth::scram::{Mechanism, ScramClient};
use veil_client::{Acl, Admin, Connection, ScramUpsert};
use veil_testkit::TestBroker;

use crate::common::BIN;

pub const TOPIC: &str = "plant-7/line-3/temperature";
pub const PASSPHRASE: &str = "kms passphrase for the test";

pub fn config(users: &Path) -> String {
    format!(
        r#"
[[listeners]]
name = "SASL"
protocol = "SASL_PLAINTEXT"
bind = "127.0.0.1:0"

[[listeners]]
name = "ANON"
protocol = "PLAINTEXT"
bind = "127.0.0.1:0"

[sasl]
plain_users_file = "{}"
max_failure_delay_ms = 100

[authorizer]
enabled = true
super_users = ["User:admin"]
"#,
        users.display()
    )
}

pub async fn scram(addr: &str, user: &str) -> Connection {
    let mut conn = Connection::connect(addr, "blind-test").await.unwrap();
    conn.sasl_handshake("SCRAM-SHA-512").await.unwrap();
    let mut c = ScramClient::new(Mechanism::Sha512, user, &format!("{user}-pw"), "nonce-1");
    let first = conn.sasl_authenticate(c.client_first()).await.unwrap();
    let last = c.client_final(&first).unwrap();
    let fin = conn.sasl_authenticate(last).await.unwrap();
    c.verify_server_final(&fin).unwrap();
    conn
}

/// SCRAM users alice, bob, carol, dave; every ACL open (topics and groups), so
/// only the blind-topic grants stand between carol and the topic.
pub async fn setup_users(addr: &str) {
    let mut admin = add_users(addr).await;
    // TOPIC = 2, GROUP = 3; LITERAL = 3; ALL = 2; ALLOW = 3.
    let acls: Vec<Acl> = [2i8, 3]
        .into_iter()
        .map(|resource_type| Acl {
            resource_type,
            resource_name: "*".into(),
            pattern_type: 3,
            principal: "User:*".into(),
            host: "*".into(),
            operation: 2,
            permission: 3,
        })
        .collect();
    admin.create_acls(&acls).await.unwrap();
}

/// SCRAM users alice, bob, carol, dave and nothing else; returns the
/// admin's connection.
pub async fn add_users(addr: &str) -> Admin {
    let mut conn = Connection::connect(addr, "blind-test").await.unwrap();
    conn.sasl_handshake("PLAIN").await.unwrap();
    conn.sasl_authenticate(b"\0admin\0admin-pw".to_vec())
        .await
        .unwrap();
    let mut admin = Admin::from_connection(conn);
    let salt = b"0123456789abcdef".to_vec();
    let upserts = ["alice", "bob", "carol", "dave"]
        .into_iter()
        .map(|u| ScramUpsert {
            user: u.into(),
            mechanism: Mechanism::Sha512.code(),
            iterations: 4096,
            salted_password: Mechanism::Sha512.salted_password(
                format!("{u}-pw").as_bytes(),
                &salt,
                4096,
            ),
            salt: salt.clone(),
        })
        .collect();
    admin
        .alter_scram_credentials(upserts, Vec::new())
        .await
        .unwrap();
    admin
}

pub struct Env {
    pub broker: TestBroker,
    pub kms: PathBuf,
    pub sasl: String,
}

impl Env {
    pub fn veil(&self, user: &str, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.args(args)
            .args(["--bootstrap", &self.sasl])
            .args(["--security-protocol", "SASL_PLAINTEXT", "--user", user])
            .env("VEIL_PASSWORD", format!("{user}-pw"))
            .env("VEIL_KMS_PASSPHRASE", PASSPHRASE)
            .env("VEIL_KMS_DIR", &self.kms)
            .env("VEIL_LOG", "warn");
        if user == "admin" {
            c.args(["--sasl-mechanism", "PLAIN"]);
        }
        c
    }

    pub fn key(&self, user: &str) -> String {
        self.kms.join(format!("{user}.key")).display().to_string()
    }

    pub fn consume(&self, user: &str, group: &str, extra: &[&str]) -> Command {
        let key = self.key(user);
        let mut args = vec!["consume", "--blind", TOPIC, "--key-file", &key];
        args.extend_from_slice(&["--group", group, "--from-beginning"]);
        args.extend_from_slice(extra);
        self.veil(user, &args)
    }

    pub fn produce(&self, user: &str, lines: &str) -> Output {
        let key = self.key(user);
        self.run_with_stdin(
            user,
            &["produce", "--blind", TOPIC, "--key-file", &key],
            lines,
        )
    }

    /// Runs `veil ARGS` as `user`, feeding `input` on stdin.
    pub fn run_with_stdin(&self, user: &str, args: &[&str], input: &str) -> Output {
        let mut child = self
            .veil(user, args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    }
}

pub fn ok(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
}

pub fn all_files(dir: &Path, out: &mut Vec<(PathBuf, Vec<u8>)>) {
    for entry in std::fs::read_dir(dir).unwrap().map(Result::unwrap) {
        let p = entry.path();
        if p.is_dir() {
            all_files(&p, out);
        } else {
            out.push((p.clone(), std::fs::read(&p).unwrap_or_default()));
        }
    }
}

/// Spawns a consumer whose stdout lines arrive on the returned channel.
pub fn spawn_lines(mut cmd: Command) -> (Child, mpsc::Receiver<String>) {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (child, rx)
}
