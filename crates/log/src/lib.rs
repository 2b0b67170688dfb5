//! `veil-log`: a segmented, append-only log of raw Kafka v2 record batches for one partition.
//! Plain `std` and files: no async runtime, no network.
//!
//! Where to start reading:
//! * [`log`] — [`PartitionLog`], the whole API: append, read, sync/group commit, retention,
//!   DeleteRecords, timestamp and leader-epoch lookups.
//! * [`batch`] — the 61-byte v2 batch header, produce-time validation ([`validate_records`]) and
//!   the in-place rewrites (base offset, leader epoch, LogAppendTime).
//! * `segment.rs` / `index.rs` — one `.log` file and its sparse offset and time indexes.
//! * `recovery.rs` — what `open` does after a crash: everything after the recovery point is
//!   validated and cut at the first bad batch (keeping the cut bytes aside), index rebuilds, log
//!   start offset and leader-epoch fix-ups.
//! * `epoch.rs` — the `leader-epoch-checkpoint` file.
//! * [`records`] — the records inside an uncompressed batch, written and read (the broker's own
//!   internal topics; client batches stay opaque).
//! * [`cleaner`] — log compaction: offset map, plan / run / install passes, crash-safe swaps.
//! * [`codec`] — gzip, snappy, LZ4 and zstd over a batch's records section, capped.
//! * [`rewrite`] — produce-time checks and recompression for compacted and `compression.type`
//!   topics.
//! * [`producer_state`] — idempotent producers' last batches: duplicate, gap and epoch checks on
//!   append, `<offset>.snapshot` files, rebuilt from batch headers on open.
//!
//! On disk, per partition directory: `<base>.log`, `<base>.index`, `<base>.timeindex` per segment
//! (base offset, 20 digits), `<offset>.snapshot` (producer state), `leader-epoch-checkpoint`,
//! `log-start-offset`, `recovery-point`, `cleaner-offset-checkpoint` (compacted logs), and a `clean-shutdown`
//! marker between `close` and the next `open`.

// No panicking shortcuts on the produce/fetch path; tests may (clippy.toml allows them there).
#![deny(clippy::unwrap_used, clippy::expect_used)]

pub mod batch;
pub mod cleaner;
pub mod codec;
mod config;
mod durable;
mod epoch;
mod error;
mod index;
pub mod log;
pub mod markers;
pub mod producer_state;
pub mod records;
mod recovery;
pub mod rewrite;
mod segment;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

pub use batch::{validate_records, BatchHeader, Compression};
pub use config::LogConfig;
pub use error::{Error, Result};
pub use log::{
    AppendInfo, AppendOrigin, PartitionLog, ReadResult, RecoveryReport, RetentionReport, SyncHandle,
};
pub use markers::Marker;
pub use producer_state::{
    AbortedTxn, BatchMetadata, ProducerEntry, ProducerStates, PRODUCER_ID_EXPIRATION_MS,
};
