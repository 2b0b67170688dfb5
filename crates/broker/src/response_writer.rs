//! The writing half of a connection: awaits responses strictly in request
//! order and writes their frames.
//!
//! Small frames that are ready together go out in one write through a
//! buffer that exists only while there is something to send (it is written
//! out before the writer waits for a deferred response); large chunks
//! (a Fetch's record sets, see [`crate::response_frame`]) are written
//! straight from the buffers the log read filled. A write that makes no
//! progress for the idle timeout ends the connection (a slow reader that
//! keeps taking bytes does not), so a client that stops reading cannot hold
//! its responses forever.

use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, OwnedSemaphorePermit};

use crate::dispatch::{Handled, Response};
use crate::response_frame;
use crate::state::BrokerState;

/// Chunks at least this large are written directly rather than copied
/// into the coalescing buffer.
const DIRECT_WRITE: usize = 16 * 1024;
/// The coalescing buffer is written out once it holds this much.
const COALESCE: usize = 64 * 1024;

/// A response on its way to the writer.
pub struct Pending {
    pub handled: Handled,
    pub version: i16,
    pub correlation_id: i32,
    pub api: &'static str,
    pub started: Instant,
    /// Room this response holds in the connection's response budget; given
    /// back once its frame is written.
    pub reserved: Option<OwnedSemaphorePermit>,
}

/// Why writing stopped early.
enum Stop {
    Closed,
    Stalled,
}

struct Out<W> {
    wr: W,
    buf: BytesMut,
    stall: Duration,
}

impl<W: AsyncWrite + Unpin> Out<W> {
    /// Writes all of `bytes`; each write must make progress within the
    /// stall timeout, however long the whole takes.
    async fn write(&mut self, mut bytes: &[u8]) -> Result<(), Stop> {
        while !bytes.is_empty() {
            match tokio::time::timeout(self.stall, self.wr.write(bytes)).await {
                Ok(Ok(0) | Err(_)) => return Err(Stop::Closed),
                Ok(Ok(n)) => bytes = &bytes[n..],
                Err(_) => return Err(Stop::Stalled),
            }
        }
        Ok(())
    }

    async fn chunk(&mut self, chunk: &Bytes) -> Result<(), Stop> {
        if chunk.len() < DIRECT_WRITE {
            self.buf.extend_from_slice(chunk);
            if self.buf.len() < COALESCE {
                return Ok(());
            }
        }
        self.drain().await?;
        if chunk.len() >= DIRECT_WRITE {
            self.write(chunk).await?;
        }
        Ok(())
    }

    /// Writes what is buffered, keeping the buffer's memory for more.
    async fn drain(&mut self) -> Result<(), Stop> {
        if !self.buf.is_empty() {
            let buf = std::mem::take(&mut self.buf);
            self.write(&buf).await?;
            self.buf = buf;
            self.buf.clear();
        }
        Ok(())
    }

    /// Writes and flushes everything, then lets go of the buffer: the
    /// connection is about to wait for its next response.
    async fn idle(&mut self) -> Result<(), Stop> {
        self.drain().await?;
        self.buf = BytesMut::new();
        match tokio::time::timeout(self.stall, self.wr.flush()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(Stop::Closed),
            Err(_) => Err(Stop::Stalled),
        }
    }
}

/// Adds a Fetch response's record bytes to `veil_topic_bytes_out_total`
/// (from v13 the response names topics by id only).
fn count_fetched(broker: &BrokerState, fetch: &kafka_protocol::messages::FetchResponse) {
    for topic in &fetch.responses {
        let bytes: usize = topic
            .partitions
            .iter()
            .filter_map(|p| p.records.as_ref().map(Bytes::len))
            .sum();
        if bytes == 0 {
            continue;
        }
        let counter = if topic.topic.0.is_empty() {
            match broker.topics.get_by_id(topic.topic_id) {
                Some(t) => broker.metrics.topic_bytes_out.with_label_values(&[&t.name]),
                None => continue,
            }
        } else {
            broker
                .metrics
                .topic_bytes_out
                .with_label_values(&[topic.topic.0.as_str()])
        };
        counter.inc_by(bytes as u64);
    }
}

pub async fn write_responses<W: AsyncWrite + Unpin>(
    wr: W,
    mut rx: mpsc::Receiver<Box<Pending>>,
    broker: Arc<BrokerState>,
) {
    let stall = Duration::from_millis(broker.config.network.idle_timeout_ms);
    let mut out = Out {
        wr,
        buf: BytesMut::new(),
        stall,
    };
    let metrics = &broker.metrics;
    while let Some(p) = rx.recv().await {
        let Pending {
            handled,
            version,
            correlation_id,
            api,
            started,
            reserved,
        } = *p;
        let response: Option<Response> = match handled {
            Handled::Ready(r) => Some(r),
            Handled::Deferred(mut f) => {
                let now = std::future::poll_fn(|cx| Poll::Ready(f.as_mut().poll(cx))).await;
                match now {
                    Poll::Ready(r) => Some(r),
                    Poll::Pending => {
                        // Earlier answers must not wait for this one's fsync
                        // or long poll.
                        if let Err(stop) = out.idle().await {
                            return stopped(stop);
                        }
                        Some(f.await)
                    }
                }
            }
            Handled::NoResponse => None,
        };
        metrics.requests.with_label_values(&[api]).inc();
        metrics
            .request_seconds
            .with_label_values(&[api])
            .observe(started.elapsed().as_secs_f64());
        if let Some(response) = response {
            if let Response::Fetch(fetch) = &response {
                count_fetched(&broker, fetch);
            }
            let frame = match response_frame::encode(response, version, correlation_id) {
                Ok(f) => f,
                Err(e) => {
                    tracing::error!(api, error = %e, "could not encode a response; closing");
                    return;
                }
            };
            metrics.bytes_out.inc_by(frame.len() as u64);
            for chunk in frame.chunks() {
                if let Err(stop) = out.chunk(chunk).await {
                    return stopped(stop);
                }
            }
        }
        drop(reserved);
        if rx.is_empty() {
            if let Err(stop) = out.idle().await {
                return stopped(stop);
            }
        }
    }
    let _ = out.idle().await;
    let _ = out.wr.shutdown().await;
}

fn stopped(stop: Stop) {
    if let Stop::Stalled = stop {
        tracing::debug!("client stopped reading responses; closing");
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
    use kafka_protocol::messages::FetchResponse;
    use tokio::io::AsyncReadExt;

    use super::*;
    use crate::test_fixture::context_with;

    fn fetch_of(bytes: usize) -> Box<Pending> {
        let records = Bytes::from(vec![7u8; bytes]);
        let response =
            FetchResponse::default().with_responses(vec![FetchableTopicResponse::default()
                .with_partitions(vec![PartitionData::default().with_records(Some(records))])]);
        Box::new(Pending {
            handled: Handled::Ready(Response::Fetch(response)),
            version: 4,
            correlation_id: 1,
            api: "fetch",
            started: Instant::now(),
            reserved: None,
        })
    }

    /// The idle timeout bounds a write that makes no progress, not a slow
    /// one: a client reading 1 KiB every 50 ms gets its 32 KiB response
    /// although that takes longer than the timeout, and one that stops
    /// reading is dropped.
    #[tokio::test]
    async fn a_stalled_client_is_dropped_and_a_slow_one_is_not() {
        let (_dir, ctx) = context_with(0, |c| c.network.idle_timeout_ms = 1000).await;
        let broker = Arc::clone(&ctx.broker);

        let (mut client, server) = tokio::io::duplex(1024);
        let (tx, rx) = mpsc::channel(4);
        let writer = tokio::spawn(write_responses(server, rx, Arc::clone(&broker)));
        tx.send(fetch_of(32 * 1024)).await.unwrap();
        drop(tx);
        let mut got = 0;
        let mut buf = [0u8; 1024];
        loop {
            tokio::time::sleep(Duration::from_millis(50)).await;
            match client.read(&mut buf).await.unwrap() {
                0 => break,
                n => got += n,
            }
        }
        writer.await.unwrap();
        assert!(got > 32 * 1024, "the whole response arrived ({got} bytes)");

        let (client, server) = tokio::io::duplex(1024);
        let (tx, rx) = mpsc::channel(4);
        let writer = tokio::spawn(write_responses(server, rx, broker));
        tx.send(fetch_of(32 * 1024)).await.unwrap();
        // Never read: the writer gives up (bounded wait, far above the timeout).
        tokio::time::timeout(Duration::from_secs(30), writer)
            .await
            .expect("a stalled write ends the writer")
            .unwrap();
        drop((client, tx));
    }
}
