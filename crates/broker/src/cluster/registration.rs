//! The broker side of the registry: heartbeats to the controller carrying
//! this node's registration and metadata progress, every
//! `heartbeat_interval_ms` (more often while not yet registered, fenced or
//! shutting down). A node whose quorum member stopped (its metadata log is
//! poisoned) heartbeats no more: it can no longer follow metadata, so its
//! lease runs out and the controller fences it and moves its leaderships.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use veil_meta::Endpoint;

use super::client::Lane;
use super::rpc::{Call, Heartbeat, HeartbeatReply, Reply};
use super::RegistrationStatus;
use crate::config::SecurityProtocol;
use crate::state::BrokerState;

/// The pace while something is pending.
const FAST: Duration = Duration::from_millis(200);

fn protocol_code(p: SecurityProtocol) -> i16 {
    match p {
        SecurityProtocol::Plaintext => 0,
        SecurityProtocol::Ssl => 1,
        SecurityProtocol::SaslPlaintext => 2,
        SecurityProtocol::SaslSsl => 3,
    }
}

/// This node's announcement.
fn heartbeat(state: &BrokerState) -> Heartbeat {
    let cluster = &state.cluster;
    let listeners = state
        .advertised
        .read()
        .iter()
        .map(|a| {
            let protocol = state
                .config
                .listeners
                .iter()
                .find(|l| l.name == a.listener)
                .map_or(0, |l| protocol_code(l.protocol));
            Endpoint {
                name: a.listener.clone(),
                host: a.host.clone(),
                port: u16::try_from(a.port).unwrap_or(0),
                security_protocol: protocol,
            }
        })
        .collect();
    Heartbeat {
        node_id: cluster.node_id,
        incarnation: cluster.incarnation,
        listeners,
        internal: cluster.internal.read().clone(),
        rack: state.config.cluster.rack.clone(),
        applied: state.published(),
        shutting_down: cluster.shutting_down.load(Ordering::SeqCst),
    }
}

/// Sends one heartbeat to the controller and records the answer.
pub async fn beat(state: &BrokerState) -> Option<RegistrationStatus> {
    let cluster = &state.cluster;
    let hb = heartbeat(state);
    let reply = match cluster.quorum.controller() {
        Some(l) if l == cluster.node_id => cluster.controller.heartbeat(&cluster.quorum, hb).await,
        Some(l) => {
            let addr = cluster.quorum.voter_address(l)?.to_owned();
            match cluster
                .client
                .call(
                    &addr,
                    Lane::Control,
                    Call::Heartbeat(hb),
                    cluster.heartbeat_interval * 2,
                )
                .await
            {
                Ok(Reply::Heartbeat(r)) => r,
                Ok(_) => return None,
                Err(e) => {
                    tracing::debug!(controller = l, error = %e, "heartbeat failed");
                    return None;
                }
            }
        }
        None => return None,
    };
    match reply {
        HeartbeatReply::Registered {
            epoch,
            fenced,
            may_shut_down,
            controller_applied,
        } => {
            let status = RegistrationStatus {
                epoch: Some(epoch),
                fenced,
                may_shut_down,
                controller_applied,
                answered: Some(std::time::Instant::now()),
            };
            cluster.registration.send_if_modified(|s| {
                let changed = s.epoch != status.epoch
                    || s.fenced != status.fenced
                    || s.may_shut_down != status.may_shut_down;
                *s = status;
                changed
            });
            Some(status)
        }
        HeartbeatReply::NotController { .. } | HeartbeatReply::Pending => None,
    }
}

/// Whether every other node refuses connections: they are down, not cut
/// off, and this node is all that is left to serve.
async fn peers_all_down(state: &BrokerState) -> bool {
    let me = state.node_id();
    let peers: Vec<String> = state.with_meta(|s| {
        s.brokers()
            .filter(|b| b.node_id != me)
            .filter_map(|b| {
                b.internal
                    .as_ref()
                    .map(|e| format!("{}:{}", e.host, e.port))
            })
            .collect()
    });
    for addr in peers {
        let refused = matches!(
            tokio::time::timeout(
                Duration::from_millis(300),
                tokio::net::TcpStream::connect(&addr)
            )
            .await,
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused
        );
        if !refused {
            return false;
        }
    }
    true
}

/// Heartbeats until shutdown; steps off while cut off from the controller
/// (see [`super::Cluster::set_stepped_off`]).
pub async fn run(state: Arc<BrokerState>, shutdown: CancellationToken) {
    let mut said = false;
    loop {
        if let Some(why) = state.cluster.quorum.stopped() {
            if !said {
                tracing::error!(reason = %why, "no more heartbeats to the controller: this node will be fenced");
                said = true;
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(state.cluster.heartbeat_interval) => continue,
            }
        }
        let status = beat(&state).await;
        if state.cluster.clustered {
            let off = !state.cluster.in_contact()
                && state.cluster.registration.borrow().epoch.is_some()
                && !peers_all_down(&state).await;
            state.cluster.set_stepped_off(off);
        }
        let settled = status.is_some_and(|s| !s.fenced)
            && !state.cluster.shutting_down.load(Ordering::SeqCst);
        let pause = if settled {
            state.cluster.heartbeat_interval
        } else {
            FAST
        };
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(pause) => {}
        }
    }
}

/// Controlled shutdown: ask the controller to move this node's leaderships
/// away and wait (at most `limit`) until it says they have moved.
pub async fn shut_down_gracefully(state: &BrokerState, limit: Duration) {
    let cluster = &state.cluster;
    cluster.shutting_down.store(true, Ordering::SeqCst);
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        if beat(state).await.is_some_and(|s| s.may_shut_down) {
            tracing::info!("controlled shutdown: leadership moved to other replicas");
            return;
        }
        tokio::time::sleep(FAST).await;
    }
    tracing::warn!("controlled shutdown did not complete in time; stopping anyway");
}
