//! The transaction coordinator's decisions, as pure functions of the stored
//! record, the request and the time (Kafka's `TransactionCoordinator` and
//! `TransactionMetadata` rules, KIP-98 with KIP-360's epoch bumps).
//!
//! Each function answers what to store next (a [`TxnRecord`] the caller
//! writes with a compare-and-set) and what to tell the client. Nothing here
//! does I/O, so every transition is tested with an injected clock.

use std::collections::BTreeSet;

use kafka_protocol::ResponseError;
use veil_meta::{TxnRecord, TxnState};

/// An epoch this close to `i16::MAX` is not bumped: the producer gets a new id.
const LAST_EPOCH: i16 = i16::MAX - 1;

/// What InitProducerId does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Init {
    /// Store `next` and answer its producer id and epoch.
    Store(TxnRecord),
    /// A fresh producer id is needed first (no record yet, or the epoch is
    /// exhausted): call [`init_with_new_id`].
    NeedsProducerId,
    /// The producer's transaction is still open: store `next` (its epoch
    /// bumped, aborting) and answer CONCURRENT_TRANSACTIONS; the client
    /// retries and gets the epoch after the abort.
    FenceAndAbort(TxnRecord),
    Refuse(ResponseError),
}

/// InitProducerId for a transactional id. `expected` is the producer id and
/// epoch a v3+ client sends when it re-initialises (KIP-360), -1/-1 otherwise.
pub fn init(
    current: Option<&TxnRecord>,
    timeout_ms: i32,
    expected: (i64, i16),
    max_timeout_ms: i32,
    now: i64,
) -> Init {
    if timeout_ms <= 0 || timeout_ms > max_timeout_ms {
        return Init::Refuse(ResponseError::InvalidTransactionTimeout);
    }
    let Some(current) = current else {
        return Init::NeedsProducerId;
    };
    if expected.0 >= 0
        && (expected.0 != current.producer_id || expected.1 != current.producer_epoch)
    {
        // KIP-360: only the current producer may re-initialise this way.
        return Init::Refuse(ResponseError::ProducerFenced);
    }
    match current.state {
        TxnState::PrepareCommit | TxnState::PrepareAbort | TxnState::PrepareEpochFence => {
            Init::Refuse(ResponseError::ConcurrentTransactions)
        }
        TxnState::Ongoing => {
            // Fence the old producer: its transaction is aborted under a new epoch.
            if current.producer_epoch >= LAST_EPOCH {
                // Abort under the last epoch; the retry then gets a new id.
                return Init::FenceAndAbort(TxnRecord {
                    state: TxnState::PrepareEpochFence,
                    updated_ms: now,
                    ..current.clone()
                });
            }
            Init::FenceAndAbort(TxnRecord {
                producer_epoch: current.producer_epoch + 1,
                state: TxnState::PrepareEpochFence,
                updated_ms: now,
                ..current.clone()
            })
        }
        TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort => {
            if current.producer_epoch >= LAST_EPOCH {
                return Init::NeedsProducerId;
            }
            Init::Store(TxnRecord {
                producer_epoch: current.producer_epoch + 1,
                timeout_ms,
                state: TxnState::Empty,
                partitions: BTreeSet::new(),
                start_ms: -1,
                updated_ms: now,
                ..current.clone()
            })
        }
    }
}

/// The record for a producer id just allocated (epoch 0, no transaction).
pub fn init_with_new_id(producer_id: i64, timeout_ms: i32, now: i64) -> TxnRecord {
    TxnRecord {
        producer_id,
        producer_epoch: 0,
        timeout_ms,
        state: TxnState::Empty,
        partitions: BTreeSet::new(),
        start_ms: -1,
        updated_ms: now,
    }
}

/// The producer id and epoch in a request against the stored record.
fn check_producer(
    current: Option<&TxnRecord>,
    producer_id: i64,
    epoch: i16,
) -> Result<&TxnRecord, ResponseError> {
    let current = current.ok_or(ResponseError::InvalidProducerIdMapping)?;
    if current.producer_id != producer_id {
        return Err(ResponseError::InvalidProducerIdMapping);
    }
    if epoch != current.producer_epoch {
        return Err(ResponseError::ProducerFenced);
    }
    Ok(current)
}

/// AddPartitionsToTxn / AddOffsetsToTxn: `Ok(None)` when every partition is
/// already in the open transaction (nothing to store).
pub fn add_partitions(
    current: Option<&TxnRecord>,
    producer_id: i64,
    epoch: i16,
    partitions: &BTreeSet<(String, i32)>,
    now: i64,
) -> Result<Option<TxnRecord>, ResponseError> {
    let current = check_producer(current, producer_id, epoch)?;
    match current.state {
        TxnState::PrepareCommit | TxnState::PrepareAbort | TxnState::PrepareEpochFence => {
            Err(ResponseError::ConcurrentTransactions)
        }
        TxnState::Ongoing if partitions.is_subset(&current.partitions) => Ok(None),
        TxnState::Ongoing => {
            let mut next = current.clone();
            next.partitions.extend(partitions.iter().cloned());
            next.updated_ms = now;
            Ok(Some(next))
        }
        TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort => {
            Ok(Some(TxnRecord {
                state: TxnState::Ongoing,
                partitions: partitions.clone(),
                start_ms: now,
                updated_ms: now,
                ..current.clone()
            }))
        }
    }
}

/// What EndTxn does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// Store `next` (a prepare state, or complete when no partition was
    /// written) and answer success; markers follow.
    Store(TxnRecord),
    /// A retry of an EndTxn that already completed the same way.
    AlreadyDone,
    Refuse(ResponseError),
}

/// EndTxn with `commit` true (commit) or false (abort).
pub fn end(
    current: Option<&TxnRecord>,
    producer_id: i64,
    epoch: i16,
    commit: bool,
    now: i64,
) -> End {
    let current = match check_producer(current, producer_id, epoch) {
        Ok(c) => c,
        Err(e) => return End::Refuse(e),
    };
    match (current.state, commit) {
        (TxnState::Ongoing, _) => {
            let state = match (commit, current.partitions.is_empty()) {
                (true, false) => TxnState::PrepareCommit,
                (false, false) => TxnState::PrepareAbort,
                (true, true) => TxnState::CompleteCommit,
                (false, true) => TxnState::CompleteAbort,
            };
            End::Store(TxnRecord {
                state,
                updated_ms: now,
                ..current.clone()
            })
        }
        (TxnState::CompleteCommit, true) | (TxnState::CompleteAbort, false) => End::AlreadyDone,
        (TxnState::PrepareCommit, true) | (TxnState::PrepareAbort, false) => {
            End::Refuse(ResponseError::ConcurrentTransactions)
        }
        _ => End::Refuse(ResponseError::InvalidTxnState),
    }
}

/// The record once every marker of a prepared transaction is written.
pub fn complete(current: &TxnRecord, now: i64) -> Option<TxnRecord> {
    let state = match current.state {
        TxnState::PrepareCommit => TxnState::CompleteCommit,
        TxnState::PrepareAbort | TxnState::PrepareEpochFence => TxnState::CompleteAbort,
        _ => return None,
    };
    Some(TxnRecord {
        state,
        partitions: BTreeSet::new(),
        start_ms: -1,
        updated_ms: now,
        ..current.clone()
    })
}

/// A transaction open longer than its timeout is aborted by the coordinator
/// under a bumped epoch, so the producer that left it is fenced.
pub fn abort_if_timed_out(current: &TxnRecord, now: i64) -> Option<TxnRecord> {
    if current.state != TxnState::Ongoing
        || now.saturating_sub(current.start_ms) <= i64::from(current.timeout_ms)
    {
        return None;
    }
    Some(TxnRecord {
        producer_epoch: if current.producer_epoch >= LAST_EPOCH {
            current.producer_epoch
        } else {
            current.producer_epoch + 1
        },
        state: TxnState::PrepareEpochFence,
        updated_ms: now,
        ..current.clone()
    })
}

/// An idle transactional id is forgotten after `transactional.id.expiration.ms`.
pub fn expired(current: &TxnRecord, expiration_ms: i64, now: i64) -> bool {
    matches!(
        current.state,
        TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort
    ) && now.saturating_sub(current.updated_ms) > expiration_ms
}

/// Whether `producer_id` at `epoch` may write to `partition` now (KIP-890:
/// the partition was added to its open transaction).
pub fn verify(
    current: Option<&TxnRecord>,
    producer_id: i64,
    epoch: i16,
    partition: &(String, i32),
) -> Result<(), ResponseError> {
    let current = check_producer(current, producer_id, epoch)?;
    if current.state == TxnState::Ongoing && current.partitions.contains(partition) {
        Ok(())
    } else {
        Err(ResponseError::InvalidTxnState)
    }
}

#[cfg(test)]
mod tests;
