//! Property tests for topic matching (BLIND.md §5.3) on the 2048-bit KAT key.

mod common;

use proptest::prelude::*;

use common::fixture;

fn physical(name: &str) -> (Vec<u8>, Vec<u8>, String) {
    let f = fixture();
    let ca = f.alice.token(name).unwrap();
    let cb = f.bob.token(name).unwrap();
    let pa = f.alice_share.resolve(ca.as_bytes()).unwrap();
    let pb = f.bob_share.resolve(cb.as_bytes()).unwrap();
    assert_eq!(
        pa, pb,
        "two users of one key must meet on one physical topic"
    );
    (ca.into_bytes(), cb.into_bytes(), pa.into_string())
}

fn hamming(a: &[u8], b: &[u8]) -> u32 {
    a.iter().zip(b).map(|(x, y)| (x ^ y).count_ones()).sum()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn same_name_same_physical_topic_for_both_users(name in "\\PC{0,40}") {
        let (ca, cb, phys) = physical(&name);
        prop_assert_ne!(ca, cb, "per-user tokens differ");
        prop_assert!(veil_blind::PhysicalName::is_physical(&phys));
        let direct = fixture().master.physical_name(&name).unwrap().into_string();
        prop_assert_eq!(direct, phys);
    }

    #[test]
    fn different_names_never_collide(a in "[a-z0-9._-]{1,24}", b in "[a-z0-9._-]{1,24}") {
        prop_assume!(a != b);
        let (ca, _, pa) = physical(&a);
        let (cb, _, pb) = physical(&b);
        prop_assert_ne!(pa, pb);
        prop_assert_ne!(ca, cb);
    }

    #[test]
    fn one_char_difference_gives_unrelated_tokens(
        name in "[a-z0-9.]{1,30}",
        idx in any::<prop::sample::Index>(),
        repl in "[A-Z_]",
    ) {
        let i = idx.index(name.len());
        let mut other = name.clone();
        other.replace_range(i..=i, &repl);
        let (ca, _, pa) = physical(&name);
        let (cb, _, pb) = physical(&other);
        prop_assert_ne!(pa, pb);
        // Independent 2048-bit values differ in ~1024 bits (sd ~23).
        let d = hamming(&ca, &cb);
        prop_assert!((800..=1250).contains(&d), "hamming distance {}", d);
    }
}

#[test]
fn tokens_depend_on_tenant_and_kid() {
    // Same primes and e, different kid: different physical names.
    let v = common::kat_json();
    let f = |k: &str| common::hex(v[k].as_str().unwrap());
    let other = veil_blind::MasterKey::from_components(
        veil_blind::Kid::new("kat-epoch-2").unwrap(),
        "tenant-a",
        veil_blind::ModulusBits::B2048,
        &f("p"),
        &f("q"),
        &f("e"),
    )
    .unwrap();
    let other_tenant = veil_blind::MasterKey::from_components(
        veil_blind::Kid::new("kat-epoch-1").unwrap(),
        "tenant-b",
        veil_blind::ModulusBits::B2048,
        &f("p"),
        &f("q"),
        &f("e"),
    )
    .unwrap();
    let base = fixture().master.physical_name("orders.eu").unwrap();
    assert_eq!(base.as_str(), v["physical_topic"].as_str().unwrap());
    assert_ne!(other.physical_name("orders.eu").unwrap(), base);
    assert_ne!(other_tenant.physical_name("orders.eu").unwrap(), base);
}
