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
use crate::{admin, connection, housekeeping};

/// A running broker.
#[derive(Debug)]
pub struct Broker {
    state: Arc<BrokerState>,
    shutdown: CancellationToken,
    connections: TaskTracker,
    background: TaskTracker,
    kafka_addrs: Vec<SocketAddr>,
    admin_addr: Option<SocketAddr>,
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
        let state = tokio::task::spawn_blocking(move || BrokerState::open(config, clock, metrics))
            .await
            .map_err(|e| Error::Io(std::io::Error::other(e)))??;
        let state = Arc::new(state);
        let shutdown = CancellationToken::new();
        let connections = TaskTracker::new();
        let background = TaskTracker::new();
        let limits = ConnectionLimits::new(&state.config.network).map_err(Error::Config)?;

        let mut kafka_addrs = Vec::new();
        let mut advertised = Vec::new();
        let mut certs = Vec::new();
        for l in &state.config.listeners {
            let tls = match &l.tls {
                Some(t) => {
                    let tls = ListenerTls::new(t)
                        .map_err(|e| Error::Config(format!("listener '{}': {e}", l.name)))?;
                    certs.push(Arc::clone(&tls.cert));
                    Some(tls)
                }
                None => None,
            };
            let listener = TcpListener::bind(l.bind).await.map_err(|e| {
                Error::Config(format!(
                    "cannot bind listener '{}' to {}: {e}",
                    l.name, l.bind
                ))
            })?;
            let addr = listener.local_addr()?;
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
        background.spawn(tls::watch(certs, shutdown.clone()));

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
        background.spawn(crate::group::service::run_timers(
            Arc::clone(&state.groups),
            shutdown.clone(),
        ));

        Ok(Broker {
            state,
            shutdown,
            connections,
            background,
            kafka_addrs,
            admin_addr,
        })
    }

    /// Bound addresses of the Kafka listeners, in config order.
    pub fn kafka_addrs(&self) -> &[SocketAddr] {
        &self.kafka_addrs
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
    /// `network.shutdown_timeout_ms`), fsyncs every partition.
    pub async fn shutdown(self) -> Result<()> {
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
        let state = Arc::clone(&self.state);
        tokio::task::spawn_blocking(move || {
            let mut failed = 0usize;
            for topic in state.topics.all() {
                for p in &topic.partitions {
                    if let Err(e) = p.sync() {
                        failed += 1;
                        tracing::error!(topic = %topic.name, partition = p.index, error = %e, "final fsync failed");
                    }
                }
            }
            if failed == 0 {
                Ok(())
            } else {
                Err(Error::Poisoned)
            }
        })
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
                state.metrics.connections_rejected.inc();
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
        let state = Arc::clone(&state);
        let shutdown = shutdown.clone();
        let name = name.clone();
        let tls = tls.clone();
        connections.spawn(async move {
            let _slot = slot;
            state.metrics.connections.inc();
            serve_tcp(stream, peer, Arc::clone(&state), name, tls, shutdown).await;
            state.metrics.connections.dec();
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
            // client's problem, so debug and a metric, not a warning.
            tracing::debug!(parent: &span, error = %e, "TLS handshake failed");
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

/// How long a client may take to complete the TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
