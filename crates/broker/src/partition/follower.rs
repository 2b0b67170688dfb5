//! The follower's side: appending what the leader sent, learning the high
//! watermark and log start from it, and cutting a divergent suffix after a
//! leader change.

use std::sync::Arc;

use veil_log::AppendInfo;

use super::{Partition, Role};
use crate::error::{Error, Result};

impl Partition {
    /// Whether the log may hold a suffix the current leader does not have
    /// (set on becoming follower, cleared once truncated).
    pub fn needs_truncation(&self) -> bool {
        let state = self.state.lock();
        matches!(state.role, Role::Follower { .. }) && state.needs_truncation
    }

    /// The leader says our log runs past its own: cut it before fetching again.
    pub fn mark_diverged(&self, epoch: i32) {
        let mut state = self.state.lock();
        if matches!(state.role, Role::Follower { epoch: e, .. } if e == epoch) {
            state.needs_truncation = true;
        }
    }

    /// The leader epoch this follower replicates in, if it follows.
    pub fn following(&self) -> Option<(i32, i32)> {
        match self.state.lock().role {
            Role::Follower { leader, epoch } => Some((leader, epoch)),
            _ => None,
        }
    }

    /// Cuts the log to `offset` (what the leader answered to
    /// OffsetForLeaderEpoch) for leader epoch `epoch`, unless the role
    /// changed meanwhile.
    pub fn truncate_for_leader(&self, epoch: i32, offset: i64, now_ms: i64) -> Result<()> {
        if self.following().map(|(_, e)| e) != Some(epoch) {
            return Ok(());
        }
        let end = self.log.write().truncate_to(offset, now_ms)?;
        self.high_watermark.send_if_modified(|hw| {
            let lowered = *hw > end;
            if lowered {
                *hw = end;
            }
            lowered
        });
        self.commit.truncated(end);
        let mut state = self.state.lock();
        if matches!(state.role, Role::Follower { epoch: e, .. } if e == epoch) {
            state.needs_truncation = false;
        }
        Ok(())
    }

    /// This replica's log ends before the leader's log start: empty it and
    /// restart at `offset`.
    pub fn restart_at(&self, epoch: i32, offset: i64, now_ms: i64) -> Result<()> {
        if self.following().map(|(_, e)| e) != Some(epoch) {
            return Ok(());
        }
        self.log
            .write()
            .truncate_fully_and_start_at(offset, now_ms)?;
        self.commit.truncated(offset);
        self.high_watermark.send_replace(offset);
        Ok(())
    }

    /// Appends batches the leader sent (offsets and epochs as they are).
    pub fn append_replicated(&self, records: &[u8], epoch: i32, now_ms: i64) -> Result<AppendInfo> {
        match self.following() {
            Some((_, e)) if e == epoch => {}
            _ => {
                let replica = self.replica.read();
                return Err(Error::NotLeader {
                    leader: replica.leader,
                    leader_epoch: replica.leader_epoch,
                });
            }
        }
        let info = self.log.write().append_replicated(records, now_ms)?;
        self.appended.notify_waiters();
        Ok(info)
    }

    /// The leader's high watermark, as far as this replica has the data.
    pub fn learn_high_watermark(&self, leader_high_watermark: i64) {
        let end = self.log_end_offset();
        self.raise_high_watermark(leader_high_watermark.min(end));
    }

    /// The leader deleted records below `offset`: so does this replica.
    pub fn learn_log_start(&self, offset: i64) {
        let mut log = self.log.write();
        if offset > log.log_start_offset() {
            let target = offset.min(log.log_end_offset());
            if let Err(e) = log.delete_records_before(target) {
                tracing::warn!(topic = %self.topic, partition = self.index, error = %e,
                    "could not follow the leader's log start offset");
            }
        }
    }

    /// Waits until what was appended is durable, if this replica's
    /// durability needs it (a follower reports only durable offsets).
    pub async fn make_durable(self: &Arc<Self>) -> Result<()> {
        if self.durability == super::Durability::SyncData {
            let end = self.log_end_offset();
            self.wait_durable(end).await?;
        }
        Ok(())
    }
}
