//! Everything a request handler can reach: config, the cluster (metadata
//! quorum, controller, registry), topics, metrics and the clock.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;
use veil_meta::raft::Rejection;
use veil_meta::{MetaCommand, MetaState, TopicConfigs};

use crate::auth::acl::Authorizer;
use crate::clock::Clock;
use crate::cluster::quorum::already_applied;
use crate::cluster::Cluster;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::group::{CoordinatorConfig, GroupCoordinator};
use crate::metrics::Metrics;
use crate::producer_ids::ProducerIdAllocator;
use crate::topics::TopicRegistry;

/// A listener's address as clients should dial it.
#[derive(Debug, Clone)]
pub struct Advertised {
    pub listener: String,
    pub host: String,
    pub port: i32,
}

/// A broker as clients of one listener reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerEndpoint {
    pub node_id: i32,
    pub host: String,
    pub port: i32,
    pub rack: Option<String>,
}

#[derive(Debug)]
pub struct BrokerState {
    pub config: Config,
    /// This node's own cluster id, used until the quorum has named the
    /// cluster (and proposed as that name when this node is controller).
    local_cluster_id: String,
    /// Filled in once listeners are bound (ephemeral ports are known then).
    pub advertised: parking_lot::RwLock<Vec<Advertised>>,
    /// The metadata quorum, controller and registry.
    pub cluster: Cluster,
    pub topics: TopicRegistry,
    pub metrics: Metrics,
    pub clock: Arc<dyn Clock>,
    /// Producer ids for InitProducerId, reserved in blocks through the metadata log.
    pub producer_ids: ProducerIdAllocator,
    /// ACL enforcement, with a copy of the bindings kept current by the publisher.
    pub authorizer: Authorizer,
    /// SASL: PLAIN users, decoy salts and the failed-login backoff.
    pub sasl: crate::auth::sasl::Authenticator,
    /// Consumer groups and committed offsets (`<data_dir>/groups/`).
    pub groups: Arc<GroupCoordinator>,
    /// The transaction coordinator (active while this node is controller).
    pub transactions: Arc<crate::txn::TransactionCoordinator>,
    /// Blind topics: share sealing, transform budget, token cache, visibility.
    pub blind: crate::blind::BlindRuntime,
    /// Follower fetchers and ISR upkeep.
    pub replication: crate::replication::Replication,
    /// Which client connections are admitted; dynamic broker configs change it.
    pub connection_limits: Arc<crate::connection_limits::ConnectionLimits>,
    /// `log.flush.interval.ms` in force (a dynamic broker config).
    flush_interval_ms: watch::Sender<u64>,
    /// The metadata index this node's topics, ACLs and caches reflect.
    published: watch::Sender<u64>,
    /// Stops the background work started by [`BrokerState::start_background`].
    background: CancellationToken,
}

impl Drop for BrokerState {
    fn drop(&mut self) {
        self.background.cancel();
    }
}

impl BrokerState {
    /// Whether this leader may take an append for `topic`-`index` now, and
    /// the `min.insync.replicas` an acks=all answer then waits for. Refused
    /// (with the client's message) when cut off from the controller for a
    /// whole session — it has been fenced and its leaderships moved — and,
    /// with `acks_all`, when fewer in-sync replicas are live than the minimum.
    /// The one gate for Produce and MQTT publishes.
    pub fn admit_append(
        &self,
        topic: &crate::topics::Topic,
        index: i32,
        partition: &crate::partition::Partition,
        acks_all: bool,
    ) -> std::result::Result<usize, (Error, String)> {
        let min_insync = self.topics.min_insync(topic, index);
        if acks_all {
            let live =
                partition.live_isr_len(std::time::Instant::now(), self.cluster.session_timeout);
            if live < min_insync {
                return Err((
                    Error::NotEnoughReplicas {
                        after_append: false,
                    },
                    format!("{live} live in-sync replica(s), min.insync.replicas is {min_insync}"),
                ));
            }
        }
        if !self.cluster.in_contact() {
            let e = Error::NotLeader {
                leader: -1,
                leader_epoch: -1,
            };
            let message = e.client_message();
            return Err((e, message));
        }
        Ok(min_insync)
    }

    /// Starts this node's quorum member and opens every hosted partition
    /// log (running recovery).
    pub async fn open(
        config: Config,
        clock: Arc<dyn Clock>,
        metrics: Metrics,
    ) -> Result<Arc<BrokerState>> {
        std::fs::create_dir_all(&config.data_dir)?;
        let meta_dir = config.data_dir.join("meta");
        std::fs::create_dir_all(&meta_dir)?;
        let local_cluster_id = load_or_create_cluster_id(&meta_dir)?;
        let cluster = Cluster::start(&config, &meta_dir).await?;
        let view = Arc::clone(cluster.quorum.view());
        let topics = TopicRegistry::new(
            config.data_dir.clone(),
            config.log.topic_defaults(),
            config.log.index_interval_bytes,
            metrics.clone(),
            match config.log.flush {
                crate::config::Flush::Sync => crate::partition::Durability::SyncData,
                crate::config::Flush::None => crate::partition::Durability::Buffered,
            },
        );
        let config_for_blocking = config.clone();
        let (topics, authorizer, blind, groups) = {
            let view = Arc::clone(&view);
            let clock = Arc::clone(&clock);
            tokio::task::spawn_blocking(move || -> Result<_> {
                let config = config_for_blocking;
                view.read(|s| topics.sweep(s, config.node_id))?;
                let records: Vec<veil_meta::TopicRecord> =
                    view.read(|s| s.topics().cloned().collect());
                topics.reconcile(&records, config.node_id, clock.now_ms())?;
                let authorizer = view.read(|s| Authorizer::new(&config.authorizer, s));
                let blind = view.read(|s| crate::blind::BlindRuntime::new(&config, s));
                let groups = open_groups(&config, clock)?;
                Ok((topics, authorizer, blind, groups))
            })
            .await
            .map_err(|e| Error::Io(std::io::Error::other(e)))??
        };
        // Everything the pieces above were built from is now reflected.
        view.take_changes();
        let sasl = crate::auth::sasl::Authenticator::new(&config).map_err(Error::Config)?;
        let connection_limits = crate::connection_limits::ConnectionLimits::new(&config.network)
            .map_err(Error::Config)?;
        let state = Arc::new(BrokerState {
            connection_limits,
            flush_interval_ms: watch::Sender::new(config.log.flush_interval_ms),
            published: watch::Sender::new(view.applied()),
            config,
            local_cluster_id,
            advertised: parking_lot::RwLock::new(Vec::new()),
            cluster,
            topics,
            metrics,
            clock,
            producer_ids: ProducerIdAllocator::default(),
            authorizer,
            sasl,
            groups: Arc::new(groups),
            transactions: Arc::default(),
            blind,
            replication: crate::replication::Replication::default(),
            background: CancellationToken::new(),
        });
        state.apply_dynamic_configs();
        Ok(state)
    }

    /// Starts following metadata, heartbeating to the controller and (when
    /// this node is controller) the controller's duties. Stops when the
    /// state is dropped or `shutdown` is cancelled.
    pub fn start_background(self: &Arc<Self>, shutdown: &CancellationToken) {
        let token = self.background.clone();
        let outer = shutdown.clone();
        tokio::spawn(async move {
            outer.cancelled().await;
            token.cancel();
        });
        crate::replication::Replication::start(self, &self.background);
        tokio::spawn(crate::txn::run_timers(
            Arc::downgrade(self),
            self.background.clone(),
        ));
        tokio::spawn(crate::cluster::publisher::run(
            Arc::downgrade(self),
            self.background.clone(),
        ));
        tokio::spawn(crate::cluster::registration::run(
            Arc::clone(self),
            self.background.clone(),
        ));
        tokio::spawn(Arc::clone(&self.cluster.controller).run(
            Arc::clone(&self.cluster.quorum),
            self.local_cluster_id.clone(),
            self.background.clone(),
        ));
        if self.groups.has_legacy() {
            // Groups of an older store move into __consumer_offsets as soon
            // as it exists, not at the first client request.
            let state = Arc::clone(self);
            let stop = self.background.clone();
            tokio::spawn(async move {
                for _ in 0..120 {
                    if crate::group::offsets_topic::ensure(&state).await.is_ok() {
                        return;
                    }
                    tokio::select! {
                        () = stop.cancelled() => return,
                        () = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
                tracing::warn!("could not create __consumer_offsets for the older group store");
            });
        }
    }

    /// Waits (at most `limit`) until this node is registered, unfenced and
    /// has published the metadata it had at the time of the call.
    pub async fn wait_ready(&self, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        let mut status = self.cluster.registration.subscribe();
        let active = tokio::time::timeout_at(
            deadline,
            status.wait_for(|s| s.epoch.is_some() && !s.fenced),
        )
        .await
        .is_ok_and(|r| r.is_ok());
        if !active {
            return false;
        }
        let target = self.cluster.quorum.view().applied();
        self.wait_published(target, deadline).await
    }

    pub fn node_id(&self) -> i32 {
        self.config.node_id
    }

    /// Whether this node is ready to serve clients, or why not.
    pub fn readiness(&self) -> std::result::Result<(), String> {
        if let Some(why) = self.cluster.quorum.stopped() {
            return Err(why);
        }
        let status = *self.cluster.registration.borrow();
        if status.epoch.is_none() {
            return Err("not registered with the controller yet".into());
        }
        if status.fenced {
            return Err("fenced by the controller (catching up or not heard from)".into());
        }
        if self.cluster.quorum.controller().is_none() {
            return Err("the metadata quorum has no controller".into());
        }
        // Out of touch with the controller (cut off?): what we know may be old.
        let fresh = self.cluster.heartbeat_interval * 4;
        if status.answered.is_none_or(|t| t.elapsed() > fresh) {
            return Err("no answer from the controller recently".into());
        }
        let applied = self.cluster.quorum.view().applied();
        let target = applied.max(status.controller_applied);
        if self.published() < target {
            return Err(format!(
                "catching up with metadata ({} of {target})",
                self.published()
            ));
        }
        Ok(())
    }

    /// The cluster id: the quorum's, or this node's own until it has one.
    pub fn cluster_id(&self) -> String {
        self.cluster_id_if_known()
            .unwrap_or_else(|| self.local_cluster_id.clone())
    }

    /// The cluster id the quorum gave the cluster, once it has.
    pub fn cluster_id_if_known(&self) -> Option<String> {
        self.with_meta(|s| s.cluster_id().map(str::to_owned))
    }

    /// Whether `node` receives the metadata log as a learner.
    pub fn is_learner(&self, node: i32) -> bool {
        let id = u64::try_from(node).unwrap_or(u64::MAX);
        self.cluster
            .quorum
            .metrics()
            .membership_config
            .membership()
            .get_node(&id)
            .is_some()
    }

    /// The advertised address of `listener` (the first listener if unknown).
    pub fn advertised_for(&self, listener: &str) -> Option<Advertised> {
        let all = self.advertised.read();
        all.iter()
            .find(|a| a.listener == listener)
            .or_else(|| all.first())
            .cloned()
    }

    /// Reads the metadata state (hold it briefly: applies wait).
    pub fn with_meta<T>(&self, f: impl FnOnce(&MetaState) -> T) -> T {
        self.cluster.quorum.view().read(f)
    }

    /// Checks a command against current metadata without committing it.
    pub fn check(&self, cmd: &MetaCommand) -> Result<()> {
        Ok(self.with_meta(|s| s.check(cmd))?)
    }

    /// The metadata index this node's topics, ACLs and caches reflect.
    pub fn published(&self) -> u64 {
        *self.published.borrow()
    }

    /// Notified whenever [`BrokerState::published`] moves.
    pub fn watch_published(&self) -> watch::Receiver<u64> {
        self.published.subscribe()
    }

    /// Cancelled when the broker stops its background work.
    pub fn background_token(&self) -> CancellationToken {
        self.background.clone()
    }

    pub(crate) fn mark_published(&self, index: u64) {
        self.published.send_if_modified(|p| {
            let newer = index > *p;
            if newer {
                *p = index;
            }
            newer
        });
    }

    async fn wait_published(&self, index: u64, deadline: tokio::time::Instant) -> bool {
        let mut rx = self.published.subscribe();
        tokio::time::timeout_at(deadline, rx.wait_for(|p| *p >= index))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Commits a metadata command through the quorum and waits until this
    /// node reflects it, so the caller sees its own change. A command the
    /// state refuses comes back as the metadata error.
    pub async fn commit(self: &Arc<Self>, cmd: MetaCommand) -> Result<()> {
        tracing::info!(command = cmd.kind(), "metadata change");
        let quorum = &self.cluster.quorum;
        let index = match quorum.propose(cmd.clone()).await {
            Ok(index) => index,
            Err(Error::Meta(e)) => {
                let rejection = Rejection::from(e);
                if !already_applied(&cmd, &rejection, quorum.view()) {
                    return Err(Error::Meta(rejection.into()));
                }
                quorum.view().applied()
            }
            Err(e) => return Err(e),
        };
        let deadline = tokio::time::Instant::now()
            + Duration::from_millis(self.config.cluster.request_timeout_ms);
        if !self.wait_published(index, deadline).await {
            // Committed all the same: never report a committed change as failed.
            tracing::warn!(
                index,
                "a committed metadata change is not yet reflected on this node"
            );
        }
        Ok(())
    }

    /// Puts the dynamic broker configs (cluster-wide, then this node's) in
    /// force: topic defaults, connection limits, the SASL session lifetime
    /// and the background flush interval.
    pub fn apply_dynamic_configs(&self) {
        let layers = self.broker_config_layers();
        let e = crate::broker_configs::effective(&self.config, &layers);
        self.topics.set_broker_defaults(e.topic_defaults);
        if self.connection_limits.reconfigure(e.limits.clone()) {
            tracing::info!(
                max_connections = e.limits.total,
                max_connections_per_ip = e.limits.per_ip,
                "connection limits changed"
            );
        }
        self.sasl.set_max_reauth_ms(e.max_reauth_ms);
        self.flush_interval_ms.send_if_modified(|ms| {
            let changed = *ms != e.flush_interval_ms;
            *ms = e.flush_interval_ms;
            changed
        });
    }

    /// The dynamic broker configs stored for every node and for this one.
    pub fn broker_config_layers(&self) -> crate::broker_configs::Layers {
        self.with_meta(|s| crate::broker_configs::Layers::read(s, self.node_id()))
    }

    /// `log.flush.interval.ms` in force, notified when it changes.
    pub fn flush_interval(&self) -> watch::Receiver<u64> {
        self.flush_interval_ms.subscribe()
    }

    /// Registered, unfenced brokers: the ones clients may be sent to.
    pub fn available_brokers(&self) -> std::collections::BTreeSet<i32> {
        self.with_meta(|s| {
            s.brokers()
                .filter(|b| !b.fenced)
                .map(|b| b.node_id)
                .collect()
        })
    }

    /// Where clients of `listener` reach each available broker (Kafka
    /// leaves out brokers without that listener). This node is always
    /// listed, registered or not yet, so a client is never told of no
    /// broker at all.
    pub fn broker_endpoints(&self, listener: &str) -> Vec<BrokerEndpoint> {
        let mut out: Vec<BrokerEndpoint> = self.with_meta(|s| {
            s.brokers()
                .filter(|b| !b.fenced || b.node_id == self.node_id())
                .filter_map(|b| {
                    let e = b
                        .listeners
                        .iter()
                        .find(|e| e.name == listener)
                        .or_else(|| b.listeners.first())?;
                    Some(BrokerEndpoint {
                        node_id: b.node_id,
                        host: e.host.clone(),
                        port: i32::from(e.port),
                        rack: b.rack.clone(),
                    })
                })
                .collect()
        });
        if !out.iter().any(|b| b.node_id == self.node_id()) {
            if let Some(a) = self.advertised_for(listener) {
                out.push(BrokerEndpoint {
                    node_id: self.node_id(),
                    host: a.host,
                    port: a.port,
                    rack: self.config.cluster.rack.clone(),
                });
            }
        }
        out.sort_by_key(|b| b.node_id);
        out
    }

    /// The live brokers (registered, unfenced) as `(id, rack)`, for replica
    /// placement.
    pub fn live_brokers(&self) -> Vec<(i32, Option<String>)> {
        self.with_meta(|s| {
            s.brokers()
                .filter(|b| !b.fenced && !b.in_controlled_shutdown)
                .map(|b| (b.node_id, b.rack.clone()))
                .collect()
        })
    }

    /// Replica lists for `partitions` new partitions of `replication_factor`
    /// replicas over the live brokers, or INVALID_REPLICATION_FACTOR.
    pub fn assign_replicas(
        &self,
        partitions: i32,
        replication_factor: i16,
    ) -> Result<Vec<Vec<i32>>> {
        let brokers = self.live_brokers();
        let start = usize::try_from(rand::random::<u32>()).unwrap_or(0);
        veil_meta::cluster::assign_replicas(&brokers, partitions, replication_factor, start)
            .ok_or_else(|| {
                Error::Meta(veil_meta::Error::InvalidReplicationFactor(format!(
                    "replication factor {replication_factor} is larger than the {} available broker(s)",
                    brokers.len()
                )))
            })
    }

    /// A `CreateTopic` command with a fresh topic id and replicas placed on
    /// the live brokers.
    pub fn create_topic_command(
        &self,
        name: &str,
        partitions: i32,
        replication_factor: i16,
        configs: TopicConfigs,
    ) -> Result<MetaCommand> {
        let assignments = self.assign_replicas(partitions, replication_factor)?;
        Ok(MetaCommand::CreateTopic {
            name: name.to_owned(),
            topic_id: Uuid::new_v4(),
            partitions,
            replication_factor,
            configs,
            assignments,
        })
    }
}

fn open_groups(config: &Config, clock: Arc<dyn Clock>) -> Result<GroupCoordinator> {
    let g = &config.groups;
    let settings = CoordinatorConfig {
        initial_rebalance_delay_ms: g.initial_rebalance_delay_ms,
        min_session_timeout_ms: g.min_session_timeout_ms,
        max_session_timeout_ms: g.max_session_timeout_ms,
        offsets_retention_ms: g.offsets_retention_minutes.saturating_mul(60_000),
    };
    let timing = crate::group::service::Timing {
        live_window: std::time::Duration::from_millis(config.cluster.session_timeout_ms),
        request_timeout: std::time::Duration::from_millis(config.cluster.request_timeout_ms),
    };
    GroupCoordinator::open(&config.data_dir.join("groups"), settings, clock, timing)
        .map_err(|e| Error::Io(std::io::Error::other(e)))
}

/// The cluster id is chosen once, at the first start, and kept in `meta/cluster.id`.
fn load_or_create_cluster_id(meta_dir: &std::path::Path) -> Result<String> {
    let path = meta_dir.join("cluster.id");
    match std::fs::read_to_string(&path) {
        Ok(id) if !id.trim().is_empty() => Ok(id.trim().to_owned()),
        Ok(_) | Err(_) => {
            let id = Uuid::new_v4().simple().to_string();
            let tmp = meta_dir.join("cluster.id.tmp");
            std::fs::write(&tmp, &id)?;
            std::fs::File::open(&tmp)?.sync_all()?;
            std::fs::rename(&tmp, &path)?;
            Ok(id)
        }
    }
}
