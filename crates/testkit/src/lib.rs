//! Test support for Veil: start the real `veil` binary on ephemeral
//! loopback ports with a temporary data directory, stop it gently or kill
//! it, restart it on the same data, scrape its admin endpoint, and read its
//! resident memory (for tests that bound what a client can make it hold).
//!
//! Integration tests pass the binary path (`env!("CARGO_BIN_EXE_veil")`).

pub mod checker;
pub mod cluster;
pub mod proxy;

pub use cluster::{ClusterOptions, TestCluster};

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long a broker may take to print its addresses.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A running `veil broker` child process.
pub struct TestBroker {
    bin: PathBuf,
    data_dir: PathBuf,
    /// Keeps the temporary directory alive when the broker owns it.
    _temp: Option<tempfile::TempDir>,
    extra_args: Vec<String>,
    /// Environment variables set for the broker process.
    env: Vec<(String, String)>,
    child: Option<Child>,
    kafka: SocketAddr,
    admin: SocketAddr,
    /// Every Kafka listener's bound address, by listener name.
    listeners: Vec<(String, SocketAddr)>,
    /// The config file of [`TestBroker::start_with_config`], removed on drop.
    config_file: Option<tempfile::TempPath>,
    stderr_log: PathBuf,
    /// The loopback address the broker's listeners bind (127.0.0.x).
    host: String,
}

impl TestBroker {
    /// Starts a broker on a fresh temporary data directory.
    pub fn start(bin: &str) -> TestBroker {
        Self::start_with(bin, &[])
    }

    /// Starts a broker with extra `veil broker` arguments (e.g. `--set k=v`).
    pub fn start_with(bin: &str, extra_args: &[&str]) -> TestBroker {
        Self::start_with_env(bin, extra_args, &[])
    }

    /// [`Self::start_with`] with environment variables for the broker
    /// process (e.g. `TOKIO_WORKER_THREADS`).
    pub fn start_with_env(bin: &str, extra_args: &[&str], env: &[(&str, &str)]) -> TestBroker {
        let temp = tempfile::Builder::new()
            .prefix("veil-test-")
            .tempdir()
            .expect("create temp dir");
        let data_dir = temp.path().join("data");
        let mut broker = TestBroker {
            bin: PathBuf::from(bin),
            stderr_log: temp.path().join("broker.log"),
            data_dir,
            _temp: Some(temp),
            extra_args: extra_args.iter().map(|s| (*s).to_owned()).collect(),
            env: env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            child: None,
            kafka: SocketAddr::from(([127, 0, 0, 1], 0)),
            admin: SocketAddr::from(([127, 0, 0, 1], 0)),
            listeners: Vec::new(),
            config_file: None,
            host: "127.0.0.1".to_owned(),
        };
        broker.spawn();
        broker
    }

    /// Starts a broker on an existing data directory (e.g. a copied fixture
    /// of an older on-disk format); the caller keeps the directory alive.
    pub fn start_on(bin: &str, data_dir: &Path, extra_args: &[&str]) -> TestBroker {
        let temp = tempfile::Builder::new()
            .prefix("veil-test-")
            .tempdir()
            .expect("create temp dir");
        let mut broker = TestBroker {
            bin: PathBuf::from(bin),
            stderr_log: temp.path().join("broker.log"),
            data_dir: data_dir.to_owned(),
            _temp: Some(temp),
            extra_args: extra_args.iter().map(|s| (*s).to_owned()).collect(),
            env: Vec::new(),
            child: None,
            kafka: SocketAddr::from(([127, 0, 0, 1], 0)),
            admin: SocketAddr::from(([127, 0, 0, 1], 0)),
            listeners: Vec::new(),
            config_file: None,
            host: "127.0.0.1".to_owned(),
        };
        broker.spawn();
        broker
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.stderr_log)
            .expect("open broker log");
        let mut child = Command::new(&self.bin)
            .arg("broker")
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args([
                "--listen",
                &format!("{}:0", self.host),
                "--admin-listen",
                &format!("{}:0", self.host),
                "--print-addresses",
            ])
            .args(&self.extra_args)
            .env(
                "VEIL_LOG",
                std::env::var("VEIL_TEST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", self.bin.display()));
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + START_TIMEOUT;
        let (mut kafka, mut admin) = (None, None);
        self.listeners.clear();
        while kafka.is_none() || admin.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(line) = rx.recv_timeout(left) else {
                let _ = child.kill();
                panic!("broker did not start in time; log:\n{}", self.log());
            };
            let parts: Vec<&str> = line.split_whitespace().collect();
            if let ["LISTENING", name, addr] = parts[..] {
                let addr: SocketAddr = addr.parse().expect("address");
                if name == "admin" {
                    admin = Some(addr);
                } else {
                    self.listeners.push((name.to_owned(), addr));
                }
                if name != "admin" && kafka.is_none() {
                    kafka = Some(addr);
                }
            }
        }
        self.kafka = kafka.expect("kafka address");
        self.admin = admin.expect("admin address");
        self.child = Some(child);
    }

    /// Starts a broker with a TOML config file holding `toml_text` (plus
    /// `extra_args`). Listeners should bind `127.0.0.1:0`; the first one's
    /// bind is overridden with that anyway.
    pub fn start_with_config(bin: &str, toml_text: &str, extra_args: &[&str]) -> TestBroker {
        Self::start_with_config_env(bin, toml_text, extra_args, &[])
    }

    /// [`Self::start_with_config`] with environment variables for the broker.
    pub fn start_with_config_env(
        bin: &str,
        toml_text: &str,
        extra_args: &[&str],
        env: &[(&str, &str)],
    ) -> TestBroker {
        let config = tempfile::Builder::new()
            .prefix("veil-test-config-")
            .suffix(".toml")
            .tempfile()
            .expect("create config file");
        std::fs::write(config.path(), toml_text).expect("write config");
        let path = config.into_temp_path();
        let shown = path.display().to_string();
        let mut args = vec!["--config", shown.as_str()];
        args.extend_from_slice(extra_args);
        let mut broker = Self::start_with_env(bin, &args, env);
        broker.config_file = Some(path);
        broker
    }

    /// The bound address of the Kafka listener named `name`.
    pub fn listener_addr(&self, name: &str) -> Option<SocketAddr> {
        self.listeners
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, a)| *a)
    }

    /// `host:port` of the Kafka listener.
    pub fn bootstrap(&self) -> String {
        self.kafka.to_string()
    }

    pub fn kafka_addr(&self) -> SocketAddr {
        self.kafka
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Everything the broker wrote to stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr_log).unwrap_or_default()
    }

    /// Starts one node of a cluster: its listeners on `host`, its data in
    /// `data_dir`, its config in `config` (both owned by the caller).
    pub fn start_node(bin: &str, host: &str, data_dir: &Path, config: &Path) -> TestBroker {
        let log_dir = data_dir.parent().unwrap_or(data_dir).to_owned();
        let name = data_dir
            .file_name()
            .map_or_else(|| "node".to_owned(), |n| n.to_string_lossy().into_owned());
        let mut broker = TestBroker {
            bin: PathBuf::from(bin),
            stderr_log: log_dir.join(format!("{name}.log")),
            data_dir: data_dir.to_owned(),
            _temp: None,
            extra_args: vec!["--config".to_owned(), config.display().to_string()],
            env: Vec::new(),
            child: None,
            kafka: SocketAddr::from(([127, 0, 0, 1], 0)),
            admin: SocketAddr::from(([127, 0, 0, 1], 0)),
            listeners: Vec::new(),
            config_file: None,
            host: host.to_owned(),
        };
        broker.spawn();
        broker
    }

    /// The process id, while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGSTOP: the process freezes (a long GC pause, a hung host).
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// SIGCONT after [`Self::pause`].
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, sig: &str) {
        if let Some(pid) = self.pid() {
            let _ = Command::new("kill").args([sig, &pid.to_string()]).status();
        }
    }

    /// Starts the broker again after [`Self::kill`] or [`Self::terminate`].
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "the broker is still running");
        self.spawn();
    }

    /// SIGKILL: no chance to flush or clean up.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait (bounded) for the exit status.
    pub fn terminate(&mut self) -> ExitStatus {
        let mut c = self.child.take().expect("broker is running");
        let pid = c.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = c.try_wait().expect("wait") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                panic!("broker did not exit within 60s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts the broker again on the same data directory (new ports).
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// The broker's resident set size (VmRSS of `/proc/<pid>/status`) in bytes.
    pub fn rss_bytes(&self) -> u64 {
        self.status_bytes("VmRSS")
    }

    /// A memory figure of the broker's `/proc/<pid>/status` in bytes, such
    /// as `VmRSS` or `VmData` (private writable memory, resident or not).
    pub fn status_bytes(&self, field: &str) -> u64 {
        let pid = self.child.as_ref().expect("broker is running").id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
        status
            .lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|v| v.trim().strip_suffix("kB"))
            .and_then(|kb| kb.trim().parse::<u64>().ok())
            .unwrap_or_else(|| panic!("{field} in /proc/{pid}/status"))
            * 1024
    }

    /// GETs a path of the admin endpoint; returns (status, body).
    pub fn http_get(&self, path: &str) -> (u16, String) {
        http_get(self.admin, path)
    }
}

impl Drop for TestBroker {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Copies a directory tree (fixtures of older on-disk formats).
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create directory");
    for entry in std::fs::read_dir(from).expect("read fixture directory") {
        let entry = entry.expect("directory entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy fixture file");
        }
    }
}

/// Raises this process's soft limit on open files to its hard limit (the
/// broker child inherits it) and returns the new soft limit, so tests with
/// thousands of sockets run where the default soft limit is 1024.
pub fn raise_open_files_limit() -> u64 {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        limit.current = limit.maximum;
        // Best effort: a failure leaves the old limit, which the caller reads back.
        let _ = setrlimit(Resource::Nofile, limit);
    }
    getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX)
}

/// A minimal HTTP/1.1 GET, enough for `/metrics` and `/healthz`.
pub fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect admin");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .expect("write");
    let mut raw = String::new();
    s.read_to_string(&mut raw).expect("read");
    let status = raw
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = raw
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}
