//! openraft's network, over the inter-node listener: Raft's vote, append
//! and snapshot calls, and the probe a blank voter sends, all through
//! [`PeerClient`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::BasicNode;
use veil_meta::raft::{NodeId, Peers, Probe, TypeConfig};

use super::client::{CallError, Lane, PeerClient};
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
}

pub struct Connection {
    client: Arc<PeerClient>,
    target: NodeId,
    addr: String,
}

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
        }
    }
}

fn rpc_error<E: std::error::Error>(e: CallError) -> RPCError<NodeId, BasicNode, E> {
    match e {
        CallError::Timeout { .. } | CallError::Unreachable { .. } => {
            RPCError::Unreachable(Unreachable::new(&e))
        }
        CallError::Refused { .. } | CallError::Protocol { .. } => {
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
    async fn call(&self, lane: Lane, call: Call, option: &RPCOption) -> Result<Reply, CallError> {
        if self.addr.is_empty() {
            return Err(CallError::Unreachable {
                addr: format!("node {}", self.target),
                reason: "no known address".into(),
            });
        }
        self.client
            .call(&self.addr, lane, call, option.hard_ttl())
            .await
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
        match self.call(Lane::Vote, Call::Vote(rpc), &option).await {
            Ok(Reply::Vote(r)) => {
                r.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            Ok(_) => Err(unexpected(&self.addr)),
            Err(e) => Err(rpc_error(e)),
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
