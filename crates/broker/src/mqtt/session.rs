//! MQTT sessions: what a persistent session remembers (subscriptions and,
//! per Kafka partition, the offset to deliver from) and which connection
//! holds each client id.
//!
//! A persistent session (`clean_session = false` in MQTT 3, a non-zero
//! Session Expiry Interval in MQTT 5) is kept in memory while its client
//! is connected and written to `<data_dir>/mqtt/sessions/` — on disconnect
//! and every [`SAVE_INTERVAL`] while connected — so a client that was away,
//! even across a broker restart, receives what it missed within retention.
//! Positions are those of the oldest unacknowledged message, so a crash
//! redelivers rather than loses (QoS 1 is at least once).

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

/// How often a connected persistent session's positions are written.
pub const SAVE_INTERVAL: Duration = Duration::from_secs(1);

/// Session files larger than this are not read (a session holds filters
/// and offsets, never messages).
const MAX_SESSION_FILE: u64 = 4 * 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subscription {
    /// Granted QoS (0 or 1).
    pub qos: u8,
}

/// A session's durable state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionState {
    /// By topic filter.
    pub subscriptions: BTreeMap<String, Subscription>,
    /// Next offset to deliver, by Kafka topic and partition.
    pub positions: BTreeMap<String, BTreeMap<i32, i64>>,
    /// Seconds the session outlives its connection.
    pub expiry_secs: u32,
    /// When the client last disconnected (ms since the epoch; 0 while connected).
    pub disconnected_ms: i64,
}

impl SessionState {
    /// Whether a session left at `disconnected_ms` is gone by `now_ms`.
    pub fn expired(&self, now_ms: i64) -> bool {
        self.disconnected_ms > 0
            && now_ms.saturating_sub(self.disconnected_ms) > i64::from(self.expiry_secs) * 1000
    }
}

/// The connection holding a client id: a token to take the session over,
/// and one its task cancels once it has saved the session.
#[derive(Debug, Clone)]
struct Holder {
    id: u64,
    kick: CancellationToken,
    done: CancellationToken,
}

/// Sessions on disk and the live connection per client id.
#[derive(Debug)]
pub struct SessionStore {
    dir: PathBuf,
    live: Mutex<HashMap<String, Holder>>,
}

/// A connection's claim on a client id, released on drop.
#[derive(Debug)]
pub struct Claim {
    store: Arc<SessionStore>,
    client_id: String,
    id: u64,
    /// Cancelled when another connection takes the client id over.
    pub kicked: CancellationToken,
    done: CancellationToken,
}

impl Drop for Claim {
    fn drop(&mut self) {
        let mut live = self.store.live.lock();
        if live.get(&self.client_id).is_some_and(|h| h.id == self.id) {
            live.remove(&self.client_id);
        }
        self.done.cancel();
    }
}

impl SessionStore {
    pub fn open(data_dir: &Path) -> std::io::Result<SessionStore> {
        let dir = data_dir.join("mqtt").join("sessions");
        std::fs::create_dir_all(&dir)?;
        Ok(SessionStore {
            dir,
            live: Mutex::new(HashMap::new()),
        })
    }

    /// Claims `client_id` for connection `id`, taking it from a connection
    /// that holds it (MQTT's session takeover) and waiting, at most
    /// `wait`, for that one to save its session first.
    pub async fn claim(self: &Arc<Self>, client_id: &str, id: u64, wait: Duration) -> Claim {
        let kicked = CancellationToken::new();
        let done = CancellationToken::new();
        let previous = self.live.lock().insert(
            client_id.to_owned(),
            Holder {
                id,
                kick: kicked.clone(),
                done: done.clone(),
            },
        );
        if let Some(p) = previous {
            p.kick.cancel();
            let _ = tokio::time::timeout(wait, p.done.cancelled()).await;
        }
        Claim {
            store: Arc::clone(self),
            client_id: client_id.to_owned(),
            id,
            kicked,
            done,
        }
    }

    fn path(&self, client_id: &str) -> PathBuf {
        // Client ids are any UTF-8: hex keeps file names safe.
        let mut name = String::with_capacity(client_id.len() * 2 + 5);
        for b in client_id.as_bytes() {
            let _ = write!(name, "{b:02x}");
        }
        name.push_str(".json");
        self.dir.join(name)
    }

    /// The stored session of `client_id`, unless there is none or it expired.
    pub async fn load(&self, client_id: &str, now_ms: i64) -> Option<SessionState> {
        let path = self.path(client_id);
        let state = tokio::task::spawn_blocking(move || read_state(&path))
            .await
            .ok()
            .flatten()?;
        (!state.expired(now_ms)).then_some(state)
    }

    /// Writes the session (atomically: a temporary file renamed over it).
    pub async fn save(&self, client_id: &str, state: &SessionState) {
        let path = self.path(client_id);
        let Ok(bytes) = serde_json::to_vec(state) else {
            return;
        };
        let result = tokio::task::spawn_blocking(move || write_atomically(&path, &bytes)).await;
        if let Ok(Err(e)) = result {
            tracing::warn!(error = %e, "could not save an MQTT session");
        }
    }

    /// Forgets the stored session (a clean start, or expiry 0 on disconnect).
    pub async fn remove(&self, client_id: &str) {
        let path = self.path(client_id);
        let _ = tokio::task::spawn_blocking(move || std::fs::remove_file(path)).await;
    }
}

fn read_state(path: &Path) -> Option<SessionState> {
    let f = std::fs::File::open(path).ok()?;
    if f.metadata().ok()?.len() > MAX_SESSION_FILE {
        tracing::warn!(path = %path.display(), "MQTT session file too large; ignored");
        return None;
    }
    match serde_json::from_reader(std::io::BufReader::new(f)) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "unreadable MQTT session file; ignored");
            None
        }
    }
}

fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_data()?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn sessions_survive_a_reopen_and_expire() {
        let dir = tempfile::tempdir().unwrap();
        let store = SessionStore::open(dir.path()).unwrap();
        let mut s = SessionState {
            expiry_secs: 60,
            ..SessionState::default()
        };
        s.subscriptions
            .insert("a/#".into(), Subscription { qos: 1 });
        s.positions
            .entry("telemetry".into())
            .or_default()
            .insert(0, 42);
        store.save("dev/1 ünï", &s).await;
        let store = SessionStore::open(dir.path()).unwrap();
        assert_eq!(store.load("dev/1 ünï", 1).await, Some(s.clone()));
        assert_eq!(store.load("other", 1).await, None);
        s.disconnected_ms = 1_000;
        store.save("dev/1 ünï", &s).await;
        assert!(store.load("dev/1 ünï", 60_000).await.is_some());
        assert!(store.load("dev/1 ünï", 61_001).await.is_none());
        store.remove("dev/1 ünï").await;
        assert!(store.load("dev/1 ünï", 1).await.is_none());
    }

    #[tokio::test]
    async fn a_second_claim_takes_the_client_id_over() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(SessionStore::open(dir.path()).unwrap());
        let first = store.claim("c", 1, Duration::from_secs(1)).await;
        let kicked = first.kicked.clone();
        let waiter = {
            let store = Arc::clone(&store);
            tokio::spawn(async move { store.claim("c", 2, Duration::from_secs(5)).await })
        };
        kicked.cancelled().await;
        // The second claim waits for the first to let go.
        drop(first);
        let second = waiter.await.unwrap();
        assert!(!second.kicked.is_cancelled());
        assert_eq!(store.live.lock().get("c").map(|h| h.id), Some(2));
        drop(second);
        assert!(store.live.lock().is_empty());
    }
}
