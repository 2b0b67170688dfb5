//! Fuzz the sealed-record header decoder and the consumer's data-key lookup
//! of a stored value (bytes an attacker can craft inside or around a
//! ciphertext): never panic, and accepted headers re-encode to exactly the
//! input.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(h) = veil_blind::decode_headers(data) {
        let again = veil_blind::encode_headers(&h).expect("decoded headers re-encode");
        assert_eq!(again, data);
    }
    let _ = veil_blind::record_dek(data);
});
