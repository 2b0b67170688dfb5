//! Keeping the ISRs of the partitions this node leads honest: a follower
//! that has not caught up for `replica_lag_time_max_ms` leaves, a follower
//! that caught up to the high watermark comes back. Each change is an
//! AlterPartition in the metadata quorum, checked against the partition's
//! epochs there, and counts only once committed.

use std::sync::Weak;
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use veil_meta::MetaCommand;

use crate::state::BrokerState;

/// How often the ISRs are checked without a wake-up.
const TICK: Duration = Duration::from_millis(500);

pub async fn run(
    state: Weak<BrokerState>,
    wakeup: std::sync::Arc<Notify>,
    stop: CancellationToken,
) {
    loop {
        let Some(st) = state.upgrade() else { return };
        let woken = wakeup.notified();
        tokio::pin!(woken);
        woken.as_mut().enable();
        check_once(&st).await;
        drop(st);
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(TICK) => {}
            () = &mut woken => {}
        }
    }
}

/// Proposes every ISR change the partitions led here want.
pub async fn check_once(state: &std::sync::Arc<BrokerState>) {
    let lag = Duration::from_millis(state.config.replication.replica_lag_time_max_ms);
    let now = Instant::now();
    for p in state.topics.local_partitions() {
        if !p.is_leader() {
            continue;
        }
        let Some(isr) = p.isr_change(now, lag) else {
            continue;
        };
        let before = p.replica();
        let shrink = isr.len() < before.isr.len();
        let cmd = MetaCommand::AlterPartition {
            topic: p.topic.clone(),
            partition: p.index,
            leader: state.node_id(),
            leader_epoch: before.leader_epoch,
            partition_epoch: before.partition_epoch,
            isr: isr.clone(),
        };
        match state.commit(cmd).await {
            Ok(()) => {
                let counter = if shrink {
                    &state.metrics.isr_shrinks
                } else {
                    &state.metrics.isr_expands
                };
                counter.inc();
                tracing::info!(topic = %p.topic, partition = p.index, from = ?before.isr, to = ?isr,
                    "{}", if shrink { "ISR shrank" } else { "ISR expanded" });
            }
            Err(e) => {
                tracing::debug!(topic = %p.topic, partition = p.index, error = %e,
                    "ISR change not committed (stale epoch or no controller); retrying later");
            }
        }
    }
}
