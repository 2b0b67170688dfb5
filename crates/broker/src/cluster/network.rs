//! openraft's network, over the inter-node listener: Raft's vote, append
//! and snapshot calls, and the probe a blank voter sends, all through
//! [`PeerClient`].
//!
//! A peer that refuses this node (another voter set, a certificate of
//! another node) refuses every call until an operator fixes it. The reason
//! is logged once where the refusal arrives ([`super::notices`]); here a
//! refused vote is a vote not granted, and replication to a refusing peer
//! backs off further and further, so neither floods the log.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{Backoff, RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::BasicNode;
use veil_meta::raft::{NodeId, Peers, Probe, TypeConfig};

use super::client::{CallError, Lane, PeerClient};
use super::progress::{self, ReplicaProgress};
use super::rpc::{Call, Reply};

/// How long a probe of another voter may take at startup.
const PROBE_TIMEOUT: Duration = Duration::from_millis(700);

/// Addresses of the configured voters (learners carry theirs in the
/// membership's node records).
pub type VoterAddresses = Arc<BTreeMap<NodeId, String>>;

#[derive(Clone)]
pub struct Network {
    pub client: Arc<PeerClient>,
    pub voters: VoterAddresses,
    /// Where successful appends are recorded (DescribeQuorum's last fetch).
    pub progress: Arc<ReplicaProgress>,
}

pub struct Connection {
    client: Arc<PeerClient>,
    target: NodeId,
    addr: String,
    progress: Arc<ReplicaProgress>,
    /// The last call was refused: retry slowly.
    refused: bool,
}

/// Replication retries to an unreachable peer every half second (openraft's
/// default); to a refusing one ever more slowly, up to this.
const REFUSED_BACKOFF_MAX: Duration = Duration::from_secs(60);

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Connection;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Connection {
        let addr = if node.addr.is_empty() {
            self.voters.get(&target).cloned().unwrap_or_default()
        } else {
            node.addr.clone()
        };
        Connection {
            client: Arc::clone(&self.client),
            target,
            addr,
            progress: Arc::clone(&self.progress),
            refused: false,
        }
    }
}

fn rpc_error<E: std::error::Error>(e: CallError) -> RPCError<NodeId, BasicNode, E> {
    match e {
        CallError::Timeout { .. } | CallError::Unreachable { .. } => {
            RPCError::Unreachable(Unreachable::new(&e))
        }
        // Refusals are logged where they arrive, once per problem; openraft
        // logs every failed call, so it gets no more than a pointer.
        CallError::Refused { addr, .. } => {
            RPCError::Unreachable(Unreachable::new(&std::io::Error::other(format!(
                "{addr} refuses this node (the reason is logged once as a warning)"
            ))))
        }
        CallError::Protocol { .. } => {
            tracing::warn!(error = %e, "inter-node call failed");
            RPCError::Network(NetworkError::new(&e))
        }
    }
}

fn unexpected<E: std::error::Error>(addr: &str) -> RPCError<NodeId, BasicNode, E> {
    RPCError::Network(NetworkError::new(&std::io::Error::other(format!(
        "{addr} answered a different call"
    ))))
}

impl Connection {
    async fn call(
        &mut self,
        lane: Lane,
        call: Call,
        option: &RPCOption,
    ) -> Result<Reply, CallError> {
        if self.addr.is_empty() {
            return Err(CallError::Unreachable {
                addr: format!("node {}", self.target),
                reason: "no known address".into(),
            });
        }
        let outcome = self
            .client
            .call(&self.addr, lane, call, option.hard_ttl())
            .await;
        self.refused = matches!(outcome, Err(CallError::Refused { .. }));
        outcome
    }
}

impl RaftNetwork<TypeConfig> for Connection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        match self.call(Lane::Raft, Call::Append(rpc), &option).await {
            Ok(Reply::Append(r)) => {
                if r.is_ok() {
                    self.progress.contact(self.target, progress::now_ms());
                }
                r.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            Ok(_) => Err(unexpected(&self.addr)),
            Err(e) => Err(rpc_error(e)),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        match self.call(Lane::Raft, Call::Snapshot(rpc), &option).await {
            Ok(Reply::Snapshot(r)) => {
                r.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            Ok(_) => Err(unexpected(&self.addr)),
            Err(e) => Err(rpc_error(e)),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        let vote = rpc.vote;
        match self.call(Lane::Vote, Call::Vote(rpc), &option).await {
            Ok(Reply::Vote(r)) => {
                r.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            Ok(_) => Err(unexpected(&self.addr)),
            // A peer that refuses this node grants it nothing.
            Err(CallError::Refused { .. }) => Ok(VoteResponse::new(vote, None, false)),
            Err(e) => Err(rpc_error(e)),
        }
    }

    fn backoff(&self) -> Backoff {
        if self.refused {
            let steps = (0..).map(|i: u32| Duration::from_secs(1 << i.min(6)));
            Backoff::new(steps.map(|d| d.min(REFUSED_BACKOFF_MAX)))
        } else {
            Backoff::new(std::iter::repeat(Duration::from_millis(500)))
        }
    }
}

impl Peers for Network {
    async fn probe(&self, node: NodeId) -> Option<Probe> {
        let addr = self.voters.get(&node)?;
        match self
            .client
            .call(addr, Lane::Control, Call::Probe, PROBE_TIMEOUT)
            .await
        {
            Ok(Reply::Probe(p)) => p,
            Ok(_) => None,
            Err(e) => {
                tracing::debug!(node, error = %e, "probe failed");
                None
            }
        }
    }
}
