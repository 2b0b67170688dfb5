//! Test-only setup shared by handler tests: a broker state on a temp dir
//! and a request context for it.

use std::sync::Arc;

use bytes::BytesMut;
use kafka_protocol::protocol::Encodable;
use veil_meta::TopicConfigs;

use crate::clock::ManualClock;
use crate::config::Config;
use crate::context::RequestContext;
use crate::metrics::Metrics;
use crate::state::{Advertised, BrokerState};

pub(crate) async fn context(api_version: i16) -> (tempfile::TempDir, RequestContext) {
    context_with(api_version, |_| {}).await
}

/// A context whose group coordinator rebalances without the initial delay.
pub(crate) async fn groups_context(api_version: i16) -> (tempfile::TempDir, RequestContext) {
    context_with(api_version, |c| c.groups.initial_rebalance_delay_ms = 0).await
}

/// A broker state on `config` (a single node), started, registered and
/// ready to serve, with the advertised PLAINTEXT listener of [`context`].
pub(crate) async fn state(config: Config, clock: Arc<dyn crate::clock::Clock>) -> Arc<BrokerState> {
    let state = BrokerState::open(config, clock, Metrics::new())
        .await
        .unwrap();
    state.advertised.write().push(Advertised {
        listener: "PLAINTEXT".into(),
        host: "localhost".into(),
        port: 9092,
    });
    state.start_background(&tokio_util::sync::CancellationToken::new());
    assert!(
        state.wait_ready(std::time::Duration::from_secs(30)).await,
        "the single-node quorum did not become ready"
    );
    state
}

pub(crate) async fn context_with(
    api_version: i16,
    tweak: impl FnOnce(&mut Config),
) -> (tempfile::TempDir, RequestContext) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config {
        data_dir: dir.path().to_path_buf(),
        ..Config::default()
    };
    // Few partitions of __consumer_offsets keep group tests quick.
    config.groups.offsets_topic_partitions = 3;
    tweak(&mut config);
    let clock = Arc::new(ManualClock::new(1_700_000_000_000));
    let state = state(config, clock).await;
    let ctx = RequestContext {
        broker: state,
        api_version,
        correlation_id: 1,
        client_id: None,
        listener: "PLAINTEXT".into(),
        api: "test",
        principal: crate::context::ANONYMOUS.to_owned(),
        client_host: std::net::Ipv4Addr::LOCALHOST.into(),
    };
    (dir, ctx)
}

pub(crate) async fn create_topic(ctx: &RequestContext, name: &str, partitions: i32) {
    let cmd = ctx
        .broker
        .create_topic_command(name, partitions, 1, TopicConfigs::new())
        .unwrap();
    ctx.broker.commit(cmd).await.unwrap();
}

/// Panics unless `response` encodes in every version of `versions`.
pub(crate) fn encodes<R: Encodable>(response: &R, versions: std::ops::RangeInclusive<i16>) {
    for v in versions {
        let mut buf = BytesMut::new();
        response
            .encode(&mut buf, v)
            .unwrap_or_else(|e| panic!("v{v}: {e}"));
    }
}
