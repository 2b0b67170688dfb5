//! A response frame as a list of chunks, so a Fetch response's record sets
//! are written from the buffers the log read filled, never copied into one
//! contiguous frame first (which doubled a large fetch's memory while it was
//! being sent). Every other response is encoded into a single chunk.
//!
//! The Fetch layout is Kafka's: the response header, the fixed fields, the
//! topics; per topic its name or id, then partitions; per partition its
//! fields up to `records`, the record set, then its tagged fields. The
//! pieces around each record set are encoded by kafka-protocol itself; only
//! array counts and the record-set length are written here.

use anyhow::{ensure, Context};
use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::fetch_response::PartitionData;
use kafka_protocol::messages::{FetchResponse, ResponseHeader};
use kafka_protocol::protocol::{Encodable, HeaderVersion};

use crate::dispatch::Response;

/// Record sets smaller than this are copied into the surrounding chunk: a
/// separate write costs more than the copy.
const INLINE_RECORDS: usize = 4096;

/// An encoded response, size prefix included.
#[derive(Debug, Default)]
pub struct Frame {
    chunks: Vec<Bytes>,
    len: usize,
}

impl Frame {
    /// Total bytes, size prefix included.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn chunks(&self) -> &[Bytes] {
        &self.chunks
    }

    fn push(&mut self, chunk: Bytes) {
        if !chunk.is_empty() {
            self.len += chunk.len();
            self.chunks.push(chunk);
        }
    }
}

/// Encodes `response` as a frame; the response is consumed so its record
/// sets move into the frame instead of being cloned.
pub fn encode(response: Response, version: i16, correlation_id: i32) -> anyhow::Result<Frame> {
    match response {
        Response::Fetch(fetch) => encode_fetch(fetch, version, correlation_id),
        other => {
            let mut frame = Frame::default();
            frame.push(other.encode_frame(version, correlation_id)?.freeze());
            Ok(frame)
        }
    }
}

/// Small encoded pieces accumulate in `meta` until a record set is large
/// enough to go out as a chunk of its own.
struct Builder {
    frame: Frame,
    meta: BytesMut,
    flexible: bool,
}

impl Builder {
    fn cut(&mut self) {
        let piece = self.meta.split().freeze();
        self.frame.push(piece);
    }

    /// An array count: INT32, or UNSIGNED_VARINT of count + 1 when flexible.
    fn count(&mut self, n: usize) -> anyhow::Result<()> {
        if self.flexible {
            put_unsigned_varint(&mut self.meta, u32::try_from(n + 1)?);
        } else {
            self.meta.put_i32(i32::try_from(n)?);
        }
        Ok(())
    }

    /// A nullable record set: its length (as `count` does, -1/0 for null),
    /// then the bytes, inline if small.
    fn records(&mut self, records: Option<Bytes>) -> anyhow::Result<()> {
        let Some(records) = records else {
            if self.flexible {
                put_unsigned_varint(&mut self.meta, 0);
            } else {
                self.meta.put_i32(-1);
            }
            return Ok(());
        };
        self.count(records.len())?;
        if records.len() < INLINE_RECORDS {
            self.meta.extend_from_slice(&records);
        } else {
            self.cut();
            self.frame.push(records);
        }
        Ok(())
    }

    /// A partition: the fields before `records` and the tagged fields after
    /// it, as kafka-protocol encodes them, around the record set. Where the
    /// record set starts is found by encoding the partition twice, with a
    /// null and with an empty record set: the two differ only there.
    fn partition(
        &mut self,
        mut p: PartitionData,
        version: i16,
        scratch: &mut (Vec<u8>, Vec<u8>),
    ) -> anyhow::Result<()> {
        let records = p.records.take();
        let (null, empty) = scratch;
        null.clear();
        empty.clear();
        p.encode(null, version)?;
        p.records = Some(Bytes::new());
        p.encode(empty, version)?;
        ensure!(
            null.len() == empty.len(),
            "record-set markers differ in size"
        );
        let at = null
            .iter()
            .zip(empty.iter())
            .position(|(a, b)| a != b)
            .context("record-set marker not found")?;
        let marker = if self.flexible { 1 } else { 4 };
        self.meta.extend_from_slice(&empty[..at]);
        self.records(records)?;
        self.meta.extend_from_slice(&empty[at + marker..]);
        Ok(())
    }
}

fn put_unsigned_varint(buf: &mut BytesMut, mut v: u32) {
    while v >= 0x80 {
        buf.put_u8((v as u8) | 0x80);
        v >>= 7;
    }
    buf.put_u8(v as u8);
}

fn unsigned_varint_len(v: u32) -> usize {
    match v {
        0..0x80 => 1,
        0x80..0x4000 => 2,
        0x4000..0x20_0000 => 3,
        0x20_0000..0x1000_0000 => 4,
        _ => 5,
    }
}

fn encode_fetch(
    mut resp: FetchResponse,
    version: i16,
    correlation_id: i32,
) -> anyhow::Result<Frame> {
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    let header_version = FetchResponse::header_version(version);
    let size = header.compute_size(header_version)? + resp.compute_size(version)?;
    let flexible = version >= 12;
    let mut b = Builder {
        frame: Frame::default(),
        meta: BytesMut::with_capacity(512),
        flexible,
    };
    b.meta.put_i32(i32::try_from(size)?);
    header.encode(&mut b.meta, header_version)?;

    let topics = std::mem::take(&mut resp.responses);
    let mut shell = Vec::new();
    resp.encode(&mut shell, version)?;
    // throttle_time_ms, then error_code and session_id from v7.
    let head = if version >= 7 { 10 } else { 4 };
    let marker = if flexible { 1 } else { 4 };
    ensure!(shell.len() >= head + marker, "short Fetch response shell");
    b.meta.extend_from_slice(&shell[..head]);
    b.count(topics.len())?;

    let mut scratch = (Vec::new(), Vec::new());
    let mut topic_shell = Vec::new();
    for mut topic in topics {
        let partitions = std::mem::take(&mut topic.partitions);
        topic_shell.clear();
        topic.encode(&mut topic_shell, version)?;
        // The topic id (UUID) from v13; before, the name as a STRING
        // (INT16 length) or, in v12, a COMPACT_STRING.
        let name = topic.topic.0.len();
        let topic_head = if version >= 13 {
            16
        } else if version == 12 {
            unsigned_varint_len(u32::try_from(name + 1)?) + name
        } else {
            2 + name
        };
        ensure!(
            topic_shell.len() >= topic_head + marker,
            "short Fetch topic shell"
        );
        b.meta.extend_from_slice(&topic_shell[..topic_head]);
        b.count(partitions.len())?;
        for p in partitions {
            b.partition(p, version, &mut scratch)?;
        }
        b.meta
            .extend_from_slice(&topic_shell[topic_head + marker..]);
    }
    b.meta.extend_from_slice(&shell[head + marker..]);
    b.cut();
    ensure!(
        b.frame.len == size + 4,
        "Fetch frame of {} bytes, expected {}",
        b.frame.len,
        size + 4
    );
    Ok(b.frame)
}

#[cfg(test)]
mod tests {
    use kafka_protocol::messages::fetch_response::{
        AbortedTransaction, EpochEndOffset, FetchableTopicResponse, LeaderIdAndEpoch, NodeEndpoint,
        SnapshotId,
    };
    use kafka_protocol::messages::{BrokerId, ProducerId, TopicName};
    use kafka_protocol::protocol::StrBytes;

    use super::*;

    fn partition(index: i32, records: Option<Bytes>, version: i16) -> PartitionData {
        let mut p = PartitionData::default()
            .with_partition_index(index)
            .with_error_code(if index == 2 { 6 } else { 0 })
            .with_high_watermark(1000 + i64::from(index))
            .with_last_stable_offset(999)
            .with_log_start_offset(3)
            .with_aborted_transactions(Some(vec![AbortedTransaction::default()
                .with_producer_id(ProducerId(7))
                .with_first_offset(5)]))
            .with_records(records);
        if version >= 11 {
            p.preferred_read_replica = BrokerId(index);
        }
        if version >= 12 && index == 1 {
            p.diverging_epoch = EpochEndOffset::default().with_epoch(4).with_end_offset(77);
            p.current_leader = LeaderIdAndEpoch::default()
                .with_leader_id(BrokerId(2))
                .with_leader_epoch(9);
            p.snapshot_id = SnapshotId::default().with_end_offset(12).with_epoch(3);
        }
        p
    }

    fn response(version: i16) -> FetchResponse {
        let big = Bytes::from((0..70_000u32).map(|i| i as u8).collect::<Vec<_>>());
        let small = Bytes::from_static(b"small record set");
        let topics = (0..3)
            .map(|t| {
                let mut topic = FetchableTopicResponse::default().with_partitions(vec![
                    partition(0, Some(big.clone()), version),
                    partition(1, Some(small.clone()), version),
                    partition(2, None, version),
                    partition(3, Some(Bytes::new()), version),
                    partition(4, Some(big.slice(10..5000)), version),
                ]);
                if version >= 13 {
                    topic.topic_id = uuid::Uuid::from_u128(0x00ab_cdef + t);
                } else {
                    topic.topic = TopicName(StrBytes::from_string(format!("topic-{t}")));
                }
                topic
            })
            .collect();
        let mut r = FetchResponse::default()
            .with_throttle_time_ms(12)
            .with_responses(topics);
        if version >= 7 {
            r.error_code = 0;
            r.session_id = 0;
        }
        if version >= 16 {
            r.node_endpoints = vec![NodeEndpoint::default()
                .with_node_id(BrokerId(2))
                .with_host(StrBytes::from_static_str("broker-2"))
                .with_port(9092)];
        }
        r
    }

    #[test]
    fn fetch_chunks_equal_the_contiguous_encoding_in_every_served_version() {
        for version in 4..=16 {
            let want = Response::Fetch(response(version))
                .encode_frame(version, 42)
                .unwrap();
            let frame = encode(Response::Fetch(response(version)), version, 42).unwrap();
            let got: Vec<u8> = frame.chunks().concat();
            assert_eq!(got.len(), frame.len());
            assert!(got == want[..], "v{version}: chunked encoding differs");
            // The large record sets travel as chunks of their own.
            assert!(
                frame.chunks().iter().filter(|c| c.len() == 70_000).count() == 3,
                "v{version}"
            );
        }
    }

    #[test]
    fn an_empty_fetch_response_and_other_apis_are_one_chunk() {
        for version in [4, 12, 16] {
            let r = FetchResponse::default();
            let want = Response::Fetch(r.clone()).encode_frame(version, 1).unwrap();
            let frame = encode(Response::Fetch(r), version, 1).unwrap();
            assert_eq!(frame.chunks().concat(), want[..]);
            assert_eq!(frame.chunks().len(), 1);
        }
        let r = kafka_protocol::messages::ApiVersionsResponse::default();
        let frame = encode(Response::ApiVersions(r), 3, 1).unwrap();
        assert_eq!(frame.chunks().len(), 1);
    }
}
