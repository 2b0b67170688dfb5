//! Fuzz the sealed-record envelope parser (untrusted bytes from the log or
//! the network): it must never panic, and whatever it accepts must re-encode
//! to exactly the input.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(env) = veil_blind::Envelope::parse(data) {
        assert!(env.ciphertext.len() >= veil_blind::seal::TAG_LEN);
        assert!(!env.kid.is_empty() && env.kid.len() <= veil_blind::params::MAX_KID_LEN);
        let again = env.to_bytes().expect("a parsed envelope re-encodes");
        assert_eq!(again, data);
    }
});
