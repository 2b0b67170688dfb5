//! Sealed records end to end with the real binary over SASL (BLIND.md §6,
//! §7): alice seals, bob and dave open; replaying, moving, re-keying and
//! flipping stored bytes are each reported by the consumer; unsealed bytes
//! are rejected; revoking bob makes alice's running producer roll its data
//! key; headers travel inside the envelope; and no plaintext key, value,
//! header or topic name, and no data key, wrapped element or key-tag secret,
//! reaches the broker's disk, log, metrics, or the recorded byte stream of
//! every client connection.

#[path = "common/blind_env.rs"]
mod blind_env;
mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use blind_env::{all_files, config, ok, scram, setup_users, Env, PASSPHRASE};
use common::{rt, BIN};
use veil_blind::{DekId, Envelope, TOPIC_KEY_ID};
use veil_client::{load_user_key, BlindClient, Connector};
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
            assert!(
                m.headers().is_none(),
                "a record of {physical} carries Kafka headers"
            );
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
    seal_consume_with(env, user, topic, group, max, &[])
}

fn seal_consume_with(
    env: &Env,
    user: &str,
    topic: &str,
    group: &str,
    max: usize,
    extra: &[&str],
) -> Output {
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
    .args(extra)
    .output()
    .unwrap()
}

/// What a command printed, kept for the leak scan.
#[derive(Default)]
struct Printed {
    stderr: Vec<(PathBuf, Vec<u8>)>,
    stdout: Vec<(PathBuf, Vec<u8>)>,
}

impl Printed {
    fn keep(&mut self, what: &str, out: Output) -> Output {
        self.stderr
            .push((format!("stderr of {what}").into(), out.stderr.clone()));
        self.stdout
            .push((format!("stdout of {what}").into(), out.stdout.clone()));
        out
    }
}

/// A sealed topic as stored.
struct Stored<'a> {
    topic: &'a str,
    physical: String,
    records: Vec<Raw>,
    /// A real record key of one of `records`.
    known_key: &'a [u8],
}

/// Key material behind stored records, to search for.
struct Secrets {
    /// (what, bytes): I2OSP(r_T, k) and the tag key of each topic,
    /// I2OSP(r, k) and K of each data key.
    found: Vec<(String, Vec<u8>)>,
    /// Distinct data keys per topic.
    deks: BTreeMap<String, usize>,
}

/// The secrets behind every record stored in `topics`, fetched and
/// unwrapped in-process as `user` the way a consumer does. Checks that each
/// is the real thing: the tag key tags a known record key, and K (also when
/// derived from r) opens a stored record.
fn secrets_behind(env: &Env, user: &str, topics: &[Stored<'_>]) -> Secrets {
    let addr = env.sasl.clone();
    let who = user.to_owned();
    let connect: Connector = Arc::new(move || {
        let (addr, who) = (addr.clone(), who.clone());
        Box::pin(async move { Ok(scram(&addr, &who).await) })
    });
    let client = BlindClient::new(load_user_key(Path::new(&env.key(user))).unwrap(), connect);
    let key = client.user_key();
    let mut secrets = Vec::new();
    let mut deks = BTreeMap::new();
    rt().block_on(async {
        for Stored {
            topic,
            physical,
            records,
            known_key,
        } in topics
        {
            let x = client
                .key_get(topic, physical, TOPIC_KEY_ID)
                .await
                .unwrap()
                .unwrap_or_else(|| panic!("{topic}: no topic key"));
            let r_t = key.unwrap_element_for_tests(&x).unwrap();
            assert_eq!(r_t.len(), x.len(), "I2OSP(r_T, k)");
            let tags = key.open_topic_key(topic, &x).unwrap();
            let tag = tags.keytag(known_key).unwrap();
            assert!(
                records.iter().any(|r| r.2.as_deref() == Some(&tag[..])),
                "{topic}: the tag key does not tag a stored record"
            );
            let from_r = key.topic_key_from_element_for_tests(topic, &r_t).unwrap();
            assert_eq!(from_r.key_bytes_for_tests(), tags.key_bytes_for_tests());
            secrets.push((format!("{topic}: r_T"), r_t));
            secrets.push((
                format!("{topic}: tag key"),
                tags.key_bytes_for_tests().to_vec(),
            ));

            let mut by_dek: BTreeMap<DekId, Vec<&Raw>> = BTreeMap::new();
            for r in records {
                if let Ok(e) = Envelope::parse(&r.3) {
                    by_dek.entry(e.dek_id).or_default().push(r);
                }
            }
            for (id, stored) in &by_dek {
                let x = client
                    .key_get(topic, physical, id.as_bytes())
                    .await
                    .unwrap()
                    .unwrap_or_else(|| panic!("{topic}: no data key {id:?}"));
                let dek = key.open_dek(topic, *id, &x).unwrap();
                assert!(
                    stored
                        .iter()
                        .any(|(p, _, _, v)| dek.open_record(u32::try_from(*p).unwrap(), v).is_ok()),
                    "{topic}: data key {id:?} opens none of its records"
                );
                let r = key.unwrap_element_for_tests(&x).unwrap();
                assert_eq!(r.len(), x.len(), "I2OSP(r, k)");
                let from_r = key.dek_from_element_for_tests(topic, *id, &r).unwrap();
                assert_eq!(from_r.key_bytes_for_tests(), dek.key_bytes_for_tests());
                secrets.push((format!("{topic}: r of {id:?}"), r));
                secrets.push((
                    format!("{topic}: K of {id:?}"),
                    dek.key_bytes_for_tests().to_vec(),
                ));
            }
            deks.insert((*topic).to_owned(), by_dek.len());
        }
    });
    Secrets {
        found: secrets,
        deks,
    }
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

/// Where the dek_id sits in a sealed Kafka value (one envelope:
/// version, aead, u32 kid length, kid, dek_id, …).
fn dek_id_at(value: &[u8]) -> std::ops::Range<usize> {
    let kid_len = u32::from_be_bytes(value[2..6].try_into().unwrap()) as usize;
    let start = 2 + 4 + kid_len;
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

    let mut printed = Printed::default();

    // Round trip: alice seals (2 partitions, keyed, two headers on every
    // record), bob opens and prints the headers.
    let lines = (0..N)
        .map(|i| format!("sealed-key-{i}=sealed-value-{i}"))
        .collect::<Vec<_>>()
        .join("\n")
        + "\n";
    let out = seal_produce(
        &env,
        "alice",
        SEALED,
        &lines,
        &[
            "--partitions",
            "2",
            "--header",
            "sealed-header-name-trace=sealed-header-value-7",
            "--header",
            "sealed-header-name-hop=sealed-header-value-8",
        ],
    );
    ok(&printed.keep("sealed produce", out), "sealed produce");
    let out = seal_consume_with(&env, "bob", SEALED, "bob-1", N, &["--print-headers"]);
    let out = printed.keep("bob consume", out);
    ok(&out, "bob consume");
    let mut got: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    got.sort();
    let headers = "sealed-header-name-trace:sealed-header-value-7,\
                   sealed-header-name-hop:sealed-header-value-8";
    let mut want: Vec<String> = lines.lines().map(|l| format!("{headers}\t{l}")).collect();
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
    let plain = printed.keep("plain produce", plain);
    assert!(!plain.status.success());
    assert!(String::from_utf8_lossy(&plain.stderr).contains("is sealed"));

    // Replay: the same stored bytes again is reported as a duplicate.
    let (p0, _, k0, v0) = raw[0].clone();
    raw_produce(&env, &p_sealed, p0, k0.as_deref(), &v0);
    let out = printed.keep(
        "dave consume with a replay",
        seal_consume(&env, "dave", SEALED, "dave-1", N + 1),
    );
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
    let out = printed.keep("live producer", live.wait_with_output().unwrap());
    ok(&out, "live producer");
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
    let bob = printed.keep("bob-2", seal_consume(&env, "bob", SEALED, "bob-2", N + 3));
    assert!(!bob.status.success());
    assert!(String::from_utf8_lossy(&bob.stderr).contains("was revoked"));
    for u in ["alice", "dave"] {
        let group = format!("{u}-2");
        let out = seal_consume_with(&env, u, SEALED, &group, N + 3, &["--print-headers"]);
        let out = printed.keep(&group, out);
        ok(&out, u);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("NO_HEADERS\trk=before-revoke\n")
                && text.contains("NO_HEADERS\trk=after-revoke\n")
                && text.contains(&format!("{headers}\tsealed-key-0=sealed-value-0\n")),
            "{text}"
        );
    }

    // Move a record to the other partition: the AAD binds the partition.
    let moved = "plant-7/line-3/moved";
    let out = seal_produce(
        &env,
        "alice",
        moved,
        "a=1\nb=2\nc=3\n",
        &["--partitions", "2"],
    );
    ok(&printed.keep("produce moved", out), "produce moved");
    let pm = physical(moved);
    let r_moved = raw_records(&env, &pm, 2, 3);
    let (p, _, k, v) = &r_moved[0];
    let other = 1 - p;
    let next = r_moved.iter().filter(|x| x.0 == other).count();
    raw_produce(&env, &pm, other, k.as_deref(), v);
    let out = printed.keep("dave-m", seal_consume(&env, "dave", moved, "dave-m", 4));
    assert_rejected(&out, i64::try_from(next).unwrap(), "moved record");

    // Swap dek_ids: a record of session A claiming session B's key.
    let swap = "plant-7/line-3/swap";
    for (what, line) in [("session A", "k=one\n"), ("session B", "k=two\n")] {
        let out = seal_produce(&env, "alice", swap, line, &[]);
        ok(&printed.keep(what, out), what);
    }
    let ps = physical(swap);
    let r_swap = raw_records(&env, &ps, 1, 2);
    let mut crafted = r_swap[0].3.clone();
    let ids = dek_id_at(&crafted);
    crafted[ids.clone()].copy_from_slice(&r_swap[1].3[ids]);
    raw_produce(&env, &ps, 0, r_swap[0].2.as_deref(), &crafted);
    assert_rejected(
        &printed.keep("dave-s", seal_consume(&env, "dave", swap, "dave-s", 3)),
        2,
        "swapped dek_id",
    );

    // Unsealed bytes on a sealed topic are rejected, not delivered.
    let unsealed = "plant-7/line-3/unsealed";
    let out = seal_produce(&env, "alice", unsealed, "u=1\n", &[]);
    ok(&printed.keep("produce unsealed", out), "produce unsealed");
    let pu = physical(unsealed);
    raw_produce(&env, &pu, 0, None, b"plain-bytes");
    let r_unsealed = raw_records(&env, &pu, 1, 2);
    let out = printed.keep("dave-u", seal_consume(&env, "dave", unsealed, "dave-u", 2));
    assert_rejected(&out, 1, "unsealed record");
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a sealed record"));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "u=1\n");

    // Flip one ciphertext byte on disk, fix the batch CRC, restart.
    let disk = "plant-7/line-3/disk";
    let out = seal_produce(
        &env,
        "alice",
        disk,
        "d=disk-value-first\nd=disk-value-second\n",
        &[],
    );
    ok(&printed.keep("produce disk", out), "produce disk");
    let pd = physical(disk);
    let r_disk = raw_records(&env, &pd, 1, 2);
    env.broker.kill();
    flip_on_disk(env.broker.data_dir(), &pd, &r_disk[1].3);
    env.broker.restart();
    *rec.target.lock().unwrap() = env.broker.listener_addr("SASL").unwrap();
    assert_rejected(
        &printed.keep("dave-d", seal_consume(&env, "dave", disk, "dave-d", 2)),
        1,
        "flipped on disk",
    );

    // The secrets behind every stored record, as dave (a legitimate,
    // unrevoked consumer) gets them through the client library.
    let stored = |topic, physical, records, known_key| Stored {
        topic,
        physical,
        records,
        known_key,
    };
    let Secrets {
        found: secrets,
        deks,
    } = secrets_behind(
        &env,
        "dave",
        &[
            stored(SEALED, p_sealed.clone(), after.clone(), b"sealed-key-0"),
            stored(moved, pm, r_moved, b"a"),
            stored(swap, ps, r_swap, b"k"),
            stored(unsealed, pu, r_unsealed, b"u"),
            stored(disk, pd, r_disk, b"d"),
        ],
    );
    // Two partitions, then one key before and one after the revocation.
    assert!(deks[SEALED] >= 4, "{deks:?}");
    assert_eq!(deks[swap], 2, "{deks:?}");
    assert_eq!(deks[unsealed], 1, "{deks:?}");
    assert_eq!(deks[disk], 1, "{deks:?}");
    assert!(deks[moved] >= 1, "{deks:?}");
    assert!(deks.values().sum::<usize>() >= 9, "{deks:?}");
    assert_eq!(
        secrets.len(),
        2 * (deks.len() + deks.values().sum::<usize>())
    );
    let mut distinct: Vec<&[u8]> = secrets.iter().map(|(_, s)| &s[..]).collect();
    distinct.sort_unstable();
    distinct.dedup();
    assert_eq!(distinct.len(), secrets.len(), "every secret is distinct");

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
            contains(haystack, &v0),
            "positive control: {} should hold the envelope bytes",
            what.display()
        );
    }
    assert!(files.iter().any(|(_, b)| contains(b, &v0)));
    // Record contents may not appear even in what the commands print on
    // stderr; topic names may (they are the user's own).
    let contents: [&[u8]; 7] = [
        b"sealed-value-",
        b"sealed-key-",
        b"before-revoke",
        b"after-revoke",
        b"disk-value-",
        b"sealed-header-value",
        b"sealed-header-name",
    ];
    let names: [&[u8]; 2] = [SEALED.as_bytes(), b"line-3/"];
    for (path, bytes) in &files {
        for n in contents.iter().chain(&names) {
            assert!(
                !contains(bytes, n),
                "{} found in {}",
                String::from_utf8_lossy(n),
                path.display()
            );
        }
    }
    for (path, bytes) in &printed.stderr {
        for n in contents {
            assert!(
                !contains(bytes, n),
                "{} found in {}",
                String::from_utf8_lossy(n),
                path.display()
            );
        }
    }
    // Key material: nowhere, not even in what the commands printed.
    for (path, bytes) in files.iter().chain(&printed.stderr).chain(&printed.stdout) {
        for (what, secret) in &secrets {
            assert!(
                !contains(bytes, secret),
                "{what} found in {}",
                path.display()
            );
        }
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}
