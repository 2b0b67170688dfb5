//! Known-answer tests against `shared/blind/kat-{2048,3072}.json` (BLIND.md §11).
//!
//! The KAT DRBG below plugs into the production samplers through the
//! crate-private `Entropy` trait, so the rejection sampling, the split, the
//! FDH, the wrap chain and the AEAD that reproduce the vectors are the ones
//! production runs. p and q are taken from the JSON (and checked to be safe
//! primes); re-running the safe-prime search is `kat_*_safe_prime_counters`.

use std::path::PathBuf;

use openssl::bn::{BigNum, BigNumRef};
use serde_json::Value;
use sha3::digest::{ExtendableOutput, Update, XofReader};
use sha3::Shake256;

use crate::error::Result;
use crate::hash::{self, encs};
use crate::keys::{MasterKey, ServerShare, UserKey};
use crate::params::{self, is_safe_prime, Entropy, Kid, ModulusBits};
use crate::seal::{self, AeadId, Envelope, Part};
use crate::wrap::DekId;

/// `SHAKE256(enc("veil/v1/kat-drbg") ‖ enc(seed) ‖ enc(label) ‖ u32_be(ctr))`.
struct KatDrbg {
    seed: Vec<u8>,
}

impl Entropy for KatDrbg {
    fn fill(&mut self, label: &str, ctr: u32, out: &mut [u8]) -> Result<()> {
        let prefix = encs(&[b"veil/v1/kat-drbg", &self.seed, label.as_bytes()])?;
        let mut xof = Shake256::default();
        xof.update(&prefix);
        xof.update(&ctr.to_be_bytes());
        xof.finalize_xof().read(out);
        Ok(())
    }
}

fn load(bits: u32) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join(format!("../../../shared/blind/kat-{bits}.json"));
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("KAT file {} must exist: {e}", path.display()));
    serde_json::from_str(&text).expect("KAT JSON")
}

fn s<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key]
        .as_str()
        .unwrap_or_else(|| panic!("KAT field {key} missing"))
}

fn int(v: &Value, key: &str) -> BigNum {
    BigNum::from_hex_str(s(v, key)).unwrap()
}

fn ctr(v: &Value, key: &str) -> u32 {
    u32::try_from(
        v[key]
            .as_u64()
            .unwrap_or_else(|| panic!("KAT field {key} missing")),
    )
    .unwrap()
}

fn bytes(v: &Value, key: &str) -> Vec<u8> {
    let h = s(v, key);
    assert!(h.len() % 2 == 0, "{key}: odd hex");
    (0..h.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&h[i..i + 2], 16).unwrap())
        .collect()
}

/// Compare a fixed-length element encoding with a KAT integer.
fn assert_elem(got: &[u8], k: usize, v: &Value, key: &str) {
    assert_eq!(got.len(), k, "{key}: length");
    assert_eq!(BigNum::from_slice(got).unwrap(), int(v, key), "{key}");
}

fn assert_int(got: &BigNumRef, v: &Value, key: &str) {
    assert_eq!(got, &*int(v, key), "{key}");
}

fn run_kat(bits: u32) {
    let v = load(bits);
    assert_eq!(v["modulus_bits"].as_u64(), Some(u64::from(bits)));
    let mb = ModulusBits::from_bits(bits).unwrap();
    let k = mb.element_len();
    let kid = Kid::new(s(&v, "kid")).unwrap();
    let tenant = s(&v, "tenant");
    let topic = s(&v, "topic");
    let mut drbg = KatDrbg {
        seed: s(&v, "seed").as_bytes().to_vec(),
    };

    // IGen from the pinned primes.
    let p = int(&v, "p");
    let q = int(&v, "q");
    assert!(is_safe_prime(&p).unwrap(), "p is a safe prime");
    assert!(is_safe_prime(&q).unwrap(), "q is a safe prime");
    let (master, e_ctr) =
        MasterKey::from_primes_with(&mut drbg, kid.clone(), tenant, mb, &p, &q).unwrap();
    assert_int(&master.n, &v, "n");
    assert_int(&master.e, &v, "e");
    assert_eq!(e_ctr, ctr(&v, "e_ctr"), "e_ctr");
    assert_int(&master.d, &v, "d");
    for x in [&master.e, &master.d, &master.phi, &master.p, &master.q] {
        assert!(x.is_const_time() && x.is_secure());
    }

    // UGen for both users.
    let mut split = |name: &str| {
        let (user, share, ctrs) = master.split_with(&mut drbg, name).unwrap();
        let u = &v["users"][name];
        assert_int(&user.e1, u, "e1");
        assert_int(&share.e2, u, "e2");
        assert_int(&user.d1, u, "d1");
        assert_int(&share.d2, u, "d2");
        for x in [&user.e1, &user.d1, &share.e2, &share.d2] {
            assert!(x.is_const_time() && x.is_secure(), "{name}: exponent flags");
        }
        let reloaded = UserKey::from_bytes(&user.to_bytes().unwrap()).unwrap();
        let reshare = ServerShare::from_bytes(&share.to_bytes().unwrap()).unwrap();
        for x in [&reloaded.e1, &reloaded.d1, &reshare.e2, &reshare.d2] {
            assert!(x.is_const_time() && x.is_secure(), "{name}: reloaded flags");
        }
        assert_eq!(ctrs.e1, ctr(u, "e1_ctr"), "{name} e1_ctr");
        assert_eq!(ctrs.d1, ctr(u, "d1_ctr"), "{name} d1_ctr");
        (user, share)
    };
    let (alice, alice_share) = split("alice");
    let (bob, bob_share) = split("bob");

    // Tokens and matching.
    let sigma = hash::fdh(
        &master.n,
        mb,
        kid.as_bytes(),
        tenant.as_bytes(),
        topic.as_bytes(),
    )
    .unwrap();
    assert_int(&sigma, &v, "sigma");
    let c_alice = alice.token(topic).unwrap();
    let c_bob = bob.token(topic).unwrap();
    assert_elem(c_alice.as_bytes(), k, &v, "c_alice");
    assert_elem(c_bob.as_bytes(), k, &v, "c_bob");
    assert_elem(
        &alice_share.transform_token(c_alice.as_bytes()).unwrap(),
        k,
        &v,
        "T",
    );
    assert_elem(
        &bob_share.transform_token(c_bob.as_bytes()).unwrap(),
        k,
        &v,
        "T",
    );
    let phys = s(&v, "physical_topic");
    assert_eq!(
        alice_share.resolve(c_alice.as_bytes()).unwrap().as_str(),
        phys
    );
    assert_eq!(bob_share.resolve(c_bob.as_bytes()).unwrap().as_str(), phys);
    assert_eq!(master.physical_name(topic).unwrap().as_str(), phys);

    // Data key: alice wraps, the broker stores and transforms, bob unwraps.
    let draw = alice.create_dek_with(&mut drbg, topic).unwrap();
    assert_elem(&draw.r, k, &v, "dek_r");
    assert_eq!(draw.r_ctr, ctr(&v, "dek_r_ctr"), "dek_r_ctr");
    assert_eq!(draw.key.dek_id.0.as_slice(), bytes(&v, "dek_id").as_slice());
    assert_elem(&draw.wrap, k, &v, "wrap_alice");
    assert_eq!(draw.key.key.as_slice(), bytes(&v, "K").as_slice(), "K");
    let stored = alice_share.store_wrap(&draw.wrap).unwrap();
    assert_elem(&stored, k, &v, "stored_W");
    let for_bob = bob_share.unwrap_for(&stored).unwrap();
    assert_elem(&for_bob, k, &v, "unwrap_for_bob");
    let dek_id = DekId(draw.key.dek_id.0);
    let bob_dek = bob.open_dek(topic, dek_id, &for_bob).unwrap();
    assert_eq!(bob_dek.key.as_slice(), bytes(&v, "K").as_slice(), "bob's K");
    // The leak-scan accessors return exactly these secrets.
    assert_elem(
        &bob.unwrap_element_for_tests(&for_bob).unwrap(),
        k,
        &v,
        "dek_r",
    );
    assert_eq!(
        bob_dek.key_bytes_for_tests().as_slice(),
        bytes(&v, "K").as_slice()
    );
    let via_r = bob
        .dek_from_element_for_tests(topic, dek_id, &draw.r)
        .unwrap();
    assert_eq!(via_r.key_bytes_for_tests(), bob_dek.key_bytes_for_tests());
    let tags = bob.open_topic_key(topic, &for_bob).unwrap();
    let tags_via_r = bob
        .topic_key_from_element_for_tests(topic, &draw.r)
        .unwrap();
    assert_eq!(tags.key_bytes_for_tests(), tags_via_r.key_bytes_for_tests());

    // Record: AES-256-GCM at partition 3, counter 0, part "value".
    let partition = u32::try_from(v["partition"].as_u64().unwrap()).unwrap();
    assert_eq!(seal::nonce12(0).as_slice(), bytes(&v, "nonce").as_slice());
    let aad = seal::aad(&draw.key, partition, 0, Part::Value).unwrap();
    assert_eq!(aad, bytes(&v, "aad"), "aad");
    let plaintext = bytes(&v, "plaintext");
    let env = draw
        .key
        .seal_at(AeadId::Aes256Gcm, partition, 0, Part::Value, &plaintext)
        .unwrap();
    let parsed = Envelope::parse(&env).unwrap();
    assert_eq!(
        parsed.ciphertext,
        bytes(&v, "ciphertext_and_tag").as_slice()
    );
    assert_eq!(parsed.kid, kid.as_bytes());
    let opened = bob_dek.open(partition, Part::Value, &env).unwrap();
    assert_eq!(opened.plaintext, plaintext);
    assert_eq!(opened.counter, 0);
}

#[test]
fn kat_2048() {
    run_kat(2048);
}

// About a second in a debug build (OpenSSL does the arithmetic), so it runs
// every time.
#[test]
fn kat_3072() {
    run_kat(3072);
}

fn search_counters(bits: u32) {
    let v = load(bits);
    let mut drbg = KatDrbg {
        seed: s(&v, "seed").as_bytes().to_vec(),
    };
    for label in ["p", "q"] {
        let (prime, c) =
            params::safe_prime_search(&mut drbg, label, bits / 2, &mut |_| {}).unwrap();
        assert_eq!(prime, int(&v, label), "{label}");
        assert_eq!(c, ctr(&v, &format!("{label}_ctr")), "{label}_ctr");
    }
}

#[test]
#[ignore = "re-runs the KAT's safe-prime search (~290k candidates)"]
fn kat_2048_safe_prime_counters() {
    search_counters(2048);
}

#[test]
#[ignore = "re-runs the KAT's safe-prime search at 1536 bits (slow)"]
fn kat_3072_safe_prime_counters() {
    search_counters(3072);
}
