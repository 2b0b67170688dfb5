//! Background durability beside group commit.
//!
//! * Every `log.flush_interval_ms` (Kafka's `log.flush.interval.ms`, a
//!   dynamic broker config), each partition holding appends that
//!   nothing has fsynced (acks=0 or 1, `flush = none`) is synced through its
//!   own group commit ([`Partition::wait_durable`]): no second syncer, no
//!   extra locking, and a power loss takes at most about one interval.
//! * Every `log.flush_offset_checkpoint_interval_ms`, each partition's
//!   recovery point (its synced offset) is written, so that recovery after a
//!   crash trusts what lies below it and validates only the rest.
//! * At shutdown, [`flush_all`] syncs and checkpoints every partition.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use veil_log::PartitionLog;

use crate::error::{Error, Result};
use crate::partition::Partition;
use crate::state::BrokerState;

pub async fn run(state: Arc<BrokerState>, shutdown: CancellationToken) {
    let mut interval = state.flush_interval();
    let checkpoint_every =
        Duration::from_millis(state.config.log.flush_offset_checkpoint_interval_ms);
    let mut next_checkpoint = tokio::time::Instant::now() + checkpoint_every;
    loop {
        let flush_every = Duration::from_millis(*interval.borrow_and_update());
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(flush_every) => {}
            // A new interval starts counting now.
            changed = interval.changed() => {
                if changed.is_err() {
                    return;
                }
                continue;
            }
        }
        flush_unsynced(&state).await;
        if tokio::time::Instant::now() >= next_checkpoint {
            next_checkpoint = tokio::time::Instant::now() + checkpoint_every;
            let state = Arc::clone(&state);
            let _ = tokio::task::spawn_blocking(move || checkpoint_all(&state)).await;
        }
    }
}

/// Partitions with unsynced appends, and the end offset each must reach.
fn unsynced(state: &BrokerState) -> Vec<(Arc<Partition>, i64)> {
    let mut out = Vec::new();
    for topic in state.topics.all() {
        for p in topic.local_partitions() {
            let end = p.with_log(|l| {
                let end = l.log_end_offset();
                (l.synced_offset() < end && !l.is_poisoned()).then_some(end)
            });
            if let Some(end) = end {
                out.push((Arc::clone(p), end));
            }
        }
    }
    out
}

/// Syncs every partition with unsynced appends, all at once. A failed fsync
/// poisons its partition and is logged by group commit.
async fn flush_unsynced(state: &BrokerState) {
    let mut waits = JoinSet::new();
    for (p, end) in unsynced(state) {
        waits.spawn(async move { p.wait_durable(end).await });
    }
    while waits.join_next().await.is_some() {}
}

/// Writes each partition's recovery point where it moved.
fn checkpoint_all(state: &BrokerState) {
    for topic in state.topics.all() {
        for p in topic.local_partitions() {
            if let Err(e) = p.with_log_mut(PartitionLog::checkpoint_recovery_point) {
                tracing::warn!(topic = %topic.name, partition = p.index, error = %e,
                    "could not checkpoint the recovery point; recovery will validate more");
            }
        }
    }
}

/// At shutdown: fsyncs every partition and checkpoints its recovery point at
/// the log end, so the next start validates only the active segments.
pub fn flush_all(state: &BrokerState) -> Result<()> {
    let mut failed = 0usize;
    for topic in state.topics.all() {
        for p in topic.local_partitions() {
            let synced = p
                .sync()
                .and_then(|()| Ok(p.with_log_mut(PartitionLog::checkpoint_recovery_point)?));
            if let Err(e) = synced {
                failed += 1;
                tracing::error!(topic = %topic.name, partition = p.index, error = %e, "final fsync failed");
            }
        }
    }
    if failed == 0 {
        Ok(())
    } else {
        Err(Error::Poisoned)
    }
}
