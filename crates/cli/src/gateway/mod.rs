//! `veil gateway`: the MQTT front end run by the data owner next to the
//! devices. Devices speak MQTT 3.1.1 or 5.0 to it exactly as to the
//! broker's own MQTT listeners (same codec, mapping rules, listener and
//! limit settings); the gateway writes every message as a sealed record to
//! a blind topic of a remote Veil broker with the owner's user key, and
//! serves subscriptions by reading those topics back and opening them. The
//! remote broker sees physical `vb1-…` names, key tags and envelopes only.
//!
//! Start at [`run`]: it loads the `[mqtt]` config and the device users,
//! binds the listeners and serves each connection in [`connection`].
//! [`remote`] is the sealed client side (produce with acks=all, one reader
//! per Kafka topic fanned out to clean sessions, readers of their own for
//! persistent ones); [`devices`] checks device logins. Persistent sessions
//! and retained messages are kept in `data_dir` in the broker's formats.

mod connection;
mod devices;
mod remote;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use serde::Deserialize;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use veil_broker::auth::tls::ListenerTls;
use veil_broker::mqtt::front_end;
use veil_broker::mqtt::mapping::Mappings;
use veil_broker::mqtt::retained::RetainedStore;
use veil_broker::mqtt::session::SessionStore;
use veil_broker::mqtt::{MqttConfig, MqttListenerConfig};
use veil_client::{load_user_key, BlindClient};

use crate::secure::ConnectArgs;

#[derive(clap::Args)]
pub struct Args {
    /// How to reach the remote broker (the same flags as `veil produce`).
    #[command(flatten)]
    connect: ConnectArgs,
    /// Your user key file from `veil kms add-user`: every record is sealed
    /// with it and topic names are blinded with it.
    #[arg(long = "key-file", env = "VEIL_KEY_FILE")]
    user_key: PathBuf,
    /// Gateway configuration (TOML): `[mqtt]` listeners, mappings and limits
    /// as in the broker's config, plus `users_file` for device logins.
    #[arg(long, short = 'c', env = "VEIL_GATEWAY_CONFIG")]
    config: PathBuf,
    /// Print each bound address as `LISTENING mqtt:<name> <addr>` on stdout.
    #[arg(long)]
    print_addresses: bool,
}

/// The gateway's configuration file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    /// Device user names and passwords, in the broker's PLAIN users-file
    /// format (`veil user hash-plain`).
    #[serde(default)]
    users_file: Option<PathBuf>,
    /// Where retained messages and persistent sessions are kept (in clear:
    /// this is the owner's side).
    #[serde(default = "default_data_dir")]
    data_dir: PathBuf,
    /// Partitions of a blind topic the gateway creates on first use.
    #[serde(default = "default_partitions")]
    partitions: i32,
    /// Persistent sessions connected at once (each reads with Kafka
    /// consumers of its own); more are refused (MQTT 5: 0x88).
    #[serde(default = "default_max_persistent_sessions")]
    max_persistent_sessions: usize,
    /// Device connections served at once; more are refused.
    #[serde(default = "default_max_connections")]
    max_connections: usize,
    /// Messages read back from the remote broker and not yet taken by
    /// every subscriber, at most; a subscriber further behind is
    /// disconnected (MQTT 5: reason 0x83) rather than buffered for.
    #[serde(default = "default_backlog")]
    backlog: usize,
    /// Allow plain MQTT (no TLS) on a non-loopback address.
    #[serde(default)]
    allow_plaintext_on_network: bool,
    /// Listeners, mapping rules and limits; `enabled` is implied.
    mqtt: MqttConfig,
}

fn default_data_dir() -> PathBuf {
    PathBuf::from("veil-gateway-data")
}

fn default_partitions() -> i32 {
    1
}

fn default_backlog() -> usize {
    1_024
}

fn default_max_persistent_sessions() -> usize {
    100
}

fn default_max_connections() -> usize {
    1_000
}

impl GatewayConfig {
    pub fn parse(text: &str) -> Result<GatewayConfig, String> {
        let mut c: GatewayConfig = toml::from_str(text).map_err(|e| e.to_string())?;
        c.mqtt.enabled = true;
        c.validate()?;
        Ok(c)
    }

    fn validate(&self) -> Result<(), String> {
        self.mqtt.validate(self.allow_plaintext_on_network)?;
        if !(1..=10_000).contains(&self.partitions) {
            return Err("partitions must be between 1 and 10000".into());
        }
        if !(1..=1_000_000).contains(&self.backlog) {
            return Err("backlog must be between 1 and 1000000".into());
        }
        if self.max_persistent_sessions > 100_000 {
            return Err("max_persistent_sessions must be at most 100000".into());
        }
        if self.max_connections == 0 {
            return Err("max_connections must be at least 1".into());
        }
        for l in &self.mqtt.listeners {
            // Every device may write to the owner's topics: anonymous
            // access is for local testing only.
            if l.allow_anonymous && !l.bind.ip().is_loopback() {
                return Err(format!(
                    "mqtt listener '{}': allow_anonymous needs a loopback bind address",
                    l.name
                ));
            }
            let certs = l
                .tls
                .as_ref()
                .is_some_and(|t| t.client_auth != veil_broker::config::ClientAuth::None);
            if self.users_file.is_none() && !certs && !l.allow_anonymous {
                return Err(format!(
                    "mqtt listener '{}': no device can log in (set users_file, client certificates or allow_anonymous)",
                    l.name
                ));
            }
        }
        Ok(())
    }
}

/// What every device connection of the gateway shares.
pub(crate) struct Gateway {
    pub(crate) config: MqttConfig,
    pub(crate) mappings: Mappings,
    pub(crate) users: Option<devices::Users>,
    pub(crate) retained: RetainedStore,
    pub(crate) remote: Arc<remote::Remote>,
    /// Persistent sessions (the broker's format) and which connection holds
    /// each client id: a second connection with the same id takes over.
    pub(crate) sessions: Arc<SessionStore>,
    /// Persistent sessions connected at once, at most.
    pub(crate) persistent_slots: Arc<Semaphore>,
    connection_ids: AtomicU64,
}

impl Gateway {
    fn next_connection_id(&self) -> u64 {
        self.connection_ids.fetch_add(1, Ordering::Relaxed)
    }
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&args.config)
        .with_context(|| format!("cannot read config file {}", args.config.display()))?;
    let config = GatewayConfig::parse(&text).map_err(|e| {
        anyhow::anyhow!(
            "invalid gateway configuration {}: {e}",
            args.config.display()
        )
    })?;
    let users = match &config.users_file {
        Some(path) => Some(devices::Users::load(path).map_err(|e| anyhow::anyhow!(e))?),
        None => None,
    };
    let mappings = config.mqtt.mappings().map_err(|e| anyhow::anyhow!(e))?;
    let client = Arc::new(BlindClient::for_user(
        load_user_key(&args.user_key)?,
        args.connect.sasl_user(),
        &args.user_key,
        args.connect.connector("veil-gateway"),
    )?);
    let remote = remote::Remote::new(
        client,
        args.connect.rdkafka_props(),
        config.partitions,
        mappings.clone(),
        config.backlog,
    )?;
    // Every mapped topic now rather than at the first publish: a key or
    // login the remote broker refuses stops the gateway with the reason.
    let mut topics: Vec<&str> = mappings.rules().iter().map(|r| r.topic.as_str()).collect();
    topics.sort_unstable();
    topics.dedup();
    for t in topics {
        match remote.prepare(t).await {
            Ok(()) => {}
            Err(e) if remote::is_final(&e) => {
                return Err(anyhow::Error::new(e).context("the remote broker refused the gateway"));
            }
            Err(e) => {
                tracing::warn!(%t, error = %e, "the remote broker cannot be reached yet; publishes to this topic are refused until it can");
            }
        }
    }
    let retained = RetainedStore::open(&config.data_dir, config.mqtt.max_retained);
    let sessions = Arc::new(SessionStore::open(&config.data_dir).with_context(|| {
        format!(
            "cannot use the data directory {}",
            config.data_dir.display()
        )
    })?);
    let gateway = Arc::new(Gateway {
        config: config.mqtt.clone(),
        mappings,
        users,
        retained,
        remote: Arc::new(remote),
        sessions,
        persistent_slots: Arc::new(Semaphore::new(config.max_persistent_sessions)),
        connection_ids: AtomicU64::new(0),
    });
    let shutdown = CancellationToken::new();
    let connections = TaskTracker::new();
    let limit = Arc::new(Semaphore::new(config.max_connections));
    let mut certs = Vec::new();
    let mut tasks = Vec::new();
    for l in &config.mqtt.listeners {
        let tls = l
            .tls
            .as_ref()
            .map(ListenerTls::new)
            .transpose()
            .map_err(|e| anyhow::anyhow!("mqtt listener '{}': {e}", l.name))?;
        if let Some(t) = &tls {
            certs.push(Arc::clone(&t.cert));
        }
        let listener = TcpListener::bind(l.bind)
            .await
            .with_context(|| format!("mqtt listener '{}' cannot bind {}", l.name, l.bind))?;
        let addr = listener.local_addr()?;
        tracing::info!(listener = %l.name, %addr, tls = tls.is_some(), "gateway listening for MQTT clients");
        if args.print_addresses {
            println!("LISTENING mqtt:{} {addr}", l.name);
        }
        tasks.push(tokio::spawn(accept_loop(
            listener,
            l.clone(),
            tls,
            Arc::clone(&gateway),
            Arc::clone(&limit),
            shutdown.clone(),
            connections.clone(),
        )));
    }
    if !certs.is_empty() {
        tokio::spawn(veil_broker::auth::tls::watch(certs, shutdown.clone()));
    }
    tokio::spawn(save_retained(Arc::clone(&gateway), shutdown.clone()));
    wait_for_signal().await?;
    tracing::info!("gateway shutting down");
    shutdown.cancel();
    for t in tasks {
        let _ = t.await;
    }
    connections.close();
    let _ = tokio::time::timeout(Duration::from_secs(10), connections.wait()).await;
    gateway
        .remote
        .flush(Duration::from_secs(10))
        .context("records still queued for the remote broker at shutdown")?;
    let _ = gateway.retained.save_if_dirty();
    Ok(())
}

async fn accept_loop(
    listener: TcpListener,
    config: MqttListenerConfig,
    tls: Option<ListenerTls>,
    gateway: Arc<Gateway>,
    limit: Arc<Semaphore>,
    shutdown: CancellationToken,
    connections: TaskTracker,
) {
    while let Some((stream, peer)) = front_end::next_connection(&listener, &shutdown).await {
        let Ok(permit) = Arc::clone(&limit).try_acquire_owned() else {
            tracing::warn!(%peer, "connection limit reached; refusing an MQTT client");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let gateway = Arc::clone(&gateway);
        let tls = tls.clone();
        let anonymous = config.allow_anonymous;
        let name = config.name.clone();
        let shutdown = shutdown.clone();
        connections.spawn(async move {
            let _permit = permit;
            let span = tracing::debug_span!("mqtt", %peer, listener = %name);
            let Some(tls) = tls else {
                let serve = connection::serve(stream, peer, gateway, None, anonymous, shutdown);
                tracing::Instrument::instrument(serve, span).await;
                return;
            };
            serve_tls(stream, peer, &tls, gateway, anonymous, shutdown, span).await;
        });
    }
}

async fn serve_tls(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    tls: &ListenerTls,
    gateway: Arc<Gateway>,
    anonymous: bool,
    shutdown: CancellationToken,
    span: tracing::Span,
) {
    let Ok((stream, principal)) = front_end::accept_tls(stream, tls, &span).await else {
        return;
    };
    let serve = connection::serve(stream, peer, gateway, principal, anonymous, shutdown);
    tracing::Instrument::instrument(serve, span).await;
}

/// Writes the retained messages after changes.
async fn save_retained(gateway: Arc<Gateway>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(veil_broker::mqtt::retained::SAVE_INTERVAL);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let g = Arc::clone(&gateway);
        if let Ok(Err(e)) = tokio::task::spawn_blocking(move || g.retained.save_if_dirty()).await {
            tracing::warn!(error = %e, "could not save retained MQTT messages");
        }
    }
}

async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::GatewayConfig;

    const BASE: &str = r#"
users_file = "devices.toml"
[mqtt]
[[mqtt.listeners]]
name = "MQTT"
bind = "127.0.0.1:0"
[[mqtt.mappings]]
filter = "sensors/#"
topic = "telemetry"
"#;

    #[test]
    fn parses_the_broker_mqtt_section() {
        let c = GatewayConfig::parse(BASE).unwrap();
        assert!(c.mqtt.enabled);
        assert_eq!(c.partitions, 1);
        assert_eq!(c.mqtt.mappings.len(), 1);
    }

    #[test]
    fn refuses_what_cannot_work() {
        let anon_on_network = BASE
            .replace("127.0.0.1:0", "0.0.0.0:0")
            .replace("bind =", "allow_anonymous = true\nbind =");
        let e = GatewayConfig::parse(&format!(
            "allow_plaintext_on_network = true\n{anon_on_network}"
        ))
        .unwrap_err();
        assert!(e.contains("loopback"), "{e}");
        let no_login = BASE.replace("users_file = \"devices.toml\"", "");
        assert!(GatewayConfig::parse(&no_login)
            .unwrap_err()
            .contains("log in"));
        let unknown = format!("colour = \"red\"\n{BASE}");
        assert!(GatewayConfig::parse(&unknown).is_err());
        let no_rules = BASE.replace(
            "[[mqtt.mappings]]\nfilter = \"sensors/#\"\ntopic = \"telemetry\"\n",
            "",
        );
        assert!(GatewayConfig::parse(&no_rules).is_err());
    }
}
