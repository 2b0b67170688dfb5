//! The leader's side of replication: followers' progress from their
//! fetches, the high watermark, acks=all waits and ISR changes to propose.
//!
//! A follower's fetch offset is what it has stored durably (it fsyncs what
//! it appended before fetching again, unless `flush = "none"`), so the high
//! watermark — the smallest such offset over the in-sync replicas, this one
//! included — is an offset below which every in-sync replica has the data
//! on disk. Shrinking the ISR only counts once metadata has committed it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Partition, Role};
use crate::error::{Error, Result};

/// How often an acks=all wait re-checks the ISR without a wake-up.
const RECHECK: Duration = Duration::from_millis(250);

/// What the leader knows of one follower.
#[derive(Debug, Clone, Copy)]
pub struct FollowerProgress {
    /// The follower's durable log end (its last fetch offset), -1 until it
    /// has fetched from this leader.
    pub log_end_offset: i64,
    /// When the follower last had everything the leader had.
    pub last_caught_up: Instant,
    pub last_fetch: Option<Instant>,
}

impl FollowerProgress {
    /// A follower not heard from yet: it gets a full lag period to catch up.
    pub fn unknown() -> FollowerProgress {
        FollowerProgress {
            log_end_offset: -1,
            last_caught_up: Instant::now(),
            last_fetch: None,
        }
    }
}

impl Partition {
    /// A follower fetched at `fetch_offset`: it holds everything below.
    /// Returns whether it should (re)join the ISR.
    pub fn record_follower_fetch(&self, follower: i32, fetch_offset: i64, now: Instant) -> bool {
        let leader_end = self.log_end_offset();
        let hw = self.high_watermark();
        let isr = self.replica.read().isr.clone();
        let rejoin = {
            let mut state = self.state.lock();
            if !matches!(state.role, Role::Leader { .. }) {
                return false;
            }
            let Some(p) = state.followers.get_mut(&follower) else {
                return false;
            };
            p.log_end_offset = p.log_end_offset.max(fetch_offset).min(leader_end);
            p.last_fetch = Some(now);
            if fetch_offset >= leader_end {
                p.last_caught_up = now;
            }
            !isr.contains(&follower) && p.log_end_offset >= hw
        };
        self.recompute_high_watermark();
        rejoin
    }

    /// Moves the high watermark to what every in-sync replica holds.
    pub fn recompute_high_watermark(&self) {
        let local = self.local_end();
        let isr = self.replica.read().isr.clone();
        let candidate = {
            let state = self.state.lock();
            match state.role {
                Role::Leader { .. } => isr
                    .iter()
                    .filter(|r| **r != self.node_id)
                    .map(|r| state.followers.get(r).map_or(-1, |f| f.log_end_offset))
                    .fold(local, i64::min),
                // A follower's high watermark comes from its leader.
                Role::Follower { .. } | Role::Idle => return,
            }
        };
        if candidate >= 0 {
            self.raise_high_watermark(candidate);
        }
    }

    /// Replicas the leader would drop from the ISR (silent or behind for
    /// longer than `max_lag`) or add back (caught up to the high
    /// watermark), as the new ISR; `None` if it stays as it is.
    pub fn isr_change(&self, now: Instant, max_lag: Duration) -> Option<Vec<i32>> {
        let replica = self.replica.read().clone();
        let hw = self.high_watermark();
        let state = self.state.lock();
        if !matches!(state.role, Role::Leader { .. }) {
            return None;
        }
        let mut isr: Vec<i32> = replica
            .isr
            .iter()
            .copied()
            .filter(|r| {
                *r == self.node_id
                    || state
                        .followers
                        .get(r)
                        .is_some_and(|f| now.duration_since(f.last_caught_up) <= max_lag)
            })
            .collect();
        for r in &replica.replicas {
            let caught_up = state
                .followers
                .get(r)
                .is_some_and(|f| f.log_end_offset >= hw && f.last_fetch.is_some());
            if !isr.contains(r) && *r != self.node_id && caught_up {
                isr.push(*r);
            }
        }
        if !isr.contains(&self.node_id) {
            isr.insert(0, self.node_id);
        }
        let mut old = replica.isr.clone();
        old.sort_unstable();
        let mut new = isr.clone();
        new.sort_unstable();
        (old != new).then_some(isr)
    }

    /// ISR members that can still be counted on: this replica and every
    /// in-sync follower that fetched within `window`. When the controller
    /// cannot shrink the ISR (no quorum), this still tells acks=all that the
    /// dead are gone.
    pub fn live_isr_len(&self, now: Instant, window: Duration) -> usize {
        let isr = self.replica.read().isr.clone();
        let state = self.state.lock();
        isr.iter()
            .filter(|r| {
                **r == self.node_id
                    || state.followers.get(r).is_some_and(|f| {
                        f.last_fetch
                            .map_or(now.duration_since(f.last_caught_up), |t| {
                                now.duration_since(t)
                            })
                            <= window
                    })
            })
            .count()
    }

    /// Each follower's progress, for metrics and the ISR manager.
    pub fn follower_progress(&self) -> Vec<(i32, FollowerProgress)> {
        let state = self.state.lock();
        let mut out: Vec<_> = state.followers.iter().map(|(k, v)| (*k, *v)).collect();
        out.sort_by_key(|(k, _)| *k);
        out
    }

    /// acks=all: resolves once the high watermark covers `end_offset`,
    /// failing if leadership moves, the ISR falls below `min_insync`, or
    /// `deadline` passes first.
    pub async fn wait_replicated(
        self: &Arc<Self>,
        end_offset: i64,
        min_insync: usize,
        live_window: Duration,
        deadline: tokio::time::Instant,
    ) -> Result<()> {
        if self.durability == super::Durability::SyncData {
            // The leader's own fsync is part of it.
            super::GroupCommit::kick(self);
        }
        loop {
            let changed = self.visible_changed();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let replica = self.replica.read().clone();
            if replica.leader != self.node_id {
                return Err(Error::NotLeader {
                    leader: replica.leader,
                    leader_epoch: replica.leader_epoch,
                });
            }
            if self.commit.is_poisoned() {
                return Err(Error::Poisoned);
            }
            if self.high_watermark() >= end_offset {
                return Ok(());
            }
            if replica.isr.len() < min_insync
                || self.live_isr_len(Instant::now(), live_window) < min_insync
            {
                return Err(Error::NotEnoughReplicas { after_append: true });
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(Error::ProduceTimeout);
            }
            // Followers can die without any event here: look again soon.
            let recheck = (tokio::time::Instant::now() + RECHECK).min(deadline);
            let _ = tokio::time::timeout_at(recheck, changed).await;
        }
    }
}
