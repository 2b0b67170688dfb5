//! Per-partition log settings (Kafka's topic-level `segment.*`, `retention.*`, `max.message.bytes`,
//! `index.interval.bytes`, `message.timestamp.type`, `cleanup.policy` and the compaction settings,
//! `compression.type`).

use crate::codec::Codec;

/// Settings of one partition log. Defaults match Kafka's broker defaults.
#[derive(Clone, Debug, PartialEq)]
pub struct LogConfig {
    /// Roll when appending would make the active segment exceed this many bytes (capped at 2 GiB,
    /// because index positions are 32-bit).
    pub segment_bytes: u64,
    /// Roll when the active segment's first batch timestamp is older than this many milliseconds.
    pub segment_ms: i64,
    /// Delete non-active segments whose largest timestamp is older than this; -1 = unlimited.
    pub retention_ms: i64,
    /// Delete the oldest non-active segments while the log would stay at least this large; -1 = unlimited.
    pub retention_bytes: i64,
    /// Largest size of a single record batch.
    pub max_message_bytes: usize,
    /// Bytes appended between two sparse index entries.
    pub index_interval_bytes: usize,
    /// `message.timestamp.type = LogAppendTime`: the broker stamps its own time into each batch.
    pub message_timestamp_log_append_time: bool,
    /// `cleanup.policy` has `delete`: time and size retention apply.
    pub delete: bool,
    /// `cleanup.policy` has `compact`: the cleaner keeps the latest record per key, and every
    /// produced record must have a key.
    pub compact: bool,
    /// A pass is due when dirty bytes / cleanable bytes reaches this.
    pub min_cleanable_dirty_ratio: f64,
    /// Records younger than this are not cleaned.
    pub min_compaction_lag_ms: i64,
    /// A dirty segment older than this is cleaned whatever the ratio (0: no limit).
    pub max_compaction_lag_ms: i64,
    /// Tombstones stay this long after their segment was last written and once cleaned.
    pub delete_retention_ms: i64,
    /// `compression.type` other than `producer`: batches in another codec are recompressed.
    pub compression: Option<Codec>,
}

const DAY_MS: i64 = 24 * 60 * 60 * 1000;

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            segment_bytes: 1 << 30,
            segment_ms: 7 * DAY_MS,
            retention_ms: 7 * DAY_MS,
            retention_bytes: -1,
            max_message_bytes: 1_048_588,
            index_interval_bytes: 4096,
            message_timestamp_log_append_time: false,
            delete: true,
            compact: false,
            min_cleanable_dirty_ratio: 0.5,
            min_compaction_lag_ms: 0,
            max_compaction_lag_ms: i64::MAX,
            delete_retention_ms: DAY_MS,
            compression: None,
        }
    }
}

impl LogConfig {
    /// What produce must do to batches before they are appended.
    pub fn produce_policy(&self) -> crate::rewrite::ProducePolicy {
        crate::rewrite::ProducePolicy {
            require_keys: self.compact,
            target: self.compression,
            max_message_bytes: self.max_message_bytes,
        }
    }

    /// Largest `batch_length` accepted when reading batches back from disk: anything above is
    /// treated as corruption instead of an allocation.
    pub(crate) fn disk_batch_cap(&self) -> usize {
        self.max_message_bytes.max(16 << 20)
    }

    /// Effective segment size limit: positions in the offset index are u32, Kafka keeps them in i32.
    pub(crate) fn effective_segment_bytes(&self) -> u64 {
        self.segment_bytes.min(i32::MAX as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_kafka() {
        let c = LogConfig::default();
        assert_eq!(c.segment_bytes, 1_073_741_824);
        assert_eq!(c.segment_ms, 604_800_000);
        assert_eq!(c.retention_ms, 604_800_000);
        assert_eq!(c.retention_bytes, -1);
        assert_eq!(c.max_message_bytes, 1_048_588);
        assert_eq!(c.index_interval_bytes, 4096);
        assert!(!c.message_timestamp_log_append_time);
        assert_eq!(c.disk_batch_cap(), 16 << 20);
    }
}
