//! Kafka request framing: a 4-byte big-endian size, then that many bytes.
//!
//! The size is checked against the caller's cap before anything is
//! allocated, and a frame's buffer then grows with the bytes that actually
//! arrive (at most about twice what was received), never to the size a
//! client merely announced. Between frames the reader holds no buffer at
//! all unless the client has already sent the next one, so an idle
//! connection costs nothing here.

use bytes::{Buf, Bytes, BytesMut};
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

/// The first step of a frame's buffer, and the read-ahead after a small
/// frame: enough for typical requests and the next pipelined one in one
/// read, small next to the kernel's socket buffer.
const READ_STEP: usize = 16 * 1024;

/// Reads frames from one connection.
#[derive(Debug, Default)]
pub struct FrameReader {
    /// Bytes received past the last frame returned (pipelined requests).
    buf: BytesMut,
}

impl FrameReader {
    pub fn new() -> FrameReader {
        FrameReader::default()
    }

    /// Capacity held between frames (for tests and metrics).
    pub fn buffered_capacity(&self) -> usize {
        self.buf.capacity()
    }

    /// Reads one frame of at most `max` bytes. `Closed` on a clean EOF
    /// before the size field.
    pub async fn next<R: AsyncRead + Unpin>(
        &mut self,
        reader: &mut R,
        max: usize,
    ) -> Result<Bytes, FrameError> {
        let mut size = [0u8; 4];
        let have = self.buf.len().min(4);
        size[..have].copy_from_slice(&self.buf[..have]);
        self.buf.advance(have);
        if have < 4 {
            // Nothing buffered: wait for the next frame without a buffer.
            self.buf = BytesMut::new();
            match reader.read_exact(&mut size[have..]).await {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && have == 0 => {
                    return Err(FrameError::Closed)
                }
                Err(e) => return Err(e.into()),
            }
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
        while self.buf.len() < len {
            if self.buf.len() == self.buf.capacity() {
                let missing = len - self.buf.len();
                // Small remainders read ahead for the next request; large
                // ones grow by at most what has arrived so far.
                let step = if missing < READ_STEP {
                    READ_STEP
                } else {
                    missing.min(self.buf.len().max(READ_STEP))
                };
                self.buf.reserve(step);
            }
            if reader.read_buf(&mut self.buf).await? == 0 {
                return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into());
            }
        }
        let frame = self.buf.split_to(len).freeze();
        if self.buf.is_empty() {
            // Let go of the rest of the allocation: the frame keeps it alive
            // only as long as the request needs it.
            self.buf = BytesMut::new();
        }
        Ok(frame)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncWriteExt;

    use super::*;

    async fn one(bytes: &[u8], max: usize) -> Result<Bytes, FrameError> {
        let mut r = bytes;
        FrameReader::new().next(&mut r, max).await
    }

    #[tokio::test]
    async fn oversized_and_negative_sizes_are_refused_before_reading() {
        assert!(matches!(
            one(&[0x7f, 0xff, 0xff, 0xff], 1024).await,
            Err(FrameError::TooLarge { .. })
        ));
        assert!(matches!(
            one(&[0xff, 0xff, 0xff, 0xff], 1024).await,
            Err(FrameError::Invalid(-1))
        ));
        assert!(matches!(one(&[], 1024).await, Err(FrameError::Closed)));
        assert!(matches!(
            one(&[0, 0, 0, 8, 0, 18], 1024).await,
            Err(FrameError::Io(_))
        ));
        let frame = one(&[0, 0, 0, 8, 0, 18, 0, 3, 0, 0, 0, 7], 1024)
            .await
            .unwrap();
        let prefix = HeaderPrefix::parse(&frame).unwrap();
        assert_eq!(
            (prefix.api_key, prefix.api_version, prefix.correlation_id),
            (18, 3, 7)
        );
    }

    #[tokio::test]
    async fn pipelined_frames_are_split_and_nothing_is_held_after_them() {
        let mut wire = Vec::new();
        for i in 0..50u8 {
            wire.extend_from_slice(&[0, 0, 0, 9, 0, 18, 0, 3, 0, 0, 0, i, 0xaa]);
        }
        let mut r = &wire[..];
        let mut reader = FrameReader::new();
        for i in 0..50u8 {
            let f = reader.next(&mut r, 1024).await.unwrap();
            assert_eq!(f[7], i);
            assert_eq!(f.len(), 9);
        }
        assert_eq!(reader.buffered_capacity(), 0);
        assert!(matches!(
            reader.next(&mut r, 1024).await,
            Err(FrameError::Closed)
        ));
    }

    #[tokio::test]
    async fn a_frame_grows_with_the_bytes_received_not_the_size_announced() {
        let (mut client, mut server) = tokio::io::duplex(64 * 1024);
        let mut reader = FrameReader::new();
        let read = tokio::spawn(async move {
            let r = reader.next(&mut server, 100 << 20).await;
            (r.map(|f| f.len()), reader)
        });
        client
            .write_all(&90_000_000i32.to_be_bytes())
            .await
            .unwrap();
        client.write_all(&vec![7u8; 300 * 1024]).await.unwrap();
        tokio::task::yield_now().await;
        drop(client);
        let (result, reader) = read.await.unwrap();
        assert!(matches!(result, Err(FrameError::Io(_))), "{result:?}");
        // 300 KiB arrived; the buffer may have doubled past it, no more.
        assert!(
            reader.buf.capacity() <= 1024 * 1024,
            "{} bytes held for 300 KiB received",
            reader.buf.capacity()
        );
    }
}
