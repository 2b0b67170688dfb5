//! Fuzz the group-record decoder (bytes read back from the group store, or
//! later from an internal partition): never panic, never allocate more than
//! the input justifies, and a binary record that decodes re-encodes to
//! entries that decode to the same record.

#![no_main]

use libfuzzer_sys::fuzz_target;
use veil_broker::group::codec::{self, Assembler, Entry, MAX_RECORD_BYTES};

fuzz_target!(|data: &[u8]| {
    let Ok(entry) = codec::decode(data) else {
        return;
    };
    let binary = data.first() == Some(&codec::VERSION);
    let mut assembler = Assembler::default();
    let Ok(Some(record)) = assembler.push(entry.clone()) else {
        return;
    };
    let Ok(entries) = codec::encode(&record) else {
        // Only JSON records of the previous format may exceed the caps.
        assert!(!binary, "a decoded binary record re-encodes");
        return;
    };
    let mut again = Assembler::default();
    let mut rebuilt = Vec::new();
    for e in &entries {
        assert!(e.len() <= MAX_RECORD_BYTES);
        let decoded = codec::decode(e).expect("an encoded entry decodes");
        if let Some(r) = again.push(decoded).expect("entries assemble") {
            rebuilt.push(r);
        }
    }
    if binary && matches!(entry, Entry::Record(_)) && entries.len() == 1 {
        assert_eq!(rebuilt, vec![record]);
    }
});
