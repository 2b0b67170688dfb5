//! One device connection at the gateway: CONNECT and login, then publishes
//! sealed to the remote broker, subscriptions fed from the gateway's topic
//! readers, keep-alive and the will.
//!
//! Publishes of a connection are sealed and queued in order; a QoS 1 PUBACK
//! (MQTT 3 QoS 2 PUBREC) is sent, in order, once the remote broker
//! acknowledged the record with acks=all, and the socket is not read while
//! `max_inflight` of them wait. Sessions are not kept: every connection
//! starts clean.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use futures_util::future::BoxFuture;
use futures_util::stream::{FuturesOrdered, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::broadcast;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use veil_broker::mqtt::codec::{
    self, CodecError, Connect, Inbound, Message, Outbound, Reason, Version,
};
use veil_broker::mqtt::{filter, ingest};
use veil_client::blind_data::delivered;

use super::remote::Delivery;
use super::Gateway;

/// How long a device has to send CONNECT after the TCP (and TLS) handshake.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The answer to a wrong password is held back this long.
const FAILED_LOGIN_DELAY: Duration = Duration::from_millis(500);

/// Why the connection ends.
struct Close {
    /// Sent in an MQTT 5 DISCONNECT (MQTT 3 just closes).
    reason: Option<(Reason, String)>,
    send_will: bool,
}

impl Close {
    fn abrupt() -> Close {
        Close {
            reason: None,
            send_will: true,
        }
    }

    fn because(reason: Reason, message: impl Into<String>) -> Close {
        Close {
            reason: Some((reason, message.into())),
            send_will: true,
        }
    }
}

/// A publish waiting for the remote broker: packet id, QoS, outcome.
type Durable = BoxFuture<'static, (u16, u8, Result<(), String>)>;

enum Event {
    Shutdown,
    Kicked,
    Durable(u16, u8, Result<(), String>),
    Read(Result<bool, CodecError>),
    Delivery(Result<Arc<Delivery>, broadcast::error::RecvError>),
    KeepAlive,
}

struct Conn<W> {
    gateway: Arc<Gateway>,
    writer: W,
    out: BytesMut,
    version: Version,
    /// The largest packet the device accepts.
    max_out: usize,
    client_id: String,
    /// Filter → granted QoS.
    subscriptions: BTreeMap<String, u8>,
    /// Set at the first subscription.
    deliveries: Option<broadcast::Receiver<Arc<Delivery>>>,
    /// Outgoing QoS 1 packet ids awaiting PUBACK.
    outgoing: HashSet<u16>,
    next_pkid: u16,
    /// QoS 1 messages the device takes unacknowledged.
    out_limit: usize,
    /// MQTT 3 QoS 2 packet ids received and not yet released (PUBREL).
    qos2: HashSet<u16>,
    will: Option<Message>,
}

/// Serves one accepted connection to its end.
pub(crate) async fn serve<S>(
    stream: S,
    peer: SocketAddr,
    gateway: Arc<Gateway>,
    tls_principal: Option<String>,
    allow_anonymous: bool,
    shutdown: CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (mut reader, writer) = tokio::io::split(stream);
    let max_in = gateway.config.max_packet_bytes;
    let mut inbuf = BytesMut::with_capacity(1024);
    let first = tokio::select! {
        () = shutdown.cancelled() => return,
        r = tokio::time::timeout(CONNECT_TIMEOUT, read_packet(&mut reader, &mut inbuf, None, max_in)) => r,
    };
    let connect = match first {
        Ok(Ok(Some(Inbound::Connect(c)))) => c,
        Ok(Err(CodecError::UnsupportedVersion(level))) => {
            let mut w = writer;
            let mut out = BytesMut::new();
            if codec::write(
                &mut out,
                Version::V4,
                refusal(Reason::UnsupportedProtocolVersion, None),
                usize::MAX,
            )
            .is_ok()
            {
                let _ = w.write_all(&out).await;
            }
            tracing::debug!(%peer, level, "MQTT protocol level not supported");
            return;
        }
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "bad first MQTT packet");
            return;
        }
        _ => return,
    };
    let Some((mut conn, keep_alive, ack)) = Box::pin(accept(
        &gateway,
        writer,
        *connect,
        tls_principal,
        allow_anonymous,
    ))
    .await
    else {
        return;
    };
    let (id, kicked) = gateway.claim(&conn.client_id);
    if conn.send(ack).is_err() || conn.flush().await.is_err() {
        gateway.release(&conn.client_id, id);
        return;
    }
    tracing::debug!(%peer, client_id = %conn.client_id, version = ?conn.version, "MQTT client connected");
    let close = conn
        .run(&mut reader, &mut inbuf, keep_alive, &kicked, &shutdown)
        .await;
    gateway.release(&conn.client_id, id);
    conn.finish(close).await;
}

fn refusal(reason: Reason, why: Option<&str>) -> Outbound {
    Outbound::ConnAck {
        session_present: false,
        reason,
        receive_maximum: 0,
        max_packet_size: 0,
        server_keep_alive: None,
        assigned_client_id: None,
        reason_string: why.map(str::to_owned),
    }
}

/// Checks a CONNECT: the connection, its keep-alive and the CONNACK to
/// send, or `None` once a refusal was sent.
async fn accept<W: AsyncWrite + Unpin>(
    gateway: &Arc<Gateway>,
    mut writer: W,
    c: Connect,
    tls_principal: Option<String>,
    allow_anonymous: bool,
) -> Option<(Conn<W>, u16, Outbound)> {
    let cfg = &gateway.config;
    let version = c.version;
    let mut refused: Option<(Reason, &str)> = None;
    if let Some(w) = &c.will {
        if filter::validate_name(&w.topic).is_err() {
            refused = Some((Reason::TopicNameInvalid, "invalid will topic"));
        } else if w.qos > 1 && version == Version::V5 {
            refused = Some((Reason::QosNotSupported, "QoS 2 is not supported"));
        }
    }
    // Who: a user name and password, else the client certificate, else anonymous.
    let principal = if refused.is_some() {
        None
    } else if let Some(user) = &c.username {
        let password = c.password.clone().unwrap_or_default();
        let ok = match &gateway.users {
            Some(users) => users.verify(user, password).await,
            None => false,
        };
        if ok {
            Some(format!("User:{user}"))
        } else {
            tokio::time::sleep(FAILED_LOGIN_DELAY).await;
            refused = Some((Reason::BadUserNameOrPassword, "bad user name or password"));
            None
        }
    } else if let Some(p) = tls_principal {
        Some(p)
    } else if allow_anonymous {
        Some("User:ANONYMOUS".to_owned())
    } else {
        refused = Some((
            Reason::NotAuthorized,
            "this listener needs a user name and password or a client certificate",
        ));
        None
    };
    let Some(principal) = principal else {
        let (reason, why) = refused.unwrap_or((Reason::NotAuthorized, "not authorized"));
        let mut out = BytesMut::new();
        if codec::write(&mut out, version, refusal(reason, Some(why)), usize::MAX).is_ok() {
            let _ = writer.write_all(&out).await;
        }
        tracing::debug!(reason = ?reason, why, "MQTT CONNECT refused");
        return None;
    };
    let mut assigned = None;
    let client_id = if c.client_id.is_empty() {
        let id = format!("veil-gw-{:016x}", rand::random::<u64>());
        if version == Version::V5 {
            assigned = Some(id.clone());
        }
        id
    } else {
        c.client_id.clone()
    };
    tracing::debug!(client_id = %client_id, %principal, "device logged in");
    let asked = c.keep_alive;
    let keep_alive = if asked == 0 || asked > cfg.max_keep_alive_secs {
        cfg.max_keep_alive_secs
    } else {
        asked
    };
    let ack = Outbound::ConnAck {
        // Sessions are not kept at the gateway.
        session_present: false,
        reason: Reason::Success,
        receive_maximum: u16::try_from(cfg.max_inflight).unwrap_or(u16::MAX),
        max_packet_size: u32::try_from(cfg.max_packet_bytes).unwrap_or(u32::MAX),
        server_keep_alive: (keep_alive != asked).then_some(keep_alive),
        assigned_client_id: assigned,
        reason_string: None,
    };
    let conn = Conn {
        gateway: Arc::clone(gateway),
        writer,
        out: BytesMut::new(),
        version,
        max_out: c
            .max_packet_size
            .map_or(usize::MAX, |m| usize::try_from(m).unwrap_or(usize::MAX)),
        client_id,
        subscriptions: BTreeMap::new(),
        deliveries: None,
        outgoing: HashSet::new(),
        next_pkid: 0,
        out_limit: usize::from(c.receive_maximum.unwrap_or(u16::MAX))
            .min(cfg.max_inflight)
            .max(1),
        qos2: HashSet::new(),
        will: c.will,
    };
    Some((conn, keep_alive, ack))
}

/// Reads until one whole packet is buffered; `None` when the peer closed.
async fn read_packet<R: AsyncRead + Unpin>(
    reader: &mut R,
    inbuf: &mut BytesMut,
    version: Option<Version>,
    max: usize,
) -> Result<Option<Inbound>, CodecError> {
    loop {
        if let Some(p) = codec::read(inbuf, version, max)? {
            return Ok(Some(p));
        }
        if !fill(reader, inbuf, max).await? {
            return Ok(None);
        }
    }
}

/// Reads more bytes; the buffer grows only to what the next packet's
/// header says it needs, itself capped at `max`. `false` at end of stream.
async fn fill<R: AsyncRead + Unpin>(
    reader: &mut R,
    inbuf: &mut BytesMut,
    max: usize,
) -> Result<bool, CodecError> {
    let need = codec::needed(inbuf, max)?;
    inbuf.reserve(need.clamp(1024, max.max(1024)));
    let n = reader
        .read_buf(inbuf)
        .await
        .map_err(|e| CodecError::Malformed(e.to_string()))?;
    Ok(n > 0)
}

/// The next message for the subscriptions; never without any.
async fn next_delivery(
    rx: &mut Option<broadcast::Receiver<Arc<Delivery>>>,
) -> Result<Arc<Delivery>, broadcast::error::RecvError> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

impl<W: AsyncWrite + Unpin> Conn<W> {
    async fn run<R: AsyncRead + Unpin>(
        &mut self,
        reader: &mut R,
        inbuf: &mut BytesMut,
        keep_alive_secs: u16,
        kicked: &CancellationToken,
        shutdown: &CancellationToken,
    ) -> Close {
        let max_in = self.gateway.config.max_packet_bytes;
        let max_inflight = self.gateway.config.max_inflight;
        let publish_timeout = Duration::from_millis(self.gateway.config.publish_timeout_ms);
        // MQTT: the server closes after one and a half keep-alive periods of silence.
        let idle = Duration::from_millis(u64::from(keep_alive_secs) * 1500);
        let mut deadline = Instant::now() + idle;
        let mut durable: FuturesOrdered<Durable> = FuturesOrdered::new();
        loop {
            let room = self.outgoing.len() < self.out_limit;
            let event = tokio::select! {
                biased;
                () = shutdown.cancelled() => Event::Shutdown,
                () = kicked.cancelled() => Event::Kicked,
                Some((pkid, qos, result)) = durable.next() => Event::Durable(pkid, qos, result),
                read = fill(reader, inbuf, max_in), if durable.len() < max_inflight => Event::Read(read),
                d = next_delivery(&mut self.deliveries), if room => Event::Delivery(d),
                () = tokio::time::sleep_until(deadline) => Event::KeepAlive,
            };
            match event {
                Event::Shutdown => {
                    return Close {
                        reason: Some((
                            Reason::ServerShuttingDown,
                            "the gateway is shutting down".into(),
                        )),
                        send_will: false,
                    };
                }
                Event::Kicked => {
                    return Close::because(
                        Reason::SessionTakenOver,
                        "another connection took the client id",
                    );
                }
                Event::Durable(pkid, qos, result) => {
                    if let Err(close) = self.acknowledge(pkid, qos, result) {
                        let _ = self.flush().await;
                        return close;
                    }
                }
                Event::Read(Ok(true)) => deadline = Instant::now() + idle,
                Event::Read(Ok(false)) => return Close::abrupt(),
                Event::Read(Err(CodecError::TooLarge(n))) => {
                    return Close::because(
                        Reason::PacketTooLarge,
                        format!("a packet of {n} bytes"),
                    );
                }
                Event::Read(Err(e)) => {
                    return Close::because(Reason::MalformedPacket, e.to_string())
                }
                Event::Delivery(Ok(d)) => self.deliver(&d),
                Event::Delivery(Err(broadcast::error::RecvError::Lagged(n))) => {
                    let _ = self.flush().await;
                    return Close::because(
                        Reason::ImplementationSpecificError,
                        format!("the subscriber fell {n} messages behind"),
                    );
                }
                Event::Delivery(Err(broadcast::error::RecvError::Closed)) => self.deliveries = None,
                Event::KeepAlive => {
                    return Close::because(Reason::KeepAliveTimeout, "keep-alive timed out")
                }
            }
            // Every whole packet buffered, while the inflight window has room.
            while durable.len() < max_inflight {
                match codec::read(inbuf, Some(self.version), max_in) {
                    Ok(Some(p)) => {
                        if let Err(close) = self.handle(p, &mut durable, publish_timeout).await {
                            let _ = self.flush().await;
                            return close;
                        }
                    }
                    Ok(None) => break,
                    Err(CodecError::TooLarge(n)) => {
                        return Close::because(
                            Reason::PacketTooLarge,
                            format!("a packet of {n} bytes"),
                        );
                    }
                    Err(e) => return Close::because(Reason::MalformedPacket, e.to_string()),
                }
            }
            if inbuf.is_empty() && inbuf.capacity() > 0 {
                *inbuf = BytesMut::new();
            }
            if self.flush().await.is_err() {
                return Close::abrupt();
            }
        }
    }

    /// One packet from the device.
    async fn handle(
        &mut self,
        p: Inbound,
        durable: &mut FuturesOrdered<Durable>,
        publish_timeout: Duration,
    ) -> Result<(), Close> {
        match p {
            Inbound::Publish {
                pkid,
                message,
                topic_alias,
            } => {
                if topic_alias.is_some() {
                    return Err(Close::because(
                        Reason::TopicAliasInvalid,
                        "topic aliases are not accepted (Topic Alias Maximum is 0)",
                    ));
                }
                self.publish(pkid, message, durable, publish_timeout).await
            }
            Inbound::PubAck(pkid) => {
                self.outgoing.remove(&pkid);
                Ok(())
            }
            Inbound::PubRec(pkid) | Inbound::PubComp(pkid) => Err(Close::because(
                Reason::ProtocolError,
                format!("PUBREC/PUBCOMP for packet {pkid}, which was not QoS 2"),
            )),
            Inbound::PubRel(pkid) => {
                self.qos2.remove(&pkid);
                self.send(Outbound::PubComp(pkid))
            }
            Inbound::Subscribe { pkid, filters } => {
                let mut results = Vec::with_capacity(filters.len());
                let mut retained = Vec::new();
                for f in filters {
                    let r = self.subscribe(&f.filter, f.qos.min(1)).await;
                    if let Ok(q) = r {
                        for mut m in self.gateway.retained.matching(&f.filter) {
                            m.qos = m.qos.min(q);
                            retained.push(m);
                        }
                    }
                    results.push(r);
                }
                self.send(Outbound::SubAck { pkid, results })?;
                for mut m in retained {
                    // Beyond the inflight window retained messages go at QoS 0.
                    if self.outgoing.len() >= self.out_limit {
                        m.qos = 0;
                    }
                    self.send_message(m);
                }
                Ok(())
            }
            Inbound::Unsubscribe { pkid, filters } => {
                let count = filters.len();
                for f in &filters {
                    self.subscriptions.remove(f);
                }
                if self.subscriptions.is_empty() {
                    // Nothing to keep up with any more.
                    self.deliveries = None;
                }
                self.send(Outbound::UnsubAck { pkid, count })
            }
            Inbound::PingReq => self.send(Outbound::PingResp),
            Inbound::Disconnect { reason, .. } => Err(Close {
                reason: None,
                // 0x04: "disconnect with will message".
                send_will: reason == 0x04,
            }),
            Inbound::Auth => Err(Close::because(
                Reason::ProtocolError,
                "enhanced authentication is not offered",
            )),
            Inbound::Connect(_) | Inbound::ServerOnly => Err(Close::because(
                Reason::ProtocolError,
                "a packet only a server sends",
            )),
        }
    }

    async fn publish(
        &mut self,
        pkid: u16,
        message: Message,
        durable: &mut FuturesOrdered<Durable>,
        publish_timeout: Duration,
    ) -> Result<(), Close> {
        if filter::validate_name(&message.topic).is_err() {
            return Err(Close::because(
                Reason::TopicNameInvalid,
                format!("'{}' is not a valid topic name", message.topic),
            ));
        }
        if message.qos > 1 && self.version == Version::V5 {
            return Err(Close::because(
                Reason::QosNotSupported,
                "QoS 2 is not supported (Maximum QoS is 1)",
            ));
        }
        if message.qos == 2 && self.qos2.contains(&pkid) {
            // A resend before PUBREL: sent once already.
            return self.send(Outbound::PubRec {
                pkid,
                reason: Reason::Success,
            });
        }
        let queued = match send(&self.gateway, &message).await {
            Ok(f) => f,
            Err(Refused::Unmapped) => {
                return self.refuse(
                    pkid,
                    message.qos,
                    Reason::TopicNameInvalid,
                    "no mapping rule matches the topic",
                );
            }
            Err(Refused::Final(why)) => {
                return self.refuse(pkid, message.qos, Reason::UnspecifiedError, &why)
            }
            // Not final: close without an answer so the device sends it again.
            Err(Refused::Transient(why)) => {
                return Err(Close::because(Reason::ImplementationSpecificError, why))
            }
        };
        if message.retain && self.gateway.retained.set(&message).is_err() {
            tracing::debug!(client_id = %self.client_id, "retained message store full");
        }
        let qos = message.qos;
        if qos == 0 {
            tokio::spawn(report_failure(queued));
            return Ok(());
        }
        if qos == 2 {
            self.qos2.insert(pkid);
        }
        durable.push_back(Box::pin(async move {
            let result = match tokio::time::timeout(publish_timeout, delivered(queued)).await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => {
                    Err("the remote broker did not acknowledge the record in time".to_owned())
                }
            };
            (pkid, qos, result)
        }));
        Ok(())
    }

    /// A publish not taken: a reason code where MQTT 5 has one, else the
    /// connection closes (MQTT 3 has no way to say no).
    fn refuse(&mut self, pkid: u16, qos: u8, reason: Reason, why: &str) -> Result<(), Close> {
        tracing::debug!(client_id = %self.client_id, why, "MQTT publish refused");
        if self.version == Version::V5 && qos == 1 {
            return self.send(Outbound::PubAck {
                pkid,
                reason,
                reason_string: Some(why.to_owned()),
            });
        }
        Err(Close::because(reason, why))
    }

    /// A QoS 1 (or MQTT 3 QoS 2) publish was acknowledged by the remote
    /// broker, or was not.
    fn acknowledge(&mut self, pkid: u16, qos: u8, result: Result<(), String>) -> Result<(), Close> {
        match result {
            Ok(()) if qos == 2 => self.send(Outbound::PubRec {
                pkid,
                reason: Reason::Success,
            }),
            Ok(()) => self.send(Outbound::PubAck {
                pkid,
                reason: Reason::Success,
                reason_string: None,
            }),
            // No PUBACK: the device resends after reconnecting (at least once).
            Err(why) => Err(Close::because(Reason::ImplementationSpecificError, why)),
        }
    }

    /// Adds a subscription; the granted QoS or why not.
    async fn subscribe(&mut self, f: &str, qos: u8) -> Result<u8, Reason> {
        if filter::validate_filter(f).is_err() || f.starts_with("$share/") {
            return Err(Reason::TopicFilterInvalid);
        }
        let topics = self.gateway.mappings.topics_for_filter(f);
        if topics.is_empty() {
            return Err(Reason::TopicFilterInvalid);
        }
        if self.deliveries.is_none() {
            // Before the readers are checked, so nothing they read after
            // the SUBACK is missed.
            self.deliveries = Some(self.gateway.remote.deliveries());
        }
        for t in &topics {
            if let Err(e) = self.gateway.remote.read(t).await {
                tracing::warn!(client_id = %self.client_id, error = %e, "subscription refused: cannot read the remote topic");
                return Err(Reason::UnspecifiedError);
            }
        }
        self.subscriptions.insert(f.to_owned(), qos);
        Ok(qos)
    }

    /// Sends a message read back if a subscription wants it, at the highest
    /// QoS granted among the matching ones.
    fn deliver(&mut self, d: &Delivery) {
        let topic = &d.message.topic;
        let Some(qos) = self
            .subscriptions
            .iter()
            .filter(|(f, _)| filter::matches(f, topic))
            .map(|(_, q)| *q)
            .max()
        else {
            return;
        };
        // Reader filters already checked the mapping; a subscription whose
        // topics do not include this Kafka topic cannot match it.
        debug_assert!(self.gateway.mappings.routes_to(topic, &d.kafka_topic));
        let mut m = d.message.clone();
        m.qos = qos;
        self.send_message(m);
    }

    /// Queues one message to the device (QoS 1: tracked until PUBACK).
    fn send_message(&mut self, message: Message) {
        let qos = message.qos;
        let pkid = if qos > 0 { self.allocate_pkid() } else { 0 };
        let packet = Outbound::Publish {
            pkid,
            dup: false,
            message,
        };
        match codec::write(&mut self.out, self.version, packet, self.max_out) {
            Ok(_) if qos > 0 => {
                self.outgoing.insert(pkid);
            }
            Ok(_) => {}
            // Larger than the device accepts: MQTT 5 says drop it.
            Err(e) => tracing::debug!(client_id = %self.client_id, error = %e, "message not sent"),
        }
    }

    fn allocate_pkid(&mut self) -> u16 {
        loop {
            self.next_pkid = self.next_pkid.wrapping_add(1);
            if self.next_pkid != 0 && !self.outgoing.contains(&self.next_pkid) {
                return self.next_pkid;
            }
        }
    }

    fn send(&mut self, p: Outbound) -> Result<(), Close> {
        codec::write(&mut self.out, self.version, p, self.max_out)
            .map(|_| ())
            .map_err(|e| Close::because(Reason::ImplementationSpecificError, e.to_string()))
    }

    async fn flush(&mut self) -> std::io::Result<()> {
        if self.out.is_empty() {
            return Ok(());
        }
        let r = self.writer.write_all(&self.out).await;
        self.out = BytesMut::new();
        r
    }

    /// Says why (MQTT 5) and publishes the will if due.
    async fn finish(mut self, close: Close) {
        if let Some((reason, message)) = close.reason {
            tracing::debug!(client_id = %self.client_id, ?reason, %message, "closing MQTT connection");
            if self.version == Version::V5 {
                let _ = self.send(Outbound::Disconnect {
                    reason,
                    reason_string: Some(message),
                });
                let _ = self.flush().await;
            }
        }
        let _ = self.writer.shutdown().await;
        if !close.send_will {
            return;
        }
        let Some(will) = self.will.take() else {
            return;
        };
        match send(&self.gateway, &will).await {
            Ok(queued) => {
                if will.retain {
                    let _ = self.gateway.retained.set(&will);
                }
                tokio::spawn(report_failure(queued));
            }
            Err(e) => {
                tracing::debug!(client_id = %self.client_id, reason = %e, "will not published");
            }
        }
    }
}

/// Why a publish was not taken.
#[derive(Debug, thiserror::Error)]
enum Refused {
    #[error("no mapping rule matches the topic")]
    Unmapped,
    /// Sending again will not help (a revoked key, for one).
    #[error("{0}")]
    Final(String),
    #[error("{0}")]
    Transient(String),
}

/// Maps and seals one message and queues it for the remote broker.
async fn send(
    gateway: &Gateway,
    message: &Message,
) -> Result<rdkafka::producer::DeliveryFuture, Refused> {
    let target = gateway
        .mappings
        .target(&message.topic)
        .ok_or(Refused::Unmapped)?;
    let (key, headers) = ingest::record_parts(message, &target.key, target.key_is_topic);
    let headers: Vec<veil_blind::Header> = headers
        .into_iter()
        .map(|(k, v)| (String::from_utf8_lossy(&k).into_owned(), Some(v)))
        .collect();
    gateway
        .remote
        .send(&target.kafka_topic, &key, &message.payload, &headers)
        .await
        .map_err(|e| {
            if super::remote::is_final(&e) {
                tracing::warn!(topic = %target.kafka_topic, error = %e, "publish refused");
                Refused::Final(e.to_string())
            } else {
                Refused::Transient(e.to_string())
            }
        })
}

/// A QoS 0 message (or a will) nobody waits for: its failure is logged.
async fn report_failure(queued: rdkafka::producer::DeliveryFuture) {
    if let Err(e) = delivered(queued).await {
        tracing::warn!(error = %e, "a QoS 0 message was not stored by the remote broker");
    }
}
