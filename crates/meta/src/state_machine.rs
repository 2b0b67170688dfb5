//! The deterministic metadata state machine.
//!
//! [`MetaState::check`] decides whether a command is valid against the
//! current state without changing it; [`MetaState::apply`] checks and then
//! applies. Both are pure: no clock, no randomness, no I/O.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::cluster::{BrokerRecord, PartitionRecord};
use crate::{
    broker_config, scram, topic_config, AclBinding, Error, MetaCommand, Result,
    ScramCredentialRecord, TopicConfigs,
};

/// Kafka's limit on topic name length.
pub const MAX_TOPIC_NAME_LEN: usize = 249;
/// An upper bound on partitions per topic, so one request cannot make a
/// broker open a million files.
pub const MAX_PARTITIONS: i32 = 10_000;
/// An upper bound on stored ACL bindings: every authorization scans the
/// bindings of one resource type, so their number must stay bounded.
pub const MAX_ACLS: usize = 100_000;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicRecord {
    pub name: String,
    pub topic_id: Uuid,
    pub partitions: i32,
    pub replication_factor: i16,
    pub configs: TopicConfigs,
    /// One entry per partition: replicas, ISR, leader, epochs. `default`
    /// reads snapshots written before replicas were recorded (migration
    /// fills them in).
    #[serde(default)]
    pub assignments: Vec<PartitionRecord>,
}

impl TopicRecord {
    pub fn partition(&self, index: i32) -> Option<&PartitionRecord> {
        usize::try_from(index)
            .ok()
            .and_then(|i| self.assignments.get(i))
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetaState {
    topics: BTreeMap<String, TopicRecord>,
    /// ACL bindings, sorted and deduplicated (Kafka stores each once).
    /// `default` keeps snapshots written before ACLs existed readable.
    #[serde(default)]
    acls: BTreeSet<AclBinding>,
    /// SCRAM credentials: user → mechanism name → credential.
    #[serde(default)]
    scram: BTreeMap<String, BTreeMap<String, ScramCredentialRecord>>,
    /// The first producer id not yet reserved by `AllocateProducerIds`. `default` (0) keeps
    /// older snapshots readable.
    #[serde(default)]
    next_producer_id: i64,
    /// Blind topics (shares sealed by the broker, grants, wraps).
    #[serde(default)]
    blind: crate::blind::BlindState,
    /// The cluster's id, set once by the first controller.
    #[serde(default)]
    cluster_id: Option<String>,
    /// Registered brokers by node id.
    #[serde(default)]
    brokers: BTreeMap<i32, BrokerRecord>,
    /// Dynamic broker configs: "" (cluster default) or a node id → key → value.
    #[serde(default)]
    broker_configs: BTreeMap<String, BTreeMap<String, String>>,
    /// Transaction coordinator state by transactional id.
    #[serde(default)]
    transactions: BTreeMap<String, crate::TxnRecord>,
    /// A running digest of every command applied, in order (FNV-1a over
    /// index and command): two nodes at the same applied index have the same
    /// digest unless their histories diverged.
    #[serde(default)]
    digest: u64,
    /// Index of the last command applied; a snapshot records it so that
    /// replay starts after it.
    last_applied: u64,
}

/// Checks a topic name by Kafka's rules: 1–249 chars of `[a-zA-Z0-9._-]`,
/// not `.` or `..`.
pub fn validate_topic_name(name: &str) -> Result<()> {
    let bad = |why: &str| Err(Error::InvalidTopicName(format!("'{name}' {why}")));
    if name.is_empty() {
        return bad("is empty");
    }
    if name.len() > MAX_TOPIC_NAME_LEN {
        return bad("is longer than 249 characters");
    }
    if name == "." || name == ".." {
        return bad("is not allowed");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return bad("may contain only ASCII letters, digits, '.', '_' and '-'");
    }
    Ok(())
}

impl MetaState {
    /// The transaction record of `transactional_id`.
    pub fn transaction(&self, transactional_id: &str) -> Option<&crate::TxnRecord> {
        self.transactions.get(transactional_id)
    }

    /// Every transactional id with its record.
    pub fn transactions(&self) -> impl Iterator<Item = (&String, &crate::TxnRecord)> {
        self.transactions.iter()
    }

    pub fn topics(&self) -> impl Iterator<Item = &TopicRecord> {
        self.topics.values()
    }

    pub fn topic(&self, name: &str) -> Option<&TopicRecord> {
        self.topics.get(name)
    }

    pub fn topic_by_id(&self, id: Uuid) -> Option<&TopicRecord> {
        self.topics.values().find(|t| t.topic_id == id)
    }

    /// Every stored ACL binding, sorted by resource type first.
    pub fn acls(&self) -> impl Iterator<Item = &AclBinding> {
        self.acls.iter()
    }

    /// The first producer id no block has reserved yet.
    pub fn next_producer_id(&self) -> i64 {
        self.next_producer_id
    }

    /// The SCRAM credential of `user` for `mechanism` (e.g. `SCRAM-SHA-256`).
    pub fn scram_credential(&self, user: &str, mechanism: &str) -> Option<&ScramCredentialRecord> {
        self.scram.get(user)?.get(mechanism)
    }

    /// Every user with SCRAM credentials, with their credentials by mechanism.
    pub fn scram_users(
        &self,
    ) -> impl Iterator<Item = (&String, &BTreeMap<String, ScramCredentialRecord>)> {
        self.scram.iter()
    }

    /// Blind-topic metadata.
    pub fn blind(&self) -> &crate::blind::BlindState {
        &self.blind
    }

    pub fn last_applied(&self) -> u64 {
        self.last_applied
    }

    /// The history digest at [`Self::last_applied`].
    pub fn digest(&self) -> u64 {
        self.digest
    }

    /// Folds command `index` (already encoded) into the history digest.
    pub fn record_in_digest(&mut self, index: u64, encoded: &[u8]) {
        const PRIME: u64 = 0x0100_0000_01b3;
        let mut h = if self.digest == 0 {
            0xcbf2_9ce4_8422_2325
        } else {
            self.digest
        };
        for b in index.to_be_bytes().iter().chain(encoded) {
            h ^= u64::from(*b);
            h = h.wrapping_mul(PRIME);
        }
        self.digest = h;
    }

    /// Records that entry `index` was applied without changing anything
    /// (Raft's own entries, or a command the state refused).
    pub fn skip_to(&mut self, index: u64) {
        self.last_applied = self.last_applied.max(index);
    }

    pub fn cluster_id(&self) -> Option<&str> {
        self.cluster_id.as_deref()
    }

    pub fn brokers(&self) -> impl Iterator<Item = &BrokerRecord> {
        self.brokers.values()
    }

    pub fn broker(&self, node_id: i32) -> Option<&BrokerRecord> {
        self.brokers.get(&node_id)
    }

    /// Registered, unfenced brokers that are not shutting down: the ones that
    /// may lead and receive new replicas.
    pub fn broker_available(&self, node_id: i32) -> bool {
        self.brokers
            .get(&node_id)
            .is_some_and(|b| !b.fenced && !b.in_controlled_shutdown)
    }

    /// Dynamic broker configs of `target` ("" = cluster default).
    pub fn broker_configs(&self, target: &str) -> Option<&BTreeMap<String, String>> {
        self.broker_configs.get(target)
    }

    /// Fills in replicas for topics recorded before replicas were (a
    /// migrated single-node directory): every partition on `node_id`.
    pub fn adopt_unassigned(&mut self, node_id: i32) {
        for t in self.topics.values_mut() {
            while t.assignments.len() < t.partitions as usize {
                t.assignments.push(PartitionRecord::new(vec![node_id]));
            }
        }
    }

    /// Whether `cmd` would apply cleanly, without changing anything.
    pub fn check(&self, cmd: &MetaCommand) -> Result<()> {
        match cmd {
            MetaCommand::CreateTopic {
                name,
                topic_id,
                partitions,
                replication_factor,
                configs,
                assignments,
            } => {
                validate_topic_name(name)?;
                if self.topics.contains_key(name) {
                    return Err(Error::TopicExists(name.clone()));
                }
                if self.topic_collides(name) {
                    return Err(Error::InvalidTopicName(format!(
                        "'{name}' collides with an existing topic once '.' and '_' are treated alike"
                    )));
                }
                if topic_id.is_nil() || self.topic_by_id(*topic_id).is_some() {
                    return Err(Error::DuplicateTopicId);
                }
                check_partitions(*partitions)?;
                self.check_assignments(*partitions, *replication_factor, assignments)?;
                topic_config::validate_all(configs)
            }
            MetaCommand::DeleteTopic { name, topic_id } => match self.existing(name)? {
                t if t.topic_id == *topic_id => Ok(()),
                _ => Err(Error::UnknownTopic(name.clone())),
            },
            MetaCommand::CreatePartitions {
                name,
                count,
                assignments,
            } => {
                let topic = self.existing(name)?;
                check_partitions(*count)?;
                if *count <= topic.partitions {
                    return Err(Error::InvalidPartitions(format!(
                        "topic '{name}' has {} partitions; the new count must be larger, got {count}",
                        topic.partitions
                    )));
                }
                let rf = topic
                    .assignments
                    .first()
                    .map_or(topic.replication_factor, |p| {
                        i16::try_from(p.replicas.len()).unwrap_or(i16::MAX)
                    });
                self.check_assignments(*count - topic.partitions, rf, assignments)
            }
            MetaCommand::ReplaceTopicConfigs { name, configs } => {
                self.existing(name)?;
                topic_config::validate_all(configs)
            }
            MetaCommand::UpdateTopicConfigs { name, set, remove } => {
                self.existing(name)?;
                topic_config::validate_all(set)?;
                match remove
                    .iter()
                    .find(|k| topic_config::definition(k).is_none())
                {
                    Some(k) => Err(Error::InvalidConfig(format!("unknown topic config '{k}'"))),
                    None => Ok(()),
                }
            }
            MetaCommand::CreateAcls { bindings } => {
                bindings.iter().try_for_each(AclBinding::validate)?;
                let new = bindings.iter().filter(|b| !self.acls.contains(*b)).count();
                if self.acls.len() + new > MAX_ACLS {
                    return Err(Error::InvalidAcl(format!(
                        "the cluster already holds {} ACLs; at most {MAX_ACLS} are allowed",
                        self.acls.len()
                    )));
                }
                Ok(())
            }
            // Deleting what is not stored is a no-op: a concurrent DeleteAcls
            // may have removed it first.
            MetaCommand::DeleteAcls { .. } => Ok(()),
            MetaCommand::AllocateProducerIds {
                block_start,
                block_size,
            } => check_producer_id_block(self.next_producer_id, *block_start, *block_size),
            MetaCommand::UpsertScramCredential {
                user,
                mechanism,
                credential,
            } => scram::validate(user, mechanism, Some(credential)),
            // Deleting an absent credential is refused by the handler
            // (RESOURCE_NOT_FOUND); here it is a harmless no-op.
            MetaCommand::DeleteScramCredential { user, mechanism } => {
                scram::validate(user, mechanism, None)
            }
            MetaCommand::Blind(c) => self.blind.check(c, |n| self.topics.contains_key(n)),
            MetaCommand::SetClusterId { cluster_id } => match &self.cluster_id {
                None if !cluster_id.is_empty() => Ok(()),
                _ => Err(Error::InvalidBroker(
                    "the cluster id is already set (or the new one is empty)".into(),
                )),
            },
            MetaCommand::RegisterBroker {
                node_id, listeners, ..
            } => {
                if *node_id < 0 {
                    return Err(Error::InvalidBroker(format!(
                        "node id {node_id} is negative"
                    )));
                }
                if listeners.len() > 64 {
                    return Err(Error::InvalidBroker("too many listeners".into()));
                }
                Ok(())
            }
            MetaCommand::FenceBroker { node_id, epoch }
            | MetaCommand::UnfenceBroker { node_id, epoch }
            | MetaCommand::ControlledShutdown { node_id, epoch } => {
                match self.brokers.get(node_id) {
                    Some(b) if b.epoch == *epoch => Ok(()),
                    Some(b) => Err(Error::StaleEpoch(format!(
                        "broker {node_id} is at epoch {}, not {epoch}",
                        b.epoch
                    ))),
                    None => Err(Error::InvalidBroker(format!(
                        "broker {node_id} is not registered"
                    ))),
                }
            }
            MetaCommand::UnregisterBroker { node_id } => match self.brokers.get(node_id) {
                Some(b) if b.fenced => Ok(()),
                Some(_) => Err(Error::InvalidBroker(format!(
                    "broker {node_id} is still active; stop it first"
                ))),
                None => Err(Error::InvalidBroker(format!(
                    "broker {node_id} is not registered"
                ))),
            },
            MetaCommand::AlterPartition {
                topic,
                partition,
                leader,
                leader_epoch,
                partition_epoch,
                isr,
            } => {
                let p = self.partition_record(topic, *partition)?;
                if p.leader != *leader || p.leader_epoch != *leader_epoch {
                    return Err(Error::StaleEpoch(format!(
                        "{topic}-{partition} is led by {} at epoch {}, not {leader} at {leader_epoch}",
                        p.leader, p.leader_epoch
                    )));
                }
                if p.partition_epoch != *partition_epoch {
                    return Err(Error::StaleEpoch(format!(
                        "{topic}-{partition} is at partition epoch {}, not {partition_epoch}",
                        p.partition_epoch
                    )));
                }
                if isr.is_empty()
                    || !isr.contains(leader)
                    || isr.iter().any(|r| !p.replicas.contains(r))
                {
                    return Err(Error::InvalidBroker(format!(
                        "ISR {isr:?} must hold the leader and only replicas of {topic}-{partition}"
                    )));
                }
                // Kafka: only live brokers may join an ISR.
                if let Some(r) = isr
                    .iter()
                    .find(|r| !p.isr.contains(r) && !self.broker_available(**r))
                {
                    return Err(Error::InvalidBroker(format!(
                        "replica {r} of {topic}-{partition} is fenced or shutting down and cannot join the ISR"
                    )));
                }
                Ok(())
            }
            MetaCommand::ReassignPartition {
                topic,
                partition,
                target,
            } => {
                let p = self.partition_record(topic, *partition)?;
                match target {
                    Some(target) => {
                        let mut distinct = target.clone();
                        distinct.sort_unstable();
                        distinct.dedup();
                        if target.is_empty() || distinct.len() != target.len() {
                            return Err(Error::InvalidReplicationFactor(format!(
                                "the new replicas of {topic}-{partition} must be distinct and not empty: {target:?}"
                            )));
                        }
                        if let Some(r) = target.iter().find(|r| !self.brokers.contains_key(r)) {
                            return Err(Error::InvalidBroker(format!(
                                "broker {r} is not registered"
                            )));
                        }
                        Ok(())
                    }
                    None => match &p.reassignment {
                        None => Err(Error::NoReassignment(format!(
                            "{topic}-{partition} is not being reassigned"
                        ))),
                        Some(r) if !r.original.iter().any(|o| p.isr.contains(o)) => {
                            Err(Error::InvalidBroker(format!(
                                "cannot cancel: no original replica of {topic}-{partition} is in sync"
                            )))
                        }
                        Some(_) => Ok(()),
                    },
                }
            }
            MetaCommand::CompleteReassignment { topic, partition } => {
                let p = self.partition_record(topic, *partition)?;
                if p.reassignment_done() {
                    Ok(())
                } else {
                    Err(Error::NoReassignment(format!(
                        "{topic}-{partition} has no reassignment whose replicas are all in sync"
                    )))
                }
            }
            MetaCommand::ElectLeader {
                topic,
                partition,
                leader,
            } => {
                let p = self.partition_record(topic, *partition)?;
                if !p.replicas.contains(leader) {
                    return Err(Error::InvalidBroker(format!(
                        "{leader} is not a replica of {topic}-{partition}"
                    )));
                }
                Ok(())
            }
            MetaCommand::UpdateBrokerConfigs {
                target,
                set,
                remove,
            } => {
                if !target.is_empty() && target.parse::<i32>().map_or(true, |id| id < 0) {
                    return Err(Error::InvalidBroker(format!(
                        "broker config target '{target}' is neither '' nor a node id"
                    )));
                }
                broker_config::validate_all(set)?;
                match remove
                    .iter()
                    .find(|k| broker_config::definition(k).is_none())
                {
                    Some(k) => Err(Error::InvalidConfig(format!("unknown broker config '{k}'"))),
                    None => Ok(()),
                }
            }
            MetaCommand::Transaction(c) => {
                crate::transactions::check(self.transactions.get(&c.transactional_id), c)
            }
        }
    }

    fn partition_record(&self, topic: &str, partition: i32) -> Result<&PartitionRecord> {
        self.existing(topic)?
            .partition(partition)
            .ok_or_else(|| Error::UnknownTopic(format!("{topic}-{partition}")))
    }

    /// New partitions' replica lists: one per partition, `rf` distinct
    /// registered brokers each.
    fn check_assignments(&self, partitions: i32, rf: i16, assignments: &[Vec<i32>]) -> Result<()> {
        if rf < 1 {
            return Err(Error::InvalidReplicationFactor(format!(
                "replication factor must be at least 1, got {rf}"
            )));
        }
        let registered = self.brokers.len();
        if usize::try_from(rf).unwrap_or(usize::MAX) > registered.max(1) {
            return Err(Error::InvalidReplicationFactor(format!(
                "replication factor {rf} is larger than the {registered} registered broker(s)"
            )));
        }
        if assignments.len() != partitions as usize {
            return Err(Error::InvalidPartitions(format!(
                "{} replica assignments for {partitions} partitions",
                assignments.len()
            )));
        }
        for list in assignments {
            let distinct: BTreeSet<&i32> = list.iter().collect();
            if list.len() != rf as usize || distinct.len() != list.len() {
                return Err(Error::InvalidReplicationFactor(format!(
                    "replica list {list:?} does not hold {rf} distinct brokers"
                )));
            }
            if let Some(b) = list.iter().find(|b| !self.brokers.contains_key(b)) {
                return Err(Error::InvalidBroker(format!(
                    "replica {b} is not a registered broker"
                )));
            }
        }
        Ok(())
    }

    /// Checks and applies `cmd` as command number `index`.
    pub fn apply(&mut self, index: u64, cmd: &MetaCommand) -> Result<()> {
        self.check(cmd)?;
        match cmd.clone() {
            MetaCommand::CreateTopic {
                name,
                topic_id,
                partitions,
                replication_factor,
                configs,
                assignments,
            } => {
                self.topics.insert(
                    name.clone(),
                    TopicRecord {
                        name,
                        topic_id,
                        partitions,
                        replication_factor,
                        configs,
                        assignments: assignments.into_iter().map(PartitionRecord::new).collect(),
                    },
                );
            }
            MetaCommand::DeleteTopic { name, .. } => {
                self.topics.remove(&name);
                self.blind.forget_topic(&name);
            }
            MetaCommand::CreatePartitions {
                name,
                count,
                assignments,
            } => {
                let topic = self.existing_mut(&name)?;
                topic.partitions = count;
                topic
                    .assignments
                    .extend(assignments.into_iter().map(PartitionRecord::new));
            }
            MetaCommand::ReplaceTopicConfigs { name, configs } => {
                self.existing_mut(&name)?.configs = configs;
            }
            MetaCommand::UpdateTopicConfigs { name, set, remove } => {
                let topic = self.existing_mut(&name)?;
                for key in remove {
                    topic.configs.remove(&key);
                }
                topic.configs.extend(set);
            }
            MetaCommand::CreateAcls { bindings } => self.acls.extend(bindings),
            MetaCommand::DeleteAcls { bindings } => {
                for b in &bindings {
                    self.acls.remove(b);
                }
            }
            MetaCommand::AllocateProducerIds {
                block_start,
                block_size,
            } => self.next_producer_id = block_start + block_size,
            MetaCommand::UpsertScramCredential {
                user,
                mechanism,
                credential,
            } => {
                self.scram
                    .entry(user)
                    .or_default()
                    .insert(mechanism, credential);
            }
            MetaCommand::DeleteScramCredential { user, mechanism } => {
                if let Some(m) = self.scram.get_mut(&user) {
                    m.remove(&mechanism);
                    if m.is_empty() {
                        self.scram.remove(&user);
                    }
                }
            }
            MetaCommand::Blind(c) => self.blind.apply(c),
            MetaCommand::SetClusterId { cluster_id } => self.cluster_id = Some(cluster_id),
            MetaCommand::RegisterBroker {
                node_id,
                incarnation,
                listeners,
                internal,
                rack,
            } => self.register_broker(index, node_id, incarnation, listeners, internal, rack),
            MetaCommand::FenceBroker { node_id, .. } => {
                if let Some(b) = self.brokers.get_mut(&node_id) {
                    b.fenced = true;
                }
                self.broker_gone(node_id);
            }
            MetaCommand::UnfenceBroker { node_id, .. } => {
                if let Some(b) = self.brokers.get_mut(&node_id) {
                    b.fenced = false;
                    b.in_controlled_shutdown = false;
                }
                let cluster_unclean = self.cluster_unclean_default();
                for t in self.topics.values_mut() {
                    let unclean = unclean_allowed(&t.configs, cluster_unclean);
                    for p in &mut t.assignments {
                        p.restore_node(node_id, unclean);
                    }
                }
            }
            MetaCommand::ControlledShutdown { node_id, .. } => {
                if let Some(b) = self.brokers.get_mut(&node_id) {
                    b.in_controlled_shutdown = true;
                }
                let brokers = &self.brokers;
                let available = |n: i32| {
                    brokers
                        .get(&n)
                        .is_some_and(|b| !b.fenced && !b.in_controlled_shutdown)
                };
                for t in self.topics.values_mut() {
                    for p in &mut t.assignments {
                        p.move_away_from(node_id, &available);
                    }
                }
            }
            MetaCommand::UnregisterBroker { node_id } => {
                self.brokers.remove(&node_id);
            }
            MetaCommand::AlterPartition {
                topic,
                partition,
                isr,
                ..
            } => {
                let p = self.partition_record_mut(&topic, partition)?;
                p.isr = isr;
                p.partition_epoch += 1;
            }
            MetaCommand::ElectLeader {
                topic,
                partition,
                leader,
            } => self.partition_record_mut(&topic, partition)?.elect(leader),
            MetaCommand::ReassignPartition {
                topic,
                partition,
                target,
            } => {
                let p = self.partition_record_mut(&topic, partition)?;
                if let Some(target) = target {
                    p.start_reassignment(target);
                } else if let Some(original) = p.reassignment.as_ref().map(|r| r.original.clone()) {
                    p.finish_reassignment(original);
                }
            }
            MetaCommand::CompleteReassignment { topic, partition } => {
                let p = self.partition_record_mut(&topic, partition)?;
                let target = p.reassignment.as_ref().map(|r| r.target.clone());
                if let Some(target) = target {
                    p.finish_reassignment(target);
                }
            }
            MetaCommand::UpdateBrokerConfigs {
                target,
                set,
                remove,
            } => {
                let configs = self.broker_configs.entry(target.clone()).or_default();
                for key in remove {
                    configs.remove(&key);
                }
                configs.extend(set);
                if configs.is_empty() {
                    self.broker_configs.remove(&target);
                }
            }
            MetaCommand::Transaction(c) => match c.next {
                Some(next) => {
                    self.transactions.insert(c.transactional_id, next);
                }
                None => {
                    self.transactions.remove(&c.transactional_id);
                }
            },
        }
        self.last_applied = index;
        Ok(())
    }

    fn partition_record_mut(
        &mut self,
        topic: &str,
        partition: i32,
    ) -> Result<&mut PartitionRecord> {
        self.existing_mut(topic)?
            .assignments
            .get_mut(usize::try_from(partition).unwrap_or(usize::MAX))
            .ok_or_else(|| Error::UnknownTopic(format!("{topic}-{partition}")))
    }

    fn register_broker(
        &mut self,
        index: u64,
        node_id: i32,
        incarnation: Uuid,
        listeners: Vec<crate::cluster::Endpoint>,
        internal: Option<crate::cluster::Endpoint>,
        rack: Option<String>,
    ) {
        let same = self
            .brokers
            .get(&node_id)
            .is_some_and(|b| b.incarnation == incarnation);
        if same {
            // The same process again (a retried registration): keep its epoch.
            if let Some(b) = self.brokers.get_mut(&node_id) {
                b.listeners = listeners;
                b.internal = internal;
                b.rack = rack;
            }
            return;
        }
        let replaced = self.brokers.contains_key(&node_id);
        self.brokers.insert(
            node_id,
            BrokerRecord {
                node_id,
                incarnation,
                epoch: i64::try_from(index).unwrap_or(i64::MAX),
                listeners,
                internal,
                rack,
                fenced: true,
                in_controlled_shutdown: false,
            },
        );
        if replaced {
            // The previous process is gone, whatever it was leading.
            self.broker_gone(node_id);
        }
    }

    /// `node_id` cannot serve: it leaves ISRs and leadership moves.
    fn broker_gone(&mut self, node_id: i32) {
        let cluster_unclean = self.cluster_unclean_default();
        let brokers = &self.brokers;
        let available = |n: i32| {
            brokers
                .get(&n)
                .is_some_and(|b| !b.fenced && !b.in_controlled_shutdown)
        };
        for t in self.topics.values_mut() {
            let unclean = unclean_allowed(&t.configs, cluster_unclean);
            for p in &mut t.assignments {
                p.remove_node(node_id, &available, unclean);
            }
        }
    }

    /// The cluster-wide default of `unclean.leader.election.enable`.
    fn cluster_unclean_default(&self) -> bool {
        self.broker_configs
            .get("")
            .and_then(|c| c.get(crate::broker_config::UNCLEAN_LEADER_ELECTION))
            .is_some_and(|v| v == "true")
    }

    fn existing(&self, name: &str) -> Result<&TopicRecord> {
        self.topics
            .get(name)
            .ok_or_else(|| Error::UnknownTopic(name.to_owned()))
    }

    fn existing_mut(&mut self, name: &str) -> Result<&mut TopicRecord> {
        self.topics
            .get_mut(name)
            .ok_or_else(|| Error::UnknownTopic(name.to_owned()))
    }

    /// Kafka forbids topics whose names differ only by '.' vs '_' because
    /// their metric names would collide.
    fn topic_collides(&self, name: &str) -> bool {
        let norm = |s: &str| s.replace('.', "_");
        let wanted = norm(name);
        self.topics.keys().any(|k| norm(k) == wanted)
    }
}

/// Whether a topic lets an out-of-sync replica lead (its override, else the
/// cluster default).
fn unclean_allowed(configs: &TopicConfigs, cluster_default: bool) -> bool {
    configs
        .get(topic_config::UNCLEAN_LEADER_ELECTION)
        .map_or(cluster_default, |v| v == "true")
}

/// Largest producer-id block one command may reserve (Kafka's blocks hold 1000).
pub const MAX_PRODUCER_ID_BLOCK: i64 = 1_000_000;

/// A block must start at the next free id and stay below `i64::MAX`.
fn check_producer_id_block(next: i64, start: i64, size: i64) -> Result<()> {
    if start != next {
        return Err(Error::InvalidProducerIdBlock(format!(
            "block starts at {start} but the next free producer id is {next}"
        )));
    }
    if !(1..=MAX_PRODUCER_ID_BLOCK).contains(&size) || start.checked_add(size).is_none() {
        return Err(Error::InvalidProducerIdBlock(format!(
            "block of {size} ids at {start} is empty, too large or overflows"
        )));
    }
    Ok(())
}

fn check_partitions(count: i32) -> Result<()> {
    if (1..=MAX_PARTITIONS).contains(&count) {
        Ok(())
    } else {
        Err(Error::InvalidPartitions(format!(
            "partition count must be between 1 and {MAX_PARTITIONS}, got {count}"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn create(name: &str, partitions: i32) -> MetaCommand {
        MetaCommand::CreateTopic {
            name: name.into(),
            topic_id: Uuid::new_v4(),
            partitions,
            replication_factor: 1,
            configs: TopicConfigs::new(),
            assignments: vec![vec![1]; usize::try_from(partitions).unwrap_or(0)],
        }
    }

    fn register(node_id: i32) -> MetaCommand {
        MetaCommand::RegisterBroker {
            node_id,
            incarnation: Uuid::new_v4(),
            listeners: vec![],
            internal: None,
            rack: None,
        }
    }

    /// A state with broker 1 registered (at index 0) and unfenced.
    fn one_broker() -> MetaState {
        let mut s = MetaState::default();
        s.apply(0, &register(1)).unwrap();
        s.apply(
            0,
            &MetaCommand::UnfenceBroker {
                node_id: 1,
                epoch: 0,
            },
        )
        .unwrap();
        s
    }

    #[test]
    fn create_delete_and_grow() {
        let mut s = one_broker();
        s.apply(1, &create("a", 3)).unwrap();
        assert_eq!(s.topic("a").unwrap().partitions, 3);
        assert!(matches!(
            s.apply(2, &create("a", 1)),
            Err(Error::TopicExists(_))
        ));
        assert_eq!(s.last_applied(), 1, "a failed command is not applied");
        s.apply(
            2,
            &MetaCommand::CreatePartitions {
                name: "a".into(),
                count: 5,
                assignments: vec![vec![1]; 2],
            },
        )
        .unwrap();
        assert_eq!(s.topic("a").unwrap().partitions, 5);
        assert!(matches!(
            s.apply(
                3,
                &MetaCommand::CreatePartitions {
                    name: "a".into(),
                    count: 5,
                    assignments: vec![],
                }
            ),
            Err(Error::InvalidPartitions(_))
        ));
        let id = s.topic("a").unwrap().topic_id;
        assert!(
            s.check(&MetaCommand::DeleteTopic {
                name: "a".into(),
                topic_id: Uuid::new_v4()
            })
            .is_err(),
            "a delete aimed at another incarnation of the name is refused"
        );
        s.apply(
            3,
            &MetaCommand::DeleteTopic {
                name: "a".into(),
                topic_id: id,
            },
        )
        .unwrap();
        assert!(s.topic("a").is_none());
        assert!(matches!(
            s.apply(
                4,
                &MetaCommand::DeleteTopic {
                    name: "a".into(),
                    topic_id: id
                }
            ),
            Err(Error::UnknownTopic(_))
        ));
    }

    #[test]
    fn names_partitions_and_configs_are_validated() {
        let s = one_broker();
        for bad in ["", ".", "..", "a b", "ü", &"x".repeat(250)] {
            assert!(s.check(&create(bad, 1)).is_err(), "{bad:?}");
        }
        assert!(s.check(&create("ok.name_-1", 1)).is_ok());
        assert!(s.check(&create("t", 0)).is_err());
        assert!(s.check(&create("t", MAX_PARTITIONS + 1)).is_err());
        let mut with_cfg = create("t", 1);
        if let MetaCommand::CreateTopic { configs, .. } = &mut with_cfg {
            configs.insert("retention.ms".into(), "abc".into());
        }
        assert!(matches!(s.check(&with_cfg), Err(Error::InvalidConfig(_))));
    }

    #[test]
    fn dot_underscore_collision_is_refused() {
        let mut s = one_broker();
        s.apply(1, &create("a.b", 1)).unwrap();
        assert!(matches!(
            s.check(&create("a_b", 1)),
            Err(Error::InvalidTopicName(_))
        ));
    }

    #[test]
    fn incremental_and_replacing_config_updates() {
        let mut s = one_broker();
        s.apply(1, &create("t", 1)).unwrap();
        let set = TopicConfigs::from([("retention.ms".to_owned(), "10".to_owned())]);
        s.apply(
            2,
            &MetaCommand::UpdateTopicConfigs {
                name: "t".into(),
                set,
                remove: vec![],
            },
        )
        .unwrap();
        assert_eq!(s.topic("t").unwrap().configs["retention.ms"], "10");
        s.apply(
            3,
            &MetaCommand::UpdateTopicConfigs {
                name: "t".into(),
                set: TopicConfigs::new(),
                remove: vec!["retention.ms".into()],
            },
        )
        .unwrap();
        assert!(s.topic("t").unwrap().configs.is_empty());
        let replace = TopicConfigs::from([("segment.ms".to_owned(), "100".to_owned())]);
        s.apply(
            4,
            &MetaCommand::ReplaceTopicConfigs {
                name: "t".into(),
                configs: replace,
            },
        )
        .unwrap();
        assert_eq!(s.topic("t").unwrap().configs.len(), 1);
    }

    #[test]
    fn producer_id_blocks_are_contiguous_and_never_reissued() {
        let mut s = MetaState::default();
        let block = |block_start, block_size| MetaCommand::AllocateProducerIds {
            block_start,
            block_size,
        };
        s.apply(1, &block(0, 1000)).unwrap();
        assert_eq!(s.next_producer_id(), 1000);
        // A proposer that read the old high-water mark lost the race.
        assert!(matches!(
            s.apply(2, &block(0, 1000)),
            Err(Error::InvalidProducerIdBlock(_))
        ));
        for bad in [
            block(1000, 0),
            block(1000, -5),
            block(1000, MAX_PRODUCER_ID_BLOCK + 1),
        ] {
            assert!(s.check(&bad).is_err(), "{bad:?}");
        }
        s.apply(2, &block(1000, 10)).unwrap();
        assert_eq!(s.next_producer_id(), 1010);
        // The high-water mark survives serialization (what a snapshot stores).
        let copy: MetaState = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        assert_eq!(copy.next_producer_id(), 1010);
        let near_end = MetaState {
            next_producer_id: i64::MAX - 5,
            ..MetaState::default()
        };
        assert!(near_end.check(&block(i64::MAX - 5, 10)).is_err());
        // Snapshots from before producer ids existed still load.
        let old: MetaState = serde_json::from_str(r#"{"topics":{},"last_applied":3}"#).unwrap();
        assert_eq!(old.next_producer_id(), 0);
    }

    fn three_brokers() -> MetaState {
        let mut s = MetaState::default();
        for id in 1..=3 {
            s.apply(u64::try_from(id).unwrap(), &register(id)).unwrap();
            let epoch = s.broker(id).unwrap().epoch;
            s.apply(
                10 + u64::try_from(id).unwrap(),
                &MetaCommand::UnfenceBroker { node_id: id, epoch },
            )
            .unwrap();
        }
        s
    }

    #[test]
    fn replica_lists_are_checked_against_registered_brokers() {
        let mut s = three_brokers();
        let topic = |rf: i16, lists: Vec<Vec<i32>>| MetaCommand::CreateTopic {
            name: "r".into(),
            topic_id: Uuid::new_v4(),
            partitions: i32::try_from(lists.len()).unwrap(),
            replication_factor: rf,
            configs: TopicConfigs::new(),
            assignments: lists,
        };
        assert!(matches!(
            s.check(&topic(4, vec![vec![1, 2, 3, 4]])),
            Err(Error::InvalidReplicationFactor(_))
        ));
        assert!(matches!(
            s.check(&topic(2, vec![vec![1, 1]])),
            Err(Error::InvalidReplicationFactor(_))
        ));
        assert!(matches!(
            s.check(&topic(2, vec![vec![1, 9]])),
            Err(Error::InvalidBroker(_))
        ));
        s.apply(20, &topic(3, vec![vec![1, 2, 3], vec![2, 3, 1]]))
            .unwrap();
        let p = s.topic("r").unwrap().partition(1).unwrap();
        assert_eq!((p.leader, p.isr.clone()), (2, vec![2, 3, 1]));
    }

    #[test]
    fn fencing_moves_leadership_and_a_new_incarnation_replaces_the_old() {
        let mut s = three_brokers();
        s.apply(
            20,
            &MetaCommand::CreateTopic {
                name: "t".into(),
                topic_id: Uuid::new_v4(),
                partitions: 1,
                replication_factor: 3,
                configs: TopicConfigs::new(),
                assignments: vec![vec![1, 2, 3]],
            },
        )
        .unwrap();
        let epoch1 = s.broker(1).unwrap().epoch;
        // A fence aimed at an older incarnation is refused.
        assert!(matches!(
            s.check(&MetaCommand::FenceBroker {
                node_id: 1,
                epoch: epoch1 - 1
            }),
            Err(Error::StaleEpoch(_))
        ));
        s.apply(
            21,
            &MetaCommand::FenceBroker {
                node_id: 1,
                epoch: epoch1,
            },
        )
        .unwrap();
        let p = s.topic("t").unwrap().partition(0).unwrap().clone();
        assert_eq!(
            (p.leader, p.leader_epoch, p.isr.clone()),
            (2, 1, vec![2, 3])
        );
        assert!(!s.broker_available(1));
        // Broker 2 restarts: its new incarnation gets a new epoch, starts
        // fenced, and leadership moves on to 3.
        s.apply(22, &register(2)).unwrap();
        assert_eq!(s.broker(2).unwrap().epoch, 22);
        assert!(s.broker(2).unwrap().fenced);
        let p = s.topic("t").unwrap().partition(0).unwrap().clone();
        assert_eq!((p.leader, p.isr.clone()), (3, vec![3]));
        // An ISR change from the leader at the right epochs applies once,
        // and only live brokers may join: broker 1 is still fenced.
        let alter = MetaCommand::AlterPartition {
            topic: "t".into(),
            partition: 0,
            leader: 3,
            leader_epoch: p.leader_epoch,
            partition_epoch: p.partition_epoch,
            isr: vec![3, 1],
        };
        assert!(matches!(s.check(&alter), Err(Error::InvalidBroker(_))));
        s.apply(
            23,
            &MetaCommand::UnfenceBroker {
                node_id: 1,
                epoch: epoch1,
            },
        )
        .unwrap();
        s.apply(24, &alter).unwrap();
        assert_eq!(s.topic("t").unwrap().partition(0).unwrap().isr, vec![3, 1]);
        assert!(matches!(s.check(&alter), Err(Error::StaleEpoch(_))));
    }

    #[test]
    fn cluster_id_is_set_once_and_broker_configs_validate() {
        let mut s = MetaState::default();
        let set = |id: &str| MetaCommand::SetClusterId {
            cluster_id: id.into(),
        };
        s.apply(1, &set("abc")).unwrap();
        assert!(s.check(&set("def")).is_err());
        assert_eq!(s.cluster_id(), Some("abc"));
        let update = |target: &str, key: &str, value: &str| MetaCommand::UpdateBrokerConfigs {
            target: target.into(),
            set: TopicConfigs::from([(key.to_owned(), value.to_owned())]),
            remove: vec![],
        };
        s.apply(2, &update("", "log.retention.ms", "1000")).unwrap();
        s.apply(3, &update("2", "min.insync.replicas", "2"))
            .unwrap();
        assert!(s.check(&update("x", "log.retention.ms", "1")).is_err());
        assert!(s
            .check(&update("", "listeners", "PLAINTEXT://:9092"))
            .is_err());
        assert_eq!(
            s.broker_configs("")
                .unwrap()
                .get("log.retention.ms")
                .map(String::as_str),
            Some("1000")
        );
    }
}
