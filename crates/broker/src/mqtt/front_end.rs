//! What an MQTT connection does the same way wherever its messages go:
//! the broker's connections ([`super::connection`]) and those of
//! `veil gateway` share why a connection ends, the CONNECT checks, the
//! keep-alive, reading packets, packet ids, the PUBLISH checks and
//! acknowledgements, and accepting connections (with the TLS handshake of
//! an MQTTS listener).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::BytesMut;
use futures_util::future::FutureExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;

use super::codec::{self, CodecError, Connect, Inbound, Message, Outbound, Reason, Version};
use super::filter;
use crate::auth::tls::ListenerTls;
use crate::context::ANONYMOUS;

/// How long a client has to send CONNECT after the TCP (and TLS) handshake.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a takeover waits for the previous connection to save.
pub const TAKEOVER_WAIT: Duration = Duration::from_secs(5);
/// How long a client may take to complete the TLS handshake.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Bytes read at once when a read fills the stack buffer.
const READ_CHUNK: usize = 16 * 1024;

/// Why the connection ends.
pub struct Close {
    /// Sent in an MQTT 5 DISCONNECT (MQTT 3 just closes).
    pub reason: Option<(Reason, String)>,
    pub send_will: bool,
}

impl Close {
    pub fn abrupt() -> Close {
        Close {
            reason: None,
            send_will: true,
        }
    }

    pub fn because(reason: Reason, message: impl Into<String>) -> Close {
        Close {
            reason: Some((reason, message.into())),
            send_will: true,
        }
    }

    /// The server stops; the will is not published.
    pub fn shutting_down(server: &str) -> Close {
        Close {
            reason: Some((
                Reason::ServerShuttingDown,
                format!("the {server} is shutting down"),
            )),
            send_will: false,
        }
    }

    /// A newer connection claimed the client id.
    pub fn taken_over() -> Close {
        Close::because(
            Reason::SessionTakenOver,
            "another connection took the client id",
        )
    }

    pub fn keep_alive_timed_out() -> Close {
        Close::because(Reason::KeepAliveTimeout, "keep-alive timed out")
    }

    /// What the client sent could not be read as a packet.
    pub fn unreadable(e: &CodecError) -> Close {
        match e {
            CodecError::TooLarge(n) => {
                Close::because(Reason::PacketTooLarge, format!("a packet of {n} bytes"))
            }
            e => Close::because(Reason::MalformedPacket, e.to_string()),
        }
    }

    /// A PUBLISH with a topic alias, which the CONNACK said are not taken.
    pub fn topic_alias() -> Close {
        Close::because(
            Reason::TopicAliasInvalid,
            "topic aliases are not accepted (Topic Alias Maximum is 0)",
        )
    }

    /// The client's DISCONNECT, with its reason code.
    pub fn disconnect(reason: u8) -> Close {
        Close {
            reason: None,
            // 0x04: "disconnect with will message".
            send_will: reason == 0x04,
        }
    }
}

/// Reads until one whole packet is buffered; `None` when the peer closed.
pub async fn read_packet<R: AsyncRead + Unpin>(
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
pub async fn fill<R: AsyncRead + Unpin>(
    reader: &mut R,
    inbuf: &mut BytesMut,
    max: usize,
) -> Result<bool, CodecError> {
    if inbuf.is_empty() {
        // Between packets no buffer is held: the first bytes go to the
        // stack, and a buffer exists only while a packet is arriving.
        let mut first = [0u8; 512];
        let n = reader
            .read(&mut first)
            .await
            .map_err(|e| CodecError::Malformed(e.to_string()))?;
        inbuf.extend_from_slice(&first[..n]);
        if n == first.len() {
            // More is probably waiting (a publisher with a full window):
            // take what is already there in one go, so its publishes share
            // appends and fsyncs, without waiting for more.
            inbuf.reserve(READ_CHUNK.min(max));
            if let Some(r) = reader.read_buf(inbuf).now_or_never() {
                r.map_err(|e| CodecError::Malformed(e.to_string()))?;
            }
        }
        return Ok(n > 0);
    }
    let need = codec::needed(inbuf, max)?;
    inbuf.reserve(need.max(1024).min(max));
    let n = reader
        .read_buf(inbuf)
        .await
        .map_err(|e| CodecError::Malformed(e.to_string()))?;
    Ok(n > 0)
}

/// A CONNACK that refuses the connection.
pub fn refusal(reason: Reason, why: Option<&str>) -> Outbound {
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

/// Answers a CONNECT of a protocol level not spoken, in the one form MQTT 3
/// clients of any level understand.
pub async fn refuse_protocol_level<W: AsyncWrite + Unpin>(writer: &mut W) {
    let mut out = BytesMut::new();
    let answer = refusal(Reason::UnsupportedProtocolVersion, None);
    if codec::write(&mut out, Version::V4, answer, usize::MAX).is_ok() {
        let _ = writer.write_all(&out).await;
    }
}

/// Whether the CONNECT asks for a session that outlives the connection.
pub fn persistent(c: &Connect) -> bool {
    match c.version {
        Version::V4 => !c.clean_start,
        Version::V5 => c.session_expiry.unwrap_or(0) > 0,
    }
}

/// The session expiry granted: MQTT 3 sessions keep the longest allowed.
pub fn expiry_secs(c: &Connect, max_session_expiry_secs: u32) -> u32 {
    match c.version {
        Version::V4 => max_session_expiry_secs,
        Version::V5 => c.session_expiry.unwrap_or(0).min(max_session_expiry_secs),
    }
}

/// Why the CONNECT itself is refused, before asking who the client is: a
/// persistent MQTT 3 session without a client id, or a will that cannot be
/// published. The last reason found wins.
pub fn check_connect(c: &Connect, persistent: bool) -> Option<(Reason, &'static str)> {
    let mut refused = None;
    if c.version == Version::V4 && persistent && c.client_id.is_empty() {
        refused = Some((
            Reason::ClientIdentifierNotValid,
            "a persistent session needs a client id",
        ));
    }
    if let Some(w) = &c.will {
        if filter::validate_name(&w.topic).is_err() {
            refused = Some((Reason::TopicNameInvalid, "invalid will topic"));
        } else if w.qos > 1 && c.version == Version::V5 {
            refused = Some((Reason::QosNotSupported, "QoS 2 is not supported"));
        }
    }
    refused
}

/// Who a client without a user name is: the client certificate's
/// principal, else anonymous where the listener allows it.
pub fn principal_without_password(
    tls_principal: Option<String>,
    allow_anonymous: bool,
) -> Result<String, (Reason, &'static str)> {
    match tls_principal {
        Some(p) => Ok(p),
        None if allow_anonymous => Ok(ANONYMOUS.to_owned()),
        None => Err((
            Reason::NotAuthorized,
            "this listener needs a user name and password or a client certificate",
        )),
    }
}

/// The largest packet the client accepts.
pub fn max_out(c: &Connect) -> usize {
    c.max_packet_size
        .map_or(usize::MAX, |m| usize::try_from(m).unwrap_or(usize::MAX))
}

/// How many QoS 1 messages the client takes unacknowledged: its Receive
/// Maximum, within the server's limit, and at least one.
pub fn out_limit(c: &Connect, max_inflight: usize) -> usize {
    usize::from(c.receive_maximum.unwrap_or(u16::MAX))
        .min(max_inflight)
        .max(1)
}

/// The keep-alive granted for the one asked (none, or too long, becomes the
/// longest allowed), and the Server Keep Alive to tell when they differ.
pub fn keep_alive(asked: u16, max_keep_alive_secs: u16) -> (u16, Option<u16>) {
    let granted = if asked == 0 || asked > max_keep_alive_secs {
        max_keep_alive_secs
    } else {
        asked
    };
    (granted, (granted != asked).then_some(granted))
}

/// MQTT: the server closes after one and a half keep-alive periods of silence.
pub fn idle_limit(keep_alive_secs: u16) -> Duration {
    Duration::from_millis(u64::from(keep_alive_secs) * 1500)
}

/// The next packet id after `last` that is neither 0 nor awaiting PUBACK.
pub fn next_packet_id<V, S: std::hash::BuildHasher>(
    last: &mut u16,
    in_use: &HashMap<u16, V, S>,
) -> u16 {
    loop {
        *last = last.wrapping_add(1);
        if *last != 0 && !in_use.contains_key(last) {
            return *last;
        }
    }
}

/// Refuses a PUBLISH whose topic name is not valid, or QoS 2 over MQTT 5.
pub fn check_publish(version: Version, message: &Message) -> Result<(), Close> {
    if filter::validate_name(&message.topic).is_err() {
        return Err(Close::because(
            Reason::TopicNameInvalid,
            format!("'{}' is not a valid topic name", message.topic),
        ));
    }
    if message.qos > 1 && version == Version::V5 {
        return Err(Close::because(
            Reason::QosNotSupported,
            "QoS 2 is not supported (Maximum QoS is 1)",
        ));
    }
    Ok(())
}

/// The answer to a publish once stored: PUBREC for MQTT 3 QoS 2, else PUBACK.
pub fn stored(pkid: u16, qos: u8) -> Outbound {
    if qos == 2 {
        Outbound::PubRec {
            pkid,
            reason: Reason::Success,
        }
    } else {
        Outbound::PubAck {
            pkid,
            reason: Reason::Success,
            reason_string: None,
        }
    }
}

/// The next connection of an MQTT listener; `None` once `shutdown` is
/// cancelled.
pub async fn next_connection(
    listener: &TcpListener,
    shutdown: &CancellationToken,
) -> Option<(TcpStream, SocketAddr)> {
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => return None,
            r = listener.accept() => r,
        };
        match accepted {
            Ok(x) => return Some(x),
            Err(e) => {
                // Out of file descriptors and the like: back off, keep serving.
                tracing::warn!(error = %e, "MQTT accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Why an MQTTS connection was not taken past its TLS handshake.
#[derive(Debug, PartialEq, Eq)]
pub enum TlsRefused {
    Handshake,
    TimedOut,
    NoPrincipal,
}

/// Completes the TLS handshake; the stream and, for a client certificate,
/// its principal. Failures are logged in `span`.
pub async fn accept_tls(
    stream: TcpStream,
    tls: &ListenerTls,
    span: &tracing::Span,
) -> Result<(TlsStream<TcpStream>, Option<String>), TlsRefused> {
    let handshake = tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, tls.acceptor.accept(stream)).await;
    let stream = match handshake {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::debug!(parent: span, error = %e, "MQTT TLS handshake failed");
            return Err(TlsRefused::Handshake);
        }
        Err(_) => return Err(TlsRefused::TimedOut),
    };
    let principal = match stream.get_ref().1.peer_certificates() {
        Some(chain) if !chain.is_empty() => {
            let Some(p) = tls.principal(chain) else {
                tracing::debug!(parent: span, "no principal mapping rule matches the client certificate");
                return Err(TlsRefused::NoPrincipal);
            };
            Some(p)
        }
        _ => None,
    };
    Ok((stream, principal))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::{keep_alive, next_packet_id};

    #[test]
    fn keep_alive_is_capped_and_told() {
        assert_eq!(keep_alive(30, 60), (30, None));
        assert_eq!(keep_alive(0, 60), (60, Some(60)));
        assert_eq!(keep_alive(90, 60), (60, Some(60)));
    }

    #[test]
    fn packet_ids_skip_zero_and_those_in_use() {
        let mut last = u16::MAX - 1;
        let in_use: HashMap<u16, u8> = [(u16::MAX, 0), (1, 0)].into_iter().collect();
        assert_eq!(next_packet_id(&mut last, &in_use), 2);
    }
}
