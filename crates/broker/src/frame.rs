//! Kafka request framing: a 4-byte big-endian size, then that many bytes.
//! The size is checked against the cap before anything is allocated.

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("connection closed")]
    Closed,
    #[error("request of {size} bytes exceeds the limit of {max}")]
    TooLarge { size: i64, max: usize },
    #[error("invalid request size {0}")]
    Invalid(i32),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// The fields every request header starts with, read without decoding the
/// rest, so unsupported APIs and versions can be answered or refused.
#[derive(Debug, Clone, Copy)]
pub struct HeaderPrefix {
    pub api_key: i16,
    pub api_version: i16,
    pub correlation_id: i32,
}

impl HeaderPrefix {
    pub fn parse(frame: &[u8]) -> Option<HeaderPrefix> {
        let b = frame.get(..8)?;
        Some(HeaderPrefix {
            api_key: i16::from_be_bytes([b[0], b[1]]),
            api_version: i16::from_be_bytes([b[2], b[3]]),
            correlation_id: i32::from_be_bytes([b[4], b[5], b[6], b[7]]),
        })
    }
}

/// Reads one frame. `Closed` on a clean EOF before the size field.
pub async fn read_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
    max: usize,
) -> Result<Bytes, FrameError> {
    let mut size = [0u8; 4];
    match reader.read_exact(&mut size).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Err(FrameError::Closed),
        Err(e) => return Err(e.into()),
    }
    let size = i32::from_be_bytes(size);
    // A request needs at least the 8-byte header prefix.
    if size < 8 {
        return Err(FrameError::Invalid(size));
    }
    let len = size as usize;
    if len > max {
        return Err(FrameError::TooLarge {
            size: i64::from(size),
            max,
        });
    }
    let mut buf = BytesMut::zeroed(len);
    reader.read_exact(&mut buf).await?;
    Ok(buf.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn oversized_and_negative_sizes_are_refused_before_reading() {
        let mut big: &[u8] = &[0x7f, 0xff, 0xff, 0xff];
        assert!(matches!(
            read_frame(&mut big, 1024).await,
            Err(FrameError::TooLarge { .. })
        ));
        let mut neg: &[u8] = &[0xff, 0xff, 0xff, 0xff];
        assert!(matches!(
            read_frame(&mut neg, 1024).await,
            Err(FrameError::Invalid(-1))
        ));
        let mut empty: &[u8] = &[];
        assert!(matches!(
            read_frame(&mut empty, 1024).await,
            Err(FrameError::Closed)
        ));
        let mut ok: &[u8] = &[0, 0, 0, 8, 0, 18, 0, 3, 0, 0, 0, 7];
        let frame = read_frame(&mut ok, 1024).await.unwrap();
        let prefix = HeaderPrefix::parse(&frame).unwrap();
        assert_eq!(
            (prefix.api_key, prefix.api_version, prefix.correlation_id),
            (18, 3, 7)
        );
    }
}
