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

use bytes::BytesMut;
use futures_util::future::BoxFuture;
use futures_util::stream::{FuturesOrdered, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

mod delivery;
mod publish;

use delivery::{wait_for_records, Cursor};

use super::codec::{self, CodecError, Connect, Inbound, Message, Outbound, Reason, Version};
use super::front_end::{self, fill, read_packet, Close, CONNECT_TIMEOUT, TAKEOVER_WAIT};
use super::ingest::{self, Publisher, Refused};
use super::session::{SessionState, Subscription, SAVE_INTERVAL};
use super::MqttService;
use crate::context::ANONYMOUS;

/// Headers read per record; a record with more is skipped.
const MAX_HEADERS: usize = 64;
/// How long a closing connection reads what the client still sends.
const LINGER: Duration = Duration::from_secs(1);

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
    // Steps that run once are boxed, so their state is not part of what
    // an idle connection holds for its whole life.
    let first = tokio::select! {
        () = shutdown.cancelled() => return,
        r = Box::pin(tokio::time::timeout(CONNECT_TIMEOUT, read_packet(&mut reader, &mut inbuf, None, max_in))) => r,
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
    let Some(mut conn) = Box::pin(accept(
        &svc,
        writer,
        *connect,
        peer,
        tls_principal,
        allow_anonymous,
    ))
    .await
    else {
        return;
    };
    let claim = Box::pin(svc.sessions.claim(
        &conn.client_id,
        svc.next_connection_id(),
        TAKEOVER_WAIT,
    ))
    .await;
    let session_present = Box::pin(conn.start_session()).await;
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
    if conn.send(ack).is_err() || Box::pin(conn.flush()).await.is_err() {
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
    Box::pin(conn.finish(close, &mut reader)).await;
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
    let persistent = front_end::persistent(&c);
    let mut refuse_with = front_end::check_connect(&c, persistent);
    let mut assigned_id = None;
    let client_id = if c.client_id.is_empty() {
        let id = format!("veil-{}", uuid::Uuid::new_v4().simple());
        if version == Version::V5 {
            assigned_id = Some(id.clone());
        }
        id
    } else {
        c.client_id.clone()
    };
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
    } else {
        match front_end::principal_without_password(tls_principal, allow_anonymous) {
            Ok(p) => Some(p),
            Err(why) => {
                refuse_with = Some(why);
                None
            }
        }
    };
    let mut conn = Conn {
        svc: Arc::clone(svc),
        writer,
        out: BytesMut::new(),
        version,
        max_out: front_end::max_out(&c),
        client_id,
        publisher: Publisher {
            principal: principal.clone().unwrap_or_else(|| ANONYMOUS.to_owned()),
            host: peer.ip(),
        },
        persistent,
        expiry_secs: front_end::expiry_secs(&c, cfg.max_session_expiry_secs),
        subscriptions: BTreeMap::new(),
        cursors: BTreeMap::new(),
        outgoing: HashMap::new(),
        next_pkid: 0,
        out_limit: front_end::out_limit(&c, cfg.max_inflight),
        qos2: HashSet::new(),
        will: c.will.clone(),
        more: false,
        dirty: false,
    };
    if let Some((reason, why)) = refuse_with {
        tracing::debug!(%peer, reason = ?reason, why, "MQTT CONNECT refused");
        let _ = conn.send(front_end::refusal(reason, Some(why)));
        let _ = conn.flush().await;
        return None;
    }
    let (keep_alive_secs, server_keep_alive) =
        front_end::keep_alive(c.keep_alive, cfg.max_keep_alive_secs);
    Some(Accepted {
        inner: conn,
        keep_alive_secs,
        server_keep_alive,
        assigned_id,
        clean_start: c.clean_start,
    })
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
        let idle = front_end::idle_limit(keep_alive_secs);
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
                Event::Shutdown => return Close::shutting_down("broker"),
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
                Event::Wake => self.more = true,
                Event::Deliver => self.more = self.deliver(),
                Event::KeepAlive => return Close::keep_alive_timed_out(),
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
                    return Err(Close::topic_alias());
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
        front_end::next_packet_id(&mut self.next_pkid, &self.outgoing)
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
        // Nothing is kept between writes: an idle connection holds no buffer.
        self.out = BytesMut::new();
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    #[tokio::test]
    async fn an_idle_connection_holds_little() {
        let dir = tempfile::tempdir().unwrap();
        let config = crate::config::Config {
            data_dir: dir.path().to_path_buf(),
            ..crate::config::Config::default()
        };
        let state = crate::test_fixture::state(config, Arc::new(crate::clock::SystemClock)).await;
        let svc = Arc::new(super::MqttService::new(state).unwrap());
        let (stream, _peer) = tokio::io::duplex(64);
        let serve = super::serve(
            stream,
            "127.0.0.1:1".parse().unwrap(),
            svc,
            "MQTT".into(),
            None,
            false,
            tokio_util::sync::CancellationToken::new(),
        );
        // The task's whole state while a connection waits; one-off steps
        // (CONNECT, login, session load, close) are boxed outside it.
        let size = std::mem::size_of_val(&serve);
        assert!(size < 4096, "a connection task of {size} bytes");
    }
}
