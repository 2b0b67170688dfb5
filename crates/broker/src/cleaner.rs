//! The log cleaner: rounds over the compacted partitions this node hosts, leader and follower
//! replicas alike (each replica compacts its own log, as in Kafka; offsets never change, so
//! follower fetches and the leader-epoch checkpoint are unaffected).
//!
//! A pass plans under the partition's read lock, maps and rewrites on the blocking pool with no
//! lock held (rate limited by `log.cleaner.io_max_bytes_per_second`), and takes the write lock
//! only to swap the cleaned segments in (`veil_log::cleaner`). Only segments below the high
//! watermark are cleaned, so nothing a consumer cannot see yet is touched.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use veil_log::cleaner::{FaultPoint, Throttle};

use crate::partition::Partition;
use crate::state::BrokerState;

/// Test-only: at this point of a pass (`after-cleaned`, `after-swap`, `after-delete`) write
/// `<data_dir>/cleaner-fault-reached` and have the process killed with SIGKILL right there, as a
/// crash would stop it.
pub const FAULT_ENV: &str = "VEIL_CLEANER_FAULT";

pub async fn run(state: Arc<BrokerState>, shutdown: CancellationToken) {
    let config = state.config.log.cleaner.clone();
    if !config.enabled {
        return;
    }
    let fault = std::env::var(FAULT_ENV)
        .ok()
        .and_then(|v| FaultPoint::parse(&v));
    let every = Duration::from_millis(config.backoff_ms);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
        let state = Arc::clone(&state);
        let _ = tokio::task::spawn_blocking(move || run_once(&state, fault)).await;
    }
}

/// One round: a pass over every compacted partition that is due.
pub fn run_once(state: &BrokerState, fault: Option<FaultPoint>) {
    for topic in state.topics.all() {
        for p in topic.local_partitions() {
            if let Err(e) = clean_partition(state, p, fault) {
                tracing::warn!(topic = %topic.name, partition = p.index, error = %e, "log cleaner pass failed");
            }
        }
    }
}

fn clean_partition(
    state: &BrokerState,
    p: &Partition,
    fault: Option<FaultPoint>,
) -> Result<(), veil_log::Error> {
    let now = state.clock.now_ms();
    let hw = p.high_watermark();
    let Some(plan) = p.with_log(|log| log.plan_clean(now, hw, false)) else {
        return Ok(());
    };
    let config = &state.config.log.cleaner;
    let started = Instant::now();
    let mut throttle = Throttle::new(config.io_max_bytes_per_second as f64);
    let cleaned = plan.run(config.dedupe_buffer_size, &mut throttle)?;
    let stats = cleaned.stats;
    let data_dir = state.config.data_dir.clone();
    let hook = move |at: FaultPoint| -> std::io::Result<()> {
        if Some(at) == fault {
            std::fs::write(data_dir.join("cleaner-fault-reached"), format!("{at:?}\n"))?;
            tracing::warn!(point = ?at, "cleaner fault point reached; killing the process");
            std::process::Command::new("kill")
                .args(["-KILL", &std::process::id().to_string()])
                .status()?;
            loop {
                std::thread::sleep(Duration::from_secs(3600));
            }
        }
        Ok(())
    };
    let installed =
        p.with_log_mut(|log| log.install_clean(cleaned, fault.is_some().then_some(&hook as _)))?;
    let elapsed = started.elapsed().as_secs_f64();
    let metrics = &state.metrics;
    metrics
        .cleaner_cleaned_bytes
        .with_label_values(&[p.topic.as_str()])
        .inc_by(stats.bytes_read);
    metrics
        .cleaner_removed_records
        .with_label_values(&[p.topic.as_str()])
        .inc_by(stats.records_removed);
    metrics.cleaner_passes.inc();
    tracing::info!(
        topic = %p.topic, partition = p.index, installed,
        segments_before = stats.segments_before, segments_after = stats.segments_after,
        bytes_read = stats.bytes_read, bytes_written = stats.bytes_written,
        records_removed = stats.records_removed, records_kept = stats.records_kept,
        mb_per_sec = stats.bytes_read as f64 / 1e6 / elapsed.max(1e-9),
        "log cleaner pass"
    );
    Ok(())
}
