//! In-process tests of the Veil extension handlers and of blind-topic
//! visibility, with the 2048-bit KAT master key split for several users.

use std::path::PathBuf;
use std::sync::OnceLock;

use bytes::Bytes;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    FetchRequest, ListOffsetsRequest, MetadataRequest, ProduceRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use veil_blind::protocol::{
    error_code, CreateTopicRequest, KeyGetRequest, KeyPutRequest, ResolveRequest, ShareListRequest,
    ShareRegisterRequest, ShareRevokeRequest,
};
use veil_blind::{
    AeadId, DekLimits, Kid, MasterKey, ModulusBits, Part, Sealer, ServerShare, UserKey,
};

use crate::context::RequestContext;
use crate::dispatch::{Handled, Response};
use crate::handlers;
use crate::test_fixture;

const TOPIC: &str = "plant-7/line-3/temperature";
const UNKNOWN: i16 = 3;

struct Keys {
    users: Vec<(UserKey, ServerShare)>,
}

fn hex(s: &str) -> Vec<u8> {
    let s = if s.len() % 2 == 1 {
        format!("0{s}")
    } else {
        s.to_owned()
    };
    (0..s.len() / 2)
        .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap())
        .collect()
}

/// KAT master key, split for alice (0), bob (1), dave (2).
fn keys() -> &'static Keys {
    static K: OnceLock<Keys> = OnceLock::new();
    K.get_or_init(|| {
        let path =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/blind/kat-2048.json");
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let f = |k: &str| hex(v[k].as_str().unwrap());
        let master = MasterKey::from_components(
            Kid::new(v["kid"].as_str().unwrap()).unwrap(),
            v["tenant"].as_str().unwrap(),
            ModulusBits::B2048,
            &f("p"),
            &f("q"),
            &f("e"),
        )
        .unwrap();
        Keys {
            users: (0..3).map(|_| master.split().unwrap()).collect(),
        }
    })
}

fn user(i: usize) -> &'static UserKey {
    &keys().users[i].0
}

fn as_(ctx: &RequestContext, principal: &str, version: i16) -> RequestContext {
    RequestContext {
        principal: principal.into(),
        api_version: version,
        ..ctx.clone()
    }
}

fn blind(h: Handled) -> veil_blind::protocol::Response {
    match h {
        Handled::Ready(Response::Blind(r)) => r,
        _ => panic!("expected a ready Veil response"),
    }
}

async fn register(ctx: &RequestContext, admin: &str, principal: &str, i: usize) -> i16 {
    let req = ShareRegisterRequest::new(principal, &keys().users[i].1).unwrap();
    handlers::blind_share_register::handle(&as_(ctx, admin, 0), req)
        .await
        .error_code
}

fn token(i: usize, topic: &str) -> (Vec<u8>, Vec<u8>) {
    let u = user(i);
    (
        u.kid().as_bytes().to_vec(),
        u.token(topic).unwrap().into_bytes(),
    )
}

async fn create(ctx: &RequestContext, principal: &str, i: usize) -> (i16, String) {
    let (kid, token) = token(i, TOPIC);
    let req = CreateTopicRequest {
        kid,
        token,
        partitions: 2,
        replication_factor: -1,
        configs: Vec::new(),
        key_principal: None,
    };
    let r = handlers::blind_create_topic::handle(&as_(ctx, principal, 0), req).await;
    (r.error_code, r.physical_name)
}

async fn resolve(ctx: &RequestContext, principal: &str, i: usize, topic: &str) -> (i16, String) {
    let (kid, token) = token(i, topic);
    let r = handlers::blind_resolve::handle(
        &as_(ctx, principal, 0),
        ResolveRequest {
            kid,
            token,
            key_principal: None,
        },
    )
    .await;
    (r.error_code, r.physical_name)
}

fn name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_owned()))
}

async fn produce(ctx: &RequestContext, principal: &str, topic: &str) -> i16 {
    let records = Bytes::from(veil_log::testing::build_simple_batch(1, 8, 200));
    let req =
        ProduceRequest::default()
            .with_acks(1)
            .with_topic_data(vec![TopicProduceData::default()
                .with_name(name(topic))
                .with_partition_data(vec![PartitionProduceData::default()
                    .with_index(0)
                    .with_records(Some(records))])]);
    let h = handlers::produce::handle(&as_(ctx, principal, 9), req).await;
    let r = match h {
        Handled::Ready(r) => r,
        Handled::Deferred(f) => f.await,
        Handled::NoResponse => panic!("acks=1"),
    };
    match r {
        Response::Produce(r) => r.responses[0].partition_responses[0].error_code,
        other => panic!("{other:?}"),
    }
}

async fn fetch(ctx: &RequestContext, principal: &str, topic: &str) -> i16 {
    let req = FetchRequest::default()
        .with_max_wait_ms(0)
        .with_session_epoch(-1)
        .with_topics(vec![FetchTopic::default()
            .with_topic(name(topic))
            .with_partitions(vec![FetchPartition::default()
                .with_partition(0)
                .with_current_leader_epoch(-1)
                .with_partition_max_bytes(1 << 20)])]);
    let r = match handlers::fetch::handle(&as_(ctx, principal, 12), req).await {
        Handled::Ready(r) => r,
        Handled::Deferred(f) => f.await,
        Handled::NoResponse => panic!("fetch always answers"),
    };
    match r {
        Response::Fetch(r) => r.responses[0].partitions[0].error_code,
        other => panic!("{other:?}"),
    }
}

async fn list_offsets(ctx: &RequestContext, principal: &str, topic: &str) -> i16 {
    let req = ListOffsetsRequest::default()
        .with_replica_id(kafka_protocol::messages::BrokerId(-1))
        .with_topics(vec![ListOffsetsTopic::default()
            .with_name(name(topic))
            .with_partitions(vec![ListOffsetsPartition::default()
                .with_partition_index(0)
                .with_timestamp(-1)])]);
    let r = handlers::list_offsets::handle(&as_(ctx, principal, 7), req).await;
    r.topics[0].partitions[0].error_code
}

async fn metadata_all(ctx: &RequestContext, principal: &str) -> Vec<String> {
    let r = handlers::metadata::handle(
        &as_(ctx, principal, 12),
        MetadataRequest::default().with_topics(None),
    )
    .await;
    r.topics
        .iter()
        .filter_map(|t| t.name.as_ref().map(|n| n.0.to_string()))
        .collect()
}

async fn metadata_by_name(ctx: &RequestContext, principal: &str, topic: &str) -> i16 {
    let req = MetadataRequest::default()
        .with_topics(Some(vec![
            MetadataRequestTopic::default().with_name(Some(name(topic)))
        ]))
        .with_allow_auto_topic_creation(false);
    handlers::metadata::handle(&as_(ctx, principal, 12), req)
        .await
        .topics[0]
        .error_code
}

/// Every data-path API a principal could try on `topic`, as error codes.
async fn every_api(ctx: &RequestContext, principal: &str, topic: &str) -> [i16; 4] {
    [
        metadata_by_name(ctx, principal, topic).await,
        produce(ctx, principal, topic).await,
        fetch(ctx, principal, topic).await,
        list_offsets(ctx, principal, topic).await,
    ]
}

/// Dirs kept alive for a test: the data dir and the share-key dir.
type Dirs = (tempfile::TempDir, tempfile::TempDir);

/// A broker whose share key lives in its own temp dir (outside data_dir).
async fn context_with(tweak: impl FnOnce(&mut crate::config::Config)) -> (Dirs, RequestContext) {
    let keys = tempfile::tempdir().unwrap();
    let key_file = keys.path().join("share.key");
    let (data, ctx) = test_fixture::context_with(0, |c| {
        c.blind.share_key_file = Some(key_file);
        tweak(c);
    })
    .await;
    ((data, keys), ctx)
}

/// alice and bob registered; alice created the topic, bob resolved it.
async fn setup() -> (Dirs, RequestContext, String) {
    let (dir, ctx) = context_with(|_| {}).await;
    assert_eq!(register(&ctx, "User:kms", "User:alice", 0).await, 0);
    assert_eq!(register(&ctx, "User:kms", "User:bob", 1).await, 0);
    let (code, physical) = create(&ctx, "User:alice", 0).await;
    assert_eq!(code, 0);
    assert_eq!(
        resolve(&ctx, "User:bob", 1, TOPIC).await,
        (0, physical.clone())
    );
    (dir, ctx, physical)
}

#[tokio::test]
async fn share_register_needs_an_authenticated_admin() {
    let (_dir, ctx) = context_with(|c| {
        c.authorizer.enabled = true;
        c.authorizer.super_users = vec!["User:kms".into()];
    })
    .await;
    assert_eq!(
        register(&ctx, crate::context::ANONYMOUS, "User:alice", 0).await,
        error_code::SASL_AUTHENTICATION_FAILED
    );
    assert_eq!(
        register(&ctx, "User:alice", "User:alice", 0).await,
        error_code::CLUSTER_AUTHORIZATION_FAILED
    );
    assert_eq!(register(&ctx, "User:kms", "User:alice", 0).await, 0);
    let list = |p: &str| as_(&ctx, p, 0);
    let r = handlers::blind_share_list::handle(&list("User:alice"), ShareListRequest {}).await;
    assert_eq!(r.error_code, error_code::CLUSTER_AUTHORIZATION_FAILED);
    let shares = handlers::blind_share_list::handle(&list("User:kms"), ShareListRequest {})
        .await
        .shares;
    assert_eq!(shares.len(), 1);
    assert_eq!(shares[0].principal, "User:alice");
    let revoke = ShareRevokeRequest {
        principal: "User:alice".into(),
        kid: user(0).kid().as_bytes().to_vec(),
    };
    let r = handlers::blind_share_revoke::handle(&as_(&ctx, "User:alice", 0), revoke).await;
    assert_eq!(r.error_code, error_code::CLUSTER_AUTHORIZATION_FAILED);
}

#[tokio::test]
async fn two_users_of_one_master_key_meet_on_one_physical_topic() {
    let (_dir, ctx, physical) = setup().await;
    assert!(veil_blind::PhysicalName::is_physical(&physical));
    // Idempotent create by bob lands on the same topic.
    let (code, again) = create(&ctx, "User:bob", 1).await;
    assert_eq!((code, again.as_str()), (0, physical.as_str()));
    // An unknown name resolves to nothing, and says nothing more.
    assert_eq!(resolve(&ctx, "User:bob", 1, "other").await.0, UNKNOWN);
    // A token replayed by another principal is raised to the wrong e2.
    let (kid, alice_token) = token(0, TOPIC);
    let r = handlers::blind_resolve::handle(
        &as_(&ctx, "User:bob", 0),
        ResolveRequest {
            kid,
            token: alice_token,
            key_principal: None,
        },
    )
    .await;
    assert_eq!(r.error_code, UNKNOWN);
    // Both can use the data path.
    for p in ["User:alice", "User:bob"] {
        assert_eq!(every_api(&ctx, p, &physical).await, [0; 4], "{p}");
        assert!(metadata_all(&ctx, p).await.contains(&physical));
    }
}

#[tokio::test]
async fn without_share_and_grant_a_blind_topic_does_not_exist() {
    let (_dir, ctx, physical) = setup().await;
    // carol: authenticated, no share. dave: a share of the same master key
    // but no grant (never resolved the name). Anonymous: nothing.
    assert_eq!(register(&ctx, "User:kms", "User:dave", 2).await, 0);
    for p in ["User:carol", "User:dave", crate::context::ANONYMOUS] {
        assert_eq!(every_api(&ctx, p, &physical).await, [UNKNOWN; 4], "{p}");
        assert!(!metadata_all(&ctx, p).await.contains(&physical), "{p}");
    }
    assert_eq!(
        resolve(&ctx, "User:carol", 0, TOPIC).await.0,
        error_code::KEY_NOT_ISSUED
    );
    let (_, c) = token(0, TOPIC);
    let r = handlers::blind_resolve::handle(
        &as_(&ctx, crate::context::ANONYMOUS, 0),
        ResolveRequest {
            kid: user(0).kid().as_bytes().to_vec(),
            token: c,
            key_principal: None,
        },
    )
    .await;
    assert_eq!(r.error_code, error_code::SASL_AUTHENTICATION_FAILED);
    // Once dave knows the name, he sees it too.
    assert_eq!(
        resolve(&ctx, "User:dave", 2, TOPIC).await,
        (0, physical.clone())
    );
    assert_eq!(every_api(&ctx, "User:dave", &physical).await, [0; 4]);
}

/// Committed offsets of `group` as `principal`: (all topics, `topic` by name).
async fn offsets(
    ctx: &RequestContext,
    principal: &str,
    group: &str,
    topic: &str,
) -> (Vec<String>, i64) {
    use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
    use kafka_protocol::messages::{GroupId, OffsetFetchRequest};
    let ctx = as_(ctx, principal, 7);
    let g = GroupId(StrBytes::from_string(group.to_owned()));
    let all = handlers::offset_fetch::handle(
        &ctx,
        OffsetFetchRequest::default()
            .with_group_id(g.clone())
            .with_topics(None),
    )
    .await;
    let named = handlers::offset_fetch::handle(
        &ctx,
        OffsetFetchRequest::default()
            .with_group_id(g)
            .with_topics(Some(vec![OffsetFetchRequestTopic::default()
                .with_name(name(topic))
                .with_partition_indexes(vec![0])])),
    )
    .await;
    let p = &named.topics[0].partitions[0];
    assert_eq!(p.error_code, 0);
    (
        all.topics.iter().map(|t| t.name.to_string()).collect(),
        p.committed_offset,
    )
}

#[tokio::test]
async fn a_groups_offsets_do_not_reveal_blind_topics() {
    let (_dir, ctx, physical) = setup().await;
    assert_eq!(produce(&ctx, "User:alice", &physical).await, 0);
    let commit = handlers::offset_commit::handle(
        &as_(&ctx, "User:alice", 8),
        handlers::offset_commit::tests::commit_request("shared", &physical, 0, 1),
    )
    .await;
    assert_eq!(commit.topics[0].partitions[0].error_code, 0);
    assert_eq!(
        offsets(&ctx, "User:bob", "shared", &physical).await,
        (vec![physical.clone()], 1)
    );
    for p in ["User:carol", crate::context::ANONYMOUS] {
        assert_eq!(
            offsets(&ctx, p, "shared", &physical).await,
            (vec![], -1),
            "{p}"
        );
    }
}

#[tokio::test]
async fn a_data_key_wrapped_by_alice_opens_for_bob() {
    let (_dir, ctx, physical) = setup().await;
    let (alice_dek, w) = user(0).create_dek(TOPIC).unwrap();
    let dek_id = alice_dek.dek_id().as_bytes().to_vec();
    let put = KeyPutRequest {
        physical_topic: physical.clone(),
        dek_id: dek_id.clone(),
        wrap: w.clone(),
    };
    let r = handlers::blind_key_put::handle(&as_(&ctx, "User:alice", 0), put.clone()).await;
    assert_eq!(r.error_code, 0);
    // Write-once: the same wrap again is fine, another one is refused.
    assert_eq!(
        handlers::blind_key_put::handle(&as_(&ctx, "User:alice", 0), put)
            .await
            .error_code,
        0
    );
    let (_, other_w) = user(0).create_dek(TOPIC).unwrap();
    let swap = KeyPutRequest {
        physical_topic: physical.clone(),
        dek_id: dek_id.clone(),
        wrap: other_w,
    };
    assert_eq!(
        handlers::blind_key_put::handle(&as_(&ctx, "User:bob", 0), swap)
            .await
            .error_code,
        error_code::DEK_EXISTS
    );

    let get = KeyGetRequest {
        physical_topic: physical.clone(),
        dek_id: dek_id.clone(),
    };
    let r = handlers::blind_key_get::handle(&as_(&ctx, "User:bob", 0), get.clone()).await;
    assert_eq!(r.error_code, 0);
    let bob_dek = user(1)
        .open_dek(
            TOPIC,
            veil_blind::DekId(dek_id.clone().try_into().unwrap()),
            &r.unwrapped,
        )
        .unwrap();
    let mut sealer = Sealer::new(alice_dek, AeadId::Aes256Gcm, DekLimits::default());
    let envelope = sealer.seal(0, Part::Value, b"21.5 C").unwrap();
    assert_eq!(
        bob_dek.open(0, Part::Value, &envelope).unwrap().plaintext,
        b"21.5 C"
    );

    // carol cannot fetch the wrap, nor put one.
    let r = handlers::blind_key_get::handle(&as_(&ctx, "User:carol", 0), get).await;
    assert_eq!((r.error_code, r.unwrapped.len()), (UNKNOWN, 0));
    let put = KeyPutRequest {
        physical_topic: physical,
        dek_id: vec![7; 16],
        wrap: w,
    };
    assert_eq!(
        handlers::blind_key_put::handle(&as_(&ctx, "User:carol", 0), put)
            .await
            .error_code,
        UNKNOWN
    );
}

#[tokio::test]
async fn revocation_applies_at_the_next_request_and_flushes_the_cache() {
    let (_dir, ctx, physical) = setup().await;
    assert_eq!(every_api(&ctx, "User:bob", &physical).await, [0; 4]);
    let cached = |p: &str| {
        let (kid, c) = token(1, TOPIC);
        ctx.broker
            .blind
            .cache
            .lock()
            .get(p, &veil_meta::blind::hex(&kid), &c)
    };
    assert!(cached("User:bob").is_some());
    let revoke = ShareRevokeRequest {
        principal: "User:bob".into(),
        kid: user(1).kid().as_bytes().to_vec(),
    };
    let r = handlers::blind_share_revoke::handle(&as_(&ctx, "User:kms", 0), revoke.clone()).await;
    assert_eq!((r.error_code, r.revocation_epoch), (0, 1));
    assert!(cached("User:bob").is_none());
    // Same RequestContext shape as a live connection: the very next request fails.
    assert_eq!(every_api(&ctx, "User:bob", &physical).await, [UNKNOWN; 4]);
    assert!(!metadata_all(&ctx, "User:bob").await.contains(&physical));
    assert_eq!(
        resolve(&ctx, "User:bob", 1, TOPIC).await.0,
        error_code::NO_SHARE
    );
    // alice keeps working and sees the new revocation epoch.
    assert_eq!(every_api(&ctx, "User:alice", &physical).await, [0; 4]);
    let (kid, c) = token(0, TOPIC);
    let r = handlers::blind_resolve::handle(
        &as_(&ctx, "User:alice", 0),
        ResolveRequest {
            kid,
            token: c,
            key_principal: None,
        },
    )
    .await;
    assert_eq!((r.error_code, r.revocation_epoch), (0, 1));
    // Revoking twice says so.
    let r = handlers::blind_share_revoke::handle(&as_(&ctx, "User:kms", 0), revoke).await;
    assert_eq!(r.error_code, error_code::NO_SHARE);
}

#[tokio::test]
async fn transforms_are_rate_limited_per_principal() {
    let (_dir, ctx) = context_with(|c| {
        c.blind.burst = 2;
        c.blind.transforms_per_second = 1.0;
    })
    .await;
    assert_eq!(register(&ctx, "User:kms", "User:alice", 0).await, 0);
    assert_eq!(register(&ctx, "User:kms", "User:bob", 1).await, 0);
    // The clock is manual: no refill. Two distinct tokens use the burst.
    assert_eq!(create(&ctx, "User:alice", 0).await.0, 0);
    assert_eq!(resolve(&ctx, "User:alice", 0, "second").await.0, UNKNOWN);
    let (kid, c) = token(0, "third");
    let r = handlers::blind_resolve::handle(
        &as_(&ctx, "User:alice", 0),
        ResolveRequest {
            kid,
            token: c,
            key_principal: None,
        },
    )
    .await;
    assert_eq!(r.error_code, error_code::THROTTLING_QUOTA_EXCEEDED);
    assert!(r.throttle_time_ms > 0);
    // Cached tokens cost nothing; other principals have their own bucket.
    assert_eq!(create(&ctx, "User:alice", 0).await.0, 0);
    assert_eq!(resolve(&ctx, "User:bob", 1, TOPIC).await.0, 0);
}

#[tokio::test]
async fn shares_are_sealed_at_rest() {
    let ((dir, _keys), ctx) = context_with(|_| {}).await;
    assert_eq!(register(&ctx, "User:kms", "User:alice", 0).await, 0);
    let req = ShareRegisterRequest::new("User:alice", &keys().users[0].1).unwrap();
    let needles: Vec<Vec<u8>> = [&req.e2[..], &req.d2[..]]
        .iter()
        .flat_map(|x| {
            let dec = x[..24]
                .iter()
                .map(u8::to_string)
                .collect::<Vec<_>>()
                .join(",");
            let hex = veil_meta::blind::hex(&x[..24]);
            [x[..24].to_vec(), dec.into_bytes(), hex.into_bytes()]
        })
        .collect();
    let mut files = 0;
    let mut stack = vec![dir.path().to_path_buf()];
    while let Some(p) = stack.pop() {
        if p.is_dir() {
            stack.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
            continue;
        }
        files += 1;
        let bytes = std::fs::read(&p).unwrap();
        for n in &needles {
            assert!(
                !bytes.windows(n.len()).any(|w| w == &n[..]),
                "exponent in {}",
                p.display()
            );
        }
    }
    assert!(files > 0);
    // The sealing key lives outside the data directory.
    let c = &ctx.broker.config;
    let key = c.blind.share_key_path(&c.data_dir);
    assert!(!key.starts_with(dir.path()) && key.exists());
}

#[test]
fn the_default_share_key_sits_next_to_the_data_dir() {
    let c = super::BlindConfig::default();
    assert_eq!(
        c.share_key_path(std::path::Path::new("/var/lib/veil")),
        PathBuf::from("/var/lib/veil.share.key")
    );
}

#[tokio::test]
async fn veil_frames_go_through_decode_dispatch_and_encode() {
    let (_dir, ctx, physical) = setup().await;
    let (kid, c) = token(1, TOPIC);
    let frame = veil_blind::protocol::encode_request_frame(
        &ResolveRequest {
            kid,
            token: c,
            key_principal: None,
        },
        77,
        Some("t"),
    )
    .unwrap();
    let decoded = crate::dispatch::decode_request(Bytes::from(frame[4..].to_vec())).unwrap();
    let crate::dispatch::Decoded::Request { header, request } = decoded else {
        panic!("not a request");
    };
    assert_eq!((header.request_api_key, header.correlation_id), (32104, 77));
    assert_eq!(request.api().name(), "blind_resolve");
    let ctx = as_(&ctx, "User:bob", header.request_api_version);
    let handled = crate::dispatch::dispatch(&ctx, request).await;
    let response = Response::Blind(blind(handled));
    let out = response.encode_frame(0, 77).unwrap();
    let (cid, r) =
        veil_blind::protocol::decode_response_frame::<ResolveRequest>(&out[4..]).unwrap();
    assert_eq!((cid, r.error_code, r.physical_name), (77, 0, physical));
    assert_eq!(r.partitions.len(), 2);
    // Unsupported versions and garbage are refused at decode.
    let mut bad = frame[4..].to_vec();
    bad[3] = 1;
    assert!(crate::dispatch::decode_request(Bytes::from(bad)).is_err());
    let mut short = frame[4..].to_vec();
    short.truncate(40);
    assert!(crate::dispatch::decode_request(Bytes::from(short)).is_err());
}

#[tokio::test]
async fn a_recreated_blind_topic_never_adopts_its_old_directory() {
    let (_dirs, ctx, physical) = setup().await;
    assert_eq!(produce(&ctx, "User:alice", &physical).await, 0);
    let data = ctx.broker.config.data_dir.clone();
    let dir = data.join(format!("{physical}-0"));
    let saved = tempfile::tempdir().unwrap();
    let copy = |from: &std::path::Path, to: &std::path::Path| {
        std::fs::create_dir_all(to).unwrap();
        for f in std::fs::read_dir(from).unwrap().map(Result::unwrap) {
            std::fs::copy(f.path(), to.join(f.file_name())).unwrap();
        }
    };
    copy(&dir, saved.path());
    let topic_id = ctx.broker.topics.get(&physical).unwrap().id;
    let delete = veil_meta::MetaCommand::DeleteTopic {
        name: physical.clone(),
        topic_id,
    };
    ctx.broker.commit(delete).await.unwrap();
    // What a crash between the deletion's commit and its rename leaves.
    copy(saved.path(), &dir);
    let (code, again) = create(&ctx, "User:alice", 0).await;
    assert_eq!((code, &again), (0, &physical), "the physical name repeats");
    let p = ctx.broker.topics.partition(&physical, 0).unwrap();
    assert_eq!(p.high_watermark(), 0, "the old records stay out");
    let strays = std::fs::read_dir(&data)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(&format!("{physical}-0.")) && n.ends_with("-stray"))
        .count();
    assert_eq!(strays, 1);
}

#[tokio::test]
async fn another_users_key_is_refused_naming_both_and_a_missing_key_is_not_revoked() {
    let (_dir, ctx, _physical) = setup().await;
    // alice holds bob's key file, which names bob.
    let (kid, bob_token) = token(1, "another topic");
    let before = ctx.broker.topics.all().len();
    let req = CreateTopicRequest {
        kid: kid.clone(),
        token: bob_token.clone(),
        partitions: 1,
        replication_factor: -1,
        configs: Vec::new(),
        key_principal: Some("User:bob".into()),
    };
    let r = handlers::blind_create_topic::handle(&as_(&ctx, "User:alice", 0), req).await;
    assert_eq!(r.error_code, error_code::KEY_USER_MISMATCH);
    let message = r.error_message.unwrap();
    assert!(
        message.contains("User:bob") && message.contains("User:alice"),
        "{message}"
    );
    assert_eq!(ctx.broker.topics.all().len(), before, "no orphan topic");
    let req = ResolveRequest {
        kid: kid.clone(),
        token: bob_token,
        key_principal: Some("User:bob".into()),
    };
    let r = handlers::blind_resolve::handle(&as_(&ctx, "User:alice", 0), req).await;
    assert_eq!(r.error_code, error_code::KEY_USER_MISMATCH);
    assert!(r.error_message.unwrap().contains("User:bob"));
    // Her own key, named as hers, resolves.
    let (kid, alice_token) = token(0, TOPIC);
    let req = ResolveRequest {
        kid: kid.clone(),
        token: alice_token,
        key_principal: Some("User:alice".into()),
    };
    let r = handlers::blind_resolve::handle(&as_(&ctx, "User:alice", 0), req).await;
    assert_eq!(r.error_code, 0);
    // carol was never issued a key: not "revoked".
    let (_, carol_token) = token(0, TOPIC);
    let req = ResolveRequest {
        kid: kid.clone(),
        token: carol_token,
        key_principal: None,
    };
    let r = handlers::blind_resolve::handle(&as_(&ctx, "User:carol", 0), req).await;
    assert_eq!(r.error_code, error_code::KEY_NOT_ISSUED);
    let message = r.error_message.unwrap();
    assert!(
        message.contains("no key issued for this user (User:carol)"),
        "{message}"
    );
    // bob's revoked key is "revoked".
    let revoke = ShareRevokeRequest {
        principal: "User:bob".into(),
        kid: kid.clone(),
    };
    let r = handlers::blind_share_revoke::handle(&as_(&ctx, "User:kms", 0), revoke).await;
    assert_eq!(r.error_code, 0);
    assert_eq!(
        resolve(&ctx, "User:bob", 1, TOPIC).await.0,
        error_code::NO_SHARE
    );
}
