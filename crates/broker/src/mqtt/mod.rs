//! The MQTT front end: MQTT 3.1.1 and 5.0 devices publish into and
//! subscribe from ordinary Kafka topics.
//!
//! Start at [`start`]: it binds `[[mqtt.listeners]]` (MQTT, or MQTTS with
//! TLS) and serves each connection in [`connection`], with the parts
//! `veil gateway` shares in [`front_end`]. Packets are decoded
//! and encoded by `rumqttc`'s codecs behind [`codec`]; [`mapping`] turns
//! MQTT topics into Kafka topics and keys by the configured rules (topic
//! names and filters in [`filter`]); [`ingest`] appends a PUBLISH to its
//! partition through the Produce path's partition calls, and a QoS 1
//! PUBACK waits until the record is durable as `acks=all` would;
//! subscriptions read the mapped partitions directly. Persistent sessions
//! are kept by [`session`], retained messages by [`retained`].
//! Authentication uses the SASL user store (user name and password) or
//! the TLS client certificate; authorization is the Kafka ACLs on the
//! mapped topic (WRITE to publish, READ to subscribe).

pub mod codec;
pub mod config;
pub mod connection;
pub mod filter;
pub mod front_end;
pub mod ingest;
pub mod mapping;
pub mod retained;
pub mod session;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use config::{MqttConfig, MqttListenerConfig};

use crate::auth::tls::ListenerTls;
use crate::connection_limits::Refused;
use crate::error::{Error, Result};
use crate::state::BrokerState;

/// What every MQTT connection of a broker shares.
#[derive(Debug)]
pub struct MqttService {
    pub state: Arc<BrokerState>,
    pub config: MqttConfig,
    pub mappings: mapping::Mappings,
    pub sessions: Arc<session::SessionStore>,
    pub retained: retained::RetainedStore,
    connection_ids: AtomicU64,
}

impl MqttService {
    pub fn new(state: Arc<BrokerState>) -> Result<MqttService> {
        let config = state.config.mqtt.clone();
        let mappings = config.mappings().map_err(Error::Config)?;
        let sessions = Arc::new(session::SessionStore::open(&state.config.data_dir)?);
        let retained = retained::RetainedStore::open(&state.config.data_dir, config.max_retained);
        Ok(MqttService {
            state,
            config,
            mappings,
            sessions,
            retained,
            connection_ids: AtomicU64::new(0),
        })
    }

    pub fn next_connection_id(&self) -> u64 {
        self.connection_ids.fetch_add(1, Ordering::Relaxed)
    }
}

/// Binds every MQTT listener and starts serving; their names and bound
/// addresses, in config order. Nothing when `mqtt.enabled` is off.
pub async fn start(
    state: &Arc<BrokerState>,
    shutdown: &CancellationToken,
    connections: &TaskTracker,
    background: &TaskTracker,
    certs: &mut Vec<Arc<crate::auth::tls::ReloadingCert>>,
) -> Result<Vec<(String, SocketAddr)>> {
    if !state.config.mqtt.enabled {
        return Ok(Vec::new());
    }
    let svc = Arc::new(MqttService::new(Arc::clone(state))?);
    let mut bound = Vec::new();
    for l in &svc.config.listeners {
        let (listener, tls, addr) =
            crate::server::bind_listener("mqtt listener", &l.name, l.bind, l.tls.as_ref(), certs)
                .await?;
        tracing::info!(listener = %l.name, %addr, tls = tls.is_some(), "listening for MQTT clients");
        bound.push((l.name.clone(), addr));
        background.spawn(accept_loop(
            listener,
            l.clone(),
            tls,
            Arc::clone(&svc),
            shutdown.clone(),
            connections.clone(),
        ));
    }
    background.spawn(save_retained(Arc::clone(&svc), shutdown.clone()));
    Ok(bound)
}

async fn accept_loop(
    listener: TcpListener,
    config: MqttListenerConfig,
    tls: Option<ListenerTls>,
    svc: Arc<MqttService>,
    shutdown: CancellationToken,
    connections: TaskTracker,
) {
    let limits = Arc::clone(&svc.state.connection_limits);
    while let Some((stream, peer)) = front_end::next_connection(&listener, &shutdown).await {
        // MQTT connections count against the same limits as Kafka's.
        let slot = match limits.admit(peer.ip()) {
            Ok(slot) => slot,
            Err(refused) => {
                svc.state
                    .metrics
                    .connections_rejected
                    .with_label_values(&[&config.name])
                    .inc();
                if refused == Refused::Broker {
                    tracing::warn!(%peer, "connection limit reached; refusing an MQTT client");
                }
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let svc = Arc::clone(&svc);
        let tls = tls.clone();
        let name = config.name.clone();
        let anonymous = config.allow_anonymous;
        let shutdown = shutdown.clone();
        connections.spawn(async move {
            let _slot = slot;
            let span = tracing::debug_span!("mqtt", %peer, listener = %name);
            let Some(tls) = tls else {
                tracing::Instrument::instrument(
                    connection::serve(stream, peer, svc, name, None, anonymous, shutdown),
                    span,
                )
                .await;
                return;
            };
            let (stream, principal) = match front_end::accept_tls(stream, &tls, &span).await {
                Ok(accepted) => accepted,
                Err(refused) => {
                    if refused == front_end::TlsRefused::Handshake {
                        svc.state
                            .metrics
                            .tls_handshake_failures
                            .with_label_values(&[&name])
                            .inc();
                    }
                    return;
                }
            };
            tracing::Instrument::instrument(
                connection::serve(stream, peer, svc, name, principal, anonymous, shutdown),
                span,
            )
            .await;
        });
    }
}

/// Writes the retained messages after changes, and once more at shutdown.
async fn save_retained(svc: Arc<MqttService>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(retained::SAVE_INTERVAL);
    loop {
        let stop = tokio::select! {
            () = shutdown.cancelled() => true,
            _ = tick.tick() => false,
        };
        let s = Arc::clone(&svc);
        if let Ok(Err(e)) = tokio::task::spawn_blocking(move || s.retained.save_if_dirty()).await {
            tracing::warn!(error = %e, "could not save retained MQTT messages");
        }
        if stop {
            return;
        }
    }
}
