//! The controller's duties, run by whichever node leads the metadata quorum:
//! broker registration from heartbeats, leases (a broker not heard from for
//! `session_timeout_ms` is fenced, which moves its leaderships), unfencing a
//! broker once it has caught up, controlled shutdown, and naming the
//! cluster.
//!
//! Heartbeat times live only in the controller's memory, as in KRaft: a new
//! controller gives every broker a full session before fencing it.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;
use veil_meta::MetaCommand;

use super::quorum::Quorum;
use super::rpc::{Heartbeat, HeartbeatReply};

/// How long a connection attempt to a silent broker may take.
const PROBE_TIMEOUT: Duration = Duration::from_millis(300);

/// Whether nothing listens at `addr` any more (connection refused). A
/// timeout or an accepted connection proves nothing: the broker may be
/// paused or cut off, and only its lease decides then.
async fn process_gone(addr: &str) -> bool {
    matches!(
        tokio::time::timeout(PROBE_TIMEOUT, tokio::net::TcpStream::connect(addr)).await,
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused
    )
}

/// How often leases are checked.
const LEASE_TICK: Duration = Duration::from_millis(250);

/// A lease tick's sleep overrunning by this much means this node itself was not running.
const STALL: Duration = Duration::from_millis(500);

#[derive(Debug)]
pub struct Controller {
    node_id: i32,
    session_timeout: Duration,
    /// Silence after which a broker's listener is checked: a refused
    /// connection means its process is gone, so it is fenced at once.
    suspect_after: Duration,
    /// When each broker was last heard from (reset on becoming controller).
    last_seen: Mutex<HashMap<i32, Instant>>,
    /// When each broker's last heartbeat arrived while this node has been
    /// controller (unlike `last_seen`, never a granted session): what
    /// `veil cluster status` shows.
    heard: Mutex<HashMap<i32, Instant>>,
    /// Brokers with a registration change in flight, so concurrent
    /// heartbeats do not propose it twice.
    in_flight: Mutex<HashSet<i32>>,
    /// Automatic preferred-leader rebalance: how often, and above which
    /// imbalance ratio per broker (`None`: off).
    rebalance: Option<(Duration, f64)>,
}

impl Controller {
    pub fn new(
        node_id: i32,
        session_timeout: Duration,
        heartbeat_interval: Duration,
    ) -> Controller {
        Controller {
            node_id,
            session_timeout,
            suspect_after: (heartbeat_interval * 2).min(session_timeout),
            last_seen: Mutex::new(HashMap::new()),
            heard: Mutex::new(HashMap::new()),
            in_flight: Mutex::new(HashSet::new()),
            rebalance: None,
        }
    }

    /// Turns the automatic preferred-leader rebalance on.
    pub fn with_rebalance(mut self, every: Duration, imbalance_ratio: f64) -> Controller {
        self.rebalance = Some((every, imbalance_ratio));
        self
    }

    /// Ends partition moves whose target replicas have all caught up.
    async fn complete_reassignments(&self, quorum: &Quorum) {
        let done: Vec<(String, i32)> = quorum.view().read(|s| {
            s.topics()
                .flat_map(|t| {
                    t.assignments
                        .iter()
                        .enumerate()
                        .filter(|(_, p)| p.reassignment_done())
                        .map(|(i, _)| (t.name.clone(), i as i32))
                        .collect::<Vec<_>>()
                })
                .collect()
        });
        for (topic, partition) in done {
            let cmd = MetaCommand::CompleteReassignment {
                topic: topic.clone(),
                partition,
            };
            match quorum.propose_as_controller(cmd).await {
                Ok(_) => tracing::info!(%topic, partition, "reassignment complete"),
                Err(e) => {
                    tracing::debug!(%topic, partition, error = %e, "completing a reassignment failed");
                }
            }
        }
    }

    /// Moves leaderships back to preferred replicas where a broker's share
    /// of them led elsewhere is too large.
    async fn rebalance_leaders(&self, quorum: &Quorum, ratio: f64) {
        let moves = quorum
            .view()
            .read(|s| veil_meta::elections::preferred_leader_moves(s, ratio));
        for (topic, partition, leader) in moves {
            let cmd = MetaCommand::ElectLeader {
                topic: topic.clone(),
                partition,
                leader,
            };
            match quorum.propose_as_controller(cmd).await {
                Ok(_) => {
                    tracing::info!(%topic, partition, leader, "leadership back to the preferred replica");
                }
                Err(e) => {
                    tracing::debug!(%topic, partition, error = %e, "preferred-leader election failed");
                }
            }
        }
    }

    /// Unfenced brokers past their lease, and those silent long enough to
    /// be checked (with their inter-node address).
    #[allow(clippy::type_complexity)]
    /// With `probe_all` (just took over, after the old controller died —
    /// perhaps with other brokers), every unfenced broker is checked.
    fn silent_brokers(
        &self,
        quorum: &Quorum,
        probe_all: bool,
    ) -> (Vec<(i32, i64)>, Vec<(i32, i64, String)>) {
        let seen = self.last_seen.lock();
        quorum.view().read(|s| {
            let mut expired = Vec::new();
            let mut suspects = Vec::new();
            for b in s
                .brokers()
                .filter(|b| b.node_id != self.node_id && !b.fenced)
            {
                let silence = seen.get(&b.node_id).map_or(Duration::MAX, Instant::elapsed);
                if silence > self.session_timeout {
                    expired.push((b.node_id, b.epoch));
                } else if probe_all || silence > self.suspect_after {
                    if let Some(e) = &b.internal {
                        suspects.push((b.node_id, b.epoch, format!("{}:{}", e.host, e.port)));
                    }
                }
            }
            (expired, suspects)
        })
    }

    /// Moves every broker's last-heard time forward by `by`.
    fn extend_sessions(&self, by: Duration) {
        let now = Instant::now();
        for seen in self.last_seen.lock().values_mut() {
            *seen = (*seen + by).min(now);
        }
    }

    /// When the controller last heard from `node`.
    pub fn last_seen(&self, node: i32) -> Option<Instant> {
        self.last_seen.lock().get(&node).copied()
    }

    /// How long ago `node`'s last heartbeat arrived, if one has since this
    /// node became controller.
    pub fn heartbeat_age(&self, node: i32) -> Option<Duration> {
        self.heard.lock().get(&node).map(Instant::elapsed)
    }

    /// Handles a broker's heartbeat on the controller.
    pub async fn heartbeat(&self, quorum: &Quorum, hb: Heartbeat) -> HeartbeatReply {
        if !quorum.is_controller() {
            return HeartbeatReply::NotController {
                leader: quorum.controller().filter(|l| *l != self.node_id),
            };
        }
        let now = Instant::now();
        self.last_seen.lock().insert(hb.node_id, now);
        self.heard.lock().insert(hb.node_id, now);
        if !quorum.is_voter(hb.node_id) {
            if let Some(internal) = &hb.internal {
                quorum
                    .add_learner(hb.node_id, &format!("{}:{}", internal.host, internal.port))
                    .await;
            }
        }
        let current = quorum.view().read(|s| s.broker(hb.node_id).cloned());
        let command = match &current {
            Some(b)
                if b.incarnation == hb.incarnation
                    && b.listeners == hb.listeners
                    && b.internal == hb.internal
                    && b.rack == hb.rack =>
            {
                if hb.shutting_down && !b.in_controlled_shutdown && !b.fenced {
                    Some(MetaCommand::ControlledShutdown {
                        node_id: b.node_id,
                        epoch: b.epoch,
                    })
                } else if b.fenced && !hb.shutting_down && hb.applied >= b.epoch as u64 {
                    Some(MetaCommand::UnfenceBroker {
                        node_id: b.node_id,
                        epoch: b.epoch,
                    })
                } else {
                    None
                }
            }
            _ => Some(MetaCommand::RegisterBroker {
                node_id: hb.node_id,
                incarnation: hb.incarnation,
                listeners: hb.listeners.clone(),
                internal: hb.internal.clone(),
                rack: hb.rack.clone(),
            }),
        };
        if let Some(cmd) = command {
            if !self.in_flight.lock().insert(hb.node_id) {
                return HeartbeatReply::Pending;
            }
            let kind = cmd.kind();
            let outcome = quorum.propose(cmd).await;
            self.in_flight.lock().remove(&hb.node_id);
            match outcome {
                Ok(_) => tracing::info!(
                    node = hb.node_id,
                    change = kind,
                    "broker registration changed"
                ),
                Err(e) => {
                    tracing::warn!(node = hb.node_id, change = kind, error = %e, "broker registration change failed");
                    return HeartbeatReply::Pending;
                }
            }
        }
        match quorum.view().read(|s| s.broker(hb.node_id).cloned()) {
            Some(b) if b.incarnation == hb.incarnation => {
                // Done once it leads nothing another in-sync replica could.
                let leads_nothing = quorum.view().read(|s| {
                    s.topics().all(|t| {
                        t.assignments.iter().all(|p| {
                            p.leader != hb.node_id
                                || !p
                                    .isr
                                    .iter()
                                    .any(|r| *r != hb.node_id && s.broker_available(*r))
                        })
                    })
                });
                HeartbeatReply::Registered {
                    epoch: b.epoch,
                    fenced: b.fenced,
                    may_shut_down: hb.shutting_down
                        && (b.in_controlled_shutdown || b.fenced)
                        && leads_nothing,
                    controller_applied: quorum.view().applied(),
                }
            }
            _ => HeartbeatReply::Pending,
        }
    }

    /// While this node is controller: fence brokers whose lease expired,
    /// and name the cluster once.
    pub async fn run(
        self: Arc<Self>,
        quorum: Arc<Quorum>,
        cluster_id: String,
        shutdown: CancellationToken,
    ) {
        // The Raft term this node last took over as controller in: a lapse
        // of its majority lease within the same term is not a new
        // controller and must not restart every broker's session.
        let mut took_over_in: Option<u64> = None;
        let mut next_rebalance = Instant::now();
        let mut probe_all = false;
        loop {
            let asleep = Instant::now();
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(LEASE_TICK) => {}
            }
            // A broker's silence counts only while this node could hear it: a sleep that
            // overran means this node was stopped (SIGSTOP, a stalled host), and that time is
            // nobody's lease. Only the sleep is measured: proposals below may take long while
            // heartbeats are still heard.
            let stalled = asleep.elapsed().saturating_sub(LEASE_TICK);
            if stalled > STALL {
                tracing::info!(
                    ?stalled,
                    "the controller loop did not run for a while; brokers get that time back"
                );
                self.extend_sessions(stalled);
            }
            let controller = quorum.is_controller();
            let term = quorum.metrics().current_term;
            if controller && took_over_in != Some(term) {
                took_over_in = Some(term);
                // A new controller grants every broker a full session.
                let now = Instant::now();
                let ids: Vec<i32> = quorum
                    .view()
                    .read(|s| s.brokers().map(|b| b.node_id).collect());
                let mut seen = self.last_seen.lock();
                seen.clear();
                for id in ids {
                    seen.insert(id, now);
                }
                self.heard.lock().clear();
                // Brokers that died with the old controller are found now,
                // not a lease later.
                probe_all = true;
                // Brokers get a full interval to come back before leaderships move.
                next_rebalance = now + self.rebalance.map_or(Duration::ZERO, |(every, _)| every);
                tracing::info!(node = self.node_id, term, "this node is now the controller");
            }
            if !controller {
                continue;
            }
            if quorum.view().read(|s| s.cluster_id().is_none()) {
                let cmd = MetaCommand::SetClusterId {
                    cluster_id: cluster_id.clone(),
                };
                if let Err(e) = quorum.propose_as_controller(cmd).await {
                    tracing::debug!(error = %e, "naming the cluster failed; retrying");
                }
            }
            let (expired, suspects) = self.silent_brokers(&quorum, std::mem::take(&mut probe_all));
            let mut gone = Vec::new();
            for (node_id, epoch, addr) in suspects {
                if process_gone(&addr).await {
                    tracing::warn!(node = node_id, %addr, "broker stopped heartbeating and its listener refuses connections; fencing it");
                    gone.push((node_id, epoch));
                }
            }
            for (node_id, epoch) in expired.into_iter().chain(gone) {
                tracing::warn!(node = node_id, "broker lease expired; fencing it");
                if let Err(e) = quorum
                    .propose_as_controller(MetaCommand::FenceBroker { node_id, epoch })
                    .await
                {
                    tracing::warn!(node = node_id, error = %e, "fencing failed");
                }
            }
            self.complete_reassignments(&quorum).await;
            if let Some((every, ratio)) = self.rebalance {
                if Instant::now() >= next_rebalance {
                    next_rebalance = Instant::now() + every;
                    self.rebalance_leaders(&quorum, ratio).await;
                }
            }
        }
    }
}
