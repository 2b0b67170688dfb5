//! Key generation and splitting (BLIND.md §4).

mod common;

use std::time::Instant;

use veil_blind::{
    generate_safe_prime, is_safe_prime, AeadId, DekLimits, Kid, MasterKey, ModulusBits, Part,
    Sealer,
};

/// The split's algebra, checked through behaviour: both users meet on the
/// physical name the master key computes, and a DEK round-trips.
fn check_split(master: &MasterKey) {
    let (alice, alice_share) = master.split().unwrap();
    let (bob, bob_share) = master.split().unwrap();
    assert_ne!(alice.to_bytes().unwrap(), bob.to_bytes().unwrap());
    let want = master.physical_name("t").unwrap();
    assert_eq!(
        alice_share
            .resolve(alice.token("t").unwrap().as_bytes())
            .unwrap(),
        want
    );
    assert_eq!(
        bob_share
            .resolve(bob.token("t").unwrap().as_bytes())
            .unwrap(),
        want
    );
    // A user's token under another user's share lands elsewhere (§5.3).
    assert_ne!(
        bob_share
            .resolve(alice.token("t").unwrap().as_bytes())
            .unwrap(),
        want
    );

    let (dek, w) = alice.create_dek("t").unwrap();
    let id = dek.dek_id();
    let stored = alice_share.store_wrap(&w).unwrap();
    let env = Sealer::new(dek, AeadId::Aes256Gcm, DekLimits::default())
        .seal(0, Part::Value, b"x")
        .unwrap();
    let bob_dek = bob
        .open_dek("t", id, &bob_share.unwrap_for(&stored).unwrap())
        .unwrap();
    assert_eq!(bob_dek.open(0, Part::Value, &env).unwrap().plaintext, b"x");
}

#[test]
fn split_from_kat_primes() {
    check_split(&common::kat_master());
}

#[test]
fn import_rejects_bad_components() {
    let v = common::kat_json();
    let f = |k: &str| common::hex(v[k].as_str().unwrap());
    let kid = || Kid::new("k").unwrap();
    let (p, q, e) = (f("p"), f("q"), f("e"));
    let b = ModulusBits::B2048;
    assert!(
        MasterKey::from_components(kid(), "t", b, &p, &p, &e).is_err(),
        "p == q"
    );
    assert!(MasterKey::from_components(kid(), "t", ModulusBits::B3072, &p, &q, &e).is_err());
    let mut not_prime = p.clone();
    *not_prime.last_mut().unwrap() ^= 2;
    assert!(MasterKey::from_components(kid(), "t", b, &not_prime, &q, &e).is_err());
    assert!(
        MasterKey::from_components(kid(), "t", b, &p, &q, &[1, 0, 1]).is_err(),
        "65537"
    );
    let mut even_e = e.clone();
    *even_e.last_mut().unwrap() &= 0xFE;
    assert!(MasterKey::from_components(kid(), "t", b, &p, &q, &even_e).is_err());
}

#[test]
fn safe_prime_256_bits() {
    let p = generate_safe_prime(256, &mut |_| {}).unwrap();
    assert_eq!(p.num_bits(), 256);
    assert!(is_safe_prime(&p).unwrap());
}

#[test]
#[ignore = "generates two 1024-bit safe primes from the OS RNG (seconds to a minute)"]
fn generate_2048_master_key() {
    let start = Instant::now();
    let mut tried = 0;
    let master = MasterKey::generate(
        Kid::new("gen-test").unwrap(),
        "tenant-g",
        ModulusBits::B2048,
        &mut |n| tried = n,
    )
    .unwrap();
    eprintln!(
        "generated in {:?} ({tried} candidates for q)",
        start.elapsed()
    );
    assert!(tried > 0);
    check_split(&master);
    let again = MasterKey::from_bytes(&master.to_bytes().unwrap()).unwrap();
    assert_eq!(
        again.physical_name("t").unwrap(),
        master.physical_name("t").unwrap()
    );
}

#[test]
fn user_key_files_name_their_user_and_old_ones_still_load() {
    let master = common::kat_master();
    let (key, _) = master.split().unwrap();
    let v1 = key.to_bytes().unwrap();
    assert_eq!(v1[3], 1, "an unbound key is a version 1 file");
    let bound = key.bind_user("alice").unwrap();
    let v2 = bound.to_bytes().unwrap();
    assert_eq!(v2[3], 2);
    let back = veil_blind::UserKey::from_bytes(&v2).unwrap();
    assert_eq!(
        (back.user(), back.tenant()),
        (Some("alice"), bound.tenant())
    );
    assert_eq!(back.token("t").unwrap(), bound.token("t").unwrap());
    let old = veil_blind::UserKey::from_bytes(&v1).unwrap();
    assert_eq!(old.user(), None);
    assert_eq!(old.token("t").unwrap(), bound.token("t").unwrap());
    assert!(back.bind_user("../bob").is_err());
    // A version 2 header on another kind of file is refused.
    let (_, share) = master.split().unwrap();
    let mut s = share.to_bytes().unwrap().to_vec();
    s[3] = 2;
    assert!(veil_blind::ServerShare::from_bytes(&s).is_err());
}
