//! Subscriptions of one connection: which partitions it reads (a cursor
//! each, from the high watermark or a saved position), and turning records
//! into MQTT messages while the inflight window has room.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use bytes::Bytes;
use tokio::io::AsyncWrite;
use tokio::sync::watch;
use veil_log::records::{for_each_record_with_headers, RecordView};
use veil_log::BatchHeader;

use super::super::codec::{Message, Properties, Reason};
use super::super::filter;
use super::super::ingest::{CONTENT_TYPE_HEADER, PAYLOAD_FORMAT_HEADER};
use super::super::mapping::{record_topic, TOPIC_HEADER};
use super::super::session::Subscription;
use super::{Conn, MAX_HEADERS};
use crate::partition::Partition;

/// Where a connection reads one partition.
pub(super) struct Cursor {
    pub(super) partition: Arc<Partition>,
    /// Next offset to deliver.
    pub(super) next: i64,
    pub(super) high_watermark: watch::Receiver<i64>,
    /// The log could not be read here (a failed disk, a deleted topic):
    /// left alone until the client subscribes again or reconnects, rather
    /// than retried in a loop.
    pub(super) failed: bool,
}

impl<W: AsyncWrite + Unpin> Conn<W> {
    /// Adds a subscription; the granted QoS or why not.
    pub(super) fn subscribe(&mut self, f: &str, qos: u8) -> Result<u8, Reason> {
        if filter::validate_filter(f).is_err() || f.starts_with("$share/") {
            return Err(Reason::TopicFilterInvalid);
        }
        let topics = self.svc.mappings.topics_for_filter(f);
        if topics.is_empty() {
            return Err(Reason::TopicFilterInvalid);
        }
        let state = &self.svc.state;
        for t in &topics {
            let allowed = state.authorizer.authorize(
                &state.metrics,
                crate::auth::acl_matcher::Action {
                    principal: &self.publisher.principal,
                    host: self.publisher.host,
                    operation: crate::auth::Operation::Read,
                    resource_type: crate::auth::ResourceType::Topic,
                    name: t,
                },
            );
            if !allowed || !state.blind.visible(&self.publisher.principal, t) {
                return Err(Reason::NotAuthorized);
            }
        }
        self.subscriptions
            .insert(f.to_owned(), Subscription { qos });
        self.open_cursors_for(f);
        self.dirty = true;
        Ok(qos)
    }

    /// Cursors, at the current high watermark, for every partition of the
    /// Kafka topics a filter reads that have none yet.
    pub(super) fn open_cursors_for(&mut self, f: &str) {
        for topic in self.svc.mappings.topics_for_filter(f) {
            let Some(t) = self.svc.state.topics.get(&topic) else {
                continue;
            };
            for index in 0..t.partition_count() {
                self.open_cursor(&topic, index, None);
            }
        }
    }

    pub(super) fn open_cursor(&mut self, topic: &str, index: i32, from: Option<i64>) {
        let key = (topic.to_owned(), index);
        if let Some(c) = self.cursors.get_mut(&key) {
            c.failed = false;
            return;
        }
        let Some(partition) = self
            .svc
            .state
            .topics
            .get(topic)
            .and_then(|t| t.partition(index).cloned())
        else {
            return;
        };
        let next = from.unwrap_or_else(|| partition.high_watermark());
        let high_watermark = partition.watch_high_watermark();
        self.cursors.insert(
            key,
            Cursor {
                partition,
                next,
                high_watermark,
                failed: false,
            },
        );
    }

    pub(super) fn close_unused_cursors(&mut self) {
        let wanted: HashSet<String> = self
            .subscriptions
            .keys()
            .flat_map(|f| self.svc.mappings.topics_for_filter(f))
            .collect();
        self.cursors.retain(|(t, _), _| wanted.contains(t));
    }

    /// Writes records from the cursors while there is room; whether any
    /// were left for later.
    pub(super) fn deliver(&mut self) -> bool {
        let mut budget = self.svc.config.max_queued_messages;
        let keys: Vec<(String, i32)> = self.cursors.keys().cloned().collect();
        for key in keys {
            loop {
                if budget == 0 || self.outgoing.len() >= self.out_limit {
                    return true;
                }
                let Some(c) = self.cursors.get(&key) else {
                    break;
                };
                if c.failed || c.next >= c.partition.high_watermark() {
                    break;
                }
                let partition = Arc::clone(&c.partition);
                let from = c.next;
                let read = match partition.read(from, self.svc.config.read_bytes, true) {
                    Ok(r) => r,
                    Err(crate::error::Error::Log(veil_log::Error::OffsetOutOfRange { .. }))
                        if from < partition.log_start_offset() =>
                    {
                        // Retention removed what the cursor pointed at.
                        if let Some(c) = self.cursors.get_mut(&key) {
                            c.next = partition.log_start_offset();
                        }
                        continue;
                    }
                    Err(e) => {
                        tracing::warn!(topic = %key.0, partition = key.1, error = %e, "MQTT delivery read failed; this partition is not delivered on this connection until it subscribes again");
                        if let Some(c) = self.cursors.get_mut(&key) {
                            c.failed = true;
                        }
                        break;
                    }
                };
                if read.records.is_empty() {
                    break;
                }
                let (next, stopped) = self.deliver_batches(&key, from, &read.records, &mut budget);
                if let Some(c) = self.cursors.get_mut(&key) {
                    c.next = next;
                }
                self.dirty = true;
                if stopped {
                    return true;
                }
            }
        }
        false
    }

    /// Sends the records at or after `from` in `bytes` (whole batches);
    /// returns the next offset and whether it stopped early.
    fn deliver_batches(
        &mut self,
        key: &(String, i32),
        from: i64,
        bytes: &[u8],
        budget: &mut usize,
    ) -> (i64, bool) {
        let mut pos = 0usize;
        let mut next = from;
        while pos < bytes.len() {
            let Ok(header) = BatchHeader::parse(&bytes[pos..]) else {
                break;
            };
            let size = header.total_size();
            let Some(batch) = bytes.get(pos..pos + size) else {
                break;
            };
            pos += size;
            let last = header.last_offset();
            if last < next {
                continue;
            }
            // `None`: a record read but not for this connection.
            let mut messages: Vec<(i64, Option<Message>)> = Vec::new();
            let walked = for_each_record_with_headers(batch, MAX_HEADERS, |r| {
                if r.offset >= next {
                    messages.push((r.offset, self.to_message(&key.0, &r)));
                }
                Ok(())
            });
            if let Err(e) = walked {
                // Compressed batches from Kafka clients and the like.
                tracing::debug!(topic = %key.0, partition = key.1, error = %e, "batch not delivered over MQTT");
                next = last + 1;
                continue;
            }
            for (offset, m) in messages {
                if *budget == 0 || self.outgoing.len() >= self.out_limit {
                    return (offset, true);
                }
                next = offset + 1;
                let Some(m) = m else {
                    continue;
                };
                *budget -= 1;
                self.send_message(m, Some((key.0.clone(), key.1, offset)));
            }
            next = next.max(last + 1);
        }
        (next, false)
    }

    /// The MQTT message a record becomes for this connection, if its topic
    /// matches a subscription (at the highest QoS granted among them).
    fn to_message(&self, kafka_topic: &str, r: &RecordView<'_>) -> Option<Message> {
        let header = r
            .headers
            .iter()
            .find(|(k, _)| *k == TOPIC_HEADER.as_bytes())
            .and_then(|(_, v)| *v);
        let topic = record_topic(r.key, header)?;
        if !self.svc.mappings.routes_to(topic, kafka_topic) {
            return None;
        }
        let qos = self
            .subscriptions
            .iter()
            .filter(|(f, _)| filter::matches(f, topic))
            .map(|(_, s)| s.qos)
            .max()?;
        let mut properties = Properties::default();
        for (k, v) in &r.headers {
            let (Ok(k), Some(Ok(v))) = (std::str::from_utf8(k), v.map(std::str::from_utf8)) else {
                continue;
            };
            match k {
                TOPIC_HEADER => {}
                CONTENT_TYPE_HEADER => properties.content_type = Some(v.to_owned()),
                PAYLOAD_FORMAT_HEADER => properties.payload_format = v.parse().ok(),
                _ => properties.user.push((k.to_owned(), v.to_owned())),
            }
        }
        Some(Message {
            topic: topic.to_owned(),
            payload: Bytes::copy_from_slice(r.value.unwrap_or_default()),
            qos,
            retain: false,
            properties,
        })
    }
}

/// Completes when any cursor's partition has records past the cursor (at
/// once if one already has); never when there are no cursors.
pub(super) async fn wait_for_records(cursors: &mut BTreeMap<(String, i32), Cursor>) {
    if cursors
        .values()
        .any(|c| c.next < *c.high_watermark.borrow())
    {
        return;
    }
    if cursors.is_empty() {
        return std::future::pending().await;
    }
    let waits = cursors
        .values_mut()
        .map(|c| Box::pin(c.high_watermark.changed()));
    // A closed channel (the partition went away) wakes too; delivery then
    // finds nothing and the cursor stays idle.
    let _ = futures_util::future::select_all(waits).await;
}
