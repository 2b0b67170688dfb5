//! The topics this broker knows and the partition replicas it hosts, kept
//! in step with metadata.
//!
//! Metadata (`veil-meta`) says what exists and which nodes hold each
//! partition; this registry holds every topic's partition records and the
//! opened logs of the replicas on this node. Every applied metadata change
//! is followed by [`TopicRegistry::reconcile`]. Directories are bound to
//! their topic id ([`crate::log_dir`]); a replica whose log cannot be opened
//! is offline (KAFKA_STORAGE_ERROR) while every other partition serves.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use parking_lot::RwLock;
use uuid::Uuid;
use veil_log::codec::Codec;
use veil_log::{Compression, LogConfig, PartitionLog};
use veil_meta::{topic_config, MetaState, PartitionRecord, TopicConfigs, TopicRecord};

use crate::error::{Error, Result};
pub use crate::log_dir::partition_dir;
use crate::metrics::Metrics;
use crate::partition::Partition;

/// The codec `compression.type` asks for (`None`: `producer`), with its level config.
fn compression_codec(kind: &str, level: impl Fn(&str) -> Option<i32>) -> Option<Codec> {
    let (compression, level) = match kind {
        "uncompressed" => (Compression::None, None),
        "gzip" => (
            Compression::Gzip,
            level(topic_config::COMPRESSION_GZIP_LEVEL).filter(|l| *l >= 0),
        ),
        "snappy" => (Compression::Snappy, None),
        "lz4" => (Compression::Lz4, level(topic_config::COMPRESSION_LZ4_LEVEL)),
        "zstd" => (
            Compression::Zstd,
            level(topic_config::COMPRESSION_ZSTD_LEVEL),
        ),
        _ => return None,
    };
    Some(Codec::new(compression, level))
}

/// This node's part in one partition.
#[derive(Debug, Clone, Default)]
enum Replica {
    /// Metadata places no replica here.
    #[default]
    NotHosted,
    Online(Arc<Partition>),
    /// Hosted here, but the log could not be opened (until a restart).
    Offline,
}

#[derive(Debug)]
pub struct Topic {
    pub name: String,
    pub id: Uuid,
    pub configs: TopicConfigs,
    /// Every partition's replica record, by index.
    pub records: Vec<PartitionRecord>,
    /// This node's replicas, by partition index.
    local: Vec<Replica>,
}

impl Topic {
    /// How many partitions the topic has (on any node).
    pub fn partition_count(&self) -> i32 {
        self.records.len() as i32
    }

    /// This node's online replica of partition `index`, if it hosts one.
    pub fn partition(&self, index: i32) -> Option<&Arc<Partition>> {
        match usize::try_from(index).ok().and_then(|i| self.local.get(i)) {
            Some(Replica::Online(p)) => Some(p),
            _ => None,
        }
    }

    /// Whether metadata lists the partition (hosted here or not, online or not).
    pub fn has_partition(&self, index: i32) -> bool {
        usize::try_from(index).is_ok_and(|i| i < self.records.len())
    }

    /// Whether this node hosts partition `index` but could not open its log.
    pub fn offline_here(&self, index: i32) -> bool {
        matches!(
            usize::try_from(index).ok().and_then(|i| self.local.get(i)),
            Some(Replica::Offline)
        )
    }

    /// How many replicas hosted here are offline.
    pub fn offline_count(&self) -> usize {
        self.local
            .iter()
            .filter(|r| matches!(r, Replica::Offline))
            .count()
    }

    /// Metadata's record of partition `index`.
    pub fn record(&self, index: i32) -> Option<&PartitionRecord> {
        usize::try_from(index)
            .ok()
            .and_then(|i| self.records.get(i))
    }

    /// The online replicas this node hosts.
    pub fn local_partitions(&self) -> impl Iterator<Item = &Arc<Partition>> {
        self.local.iter().filter_map(|r| match r {
            Replica::Online(p) => Some(p),
            _ => None,
        })
    }

    /// The partition for a request only its leader may serve: this node's
    /// replica if this node leads it, else why not.
    pub fn led_here(
        &self,
        index: i32,
        node_id: i32,
    ) -> std::result::Result<&Arc<Partition>, Error> {
        let Some(record) = self.record(index) else {
            return Err(Error::UnknownTopicOrPartition);
        };
        match usize::try_from(index).ok().and_then(|i| self.local.get(i)) {
            Some(Replica::Online(p)) if p.leader() == node_id => Ok(p),
            Some(Replica::Offline) if record.leader == node_id => Err(Error::Offline),
            _ => Err(Error::NotLeader {
                leader: record.leader,
                leader_epoch: record.leader_epoch,
            }),
        }
    }
}

/// The opened topics by name and by id; both maps hold the same topics.
#[derive(Debug, Default)]
struct Index {
    by_name: HashMap<String, Arc<Topic>>,
    by_id: HashMap<Uuid, Arc<Topic>>,
}

#[derive(Debug)]
pub struct TopicRegistry {
    data_dir: PathBuf,
    /// The static defaults from the config file, overlaid with dynamic
    /// broker configs; replaced whole when those change.
    broker_defaults: RwLock<Arc<TopicConfigs>>,
    index_interval_bytes: usize,
    metrics: Metrics,
    topics: RwLock<Index>,
    /// When replicas count appends as stored (`log.flush`).
    durability: crate::partition::Durability,
}

impl TopicRegistry {
    pub fn new(
        data_dir: PathBuf,
        broker_defaults: TopicConfigs,
        index_interval_bytes: usize,
        metrics: Metrics,
        durability: crate::partition::Durability,
    ) -> TopicRegistry {
        TopicRegistry {
            data_dir,
            broker_defaults: RwLock::new(Arc::new(broker_defaults)),
            index_interval_bytes,
            metrics,
            topics: RwLock::new(Index::default()),
            durability,
        }
    }

    /// Topic config defaults of this broker (static and dynamic).
    pub fn broker_defaults(&self) -> Arc<TopicConfigs> {
        Arc::clone(&self.broker_defaults.read())
    }

    /// New broker-level defaults (dynamic broker configs changed): every
    /// hosted log takes its new effective settings.
    pub fn set_broker_defaults(&self, defaults: TopicConfigs) {
        if **self.broker_defaults.read() == defaults {
            return;
        }
        *self.broker_defaults.write() = Arc::new(defaults);
        for topic in self.all() {
            let config = self.log_config(&topic.configs);
            for p in topic.local_partitions() {
                p.with_log_mut(|log| log.set_config(config.clone()));
            }
        }
    }

    pub fn get(&self, name: &str) -> Option<Arc<Topic>> {
        self.topics.read().by_name.get(name).cloned()
    }

    pub fn get_by_id(&self, id: Uuid) -> Option<Arc<Topic>> {
        self.topics.read().by_id.get(&id).cloned()
    }

    pub fn all(&self) -> Vec<Arc<Topic>> {
        let mut all: Vec<_> = self.topics.read().by_name.values().cloned().collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    /// This node's replica of `topic`-`index`.
    pub fn partition(&self, topic: &str, index: i32) -> Result<Arc<Partition>> {
        self.get(topic)
            .and_then(|t| t.partition(index).cloned())
            .ok_or(Error::UnknownTopicOrPartition)
    }

    /// Every replica this node hosts.
    pub fn local_partitions(&self) -> Vec<Arc<Partition>> {
        self.all()
            .iter()
            .flat_map(|t| t.local_partitions().cloned().collect::<Vec<_>>())
            .collect()
    }

    /// `min.insync.replicas` of a topic's partition: the topic's or the
    /// broker's setting; unset, 2 for partitions with two or more replicas
    /// and 1 otherwise (never more than the replicas there are).
    pub fn min_insync(&self, topic: &Topic, partition: i32) -> usize {
        let replicas = topic.record(partition).map_or(1, |p| p.replicas.len());
        let defaults = self.broker_defaults();
        match topic_config::effective(topic_config::MIN_INSYNC_REPLICAS, &topic.configs, &defaults)
        {
            Some((v, source)) if source != veil_meta::ConfigSource::Default => {
                v.parse().unwrap_or(1)
            }
            _ => replicas.min(2),
        }
    }

    /// The log settings of a topic from its overrides and the broker defaults.
    pub fn log_config(&self, configs: &TopicConfigs) -> LogConfig {
        let broker_defaults = self.broker_defaults();
        let long = |name: &str| -> i64 {
            topic_config::effective(name, configs, &broker_defaults)
                .and_then(|(v, _)| v.parse().ok())
                .unwrap_or(-1)
        };
        let text = |name: &str| -> String {
            topic_config::effective(name, configs, &broker_defaults)
                .map(|(v, _)| v.to_owned())
                .unwrap_or_default()
        };
        let policy = text(topic_config::CLEANUP_POLICY);
        let compact = policy.split(',').any(|p| p.trim() == "compact");
        let max_compaction_lag_ms = long(topic_config::MAX_COMPACTION_LAG_MS).max(1);
        let segment_ms = long(topic_config::SEGMENT_MS);
        LogConfig {
            segment_bytes: u64::try_from(long(topic_config::SEGMENT_BYTES)).unwrap_or(1 << 30),
            // A compacted log rolls at max.compaction.lag.ms too, so that no record waits in the
            // active segment (which is never cleaned) for longer.
            segment_ms: if compact {
                segment_ms.min(max_compaction_lag_ms)
            } else {
                segment_ms
            },
            retention_ms: long(topic_config::RETENTION_MS),
            retention_bytes: long(topic_config::RETENTION_BYTES),
            max_message_bytes: usize::try_from(long(topic_config::MAX_MESSAGE_BYTES))
                .unwrap_or(1_048_588),
            index_interval_bytes: self.index_interval_bytes,
            message_timestamp_log_append_time: text(topic_config::MESSAGE_TIMESTAMP_TYPE)
                == "LogAppendTime",
            delete: policy.split(',').any(|p| p.trim() == "delete"),
            compact,
            min_cleanable_dirty_ratio: text(topic_config::MIN_CLEANABLE_DIRTY_RATIO)
                .parse()
                .unwrap_or(0.5),
            min_compaction_lag_ms: long(topic_config::MIN_COMPACTION_LAG_MS).max(0),
            max_compaction_lag_ms,
            delete_retention_ms: long(topic_config::DELETE_RETENTION_MS).max(0),
            compression: compression_codec(&text(topic_config::COMPRESSION_TYPE), |name| {
                topic_config::effective(name, configs, &broker_defaults)
                    .and_then(|(v, _)| v.parse().ok())
            }),
        }
    }

    /// Brings opened logs in line with `topics` (metadata's topic records):
    /// opens the replicas `node_id` now hosts, updates replica records and
    /// configs, closes and removes replicas of deleted topics or that moved
    /// away from this node.
    pub fn reconcile(&self, topics: &[TopicRecord], node_id: i32, now_ms: i64) -> Result<()> {
        let mut index = self.topics.write();
        self.reconcile_names(&mut index.by_name, topics, node_id, now_ms);
        // Rebuilt on every metadata change (rare) so that lookups by id, on
        // the fetch path since Fetch v13, are one hash lookup.
        index.by_id = index
            .by_name
            .values()
            .map(|t| (t.id, Arc::clone(t)))
            .collect();
        Ok(())
    }

    /// [`Self::reconcile`] from a whole metadata state.
    pub fn reconcile_state(&self, state: &MetaState, node_id: i32, now_ms: i64) -> Result<()> {
        let topics: Vec<TopicRecord> = state.topics().cloned().collect();
        self.reconcile(&topics, node_id, now_ms)
    }

    fn reconcile_names(
        &self,
        topics: &mut HashMap<String, Arc<Topic>>,
        records: &[TopicRecord],
        node_id: i32,
        now_ms: i64,
    ) {
        let wanted: HashMap<&str, &TopicRecord> =
            records.iter().map(|t| (t.name.as_str(), t)).collect();
        let gone: Vec<String> = topics
            .iter()
            .filter(|(name, t)| wanted.get(name.as_str()).is_none_or(|r| r.topic_id != t.id))
            .map(|(name, _)| name.clone())
            .collect();
        for name in gone {
            if let Some(topic) = topics.remove(&name) {
                for (index, r) in topic.local.iter().enumerate() {
                    if !matches!(r, Replica::NotHosted) {
                        self.remove_partition_files(&topic.name, topic.id, index as i32, r);
                    }
                }
            }
        }
        for record in wanted.values() {
            let existing = topics.get(&record.name).cloned();
            let unchanged = existing
                .as_ref()
                .is_some_and(|t| t.records == record.assignments && t.configs == record.configs);
            if unchanged {
                continue;
            }
            let config = self.log_config(&record.configs);
            let mut local: Vec<Replica> = existing.map(|t| t.local.clone()).unwrap_or_default();
            local.resize(record.assignments.len(), Replica::NotHosted);
            for (i, assignment) in record.assignments.iter().enumerate() {
                let index = i as i32;
                let hosted = assignment.replicas.contains(&node_id);
                match (&local[i], hosted) {
                    (Replica::Online(p), true) => {
                        p.with_log_mut(|log| log.set_config(config.clone()));
                        p.set_replica(assignment.clone());
                    }
                    (Replica::Offline, true) | (Replica::NotHosted, false) => {}
                    (r @ (Replica::Online(_) | Replica::Offline), false) => {
                        // Moved away from this node (reassignment).
                        self.remove_partition_files(&record.name, record.topic_id, index, r);
                        local[i] = Replica::NotHosted;
                    }
                    (Replica::NotHosted, true) => {
                        local[i] = match self.open_log(record, index, config.clone(), now_ms) {
                            Some(log) => Replica::Online(Partition::new(
                                record.name.clone(),
                                index,
                                log,
                                self.metrics.clone(),
                                assignment.clone(),
                                node_id,
                                self.durability,
                            )),
                            None => Replica::Offline,
                        };
                    }
                }
            }
            topics.insert(
                record.name.clone(),
                Arc::new(Topic {
                    name: record.name.clone(),
                    id: record.topic_id,
                    configs: record.configs.clone(),
                    records: record.assignments.clone(),
                    local,
                }),
            );
        }
    }

    /// Opens one partition's log in a directory bound to the topic; `None`
    /// (offline, with the reason logged) if that fails.
    fn open_log(
        &self,
        record: &TopicRecord,
        index: i32,
        config: LogConfig,
        now_ms: i64,
    ) -> Option<PartitionLog> {
        let dir = partition_dir(&self.data_dir, &record.name, index);
        let opened = crate::log_dir::prepare(&self.data_dir, &dir, record.topic_id)
            .map_err(veil_log::Error::from)
            .and_then(|()| PartitionLog::open(&dir, config, now_ms));
        match opened {
            Ok((log, report)) => {
                if report.truncated_bytes > 0 || report.rebuilt_indexes > 1 {
                    tracing::warn!(topic = %record.name, partition = index,
                        truncated_bytes = report.truncated_bytes, rebuilt_indexes = report.rebuilt_indexes,
                        "recovered partition log");
                }
                Some(log)
            }
            Err(e) => {
                tracing::error!(topic = %record.name, partition = index, dir = %dir.display(), error = %e,
                    "partition is offline: its log cannot be opened; clients get KAFKA_STORAGE_ERROR until a restart opens it");
                None
            }
        }
    }

    /// Stops a replica's log writing by path, then moves its directory
    /// aside and deletes it in the background (so a topic of the same name
    /// can be created at once).
    fn remove_partition_files(&self, topic: &str, id: Uuid, partition: i32, replica: &Replica) {
        let dir = partition_dir(&self.data_dir, topic, partition);
        let index = partition.to_string();
        let labels = [topic, index.as_str()];
        let _ = self.metrics.log_end_offset.remove_label_values(&labels);
        let _ = self.metrics.log_start_offset.remove_label_values(&labels);
        let _ = self.metrics.log_size_bytes.remove_label_values(&labels);
        let _ = self.metrics.log_segments.remove_label_values(&labels);
        let _ = self.metrics.cleaner_lag_bytes.remove_label_values(&labels);
        let _ = self
            .metrics
            .cleaner_dirty_ratio
            .remove_label_values(&labels);
        // Before the rename: the path may soon belong to a new topic.
        if let Replica::Online(p) = replica {
            p.with_log_mut(PartitionLog::detach);
        }
        crate::log_dir::remove(&self.data_dir, &dir, id);
    }

    /// At startup: finishes interrupted deletions, binds directories that
    /// predate topic ids, sets aside directories of replicas this node does
    /// not host (see [`crate::log_dir::sweep`]).
    pub fn sweep(&self, state: &MetaState, node_id: i32) -> Result<()> {
        crate::log_dir::sweep(&self.data_dir, &crate::log_dir::expected(state, node_id))?;
        Ok(())
    }

    /// Publishes per-partition gauges (called before each scrape).
    pub fn update_gauges(&self) {
        let mut offline = 0;
        for topic in self.all() {
            offline += topic.offline_count();
            for p in topic.local_partitions() {
                let index = p.index.to_string();
                let labels = [topic.name.as_str(), index.as_str()];
                let (start, end, size, segments) = p.with_log(|l| {
                    (
                        l.log_start_offset(),
                        l.log_end_offset(),
                        l.size_bytes(),
                        l.segment_count(),
                    )
                });
                self.metrics
                    .log_segments
                    .with_label_values(&labels)
                    .set(segments as i64);
                let hw = p.high_watermark();
                if let Some(dirty) = p.with_log(|l| {
                    l.config().compact.then(|| {
                        l.dirty_stats(crate::clock::Clock::now_ms(&crate::clock::SystemClock), hw)
                    })
                }) {
                    self.metrics
                        .cleaner_lag_bytes
                        .with_label_values(&labels)
                        .set(dirty.dirty_bytes as i64);
                    self.metrics
                        .cleaner_dirty_ratio
                        .with_label_values(&labels)
                        .set(dirty.ratio());
                }
                self.metrics
                    .log_end_offset
                    .with_label_values(&labels)
                    .set(end);
                self.metrics
                    .log_start_offset
                    .with_label_values(&labels)
                    .set(start);
                self.metrics
                    .log_size_bytes
                    .with_label_values(&labels)
                    .set(size as i64);
            }
        }
        self.metrics.offline_partitions.set(offline as i64);
    }
}
