//! `veil-mqtt-bench`: QoS 1 publishes over many MQTT connections (messages
//! per second and PUBACK latency), or many idle connections held open (for
//! memory per connection). Prints one JSON line, so runs are comparable.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use rumqttc::{AsyncClient, Event, MqttOptions, Outgoing, Packet, QoS};
use tokio::sync::{Barrier, Mutex};

#[derive(Parser)]
struct Cli {
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    #[arg(long, default_value_t = 1883)]
    port: u16,
    /// Concurrent connections.
    #[arg(long, default_value_t = 1)]
    connections: usize,
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand)]
enum Mode {
    /// Every connection publishes `messages` QoS 1 messages of `size` bytes
    /// to `<prefix>/<connection>` with up to `inflight` unacknowledged.
    Publish {
        #[arg(long, default_value_t = 10_000)]
        messages: usize,
        #[arg(long, default_value_t = 100)]
        size: usize,
        #[arg(long, default_value_t = 64)]
        inflight: u16,
        #[arg(long, default_value = "bench")]
        prefix: String,
    },
    /// Connect, print `READY <n>` and hold the connections for `seconds`.
    Idle {
        #[arg(long, default_value_t = 30)]
        seconds: u64,
    },
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let idx = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[idx]
}

fn options(cli: &Cli, i: usize, inflight: u16) -> MqttOptions {
    let mut o = MqttOptions::new(
        format!("bench-{}-{i}", std::process::id()),
        &cli.host,
        cli.port,
    );
    o.set_keep_alive(Duration::from_secs(60));
    o.set_inflight(inflight);
    o.set_clean_session(true);
    o
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    match &cli.mode {
        Mode::Publish {
            messages,
            size,
            inflight,
            prefix,
        } => publish(&cli, *messages, *size, *inflight, prefix).await,
        Mode::Idle { seconds } => idle(&cli, *seconds).await,
    }
}

async fn publish(cli: &Cli, messages: usize, size: usize, inflight: u16, prefix: &str) {
    let n = cli.connections;
    // Everyone connects first; the clock starts when all are connected.
    let ready = Arc::new(Barrier::new(n + 1));
    let latencies = Arc::new(Mutex::new(Vec::with_capacity(n * messages)));
    let failed = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        let opts = options(cli, i, inflight);
        let ready = Arc::clone(&ready);
        let latencies = Arc::clone(&latencies);
        let failed = Arc::clone(&failed);
        let topic = format!("{prefix}/{i}");
        tasks.push(tokio::spawn(async move {
            let (client, mut events) = AsyncClient::new(opts, usize::from(inflight) * 2);
            // Wait for the CONNACK.
            loop {
                match events.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => break,
                    Ok(_) => {}
                    Err(e) => {
                        eprintln!("connection {i}: {e}");
                        failed.fetch_add(1, Ordering::Relaxed);
                        ready.wait().await;
                        return;
                    }
                }
            }
            ready.wait().await;
            let payload = vec![b'x'; size];
            let publisher = tokio::spawn(async move {
                for _ in 0..messages {
                    if client
                        .publish(topic.as_str(), QoS::AtLeastOnce, false, payload.clone())
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            });
            let mut sent: HashMap<u16, Instant> = HashMap::new();
            let mut mine = Vec::with_capacity(messages);
            while mine.len() < messages {
                match events.poll().await {
                    Ok(Event::Outgoing(Outgoing::Publish(pkid))) => {
                        sent.insert(pkid, Instant::now());
                    }
                    Ok(Event::Incoming(Packet::PubAck(ack))) => {
                        if let Some(t) = sent.remove(&ack.pkid) {
                            mine.push(t.elapsed().as_secs_f64() * 1000.0);
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        eprintln!("connection {i}: {e}");
                        failed.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                }
            }
            publisher.abort();
            latencies.lock().await.extend(mine);
        }));
    }
    ready.wait().await;
    let start = Instant::now();
    for t in tasks {
        let _ = t.await;
    }
    let secs = start.elapsed().as_secs_f64();
    let mut l = std::mem::take(&mut *latencies.lock().await);
    l.sort_by(f64::total_cmp);
    println!(
        "{{\"mode\":\"publish\",\"connections\":{n},\"failed_connections\":{},\"acked\":{},\"size\":{size},\"inflight\":{inflight},\"seconds\":{secs:.3},\"msgs_per_sec\":{:.0},\"p50_ms\":{:.2},\"p99_ms\":{:.2},\"max_ms\":{:.2}}}",
        failed.load(Ordering::Relaxed),
        l.len(),
        l.len() as f64 / secs,
        percentile(&l, 0.50),
        percentile(&l, 0.99),
        l.last().copied().unwrap_or(0.0),
    );
}

async fn idle(cli: &Cli, seconds: u64) {
    let n = cli.connections;
    let connected = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        let opts = options(cli, i, 1);
        let connected = Arc::clone(&connected);
        tasks.push(tokio::spawn(async move {
            let (_client, mut events) = AsyncClient::new(opts, 1);
            let mut counted = false;
            // Keep polling: it answers keep-alives and holds the connection.
            while let Ok(e) = events.poll().await {
                if !counted && matches!(e, Event::Incoming(Packet::ConnAck(_))) {
                    counted = true;
                    connected.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while connected.load(Ordering::Relaxed) < n && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!("READY {}", connected.load(Ordering::Relaxed));
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    for t in tasks {
        t.abort();
    }
}
