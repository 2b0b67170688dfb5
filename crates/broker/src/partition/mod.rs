//! One partition replica on this broker: its log, the notifier that wakes
//! long-polling fetches, group commit, and what metadata says about the
//! partition's replicas (leader, epochs, ISR).
//!
//! Locking: `log` is a read/write lock held only for in-memory work and
//! page-cache I/O; fsync runs outside it (see [`durability`]).

mod durability;

use std::sync::Arc;

use parking_lot::RwLock;
use tokio::sync::Notify;
use veil_log::{AppendInfo, PartitionLog, ReadResult};
use veil_meta::PartitionRecord;

use crate::error::{Error, Result};
use crate::metrics::Metrics;

pub use durability::GroupCommit;

#[derive(Debug)]
pub struct Partition {
    pub topic: String,
    pub index: i32,
    log: RwLock<PartitionLog>,
    /// Woken after every append so waiting fetches re-read.
    appended: Notify,
    commit: GroupCommit,
    /// The partition as metadata last described it.
    replica: RwLock<PartitionRecord>,
}

impl Partition {
    pub fn new(
        topic: String,
        index: i32,
        log: PartitionLog,
        metrics: Metrics,
        replica: PartitionRecord,
    ) -> Arc<Partition> {
        let synced = log.synced_offset();
        Arc::new(Partition {
            topic,
            index,
            log: RwLock::new(log),
            appended: Notify::new(),
            commit: GroupCommit::new(synced, metrics),
            replica: RwLock::new(replica),
        })
    }

    /// The leader epoch metadata gives the partition (stamped into appended batches).
    pub fn leader_epoch(&self) -> i32 {
        self.replica.read().leader_epoch
    }

    /// The partition's replica record as this node last applied it.
    pub fn replica(&self) -> PartitionRecord {
        self.replica.read().clone()
    }

    /// The node leading the partition ([`veil_meta::cluster::NO_LEADER`] if none).
    pub fn leader(&self) -> i32 {
        self.replica.read().leader
    }

    /// Takes metadata's latest word on the partition.
    pub fn set_replica(&self, record: PartitionRecord) {
        *self.replica.write() = record;
    }

    /// Validates and appends a produce request's record set.
    pub fn append(&self, records: &mut [u8], now_ms: i64) -> Result<AppendInfo> {
        let epoch = self.leader_epoch();
        let info = self.log.write().append(records, epoch, now_ms)?;
        self.appended.notify_waiters();
        Ok(info)
    }

    /// Resolves once everything up to `end_offset` (exclusive) is fsynced.
    pub async fn wait_durable(self: &Arc<Self>, end_offset: i64) -> Result<()> {
        GroupCommit::wait(self, end_offset).await
    }

    /// Reads whole batches below the high watermark.
    pub fn read(&self, offset: i64, max_bytes: usize, min_one: bool) -> Result<ReadResult> {
        let log = self.log.read();
        let high_watermark = log.log_end_offset();
        Ok(log.read(offset, max_bytes, high_watermark, min_one)?)
    }

    /// The high watermark: on a single replica, the log end offset.
    pub fn high_watermark(&self) -> i64 {
        self.log.read().log_end_offset()
    }

    pub fn log_start_offset(&self) -> i64 {
        self.log.read().log_start_offset()
    }

    pub fn size_bytes(&self) -> u64 {
        self.log.read().size_bytes()
    }

    /// A future that completes on the next append; create it *before*
    /// reading so an append in between is not missed.
    pub fn appended(&self) -> tokio::sync::futures::Notified<'_> {
        self.appended.notified()
    }

    /// Runs `f` with shared access to the log (offset lookups and the like).
    pub fn with_log<T>(&self, f: impl FnOnce(&PartitionLog) -> T) -> T {
        f(&self.log.read())
    }

    /// Runs `f` with exclusive access to the log (retention, configs, deletes).
    pub fn with_log_mut<T>(&self, f: impl FnOnce(&mut PartitionLog) -> T) -> T {
        f(&mut self.log.write())
    }

    /// Fsyncs everything appended so far (used at shutdown).
    pub fn sync(&self) -> Result<()> {
        let mut log = self.log.write();
        if log.is_poisoned() {
            return Err(Error::Poisoned);
        }
        log.sync()?;
        Ok(())
    }
}
