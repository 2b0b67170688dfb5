//! The codec against rumqttc's own encoders, and arbitrary input.
use super::*;

fn v4_bytes(p: &v4::Packet) -> BytesMut {
    let mut b = BytesMut::new();
    p.write(&mut b, 1 << 20).unwrap();
    b
}

fn v5_bytes(p: &v5::Packet) -> BytesMut {
    let mut b = BytesMut::new();
    p.write(&mut b, None).unwrap();
    b
}

#[test]
fn the_connect_picks_the_version() {
    let mut c = v4::Connect::new("dev-1");
    c.set_login("alice", "secret");
    c.clean_session = false;
    let mut buf = v4_bytes(&v4::Packet::Connect(c));
    let Some(Inbound::Connect(c)) = read(&mut buf, None, 1024).unwrap() else {
        panic!("not a connect");
    };
    assert_eq!(c.version, Version::V4);
    assert_eq!(c.client_id, "dev-1");
    assert!(!c.clean_start);
    assert_eq!(c.username.as_deref(), Some("alice"));
    assert_eq!(c.password.as_deref(), Some("secret"));
    assert!(buf.is_empty());

    let mut props = v5::ConnectProperties::new();
    props.session_expiry_interval = Some(300);
    props.receive_maximum = Some(5);
    let c5 = v5::Connect {
        keep_alive: 30,
        client_id: "dev-2".into(),
        clean_start: true,
        properties: Some(props),
    };
    let mut buf = v5_bytes(&v5::Packet::Connect(c5, None, None));
    let Some(Inbound::Connect(c)) = read(&mut buf, None, 1024).unwrap() else {
        panic!("not a connect");
    };
    assert_eq!(c.version, Version::V5);
    assert_eq!(c.session_expiry, Some(300));
    assert_eq!(c.receive_maximum, Some(5));
}

#[test]
fn only_a_connect_comes_first_and_sizes_are_capped_from_the_header() {
    let mut buf = v4_bytes(&v4::Packet::PingReq);
    assert!(matches!(
        read(&mut buf, None, 1024),
        Err(CodecError::NotConnect)
    ));
    let big = v4::Packet::Publish(v4::Publish::new("a/b", QoS::AtMostOnce, vec![0u8; 2000]));
    let full = v4_bytes(&big);
    // Refused from the first bytes alone, before the rest arrives.
    let mut head = BytesMut::from(&full[..4]);
    assert!(matches!(
        read(&mut head, Some(Version::V4), 1024),
        Err(CodecError::TooLarge(_))
    ));
    assert!(matches!(
        needed(&full[..4], 1024),
        Err(CodecError::TooLarge(_))
    ));
    // A partial packet waits for more.
    let mut part = BytesMut::from(&full[..10]);
    assert_eq!(read(&mut part, Some(Version::V4), 4096).unwrap(), None);
    assert_eq!(part.len(), 10);
    assert!(matches!(
        fixed_header(&[0x30, 0xff, 0xff, 0xff, 0xff, 0x01]),
        Err(CodecError::Malformed(_))
    ));
}

#[test]
fn protocol_level_3_is_refused() {
    let mut c = v4_bytes(&v4::Packet::Connect(v4::Connect::new("x")));
    // Name "MQTT" is four bytes after the two-byte length: level follows.
    let header = 2;
    c[header + 6] = 3;
    assert!(matches!(
        read(&mut c, None, 1024),
        Err(CodecError::UnsupportedVersion(3))
    ));
}

#[test]
fn v5_properties_and_an_empty_disconnect_are_read() {
    let props = v5::PublishProperties {
        payload_format_indicator: Some(1),
        message_expiry_interval: None,
        topic_alias: None,
        response_topic: None,
        correlation_data: None,
        user_properties: vec![("unit".into(), "C".into())],
        subscription_identifiers: Vec::new(),
        content_type: Some("text/plain".into()),
    };
    let mut p = v5::Publish::new("t/1", v5::QoS5::AtLeastOnce, "21.5", Some(props));
    p.pkid = 7;
    let mut buf = v5_bytes(&v5::Packet::Publish(p));
    buf.extend_from_slice(&[0xe0, 0x00]);
    let Some(Inbound::Publish { pkid, message, .. }) =
        read(&mut buf, Some(Version::V5), 1024).unwrap()
    else {
        panic!("not a publish");
    };
    assert_eq!(pkid, 7);
    assert_eq!(message.topic, "t/1");
    assert_eq!(message.properties.user, vec![("unit".into(), "C".into())]);
    assert_eq!(
        message.properties.content_type.as_deref(),
        Some("text/plain")
    );
    assert_eq!(
        read(&mut buf, Some(Version::V5), 1024).unwrap(),
        Some(Inbound::Disconnect {
            reason: 0,
            session_expiry: None
        })
    );
}

#[test]
fn outbound_packets_round_trip_through_the_client_codec() {
    let message = Message {
        topic: "a/b".into(),
        payload: Bytes::from_static(b"x"),
        qos: 1,
        retain: true,
        properties: Properties {
            user: vec![("k".into(), "v".into())],
            content_type: None,
            payload_format: None,
        },
    };
    let mut out = BytesMut::new();
    write(
        &mut out,
        Version::V5,
        Outbound::Publish {
            pkid: 3,
            dup: false,
            message: message.clone(),
        },
        1024,
    )
    .unwrap();
    let Ok(v5::Packet::Publish(p)) = v5::Packet::read(&mut out, None) else {
        panic!("not a publish");
    };
    assert_eq!((p.pkid, p.retain, &p.topic[..]), (3, true, &b"a/b"[..]));
    assert_eq!(
        p.properties.unwrap().user_properties,
        message.properties.user
    );

    let mut out = BytesMut::new();
    write(
        &mut out,
        Version::V4,
        Outbound::SubAck {
            pkid: 9,
            results: vec![Ok(1), Err(Reason::NotAuthorized)],
        },
        1024,
    )
    .unwrap();
    let Ok(v4::Packet::SubAck(s)) = v4::Packet::read(&mut out, 1024) else {
        panic!("not a suback");
    };
    assert_eq!(
        s.return_codes,
        vec![
            v4::SubscribeReasonCode::Success(QoS::AtLeastOnce),
            v4::SubscribeReasonCode::Failure
        ]
    );
    // MQTT 3 has no server DISCONNECT.
    let mut out = BytesMut::new();
    assert!(!write(
        &mut out,
        Version::V4,
        Outbound::Disconnect {
            reason: Reason::NotAuthorized,
            reason_string: None
        },
        1024
    )
    .unwrap());
    assert!(out.is_empty());
    // Too large for the client: not written.
    let mut out = BytesMut::new();
    assert!(write(
        &mut out,
        Version::V5,
        Outbound::Publish {
            pkid: 1,
            dup: false,
            message
        },
        8
    )
    .is_err());
}

fn read_all(bytes: &[u8], version: Option<Version>) {
    let mut buf = BytesMut::from(bytes);
    loop {
        let before = buf.len();
        match read(&mut buf, version, 4096) {
            Ok(Some(_)) => assert!(buf.len() < before, "a packet consumed nothing"),
            Ok(None) | Err(_) => return,
        }
    }
}

proptest::proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(
        bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..512),
        v in 0u8..3,
    ) {
        let version = [None, Some(Version::V4), Some(Version::V5)][usize::from(v)];
        read_all(&bytes, version);
    }

    #[test]
    fn mutated_packets_never_panic(
        which in 0usize..6,
        at in proptest::num::usize::ANY,
        byte in proptest::num::u8::ANY,
    ) {
        let mut will = v5::LastWill::new("w/t", "bye", v5::QoS5::AtLeastOnce, true, None);
        will.properties = Some(v5::LastWillProperties {
            delay_interval: Some(1),
            payload_format_indicator: Some(1),
            message_expiry_interval: None,
            content_type: Some("c".into()),
            response_topic: None,
            correlation_data: None,
            user_properties: vec![("a".into(), "b".into())],
        });
        let (mut frame, version) = match which {
            0 => (v4_bytes(&v4::Packet::Connect(v4::Connect::new("id"))), None),
            1 => (
                v5_bytes(&v5::Packet::Connect(
                    v5::Connect {
                        keep_alive: 5,
                        client_id: "id".into(),
                        clean_start: false,
                        properties: Some(v5::ConnectProperties::new()),
                    },
                    Some(will),
                    Some(v5::Login::new("u", "p")),
                )),
                None,
            ),
            2 => {
                let mut p = v4::Publish::new("a/b", QoS::AtLeastOnce, "x");
                p.pkid = 1;
                (v4_bytes(&v4::Packet::Publish(p)), Some(Version::V4))
            }
            3 => (
                v4_bytes(&v4::Packet::Subscribe(v4::Subscribe::new("a/#", QoS::AtLeastOnce))),
                Some(Version::V4),
            ),
            4 => (
                v5_bytes(&v5::Packet::Subscribe(v5::Subscribe::new(
                    v5::Filter::new("a/+", v5::QoS5::AtLeastOnce),
                    None,
                ))),
                Some(Version::V5),
            ),
            _ => (
                v5_bytes(&v5::Packet::Disconnect(v5::Disconnect::new(
                    v5::DisconnectReasonCode::DisconnectWithWillMessage,
                ))),
                Some(Version::V5),
            ),
        };
        let i = at % frame.len();
        frame[i] = byte;
        read_all(&frame, version);
    }
}
