//! One segment: a `.log` file of whole batches starting at `base_offset`, with its in-memory
//! indexes and the summary (next offset, largest timestamp) that reads, retention and rolling need.
//!
//! Only the active (last) segment is written; it alone keeps its index files open.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::batch::{BatchHeader, HEADER_LEN};
use crate::durable::remove_if_exists;
use crate::error::{Error, Result};
use crate::index::{OffsetEntry, OffsetIndex, TimeIndex};

pub(crate) const LOG_EXT: &str = "log";
pub(crate) const INDEX_EXT: &str = "index";
pub(crate) const TIME_INDEX_EXT: &str = "timeindex";

/// `00000000000000000042.log` etc.
pub(crate) fn file_name(base_offset: i64, ext: &str) -> String {
    format!("{base_offset:020}.{ext}")
}

/// The base offset of a segment file name with the given extension (exactly 20 digits).
pub(crate) fn parse_file_name(name: &str, ext: &str) -> Option<i64> {
    let stem = name.strip_suffix(ext)?.strip_suffix('.')?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok()
}

fn open_rw(path: &Path, truncate: bool) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(truncate)
        .open(path)
}

/// Reads a file through a reusable buffer so that hopping from header to header costs one syscall
/// per `chunk` bytes rather than one per batch.
pub(crate) struct ChunkReader<'a> {
    file: &'a File,
    len: u64,
    chunk: usize,
    buf: Vec<u8>,
    start: u64,
}

/// What sits at a position of a segment.
pub(crate) enum Probe {
    End,
    Batch(BatchHeader),
    /// Not a plausible batch; the reason never contains record bytes.
    Bad(String),
}

impl<'a> ChunkReader<'a> {
    pub(crate) fn new(file: &'a File, len: u64, chunk: usize) -> Self {
        Self {
            file,
            len,
            chunk,
            buf: Vec::new(),
            start: 0,
        }
    }

    /// Bytes `[pos, pos + n)`; the caller guarantees `pos + n <= len`.
    pub(crate) fn get(&mut self, pos: u64, n: usize) -> io::Result<&[u8]> {
        let buffered_end = self.start + self.buf.len() as u64;
        if pos < self.start || pos + n as u64 > buffered_end {
            let want = (n.max(self.chunk) as u64).min(self.len - pos) as usize;
            self.buf.resize(want, 0);
            self.file.read_exact_at(&mut self.buf, pos)?;
            self.start = pos;
        }
        let at = (pos - self.start) as usize;
        Ok(&self.buf[at..at + n])
    }

    /// Decode the batch header at `pos` and check that the batch fits in the file and under `cap`.
    pub(crate) fn probe(&mut self, pos: u64, cap: usize) -> io::Result<Probe> {
        let remaining = self.len.saturating_sub(pos);
        if remaining == 0 {
            return Ok(Probe::End);
        }
        if remaining < HEADER_LEN as u64 {
            return Ok(Probe::Bad(format!(
                "partial batch header ({remaining} bytes)"
            )));
        }
        let header = match BatchHeader::parse(self.get(pos, HEADER_LEN)?) {
            Ok(h) => h,
            Err(e) => return Ok(Probe::Bad(e.to_string())),
        };
        let size = header.total_size();
        if size as u64 > remaining {
            return Ok(Probe::Bad(format!(
                "batch of {size} bytes extends past the end of the file ({remaining} bytes left)"
            )));
        }
        if size > cap {
            return Ok(Probe::Bad(format!(
                "batch of {size} bytes exceeds the cap of {cap}"
            )));
        }
        if header.last_offset_delta < 0 {
            return Ok(Probe::Bad("negative last_offset_delta".into()));
        }
        Ok(Probe::Batch(header))
    }
}

/// Index files of the active segment (older segments' indexes live only in memory).
#[derive(Debug)]
pub(crate) struct IndexFiles {
    pub offset: Arc<File>,
    pub time: Arc<File>,
}

#[derive(Debug)]
pub(crate) struct Segment {
    pub base_offset: i64,
    pub path: PathBuf,
    pub log: Arc<File>,
    /// Bytes of whole batches; appends go here (the file is never longer once recovered).
    pub size: u64,
    /// Last offset + 1 of the last batch, or `base_offset` when empty.
    pub next_offset: i64,
    /// Largest batch `max_timestamp`, -1 if none; drives time retention and timestamp lookups.
    pub max_timestamp: i64,
    /// Last offset of the first batch that reached `max_timestamp`.
    pub offset_of_max_timestamp: i64,
    /// When the segment's first batch arrived (wall clock) or, after recovery, its timestamp.
    pub rolling_timestamp: Option<i64>,
    pub offset_index: OffsetIndex,
    pub time_index: TimeIndex,
    bytes_since_index: usize,
    pub files: Option<IndexFiles>,
}

impl Segment {
    fn empty(dir: &Path, base_offset: i64, log: File) -> Self {
        Self {
            base_offset,
            path: dir.join(file_name(base_offset, LOG_EXT)),
            log: Arc::new(log),
            size: 0,
            next_offset: base_offset,
            max_timestamp: -1,
            offset_of_max_timestamp: -1,
            rolling_timestamp: None,
            offset_index: OffsetIndex::new(),
            time_index: TimeIndex::new(),
            bytes_since_index: 0,
            files: None,
        }
    }

    /// A segment over an already open file (the cleaner's output), summary to be tracked.
    pub(crate) fn from_file(dir: &Path, base_offset: i64, log: File) -> Self {
        Self::empty(dir, base_offset, log)
    }

    /// Create a new, empty active segment (truncating any stale files of that name).
    pub(crate) fn create(dir: &Path, base_offset: i64) -> io::Result<Self> {
        let log = open_rw(&dir.join(file_name(base_offset, LOG_EXT)), true)?;
        let mut seg = Self::empty(dir, base_offset, log);
        seg.files = Some(IndexFiles {
            offset: Arc::new(open_rw(&seg.index_path(INDEX_EXT), true)?),
            time: Arc::new(open_rw(&seg.index_path(TIME_INDEX_EXT), true)?),
        });
        Ok(seg)
    }

    /// An existing log file, summary not yet known (recovery fills it in).
    pub(crate) fn open_existing(dir: &Path, base_offset: i64) -> io::Result<Self> {
        let log = open_rw(&dir.join(file_name(base_offset, LOG_EXT)), false)?;
        Ok(Self::empty(dir, base_offset, log))
    }

    pub(crate) fn index_path(&self, ext: &str) -> PathBuf {
        self.path.with_extension(ext)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.size == 0
    }

    /// Account for a batch that now sits at `position`: summary, and index entries every
    /// `index_interval` bytes (both indexes at the same batch).
    pub(crate) fn track_batch(
        &mut self,
        position: u64,
        header: &BatchHeader,
        index_interval: usize,
        arrival_ms: i64,
    ) {
        if header.max_timestamp > self.max_timestamp {
            self.max_timestamp = header.max_timestamp;
            self.offset_of_max_timestamp = header.last_offset();
        }
        if self.rolling_timestamp.is_none() {
            self.rolling_timestamp = Some(arrival_ms);
        }
        if self.bytes_since_index >= index_interval {
            self.offset_index.push(OffsetEntry {
                relative_offset: (header.base_offset - self.base_offset) as u32,
                position: position as u32,
            });
            if self.max_timestamp >= 0 {
                let relative = (self.offset_of_max_timestamp - self.base_offset) as u32;
                self.time_index.maybe_push(self.max_timestamp, relative);
            }
            self.bytes_since_index = 0;
        }
        self.bytes_since_index += header.total_size();
        self.next_offset = header.last_offset() + 1;
    }

    /// Write `records` (whole batches, offsets assigned) at the end with one write, then track them.
    /// On error nothing is tracked; the caller cuts the file back to `size`.
    pub(crate) fn append(
        &mut self,
        records: &[u8],
        headers: &[BatchHeader],
        index_interval: usize,
        now_ms: i64,
    ) -> io::Result<()> {
        self.log.write_all_at(records, self.size)?;
        let mut position = self.size;
        for header in headers {
            self.track_batch(position, header, index_interval, now_ms);
            position += header.total_size() as u64;
        }
        self.size = position;
        Ok(())
    }

    /// Append new index entries to the active segment's index files.
    pub(crate) fn write_pending_indexes(&mut self) -> io::Result<()> {
        if let Some(files) = &self.files {
            self.offset_index.write_pending(&files.offset)?;
            self.time_index.write_pending(&files.time)?;
        }
        Ok(())
    }

    /// Stop being the active segment: record the final maximum timestamp in the time index (so
    /// recovery and lookups see it without scanning), write pending entries, and hand back every
    /// file that still needs an fsync.
    pub(crate) fn seal(&mut self) -> io::Result<Vec<Arc<File>>> {
        if self.max_timestamp >= 0 {
            let relative = (self.offset_of_max_timestamp - self.base_offset) as u32;
            self.time_index.maybe_push(self.max_timestamp, relative);
        }
        self.write_pending_indexes()?;
        let mut files = vec![Arc::clone(&self.log)];
        if let Some(idx) = self.files.take() {
            files.push(idx.offset);
            files.push(idx.time);
        }
        Ok(files)
    }

    pub(crate) fn corrupt(&self, position: u64, reason: impl Into<String>) -> Error {
        Error::Corrupt {
            segment: self.path.clone(),
            position,
            reason: reason.into(),
        }
    }

    /// Position of the first batch whose last offset is `>= offset`, or `None` if there is none.
    pub(crate) fn find_batch(&self, offset: i64, cap: usize) -> Result<Option<u64>> {
        let relative = u32::try_from((offset - self.base_offset).max(0)).unwrap_or(u32::MAX);
        let mut pos = self
            .offset_index
            .lookup(relative)
            .map_or(0, |e| u64::from(e.position));
        let mut reader = ChunkReader::new(&self.log, self.size, 8 * 1024);
        loop {
            match reader.probe(pos, cap)? {
                Probe::End => return Ok(None),
                Probe::Bad(reason) => return Err(self.corrupt(pos, reason)),
                Probe::Batch(h) if h.last_offset() >= offset => return Ok(Some(pos)),
                Probe::Batch(h) => pos += h.total_size() as u64,
            }
        }
    }

    /// Whole batches from `pos` (a batch boundary): as many as fit in `max_bytes`, stopping before
    /// any batch whose base offset is `>= max_offset`. If none fits and `min_one`, the first batch
    /// alone (KIP-74). One `read_at` in the common case.
    pub(crate) fn read_from(
        &self,
        pos: u64,
        max_bytes: usize,
        max_offset: i64,
        min_one: bool,
        cap: usize,
    ) -> Result<Vec<u8>> {
        let available = self.size.saturating_sub(pos);
        let want = (max_bytes as u64).min(available) as usize;
        let mut buf = vec![0u8; want];
        self.log.read_exact_at(&mut buf, pos)?;
        let mut end = 0usize;
        while buf.len() - end >= HEADER_LEN {
            let header = BatchHeader::parse(&buf[end..])
                .map_err(|e| self.corrupt(pos + end as u64, e.to_string()))?;
            let size = header.total_size();
            if header.base_offset >= max_offset || size > buf.len() - end {
                break;
            }
            end += size;
        }
        buf.truncate(end);
        if end > 0 || !min_one {
            return Ok(buf);
        }
        let mut reader = ChunkReader::new(&self.log, self.size, HEADER_LEN);
        match reader.probe(pos, cap)? {
            Probe::Batch(h) if h.base_offset < max_offset => {
                let mut whole = vec![0u8; h.total_size()];
                self.log.read_exact_at(&mut whole, pos)?;
                Ok(whole)
            }
            Probe::Bad(reason) => Err(self.corrupt(pos, reason)),
            _ => Ok(Vec::new()),
        }
    }

    /// Remove the segment's files: the log first, so a crash in between leaves only orphan
    /// indexes, which recovery deletes.
    pub(crate) fn delete_files(&self) -> io::Result<()> {
        remove_if_exists(&self.path)?;
        remove_if_exists(&self.index_path(INDEX_EXT))?;
        remove_if_exists(&self.index_path(TIME_INDEX_EXT))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names() {
        assert_eq!(file_name(42, LOG_EXT), "00000000000000000042.log");
        assert_eq!(
            parse_file_name("00000000000000000042.log", LOG_EXT),
            Some(42)
        );
        assert_eq!(
            parse_file_name("00000000000000000042.index", INDEX_EXT),
            Some(42)
        );
        assert_eq!(parse_file_name("0000000000000000042.log", LOG_EXT), None);
        assert_eq!(
            parse_file_name("00000000000000000042.log.tmp", LOG_EXT),
            None
        );
        assert_eq!(parse_file_name("0000000000000000004x.log", LOG_EXT), None);
        assert_eq!(parse_file_name("99999999999999999999.log", LOG_EXT), None);
    }
}
