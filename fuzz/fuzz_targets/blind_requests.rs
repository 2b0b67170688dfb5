//! Fuzz the Veil extension request decoders (untrusted bytes from any
//! authenticated or unauthenticated client): never panic, never allocate
//! more than the input justifies, and what decodes re-encodes to a frame
//! that decodes to the same request.

#![no_main]

use libfuzzer_sys::fuzz_target;
use veil_blind::protocol::{self, Message, Request, VeilApi};

/// The broker's allocator, as in `request_decoder.rs`: Kafka array counts
/// reserve address space only.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fuzz_target!(|data: &[u8]| {
    // As a whole frame (header v2 + body), the broker's entry point.
    let _ = protocol::decode_request_frame(data);
    // As a bare body of every API, and re-encoded when accepted.
    for api in VeilApi::ALL {
        let mut buf = data;
        if let Ok(req) = Request::decode(api, 0, &mut buf) {
            let mut out = Vec::new();
            let ok = match &req {
                Request::ShareRegister(r) => r.encode(&mut out, 0),
                Request::ShareRevoke(r) => r.encode(&mut out, 0),
                Request::ShareList(r) => r.encode(&mut out, 0),
                Request::CreateTopic(r) => r.encode(&mut out, 0),
                Request::Resolve(r) => r.encode(&mut out, 0),
                Request::KeyPut(r) => r.encode(&mut out, 0),
                Request::KeyGet(r) => r.encode(&mut out, 0),
            };
            ok.expect("a decoded request re-encodes");
            let mut again = &out[..];
            let back = Request::decode(api, 0, &mut again).expect("re-encoded request decodes");
            assert_eq!(format!("{back:?}"), format!("{req:?}"));
        }
    }
    // Through the broker's dispatch decoder too (it routes Veil keys here).
    let _ = veil_broker::dispatch::decode_request(bytes::Bytes::copy_from_slice(data));
});
