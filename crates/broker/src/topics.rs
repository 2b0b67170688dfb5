//! The topics and partitions this broker serves, kept in step with metadata.
//!
//! Metadata (`veil-meta`) says what exists; this registry holds the opened
//! logs. Every metadata commit is followed by [`TopicRegistry::reconcile`].

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::RwLock;
use uuid::Uuid;
use veil_log::{LogConfig, PartitionLog};
use veil_meta::{topic_config, MetaState, TopicConfigs, TopicRecord};

use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::partition::Partition;

#[derive(Debug)]
pub struct Topic {
    pub name: String,
    pub id: Uuid,
    pub configs: TopicConfigs,
    pub partitions: Vec<Arc<Partition>>,
}

impl Topic {
    pub fn partition(&self, index: i32) -> Option<&Arc<Partition>> {
        usize::try_from(index)
            .ok()
            .and_then(|i| self.partitions.get(i))
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

/// The directory of one partition: `<data_dir>/<topic>-<partition>`.
pub fn partition_dir(data_dir: &Path, topic: &str, partition: i32) -> PathBuf {
    data_dir.join(format!("{topic}-{partition}"))
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
        let outcome = self.reconcile_names(&mut index.by_name, state, now_ms);
        // Rebuilt on every metadata change (rare) so that lookups by id, on
        // the fetch path since Fetch v13, are one hash lookup.
        index.by_id = index
            .by_name
            .values()
            .map(|t| (t.id, Arc::clone(t)))
            .collect();
        outcome
    }

    fn reconcile_names(
        &self,
        topics: &mut HashMap<String, Arc<Topic>>,
        state: &MetaState,
        now_ms: i64,
    ) -> Result<()> {
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
            for p in &partitions {
                p.with_log_mut(|log| log.set_config(config.clone()));
            }
            for index in partitions.len() as i32..record.partitions {
                let dir = partition_dir(&self.data_dir, &record.name, index);
                let (log, report) = PartitionLog::open(&dir, config.clone(), now_ms)?;
                if report.truncated_bytes > 0 || report.rebuilt_indexes > 0 {
                    tracing::warn!(topic = %record.name, partition = index,
                        truncated_bytes = report.truncated_bytes, rebuilt_indexes = report.rebuilt_indexes,
                        "recovered partition log");
                }
                partitions.push(Partition::new(
                    record.name.clone(),
                    index,
                    log,
                    self.metrics.clone(),
                ));
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
        Ok(())
    }

    /// Moves the partition directories aside, then deletes them in the
    /// background so a topic of the same name can be created at once.
    fn remove_topic_files(&self, topic: &Topic) {
        for p in &topic.partitions {
            let dir = partition_dir(&self.data_dir, &topic.name, p.index);
            let doomed = self.data_dir.join(format!(
                "{}-{}.{}-delete",
                topic.name,
                p.index,
                topic.id.simple()
            ));
            let index = p.index.to_string();
            let labels = [topic.name.as_str(), index.as_str()];
            let _ = self.metrics.log_end_offset.remove_label_values(&labels);
            let _ = self.metrics.log_start_offset.remove_label_values(&labels);
            let _ = self.metrics.log_size_bytes.remove_label_values(&labels);
            match std::fs::rename(&dir, &doomed) {
                Ok(()) => {
                    std::thread::spawn(move || {
                        if let Err(e) = std::fs::remove_dir_all(&doomed) {
                            tracing::warn!(dir = %doomed.display(), error = %e, "could not remove deleted partition");
                        }
                    });
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!(dir = %dir.display(), error = %e, "could not move deleted partition aside");
                }
            }
        }
    }

    /// Removes directories of deletions interrupted by a crash.
    pub fn clean_leftovers(&self) {
        let Ok(entries) = std::fs::read_dir(&self.data_dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() && path.to_string_lossy().ends_with("-delete") {
                if let Err(e) = std::fs::remove_dir_all(&path) {
                    tracing::warn!(dir = %path.display(), error = %e, "could not remove deleted partition");
                }
            }
        }
    }

    /// Publishes per-partition gauges (called before each scrape).
    pub fn update_gauges(&self) {
        for topic in self.all() {
            for p in &topic.partitions {
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
    }
}
