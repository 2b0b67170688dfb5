//! Starting one member of the metadata quorum: open the log store and
//! state machine, start Raft, then either form the quorum or rejoin it.
//!
//! A voter whose metadata directory is empty cannot tell "the cluster is
//! new" from "I lost my disk". Raft is only safe if a voter never forgets
//! what it acknowledged or whom it voted for, so a blank voter first asks
//! the other voters how far they are: if any of them has applied anything,
//! the quorum exists and this node *rejoins*: it neither votes nor stands
//! for election until a leader has brought it up to where the others were.
//! An empty node voting at once could otherwise help elect a leader that
//! lacks entries this node's lost disk had acknowledged. (Kafka solves the
//! same problem with directory ids, KIP-853.) Only if no voter has applied
//! anything do all of them initialize the quorum, which openraft allows on
//! every node with the same voter set.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use openraft::error::RaftError;
use openraft::network::RaftNetworkFactory;
use openraft::raft::{VoteRequest, VoteResponse};
use openraft::BasicNode;
use serde::{Deserialize, Serialize};

use super::{LogStore, MetaRaft, MetaStateMachine, MetaView, NodeId, QuorumSettings, TypeConfig};

/// What a voter reports about itself to a blank voter deciding whether to
/// form the quorum or rejoin it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Probe {
    /// The node holds a Raft log, vote or snapshot.
    pub initialized: bool,
    /// The index of the last entry it applied (0 if none).
    pub applied: u64,
}

/// Asking other voters for a [`Probe`] (the broker does it over the
/// inter-node listener).
pub trait Peers: Send + Sync {
    fn probe(&self, node: NodeId) -> impl Future<Output = Option<Probe>> + Send;
}

/// One running quorum member.
#[derive(Clone)]
pub struct QuorumNode {
    pub id: NodeId,
    pub raft: MetaRaft,
    pub view: Arc<MetaView>,
    pub log: LogStore,
    /// True while a blank voter rejoins: it does not vote yet.
    rejoining: Arc<AtomicBool>,
}

impl std::fmt::Debug for QuorumNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuorumNode")
            .field("id", &self.id)
            .field("rejoining", &self.is_rejoining())
            .finish_non_exhaustive()
    }
}

/// How long a blank voter keeps asking the others before it decides.
const PROBE_ROUNDS: usize = 3;
const PROBE_PAUSE: Duration = Duration::from_millis(300);

impl QuorumNode {
    /// Opens `dir` (subdirectories `log` and `sm`) and starts Raft. `voters`
    /// is the configured voter set; a node outside it waits to be added as
    /// a learner by the leader.
    pub async fn start<N, P>(
        id: NodeId,
        dir: &Path,
        settings: &QuorumSettings,
        cluster_name: &str,
        voters: BTreeMap<NodeId, BasicNode>,
        network: N,
        peers: &P,
    ) -> crate::Result<QuorumNode>
    where
        N: RaftNetworkFactory<TypeConfig>,
        P: Peers,
    {
        let log = LogStore::open(&dir.join("log"))?;
        let sm = MetaStateMachine::open(&dir.join("sm"))?;
        let view = sm.view();
        let pristine = log.is_pristine() && view.applied() == 0 && !sm.has_snapshot();
        let config = settings
            .raft_config(cluster_name)
            .map_err(crate::Error::InvalidConfig)?;
        let raft = MetaRaft::new(id, Arc::new(config), network, log.clone(), sm)
            .await
            .map_err(|e| crate::Error::Io(std::io::Error::other(e)))?;
        let node = QuorumNode {
            id,
            raft,
            view,
            log,
            rejoining: Arc::new(AtomicBool::new(false)),
        };
        if pristine && voters.contains_key(&id) {
            let furthest = node.probe_voters(&voters, peers).await;
            if furthest > 0 {
                tracing::warn!(
                    node = id,
                    others_applied = furthest,
                    "the metadata directory is empty but the quorum exists: rejoining without \
                     voting until this node has caught up"
                );
                node.rejoining.store(true, Ordering::SeqCst);
                node.raft.runtime_config().elect(false);
                tokio::spawn(node.clone().finish_rejoin(furthest));
            } else if let Err(e) = node.raft.initialize(voters).await {
                // NotAllowed: another path already initialized it; fine.
                tracing::debug!(error = %e, "quorum already initialized");
            }
        }
        Ok(node)
    }

    /// The furthest applied index any other voter reports.
    async fn probe_voters<P: Peers>(&self, voters: &BTreeMap<NodeId, BasicNode>, peers: &P) -> u64 {
        let mut furthest = 0;
        for round in 0..PROBE_ROUNDS {
            let mut answered = 0;
            for &peer in voters.keys().filter(|p| **p != self.id) {
                if let Some(p) = peers.probe(peer).await {
                    answered += 1;
                    furthest = furthest.max(p.applied);
                }
            }
            if furthest > 0 || answered + 1 == voters.len() {
                break;
            }
            if round + 1 < PROBE_ROUNDS {
                tokio::time::sleep(PROBE_PAUSE).await;
            }
        }
        furthest
    }

    /// Waits until a leader has brought this node to `target`, then lets it
    /// vote and stand for election again.
    async fn finish_rejoin(self, target: u64) {
        let mut metrics = self.raft.metrics();
        loop {
            let caught_up = {
                let m = metrics.borrow_and_update();
                m.current_leader.is_some_and(|l| l != self.id)
                    && m.last_applied.is_some_and(|a| a.index >= target)
            };
            if caught_up {
                self.rejoining.store(false, Ordering::SeqCst);
                self.raft.runtime_config().elect(true);
                tracing::info!(
                    node = self.id,
                    applied = target,
                    "caught up with the quorum; voting again"
                );
                return;
            }
            if metrics.changed().await.is_err() {
                return;
            }
        }
    }

    pub fn is_rejoining(&self) -> bool {
        self.rejoining.load(Ordering::SeqCst)
    }

    /// This node's answer to a blank voter.
    pub fn probe(&self) -> Probe {
        let m = self.raft.metrics().borrow().clone();
        Probe {
            initialized: m.last_log_index.is_some() || m.vote.leader_id().term > 0,
            applied: m.last_applied.map_or(0, |l| l.index),
        }
    }

    /// Handles a vote request, refusing while rejoining.
    pub async fn vote(
        &self,
        req: VoteRequest<NodeId>,
    ) -> Result<VoteResponse<NodeId>, RaftError<NodeId>> {
        if self.is_rejoining() {
            let m = self.raft.metrics().borrow().clone();
            let last = self.log.last_log_id();
            tracing::debug!(candidate = %req.vote, "refusing a vote while rejoining");
            return Ok(VoteResponse::new(m.vote, last, false));
        }
        self.raft.vote(req).await
    }
}
