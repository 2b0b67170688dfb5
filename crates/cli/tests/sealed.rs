//! Sealed records end to end with the real binary over SASL (BLIND.md §6,
//! §7): alice seals, bob and dave open; replaying, moving, re-keying and
//! flipping stored bytes are each reported by the consumer; unsealed bytes
//! are rejected; revoking bob makes alice's running producer roll its data
//! key; and no plaintext key, value or topic name reaches the broker's disk,
//! log, metrics, or the recorded byte stream of every client connection.

#[path = "common/blind_env.rs"]
mod blind_env;
mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use blind_env::{all_files, config, ok, setup_users, Env, PASSPHRASE};
use common::{rt, BIN};
use veil_testkit::TestBroker;

/// A loopback proxy that forwards to `target` and records every byte both
/// ways, so the test can scan what actually crossed the wire.
struct Recorder {
    addr: std::net::SocketAddr,
    target: std::sync::Arc<std::sync::Mutex<std::net::SocketAddr>>,
    seen: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
}

fn recorder() -> Recorder {
    use std::net::{TcpListener, TcpStream};
    use std::sync::{Arc, Mutex};
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let target = Arc::new(Mutex::new(addr));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (t, s) = (target.clone(), seen.clone());
    std::thread::spawn(move || {
        for client in listener.incoming().map_while(Result::ok) {
            let to = *t.lock().unwrap();
            let Ok(up) = TcpStream::connect(to) else {
                continue;
            };
            for (from, to) in [
                (client.try_clone().unwrap(), up.try_clone().unwrap()),
                (up, client),
            ] {
                let s = s.clone();
                std::thread::spawn(move || pump(from, to, &s));
            }
        }
    });
    Recorder { addr, target, seen }
}

fn pump(
    mut from: std::net::TcpStream,
    mut to: std::net::TcpStream,
    seen: &std::sync::Mutex<Vec<u8>>,
) {
    use std::io::Read as _;
    let mut buf = vec![0u8; 1 << 16];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                seen.lock().unwrap().extend_from_slice(&buf[..n]);
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown(std::net::Shutdown::Both);
}

/// One record as stored: (partition, offset, Kafka key, Kafka value).
type Raw = (i32, i64, Option<Vec<u8>>, Vec<u8>);

fn rdkafka_props(env: &Env, user: &str) -> rdkafka::ClientConfig {
    let mut c = rdkafka::ClientConfig::new();
    c.set("bootstrap.servers", &env.sasl)
        .set("security.protocol", "SASL_PLAINTEXT")
        .set("sasl.mechanism", "SCRAM-SHA-512")
        .set("sasl.username", user)
        .set("sasl.password", format!("{user}-pw"));
    c
}

/// Every stored record of `physical`, read as `alice` with a plain client.
fn raw_records(env: &Env, physical: &str, partitions: i32, want: usize) -> Vec<Raw> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::Message;
    let c: BaseConsumer = rdkafka_props(env, "alice")
        .set("group.id", "raw-reader")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = rdkafka::TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(physical, p, rdkafka::Offset::Beginning)
            .unwrap();
    }
    c.assign(&tpl).unwrap();
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while out.len() < want && Instant::now() < deadline {
        if let Some(Ok(m)) = c.poll(Duration::from_millis(200)) {
            out.push((
                m.partition(),
                m.offset(),
                m.key().map(<[u8]>::to_vec),
                m.payload().unwrap_or_default().to_vec(),
            ));
        }
    }
    assert_eq!(out.len(), want, "raw read of {physical}");
    out.sort();
    out
}

/// Produce crafted bytes with a plain client (the broker's view of tampering).
fn raw_produce(env: &Env, physical: &str, partition: i32, key: Option<&[u8]>, value: &[u8]) {
    use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer as _, ThreadedProducer};
    let p: ThreadedProducer<DefaultProducerContext> = rdkafka_props(env, "alice").create().unwrap();
    let mut r = BaseRecord::<[u8], [u8]>::to(physical)
        .partition(partition)
        .payload(value);
    if let Some(k) = key {
        r = r.key(k);
    }
    p.send(r).map_err(|(e, _)| e).unwrap();
    p.flush(Duration::from_secs(30)).unwrap();
}

fn seal_produce(env: &Env, user: &str, topic: &str, lines: &str, extra: &[&str]) -> Output {
    let key = env.key(user);
    let mut args = vec!["produce", "--blind", topic, "--key-file", &key];
    args.extend_from_slice(&["--seal", "--key-separator", "="]);
    args.extend_from_slice(extra);
    env.run_with_stdin(user, &args, lines)
}

fn seal_consume(env: &Env, user: &str, topic: &str, group: &str, max: usize) -> Output {
    let key = env.key(user);
    let max = max.to_string();
    env.veil(
        user,
        &[
            "consume",
            "--blind",
            topic,
            "--key-file",
            &key,
            "--group",
            group,
            "--from-beginning",
            "--key-separator",
            "=",
            "--max-messages",
            &max,
            "--timeout-ms",
            "20000",
        ],
    )
    .output()
    .unwrap()
}

/// Consumption must fail, naming a verification failure at `offset`.
fn assert_rejected(out: &Output, offset: i64, why: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{why}: consumer succeeded: {err}");
    assert!(
        err.contains("failed verification") && err.contains(&format!("offset {offset}")),
        "{why}: {err}"
    );
}

/// Offset of the first envelope's dek_id in a sealed Kafka value.
fn dek_id_at(value: &[u8]) -> std::ops::Range<usize> {
    let kid_len = u32::from_be_bytes(value[6..10].try_into().unwrap()) as usize;
    let start = 4 + 2 + 4 + kid_len;
    start..start + 16
}

/// Flip the last byte of `value` where it is stored in `physical`'s
/// partition 0 and recompute that batch's CRC, so only the AEAD can tell.
fn flip_on_disk(data: &Path, physical: &str, value: &[u8]) {
    let dir = data.join(format!("{physical}-0"));
    for f in std::fs::read_dir(&dir).unwrap().map(Result::unwrap) {
        let path = f.path();
        if path.extension().and_then(|e| e.to_str()) != Some("log") {
            continue;
        }
        let mut bytes = std::fs::read(&path).unwrap();
        let Some(at) = bytes.windows(value.len()).position(|w| w == value) else {
            continue;
        };
        bytes[at + value.len() - 1] ^= 0x01;
        let mut pos = 0;
        while pos + 61 <= bytes.len() {
            let len = i32::from_be_bytes(bytes[pos + 8..pos + 12].try_into().unwrap());
            let end = pos + 12 + usize::try_from(len).unwrap();
            if (pos..end).contains(&at) {
                let crc = crc32c::crc32c(&bytes[pos + 21..end]);
                bytes[pos + 17..pos + 21].copy_from_slice(&crc.to_be_bytes());
                std::fs::write(&path, &bytes).unwrap();
                return;
            }
            pos = end;
        }
    }
    panic!("stored value not found under {}", dir.display());
}

#[test]
#[allow(clippy::too_many_lines)]
fn sealed_records_end_to_end_over_sasl() {
    const SEALED: &str = "plant-7/line-3/sealed";
    const N: usize = 40;
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("plain-users.toml");
    std::fs::write(
        &users,
        veil_broker::auth::plain::hash_entry("admin", "admin-pw", 4096),
    )
    .unwrap();
    // Every client connection (bootstrap and advertised) goes through the
    // recorder.
    let rec = recorder();
    let cfg = config(&users).replacen(
        "bind = \"127.0.0.1:0\"",
        &format!("bind = \"127.0.0.1:0\"\nadvertised = \"{}\"", rec.addr),
        1,
    );
    let broker = TestBroker::start_with_config(BIN, &cfg, &[]);
    let sasl = broker.listener_addr("SASL").unwrap();
    *rec.target.lock().unwrap() = sasl;
    rt().block_on(setup_users(&sasl.to_string()));
    let mut env = Env {
        broker,
        kms: dir.path().join("kms"),
        sasl: rec.addr.to_string(),
    };
    let out = Command::new(BIN)
        .args(["kms", "init", "--kid", "plant-e1", "--tenant", "plant"])
        .args(["--bits", "2048", "--insecure-fast-kdf"])
        .env("VEIL_KMS_DIR", &env.kms)
        .env("VEIL_KMS_PASSPHRASE", PASSPHRASE)
        .output()
        .unwrap();
    ok(&out, "kms init");
    for u in ["alice", "bob", "dave"] {
        ok(
            &env.veil("admin", &["kms", "add-user", u]).output().unwrap(),
            u,
        );
    }
    let master = std::fs::read(env.kms.join("master.key")).unwrap();
    let master = veil_blind::kms::open_master_key(&master, PASSPHRASE.as_bytes()).unwrap();
    let physical = |t: &str| master.physical_name(t).unwrap().into_string();

    // Round trip: alice seals (2 partitions, keyed), bob opens.
    let lines = (0..N)
        .map(|i| format!("sealed-key-{i}=sealed-value-{i}"))
        .collect::<Vec<_>>()
        .join("\n")
        + "\n";
    ok(
        &seal_produce(&env, "alice", SEALED, &lines, &["--partitions", "2"]),
        "sealed produce",
    );
    let out = seal_consume(&env, "bob", SEALED, "bob-1", N);
    ok(&out, "bob consume");
    let mut got: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    got.sort();
    let mut want: Vec<String> = lines.lines().map(str::to_owned).collect();
    want.sort();
    assert_eq!(got, want);
    assert!(!String::from_utf8_lossy(&out.stderr).contains("warning"));
    let p_sealed = physical(SEALED);
    let raw = raw_records(&env, &p_sealed, 2, N);
    assert!(raw
        .iter()
        .all(|(_, _, k, _)| k.as_ref().map(Vec::len) == Some(32)));
    // A plain producer refuses the sealed topic.
    let key = env.key("alice");
    let plain = env
        .veil("alice", &["produce", "--blind", SEALED, "--key-file", &key])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!plain.status.success());
    assert!(String::from_utf8_lossy(&plain.stderr).contains("is sealed"));

    // Replay: the same stored bytes again is reported as a duplicate.
    let (p0, _, k0, v0) = raw[0].clone();
    raw_produce(&env, &p_sealed, p0, k0.as_deref(), &v0);
    let out = seal_consume(&env, "dave", SEALED, "dave-1", N + 1);
    ok(&out, "dave consume with a replay");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("duplicate"), "{err}");

    // Revocation with a live producer: one key, so one partition, before
    // and after `kms revoke bob`; the producer must roll its data key.
    let mut live = env
        .veil(
            "alice",
            &[
                "produce",
                "--blind",
                SEALED,
                "--key-file",
                &key,
                "--seal",
                "--key-separator",
                "=",
            ],
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = live.stdin.take().unwrap();
    stdin.write_all(b"rk=before-revoke\n").unwrap();
    stdin.flush().unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    ok(
        &env.veil("admin", &["kms", "revoke", "bob"])
            .output()
            .unwrap(),
        "revoke",
    );
    std::thread::sleep(Duration::from_millis(600));
    stdin.write_all(b"rk=after-revoke\n").unwrap();
    drop(stdin);
    ok(&live.wait_with_output().unwrap(), "live producer");
    let after = raw_records(&env, &p_sealed, 2, N + 3);
    let new: Vec<&Raw> = after
        .iter()
        .filter(|r| !raw.contains(r) && r.3 != v0)
        .collect();
    assert_eq!(new.len(), 2, "the two live records");
    assert_eq!(new[0].0, new[1].0, "same key, same partition");
    assert_ne!(
        new[0].3[dek_id_at(&new[0].3)],
        new[1].3[dek_id_at(&new[1].3)],
        "the producer did not roll its data key on revocation"
    );
    let bob = seal_consume(&env, "bob", SEALED, "bob-2", N + 3);
    assert!(!bob.status.success());
    assert!(String::from_utf8_lossy(&bob.stderr).contains("was revoked"));
    for u in ["alice", "dave"] {
        let out = seal_consume(&env, u, SEALED, &format!("{u}-2"), N + 3);
        ok(&out, u);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("rk=before-revoke") && text.contains("rk=after-revoke"));
    }

    // Move a record to the other partition: the AAD binds the partition.
    let moved = "plant-7/line-3/moved";
    ok(
        &seal_produce(
            &env,
            "alice",
            moved,
            "a=1\nb=2\nc=3\n",
            &["--partitions", "2"],
        ),
        "produce moved",
    );
    let pm = physical(moved);
    let r = raw_records(&env, &pm, 2, 3);
    let (p, _, k, v) = &r[0];
    let other = 1 - p;
    let next = r.iter().filter(|x| x.0 == other).count();
    raw_produce(&env, &pm, other, k.as_deref(), v);
    let out = seal_consume(&env, "dave", moved, "dave-m", 4);
    assert_rejected(&out, i64::try_from(next).unwrap(), "moved record");

    // Swap dek_ids: a record of session A claiming session B's key.
    let swap = "plant-7/line-3/swap";
    ok(
        &seal_produce(&env, "alice", swap, "k=one\n", &[]),
        "session A",
    );
    ok(
        &seal_produce(&env, "alice", swap, "k=two\n", &[]),
        "session B",
    );
    let ps = physical(swap);
    let r = raw_records(&env, &ps, 1, 2);
    let mut crafted = r[0].3.clone();
    let ids = dek_id_at(&crafted);
    crafted[ids.clone()].copy_from_slice(&r[1].3[ids]);
    raw_produce(&env, &ps, 0, r[0].2.as_deref(), &crafted);
    assert_rejected(
        &seal_consume(&env, "dave", swap, "dave-s", 3),
        2,
        "swapped dek_id",
    );

    // Unsealed bytes on a sealed topic are rejected, not delivered.
    let unsealed = "plant-7/line-3/unsealed";
    ok(
        &seal_produce(&env, "alice", unsealed, "u=1\n", &[]),
        "produce unsealed",
    );
    let pu = physical(unsealed);
    raw_produce(&env, &pu, 0, None, b"plain-bytes");
    let out = seal_consume(&env, "dave", unsealed, "dave-u", 2);
    assert_rejected(&out, 1, "unsealed record");
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a sealed record"));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "u=1\n");

    // Flip one ciphertext byte on disk, fix the batch CRC, restart.
    let disk = "plant-7/line-3/disk";
    ok(
        &seal_produce(
            &env,
            "alice",
            disk,
            "d=disk-value-first\nd=disk-value-second\n",
            &[],
        ),
        "produce disk",
    );
    let pd = physical(disk);
    let r = raw_records(&env, &pd, 1, 2);
    env.broker.kill();
    flip_on_disk(env.broker.data_dir(), &pd, &r[1].3);
    env.broker.restart();
    *rec.target.lock().unwrap() = env.broker.listener_addr("SASL").unwrap();
    assert_rejected(
        &seal_consume(&env, "dave", disk, "dave-d", 2),
        1,
        "flipped on disk",
    );

    // Nothing in clear: data dir, broker log, metrics, and the wire.
    let mut files = Vec::new();
    all_files(env.broker.data_dir(), &mut files);
    files.push(("broker log".into(), env.broker.log().into_bytes()));
    let (status, metrics) = env.broker.http_get("/metrics");
    assert_eq!(status, 200);
    files.push(("/metrics".into(), metrics.into_bytes()));
    files.push(("the wire".into(), rec.seen.lock().unwrap().clone()));
    for (what, haystack) in &files[files.len() - 1..] {
        assert!(
            haystack.windows(v0.len()).any(|w| w == &v0[..]),
            "positive control: {} should hold the envelope bytes",
            what.display()
        );
    }
    assert!(files
        .iter()
        .any(|(_, b)| b.windows(v0.len()).any(|w| w == &v0[..])));
    let needles: [&[u8]; 7] = [
        b"sealed-value-",
        b"sealed-key-",
        b"before-revoke",
        b"after-revoke",
        b"disk-value-",
        SEALED.as_bytes(),
        b"line-3/",
    ];
    for (path, bytes) in &files {
        for n in needles {
            assert!(
                !bytes.windows(n.len()).any(|w| w == n),
                "{} found in {}",
                String::from_utf8_lossy(n),
                path.display()
            );
        }
    }
}
