//! A cluster of real `veil` processes on loopback: node `i` (1-based) binds
//! 127.0.0.i with ephemeral client and admin ports, its inter-node listener
//! sits behind a [`FaultProxy`] (the address in everyone's voter list), and
//! its data lives in the cluster's temporary directory.
//!
//! Faults: kill -9, SIGSTOP/SIGCONT, restart, a wiped disk, and network
//! partitions (a node cut off from the others in both directions).

use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::proxy::FaultProxy;
use crate::TestBroker;

pub struct TestCluster {
    bin: String,
    temp: tempfile::TempDir,
    /// `nodes[i]` is node `i + 1`.
    nodes: Vec<TestBroker>,
    proxies: Vec<FaultProxy>,
    data_dirs: Vec<PathBuf>,
}

fn host(id: usize) -> String {
    format!("127.0.0.{id}")
}

fn ip(id: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(
        127,
        0,
        0,
        u8::try_from(id).expect("small node id"),
    ))
}

/// A free port on `ip` (bound and released; used at once).
fn free_port(ip: IpAddr) -> u16 {
    TcpListener::bind(SocketAddr::new(ip, 0))
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// Extra configuration for every node.
#[derive(Debug, Clone, Default)]
pub struct ClusterOptions {
    /// Top-level keys (`log.flush` belongs in `tables`).
    pub top: String,
    /// Keys of the `[cluster]` table.
    pub cluster: String,
    /// Other tables, e.g. `[log]\nflush = "none"`.
    pub tables: String,
    /// More tables for single nodes: `node_tables[i]` goes into node
    /// `i + 1`'s config (e.g. its own `[cluster.tls]`).
    pub node_tables: Vec<String>,
    /// Data directories other than the cluster's temporary one, by node.
    pub data_dirs: Vec<(usize, PathBuf)>,
    /// The nodes [`TestCluster::start_with`] waits for (default: all); a
    /// test of a node that must not come up leaves it out.
    pub wait_for: Option<Vec<usize>>,
}

impl TestCluster {
    /// Starts `n` nodes (all voters) and waits until every one is ready.
    pub fn start(bin: &str, n: usize) -> TestCluster {
        Self::start_with(bin, n, &ClusterOptions::default())
    }

    /// [`Self::start`] with extra configuration.
    pub fn start_with(bin: &str, n: usize, options: &ClusterOptions) -> TestCluster {
        let temp = tempfile::Builder::new()
            .prefix("veil-cluster-")
            .tempdir()
            .expect("create temp dir");
        let real: Vec<SocketAddr> = (1..=n)
            .map(|i| SocketAddr::new(ip(i), free_port(ip(i))))
            .collect();
        let proxies: Vec<FaultProxy> = (1..=n)
            .map(|i| FaultProxy::start(SocketAddr::new(ip(i), 0), real[i - 1]))
            .collect();
        let voters: Vec<String> = proxies
            .iter()
            .enumerate()
            .map(|(i, p)| format!("\"{}@{}\"", i + 1, p.addr()))
            .collect();
        let mut nodes = Vec::with_capacity(n);
        let mut data_dirs = Vec::with_capacity(n);
        for i in 1..=n {
            let config = temp.path().join(format!("node{i}.toml"));
            let text = format!(
                "node_id = {i}\n{}\n[cluster]\nvoters = [{}]\nlisten = \"{}\"\nadvertised = \"{}\"\n{}\n{}\n{}\n",
                options.top,
                voters.join(", "),
                real[i - 1],
                proxies[i - 1].addr(),
                options.cluster,
                options.tables,
                options.node_tables.get(i - 1).map_or("", String::as_str),
            );
            std::fs::write(&config, text).expect("write node config");
            let data = options
                .data_dirs
                .iter()
                .find(|(id, _)| *id == i)
                .map_or_else(|| temp.path().join(format!("node{i}")), |(_, d)| d.clone());
            nodes.push(TestBroker::start_node(bin, &host(i), &data, &config));
            data_dirs.push(data);
        }
        let cluster = TestCluster {
            bin: bin.to_owned(),
            temp,
            nodes,
            proxies,
            data_dirs,
        };
        let all: Vec<usize> = (1..=n).collect();
        let wait_for = options.wait_for.as_deref().unwrap_or(&all);
        cluster.wait_ready(wait_for, Duration::from_secs(60));
        cluster
    }

    pub fn size(&self) -> usize {
        self.nodes.len()
    }

    pub fn node(&self, id: usize) -> &TestBroker {
        &self.nodes[id - 1]
    }

    pub fn node_mut(&mut self, id: usize) -> &mut TestBroker {
        &mut self.nodes[id - 1]
    }

    /// Every running node's client address, comma-separated.
    pub fn bootstrap(&self) -> String {
        self.nodes
            .iter()
            .map(TestBroker::bootstrap)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Bootstrap of the given nodes only.
    pub fn bootstrap_of(&self, ids: &[usize]) -> String {
        ids.iter()
            .map(|id| self.node(*id).bootstrap())
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn data_dir(&self, id: usize) -> PathBuf {
        self.data_dirs[id - 1].clone()
    }

    /// Node `id`'s config file (rewrite it, then restart the node, to
    /// change its configuration).
    pub fn config_path(&self, id: usize) -> PathBuf {
        self.temp.path().join(format!("node{id}.toml"))
    }

    /// The address every node dials to reach node `id` (its fault proxy).
    pub fn internal_addr(&self, id: usize) -> SocketAddr {
        self.proxies[id - 1].addr()
    }

    pub fn bin(&self) -> &str {
        &self.bin
    }

    /// kill -9. Its inter-node address refuses connections from then on,
    /// as a dead process's would.
    pub fn kill(&mut self, id: usize) {
        self.nodes[id - 1].kill();
        self.proxies[id - 1].close();
    }

    /// SIGTERM (controlled shutdown) and wait for the exit.
    pub fn terminate(&mut self, id: usize) -> std::process::ExitStatus {
        let status = self.nodes[id - 1].terminate();
        self.proxies[id - 1].close();
        status
    }

    pub fn pause(&self, id: usize) {
        self.nodes[id - 1].pause();
    }

    pub fn resume(&self, id: usize) {
        self.nodes[id - 1].resume();
    }

    /// Starts a stopped node again on its data (new client ports).
    pub fn start_node(&mut self, id: usize) {
        self.proxies[id - 1].reopen();
        self.nodes[id - 1].start_again();
    }

    /// kill -9, delete its data directory, start it again.
    pub fn wipe_and_restart(&mut self, id: usize) {
        self.kill(id);
        let _ = std::fs::remove_dir_all(self.data_dir(id));
        self.start_node(id);
    }

    /// Cuts node `id` off from every other node, both ways.
    pub fn isolate(&self, id: usize) {
        for (i, p) in self.proxies.iter().enumerate() {
            if i + 1 == id {
                for other in (1..=self.size()).filter(|o| *o != id) {
                    p.block(ip(other));
                }
            } else {
                p.block(ip(id));
            }
        }
    }

    /// Restores every link.
    pub fn heal(&self) {
        for p in &self.proxies {
            p.unblock_all();
        }
    }

    /// Waits until every node in `ids` answers `/healthz` with 200 and sees
    /// at least as many live (registered, unfenced) brokers as `ids` names,
    /// so a topic created right after has them all to place replicas on.
    pub fn wait_ready(&self, ids: &[usize], limit: Duration) {
        let deadline = Instant::now() + limit;
        for id in ids {
            loop {
                let (status, body) = self.node(*id).http_get("/healthz");
                if status == 200 && self.alive_seen_by(*id) >= ids.len() {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "node {id} not ready in {limit:?}: {body}\n{}",
                    self.node(*id).log()
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }

    /// Live brokers as node `id` sees them (`/metrics`: registered − fenced).
    fn alive_seen_by(&self, id: usize) -> usize {
        let [registered, fenced] =
            self.gauges_of(id, ["veil_brokers_registered", "veil_brokers_fenced"]);
        registered.saturating_sub(fenced)
    }

    /// Fenced brokers as node `id` sees them.
    pub fn fenced_seen_by(&self, id: usize) -> usize {
        let [fenced] = self.gauges_of(id, ["veil_brokers_fenced"]);
        fenced
    }

    /// Whole-number gauges from node `id`'s `/metrics` (0 when absent or negative).
    fn gauges_of<const N: usize>(&self, id: usize, names: [&str; N]) -> [usize; N] {
        let (_, body) = self.node(id).http_get("/metrics");
        names.map(|name| {
            body.lines()
                .find(|l| l.split_whitespace().next() == Some(name))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<f64>().ok())
                .filter(|v| *v > 0.0)
                .map_or(0, |v| v as usize)
        })
    }

    /// The controller as node `id` reports it in `/metrics` (`None` if it
    /// knows none).
    pub fn controller_seen_by(&self, id: usize) -> Option<usize> {
        let (_, body) = self.node(id).http_get("/metrics");
        body.lines()
            .find(|l| l.starts_with("veil_controller_id "))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .filter(|v| *v >= 0.0)
            .map(|v| v as usize)
    }

    /// Waits until every node in `ids` agrees on one controller among
    /// `ids`; returns it.
    pub fn wait_controller(&self, ids: &[usize], limit: Duration) -> usize {
        let deadline = Instant::now() + limit;
        loop {
            let seen: Vec<Option<usize>> =
                ids.iter().map(|i| self.controller_seen_by(*i)).collect();
            if let Some(Some(c)) = seen.first() {
                if ids.contains(c) && seen.iter().all(|s| *s == Some(*c)) {
                    return *c;
                }
            }
            assert!(
                Instant::now() < deadline,
                "no agreed controller among {ids:?} in {limit:?}: {seen:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        // A failed test gets the end of every node's log (the directory
        // with the full logs goes away with the cluster).
        // `VEIL_TEST_KEEP_LOGS=<dir>` keeps them all, failed or not.
        if let Some(dir) = std::env::var_os("VEIL_TEST_KEEP_LOGS") {
            let dir = PathBuf::from(dir);
            let stamp = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis());
            let _ = std::fs::create_dir_all(&dir);
            for (i, node) in self.nodes.iter().enumerate() {
                let name = format!("{stamp}-{}-node{}.log", std::process::id(), i + 1);
                let _ = std::fs::write(dir.join(name), node.log());
            }
        }
        if std::thread::panicking() {
            for (i, node) in self.nodes.iter().enumerate() {
                let log = node.log();
                // What explains a failure (warnings, elections, ISR and fencing changes) rather
                // than the last lines, which are mostly routine.
                let telling: Vec<&str> = log
                    .lines()
                    .filter(|l| {
                        !l.contains(" INFO ")
                            || ["ISR", "elect", "controller", "fenc", "leader of", "quorum"]
                                .iter()
                                .any(|w| l.contains(w))
                    })
                    .collect();
                let tail = &telling[telling.len().saturating_sub(60)..];
                eprintln!(
                    "---- node {} (last {} of its warnings, elections, ISR and fencing lines) ----",
                    i + 1,
                    tail.len()
                );
                for line in tail {
                    eprintln!("{line}");
                }
                let last: Vec<&str> = log.lines().rev().take(15).collect();
                eprintln!("---- node {} (last {} lines) ----", i + 1, last.len());
                for line in last.iter().rev() {
                    eprintln!("{line}");
                }
            }
        }
    }
}
