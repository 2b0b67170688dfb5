//! Where log events go: standard error, as text for people or as one JSON
//! object per line for log collectors (`--log-format json`, `VEIL_LOG_FORMAT`,
//! or `log_format` in the broker's config).
//!
//! Events carry API names, principals, addresses and error text; passwords,
//! keys and record contents are never logged.

use tracing_subscriber::EnvFilter;
use veil_broker::config::LogFormat;

/// The default filter for the Raft library.
const QUIET_RAFT: &str = "openraft=error,openraft::replication=off";

/// Starts logging with `filter` (e.g. `info`, `veil_broker=debug`).
pub fn init(filter: &str, format: LogFormat) {
    // The Raft library narrates every vote and append at info and repeats
    // each failed call to an unreachable peer several times a second; Veil
    // reports peers it cannot reach itself (fencing), so by default only
    // the library's errors outside replication show, unless the filter asks.
    let spec = if filter.contains("openraft") {
        filter.to_owned()
    } else {
        format!("{filter},{QUIET_RAFT}")
    };
    let filter =
        EnvFilter::try_new(&spec).unwrap_or_else(|_| EnvFilter::new(format!("info,{QUIET_RAFT}")));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        // Colour codes only for a terminal, never into log files.
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        // The event's fields at the top level beside `timestamp`, `level`,
        // `target` and `message`; the enclosing spans (connection, request)
        // as `spans`.
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(true)
            .init(),
    }
}
