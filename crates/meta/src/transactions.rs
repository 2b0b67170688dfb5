//! Transaction coordinator state (KIP-98): one record per transactional id,
//! kept in the metadata quorum so every node holds it and it survives the
//! coordinator's node.
//!
//! The broker's coordinator decides transitions; the state machine only
//! stores them, with a compare-and-set: a [`TxnCommand`] names the record it
//! replaces, so two coordinators racing on one id (one of them deposed) can
//! never both win.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Kafka's transaction states (`TransactionState`), without `Dead` (a
/// removed record is simply absent).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TxnState {
    Empty,
    Ongoing,
    PrepareCommit,
    PrepareAbort,
    CompleteCommit,
    CompleteAbort,
    /// Aborting a transaction of a producer that was fenced; the epoch has
    /// been bumped already.
    PrepareEpochFence,
}

impl TxnState {
    /// The name Kafka's DescribeTransactions and ListTransactions use.
    pub fn kafka_name(self) -> &'static str {
        match self {
            TxnState::Empty => "Empty",
            TxnState::Ongoing => "Ongoing",
            TxnState::PrepareCommit => "PrepareCommit",
            TxnState::PrepareAbort | TxnState::PrepareEpochFence => "PrepareAbort",
            TxnState::CompleteCommit => "CompleteCommit",
            TxnState::CompleteAbort => "CompleteAbort",
        }
    }

    /// Whether markers are being written.
    pub fn is_preparing(self) -> bool {
        matches!(
            self,
            TxnState::PrepareCommit | TxnState::PrepareAbort | TxnState::PrepareEpochFence
        )
    }
}

/// One transactional id's producer and transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnRecord {
    pub producer_id: i64,
    pub producer_epoch: i16,
    /// `transaction.timeout.ms` the producer asked for (capped).
    pub timeout_ms: i32,
    pub state: TxnState,
    /// Partitions written in the current transaction (topic, partition).
    pub partitions: BTreeSet<(String, i32)>,
    /// When the current transaction started (-1 when none).
    pub start_ms: i64,
    /// Last change; drives `transactional.id.expiration.ms`.
    pub updated_ms: i64,
}

/// A change to one transactional id, applied only if the stored record is
/// still `previous` (`None`: no record).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnCommand {
    pub transactional_id: String,
    pub previous: Option<TxnRecord>,
    /// `None` removes the record (expiry).
    pub next: Option<TxnRecord>,
}

/// Kafka's limit on a transactional id is the string length of its wire
/// format; records here are also bounded by what a Raft entry may hold.
pub const MAX_TRANSACTIONAL_ID_LEN: usize = 32_767;
/// Partitions one transaction may hold in the metadata (far above what
/// clients write; bounds an entry's size).
pub const MAX_TXN_PARTITIONS: usize = 100_000;

/// Checks that `cmd` replaces exactly what is stored.
pub fn check(current: Option<&TxnRecord>, cmd: &TxnCommand) -> Result<()> {
    if cmd.transactional_id.is_empty() || cmd.transactional_id.len() > MAX_TRANSACTIONAL_ID_LEN {
        return Err(Error::TxnConflict("invalid transactional id".into()));
    }
    if cmd
        .next
        .as_ref()
        .is_some_and(|n| n.partitions.len() > MAX_TXN_PARTITIONS)
    {
        return Err(Error::TxnConflict(format!(
            "a transaction may hold at most {MAX_TXN_PARTITIONS} partitions"
        )));
    }
    if current != cmd.previous.as_ref() {
        return Err(Error::TxnConflict(format!(
            "transactional id '{}' changed concurrently",
            cmd.transactional_id
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(epoch: i16, state: TxnState) -> TxnRecord {
        TxnRecord {
            producer_id: 1,
            producer_epoch: epoch,
            timeout_ms: 60_000,
            state,
            partitions: BTreeSet::new(),
            start_ms: -1,
            updated_ms: 0,
        }
    }

    #[test]
    fn only_a_change_of_the_stored_record_applies() {
        let put = |previous, next| TxnCommand {
            transactional_id: "t".into(),
            previous,
            next,
        };
        let a = record(0, TxnState::Empty);
        let b = record(0, TxnState::Ongoing);
        assert!(check(None, &put(None, Some(a.clone()))).is_ok());
        assert!(check(Some(&a), &put(None, Some(b.clone()))).is_err());
        assert!(check(Some(&a), &put(Some(a.clone()), Some(b.clone()))).is_ok());
        assert!(check(Some(&b), &put(Some(a.clone()), None)).is_err());
        let mut empty_id = put(None, Some(a));
        empty_id.transactional_id.clear();
        assert!(check(None, &empty_id).is_err());
    }
}
