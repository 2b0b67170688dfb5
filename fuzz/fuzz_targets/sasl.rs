//! Any bytes as SASL client messages: the PLAIN parser, both SCRAM message
//! parsers, a full SCRAM server exchange and the client-certificate DN
//! formatter return a value or an error and never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use veil_broker::auth::{plain, principal, scram};

fuzz_target!(|data: &[u8]| {
    let _ = plain::parse(data);
    let _ = scram::parse_client_first(data);
    let _ = scram::parse_client_final(data);
    let _ = principal::subject_dn(data);
    let _ = principal::format_name(data);
    // Split the input into a client-first and a client-final message.
    let cut = data.iter().position(|&b| b == 0).unwrap_or(data.len());
    let (first, last) = data.split_at(cut);
    let mut server = scram::ScramServer::new(scram::Mechanism::Sha256);
    let cred = scram::Credential::from_salted(scram::Mechanism::Sha256, b"salt", 4096, b"salted");
    if server
        .first(
            first,
            "servernonce",
            |_| Some(cred),
            |_| (b"decoy".to_vec(), 4096),
        )
        .is_ok()
    {
        let _ = server.finish(last.get(1..).unwrap_or_default());
    }
});
