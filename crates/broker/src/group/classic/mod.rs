//! One classic-protocol consumer group as a pure state machine.
//!
//! Nothing here sleeps or does I/O: every operation takes `now` (from the
//! injected clock) and appends the JoinGroup/SyncGroup responses it
//! completes to `out`. Timers are deadlines checked by [`Group::advance`],
//! which every operation and the coordinator's tick call. The transitions
//! follow Kafka's classic `GroupCoordinator`: Empty → PreparingRebalance →
//! CompletingRebalance → Stable, back to PreparingRebalance on membership
//! or metadata change, and Empty when the last member goes.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use kafka_protocol::ResponseError;

mod lifecycle;

use super::member::{JoinRequest, JoinResult, JoinedMember, Member, Protocol, Reply, SyncResult};

/// How long a member that joined but never got a JoinGroup response may
/// stay without rejoining (Kafka's `NewMemberJoinTimeoutMs`).
pub const NEW_MEMBER_JOIN_TIMEOUT_MS: i64 = 5 * 60 * 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GroupState {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
    Dead,
}

impl GroupState {
    /// The name Kafka uses in DescribeGroups and ListGroups.
    pub fn name(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
            GroupState::Dead => "Dead",
        }
    }
}

/// The first rebalance of an empty group waits `group.initial.rebalance.delay.ms`
/// and extends the wait while new members keep arriving, up to the rebalance timeout.
#[derive(Debug, Clone, Copy)]
struct InitialDelay {
    delay_ms: i64,
    remaining_ms: i64,
}

#[derive(Debug, Clone)]
pub struct Group {
    pub id: String,
    pub state: GroupState,
    /// When `state` was entered; offsets of an Empty group expire from here.
    pub state_timestamp: i64,
    pub generation_id: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub leader: Option<String>,
    members: BTreeMap<String, Member>,
    /// KIP-394: ids handed out with MEMBER_ID_REQUIRED, not joined yet → expiry.
    pending: BTreeMap<String, i64>,
    /// `group.instance.id` → member id.
    static_members: BTreeMap<String, String>,
    /// Members that got a JoinGroup response but have not synced yet.
    pending_sync: BTreeSet<String>,
    join_deadline: Option<i64>,
    initial_delay: Option<InitialDelay>,
    new_member_added: bool,
    sync_deadline: Option<i64>,
    initial_rebalance_delay_ms: i64,
    /// Metadata worth persisting changed (became Stable or Empty, or a
    /// static member was replaced); the coordinator takes and clears it.
    pub(crate) dirty: bool,
}

impl Group {
    pub fn new(id: &str, now: i64, initial_rebalance_delay_ms: i64) -> Group {
        Group {
            id: id.to_owned(),
            state: GroupState::Empty,
            state_timestamp: now,
            generation_id: 0,
            protocol_type: None,
            protocol_name: None,
            leader: None,
            members: BTreeMap::new(),
            pending: BTreeMap::new(),
            static_members: BTreeMap::new(),
            pending_sync: BTreeSet::new(),
            join_deadline: None,
            initial_delay: None,
            new_member_added: false,
            sync_deadline: None,
            initial_rebalance_delay_ms,
            dirty: false,
        }
    }

    /// A group loaded from the store: Stable with its members if it had any.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn restored(
        id: &str,
        now: i64,
        initial_rebalance_delay_ms: i64,
        generation_id: i32,
        protocol_type: Option<String>,
        protocol_name: Option<String>,
        leader: Option<String>,
        state_timestamp: i64,
        members: Vec<Member>,
    ) -> Group {
        let mut g = Group::new(id, now, initial_rebalance_delay_ms);
        g.generation_id = generation_id;
        g.protocol_type = protocol_type;
        g.protocol_name = protocol_name;
        g.state_timestamp = state_timestamp;
        for mut m in members {
            m.heartbeat_deadline = now + i64::from(m.session_timeout_ms);
            if let Some(instance) = &m.instance_id {
                g.static_members.insert(instance.clone(), m.id.clone());
            }
            g.members.insert(m.id.clone(), m);
        }
        if !g.members.is_empty() {
            g.state = GroupState::Stable;
            g.leader = leader
                .filter(|l| g.members.contains_key(l))
                .or_else(|| g.members.keys().next().cloned());
        }
        g
    }

    pub fn members(&self) -> impl Iterator<Item = &Member> {
        self.members.values()
    }

    pub fn member(&self, id: &str) -> Option<&Member> {
        self.members.get(id)
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    fn is_static_member_fenced(&self, instance_id: Option<&str>, member_id: &str) -> bool {
        instance_id
            .and_then(|i| self.static_members.get(i))
            .is_some_and(|current| current != member_id)
    }

    fn rebalance_timeout_ms(&self) -> i64 {
        self.members
            .values()
            .map(|m| i64::from(m.rebalance_timeout_ms))
            .max()
            .unwrap_or(0)
    }

    fn transition(&mut self, state: GroupState, now: i64) {
        self.state = state;
        self.state_timestamp = now;
    }

    fn supports_protocols(&self, protocol_type: &str, protocols: &[Protocol]) -> bool {
        if self.members.is_empty() {
            return !protocol_type.is_empty() && !protocols.is_empty();
        }
        self.protocol_type.as_deref() == Some(protocol_type)
            && protocols.iter().any(|p| self.supported_by_all(&p.name))
    }

    fn supported_by_all(&self, protocol: &str) -> bool {
        self.members
            .values()
            .all(|m| m.protocols.iter().any(|p| p.name == protocol))
    }

    /// The protocol all members support with the most first-choice votes
    /// (ties go to the smallest name, so the choice is deterministic).
    pub fn select_protocol(&self) -> Option<String> {
        let mut votes: BTreeMap<&str, usize> = BTreeMap::new();
        for m in self.members.values() {
            if let Some(p) = m.protocols.iter().find(|p| self.supported_by_all(&p.name)) {
                *votes.entry(p.name.as_str()).or_default() += 1;
            }
        }
        let best = votes.values().copied().max()?;
        votes
            .into_iter()
            .find(|(_, v)| *v == best)
            .map(|(name, _)| name.to_owned())
    }

    fn current_member_metadata(&self) -> Vec<JoinedMember> {
        let protocol = self.protocol_name.clone().unwrap_or_default();
        self.members
            .values()
            .map(|m| JoinedMember {
                member_id: m.id.clone(),
                instance_id: m.instance_id.clone(),
                metadata: m.metadata_for(&protocol),
            })
            .collect()
    }

    fn join_result(&self, member_id: &str, with_members: bool) -> JoinResult {
        JoinResult {
            error: None,
            member_id: member_id.to_owned(),
            generation_id: self.generation_id,
            protocol_type: self.protocol_type.clone(),
            protocol_name: self.protocol_name.clone(),
            leader: self.leader.clone().unwrap_or_default(),
            members: if with_members {
                self.current_member_metadata()
            } else {
                Vec::new()
            },
        }
    }

    // ---- JoinGroup ----

    pub fn join(&mut self, req: JoinRequest, now: i64, out: &mut Vec<Reply>) {
        self.advance(now, out);
        let waiter = req.waiter;
        let reply = |out: &mut Vec<Reply>, id: &str, e: ResponseError| {
            out.push(Reply::Join(waiter, JoinResult::error(id, e)));
        };
        if self.state == GroupState::Dead {
            reply(out, &req.member_id, ResponseError::CoordinatorNotAvailable);
        } else if !self.supports_protocols(&req.protocol_type, &req.protocols) {
            reply(
                out,
                &req.member_id,
                ResponseError::InconsistentGroupProtocol,
            );
        } else if req.member_id.is_empty() {
            self.join_new_member(req, now, out);
        } else {
            self.join_known_member(req, now, out);
        }
        self.advance(now, out);
    }

    fn join_new_member(&mut self, mut req: JoinRequest, now: i64, out: &mut Vec<Reply>) {
        let new_id = std::mem::take(&mut req.fresh_member_id);
        if let Some(instance) = req.instance_id.clone() {
            match self.static_members.get(&instance).cloned() {
                Some(old_id) => {
                    self.replace_static_member(&instance, &old_id, &new_id, req, now, out);
                }
                None => self.add_member_and_rebalance(req, new_id, now, out),
            }
        } else if req.require_known_member_id {
            self.pending
                .insert(new_id.clone(), now + i64::from(req.session_timeout_ms));
            out.push(Reply::Join(
                req.waiter,
                JoinResult::error(&new_id, ResponseError::MemberIdRequired),
            ));
        } else {
            self.add_member_and_rebalance(req, new_id, now, out);
        }
    }

    fn join_known_member(&mut self, req: JoinRequest, now: i64, out: &mut Vec<Reply>) {
        let id = req.member_id.clone();
        if self.pending.contains_key(&id) {
            // A pending member is never static: instance ids skip KIP-394.
            self.add_member_and_rebalance(req, id, now, out);
            return;
        }
        let instance = req.instance_id.as_deref();
        if self.is_static_member_fenced(instance, &id) {
            out.push(Reply::Join(
                req.waiter,
                JoinResult::error(&id, ResponseError::FencedInstanceId),
            ));
            return;
        }
        let unknown_instance = instance.is_some_and(|i| !self.static_members.contains_key(i));
        let Some(member) = self.members.get(&id).filter(|_| !unknown_instance) else {
            out.push(Reply::Join(
                req.waiter,
                JoinResult::error(&id, ResponseError::UnknownMemberId),
            ));
            return;
        };
        let same_metadata = member.matches(&req.protocols);
        let is_leader = self.leader.as_deref() == Some(id.as_str());
        match self.state {
            GroupState::PreparingRebalance => self.update_member_and_rebalance(req, now, out),
            GroupState::CompletingRebalance if same_metadata => {
                // A retry of a JoinGroup whose response was lost: answer the current generation.
                out.push(Reply::Join(req.waiter, self.join_result(&id, is_leader)));
            }
            GroupState::Stable if same_metadata && !is_leader => {
                out.push(Reply::Join(req.waiter, self.join_result(&id, false)));
            }
            // The leader rejoining a stable group asks for a rebalance
            // (e.g. topic metadata changed); changed metadata does too.
            GroupState::CompletingRebalance | GroupState::Stable => {
                self.update_member_and_rebalance(req, now, out);
            }
            GroupState::Empty | GroupState::Dead => {
                out.push(Reply::Join(
                    req.waiter,
                    JoinResult::error(&id, ResponseError::UnknownMemberId),
                ));
            }
        }
    }

    fn add_member_and_rebalance(
        &mut self,
        req: JoinRequest,
        id: String,
        now: i64,
        out: &mut Vec<Reply>,
    ) {
        self.pending.remove(&id);
        if self.state == GroupState::PreparingRebalance && self.generation_id == 0 {
            self.new_member_added = true;
        }
        if self.members.is_empty() {
            self.protocol_type = Some(req.protocol_type.clone());
        }
        if let Some(instance) = &req.instance_id {
            self.static_members.insert(instance.clone(), id.clone());
        }
        if self.leader.is_none() {
            self.leader = Some(id.clone());
        }
        self.members.insert(
            id.clone(),
            Member {
                id,
                instance_id: req.instance_id,
                client_id: req.client_id,
                client_host: req.client_host,
                rebalance_timeout_ms: req.rebalance_timeout_ms,
                session_timeout_ms: req.session_timeout_ms,
                protocols: req.protocols,
                assignment: Bytes::new(),
                awaiting_join: Some(req.waiter),
                awaiting_sync: None,
                is_new: true,
                heartbeat_deadline: now + NEW_MEMBER_JOIN_TIMEOUT_MS,
            },
        );
        self.maybe_prepare_rebalance(now, out);
    }

    fn update_member_and_rebalance(&mut self, req: JoinRequest, now: i64, out: &mut Vec<Reply>) {
        if let Some(m) = self.members.get_mut(&req.member_id) {
            m.protocols = req.protocols;
            m.rebalance_timeout_ms = req.rebalance_timeout_ms;
            m.session_timeout_ms = req.session_timeout_ms;
            if let Some(old) = m.awaiting_join.replace(req.waiter) {
                out.push(Reply::Join(
                    old,
                    JoinResult::error(&req.member_id, ResponseError::RebalanceInProgress),
                ));
            }
        }
        self.maybe_prepare_rebalance(now, out);
    }

    /// KIP-345: a static member restarted with a new member id takes over the
    /// old one's place and assignment; the old id is fenced.
    fn replace_static_member(
        &mut self,
        instance: &str,
        old_id: &str,
        new_id: &str,
        req: JoinRequest,
        now: i64,
        out: &mut Vec<Reply>,
    ) {
        let Some(mut member) = self.members.remove(old_id) else {
            return;
        };
        if let Some(w) = member.awaiting_join.take() {
            out.push(Reply::Join(
                w,
                JoinResult::error(old_id, ResponseError::FencedInstanceId),
            ));
        }
        if let Some(w) = member.awaiting_sync.take() {
            out.push(Reply::Sync(
                w,
                SyncResult::error(ResponseError::FencedInstanceId),
            ));
        }
        let previous_leader = self.leader.clone().unwrap_or_default();
        if self.leader.as_deref() == Some(old_id) {
            self.leader = Some(new_id.to_owned());
        }
        if self.pending_sync.remove(old_id) {
            self.pending_sync.insert(new_id.to_owned());
        }
        self.static_members
            .insert(instance.to_owned(), new_id.to_owned());
        new_id.clone_into(&mut member.id);
        member.protocols = req.protocols;
        member.rebalance_timeout_ms = req.rebalance_timeout_ms;
        member.session_timeout_ms = req.session_timeout_ms;
        member.heartbeat_deadline = now + i64::from(req.session_timeout_ms);
        member.awaiting_join = Some(req.waiter);
        self.members.insert(new_id.to_owned(), member);
        match self.state {
            GroupState::Stable if self.select_protocol() == self.protocol_name => {
                // No rebalance: answer with the *previous* leader id so a
                // restarted leader does not compute an assignment nobody uses.
                self.dirty = true;
                if let Some(m) = self.members.get_mut(new_id) {
                    m.awaiting_join = None;
                }
                let mut result = self.join_result(new_id, false);
                result.leader = previous_leader;
                out.push(Reply::Join(req.waiter, result));
            }
            // The leader may already have assigned to the old id: rebalance.
            GroupState::Stable | GroupState::CompletingRebalance => {
                self.prepare_rebalance(now, out);
            }
            GroupState::PreparingRebalance | GroupState::Empty | GroupState::Dead => {}
        }
    }

    fn maybe_prepare_rebalance(&mut self, now: i64, out: &mut Vec<Reply>) {
        if matches!(
            self.state,
            GroupState::Stable | GroupState::CompletingRebalance | GroupState::Empty
        ) {
            self.prepare_rebalance(now, out);
        }
    }

    fn prepare_rebalance(&mut self, now: i64, out: &mut Vec<Reply>) {
        if self.state == GroupState::CompletingRebalance {
            self.reset_and_propagate_assignment_error(ResponseError::RebalanceInProgress, out);
        }
        self.sync_deadline = None;
        let rebalance_timeout = self.rebalance_timeout_ms();
        if self.state == GroupState::Empty {
            let delay = self.initial_rebalance_delay_ms.min(rebalance_timeout);
            self.initial_delay = Some(InitialDelay {
                delay_ms: delay,
                remaining_ms: (rebalance_timeout - self.initial_rebalance_delay_ms).max(0),
            });
            self.join_deadline = Some(now + delay);
        } else {
            self.initial_delay = None;
            self.join_deadline = Some(now + rebalance_timeout);
        }
        self.new_member_added = false;
        self.transition(GroupState::PreparingRebalance, now);
    }

    fn all_members_joined(&self) -> bool {
        self.pending.is_empty() && self.members.values().all(|m| m.awaiting_join.is_some())
    }

    fn complete_join(&mut self, now: i64, out: &mut Vec<Reply>) {
        self.join_deadline = None;
        self.initial_delay = None;
        // Dynamic members that did not rejoin in time are gone; static ones
        // stay until their session times out.
        let failed: Vec<String> = self
            .members
            .values()
            .filter(|m| m.awaiting_join.is_none() && m.instance_id.is_none())
            .map(|m| m.id.clone())
            .collect();
        for id in failed {
            self.remove(&id, out);
        }
        if !self.members.is_empty() && !self.elect_joined_leader() {
            // Nobody rejoined: wait another round for session timeouts.
            self.join_deadline = Some(now + self.rebalance_timeout_ms());
            return;
        }
        self.generation_id += 1;
        self.pending_sync.clear();
        if self.members.is_empty() {
            self.protocol_name = None;
            self.transition(GroupState::Empty, now);
            self.dirty = true;
            return;
        }
        self.protocol_name = self.select_protocol();
        self.transition(GroupState::CompletingRebalance, now);
        let ids: Vec<String> = self.members.keys().cloned().collect();
        for id in ids {
            let is_leader = self.leader.as_deref() == Some(id.as_str());
            let result = self.join_result(&id, is_leader);
            if let Some(m) = self.members.get_mut(&id) {
                if let Some(w) = m.awaiting_join.take() {
                    out.push(Reply::Join(w, result));
                }
                m.heartbeat_deadline = now + i64::from(m.session_timeout_ms);
                m.is_new = false;
            }
            self.pending_sync.insert(id);
        }
        self.sync_deadline = Some(now + self.rebalance_timeout_ms());
    }

    /// Keeps the leader if it rejoined, else picks a member that did.
    fn elect_joined_leader(&mut self) -> bool {
        let joined =
            |g: &Group, id: &str| g.members.get(id).is_some_and(|m| m.awaiting_join.is_some());
        if self.leader.as_deref().is_some_and(|l| joined(self, l)) {
            return true;
        }
        let next = self
            .members
            .values()
            .find(|m| m.awaiting_join.is_some())
            .map(|m| m.id.clone());
        let found = next.is_some();
        self.leader = next;
        found
    }
}
