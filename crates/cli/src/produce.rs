//! `veil produce`: lines from stdin or a file to a topic, through librdkafka.
//! With `--blind TOPIC --key-file F` the topic is a blind topic named in
//! plaintext: it is resolved (and created if absent) without the broker
//! learning the name, then written like any Kafka topic. `--seal` also
//! encrypts every record end to end (BLIND.md §6.2): key and value travel
//! only inside AEAD envelopes, the Kafka key is the key tag. `--header`
//! adds headers to every record (inside the envelope when sealed).

use std::collections::VecDeque;
use std::io::BufRead;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use rdkafka::message::OwnedHeaders;
use veil_blind::{AeadId, Header};
use veil_client::blind_data::{delivered, enqueue_to, kafka_producer};
use veil_client::{load_user_key, BlindClient, BlindProducer, SealOptions};

use crate::secure::ConnectArgs;

/// Deliveries awaited at once; bounds memory on long inputs.
const MAX_IN_FLIGHT: usize = 50_000;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    connect: ConnectArgs,
    /// A blind topic, by its plaintext name (needs --key-file).
    #[arg(long, conflicts_with = "topic", requires = "user_key")]
    blind: Option<String>,
    /// An ordinary Kafka topic.
    #[arg(long)]
    topic: Option<String>,
    /// Your user key file from `veil kms add-user`.
    #[arg(long = "key-file", env = "VEIL_KEY_FILE")]
    user_key: Option<PathBuf>,
    /// Split each line at the first SEP into record key and value.
    #[arg(long)]
    key_separator: Option<String>,
    /// Add header NAME with VALUE to every record (repeatable, like kcat -H).
    #[arg(long = "header", value_name = "NAME=VALUE", value_parser = parse_header)]
    headers: Vec<Header>,
    /// Seal every record (end-to-end encryption; the topic becomes sealed).
    #[arg(long, requires = "blind")]
    seal: bool,
    /// AEAD for sealed records: aes256gcm, or xchacha20poly1305 for
    /// machines without AES hardware.
    #[arg(long, default_value = "aes256gcm", value_parser = ["aes256gcm", "xchacha20poly1305"], requires = "seal")]
    aead: String,
    /// Partitions of a blind topic created by this command.
    #[arg(long, default_value_t = 1)]
    partitions: i32,
    /// Benchmarks: send at most this many records per second (0: no limit).
    #[arg(long, default_value_t = 0, hide = true)]
    rate: u64,
    /// Benchmarks: report records/s from the first send until everything
    /// is acknowledged (without connecting, resolving and creating keys).
    #[arg(long, hide = true)]
    throughput: bool,
    /// A value equal to this is sent as null: a tombstone, which deletes the key on a compacted
    /// topic (Kafka's console-producer `null.marker`). On a sealed topic the delete is the key
    /// tag with a null value.
    #[arg(long, value_name = "STR", requires = "key_separator")]
    null_marker: Option<String>,
    /// Read lines from FILE instead of stdin.
    file: Option<PathBuf>,
}

enum Sink {
    Blind(Box<BlindProducer>, String),
    Plain(rdkafka::producer::FutureProducer),
}

/// `NAME=VALUE`, split at the first `=` (the value may contain more).
fn parse_header(s: &str) -> Result<Header, String> {
    match s.split_once('=') {
        Some(("", _)) => Err("the header name is empty".into()),
        Some((name, value)) => Ok((name.to_owned(), Some(value.as_bytes().to_vec()))),
        None => Err("expected NAME=VALUE".into()),
    }
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    // Blind: the SDK's producer (resolves and creates once, then caches the
    // physical name). Plain: the same librdkafka producer, on the name.
    let (producer, physical) = match (&args.blind, &args.topic) {
        (Some(name), _) => {
            let path = args.user_key.as_ref().context("--blind needs --key-file")?;
            // Checked before any request: another user's key would name
            // topics nobody can read.
            let client = Arc::new(BlindClient::for_user(
                load_user_key(path)?,
                args.connect.sasl_user(),
                path,
                args.connect.connector("veil-produce"),
            )?);
            let mut p = BlindProducer::new(client, &args.connect.rdkafka_props(), args.partitions)?;
            if args.seal {
                let aead = if args.aead == "xchacha20poly1305" {
                    AeadId::XChaCha20Poly1305
                } else {
                    AeadId::Aes256Gcm
                };
                p = p.with_seal(SealOptions {
                    aead,
                    ..SealOptions::default()
                });
            }
            p.physical_name(name).await?;
            (Sink::Blind(Box::new(p), name.clone()), String::new())
        }
        (None, Some(t)) => (
            Sink::Plain(kafka_producer(&args.connect.rdkafka_props())?),
            t.clone(),
        ),
        (None, None) => bail!("give a topic: --blind NAME (with --key-file) or --topic NAME"),
    };
    let input: Box<dyn BufRead> = match &args.file {
        Some(f) => Box::new(std::io::BufReader::new(
            std::fs::File::open(f).with_context(|| format!("cannot read {}", f.display()))?,
        )),
        None => Box::new(std::io::stdin().lock()),
    };
    // Built once; enqueue_to hands librdkafka a copy per record.
    let kafka_headers = (!args.headers.is_empty()).then(|| {
        args.headers.iter().fold(
            OwnedHeaders::new_with_capacity(args.headers.len()),
            |h, (name, value)| {
                h.insert(rdkafka::message::Header {
                    key: name,
                    value: value.as_deref(),
                })
            },
        )
    });
    let mut pending = VecDeque::new();
    let mut count = 0u64;
    let started = std::time::Instant::now();
    for line in input.lines() {
        if args.rate > 0 {
            let due = Duration::from_secs_f64(count as f64 / args.rate as f64);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                tokio::time::sleep(wait).await;
            }
        }
        let line = line.context("reading input")?;
        let (key, value) = match &args.key_separator {
            Some(sep) => match line.split_once(sep.as_str()) {
                Some((k, v)) => (Some(k.as_bytes()), v),
                None => (None, line.as_str()),
            },
            None => (None, line.as_str()),
        };
        let null = args.null_marker.as_deref() == Some(value);
        let queued = match &producer {
            Sink::Blind(p, name) if null => p.send_record(name, key, None, &args.headers).await?,
            Sink::Plain(p) if null => {
                enqueue_to(p, &physical, None, key, None, kafka_headers.as_ref()).await?
            }
            Sink::Blind(p, name) if args.headers.is_empty() => {
                p.send(name, key, value.as_bytes()).await?
            }
            Sink::Blind(p, name) => {
                p.send_record(name, key, Some(value.as_bytes()), &args.headers)
                    .await?
            }
            Sink::Plain(p) => {
                let value = Some(value.as_bytes());
                enqueue_to(p, &physical, None, key, value, kafka_headers.as_ref()).await?
            }
        };
        pending.push_back(queued);
        count += 1;
        if pending.len() >= MAX_IN_FLIGHT {
            delivered(pending.pop_front().expect("non-empty")).await?;
        }
    }
    while let Some(f) = pending.pop_front() {
        delivered(f).await?;
    }
    match &producer {
        Sink::Blind(p, _) => p.flush(Duration::from_secs(30))?,
        Sink::Plain(p) => {
            use rdkafka::producer::Producer as _;
            p.flush(Duration::from_secs(30))
                .context("flushing the producer")?;
        }
    }
    eprintln!("produced {count} record(s)");
    if args.throughput {
        let secs = started.elapsed().as_secs_f64();
        eprintln!(
            "throughput {count} records in {secs:.3} s from the first send: {:.0} records/s",
            count as f64 / secs.max(1e-9)
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::parse_header;

    #[test]
    fn header_flag_splits_at_the_first_equals_sign() {
        assert_eq!(
            parse_header("trace=a=b").unwrap(),
            ("trace".into(), Some(b"a=b".to_vec()))
        );
        assert_eq!(
            parse_header("empty=").unwrap(),
            ("empty".into(), Some(Vec::new()))
        );
        assert!(parse_header("no-equals").is_err());
        assert!(parse_header("=value").is_err());
    }
}
