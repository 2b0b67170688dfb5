//! The admin HTTP endpoint: `/metrics` (Prometheus text), `/healthz`
//! (ready to serve: registered, unfenced, caught up with metadata) and
//! `/livez` (the process answers).

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{
    body::Incoming, server::conn::http1, service::service_fn, Request, Response, StatusCode,
};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::state::BrokerState;

pub async fn serve(listener: TcpListener, state: Arc<BrokerState>, shutdown: CancellationToken) {
    loop {
        let (stream, _) = tokio::select! {
            () = shutdown.cancelled() => return,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(_) => continue,
            },
        };
        let state = Arc::clone(&state);
        tokio::spawn(async move {
            let service = service_fn(move |req| respond(Arc::clone(&state), req));
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// Free and total space of the file system holding the data directory.
fn update_disk_gauges(state: &BrokerState) {
    let Ok(fs) = rustix::fs::statvfs(&state.config.data_dir) else {
        return;
    };
    let bytes = |blocks: u64| i64::try_from(blocks.saturating_mul(fs.f_frsize)).unwrap_or(i64::MAX);
    let m = &state.metrics;
    m.data_dir_available_bytes.set(bytes(fs.f_bavail));
    m.data_dir_capacity_bytes.set(bytes(fs.f_blocks));
}

async fn respond(
    state: Arc<BrokerState>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (status, content_type, body) = match (req.method().as_str(), req.uri().path()) {
        ("GET", "/metrics") => {
            let st = Arc::clone(&state);
            let body = tokio::task::spawn_blocking(move || {
                st.topics.update_gauges();
                crate::cluster::update_gauges(&st);
                crate::group::metrics::update_lag(&st);
                update_disk_gauges(&st);
                st.metrics.render()
            })
            .await
            .unwrap_or_default();
            (StatusCode::OK, "text/plain; version=0.0.4", body)
        }
        // Ready: registered, unfenced, metadata applied and published.
        ("GET", "/healthz") => match state.readiness() {
            Ok(()) => (StatusCode::OK, "text/plain", "ok\n".to_owned()),
            Err(why) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                format!("not ready: {why}\n"),
            ),
        },
        // Alive: the process answers.
        ("GET", "/livez") => (StatusCode::OK, "text/plain", "ok\n".to_owned()),
        ("GET", _) => (
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found\n".to_owned(),
        ),
        _ => (
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "method not allowed\n".to_owned(),
        ),
    };
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    if let Ok(v) = hyper::header::HeaderValue::from_str(content_type) {
        resp.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    Ok(resp)
}
