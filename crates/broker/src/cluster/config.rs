//! The `[cluster]` section: the voter set (Kafka's
//! `controller.quorum.voters`), this node's inter-node listener, its rack,
//! inter-node TLS and the quorum's timing.
//!
//! The section can be identical on every node: a node finds its own
//! inter-node address in the voter list by its `node_id`. Without the
//! section a broker is a cluster of one, with no inter-node listener.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

/// Mutual TLS between nodes: every node presents a certificate for
/// `CN=node-<id>` from the cluster CA and accepts only such certificates.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterTls {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    /// The CA every node certificate must chain to.
    pub ca_file: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// The metadata quorum's voters as `id@host:port`, each address that
    /// voter's inter-node listener. Empty: a single node.
    pub voters: Vec<String>,
    /// Where this node's inter-node listener binds (default: its own voter
    /// address; required for a broker that is not a voter).
    pub listen: Option<SocketAddr>,
    /// `host:port` other nodes dial (default: the voter address, else `listen`).
    pub advertised: Option<String>,
    /// Replicas of a partition go to different racks where possible.
    pub rack: Option<String>,
    /// Inter-node mTLS; without it the inter-node listener is plaintext,
    /// which like any plaintext listener must bind loopback unless
    /// `allow_plaintext_on_network` is set.
    pub tls: Option<ClusterTls>,
    /// Kafka's `broker.heartbeat.interval.ms` (Kafka: 2000; shorter here so
    /// a crashed broker is noticed sooner, see `session_timeout_ms`).
    pub heartbeat_interval_ms: u64,
    /// Kafka's `broker.session.timeout.ms`: a broker not heard from for
    /// this long is fenced and its partitions get new leaders. A broker
    /// silent for two heartbeat intervals whose inter-node listener refuses
    /// connections (its process is gone) is fenced at once.
    pub session_timeout_ms: u64,
    /// The quorum leader's heartbeat interval.
    pub raft_heartbeat_ms: u64,
    /// A voter that hears no leader for a random time in
    /// `[election_timeout_ms, 2 × election_timeout_ms)` starts an election
    /// (Kafka's `controller.quorum.election.timeout.ms`).
    pub election_timeout_ms: u64,
    /// How long a metadata change may wait for the quorum (forwarding, a
    /// leader election) before the request fails with a retriable error.
    pub request_timeout_ms: u64,
    /// Snapshot the metadata after this many changes.
    pub snapshot_every: u64,
    /// Kafka's `auto.leader.rebalance.enable`: the controller moves
    /// leaderships back to preferred replicas that are live and in sync
    /// (after a node returns), checking every
    /// `leader_imbalance_check_interval_ms` (Kafka's
    /// `leader.imbalance.check.interval.seconds`, 300 s there) and only for
    /// brokers whose share of preferred partitions led elsewhere exceeds
    /// `leader_imbalance_per_broker_percentage` (Kafka: 10).
    pub auto_leader_rebalance_enable: bool,
    pub leader_imbalance_check_interval_ms: u64,
    pub leader_imbalance_per_broker_percentage: u32,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            voters: Vec::new(),
            listen: None,
            advertised: None,
            rack: None,
            tls: None,
            heartbeat_interval_ms: 500,
            session_timeout_ms: 9000,
            raft_heartbeat_ms: 100,
            election_timeout_ms: 600,
            request_timeout_ms: 10_000,
            snapshot_every: 1000,
            auto_leader_rebalance_enable: true,
            leader_imbalance_check_interval_ms: 60_000,
            leader_imbalance_per_broker_percentage: 10,
        }
    }
}

/// One parsed `id@host:port` voter entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Voter {
    pub id: i32,
    pub host: String,
    pub port: u16,
}

impl Voter {
    pub fn address(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// Parses `id@host:port`.
pub fn parse_voter(entry: &str) -> Result<Voter, String> {
    let bad = || {
        format!("cluster.voters: '{entry}' is not of the form id@host:port (e.g. 1@10.0.0.1:9093)")
    };
    let (id, addr) = entry.split_once('@').ok_or_else(bad)?;
    let id: i32 = id.trim().parse().map_err(|_| bad())?;
    if id < 0 {
        return Err(format!(
            "cluster.voters: node id {id} in '{entry}' is negative"
        ));
    }
    let (host, port) = addr.rsplit_once(':').ok_or_else(bad)?;
    let port: u16 = port.parse().map_err(|_| bad())?;
    let host = host.trim_matches(['[', ']']);
    if host.is_empty() || port == 0 {
        return Err(bad());
    }
    Ok(Voter {
        id,
        host: host.to_owned(),
        port,
    })
}

impl ClusterConfig {
    /// Whether this is a multi-node setup (a `[cluster]` with voters).
    pub fn is_clustered(&self) -> bool {
        !self.voters.is_empty()
    }

    /// The parsed voters by node id.
    pub fn voter_map(&self) -> Result<BTreeMap<i32, Voter>, String> {
        let mut map = BTreeMap::new();
        for v in &self.voters {
            let voter = parse_voter(v)?;
            if map.insert(voter.id, voter).is_some() {
                return Err(format!("cluster.voters: node id in '{v}' appears twice"));
            }
        }
        Ok(map)
    }

    /// Where this node's inter-node listener binds, if it has one.
    pub fn listen_addr(&self, node_id: i32) -> Result<Option<SocketAddr>, String> {
        if !self.is_clustered() {
            return Ok(None);
        }
        if let Some(l) = self.listen {
            return Ok(Some(l));
        }
        match self.voter_map()?.get(&node_id) {
            Some(v) => v.address().parse().map(Some).map_err(|_| {
                format!(
                    "cluster.listen is needed: voter address '{}' of node {node_id} is a host name, not an IP address to bind",
                    v.address()
                )
            }),
            None => Err(format!(
                "node {node_id} is not a voter: set cluster.listen to the address its inter-node listener binds"
            )),
        }
    }

    /// The address other nodes dial to reach this node.
    pub fn advertised_addr(&self, node_id: i32, bound: SocketAddr) -> String {
        if let Some(a) = &self.advertised {
            return a.clone();
        }
        if self.listen.is_none() {
            if let Ok(Some(v)) = self.voter_map().map(|m| m.get(&node_id).cloned()) {
                return v.address();
            }
        }
        bound.to_string()
    }

    pub fn validate(&self, node_id: i32, allow_plaintext_on_network: bool) -> Result<(), String> {
        if !self.is_clustered() {
            if self.listen.is_some() || self.tls.is_some() {
                return Err(
                    "cluster.listen and cluster.tls need cluster.voters (the quorum's voter set)"
                        .into(),
                );
            }
            return Ok(());
        }
        if node_id < 0 {
            return Err("node_id must not be negative in a cluster".into());
        }
        let voters = self.voter_map()?;
        let listen = self.listen_addr(node_id)?;
        if let Some(addr) = listen {
            if self.tls.is_none() && !addr.ip().is_loopback() && !allow_plaintext_on_network {
                return Err(format!(
                    "the inter-node listener binds {addr} without TLS, which would carry metadata and \
                     records in clear; set [cluster.tls] or bind a loopback address, or set \
                     allow_plaintext_on_network = true"
                ));
            }
        }
        if voters.len() % 2 == 0 {
            tracing::warn!(
                voters = voters.len(),
                "an even number of voters tolerates no more failures than one voter fewer"
            );
        }
        if self.heartbeat_interval_ms == 0 || self.session_timeout_ms <= self.heartbeat_interval_ms
        {
            return Err(
                "cluster.session_timeout_ms must be larger than cluster.heartbeat_interval_ms (> 0)"
                    .into(),
            );
        }
        if self.raft_heartbeat_ms == 0 || self.election_timeout_ms < 3 * self.raft_heartbeat_ms {
            return Err(
                "cluster.election_timeout_ms must be at least three times cluster.raft_heartbeat_ms (> 0)"
                    .into(),
            );
        }
        if self.leader_imbalance_check_interval_ms < 1000
            || self.leader_imbalance_per_broker_percentage > 100
        {
            return Err(
                "cluster.leader_imbalance_check_interval_ms must be at least 1000 and cluster.leader_imbalance_per_broker_percentage at most 100"
                    .into(),
            );
        }
        if self.request_timeout_ms < 100 || self.snapshot_every < 10 {
            return Err(
                "cluster.request_timeout_ms must be at least 100 and cluster.snapshot_every at least 10"
                    .into(),
            );
        }
        Ok(())
    }

    /// A stable fingerprint of the voter set, so nodes configured with
    /// different sets notice each other.
    pub fn voters_fingerprint(&self) -> String {
        match self.voter_map() {
            Ok(m) => m
                .values()
                .map(|v| format!("{}@{}", v.id, v.address()))
                .collect::<Vec<_>>()
                .join(","),
            Err(_) => String::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn three() -> ClusterConfig {
        ClusterConfig {
            voters: vec![
                "1@127.0.0.1:9192".into(),
                "2@127.0.0.2:9192".into(),
                "3@127.0.0.3:9192".into(),
            ],
            ..ClusterConfig::default()
        }
    }

    #[test]
    fn voters_parse_and_a_node_finds_its_own_address() {
        let c = three();
        c.validate(2, false).unwrap();
        assert_eq!(
            c.listen_addr(2).unwrap(),
            Some("127.0.0.2:9192".parse().unwrap())
        );
        assert!(c.listen_addr(4).unwrap_err().contains("not a voter"));
        assert!(parse_voter("x@h:1").is_err());
        assert!(parse_voter("1@h").is_err());
        assert_eq!(parse_voter("7@[::1]:9").unwrap().address(), "[::1]:9");
        let dup = ClusterConfig {
            voters: vec!["1@127.0.0.1:1".into(), "1@127.0.0.2:1".into()],
            ..ClusterConfig::default()
        };
        assert!(dup.validate(1, false).unwrap_err().contains("twice"));
    }

    #[test]
    fn plaintext_between_nodes_needs_loopback_or_an_opt_in() {
        let c = ClusterConfig {
            voters: vec!["1@10.0.0.1:9192".into()],
            ..ClusterConfig::default()
        };
        let e = c.validate(1, false).unwrap_err();
        assert!(e.contains("cluster.tls"), "{e}");
        c.validate(1, true).unwrap();
    }
}
