//! Idempotent-producer state of one partition (KIP-98, with KIP-360's rules): per producer id, the
//! current epoch and the last five appended batches' sequence ranges and offsets, so a retried batch
//! is answered with its original offsets instead of being written twice, and a gap or a stale epoch
//! is refused.
//!
//! Only batch headers are read: no per-record work. The rules follow Kafka's broker:
//! * a stale epoch (< current) → [`Error::InvalidProducerEpoch`] (what Kafka answers since 2.7);
//! * a newer epoch must start at sequence 0 unless the producer is unknown;
//! * same epoch → `first_seq == last_seq + 1` (with `i32::MAX` wrapping to 0);
//! * an unknown producer id is accepted with any sequence (KIP-360: its state may have been
//!   removed by retention or expiry, so UNKNOWN_PRODUCER_ID is no longer returned);
//! * a batch whose epoch and `(first_seq, last_seq)` match one of the cached five is a duplicate.
//!
//! Transactions (KIP-98): a producer's first transactional batch opens its
//! transaction in the partition (its offset bounds the last stable offset);
//! a marker written by the transaction coordinator closes it, and an abort
//! marker adds the transaction's offset range to the aborted list that
//! `read_committed` fetches return.
//!
//! Durability lives in `producer_state/snapshot.rs`.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use crate::batch::BatchHeader;
use crate::error::{Error, Result};
use crate::markers::Marker;

pub(crate) mod snapshot;

/// Kafka keeps this many batches per producer; the Java client and librdkafka never have more
/// than five requests in flight per partition with idempotence on.
pub const RETAINED_BATCHES: usize = 5;
/// Kafka's `producer.id.expiration.ms` default: one day.
pub const PRODUCER_ID_EXPIRATION_MS: i64 = 24 * 60 * 60 * 1000;
/// Kafka's `RecordBatch.NO_PRODUCER_EPOCH`.
const NO_PRODUCER_EPOCH: i16 = -1;
/// A producer id the partition has no state for.
static UNKNOWN: ProducerEntry = ProducerEntry {
    epoch: NO_PRODUCER_EPOCH,
    batches: VecDeque::new(),
    last_timestamp: -1,
    txn_first_offset: None,
};

/// A transaction aborted in this partition: `read_committed` consumers skip
/// the producer's batches in `[first_offset, last_offset]` (the last is the
/// abort marker). Kafka's `AbortedTxn`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AbortedTxn {
    pub producer_id: i64,
    pub first_offset: i64,
    pub last_offset: i64,
    /// The last stable offset when the marker was written.
    pub last_stable_offset: i64,
}

/// One appended batch of a producer, as retries need to recognise and answer it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchMetadata {
    pub first_seq: i32,
    pub last_seq: i32,
    pub first_offset: i64,
    pub last_offset: i64,
    /// The batch's max timestamp as stored (the broker's time under LogAppendTime).
    pub max_timestamp: i64,
}

/// What the partition remembers of one producer id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProducerEntry {
    pub epoch: i16,
    /// Oldest first, at most [`RETAINED_BATCHES`], all of `epoch` (an epoch change clears them).
    pub batches: VecDeque<BatchMetadata>,
    /// Max timestamp of the last batch; drives expiry, as in Kafka.
    pub last_timestamp: i64,
    /// Offset of the producer's first batch in its open transaction here.
    pub txn_first_offset: Option<i64>,
}

/// The last sequence number of a batch: `base + delta`, wrapping past `i32::MAX` to 0 as Kafka's
/// `DefaultRecordBatch.incrementSequence` does.
pub fn last_sequence(base_sequence: i32, last_offset_delta: i32) -> i32 {
    let delta = last_offset_delta.max(0);
    if base_sequence > i32::MAX - delta {
        delta - (i32::MAX - base_sequence) - 1
    } else {
        base_sequence + delta
    }
}

/// `next` directly follows `last` (sequences wrap from `i32::MAX` to 0).
fn in_sequence(last: i32, next: i32) -> bool {
    i64::from(next) == i64::from(last) + 1 || (next == 0 && last == i32::MAX)
}

impl ProducerEntry {
    /// The cached batch `h` repeats, if any (Kafka's `findDuplicateBatch`).
    fn find_duplicate(&self, h: &BatchHeader) -> Option<BatchMetadata> {
        if h.producer_epoch != self.epoch {
            return None;
        }
        let last_seq = last_sequence(h.base_sequence, h.last_offset_delta);
        self.batches
            .iter()
            .find(|b| b.first_seq == h.base_sequence && b.last_seq == last_seq)
            .copied()
    }

    /// Epoch and sequence rules for appending `h` after this entry.
    fn check(&self, h: &BatchHeader) -> Result<()> {
        let producer_id = h.producer_id;
        if h.producer_epoch < self.epoch {
            return Err(Error::InvalidProducerEpoch {
                producer_id,
                epoch: h.producer_epoch,
                current: self.epoch,
            });
        }
        if !h.is_transactional() && self.txn_first_offset.is_some() {
            return Err(Error::InvalidTxnState {
                producer_id,
                reason: "a non-transactional batch while its transaction is open".into(),
            });
        }
        if self.epoch == NO_PRODUCER_EPOCH {
            // Unknown producer (KIP-360): its state may have been removed, accept any sequence.
            return Ok(());
        }
        let expected = if h.producer_epoch == self.epoch {
            // Continues from the last batch; an entry without batches can only continue from 0.
            let last = self.batches.back().map_or(-1, |b| b.last_seq);
            if in_sequence(last, h.base_sequence) {
                return Ok(());
            }
            last.checked_add(1).unwrap_or(0)
        } else if h.base_sequence == 0 {
            return Ok(());
        } else {
            0 // a new epoch starts afresh
        };
        Err(Error::OutOfOrderSequence {
            producer_id,
            epoch: h.producer_epoch,
            expected,
            received: h.base_sequence,
        })
    }

    /// Records an appended batch (offsets assigned) unconditionally.
    fn record(&mut self, h: &BatchHeader) {
        if h.producer_epoch != self.epoch {
            self.epoch = h.producer_epoch;
            self.batches.clear();
        }
        if self.batches.len() == RETAINED_BATCHES {
            self.batches.pop_front();
        }
        self.batches.push_back(BatchMetadata {
            first_seq: h.base_sequence,
            last_seq: last_sequence(h.base_sequence, h.last_offset_delta),
            first_offset: h.base_offset,
            last_offset: h.last_offset(),
            max_timestamp: h.max_timestamp,
        });
        self.last_timestamp = h.max_timestamp;
    }
}

/// The producers of one partition. A `BTreeMap` so snapshots are deterministic.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProducerStates {
    producers: BTreeMap<i64, ProducerEntry>,
    /// Open transactions: (first offset, producer id).
    ongoing: BTreeSet<(i64, i64)>,
    /// Aborted transactions, by marker offset (ascending).
    aborted: VecDeque<AbortedTxn>,
}

/// Whether a batch carries idempotent-producer fields at all.
fn is_idempotent(h: &BatchHeader) -> bool {
    h.producer_id >= 0 && !h.is_control()
}

impl ProducerStates {
    pub fn get(&self, producer_id: i64) -> Option<&ProducerEntry> {
        self.producers.get(&producer_id)
    }

    pub fn len(&self) -> usize {
        self.producers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }

    pub(crate) fn entries(&self) -> impl Iterator<Item = (i64, &ProducerEntry)> {
        self.producers.iter().map(|(&id, e)| (id, e))
    }

    pub(crate) fn insert(&mut self, producer_id: i64, entry: ProducerEntry) {
        if let Some(first) = entry.txn_first_offset {
            self.ongoing.insert((first, producer_id));
        }
        self.producers.insert(producer_id, entry);
    }

    pub(crate) fn aborted(&self) -> impl Iterator<Item = &AbortedTxn> {
        self.aborted.iter()
    }

    pub(crate) fn push_aborted(&mut self, txn: AbortedTxn) {
        self.aborted.push_back(txn);
    }

    /// The first offset of the oldest open transaction: nothing from it on
    /// is stable (the last stable offset is this or the high watermark,
    /// whichever is lower).
    pub fn first_unstable_offset(&self) -> Option<i64> {
        self.ongoing.first().map(|&(offset, _)| offset)
    }

    /// Open transactions as (producer id, first offset).
    pub fn open_transactions(&self) -> impl Iterator<Item = (i64, i64)> + '_ {
        self.ongoing.iter().map(|&(offset, id)| (id, offset))
    }

    /// Aborted transactions overlapping `[from, upto)`, oldest first: what a
    /// `read_committed` fetch of that range must be told.
    pub fn aborted_between(&self, from: i64, upto: i64) -> Vec<AbortedTxn> {
        let start = self.aborted.partition_point(|t| t.last_offset < from);
        self.aborted
            .iter()
            .skip(start)
            .filter(|t| t.first_offset < upto)
            .copied()
            .collect()
    }

    /// Forgets aborted transactions that ended before `log_start`.
    pub fn prune_aborted(&mut self, log_start: i64) {
        while self
            .aborted
            .front()
            .is_some_and(|t| t.last_offset < log_start)
        {
            self.aborted.pop_front();
        }
    }

    /// Checks a transaction marker the coordinator writes: its epoch may not
    /// be older than the producer's (a fenced coordinator cannot end a
    /// newer transaction).
    pub fn check_marker(&self, h: &BatchHeader) -> Result<()> {
        match self.producers.get(&h.producer_id) {
            Some(e) if h.producer_epoch < e.epoch => Err(Error::InvalidProducerEpoch {
                producer_id: h.producer_id,
                epoch: h.producer_epoch,
                current: e.epoch,
            }),
            _ => Ok(()),
        }
    }

    /// Checks a client's batches (offsets already assigned) before anything is written. `Ok(Some)`
    /// means the request repeats an appended batch: write nothing and answer with its offsets.
    /// Later batches of one request are checked against the state the earlier ones would leave.
    pub fn check_append(&self, headers: &[BatchHeader]) -> Result<Option<BatchMetadata>> {
        // Producers touched by this request, as the earlier batches left them; usually one.
        let mut pending: Vec<(i64, ProducerEntry)> = Vec::new();
        for (i, h) in headers.iter().enumerate().filter(|(_, h)| is_idempotent(h)) {
            if h.base_sequence < 0 {
                return Err(Error::InvalidRecord(format!(
                    "invalid sequence number {} in a batch of producer {}",
                    h.base_sequence, h.producer_id
                )));
            }
            let committed = self.producers.get(&h.producer_id);
            if let Some(duplicate) = committed.and_then(|e| e.find_duplicate(h)) {
                return Ok(Some(duplicate));
            }
            let at = pending.iter().position(|(id, _)| *id == h.producer_id);
            let current = at
                .map(|at| &pending[at].1)
                .or(committed)
                .unwrap_or(&UNKNOWN);
            current.check(h)?;
            // Only a request with several batches needs the state its earlier batches leave;
            // the usual single batch is checked without copying anything.
            if i + 1 < headers.len() {
                let mut next = current.clone();
                next.record(h);
                if h.is_transactional() && next.txn_first_offset.is_none() {
                    next.txn_first_offset = Some(h.base_offset);
                }
                match at {
                    Some(at) => pending[at].1 = next,
                    None => pending.push((h.producer_id, next)),
                }
            }
        }
        Ok(None)
    }

    /// Records batches as stored (after an append, or replayed from the log by recovery).
    /// `marker` is what a control batch carries ([`crate::markers::read_marker`]).
    pub fn record(&mut self, h: &BatchHeader, marker: Option<Marker>) {
        if let Some(marker) = marker {
            self.record_marker(h, marker);
        } else if is_idempotent(h) {
            let entry = self
                .producers
                .entry(h.producer_id)
                .or_insert_with(|| UNKNOWN.clone());
            entry.record(h);
            if h.is_transactional() && entry.txn_first_offset.is_none() {
                entry.txn_first_offset = Some(h.base_offset);
                self.ongoing.insert((h.base_offset, h.producer_id));
            }
        }
    }

    /// A transaction marker: the producer's open transaction here (if any)
    /// ends; an abort is remembered for `read_committed` fetches.
    fn record_marker(&mut self, h: &BatchHeader, marker: Marker) {
        if h.producer_id < 0 {
            return;
        }
        let entry = self
            .producers
            .entry(h.producer_id)
            .or_insert_with(|| UNKNOWN.clone());
        if h.producer_epoch > entry.epoch {
            // The coordinator bumped the epoch (fencing or a timeout): the
            // next batch starts a new sequence.
            entry.epoch = h.producer_epoch;
            entry.batches.clear();
        }
        entry.last_timestamp = entry.last_timestamp.max(h.max_timestamp);
        let Some(first) = entry.txn_first_offset.take() else {
            return;
        };
        self.ongoing.remove(&(first, h.producer_id));
        if marker == Marker::Abort {
            let last_stable_offset = self.first_unstable_offset().unwrap_or(h.base_offset);
            self.aborted.push_back(AbortedTxn {
                producer_id: h.producer_id,
                first_offset: first,
                last_offset: h.base_offset,
                last_stable_offset,
            });
        }
    }

    /// Forgets producers whose last batch is older than `now_ms - expiration_ms` (Kafka's
    /// `producer.id.expiration.ms`). Returns how many were removed.
    pub fn expire(&mut self, now_ms: i64, expiration_ms: i64) -> usize {
        let before = self.producers.len();
        // A producer with an open transaction is kept: its marker is due.
        self.producers.retain(|_, e| {
            e.txn_first_offset.is_some() || now_ms.saturating_sub(e.last_timestamp) < expiration_ms
        });
        before - self.producers.len()
    }
}

#[cfg(test)]
mod log_tests;
#[cfg(test)]
mod tests;
