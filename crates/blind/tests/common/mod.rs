//! Shared fixture: the 2048-bit KAT key (p, q, e from `kat-2048.json`),
//! split for two users with fresh OS randomness. Built once per test binary.

#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::OnceLock;

use veil_blind::{Kid, MasterKey, ModulusBits, ServerShare, UserKey};

pub struct Fixture {
    pub master: MasterKey,
    pub alice: UserKey,
    pub alice_share: ServerShare,
    pub bob: UserKey,
    pub bob_share: ServerShare,
}

pub fn kat_json() -> serde_json::Value {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/blind/kat-2048.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("KAT file {} must exist: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

/// Hex (possibly odd length, no padding) to big-endian bytes.
pub fn hex(s: &str) -> Vec<u8> {
    let s = if s.len() % 2 == 1 {
        format!("0{s}")
    } else {
        s.to_owned()
    };
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

pub fn kat_master() -> MasterKey {
    let v = kat_json();
    let f = |k: &str| hex(v[k].as_str().unwrap());
    MasterKey::from_components(
        Kid::new(v["kid"].as_str().unwrap()).unwrap(),
        v["tenant"].as_str().unwrap(),
        ModulusBits::B2048,
        &f("p"),
        &f("q"),
        &f("e"),
    )
    .unwrap()
}

pub fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let master = kat_master();
        let (alice, alice_share) = master.split().unwrap();
        let (bob, bob_share) = master.split().unwrap();
        Fixture {
            master,
            alice,
            alice_share,
            bob,
            bob_share,
        }
    })
}

/// Flip one bit of a byte string.
pub fn flip(mut v: Vec<u8>, bit: usize) -> Vec<u8> {
    let i = bit % (v.len() * 8);
    v[i / 8] ^= 1 << (i % 8);
    v
}
