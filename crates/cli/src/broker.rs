//! `veil broker`: load the layered config, start, wait for a signal, stop.

use std::path::PathBuf;

use anyhow::Context;
use veil_broker::{config, Broker, Config};

#[derive(clap::Args)]
pub struct Args {
    /// TOML config file (see veil.example.toml). Without it, embedded defaults apply.
    #[arg(long, short = 'c', env = "VEIL_CONFIG")]
    config: Option<PathBuf>,
    /// Data directory (overrides `data_dir`).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Address of the first Kafka listener (overrides `listeners[0].bind`), e.g. 127.0.0.1:0.
    #[arg(long)]
    listen: Option<String>,
    /// Address of the admin endpoint (overrides `admin.bind`).
    #[arg(long)]
    admin_listen: Option<String>,
    /// Any config key, as `key=value` (dotted path), applied last; repeatable.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// Print each bound address as `LISTENING <name> <addr>` on stdout (for scripts and tests).
    #[arg(long)]
    print_addresses: bool,
    /// Check the layered configuration and exit without starting (files it
    /// names are read only when the broker starts).
    #[arg(long)]
    check_config: bool,
}

pub async fn run(args: Args, config: Config) -> anyhow::Result<()> {
    if args.check_config {
        println!("configuration is valid (node {})", config.node_id);
        return Ok(());
    }
    let broker = Broker::start(config)
        .await
        .context("broker failed to start")?;
    if args.print_addresses {
        for (l, addr) in broker
            .state()
            .config
            .listeners
            .iter()
            .zip(broker.kafka_addrs())
        {
            println!("LISTENING {} {addr}", l.name);
        }
        for (name, addr) in broker.mqtt_addrs() {
            println!("LISTENING mqtt:{name} {addr}");
        }
        if let Some(addr) = broker.admin_addr() {
            println!("LISTENING admin {addr}");
        }
    }
    wait_for_signal().await?;
    tracing::info!("shutting down: finishing in-flight requests");
    broker
        .shutdown()
        .await
        .context("shutdown did not complete cleanly")?;
    tracing::info!("stopped");
    Ok(())
}

/// The layered configuration: file, then `VEIL_*` environment, then flags.
pub fn load(args: &Args) -> anyhow::Result<Config> {
    let text = match &args.config {
        Some(path) => std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?,
        None => String::new(),
    };
    let mut overrides = config::env_overrides(std::env::vars());
    if let Some(d) = &args.data_dir {
        overrides.push(("data_dir".into(), d.display().to_string()));
    }
    if let Some(l) = &args.listen {
        overrides.push(("listeners.0.bind".into(), l.clone()));
    }
    if let Some(a) = &args.admin_listen {
        overrides.push(("admin.bind".into(), a.clone()));
    }
    for kv in &args.set {
        let (k, v) = kv
            .split_once('=')
            .with_context(|| format!("--set expects KEY=VALUE, got '{kv}'"))?;
        overrides.push((k.trim().to_owned(), v.trim().to_owned()));
    }
    let source = args.config.as_ref().map_or_else(
        || "the embedded defaults".to_owned(),
        |p| p.display().to_string(),
    );
    Config::from_toml_with_overrides(&text, &overrides)
        .map_err(|e| anyhow::anyhow!("invalid configuration ({source} + VEIL_* env + flags): {e}"))
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
