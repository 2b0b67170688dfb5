//! Every group on this broker, their committed offsets, and the records that
//! make them durable. Pure: operations take `now` and fill an [`Effects`]
//! with the responses they complete and the records to persist; the async
//! layer ([`super::service`]) writes the records and delivers the replies.

use std::collections::BTreeMap;

use bytes::Bytes;
use kafka_protocol::ResponseError;

use super::classic::{Group, GroupState};
use super::member::{JoinRequest, JoinResult, Member, Protocol, Reply, Waiter};
use super::record::{CommittedOffset, GroupRecord, MemberRecord, Record};

/// How often expired offsets are looked for (Kafka: `offsets.retention.check.interval.ms`).
pub const OFFSETS_RETENTION_CHECK_INTERVAL_MS: i64 = 60_000;

#[derive(Debug, Clone)]
pub struct CoordinatorConfig {
    pub initial_rebalance_delay_ms: i64,
    pub min_session_timeout_ms: i32,
    pub max_session_timeout_ms: i32,
    pub offsets_retention_ms: i64,
}

/// What an operation did besides its direct result.
#[derive(Debug, Default)]
pub struct Effects {
    pub replies: Vec<Reply>,
    pub records: Vec<Record>,
}

pub use super::record::TopicPartition;

#[derive(Debug)]
struct Entry {
    group: Group,
    offsets: BTreeMap<TopicPartition, CommittedOffset>,
    /// The last persisted metadata, which snapshots repeat.
    persisted: Option<GroupRecord>,
    /// Offsets committed inside open transactions, by producer id (with its
    /// epoch): invisible until the transaction's marker arrives.
    pending: BTreeMap<i64, (i16, BTreeMap<TopicPartition, CommittedOffset>)>,
}

/// A group as DescribeGroups shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupSummary {
    pub state: GroupState,
    pub protocol_type: String,
    pub protocol_name: String,
    pub members: Vec<MemberSummary>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberSummary {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub metadata: Bytes,
    pub assignment: Bytes,
}

#[derive(Debug)]
pub struct Coordinator {
    config: CoordinatorConfig,
    groups: BTreeMap<String, Entry>,
    next_expiry_check: i64,
}

impl Coordinator {
    pub fn new(config: CoordinatorConfig) -> Coordinator {
        Coordinator {
            config,
            groups: BTreeMap::new(),
            next_expiry_check: 0,
        }
    }

    pub fn config(&self) -> &CoordinatorConfig {
        &self.config
    }

    pub fn group(&self, id: &str) -> Option<&Group> {
        self.groups.get(id).map(|e| &e.group)
    }

    fn entry(&mut self, id: &str, now: i64) -> &mut Entry {
        let delay = self.config.initial_rebalance_delay_ms;
        self.groups.entry(id.to_owned()).or_insert_with(|| Entry {
            group: Group::new(id, now, delay),
            offsets: BTreeMap::new(),
            persisted: None,
            pending: BTreeMap::new(),
        })
    }

    /// Records the group's metadata if the last operation made it worth keeping.
    fn persist_if_dirty(&mut self, id: &str, out: &mut Effects) {
        if let Some(e) = self.groups.get_mut(id) {
            if std::mem::take(&mut e.group.dirty) {
                let record = group_record(&e.group);
                e.persisted = Some(record.clone());
                out.records.push(Record::Group(record));
            }
        }
    }

    pub fn join(&mut self, group_id: &str, req: JoinRequest, now: i64, out: &mut Effects) {
        let fail = |out: &mut Effects, e| {
            out.replies.push(Reply::Join(
                req.waiter,
                JoinResult::error(&req.member_id, e),
            ));
        };
        if group_id.is_empty() {
            fail(out, ResponseError::InvalidGroupId);
            return;
        }
        let timeouts = self.config.min_session_timeout_ms..=self.config.max_session_timeout_ms;
        if !timeouts.contains(&req.session_timeout_ms) {
            fail(out, ResponseError::InvalidSessionTimeout);
            return;
        }
        // Only a member without an id may create a group.
        if !req.member_id.is_empty() && !self.groups.contains_key(group_id) {
            fail(out, ResponseError::UnknownMemberId);
            return;
        }
        self.entry(group_id, now)
            .group
            .join(req, now, &mut out.replies);
        self.persist_if_dirty(group_id, out);
    }

    #[allow(clippy::too_many_arguments)]
    pub fn sync(
        &mut self,
        group_id: &str,
        member_id: &str,
        instance_id: Option<&str>,
        generation_id: i32,
        protocol_type: Option<&str>,
        protocol_name: Option<&str>,
        assignments: Vec<(String, Bytes)>,
        waiter: Waiter,
        now: i64,
        out: &mut Effects,
    ) {
        use super::member::SyncResult;
        let error = if group_id.is_empty() {
            Some(ResponseError::InvalidGroupId)
        } else if !self.groups.contains_key(group_id) {
            Some(ResponseError::UnknownMemberId)
        } else {
            None
        };
        if let Some(e) = error {
            out.replies.push(Reply::Sync(waiter, SyncResult::error(e)));
            return;
        }
        let g = &mut self.entry(group_id, now).group;
        g.sync(
            member_id,
            instance_id,
            generation_id,
            protocol_type,
            protocol_name,
            assignments,
            waiter,
            now,
            &mut out.replies,
        );
        self.persist_if_dirty(group_id, out);
    }

    pub fn heartbeat(
        &mut self,
        group_id: &str,
        member_id: &str,
        instance_id: Option<&str>,
        generation_id: i32,
        now: i64,
        out: &mut Effects,
    ) -> Option<ResponseError> {
        if group_id.is_empty() {
            return Some(ResponseError::InvalidGroupId);
        }
        let e = self.groups.get_mut(group_id)?;
        let result =
            e.group
                .heartbeat(member_id, instance_id, generation_id, now, &mut out.replies);
        self.persist_if_dirty(group_id, out);
        result
    }

    /// LeaveGroup: the top-level error, then one error per leaving member.
    pub fn leave(
        &mut self,
        group_id: &str,
        members: &[(String, Option<String>)],
        now: i64,
        out: &mut Effects,
    ) -> (Option<ResponseError>, Vec<Option<ResponseError>>) {
        if group_id.is_empty() {
            return (
                Some(ResponseError::InvalidGroupId),
                vec![Some(ResponseError::InvalidGroupId); members.len()],
            );
        }
        let Some(e) = self.groups.get_mut(group_id) else {
            return (
                None,
                vec![Some(ResponseError::UnknownMemberId); members.len()],
            );
        };
        let errors = members
            .iter()
            .map(|(id, instance)| {
                e.group
                    .leave(id, instance.as_deref(), now, &mut out.replies)
            })
            .collect();
        self.persist_if_dirty(group_id, out);
        (None, errors)
    }

    /// Whether a commit may be stored (checked before anything is written).
    pub fn check_commit(
        &self,
        group_id: &str,
        member_id: &str,
        instance_id: Option<&str>,
        generation_id: i32,
    ) -> Result<(), ResponseError> {
        match self.groups.get(group_id) {
            Some(e) => e
                .group
                .validate_commit(member_id, instance_id, generation_id),
            // A simple consumer may create the group by committing.
            None if generation_id < 0 => {
                Group::new(group_id, 0, 0).validate_commit(member_id, instance_id, generation_id)
            }
            None => Err(ResponseError::IllegalGeneration),
        }
    }

    /// Stores offsets that passed [`Coordinator::check_commit`].
    pub fn commit(
        &mut self,
        group_id: &str,
        member_id: &str,
        offsets: Vec<(String, i32, CommittedOffset)>,
        now: i64,
        out: &mut Effects,
    ) {
        let e = self.entry(group_id, now);
        e.group.touch(member_id, now);
        // Entries apply in request order, so a partition named twice keeps
        // its last offset, as in Kafka; the record holds it once.
        let mut latest: BTreeMap<TopicPartition, CommittedOffset> = BTreeMap::new();
        for (topic, partition, o) in offsets {
            latest.insert((topic, partition), o);
        }
        for (tp, o) in &latest {
            e.offsets.insert(tp.clone(), o.clone());
        }
        out.records.push(Record::Offsets {
            group_id: group_id.to_owned(),
            offsets: latest.into_iter().map(|((t, p), o)| (t, p, o)).collect(),
        });
    }

    /// Stores offsets committed inside producer `producer_id`'s transaction
    /// (passed [`Coordinator::check_commit`]); they stay pending until
    /// [`Coordinator::end_txn`].
    pub fn commit_txn(
        &mut self,
        group_id: &str,
        member_id: &str,
        producer: (i64, i16),
        offsets: Vec<(String, i32, CommittedOffset)>,
        now: i64,
        out: &mut Effects,
    ) -> Result<(), ResponseError> {
        let e = self.entry(group_id, now);
        if let Some((epoch, _)) = e.pending.get(&producer.0) {
            if producer.1 < *epoch {
                return Err(ResponseError::ProducerFenced);
            }
        }
        e.group.touch(member_id, now);
        let mut latest: BTreeMap<TopicPartition, CommittedOffset> = BTreeMap::new();
        for (topic, partition, o) in offsets {
            latest.insert((topic, partition), o);
        }
        let slot = e
            .pending
            .entry(producer.0)
            .or_insert_with(|| (producer.1, BTreeMap::new()));
        slot.0 = producer.1;
        for (tp, o) in &latest {
            slot.1.insert(tp.clone(), o.clone());
        }
        out.records.push(Record::TxnOffsets {
            group_id: group_id.to_owned(),
            producer_id: producer.0,
            producer_epoch: producer.1,
            offsets: latest.into_iter().map(|((t, p), o)| (t, p, o)).collect(),
        });
        Ok(())
    }

    /// The transaction of `producer_id` ended: in every group `matches`
    /// selects, its pending offsets are committed or dropped.
    pub fn end_txn(
        &mut self,
        matches: impl Fn(&str) -> bool,
        producer_id: i64,
        commit: bool,
        out: &mut Effects,
    ) {
        for (id, e) in self.groups.iter_mut().filter(|(id, _)| matches(id)) {
            let Some((_, offsets)) = e.pending.remove(&producer_id) else {
                continue;
            };
            if commit {
                e.offsets.extend(offsets);
            }
            out.records.push(Record::TxnEnd {
                group_id: id.clone(),
                producer_id,
                commit,
            });
        }
    }

    /// Whether an open transaction holds an offset of `group_id` for the
    /// partition (OffsetFetch's `require_stable`: UNSTABLE_OFFSET_COMMIT).
    pub fn has_pending(&self, group_id: &str, tp: &TopicPartition) -> bool {
        self.groups
            .get(group_id)
            .is_some_and(|e| e.pending.values().any(|(_, o)| o.contains_key(tp)))
    }

    /// Committed offsets of a group; `None` asks for all of them.
    pub fn fetch(
        &self,
        group_id: &str,
        partitions: Option<&[TopicPartition]>,
    ) -> Vec<(TopicPartition, Option<CommittedOffset>)> {
        let offsets = self.groups.get(group_id).map(|e| &e.offsets);
        match partitions {
            None => offsets
                .into_iter()
                .flatten()
                .map(|(tp, o)| (tp.clone(), Some(o.clone())))
                .collect(),
            Some(wanted) => wanted
                .iter()
                .map(|tp| (tp.clone(), offsets.and_then(|o| o.get(tp)).cloned()))
                .collect(),
        }
    }

    /// Every (group, partition, committed offset), for lag metrics.
    pub fn all_offsets(&self) -> Vec<(String, TopicPartition, i64)> {
        self.groups
            .iter()
            .flat_map(|(g, e)| {
                e.offsets
                    .iter()
                    .map(move |(tp, o)| (g.clone(), tp.clone(), o.offset))
            })
            .collect()
    }

    /// OffsetDelete: a top-level error, or per partition GROUP_SUBSCRIBED_TO_TOPIC
    /// for topics a member of a live consumer group is subscribed to.
    pub fn delete_offsets(
        &mut self,
        group_id: &str,
        partitions: &[TopicPartition],
        subscribed: impl Fn(&Group, &str) -> bool,
        out: &mut Effects,
    ) -> Result<Vec<Option<ResponseError>>, ResponseError> {
        let e = self
            .groups
            .get_mut(group_id)
            .ok_or(ResponseError::GroupIdNotFound)?;
        let consumer = e.group.protocol_type.as_deref() == Some("consumer");
        let errors: Vec<Option<ResponseError>> = match e.group.state {
            GroupState::Dead => return Err(ResponseError::GroupIdNotFound),
            GroupState::Empty => vec![None; partitions.len()],
            _ if consumer => partitions
                .iter()
                .map(|(t, _)| {
                    subscribed(&e.group, t).then_some(ResponseError::GroupSubscribedToTopic)
                })
                .collect(),
            _ => return Err(ResponseError::NonEmptyGroup),
        };
        // Only what was there is recorded: a deletion never names more
        // partitions than commits did.
        let removed: Vec<TopicPartition> = partitions
            .iter()
            .zip(&errors)
            .filter(|(tp, err)| err.is_none() && e.offsets.remove(*tp).is_some())
            .map(|(tp, _)| tp.clone())
            .collect();
        if !removed.is_empty() {
            out.records.push(Record::DeleteOffsets {
                group_id: group_id.to_owned(),
                partitions: removed,
            });
        }
        Ok(errors)
    }

    /// DeleteGroups for one group.
    pub fn delete_group(
        &mut self,
        group_id: &str,
        now: i64,
        out: &mut Effects,
    ) -> Option<ResponseError> {
        let Some(e) = self.groups.get_mut(group_id) else {
            return Some(ResponseError::GroupIdNotFound);
        };
        match e.group.state {
            GroupState::Dead => Some(ResponseError::GroupIdNotFound),
            GroupState::Empty => {
                e.group.mark_dead(now, &mut out.replies);
                self.groups.remove(group_id);
                out.records.push(Record::DeleteGroup {
                    group_id: group_id.to_owned(),
                });
                None
            }
            _ => Some(ResponseError::NonEmptyGroup),
        }
    }

    /// (group id, protocol type, state) of every live group.
    pub fn list(&self) -> Vec<(String, String, GroupState)> {
        self.groups
            .iter()
            .filter(|(_, e)| e.group.state != GroupState::Dead)
            .map(|(id, e)| {
                (
                    id.clone(),
                    e.group.protocol_type.clone().unwrap_or_default(),
                    e.group.state,
                )
            })
            .collect()
    }

    /// DescribeGroups: an unknown group is described as Dead, as Kafka does.
    pub fn describe(&self, group_id: &str) -> GroupSummary {
        let Some(g) = self.groups.get(group_id).map(|e| &e.group) else {
            return GroupSummary {
                state: GroupState::Dead,
                protocol_type: String::new(),
                protocol_name: String::new(),
                members: Vec::new(),
            };
        };
        // Metadata and assignments are only meaningful once the group is Stable.
        let stable = g.state == GroupState::Stable;
        let protocol = g.protocol_name.clone().unwrap_or_default();
        GroupSummary {
            state: g.state,
            protocol_type: g.protocol_type.clone().unwrap_or_default(),
            protocol_name: if stable {
                protocol.clone()
            } else {
                String::new()
            },
            members: g
                .members()
                .map(|m| MemberSummary {
                    member_id: m.id.clone(),
                    instance_id: m.instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    metadata: if stable {
                        m.metadata_for(&protocol)
                    } else {
                        Bytes::new()
                    },
                    assignment: if stable {
                        m.assignment.clone()
                    } else {
                        Bytes::new()
                    },
                })
                .collect(),
        }
    }

    /// Fires due timers in every group and, now and then, expires offsets.
    pub fn tick(&mut self, now: i64, out: &mut Effects) {
        let ids: Vec<String> = self
            .groups
            .iter()
            .filter(|(_, e)| e.group.next_deadline().is_some_and(|d| d <= now))
            .map(|(id, _)| id.clone())
            .collect();
        for id in ids {
            if let Some(e) = self.groups.get_mut(&id) {
                e.group.advance(now, &mut out.replies);
            }
            self.persist_if_dirty(&id, out);
        }
        if now >= self.next_expiry_check {
            self.next_expiry_check = now + OFFSETS_RETENTION_CHECK_INTERVAL_MS;
            self.expire_offsets(now, out);
        }
    }

    /// Kafka's retention: offsets of an Empty consumer group expire
    /// `offsets.retention` after it emptied; a simple consumer's offsets
    /// expire that long after their commit. An Empty group left without
    /// offsets is deleted.
    pub fn expire_offsets(&mut self, now: i64, out: &mut Effects) {
        let retention = self.config.offsets_retention_ms;
        let mut dead = Vec::new();
        for (id, e) in &mut self.groups {
            // Offsets count from the moment the group emptied (consumer
            // groups) or from their own commit (simple consumers).
            let emptied_at = match (&e.group.protocol_type, e.group.state) {
                (Some(_), GroupState::Empty) => Some(Some(e.group.state_timestamp)),
                (None, _) => Some(None),
                _ => None,
            };
            let base =
                emptied_at.map(|at| move |o: &CommittedOffset| at.unwrap_or(o.commit_timestamp));
            if let Some(base) = base {
                let expired: Vec<TopicPartition> = e
                    .offsets
                    .iter()
                    .filter(|(_, o)| {
                        if o.expire_timestamp >= 0 {
                            now >= o.expire_timestamp
                        } else {
                            now - base(o) >= retention
                        }
                    })
                    .map(|(tp, _)| tp.clone())
                    .collect();
                for tp in &expired {
                    e.offsets.remove(tp);
                }
                if !expired.is_empty() {
                    tracing::info!(group = %id, partitions = expired.len(), "expired committed offsets");
                    out.records.push(Record::DeleteOffsets {
                        group_id: id.clone(),
                        partitions: expired,
                    });
                }
            }
            if e.group.state == GroupState::Empty && e.offsets.is_empty() {
                dead.push(id.clone());
            }
        }
        for id in dead {
            if let Some(mut e) = self.groups.remove(&id) {
                e.group.mark_dead(now, &mut out.replies);
                out.records.push(Record::DeleteGroup { group_id: id });
            }
        }
    }

    /// Applies a record read back from the store.
    pub fn replay(&mut self, record: Record, now: i64) {
        match record {
            Record::Group(r) => {
                let delay = self.config.initial_rebalance_delay_ms;
                let protocol = r.protocol_name.clone().unwrap_or_default();
                let members = r
                    .members
                    .iter()
                    .map(|m| Member {
                        id: m.member_id.clone(),
                        instance_id: m.instance_id.clone(),
                        client_id: m.client_id.clone(),
                        client_host: m.client_host.clone(),
                        rebalance_timeout_ms: m.rebalance_timeout_ms,
                        session_timeout_ms: m.session_timeout_ms,
                        protocols: vec![Protocol {
                            name: protocol.clone(),
                            metadata: Bytes::from(m.subscription.clone()),
                        }],
                        assignment: Bytes::from(m.assignment.clone()),
                        awaiting_join: None,
                        awaiting_sync: None,
                        is_new: false,
                        heartbeat_deadline: 0,
                    })
                    .collect();
                let group = Group::restored(
                    &r.group_id,
                    now,
                    delay,
                    r.generation_id,
                    r.protocol_type.clone(),
                    r.protocol_name.clone(),
                    r.leader.clone(),
                    r.state_timestamp,
                    members,
                );
                let e = self.entry(&r.group_id, now);
                e.group = group;
                e.persisted = Some(r);
            }
            Record::Offsets { group_id, offsets } => {
                let e = self.entry(&group_id, now);
                for (t, p, o) in offsets {
                    e.offsets.insert((t, p), o);
                }
            }
            Record::DeleteOffsets {
                group_id,
                partitions,
            } => {
                if let Some(e) = self.groups.get_mut(&group_id) {
                    for tp in &partitions {
                        e.offsets.remove(tp);
                    }
                }
            }
            Record::DeleteGroup { group_id } => {
                self.groups.remove(&group_id);
            }
            Record::TxnOffsets {
                group_id,
                producer_id,
                producer_epoch,
                offsets,
            } => {
                let e = self.entry(&group_id, now);
                let slot = e
                    .pending
                    .entry(producer_id)
                    .or_insert_with(|| (producer_epoch, BTreeMap::new()));
                slot.0 = producer_epoch;
                for (t, p, o) in offsets {
                    slot.1.insert((t, p), o);
                }
            }
            Record::TxnEnd {
                group_id,
                producer_id,
                commit,
            } => {
                if let Some(e) = self.groups.get_mut(&group_id) {
                    if let Some((_, offsets)) = e.pending.remove(&producer_id) {
                        if commit {
                            e.offsets.extend(offsets);
                        }
                    }
                }
            }
        }
    }

    /// Forgets every group whose id matches (their partition is led
    /// elsewhere now); the replies owed to their waiting members go to `out`
    /// for the caller to answer.
    pub fn unload(
        &mut self,
        mut matches: impl FnMut(&str) -> bool,
        now: i64,
        out: &mut Vec<Reply>,
    ) {
        let ids: Vec<String> = self
            .groups
            .keys()
            .filter(|id| matches(id))
            .cloned()
            .collect();
        for id in ids {
            if let Some(mut e) = self.groups.remove(&id) {
                e.group.mark_dead(now, out);
            }
        }
    }

    /// The whole durable state as records, for a snapshot.
    pub fn snapshot(&self) -> Vec<Record> {
        let mut out = Vec::new();
        for (id, e) in &self.groups {
            if let Some(r) = &e.persisted {
                out.push(Record::Group(r.clone()));
            }
            if !e.offsets.is_empty() {
                out.push(Record::Offsets {
                    group_id: id.clone(),
                    offsets: e
                        .offsets
                        .iter()
                        .map(|((t, p), o)| (t.clone(), *p, o.clone()))
                        .collect(),
                });
            }
            for (producer_id, (epoch, offsets)) in &e.pending {
                out.push(Record::TxnOffsets {
                    group_id: id.clone(),
                    producer_id: *producer_id,
                    producer_epoch: *epoch,
                    offsets: offsets
                        .iter()
                        .map(|((t, p), o)| (t.clone(), *p, o.clone()))
                        .collect(),
                });
            }
        }
        out
    }
}

fn group_record(g: &Group) -> GroupRecord {
    let protocol = g.protocol_name.clone().unwrap_or_default();
    GroupRecord {
        group_id: g.id.clone(),
        protocol_type: g.protocol_type.clone(),
        protocol_name: g.protocol_name.clone(),
        generation_id: g.generation_id,
        leader: g.leader.clone(),
        state_timestamp: g.state_timestamp,
        members: g
            .members()
            .map(|m| MemberRecord {
                member_id: m.id.clone(),
                instance_id: m.instance_id.clone(),
                client_id: m.client_id.clone(),
                client_host: m.client_host.clone(),
                rebalance_timeout_ms: m.rebalance_timeout_ms,
                session_timeout_ms: m.session_timeout_ms,
                subscription: m.metadata_for(&protocol).to_vec(),
                assignment: m.assignment.to_vec(),
            })
            .collect(),
    }
}
