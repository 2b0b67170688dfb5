//! The async edge of the group coordinator: one lock around the pure
//! [`Coordinator`], the partitions of `__consumer_offsets` this node leads,
//! oneshot channels for JoinGroup and SyncGroup responses that wait for the
//! group, and the timer task.
//!
//! The coordinator holds exactly the groups of the partitions this node
//! leads (see [`super::offsets_topic`]). Each operation runs synchronously
//! under the lock (so requests of one connection keep their order) and
//! appends its records to their partitions in the same critical section (so
//! records keep their order); then, outside the lock, it waits until they
//! are replicated as an `acks=all` produce would, and only afterwards
//! delivers the replies it completed: a response never announces state
//! that a failover or crash could lose.
//!
//! Leadership follows metadata: [`GroupCoordinator::set_leadership`] marks
//! newly led partitions for loading and drops the groups of partitions
//! led elsewhere now (their waiting requests answer NOT_COORDINATOR); the
//! timer task loads marked partitions by replaying their log, and a group
//! of a partition being loaded answers COORDINATOR_LOAD_IN_PROGRESS.
//!
//! Every [`SNAPSHOT_EVERY`] entries a partition gets the whole state of its
//! groups appended again; once that is replicated, everything before it is
//! deleted (DeleteRecords), so a partition's log stays about as large as
//! the state it holds.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::ResponseError;
use parking_lot::Mutex;
use tokio::sync::{oneshot, Notify};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use veil_log::batch::HEADER_LEN;
use veil_log::BatchHeader;

use super::codec::{self, Assembler};
use super::coordinator::{Coordinator, CoordinatorConfig, Effects};
use super::member::{Reply, Waiter};
use super::offsets_topic::{self, partition_for};
use super::record::Record;
use super::store::{GroupStore, StoreError};
use crate::clock::Clock;
use crate::error::Error;
use crate::partition::Partition;
use crate::state::BrokerState;

/// How often the timer task fires due deadlines and starts loads. Session
/// and rebalance timeouts are seconds long, so 100 ms of slack is invisible
/// to clients.
const TICK: Duration = Duration::from_millis(100);

/// Entries appended to a partition before its state is written again whole
/// and the log before that deleted.
#[cfg(not(test))]
const SNAPSHOT_EVERY: u64 = 10_000;
/// Small in tests, so they cross snapshots.
#[cfg(test)]
const SNAPSHOT_EVERY: u64 = 40;

/// Batches of group records stay about this small (one entry may add up to
/// [`codec::MAX_RECORD_BYTES`] and its key more).
const BATCH_BYTES: usize = 1 << 20;

/// How long a partition whose load failed waits before the next attempt.
const RELOAD_BACKOFF_MS: i64 = 1_000;

/// Marker of a legacy store partition moved into `__consumer_offsets`.
fn migrated_marker(dir: &Path, partition: i32) -> PathBuf {
    dir.join(format!("migrated-{partition}"))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SlotState {
    /// Led here; the timer task loads it (not before `retry_at`).
    Pending {
        retry_at: i64,
    },
    Loading,
    Active,
}

#[derive(Debug)]
struct Slot {
    partition: Arc<Partition>,
    leader_epoch: i32,
    /// Which load of the slot is current: a load finishing for a slot that
    /// was dropped and led again meanwhile changes nothing.
    load: u64,
    state: SlotState,
    min_insync: usize,
    since_snapshot: u64,
}

#[derive(Debug)]
struct Inner {
    core: Coordinator,
    waiters: HashMap<Waiter, oneshot::Sender<Reply>>,
    /// Partitions of `__consumer_offsets`; 0 until the topic exists.
    partition_count: i32,
    slots: HashMap<i32, Slot>,
    next_load: u64,
    /// Records of a `<data_dir>/groups/` store written before groups were
    /// kept in `__consumer_offsets`, until every partition holds its share.
    legacy: Option<Vec<Record>>,
}

#[derive(Debug)]
pub struct GroupCoordinator {
    inner: Arc<Mutex<Inner>>,
    clock: Arc<dyn Clock>,
    next_waiter: AtomicU64,
    /// Creating `__consumer_offsets` is single-flight.
    pub(crate) creating: tokio::sync::Mutex<()>,
    /// Signalled whenever a partition is loaded or dropped.
    changed: Notify,
    live_window: Duration,
    request_timeout: Duration,
    legacy_dir: PathBuf,
}

/// Completes when an operation's records are replicated (`None`) or could
/// not be (the error to answer); replies are delivered in either case.
pub struct Durable(Option<JoinHandle<Option<ResponseError>>>);

impl Durable {
    pub async fn wait(self) -> Option<ResponseError> {
        match self.0 {
            None => None,
            Some(h) => h
                .await
                .unwrap_or(Some(ResponseError::CoordinatorNotAvailable)),
        }
    }
}

/// How the records of one operation became durable in one partition.
struct Pending {
    partition: Arc<Partition>,
    end: i64,
    min_insync: usize,
    /// Where a snapshot appended by this operation starts: the log before
    /// it is deleted once it is replicated.
    snapshot_start: Option<i64>,
}

/// What the coordinator needs of the cluster it runs in.
pub struct Timing {
    /// A follower silent this long no longer counts as in sync.
    pub live_window: Duration,
    /// How long records may take to be replicated.
    pub request_timeout: Duration,
}

impl GroupCoordinator {
    /// A coordinator that leads nothing yet. A legacy store in
    /// `legacy_dir` is read now and moved into `__consumer_offsets` as its
    /// partitions are first led here.
    pub fn open(
        legacy_dir: &Path,
        config: CoordinatorConfig,
        clock: Arc<dyn Clock>,
        timing: Timing,
    ) -> Result<GroupCoordinator, StoreError> {
        let legacy =
            if legacy_dir.join("groups.log").exists() || legacy_dir.join("snapshot.log").exists() {
                let (_, records) = GroupStore::open(legacy_dir)?;
                tracing::info!(
                    records = records.len(),
                    "a group store of an older version will move into {}",
                    offsets_topic::NAME
                );
                Some(records)
            } else {
                None
            };
        Ok(GroupCoordinator {
            inner: Arc::new(Mutex::new(Inner {
                core: Coordinator::new(config),
                waiters: HashMap::new(),
                partition_count: 0,
                slots: HashMap::new(),
                next_load: 1,
                legacy,
            })),
            clock,
            next_waiter: AtomicU64::new(1),
            creating: tokio::sync::Mutex::new(()),
            changed: Notify::new(),
            live_window: timing.live_window,
            request_timeout: timing.request_timeout,
            legacy_dir: legacy_dir.to_owned(),
        })
    }

    /// Whether an older group store still waits to be moved (the offsets
    /// topic should then be created without waiting for a client).
    pub fn has_legacy(&self) -> bool {
        self.inner.lock().legacy.is_some()
    }

    /// Resolves at the next load or drop of a partition.
    pub fn changed(&self) -> tokio::sync::futures::Notified<'_> {
        self.changed.notified()
    }

    /// Whether this node serves `group` now: NOT_COORDINATOR if it does not
    /// lead the group's partition, COORDINATOR_LOAD_IN_PROGRESS while that
    /// is being loaded.
    pub fn status(&self, group: &str) -> Result<(), ResponseError> {
        let inner = self.inner.lock();
        if inner.partition_count == 0 {
            return Err(ResponseError::NotCoordinator);
        }
        let p = partition_for(group, inner.partition_count);
        match inner.slots.get(&p).map(|s| s.state) {
            Some(SlotState::Active) => Ok(()),
            Some(_) => Err(ResponseError::CoordinatorLoadInProgress),
            None => Err(ResponseError::NotCoordinator),
        }
    }

    /// Resolves once every group record appended to `group`'s partition so
    /// far is replicated, so what a read finds next cannot be taken back by
    /// a failover (OffsetFetch). Errors as [`Durable::wait`] does.
    pub async fn settled(&self, group: &str) -> Result<(), ResponseError> {
        let pending = {
            let inner = self.inner.lock();
            let p = partition_for(group, inner.partition_count.max(1));
            inner
                .slots
                .get(&p)
                .filter(|s| s.state == SlotState::Active)
                .map(|s| (Arc::clone(&s.partition), s.min_insync))
        };
        let Some((partition, min_insync)) = pending else {
            return Ok(());
        };
        let end = partition.log_end_offset();
        if partition.high_watermark() >= end {
            return Ok(());
        }
        let deadline = tokio::time::Instant::now() + self.request_timeout;
        partition
            .wait_replicated(end, min_insync, self.live_window, deadline)
            .await
            .map_err(|e| match e {
                Error::NotLeader { .. } => ResponseError::NotCoordinator,
                _ => ResponseError::CoordinatorNotAvailable,
            })
    }

    /// A transaction marker for `__consumer_offsets` partition `partition`:
    /// the producer's pending offsets in its groups are committed or dropped,
    /// durably, before this returns. NOT_LEADER_OR_FOLLOWER when the
    /// partition is not led here, COORDINATOR_LOAD_IN_PROGRESS while it
    /// loads (the coordinator retries either way).
    pub async fn complete_txn(
        &self,
        partition: i32,
        producer_id: i64,
        commit: bool,
    ) -> Result<(), ResponseError> {
        let count = {
            let inner = self.inner.lock();
            match inner.slots.get(&partition).map(|s| s.state) {
                Some(SlotState::Active) => {}
                Some(_) => return Err(ResponseError::CoordinatorLoadInProgress),
                None => return Err(ResponseError::NotLeaderOrFollower),
            }
            inner.partition_count
        };
        let ((), durable) = self.run(|core, _, out| {
            core.end_txn(
                |g| partition_for(g, count) == partition,
                producer_id,
                commit,
                out,
            );
        });
        durable.wait().await.map_or(Ok(()), Err)
    }

    /// Reads the coordinator state (the groups coordinated here).
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

    /// Runs one operation. Must be called inside a tokio runtime. Callers
    /// check [`GroupCoordinator::status`] of the groups they touch first.
    pub fn run<T>(&self, f: impl FnOnce(&mut Coordinator, i64, &mut Effects) -> T) -> (T, Durable) {
        let mut inner = self.inner.lock();
        let now = self.clock.now_ms();
        let mut effects = Effects::default();
        let result = f(&mut inner.core, now, &mut effects);
        let durable = self.finish(&mut inner, effects, now);
        (result, durable)
    }

    fn finish(&self, inner: &mut Inner, effects: Effects, now: i64) -> Durable {
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
        let mut by_partition: BTreeMap<i32, Vec<Record>> = BTreeMap::new();
        for r in effects.records {
            let p = partition_for(r.group_id(), inner.partition_count);
            by_partition.entry(p).or_default().push(r);
        }
        let mut failed = false;
        let mut pending = Vec::new();
        let count = inner.partition_count;
        let Inner {
            core,
            slots,
            waiters,
            ..
        } = inner;
        for (p, records) in by_partition {
            let Some(slot) = slots.get_mut(&p).filter(|s| s.state == SlotState::Active) else {
                // Only groups of active partitions are in the coordinator.
                tracing::error!(partition = p, "group records for a partition not led here");
                failed = true;
                continue;
            };
            match append(&slot.partition, &records, now) {
                Ok((_, entries)) => {
                    slot.since_snapshot += entries;
                    let mut snapshot_start = None;
                    if slot.since_snapshot >= SNAPSHOT_EVERY {
                        let start = slot.partition.log_end_offset();
                        let state: Vec<Record> = core
                            .snapshot()
                            .into_iter()
                            .filter(|r| partition_for(r.group_id(), count) == p)
                            .collect();
                        match append(&slot.partition, &state, now) {
                            Ok(_) => {
                                slot.since_snapshot = 0;
                                snapshot_start = Some(start);
                            }
                            Err(e) => {
                                tracing::warn!(partition = p, error = %e, "group snapshot not written");
                            }
                        }
                    }
                    pending.push(Pending {
                        partition: Arc::clone(&slot.partition),
                        // Only this coordinator appends here, under this lock.
                        end: slot.partition.log_end_offset(),
                        min_insync: slot.min_insync,
                        snapshot_start,
                    });
                }
                Err(e) => {
                    // The coordinator now holds state its log lacks: load the
                    // partition again from what the log does hold.
                    tracing::error!(partition = p, error = %e, "group records not appended; reloading the partition");
                    failed = true;
                    let mut dropped = Vec::new();
                    core.unload(|g| partition_for(g, count) == p, now, &mut dropped);
                    answer_not_coordinator(waiters, dropped);
                    slot.state = SlotState::Pending { retry_at: now };
                }
            }
        }
        let live_window = self.live_window;
        let deadline = tokio::time::Instant::now() + self.request_timeout;
        Durable(Some(tokio::spawn(async move {
            let mut error = failed.then_some(ResponseError::CoordinatorNotAvailable);
            for w in pending {
                match w
                    .partition
                    .wait_replicated(w.end, w.min_insync, live_window, deadline)
                    .await
                {
                    Ok(()) => {
                        if let Some(start) = w.snapshot_start {
                            compact(w.partition, start).await;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "group records not replicated");
                        error.get_or_insert(match e {
                            Error::NotLeader { .. } => ResponseError::NotCoordinator,
                            _ => ResponseError::CoordinatorNotAvailable,
                        });
                    }
                }
            }
            for (tx, reply) in replies {
                let _ = tx.send(reply);
            }
            error
        })))
    }

    /// Takes the leaderships of `__consumer_offsets` partitions from the
    /// applied metadata: partitions led here are loaded, those led elsewhere
    /// (or with a new leader epoch) are dropped.
    pub fn set_leadership(self: &Arc<Self>, state: &BrokerState) {
        let mut led: HashMap<i32, (Arc<Partition>, i32, usize)> = HashMap::new();
        let topic = state.topics.get(offsets_topic::NAME);
        if let Some(t) = &topic {
            for i in 0..t.partition_count() {
                if let Some(p) = t.partition(i).filter(|p| p.is_leader()) {
                    let min_insync = state.topics.min_insync(t, i);
                    led.insert(i, (Arc::clone(p), p.leader_epoch(), min_insync));
                }
            }
        }
        let now = self.clock.now_ms();
        let mut guard = self.inner.lock();
        let inner = &mut *guard;
        inner.partition_count = topic.as_ref().map_or(0, |t| t.partition_count());
        let count = inner.partition_count;
        let gone: Vec<i32> = inner
            .slots
            .iter()
            .filter(|(i, s)| {
                led.get(i).is_none_or(|(p, epoch, _)| {
                    *epoch != s.leader_epoch || !Arc::ptr_eq(p, &s.partition)
                })
            })
            .map(|(i, _)| *i)
            .collect();
        let mut dropped = Vec::new();
        for i in &gone {
            inner.slots.remove(i);
            inner
                .core
                .unload(|g| partition_for(g, count) == *i, now, &mut dropped);
            tracing::info!(
                partition = i,
                "no longer coordinating the groups of {}-{i}",
                offsets_topic::NAME
            );
        }
        answer_not_coordinator(&mut inner.waiters, dropped);
        for (i, (partition, leader_epoch, min_insync)) in led {
            if let Some(slot) = inner.slots.get_mut(&i) {
                slot.min_insync = min_insync;
                continue;
            }
            let load = inner.next_load;
            inner.next_load += 1;
            inner.slots.insert(
                i,
                Slot {
                    partition,
                    leader_epoch,
                    load,
                    state: SlotState::Pending { retry_at: now },
                    min_insync,
                    since_snapshot: 0,
                },
            );
        }
        drop(guard);
        self.changed.notify_waiters();
        if tokio::runtime::Handle::try_current().is_ok() {
            self.start_loads();
        }
    }

    /// Starts loading every partition that waits for it.
    fn start_loads(self: &Arc<Self>) {
        let now = self.clock.now_ms();
        let mut inner = self.inner.lock();
        for (i, slot) in &mut inner.slots {
            if matches!(slot.state, SlotState::Pending { retry_at } if retry_at <= now) {
                slot.state = SlotState::Loading;
                let this = Arc::clone(self);
                let (i, partition, load) = (*i, Arc::clone(&slot.partition), slot.load);
                tokio::spawn(async move { this.load(i, partition, load).await });
            }
        }
    }

    /// Replays partition `index` into the coordinator (moving a legacy
    /// store's share into it first), then serves its groups.
    async fn load(self: Arc<Self>, index: i32, partition: Arc<Partition>, load: u64) {
        let started = std::time::Instant::now();
        let result = self.load_records(index, &partition, load).await;
        let now = self.clock.now_ms();
        let mut guard = self.inner.lock();
        let inner = &mut *guard;
        let Some(slot) = inner.slots.get_mut(&index).filter(|s| s.load == load) else {
            return;
        };
        match result {
            Ok(records) => {
                let entries = records.len() as u64;
                let groups_before = inner.core.list().len();
                for r in records {
                    inner.core.replay(r, now);
                }
                slot.state = SlotState::Active;
                slot.since_snapshot = entries;
                tracing::info!(
                    partition = index,
                    records = entries,
                    groups = inner.core.list().len() - groups_before,
                    ms = started.elapsed().as_millis() as u64,
                    "coordinating the groups of {}-{index}",
                    offsets_topic::NAME
                );
            }
            Err(e) => {
                tracing::warn!(partition = index, error = %e, "loading group records failed; retrying");
                slot.state = SlotState::Pending {
                    retry_at: now + RELOAD_BACKOFF_MS,
                };
            }
        }
        drop(guard);
        self.changed.notify_waiters();
    }

    /// Every record of the partition, in order, after moving this
    /// partition's share of a legacy store into it.
    async fn load_records(
        &self,
        index: i32,
        partition: &Arc<Partition>,
        load: u64,
    ) -> Result<Vec<Record>, String> {
        let reading = Arc::clone(partition);
        let mut records = tokio::task::spawn_blocking(move || read_records(&reading))
            .await
            .map_err(|e| e.to_string())??;
        let marker = migrated_marker(&self.legacy_dir, index);
        let share: Option<Vec<Record>> = {
            let inner = self.inner.lock();
            match &inner.legacy {
                Some(all) if !marker.exists() => Some(
                    all.iter()
                        .filter(|r| partition_for(r.group_id(), inner.partition_count) == index)
                        .cloned()
                        .collect(),
                ),
                _ => None,
            }
        };
        if let Some(share) = share {
            if !share.is_empty() {
                let (end, min_insync) = {
                    let inner = self.inner.lock();
                    let Some(slot) = inner.slots.get(&index).filter(|s| s.load == load) else {
                        return Err("leadership moved".into());
                    };
                    let (end, _) = append(partition, &share, self.clock.now_ms())
                        .map_err(|e| e.to_string())?;
                    (end, slot.min_insync)
                };
                let deadline = tokio::time::Instant::now() + self.request_timeout;
                partition
                    .wait_replicated(end, min_insync, self.live_window, deadline)
                    .await
                    .map_err(|e| e.to_string())?;
                tracing::info!(
                    partition = index,
                    records = share.len(),
                    "moved group records of an older store into {}",
                    offsets_topic::NAME
                );
                records.extend(share);
            }
            std::fs::write(&marker, b"").map_err(|e| e.to_string())?;
            self.finish_legacy();
        }
        Ok(records)
    }

    /// Retires the legacy store once every partition holds its share.
    fn finish_legacy(&self) {
        let mut inner = self.inner.lock();
        let count = inner.partition_count;
        if inner.legacy.is_none()
            || count == 0
            || !(0..count).all(|i| migrated_marker(&self.legacy_dir, i).exists())
        {
            return;
        }
        let mut retired = self.legacy_dir.as_os_str().to_owned();
        retired.push(".migrated");
        match std::fs::rename(&self.legacy_dir, &retired) {
            Ok(()) => {
                inner.legacy = None;
                tracing::info!(
                    kept = %Path::new(&retired).display(),
                    "the older group store is fully moved into {}",
                    offsets_topic::NAME
                );
            }
            Err(e) => tracing::warn!(error = %e, "could not retire the older group store"),
        }
    }

    /// Fires due deadlines of every group and starts pending loads.
    pub fn tick(self: &Arc<Self>) -> Durable {
        self.start_loads();
        self.run(Coordinator::tick).1
    }

    /// Drops every waiting JoinGroup/SyncGroup (their requests answer
    /// COORDINATOR_NOT_AVAILABLE) so shutdown does not wait for rebalances.
    pub fn shutdown(&self) {
        self.inner.lock().waiters.clear();
    }
}

/// Answers the requests waiting in groups that are no longer coordinated
/// here with NOT_COORDINATOR, so their clients look the coordinator up again.
fn answer_not_coordinator(
    waiters: &mut HashMap<Waiter, oneshot::Sender<Reply>>,
    dropped: Vec<Reply>,
) {
    for reply in dropped {
        let (id, reply) = match reply {
            Reply::Join(w, mut r) => {
                r.error = Some(ResponseError::NotCoordinator);
                (w, Reply::Join(w, r))
            }
            Reply::Sync(w, mut r) => {
                r.error = Some(ResponseError::NotCoordinator);
                (w, Reply::Sync(w, r))
            }
        };
        if let Some(tx) = waiters.remove(&id) {
            let _ = tx.send(reply);
        }
    }
}

/// Appends `records` as batches of entries keyed by group id; returns the
/// log end after them and how many entries were written.
fn append(partition: &Partition, records: &[Record], now: i64) -> Result<(i64, u64), Error> {
    let mut entries = 0u64;
    let mut end = partition.log_end_offset();
    let mut batch: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    let mut size = 0usize;
    let flush = |batch: &mut Vec<(Vec<u8>, Vec<u8>)>, end: &mut i64| -> Result<(), Error> {
        if batch.is_empty() {
            return Ok(());
        }
        let refs: Vec<veil_log::records::Record<'_>> = batch
            .iter()
            .map(|(k, v)| (Some(k.as_slice()), Some(v.as_slice())))
            .collect();
        let mut bytes = veil_log::records::encode_batch(&refs, now);
        let info = partition.append(&mut bytes, now)?;
        *end = info.last_offset + 1;
        batch.clear();
        Ok(())
    };
    for r in records {
        let key = r.group_id().as_bytes().to_vec();
        for entry in
            codec::encode(r).map_err(|e| Error::Log(veil_log::Error::InvalidRecord(e.0)))?
        {
            let grows = key.len() + entry.len() + veil_log::records::record_overhead();
            if size + grows > BATCH_BYTES && !batch.is_empty() {
                flush(&mut batch, &mut end)?;
                size = 0;
            }
            size += grows;
            entries += 1;
            batch.push((key.clone(), entry));
        }
    }
    flush(&mut batch, &mut end)?;
    Ok((end, entries))
}

/// Every group record in the partition's log, in order. Entries that do
/// not decode are logged and skipped, as the store did with damaged ones.
fn read_records(partition: &Partition) -> Result<Vec<Record>, String> {
    let (start, end) = partition.with_log(|l| (l.log_start_offset(), l.log_end_offset()));
    let mut offset = start;
    let mut assembler = Assembler::default();
    let mut out = Vec::new();
    let mut skipped = 0usize;
    while offset < end {
        let read = partition
            .with_log(|l| l.read(offset, BATCH_BYTES * 2, end, true))
            .map_err(|e| e.to_string())?;
        let bytes = read.records;
        if bytes.is_empty() {
            break;
        }
        let mut pos = 0usize;
        while pos + HEADER_LEN <= bytes.len() {
            let header = BatchHeader::parse(&bytes[pos..]).map_err(|e| e.to_string())?;
            let size = header.total_size();
            if size < HEADER_LEN || pos + size > bytes.len() {
                break;
            }
            if !header.is_control() {
                veil_log::records::for_each_record(&bytes[pos..pos + size], |_, _, value| {
                    let decoded = value
                        .ok_or_else(|| codec::Malformed("a group record without a value".into()))
                        .and_then(codec::decode)
                        .and_then(|entry| assembler.push(entry));
                    match decoded {
                        Ok(Some(record)) => out.push(record),
                        Ok(None) => {}
                        Err(e) => {
                            skipped += 1;
                            tracing::warn!(error = %e, "skipping a damaged group record");
                        }
                    }
                    Ok(())
                })
                .map_err(|e| e.to_string())?;
            }
            let next = header.last_offset() + 1;
            if next <= offset {
                return Err(format!("batch at {offset} does not advance the log"));
            }
            offset = next;
            pos += size;
        }
    }
    for group in assembler.finish() {
        tracing::warn!(group = %group, "a group's metadata stopped short; its state before stands");
    }
    if skipped > 0 {
        tracing::warn!(skipped, "damaged group records were skipped");
    }
    Ok(out)
}

/// Deletes the log before a replicated snapshot.
async fn compact(partition: Arc<Partition>, start: i64) {
    let done = tokio::task::spawn_blocking(move || {
        partition.with_log_mut(|l| l.delete_records_before(start))
    })
    .await;
    match done {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "group records before a snapshot not deleted"),
        Err(e) => tracing::warn!(error = %e, "group records before a snapshot not deleted"),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::config::Config;
    use crate::group::record::CommittedOffset;
    use crate::test_fixture as fixture;

    fn offset(offset: i64) -> CommittedOffset {
        CommittedOffset {
            offset,
            leader_epoch: 1,
            metadata: "m".into(),
            commit_timestamp: 1_700_000_000_000,
            expire_timestamp: -1,
        }
    }

    fn config(dir: &Path) -> Config {
        let mut c = Config {
            data_dir: dir.to_path_buf(),
            ..Config::default()
        };
        c.groups.offsets_topic_partitions = 3;
        c
    }

    /// Polls `f` every 20 ms for at most 20 s.
    async fn eventually(mut f: impl FnMut() -> bool) -> bool {
        for _ in 0..1000 {
            if f() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }

    #[tokio::test]
    async fn an_older_group_store_moves_into_the_offsets_topic() {
        let dir = tempfile::tempdir().unwrap();
        let legacy = dir.path().join("groups");
        {
            let (mut store, _) = GroupStore::open(&legacy).unwrap();
            let mut records = Vec::new();
            for g in 0..20 {
                records.push(Record::Offsets {
                    group_id: format!("group-{g}"),
                    offsets: vec![("t".into(), 0, offset(100 + g))],
                });
            }
            let file = store.append(&records).unwrap();
            super::super::store::sync(&file).unwrap();
        }
        let clock = Arc::new(ManualClock::new(1_700_000_000_000));
        let state = fixture::state(config(dir.path()), clock).await;
        let moved = eventually(|| {
            (0..20).all(|g| {
                state.groups.read(|c| c.fetch(&format!("group-{g}"), None))
                    == vec![(("t".to_owned(), 0), Some(offset(100 + g)))]
            })
        })
        .await;
        assert!(moved, "the older store's offsets were not all loaded");
        assert!(
            eventually(|| !legacy.exists()).await,
            "the older store was not retired"
        );
        assert!(dir.path().join("groups.migrated").exists());
        // Every partition holds its share in its log now.
        let topic = state.topics.get(offsets_topic::NAME).unwrap();
        let mut total = 0;
        for i in 0..topic.partition_count() {
            let records = read_records(topic.partition(i).unwrap()).unwrap();
            assert!(records.iter().all(|r| partition_for(r.group_id(), 3) == i));
            total += records.len();
        }
        assert_eq!(total, 20);
    }

    #[tokio::test]
    async fn snapshots_bound_the_log_and_replay_to_the_same_state() {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new(1_700_000_000_000));
        let state = fixture::state(config(dir.path()), clock).await;
        offsets_topic::ensure(&state).await.unwrap();
        assert_eq!(offsets_topic::ready(&state, "g").await, Ok(()));
        // Enough commits, of one group and a few partitions, for several snapshots.
        for i in 0..150i64 {
            let ((), durable) = state.groups.run(|core, now, out| {
                let offsets = vec![("t".to_owned(), (i % 4) as i32, offset(i))];
                core.commit("g", "", offsets, now, out);
            });
            assert_eq!(durable.wait().await, None);
        }
        let p = partition_for("g", 3);
        let partition = Arc::clone(
            state
                .topics
                .get(offsets_topic::NAME)
                .unwrap()
                .partition(p)
                .unwrap(),
        );
        let start = partition.log_start_offset();
        assert!(
            start > 100,
            "log start {start}: nothing before a snapshot was deleted"
        );
        // What is left replays to exactly the live state.
        let mut replayed = Coordinator::new(state.groups.read(|c| c.config().clone()));
        for r in read_records(&partition).unwrap() {
            replayed.replay(r, 0);
        }
        let live = state.groups.read(|c| c.fetch("g", None));
        assert_eq!(replayed.fetch("g", None), live);
        assert_eq!(live.len(), 4);
        assert_eq!(live[3], (("t".to_owned(), 3), Some(offset(147))));
    }

    #[tokio::test]
    async fn nothing_is_coordinated_before_the_offsets_topic_exists() {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new(1_700_000_000_000));
        let state = fixture::state(config(dir.path()), clock).await;
        // Before the topic exists nothing is coordinated here.
        assert_eq!(state.groups.status("g"), Err(ResponseError::NotCoordinator));
        assert_eq!(offsets_topic::ready(&state, "g").await, Ok(()));
        assert_eq!(state.groups.status("g"), Ok(()));
        assert_eq!(
            offsets_topic::coordinator_of(&state, "g").await,
            Ok(state.node_id())
        );
    }
}
