//! MQTT packets in and out, for both protocol versions.
//!
//! The wire codecs are `rumqttc`'s `mqttbytes` modules (3.1.1 as `v4`, 5.0
//! as `v5`); this file frames packets (the remaining length is read and
//! capped before a packet is buffered), picks the codec from the CONNECT's
//! protocol level, and turns both versions' packets into one set of types
//! the session logic uses, so it never matches on the version except where
//! the protocols differ (reason codes, properties).

use bytes::{Bytes, BytesMut};
use rumqttc::mqttbytes::v4;
use rumqttc::mqttbytes::QoS;
mod v5 {
    pub use rumqttc::v5::mqttbytes::v5::*;
    pub use rumqttc::v5::mqttbytes::QoS as QoS5;
}

/// The protocol a connection speaks, from its CONNECT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// MQTT 3.1.1 (protocol level 4).
    V4,
    /// MQTT 5.0.
    V5,
}

/// MQTT 5 properties Veil carries through Kafka headers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Properties {
    pub user: Vec<(String, String)>,
    pub content_type: Option<String>,
    pub payload_format: Option<u8>,
}

/// An application message: a PUBLISH's contents or a will.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub topic: String,
    pub payload: Bytes,
    pub qos: u8,
    pub retain: bool,
    pub properties: Properties,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connect {
    pub version: Version,
    pub client_id: String,
    pub clean_start: bool,
    pub keep_alive: u16,
    /// MQTT 5 Session Expiry Interval (seconds); MQTT 3 has none.
    pub session_expiry: Option<u32>,
    /// MQTT 5 Receive Maximum: QoS 1 messages the client takes unacknowledged.
    pub receive_maximum: Option<u16>,
    /// MQTT 5 Maximum Packet Size the client accepts.
    pub max_packet_size: Option<u32>,
    pub will: Option<Message>,
    pub username: Option<String>,
    pub password: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscribeFilter {
    pub filter: String,
    pub qos: u8,
    /// MQTT 5 No Local: do not send this connection's own publishes back.
    pub no_local: bool,
}

/// A packet from a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inbound {
    Connect(Box<Connect>),
    Publish {
        pkid: u16,
        message: Message,
        /// MQTT 5 topic alias (Veil advertises none, so any is an error).
        topic_alias: Option<u16>,
    },
    PubAck(u16),
    PubRec(u16),
    PubRel(u16),
    PubComp(u16),
    Subscribe {
        pkid: u16,
        filters: Vec<SubscribeFilter>,
    },
    Unsubscribe {
        pkid: u16,
        filters: Vec<String>,
    },
    PingReq,
    Disconnect {
        /// MQTT 5 reason code; 0x04 asks for the will to be sent.
        reason: u8,
        session_expiry: Option<u32>,
    },
    /// MQTT 5 AUTH (enhanced authentication, not offered).
    Auth,
    /// A packet only a server sends (CONNACK, SUBACK, ...): a protocol error.
    ServerOnly,
}

/// MQTT 5 reason codes Veil sends; MQTT 3 gets the nearest return code or
/// a closed connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Reason {
    Success = 0x00,
    UnspecifiedError = 0x80,
    MalformedPacket = 0x81,
    ProtocolError = 0x82,
    ImplementationSpecificError = 0x83,
    UnsupportedProtocolVersion = 0x84,
    ClientIdentifierNotValid = 0x85,
    BadUserNameOrPassword = 0x86,
    NotAuthorized = 0x87,
    ServerUnavailable = 0x88,
    ServerShuttingDown = 0x8B,
    KeepAliveTimeout = 0x8D,
    SessionTakenOver = 0x8E,
    TopicFilterInvalid = 0x8F,
    TopicNameInvalid = 0x90,
    ReceiveMaximumExceeded = 0x93,
    TopicAliasInvalid = 0x94,
    PacketTooLarge = 0x95,
    QosNotSupported = 0x9B,
}

/// A packet to a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outbound {
    ConnAck {
        session_present: bool,
        reason: Reason,
        /// MQTT 5: what the server allows (sent with a successful CONNACK).
        receive_maximum: u16,
        max_packet_size: u32,
        /// MQTT 5: the keep-alive the server holds the client to, when it
        /// differs from what the client asked.
        server_keep_alive: Option<u16>,
        /// MQTT 5: the identifier the server chose for an empty one.
        assigned_client_id: Option<String>,
        reason_string: Option<String>,
    },
    Publish {
        pkid: u16,
        dup: bool,
        message: Message,
    },
    PubAck {
        pkid: u16,
        reason: Reason,
        reason_string: Option<String>,
    },
    PubRec {
        pkid: u16,
        reason: Reason,
    },
    PubComp(u16),
    SubAck {
        pkid: u16,
        /// Granted QoS (0 or 1) or a failure reason, per filter.
        results: Vec<Result<u8, Reason>>,
    },
    UnsubAck {
        pkid: u16,
        count: usize,
    },
    PingResp,
    /// MQTT 5 only: MQTT 3 servers close the connection instead.
    Disconnect {
        reason: Reason,
        reason_string: Option<String>,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("packet of {0} bytes is larger than allowed")]
    TooLarge(usize),
    #[error("malformed packet: {0}")]
    Malformed(String),
    #[error("the first packet is not a CONNECT")]
    NotConnect,
    #[error("unsupported protocol level {0}")]
    UnsupportedVersion(u8),
}

impl From<rumqttc::mqttbytes::Error> for CodecError {
    fn from(e: rumqttc::mqttbytes::Error) -> Self {
        CodecError::Malformed(e.to_string())
    }
}

impl From<rumqttc::v5::mqttbytes::Error> for CodecError {
    fn from(e: rumqttc::v5::mqttbytes::Error) -> Self {
        CodecError::Malformed(e.to_string())
    }
}

/// The fixed header: first byte, its own length, the remaining length.
/// `None` until enough bytes are there to tell.
fn fixed_header(buf: &[u8]) -> Result<Option<(u8, usize, usize)>, CodecError> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    let mut len = 0usize;
    for i in 0..4 {
        let Some(&b) = buf.get(1 + i) else {
            return Ok(None);
        };
        len |= usize::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Ok(Some((first, 2 + i, len)));
        }
    }
    Err(CodecError::Malformed(
        "remaining length longer than 4 bytes".into(),
    ))
}

/// How many more bytes `buf` needs before the next packet is whole (0 when
/// it is); refuses a packet larger than `max` from its header alone, so a
/// caller reserves at most `max` bytes.
pub fn needed(buf: &[u8], max: usize) -> Result<usize, CodecError> {
    match fixed_header(buf)? {
        None => Ok(1),
        Some((_, header, remaining)) => {
            let total = header + remaining;
            if total > max {
                return Err(CodecError::TooLarge(total));
            }
            Ok(total.saturating_sub(buf.len()))
        }
    }
}

/// The protocol level a CONNECT frame asks for (`frame` is whole).
fn connect_level(frame: &[u8], header: usize) -> Result<u8, CodecError> {
    let body = &frame[header..];
    let name_len = usize::from(u16::from_be_bytes([
        *body.first().ok_or(CodecError::NotConnect)?,
        *body.get(1).ok_or(CodecError::NotConnect)?,
    ]));
    body.get(2 + name_len)
        .copied()
        .ok_or_else(|| CodecError::Malformed("CONNECT without a protocol level".into()))
}

/// Takes the next whole packet off `buf` (`None` if it is not whole yet).
/// `version` is `None` until the CONNECT has been read: then only a
/// CONNECT is accepted, and its protocol level picks the codec.
pub fn read(
    buf: &mut BytesMut,
    version: Option<Version>,
    max: usize,
) -> Result<Option<Inbound>, CodecError> {
    if needed(buf, max)? > 0 {
        return Ok(None);
    }
    let Some((first, header, remaining)) = fixed_header(buf)? else {
        return Ok(None);
    };
    let kind = first >> 4;
    let version = if let Some(v) = version {
        if kind == 1 {
            return Err(CodecError::Malformed("a second CONNECT".into()));
        }
        v
    } else {
        if kind != 1 {
            return Err(CodecError::NotConnect);
        }
        match connect_level(&buf[..header + remaining], header)? {
            4 => Version::V4,
            5 => Version::V5,
            n => return Err(CodecError::UnsupportedVersion(n)),
        }
    };
    // An MQTT 5 DISCONNECT may omit its reason code (0: normal).
    if kind == 14 && remaining == 0 {
        let _ = buf.split_to(header);
        return Ok(Some(Inbound::Disconnect {
            reason: 0,
            session_expiry: None,
        }));
    }
    let mut frame = buf.split_to(header + remaining);
    Ok(Some(match version {
        Version::V4 => from_v4(v4::Packet::read(&mut frame, max)?)?,
        Version::V5 => from_v5(v5::Packet::read(&mut frame, Some(max_u32(max)))?)?,
    }))
}

fn max_u32(max: usize) -> u32 {
    u32::try_from(max).unwrap_or(u32::MAX)
}

fn qos_u8(q: QoS) -> u8 {
    q as u8
}

fn qos_of(q: u8) -> QoS {
    match q {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        _ => QoS::ExactlyOnce,
    }
}

fn qos5_u8(q: v5::QoS5) -> u8 {
    q as u8
}

fn qos5_of(q: u8) -> v5::QoS5 {
    match q {
        0 => v5::QoS5::AtMostOnce,
        1 => v5::QoS5::AtLeastOnce,
        _ => v5::QoS5::ExactlyOnce,
    }
}

fn utf8(b: Bytes, what: &str) -> Result<String, CodecError> {
    String::from_utf8(b.to_vec()).map_err(|_| CodecError::Malformed(format!("{what} is not UTF-8")))
}

fn from_v4(p: v4::Packet) -> Result<Inbound, CodecError> {
    Ok(match p {
        v4::Packet::Connect(c) => {
            if c.protocol != rumqttc::mqttbytes::Protocol::V4 {
                return Err(CodecError::UnsupportedVersion(5));
            }
            Inbound::Connect(Box::new(Connect {
                version: Version::V4,
                client_id: c.client_id,
                clean_start: c.clean_session,
                keep_alive: c.keep_alive,
                session_expiry: None,
                receive_maximum: None,
                max_packet_size: None,
                will: c.last_will.map(|w| Message {
                    topic: w.topic,
                    payload: w.message,
                    qos: qos_u8(w.qos),
                    retain: w.retain,
                    properties: Properties::default(),
                }),
                username: c.login.as_ref().map(|l| l.username.clone()),
                password: c.login.map(|l| l.password),
            }))
        }
        v4::Packet::Publish(p) => Inbound::Publish {
            pkid: p.pkid,
            message: Message {
                topic: p.topic,
                payload: p.payload,
                qos: qos_u8(p.qos),
                retain: p.retain,
                properties: Properties::default(),
            },
            topic_alias: None,
        },
        v4::Packet::PubAck(a) => Inbound::PubAck(a.pkid),
        v4::Packet::PubRec(a) => Inbound::PubRec(a.pkid),
        v4::Packet::PubRel(a) => Inbound::PubRel(a.pkid),
        v4::Packet::PubComp(a) => Inbound::PubComp(a.pkid),
        v4::Packet::Subscribe(s) => Inbound::Subscribe {
            pkid: s.pkid,
            filters: s
                .filters
                .into_iter()
                .map(|f| SubscribeFilter {
                    filter: f.path,
                    qos: qos_u8(f.qos),
                    no_local: false,
                })
                .collect(),
        },
        v4::Packet::Unsubscribe(u) => Inbound::Unsubscribe {
            pkid: u.pkid,
            filters: u.topics,
        },
        v4::Packet::PingReq => Inbound::PingReq,
        v4::Packet::Disconnect => Inbound::Disconnect {
            reason: 0,
            session_expiry: None,
        },
        v4::Packet::ConnAck(_)
        | v4::Packet::SubAck(_)
        | v4::Packet::UnsubAck(_)
        | v4::Packet::PingResp => Inbound::ServerOnly,
    })
}

fn props_from_v5(p: Option<v5::PublishProperties>) -> (Properties, Option<u16>) {
    match p {
        None => (Properties::default(), None),
        Some(p) => (
            Properties {
                user: p.user_properties,
                content_type: p.content_type,
                payload_format: p.payload_format_indicator,
            },
            p.topic_alias,
        ),
    }
}

fn from_v5(p: v5::Packet) -> Result<Inbound, CodecError> {
    Ok(match p {
        v5::Packet::Connect(c, will, login) => {
            let props = c.properties.unwrap_or_default_props();
            let will = match will {
                Some(w) => Some(Message {
                    topic: utf8(w.topic, "the will topic")?,
                    payload: w.message,
                    qos: qos5_u8(w.qos),
                    retain: w.retain,
                    properties: w
                        .properties
                        .map(|p| Properties {
                            user: p.user_properties,
                            content_type: p.content_type,
                            payload_format: p.payload_format_indicator,
                        })
                        .unwrap_or_default(),
                }),
                None => None,
            };
            Inbound::Connect(Box::new(Connect {
                version: Version::V5,
                client_id: c.client_id,
                clean_start: c.clean_start,
                keep_alive: c.keep_alive,
                session_expiry: Some(props.0),
                receive_maximum: props.1,
                max_packet_size: props.2,
                will,
                username: login.as_ref().map(|l| l.username.clone()),
                password: login.map(|l| l.password),
            }))
        }
        v5::Packet::Publish(p) => {
            let (properties, topic_alias) = props_from_v5(p.properties);
            Inbound::Publish {
                pkid: p.pkid,
                message: Message {
                    topic: utf8(p.topic, "the topic")?,
                    payload: p.payload,
                    qos: qos5_u8(p.qos),
                    retain: p.retain,
                    properties,
                },
                topic_alias,
            }
        }
        v5::Packet::PubAck(a) => Inbound::PubAck(a.pkid),
        v5::Packet::PubRec(a) => Inbound::PubRec(a.pkid),
        v5::Packet::PubRel(a) => Inbound::PubRel(a.pkid),
        v5::Packet::PubComp(a) => Inbound::PubComp(a.pkid),
        v5::Packet::Subscribe(s) => Inbound::Subscribe {
            pkid: s.pkid,
            filters: s
                .filters
                .into_iter()
                .map(|f| SubscribeFilter {
                    filter: f.path,
                    qos: qos5_u8(f.qos),
                    no_local: f.nolocal,
                })
                .collect(),
        },
        v5::Packet::Unsubscribe(u) => Inbound::Unsubscribe {
            pkid: u.pkid,
            filters: u.filters,
        },
        v5::Packet::PingReq(_) => Inbound::PingReq,
        v5::Packet::Disconnect(d) => Inbound::Disconnect {
            reason: d.reason_code as u8,
            session_expiry: d.properties.and_then(|p| p.session_expiry_interval),
        },
        v5::Packet::Auth(_) => Inbound::Auth,
        v5::Packet::ConnAck(_)
        | v5::Packet::SubAck(_)
        | v5::Packet::UnsubAck(_)
        | v5::Packet::PingResp(_) => Inbound::ServerOnly,
    })
}

/// Session expiry (0 when absent), receive maximum, maximum packet size.
trait ConnectProps {
    fn unwrap_or_default_props(self) -> (u32, Option<u16>, Option<u32>);
}

impl ConnectProps for Option<v5::ConnectProperties> {
    fn unwrap_or_default_props(self) -> (u32, Option<u16>, Option<u32>) {
        self.map_or((0, None, None), |p| {
            (
                p.session_expiry_interval.unwrap_or(0),
                p.receive_maximum,
                p.max_packet_size,
            )
        })
    }
}

/// The MQTT 3.1.1 CONNACK return code nearest to an MQTT 5 reason.
fn v4_connect_code(r: Reason) -> v4::ConnectReturnCode {
    match r {
        Reason::Success => v4::ConnectReturnCode::Success,
        Reason::UnsupportedProtocolVersion => v4::ConnectReturnCode::RefusedProtocolVersion,
        Reason::ClientIdentifierNotValid => v4::ConnectReturnCode::BadClientId,
        Reason::BadUserNameOrPassword => v4::ConnectReturnCode::BadUserNamePassword,
        Reason::NotAuthorized => v4::ConnectReturnCode::NotAuthorized,
        _ => v4::ConnectReturnCode::ServiceUnavailable,
    }
}

fn v5_connect_code(r: Reason) -> v5::ConnectReturnCode {
    use v5::ConnectReturnCode as C;
    match r {
        Reason::Success => C::Success,
        Reason::MalformedPacket => C::MalformedPacket,
        Reason::ProtocolError => C::ProtocolError,
        Reason::UnsupportedProtocolVersion => C::UnsupportedProtocolVersion,
        Reason::ClientIdentifierNotValid => C::ClientIdentifierNotValid,
        Reason::BadUserNameOrPassword => C::BadUserNamePassword,
        Reason::NotAuthorized => C::NotAuthorized,
        Reason::ServerUnavailable => C::ServerUnavailable,
        Reason::PacketTooLarge => C::PacketTooLarge,
        Reason::QosNotSupported => C::QoSNotSupported,
        Reason::TopicNameInvalid => C::TopicNameInvalid,
        _ => C::UnspecifiedError,
    }
}

fn v5_puback_reason(r: Reason) -> v5::PubAckReason {
    match r {
        Reason::Success => v5::PubAckReason::Success,
        Reason::NotAuthorized => v5::PubAckReason::NotAuthorized,
        Reason::TopicNameInvalid => v5::PubAckReason::TopicNameInvalid,
        Reason::ImplementationSpecificError => v5::PubAckReason::ImplementationSpecificError,
        _ => v5::PubAckReason::UnspecifiedError,
    }
}

fn v5_suback_code(r: Result<u8, Reason>) -> v5::SubscribeReasonCode {
    match r {
        Ok(q) => v5::SubscribeReasonCode::Success(qos5_of(q)),
        Err(Reason::NotAuthorized) => v5::SubscribeReasonCode::NotAuthorized,
        Err(Reason::TopicFilterInvalid) => v5::SubscribeReasonCode::TopicFilterInvalid,
        Err(Reason::ImplementationSpecificError) => v5::SubscribeReasonCode::ImplementationSpecific,
        Err(_) => v5::SubscribeReasonCode::Unspecified,
    }
}

fn v5_disconnect_code(r: Reason) -> v5::DisconnectReasonCode {
    use v5::DisconnectReasonCode as D;
    match r {
        Reason::Success => D::NormalDisconnection,
        Reason::MalformedPacket => D::MalformedPacket,
        Reason::ProtocolError => D::ProtocolError,
        Reason::ImplementationSpecificError => D::ImplementationSpecificError,
        Reason::NotAuthorized => D::NotAuthorized,
        Reason::ServerShuttingDown => D::ServerShuttingDown,
        Reason::KeepAliveTimeout => D::KeepAliveTimeout,
        Reason::SessionTakenOver => D::SessionTakenOver,
        Reason::TopicFilterInvalid => D::TopicFilterInvalid,
        Reason::TopicNameInvalid => D::TopicNameInvalid,
        Reason::ReceiveMaximumExceeded => D::ReceiveMaximumExceeded,
        Reason::TopicAliasInvalid => D::TopicAliasInvalid,
        Reason::PacketTooLarge => D::PacketTooLarge,
        Reason::QosNotSupported => D::QoSNotSupported,
        _ => D::UnspecifiedError,
    }
}

/// Appends `p` to `out` in the connection's protocol. `max` is the largest
/// packet the client accepts; a larger one is an error (not sent).
/// Returns `false` for packets MQTT 3 has no form of (DISCONNECT from the
/// server): the caller closes the connection instead.
pub fn write(
    out: &mut BytesMut,
    version: Version,
    p: Outbound,
    max: usize,
) -> Result<bool, CodecError> {
    match version {
        Version::V4 => {
            let packet = match p {
                Outbound::ConnAck {
                    session_present,
                    reason,
                    ..
                } => v4::Packet::ConnAck(v4::ConnAck::new(
                    v4_connect_code(reason),
                    session_present && reason == Reason::Success,
                )),
                Outbound::Publish { pkid, dup, message } => {
                    let mut p = v4::Publish::from_bytes(
                        message.topic,
                        qos_of(message.qos),
                        message.payload,
                    );
                    p.pkid = pkid;
                    p.dup = dup;
                    p.retain = message.retain;
                    v4::Packet::Publish(p)
                }
                // MQTT 3 has no reason codes: a refused publish closes the
                // connection (the caller does so; this is never sent).
                Outbound::PubAck { pkid, .. } => v4::Packet::PubAck(v4::PubAck::new(pkid)),
                Outbound::PubRec { pkid, .. } => v4::Packet::PubRec(v4::PubRec::new(pkid)),
                Outbound::PubComp(pkid) => v4::Packet::PubComp(v4::PubComp::new(pkid)),
                Outbound::SubAck { pkid, results } => v4::Packet::SubAck(v4::SubAck::new(
                    pkid,
                    results
                        .into_iter()
                        .map(|r| match r {
                            Ok(q) => v4::SubscribeReasonCode::Success(qos_of(q)),
                            Err(_) => v4::SubscribeReasonCode::Failure,
                        })
                        .collect(),
                )),
                Outbound::UnsubAck { pkid, .. } => v4::Packet::UnsubAck(v4::UnsubAck::new(pkid)),
                Outbound::PingResp => v4::Packet::PingResp,
                Outbound::Disconnect { .. } => return Ok(false),
            };
            if packet.size() > max {
                return Err(CodecError::TooLarge(packet.size()));
            }
            packet.write(out, max)?;
        }
        Version::V5 => {
            let packet = match p {
                Outbound::ConnAck {
                    session_present,
                    reason,
                    receive_maximum,
                    max_packet_size,
                    server_keep_alive,
                    assigned_client_id,
                    reason_string,
                } => {
                    let ok = reason == Reason::Success;
                    let properties = if ok {
                        Some(v5::ConnAckProperties {
                            session_expiry_interval: None,
                            receive_max: Some(receive_maximum),
                            max_qos: Some(1),
                            retain_available: Some(1),
                            max_packet_size: Some(max_packet_size),
                            assigned_client_identifier: assigned_client_id,
                            topic_alias_max: None,
                            reason_string,
                            user_properties: Vec::new(),
                            wildcard_subscription_available: Some(1),
                            subscription_identifiers_available: Some(0),
                            shared_subscription_available: Some(0),
                            server_keep_alive,
                            response_information: None,
                            server_reference: None,
                            authentication_method: None,
                            authentication_data: None,
                        })
                    } else {
                        reason_string.map(|s| v5::ConnAckProperties {
                            session_expiry_interval: None,
                            receive_max: None,
                            max_qos: None,
                            retain_available: None,
                            max_packet_size: None,
                            assigned_client_identifier: None,
                            topic_alias_max: None,
                            reason_string: Some(s),
                            user_properties: Vec::new(),
                            wildcard_subscription_available: None,
                            subscription_identifiers_available: None,
                            shared_subscription_available: None,
                            server_keep_alive: None,
                            response_information: None,
                            server_reference: None,
                            authentication_method: None,
                            authentication_data: None,
                        })
                    };
                    v5::Packet::ConnAck(v5::ConnAck {
                        session_present: session_present && ok,
                        code: v5_connect_code(reason),
                        properties,
                    })
                }
                Outbound::Publish { pkid, dup, message } => {
                    let props = &message.properties;
                    let properties = (!props.user.is_empty()
                        || props.content_type.is_some()
                        || props.payload_format.is_some())
                    .then(|| v5::PublishProperties {
                        payload_format_indicator: props.payload_format,
                        message_expiry_interval: None,
                        topic_alias: None,
                        response_topic: None,
                        correlation_data: None,
                        user_properties: props.user.clone(),
                        subscription_identifiers: Vec::new(),
                        content_type: props.content_type.clone(),
                    });
                    let mut p = v5::Publish::new(
                        message.topic,
                        qos5_of(message.qos),
                        message.payload,
                        properties,
                    );
                    p.pkid = pkid;
                    p.dup = dup;
                    p.retain = message.retain;
                    v5::Packet::Publish(p)
                }
                Outbound::PubAck {
                    pkid,
                    reason,
                    reason_string,
                } => {
                    let mut a = v5::PubAck::new(
                        pkid,
                        reason_string.map(|s| v5::PubAckProperties {
                            reason_string: Some(s),
                            user_properties: Vec::new(),
                        }),
                    );
                    a.reason = v5_puback_reason(reason);
                    v5::Packet::PubAck(a)
                }
                Outbound::PubRec { pkid, reason } => {
                    let mut r = v5::PubRec::new(pkid, None);
                    r.reason = match reason {
                        Reason::Success => v5::PubRecReason::Success,
                        Reason::NotAuthorized => v5::PubRecReason::NotAuthorized,
                        Reason::TopicNameInvalid => v5::PubRecReason::TopicNameInvalid,
                        _ => v5::PubRecReason::UnspecifiedError,
                    };
                    v5::Packet::PubRec(r)
                }
                Outbound::PubComp(pkid) => v5::Packet::PubComp(v5::PubComp::new(pkid, None)),
                Outbound::SubAck { pkid, results } => v5::Packet::SubAck(v5::SubAck {
                    pkid,
                    return_codes: results.into_iter().map(v5_suback_code).collect(),
                    properties: None,
                }),
                Outbound::UnsubAck { pkid, count } => v5::Packet::UnsubAck(v5::UnsubAck {
                    pkid,
                    reasons: vec![v5::UnsubAckReason::Success; count],
                    properties: None,
                }),
                Outbound::PingResp => v5::Packet::PingResp(v5::PingResp),
                Outbound::Disconnect {
                    reason,
                    reason_string,
                } => {
                    let mut d = v5::Disconnect::new(v5_disconnect_code(reason));
                    d.properties = reason_string.map(|s| v5::DisconnectProperties {
                        session_expiry_interval: None,
                        reason_string: Some(s),
                        user_properties: Vec::new(),
                        server_reference: None,
                    });
                    v5::Packet::Disconnect(d)
                }
            };
            if packet.size() > max {
                return Err(CodecError::TooLarge(packet.size()));
            }
            packet.write(out, Some(max_u32(max)))?;
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests;
