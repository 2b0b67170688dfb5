//! The topics and partitions this broker serves, kept in step with metadata.
//!
//! Metadata (`veil-meta`) says what exists; this registry holds the opened
//! logs. Every metadata commit is followed by [`TopicRegistry::reconcile`].
//! Directories are bound to their topic id ([`crate::log_dir`]); a partition
//! whose log cannot be opened is offline (KAFKA_STORAGE_ERROR) while every
//! other partition serves.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use kafka_protocol::ResponseError;
use parking_lot::RwLock;
use uuid::Uuid;
use veil_log::{LogConfig, PartitionLog};
use veil_meta::{topic_config, MetaState, TopicConfigs, TopicRecord};

use crate::error::{Error, Result};
pub use crate::log_dir::partition_dir;
use crate::metrics::Metrics;
use crate::partition::Partition;

#[derive(Debug)]
pub struct Topic {
    pub name: String,
    pub id: Uuid,
    pub configs: TopicConfigs,
    /// By index; `None` where the log could not be opened (offline until a
    /// restart opens it).
    pub partitions: Vec<Option<Arc<Partition>>>,
}

impl Topic {
    /// An online partition.
    pub fn partition(&self, index: i32) -> Option<&Arc<Partition>> {
        usize::try_from(index)
            .ok()
            .and_then(|i| self.partitions.get(i))
            .and_then(Option::as_ref)
    }

    /// The partition, or the error a client gets for it:
    /// UNKNOWN_TOPIC_OR_PARTITION, or KAFKA_STORAGE_ERROR if it is offline.
    pub fn lookup(&self, index: i32) -> std::result::Result<&Arc<Partition>, ResponseError> {
        match usize::try_from(index)
            .ok()
            .and_then(|i| self.partitions.get(i))
        {
            Some(Some(p)) => Ok(p),
            Some(None) => Err(ResponseError::KafkaStorageError),
            None => Err(ResponseError::UnknownTopicOrPartition),
        }
    }

    /// Whether metadata lists the partition, online or not.
    pub fn has_partition(&self, index: i32) -> bool {
        usize::try_from(index).is_ok_and(|i| i < self.partitions.len())
    }

    /// Every online partition.
    pub fn online(&self) -> impl Iterator<Item = &Arc<Partition>> {
        self.partitions.iter().flatten()
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
    broker_defaults: TopicConfigs,
    index_interval_bytes: usize,
    metrics: Metrics,
    topics: RwLock<Index>,
}

impl TopicRegistry {
    pub fn new(
        data_dir: PathBuf,
        broker_defaults: TopicConfigs,
        index_interval_bytes: usize,
        metrics: Metrics,
    ) -> TopicRegistry {
        TopicRegistry {
            data_dir,
            broker_defaults,
            index_interval_bytes,
            metrics,
            topics: RwLock::new(Index::default()),
        }
    }

    pub fn broker_defaults(&self) -> &TopicConfigs {
        &self.broker_defaults
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

    /// An online partition.
    pub fn partition(&self, topic: &str, index: i32) -> Result<Arc<Partition>> {
        self.get(topic)
            .and_then(|t| t.partition(index).cloned())
            .ok_or(Error::UnknownTopicOrPartition)
    }

    /// The log settings of a topic from its overrides and the broker defaults.
    pub fn log_config(&self, configs: &TopicConfigs) -> LogConfig {
        let long = |name: &str| -> i64 {
            topic_config::effective(name, configs, &self.broker_defaults)
                .and_then(|(v, _)| v.parse().ok())
                .unwrap_or(-1)
        };
        let text = |name: &str| -> String {
            topic_config::effective(name, configs, &self.broker_defaults)
                .map(|(v, _)| v.to_owned())
                .unwrap_or_default()
        };
        LogConfig {
            segment_bytes: u64::try_from(long(topic_config::SEGMENT_BYTES)).unwrap_or(1 << 30),
            segment_ms: long(topic_config::SEGMENT_MS),
            retention_ms: long(topic_config::RETENTION_MS),
            retention_bytes: long(topic_config::RETENTION_BYTES),
            max_message_bytes: usize::try_from(long(topic_config::MAX_MESSAGE_BYTES))
                .unwrap_or(1_048_588),
            index_interval_bytes: self.index_interval_bytes,
            message_timestamp_log_append_time: text(topic_config::MESSAGE_TIMESTAMP_TYPE)
                == "LogAppendTime",
        }
    }

    /// Brings opened logs in line with `state`: opens new topics and
    /// partitions, applies config changes, closes and removes deleted topics.
    pub fn reconcile(&self, state: &MetaState, now_ms: i64) -> Result<()> {
        let mut index = self.topics.write();
        self.reconcile_names(&mut index.by_name, state, now_ms);
        // Rebuilt on every metadata change (rare) so that lookups by id, on
        // the fetch path since Fetch v13, are one hash lookup.
        index.by_id = index
            .by_name
            .values()
            .map(|t| (t.id, Arc::clone(t)))
            .collect();
        Ok(())
    }

    fn reconcile_names(
        &self,
        topics: &mut HashMap<String, Arc<Topic>>,
        state: &MetaState,
        now_ms: i64,
    ) {
        let wanted: HashMap<&str, &TopicRecord> =
            state.topics().map(|t| (t.name.as_str(), t)).collect();
        let gone: Vec<String> = topics
            .iter()
            .filter(|(name, t)| wanted.get(name.as_str()).is_none_or(|r| r.topic_id != t.id))
            .map(|(name, _)| name.clone())
            .collect();
        for name in gone {
            if let Some(topic) = topics.remove(&name) {
                self.remove_topic_files(&topic);
            }
        }
        for record in wanted.values() {
            let existing = topics.get(&record.name).cloned();
            let unchanged = existing.as_ref().is_some_and(|t| {
                t.partitions.len() == record.partitions as usize && t.configs == record.configs
            });
            if unchanged {
                continue;
            }
            let config = self.log_config(&record.configs);
            let mut partitions = existing.map(|t| t.partitions.clone()).unwrap_or_default();
            for p in partitions.iter().flatten() {
                p.with_log_mut(|log| log.set_config(config.clone()));
            }
            for index in partitions.len() as i32..record.partitions {
                let log = self.open_log(record, index, config.clone(), now_ms);
                partitions.push(log.map(|log| {
                    Partition::new(record.name.clone(), index, log, self.metrics.clone())
                }));
            }
            topics.insert(
                record.name.clone(),
                Arc::new(Topic {
                    name: record.name.clone(),
                    id: record.topic_id,
                    configs: record.configs.clone(),
                    partitions,
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

    /// Moves the partition directories aside, then deletes them in the
    /// background so a topic of the same name can be created at once.
    fn remove_topic_files(&self, topic: &Topic) {
        for (index, p) in topic.partitions.iter().enumerate() {
            let dir = partition_dir(&self.data_dir, &topic.name, index as i32);
            let index = index.to_string();
            let labels = [topic.name.as_str(), index.as_str()];
            let _ = self.metrics.log_end_offset.remove_label_values(&labels);
            let _ = self.metrics.log_start_offset.remove_label_values(&labels);
            let _ = self.metrics.log_size_bytes.remove_label_values(&labels);
            // Before the rename: the path may soon belong to a new topic.
            if let Some(p) = p {
                p.with_log_mut(PartitionLog::detach);
            }
            crate::log_dir::remove(&self.data_dir, &dir, topic.id);
        }
    }

    /// At startup: finishes interrupted deletions, binds directories that
    /// predate topic ids, sets orphans aside (see [`crate::log_dir::sweep`]).
    pub fn sweep(&self, state: &MetaState) -> Result<()> {
        crate::log_dir::sweep(&self.data_dir, &crate::log_dir::expected(state))?;
        Ok(())
    }

    /// Publishes per-partition gauges (called before each scrape).
    pub fn update_gauges(&self) {
        let mut offline = 0;
        for topic in self.all() {
            offline += topic.partitions.iter().filter(|p| p.is_none()).count();
            for p in topic.online() {
                let index = p.index.to_string();
                let labels = [topic.name.as_str(), index.as_str()];
                let (start, end, size) =
                    p.with_log(|l| (l.log_start_offset(), l.log_end_offset(), l.size_bytes()));
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
