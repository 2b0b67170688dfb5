//! Group commit: one fdatasync covers every append that arrived while the
//! previous one ran.
//!
//! Waiters subscribe to the durable offset and make sure a syncer task is
//! running. The syncer takes the files to sync and the end offset they cover
//! under a short read lock, syncs on the blocking pool without any lock, then
//! publishes the new durable offset. It loops while appends keep arriving and
//! exits when it has caught up; deciding to exit and starting a new syncer
//! are serialized by `running`, so no append is left waiting.

use std::sync::Arc;
use std::time::Instant;

use parking_lot::Mutex;
use tokio::sync::watch;

use super::Partition;
use crate::error::{Error, Result};
use crate::metrics::Metrics;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Durable {
    /// Everything below this offset is on stable storage.
    offset: i64,
    /// An fsync failed: nothing more will ever be acknowledged.
    poisoned: bool,
}

#[derive(Debug)]
pub struct GroupCommit {
    durable: watch::Sender<Durable>,
    running: Mutex<bool>,
    metrics: Metrics,
}

impl GroupCommit {
    pub fn new(synced_offset: i64, metrics: Metrics) -> GroupCommit {
        GroupCommit {
            durable: watch::Sender::new(Durable {
                offset: synced_offset,
                poisoned: false,
            }),
            running: Mutex::new(false),
            metrics,
        }
    }

    /// Everything below this offset is on stable storage.
    pub fn durable_offset(&self) -> i64 {
        self.durable.borrow().offset
    }

    pub fn is_poisoned(&self) -> bool {
        self.durable.borrow().poisoned
    }

    /// Starts a sync of whatever was appended, without waiting for it.
    pub fn kick(partition: &Arc<Partition>) {
        if !partition.commit.is_poisoned() {
            Self::ensure_syncer(partition);
        }
    }

    /// Everything below `end` was synced outside group commit.
    pub fn synced(&self, end: i64) {
        self.durable.send_modify(|d| d.offset = d.offset.max(end));
    }

    /// The log was cut back to `end`: nothing above it is durable any more.
    pub fn truncated(&self, end: i64) {
        self.durable.send_modify(|d| d.offset = d.offset.min(end));
    }

    pub async fn wait(partition: &Arc<Partition>, end_offset: i64) -> Result<()> {
        let this = &partition.commit;
        let mut rx = this.durable.subscribe();
        loop {
            let now = *rx.borrow_and_update();
            if now.poisoned {
                return Err(Error::Poisoned);
            }
            if now.offset >= end_offset {
                return Ok(());
            }
            Self::ensure_syncer(partition);
            if rx.changed().await.is_err() {
                return Err(Error::Poisoned);
            }
        }
    }

    fn ensure_syncer(partition: &Arc<Partition>) {
        let mut running = partition.commit.running.lock();
        if !*running {
            *running = true;
            tokio::spawn(Self::sync_loop(Arc::clone(partition)));
        }
    }

    async fn sync_loop(partition: Arc<Partition>) {
        let this = &partition.commit;
        loop {
            let handle = partition.log.read().sync_handle();
            let end = handle.end_offset;
            let started = Instant::now();
            let outcome = tokio::task::spawn_blocking(move || {
                handle.files.iter().try_for_each(|f| f.sync_data())
            })
            .await;
            this.metrics
                .fsync_seconds
                .observe(started.elapsed().as_secs_f64());
            match outcome {
                Ok(Ok(())) => {
                    partition.log.write().mark_synced(end);
                    let before = this.durable.borrow().offset;
                    if end > before {
                        this.metrics
                            .group_commit_records
                            .observe((end - before) as f64);
                    }
                    this.durable.send_modify(|d| d.offset = d.offset.max(end));
                    // A leader's own fsync may be what the high watermark waited for.
                    partition.recompute_high_watermark();
                }
                Ok(Err(e)) => {
                    tracing::error!(topic = %partition.topic, partition = partition.index, error = %e,
                        "fsync failed; the partition refuses writes from now on");
                    this.fail(&partition);
                    return;
                }
                Err(e) => {
                    tracing::error!(error = %e, "fsync task failed");
                    this.fail(&partition);
                    return;
                }
            }
            let mut running = this.running.lock();
            if partition.log.read().log_end_offset() <= end {
                *running = false;
                return;
            }
        }
    }

    fn fail(&self, partition: &Partition) {
        self.metrics.fsync_failures.inc();
        partition.log.write().poison();
        self.durable.send_modify(|d| d.poisoned = true);
        *self.running.lock() = false;
    }
}
