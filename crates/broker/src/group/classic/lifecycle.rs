//! SyncGroup, Heartbeat, LeaveGroup and the timers of a classic group: the
//! half of the state machine that runs once members have joined.

use std::collections::BTreeMap;

use bytes::Bytes;
use kafka_protocol::ResponseError;

use super::{Group, GroupState, InitialDelay};
use crate::group::member::{JoinResult, Reply, SyncResult, Waiter};

impl Group {
    // ---- SyncGroup ----

    #[allow(clippy::too_many_arguments)]
    pub fn sync(
        &mut self,
        member_id: &str,
        instance_id: Option<&str>,
        generation_id: i32,
        protocol_type: Option<&str>,
        protocol_name: Option<&str>,
        assignments: Vec<(String, Bytes)>,
        waiter: Waiter,
        now: i64,
        out: &mut Vec<Reply>,
    ) {
        self.advance(now, out);
        let fail = |out: &mut Vec<Reply>, e| out.push(Reply::Sync(waiter, SyncResult::error(e)));
        if self.state == GroupState::Dead {
            fail(out, ResponseError::CoordinatorNotAvailable);
        } else if self.is_static_member_fenced(instance_id, member_id) {
            fail(out, ResponseError::FencedInstanceId);
        } else if !self.members.contains_key(member_id) {
            fail(out, ResponseError::UnknownMemberId);
        } else if generation_id != self.generation_id {
            fail(out, ResponseError::IllegalGeneration);
        } else if protocol_type.is_some_and(|t| self.protocol_type.as_deref() != Some(t))
            || protocol_name.is_some_and(|n| self.protocol_name.as_deref() != Some(n))
        {
            fail(out, ResponseError::InconsistentGroupProtocol);
        } else {
            match self.state {
                GroupState::Empty | GroupState::Dead => fail(out, ResponseError::UnknownMemberId),
                GroupState::PreparingRebalance => fail(out, ResponseError::RebalanceInProgress),
                GroupState::CompletingRebalance => {
                    self.pending_sync.remove(member_id);
                    if let Some(m) = self.members.get_mut(member_id) {
                        if let Some(old) = m.awaiting_sync.replace(waiter) {
                            out.push(Reply::Sync(
                                old,
                                SyncResult::error(ResponseError::RebalanceInProgress),
                            ));
                        }
                    }
                    if self.leader.as_deref() == Some(member_id) {
                        let mut given: BTreeMap<String, Bytes> = assignments.into_iter().collect();
                        self.set_and_propagate_assignment(&mut given, now, out);
                        self.transition(GroupState::Stable, now);
                        self.dirty = true;
                    }
                }
                GroupState::Stable => {
                    self.pending_sync.remove(member_id);
                    let (protocol_type, protocol_name) =
                        (self.protocol_type.clone(), self.protocol_name.clone());
                    if let Some(m) = self.members.get_mut(member_id) {
                        m.heartbeat_deadline = now + i64::from(m.session_timeout_ms);
                        out.push(Reply::Sync(
                            waiter,
                            SyncResult {
                                error: None,
                                protocol_type,
                                protocol_name,
                                assignment: m.assignment.clone(),
                            },
                        ));
                    }
                }
            }
        }
        self.advance(now, out);
    }

    pub(super) fn set_and_propagate_assignment(
        &mut self,
        given: &mut BTreeMap<String, Bytes>,
        now: i64,
        out: &mut Vec<Reply>,
    ) {
        let (protocol_type, protocol_name) =
            (self.protocol_type.clone(), self.protocol_name.clone());
        for m in self.members.values_mut() {
            // Members the leader left out get an empty assignment; ids the
            // leader invented are ignored.
            m.assignment = given.remove(&m.id).unwrap_or_default();
            if let Some(w) = m.awaiting_sync.take() {
                out.push(Reply::Sync(
                    w,
                    SyncResult {
                        error: None,
                        protocol_type: protocol_type.clone(),
                        protocol_name: protocol_name.clone(),
                        assignment: m.assignment.clone(),
                    },
                ));
                m.heartbeat_deadline = now + i64::from(m.session_timeout_ms);
            }
        }
    }

    pub(super) fn reset_and_propagate_assignment_error(
        &mut self,
        error: ResponseError,
        out: &mut Vec<Reply>,
    ) {
        for m in self.members.values_mut() {
            m.assignment = Bytes::new();
            if let Some(w) = m.awaiting_sync.take() {
                out.push(Reply::Sync(w, SyncResult::error(error)));
            }
        }
    }

    // ---- Heartbeat, LeaveGroup, commits ----

    pub fn heartbeat(
        &mut self,
        member_id: &str,
        instance_id: Option<&str>,
        generation_id: i32,
        now: i64,
        out: &mut Vec<Reply>,
    ) -> Option<ResponseError> {
        self.advance(now, out);
        let result = self
            .check_member(member_id, instance_id, generation_id)
            .err()
            .or_else(|| match self.state {
                GroupState::Empty | GroupState::Dead => Some(ResponseError::UnknownMemberId),
                state => {
                    self.touch(member_id, now);
                    (state == GroupState::PreparingRebalance)
                        .then_some(ResponseError::RebalanceInProgress)
                }
            });
        self.advance(now, out);
        result
    }

    /// The member/generation checks Heartbeat and OffsetCommit share.
    pub(super) fn check_member(
        &self,
        member_id: &str,
        instance_id: Option<&str>,
        generation_id: i32,
    ) -> Result<(), ResponseError> {
        if self.state == GroupState::Dead {
            Err(ResponseError::CoordinatorNotAvailable)
        } else if self.is_static_member_fenced(instance_id, member_id) {
            Err(ResponseError::FencedInstanceId)
        } else if !self.members.contains_key(member_id) {
            Err(ResponseError::UnknownMemberId)
        } else if generation_id != self.generation_id {
            Err(ResponseError::IllegalGeneration)
        } else {
            Ok(())
        }
    }

    /// Whether an OffsetCommit from this member may be stored now. Simple
    /// consumers (generation < 0, no member id) may commit to Empty groups.
    pub fn validate_commit(
        &self,
        member_id: &str,
        instance_id: Option<&str>,
        generation_id: i32,
    ) -> Result<(), ResponseError> {
        if self.state == GroupState::Dead {
            return Err(ResponseError::CoordinatorNotAvailable);
        }
        if generation_id >= 0 || !member_id.is_empty() || instance_id.is_some() {
            self.check_member(member_id, instance_id, generation_id)?;
        } else if self.state != GroupState::Empty {
            return Err(ResponseError::UnknownMemberId);
        }
        match self.state {
            GroupState::CompletingRebalance => Err(ResponseError::RebalanceInProgress),
            _ => Ok(()),
        }
    }

    /// A commit counts as a heartbeat.
    pub fn touch(&mut self, member_id: &str, now: i64) {
        if let Some(m) = self.members.get_mut(member_id) {
            m.heartbeat_deadline = now + i64::from(m.session_timeout_ms);
        }
    }

    /// One member of a LeaveGroup; an empty member id with an instance id
    /// removes that static member (the admin path).
    pub fn leave(
        &mut self,
        member_id: &str,
        instance_id: Option<&str>,
        now: i64,
        out: &mut Vec<Reply>,
    ) -> Option<ResponseError> {
        self.advance(now, out);
        let result = if self.state == GroupState::Dead {
            Some(ResponseError::CoordinatorNotAvailable)
        } else if member_id.is_empty() {
            match instance_id
                .and_then(|i| self.static_members.get(i))
                .cloned()
            {
                Some(current) => {
                    self.remove_member_and_update(&current, now, out);
                    None
                }
                None => Some(ResponseError::UnknownMemberId),
            }
        } else if self.pending.remove(member_id).is_some() {
            None
        } else if self.is_static_member_fenced(instance_id, member_id) {
            Some(ResponseError::FencedInstanceId)
        } else if self.members.contains_key(member_id) {
            self.remove_member_and_update(member_id, now, out);
            None
        } else {
            Some(ResponseError::UnknownMemberId)
        };
        self.advance(now, out);
        result
    }

    pub(super) fn remove(&mut self, id: &str, out: &mut Vec<Reply>) {
        let Some(mut m) = self.members.remove(id) else {
            return;
        };
        // Answer whoever still waits for this member, so no request hangs.
        if let Some(w) = m.awaiting_join.take() {
            out.push(Reply::Join(
                w,
                JoinResult::error(id, ResponseError::UnknownMemberId),
            ));
        }
        if let Some(w) = m.awaiting_sync.take() {
            out.push(Reply::Sync(
                w,
                SyncResult::error(ResponseError::UnknownMemberId),
            ));
        }
        if let Some(instance) = &m.instance_id {
            if self
                .static_members
                .get(instance)
                .is_some_and(|cur| cur == id)
            {
                self.static_members.remove(instance);
            }
        }
        self.pending_sync.remove(id);
        if self.leader.as_deref() == Some(id) {
            self.leader = self.members.keys().next().cloned();
        }
    }

    pub(super) fn remove_member_and_update(&mut self, id: &str, now: i64, out: &mut Vec<Reply>) {
        self.remove(id, out);
        match self.state {
            GroupState::Stable | GroupState::CompletingRebalance => {
                self.maybe_prepare_rebalance(now, out);
            }
            GroupState::PreparingRebalance | GroupState::Empty | GroupState::Dead => {}
        }
    }

    // ---- timers ----

    /// Fires every deadline that has passed: session expiry, expiry of
    /// KIP-394 pending ids, the end of the join phase, and the sync timeout.
    pub fn advance(&mut self, now: i64, out: &mut Vec<Reply>) {
        let expired: Vec<String> = self
            .members
            .values()
            .filter(|m| m.expired(now))
            .map(|m| m.id.clone())
            .collect();
        for id in expired {
            self.remove_member_and_update(&id, now, out);
        }
        self.pending.retain(|_, deadline| *deadline > now);
        if self.state == GroupState::PreparingRebalance {
            let due = self.join_deadline.is_some_and(|d| now >= d);
            match self.initial_delay {
                Some(delay) if due && self.new_member_added && delay.remaining_ms > 0 => {
                    let next = delay.delay_ms.min(delay.remaining_ms);
                    self.initial_delay = Some(InitialDelay {
                        delay_ms: delay.delay_ms,
                        remaining_ms: (delay.remaining_ms - next).max(0),
                    });
                    self.new_member_added = false;
                    self.join_deadline = Some(now + next);
                    if next == 0 {
                        self.complete_join(now, out);
                    }
                }
                // The initial delay waits its time out even if everyone
                // joined; otherwise the join ends when everyone is in.
                Some(_) if due => self.complete_join(now, out),
                None if due || self.all_members_joined() => self.complete_join(now, out),
                Some(_) | None => {}
            }
        }
        if matches!(
            self.state,
            GroupState::CompletingRebalance | GroupState::Stable
        ) && self.sync_deadline.is_some_and(|d| now >= d)
        {
            self.sync_deadline = None;
            if !self.pending_sync.is_empty() {
                let missing: Vec<String> =
                    std::mem::take(&mut self.pending_sync).into_iter().collect();
                for id in missing {
                    self.remove(&id, out);
                }
                self.prepare_rebalance(now, out);
                self.advance(now, out);
            }
        }
    }

    /// The earliest deadline this group waits for, if any.
    pub fn next_deadline(&self) -> Option<i64> {
        self.members
            .values()
            .map(|m| m.heartbeat_deadline)
            .chain(self.pending.values().copied())
            .chain(self.join_deadline)
            .chain(self.sync_deadline)
            .min()
    }

    /// Called when the group is deleted: nobody may wait on it any more.
    pub fn mark_dead(&mut self, now: i64, out: &mut Vec<Reply>) {
        let ids: Vec<String> = self.members.keys().cloned().collect();
        for id in ids {
            self.remove(&id, out);
        }
        self.transition(GroupState::Dead, now);
    }
}
