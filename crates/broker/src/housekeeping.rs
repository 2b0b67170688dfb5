//! Periodic work: retention, age-based segment rolls and idle-producer expiry.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::state::BrokerState;

pub async fn run(state: Arc<BrokerState>, shutdown: CancellationToken) {
    let every = Duration::from_millis(state.config.log.retention_check_interval_ms);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
        let state = Arc::clone(&state);
        let _ = tokio::task::spawn_blocking(move || run_once(&state)).await;
    }
}

/// One pass over every partition.
pub fn run_once(state: &BrokerState) {
    let now = state.clock.now_ms();
    for topic in state.topics.all() {
        for p in topic.online() {
            let outcome = p.with_log_mut(|log| {
                let report = log.enforce_retention(now)?;
                log.expire_producers(now, veil_log::PRODUCER_ID_EXPIRATION_MS);
                log.roll_if_due(now)?;
                Ok::<_, veil_log::Error>(report)
            });
            match outcome {
                Ok(r) if r.deleted_segments > 0 => tracing::info!(
                    topic = %topic.name, partition = p.index, segments = r.deleted_segments,
                    bytes = r.deleted_bytes, log_start_offset = r.log_start_offset,
                    "retention deleted segments"
                ),
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(topic = %topic.name, partition = p.index, error = %e, "retention failed");
                }
            }
        }
    }
}
