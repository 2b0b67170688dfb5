//! What the quorum leader knows of each replica beyond openraft's metrics,
//! for DescribeQuorum: when it last heard back from the replica (a
//! successful append or heartbeat, Kafka's "last fetch") and when the
//! replica's log last reached the leader's end ("last caught up"), in
//! wall-clock milliseconds as Kafka reports them.
//!
//! The network records contacts ([`ReplicaProgress::contact`]); [`follow`]
//! watches the metrics and records catching up. A replica that is caught up
//! now counts as caught up at its last contact, since an idle leader's
//! metrics do not change while its heartbeats still arrive.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use openraft::{BasicNode, RaftMetrics, ServerState};
use parking_lot::Mutex;
use tokio::sync::watch;
use veil_meta::raft::NodeId;

/// More replicas than any membership holds; beyond it the table is reset
/// rather than grown.
const MAX_REPLICAS: usize = 4096;

/// Kafka's "unknown" timestamp and offset.
pub const UNKNOWN: i64 = -1;

#[derive(Debug, Clone, Copy)]
struct Seen {
    last_contact_ms: i64,
    caught_up_ms: i64,
}

impl Default for Seen {
    fn default() -> Self {
        Seen {
            last_contact_ms: UNKNOWN,
            caught_up_ms: UNKNOWN,
        }
    }
}

#[derive(Debug, Default)]
pub struct ReplicaProgress {
    replicas: Mutex<HashMap<NodeId, Seen>>,
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

impl ReplicaProgress {
    fn update(&self, node: NodeId, f: impl FnOnce(&mut Seen)) {
        let mut replicas = self.replicas.lock();
        if replicas.len() >= MAX_REPLICAS && !replicas.contains_key(&node) {
            replicas.clear();
        }
        f(replicas.entry(node).or_default());
    }

    /// `node` answered an append or heartbeat successfully.
    pub fn contact(&self, node: NodeId, at_ms: i64) {
        self.update(node, |s| s.last_contact_ms = s.last_contact_ms.max(at_ms));
    }

    /// `node`'s log reached the leader's end.
    pub fn caught_up(&self, node: NodeId, at_ms: i64) {
        self.update(node, |s| s.caught_up_ms = s.caught_up_ms.max(at_ms));
    }

    /// (last contact, last caught up), [`UNKNOWN`] where never seen.
    /// `caught_up_now`: its log is at the leader's end at this moment.
    pub fn timestamps(&self, node: NodeId, caught_up_now: bool) -> (i64, i64) {
        let seen = self.replicas.lock().get(&node).copied().unwrap_or_default();
        let caught_up = if caught_up_now {
            seen.caught_up_ms.max(seen.last_contact_ms)
        } else {
            seen.caught_up_ms
        };
        (seen.last_contact_ms, caught_up)
    }

    /// Forgets everything (this node stopped leading: its view is stale).
    pub fn clear(&self) {
        self.replicas.lock().clear();
    }
}

/// Records catching up from the leader's metrics until the quorum member
/// stops.
pub async fn follow(
    mut metrics: watch::Receiver<RaftMetrics<NodeId, BasicNode>>,
    progress: Arc<ReplicaProgress>,
) {
    let mut leading = false;
    loop {
        {
            let m = metrics.borrow_and_update();
            let now_leading = m.state == ServerState::Leader;
            if now_leading != leading {
                progress.clear();
                leading = now_leading;
            }
            if let (true, Some(end), Some(replication)) =
                (leading, m.last_log_index, m.replication.as_ref())
            {
                let now = now_ms();
                for (node, matched) in replication {
                    if matched.is_some_and(|l| l.index >= end) {
                        progress.caught_up(*node, now);
                    }
                }
            }
        }
        if metrics.changed().await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replica_caught_up_now_counts_from_its_last_contact() {
        let p = ReplicaProgress::default();
        assert_eq!(p.timestamps(2, true), (UNKNOWN, UNKNOWN));
        p.caught_up(2, 100);
        p.contact(2, 150);
        assert_eq!(p.timestamps(2, false), (150, 100));
        assert_eq!(p.timestamps(2, true), (150, 150));
        p.contact(2, 120);
        assert_eq!(p.timestamps(2, false).0, 150, "never goes back");
        p.clear();
        assert_eq!(p.timestamps(2, true), (UNKNOWN, UNKNOWN));
    }
}
