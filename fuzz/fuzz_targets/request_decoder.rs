//! Any bytes as a Kafka request frame (after the size prefix): decoding
//! returns a request or an error and never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = veil_broker::dispatch::decode_request(bytes::Bytes::copy_from_slice(data));
});
