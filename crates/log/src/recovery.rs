//! Opening a partition directory after a clean shutdown or a crash.
//!
//! The **recovery point** (`recovery-point`, Kafka keeps the same offset per partition in
//! `recovery-point-offset-checkpoint`) is an offset below which everything is known to be on disk:
//! it is checkpointed from the synced offset now and then, at shutdown and after recovery.
//! * Segments wholly below it are trusted when their indexes are sane: we only hop over the batch
//!   headers after the last useful index entry to learn the next offset and largest timestamp.
//!   Otherwise they are rescanned with full validation and re-indexed; damage there hit data that
//!   was synced, so it is `Error::Corrupt` (the partition goes offline), never a truncation.
//! * Every later segment, and always the active one, is validated batch by batch (header, length,
//!   magic, CRC-32C, increasing offsets), re-indexed and fsynced. At the first bad batch, in any of
//!   them, the log is cut: the rest of that segment is copied into `<base>.log.truncated` and every
//!   later segment is renamed aside to `<base>.log.truncated` (nothing is deleted), and the cut
//!   segment becomes the active one. That is what power loss leaves of writes nothing had synced
//!   (acks=1, `flush = none`).
//! * Without a checkpoint, a clean-shutdown marker means everything was synced (logs written
//!   before recovery points existed); otherwise everything is validated.
//! * `log_start_offset = max(first segment base, persisted log-start-offset)`; leader-epoch entries
//!   at or beyond the recovered log end are dropped.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::batch::compute_crc;
use crate::config::LogConfig;
use crate::durable::{remove_if_exists, sync_dir, write_atomically};
use crate::epoch::LeaderEpochCache;
use crate::error::{Error, Result};
use crate::index::{OffsetIndex, TimeIndex};
use crate::log::RecoveryReport;
use crate::segment::{
    file_name, parse_file_name, ChunkReader, IndexFiles, Probe, Segment, INDEX_EXT, LOG_EXT,
    TIME_INDEX_EXT,
};

pub(crate) const LOG_START_OFFSET_FILE: &str = "log-start-offset";
pub(crate) const RECOVERY_POINT_FILE: &str = "recovery-point";
pub(crate) const CLEAN_SHUTDOWN_FILE: &str = "clean-shutdown";

/// At most this much of a truncated tail is kept in the sidecar file.
const SIDECAR_CAP: u64 = 64 << 20;
/// Read size for validating scans.
const SCAN_CHUNK: usize = 1 << 20;

pub(crate) struct Recovered {
    pub segments: Vec<Segment>,
    pub log_start_offset: i64,
    pub epochs: LeaderEpochCache,
    pub report: RecoveryReport,
}

/// A file holding one offset, or `None` if absent.
fn read_offset_file(dir: &Path, name: &str) -> Result<Option<i64>> {
    let path = dir.join(name);
    match fs::read_to_string(&path) {
        Ok(text) => text.trim().parse().map(Some).map_err(|_| Error::Corrupt {
            segment: path,
            position: 0,
            reason: format!("{name} is not a number"),
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e.into()),
    }
}

pub(crate) fn read_log_start_offset(dir: &Path) -> Result<Option<i64>> {
    read_offset_file(dir, LOG_START_OFFSET_FILE)
}

pub(crate) fn write_log_start_offset(dir: &Path, offset: i64) -> io::Result<()> {
    write_atomically(dir, LOG_START_OFFSET_FILE, format!("{offset}\n").as_bytes())
}

pub(crate) fn write_recovery_point(dir: &Path, offset: i64) -> io::Result<()> {
    write_atomically(dir, RECOVERY_POINT_FILE, format!("{offset}\n").as_bytes())
}

/// Open (creating if needed) the partition directory and bring it to a consistent state.
pub(crate) fn recover(dir: &Path, config: &LogConfig, now_ms: i64) -> Result<Recovered> {
    fs::create_dir_all(dir)?;
    crate::cleaner::swap::recover(dir)?;
    let marker = dir.join(CLEAN_SHUTDOWN_FILE);
    let clean_shutdown = marker.exists();
    remove_if_exists(&marker)?;

    let bases = list_segments(dir)?;
    let persisted_start = read_log_start_offset(dir)?;
    let persisted_point = read_offset_file(dir, RECOVERY_POINT_FILE)?;
    let recovery_point = match persisted_point {
        Some(point) => point,
        None if clean_shutdown => i64::MAX,
        None => i64::MIN,
    };
    let mut epochs = LeaderEpochCache::load(dir)?;
    let mut report = RecoveryReport {
        segments: 0,
        truncated_bytes: 0,
        rebuilt_indexes: 0,
        log_end_offset: 0,
        clean_shutdown,
        recovery_point,
    };

    let mut epochs_changed = false;
    let mut segments: Vec<Segment> = Vec::with_capacity(bases.len().max(1));
    let mut validated = Vec::new();
    for (i, &base) in bases.iter().enumerate() {
        let trusted = bases.get(i + 1).is_some_and(|&next| next <= recovery_point);
        let (seg, cut) = if trusted {
            let (seg, rebuilt) = load_older(dir, base, config)?;
            report.rebuilt_indexes += usize::from(rebuilt);
            (seg, false)
        } else {
            let (seg, truncated, seen_epochs) = validate(dir, base, config, now_ms)?;
            report.truncated_bytes += truncated;
            for (epoch, start) in seen_epochs {
                epochs_changed |= epochs.assign_in_memory(epoch, start);
            }
            validated.push(segments.len());
            (seg, truncated > 0)
        };
        if let Some(prev) = segments.last() {
            if prev.next_offset > seg.base_offset {
                return Err(prev.corrupt(
                    prev.size,
                    format!(
                        "segment ends at offset {} but the next segment starts at {}",
                        prev.next_offset, seg.base_offset
                    ),
                ));
            }
        }
        segments.push(seg);
        if cut {
            report.truncated_bytes += set_aside(dir, &bases[i + 1..])?;
            break;
        }
    }
    if segments.is_empty() {
        segments.push(Segment::create(dir, persisted_start.unwrap_or(0).max(0))?);
    } else {
        // Validated segments now hold exactly what was checked: index them and make them durable,
        // so that the recovery point can move to the log end.
        // The last segment is always validated (only a segment followed by another can be
        // trusted), so it gets its index files here.
        let last = segments.len() - 1;
        for &i in &validated {
            if i == last {
                activate(&mut segments[i])?;
            } else {
                persist_indexes(dir, &mut segments[i])?;
                segments[i].log.sync_data()?;
            }
        }
        report.rebuilt_indexes += validated.len();
    }

    let first_base = segments[0].base_offset;
    let mut log_end_offset = segments[segments.len() - 1].next_offset;
    let mut log_start_offset = persisted_start.map_or(first_base, |p| p.max(first_base));
    if log_start_offset > log_end_offset {
        // Everything left is below the deleted-records point: start afresh there rather than
        // hand out offsets below log_start_offset again.
        tracing::warn!(
            dir = %dir.display(),
            log_start_offset,
            log_end_offset,
            "log start offset beyond recovered end; starting an empty log at the start offset"
        );
        for seg in segments.drain(..) {
            seg.delete_files()?;
        }
        segments.push(Segment::create(dir, log_start_offset)?);
        log_end_offset = log_start_offset;
    }
    log_start_offset = log_start_offset.min(log_end_offset);

    epochs_changed |= epochs.truncate_from_end(log_end_offset);
    if epochs_changed {
        epochs.persist()?;
    }
    if let Some(active) = segments.last() {
        active.log.sync_data()?;
    }
    sync_dir(dir)?;
    // Everything up to the log end is on disk now; a point beyond it (the log was cut below it)
    // must not make later segments look trusted.
    if persisted_point != Some(log_end_offset) {
        write_recovery_point(dir, log_end_offset)?;
    }

    report.segments = segments.len();
    report.log_end_offset = log_end_offset;
    Ok(Recovered {
        segments,
        log_start_offset,
        epochs,
        report,
    })
}

/// Renames whole segments beyond a cut aside (`<base>.log.truncated`), dropping their indexes;
/// returns their bytes.
fn set_aside(dir: &Path, bases: &[i64]) -> Result<u64> {
    let mut bytes = 0;
    for &base in bases {
        let path = dir.join(file_name(base, LOG_EXT));
        let len = fs::metadata(&path)?.len();
        let aside = sidecar_path(&path);
        fs::rename(&path, &aside)?;
        remove_if_exists(&dir.join(file_name(base, INDEX_EXT)))?;
        remove_if_exists(&dir.join(file_name(base, TIME_INDEX_EXT)))?;
        tracing::warn!(segment = %path.display(), bytes = len, kept_in = %aside.display(),
            "set aside a segment beyond the first bad batch");
        bytes += len;
    }
    Ok(bytes)
}

/// Base offsets of the `.log` files, sorted; removes temp files, deleted leftovers and orphan indexes.
fn list_segments(dir: &Path) -> Result<Vec<i64>> {
    let mut bases = Vec::new();
    let mut indexes = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        let leftover = Path::new(&name)
            .extension()
            .is_some_and(|ext| ext == "tmp" || ext == "deleted");
        if leftover {
            remove_if_exists(&entry.path())?;
        } else if let Some(base) = parse_file_name(&name, LOG_EXT) {
            bases.push(base);
        } else if let Some(base) =
            parse_file_name(&name, INDEX_EXT).or_else(|| parse_file_name(&name, TIME_INDEX_EXT))
        {
            indexes.push((base, entry.path()));
        }
    }
    bases.sort_unstable();
    for (base, path) in indexes {
        if bases.binary_search(&base).is_err() {
            remove_if_exists(&path)?;
        }
    }
    Ok(bases)
}

/// `(epoch, base offset)` each time the partition leader epoch increases along a segment.
type SeenEpochs = Vec<(i32, i64)>;

struct FullScan {
    damage: Option<(u64, String)>,
    epochs: SeenEpochs,
}

/// Validate every batch from position 0, tracking each good one into `seg` (size, summary, fresh
/// in-memory indexes). Stops at the first bad batch and reports where.
fn scan_full(
    seg: &mut Segment,
    file_len: u64,
    config: &LogConfig,
    now_ms: i64,
) -> Result<FullScan> {
    let log = Arc::clone(&seg.log);
    let mut reader = ChunkReader::new(&log, file_len, SCAN_CHUNK);
    let cap = config.disk_batch_cap();
    let mut pos = 0u64;
    let mut expected = seg.base_offset;
    let mut epochs: SeenEpochs = Vec::new();
    let damage = loop {
        let header = match reader.probe(pos, cap)? {
            Probe::End => break None,
            Probe::Bad(reason) => break Some((pos, reason)),
            Probe::Batch(h) => h,
        };
        // Offsets only grow; compaction leaves gaps, so a jump forward is fine.
        if header.base_offset < expected {
            break Some((
                pos,
                format!("base offset {}, expected {expected}", header.base_offset),
            ));
        }
        if header.last_offset() - seg.base_offset > i64::from(i32::MAX) || pos > u64::from(u32::MAX)
        {
            break Some((pos, "batch beyond the segment's addressable range".into()));
        }
        let size = header.total_size();
        if compute_crc(reader.get(pos, size)?) != header.crc {
            break Some((pos, "CRC mismatch".into()));
        }
        // Rolling age after a restart: the first batch's timestamp, unless absent or in the future.
        let arrival = if (0..=now_ms).contains(&header.max_timestamp) {
            header.max_timestamp
        } else {
            now_ms
        };
        seg.track_batch(pos, &header, config.index_interval_bytes, arrival);
        let epoch = header.partition_leader_epoch;
        if epoch >= 0 && epochs.last().is_none_or(|&(e, _)| epoch > e) {
            epochs.push((epoch, header.base_offset));
        }
        expected = header.last_offset() + 1;
        pos += size as u64;
    };
    seg.size = pos;
    Ok(FullScan { damage, epochs })
}

/// A segment at or beyond the recovery point: validate all, truncate at the first bad batch
/// (keeping a copy of the cut bytes). Returns the bytes cut.
fn validate(
    dir: &Path,
    base: i64,
    config: &LogConfig,
    now_ms: i64,
) -> Result<(Segment, u64, SeenEpochs)> {
    let mut seg = Segment::open_existing(dir, base)?;
    let file_len = seg.log.metadata()?.len();
    let scan = scan_full(&mut seg, file_len, config, now_ms)?;
    let mut truncated = 0;
    if let Some((position, reason)) = scan.damage {
        truncated = file_len - position;
        let sidecar = save_tail(&seg.log, &seg.path, position, file_len)?;
        tracing::warn!(
            segment = %seg.path.display(),
            position,
            truncated_bytes = truncated,
            sidecar = %sidecar.display(),
            reason = %reason,
            "truncating a segment at its first bad batch"
        );
        seg.log.set_len(position)?;
        seg.log.sync_data()?;
    }
    Ok((seg, truncated, scan.epochs))
}

/// Makes a validated `seg` the active segment: fresh index files from its in-memory indexes.
fn activate(seg: &mut Segment) -> Result<()> {
    let offset = open_fresh(&seg.index_path(INDEX_EXT))?;
    let time = open_fresh(&seg.index_path(TIME_INDEX_EXT))?;
    offset.write_all_at(&seg.offset_index.encode_all(), 0)?;
    time.write_all_at(&seg.time_index.encode_all(), 0)?;
    seg.offset_index.mark_persisted();
    seg.time_index.mark_persisted();
    seg.files = Some(IndexFiles {
        offset: Arc::new(offset),
        time: Arc::new(time),
    });
    Ok(())
}

/// Writes a validated older segment's indexes in place of whatever was there.
fn persist_indexes(dir: &Path, seg: &mut Segment) -> Result<()> {
    write_atomically(
        dir,
        &file_name(seg.base_offset, INDEX_EXT),
        &seg.offset_index.encode_all(),
    )?;
    write_atomically(
        dir,
        &file_name(seg.base_offset, TIME_INDEX_EXT),
        &seg.time_index.encode_all(),
    )?;
    seg.offset_index.mark_persisted();
    seg.time_index.mark_persisted();
    Ok(())
}

fn open_fresh(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
}

/// A fresh `<log>.truncated[.n]` name beside `log_path`.
fn sidecar_path(log_path: &Path) -> PathBuf {
    let mut name = log_path.as_os_str().to_owned();
    name.push(".truncated");
    let mut path = PathBuf::from(&name);
    let mut n = 1;
    while path.exists() {
        let mut numbered = name.clone();
        numbered.push(format!(".{n}"));
        path = PathBuf::from(numbered);
        n += 1;
    }
    path
}

/// Copy `[position, file_len)` (at most `SIDECAR_CAP` bytes) to a fresh `<log>.truncated` file.
fn save_tail(log: &File, log_path: &Path, position: u64, file_len: u64) -> io::Result<PathBuf> {
    let path = sidecar_path(log_path);
    let mut out = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)?;
    let end = file_len.min(position.saturating_add(SIDECAR_CAP));
    let mut buf = vec![0u8; ((end - position) as usize).min(SCAN_CHUNK)];
    let mut at = position;
    while at < end {
        let n = ((end - at) as usize).min(buf.len());
        log.read_exact_at(&mut buf[..n], at)?;
        out.write_all(&buf[..n])?;
        at += n as u64;
    }
    out.sync_all()?;
    Ok(path)
}

/// An older segment: trust sane indexes (checking the tail), else rescan strictly and re-index.
/// Returns whether the indexes were rebuilt.
fn load_older(dir: &Path, base: i64, config: &LogConfig) -> Result<(Segment, bool)> {
    let mut seg = Segment::open_existing(dir, base)?;
    let file_len = seg.log.metadata()?.len();
    if file_len > u64::from(u32::MAX) {
        return Err(seg.corrupt(0, "segment larger than 4 GiB"));
    }
    let offset_index = OffsetIndex::load(&seg.index_path(INDEX_EXT), file_len)?;
    let time_index = TimeIndex::load(&seg.index_path(TIME_INDEX_EXT), file_len)?;
    if let (Some(oi), Some(ti)) = (offset_index, time_index) {
        seg.offset_index = oi;
        seg.time_index = ti;
        seg.size = file_len;
        if check_tail(&mut seg, config.disk_batch_cap())? {
            return Ok((seg, false));
        }
        seg = Segment::open_existing(dir, base)?;
    }
    let scan = scan_full(&mut seg, file_len, config, 0)?;
    if let Some((position, reason)) = scan.damage {
        return Err(seg.corrupt(position, reason));
    }
    persist_indexes(dir, &mut seg)?;
    tracing::info!(segment = %seg.path.display(), "rebuilt indexes of an older segment");
    Ok((seg, true))
}

/// With trusted indexes loaded into `seg`, hop over the batch headers from the batch holding the
/// last time-index entry to the end of the file. Establishes `next_offset` and the largest
/// timestamp (batches before that point have smaller timestamps, see `index.rs`) and checks that
/// the indexes agree with the batches they point at. `false` = do not trust, rebuild.
fn check_tail(seg: &mut Segment, cap: usize) -> Result<bool> {
    let base = seg.base_offset;
    let last_time = seg.time_index.last().copied();
    let start_entry = last_time.and_then(|t| seg.offset_index.lookup(t.relative_offset));
    let mut pos = start_entry.map_or(0, |e| u64::from(e.position));
    let (mut max_ts, mut offset_of_max) = last_time.map_or((-1, -1), |t| {
        (t.timestamp, base + i64::from(t.relative_offset))
    });
    let start = pos;
    let mut entries = seg
        .offset_index
        .entries()
        .iter()
        .filter(|e| u64::from(e.position) >= start)
        .peekable();
    let mut expected = start_entry.map_or(base, |e| base + i64::from(e.relative_offset));
    let mut next_offset = None;
    let log = Arc::clone(&seg.log);
    let mut reader = ChunkReader::new(&log, seg.size, 64 * 1024);
    loop {
        let header = match reader.probe(pos, cap)? {
            Probe::End => break,
            Probe::Bad(_) => return Ok(false),
            Probe::Batch(h) => h,
        };
        if header.base_offset < expected {
            return Ok(false);
        }
        if let Some(entry) = entries.peek() {
            let at = u64::from(entry.position);
            if at < pos {
                return Ok(false); // an entry that does not point at a batch boundary
            }
            if at == pos {
                if base + i64::from(entry.relative_offset) != header.base_offset {
                    return Ok(false);
                }
                entries.next();
            }
        }
        if header.max_timestamp > max_ts {
            max_ts = header.max_timestamp;
            offset_of_max = header.last_offset();
        }
        expected = header.last_offset() + 1;
        next_offset = Some(expected);
        pos += header.total_size() as u64;
    }
    let next_offset = next_offset.unwrap_or(base);
    if entries.next().is_some() || last_time.is_some() && offset_of_max >= next_offset {
        return Ok(false);
    }
    seg.next_offset = next_offset;
    seg.max_timestamp = max_ts;
    seg.offset_of_max_timestamp = offset_of_max;
    Ok(true)
}

#[cfg(test)]
mod tests;
