//! Veil as a cluster: the metadata quorum, the broker registry, the
//! controller and the inter-node listener's own calls.
//!
//! Every node runs a member of the metadata quorum ([`quorum`], Raft via
//! openraft over [`network`]); the quorum leader is the controller
//! ([`controller`]): it registers brokers from their heartbeats
//! ([`registration`]), fences those whose lease expires, and moves their
//! leaderships. A metadata change proposed on any node is forwarded to the
//! controller ([`quorum::Quorum::propose`]); every node applies the
//! committed log and brings its topics, ACLs and caches in line
//! ([`publisher`]). Inter-node calls ([`rpc`], [`handler`], [`client`])
//! travel on a listener of their own, optionally with mTLS. A node without
//! a `[cluster]` section is a cluster of one: the same code, no listener.

pub mod client;
pub mod config;
pub mod controller;
pub mod handler;
pub mod network;
pub mod notices;
pub mod progress;
pub mod publisher;
pub mod quorum;
pub mod registration;
pub mod rpc;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::RwLock;
use tokio::sync::watch;
use uuid::Uuid;
use veil_meta::raft::QuorumSettings;
use veil_meta::Endpoint;

use crate::config::Config;
use crate::error::{Error, Result};

pub use config::ClusterConfig;

/// This node's registration as the controller last confirmed it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RegistrationStatus {
    /// The broker epoch (metadata index of the registration), once registered.
    pub epoch: Option<i64>,
    pub fenced: bool,
    /// Controlled shutdown is complete.
    pub may_shut_down: bool,
    /// The controller's applied metadata index at the last heartbeat.
    pub controller_applied: u64,
    /// When the controller last answered.
    pub answered: Option<std::time::Instant>,
}

/// Everything cluster-related a node holds.
#[derive(Debug)]
pub struct Cluster {
    pub node_id: i32,
    /// This process; a restart is a new incarnation.
    pub incarnation: Uuid,
    pub quorum: Arc<quorum::Quorum>,
    pub controller: Arc<controller::Controller>,
    pub client: Arc<client::PeerClient>,
    pub registration: watch::Sender<RegistrationStatus>,
    /// SIGTERM received: heartbeats ask for controlled shutdown.
    pub shutting_down: AtomicBool,
    /// The inter-node endpoint, once its listener is bound.
    pub internal: RwLock<Option<Endpoint>>,
    /// Whether this node has an inter-node listener (multi-node setups).
    pub clustered: bool,
    pub heartbeat_interval: Duration,
    pub session_timeout: Duration,
    /// Client connections hold a child of this token; stepping off cancels
    /// it (closing them) and a new one is made for later connections.
    client_gate: parking_lot::Mutex<tokio_util::sync::CancellationToken>,
    /// The broker's shutdown token, parent of every gate.
    gate_parent: parking_lot::Mutex<tokio_util::sync::CancellationToken>,
    /// Cut off from the controller: client connections are refused.
    stepped_off: AtomicBool,
}

/// Publishes the cluster gauges (called before each scrape).
pub fn update_gauges(state: &crate::state::BrokerState) {
    let m = &state.metrics;
    let quorum = &state.cluster.quorum;
    m.controller_id
        .set(i64::from(quorum.controller().unwrap_or(-1)));
    m.controller_active.set(i64::from(quorum.is_controller()));
    m.metadata_applied_index
        .set(i64::try_from(quorum.view().applied()).unwrap_or(i64::MAX));
    let (registered, fenced) = state.with_meta(|s| {
        (
            s.brokers().count(),
            s.brokers().filter(|b| b.fenced).count(),
        )
    });
    m.brokers_registered.set(registered as i64);
    m.brokers_fenced.set(fenced as i64);
    let (mut under, mut under_min) = (0i64, 0i64);
    m.replica_lag.reset();
    for topic in state.topics.all() {
        for p in topic.local_partitions() {
            if !p.is_leader() {
                continue;
            }
            let r = p.replica();
            if r.isr.len() < r.replicas.len() {
                under += 1;
            }
            if r.isr.len() < state.topics.min_insync(&topic, p.index) {
                under_min += 1;
            }
            let end = p.log_end_offset();
            let index = p.index.to_string();
            for (follower, progress) in p.follower_progress() {
                let lag = if progress.log_end_offset < 0 {
                    end
                } else {
                    end - progress.log_end_offset
                };
                m.replica_lag
                    .with_label_values(&[
                        topic.name.as_str(),
                        index.as_str(),
                        &follower.to_string(),
                    ])
                    .set(lag.max(0));
            }
        }
    }
    m.under_replicated_partitions.set(under);
    m.under_min_isr_partitions.set(under_min);
}

impl Cluster {
    /// Starts this node's quorum member (migrating an older single-node
    /// metadata directory first).
    pub async fn start(config: &Config, meta_dir: &Path) -> Result<Cluster> {
        let c = &config.cluster;
        let node_id = config.node_id;
        let voters: BTreeMap<i32, String> = if c.is_clustered() {
            c.voter_map()
                .map_err(Error::Config)?
                .into_iter()
                .map(|(id, v)| (id, v.address()))
                .collect()
        } else {
            BTreeMap::from([(node_id, String::new())])
        };
        let tls = match &c.tls {
            Some(t) => Some(
                crate::auth::tls::node_client_config(&t.ca_file, &t.cert_file, &t.key_file)
                    .map_err(|e| Error::Config(format!("cluster.tls: {e}")))?,
            ),
            None => None,
        };
        let identity = Arc::new(client::Identity {
            node_id,
            voters: c.voters_fingerprint(),
            cluster_id: RwLock::new(None),
        });
        let source = c.listen_addr(node_id).ok().flatten().map(|a| a.ip());
        let client = Arc::new(client::PeerClient::new(identity, tls, source));
        let settings = QuorumSettings {
            heartbeat_ms: c.raft_heartbeat_ms,
            election_timeout_ms: c.election_timeout_ms,
            snapshot_every: c.snapshot_every,
            keep_behind_snapshot: (c.snapshot_every / 5).max(10),
        };
        let quorum = quorum::Quorum::start(
            node_id,
            meta_dir,
            settings,
            voters,
            Arc::clone(&client),
            Duration::from_millis(c.request_timeout_ms),
        )
        .await?;
        Ok(Cluster {
            node_id,
            incarnation: veil_meta::cluster::new_incarnation(),
            quorum: Arc::new(quorum),
            controller: Arc::new({
                let controller = controller::Controller::new(
                    node_id,
                    Duration::from_millis(c.session_timeout_ms),
                    Duration::from_millis(c.heartbeat_interval_ms),
                );
                if c.auto_leader_rebalance_enable {
                    controller.with_rebalance(
                        Duration::from_millis(c.leader_imbalance_check_interval_ms),
                        f64::from(c.leader_imbalance_per_broker_percentage) / 100.0,
                    )
                } else {
                    controller
                }
            }),
            client,
            registration: watch::Sender::new(RegistrationStatus::default()),
            shutting_down: AtomicBool::new(false),
            internal: RwLock::new(None),
            clustered: c.is_clustered(),
            heartbeat_interval: Duration::from_millis(c.heartbeat_interval_ms),
            session_timeout: Duration::from_millis(c.session_timeout_ms),
            client_gate: parking_lot::Mutex::new(tokio_util::sync::CancellationToken::new()),
            gate_parent: parking_lot::Mutex::new(tokio_util::sync::CancellationToken::new()),
            stepped_off: AtomicBool::new(false),
        })
    }

    /// Registered and unfenced: this node may lead partitions.
    pub fn is_active(&self) -> bool {
        let s = *self.registration.borrow();
        s.epoch.is_some() && !s.fenced
    }

    /// Ties client connections to `shutdown` (and to stepping off).
    pub fn open_client_gate(&self, shutdown: &tokio_util::sync::CancellationToken) {
        *self.gate_parent.lock() = shutdown.clone();
        *self.client_gate.lock() = shutdown.child_token();
    }

    /// The token a new client connection serves under.
    pub fn client_gate(&self) -> tokio_util::sync::CancellationToken {
        self.client_gate.lock().clone()
    }

    pub fn is_stepped_off(&self) -> bool {
        self.stepped_off.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Steps off (closing client connections, refusing new ones) or back
    /// on. A node cut off from the controller for a session has been fenced
    /// and its partitions have new leaders; clients that stay with it would
    /// only see its stale metadata, so it sends them away.
    pub fn set_stepped_off(&self, off: bool) {
        let was = self
            .stepped_off
            .swap(off, std::sync::atomic::Ordering::SeqCst);
        if off && !was {
            tracing::warn!(
                "cut off from the controller for a session: closing client connections until it answers again"
            );
            let mut gate = self.client_gate.lock();
            gate.cancel();
            *gate = self.gate_parent.lock().child_token();
        } else if was && !off {
            tracing::info!("the controller answers again: serving clients");
        }
    }

    /// Whether the controller has answered within a session: a node cut
    /// off for longer has been fenced (its leaderships moved), so it must
    /// not take writes as leader any more, whatever its stale metadata says.
    pub fn in_contact(&self) -> bool {
        self.registration
            .borrow()
            .answered
            .is_some_and(|t| t.elapsed() <= self.session_timeout)
    }
}
