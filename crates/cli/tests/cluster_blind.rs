//! Blind topics on three nodes: keys issued through one node, a blind topic
//! (replication factor 3) written through another and read through the
//! third, all with the same share key file; revoking a reader through the
//! first node stops its running consumer on the third within seconds.
//! Real processes on 127.0.0.1/.2/.3; timings are printed.

#[path = "common/blind_env.rs"]
mod blind_env;
mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use blind_env::{ok, setup_users, spawn_lines, PASSPHRASE, TOPIC};
use common::{rt, BIN};
use veil_testkit::{ClusterOptions, TestCluster};

/// `veil ARGS` as `user` through `sasl`, with the test's KMS.
fn veil(sasl: &str, kms: &std::path::Path, user: &str, args: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    c.args(args)
        .args(["--bootstrap", sasl])
        .args(["--security-protocol", "SASL_PLAINTEXT", "--user", user])
        .env("VEIL_PASSWORD", format!("{user}-pw"))
        .env("VEIL_KMS_PASSPHRASE", PASSPHRASE)
        .env("VEIL_KMS_DIR", kms)
        .env("VEIL_LOG", "warn");
    if user == "admin" {
        c.args(["--sasl-mechanism", "PLAIN"]);
    }
    c
}

#[test]
fn a_blind_topic_works_through_every_node_and_revocation_reaches_all() {
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("plain-users.toml");
    std::fs::write(
        &users,
        veil_broker::auth::plain::hash_entry("admin", "admin-pw", 4096),
    )
    .unwrap();
    // One share key, copied to every node.
    let share_key = dir.path().join("share.key");
    std::fs::write(&share_key, rand::random::<[u8; 32]>()).unwrap();
    let options = ClusterOptions {
        cluster: "session_timeout_ms = 3000\n".into(),
        tables: format!(
            "[topics]\ndefault_replication_factor = 3\n\
             [sasl]\nplain_users_file = \"{}\"\nmax_failure_delay_ms = 100\n\
             [authorizer]\nenabled = true\nsuper_users = [\"User:admin\"]\n\
             [blind]\nshare_key_file = \"{}\"\n",
            users.display(),
            share_key.display()
        ),
        node_tables: (1..=3)
            .map(|i| {
                format!(
                    "[[listeners]]\nname = \"SASL\"\nprotocol = \"SASL_PLAINTEXT\"\nbind = \"127.0.0.{i}:0\"\n"
                )
            })
            .collect(),
        ..ClusterOptions::default()
    };
    let cluster = TestCluster::start_with(BIN, 3, &options);
    let sasl: Vec<String> = (1..=3)
        .map(|i| cluster.node(i).listener_addr("SASL").unwrap().to_string())
        .collect();
    rt().block_on(setup_users(&sasl[0]));
    let kms = dir.path().join("kms");
    let out = Command::new(BIN)
        .args(["kms", "init", "--kid", "plant-e1", "--tenant", "plant"])
        .args(["--bits", "2048", "--insecure-fast-kdf"])
        .env("VEIL_KMS_DIR", &kms)
        .env("VEIL_KMS_PASSPHRASE", PASSPHRASE)
        .output()
        .unwrap();
    ok(&out, "kms init");
    // Shares registered through node 1.
    for u in ["alice", "bob"] {
        let out = veil(&sasl[0], &kms, "admin", &["kms", "add-user", u])
            .output()
            .unwrap();
        ok(&out, u);
    }
    let key = |u: &str| kms.join(format!("{u}.key")).display().to_string();

    // alice writes through node 2 (resolving and creating the topic there).
    let alice_key = key("alice");
    let lines = (0..200)
        .map(|i| format!("reading-{i}"))
        .collect::<Vec<_>>()
        .join("\n")
        + "\n";
    let mut producer = veil(
        &sasl[1],
        &kms,
        "alice",
        &["produce", "--blind", TOPIC, "--key-file", &alice_key],
    )
    .stdin(Stdio::piped())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    std::io::Write::write_all(&mut producer.stdin.take().unwrap(), lines.as_bytes()).unwrap();
    ok(
        &producer.wait_with_output().unwrap(),
        "alice produces via node 2",
    );

    // bob reads everything through node 3 and keeps following.
    let bob_key = key("bob");
    let (mut bob, rx) = spawn_lines(veil(
        &sasl[2],
        &kms,
        "bob",
        &[
            "consume",
            "--blind",
            TOPIC,
            "--key-file",
            &bob_key,
            "--group",
            "bob-group",
            "--from-beginning",
        ],
    ));
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut got = Vec::new();
    while got.len() < 200 {
        let left = deadline.saturating_duration_since(Instant::now());
        let n = got.len();
        got.push(
            rx.recv_timeout(left)
                .unwrap_or_else(|_| panic!("bob read {n} of 200 records via node 3")),
        );
    }
    got.sort();
    let mut want: Vec<String> = (0..200).map(|i| format!("reading-{i}")).collect();
    want.sort();
    assert_eq!(got, want);

    // Revoked through node 1: bob's consumer on node 3 stops.
    ok(
        &veil(&sasl[0], &kms, "admin", &["kms", "revoke", "bob"])
            .output()
            .unwrap(),
        "kms revoke",
    );
    let revoked = Instant::now();
    let status = loop {
        if let Some(s) = bob.try_wait().unwrap() {
            break s;
        }
        assert!(
            revoked.elapsed() < Duration::from_secs(10),
            "bob's consumer on node 3 still runs 10 s after revocation"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    println!(
        "blind cluster: bob's consumer on node 3 stopped {:?} after the revocation through node 1",
        revoked.elapsed()
    );
    assert!(!status.success());
    let mut err = String::new();
    std::io::Read::read_to_string(&mut bob.stderr.take().unwrap(), &mut err).unwrap();
    assert!(err.contains("was revoked"), "{err}");

    // alice still reads her topic, now through node 1.
    let out = veil(
        &sasl[0],
        &kms,
        "alice",
        &[
            "consume",
            "--blind",
            TOPIC,
            "--key-file",
            &alice_key,
            "--from-beginning",
            "--max-messages",
            "200",
        ],
    )
    .output()
    .unwrap();
    ok(&out, "alice consumes via node 1");
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 200);
}
