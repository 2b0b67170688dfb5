//! Calling other nodes: one connection per (peer, lane), reused across
//! calls and re-dialed after any failure, over TCP or mTLS.
//!
//! Lanes keep traffic that must not queue behind each other apart: Raft
//! replication (which may carry snapshots), votes, and control calls
//! (proposals, heartbeats, probes). Each lane carries one call at a time.
//!
//! Under mTLS the node that answers must be the one its certificate names
//! (`CN=node-<id>`), as the listener checks callers: a node holding another
//! node's certificate is refused both ways. Refusals and failed handshakes
//! are logged once per problem ([`super::notices`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::notices::Notices;
use super::rpc::{self, Call, Envelope, Reply};
use crate::frame::FrameReader;

/// Largest reply accepted from another node (snapshot chunks and batches of
/// Raft entries stay far below it).
const MAX_REPLY_BYTES: usize = 256 * 1024 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Lane {
    Raft,
    Vote,
    Control,
    /// A follower's fetches from one leader (Kafka Fetch and OffsetForLeaderEpoch).
    Replica,
}

#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("cannot reach {addr}: {reason}")]
    Unreachable { addr: String, reason: String },
    #[error("{addr} did not answer within {timeout:?}")]
    Timeout { addr: String, timeout: Duration },
    #[error("{addr} refused the call: {reason}")]
    Refused { addr: String, reason: String },
    #[error("{addr} answered garbage: {reason}")]
    Protocol { addr: String, reason: String },
}

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// A dialed stream, the reader of its reply frames, and the node id its
/// certificate names (under mTLS).
type Conn = (Box<dyn Stream>, FrameReader, Option<i32>);
/// One lane's connection, dialed on first use.
type Slot = Arc<tokio::sync::Mutex<Option<Conn>>>;

/// Who this node is, as it tells the nodes it calls.
#[derive(Debug)]
pub struct Identity {
    pub node_id: i32,
    pub voters: String,
    /// Learned from metadata once the quorum named the cluster.
    pub cluster_id: RwLock<Option<String>>,
}

pub struct PeerClient {
    identity: Arc<Identity>,
    tls: Option<Arc<rustls::ClientConfig>>,
    /// Calls leave from this node's inter-node address (its own interface
    /// on a multi-homed host), so peers see which node is calling.
    source: Option<std::net::IpAddr>,
    conns: Mutex<HashMap<(String, Lane), Slot>>,
    correlation: AtomicI32,
    client_id: String,
    /// Problems with other nodes, logged once each.
    notices: Notices,
}

impl std::fmt::Debug for PeerClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerClient")
            .field("node_id", &self.identity.node_id)
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

impl PeerClient {
    pub fn new(
        identity: Arc<Identity>,
        tls: Option<Arc<rustls::ClientConfig>>,
        source: Option<std::net::IpAddr>,
    ) -> PeerClient {
        let client_id = format!("veil-node-{}", identity.node_id);
        PeerClient {
            identity,
            tls,
            source: source.filter(|ip| !ip.is_unspecified()),
            conns: Mutex::new(HashMap::new()),
            correlation: AtomicI32::new(1),
            client_id,
            notices: Notices::default(),
        }
    }

    pub fn identity(&self) -> &Arc<Identity> {
        &self.identity
    }

    /// This node's record of problems with others (shared with the
    /// listener side, so each problem is logged once per node).
    pub fn notices(&self) -> &Notices {
        &self.notices
    }

    /// Sends `body` to the node at `addr` and waits at most `timeout`.
    pub async fn call(
        &self,
        addr: &str,
        lane: Lane,
        body: Call,
        timeout: Duration,
    ) -> Result<Reply, CallError> {
        let slot = Arc::clone(
            self.conns
                .lock()
                .entry((addr.to_owned(), lane))
                .or_default(),
        );
        let envelope = Envelope {
            from: self.identity.node_id,
            cluster_id: self.identity.cluster_id.read().clone(),
            voters: self.identity.voters.clone(),
            body,
        };
        let correlation_id = self.correlation.fetch_add(1, Ordering::Relaxed);
        let frame =
            rpc::encode_request(correlation_id, &self.client_id, &envelope).map_err(|e| {
                CallError::Protocol {
                    addr: addr.to_owned(),
                    reason: e.to_string(),
                }
            })?;
        let work = async {
            let mut guard = slot.lock().await;
            // The connection is out of the slot while in use: a call given up half-way (a
            // timeout) drops it with its unread reply or half-written request, and the next
            // call dials afresh.
            let mut conn = match guard.take() {
                Some(conn) => conn,
                None => self.dial(addr).await?,
            };
            let outcome = exchange(&mut conn, &frame, addr).await;
            if outcome.is_ok() {
                *guard = Some(conn);
            }
            outcome
        };
        let Ok(outcome) = tokio::time::timeout(timeout, work).await else {
            return Err(CallError::Timeout {
                addr: addr.to_owned(),
                timeout,
            });
        };
        let (cid, reply, certified) = outcome?;
        if let Some(id) = certified.filter(|id| *id != reply.from) {
            *slot.lock().await = None;
            let reason = format!(
                "its certificate names node {id} but it answers as node {}; each node needs its own \
                 certificate (CN=node-<id>)",
                reply.from
            );
            self.notices.report(
                &format!("impostor {addr} {reason}"),
                &format!("refusing the answer of {addr}: {reason}"),
            );
            return Err(CallError::Refused {
                addr: addr.to_owned(),
                reason,
            });
        }
        if cid != correlation_id {
            *slot.lock().await = None;
            return Err(CallError::Protocol {
                addr: addr.to_owned(),
                reason: format!("reply to call {cid}, expected {correlation_id}"),
            });
        }
        if let Some(theirs) = &reply.cluster_id {
            let mut ours = self.identity.cluster_id.write();
            match ours.as_ref() {
                Some(mine) if mine != theirs => {
                    return Err(CallError::Refused {
                        addr: addr.to_owned(),
                        reason: format!(
                            "it belongs to cluster {theirs}, this node to cluster {mine}"
                        ),
                    })
                }
                Some(_) => {}
                None => *ours = Some(theirs.clone()),
            }
        }
        match reply.body {
            Reply::Refused(reason) => {
                self.notices.report(
                    &format!("refused by {} {reason}", reply.from),
                    &format!(
                        "node {} ({addr}) refuses this node (node {}): {reason}",
                        reply.from, self.identity.node_id
                    ),
                );
                Err(CallError::Refused {
                    addr: addr.to_owned(),
                    reason,
                })
            }
            body => Ok(body),
        }
    }

    /// Sends a Kafka request at `version` to the node at `addr` (a
    /// follower's Fetch and OffsetForLeaderEpoch) and waits at most `timeout`.
    pub async fn kafka<R: kafka_protocol::protocol::Request>(
        &self,
        addr: &str,
        lane: Lane,
        version: i16,
        request: &R,
        timeout: Duration,
    ) -> Result<R::Response, CallError> {
        use bytes::BufMut;
        use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, StrBytes};
        let protocol = |reason: String| CallError::Protocol {
            addr: addr.to_owned(),
            reason,
        };
        let correlation_id = self.correlation.fetch_add(1, Ordering::Relaxed);
        let header = kafka_protocol::messages::RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(correlation_id)
            .with_client_id(Some(StrBytes::from_string(self.client_id.clone())));
        let header_version = R::header_version(version);
        let size = header
            .compute_size(header_version)
            .and_then(|h| Ok(h + request.compute_size(version)?))
            .map_err(|e| protocol(e.to_string()))?;
        let mut frame = bytes::BytesMut::with_capacity(4 + size);
        frame.put_i32(i32::try_from(size).map_err(|e| protocol(e.to_string()))?);
        header
            .encode(&mut frame, header_version)
            .and_then(|()| request.encode(&mut frame, version))
            .map_err(|e| protocol(e.to_string()))?;
        let slot = Arc::clone(
            self.conns
                .lock()
                .entry((addr.to_owned(), lane))
                .or_default(),
        );
        let work = async {
            let mut guard = slot.lock().await;
            // Out of the slot while in use, as in `call`.
            let mut conn = match guard.take() {
                Some(conn) => conn,
                None => self.dial(addr).await?,
            };
            let (stream, frames, _) = &mut conn;
            let outcome = async {
                stream.write_all(&frame).await?;
                stream.flush().await?;
                frames
                    .next(stream, MAX_REPLY_BYTES)
                    .await
                    .map_err(|e| std::io::Error::other(e.to_string()))
            }
            .await;
            if outcome.is_ok() {
                *guard = Some(conn);
            }
            outcome.map_err(|e| CallError::Unreachable {
                addr: addr.to_owned(),
                reason: e.to_string(),
            })
        };
        let Ok(reply) = tokio::time::timeout(timeout, work).await else {
            return Err(CallError::Timeout {
                addr: addr.to_owned(),
                timeout,
            });
        };
        let mut reply = reply?;
        let header = kafka_protocol::messages::ResponseHeader::decode(
            &mut reply,
            <R::Response as HeaderVersion>::header_version(version),
        )
        .map_err(|e| protocol(e.to_string()))?;
        if header.correlation_id != correlation_id {
            *slot.lock().await = None;
            return Err(protocol(format!(
                "reply to call {}, expected {correlation_id}",
                header.correlation_id
            )));
        }
        R::Response::decode(&mut reply, version).map_err(|e| protocol(e.to_string()))
    }

    async fn dial(&self, addr: &str) -> Result<Conn, CallError> {
        let unreachable = |reason: String| CallError::Unreachable {
            addr: addr.to_owned(),
            reason,
        };
        let tcp = match self.source {
            None => TcpStream::connect(addr).await,
            Some(ip) => connect_from(ip, addr).await,
        }
        .map_err(|e| unreachable(e.to_string()))?;
        let _ = tcp.set_nodelay(true);
        let (stream, certified): (Box<dyn Stream>, Option<i32>) = match &self.tls {
            None => (Box::new(tcp), None),
            Some(config) => {
                let host = addr
                    .rsplit_once(':')
                    .map_or(addr, |(h, _)| h)
                    .trim_matches(['[', ']']);
                let name = ServerName::try_from(host.to_owned())
                    .map_err(|e| unreachable(format!("bad server name '{host}': {e}")))?;
                let tls = match tokio_rustls::TlsConnector::from(Arc::clone(config))
                    .connect(name, tcp)
                    .await
                {
                    Ok(tls) => tls,
                    Err(e) => {
                        self.notices.report(
                            &format!("handshake {addr} {e}"),
                            &format!(
                                "TLS handshake with {addr} failed: {e}; every node's certificate must \
                                 come from the [cluster.tls] CA and name the addresses nodes dial"
                            ),
                        );
                        return Err(unreachable(format!("TLS handshake failed: {e}")));
                    }
                };
                let certified = tls
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|chain| chain.first())
                    .and_then(|leaf| crate::auth::principal::subject_dn(leaf))
                    .and_then(|dn| super::handler::certified_node(&format!("User:{dn}")));
                let Some(certified) = certified else {
                    return Err(CallError::Refused {
                        addr: addr.to_owned(),
                        reason: "its certificate names no node (CN=node-<id>)".into(),
                    });
                };
                (Box::new(tls), Some(certified))
            }
        };
        Ok((stream, FrameReader::new(), certified))
    }
}

/// Connects to `addr` from `source` (any port).
async fn connect_from(source: std::net::IpAddr, addr: &str) -> std::io::Result<TcpStream> {
    let target = tokio::net::lookup_host(addr)
        .await?
        .find(|a| a.is_ipv4() == source.is_ipv4())
        .ok_or_else(|| {
            std::io::Error::other(format!("no address of {addr} to reach from {source}"))
        })?;
    let socket = if source.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.bind(std::net::SocketAddr::new(source, 0))?;
    socket.connect(target).await
}

async fn exchange(
    conn: &mut Conn,
    frame: &[u8],
    addr: &str,
) -> Result<(i32, Envelope<Reply>, Option<i32>), CallError> {
    let broken = |reason: String| CallError::Unreachable {
        addr: addr.to_owned(),
        reason,
    };
    let (stream, frames, certified) = conn;
    stream
        .write_all(frame)
        .await
        .map_err(|e| broken(e.to_string()))?;
    stream.flush().await.map_err(|e| broken(e.to_string()))?;
    let reply = frames
        .next(stream, MAX_REPLY_BYTES)
        .await
        .map_err(|e| broken(e.to_string()))?;
    let (cid, envelope) = rpc::decode_response(&reply).map_err(|reason| CallError::Protocol {
        addr: addr.to_owned(),
        reason,
    })?;
    Ok((cid, envelope, *certified))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;

    /// A node that answers every Probe with `Probe(None)`, on its first connection only after `delay`.
    async fn slow_first_answer(listener: TcpListener, delay: Duration) {
        for connection in 0..4 {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            let pause = (connection == 0).then_some(delay);
            tokio::spawn(async move {
                for _ in 0..8 {
                    let mut len = [0; 4];
                    if stream.read_exact(&mut len).await.is_err() {
                        return;
                    }
                    let mut frame = vec![0; u32::from_be_bytes(len) as usize];
                    if stream.read_exact(&mut frame).await.is_err() {
                        return;
                    }
                    let (cid, _, _) = rpc::decode_request(&frame).unwrap();
                    if let Some(pause) = pause {
                        tokio::time::sleep(pause).await;
                    }
                    let reply = Envelope {
                        from: 2,
                        cluster_id: None,
                        voters: String::new(),
                        body: Reply::Probe(None),
                    };
                    let bytes = rpc::encode_response(cid, &reply).unwrap();
                    if stream.write_all(&bytes).await.is_err() {
                        return;
                    }
                }
            });
        }
    }

    #[tokio::test]
    async fn a_call_waiting_behind_a_timed_out_one_never_reads_its_late_reply() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(slow_first_answer(listener, Duration::from_millis(400)));
        let identity = Arc::new(Identity {
            node_id: 1,
            voters: String::new(),
            cluster_id: RwLock::new(None),
        });
        let client = Arc::new(PeerClient::new(identity, None, None));
        // The first call gives up while the second waits for the connection; the second must
        // get its own answer, not the first one's arriving late on the same stream.
        let early = {
            let client = Arc::clone(&client);
            let addr = addr.clone();
            tokio::spawn(async move {
                client
                    .call(
                        &addr,
                        Lane::Control,
                        Call::Probe,
                        Duration::from_millis(100),
                    )
                    .await
            })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        let waiting = client
            .call(&addr, Lane::Control, Call::Probe, Duration::from_secs(5))
            .await;
        assert!(matches!(
            early.await.unwrap(),
            Err(CallError::Timeout { .. })
        ));
        assert!(
            matches!(waiting, Ok(Reply::Probe(None))),
            "second call: {waiting:?}"
        );
        let again = client
            .call(&addr, Lane::Control, Call::Probe, Duration::from_secs(5))
            .await;
        assert!(matches!(again, Ok(Reply::Probe(None))), "{again:?}");
    }
}
