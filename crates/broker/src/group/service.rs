//! The async edge of the group coordinator: one lock around the pure
//! [`Coordinator`] and the [`GroupStore`], oneshot channels for JoinGroup and
//! SyncGroup responses that wait for the group, and the timer task.
//!
//! Each operation runs synchronously under the lock (so requests of one
//! connection keep their order), writes its records to the store in the
//! same critical section (so records keep their order), then fsyncs outside
//! the lock and only afterwards delivers the replies it completed: a
//! response never announces state that a crash could lose.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::coordinator::{Coordinator, CoordinatorConfig, Effects};
use super::member::{Reply, Waiter};
use super::store::{self, GroupStore, StoreError};
use crate::clock::Clock;

/// How often the timer task fires due deadlines. Session and rebalance
/// timeouts are seconds long, so 100 ms of slack is invisible to clients.
const TICK: Duration = Duration::from_millis(100);

#[derive(Debug)]
struct Inner {
    core: Coordinator,
    store: GroupStore,
    waiters: HashMap<Waiter, oneshot::Sender<Reply>>,
}

#[derive(Debug)]
pub struct GroupCoordinator {
    inner: Arc<Mutex<Inner>>,
    clock: Arc<dyn Clock>,
    next_waiter: AtomicU64,
}

/// Completes when an operation's records are durable (true) or failed to
/// sync (false); replies are delivered in either case.
pub struct Durable(Option<JoinHandle<bool>>);

impl Durable {
    pub async fn wait(self) -> bool {
        match self.0 {
            None => true,
            Some(h) => h.await.unwrap_or(false),
        }
    }
}

impl GroupCoordinator {
    /// Opens `dir` and replays it into a fresh coordinator.
    pub fn open(
        dir: &Path,
        config: CoordinatorConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<GroupCoordinator, StoreError> {
        let (mut store, records) = GroupStore::open(dir)?;
        let now = clock.now_ms();
        let mut core = Coordinator::new(config);
        let replayed = records.len();
        for r in records {
            core.replay(r, now);
        }
        if replayed > 0 {
            tracing::info!(
                records = replayed,
                groups = core.list().len(),
                "loaded consumer groups"
            );
        }

        if store.needs_rewrite() {
            // A store of the JSON format: written again as binary entries
            // now, so no record beyond the reader's cap survives this start.
            match store.snapshot(&core.snapshot()) {
                Ok(()) => tracing::info!("rewrote the group store in the binary record format"),
                Err(e) => {
                    tracing::warn!(error = %e, "could not rewrite the group store; it stays readable as it is");
                }
            }
        }
        Ok(GroupCoordinator {
            inner: Arc::new(Mutex::new(Inner {
                core,
                store,
                waiters: HashMap::new(),
            })),
            clock,
            next_waiter: AtomicU64::new(1),
        })
    }

    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    /// Reads the coordinator state.
    pub fn read<T>(&self, f: impl FnOnce(&Coordinator) -> T) -> T {
        f(&self.inner.lock().core)
    }

    /// A waiter token and the receiver its reply will arrive on.
    pub fn waiter(&self) -> (Waiter, oneshot::Receiver<Reply>) {
        let id = self.next_waiter.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.inner.lock().waiters.insert(id, tx);
        (id, rx)
    }

    /// Runs one operation. Must be called inside a tokio runtime.
    pub fn run<T>(&self, f: impl FnOnce(&mut Coordinator, i64, &mut Effects) -> T) -> (T, Durable) {
        let mut inner = self.inner.lock();
        let now = self.clock.now_ms();
        let mut effects = Effects::default();
        let result = f(&mut inner.core, now, &mut effects);
        let durable = self.finish(&mut inner, effects);
        (result, durable)
    }

    fn finish(&self, inner: &mut Inner, effects: Effects) -> Durable {
        let replies: Vec<(oneshot::Sender<Reply>, Reply)> = effects
            .replies
            .into_iter()
            .filter_map(|r| {
                let id = match &r {
                    Reply::Join(w, _) | Reply::Sync(w, _) => *w,
                };
                inner.waiters.remove(&id).map(|tx| (tx, r))
            })
            .collect();
        if effects.records.is_empty() && replies.is_empty() {
            return Durable(None);
        }
        let handle = if effects.records.is_empty() {
            Ok(None)
        } else {
            let appended = inner.store.append(&effects.records).map(Some);
            if inner.store.wants_snapshot() {
                let state = inner.core.snapshot();
                if let Err(e) = inner.store.snapshot(&state) {
                    tracing::error!(error = %e, "group store snapshot failed");
                }
            }
            appended
        };
        let shared = Arc::clone(&self.inner);
        Durable(Some(tokio::spawn(async move {
            let ok = match handle {
                Ok(None) => true,
                Ok(Some(file)) => {
                    let synced = tokio::task::spawn_blocking(move || store::sync(&file)).await;
                    let ok = matches!(synced, Ok(Ok(())));
                    if !ok {
                        tracing::error!("group store fsync failed; refusing further commits");
                        shared.lock().store.poison();
                    }
                    ok
                }
                Err(e) => {
                    tracing::error!(error = %e, "group store write failed");
                    false
                }
            };
            for (tx, reply) in replies {
                let _ = tx.send(reply);
            }
            ok
        })))
    }

    /// Fires due deadlines of every group.
    pub fn tick(&self) -> Durable {
        self.run(Coordinator::tick).1
    }

    /// Drops every waiting JoinGroup/SyncGroup (their requests answer
    /// COORDINATOR_NOT_AVAILABLE) so shutdown does not wait for rebalances.
    pub fn shutdown(&self) {
        self.inner.lock().waiters.clear();
    }
}

/// The timer task: ticks until shutdown, then releases waiting requests.
pub async fn run_timers(coordinator: Arc<GroupCoordinator>, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = tokio::time::sleep(TICK) => {}
        }
        coordinator.tick().wait().await;
    }
    coordinator.shutdown();
}
