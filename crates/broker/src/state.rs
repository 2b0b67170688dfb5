//! Everything a request handler can reach: config, metadata, topics,
//! metrics and the clock.

use std::sync::Arc;

use parking_lot::Mutex;
use uuid::Uuid;
use veil_meta::{MetaCommand, MetaState, MetaStore, TopicConfigs};

use crate::auth::acl::Authorizer;
use crate::clock::Clock;
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

#[derive(Debug)]
pub struct BrokerState {
    pub config: Config,
    pub cluster_id: String,
    /// Filled in once listeners are bound (ephemeral ports are known then).
    pub advertised: parking_lot::RwLock<Vec<Advertised>>,
    meta: Mutex<MetaStore>,
    pub topics: TopicRegistry,
    pub metrics: Metrics,
    pub clock: Arc<dyn Clock>,
    /// Producer ids for InitProducerId, reserved in blocks through the metadata log.
    pub producer_ids: ProducerIdAllocator,
    /// ACL enforcement, with a copy of the bindings kept current by [`Self::commit`].
    pub authorizer: Authorizer,
    /// SASL: PLAIN users, decoy salts and the failed-login backoff.
    pub sasl: crate::auth::sasl::Authenticator,
    /// Consumer groups and committed offsets (`<data_dir>/groups/`).
    pub groups: Arc<GroupCoordinator>,
    /// Blind topics: share sealing, transform budget, token cache, visibility.
    pub blind: crate::blind::BlindRuntime,
}

impl BrokerState {
    /// Opens metadata and every partition log (running recovery).
    pub fn open(config: Config, clock: Arc<dyn Clock>, metrics: Metrics) -> Result<BrokerState> {
        std::fs::create_dir_all(&config.data_dir)?;
        let meta_dir = config.data_dir.join("meta");
        let meta = MetaStore::open(&meta_dir)?;
        let cluster_id = load_or_create_cluster_id(&meta_dir)?;
        let topics = TopicRegistry::new(
            config.data_dir.clone(),
            config.log.topic_defaults(),
            config.log.index_interval_bytes,
            metrics.clone(),
        );
        topics.sweep(meta.state())?;
        topics.reconcile(meta.state(), clock.now_ms())?;
        let authorizer = Authorizer::new(&config.authorizer, meta.state());
        let sasl = crate::auth::sasl::Authenticator::new(&config).map_err(Error::Config)?;
        let groups = open_groups(&config, Arc::clone(&clock))?;
        let blind = crate::blind::BlindRuntime::new(&config, meta.state());
        Ok(BrokerState {
            config,
            cluster_id,
            advertised: parking_lot::RwLock::new(Vec::new()),
            meta: Mutex::new(meta),
            topics,
            metrics,
            clock,
            producer_ids: ProducerIdAllocator::default(),
            authorizer,
            sasl,
            groups: Arc::new(groups),
            blind,
        })
    }

    pub fn node_id(&self) -> i32 {
        self.config.node_id
    }

    /// The advertised address of `listener` (the first listener if unknown).
    pub fn advertised_for(&self, listener: &str) -> Option<Advertised> {
        let all = self.advertised.read();
        all.iter()
            .find(|a| a.listener == listener)
            .or_else(|| all.first())
            .cloned()
    }

    /// Reads the metadata state.
    pub fn with_meta<T>(&self, f: impl FnOnce(&MetaState) -> T) -> T {
        f(self.meta.lock().state())
    }

    /// Checks a command against current metadata without committing it.
    pub fn check(&self, cmd: &MetaCommand) -> Result<()> {
        Ok(self.meta.lock().state().check(cmd)?)
    }

    /// Commits a metadata command durably and brings the topic registry in
    /// line. Runs on the blocking pool: it fsyncs and may open many files.
    pub async fn commit(self: &Arc<Self>, cmd: MetaCommand) -> Result<()> {
        let this = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            let mut meta = this.meta.lock();
            tracing::info!(command = cmd.kind(), "metadata change");
            let acls_changed = matches!(
                cmd,
                MetaCommand::CreateAcls { .. } | MetaCommand::DeleteAcls { .. }
            );
            let blind_changed =
                matches!(cmd, MetaCommand::Blind(_) | MetaCommand::DeleteTopic { .. });
            meta.commit(cmd)?;
            if acls_changed {
                this.authorizer.refresh(meta.state());
            }
            if blind_changed {
                this.blind.refresh(meta.state());
            }
            this.topics.reconcile(meta.state(), this.clock.now_ms())
        })
        .await
        .map_err(|e| Error::Io(std::io::Error::other(e)))?
    }

    /// A `CreateTopic` command with a fresh topic id.
    pub fn create_topic_command(
        name: &str,
        partitions: i32,
        replication_factor: i16,
        configs: TopicConfigs,
    ) -> MetaCommand {
        MetaCommand::CreateTopic {
            name: name.to_owned(),
            topic_id: Uuid::new_v4(),
            partitions,
            replication_factor,
            configs,
        }
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
    GroupCoordinator::open(&config.data_dir.join("groups"), settings, clock)
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
