//! A seeded fault simulation of the metadata quorum: three in-process Raft
//! nodes on the real log store and state machine (files in a temp dir),
//! connected by an in-memory network that drops messages and partitions
//! nodes, while a nemesis crashes, restarts and wipes nodes and a client
//! proposes commands.
//!
//! Checked throughout and at the end:
//! * every sample of a node's (applied index, history digest) agrees with
//!   every other node's at the same index: applied states are prefixes of one
//!   sequence, never two;
//! * after healing, all nodes converge to the same state, which holds every
//!   command whose proposal was acknowledged.
//!
//! The fault schedule comes from `VEIL_SIM_SEED` (printed; random if unset).
//! Thread scheduling is not controlled, so a seed replays the schedule, not
//! the exact interleaving; the properties must hold for every interleaving.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::BasicNode;
use parking_lot::Mutex;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use veil_meta::raft::{
    MetaRaft, MetaView, NodeId, Peers, Probe, QuorumNode, QuorumSettings, TypeConfig,
};
use veil_meta::{MetaCommand, TopicConfigs};

/// Messages are dropped with this probability (per mille), and whole nodes
/// cut off, as the nemesis decides.
struct Router {
    nodes: Mutex<HashMap<NodeId, QuorumNode>>,
    rng: Mutex<StdRng>,
    drop_per_mille: Mutex<u32>,
    isolated: Mutex<BTreeSet<NodeId>>,
}

impl Router {
    fn deliverable(&self, from: NodeId, to: NodeId) -> Option<QuorumNode> {
        let isolated = self.isolated.lock();
        if isolated.contains(&from) || isolated.contains(&to) {
            return None;
        }
        drop(isolated);
        let p = *self.drop_per_mille.lock();
        if p > 0 && self.rng.lock().random_range(0..1000) < p {
            return None;
        }
        self.nodes.lock().get(&to).cloned()
    }
}

struct Factory {
    router: Arc<Router>,
    from: NodeId,
}

struct Conn {
    router: Arc<Router>,
    from: NodeId,
    to: NodeId,
}

fn unreachable<E: std::error::Error>() -> RPCError<NodeId, BasicNode, E> {
    RPCError::Unreachable(Unreachable::new(&io::Error::other("dropped")))
}

impl RaftNetworkFactory<TypeConfig> for Factory {
    type Network = Conn;
    async fn new_client(&mut self, target: NodeId, _node: &BasicNode) -> Conn {
        Conn {
            router: Arc::clone(&self.router),
            from: self.from,
            to: target,
        }
    }
}

impl RaftNetwork<TypeConfig> for Conn {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        let Some(raft) = self.router.deliverable(self.from, self.to) else {
            return Err(unreachable());
        };
        let out = raft
            .raft
            .append_entries(rpc)
            .await
            .map_err(|e| RPCError::RemoteError(RemoteError::new(self.to, e)))?;
        // The answer can be lost too.
        if self.router.deliverable(self.to, self.from).is_none() {
            return Err(RPCError::Network(NetworkError::new(&io::Error::other(
                "reply dropped",
            ))));
        }
        Ok(out)
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        let Some(raft) = self.router.deliverable(self.from, self.to) else {
            return Err(unreachable());
        };
        raft.raft
            .install_snapshot(rpc)
            .await
            .map_err(|e| RPCError::RemoteError(RemoteError::new(self.to, e)))
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        _option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        let Some(raft) = self.router.deliverable(self.from, self.to) else {
            return Err(unreachable());
        };
        raft.vote(rpc)
            .await
            .map_err(|e| RPCError::RemoteError(RemoteError::new(self.to, e)))
    }
}

struct Node {
    raft: MetaRaft,
    view: Arc<MetaView>,
    member: QuorumNode,
}

fn settings() -> QuorumSettings {
    QuorumSettings {
        heartbeat_ms: 40,
        election_timeout_ms: 200,
        // Small, so snapshots, purges and snapshot installs all happen.
        snapshot_every: 25,
        keep_behind_snapshot: 5,
    }
}

/// A blank node asks the others through the same lossy network.
struct SimPeers {
    router: Arc<Router>,
    from: NodeId,
}

impl Peers for SimPeers {
    async fn probe(&self, node: NodeId) -> Option<Probe> {
        self.router.deliverable(self.from, node).map(|n| n.probe())
    }
}

async fn start(router: &Arc<Router>, id: NodeId, dir: &Path) -> Node {
    let voters: BTreeMap<NodeId, BasicNode> = (1..=3).map(|i| (i, BasicNode::new(""))).collect();
    let node = QuorumNode::start(
        id,
        dir,
        &settings(),
        "sim",
        voters,
        Factory {
            router: Arc::clone(router),
            from: id,
        },
        &SimPeers {
            router: Arc::clone(router),
            from: id,
        },
    )
    .await
    .expect("node starts");
    router.nodes.lock().insert(id, node.clone());
    Node {
        raft: node.raft.clone(),
        view: Arc::clone(&node.view),
        member: node,
    }
}

fn create(n: u64) -> MetaCommand {
    MetaCommand::CreateTopic {
        name: format!("t{n}"),
        topic_id: uuid::Uuid::new_v4(),
        partitions: 1,
        replication_factor: 1,
        configs: TopicConfigs::new(),
        // Replica lists are checked against registered brokers: register 0 first.
        assignments: vec![vec![0]],
    }
}

fn seed() -> u64 {
    std::env::var("VEIL_SIM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn applied_states_are_prefixes_of_one_history_under_crashes_and_drops() {
    let seed = seed();
    println!("VEIL_SIM_SEED={seed}");
    let mut rng = StdRng::seed_from_u64(seed);
    let temp = tempfile::tempdir().expect("temp dir");
    let dirs: HashMap<NodeId, PathBuf> = (1..=3)
        .map(|i| (i, temp.path().join(format!("n{i}"))))
        .collect();
    let router = Arc::new(Router {
        nodes: Mutex::new(HashMap::new()),
        rng: Mutex::new(StdRng::seed_from_u64(seed ^ 0x5eed)),
        drop_per_mille: Mutex::new(0),
        isolated: Mutex::new(BTreeSet::new()),
    });
    let mut live: BTreeMap<NodeId, Node> = BTreeMap::new();
    for id in 1..=3 {
        live.insert(id, start(&router, id, &dirs[&id]).await);
    }
    // index → digest, from every sample of every node.
    let mut digests: BTreeMap<u64, u64> = BTreeMap::new();
    let mut acknowledged: Vec<String> = Vec::new();
    let mut next = 0u64;
    let mut registered = false;
    let sample = |live: &BTreeMap<NodeId, Node>, digests: &mut BTreeMap<u64, u64>| {
        for (id, n) in live {
            let (index, digest) = n.view.read(|s| (s.last_applied(), s.digest()));
            if digest == 0 {
                continue;
            }
            let seen = *digests.entry(index).or_insert(digest);
            assert_eq!(
                seen, digest,
                "node {id} diverged at index {index} (seed {seed})"
            );
        }
    };
    // Bounds against a hang, generous for a loaded machine (150 rounds take about 5 s alone).
    let deadline = Instant::now() + Duration::from_secs(120);
    for round in 0..150 {
        assert!(
            Instant::now() < deadline,
            "simulation overran (seed {seed})"
        );
        let roll = rng.random_range(0..100);
        match roll {
            0..=49 => {
                // Propose to whichever live node believes it leads.
                let leader = live
                    .values()
                    .find(|n| n.raft.metrics().borrow().current_leader == Some(n.raft_id()));
                if let Some(n) = leader {
                    let cmd = if registered {
                        next += 1;
                        create(next)
                    } else {
                        MetaCommand::RegisterBroker {
                            node_id: 0,
                            incarnation: uuid::Uuid::new_v4(),
                            listeners: vec![],
                            internal: None,
                            rack: None,
                        }
                    };
                    let name = match &cmd {
                        MetaCommand::CreateTopic { name, .. } => Some(name.clone()),
                        _ => None,
                    };
                    let r =
                        tokio::time::timeout(Duration::from_millis(500), n.raft.client_write(cmd))
                            .await;
                    if let Ok(Ok(resp)) = r {
                        if resp.data.is_ok() {
                            match name {
                                Some(name) => acknowledged.push(name),
                                None => registered = true,
                            }
                        }
                    }
                }
            }
            50..=61 if live.len() > 1 => {
                let victim = *live.keys().nth(rng.random_range(0..live.len())).unwrap();
                let node = live.remove(&victim).unwrap();
                router.nodes.lock().remove(&victim);
                let _ = node.raft.shutdown().await;
                println!("round {round}: crash {victim}");
            }
            62..=75 => {
                let down: Vec<NodeId> = (1..=3).filter(|i| !live.contains_key(i)).collect();
                if let Some(&id) = down.get(rng.random_range(0..down.len().max(1))) {
                    // Now and then the disk is lost too, while the other two
                    // are up and whole (one fault at a time): the node
                    // rejoins without voting and catches up from a snapshot.
                    let healthy =
                        live.len() == 2 && live.values().all(|n| !n.member.is_rejoining());
                    let wipe = healthy && rng.random_range(0..4) == 0;
                    if wipe {
                        std::fs::remove_dir_all(&dirs[&id]).expect("wipe");
                    }
                    println!(
                        "round {round}: restart {id}{}",
                        if wipe { " (wiped)" } else { "" }
                    );
                    live.insert(id, start(&router, id, &dirs[&id]).await);
                }
            }
            76..=85 => {
                let p = rng.random_range(0..300);
                *router.drop_per_mille.lock() = p;
                println!("round {round}: drop {p}/1000");
            }
            86..=92 => {
                let id = rng.random_range(1..=3);
                router.isolated.lock().insert(id);
                println!("round {round}: isolate {id}");
            }
            _ => {
                router.isolated.lock().clear();
                *router.drop_per_mille.lock() = 0;
                println!("round {round}: heal");
            }
        }
        sample(&live, &mut digests);
        tokio::time::sleep(Duration::from_millis(rng.random_range(5..60))).await;
    }

    // Heal everything and bring every node back.
    router.isolated.lock().clear();
    *router.drop_per_mille.lock() = 0;
    for id in 1..=3 {
        if let std::collections::btree_map::Entry::Vacant(slot) = live.entry(id) {
            slot.insert(start(&router, id, &dirs[&id]).await);
        }
    }
    // One more write through the leader settles the commit index everywhere.
    let settle = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(
            Instant::now() < settle,
            "no leader after healing (seed {seed})"
        );
        let leader = live
            .values()
            .find(|n| n.raft.metrics().borrow().current_leader == Some(n.raft_id()));
        if let Some(n) = leader {
            if let Ok(Ok(_)) =
                tokio::time::timeout(Duration::from_secs(1), n.raft.client_write(create(0))).await
            {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let target = live.values().map(|n| n.view.applied()).max().unwrap();
    loop {
        sample(&live, &mut digests);
        if live.values().all(|n| n.view.applied() >= target) {
            break;
        }
        assert!(
            Instant::now() < settle,
            "nodes did not converge (seed {seed})"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let states: Vec<_> = live.values().map(|n| n.view.clone_state()).collect();
    let digests_now: BTreeSet<u64> = states.iter().map(veil_meta::MetaState::digest).collect();
    assert_eq!(digests_now.len(), 1, "final states differ (seed {seed})");
    for name in &acknowledged {
        assert!(
            states[0].topic(name).is_some(),
            "acknowledged {name} is missing (seed {seed})"
        );
    }
    println!(
        "seed {seed}: {} acknowledged writes, {} sampled indexes, final index {target}",
        acknowledged.len(),
        digests.len()
    );
    for n in live.values() {
        let _ = n.raft.shutdown().await;
    }
}

trait RaftId {
    fn raft_id(&self) -> NodeId;
}

impl RaftId for Node {
    fn raft_id(&self) -> NodeId {
        self.raft.metrics().borrow().id
    }
}
