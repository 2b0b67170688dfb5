//! Starting and stopping a broker: state, listeners, the admin endpoint and
//! housekeeping, with graceful shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::tls::{self, ListenerTls};
use crate::clock::{Clock, SystemClock};
use crate::config::Config;
use crate::connection_limits::{ConnectionLimits, Refused};
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::state::{Advertised, BrokerState};
use crate::{admin, connection, flusher, housekeeping};

/// A running broker.
#[derive(Debug)]
pub struct Broker {
    state: Arc<BrokerState>,
    shutdown: CancellationToken,
    connections: TaskTracker,
    background: TaskTracker,
    kafka_addrs: Vec<SocketAddr>,
    /// MQTT listeners by name, in config order (none unless `mqtt.enabled`).
    mqtt_addrs: Vec<(String, SocketAddr)>,
    admin_addr: Option<SocketAddr>,
    internal_addr: Option<SocketAddr>,
}

impl Broker {
    /// Opens the data directory (running recovery), binds every listener,
    /// and starts serving.
    pub async fn start(config: Config) -> Result<Broker> {
        Broker::start_with_clock(config, Arc::new(SystemClock)).await
    }

    pub async fn start_with_clock(config: Config, clock: Arc<dyn Clock>) -> Result<Broker> {
        config.validate().map_err(Error::Config)?;
        let metrics = Metrics::new();
        metrics.init_series(&config);
        let state = BrokerState::open(config, clock, metrics).await?;
        let shutdown = CancellationToken::new();
        let connections = TaskTracker::new();
        let background = TaskTracker::new();
        let limits = Arc::clone(&state.connection_limits);
        // Nodes have their own limits: client connections, however many a
        // dynamic config allows, never crowd out the quorum.
        let internal_limits =
            ConnectionLimits::new(&state.config.network).map_err(Error::Config)?;

        let mut kafka_addrs = Vec::new();
        let mut advertised = Vec::new();
        let mut certs = Vec::new();
        let internal_addr = match state.config.cluster.listen_addr(state.node_id()) {
            Ok(Some(bind)) => {
                let (addr, cert) = bind_internal(
                    &state,
                    bind,
                    &shutdown,
                    &connections,
                    &background,
                    &internal_limits,
                )
                .await?;
                certs.extend(cert);
                Some(addr)
            }
            Ok(None) => None,
            Err(e) => return Err(Error::Config(e)),
        };
        for l in &state.config.listeners {
            let (listener, tls, addr) =
                bind_listener("listener", &l.name, l.bind, l.tls.as_ref(), &mut certs).await?;
            kafka_addrs.push(addr);
            advertised.push(advertise(&l.name, l.advertised.as_deref(), addr)?);
            tracing::info!(listener = %l.name, %addr, "listening for Kafka clients");
            background.spawn(accept_loop(
                listener,
                l.name.clone(),
                tls,
                Arc::clone(&state),
                Arc::clone(&limits),
                shutdown.clone(),
                connections.clone(),
            ));
        }
        *state.advertised.write() = advertised;
        let mqtt_addrs =
            crate::mqtt::start(&state, &shutdown, &connections, &background, &mut certs).await?;
        state.cluster.open_client_gate(&shutdown);
        background.spawn(tls::watch(certs, shutdown.clone()));
        state.start_background(&shutdown);

        let admin_addr = if state.config.admin.enabled {
            let listener = TcpListener::bind(state.config.admin.bind)
                .await
                .map_err(|e| {
                    Error::Config(format!(
                        "cannot bind admin endpoint to {}: {e}",
                        state.config.admin.bind
                    ))
                })?;
            let addr = listener.local_addr()?;
            tracing::info!(%addr, "serving /metrics and /healthz");
            background.spawn(admin::serve(listener, Arc::clone(&state), shutdown.clone()));
            Some(addr)
        } else {
            None
        };
        background.spawn(housekeeping::run(Arc::clone(&state), shutdown.clone()));
        background.spawn(crate::cleaner::run(Arc::clone(&state), shutdown.clone()));
        background.spawn(flusher::run(Arc::clone(&state), shutdown.clone()));
        background.spawn(crate::group::service::run_timers(
            Arc::clone(&state.groups),
            shutdown.clone(),
        ));
        if internal_addr.is_none() {
            // A single node serves as soon as it is up, as it always has:
            // wait for it to lead its quorum of one and register.
            if !state.wait_ready(SINGLE_NODE_READY).await {
                return Err(Error::Config(
                    "the metadata quorum of this single node did not become ready".into(),
                ));
            }
        }

        Ok(Broker {
            state,
            shutdown,
            connections,
            background,
            kafka_addrs,
            mqtt_addrs,
            admin_addr,
            internal_addr,
        })
    }

    /// The bound inter-node listener, if this node is part of a cluster.
    pub fn internal_addr(&self) -> Option<SocketAddr> {
        self.internal_addr
    }

    /// Bound addresses of the Kafka listeners, in config order.
    pub fn kafka_addrs(&self) -> &[SocketAddr] {
        &self.kafka_addrs
    }

    /// Bound MQTT listeners: name and address, in config order.
    pub fn mqtt_addrs(&self) -> &[(String, SocketAddr)] {
        &self.mqtt_addrs
    }

    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    pub fn state(&self) -> &Arc<BrokerState> {
        &self.state
    }

    /// A token that, when cancelled, begins shutdown.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Stops accepting, lets in-flight requests finish (bounded by
    /// `network.shutdown_timeout_ms`), fsyncs and checkpoints every partition.
    pub async fn shutdown(self) -> Result<()> {
        if self.internal_addr.is_some() {
            // Move leaderships to other replicas before going away, so
            // clients see at most retriable errors.
            let grace = Duration::from_millis(self.state.config.network.shutdown_timeout_ms);
            crate::cluster::registration::shut_down_gracefully(
                &self.state,
                grace.min(CONTROLLED_SHUTDOWN),
            )
            .await;
        }
        self.shutdown.cancel();
        self.background.close();
        self.connections.close();
        let grace = Duration::from_millis(self.state.config.network.shutdown_timeout_ms);
        if tokio::time::timeout(grace, self.connections.wait())
            .await
            .is_err()
        {
            tracing::warn!("connections still open after the shutdown timeout; closing anyway");
        }
        let _ = tokio::time::timeout(grace, self.background.wait()).await;
        self.state.cluster.quorum.shutdown().await;
        let state = Arc::clone(&self.state);
        tokio::task::spawn_blocking(move || flusher::flush_all(&state))
            .await
            .map_err(|e| Error::Io(std::io::Error::other(e)))?
    }
}

fn advertise(name: &str, configured: Option<&str>, bound: SocketAddr) -> Result<Advertised> {
    let (host, port) = match configured {
        Some(hp) => {
            let (h, p) = hp.rsplit_once(':').ok_or_else(|| {
                Error::Config(format!(
                    "listener '{name}': advertised must be host:port, got '{hp}'"
                ))
            })?;
            let port = p.parse::<u16>().map_err(|_| {
                Error::Config(format!(
                    "listener '{name}': advertised port '{p}' is not a port number"
                ))
            })?;
            (h.trim_matches(['[', ']']).to_owned(), i32::from(port))
        }
        None => (bound.ip().to_string(), i32::from(bound.port())),
    };
    Ok(Advertised {
        listener: name.to_owned(),
        host,
        port,
    })
}

async fn accept_loop(
    listener: TcpListener,
    name: String,
    tls: Option<ListenerTls>,
    state: Arc<BrokerState>,
    limits: Arc<ConnectionLimits>,
    shutdown: CancellationToken,
    connections: TaskTracker,
) {
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => return,
            r = listener.accept() => r,
        };
        let (stream, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                // Out of file descriptors and the like: back off, keep serving.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let slot = match limits.admit(peer.ip()) {
            Ok(slot) => slot,
            Err(refused) => {
                state
                    .metrics
                    .connections_rejected
                    .with_label_values(&[&name])
                    .inc();
                match refused {
                    Refused::Broker => {
                        tracing::warn!(%peer, "connection limit reached; refusing");
                    }
                    // One address at its limit is that client's problem.
                    Refused::Address => {
                        tracing::debug!(%peer, "per-address connection limit reached; refusing");
                    }
                }
                drop(stream);
                continue;
            }
        };
        // A node that stepped off (cut off from the controller) sends
        // clients elsewhere; client connections also close when it does.
        let shutdown = if name == INTERNAL_LISTENER {
            shutdown.clone()
        } else if state.cluster.is_stepped_off() {
            drop(stream);
            continue;
        } else {
            state.cluster.client_gate()
        };
        let state = Arc::clone(&state);
        let name = name.clone();
        let tls = tls.clone();
        connections.spawn(async move {
            let _slot = slot;
            serve_tcp(stream, peer, Arc::clone(&state), name, tls, shutdown).await;
        });
    }
}

async fn serve_tcp(
    stream: TcpStream,
    peer: SocketAddr,
    state: Arc<BrokerState>,
    listener: String,
    tls: Option<ListenerTls>,
    shutdown: CancellationToken,
) {
    let _ = stream.set_nodelay(true);
    let span = tracing::debug_span!("connection", %peer, listener = %listener);
    let Some(tls) = tls else {
        tracing::Instrument::instrument(
            connection::serve(stream, peer, state, listener, shutdown),
            span,
        )
        .await;
        return;
    };
    let handshake = tokio::select! {
        () = shutdown.cancelled() => return,
        r = tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, tls.acceptor.accept(stream)) => r,
    };
    let stream = match handshake {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            // Plaintext clients, wrong CAs, expired certificates: the
            // client's problem, so debug and a metric, not a warning;
            // between nodes it is a misconfiguration, said once.
            tracing::debug!(parent: &span, error = %e, "TLS handshake failed");
            if listener == INTERNAL_LISTENER {
                state.cluster.client.notices().report(
                    &format!("accept {} {e}", peer.ip()),
                    &format!(
                        "refused an inter-node connection from {}: TLS handshake failed: {e}",
                        peer.ip()
                    ),
                );
            }
            state
                .metrics
                .tls_handshake_failures
                .with_label_values(&[&listener])
                .inc();
            return;
        }
        Err(_) => {
            tracing::debug!(parent: &span, "TLS handshake timed out");
            state
                .metrics
                .tls_handshake_failures
                .with_label_values(&[&listener])
                .inc();
            return;
        }
    };
    let principal = match stream.get_ref().1.peer_certificates() {
        Some(chain) if !chain.is_empty() => {
            let Some(p) = tls.principal(chain) else {
                // Kafka fails the connection when no mapping rule applies.
                tracing::debug!(parent: &span, "no principal mapping rule matches the client certificate");
                return;
            };
            Some(p)
        }
        _ => None,
    };
    tracing::Instrument::instrument(
        connection::serve_authenticated(stream, peer, state, listener, principal, shutdown),
        span,
    )
    .await;
}

/// How long a single node may take to elect itself and register at start.
const SINGLE_NODE_READY: Duration = Duration::from_secs(30);
/// The longest a stopping node waits for its leaderships to move.
const CONTROLLED_SHUTDOWN: Duration = Duration::from_secs(15);

/// The name connections on the inter-node listener carry (no client
/// listener may use it).
pub const INTERNAL_LISTENER: &str = "INTERNAL";

/// Binds the inter-node listener (mTLS when `[cluster.tls]` is set) and
/// records its advertised endpoint.
async fn bind_internal(
    state: &Arc<BrokerState>,
    bind: SocketAddr,
    shutdown: &CancellationToken,
    connections: &TaskTracker,
    background: &TaskTracker,
    limits: &Arc<ConnectionLimits>,
) -> Result<(SocketAddr, Option<Arc<tls::ReloadingCert>>)> {
    let (tls, cert) = match &state.config.cluster.tls {
        Some(t) => {
            let config = crate::config::TlsConfig {
                cert_file: t.cert_file.clone(),
                key_file: t.key_file.clone(),
                ca_file: Some(t.ca_file.clone()),
                client_auth: crate::config::ClientAuth::Required,
                principal_mapping_rules: Vec::new(),
            };
            let tls = ListenerTls::new(&config)
                .map_err(|e| Error::Config(format!("cluster.tls: {e}")))?;
            let cert = Arc::clone(&tls.cert);
            (Some(tls), Some(cert))
        }
        None => (None, None),
    };
    let listener = TcpListener::bind(bind).await.map_err(|e| {
        Error::Config(format!(
            "cannot bind the inter-node listener to {bind}: {e}"
        ))
    })?;
    let addr = listener.local_addr()?;
    let advertised = state.config.cluster.advertised_addr(state.node_id(), addr);
    let (host, port) = advertised
        .rsplit_once(':')
        .and_then(|(h, p)| {
            Some((
                h.trim_matches(['[', ']']).to_owned(),
                p.parse::<u16>().ok()?,
            ))
        })
        .ok_or_else(|| {
            Error::Config(format!(
                "cluster.advertised '{advertised}' is not host:port"
            ))
        })?;
    *state.cluster.internal.write() = Some(veil_meta::Endpoint {
        name: INTERNAL_LISTENER.to_owned(),
        host,
        port,
        security_protocol: i16::from(tls.is_some()),
    });
    tracing::info!(%addr, tls = tls.is_some(), "listening for other nodes");
    background.spawn(accept_loop(
        listener,
        INTERNAL_LISTENER.to_owned(),
        tls,
        Arc::clone(state),
        Arc::clone(limits),
        shutdown.clone(),
        connections.clone(),
    ));
    Ok((addr, cert))
}

/// How long a client may take to complete the TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Binds one client listener (Kafka or MQTT, named `kind` in errors) and
/// loads its TLS material; reloadable certificates join `certs`.
pub(crate) async fn bind_listener(
    kind: &str,
    name: &str,
    bind: SocketAddr,
    tls: Option<&crate::config::TlsConfig>,
    certs: &mut Vec<Arc<tls::ReloadingCert>>,
) -> Result<(TcpListener, Option<ListenerTls>, SocketAddr)> {
    let tls = match tls {
        Some(t) => {
            let tls =
                ListenerTls::new(t).map_err(|e| Error::Config(format!("{kind} '{name}': {e}")))?;
            certs.push(Arc::clone(&tls.cert));
            Some(tls)
        }
        None => None,
    };
    let listener = TcpListener::bind(bind)
        .await
        .map_err(|e| Error::Config(format!("cannot bind {kind} '{name}' to {bind}: {e}")))?;
    let addr = listener.local_addr()?;
    Ok((listener, tls, addr))
}
