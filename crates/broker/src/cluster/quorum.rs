//! This node's member of the metadata quorum, as the broker uses it:
//! proposing a change (on the leader, or forwarded to it), knowing who the
//! controller is, and migrating a single-node metadata directory written
//! before metadata was replicated.
//!
//! The controller is the quorum leader, and only while a majority has
//! acknowledged it recently: a leader cut off from the others stops acting
//! as controller (its writes could never commit anyway).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::error::{ClientWriteError, RaftError};
use openraft::{
    BasicNode, CommittedLeaderId, LogId, Membership, RaftMetrics, ServerState, StoredMembership,
};
use veil_meta::raft::{
    legacy, state_machine, MetaView, NodeId, QuorumNode, QuorumSettings, Rejection,
};
use veil_meta::MetaCommand;

use super::client::{Lane, PeerClient};
use super::network::{Network, VoterAddresses};
use super::progress::{self, ReplicaProgress, UNKNOWN};
use super::rpc::{Call, Proposed, Reply};
use crate::error::{Error, Result};

#[derive(Debug)]
pub struct Quorum {
    member: QuorumNode,
    node_id: i32,
    client: Arc<PeerClient>,
    voters: VoterAddresses,
    request_timeout: Duration,
    /// A leader whose last majority acknowledgement is older than this no
    /// longer counts as controller.
    lease: Duration,
    /// Contacts and catching up of every replica, while this node leads.
    progress: Arc<ReplicaProgress>,
}

/// One replica of the metadata log as the leader sees it (Kafka's
/// DescribeQuorum `ReplicaState`); offsets and times are -1 when unknown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaState {
    pub node: i32,
    /// The offset after the last entry it holds (Kafka's log end offset).
    pub log_end_offset: i64,
    pub last_fetch_ms: i64,
    pub last_caught_up_ms: i64,
}

/// The quorum as its leader describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuorumDescription {
    pub leader: i32,
    /// The Raft term (Kafka's leader epoch of the metadata log).
    pub epoch: i32,
    /// The offset after the last committed entry.
    pub high_watermark: i64,
    pub voters: Vec<ReplicaState>,
    /// Members that receive the log but do not vote (broker-only nodes).
    pub observers: Vec<ReplicaState>,
}

fn raft_id(node: i32) -> NodeId {
    u64::try_from(node).unwrap_or_default()
}

impl Quorum {
    /// Opens `<meta_dir>/raft` (migrating an older single-node directory
    /// first) and starts this node's member of the quorum.
    pub async fn start(
        node_id: i32,
        meta_dir: &Path,
        settings: QuorumSettings,
        voters: BTreeMap<i32, String>,
        client: Arc<PeerClient>,
        request_timeout: Duration,
    ) -> Result<Quorum> {
        let raft_dir = meta_dir.join("raft");
        let voter_ids: Vec<NodeId> = voters.keys().map(|id| raft_id(*id)).collect();
        migrate(meta_dir, &raft_dir, node_id, &voter_ids)?;
        let addresses: VoterAddresses = Arc::new(
            voters
                .iter()
                .map(|(id, a)| (raft_id(*id), a.clone()))
                .collect(),
        );
        let progress = Arc::new(ReplicaProgress::default());
        let network = Network {
            client: Arc::clone(&client),
            voters: Arc::clone(&addresses),
            progress: Arc::clone(&progress),
        };
        let members: BTreeMap<NodeId, BasicNode> = addresses
            .iter()
            .map(|(id, a)| (*id, BasicNode::new(a)))
            .collect();
        // Twice the election timeout: a busy machine may delay acks that
        // long without the majority being gone; any longer and the others
        // will have elected a new leader anyway.
        let lease = Duration::from_millis(settings.election_timeout_ms * 2);
        let member = QuorumNode::start(
            raft_id(node_id),
            &raft_dir,
            &settings,
            "veil",
            members,
            network.clone(),
            &network,
        )
        .await
        .map_err(Error::Meta)?;
        tokio::spawn(progress::follow(
            member.raft.metrics(),
            Arc::clone(&progress),
        ));
        Ok(Quorum {
            member,
            node_id,
            client,
            voters: addresses,
            request_timeout,
            lease,
            progress,
        })
    }

    pub fn view(&self) -> &Arc<MetaView> {
        &self.member.view
    }

    pub fn member(&self) -> &QuorumNode {
        &self.member
    }

    pub fn metrics(&self) -> RaftMetrics<NodeId, BasicNode> {
        self.member.raft.metrics().borrow().clone()
    }

    /// The quorum as this node describes it while it is the controller
    /// (DescribeQuorum), `None` on any other node: a leader that lost its
    /// majority leads nothing (Kafka's leader resigns then too).
    pub fn describe(&self) -> Option<QuorumDescription> {
        if !self.is_controller() {
            return None;
        }
        let m = self.metrics();
        if m.state != ServerState::Leader || m.running_state.is_err() {
            return None;
        }
        let end = m.last_log_index;
        let now = progress::now_ms();
        let offset = |index: Option<u64>| {
            index.map_or(UNKNOWN, |i| {
                i64::try_from(i).unwrap_or(i64::MAX).saturating_add(1)
            })
        };
        let replica = |id: u64| {
            let node = i32::try_from(id).unwrap_or(-1);
            if id == m.id {
                return ReplicaState {
                    node,
                    log_end_offset: offset(end),
                    last_fetch_ms: now,
                    last_caught_up_ms: now,
                };
            }
            let matched = m
                .replication
                .as_ref()
                .and_then(|r| r.get(&id).copied().flatten())
                .map(|l| l.index);
            let caught_up_now = matched.is_some() && matched >= end;
            let (last_fetch_ms, last_caught_up_ms) = self.progress.timestamps(id, caught_up_now);
            ReplicaState {
                node,
                log_end_offset: offset(matched),
                last_fetch_ms,
                last_caught_up_ms,
            }
        };
        let membership = m.membership_config.membership();
        Some(QuorumDescription {
            leader: i32::try_from(m.id).unwrap_or(-1),
            epoch: i32::try_from(m.current_term).unwrap_or(i32::MAX),
            high_watermark: offset(m.last_applied.map(|l| l.index)),
            voters: membership.voter_ids().map(&replica).collect(),
            observers: membership.learner_ids().map(&replica).collect(),
        })
    }

    /// Why this node's quorum member no longer takes part, if it stopped:
    /// its metadata log could not write or sync (it is poisoned, so it
    /// neither votes nor acknowledges anything again), or Raft itself
    /// stopped on an error.
    pub fn stopped(&self) -> Option<String> {
        if self.member.log.is_poisoned() {
            return Some(
                "the metadata log failed to write or sync (disk full or an I/O error) and is \
                 poisoned: this node no longer votes or acknowledges metadata; free the disk or \
                 replace it, then restart the node"
                    .into(),
            );
        }
        match &self.member.raft.metrics().borrow().running_state {
            Err(e) => Some(format!("the metadata quorum member stopped: {e}")),
            Ok(()) => None,
        }
    }

    /// Notified on every change of Raft state (leader, terms, indexes).
    pub fn watch(&self) -> tokio::sync::watch::Receiver<RaftMetrics<NodeId, BasicNode>> {
        self.member.raft.metrics()
    }

    /// The node this one believes leads the quorum.
    pub fn leader(&self) -> Option<i32> {
        self.metrics()
            .current_leader
            .and_then(|l| i32::try_from(l).ok())
    }

    /// Whether this node is the controller: the quorum leader, with a
    /// majority's acknowledgement within the lease.
    pub fn is_controller(&self) -> bool {
        let m = self.metrics();
        m.state == ServerState::Leader
            && (self.voters.len() <= 1
                || m.millis_since_quorum_ack
                    .is_some_and(|ms| Duration::from_millis(ms) < self.lease))
    }

    /// The controller id for clients: this node's belief, `None` when a
    /// leader it knows has lost its majority (or none is known).
    pub fn controller(&self) -> Option<i32> {
        let m = self.metrics();
        match m.current_leader {
            Some(l) if l == raft_id(self.node_id) => self.is_controller().then_some(self.node_id),
            Some(l) => i32::try_from(l).ok(),
            None => None,
        }
    }

    /// The inter-node address of a voter.
    pub fn voter_address(&self, node: i32) -> Option<&str> {
        self.voters.get(&raft_id(node)).map(String::as_str)
    }

    pub fn is_voter(&self, node: i32) -> bool {
        self.voters.contains_key(&raft_id(node))
    }

    pub fn voter_ids(&self) -> Vec<i32> {
        self.voters
            .keys()
            .filter_map(|v| i32::try_from(*v).ok())
            .collect()
    }

    /// Commits `cmd` through the quorum: on this node if it leads, else on
    /// the leader. Returns the log index once committed (and applied on the
    /// leader); the state machine's refusal comes back as a metadata error.
    pub async fn propose(&self, cmd: MetaCommand) -> Result<u64> {
        let deadline = Instant::now() + self.request_timeout;
        let mut watch = self.watch();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let outcome = match self.leader() {
                Some(l) if l == self.node_id => self.propose_local(cmd.clone(), left).await,
                Some(l) => self.forward(l, cmd.clone(), left).await,
                None => Proposed::NotLeader { leader: None },
            };
            match outcome {
                Proposed::Committed { index } => return Ok(index),
                Proposed::Rejected { rejection, .. } => return Err(Error::Meta(rejection.into())),
                Proposed::Unavailable(reason) if reason.starts_with(UNKNOWN_OUTCOME) => {
                    return Err(Error::MetadataTimeout(reason))
                }
                Proposed::NotLeader { .. } | Proposed::Unavailable(_) => {
                    if Instant::now() >= deadline {
                        return Err(Error::NoController);
                    }
                    // Wait for news of a leader, but poll: a dead leader
                    // produces no news until the election timeout.
                    let _ = tokio::time::timeout(
                        Duration::from_millis(100)
                            .min(deadline.saturating_duration_since(Instant::now())),
                        watch.changed(),
                    )
                    .await;
                }
            }
        }
    }

    /// Proposes a decision only the controller may take (fencing on an expired lease, a
    /// leadership rebalance): committed here or not at all. Never forwarded, so a node that
    /// stopped being the controller while it was paused cannot have the new one commit what it
    /// decided on stale clocks.
    pub async fn propose_as_controller(&self, cmd: MetaCommand) -> Result<u64> {
        match self.propose_local(cmd, self.request_timeout).await {
            Proposed::Committed { index } => Ok(index),
            Proposed::Rejected { rejection, .. } => Err(Error::Meta(rejection.into())),
            Proposed::NotLeader { .. } => Err(Error::NoController),
            Proposed::Unavailable(reason) => Err(Error::MetadataTimeout(reason)),
        }
    }

    /// Proposes on this node, which should be the leader.
    pub async fn propose_local(&self, cmd: MetaCommand, timeout: Duration) -> Proposed {
        if !self.is_controller() && self.voters.len() > 1 {
            // A leader without a recent majority would only queue the write.
            return Proposed::NotLeader { leader: None };
        }
        match tokio::time::timeout(timeout, self.member.raft.client_write(cmd)).await {
            Err(_) => Proposed::Unavailable(format!(
                "{UNKNOWN_OUTCOME}: the quorum did not commit the change within {timeout:?}"
            )),
            Ok(Ok(resp)) => match resp.data {
                Ok(()) => Proposed::Committed {
                    index: resp.log_id.index,
                },
                Err(rejection) => Proposed::Rejected {
                    index: resp.log_id.index,
                    rejection,
                },
            },
            Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f)))) => {
                Proposed::NotLeader {
                    leader: f.leader_id.and_then(|l| i32::try_from(l).ok()),
                }
            }
            Ok(Err(e)) => Proposed::Unavailable(format!("the quorum refused the change: {e}")),
        }
    }

    async fn forward(&self, leader: i32, cmd: MetaCommand, timeout: Duration) -> Proposed {
        let Some(addr) = self.voter_address(leader) else {
            return Proposed::NotLeader { leader: None };
        };
        match self
            .client
            .call(addr, Lane::Control, Call::Propose(cmd), timeout)
            .await
        {
            Ok(Reply::Propose(p)) => p,
            Ok(_) => Proposed::Unavailable("the leader answered a different call".into()),
            // Sent but unanswered: it may yet commit; never propose twice.
            Err(super::client::CallError::Timeout { .. }) => Proposed::Unavailable(format!(
                "{UNKNOWN_OUTCOME}: the controller (node {leader}) did not answer in time"
            )),
            Err(e) => Proposed::Unavailable(e.to_string()),
        }
    }

    /// Adds a broker that is not a voter as a learner, so it receives the
    /// metadata log. Only the leader can.
    pub async fn add_learner(&self, node: i32, addr: &str) {
        let id = raft_id(node);
        let known = self
            .metrics()
            .membership_config
            .membership()
            .get_node(&id)
            .is_some_and(|n| n.addr == addr);
        if known || self.voters.contains_key(&id) {
            return;
        }
        match self
            .member
            .raft
            .add_learner(id, BasicNode::new(addr), false)
            .await
        {
            Ok(_) => tracing::info!(
                node,
                addr,
                "broker added to the metadata quorum as a learner"
            ),
            Err(e) => tracing::warn!(node, error = %e, "could not add a learner"),
        }
    }

    pub async fn shutdown(&self) {
        let _ = self.member.raft.shutdown().await;
    }
}

/// Marks a failure after which the change may or may not have committed.
pub const UNKNOWN_OUTCOME: &str = "outcome unknown";

/// Seeds `raft_dir` with the state of a single-node metadata directory
/// written before metadata was replicated, then moves the old files aside.
fn migrate(meta_dir: &Path, raft_dir: &Path, node_id: i32, voters: &[NodeId]) -> Result<()> {
    if raft_dir.exists() {
        return Ok(());
    }
    let Some(state) = legacy::load(meta_dir, node_id).map_err(Error::Meta)? else {
        return Ok(());
    };
    let index = state.last_applied();
    let log_id = LogId::new(CommittedLeaderId::new(0, raft_id(node_id)), index);
    let members: BTreeMap<NodeId, BasicNode> =
        voters.iter().map(|v| (*v, BasicNode::default())).collect();
    let membership = Membership::new(vec![members.keys().copied().collect()], members);
    let meta = veil_meta::raft::SnapshotMeta {
        last_log_id: Some(log_id),
        last_membership: StoredMembership::new(Some(log_id), membership),
        snapshot_id: format!("migrated-{index}"),
    };
    state_machine::write_snapshot(&raft_dir.join("sm"), &meta, &state).map_err(Error::Meta)?;
    legacy::retire(meta_dir)?;
    tracing::info!(
        topics = state.topics().count(),
        index,
        "migrated single-node metadata into the replicated metadata log"
    );
    Ok(())
}

/// Rejections that say the change is already in place (a proposal retried
/// after an unknown outcome).
pub fn already_applied(cmd: &MetaCommand, rejection: &Rejection, view: &MetaView) -> bool {
    match (cmd, rejection) {
        (MetaCommand::CreateTopic { name, topic_id, .. }, Rejection::TopicExists(_)) => {
            view.read(|s| s.topic(name).is_some_and(|t| t.topic_id == *topic_id))
        }
        _ => false,
    }
}
