//! One device connection at the gateway: CONNECT and login, then publishes
//! sealed to the remote broker, subscriptions fed from the gateway's topic
//! readers, keep-alive, the will and the persistent session.
//!
//! Publishes of a connection are sealed and queued in order; a QoS 1 PUBACK
//! (MQTT 3 QoS 2 PUBREC) is sent, in order, once the remote broker
//! acknowledged the record with acks=all, and the socket is not read while
//! `max_inflight` of them wait. A clean session is fed by the gateway-wide
//! readers; a persistent one by readers of its own that start where it
//! left off, its positions (per partition, the oldest message not yet
//! acknowledged) saved in the broker's session format.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use futures_util::future::BoxFuture;
use futures_util::stream::{FuturesOrdered, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::{broadcast, mpsc, OwnedSemaphorePermit};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use veil_broker::mqtt::codec::{
    self, CodecError, Connect, Inbound, Message, Outbound, Reason, Version,
};
use veil_broker::mqtt::front_end::{
    self, fill, read_packet, refusal, Close, CONNECT_TIMEOUT, TAKEOVER_WAIT,
};
use veil_broker::mqtt::session::SAVE_INTERVAL;

mod feed;
mod publish;

use super::remote::{Delivery, Read};
use super::Gateway;

/// The answer to a wrong password is held back this long.
const FAILED_LOGIN_DELAY: Duration = Duration::from_millis(500);

/// A publish waiting for the remote broker: packet id, QoS, outcome.
type Durable = BoxFuture<'static, (u16, u8, Result<(), String>)>;

enum Event {
    Shutdown,
    Kicked,
    Durable(u16, u8, Result<(), String>),
    Read(Result<bool, CodecError>),
    Feed(Fed),
    KeepAlive,
    Save,
}

/// Where a connection's subscriptions are fed from.
enum Feed {
    /// A clean session: the gateway-wide readers (from the first subscription).
    Shared(Option<broadcast::Receiver<Arc<Delivery>>>),
    /// A persistent session: readers of its own.
    Own(OwnReaders),
}

/// A persistent session's readers, one per Kafka topic; stopped with it.
struct OwnReaders {
    tx: mpsc::Sender<(String, Read)>,
    rx: mpsc::Receiver<(String, Read)>,
    tasks: HashMap<String, tokio::task::JoinHandle<()>>,
}

impl Drop for OwnReaders {
    fn drop(&mut self) {
        for t in self.tasks.values() {
            t.abort();
        }
    }
}

/// What a feed gave.
enum Fed {
    Shared(Result<Arc<Delivery>, broadcast::error::RecvError>),
    Own(Option<(String, Read)>),
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
    feed: Feed,
    /// Whether the session outlives the connection.
    persistent: bool,
    expiry_secs: u32,
    /// A persistent session's next offset to read, by Kafka topic and partition.
    positions: BTreeMap<(String, i32), i64>,
    /// Positions or subscriptions changed since the last save.
    dirty: bool,
    /// Outgoing QoS 1 messages awaiting PUBACK: where each came from
    /// (`None`: a clean session's or a retained message).
    outgoing: HashMap<u16, Option<(String, i32, i64)>>,
    next_pkid: u16,
    /// QoS 1 messages the device takes unacknowledged.
    out_limit: usize,
    /// MQTT 3 QoS 2 packet ids received and not yet released (PUBREL).
    qos2: HashSet<u16>,
    will: Option<Message>,
    /// A persistent session's share of `max_persistent_sessions`.
    _slot: Option<OwnedSemaphorePermit>,
}

/// A CONNECT accepted, before the session is set up.
struct Accepted<W> {
    conn: Conn<W>,
    keep_alive: u16,
    server_keep_alive: Option<u16>,
    assigned_id: Option<String>,
    clean_start: bool,
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
            front_end::refuse_protocol_level(&mut w).await;
            tracing::debug!(%peer, level, "MQTT protocol level not supported");
            return;
        }
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "bad first MQTT packet");
            return;
        }
        _ => return,
    };
    let Some(accepted) = Box::pin(accept(
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
    let mut conn = accepted.conn;
    let claim = gateway
        .sessions
        .claim(&conn.client_id, gateway.next_connection_id(), TAKEOVER_WAIT)
        .await;
    let session_present = Box::pin(conn.start_session(accepted.clean_start)).await;
    let ack = Outbound::ConnAck {
        session_present,
        reason: Reason::Success,
        receive_maximum: u16::try_from(gateway.config.max_inflight).unwrap_or(u16::MAX),
        max_packet_size: u32::try_from(max_in).unwrap_or(u32::MAX),
        server_keep_alive: accepted.server_keep_alive,
        assigned_client_id: accepted.assigned_id,
        reason_string: None,
    };
    if conn.send(ack).is_err() || conn.flush().await.is_err() {
        return;
    }
    tracing::debug!(%peer, client_id = %conn.client_id, version = ?conn.version, persistent = conn.persistent, "MQTT client connected");
    let close = conn
        .run(
            &mut reader,
            &mut inbuf,
            accepted.keep_alive,
            &claim.kicked,
            &shutdown,
        )
        .await;
    Box::pin(conn.finish(close)).await;
    drop(claim);
}

/// Checks a CONNECT: the connection and what its CONNACK says, or `None`
/// once a refusal was sent.
async fn accept<W: AsyncWrite + Unpin>(
    gateway: &Arc<Gateway>,
    mut writer: W,
    c: Connect,
    tls_principal: Option<String>,
    allow_anonymous: bool,
) -> Option<Accepted<W>> {
    let cfg = &gateway.config;
    let version = c.version;
    let persistent = front_end::persistent(&c);
    let mut refused = front_end::check_connect(&c, persistent);
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
    } else {
        match front_end::principal_without_password(tls_principal, allow_anonymous) {
            Ok(p) => Some(p),
            Err(why) => {
                refused = Some(why);
                None
            }
        }
    };
    // A logged-in device's persistent session reads with Kafka consumers of
    // its own: counted.
    let slot = if persistent && principal.is_some() {
        let slot = Arc::clone(&gateway.persistent_slots)
            .try_acquire_owned()
            .ok();
        if slot.is_none() {
            refused = Some((Reason::ServerUnavailable, "too many persistent sessions"));
        }
        slot
    } else {
        None
    };
    let (Some(principal), false) = (principal, persistent && slot.is_none()) else {
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
    let (keep_alive, server_keep_alive) =
        front_end::keep_alive(c.keep_alive, cfg.max_keep_alive_secs);
    let feed = if persistent {
        let (tx, rx) = mpsc::channel(cfg.max_queued_messages.max(1));
        Feed::Own(OwnReaders {
            tx,
            rx,
            tasks: HashMap::new(),
        })
    } else {
        Feed::Shared(None)
    };
    let conn = Conn {
        gateway: Arc::clone(gateway),
        writer,
        out: BytesMut::new(),
        version,
        max_out: front_end::max_out(&c),
        client_id,
        subscriptions: BTreeMap::new(),
        feed,
        persistent,
        expiry_secs: front_end::expiry_secs(&c, cfg.max_session_expiry_secs),
        positions: BTreeMap::new(),
        dirty: false,
        outgoing: HashMap::new(),
        next_pkid: 0,
        out_limit: front_end::out_limit(&c, cfg.max_inflight),
        qos2: HashSet::new(),
        will: c.will,
        _slot: slot,
    };
    Some(Accepted {
        conn,
        keep_alive,
        server_keep_alive,
        assigned_id: assigned,
        clean_start: c.clean_start,
    })
}

/// The next message for the subscriptions; never without any.
async fn next_feed(feed: &mut Feed) -> Fed {
    match feed {
        Feed::Shared(Some(rx)) => Fed::Shared(rx.recv().await),
        Feed::Shared(None) => std::future::pending().await,
        Feed::Own(o) => Fed::Own(o.rx.recv().await),
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
        let idle = front_end::idle_limit(keep_alive_secs);
        let mut deadline = Instant::now() + idle;
        let mut durable: FuturesOrdered<Durable> = FuturesOrdered::new();
        let mut save = tokio::time::interval(SAVE_INTERVAL);
        save.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let room = self.outgoing.len() < self.out_limit;
            let save_due = self.persistent && self.dirty;
            let event = tokio::select! {
                biased;
                () = shutdown.cancelled() => Event::Shutdown,
                () = kicked.cancelled() => Event::Kicked,
                Some((pkid, qos, result)) = durable.next() => Event::Durable(pkid, qos, result),
                read = fill(reader, inbuf, max_in), if durable.len() < max_inflight => Event::Read(read),
                fed = next_feed(&mut self.feed), if room => Event::Feed(fed),
                () = tokio::time::sleep_until(deadline) => Event::KeepAlive,
                _ = save.tick(), if save_due => Event::Save,
            };
            match event {
                Event::Shutdown => return Close::shutting_down("gateway"),
                Event::Kicked => return Close::taken_over(),
                Event::Durable(pkid, qos, result) => {
                    if let Err(close) = self.acknowledge(pkid, qos, result) {
                        let _ = self.flush().await;
                        return close;
                    }
                }
                Event::Read(Ok(true)) => deadline = Instant::now() + idle,
                Event::Read(Ok(false)) => return Close::abrupt(),
                Event::Read(Err(e)) => return Close::unreadable(&e),
                Event::Feed(Fed::Shared(Ok(d))) => self.deliver(&d),
                Event::Feed(Fed::Shared(Err(broadcast::error::RecvError::Lagged(n)))) => {
                    let _ = self.flush().await;
                    return Close::because(
                        Reason::ImplementationSpecificError,
                        format!("the subscriber fell {n} messages behind"),
                    );
                }
                Event::Feed(Fed::Shared(Err(broadcast::error::RecvError::Closed))) => {
                    self.feed = Feed::Shared(None);
                }
                Event::Feed(Fed::Own(Some((topic, read)))) => self.take(topic, read),
                // Never: the connection holds a sender.
                Event::Feed(Fed::Own(None)) => {}
                Event::Save => {
                    self.dirty = false;
                    let state = self.session_state(0);
                    self.gateway.sessions.save(&self.client_id, &state).await;
                }
                Event::KeepAlive => return Close::keep_alive_timed_out(),
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
                    Err(e) => return Close::unreadable(&e),
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
                    return Err(Close::topic_alias());
                }
                self.publish(pkid, message, durable, publish_timeout).await
            }
            Inbound::PubAck(pkid) => {
                if self.outgoing.remove(&pkid).is_some() {
                    self.dirty = true;
                }
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
                    self.send_message(m, None);
                }
                Ok(())
            }
            Inbound::Unsubscribe { pkid, filters } => {
                let count = filters.len();
                self.unsubscribe(&filters);
                self.send(Outbound::UnsubAck { pkid, count })
            }
            Inbound::PingReq => self.send(Outbound::PingResp),
            Inbound::Disconnect {
                reason,
                session_expiry,
            } => {
                // MQTT 5 may change the expiry on the way out; a session
                // made persistent only now keeps its subscriptions.
                if let (Some(e), Version::V5) = (session_expiry, self.version) {
                    self.expiry_secs = e.min(self.gateway.config.max_session_expiry_secs);
                    self.persistent = e > 0;
                }
                Err(Close::disconnect(reason))
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

    /// Queues one message to the device (QoS 1: tracked until PUBACK, with
    /// where it came from).
    fn send_message(&mut self, message: Message, from: Option<(String, i32, i64)>) {
        let qos = message.qos;
        let pkid = if qos > 0 { self.allocate_pkid() } else { 0 };
        let packet = Outbound::Publish {
            pkid,
            dup: false,
            message,
        };
        match codec::write(&mut self.out, self.version, packet, self.max_out) {
            Ok(_) if qos > 0 => {
                self.outgoing.insert(pkid, from);
            }
            Ok(_) => {}
            // Larger than the device accepts: MQTT 5 says drop it.
            Err(e) => tracing::debug!(client_id = %self.client_id, error = %e, "message not sent"),
        }
    }

    fn allocate_pkid(&mut self) -> u16 {
        front_end::next_packet_id(&mut self.next_pkid, &self.outgoing)
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

    /// Says why (MQTT 5), publishes the will if due, saves or forgets the
    /// session.
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
        if let (true, Some(will)) = (close.send_will, self.will.take()) {
            match publish::send(&self.gateway, &will).await {
                Ok(queued) => {
                    if will.retain {
                        let _ = self.gateway.retained.set(&will);
                    }
                    tokio::spawn(publish::report_failure(queued));
                }
                Err(e) => {
                    tracing::debug!(client_id = %self.client_id, reason = %e, "will not published");
                }
            }
        }
        if self.persistent {
            let state = self.session_state(now_ms().max(1));
            self.gateway.sessions.save(&self.client_id, &state).await;
        } else {
            self.gateway.sessions.remove(&self.client_id).await;
        }
    }
}

/// Milliseconds since the epoch (when a session was left).
fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
