//! The Raft store's conformance (openraft's storage suite) and its
//! durability: reopen, torn tails, and poisoning after injected failures.

use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use openraft::storage::{RaftLogStorage, RaftStateMachine};
use openraft::testing::{StoreBuilder, Suite};
use openraft::{CommittedLeaderId, EntryPayload, RaftLogReader};

use super::log_store::{LogFile, LogStore};
use super::state_machine::MetaStateMachine;
use super::{Entry, LogId, StorageError, TypeConfig};
use crate::{MetaCommand, TopicConfigs};

struct Builder;

impl StoreBuilder<TypeConfig, LogStore, MetaStateMachine, tempfile::TempDir> for Builder {
    async fn build(&self) -> Result<(tempfile::TempDir, LogStore, MetaStateMachine), StorageError> {
        let dir = tempfile::tempdir().unwrap();
        let log = LogStore::open(&dir.path().join("log")).unwrap();
        let sm = MetaStateMachine::open(&dir.path().join("sm")).unwrap();
        Ok((dir, log, sm))
    }
}

#[test]
fn conforms_to_the_openraft_storage_suite() {
    Suite::test_all(Builder).unwrap();
}

fn log_id(term: u64, index: u64) -> LogId {
    LogId::new(CommittedLeaderId::new(term, 1), index)
}

fn command(name: &str) -> MetaCommand {
    MetaCommand::AllocateProducerIds {
        block_start: 0,
        block_size: i64::try_from(name.len()).unwrap(),
    }
}

fn entry(term: u64, index: u64) -> Entry {
    Entry {
        log_id: log_id(term, index),
        payload: EntryPayload::Normal(command(&"x".repeat(index as usize % 7 + 1))),
    }
}

/// Appends through the storage API and waits for the flush callback.
async fn append(store: &mut LogStore, entries: Vec<Entry>) -> Result<(), StorageError> {
    use openraft::storage::RaftLogStorageExt;
    store.blocking_append(entries).await
}

async fn indexes(store: &mut LogStore) -> Vec<u64> {
    store
        .try_get_log_entries(0..)
        .await
        .unwrap()
        .iter()
        .map(|e| e.log_id.index)
        .collect()
}

#[tokio::test]
async fn entries_vote_truncation_and_purge_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = LogStore::open(dir.path()).unwrap();
    append(&mut store, (1..=10).map(|i| entry(1, i)).collect())
        .await
        .unwrap();
    store
        .save_vote(&openraft::Vote::new_committed(2, 1))
        .await
        .unwrap();
    store.truncate(log_id(1, 8)).await.unwrap();
    append(&mut store, vec![entry(2, 8)]).await.unwrap();
    store.purge(log_id(1, 3)).await.unwrap();
    drop(store);

    let mut store = LogStore::open(dir.path()).unwrap();
    assert_eq!(indexes(&mut store).await, (4..=8).collect::<Vec<_>>());
    let state = store.get_log_state().await.unwrap();
    assert_eq!(state.last_purged_log_id, Some(log_id(1, 3)));
    assert_eq!(state.last_log_id, Some(log_id(2, 8)));
    assert_eq!(
        store.read_vote().await.unwrap(),
        Some(openraft::Vote::new_committed(2, 1))
    );
}

#[tokio::test]
async fn a_torn_last_frame_is_dropped_but_damage_before_the_end_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = LogStore::open(dir.path()).unwrap();
    append(&mut store, (1..=3).map(|i| entry(1, i)).collect())
        .await
        .unwrap();
    drop(store);
    let path = dir.path().join("raft.log");
    let full = std::fs::read(&path).unwrap();
    std::fs::write(&path, &full[..full.len() - 5]).unwrap();
    let mut store = LogStore::open(dir.path()).unwrap();
    assert_eq!(indexes(&mut store).await, vec![1, 2]);
    drop(store);
    let mut damaged = std::fs::read(&path).unwrap();
    damaged[12] ^= 0xff;
    std::fs::write(&path, &damaged).unwrap();
    assert!(matches!(
        LogStore::open(dir.path()),
        Err(crate::Error::Corrupt { .. })
    ));
}

/// A log file that can be told to fail: a write that lands only some bytes,
/// or an fsync that fails.
struct Faulty {
    file: std::fs::File,
    fail_write_after: Arc<AtomicUsize>,
    fail_sync: Arc<AtomicBool>,
}

impl LogFile for Faulty {
    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        let limit = self.fail_write_after.load(Ordering::SeqCst);
        if bytes.len() > limit {
            io::Write::write_all(&mut self.file, &bytes[..limit])?;
            return Err(io::Error::new(io::ErrorKind::StorageFull, "disk full"));
        }
        io::Write::write_all(&mut self.file, bytes)
    }
    fn sync_data(&mut self) -> io::Result<()> {
        if self.fail_sync.load(Ordering::SeqCst) {
            return Err(io::Error::other("fsync failed"));
        }
        self.file.sync_data()
    }
    fn set_len(&mut self, len: u64) -> io::Result<()> {
        self.file.set_len(len)
    }
}

fn faulty_store(dir: &Path) -> (LogStore, Arc<AtomicUsize>, Arc<AtomicBool>) {
    let limit = Arc::new(AtomicUsize::new(usize::MAX));
    let sync = Arc::new(AtomicBool::new(false));
    let (l, s) = (Arc::clone(&limit), Arc::clone(&sync));
    let store = LogStore::open_with(
        dir,
        Arc::new(move |p: &Path| {
            let file = std::fs::OpenOptions::new()
                .append(true)
                .create(true)
                .open(p)?;
            Ok(Box::new(Faulty {
                file,
                fail_write_after: Arc::clone(&l),
                fail_sync: Arc::clone(&s),
            }) as Box<dyn LogFile>)
        }),
    )
    .unwrap();
    (store, limit, sync)
}

#[tokio::test]
async fn a_failed_write_mid_frame_poisons_and_reopen_holds_exactly_the_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, limit, _) = faulty_store(dir.path());
    append(&mut store, vec![entry(1, 1), entry(1, 2)])
        .await
        .unwrap();
    limit.store(7, Ordering::SeqCst);
    assert!(append(&mut store, vec![entry(1, 3)]).await.is_err());
    limit.store(usize::MAX, Ordering::SeqCst);
    // The disk has room again, but the store refuses: it is poisoned.
    for i in 3..6 {
        assert!(append(&mut store, vec![entry(1, i)]).await.is_err());
    }
    assert!(store.is_poisoned());
    assert!(store.get_log_state().await.is_err());
    assert!(store.save_vote(&openraft::Vote::new(3, 1)).await.is_err());
    drop(store);
    let mut store = LogStore::open(dir.path()).unwrap();
    assert_eq!(indexes(&mut store).await, vec![1, 2]);
}

#[tokio::test]
async fn a_failed_fsync_poisons_and_the_next_index_is_not_reused() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, _, sync) = faulty_store(dir.path());
    append(&mut store, vec![entry(1, 1)]).await.unwrap();
    sync.store(true, Ordering::SeqCst);
    assert!(append(&mut store, vec![entry(1, 2)]).await.is_err());
    sync.store(false, Ordering::SeqCst);
    assert!(append(&mut store, vec![entry(1, 2)]).await.is_err());
    drop(store);
    // The unacknowledged frame may or may not be on disk (the page cache
    // kept it); either way nothing after it was written, so the log is a
    // clean prefix and Raft decides whether entry 2 stays.
    let mut store = LogStore::open(dir.path()).unwrap();
    let got = indexes(&mut store).await;
    assert!(got == vec![1] || got == vec![1, 2], "{got:?}");
}

#[tokio::test]
async fn the_state_machine_applies_commands_and_restores_from_its_snapshot() {
    use openraft::RaftSnapshotBuilder;
    let dir = tempfile::tempdir().unwrap();
    let mut sm = MetaStateMachine::open(dir.path()).unwrap();
    let view = sm.view();
    let create = MetaCommand::RegisterBroker {
        node_id: 1,
        incarnation: uuid::Uuid::new_v4(),
        listeners: vec![],
        internal: None,
        rack: None,
    };
    let topic = MetaCommand::CreateTopic {
        name: "t".into(),
        topic_id: uuid::Uuid::new_v4(),
        partitions: 1,
        replication_factor: 1,
        configs: TopicConfigs::new(),
        assignments: vec![vec![1]],
    };
    let outcomes = sm
        .apply(vec![
            Entry {
                log_id: log_id(1, 1),
                payload: EntryPayload::Blank,
            },
            Entry {
                log_id: log_id(1, 2),
                payload: EntryPayload::Normal(create),
            },
            Entry {
                log_id: log_id(1, 3),
                payload: EntryPayload::Normal(topic.clone()),
            },
            Entry {
                log_id: log_id(1, 4),
                payload: EntryPayload::Normal(topic),
            },
        ])
        .await
        .unwrap();
    assert!(outcomes[..3].iter().all(Result::is_ok));
    assert!(
        matches!(outcomes[3], Err(super::Rejection::TopicExists(_))),
        "a duplicate is refused but still counts as applied"
    );
    assert_eq!(view.applied(), 4);
    assert_eq!(
        view.read(|s| s.topic("t").unwrap().assignments[0].leader),
        1
    );
    let mut builder = sm.get_snapshot_builder().await;
    builder.build_snapshot().await.unwrap();
    drop(sm);
    let mut sm = MetaStateMachine::open(dir.path()).unwrap();
    let (applied, _) = sm.applied_state().await.unwrap();
    assert_eq!(applied, Some(log_id(1, 4)));
    assert!(sm.view().read(|s| s.topic("t").is_some()));
}
