//! One client connection: read frames, decode, dispatch in order, and hand
//! responses to the writer ([`crate::response_writer`]) in request order.
//!
//! Requests are handled one after another in the order they arrive (so
//! appends from one producer keep their order), but a handler may return a
//! deferred response (an fsync wait, a long poll). The next request is read
//! and handled meanwhile; the writer awaits responses strictly in order.
//!
//! What one connection may hold is bounded: at most
//! `max_in_flight_per_connection` responses are outstanding, and a Fetch
//! first reserves its response's size ([`crate::fetch_limits`]) in the
//! connection's `max_queued_response_bytes_per_connection` budget, given
//! back when the writer has sent it, so a client that does not read stops
//! the broker from reading its further requests. Before a SASL listener's
//! client has authenticated, only the handshake APIs are decoded, frames are
//! capped at `sasl.server_max_receive_size`, and the connection closes at
//! `sasl.authentication_timeout_ms`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kafka_protocol::messages::ApiKey;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::auth::sasl::{Gate, Session};
use crate::context::RequestContext;
use crate::dispatch::{self, api_name, Decoded, Request};
use crate::fetch_limits::FetchLimits;
use crate::frame::{FrameError, FrameReader, HeaderPrefix};
use crate::handlers::api_versions;
use crate::metrics::{ConnectionGauge, PrincipalClass};
use crate::response_writer::{write_responses, Pending};
use crate::state::BrokerState;

/// Serves one connection until the client closes it, it idles out, it
/// misbehaves, or the broker shuts down.
pub async fn serve<S>(
    stream: S,
    peer: SocketAddr,
    broker: Arc<BrokerState>,
    listener: String,
    shutdown: CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    serve_authenticated(stream, peer, broker, listener, None, shutdown).await;
}

/// [`serve`] for a connection whose TLS client certificate already named a
/// principal (`User:<mapped DN>`); SASL listeners still require SASL.
pub async fn serve_authenticated<S>(
    stream: S,
    peer: SocketAddr,
    broker: Arc<BrokerState>,
    listener: String,
    tls_principal: Option<String>,
    shutdown: CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (rd, wr) = tokio::io::split(stream);
    let in_flight = broker.config.network.max_in_flight_per_connection;
    // Boxed, so the queue's slots cost a pointer each while idle.
    let (tx, rx) = mpsc::channel::<Box<Pending>>(in_flight);
    let writer = tokio::spawn(write_responses(wr, rx, Arc::clone(&broker)));
    let class = if listener == crate::server::INTERNAL_LISTENER {
        PrincipalClass::Node
    } else if tls_principal.is_some() {
        PrincipalClass::Certificate
    } else {
        PrincipalClass::Anonymous
    };
    let session = Session::new(&broker, &listener, tls_principal);
    let class = if session.requires_authentication() {
        PrincipalClass::Unauthenticated
    } else {
        class
    };
    let mut conn = Reader {
        gauge: ConnectionGauge::open(&broker.metrics, &listener, class),
        tx,
        broker: &broker,
        listener: &listener,
        peer,
        session,
        budget: Arc::new(Semaphore::new(
            broker
                .config
                .network
                .max_queued_response_bytes_per_connection,
        )),
    };
    let reason = conn.run(rd, &shutdown).await;
    tracing::debug!(%peer, reason, "closing connection");
    // The reader dropped its sender: the writer drains what is in flight.
    drop(conn);
    let _ = writer.await;
}

struct Reader<'a> {
    tx: mpsc::Sender<Box<Pending>>,
    broker: &'a Arc<BrokerState>,
    listener: &'a str,
    peer: SocketAddr,
    session: Session,
    /// This connection in `veil_connections`.
    gauge: ConnectionGauge,
    /// Bytes of record data this connection's queued responses may hold.
    budget: Arc<Semaphore>,
}

impl Reader<'_> {
    async fn run<R: AsyncRead + Unpin>(
        &mut self,
        mut rd: R,
        shutdown: &CancellationToken,
    ) -> &'static str {
        let mut frames = FrameReader::new();
        let config = &self.broker.config;
        let idle = Duration::from_millis(config.network.idle_timeout_ms);
        let auth_deadline = self.session.requires_authentication().then(|| {
            tokio::time::Instant::now()
                + Duration::from_millis(config.sasl.authentication_timeout_ms)
        });
        loop {
            let authenticating = auth_deadline.filter(|_| !self.session.is_authenticated());
            let (max, wait_until) = match authenticating {
                Some(deadline) => (
                    config.sasl.server_max_receive_size,
                    deadline.min(tokio::time::Instant::now() + idle),
                ),
                None => (
                    config.network.max_request_bytes,
                    tokio::time::Instant::now() + idle,
                ),
            };
            let read = tokio::select! {
                () = shutdown.cancelled() => return "broker shutting down",
                r = tokio::time::timeout_at(wait_until, frames.next(&mut rd, max)) => r,
            };
            let frame = match read {
                Err(_) if authenticating.is_some_and(|d| tokio::time::Instant::now() >= d) => {
                    return "not authenticated in time"
                }
                Err(_) => return "idle timeout",
                Ok(Err(FrameError::Closed)) => return "closed by client",
                Ok(Err(e)) => {
                    tracing::info!(error = %e, "refusing malformed request frame");
                    return "malformed frame";
                }
                Ok(Ok(frame)) => frame,
            };
            let started = Instant::now();
            self.broker.metrics.bytes_in.inc_by(frame.len() as u64 + 4);
            // Refused before its body is decoded (the frame is at least 8 bytes).
            if let Some(prefix) = HeaderPrefix::parse(&frame) {
                let key = ApiKey::try_from(prefix.api_key).ok();
                if let Gate::Close(reason) = self.session.gate(key, Instant::now()) {
                    tracing::debug!(api_key = prefix.api_key, reason, "closing connection");
                    return reason;
                }
            }
            let (header, request) = match dispatch::decode_request(frame) {
                Ok(Decoded::Request { header, request }) => (header, request),
                Ok(Decoded::UnsupportedApiVersions { correlation_id }) => {
                    let pending = Pending {
                        handled: api_versions::unsupported_version().into(),
                        version: 0,
                        correlation_id,
                        api: api_name(ApiKey::ApiVersions),
                        started,
                        reserved: None,
                    };
                    if self.tx.send(Box::new(pending)).await.is_err() {
                        return "writer closed";
                    }
                    continue;
                }
                Err(e) => {
                    tracing::info!(error = %e, "closing connection: request cannot be served");
                    return "undecodable request";
                }
            };
            let reserved = match self.reserve(&request, shutdown).await {
                Ok(r) => r,
                Err(reason) => return reason,
            };
            let api = request.api();
            let internal = self.listener == crate::server::INTERNAL_LISTENER;
            if matches!(api, crate::dispatch::Api::Cluster) != internal
                && !(internal && allowed_between_nodes(api))
            {
                tracing::info!(
                    api = api.name(),
                    "closing connection: API not served on this listener"
                );
                return "API not served on this listener";
            }
            let ctx = RequestContext {
                broker: Arc::clone(self.broker),
                api_version: header.request_api_version,
                correlation_id: header.correlation_id,
                client_id: header.client_id.as_ref().map(ToString::to_string),
                listener: self.listener.to_owned(),
                api: api.name(),
                principal: self.session.principal().to_owned(),
                client_host: self.peer.ip(),
            };
            let span = tracing::debug_span!(
                "request",
                api = ctx.api,
                correlation_id = ctx.correlation_id,
                client_id = ctx.client_id.as_deref().unwrap_or(""),
                principal = %ctx.principal,
            );
            // SASL listeners answer the SASL APIs from the connection's
            // session. Handlers' futures are boxed: only the request being
            // handled pays for its state, not every idle connection.
            let (handled, close) = match request {
                Request::SaslHandshake(r) if self.session.intercepts(ApiKey::SaslHandshake) => {
                    span.in_scope(|| self.session.handshake(&ctx, r))
                }
                Request::SaslAuthenticate(r)
                    if self.session.intercepts(ApiKey::SaslAuthenticate) =>
                {
                    let peer = self.peer.ip();
                    let outcome = Box::pin(self.session.authenticate(&ctx, r, peer))
                        .instrument(span)
                        .await;
                    if self.session.is_authenticated() {
                        self.gauge.set_class(PrincipalClass::Sasl);
                    }
                    outcome
                }
                request => (
                    Box::pin(dispatch::dispatch(&ctx, request))
                        .instrument(span)
                        .await,
                    false,
                ),
            };
            let pending = Pending {
                handled,
                version: ctx.api_version,
                correlation_id: ctx.correlation_id,
                api: ctx.api,
                started,
                reserved,
            };
            if self.tx.send(Box::new(pending)).await.is_err() {
                return "writer closed";
            }
            if close {
                // The writer sends the answer, then the connection closes.
                return "SASL exchange failed";
            }
        }
    }

    /// Waits until the connection's budget has room for the response to
    /// `request` (only Fetch responses are large enough to count).
    async fn reserve(
        &self,
        request: &Request,
        shutdown: &CancellationToken,
    ) -> Result<Option<OwnedSemaphorePermit>, &'static str> {
        let Request::Fetch(fetch) = request else {
            return Ok(None);
        };
        let bytes = FetchLimits::of(fetch, &self.broker.config.network).response;
        if bytes == 0 {
            return Ok(None);
        }
        // The budget is at least the largest limit (config validation).
        let permits = u32::try_from(bytes).unwrap_or(u32::MAX);
        let acquire = Arc::clone(&self.budget).acquire_many_owned(permits);
        tokio::select! {
            () = shutdown.cancelled() => Err("broker shutting down"),
            permit = acquire => permit.map(Some).map_err(|_| "writer closed"),
        }
    }
}

/// Kafka APIs the inter-node listener serves besides Veil's own calls:
/// what a follower replicating from a leader needs, and transaction
/// markers from the coordinator.
fn allowed_between_nodes(api: crate::dispatch::Api) -> bool {
    matches!(
        api,
        crate::dispatch::Api::Kafka(
            ApiKey::ApiVersions
                | ApiKey::Fetch
                | ApiKey::OffsetForLeaderEpoch
                | ApiKey::Metadata
                | ApiKey::WriteTxnMarkers
        )
    )
}
