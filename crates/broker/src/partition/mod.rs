//! One partition replica on this broker: its log, group commit, and its
//! part in replication — the one owner of "is this durable, is this
//! visible, may this be acknowledged".
//!
//! * As **leader** it appends produced batches under its leader epoch,
//!   tracks each follower's log end offset from their fetches
//!   ([`leader`]), and advances the **high watermark**: the smallest
//!   durable log end offset among the in-sync replicas. `acks=all` is
//!   answered once the high watermark covers the append and the ISR still
//!   has `min.insync.replicas` members.
//! * As **follower** it appends the leader's batches byte for byte and
//!   learns the high watermark from the leader ([`follower`]); after a
//!   leader change it first cuts any suffix the new leader does not have.
//! * Consumers only ever read below the high watermark. On a single node
//!   with `flush = "sync"` that is the fsynced offset, so nothing a crash
//!   could take away is ever served.
//!
//! Locking: `log` is a read/write lock held only for in-memory work and
//! page-cache I/O; fsync runs outside it (see [`durability`]). `state` is
//! never taken while `log` is held.

mod durability;
mod follower;
mod leader;

use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use tokio::sync::{watch, Notify};
use veil_log::{AppendInfo, PartitionLog, ReadResult};
use veil_meta::PartitionRecord;

use crate::error::{Error, Result};
use crate::metrics::Metrics;

pub use durability::GroupCommit;
pub use leader::FollowerProgress;

/// When a replica counts an append as stored (`log.flush`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// fdatasync before the offset counts (group commit).
    SyncData,
    /// The page cache is enough; a power loss may take recent records.
    Buffered,
}

/// What this node does for the partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Leader {
        epoch: i32,
    },
    Follower {
        leader: i32,
        epoch: i32,
    },
    /// Metadata names no leader (or this node's copy is being set up).
    Idle,
}

/// Role-specific state, under one lock.
#[derive(Debug)]
struct State {
    role: Role,
    /// Leader: each follower's progress (by node id).
    followers: std::collections::HashMap<i32, FollowerProgress>,
    /// Follower: the suffix may diverge from the leader's log; cut it
    /// (OffsetForLeaderEpoch) before fetching.
    needs_truncation: bool,
}

#[derive(Debug)]
pub struct Partition {
    pub topic: String,
    pub index: i32,
    node_id: i32,
    log: RwLock<PartitionLog>,
    /// Woken after every append (followers' fetches wait on it).
    appended: Notify,
    /// Woken when the high watermark moves (consumers' fetches and
    /// acks=all producers wait on it).
    visible: Notify,
    commit: GroupCommit,
    durability: Durability,
    /// The partition as metadata last described it.
    replica: RwLock<PartitionRecord>,
    state: Mutex<State>,
    high_watermark: watch::Sender<i64>,
}

impl Partition {
    pub fn new(
        topic: String,
        index: i32,
        log: PartitionLog,
        metrics: Metrics,
        replica: PartitionRecord,
        node_id: i32,
        durability: Durability,
    ) -> Arc<Partition> {
        let synced = log.synced_offset();
        let end = log.log_end_offset();
        let start = log.log_start_offset();
        let start_hw = match durability {
            Durability::SyncData => synced.min(end),
            Durability::Buffered => end,
        };
        let p = Arc::new(Partition {
            topic,
            index,
            node_id,
            log: RwLock::new(log),
            appended: Notify::new(),
            visible: Notify::new(),
            commit: GroupCommit::new(synced, metrics),
            durability,
            replica: RwLock::new(PartitionRecord::new(Vec::new())),
            state: Mutex::new(State {
                role: Role::Idle,
                followers: std::collections::HashMap::new(),
                needs_truncation: false,
            }),
            // A replicated partition starts from what it knows for sure: a
            // leader raises it as in-sync followers report, a follower
            // learns it from the leader.
            high_watermark: watch::Sender::new(if replica.replicas.len() > 1 {
                start
            } else {
                start_hw
            }),
        });
        p.set_replica(replica);
        p
    }

    pub fn node_id(&self) -> i32 {
        self.node_id
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

    pub fn role(&self) -> Role {
        self.state.lock().role
    }

    pub fn is_leader(&self) -> bool {
        matches!(self.role(), Role::Leader { .. })
    }

    pub fn durability(&self) -> Durability {
        self.durability
    }

    /// Takes metadata's latest word on the partition: a new leader epoch
    /// makes this node leader or follower; an ISR change may move the high
    /// watermark.
    pub fn set_replica(&self, record: PartitionRecord) {
        let me = self.node_id;
        let role = if record.leader == me {
            Role::Leader {
                epoch: record.leader_epoch,
            }
        } else if record.leader >= 0 {
            Role::Follower {
                leader: record.leader,
                epoch: record.leader_epoch,
            }
        } else {
            Role::Idle
        };
        let previous = {
            let mut replica = self.replica.write();
            let mut state = self.state.lock();
            *replica = record.clone();
            let previous = state.role;
            if previous != role {
                state.role = role;
                match role {
                    Role::Leader { .. } => {
                        state.followers = record
                            .replicas
                            .iter()
                            .filter(|r| **r != me)
                            .map(|r| (*r, FollowerProgress::unknown()))
                            .collect();
                        state.needs_truncation = false;
                    }
                    Role::Follower { .. } => {
                        state.followers.clear();
                        state.needs_truncation = true;
                    }
                    Role::Idle => state.followers.clear(),
                }
            } else if let Role::Leader { .. } = role {
                // Replicas may have been reassigned.
                state.followers.retain(|r, _| record.replicas.contains(r));
                for r in record.replicas.iter().filter(|r| **r != me) {
                    state
                        .followers
                        .entry(*r)
                        .or_insert_with(FollowerProgress::unknown);
                }
            }
            previous
        };
        if let Role::Leader { epoch } = role {
            if previous != role {
                // The epoch starts at our log end: followers asking where
                // the previous epoch ended learn it from this entry.
                if let Err(e) = self.log.write().assign_epoch(epoch) {
                    tracing::warn!(topic = %self.topic, partition = self.index, error = %e,
                        "could not record the new leader epoch");
                }
                tracing::info!(topic = %self.topic, partition = self.index, epoch, "leading");
            }
            self.recompute_high_watermark();
        } else if previous != role {
            if let Role::Follower { leader, epoch } = role {
                tracing::info!(topic = %self.topic, partition = self.index, leader, epoch, "following");
            }
        }
        // Producers waiting for acks=all re-check leadership and the ISR.
        self.visible.notify_waiters();
    }

    /// Validates and appends a produce request's record set under this
    /// node's leader epoch; refused unless this node leads.
    pub fn append(&self, records: &mut [u8], now_ms: i64) -> Result<AppendInfo> {
        self.append_as(records, now_ms, veil_log::AppendOrigin::Client)
    }

    /// Appends transaction markers (control batches) the coordinator writes.
    pub fn append_marker(&self, records: &mut [u8], now_ms: i64) -> Result<AppendInfo> {
        self.append_as(records, now_ms, veil_log::AppendOrigin::Coordinator)
    }

    fn append_as(
        &self,
        records: &mut [u8],
        now_ms: i64,
        origin: veil_log::AppendOrigin,
    ) -> Result<AppendInfo> {
        let replica = self.replica.read();
        if replica.leader != self.node_id {
            return Err(Error::NotLeader {
                leader: replica.leader,
                leader_epoch: replica.leader_epoch,
            });
        }
        let info = self
            .log
            .write()
            .append_as(records, replica.leader_epoch, now_ms, origin)?;
        drop(replica);
        self.appended.notify_waiters();
        if self.durability == Durability::Buffered {
            self.recompute_high_watermark();
        }
        Ok(info)
    }

    /// Resolves once everything up to `end_offset` (exclusive) is fsynced.
    pub async fn wait_durable(self: &Arc<Self>, end_offset: i64) -> Result<()> {
        GroupCommit::wait(self, end_offset).await
    }

    /// What this replica counts as stored: its fsynced offset, or its log
    /// end with `flush = "none"`.
    fn local_end(&self) -> i64 {
        let end = self.log.read().log_end_offset();
        match self.durability {
            Durability::SyncData => self.commit.durable_offset().min(end),
            Durability::Buffered => end,
        }
    }

    /// The last stable offset: below it every transaction is decided
    /// (the high watermark, or the first offset of the oldest open
    /// transaction if lower).
    pub fn last_stable_offset(&self) -> i64 {
        let high_watermark = self.high_watermark();
        self.log
            .read()
            .first_unstable_offset()
            .map_or(high_watermark, |o| o.min(high_watermark))
    }

    /// Reads whole batches below the last stable offset, with the aborted
    /// transactions they overlap (`read_committed` consumers).
    pub fn read_committed(
        &self,
        offset: i64,
        max_bytes: usize,
        min_one: bool,
    ) -> Result<CommittedRead> {
        let high_watermark = self.high_watermark();
        let log = self.log.read();
        let stable = log
            .first_unstable_offset()
            .map_or(high_watermark, |o| o.min(high_watermark));
        let r = log.read(offset, max_bytes, stable, min_one)?;
        let end = records_end(&r.records).unwrap_or(offset);
        let aborted = if end > offset {
            log.aborted_transactions(offset, end)
        } else {
            Vec::new()
        };
        Ok(CommittedRead {
            records: r.records,
            log_start_offset: r.log_start_offset,
            aborted,
        })
    }

    /// Reads whole batches below the high watermark (consumers).
    pub fn read(&self, offset: i64, max_bytes: usize, min_one: bool) -> Result<ReadResult> {
        let high_watermark = self.high_watermark();
        let log = self.log.read();
        let mut r = log.read(offset, max_bytes, high_watermark, min_one)?;
        // Consumers see the log as ending at the high watermark.
        r.log_end_offset = r.log_end_offset.min(high_watermark);
        Ok(r)
    }

    /// Reads whole batches up to the log end (a follower replicating).
    pub fn read_for_follower(&self, offset: i64, max_bytes: usize) -> Result<ReadResult> {
        Ok(self.log.read().read(offset, max_bytes, i64::MAX, true)?)
    }

    /// The high watermark: offsets below it are committed and visible.
    pub fn high_watermark(&self) -> i64 {
        *self.high_watermark.borrow()
    }

    /// Follows the high watermark: a receiver is told of every move, so a
    /// reader tailing the partition (an MQTT subscriber) misses no wake-up.
    pub fn watch_high_watermark(&self) -> watch::Receiver<i64> {
        self.high_watermark.subscribe()
    }

    pub fn log_end_offset(&self) -> i64 {
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

    /// A future that completes when the high watermark or the partition's
    /// replica state next changes; create it before checking.
    pub fn visible_changed(&self) -> tokio::sync::futures::Notified<'_> {
        self.visible.notified()
    }

    /// A consumer waits for records appended but not yet durable: have
    /// group commit sync them now rather than at the next flush interval.
    pub fn expedite(self: &Arc<Self>) {
        if self.durability == Durability::SyncData
            && self.is_leader()
            && self.log_end_offset() > self.commit.durable_offset()
        {
            GroupCommit::kick(self);
        }
    }

    /// Runs `f` with shared access to the log (offset lookups and the like).
    pub fn with_log<T>(&self, f: impl FnOnce(&PartitionLog) -> T) -> T {
        f(&self.log.read())
    }

    /// Runs `f` with exclusive access to the log (retention, configs, deletes).
    pub fn with_log_mut<T>(&self, f: impl FnOnce(&mut PartitionLog) -> T) -> T {
        f(&mut self.log.write())
    }

    /// Fsyncs everything appended so far (shutdown, the periodic flush).
    pub fn sync(&self) -> Result<()> {
        let end = {
            let mut log = self.log.write();
            if log.is_poisoned() {
                return Err(Error::Poisoned);
            }
            log.sync()?;
            log.synced_offset()
        };
        self.commit.synced(end);
        self.recompute_high_watermark();
        Ok(())
    }

    /// Sets the high watermark (never backwards) and wakes its waiters.
    fn raise_high_watermark(&self, to: i64) {
        let moved = self.high_watermark.send_if_modified(|hw| {
            if to > *hw {
                *hw = to;
                true
            } else {
                false
            }
        });
        if moved {
            self.visible.notify_waiters();
        }
    }
}

/// What a read for a consumer returns: records (and, for `read_committed`,
/// the aborted transactions they overlap).
#[derive(Debug, Default)]
pub struct CommittedRead {
    pub records: Vec<u8>,
    pub log_start_offset: i64,
    pub aborted: Vec<veil_log::AbortedTxn>,
}

impl From<ReadResult> for CommittedRead {
    fn from(r: ReadResult) -> CommittedRead {
        CommittedRead {
            records: r.records,
            log_start_offset: r.log_start_offset,
            aborted: Vec::new(),
        }
    }
}

/// The offset after the last whole batch of `records`.
fn records_end(records: &[u8]) -> Option<i64> {
    let mut pos = 0usize;
    let mut end = None;
    while let Ok(h) = veil_log::BatchHeader::parse(&records[pos..]) {
        let size = h.total_size();
        if size == 0 || pos + size > records.len() {
            break;
        }
        end = Some(h.last_offset() + 1);
        pos += size;
    }
    end
}
