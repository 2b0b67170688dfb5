//! `veil-bench`: produce or consume a fixed number of records against any
//! Kafka-compatible broker with librdkafka and print one JSON line of
//! results (throughput and latency percentiles), so runs are comparable.

use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

#[derive(Parser)]
struct Cli {
    #[arg(long, default_value = "127.0.0.1:9092")]
    bootstrap: String,
    #[arg(long)]
    topic: String,
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand)]
enum Mode {
    /// Produce `records` records of `size` bytes, keys spread over 64 values.
    Produce {
        #[arg(long, default_value_t = 200_000)]
        records: usize,
        #[arg(long, default_value_t = 100)]
        size: usize,
        /// all | 1 | 0
        #[arg(long, default_value = "all")]
        acks: String,
        #[arg(long, default_value = "none")]
        compression: String,
        #[arg(long, default_value_t = 5)]
        linger_ms: u64,
        /// Send one record at a time, each after the previous one is
        /// acknowledged: p50/p99 are then the latency of a lone request,
        /// not of a queue.
        #[arg(long)]
        one_at_a_time: bool,
        /// Extra librdkafka properties, key=value.
        #[arg(long = "set")]
        set: Vec<String>,
    },
    /// Read `records` records from the beginning of every partition.
    Consume {
        #[arg(long, default_value_t = 200_000)]
        records: usize,
        #[arg(long, default_value_t = 1)]
        partitions: i32,
    },
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let idx = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[idx]
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    match cli.mode {
        Mode::Produce { records, size, acks, compression, linger_ms, one_at_a_time, set } => {
            let mut cfg = ClientConfig::new();
            cfg.set("bootstrap.servers", &cli.bootstrap)
                .set("acks", &acks)
                .set("compression.type", &compression)
                .set("linger.ms", linger_ms.to_string())
                .set("enable.idempotence", "false")
                .set("queue.buffering.max.messages", "1000000")
                .set("message.timeout.ms", "120000");
            for kv in &set {
                let (k, v) = kv.split_once('=').expect("--set key=value");
                cfg.set(k, v);
            }
            let producer: FutureProducer = cfg.create().expect("producer");
            let payload = vec![b'x'; size];
            let started = Instant::now();
            let mut pending = Vec::with_capacity(records);
            let mut latencies = Vec::with_capacity(records);
            for i in 0..records {
                let key = format!("k{}", i % 64);
                let sent = Instant::now();
                let fut = producer.send_result(FutureRecord::to(&cli.topic).key(&key).payload(&payload));
                match fut {
                    Ok(f) if one_at_a_time => {
                        f.await.expect("delivery future").expect("delivered");
                        latencies.push(sent.elapsed().as_secs_f64() * 1000.0);
                    }
                    Ok(f) => pending.push((sent, f)),
                    Err((e, _)) => panic!("enqueue failed: {e}"),
                }
            }
            for (sent, f) in pending {
                f.await.expect("delivery future").expect("delivered");
                latencies.push(sent.elapsed().as_secs_f64() * 1000.0);
            }
            let secs = started.elapsed().as_secs_f64();
            latencies.sort_by(f64::total_cmp);
            println!(
                "{{\"mode\":\"produce\",\"records\":{records},\"size\":{size},\"acks\":\"{acks}\",\"secs\":{secs:.3},\"records_per_sec\":{:.0},\"mb_per_sec\":{:.2},\"p50_ms\":{:.2},\"p99_ms\":{:.2},\"max_ms\":{:.2}}}",
                records as f64 / secs,
                (records * size) as f64 / secs / 1e6,
                percentile(&latencies, 0.50),
                percentile(&latencies, 0.99),
                percentile(&latencies, 1.0),
            );
        }
        Mode::Consume { records, partitions } => {
            let consumer: BaseConsumer = ClientConfig::new()
                .set("bootstrap.servers", &cli.bootstrap)
                .set("group.id", "veil-bench")
                .set("enable.auto.commit", "false")
                .set("fetch.max.bytes", "52428800")
                .create()
                .expect("consumer");
            let mut tpl = TopicPartitionList::new();
            for p in 0..partitions {
                tpl.add_partition_offset(&cli.topic, p, Offset::Beginning).expect("partition");
            }
            consumer.assign(&tpl).expect("assign");
            let started = Instant::now();
            let deadline = started + Duration::from_secs(300);
            let (mut n, mut bytes) = (0usize, 0usize);
            while n < records && Instant::now() < deadline {
                if let Some(m) = consumer.poll(Duration::from_millis(100)) {
                    let m = m.expect("message");
                    bytes += m.payload().map_or(0, <[u8]>::len);
                    n += 1;
                }
            }
            let secs = started.elapsed().as_secs_f64();
            println!(
                "{{\"mode\":\"consume\",\"records\":{n},\"secs\":{secs:.3},\"records_per_sec\":{:.0},\"mb_per_sec\":{:.2}}}",
                n as f64 / secs,
                bytes as f64 / secs / 1e6,
            );
        }
    }
}
