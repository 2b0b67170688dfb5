//! `[network]`: connection limits, request and response sizes, timeouts
//! (Kafka's socket-server and fetch settings).

use std::collections::HashMap;
use std::net::IpAddr;

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NetworkConfig {
    pub max_connections: usize,
    /// Kafka's `max.connections.per.ip`: connections from one address beyond
    /// this are refused at accept.
    pub max_connections_per_ip: usize,
    /// Kafka's `max.connections.per.ip.overrides`: `ip:count,ip:count`.
    pub max_connections_per_ip_overrides: String,
    /// Largest request frame accepted (Kafka's `socket.request.max.bytes`).
    pub max_request_bytes: usize,
    /// Close connections idle this long (Kafka's `connections.max.idle.ms`).
    pub idle_timeout_ms: u64,
    /// Requests read ahead of their responses on one connection.
    pub max_in_flight_per_connection: usize,
    /// Record bytes one connection's responses may hold while they wait to
    /// be written; a Fetch waits for room before it reads the log.
    pub max_queued_response_bytes_per_connection: usize,
    /// Kafka's `fetch.max.bytes`: record bytes in one consumer Fetch
    /// response, whatever the request asks for (the first batch excepted).
    pub fetch_max_bytes: usize,
    /// Kafka's `replica.fetch.max.bytes`: record bytes per partition in a
    /// follower's Fetch response.
    pub replica_fetch_max_bytes: usize,
    /// Kafka's `replica.fetch.response.max.bytes`: record bytes in a whole
    /// follower Fetch response.
    pub replica_fetch_response_max_bytes: usize,
    /// How long shutdown waits for in-flight requests.
    pub shutdown_timeout_ms: u64,
}

impl Default for NetworkConfig {
    fn default() -> Self {
        NetworkConfig {
            max_connections: 10_000,
            // Kafka's default: no per-address limit until one is set.
            max_connections_per_ip: i32::MAX as usize,
            max_connections_per_ip_overrides: String::new(),
            max_request_bytes: 100 * 1024 * 1024,
            idle_timeout_ms: 600_000,
            max_in_flight_per_connection: 32,
            max_queued_response_bytes_per_connection: 64 * 1024 * 1024,
            fetch_max_bytes: 55 * 1024 * 1024,
            replica_fetch_max_bytes: 1024 * 1024,
            replica_fetch_response_max_bytes: 10 * 1024 * 1024,
            shutdown_timeout_ms: 30_000,
        }
    }
}

impl NetworkConfig {
    pub(super) fn validate(&self) -> Result<(), String> {
        if self.max_connections == 0
            || self.max_connections_per_ip == 0
            || self.max_in_flight_per_connection == 0
        {
            return Err("network.max_connections, network.max_connections_per_ip and network.max_in_flight_per_connection must be at least 1".into());
        }
        if self.max_request_bytes < 1024 {
            return Err("network.max_request_bytes must be at least 1024".into());
        }
        let fetch = [
            self.fetch_max_bytes,
            self.replica_fetch_max_bytes,
            self.replica_fetch_response_max_bytes,
        ];
        if fetch.contains(&0) || fetch.iter().any(|&b| b > i32::MAX as usize) {
            return Err("network.fetch_max_bytes, network.replica_fetch_max_bytes and network.replica_fetch_response_max_bytes must be between 1 and 2147483647".into());
        }
        // A fetch reserves its whole limit before it reads the log.
        let budget = self.max_queued_response_bytes_per_connection;
        let largest = self
            .fetch_max_bytes
            .max(self.replica_fetch_response_max_bytes);
        if budget < largest || budget > u32::MAX as usize {
            return Err("network.max_queued_response_bytes_per_connection must be at least network.fetch_max_bytes and network.replica_fetch_response_max_bytes, and at most 4294967295".into());
        }
        self.per_ip_overrides().map(|_| ())
    }

    /// `max_connections_per_ip_overrides` parsed: Kafka's `ip:count,ip:count`
    /// (IPv6 as `[::1]:count`; addresses only, not host names).
    pub fn per_ip_overrides(&self) -> Result<HashMap<IpAddr, usize>, String> {
        veil_meta::broker_config::parse_ip_counts(&self.max_connections_per_ip_overrides).map_err(
            |entry| format!("network.max_connections_per_ip_overrides: '{entry}' is not ip:count"),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn with(key: &str, value: &str) -> Result<Config, String> {
        Config::from_toml_with_overrides("", &[(format!("network.{key}"), value.to_owned())])
    }

    #[test]
    fn per_ip_overrides_use_kafkas_format() {
        let c = with(
            "max_connections_per_ip_overrides",
            "127.0.0.2:5, [::1]:0,::ffff:10.0.0.1:7",
        )
        .unwrap();
        let o = c.network.per_ip_overrides().unwrap();
        assert_eq!(o[&IpAddr::from([127, 0, 0, 2])], 5);
        assert_eq!(o[&"::1".parse::<IpAddr>().unwrap()], 0);
        assert_eq!(o[&IpAddr::from([10, 0, 0, 1])], 7, "IPv4-mapped is IPv4");
        for bad in ["host.example:5", "127.0.0.1", "127.0.0.1:x"] {
            let err = with("max_connections_per_ip_overrides", bad).unwrap_err();
            assert!(
                err.contains("max_connections_per_ip_overrides"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn fetch_limits_fit_the_response_budget() {
        let c = Config::default();
        assert_eq!(
            c.network.fetch_max_bytes, 57_671_680,
            "Kafka's fetch.max.bytes"
        );
        let err = with("fetch_max_bytes", "100000000").unwrap_err();
        assert!(
            err.contains("max_queued_response_bytes_per_connection"),
            "{err}"
        );
        assert!(with("replica_fetch_max_bytes", "0").is_err());
        assert!(with("max_queued_response_bytes_per_connection", "4294967296").is_err());
    }
}
