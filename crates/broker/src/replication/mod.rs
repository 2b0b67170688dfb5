//! Replication between brokers, Kafka's way: followers fetch from leaders
//! ([`fetcher`]: one task per leader, all partitions followed from it in one
//! Fetch carrying this node's replica id), and leaders keep their ISRs
//! honest ([`isr`]: drop followers that fell behind, take caught-up ones
//! back, through AlterPartition in the metadata quorum).
//!
//! The per-partition rules (high watermark, acks=all, truncation) live in
//! [`crate::partition`]; this module only moves bytes and proposes ISR
//! changes.

pub mod fetcher;
pub mod isr;

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::Mutex;
use serde::Deserialize;
use tokio::sync::{watch, Notify};
use tokio_util::sync::CancellationToken;

use crate::partition::Partition;
use crate::state::BrokerState;

/// Replication settings (Kafka's `replica.*`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReplicationConfig {
    /// A follower that has not caught up for this long leaves the ISR
    /// (Kafka's `replica.lag.time.max.ms`).
    pub replica_lag_time_max_ms: u64,
    /// How long a follower's fetch waits at the leader for new records
    /// (`replica.fetch.wait.max.ms`).
    pub replica_fetch_wait_max_ms: i32,
    /// The pause after a failed fetch (`replica.fetch.backoff.ms`).
    pub replica_fetch_backoff_ms: u64,
}

impl Default for ReplicationConfig {
    fn default() -> Self {
        ReplicationConfig {
            replica_lag_time_max_ms: 30_000,
            replica_fetch_wait_max_ms: 500,
            replica_fetch_backoff_ms: 200,
        }
    }
}

impl ReplicationConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.replica_lag_time_max_ms < 100
            || !(1..=60_000).contains(&self.replica_fetch_wait_max_ms)
            || self.replica_fetch_backoff_ms == 0
        {
            return Err("replication: replica_lag_time_max_ms must be at least 100, replica_fetch_wait_max_ms between 1 and 60000, replica_fetch_backoff_ms at least 1".into());
        }
        Ok(())
    }
}

/// The fetcher task of one leader and the partitions it fetches.
#[derive(Debug)]
struct Fetcher {
    partitions: watch::Sender<Vec<Arc<Partition>>>,
    stop: CancellationToken,
}

/// This node's replication runtime.
#[derive(Debug, Default)]
pub struct Replication {
    fetchers: Mutex<HashMap<i32, Fetcher>>,
    /// Wakes the ISR manager early (a follower caught up).
    isr_wakeup: Arc<Notify>,
    stop: CancellationToken,
}

impl Replication {
    /// A follower may rejoin an ISR: check soon rather than at the next tick.
    pub fn isr_changed(&self) {
        self.isr_wakeup.notify_one();
    }

    /// Starts the ISR manager; fetchers start as metadata makes this node
    /// a follower ([`Self::sync_fetchers`]).
    pub fn start(state: &Arc<BrokerState>, shutdown: &CancellationToken) {
        let replication = &state.replication;
        let stop = replication.stop.clone();
        let outer = shutdown.clone();
        tokio::spawn(async move {
            outer.cancelled().await;
            stop.cancel();
        });
        tokio::spawn(isr::run(
            Arc::downgrade(state),
            Arc::clone(&replication.isr_wakeup),
            replication.stop.clone(),
        ));
    }

    /// Brings fetcher tasks in line with the partitions this node follows:
    /// one task per leader, each told the partitions it fetches.
    pub fn sync_fetchers(state: &Arc<BrokerState>) {
        let mut wanted: HashMap<i32, Vec<Arc<Partition>>> = HashMap::new();
        for p in state.topics.local_partitions() {
            if let Some((leader, _)) = p.following() {
                wanted.entry(leader).or_default().push(p);
            }
        }
        let replication = &state.replication;
        let mut fetchers = replication.fetchers.lock();
        fetchers.retain(|leader, f| {
            let keep = wanted.contains_key(leader);
            if !keep {
                f.stop.cancel();
            }
            keep
        });
        for (leader, partitions) in wanted {
            if let Some(f) = fetchers.get(&leader) {
                f.partitions.send_if_modified(|current| {
                    let same = current.len() == partitions.len()
                        && current
                            .iter()
                            .zip(&partitions)
                            .all(|(a, b)| Arc::ptr_eq(a, b));
                    if !same {
                        current.clone_from(&partitions);
                    }
                    !same
                });
            } else {
                let (tx, rx) = watch::channel(partitions);
                let stop = replication.stop.child_token();
                tokio::spawn(fetcher::run(
                    Weak::clone(&Arc::downgrade(state)),
                    leader,
                    rx,
                    stop.clone(),
                ));
                fetchers.insert(
                    leader,
                    Fetcher {
                        partitions: tx,
                        stop,
                    },
                );
            }
        }
    }

    /// Stops every fetcher (shutdown).
    pub fn stop(&self) {
        self.stop.cancel();
    }
}

/// How long the fetcher waits before retrying after an error.
pub(crate) fn backoff(config: &ReplicationConfig) -> Duration {
    Duration::from_millis(config.replica_fetch_backoff_ms)
}
