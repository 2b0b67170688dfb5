//! Any bytes as an inter-node request frame (after the size prefix) or a
//! peer's reply: the decoders refuse garbage with an error and never panic,
//! and a request that decodes re-encodes to a frame that decodes to the
//! same call.

#![no_main]

use libfuzzer_sys::fuzz_target;
use veil_broker::cluster::rpc;

fuzz_target!(|data: &[u8]| {
    let _ = rpc::decode_response(&bytes::Bytes::copy_from_slice(data));
    let Ok((correlation_id, client_id, call)) = rpc::decode_request(data) else {
        return;
    };
    let client_id = client_id.unwrap_or_default();
    let frame = rpc::encode_request(correlation_id, &client_id, &call)
        .expect("a decoded call re-encodes");
    let (cid, _, again) = rpc::decode_request(&frame[4..]).expect("a re-encoded call decodes");
    assert_eq!(cid, correlation_id);
    // Compared as JSON values: map order is not part of a call.
    assert_eq!(
        serde_json::to_value(&again).expect("serializes"),
        serde_json::to_value(&call).expect("serializes")
    );
});
