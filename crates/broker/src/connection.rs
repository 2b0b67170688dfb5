//! One client connection: read frames, decode, dispatch in order, and write
//! responses in request order.
//!
//! Requests are handled one after another in the order they arrive (so
//! appends from one producer keep their order), but a handler may return a
//! deferred response (an fsync wait, a long poll). The next request is read
//! and handled meanwhile; the writer awaits responses strictly in order.
//! At most `max_in_flight_per_connection` responses are outstanding.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kafka_protocol::messages::ApiKey;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufReader, BufWriter};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::auth::sasl::{Gate, Session};
use crate::context::RequestContext;
use crate::dispatch::{self, api_name, Decoded, Handled, Request, Response};
use crate::frame::{read_frame, FrameError};
use crate::handlers::api_versions;
use crate::state::BrokerState;

/// A response on its way to the writer.
struct Pending {
    handled: Handled,
    version: i16,
    correlation_id: i32,
    api: &'static str,
    started: Instant,
}

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
    let (tx, rx) = mpsc::channel::<Pending>(in_flight);
    let writer = tokio::spawn(write_responses(wr, rx, Arc::clone(&broker)));
    let session = Session::new(&broker, &listener, tls_principal);
    let reason = read_requests(rd, tx, &broker, &listener, peer, session, &shutdown).await;
    tracing::debug!(%peer, reason, "closing connection");
    // The reader dropped its sender: the writer drains what is in flight.
    let _ = writer.await;
}

async fn read_requests<R: AsyncRead + Unpin>(
    rd: R,
    tx: mpsc::Sender<Pending>,
    broker: &Arc<BrokerState>,
    listener: &str,
    peer: SocketAddr,
    mut session: Session,
    shutdown: &CancellationToken,
) -> &'static str {
    let mut reader = BufReader::with_capacity(64 * 1024, rd);
    let net = &broker.config.network;
    let idle = Duration::from_millis(net.idle_timeout_ms);
    loop {
        let read = tokio::select! {
            () = shutdown.cancelled() => return "broker shutting down",
            r = tokio::time::timeout(idle, read_frame(&mut reader, net.max_request_bytes)) => r,
        };
        let frame = match read {
            Err(_) => return "idle timeout",
            Ok(Err(FrameError::Closed)) => return "closed by client",
            Ok(Err(e)) => {
                tracing::info!(error = %e, "refusing malformed request frame");
                return "malformed frame";
            }
            Ok(Ok(frame)) => frame,
        };
        let started = Instant::now();
        broker.metrics.bytes_in.inc_by(frame.len() as u64 + 4);
        let (header, request) = match dispatch::decode_request(frame) {
            Ok(Decoded::Request { header, request }) => (header, request),
            Ok(Decoded::UnsupportedApiVersions { correlation_id }) => {
                let pending = Pending {
                    handled: api_versions::unsupported_version().into(),
                    version: 0,
                    correlation_id,
                    api: api_name(ApiKey::ApiVersions),
                    started,
                };
                if tx.send(pending).await.is_err() {
                    return "writer closed";
                }
                continue;
            }
            Err(e) => {
                tracing::info!(error = %e, "closing connection: request cannot be served");
                return "undecodable request";
            }
        };
        let api = request.api();
        if let Gate::Close(reason) = session.gate(api.kafka(), Instant::now()) {
            tracing::debug!(api = api.name(), reason, "closing connection");
            return reason;
        }
        let ctx = RequestContext {
            broker: Arc::clone(broker),
            api_version: header.request_api_version,
            correlation_id: header.correlation_id,
            client_id: header.client_id.as_ref().map(ToString::to_string),
            listener: listener.to_owned(),
            api: api.name(),
            principal: session.principal().to_owned(),
            client_host: peer.ip(),
        };
        let span = tracing::debug_span!(
            "request",
            api = ctx.api,
            correlation_id = ctx.correlation_id,
            client_id = ctx.client_id.as_deref().unwrap_or(""),
            principal = %ctx.principal,
        );
        // SASL listeners answer the SASL APIs from the connection's session.
        let (handled, close) = match request {
            Request::SaslHandshake(r) if session.intercepts(ApiKey::SaslHandshake) => {
                span.in_scope(|| session.handshake(&ctx, r))
            }
            Request::SaslAuthenticate(r) if session.intercepts(ApiKey::SaslAuthenticate) => {
                // Boxed: only a connection mid-login pays for this state.
                Box::pin(session.authenticate(&ctx, r, peer.ip()))
                    .instrument(span)
                    .await
            }
            request => (
                dispatch::dispatch(&ctx, request).instrument(span).await,
                false,
            ),
        };
        let pending = Pending {
            handled,
            version: ctx.api_version,
            correlation_id: ctx.correlation_id,
            api: ctx.api,
            started,
        };
        if tx.send(pending).await.is_err() {
            return "writer closed";
        }
        if close {
            // The writer sends the answer, then the connection closes.
            return "SASL exchange failed";
        }
    }
}

async fn write_responses<W: AsyncWrite + Unpin>(
    wr: W,
    mut rx: mpsc::Receiver<Pending>,
    broker: Arc<BrokerState>,
) {
    let mut writer = BufWriter::with_capacity(64 * 1024, wr);
    let metrics = &broker.metrics;
    while let Some(p) = rx.recv().await {
        let response: Option<Response> = match p.handled {
            Handled::Ready(r) => Some(r),
            Handled::Deferred(f) => Some(f.await),
            Handled::NoResponse => None,
        };
        metrics.requests.with_label_values(&[p.api]).inc();
        metrics
            .request_seconds
            .with_label_values(&[p.api])
            .observe(p.started.elapsed().as_secs_f64());
        let Some(response) = response else { continue };
        let frame = match response.encode_frame(p.version, p.correlation_id) {
            Ok(f) => f,
            Err(e) => {
                tracing::error!(api = p.api, error = %e, "could not encode a response; closing");
                return;
            }
        };
        metrics.bytes_out.inc_by(frame.len() as u64);
        if writer.write_all(&frame).await.is_err() {
            return;
        }
        if rx.is_empty() && writer.flush().await.is_err() {
            return;
        }
    }
    let _ = writer.flush().await;
    let _ = writer.shutdown().await;
}
