//! The cluster part of metadata: registered brokers, each partition's
//! replicas, in-sync replicas, leader and epochs, and the deterministic
//! rules that move leadership when a broker goes away or comes back.
//!
//! Epochs follow KRaft: a broker's epoch is the metadata index of its
//! registration (so a restarted process, with a new incarnation id, has a
//! new epoch); a partition's `leader_epoch` grows whenever its leader
//! changes, its `partition_epoch` whenever anything about it changes (ISR,
//! leader, replicas), so a stale AlterPartition can be refused.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// "No leader" in Kafka's responses.
pub const NO_LEADER: i32 = -1;

/// A network endpoint a broker serves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    /// The listener name (clients use the endpoint of the listener they
    /// connected to, so every broker should have the same names).
    pub name: String,
    pub host: String,
    pub port: u16,
    /// Kafka's security protocol code (PLAINTEXT=0, SSL=1, SASL_PLAINTEXT=2, SASL_SSL=3).
    pub security_protocol: i16,
}

/// A broker known to the controller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerRecord {
    pub node_id: i32,
    /// A random id per broker process: a restarted broker is a new
    /// incarnation and never confused with the one before.
    pub incarnation: Uuid,
    /// The metadata index of this incarnation's registration.
    pub epoch: i64,
    /// Client listeners.
    pub listeners: Vec<Endpoint>,
    /// Where other nodes reach it (replication, controller RPCs).
    pub internal: Option<Endpoint>,
    pub rack: Option<String>,
    /// Fenced brokers lead nothing and are left out of Metadata.
    pub fenced: bool,
    /// The broker asked to stop: it leads nothing more and leaves ISRs.
    #[serde(default)]
    pub in_controlled_shutdown: bool,
}

/// One partition's replica state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionRecord {
    /// Replica node ids; the first is the preferred leader.
    pub replicas: Vec<i32>,
    /// In-sync replicas (a subset of `replicas`, never empty).
    pub isr: Vec<i32>,
    /// The leader, or [`NO_LEADER`] when no in-sync replica is available.
    pub leader: i32,
    pub leader_epoch: i32,
    pub partition_epoch: i32,
    /// A reassignment in progress (AlterPartitionReassignments).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reassignment: Option<Reassignment>,
}

/// Where a partition's replicas move (Kafka's adding/removing replicas).
/// Meanwhile `replicas` holds the target followed by the original replicas
/// that are not in it, so every one of them replicates; the controller
/// completes the move once every target replica is in sync.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reassignment {
    pub target: Vec<i32>,
    /// The replicas before it started (what a cancellation returns to).
    pub original: Vec<i32>,
}

impl Reassignment {
    /// Target replicas not among the original ones.
    pub fn adding(&self) -> Vec<i32> {
        self.target
            .iter()
            .copied()
            .filter(|r| !self.original.contains(r))
            .collect()
    }

    /// Original replicas not in the target.
    pub fn removing(&self) -> Vec<i32> {
        self.original
            .iter()
            .copied()
            .filter(|r| !self.target.contains(r))
            .collect()
    }
}

impl PartitionRecord {
    /// A new partition: every replica in sync, the first one leading.
    pub fn new(replicas: Vec<i32>) -> PartitionRecord {
        PartitionRecord {
            leader: replicas.first().copied().unwrap_or(NO_LEADER),
            isr: replicas.clone(),
            replicas,
            leader_epoch: 0,
            partition_epoch: 0,
            reassignment: None,
        }
    }

    /// Starts (or retargets) a move to `target`: every target replica joins
    /// `replicas` and replicates; the ISR is unchanged until they catch up.
    /// A target equal to the current replicas ends any move instead.
    pub fn start_reassignment(&mut self, target: Vec<i32>) {
        let original = self
            .reassignment
            .take()
            .map_or_else(|| self.replicas.clone(), |r| r.original);
        if target == original {
            self.replicas = original;
            self.isr.retain(|r| self.replicas.contains(r));
        } else {
            let mut replicas = target.clone();
            replicas.extend(original.iter().copied().filter(|r| !target.contains(r)));
            self.replicas = replicas;
            self.reassignment = Some(Reassignment { target, original });
        }
        self.partition_epoch += 1;
    }

    /// Whether a move can complete: every target replica is in sync.
    pub fn reassignment_done(&self) -> bool {
        self.reassignment
            .as_ref()
            .is_some_and(|r| r.target.iter().all(|t| self.isr.contains(t)))
    }

    /// Ends a move on `to` (its target when completing, its original
    /// replicas when cancelling): replicas become `to`, the ISR keeps only
    /// them, and a leader outside them hands over to the first of them in
    /// sync. Refused (false, nothing changed) if none of them is in sync.
    pub fn finish_reassignment(&mut self, to: Vec<i32>) -> bool {
        let Some(next_leader) = to.iter().copied().find(|r| self.isr.contains(r)) else {
            return false;
        };
        if !to.contains(&self.leader) {
            self.leader = next_leader;
            self.leader_epoch += 1;
        }
        self.isr.retain(|r| to.contains(r));
        self.replicas = to;
        self.reassignment = None;
        self.partition_epoch += 1;
        true
    }

    /// Replicas that are not in the ISR or not available.
    pub fn offline_replicas(&self, available: impl Fn(i32) -> bool) -> Vec<i32> {
        self.replicas
            .iter()
            .copied()
            .filter(|r| !available(*r))
            .collect()
    }

    /// `node` can no longer serve: it leaves the ISR (unless it is the last
    /// member, which Kafka keeps so the partition knows whom to wait for) and
    /// leadership moves to the first replica that is in sync and available.
    /// With `unclean`, an out-of-sync available replica may lead when no
    /// in-sync one is left (its log becomes the truth). Returns whether
    /// anything changed.
    pub fn remove_node(
        &mut self,
        node: i32,
        available: &impl Fn(i32) -> bool,
        unclean: bool,
    ) -> bool {
        let in_sync_successor = self
            .replicas
            .iter()
            .copied()
            .find(|r| *r != node && self.isr.contains(r) && available(*r));
        if self.leader == node && in_sync_successor.is_none() && unclean {
            if let Some(r) = self
                .replicas
                .iter()
                .copied()
                .find(|r| *r != node && available(*r))
            {
                self.leader = r;
                self.isr = vec![r];
                self.leader_epoch += 1;
                self.partition_epoch += 1;
                return true;
            }
        }
        let mut changed = false;
        if self.isr.contains(&node) && self.isr.len() > 1 {
            self.isr.retain(|r| *r != node);
            changed = true;
        }
        if self.leader == node {
            let next = in_sync_successor.unwrap_or(NO_LEADER);
            if next != NO_LEADER && self.isr.contains(&node) {
                // The new leader is in sync; the old one no longer counts.
                self.isr.retain(|r| *r != node);
            }
            self.leader = next;
            self.leader_epoch += 1;
            changed = true;
        }
        if changed {
            self.partition_epoch += 1;
        }
        changed
    }

    /// `node` is available again: a leaderless partition it is in sync for
    /// gets it as leader (with `unclean`, any leaderless partition it is a
    /// replica of, its log becoming the truth). Returns whether anything
    /// changed.
    pub fn restore_node(&mut self, node: i32, unclean: bool) -> bool {
        if self.leader != NO_LEADER {
            return false;
        }
        if self.isr.contains(&node) {
            self.leader = node;
        } else if unclean && self.replicas.contains(&node) {
            self.leader = node;
            self.isr = vec![node];
        } else {
            return false;
        }
        self.leader_epoch += 1;
        self.partition_epoch += 1;
        true
    }

    /// `node` is stopping (controlled shutdown): leadership moves to an
    /// available in-sync replica if there is one, and the node leaves the
    /// ISR if others remain. A partition with no one else to take over
    /// keeps its leader until the node is gone.
    pub fn move_away_from(&mut self, node: i32, available: &impl Fn(i32) -> bool) -> bool {
        let successor = self
            .replicas
            .iter()
            .copied()
            .find(|r| *r != node && self.isr.contains(r) && available(*r));
        let mut changed = false;
        if self.leader == node {
            if let Some(next) = successor {
                self.leader = next;
                self.leader_epoch += 1;
                changed = true;
            }
        }
        if self.leader != node && self.isr.contains(&node) && self.isr.len() > 1 {
            self.isr.retain(|r| *r != node);
            changed = true;
        }
        if changed {
            self.partition_epoch += 1;
        }
        changed
    }

    /// Makes `node` leader (preferred or unclean election). The caller checks
    /// eligibility.
    pub fn elect(&mut self, node: i32) {
        if self.leader != node {
            self.leader = node;
            self.leader_epoch += 1;
        }
        if !self.isr.contains(&node) {
            // Unclean: only the new leader's log counts from here on.
            self.isr = vec![node];
        }
        self.partition_epoch += 1;
    }
}

/// Spreads `partitions` new partitions of `replication_factor` replicas over
/// `brokers` (sorted node ids with their racks): partition `p`'s replica
/// list starts at broker `(start + p) % n`; with racks, brokers are first
/// interleaved rack by rack so consecutive replicas land on different racks
/// (Kafka's rack-aware placement, simplified). Returns `None` when there are
/// fewer brokers than replicas.
pub fn assign_replicas(
    brokers: &[(i32, Option<String>)],
    partitions: i32,
    replication_factor: i16,
    start: usize,
) -> Option<Vec<Vec<i32>>> {
    let rf = usize::try_from(replication_factor).ok()?;
    if rf == 0 || rf > brokers.len() {
        return None;
    }
    let order = rack_interleaved(brokers);
    let rack_of = |id: i32| {
        brokers
            .iter()
            .find(|(b, _)| *b == id)
            .and_then(|(_, r)| r.as_deref())
    };
    let n = order.len();
    let lists = (0..usize::try_from(partitions).unwrap_or(0))
        .map(|p| {
            let first = (start + p) % n;
            // Followers start further along for later rounds, so followers
            // spread as well as leaders (Kafka's replica shift).
            let shift = 1 + (p / n) % (n - 1).max(1);
            let mut list = vec![order[first]];
            while list.len() < rf {
                let mut candidates = (0..n)
                    .map(|j| order[(first + shift + j) % n])
                    .filter(|b| !list.contains(b));
                let unused_rack = (0..n)
                    .map(|j| order[(first + shift + j) % n])
                    .filter(|b| !list.contains(b))
                    .find(|b| {
                        rack_of(*b).is_some_and(|r| list.iter().all(|c| rack_of(*c) != Some(r)))
                    });
                match unused_rack.or_else(|| candidates.next()) {
                    Some(b) => list.push(b),
                    None => break,
                }
            }
            list
        })
        .collect();
    Some(lists)
}

/// Brokers ordered rack by rack: a1, b1, c1, a2, b2, ... (brokers without a
/// rack form one group of their own).
fn rack_interleaved(brokers: &[(i32, Option<String>)]) -> Vec<i32> {
    let mut racks: std::collections::BTreeMap<Option<&str>, Vec<i32>> =
        std::collections::BTreeMap::new();
    for (id, rack) in brokers {
        racks.entry(rack.as_deref()).or_default().push(*id);
    }
    if racks.len() <= 1 {
        let mut ids: Vec<i32> = brokers.iter().map(|(id, _)| *id).collect();
        ids.sort_unstable();
        return ids;
    }
    let mut groups: Vec<Vec<i32>> = racks
        .into_values()
        .map(|mut v| {
            v.sort_unstable();
            v
        })
        .collect();
    let mut out = Vec::with_capacity(brokers.len());
    let longest = groups.iter().map(Vec::len).max().unwrap_or(0);
    for i in 0..longest {
        for g in &mut groups {
            if let Some(id) = g.get(i) {
                out.push(*id);
            }
        }
    }
    out
}

/// A fresh incarnation id for this process.
pub fn new_incarnation() -> Uuid {
    Uuid::new_v4()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn brokers(ids: &[i32]) -> Vec<(i32, Option<String>)> {
        ids.iter().map(|i| (*i, None)).collect()
    }

    #[test]
    fn assignments_spread_leaders_and_never_repeat_a_broker() {
        let a = assign_replicas(&brokers(&[1, 2, 3]), 6, 3, 0).unwrap();
        for list in &a {
            let mut sorted = list.clone();
            sorted.sort_unstable();
            sorted.dedup();
            assert_eq!(sorted.len(), 3, "{list:?}");
        }
        let leaders: Vec<i32> = a.iter().map(|l| l[0]).collect();
        assert_eq!(leaders, vec![1, 2, 3, 1, 2, 3]);
        assert!(assign_replicas(&brokers(&[1, 2]), 1, 3, 0).is_none());
        assert_eq!(
            assign_replicas(&brokers(&[7]), 2, 1, 0).unwrap(),
            vec![vec![7], vec![7]]
        );
    }

    #[test]
    fn racks_are_interleaved() {
        let b = vec![
            (1, Some("a".to_owned())),
            (2, Some("a".to_owned())),
            (3, Some("b".to_owned())),
            (4, Some("b".to_owned())),
        ];
        for list in assign_replicas(&b, 8, 2, 0).unwrap() {
            let rack = |id: i32| if id <= 2 { "a" } else { "b" };
            assert_ne!(rack(list[0]), rack(list[1]), "{list:?}");
        }
    }

    #[test]
    fn leadership_moves_within_the_isr_and_comes_back() {
        let mut p = PartitionRecord::new(vec![1, 2, 3]);
        let all = |_: i32| true;
        assert!(p.remove_node(1, &|n| n != 1 && all(n), false));
        assert_eq!((p.leader, p.leader_epoch), (2, 1));
        assert_eq!(p.isr, vec![2, 3]);
        assert!(p.remove_node(2, &|n| n == 3, false));
        assert_eq!((p.leader, p.leader_epoch), (3, 2));
        assert_eq!(p.isr, vec![3]);
        // The last in-sync replica stays in the ISR: nobody else may lead.
        assert!(p.remove_node(3, &|_| false, false));
        assert_eq!((p.leader, p.isr.clone()), (NO_LEADER, vec![3]));
        assert!(!p.restore_node(1, false), "out of sync: may not lead");
        assert!(p.restore_node(3, false));
        assert_eq!((p.leader, p.leader_epoch), (3, 4));
        assert!(p.partition_epoch >= 4);
    }

    #[test]
    fn unclean_election_picks_an_out_of_sync_replica_only_when_allowed() {
        let mut p = PartitionRecord::new(vec![1, 2]);
        p.isr = vec![1];
        let only_2 = |n: i32| n == 2;
        let mut clean = p.clone();
        assert!(clean.remove_node(1, &only_2, false));
        assert_eq!(clean.leader, NO_LEADER);
        assert!(p.remove_node(1, &only_2, true));
        assert_eq!((p.leader, p.isr.clone()), (2, vec![2]));
        let mut gone = clean.clone();
        assert!(gone.restore_node(2, true));
        assert_eq!((gone.leader, gone.isr), (2, vec![2]));
    }

    #[test]
    fn controlled_shutdown_moves_leadership_only_where_it_can() {
        let mut p = PartitionRecord::new(vec![1, 2, 3]);
        assert!(p.move_away_from(1, &|n| n != 1));
        assert_eq!((p.leader, p.isr.clone()), (2, vec![2, 3]));
        let mut alone = PartitionRecord::new(vec![1]);
        assert!(!alone.move_away_from(1, &|_| false));
        assert_eq!(
            alone.leader, 1,
            "nobody else can lead: it keeps leading until it stops"
        );
    }
}
