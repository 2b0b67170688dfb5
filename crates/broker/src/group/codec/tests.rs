use proptest::prelude::*;

use super::*;

fn offset(o: i64, metadata: &str) -> CommittedOffset {
    CommittedOffset {
        offset: o,
        leader_epoch: 3,
        metadata: metadata.into(),
        commit_timestamp: 1_700_000_000_000,
        expire_timestamp: -1,
    }
}

fn member(id: &str, subscription: Vec<u8>, assignment: Vec<u8>) -> MemberRecord {
    MemberRecord {
        member_id: id.into(),
        instance_id: None,
        client_id: "app".into(),
        client_host: "/127.0.0.1".into(),
        rebalance_timeout_ms: 30_000,
        session_timeout_ms: 10_000,
        subscription,
        assignment,
    }
}

/// Decodes and reassembles entries; panics on anything incomplete.
fn decode_all(entries: &[Vec<u8>]) -> Vec<Record> {
    let mut a = Assembler::default();
    let mut out = Vec::new();
    for e in entries {
        assert!(e.len() <= MAX_RECORD_BYTES);
        if let Some(r) = a.push(decode(e).unwrap()).unwrap() {
            out.push(r);
        }
    }
    assert!(a.finish().is_empty());
    out
}

/// Chunks of one record merged back into one.
fn merge(records: Vec<Record>) -> Record {
    let mut it = records.into_iter();
    let first = it.next().unwrap();
    it.fold(first, |acc, r| match (acc, r) {
        (
            Record::Offsets {
                group_id,
                mut offsets,
            },
            Record::Offsets {
                group_id: g,
                offsets: more,
            },
        ) if g == group_id => {
            offsets.extend(more);
            Record::Offsets { group_id, offsets }
        }
        (
            Record::DeleteOffsets {
                group_id,
                mut partitions,
            },
            Record::DeleteOffsets {
                group_id: g,
                partitions: more,
            },
        ) if g == group_id => {
            partitions.extend(more);
            Record::DeleteOffsets {
                group_id,
                partitions,
            }
        }
        (a, b) => panic!("{a:?} then {b:?} is not one record"),
    })
}

#[test]
fn seven_hundred_partitions_of_full_metadata_split_into_small_entries() {
    let metadata = "\u{1}".repeat(4096);
    let offsets: Vec<_> = (0..700)
        .map(|p| ("t".to_owned(), p, offset(i64::from(p), &metadata)))
        .collect();
    let record = Record::Offsets {
        group_id: "g".into(),
        offsets,
    };
    let entries = encode(&record).unwrap();
    let total: usize = entries.iter().map(Vec::len).sum();
    // About 2.9 MB of metadata, stored once each (JSON escaped it six-fold).
    assert!(total < 700 * 4200, "{total}");
    assert!(entries.len() >= 11, "{}", entries.len());
    assert!(entries.iter().all(|e| e.len() <= CHUNK_BYTES));
    assert_eq!(merge(decode_all(&entries)), record);
}

#[test]
fn the_largest_member_the_caps_allow_fits_one_entry() {
    let name = "n".repeat(MAX_NAME_BYTES);
    let mut m = member(
        &name,
        vec![1; MAX_MEMBER_METADATA_BYTES],
        vec![2; MAX_ASSIGNMENT_BYTES],
    );
    m.instance_id = Some(name.clone());
    m.client_id.clone_from(&name);
    m.client_host.clone_from(&name);
    let record = Record::Group(GroupRecord {
        group_id: name.clone(),
        protocol_type: Some(name.clone()),
        protocol_name: Some(name.clone()),
        generation_id: 1,
        leader: Some(name),
        state_timestamp: 0,
        members: vec![m.clone(), m],
    });
    let entries = encode(&record).unwrap();
    assert_eq!(entries.len(), 3, "a header and one entry per member");
    let largest = entries.iter().map(Vec::len).max().unwrap();
    assert!(largest < 720 * 1024, "{largest}");
    assert_eq!(decode_all(&entries), vec![record]);
}

#[test]
fn fields_beyond_their_caps_are_refused_when_encoding() {
    let big = Record::Group(GroupRecord {
        group_id: "g".into(),
        protocol_type: None,
        protocol_name: None,
        generation_id: 1,
        leader: None,
        state_timestamp: 0,
        members: vec![member("m", vec![0; MAX_MEMBER_METADATA_BYTES + 1], vec![])],
    });
    assert!(encode(&big).unwrap_err().0.contains("member metadata"));
    let long_metadata = Record::Offsets {
        group_id: "g".into(),
        offsets: vec![(
            "t".into(),
            0,
            offset(1, &"m".repeat(MAX_OFFSET_METADATA_BYTES + 1)),
        )],
    };
    assert!(encode(&long_metadata).is_err());
    let long_group = Record::DeleteGroup {
        group_id: "g".repeat(MAX_NAME_BYTES + 1),
    };
    assert!(encode(&long_group).is_err());
}

#[test]
fn damaged_entries_are_refused_before_allocating() {
    let entry = encode(&Record::Offsets {
        group_id: "g".into(),
        offsets: vec![("t".into(), 0, offset(1, "m"))],
    })
    .unwrap()
    .remove(0);
    for cut in 1..entry.len() {
        assert!(decode(&entry[..cut]).is_err(), "cut at {cut}");
    }
    let mut trailing = entry.clone();
    trailing.push(0);
    assert!(decode(&trailing).is_err());
    // A count of four billion offsets in a few bytes.
    let mut huge = vec![VERSION, KIND_OFFSETS, 0, 0, 0, 1, b'g'];
    huge.extend_from_slice(&u32::MAX.to_be_bytes());
    assert!(decode(&huge).unwrap_err().0.contains("cannot fit"));
    // A string length far beyond its cap.
    let long = [VERSION, KIND_DELETE_GROUP, 0x7f, 0xff, 0xff, 0xff];
    assert!(decode(&long).unwrap_err().0.contains("exceeds"));
    assert!(decode(&[9, KIND_DELETE_GROUP]).is_err(), "unknown version");
    assert!(decode(&[]).is_err());
    let mut oversized = vec![VERSION; MAX_RECORD_BYTES + 1];
    oversized[1] = KIND_DELETE_GROUP;
    assert!(decode(&oversized).is_err());
}

#[test]
fn a_group_whose_members_stop_short_is_dropped() {
    let group = Record::Group(GroupRecord {
        group_id: "g".into(),
        protocol_type: Some("consumer".into()),
        protocol_name: Some("range".into()),
        generation_id: 4,
        leader: Some("a".into()),
        state_timestamp: 9,
        members: vec![member("a", vec![1], vec![2]), member("b", vec![3], vec![4])],
    });
    let entries = encode(&group).unwrap();
    let after = encode(&Record::DeleteGroup {
        group_id: "h".into(),
    })
    .unwrap()
    .remove(0);
    let mut a = Assembler::default();
    assert_eq!(a.push(decode(&entries[0]).unwrap()).unwrap(), None);
    assert_eq!(a.push(decode(&entries[1]).unwrap()).unwrap(), None);
    // The second member was torn off; the next write follows directly.
    let next = a.push(decode(&after).unwrap()).unwrap();
    assert!(matches!(next, Some(Record::DeleteGroup { .. })));
    assert_eq!(a.finish(), vec!["g".to_owned()]);
    // A member with no header before it is damage, not a torn write.
    let mut a = Assembler::default();
    assert!(a.push(decode(&entries[2]).unwrap()).is_err());
}

#[test]
fn json_records_of_the_previous_format_are_read() {
    let json = br#"{"Offsets":{"group_id":"g","offsets":[["t",0,{"offset":5,"leader_epoch":-1,"metadata":"\u0001","commit_timestamp":1,"expire_timestamp":-1}]]}}"#;
    let Entry::Record(Record::Offsets { group_id, offsets }) = decode(json).unwrap() else {
        panic!("an offsets record")
    };
    assert_eq!(
        (group_id.as_str(), offsets[0].2.metadata.as_str()),
        ("g", "\u{1}")
    );
}

fn name() -> impl Strategy<Value = String> {
    "[a-z0-9.\u{1}é-]{0,12}"
}

fn opt_name() -> impl Strategy<Value = Option<String>> {
    proptest::option::of(name())
}

fn blob() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 0..40)
}

fn member_strategy() -> impl Strategy<Value = MemberRecord> {
    (
        name(),
        opt_name(),
        name(),
        name(),
        any::<i32>(),
        any::<i32>(),
        blob(),
        blob(),
    )
        .prop_map(
            |(id, instance, client, host, rt, st, sub, assign)| MemberRecord {
                member_id: id,
                instance_id: instance,
                client_id: client,
                client_host: host,
                rebalance_timeout_ms: rt,
                session_timeout_ms: st,
                subscription: sub,
                assignment: assign,
            },
        )
}

fn record_strategy() -> impl Strategy<Value = Record> {
    let committed = (
        any::<i64>(),
        any::<i32>(),
        "[ -~\u{1}]{0,20}",
        any::<i64>(),
        any::<i64>(),
    )
        .prop_map(|(o, e, m, c, x)| CommittedOffset {
            offset: o,
            leader_epoch: e,
            metadata: m,
            commit_timestamp: c,
            expire_timestamp: x,
        });
    prop_oneof![
        (
            name(),
            opt_name(),
            opt_name(),
            any::<i32>(),
            opt_name(),
            any::<i64>(),
            proptest::collection::vec(member_strategy(), 0..5),
        )
            .prop_map(
                |(g, pt, pn, gen, leader, ts, members)| Record::Group(GroupRecord {
                    group_id: g,
                    protocol_type: pt,
                    protocol_name: pn,
                    generation_id: gen,
                    leader,
                    state_timestamp: ts,
                    members,
                })
            ),
        (
            name(),
            proptest::collection::vec((name(), any::<i32>(), committed), 0..30)
        )
            .prop_map(|(g, offsets)| Record::Offsets {
                group_id: g,
                offsets
            }),
        (
            name(),
            proptest::collection::vec((name(), any::<i32>()), 0..30)
        )
            .prop_map(|(g, partitions)| Record::DeleteOffsets {
                group_id: g,
                partitions
            }),
        name().prop_map(|g| Record::DeleteGroup { group_id: g }),
    ]
}

proptest! {
    #[test]
    fn records_round_trip(records in proptest::collection::vec(record_strategy(), 1..6)) {
        let mut entries = Vec::new();
        for r in &records {
            entries.extend(encode(r).unwrap());
        }
        prop_assert_eq!(decode_all(&entries), records);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = decode(&bytes);
        let mut tagged = vec![VERSION];
        tagged.extend_from_slice(&bytes);
        if let Ok(entry) = decode(&tagged) {
            let _ = Assembler::default().push(entry);
        }
    }
}
