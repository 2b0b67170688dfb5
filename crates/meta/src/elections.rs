//! Which leader a partition should have: the ElectLeaders API (preferred or
//! unclean) and the controller's automatic preferred-leader rebalance.
//! Pure: both read a [`MetaState`] and name the `ElectLeader` commands to
//! propose; the state machine applies them.

use std::collections::BTreeMap;

use crate::cluster::{PartitionRecord, NO_LEADER};
use crate::state_machine::MetaState;

/// Why a requested election does not happen (Kafka's error codes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ElectionRefused {
    /// The partition already has the leader the election would pick
    /// (ELECTION_NOT_NEEDED).
    NotNeeded,
    /// The preferred replica is fenced, shutting down or out of the ISR
    /// (PREFERRED_LEADER_NOT_AVAILABLE).
    PreferredNotAvailable,
    /// No replica could lead (ELIGIBLE_LEADERS_NOT_AVAILABLE).
    NoEligibleLeader,
    /// No such topic or partition (UNKNOWN_TOPIC_OR_PARTITION).
    UnknownPartition,
}

/// The leader a preferred (`unclean = false`) or unclean election of
/// `topic`-`partition` picks now.
///
/// Preferred: the first replica, if it is available and in sync. Unclean
/// (Kafka's election type 1): only for a partition without a live leader;
/// an available in-sync replica if there is one, else any available
/// replica, whose log then becomes the partition's.
pub fn choose_leader(
    state: &MetaState,
    topic: &str,
    partition: i32,
    unclean: bool,
) -> Result<i32, ElectionRefused> {
    let p = state
        .topic(topic)
        .and_then(|t| t.partition(partition))
        .ok_or(ElectionRefused::UnknownPartition)?;
    if unclean {
        if p.leader != NO_LEADER && state.broker_available(p.leader) {
            return Err(ElectionRefused::NotNeeded);
        }
        let available = |r: &&i32| state.broker_available(**r);
        return p
            .isr
            .iter()
            .find(available)
            .or_else(|| p.replicas.iter().find(available))
            .copied()
            .ok_or(ElectionRefused::NoEligibleLeader);
    }
    let preferred = *p
        .replicas
        .first()
        .ok_or(ElectionRefused::NoEligibleLeader)?;
    if p.leader == preferred {
        return Err(ElectionRefused::NotNeeded);
    }
    if !eligible(state, p, preferred) {
        return Err(ElectionRefused::PreferredNotAvailable);
    }
    Ok(preferred)
}

fn eligible(state: &MetaState, p: &PartitionRecord, node: i32) -> bool {
    p.isr.contains(&node) && state.broker_available(node)
}

/// Kafka's automatic rebalance (`auto.leader.rebalance.enable`): for each
/// broker whose share of partitions it prefers but does not lead exceeds
/// `imbalance_ratio`, the partitions it can take back now, as
/// `(topic, partition, leader)`.
pub fn preferred_leader_moves(state: &MetaState, imbalance_ratio: f64) -> Vec<(String, i32, i32)> {
    // Per preferred broker: partitions it prefers, and those it could lead now.
    let mut by_broker: BTreeMap<i32, (usize, Vec<(String, i32)>)> = BTreeMap::new();
    for t in state.topics() {
        for (i, p) in t.assignments.iter().enumerate() {
            let Some(&preferred) = p.replicas.first() else {
                continue;
            };
            let entry = by_broker.entry(preferred).or_default();
            entry.0 += 1;
            if p.leader != preferred && eligible(state, p, preferred) {
                entry.1.push((t.name.clone(), i as i32));
            }
        }
    }
    let mut out = Vec::new();
    for (broker, (preferred, movable)) in by_broker {
        // Counted against everything it prefers, as Kafka does.
        let not_led = state
            .topics()
            .flat_map(|t| t.assignments.iter())
            .filter(|p| p.replicas.first() == Some(&broker) && p.leader != broker)
            .count();
        if preferred > 0 && not_led as f64 / preferred as f64 > imbalance_ratio {
            out.extend(movable.into_iter().map(|(t, p)| (t, p, broker)));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::MetaCommand;

    /// A metadata state of `n` registered brokers, changed command by command.
    struct Cluster {
        s: MetaState,
        index: u64,
    }

    impl Cluster {
        fn of(n: i32) -> Cluster {
            let mut c = Cluster {
                s: MetaState::default(),
                index: 0,
            };
            for id in 1..=n {
                c.apply(MetaCommand::RegisterBroker {
                    node_id: id,
                    incarnation: uuid::Uuid::new_v4(),
                    listeners: vec![],
                    internal: None,
                    rack: None,
                });
                c.unfence(id);
            }
            c.apply(MetaCommand::CreateTopic {
                name: "t".into(),
                topic_id: uuid::Uuid::new_v4(),
                partitions: 1,
                replication_factor: 3,
                configs: BTreeMap::default(),
                assignments: vec![vec![1, 2, 3]],
            });
            c
        }

        fn apply(&mut self, cmd: MetaCommand) {
            self.index += 1;
            self.s.apply(self.index, &cmd).unwrap();
        }

        fn epoch(&self, id: i32) -> i64 {
            self.s.broker(id).unwrap().epoch
        }

        fn fence(&mut self, id: i32) {
            let epoch = self.epoch(id);
            self.apply(MetaCommand::FenceBroker { node_id: id, epoch });
        }

        fn unfence(&mut self, id: i32) {
            let epoch = self.epoch(id);
            self.apply(MetaCommand::UnfenceBroker { node_id: id, epoch });
        }

        fn partition(&self) -> PartitionRecord {
            self.s.topic("t").unwrap().partition(0).unwrap().clone()
        }

        fn set_isr(&mut self, isr: Vec<i32>) {
            let p = self.partition();
            self.apply(MetaCommand::AlterPartition {
                topic: "t".into(),
                partition: 0,
                leader: p.leader,
                leader_epoch: p.leader_epoch,
                partition_epoch: p.partition_epoch,
                isr,
            });
        }
    }

    #[test]
    fn preferred_and_unclean_elections_pick_as_kafka_does() {
        let mut c = Cluster::of(3);
        // Node 1 leads already.
        assert_eq!(
            choose_leader(&c.s, "t", 0, false),
            Err(ElectionRefused::NotNeeded)
        );
        assert_eq!(
            choose_leader(&c.s, "nope", 0, false),
            Err(ElectionRefused::UnknownPartition)
        );
        // Node 1 is fenced: leadership moves on; 1 is not available.
        c.fence(1);
        assert_ne!(c.partition().leader, 1);
        assert_eq!(
            choose_leader(&c.s, "t", 0, false),
            Err(ElectionRefused::PreferredNotAvailable)
        );
        assert_eq!(
            choose_leader(&c.s, "t", 0, true),
            Err(ElectionRefused::NotNeeded)
        );
        assert_eq!(preferred_leader_moves(&c.s, 0.1), vec![]);
        // Back, but out of the ISR: still not eligible.
        c.unfence(1);
        let mut isr = c.partition().isr;
        isr.retain(|r| *r != 1);
        c.set_isr(isr.clone());
        assert_eq!(
            choose_leader(&c.s, "t", 0, false),
            Err(ElectionRefused::PreferredNotAvailable)
        );
        // Caught up and in sync again: the election and the rebalance pick it.
        isr.push(1);
        c.set_isr(isr);
        assert_eq!(choose_leader(&c.s, "t", 0, false), Ok(1));
        assert_eq!(preferred_leader_moves(&c.s, 0.1), vec![("t".into(), 0, 1)]);
        // One partition of one not led is a ratio of 1.0, not above it.
        assert_eq!(preferred_leader_moves(&c.s, 1.0), vec![]);
    }

    #[test]
    fn an_unclean_election_takes_any_live_replica_when_the_isr_is_gone() {
        let mut c = Cluster::of(3);
        // The ISR shrinks to node 1 alone, then node 1 dies.
        c.set_isr(vec![1]);
        c.fence(1);
        assert_eq!(c.partition().leader, NO_LEADER);
        assert_eq!(
            choose_leader(&c.s, "t", 0, false),
            Err(ElectionRefused::PreferredNotAvailable)
        );
        assert_eq!(choose_leader(&c.s, "t", 0, true), Ok(2));
        c.fence(2);
        c.fence(3);
        assert_eq!(
            choose_leader(&c.s, "t", 0, true),
            Err(ElectionRefused::NoEligibleLeader)
        );
    }

    #[test]
    fn a_reassignment_adds_replicas_then_completes_or_cancels() {
        let mut c = Cluster::of(4);
        let reassign = |target: Option<Vec<i32>>| MetaCommand::ReassignPartition {
            topic: "t".into(),
            partition: 0,
            target,
        };
        let complete = MetaCommand::CompleteReassignment {
            topic: "t".into(),
            partition: 0,
        };
        // [1, 2, 3] → [4, 2]: 4 joins and replicates; nothing completes yet.
        c.apply(reassign(Some(vec![4, 2])));
        let p = c.partition();
        assert_eq!(p.replicas, vec![4, 2, 1, 3]);
        let r = p.reassignment.clone().unwrap();
        assert_eq!((r.adding(), r.removing()), (vec![4], vec![1, 3]));
        assert!(!p.reassignment_done());
        assert!(c.s.check(&complete).is_err());
        // 4 caught up: the move completes, 1 hands leadership to 4.
        c.set_isr(vec![1, 2, 3, 4]);
        assert!(c.partition().reassignment_done());
        c.apply(complete.clone());
        let p = c.partition();
        assert_eq!(
            (p.replicas.clone(), p.isr.clone(), p.leader),
            (vec![4, 2], vec![2, 4], 4)
        );
        assert!(p.reassignment.is_none());
        // Cancelling a move returns to the replicas before it.
        c.apply(reassign(Some(vec![1])));
        assert_eq!(c.partition().replicas, vec![1, 4, 2]);
        c.apply(reassign(None));
        let p = c.partition();
        assert_eq!((p.replicas, p.leader), (vec![4, 2], 4));
        assert!(matches!(
            c.s.check(&reassign(None)),
            Err(crate::error::Error::NoReassignment(_))
        ));
        // Unknown brokers and repeated ones are refused.
        assert!(c.s.check(&reassign(Some(vec![9]))).is_err());
        assert!(c.s.check(&reassign(Some(vec![2, 2]))).is_err());
    }
}
