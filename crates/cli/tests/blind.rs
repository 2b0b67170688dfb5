//! Blind topics end to end with the real binary over SASL: the KMS issues
//! keys, alice produces, bob consumes in a group, carol (authenticated, no
//! key) and an anonymous client see nothing, revoking bob stops him within a
//! second without rewriting stored data, and no plaintext name or exponent
//! reaches the broker's disk, log or metrics.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{fetch, rt, BIN};
use openssl::bn::{BigNum, BigNumContext};
use sha2::{Digest, Sha256};
use veil_broker::auth::scram::{Mechanism, ScramClient};
use veil_client::{Acl, Admin, Connection, ScramUpsert};
use veil_testkit::TestBroker;

const TOPIC: &str = "plant-7/line-3/temperature";
const PASSPHRASE: &str = "kms passphrase for the test";
const RECORDS: usize = 10_000;
const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;

fn config(users: &Path) -> String {
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

async fn scram(addr: &str, user: &str) -> Connection {
    let mut conn = Connection::connect(addr, "blind-test").await.unwrap();
    conn.sasl_handshake("SCRAM-SHA-512").await.unwrap();
    let mut c = ScramClient::new(Mechanism::Sha512, user, &format!("{user}-pw"), "nonce-1");
    let first = conn.sasl_authenticate(c.client_first()).await.unwrap();
    let last = c.client_final(&first).unwrap();
    let fin = conn.sasl_authenticate(last).await.unwrap();
    c.verify_server_final(&fin).unwrap();
    conn
}

/// SCRAM users alice, bob, carol; every ACL open (topics and groups), so
/// only the blind-topic grants stand between carol and the topic.
async fn setup_users(addr: &str) {
    let mut conn = Connection::connect(addr, "blind-test").await.unwrap();
    conn.sasl_handshake("PLAIN").await.unwrap();
    conn.sasl_authenticate(b"\0admin\0admin-pw".to_vec())
        .await
        .unwrap();
    let mut admin = Admin::from_connection(conn);
    let salt = b"0123456789abcdef".to_vec();
    let upserts = ["alice", "bob", "carol"]
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

struct Env {
    broker: TestBroker,
    kms: PathBuf,
    sasl: String,
}

impl Env {
    fn veil(&self, user: &str, args: &[&str]) -> Command {
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

    fn key(&self, user: &str) -> String {
        self.kms.join(format!("{user}.key")).display().to_string()
    }

    fn consume(&self, user: &str, group: &str, extra: &[&str]) -> Command {
        let key = self.key(user);
        let mut args = vec!["consume", "--blind", TOPIC, "--key-file", &key];
        args.extend_from_slice(&["--group", group, "--from-beginning"]);
        args.extend_from_slice(extra);
        self.veil(user, &args)
    }

    fn produce(&self, user: &str, lines: &str) -> Output {
        let key = self.key(user);
        let mut child = self
            .veil(user, &["produce", "--blind", TOPIC, "--key-file", &key])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(lines.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    }
}

fn ok(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
}

/// Spawns a consumer whose stdout lines arrive on the returned channel.
fn spawn_lines(mut cmd: Command) -> (Child, mpsc::Receiver<String>) {
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

/// SHA-256 of every file of the physical topic's partition directories.
fn segment_hashes(data: &Path, physical: &str) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(data).unwrap().map(Result::unwrap) {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with(&format!("{physical}-")) {
            for f in std::fs::read_dir(entry.path()).unwrap().map(Result::unwrap) {
                let bytes = std::fs::read(f.path()).unwrap();
                out.insert(f.path(), Sha256::digest(&bytes).to_vec());
            }
        }
    }
    out
}

fn all_files(dir: &Path, out: &mut Vec<(PathBuf, Vec<u8>)>) {
    for entry in std::fs::read_dir(dir).unwrap().map(Result::unwrap) {
        let p = entry.path();
        if p.is_dir() {
            all_files(&p, out);
        } else {
            out.push((p.clone(), std::fs::read(&p).unwrap_or_default()));
        }
    }
}

/// Reads the KMS's master key and the users' key files (formats in
/// `veil_blind::keys`) and returns every exponent: e, d, and each user's
/// e1, d1, e2 = e·e1⁻¹, d2 = d·d1⁻¹ (mod φ), as I2OSP(x, k).
fn exponents(env: &Env, users: &[&str]) -> Vec<Vec<u8>> {
    let sealed = std::fs::read(env.kms.join("master.key")).unwrap();
    let master = veil_blind::kms::open_master_key(&sealed, PASSPHRASE.as_bytes()).unwrap();
    let raw = master.to_bytes().unwrap();
    let k = master.bits().element_len();
    let body = &raw[raw.len() - (k / 2 * 2 + 2 * k)..];
    let (p, rest) = body.split_at(k / 2);
    let (q, rest) = rest.split_at(k / 2);
    let (e, d) = rest.split_at(k);
    let mut ctx = BigNumContext::new().unwrap();
    let bn = |b: &[u8]| BigNum::from_slice(b).unwrap();
    let one = BigNum::from_u32(1).unwrap();
    let mut phi = BigNum::new().unwrap();
    phi.checked_mul(&(&bn(p) - &one), &(&bn(q) - &one), &mut ctx)
        .unwrap();
    let mut found = vec![e.to_vec(), d.to_vec()];
    for u in users {
        let file = std::fs::read(env.key(u)).unwrap();
        let tail = &file[file.len() - 2 * k..];
        let (e1, d1) = tail.split_at(k);
        for (mine, master_exp) in [(e1, e), (d1, d)] {
            let mut inv = BigNum::new().unwrap();
            inv.mod_inverse(&bn(mine), &phi, &mut ctx).unwrap();
            let mut other = BigNum::new().unwrap();
            other
                .mod_mul(&bn(master_exp), &inv, &phi, &mut ctx)
                .unwrap();
            // Sanity: the derived server half recombines to the master exponent.
            let mut back = BigNum::new().unwrap();
            back.mod_mul(&bn(mine), &other, &phi, &mut ctx).unwrap();
            assert_eq!(back, bn(master_exp));
            found.push(mine.to_vec());
            found.push(other.to_vec_padded(k as i32).unwrap());
        }
    }
    found
}

fn hex(b: &[u8]) -> String {
    use std::fmt::Write as _;
    b.iter().fold(String::new(), |mut s, x| {
        let _ = write!(s, "{x:02x}");
        s
    })
}

fn assert_no_secrets(env: &Env, secrets: &[Vec<u8>]) {
    let mut needles: Vec<(String, Vec<u8>)> = vec![("topic name".into(), TOPIC.into())];
    for (i, s) in secrets.iter().enumerate() {
        // A 32-byte middle slice also catches other lengths and framings.
        let mid = &s[s.len() / 2 - 16..s.len() / 2 + 16];
        needles.push((format!("exponent {i} (raw)"), mid.to_vec()));
        needles.push((format!("exponent {i} (hex)"), hex(mid).into_bytes()));
        needles.push((
            format!("exponent {i} (HEX)"),
            hex(mid).to_uppercase().into_bytes(),
        ));
    }
    let mut files = Vec::new();
    all_files(env.broker.data_dir(), &mut files);
    files.push(("broker log".into(), env.broker.log().into_bytes()));
    let (status, metrics) = env.broker.http_get("/metrics");
    assert_eq!(status, 200);
    files.push(("/metrics".into(), metrics.into_bytes()));
    // Positive control: the scan does read segment contents (values are in
    // clear in this issue; sealing is a separate layer).
    assert!(
        files
            .iter()
            .any(|(_, b)| b.windows(10).any(|w| w == b"reading-42")),
        "the scan found no record values at all"
    );
    for (path, bytes) in &files {
        for (what, needle) in &needles {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == &needle[..]),
                "{what} found in {}",
                path.display()
            );
        }
    }
}

#[test]
fn blind_topic_end_to_end_over_sasl() {
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("plain-users.toml");
    std::fs::write(
        &users,
        veil_broker::auth::plain::hash_entry("admin", "admin-pw", 4096),
    )
    .unwrap();
    let broker = TestBroker::start_with_config(BIN, &config(&users), &[]);
    let sasl = broker.listener_addr("SASL").unwrap().to_string();
    let anon = broker.listener_addr("ANON").unwrap().to_string();
    rt().block_on(setup_users(&sasl));
    let env = Env {
        broker,
        kms: dir.path().join("kms"),
        sasl: sasl.clone(),
    };

    // The KMS: a 2048-bit epoch (3072 works the same, only slower), keys for
    // alice and bob.
    let out = Command::new(BIN)
        .args(["kms", "init", "--kid", "plant-e1", "--tenant", "plant"])
        .args(["--bits", "2048", "--insecure-fast-kdf"])
        .env("VEIL_KMS_DIR", &env.kms)
        .env("VEIL_KMS_PASSPHRASE", PASSPHRASE)
        .output()
        .unwrap();
    ok(&out, "kms init");
    let wrong = Command::new(BIN)
        .args(["kms", "add-user", "alice"])
        .env("VEIL_KMS_DIR", &env.kms)
        .env("VEIL_KMS_PASSPHRASE", "not it")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&wrong.stderr);
    assert!(err.contains("wrong passphrase"), "{err}");
    for u in ["alice", "bob"] {
        ok(
            &env.veil("admin", &["kms", "add-user", u]).output().unwrap(),
            u,
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(env.key(u)).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{u}.key must be private");
        }
    }
    let list = env.veil("admin", &["kms", "list"]).output().unwrap();
    ok(&list, "kms list");
    let listed = String::from_utf8_lossy(&list.stdout);
    assert!(listed.contains("User:alice\tactive"), "{listed}");

    let sealed = std::fs::read(env.kms.join("master.key")).unwrap();
    let physical = veil_blind::kms::open_master_key(&sealed, PASSPHRASE.as_bytes())
        .unwrap()
        .physical_name(TOPIC)
        .unwrap()
        .into_string();

    // alice produces 10 000 records by plaintext name.
    let sent: Vec<String> = (0..RECORDS).map(|i| format!("reading-{i}")).collect();
    ok(&env.produce("alice", &(sent.join("\n") + "\n")), "produce");

    // bob consumes them all in a group and keeps running.
    let (mut bob, bob_lines) = spawn_lines(env.consume("bob", "bob-group", &[]));
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while got.len() < RECORDS {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = bob_lines.recv_timeout(left);
        let n = got.len();
        got.push(line.unwrap_or_else(|_| panic!("bob got {n} of {RECORDS} records")));
    }
    got.sort();
    let mut want = sent.clone();
    want.sort();
    assert_eq!(got, want);

    // carol (authenticated, no key) and an anonymous client see nothing.
    rt().block_on(async {
        for conn in [
            scram(&sasl, "carol").await,
            Connection::connect(&anon, "anon").await.unwrap(),
        ] {
            let mut admin = Admin::from_connection(conn);
            let topics = admin.list_topics().await.unwrap();
            assert!(!topics.contains(&physical), "{topics:?}");
            let err = admin.describe_topic(&physical).await.unwrap_err();
            assert_eq!(err.code(), Some(UNKNOWN_TOPIC_OR_PARTITION), "{err}");
            let f = fetch(admin.connection(), &physical, 0, 0, 10).await;
            assert_eq!(
                f.responses[0].partitions[0].error_code,
                UNKNOWN_TOPIC_OR_PARTITION
            );
        }
    });

    // Revoke bob: his running consumer and any new resolution fail within
    // a second; nothing stored is rewritten.
    let before = segment_hashes(env.broker.data_dir(), &physical);
    assert!(
        !before.is_empty(),
        "no segment files for the physical topic"
    );
    ok(
        &env.veil("admin", &["kms", "revoke", "bob"])
            .output()
            .unwrap(),
        "kms revoke",
    );
    let revoked_at = Instant::now();
    let status = loop {
        if let Some(s) = bob.try_wait().unwrap() {
            break s;
        }
        assert!(
            revoked_at.elapsed() < Duration::from_secs(1),
            "bob's consumer still runs 1 s after revocation"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(!status.success());
    let mut err = String::new();
    std::io::Read::read_to_string(&mut bob.stderr.take().unwrap(), &mut err).unwrap();
    assert!(err.contains("was revoked"), "{err}");
    let start = Instant::now();
    let again = env
        .consume("bob", "bob-2", &["--max-messages", "1"])
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("was revoked"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    assert!(start.elapsed() < Duration::from_secs(5));
    assert_eq!(segment_hashes(env.broker.data_dir(), &physical), before);
    let listed = env.veil("admin", &["kms", "list"]).output().unwrap();
    assert!(String::from_utf8_lossy(&listed.stdout).contains("User:bob\trevoked"));

    // alice keeps working: produce more and read everything back.
    ok(
        &env.produce("alice", "after-1\nafter-2\n"),
        "produce after revoke",
    );
    let out = env
        .consume(
            "alice",
            "alice-group",
            &[
                "--max-messages",
                &(RECORDS + 2).to_string(),
                "--timeout-ms",
                "30000",
            ],
        )
        .output()
        .unwrap();
    ok(&out, "alice consume");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).lines().count(),
        RECORDS + 2
    );

    // Rotating alice's split: her old key file stops resolving (its c maps
    // to another T), the new one reaches the same physical topic.
    let old_key = env.kms.join("alice-old.key");
    std::fs::copy(env.key("alice"), &old_key).unwrap();
    ok(
        &env.veil("admin", &["kms", "rotate-user", "alice"])
            .output()
            .unwrap(),
        "kms rotate-user",
    );
    let stale = env
        .veil(
            "alice",
            &["consume", "--blind", TOPIC, "--max-messages", "1"],
        )
        .args(["--key-file", &old_key.display().to_string()])
        .output()
        .unwrap();
    assert!(!stale.status.success());
    let err = String::from_utf8_lossy(&stale.stderr);
    assert!(err.contains("does not exist"), "{err}");
    let fresh = env
        .consume("alice", "alice-2", &["--max-messages", "1"])
        .output()
        .unwrap();
    ok(&fresh, "consume with the rotated key");

    let secrets = exponents(&env, &["alice", "alice-old", "bob"]);
    assert_no_secrets(&env, &secrets);
}
