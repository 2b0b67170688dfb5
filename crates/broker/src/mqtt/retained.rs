//! Retained messages: the last retained PUBLISH per MQTT topic, sent to
//! each new subscription whose filter matches it.
//!
//! Kept in memory (at most `mqtt.max_retained` topics) and written to
//! `<data_dir>/mqtt/retained.json` after changes, at most once per
//! [`SAVE_INTERVAL`]. A retained message is also an ordinary record in its
//! mapped Kafka topic; this store is only the "last value" index, until
//! compacted topics can serve that role.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use super::codec::{Message, Properties};
use super::filter;

pub const SAVE_INTERVAL: Duration = Duration::from_secs(1);

/// A retained file larger than this is not read.
const MAX_FILE: u64 = 1 << 30;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Stored {
    payload: Vec<u8>,
    qos: u8,
    content_type: Option<String>,
    user: Vec<(String, String)>,
}

#[derive(Debug)]
pub struct RetainedStore {
    path: PathBuf,
    max: usize,
    messages: Mutex<BTreeMap<String, Stored>>,
    dirty: AtomicBool,
}

/// Why a retained message was not kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Full;

impl RetainedStore {
    pub fn open(data_dir: &Path, max: usize) -> RetainedStore {
        let path = data_dir.join("mqtt").join("retained.json");
        let messages = std::fs::File::open(&path)
            .ok()
            .filter(|f| f.metadata().is_ok_and(|m| m.len() <= MAX_FILE))
            .and_then(|f| serde_json::from_reader(std::io::BufReader::new(f)).ok())
            .unwrap_or_default();
        RetainedStore {
            path,
            max,
            messages: Mutex::new(messages),
            dirty: AtomicBool::new(false),
        }
    }

    /// Keeps `m` as its topic's retained message; an empty payload clears it.
    pub fn set(&self, m: &Message) -> Result<(), Full> {
        let mut messages = self.messages.lock();
        if m.payload.is_empty() {
            messages.remove(&m.topic);
        } else {
            if !messages.contains_key(&m.topic) && messages.len() >= self.max {
                return Err(Full);
            }
            messages.insert(
                m.topic.clone(),
                Stored {
                    payload: m.payload.to_vec(),
                    qos: m.qos.min(1),
                    content_type: m.properties.content_type.clone(),
                    user: m.properties.user.clone(),
                },
            );
        }
        self.dirty.store(true, Ordering::Release);
        Ok(())
    }

    /// The retained messages a subscription to `filter` receives.
    pub fn matching(&self, filter_str: &str) -> Vec<Message> {
        self.messages
            .lock()
            .iter()
            .filter(|(topic, _)| filter::matches(filter_str, topic))
            .map(|(topic, s)| Message {
                topic: topic.clone(),
                payload: Bytes::from(s.payload.clone()),
                qos: s.qos,
                retain: true,
                properties: Properties {
                    user: s.user.clone(),
                    content_type: s.content_type.clone(),
                    payload_format: None,
                },
            })
            .collect()
    }

    pub fn len(&self) -> usize {
        self.messages.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Writes the store if it changed since the last save.
    pub fn save_if_dirty(&self) -> std::io::Result<()> {
        if !self.dirty.swap(false, Ordering::AcqRel) {
            return Ok(());
        }
        let bytes = serde_json::to_vec(&*self.messages.lock()).map_err(std::io::Error::other)?;
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let tmp = self.path.with_extension("tmp");
        let result = (|| {
            let mut f = std::fs::File::create(&tmp)?;
            std::io::Write::write_all(&mut f, &bytes)?;
            f.sync_data()?;
            std::fs::rename(&tmp, &self.path)
        })();
        if result.is_err() {
            self.dirty.store(true, Ordering::Release);
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(topic: &str, payload: &'static [u8]) -> Message {
        Message {
            topic: topic.into(),
            payload: Bytes::from_static(payload),
            qos: 1,
            retain: true,
            properties: Properties::default(),
        }
    }

    #[test]
    fn last_value_per_topic_capped_cleared_and_saved() {
        let dir = tempfile::tempdir().unwrap();
        let store = RetainedStore::open(dir.path(), 2);
        store.set(&msg("a/1", b"x")).unwrap();
        store.set(&msg("a/1", b"y")).unwrap();
        store.set(&msg("b", b"z")).unwrap();
        assert_eq!(store.set(&msg("c", b"w")), Err(Full));
        let got = store.matching("a/+");
        assert_eq!(got.len(), 1);
        assert_eq!(&got[0].payload[..], b"y");
        assert!(got[0].retain);
        store.save_if_dirty().unwrap();
        let reopened = RetainedStore::open(dir.path(), 2);
        assert_eq!(reopened.len(), 2);
        reopened.set(&msg("a/1", b"")).unwrap();
        assert!(reopened.matching("a/#").is_empty());
        assert_eq!(reopened.matching("#").len(), 1);
    }
}
