//! `veil consume`: a topic's records to stdout, one value per line, in a
//! consumer group, through librdkafka. With `--blind TOPIC --key-file F` the
//! topic is a blind topic named in plaintext; the command stops with one
//! sentence when the key is revoked. A sealed topic is opened transparently;
//! a record that fails verification stops the command with a non-zero exit
//! (after everything before it was printed), and gaps, replays and
//! reordering within a producer session are reported on stderr as
//! `warning:` lines while the record is still printed. `--print-headers`
//! prefixes each record with its headers the way Kafka's console consumer
//! does (`name:value,name:value` or `NO_HEADERS`, then a tab).

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::Message;
use veil_client::blind_data::{headers_of, kafka_consumer};
use veil_client::{load_user_key, BlindClient, BlindConsumer, BlindError, Record, Sequence};

use crate::secure::ConnectArgs;

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
    /// Consumer group id.
    #[arg(long, default_value = "veil-console-consumer")]
    group: String,
    /// Start from the oldest record when the group has no committed offset.
    #[arg(long)]
    from_beginning: bool,
    /// Stop after this many records.
    #[arg(long)]
    max_messages: Option<u64>,
    /// Stop when no record arrives for this long.
    #[arg(long)]
    timeout_ms: Option<u64>,
    /// Print `key<SEP>value` instead of the value alone.
    #[arg(long)]
    key_separator: Option<String>,
    /// Prefix each record with its headers, `name:value,…` (or
    /// `NO_HEADERS`) and a tab, as Kafka's console consumer does.
    #[arg(long)]
    print_headers: bool,
    /// How often a blind consumer checks that its key is still valid.
    #[arg(long, default_value_t = 250, hide = true)]
    revocation_check_ms: u64,
    /// Benchmarks: report p50/p99 of (arrival − record timestamp) on exit.
    #[arg(long, hide = true)]
    latency: bool,
    /// Benchmarks: report records/s from the first record to the last
    /// (without connecting and joining the group).
    #[arg(long, hide = true)]
    throughput: bool,
}

/// Either kind of consumer, so the loop below is shared.
enum Source {
    Blind(Box<BlindConsumer>),
    Plain(rdkafka::consumer::StreamConsumer),
}

impl Source {
    async fn next(&self) -> Result<Record, BlindError> {
        match self {
            Source::Blind(c) => c.recv().await,
            Source::Plain(c) => c
                .recv()
                .await
                .map(|m| Record {
                    partition: m.partition(),
                    offset: m.offset(),
                    key: m.key().map(<[u8]>::to_vec),
                    value: m.payload().map(<[u8]>::to_vec),
                    headers: headers_of(&m),
                    timestamp: m.timestamp().to_millis(),
                    sealed: None,
                })
                .map_err(|e| BlindError::Kafka(e.to_string())),
        }
    }

    fn commit(&self) {
        // Best effort on exit: a failure only means some records are re-read.
        let _ = match self {
            Source::Blind(c) => c.commit(),
            Source::Plain(c) => c
                .commit_consumer_state(CommitMode::Sync)
                .map_err(|e| BlindError::Kafka(e.to_string())),
        };
    }
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let props = args.connect.rdkafka_props();
    let source = match (&args.blind, &args.topic) {
        (Some(name), _) => {
            let path = args.user_key.as_ref().context("--blind needs --key-file")?;
            // Checked before any request: another user's key would name
            // topics nobody can read.
            let client = Arc::new(BlindClient::for_user(
                load_user_key(path)?,
                args.connect.sasl_user(),
                path,
                args.connect.connector("veil-consume"),
            )?);
            Source::Blind(Box::new(
                BlindConsumer::subscribe(
                    client,
                    name,
                    &args.group,
                    args.from_beginning,
                    &props,
                    Duration::from_millis(args.revocation_check_ms.max(10)),
                )
                .await?,
            ))
        }
        (None, Some(t)) => {
            let c = kafka_consumer(&props, &args.group, args.from_beginning)?;
            c.subscribe(&[t.as_str()])
                .with_context(|| format!("cannot subscribe to {t}"))?;
            Source::Plain(c)
        }
        (None, None) => bail!("give a topic: --blind NAME (with --key-file) or --topic NAME"),
    };
    let idle = args.timeout_ms.map(Duration::from_millis);
    // Buffered, and flushed whenever no record is ready: whoever reads the
    // pipe sees each record as soon as the stream pauses, and a busy stream
    // costs one write per buffer instead of one per record.
    let mut out = std::io::BufWriter::with_capacity(1 << 16, std::io::stdout().lock());
    let mut count = 0u64;
    let mut latencies = Vec::new();
    let mut first_at = None;
    while args.max_messages.is_none_or(|max| count < max) {
        let fut = source.next();
        tokio::pin!(fut);
        let ready = tokio::select! {
            biased;
            r = &mut fut => Some(r),
            () = std::future::ready(()) => None,
        };
        let next = if let Some(r) = ready {
            r
        } else {
            out.flush()?;
            match idle {
                Some(t) => match tokio::time::timeout(t, &mut fut).await {
                    Ok(r) => r,
                    Err(_) => break,
                },
                None => fut.await,
            }
        };
        let record = match next {
            Ok(r) => r,
            Err(e) if e.is_fatal() => {
                out.flush().ok();
                return Err(e.into());
            }
            Err(e) => {
                eprintln!("warning: {e}");
                continue;
            }
        };
        if let (true, Some(ts)) = (args.latency, record.timestamp) {
            latencies.push(now_ms() - ts);
        }
        first_at.get_or_insert_with(std::time::Instant::now);
        let where_ = || format!("partition {} offset {}", record.partition, record.offset);
        match record.sealed {
            None | Some(Sequence::InOrder) => {}
            Some(Sequence::Gap { missing }) => {
                eprintln!(
                    "warning: {}: gap of {missing} counter(s) in the producer session",
                    where_()
                );
            }
            Some(Sequence::Duplicate) => {
                eprintln!("warning: {}: duplicate (replayed) record", where_());
            }
            Some(Sequence::Reordered) => {
                eprintln!("warning: {}: reordered record", where_());
            }
            Some(Sequence::Deleted) => {
                // The plaintext key never travels with a delete: print its tag in hex.
                let tag = record.key.iter().flatten().fold(String::new(), |mut s, b| {
                    use std::fmt::Write as _;
                    let _ = write!(s, "{b:02x}");
                    s
                });
                eprintln!("{}: deleted key tag {tag}", where_());
                count += 1;
                continue;
            }
        }
        if args.print_headers {
            write_headers(&mut out, &record.headers)?;
        }
        if let (Some(sep), Some(k)) = (&args.key_separator, &record.key) {
            out.write_all(k)?;
            out.write_all(sep.as_bytes())?;
        }
        out.write_all(record.value.as_deref().unwrap_or_default())?;
        out.write_all(b"\n")?;
        count += 1;
    }
    out.flush()?;
    source.commit();
    eprintln!("consumed {count} record(s)");
    if let (true, Some(t0)) = (args.throughput, first_at) {
        let secs = t0.elapsed().as_secs_f64();
        eprintln!(
            "throughput {count} records in {secs:.3} s from the first record: {:.0} records/s",
            count.saturating_sub(1) as f64 / secs.max(1e-9)
        );
    }
    if args.latency && !latencies.is_empty() {
        latencies.sort_unstable();
        let at = |q: usize| latencies[(latencies.len() - 1) * q / 100];
        eprintln!("latency ms p50 {} p99 {}", at(50), at(99));
    }
    Ok(())
}

/// Kafka's `DefaultMessageFormatter` with `print.headers=true`: headers as
/// `name:value` joined by `,` (a null value prints `null`), `NO_HEADERS`
/// when there are none, then a tab.
fn write_headers(out: &mut impl Write, headers: &[veil_blind::Header]) -> std::io::Result<()> {
    if headers.is_empty() {
        out.write_all(b"NO_HEADERS")?;
    }
    for (i, (name, value)) in headers.iter().enumerate() {
        if i > 0 {
            out.write_all(b",")?;
        }
        out.write_all(name.as_bytes())?;
        out.write_all(b":")?;
        out.write_all(value.as_deref().unwrap_or(b"null"))?;
    }
    out.write_all(b"\t")
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::write_headers;

    fn shown(headers: &[veil_blind::Header]) -> String {
        let mut out = Vec::new();
        write_headers(&mut out, headers).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn headers_print_like_the_kafka_console_consumer() {
        assert_eq!(shown(&[]), "NO_HEADERS\t");
        assert_eq!(shown(&[("a".into(), Some(b"1".to_vec()))]), "a:1\t");
        assert_eq!(
            shown(&[
                ("a".into(), Some(b"x=y".to_vec())),
                ("n".into(), None),
                ("e".into(), Some(Vec::new())),
            ]),
            "a:x=y,n:null,e:\t"
        );
    }
}
