//! One MQTT connection: CONNECT and authentication, then publishes in,
//! subscriptions served from the log, keep-alive, the will, and saving a
//! persistent session.
//!
//! One task per connection. Incoming QoS 1 publishes are appended in order
//! and their PUBACKs sent, in order, once durable ([`super::ingest`]);
//! while `max_inflight` of them wait the socket is not read, so a fast
//! publisher is slowed rather than buffered. Subscribers are fed straight
//! from the partitions' logs: a cursor per partition advances only as
//! messages are written, and stops while `max_inflight` QoS 1 deliveries
//! await PUBACK — the log is the queue, so a slow subscriber costs a few
//! cursors, never a growing buffer, and never holds anyone else up.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::future::BoxFuture;
use futures_util::stream::{FuturesOrdered, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use veil_log::records::{for_each_record_with_headers, RecordView};
use veil_log::BatchHeader;

use super::codec::{
    self, CodecError, Connect, Inbound, Message, Outbound, Properties, Reason, Version,
};
use super::ingest::{self, Publisher, Refused, CONTENT_TYPE_HEADER, PAYLOAD_FORMAT_HEADER};
use super::mapping::{record_topic, TOPIC_HEADER};
use super::session::{SessionState, Subscription, SAVE_INTERVAL};
use super::{filter, MqttService};
use crate::context::ANONYMOUS;
use crate::partition::Partition;

/// How long a client has to send CONNECT after the TCP (and TLS) handshake.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Headers read per record; a record with more is skipped.
const MAX_HEADERS: usize = 64;
/// How long a closing connection reads what the client still sends.
const LINGER: Duration = Duration::from_secs(1);
/// How long a takeover waits for the previous connection to save.
const TAKEOVER_WAIT: Duration = Duration::from_secs(5);

/// Where a connection reads one partition.
struct Cursor {
    partition: Arc<Partition>,
    /// Next offset to deliver.
    next: i64,
    high_watermark: watch::Receiver<i64>,
    /// The log could not be read here (a failed disk, a deleted topic):
    /// left alone until the client subscribes again or reconnects, rather
    /// than retried in a loop.
    failed: bool,
}

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

type Durable = BoxFuture<'static, (u16, u8, Result<(), Refused>)>;

/// What woke the connection's loop.
enum Event {
    Shutdown,
    Kicked,
    Durable(u16, u8, Result<(), Refused>),
    Read(Result<bool, CodecError>),
    /// A subscribed partition has new records.
    Wake,
    /// Delivery has records left and room to send them.
    Deliver,
    KeepAlive,
    Save,
}

struct Conn<W> {
    svc: Arc<MqttService>,
    writer: W,
    out: BytesMut,
    version: Version,
    /// The largest packet the client accepts.
    max_out: usize,
    client_id: String,
    publisher: Publisher,
    /// Whether the session outlives the connection.
    persistent: bool,
    expiry_secs: u32,
    subscriptions: BTreeMap<String, Subscription>,
    cursors: BTreeMap<(String, i32), Cursor>,
    /// Outgoing QoS 1 messages awaiting PUBACK: where each came from
    /// (`None`: a retained message).
    outgoing: HashMap<u16, Option<(String, i32, i64)>>,
    next_pkid: u16,
    /// QoS 1 messages the client takes unacknowledged.
    out_limit: usize,
    /// MQTT 3 QoS 2 packet ids received and not yet released (PUBREL).
    qos2: HashSet<u16>,
    will: Option<Message>,
    /// Delivery stopped with records left (batch budget or inflight limit).
    more: bool,
    /// Positions moved since the last save.
    dirty: bool,
}

/// Serves one accepted connection to its end.
pub async fn serve<S>(
    stream: S,
    peer: SocketAddr,
    svc: Arc<MqttService>,
    listener: String,
    tls_principal: Option<String>,
    allow_anonymous: bool,
    shutdown: CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (mut reader, writer) = tokio::io::split(stream);
    let max_in = svc.config.max_packet_bytes;
    let mut inbuf = BytesMut::with_capacity(1024);
    let first = tokio::select! {
        () = shutdown.cancelled() => return,
        r = tokio::time::timeout(CONNECT_TIMEOUT, read_packet(&mut reader, &mut inbuf, None, max_in)) => r,
    };
    let connect = match first {
        Ok(Ok(Some(Inbound::Connect(c)))) => c,
        Ok(Err(CodecError::UnsupportedVersion(level))) => {
            // The one answer MQTT 3 clients of any level understand.
            let mut w = writer;
            let mut out = BytesMut::new();
            let refusal = Outbound::ConnAck {
                session_present: false,
                reason: Reason::UnsupportedProtocolVersion,
                receive_maximum: 0,
                max_packet_size: 0,
                server_keep_alive: None,
                assigned_client_id: None,
                reason_string: None,
            };
            if codec::write(&mut out, Version::V4, refusal, usize::MAX).is_ok() {
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
    let Some(mut conn) = accept(&svc, writer, *connect, peer, tls_principal, allow_anonymous).await
    else {
        return;
    };
    let claim = svc
        .sessions
        .claim(&conn.client_id, svc.next_connection_id(), TAKEOVER_WAIT)
        .await;
    let session_present = conn.start_session().await;
    let keep_alive = conn.keep_alive_secs;
    let assigned = conn.assigned_id.take();
    let ack = Outbound::ConnAck {
        session_present,
        reason: Reason::Success,
        receive_maximum: u16::try_from(svc.config.max_inflight).unwrap_or(u16::MAX),
        max_packet_size: u32::try_from(max_in).unwrap_or(u32::MAX),
        server_keep_alive: conn.server_keep_alive,
        assigned_client_id: assigned,
        reason_string: None,
    };
    let mut conn = conn.inner;
    if conn.send(ack).is_err() || conn.flush().await.is_err() {
        return;
    }
    let gauge = svc
        .state
        .metrics
        .connections
        .with_label_values(&[listener.as_str(), "mqtt"]);
    gauge.inc();
    tracing::debug!(%peer, client_id = %conn.client_id, principal = %conn.publisher.principal, version = ?conn.version, "MQTT client connected");
    let close = conn
        .run(
            &mut reader,
            &mut inbuf,
            keep_alive,
            &claim.kicked,
            &shutdown,
        )
        .await;
    gauge.dec();
    conn.finish(close, &mut reader).await;
    drop(claim);
}

/// A CONNECT accepted, before the session is set up.
struct Accepted<W> {
    inner: Conn<W>,
    keep_alive_secs: u16,
    server_keep_alive: Option<u16>,
    assigned_id: Option<String>,
    clean_start: bool,
}

impl<W> std::ops::Deref for Accepted<W> {
    type Target = Conn<W>;
    fn deref(&self) -> &Conn<W> {
        &self.inner
    }
}

impl<W> std::ops::DerefMut for Accepted<W> {
    fn deref_mut(&mut self) -> &mut Conn<W> {
        &mut self.inner
    }
}

impl<W: AsyncWrite + Unpin> Accepted<W> {
    /// Loads or clears the session; whether one was resumed.
    async fn start_session(&mut self) -> bool {
        let svc = Arc::clone(&self.inner.svc);
        let now = svc.state.clock.now_ms();
        let conn = &mut self.inner;
        if self.clean_start {
            svc.sessions.remove(&conn.client_id).await;
            return false;
        }
        let Some(saved) = svc.sessions.load(&conn.client_id, now).await else {
            return false;
        };
        conn.subscriptions = saved.subscriptions;
        for (topic, partitions) in saved.positions {
            for (index, next) in partitions {
                conn.open_cursor(&topic, index, Some(next));
            }
        }
        let filters: Vec<String> = conn.subscriptions.keys().cloned().collect();
        for f in filters {
            conn.open_cursors_for(&f);
        }
        conn.more = true;
        true
    }
}

/// Checks the CONNECT: protocol details, then who the client is.
async fn accept<W: AsyncWrite + Unpin>(
    svc: &Arc<MqttService>,
    writer: W,
    c: Connect,
    peer: SocketAddr,
    tls_principal: Option<String>,
    allow_anonymous: bool,
) -> Option<Accepted<W>> {
    let cfg = &svc.config;
    let version = c.version;
    let mut refuse_with: Option<(Reason, &str)> = None;
    let persistent = match version {
        Version::V4 => !c.clean_start,
        Version::V5 => c.session_expiry.unwrap_or(0) > 0,
    };
    let mut assigned_id = None;
    let client_id = if c.client_id.is_empty() {
        if version == Version::V4 && persistent {
            refuse_with = Some((
                Reason::ClientIdentifierNotValid,
                "a persistent session needs a client id",
            ));
        }
        let id = format!("veil-{}", uuid::Uuid::new_v4().simple());
        if version == Version::V5 {
            assigned_id = Some(id.clone());
        }
        id
    } else {
        c.client_id.clone()
    };
    if let Some(w) = &c.will {
        if filter::validate_name(&w.topic).is_err() {
            refuse_with = Some((Reason::TopicNameInvalid, "invalid will topic"));
        } else if w.qos > 1 && version == Version::V5 {
            refuse_with = Some((Reason::QosNotSupported, "QoS 2 is not supported"));
        }
    }
    // Who: a user name and password, else the client certificate, else anonymous.
    let principal = if refuse_with.is_some() {
        None
    } else if let Some(user) = &c.username {
        let password = c.password.clone().unwrap_or_default();
        match svc
            .state
            .sasl
            .verify_password(&svc.state, peer.ip(), user, password)
            .await
        {
            Ok(()) => Some(format!("User:{user}")),
            Err(delay) => {
                tokio::time::sleep(delay).await;
                refuse_with = Some((Reason::BadUserNameOrPassword, "bad user name or password"));
                None
            }
        }
    } else if let Some(p) = tls_principal {
        Some(p)
    } else if allow_anonymous {
        Some(ANONYMOUS.to_owned())
    } else {
        refuse_with = Some((
            Reason::NotAuthorized,
            "this listener needs a user name and password or a client certificate",
        ));
        None
    };
    let max_out = c
        .max_packet_size
        .map_or(usize::MAX, |m| usize::try_from(m).unwrap_or(usize::MAX));
    let out_limit = usize::from(c.receive_maximum.unwrap_or(u16::MAX))
        .min(cfg.max_inflight)
        .max(1);
    let mut conn = Conn {
        svc: Arc::clone(svc),
        writer,
        out: BytesMut::new(),
        version,
        max_out,
        client_id,
        publisher: Publisher {
            principal: principal.clone().unwrap_or_else(|| ANONYMOUS.to_owned()),
            host: peer.ip(),
        },
        persistent,
        expiry_secs: match version {
            Version::V4 => cfg.max_session_expiry_secs,
            Version::V5 => c
                .session_expiry
                .unwrap_or(0)
                .min(cfg.max_session_expiry_secs),
        },
        subscriptions: BTreeMap::new(),
        cursors: BTreeMap::new(),
        outgoing: HashMap::new(),
        next_pkid: 0,
        out_limit,
        qos2: HashSet::new(),
        will: c.will.clone(),
        more: false,
        dirty: false,
    };
    if let Some((reason, why)) = refuse_with {
        tracing::debug!(%peer, reason = ?reason, why, "MQTT CONNECT refused");
        let _ = conn.send(Outbound::ConnAck {
            session_present: false,
            reason,
            receive_maximum: 0,
            max_packet_size: 0,
            server_keep_alive: None,
            assigned_client_id: None,
            reason_string: Some(why.to_owned()),
        });
        let _ = conn.flush().await;
        return None;
    }
    let asked = c.keep_alive;
    let keep_alive_secs = if asked == 0 || asked > cfg.max_keep_alive_secs {
        cfg.max_keep_alive_secs
    } else {
        asked
    };
    Some(Accepted {
        inner: conn,
        keep_alive_secs,
        server_keep_alive: (keep_alive_secs != asked).then_some(keep_alive_secs),
        assigned_id,
        clean_start: c.clean_start,
    })
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

/// Reads more bytes: capacity grows only to what the next packet's header
/// says it needs (itself capped at `max`). `false` at end of stream.
async fn fill<R: AsyncRead + Unpin>(
    reader: &mut R,
    inbuf: &mut BytesMut,
    max: usize,
) -> Result<bool, CodecError> {
    let need = codec::needed(inbuf, max)?;
    inbuf.reserve(need.max(1024).min(max));
    let n = reader
        .read_buf(inbuf)
        .await
        .map_err(|e| CodecError::Malformed(e.to_string()))?;
    Ok(n > 0)
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
        let max_in = self.svc.config.max_packet_bytes;
        let max_inflight = self.svc.config.max_inflight;
        let publish_timeout = Duration::from_millis(self.svc.config.publish_timeout_ms);
        // MQTT: the server closes after one and a half keep-alive periods of silence.
        let idle = Duration::from_millis(u64::from(keep_alive_secs) * 1500);
        let mut deadline = Instant::now() + idle;
        let mut durable: FuturesOrdered<Durable> = FuturesOrdered::new();
        let mut save = tokio::time::interval(SAVE_INTERVAL);
        save.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let room = self.outgoing.len() < self.out_limit;
            let more = self.more;
            let save_due = self.persistent && self.dirty;
            let event = {
                let wake = wait_for_records(&mut self.cursors);
                tokio::select! {
                    biased;
                    () = shutdown.cancelled() => Event::Shutdown,
                    () = kicked.cancelled() => Event::Kicked,
                    Some((pkid, qos, result)) = durable.next() => Event::Durable(pkid, qos, result),
                    read = fill(reader, inbuf, max_in), if durable.len() < max_inflight => Event::Read(read),
                    () = wake, if room && !more => Event::Wake,
                    () = std::future::ready(()), if room && more => Event::Deliver,
                    () = tokio::time::sleep_until(deadline) => Event::KeepAlive,
                    _ = save.tick(), if save_due => Event::Save,
                }
            };
            match event {
                Event::Shutdown => {
                    return Close {
                        reason: Some((
                            Reason::ServerShuttingDown,
                            "the broker is shutting down".into(),
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
                Event::Wake => self.more = true,
                Event::Deliver => self.more = self.deliver(),
                Event::KeepAlive => {
                    return Close::because(Reason::KeepAliveTimeout, "keep-alive timed out");
                }
                Event::Save => {
                    self.dirty = false;
                    let state = self.session_state(0);
                    self.svc.sessions.save(&self.client_id, &state).await;
                }
            }
            // Every whole packet buffered, while the inflight window has room.
            while durable.len() < max_inflight {
                match codec::read(inbuf, Some(self.version), max_in) {
                    Ok(Some(p)) => {
                        if let Err(close) = self.handle(p, &mut durable, publish_timeout) {
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
            if self.flush().await.is_err() {
                return Close::abrupt();
            }
        }
    }

    /// One packet from the client.
    fn handle(
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
                self.publish(pkid, message, durable, publish_timeout)
            }
            Inbound::PubAck(pkid) => {
                if self.outgoing.remove(&pkid).is_some() {
                    self.dirty = true;
                }
                Ok(())
            }
            Inbound::PubRec(pkid) | Inbound::PubComp(pkid) => {
                // Veil sends at most QoS 1; these answer nothing it sent.
                Err(Close::because(
                    Reason::ProtocolError,
                    format!("PUBREC/PUBCOMP for packet {pkid}, which was not QoS 2"),
                ))
            }
            Inbound::PubRel(pkid) => {
                self.qos2.remove(&pkid);
                self.send(Outbound::PubComp(pkid))
            }
            Inbound::Subscribe { pkid, filters } => {
                let mut results = Vec::with_capacity(filters.len());
                let mut retained = Vec::new();
                for f in filters {
                    let r = self.subscribe(&f.filter, f.qos.min(1));
                    if let Ok(q) = r {
                        for mut m in self.svc.retained.matching(&f.filter) {
                            m.qos = m.qos.min(q);
                            retained.push(m);
                        }
                    }
                    results.push(r);
                }
                self.send(Outbound::SubAck { pkid, results })?;
                for mut m in retained {
                    // Beyond the inflight window retained messages go at QoS 0
                    // rather than past the client's Receive Maximum.
                    if self.outgoing.len() >= self.out_limit {
                        m.qos = 0;
                    }
                    self.send_message(m, None);
                }
                Ok(())
            }
            Inbound::Unsubscribe { pkid, filters } => {
                let count = filters.len();
                for f in &filters {
                    self.subscriptions.remove(f);
                }
                self.close_unused_cursors();
                self.dirty = true;
                self.send(Outbound::UnsubAck { pkid, count })
            }
            Inbound::PingReq => self.send(Outbound::PingResp),
            Inbound::Disconnect {
                reason,
                session_expiry,
            } => {
                if let Some(e) = session_expiry {
                    if self.version == Version::V5 {
                        self.expiry_secs = e.min(self.svc.config.max_session_expiry_secs);
                        self.persistent = e > 0;
                    }
                }
                Err(Close {
                    reason: None,
                    // 0x04: "disconnect with will message".
                    send_will: reason == 0x04,
                })
            }
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

    fn publish(
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
            // A resend before PUBREL: stored once already.
            return self.send(Outbound::PubRec {
                pkid,
                reason: Reason::Success,
            });
        }
        let svc = Arc::clone(&self.svc);
        let appended = ingest::append(&svc.state, &svc.mappings, &self.publisher, &message);
        if message.retain && appended.is_ok() && svc.retained.set(&message).is_err() {
            tracing::debug!(topic = %message.topic, "retained message store full");
        }
        match (appended, message.qos) {
            (Ok(_), 0) => Ok(()),
            (Ok(a), qos) => {
                if qos == 2 {
                    self.qos2.insert(pkid);
                }
                durable.push_back(Box::pin(async move {
                    (pkid, qos, a.durable(publish_timeout).await)
                }));
                Ok(())
            }
            (Err(refused), qos) => self.refuse_publish(pkid, qos, &refused),
        }
    }

    /// A publish not taken: a reason code where MQTT 5 has one, else the
    /// connection closes (MQTT 3 has no way to say no).
    fn refuse_publish(&mut self, pkid: u16, qos: u8, refused: &Refused) -> Result<(), Close> {
        let reason = match refused {
            Refused::Unmapped => Reason::TopicNameInvalid,
            Refused::NotAuthorized => Reason::NotAuthorized,
            Refused::UnknownTopic(_) => Reason::UnspecifiedError,
            // Not final: close without an answer so the client sends it again.
            Refused::Unavailable(_) => {
                return Err(Close::because(
                    Reason::ImplementationSpecificError,
                    refused.to_string(),
                ));
            }
        };
        tracing::debug!(client_id = %self.client_id, reason = %refused, "MQTT publish refused");
        if self.version == Version::V5 && qos == 1 {
            return self.send(Outbound::PubAck {
                pkid,
                reason,
                reason_string: Some(refused.to_string()),
            });
        }
        Err(Close::because(reason, refused.to_string()))
    }

    /// A QoS 1 (or MQTT 3 QoS 2) publish became durable, or could not.
    fn acknowledge(
        &mut self,
        pkid: u16,
        qos: u8,
        result: Result<(), Refused>,
    ) -> Result<(), Close> {
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
            Err(refused) => {
                // Appended but not durable in time: no PUBACK; the client
                // resends after reconnecting (at least once).
                Err(Close::because(
                    Reason::ImplementationSpecificError,
                    refused.to_string(),
                ))
            }
        }
    }

    /// Adds a subscription; the granted QoS or why not.
    fn subscribe(&mut self, f: &str, qos: u8) -> Result<u8, Reason> {
        if filter::validate_filter(f).is_err() || f.starts_with("$share/") {
            return Err(Reason::TopicFilterInvalid);
        }
        let topics = self.svc.mappings.topics_for_filter(f);
        if topics.is_empty() {
            return Err(Reason::TopicFilterInvalid);
        }
        let state = &self.svc.state;
        for t in &topics {
            let allowed = state.authorizer.authorize(
                &state.metrics,
                crate::auth::acl_matcher::Action {
                    principal: &self.publisher.principal,
                    host: self.publisher.host,
                    operation: crate::auth::Operation::Read,
                    resource_type: crate::auth::ResourceType::Topic,
                    name: t,
                },
            );
            if !allowed || !state.blind.visible(&self.publisher.principal, t) {
                return Err(Reason::NotAuthorized);
            }
        }
        self.subscriptions
            .insert(f.to_owned(), Subscription { qos });
        self.open_cursors_for(f);
        self.dirty = true;
        Ok(qos)
    }

    /// Cursors, at the current high watermark, for every partition of the
    /// Kafka topics a filter reads that have none yet.
    fn open_cursors_for(&mut self, f: &str) {
        for topic in self.svc.mappings.topics_for_filter(f) {
            let Some(t) = self.svc.state.topics.get(&topic) else {
                continue;
            };
            for index in 0..t.partition_count() {
                self.open_cursor(&topic, index, None);
            }
        }
    }

    fn open_cursor(&mut self, topic: &str, index: i32, from: Option<i64>) {
        let key = (topic.to_owned(), index);
        if let Some(c) = self.cursors.get_mut(&key) {
            c.failed = false;
            return;
        }
        let Some(partition) = self
            .svc
            .state
            .topics
            .get(topic)
            .and_then(|t| t.partition(index).cloned())
        else {
            return;
        };
        let next = from.unwrap_or_else(|| partition.high_watermark());
        let high_watermark = partition.watch_high_watermark();
        self.cursors.insert(
            key,
            Cursor {
                partition,
                next,
                high_watermark,
                failed: false,
            },
        );
    }

    fn close_unused_cursors(&mut self) {
        let wanted: HashSet<String> = self
            .subscriptions
            .keys()
            .flat_map(|f| self.svc.mappings.topics_for_filter(f))
            .collect();
        self.cursors.retain(|(t, _), _| wanted.contains(t));
    }

    /// Writes records from the cursors while there is room; whether any
    /// were left for later.
    fn deliver(&mut self) -> bool {
        let mut budget = self.svc.config.max_queued_messages;
        let keys: Vec<(String, i32)> = self.cursors.keys().cloned().collect();
        for key in keys {
            loop {
                if budget == 0 || self.outgoing.len() >= self.out_limit {
                    return true;
                }
                let Some(c) = self.cursors.get(&key) else {
                    break;
                };
                if c.failed || c.next >= c.partition.high_watermark() {
                    break;
                }
                let partition = Arc::clone(&c.partition);
                let from = c.next;
                let read = match partition.read(from, self.svc.config.read_bytes, true) {
                    Ok(r) => r,
                    Err(crate::error::Error::Log(veil_log::Error::OffsetOutOfRange { .. }))
                        if from < partition.log_start_offset() =>
                    {
                        // Retention removed what the cursor pointed at.
                        if let Some(c) = self.cursors.get_mut(&key) {
                            c.next = partition.log_start_offset();
                        }
                        continue;
                    }
                    Err(e) => {
                        tracing::warn!(topic = %key.0, partition = key.1, error = %e, "MQTT delivery read failed; this partition is not delivered on this connection until it subscribes again");
                        if let Some(c) = self.cursors.get_mut(&key) {
                            c.failed = true;
                        }
                        break;
                    }
                };
                if read.records.is_empty() {
                    break;
                }
                let (next, stopped) = self.deliver_batches(&key, from, &read.records, &mut budget);
                if let Some(c) = self.cursors.get_mut(&key) {
                    c.next = next;
                }
                self.dirty = true;
                if stopped {
                    return true;
                }
            }
        }
        false
    }

    /// Sends the records at or after `from` in `bytes` (whole batches);
    /// returns the next offset and whether it stopped early.
    fn deliver_batches(
        &mut self,
        key: &(String, i32),
        from: i64,
        bytes: &[u8],
        budget: &mut usize,
    ) -> (i64, bool) {
        let mut pos = 0usize;
        let mut next = from;
        while pos < bytes.len() {
            let Ok(header) = BatchHeader::parse(&bytes[pos..]) else {
                break;
            };
            let size = header.total_size();
            let Some(batch) = bytes.get(pos..pos + size) else {
                break;
            };
            pos += size;
            let last = header.last_offset();
            if last < next {
                continue;
            }
            // `None`: a record read but not for this connection.
            let mut messages: Vec<(i64, Option<Message>)> = Vec::new();
            let walked = for_each_record_with_headers(batch, MAX_HEADERS, |r| {
                if r.offset >= next {
                    messages.push((r.offset, self.to_message(&key.0, &r)));
                }
                Ok(())
            });
            if let Err(e) = walked {
                // Compressed batches from Kafka clients and the like.
                tracing::debug!(topic = %key.0, partition = key.1, error = %e, "batch not delivered over MQTT");
                next = last + 1;
                continue;
            }
            for (offset, m) in messages {
                if *budget == 0 || self.outgoing.len() >= self.out_limit {
                    return (offset, true);
                }
                next = offset + 1;
                let Some(m) = m else {
                    continue;
                };
                *budget -= 1;
                self.send_message(m, Some((key.0.clone(), key.1, offset)));
            }
            next = next.max(last + 1);
        }
        (next, false)
    }

    /// The MQTT message a record becomes for this connection, if its topic
    /// matches a subscription (at the highest QoS granted among them).
    fn to_message(&self, kafka_topic: &str, r: &RecordView<'_>) -> Option<Message> {
        let header = r
            .headers
            .iter()
            .find(|(k, _)| *k == TOPIC_HEADER.as_bytes())
            .and_then(|(_, v)| *v);
        let topic = record_topic(r.key, header)?;
        if !self.svc.mappings.routes_to(topic, kafka_topic) {
            return None;
        }
        let qos = self
            .subscriptions
            .iter()
            .filter(|(f, _)| filter::matches(f, topic))
            .map(|(_, s)| s.qos)
            .max()?;
        let mut properties = Properties::default();
        for (k, v) in &r.headers {
            let (Ok(k), Some(Ok(v))) = (std::str::from_utf8(k), v.map(std::str::from_utf8)) else {
                continue;
            };
            match k {
                TOPIC_HEADER => {}
                CONTENT_TYPE_HEADER => properties.content_type = Some(v.to_owned()),
                PAYLOAD_FORMAT_HEADER => properties.payload_format = v.parse().ok(),
                _ => properties.user.push((k.to_owned(), v.to_owned())),
            }
        }
        Some(Message {
            topic: topic.to_owned(),
            payload: Bytes::copy_from_slice(r.value.unwrap_or_default()),
            qos,
            retain: false,
            properties,
        })
    }

    /// Queues one message to the client (QoS 1: tracked until PUBACK).
    fn send_message(&mut self, message: Message, from: Option<(String, i32, i64)>) {
        let pkid = if message.qos > 0 {
            let pkid = self.allocate_pkid();
            self.outgoing.insert(pkid, from);
            pkid
        } else {
            0
        };
        let qos = message.qos;
        match codec::write(
            &mut self.out,
            self.version,
            Outbound::Publish {
                pkid,
                dup: false,
                message,
            },
            self.max_out,
        ) {
            Ok(_) => {}
            Err(e) => {
                // Larger than the client accepts: MQTT 5 says drop it.
                tracing::debug!(client_id = %self.client_id, error = %e, "message not sent");
                if qos > 0 {
                    self.outgoing.remove(&pkid);
                }
            }
        }
    }

    fn allocate_pkid(&mut self) -> u16 {
        loop {
            self.next_pkid = self.next_pkid.wrapping_add(1);
            if self.next_pkid != 0 && !self.outgoing.contains_key(&self.next_pkid) {
                return self.next_pkid;
            }
        }
    }

    fn send(&mut self, p: Outbound) -> Result<(), Close> {
        match codec::write(&mut self.out, self.version, p, self.max_out) {
            Ok(_) => Ok(()),
            Err(e) => Err(Close::because(
                Reason::ImplementationSpecificError,
                e.to_string(),
            )),
        }
    }

    async fn flush(&mut self) -> std::io::Result<()> {
        if self.out.is_empty() {
            return Ok(());
        }
        let r = self.writer.write_all(&self.out).await;
        self.out.clear();
        if self.out.capacity() > 64 * 1024 {
            self.out = BytesMut::new();
        }
        r
    }

    /// The session as saved: positions are those of the oldest message
    /// not yet acknowledged, so nothing unacknowledged is skipped.
    fn session_state(&self, disconnected_ms: i64) -> SessionState {
        let mut positions: BTreeMap<String, BTreeMap<i32, i64>> = BTreeMap::new();
        for ((topic, index), c) in &self.cursors {
            positions
                .entry(topic.clone())
                .or_default()
                .insert(*index, c.next);
        }
        for (topic, index, offset) in self.outgoing.values().flatten() {
            if let Some(p) = positions.get_mut(topic).and_then(|m| m.get_mut(index)) {
                *p = (*p).min(*offset);
            }
        }
        SessionState {
            subscriptions: self.subscriptions.clone(),
            positions,
            expiry_secs: self.expiry_secs,
            disconnected_ms,
        }
    }

    /// Says why (MQTT 5), publishes the will if due, saves or forgets the session.
    async fn finish<R: AsyncRead + Unpin>(mut self, close: Close, reader: &mut R) {
        let told = close.reason.is_some() && self.version == Version::V5;
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
        if told {
            // Closing with unread bytes would reset the connection and could
            // discard the DISCONNECT before the client reads it: read and
            // drop what the client still sends, briefly.
            let mut sink = [0u8; 8192];
            let _ = tokio::time::timeout(LINGER, async {
                while matches!(reader.read(&mut sink).await, Ok(n) if n > 0) {}
            })
            .await;
        }
        if close.send_will {
            if let Some(will) = self.will.take() {
                let svc = Arc::clone(&self.svc);
                match ingest::append(&svc.state, &svc.mappings, &self.publisher, &will) {
                    Ok(_) => {
                        if will.retain {
                            let _ = svc.retained.set(&will);
                        }
                    }
                    Err(e) => {
                        tracing::debug!(client_id = %self.client_id, reason = %e, "will not published");
                    }
                }
            }
        }
        if self.persistent {
            let now = self.svc.state.clock.now_ms().max(1);
            let state = self.session_state(now);
            self.svc.sessions.save(&self.client_id, &state).await;
        } else {
            self.svc.sessions.remove(&self.client_id).await;
        }
    }
}

/// Completes when any cursor's partition has records past the cursor (at
/// once if one already has); never when there are no cursors.
async fn wait_for_records(cursors: &mut BTreeMap<(String, i32), Cursor>) {
    if cursors
        .values()
        .any(|c| c.next < *c.high_watermark.borrow())
    {
        return;
    }
    if cursors.is_empty() {
        return std::future::pending().await;
    }
    let waits = cursors
        .values_mut()
        .map(|c| Box::pin(c.high_watermark.changed()));
    // A closed channel (the partition went away) wakes too; delivery then
    // finds nothing and the cursor stays idle.
    let _ = futures_util::future::select_all(waits).await;
}
