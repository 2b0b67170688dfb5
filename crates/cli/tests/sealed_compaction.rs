//! A sealed, compacted blind topic with the real binary: alice seals updates and deletes
//! (`--null-marker`), the cleaner runs, and a new consumer (bob) sees exactly the latest value of
//! each live key, decrypted, and none of the deleted keys. The broker's disk holds key tags,
//! never a plaintext key or value.

#[path = "common/blind_env.rs"]
mod blind_env;
mod common;

use std::fmt::Write as _;
use std::process::Command;
use std::time::{Duration, Instant};

use blind_env::{all_files, config, ok, setup_users, Env, PASSPHRASE};
use common::{rt, BIN};
use veil_testkit::TestBroker;

const TOPIC: &str = "plant-7/twins";

#[test]
fn sealed_updates_and_deletes_compact_to_the_latest_live_values() {
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("plain-users.toml");
    std::fs::write(
        &users,
        veil_broker::auth::plain::hash_entry("admin", "admin-pw", 4096),
    )
    .unwrap();
    // Topics are compacted by default here (the sealing producer creates the blind topic), with
    // small segments rolled every second and a quick cleaner.
    let cfg = format!(
        "{}\n[log]\nretention_check_interval_ms = 100\nsegment_bytes = 4096\nsegment_ms = 1000\n\
         cleanup_policy = \"compact\"\nmin_cleanable_dirty_ratio = 0.01\ndelete_retention_ms = 0\n\
         [log.cleaner]\nbackoff_ms = 100\n",
        config(&users)
    );
    let broker = TestBroker::start_with_config(BIN, &cfg, &[]);
    let sasl = broker.listener_addr("SASL").unwrap();
    rt().block_on(setup_users(&sasl.to_string()));
    let env = Env {
        broker,
        kms: dir.path().join("kms"),
        sasl: sasl.to_string(),
    };
    let out = Command::new(BIN)
        .args(["kms", "init", "--kid", "plant-e1", "--tenant", "plant"])
        .args(["--bits", "2048", "--insecure-fast-kdf"])
        .env("VEIL_KMS_DIR", &env.kms)
        .env("VEIL_KMS_PASSPHRASE", PASSPHRASE)
        .output()
        .unwrap();
    ok(&out, "kms init");
    for u in ["alice", "bob"] {
        ok(
            &env.veil("admin", &["kms", "add-user", u]).output().unwrap(),
            u,
        );
    }
    let master = std::fs::read(env.kms.join("master.key")).unwrap();
    let master = veil_blind::kms::open_master_key(&master, PASSPHRASE.as_bytes()).unwrap();
    let physical = master.physical_name(TOPIC).unwrap().into_string();
    let partition_dir = env.broker.data_dir().join(format!("{physical}-0"));

    // 30 devices, 20 rounds of updates; devices 0..10 are deleted after the last round and
    // devices 0..5 come back after that.
    let mut lines = String::new();
    for round in 0..20 {
        for d in 0..30 {
            writeln!(lines, "device-{d}=state-{round}-{d}").unwrap();
        }
        if round == 19 {
            for d in 0..10 {
                writeln!(lines, "device-{d}=NULL").unwrap();
            }
        }
    }
    for d in 0..5 {
        writeln!(lines, "device-{d}=back-{d}").unwrap();
    }
    let key = env.key("alice");
    let args = [
        "produce",
        "--blind",
        TOPIC,
        "--key-file",
        &key,
        "--seal",
        "--key-separator",
        "=",
        "--null-marker",
        "NULL",
    ];
    ok(
        &env.run_with_stdin("alice", &args, &lines),
        "sealed produce",
    );
    // More updates, so that later passes see the tombstones cleaned once (they go then, with
    // delete.retention.ms = 0).
    let mut more = String::new();
    for round in 20..24 {
        for d in 10..30 {
            writeln!(more, "device-{d}=state-{round}-{d}").unwrap();
        }
    }
    ok(
        &env.run_with_stdin("alice", &args, &more),
        "sealed produce (more)",
    );

    let mut expected: Vec<String> = (0..5).map(|d| format!("device-{d}=back-{d}")).collect();
    expected.extend((10..30).map(|d| format!("device-{d}=state-23-{d}")));
    expected.sort();

    let deadline = Instant::now() + Duration::from_secs(120);
    let mut attempt = 0;
    loop {
        attempt += 1;
        let bob_key = env.key("bob");
        let want = expected.len().to_string();
        let group = format!("fresh-{attempt}");
        let out = env
            .veil(
                "bob",
                &[
                    "consume",
                    "--blind",
                    TOPIC,
                    "--key-file",
                    &bob_key,
                    "--group",
                    &group,
                    "--from-beginning",
                    "--key-separator",
                    "=",
                    "--timeout-ms",
                    "15000",
                    "--max-messages",
                    &want,
                ],
            )
            .output()
            .unwrap();
        ok(&out, "sealed consume");
        let stdout = String::from_utf8(out.stdout).unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        let mut seen: Vec<String> = stdout.lines().map(str::to_owned).collect();
        seen.sort();
        if seen == expected && !stderr.contains("deleted key tag") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "after cleaning, bob should read exactly the latest live values:\n{stdout}\n{stderr}\n{}",
            env.broker.log()
        );
        std::thread::sleep(Duration::from_millis(500));
    }

    assert!(partition_dir.join("cleaner-offset-checkpoint").exists());
    // What the broker stored: key tags and envelopes, never a plaintext key or value.
    let mut files = Vec::new();
    all_files(env.broker.data_dir(), &mut files);
    for (path, bytes) in &files {
        for needle in [b"device-1".as_slice(), b"state-2", b"back-"] {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle),
                "{} holds plaintext",
                path.display()
            );
        }
    }
}
