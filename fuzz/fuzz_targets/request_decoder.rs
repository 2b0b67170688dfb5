//! Any bytes as a Kafka request frame (after the size prefix): decoding
//! returns a request or an error and never panics.
//!
//! The Kafka codec reserves a `Vec` for an array's announced count before
//! it reads the elements, so 14 bytes can ask for 100 GB. The `veil` binary
//! survives that because its allocator (mimalloc) only maps address space
//! for such a reservation (see `crates/cli/src/main.rs` and the test
//! `wire_counts_of_billions_do_not_take_the_broker_down`); the target uses
//! the same allocator, so it checks the decoder as the broker runs it
//! rather than stopping at that reservation.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fuzz_target!(|data: &[u8]| {
    let _ = veil_broker::dispatch::decode_request(bytes::Bytes::copy_from_slice(data));
});
