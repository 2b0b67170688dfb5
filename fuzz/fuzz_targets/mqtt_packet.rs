//! Fuzz the MQTT packet reader (untrusted bytes from devices): the first
//! byte picks the state (before CONNECT, MQTT 3.1.1, MQTT 5), the rest is
//! the stream. It must never panic, must refuse any packet over the cap
//! from its header, and every packet it returns must consume input.

#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use veil_broker::mqtt::codec::{self, Version};

const MAX: usize = 4096;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, stream)) = data.split_first() else {
        return;
    };
    let version = match mode % 3 {
        0 => None,
        1 => Some(Version::V4),
        _ => Some(Version::V5),
    };
    let mut buf = BytesMut::from(stream);
    loop {
        let before = buf.len();
        match codec::read(&mut buf, version, MAX) {
            Ok(Some(_)) => assert!(buf.len() < before, "a packet consumed nothing"),
            Ok(None) => {
                assert!(codec::needed(&buf, MAX).is_ok_and(|n| n > 0));
                break;
            }
            Err(_) => break,
        }
    }
});
