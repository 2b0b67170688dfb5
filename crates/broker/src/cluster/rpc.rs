//! The inter-node RPCs that are Veil's own: the metadata quorum's Raft
//! messages, forwarded metadata proposals, broker heartbeats and the probe a
//! blank voter sends. (Replication uses Kafka's Fetch, on the same
//! listener.)
//!
//! Framing is Kafka's, so the inter-node listener shares the request path
//! of every other listener: a size-prefixed request with header v1 (API key
//! [`API_KEY`], version 0, correlation id, client id) and a JSON body; the
//! response is a size, the correlation id and a JSON body. Every message
//! travels in an [`Envelope`] naming the sender, its view of the cluster id
//! and its voter set, so a node configured for another cluster is refused.

use bytes::{BufMut, Bytes, BytesMut};
use openraft::error::{InstallSnapshotError, RaftError};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;
use veil_meta::raft::{NodeId, Probe, Rejection, TypeConfig};
use veil_meta::{Endpoint, MetaCommand};

/// The Veil API key of inter-node calls (outside Kafka's and the blind-topic
/// range); only the inter-node listener serves it.
pub const API_KEY: i16 = 32200;
pub const API_NAME: &str = "veil_cluster";

/// Sender identity and configuration checks around every call and reply.
#[derive(Debug, Serialize, Deserialize)]
pub struct Envelope<T> {
    /// The sender's node id.
    pub from: i32,
    /// The cluster id the sender knows, if any yet.
    pub cluster_id: Option<String>,
    /// The sender's configured voter set (`ClusterConfig::voters_fingerprint`).
    pub voters: String,
    pub body: T,
}

/// A broker's periodic announcement to the controller: its registration
/// (sent whole every time, so a new controller learns it at once) and how
/// far it has applied metadata.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Heartbeat {
    pub node_id: i32,
    pub incarnation: Uuid,
    pub listeners: Vec<Endpoint>,
    pub internal: Option<Endpoint>,
    pub rack: Option<String>,
    /// The metadata index this broker has applied.
    pub applied: u64,
    /// SIGTERM: move my leaderships away.
    pub shutting_down: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum HeartbeatReply {
    /// Ask the current controller instead.
    NotController { leader: Option<i32> },
    /// The broker's registration as the controller sees it.
    Registered {
        epoch: i64,
        fenced: bool,
        /// Controlled shutdown finished: the broker leads nothing now.
        may_shut_down: bool,
        /// How far the controller has applied metadata: a broker is caught
        /// up once it has too.
        #[serde(default)]
        controller_applied: u64,
    },
    /// Registration is under way (being committed); heartbeat again.
    Pending,
}

/// The answer to a forwarded metadata proposal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Proposed {
    /// Committed by the quorum at this index (applied or refused by the
    /// state machine, see [`Proposed::Rejected`]).
    Committed { index: u64 },
    /// Committed, but the state refused it; nothing changed.
    Rejected { index: u64, rejection: Rejection },
    /// The receiver does not lead the quorum (any more).
    NotLeader { leader: Option<i32> },
    /// The quorum could not decide in time.
    Unavailable(String),
}

#[derive(Debug, Serialize, Deserialize)]
#[allow(clippy::large_enum_variant)]
pub enum Call {
    Vote(VoteRequest<NodeId>),
    Append(AppendEntriesRequest<TypeConfig>),
    Snapshot(InstallSnapshotRequest<TypeConfig>),
    Probe,
    Propose(MetaCommand),
    Heartbeat(Heartbeat),
}

#[derive(Debug, Serialize, Deserialize)]
pub enum Reply {
    Vote(Result<VoteResponse<NodeId>, RaftError<NodeId>>),
    Append(Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>>),
    Snapshot(Result<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>>),
    /// `None` while the node is still starting.
    Probe(Option<Probe>),
    Propose(Proposed),
    Heartbeat(HeartbeatReply),
    /// The call was refused: wrong cluster, unknown sender, voter sets
    /// differ. The text says which, for the sender's log.
    Refused(String),
}

impl Call {
    pub fn name(&self) -> &'static str {
        match self {
            Call::Vote(_) => "vote",
            Call::Append(_) => "append",
            Call::Snapshot(_) => "snapshot",
            Call::Probe => "probe",
            Call::Propose(_) => "propose",
            Call::Heartbeat(_) => "heartbeat",
        }
    }
}

/// Encodes a request frame (size prefix included).
pub fn encode_request(
    correlation_id: i32,
    client_id: &str,
    envelope: &Envelope<Call>,
) -> serde_json::Result<BytesMut> {
    let body = serde_json::to_vec(envelope)?;
    let client = client_id.as_bytes();
    let size = 2 + 2 + 4 + 2 + client.len() + body.len();
    let mut buf = BytesMut::with_capacity(4 + size);
    buf.put_i32(i32::try_from(size).unwrap_or(i32::MAX));
    buf.put_i16(API_KEY);
    buf.put_i16(0);
    buf.put_i32(correlation_id);
    buf.put_i16(i16::try_from(client.len()).unwrap_or(0));
    buf.put_slice(&client[..client.len().min(i16::MAX as usize)]);
    buf.put_slice(&body);
    Ok(buf)
}

/// Decodes a request frame (without its size prefix): correlation id,
/// client id and the envelope.
pub fn decode_request(frame: &[u8]) -> Result<(i32, Option<String>, Envelope<Call>), String> {
    let short = || "inter-node request shorter than its header".to_owned();
    let header = frame.get(..10).ok_or_else(short)?;
    let correlation_id = i32::from_be_bytes([header[4], header[5], header[6], header[7]]);
    let client_len = i16::from_be_bytes([header[8], header[9]]);
    let (client_id, rest) = if client_len < 0 {
        (None, &frame[10..])
    } else {
        let end = 10 + client_len as usize;
        let raw = frame.get(10..end).ok_or_else(short)?;
        (
            Some(String::from_utf8_lossy(raw).into_owned()),
            &frame[end..],
        )
    };
    let envelope =
        serde_json::from_slice(rest).map_err(|e| format!("malformed inter-node call: {e}"))?;
    Ok((correlation_id, client_id, envelope))
}

/// Encodes a response frame (size prefix included).
pub fn encode_response(
    correlation_id: i32,
    reply: &Envelope<Reply>,
) -> serde_json::Result<BytesMut> {
    let body = serde_json::to_vec(reply)?;
    let mut buf = BytesMut::with_capacity(8 + body.len());
    buf.put_i32(i32::try_from(4 + body.len()).unwrap_or(i32::MAX));
    buf.put_i32(correlation_id);
    buf.put_slice(&body);
    Ok(buf)
}

/// Decodes a response frame (without its size prefix).
pub fn decode_response(frame: &Bytes) -> Result<(i32, Envelope<Reply>), String> {
    let head = frame
        .get(..4)
        .ok_or_else(|| "inter-node response shorter than its header".to_owned())?;
    let correlation_id = i32::from_be_bytes([head[0], head[1], head[2], head[3]]);
    let envelope = serde_json::from_slice(&frame[4..])
        .map_err(|e| format!("malformed inter-node reply: {e}"))?;
    Ok((correlation_id, envelope))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_and_replies_round_trip() {
        let call = Envelope {
            from: 2,
            cluster_id: Some("c".into()),
            voters: "1@a:1".into(),
            body: Call::Propose(MetaCommand::SetClusterId {
                cluster_id: "x".into(),
            }),
        };
        let frame = encode_request(7, "veil-node-2", &call).unwrap();
        let (cid, client, back) = decode_request(&frame[4..]).unwrap();
        assert_eq!(
            (cid, client.as_deref(), back.from),
            (7, Some("veil-node-2"), 2)
        );
        assert!(matches!(
            back.body,
            Call::Propose(MetaCommand::SetClusterId { .. })
        ));
        let reply = Envelope {
            from: 1,
            cluster_id: None,
            voters: String::new(),
            body: Reply::Propose(Proposed::Committed { index: 9 }),
        };
        let frame = encode_response(7, &reply).unwrap().freeze();
        let (cid, back) = decode_response(&frame.slice(4..)).unwrap();
        assert_eq!(cid, 7);
        assert!(matches!(
            back.body,
            Reply::Propose(Proposed::Committed { index: 9 })
        ));
        assert!(decode_request(b"\x7d\xc8\x00\x00").is_err());
        assert!(decode_request(b"\x7d\xc8\x00\x00\x00\x00\x00\x01\xff\xffnot json").is_err());
    }
}
