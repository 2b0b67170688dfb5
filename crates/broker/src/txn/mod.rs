//! The transaction coordinator (KIP-98): transactional producers' ids and
//! epochs, the partitions of their open transactions, and the markers that
//! commit or abort them.
//!
//! Where the state lives: one [`veil_meta::TxnRecord`] per transactional id
//! in the metadata quorum. Every change is a Raft entry (fsynced by a
//! majority before the client is answered), every node holds the state, and
//! the coordinator of every transactional id is the controller (the quorum
//! leader): when it dies, the next controller finds the prepared
//! transactions and finishes their markers. Writes are compare-and-set
//! ([`veil_meta::TxnCommand`]), so a deposed coordinator cannot overwrite
//! its successor.
//!
//! Start at [`TransactionCoordinator`]: the decisions are pure functions in
//! [`state`] (tested with an injected clock); this module serialises
//! requests per transactional id, stores the decisions, and drives markers
//! ([`markers`]) until every partition of a prepared transaction holds one,
//! then completes it. A timer aborts transactions open past their timeout
//! (under a bumped epoch, fencing the producer) and forgets idle ids after
//! `transactional.id.expiration.ms`.

pub mod markers;
pub mod state;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::ResponseError;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;
use veil_meta::{MetaCommand, TxnCommand, TxnRecord};

use crate::error::Error;
use crate::state::BrokerState;

/// Transaction coordinator settings, named after Kafka's broker configs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TransactionsConfig {
    /// `transaction.max.timeout.ms`: a longer `transaction.timeout.ms` is
    /// refused with INVALID_TRANSACTION_TIMEOUT.
    pub max_timeout_ms: i32,
    /// `transactional.id.expiration.ms`: an id without a transaction for
    /// this long is forgotten.
    pub id_expiration_ms: i64,
    /// `transaction.abort.timed.out.transaction.cleanup.interval.ms`: how
    /// often open transactions are checked against their timeout.
    pub abort_timed_out_interval_ms: u64,
}

impl Default for TransactionsConfig {
    fn default() -> Self {
        TransactionsConfig {
            max_timeout_ms: 900_000,
            id_expiration_ms: 7 * 24 * 60 * 60 * 1000,
            abort_timed_out_interval_ms: 10_000,
        }
    }
}

impl TransactionsConfig {
    pub(crate) fn validate(&self) -> Result<(), String> {
        if self.max_timeout_ms < 1 {
            return Err("transactions.max_timeout_ms must be at least 1".into());
        }
        if self.id_expiration_ms < 1 {
            return Err("transactions.id_expiration_ms must be at least 1".into());
        }
        if !(10..=3_600_000).contains(&self.abort_timed_out_interval_ms) {
            return Err(
                "transactions.abort_timed_out_interval_ms must be between 10 and 3600000".into(),
            );
        }
        Ok(())
    }
}

/// The async edge of the coordinator.
#[derive(Debug, Default)]
pub struct TransactionCoordinator {
    /// One lock per transactional id: its requests are decided one at a time.
    locks: parking_lot::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Ids whose markers a task is writing.
    completing: parking_lot::Mutex<HashSet<String>>,
}

/// How long a produce waits for this node's metadata to show the partition
/// a transaction just added (the coordinator may be another node).
const VERIFY_WAIT: Duration = Duration::from_secs(2);
/// Backoff between marker rounds while a partition cannot take its marker.
const MARKER_RETRY_MAX: Duration = Duration::from_secs(1);

impl TransactionCoordinator {
    fn lock_for(&self, id: &str) -> Arc<tokio::sync::Mutex<()>> {
        Arc::clone(self.locks.lock().entry(id.to_owned()).or_default())
    }

    /// This node coordinates transactions while it is the controller.
    fn check_coordinator(state: &BrokerState) -> Result<(), ResponseError> {
        if state.cluster.quorum.is_controller() {
            Ok(())
        } else {
            Err(ResponseError::NotCoordinator)
        }
    }

    /// The node clients should ask: the controller.
    pub fn coordinator_node(state: &BrokerState) -> Option<i32> {
        state.cluster.quorum.controller()
    }

    fn record(state: &BrokerState, id: &str) -> Option<TxnRecord> {
        state.with_meta(|m| m.transaction(id).cloned())
    }

    /// Stores `next` in place of `previous`.
    async fn store(
        state: &Arc<BrokerState>,
        id: &str,
        previous: Option<TxnRecord>,
        next: Option<TxnRecord>,
    ) -> Result<(), ResponseError> {
        let cmd = MetaCommand::Transaction(TxnCommand {
            transactional_id: id.to_owned(),
            previous,
            next,
        });
        match state.commit(cmd).await {
            Ok(()) => Ok(()),
            Err(Error::Meta(veil_meta::Error::TxnConflict(_))) => {
                Err(ResponseError::ConcurrentTransactions)
            }
            Err(e) => {
                tracing::warn!(error = %e, "transaction state not stored");
                Err(if state.cluster.quorum.is_controller() {
                    ResponseError::CoordinatorNotAvailable
                } else {
                    ResponseError::NotCoordinator
                })
            }
        }
    }

    /// InitProducerId with a transactional id: the producer id and epoch.
    pub async fn init_producer_id(
        self: &Arc<Self>,
        state: &Arc<BrokerState>,
        id: &str,
        timeout_ms: i32,
        expected: (i64, i16),
    ) -> Result<(i64, i16), ResponseError> {
        Self::check_coordinator(state)?;
        let lock = self.lock_for(id);
        let _held = lock.lock().await;
        let current = Self::record(state, id);
        let now = state.clock.now_ms();
        let max = state.config.transactions.max_timeout_ms;
        let next = match state::init(current.as_ref(), timeout_ms, expected, max, now) {
            state::Init::Store(next) => next,
            state::Init::NeedsProducerId => {
                let producer_id = state.producer_ids.next(state).await.map_err(|e| {
                    tracing::error!(error = %e, "reserving producer ids failed");
                    ResponseError::CoordinatorNotAvailable
                })?;
                state::init_with_new_id(producer_id, timeout_ms, now)
            }
            state::Init::FenceAndAbort(next) => {
                Self::store(state, id, current, Some(next)).await?;
                self.spawn_completion(state, id);
                return Err(ResponseError::ConcurrentTransactions);
            }
            state::Init::Refuse(e) => return Err(e),
        };
        let answer = (next.producer_id, next.producer_epoch);
        Self::store(state, id, current, Some(next)).await?;
        Ok(answer)
    }

    /// AddPartitionsToTxn and AddOffsetsToTxn (whose partition is the
    /// group's `__consumer_offsets` partition).
    pub async fn add_partitions(
        self: &Arc<Self>,
        state: &Arc<BrokerState>,
        id: &str,
        producer: (i64, i16),
        partitions: &BTreeSet<(String, i32)>,
    ) -> Result<(), ResponseError> {
        Self::check_coordinator(state)?;
        let lock = self.lock_for(id);
        let _held = lock.lock().await;
        let current = Self::record(state, id);
        let now = state.clock.now_ms();
        match state::add_partitions(current.as_ref(), producer.0, producer.1, partitions, now)? {
            Some(next) => Self::store(state, id, current, Some(next)).await,
            None => Ok(()),
        }
    }

    /// Whether the partitions are in the producer's open transaction, without
    /// changing anything (AddPartitionsToTxn v4+ `verify_only`).
    pub fn verify_only(
        state: &BrokerState,
        id: &str,
        producer: (i64, i16),
        partition: &(String, i32),
    ) -> Result<(), ResponseError> {
        state::verify(
            Self::record(state, id).as_ref(),
            producer.0,
            producer.1,
            partition,
        )
    }

    /// EndTxn: prepares the commit or abort, answers, and writes the markers.
    pub async fn end(
        self: &Arc<Self>,
        state: &Arc<BrokerState>,
        id: &str,
        producer: (i64, i16),
        commit: bool,
    ) -> Result<(), ResponseError> {
        Self::check_coordinator(state)?;
        let lock = self.lock_for(id);
        let _held = lock.lock().await;
        let current = Self::record(state, id);
        let now = state.clock.now_ms();
        match state::end(current.as_ref(), producer.0, producer.1, commit, now) {
            state::End::Store(next) => {
                let preparing = next.state.is_preparing();
                Self::store(state, id, current, Some(next)).await?;
                if preparing {
                    self.spawn_completion(state, id);
                }
                Ok(())
            }
            state::End::AlreadyDone => Ok(()),
            state::End::Refuse(e) => Err(e),
        }
    }

    /// A transactional produce may append only to a partition of the
    /// producer's open transaction (KIP-890 part 1: no hanging transaction
    /// from a late or stray write). This node's copy of the metadata may lag
    /// the coordinator's by a moment, so a miss waits for it.
    pub async fn verify(
        state: &BrokerState,
        id: &str,
        producer: (i64, i16),
        partition: &(String, i32),
    ) -> Result<(), ResponseError> {
        let deadline = tokio::time::Instant::now() + VERIFY_WAIT;
        let mut published = state.watch_published();
        loop {
            let verdict = Self::verify_only(state, id, producer, partition);
            if verdict.is_ok() {
                return verdict;
            }
            match tokio::time::timeout_at(deadline, published.changed()).await {
                Ok(Ok(())) => {}
                _ => return verdict,
            }
        }
    }

    /// Starts writing the markers of a prepared transaction (once per id).
    fn spawn_completion(self: &Arc<Self>, state: &Arc<BrokerState>, id: &str) {
        if !self.completing.lock().insert(id.to_owned()) {
            return;
        }
        let (me, state, id) = (Arc::clone(self), Arc::clone(state), id.to_owned());
        tokio::spawn(async move {
            me.complete(&state, &id).await;
            me.completing.lock().remove(&id);
        });
    }

    /// Writes the markers of `id`'s prepared transaction until every
    /// partition holds one, then stores it complete. Stops when this node
    /// stops coordinating (the next controller takes over) or shuts down.
    async fn complete(self: &Arc<Self>, state: &Arc<BrokerState>, id: &str) {
        let mut written: BTreeSet<(String, i32)> = BTreeSet::new();
        let mut backoff = Duration::from_millis(20);
        let stop = state.background_token();
        loop {
            if Self::check_coordinator(state).is_err() || stop.is_cancelled() {
                return;
            }
            let Some(record) = Self::record(state, id).filter(|r| r.state.is_preparing()) else {
                return;
            };
            let commit = record.state == veil_meta::TxnState::PrepareCommit;
            let due: Vec<(String, i32)> = record.partitions.difference(&written).cloned().collect();
            let done = markers::write_all(state, &record, commit, &due).await;
            written.extend(done);
            if record.partitions.is_subset(&written) {
                let lock = self.lock_for(id);
                let _held = lock.lock().await;
                let current = Self::record(state, id);
                if current.as_ref() != Some(&record) {
                    // Changed meanwhile (another coordinator finished it).
                    return;
                }
                let Some(next) = state::complete(&record, state.clock.now_ms()) else {
                    return;
                };
                match Self::store(state, id, current, Some(next)).await {
                    Ok(()) => {
                        tracing::debug!(transactional_id = %id, commit, "transaction completed");
                        return;
                    }
                    Err(e) => {
                        tracing::warn!(transactional_id = %id, error = %e, "completing a transaction failed; retrying");
                    }
                }
            }
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(MARKER_RETRY_MAX);
        }
    }

    /// Finishes prepared transactions nobody is finishing (after a
    /// coordinator change or a restart).
    pub fn resume_prepared(self: &Arc<Self>, state: &Arc<BrokerState>) {
        if Self::check_coordinator(state).is_err() {
            return;
        }
        let preparing: Vec<String> = state.with_meta(|m| {
            m.transactions()
                .filter(|(_, r)| r.state.is_preparing())
                .map(|(id, _)| id.clone())
                .collect()
        });
        for id in preparing {
            self.spawn_completion(state, &id);
        }
    }

    /// Aborts transactions open past their timeout and forgets expired ids.
    pub async fn expire(self: &Arc<Self>, state: &Arc<BrokerState>) {
        if Self::check_coordinator(state).is_err() {
            return;
        }
        let now = state.clock.now_ms();
        let expiration = state.config.transactions.id_expiration_ms;
        let records: Vec<(String, TxnRecord)> = state.with_meta(|m| {
            m.transactions()
                .filter(|(_, r)| !r.state.is_preparing())
                .map(|(id, r)| (id.clone(), r.clone()))
                .collect()
        });
        for (id, record) in records {
            let next = if let Some(aborting) = state::abort_if_timed_out(&record, now) {
                Some(aborting)
            } else if state::expired(&record, expiration, now) {
                None
            } else {
                continue;
            };
            let lock = self.lock_for(&id);
            let _held = lock.lock().await;
            if Self::record(state, &id).as_ref() != Some(&record) {
                continue; // changed meanwhile
            }
            let aborting = next.is_some();
            if aborting {
                tracing::info!(transactional_id = %id, producer_id = record.producer_id,
                    timeout_ms = record.timeout_ms, "aborting a transaction open past its timeout");
            }
            if Self::store(state, &id, Some(record), next).await.is_ok() && aborting {
                self.spawn_completion(state, &id);
            }
        }
        // Locks of ids nobody waits on are dropped.
        self.locks.lock().retain(|_, l| Arc::strong_count(l) > 1);
    }
}

/// How often a coordinator looks for prepared transactions to finish.
const RESUME_EVERY: Duration = Duration::from_millis(250);

/// The coordinator's timer task: prepared transactions are resumed within
/// [`RESUME_EVERY`] of this node becoming coordinator; timeouts and expiry
/// are checked every `abort_timed_out_interval_ms`.
pub async fn run_timers(state: std::sync::Weak<BrokerState>, shutdown: CancellationToken) {
    let Some(interval) = state
        .upgrade()
        .map(|s| Duration::from_millis(s.config.transactions.abort_timed_out_interval_ms))
    else {
        return;
    };
    let mut next_expiry = tokio::time::Instant::now() + interval;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(RESUME_EVERY.min(interval)) => {}
        }
        let Some(state) = state.upgrade() else {
            return;
        };
        let coordinator = Arc::clone(&state.transactions);
        coordinator.resume_prepared(&state);
        if tokio::time::Instant::now() >= next_expiry {
            coordinator.expire(&state).await;
            next_expiry = tokio::time::Instant::now() + interval;
        }
    }
}
