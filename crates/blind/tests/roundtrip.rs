//! Round trips through the whole chain (BLIND.md §6.1, §6.2, §9 rule 6):
//! producer → broker → consumer, and every tampering the broker could try.

mod common;

use std::fmt::Write as _;

use common::{fixture, flip};
use openssl::bn::BigNum;
use veil_blind::{
    AeadId, DekId, DekLimits, Envelope, Error, MasterKey, Part, Sealer, ServerShare, UserKey,
};

const TOPIC: &str = "orders.eu";

/// Alice makes a DEK, the broker stores it, Bob gets his transform.
fn dek_for_bob() -> (Sealer, DekId, Vec<u8>) {
    let f = fixture();
    let (dek, w) = f.alice.create_dek(TOPIC).unwrap();
    let id = dek.dek_id();
    let stored = f.alice_share.store_wrap(&w).unwrap();
    let x = f.bob_share.unwrap_for(&stored).unwrap();
    (
        Sealer::new(dek, AeadId::Aes256Gcm, DekLimits::default()),
        id,
        x,
    )
}

#[test]
fn wrap_by_alice_unwrap_by_bob() {
    let f = fixture();
    for aead in [AeadId::Aes256Gcm, AeadId::XChaCha20Poly1305] {
        let (dek, w) = f.alice.create_dek(TOPIC).unwrap();
        let id = dek.dek_id();
        let stored = f.alice_share.store_wrap(&w).unwrap();
        let mut sealer = Sealer::new(dek, aead, DekLimits::default());
        let value = sealer.seal(3, Part::Value, b"hello, hidden world").unwrap();
        let key = sealer.seal(3, Part::Key, b"customer-17").unwrap();
        let bob = f
            .bob
            .open_dek(TOPIC, id, &f.bob_share.unwrap_for(&stored).unwrap())
            .unwrap();
        let v = bob.open(3, Part::Value, &value).unwrap();
        let k = bob.open(3, Part::Key, &key).unwrap();
        assert_eq!(v.plaintext, b"hello, hidden world");
        assert_eq!((v.counter, k.counter), (0, 1));
        assert_eq!(k.plaintext, b"customer-17");
        // Alice can read her own records through her own transform too.
        let alice = f
            .alice
            .open_dek(TOPIC, id, &f.alice_share.unwrap_for(&stored).unwrap())
            .unwrap();
        assert_eq!(
            alice.open(3, Part::Value, &value).unwrap().plaintext,
            v.plaintext
        );
    }
}

#[test]
fn tampered_wrap_fails_to_decrypt() {
    let f = fixture();
    let (dek, w) = f.alice.create_dek(TOPIC).unwrap();
    let id = dek.dek_id();
    let mut sealer = Sealer::new(dek, AeadId::Aes256Gcm, DekLimits::default());
    let env = sealer.seal(0, Part::Value, b"secret").unwrap();
    for bit in [0usize, 9, 1000, 2047] {
        // Flip the wrap before the broker stores it…
        let w2 = flip(w.clone(), bit);
        if let Ok(stored) = f.alice_share.store_wrap(&w2) {
            let x = f.bob_share.unwrap_for(&stored).unwrap();
            let bob = f.bob.open_dek(TOPIC, id, &x).unwrap();
            assert!(matches!(
                bob.open(0, Part::Value, &env),
                Err(Error::Decrypt)
            ));
        }
        // …or the stored W, or the transform sent to Bob.
        let stored = f.alice_share.store_wrap(&w).unwrap();
        if let Ok(x) = f.bob_share.unwrap_for(&flip(stored.clone(), bit)) {
            let bob = f.bob.open_dek(TOPIC, id, &x).unwrap();
            assert!(matches!(
                bob.open(0, Part::Value, &env),
                Err(Error::Decrypt)
            ));
        }
        let x = flip(f.bob_share.unwrap_for(&stored).unwrap(), bit);
        if let Ok(bob) = f.bob.open_dek(TOPIC, id, &x) {
            assert!(matches!(
                bob.open(0, Part::Value, &env),
                Err(Error::Decrypt)
            ));
        }
    }
}

#[test]
fn wrong_binding_fails_to_decrypt() {
    let f = fixture();
    let (mut sealer, id, x) = dek_for_bob();
    let env = sealer.seal(5, Part::Value, b"payload").unwrap();
    let ok = f.bob.open_dek(TOPIC, id, &x).unwrap();
    assert_eq!(ok.open(5, Part::Value, &env).unwrap().plaintext, b"payload");

    // Wrong plaintext topic name (a broker redirect): different K and AAD.
    let wrong_topic = f.bob.open_dek("orders.us", id, &x).unwrap();
    assert!(matches!(
        wrong_topic.open(5, Part::Value, &env),
        Err(Error::Decrypt)
    ));
    // Wrong DEK id (a broker swapping wraps between DEKs).
    let wrong_id = f.bob.open_dek(TOPIC, DekId([0xAA; 16]), &x).unwrap();
    assert!(matches!(
        wrong_id.open(5, Part::Value, &env),
        Err(Error::Decrypt)
    ));
    // Envelope relabelled with the other DEK id.
    let mut relabelled = env.clone();
    let off = Envelope::header_len(ok.kid().as_bytes().len()) - 24;
    relabelled[off..off + 16].copy_from_slice(&[0xAA; 16]);
    assert!(matches!(
        wrong_id.open(5, Part::Value, &relabelled),
        Err(Error::Decrypt)
    ));
    // Wrong partition (moved record), wrong part.
    assert!(matches!(ok.open(6, Part::Value, &env), Err(Error::Decrypt)));
    assert!(matches!(
        ok.open(5, Part::Headers, &env),
        Err(Error::Decrypt)
    ));
    // Wrong counter (reordering by rewriting the envelope's counter).
    let mut moved = env.clone();
    let c = Envelope::header_len(ok.kid().as_bytes().len()) - 8;
    moved[c + 7] ^= 1;
    assert!(matches!(
        ok.open(5, Part::Value, &moved),
        Err(Error::Decrypt)
    ));
    // Another user's key of another tenant-epoch cannot open it.
    let other = MasterKey::from_components(
        veil_blind::Kid::new("kat-epoch-1").unwrap(),
        "tenant-b",
        veil_blind::ModulusBits::B2048,
        &common::hex(common::kat_json()["p"].as_str().unwrap()),
        &common::hex(common::kat_json()["q"].as_str().unwrap()),
        &common::hex(common::kat_json()["e"].as_str().unwrap()),
    )
    .unwrap();
    let (eve, _) = other.split().unwrap();
    let eve_dek = eve.open_dek(TOPIC, id, &x).unwrap();
    assert!(matches!(
        eve_dek.open(5, Part::Value, &env),
        Err(Error::Decrypt)
    ));
}

#[test]
fn key_tags_agree_across_users() {
    let f = fixture();
    let (alice_tk, w) = f.alice.create_topic_key(TOPIC).unwrap();
    let stored = f.alice_share.store_wrap(&w).unwrap();
    let bob_tk = f
        .bob
        .open_topic_key(TOPIC, &f.bob_share.unwrap_for(&stored).unwrap())
        .unwrap();
    assert_eq!(
        alice_tk.keytag(b"k1").unwrap(),
        bob_tk.keytag(b"k1").unwrap()
    );
    assert_ne!(
        alice_tk.keytag(b"k1").unwrap(),
        alice_tk.keytag(b"k2").unwrap()
    );
    let other_topic = f
        .bob
        .open_topic_key("other", &f.bob_share.unwrap_for(&stored).unwrap())
        .unwrap();
    assert_ne!(
        other_topic.keytag(b"k1").unwrap(),
        bob_tk.keytag(b"k1").unwrap()
    );
}

/// 0, 1, n−1, n, n+1, 2^k−1 and wrong lengths are rejected everywhere.
#[test]
fn group_element_validation() {
    let f = fixture();
    let n_bytes = f.alice_share.modulus().unwrap();
    let k = n_bytes.len();
    assert_eq!(k, 256);
    let n = BigNum::from_slice(&n_bytes).unwrap();
    let enc = |delta: i32| {
        let mut x = n.to_owned().unwrap();
        if delta >= 0 {
            x.add_word(delta as u32).unwrap();
        } else {
            x.sub_word((-delta) as u32).unwrap();
        }
        x.to_vec_padded(k as i32).unwrap()
    };
    let mut bad = vec![
        vec![0u8; k],
        {
            let mut one = vec![0u8; k];
            one[k - 1] = 1;
            one
        },
        enc(-1),
        enc(0),
        enc(1),
        vec![0xFF; k],
        vec![2u8; k - 1],
        vec![2u8; k + 1],
        Vec::new(),
    ];
    let good_c = f.alice.token(TOPIC).unwrap().into_bytes();
    bad.push({
        let mut long = vec![0u8];
        long.extend_from_slice(&good_c);
        long
    });
    for b in &bad {
        assert!(matches!(
            f.alice_share.resolve(b),
            Err(Error::InvalidElement)
        ));
        assert!(matches!(
            f.alice_share.store_wrap(b),
            Err(Error::InvalidElement)
        ));
        assert!(matches!(
            f.bob_share.unwrap_for(b),
            Err(Error::InvalidElement)
        ));
        assert!(matches!(
            f.bob.open_dek(TOPIC, DekId([0; 16]), b),
            Err(Error::InvalidElement)
        ));
        assert!(veil_blind::check_element(b, &n_bytes).is_err());
    }
    // The boundaries 2 and n−2 are accepted.
    let mut two = vec![0u8; k];
    two[k - 1] = 2;
    assert!(f.alice_share.resolve(&two).is_ok());
    assert!(f.alice_share.resolve(&enc(-2)).is_ok());
    assert!(veil_blind::check_element(&good_c, &n_bytes).is_ok());
}

fn no_long_hex_or_digits(s: &str) {
    let mut run = 0;
    for ch in s.chars() {
        run = if ch.is_ascii_hexdigit() { run + 1 } else { 0 };
        assert!(run < 16, "Debug output leaks a long number: {s}");
    }
}

#[test]
fn debug_output_is_redacted() {
    let f = fixture();
    let (dek, _) = f.alice.create_dek(TOPIC).unwrap();
    let (tk, _) = f.alice.create_topic_key(TOPIC).unwrap();
    let token = f.alice.token(TOPIC).unwrap();
    let secrets = [
        f.master.to_bytes().unwrap(),
        f.alice.to_bytes().unwrap(),
        f.alice_share.to_bytes().unwrap(),
    ];
    for s in [
        format!("{:?}", f.master),
        format!("{:#?}", f.alice),
        format!("{:?}", f.alice_share),
        format!("{dek:?}"),
        format!("{tk:?}"),
        format!("{token:?}"),
        format!(
            "{:?}",
            Sealer::new(dek, AeadId::Aes256Gcm, DekLimits::default())
        ),
    ] {
        no_long_hex_or_digits(&s);
        for sec in &secrets {
            let mut hex = String::new();
            for b in &sec[sec.len() - 8..] {
                write!(hex, "{b:02x}").unwrap();
            }
            assert!(!s.contains(&hex));
        }
    }
}

#[test]
fn key_files_round_trip_and_reject_garbage() {
    let f = fixture();
    let user = UserKey::from_bytes(&f.alice.to_bytes().unwrap()).unwrap();
    let share = ServerShare::from_bytes(&f.alice_share.to_bytes().unwrap()).unwrap();
    let master = MasterKey::from_bytes(&f.master.to_bytes().unwrap()).unwrap();
    let c = user.token(TOPIC).unwrap();
    assert_eq!(c, f.alice.token(TOPIC).unwrap());
    assert_eq!(
        share.resolve(c.as_bytes()).unwrap(),
        master.physical_name(TOPIC).unwrap()
    );
    assert_eq!(user.tenant(), "tenant-a");
    assert_eq!(share.kid().as_bytes(), b"kat-epoch-1");

    let bytes = f.alice.to_bytes().unwrap();
    assert!(UserKey::from_bytes(&bytes[..bytes.len() - 1]).is_err());
    let mut longer = bytes.to_vec();
    longer.push(0);
    assert!(UserKey::from_bytes(&longer).is_err());
    assert!(ServerShare::from_bytes(&bytes).is_err(), "kind is checked");
    assert!(MasterKey::from_bytes(&f.alice_share.to_bytes().unwrap()).is_err());
    // An even exponent cannot be a unit mod φ.
    let mut even = bytes.to_vec();
    let last = even.len() - 1;
    even[last] &= 0xFE;
    assert!(UserKey::from_bytes(&even).is_err());
    // A master key whose d does not match e.
    let mut m = f.master.to_bytes().unwrap().to_vec();
    let last = m.len() - 1;
    m[last] ^= 2;
    assert!(MasterKey::from_bytes(&m).is_err());
}
