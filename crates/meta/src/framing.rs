//! CRC-framed records for append-only logs: `u32 length ‖ u32 crc32c ‖ payload`
//! (big endian). Shared by the metadata store and the group coordinator's
//! offset store, so both recover a torn tail the same way.
//!
//! Recovery rule: a damaged or short *last* frame is a torn write and is
//! dropped; damage followed by more data is corruption and is reported.

/// Frames larger than this are corruption, not something to allocate.
pub const MAX_FRAME: usize = 16 * 1024 * 1024;

/// Bytes before the payload.
const HEADER: usize = 8;

/// Replaces `dir/name` with `bytes` so that a crash leaves either the old or
/// the new file: write a temporary file, fsync it, rename it over, fsync the
/// directory.
pub fn write_atomically(dir: &std::path::Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let tmp = dir.join(format!("{name}.tmp"));
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, dir.join(name))?;
    std::fs::File::open(dir)?.sync_all()
}

/// Appends one frame carrying `payload` to `out`.
pub fn encode(payload: &[u8], out: &mut Vec<u8>) {
    let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    out.reserve(payload.len() + HEADER);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&crc32c::crc32c(payload).to_be_bytes());
    out.extend_from_slice(payload);
}

/// The frames found in a log, and how many leading bytes are valid.
#[derive(Debug)]
pub struct Scan<'a> {
    /// (position, payload) of every intact frame, in order.
    pub frames: Vec<(usize, &'a [u8])>,
    /// Everything from here on is a torn tail to truncate.
    pub valid_len: usize,
}

/// Damage that is not a torn tail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    pub position: usize,
    pub reason: String,
}

/// Splits `bytes` into frames, stopping at a torn tail.
pub fn scan(bytes: &[u8]) -> Result<Scan<'_>, Damage> {
    scan_with_limit(bytes, MAX_FRAME)
}

/// [`scan`] with another bound on a frame's length. The bytes are already in
/// memory, so the bound only tells damage from data; a reader may raise it
/// to read back frames an older writer let grow past [`MAX_FRAME`].
pub fn scan_with_limit(bytes: &[u8], max_frame: usize) -> Result<Scan<'_>, Damage> {
    let mut frames = Vec::new();
    let mut pos = 0usize;
    while pos < bytes.len() {
        let Some(header) = bytes.get(pos..pos + HEADER) else {
            break;
        };
        let len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let crc = u32::from_be_bytes([header[4], header[5], header[6], header[7]]);
        if len > max_frame {
            return Err(Damage {
                position: pos,
                reason: format!("frame length {len} exceeds {max_frame}"),
            });
        }
        let end = pos + HEADER + len;
        let Some(payload) = bytes.get(pos + HEADER..end) else {
            break;
        };
        if crc32c::crc32c(payload) != crc {
            if end == bytes.len() {
                break;
            }
            return Err(Damage {
                position: pos,
                reason: "checksum mismatch before the end of the log".into(),
            });
        }
        frames.push((pos, payload));
        pos = end;
    }
    Ok(Scan {
        frames,
        valid_len: pos,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_drops_a_torn_tail() {
        let mut log = Vec::new();
        encode(b"one", &mut log);
        encode(b"two", &mut log);
        let full = log.len();
        let scan_all = scan(&log).unwrap();
        assert_eq!(scan_all.frames.len(), 2);
        assert_eq!(scan_all.frames[1].1, b"two");
        assert_eq!(scan_all.valid_len, full);
        for cut in 1..11 {
            let torn = scan(&log[..full - cut]).unwrap();
            assert_eq!(torn.frames.len(), 1, "cut {cut}");
            assert_eq!(torn.valid_len, 11);
        }
        let mut flipped = log.clone();
        flipped[full - 1] ^= 1;
        assert_eq!(
            scan(&flipped).unwrap().valid_len,
            11,
            "bad last crc is torn"
        );
        let mut damaged = log;
        damaged[9] ^= 1;
        assert_eq!(scan(&damaged).unwrap_err().position, 0);
    }
}
