//! Subscriptions of one connection and where they are fed from: the
//! gateway-wide readers for a clean session, readers of its own for a
//! persistent one (started where it left off), and the session as saved.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use tokio::io::AsyncWrite;
use veil_broker::mqtt::codec::Reason;
use veil_broker::mqtt::filter;
use veil_broker::mqtt::session::{SessionState, Subscription};
use veil_client::BlindError;

use super::super::remote::{Delivery, Read};
use super::{now_ms, Conn, Feed};

impl<W: AsyncWrite + Unpin> Conn<W> {
    /// Resumes a stored session unless the device asked for a clean start
    /// (which forgets it); whether one was resumed.
    pub(super) async fn start_session(&mut self, clean_start: bool) -> bool {
        let sessions = std::sync::Arc::clone(&self.gateway.sessions);
        if clean_start {
            sessions.remove(&self.client_id).await;
            return false;
        }
        let Some(state) = sessions.load(&self.client_id, now_ms()).await else {
            return false;
        };
        for (f, s) in state.subscriptions {
            self.subscriptions.insert(f, s.qos.min(1));
        }
        for (topic, partitions) in state.positions {
            for (p, offset) in partitions {
                self.positions.insert((topic.clone(), p), offset);
            }
        }
        for topic in self.wanted_topics() {
            if let Err(e) = self.start_reader(&topic).await {
                // The positions stay as they were and are saved again.
                tracing::warn!(client_id = %self.client_id, error = %e, "a resumed subscription cannot read its topic yet");
            }
        }
        true
    }

    /// The Kafka topics the subscriptions read.
    fn wanted_topics(&self) -> BTreeSet<String> {
        self.subscriptions
            .keys()
            .flat_map(|f| self.gateway.mappings.topics_for_filter(f))
            .collect()
    }

    /// Makes sure `topic` feeds this connection; ready when it returns, so
    /// nothing read after a SUBACK is missed.
    async fn start_reader(&mut self, topic: &str) -> Result<(), BlindError> {
        let remote = std::sync::Arc::clone(&self.gateway.remote);
        match &mut self.feed {
            Feed::Shared(rx) => {
                if rx.is_none() {
                    *rx = Some(remote.deliveries());
                }
                remote.read(topic).await
            }
            Feed::Own(own) => {
                if own.tasks.get(topic).is_some_and(|t| !t.is_finished()) {
                    return Ok(());
                }
                let from: HashMap<i32, i64> = self
                    .positions
                    .range((topic.to_owned(), i32::MIN)..=(topic.to_owned(), i32::MAX))
                    .map(|((_, p), o)| (*p, *o))
                    .collect();
                let (task, started) = remote.read_from(topic, &from, own.tx.clone()).await?;
                own.tasks.insert(topic.to_owned(), task);
                // A partition nothing has come from yet is saved where its
                // reader started, so what arrives while the device is away
                // is not skipped.
                for (p, at) in started {
                    self.positions.entry((topic.to_owned(), p)).or_insert(at);
                }
                self.dirty = true;
                Ok(())
            }
        }
    }

    /// Adds a subscription; the granted QoS or why not.
    pub(super) async fn subscribe(&mut self, f: &str, qos: u8) -> Result<u8, Reason> {
        if filter::validate_filter(f).is_err() || f.starts_with("$share/") {
            return Err(Reason::TopicFilterInvalid);
        }
        let topics = self.gateway.mappings.topics_for_filter(f);
        if topics.is_empty() {
            return Err(Reason::TopicFilterInvalid);
        }
        for t in &topics {
            if let Err(e) = self.start_reader(t).await {
                tracing::warn!(client_id = %self.client_id, error = %e, "subscription refused: cannot read the remote topic");
                return Err(Reason::UnspecifiedError);
            }
        }
        self.subscriptions.insert(f.to_owned(), qos);
        self.dirty = true;
        Ok(qos)
    }

    /// Drops subscriptions, and the readers and positions of topics no
    /// subscription reads any more.
    pub(super) fn unsubscribe(&mut self, filters: &[String]) {
        for f in filters {
            self.subscriptions.remove(f);
        }
        self.dirty = true;
        let wanted = self.wanted_topics();
        match &mut self.feed {
            // Nothing to keep up with any more.
            Feed::Shared(rx) if self.subscriptions.is_empty() => *rx = None,
            Feed::Shared(_) => {}
            Feed::Own(own) => {
                own.tasks.retain(|t, task| {
                    let keep = wanted.contains(t);
                    if !keep {
                        task.abort();
                    }
                    keep
                });
                self.positions.retain(|(t, _), _| wanted.contains(t));
            }
        }
    }

    /// The QoS a message on `topic` goes out at: the highest granted among
    /// the matching subscriptions, `None` if none matches.
    fn granted(&self, topic: &str) -> Option<u8> {
        self.subscriptions
            .iter()
            .filter(|(f, _)| filter::matches(f, topic))
            .map(|(_, q)| *q)
            .max()
    }

    /// A message from the gateway-wide readers (clean sessions).
    pub(super) fn deliver(&mut self, d: &Delivery) {
        let Some(qos) = self.granted(&d.message.topic) else {
            return;
        };
        let mut m = d.message.clone();
        m.qos = qos;
        self.send_message(m, None);
    }

    /// A record from one of this session's own readers: its position moves
    /// on, and the message goes out if a subscription wants it.
    pub(super) fn take(&mut self, topic: String, read: Read) {
        self.positions
            .insert((topic.clone(), read.partition), read.offset + 1);
        self.dirty = true;
        let Some(mut m) = read.message else {
            return;
        };
        let Some(qos) = self.granted(&m.topic) else {
            return;
        };
        m.qos = qos;
        self.send_message(m, Some((topic, read.partition, read.offset)));
    }

    /// The session as saved: positions are those of the oldest message not
    /// yet acknowledged, so nothing unacknowledged is skipped.
    pub(super) fn session_state(&self, disconnected_ms: i64) -> SessionState {
        let mut positions: BTreeMap<String, BTreeMap<i32, i64>> = BTreeMap::new();
        for ((topic, p), next) in &self.positions {
            positions
                .entry(topic.clone())
                .or_default()
                .insert(*p, *next);
        }
        for (topic, p, offset) in self.outgoing.values().flatten() {
            if let Some(at) = positions.get_mut(topic).and_then(|m| m.get_mut(p)) {
                *at = (*at).min(*offset);
            }
        }
        SessionState {
            subscriptions: self
                .subscriptions
                .iter()
                .map(|(f, q)| (f.clone(), Subscription { qos: *q }))
                .collect(),
            positions,
            expiry_secs: self.expiry_secs,
            disconnected_ms,
        }
    }
}
