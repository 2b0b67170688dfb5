//! The ACL matrix: several principals × every served API × allowed, denied
//! and no-ACL resources, asserting the exact error code of each cell.
//!
//! It drives the real handlers in-process with the principal set on the
//! request context, which only a test can do: in production the principal
//! comes from TLS or SASL authentication.

use std::collections::BTreeSet;
use std::sync::Arc;

use bytes::Bytes;
use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
use kafka_protocol::messages::alter_configs_request::{AlterConfigsResource, AlterableConfig};
use kafka_protocol::messages::create_acls_request::AclCreation;
use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::delete_acls_request::DeleteAclsFilter;
use kafka_protocol::messages::delete_records_request::{
    DeleteRecordsPartition, DeleteRecordsTopic,
};
use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::incremental_alter_configs_request as incremental;
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::offset_for_leader_epoch_request::{
    OffsetForLeaderPartition, OffsetForLeaderTopic,
};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    AddPartitionsToTxnRequest, DescribeTransactionsRequest, EndTxnRequest,
};
use kafka_protocol::messages::{
    AlterConfigsRequest, ApiVersionsRequest, CreateAclsRequest, CreatePartitionsRequest,
    CreateTopicsRequest, DeleteAclsRequest, DeleteRecordsRequest, DeleteTopicsRequest,
    DescribeAclsRequest, DescribeClusterRequest, DescribeConfigsRequest, FetchRequest,
    IncrementalAlterConfigsRequest, InitProducerIdRequest, ListOffsetsRequest, MetadataRequest,
    OffsetForLeaderEpochRequest, ProduceRequest, TopicName, TransactionalId,
};
use kafka_protocol::protocol::StrBytes;
use veil_meta::acl::{AclBinding, Operation as O, PatternType, Permission, ResourceType as R};
use veil_meta::MetaCommand;

use crate::config::Config;
use crate::context::RequestContext;
use crate::dispatch::{Handled, Response};
use crate::handlers;
use crate::test_fixture as fixture;

const OK: i16 = 0;
const UNKNOWN_TOPIC: i16 = 3;
const TOPIC_DENIED: i16 = 29;
const CLUSTER_DENIED: i16 = 31;
const TRANSACTIONAL_ID_DENIED: i16 = 53;
const SECURITY_DISABLED: i16 = 54;

const ADMIN: &str = "User:admin";
const ALICE: &str = "User:alice";
const BOB: &str = "User:bob";
const EVE: &str = "User:eve";
const TOPICS: [&str; 4] = ["alice-data", "alice-secret", "shared", "other"];

fn binding(
    principal: &str,
    kind: R,
    name: &str,
    pattern: PatternType,
    op: O,
    permission: Permission,
) -> AclBinding {
    AclBinding {
        resource_type: kind,
        resource_name: name.into(),
        pattern_type: pattern,
        principal: principal.into(),
        host: "*".into(),
        operation: op,
        permission,
    }
}

/// The ACLs every cell runs against.
fn acls() -> Vec<AclBinding> {
    use PatternType::{Literal, Prefixed};
    use Permission::{Allow, Deny};
    let cluster = crate::auth::CLUSTER_NAME;
    vec![
        // alice owns every topic under "alice-" ...
        binding(ALICE, R::Topic, "alice-", Prefixed, O::All, Allow),
        // ... except one: DENY beats the PREFIXED ALLOW ALL.
        binding(ALICE, R::Topic, "alice-secret", Literal, O::All, Deny),
        // Everyone may read "shared" (READ implies DESCRIBE).
        binding("User:*", R::Topic, "shared", Literal, O::Read, Allow),
        binding(BOB, R::Topic, "shared", Literal, O::Write, Allow),
        binding(BOB, R::Topic, "bob-", Prefixed, O::Create, Allow),
        binding(BOB, R::Cluster, cluster, Literal, O::Describe, Allow),
        binding(BOB, R::Cluster, cluster, Literal, O::Alter, Allow),
        binding(BOB, R::TransactionalId, "bob-tx", Literal, O::Write, Allow),
    ]
}

/// What each principal may do on each topic, written out by hand (the
/// oracle must not be the matcher under test).
fn allowed_ops(principal: &str, topic: &str) -> BTreeSet<O> {
    use O::{AlterConfigs, Delete, Describe, DescribeConfigs, Read, Write};
    let all = [
        Read,
        Write,
        Describe,
        Delete,
        O::Alter,
        DescribeConfigs,
        AlterConfigs,
    ];
    match (principal, topic) {
        (ADMIN, _) | (ALICE, "alice-data") => all.into(),
        (ALICE | EVE, "shared") => [Read, Describe].into(),
        (BOB, "shared") => [Read, Write, Describe].into(),
        _ => BTreeSet::new(),
    }
}

/// A broker state with the authorizer on, `admin` as super user, the four
/// topics (one record in each) and the ACLs above.
async fn broker(allow_if_no_acl: bool) -> (tempfile::TempDir, RequestContext) {
    let (dir, base) = fixture::context(0).await;
    let mut config: Config = base.broker.config.clone();
    config.data_dir = dir.path().join("acl");
    config.authorizer.enabled = true;
    config.authorizer.super_users = vec![ADMIN.into()];
    config.authorizer.allow_everyone_if_no_acl_found = allow_if_no_acl;
    let state = fixture::state(config, Arc::clone(&base.broker.clock)).await;
    let ctx = RequestContext {
        broker: state,
        ..base
    };
    for t in TOPICS {
        fixture::create_topic(&ctx, t, 1).await;
        let p = ctx.broker.topics.partition(t, 0).unwrap();
        p.append(&mut veil_log::testing::build_simple_batch(1, 8, 100), 0)
            .unwrap();
    }
    ctx.broker
        .commit(MetaCommand::CreateAcls { bindings: acls() })
        .await
        .unwrap();
    (dir, ctx)
}

fn as_(ctx: &RequestContext, principal: &str, version: i16) -> RequestContext {
    RequestContext {
        principal: principal.into(),
        api_version: version,
        ..ctx.clone()
    }
}

fn name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_owned()))
}

fn text(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_owned())
}

/// A DescribeAcls request selecting everything (the generated defaults are
/// empty strings, not the nulls that mean "any").
fn describe_any() -> DescribeAclsRequest {
    DescribeAclsRequest::default()
        .with_resource_type_filter(1)
        .with_resource_name_filter(None)
        .with_pattern_type_filter(1)
        .with_principal_filter(None)
        .with_host_filter(None)
        .with_operation(1)
        .with_permission_type(1)
}

/// A DeleteAcls filter selecting everything.
fn delete_any() -> DeleteAclsFilter {
    DeleteAclsFilter::default()
        .with_resource_type_filter(1)
        .with_resource_name_filter(None)
        .with_pattern_type_filter(1)
        .with_principal_filter(None)
        .with_host_filter(None)
        .with_operation(1)
        .with_permission_type(1)
}

fn ready(handled: Handled) -> Response {
    match handled {
        Handled::Ready(r) => r,
        Handled::Deferred(_) | Handled::NoResponse => panic!("expected an immediate response"),
    }
}

async fn produce(ctx: &RequestContext, topic: &str, transactional_id: Option<&str>) -> i16 {
    let records = Bytes::from(veil_log::testing::build_simple_batch(1, 8, 200));
    let req = ProduceRequest::default()
        .with_acks(1)
        .with_transactional_id(transactional_id.map(|t| TransactionalId(text(t))))
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(name(topic))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(records))])]);
    match ready(handlers::produce::handle(ctx, req).await) {
        Response::Produce(r) => r.responses[0].partition_responses[0].error_code,
        other => panic!("{other:?}"),
    }
}

async fn fetch(ctx: &RequestContext, topic: &str) -> i16 {
    let req = FetchRequest::default()
        .with_max_wait_ms(0)
        .with_session_epoch(-1)
        .with_topics(vec![FetchTopic::default()
            .with_topic(name(topic))
            .with_partitions(vec![FetchPartition::default()
                .with_partition(0)
                .with_current_leader_epoch(-1)
                .with_partition_max_bytes(1 << 20)])]);
    match ready(handlers::fetch::handle(ctx, req).await) {
        Response::Fetch(r) => r.responses[0].partitions[0].error_code,
        other => panic!("{other:?}"),
    }
}

/// Every topic API once, on one topic, as (API, error code); mutating
/// APIs validate only, except DeleteTopics, which runs last.
async fn topic_cells(
    ctx: &RequestContext,
    principal: &str,
    topic: &str,
) -> Vec<(&'static str, i16)> {
    let at = |v| as_(ctx, principal, v);
    let mut cells = vec![
        ("produce", produce(&at(9), topic, None).await),
        ("fetch", fetch(&at(12), topic).await),
    ];
    let req = ListOffsetsRequest::default().with_topics(vec![ListOffsetsTopic::default()
        .with_name(name(topic))
        .with_partitions(vec![ListOffsetsPartition::default().with_timestamp(-1)])]);
    let r = handlers::list_offsets::handle(&at(7), req).await;
    cells.push(("list_offsets", r.topics[0].partitions[0].error_code));
    let req = MetadataRequest::default().with_topics(Some(vec![
        MetadataRequestTopic::default().with_name(Some(name(topic)))
    ]));
    let r = handlers::metadata::handle(&at(12), req).await;
    cells.push(("metadata", r.topics[0].error_code));
    let req =
        OffsetForLeaderEpochRequest::default().with_topics(vec![OffsetForLeaderTopic::default()
            .with_topic(name(topic))
            .with_partitions(vec![
                OffsetForLeaderPartition::default().with_current_leader_epoch(-1)
            ])]);
    let r = handlers::offset_for_leader_epoch::handle(&at(4), req).await;
    cells.push((
        "offset_for_leader_epoch",
        r.topics[0].partitions[0].error_code,
    ));
    let req = DeleteRecordsRequest::default().with_topics(vec![DeleteRecordsTopic::default()
        .with_name(name(topic))
        .with_partitions(vec![DeleteRecordsPartition::default().with_offset(0)])]);
    let r = handlers::delete_records::handle(&at(2), req).await;
    cells.push(("delete_records", r.topics[0].partitions[0].error_code));
    let req =
        DescribeConfigsRequest::default().with_resources(vec![DescribeConfigsResource::default()
            .with_resource_type(2)
            .with_resource_name(text(topic))]);
    let r = handlers::describe_configs::handle(&at(4), req).await;
    cells.push(("describe_configs", r.results[0].error_code));
    let req = AlterConfigsRequest::default()
        .with_validate_only(true)
        .with_resources(vec![AlterConfigsResource::default()
            .with_resource_type(2)
            .with_resource_name(text(topic))
            .with_configs(vec![AlterableConfig::default()
                .with_name(text("retention.ms"))
                .with_value(Some(text("1000")))])]);
    let r = handlers::alter_configs::handle(&at(2), req).await;
    cells.push(("alter_configs", r.responses[0].error_code));
    let req = IncrementalAlterConfigsRequest::default()
        .with_validate_only(true)
        .with_resources(vec![incremental::AlterConfigsResource::default()
            .with_resource_type(2)
            .with_resource_name(text(topic))
            .with_configs(vec![incremental::AlterableConfig::default()
                .with_name(text("retention.ms"))
                .with_value(Some(text("1000")))])]);
    let r = handlers::incremental_alter_configs::handle(&at(1), req).await;
    cells.push(("incremental_alter_configs", r.responses[0].error_code));
    let req = CreatePartitionsRequest::default()
        .with_validate_only(true)
        .with_topics(vec![CreatePartitionsTopic::default()
            .with_name(name(topic))
            .with_count(2)
            .with_assignments(None)]);
    let r = handlers::create_partitions::handle(&at(3), req).await;
    cells.push(("create_partitions", r.results[0].error_code));
    let req = DeleteTopicsRequest::default().with_topics(vec![
        DeleteTopicState::default().with_name(Some(name(topic)))
    ]);
    let r = handlers::delete_topics::handle(&at(6), req).await;
    cells.push(("delete_topics", r.responses[0].error_code));
    cells
}

/// The operation each topic API needs (Kafka's KafkaApis).
fn needs(api: &str) -> O {
    match api {
        "produce" => O::Write,
        "fetch" => O::Read,
        "list_offsets" | "metadata" | "offset_for_leader_epoch" => O::Describe,
        "delete_records" | "delete_topics" => O::Delete,
        "describe_configs" => O::DescribeConfigs,
        "alter_configs" | "incremental_alter_configs" => O::AlterConfigs,
        "create_partitions" => O::Alter,
        other => panic!("no operation for {other}"),
    }
}

#[tokio::test]
async fn topic_apis_by_principal_and_resource() {
    let mut failures = Vec::new();
    for principal in [ADMIN, ALICE, BOB, EVE] {
        for topic in TOPICS {
            // Fresh state per (principal, topic): DeleteTopics really deletes.
            let (_dir, ctx) = broker(false).await;
            for (api, code) in topic_cells(&ctx, principal, topic).await {
                let expected = if allowed_ops(principal, topic).contains(&needs(api)) {
                    OK
                } else {
                    TOPIC_DENIED
                };
                if code != expected {
                    failures.push(format!(
                        "{principal} {api} {topic}: got {code}, want {expected}"
                    ));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[tokio::test]
async fn metadata_lists_only_describable_topics_and_hides_existence() {
    let (_dir, ctx) = broker(false).await;
    let listed = |principal| {
        let ctx = as_(&ctx, principal, 12);
        async move {
            let r = handlers::metadata::handle(&ctx, MetadataRequest::default().with_topics(None))
                .await;
            let mut names: Vec<String> = r
                .topics
                .iter()
                .filter_map(|t| t.name.as_ref().map(|n| n.to_string()))
                .collect();
            names.sort();
            names
        }
    };
    assert_eq!(
        listed(ADMIN).await,
        ["alice-data", "alice-secret", "other", "shared"]
    );
    assert_eq!(listed(ALICE).await, ["alice-data", "shared"]);
    assert_eq!(listed(BOB).await, ["shared"]);
    assert_eq!(listed(EVE).await, ["shared"]);
    // A missing topic: UNKNOWN for who may describe it, denied for others,
    // so a stranger cannot tell whether it exists.
    let ask = |principal, topic: &'static str| {
        let ctx = as_(&ctx, principal, 12);
        async move {
            let req = MetadataRequest::default().with_topics(Some(vec![
                MetadataRequestTopic::default().with_name(Some(name(topic))),
            ]));
            handlers::metadata::handle(&ctx, req).await.topics[0].error_code
        }
    };
    assert_eq!(ask(ALICE, "alice-ghost").await, UNKNOWN_TOPIC);
    assert_eq!(ask(EVE, "alice-ghost").await, TOPIC_DENIED);
    assert_eq!(ask(ADMIN, "ghost").await, UNKNOWN_TOPIC);
    // Authorized-operation bitfields (v8+): READ(3) and DESCRIBE(8) for eve
    // on "shared"; the cluster bitfield is 0 without DESCRIBE on the cluster.
    let req = MetadataRequest::default()
        .with_topics(Some(vec![
            MetadataRequestTopic::default().with_name(Some(name("shared")))
        ]))
        .with_include_topic_authorized_operations(true)
        .with_include_cluster_authorized_operations(true);
    let r = handlers::metadata::handle(&as_(&ctx, EVE, 10), req.clone()).await;
    assert_eq!(r.topics[0].topic_authorized_operations, (1 << 3) | (1 << 8));
    assert_eq!(r.cluster_authorized_operations, 0);
    let r = handlers::metadata::handle(&as_(&ctx, BOB, 10), req).await;
    assert_eq!(
        r.topics[0].topic_authorized_operations,
        (1 << 3) | (1 << 4) | (1 << 8)
    );
    assert_eq!(r.cluster_authorized_operations, (1 << 7) | (1 << 8));
}

#[tokio::test]
async fn create_topics_needs_create_on_the_cluster_or_the_topic() {
    let (_dir, ctx) = broker(false).await;
    let create = |principal, topic: &'static str| {
        let ctx = as_(&ctx, principal, 7);
        async move {
            let req = CreateTopicsRequest::default()
                .with_validate_only(true)
                .with_topics(vec![CreatableTopic::default()
                    .with_name(name(topic))
                    .with_num_partitions(1)
                    .with_replication_factor(1)]);
            handlers::create_topics::handle(&ctx, req).await.topics[0].error_code
        }
    };
    let cells = [
        (ADMIN, "x-new", OK),
        (ALICE, "alice-new", OK),
        (ALICE, "alice-secret2", OK),
        (ALICE, "alice-secret", TOPIC_DENIED),
        (ALICE, "bob-new", TOPIC_DENIED),
        (BOB, "bob-new", OK),
        (BOB, "alice-new", TOPIC_DENIED),
        (EVE, "shared2", TOPIC_DENIED),
    ];
    for (principal, topic, want) in cells {
        assert_eq!(create(principal, topic).await, want, "{principal} {topic}");
    }
    // Created topics report their configs only with DESCRIBE_CONFIGS: bob
    // may create "bob-new" but not describe its configs.
    let req = CreateTopicsRequest::default().with_topics(vec![CreatableTopic::default()
        .with_name(name("bob-new"))
        .with_num_partitions(1)
        .with_replication_factor(1)]);
    let r = handlers::create_topics::handle(&as_(&ctx, BOB, 7), req).await;
    assert_eq!(
        (r.topics[0].error_code, r.topics[0].topic_config_error_code),
        (OK, TOPIC_DENIED)
    );
    assert!(r.topics[0].configs.is_none());
}

#[tokio::test]
async fn cluster_apis_need_cluster_permissions() {
    let (_dir, ctx) = broker(false).await;
    for (principal, describe_ok, alter_ok, cluster_ops) in [
        (ADMIN, true, true, 8096),
        (BOB, true, true, (1 << 7) | (1 << 8)),
        (ALICE, false, false, 0),
        (EVE, false, false, 0),
    ] {
        let code = |ok: bool| if ok { OK } else { CLUSTER_DENIED };
        let c = as_(&ctx, principal, 3);
        let req = describe_any();
        let r = handlers::describe_acls::handle(&c, req).await;
        assert_eq!(r.error_code, code(describe_ok), "{principal} describe_acls");
        if describe_ok {
            let count: usize = r.resources.iter().map(|r| r.acls.len()).sum();
            assert_eq!(count, acls().len());
        }
        let creation = AclCreation::default()
            .with_resource_type(2)
            .with_resource_name(text("extra"))
            .with_resource_pattern_type(3)
            .with_principal(text(EVE))
            .with_host(text("*"))
            .with_operation(3)
            .with_permission_type(3);
        let r = handlers::create_acls::handle(
            &c,
            CreateAclsRequest::default().with_creations(vec![creation]),
        )
        .await;
        assert_eq!(
            r.results[0].error_code,
            code(alter_ok),
            "{principal} create_acls"
        );
        let filter = delete_any()
            .with_resource_type_filter(2)
            .with_resource_name_filter(Some(text("extra")))
            .with_pattern_type_filter(3);
        let r = handlers::delete_acls::handle(
            &c,
            DeleteAclsRequest::default().with_filters(vec![filter]),
        )
        .await;
        assert_eq!(
            r.filter_results[0].error_code,
            code(alter_ok),
            "{principal} delete_acls"
        );
        if alter_ok {
            assert_eq!(
                r.filter_results[0].matching_acls.len(),
                1,
                "{principal} removed what it added"
            );
        }
        let req =
            DescribeClusterRequest::default().with_include_cluster_authorized_operations(true);
        let r = handlers::describe_cluster::handle(&as_(&ctx, principal, 1), req).await;
        assert_eq!(
            (r.error_code, r.cluster_authorized_operations),
            (OK, cluster_ops),
            "{principal}"
        );
        let req = DescribeConfigsRequest::default().with_resources(vec![
            DescribeConfigsResource::default()
                .with_resource_type(4)
                .with_resource_name(text("0")),
        ]);
        let r = handlers::describe_configs::handle(&as_(&ctx, principal, 4), req).await;
        let want = if principal == ADMIN {
            OK
        } else {
            CLUSTER_DENIED
        };
        assert_eq!(r.results[0].error_code, want, "{principal} broker configs");
        // ApiVersions is never authorized.
        let r =
            handlers::api_versions::handle(&as_(&ctx, principal, 3), ApiVersionsRequest::default())
                .await;
        assert_eq!(r.error_code, OK);
    }
}

#[tokio::test]
async fn producer_ids_and_transactional_produce() {
    let (_dir, ctx) = broker(false).await;
    let init = |principal, transactional_id: Option<&'static str>| {
        let ctx = as_(&ctx, principal, 4);
        async move {
            let req = InitProducerIdRequest::default()
                .with_transactional_id(transactional_id.map(|t| TransactionalId(text(t))))
                .with_producer_id(kafka_protocol::messages::ProducerId(-1))
                .with_producer_epoch(-1)
                .with_transaction_timeout_ms(60_000);
            handlers::init_producer_id::handle(&ctx, req)
                .await
                .error_code
        }
    };
    // Idempotent producers: IDEMPOTENT_WRITE on the cluster or WRITE on any topic.
    assert_eq!(init(ADMIN, None).await, OK);
    assert_eq!(init(ALICE, None).await, OK, "ALL on alice-* includes WRITE");
    assert_eq!(init(BOB, None).await, OK, "WRITE on shared");
    assert_eq!(init(EVE, None).await, CLUSTER_DENIED, "READ only");
    // Transactional ids need WRITE on the id.
    assert_eq!(init(EVE, Some("bob-tx")).await, TRANSACTIONAL_ID_DENIED);
    assert_eq!(init(BOB, Some("bob-tx")).await, OK);
    assert_eq!(
        produce(&as_(&ctx, BOB, 9), "shared", Some("bob-tx")).await,
        OK
    );
    assert_eq!(
        produce(&as_(&ctx, BOB, 9), "shared", Some("other-tx")).await,
        TRANSACTIONAL_ID_DENIED
    );
    // The transaction APIs: WRITE on the id, then WRITE on each topic; a
    // refused topic fails alone and nothing is added.
    let (pid, epoch) = ctx
        .broker
        .transactions
        .init_producer_id(&ctx.broker, "bob-tx", 60_000, (-1, -1))
        .await
        .unwrap();
    let add = |principal, id: &'static str, topic: &'static str| {
        let ctx = as_(&ctx, principal, 3);
        async move {
            let req = AddPartitionsToTxnRequest::default()
                .with_v3_and_below_transactional_id(TransactionalId(text(id)))
                .with_v3_and_below_producer_id(kafka_protocol::messages::ProducerId(pid))
                .with_v3_and_below_producer_epoch(epoch)
                .with_v3_and_below_topics(vec![AddPartitionsToTxnTopic::default()
                    .with_name(name(topic))
                    .with_partitions(vec![0])]);
            handlers::add_partitions_to_txn::handle(&ctx, req)
                .await
                .results_by_topic_v3_and_below[0]
                .results_by_partition[0]
                .partition_error_code
        }
    };
    assert_eq!(add(EVE, "bob-tx", "shared").await, TRANSACTIONAL_ID_DENIED);
    assert_eq!(add(BOB, "bob-tx", "alice-data").await, TOPIC_DENIED);
    assert_eq!(add(BOB, "bob-tx", "shared").await, OK);
    let describe = |principal| {
        let ctx = as_(&ctx, principal, 0);
        async move {
            let req = DescribeTransactionsRequest::default()
                .with_transactional_ids(vec![TransactionalId(text("bob-tx"))]);
            handlers::describe_transactions::handle(&ctx, req)
                .await
                .transaction_states[0]
                .error_code
        }
    };
    // WRITE implies DESCRIBE; others see nothing.
    assert_eq!(describe(BOB).await, OK);
    assert_eq!(describe(EVE).await, TRANSACTIONAL_ID_DENIED);
    let end = |principal| {
        let ctx = as_(&ctx, principal, 3);
        async move {
            let req = EndTxnRequest::default()
                .with_transactional_id(TransactionalId(text("bob-tx")))
                .with_producer_id(kafka_protocol::messages::ProducerId(pid))
                .with_producer_epoch(epoch)
                .with_committed(false);
            handlers::end_txn::handle(&ctx, req).await.error_code
        }
    };
    assert_eq!(end(EVE).await, TRANSACTIONAL_ID_DENIED);
    assert_eq!(end(BOB).await, OK);
}

#[tokio::test]
async fn allow_everyone_if_no_acl_found_opens_only_unmentioned_resources() {
    let (_dir, ctx) = broker(true).await;
    let eve = as_(&ctx, EVE, 9);
    assert_eq!(
        produce(&eve, "other", None).await,
        OK,
        "no ACL mentions 'other'"
    );
    assert_eq!(
        produce(&eve, "shared", None).await,
        TOPIC_DENIED,
        "'shared' has ACLs"
    );
    assert_eq!(produce(&eve, "alice-data", None).await, TOPIC_DENIED);
    assert_eq!(fetch(&as_(&ctx, EVE, 12), "shared").await, OK);
}

#[tokio::test]
async fn acl_apis_answer_security_disabled_without_an_authorizer() {
    let (_dir, ctx) = fixture::context(3).await;
    let ctx = as_(&ctx, EVE, 3);
    let r = handlers::describe_acls::handle(&ctx, DescribeAclsRequest::default()).await;
    assert_eq!(r.error_code, SECURITY_DISABLED);
    let req = CreateAclsRequest::default().with_creations(vec![AclCreation::default()]);
    let r = handlers::create_acls::handle(&ctx, req).await;
    assert_eq!(r.results[0].error_code, SECURITY_DISABLED);
    let req = DeleteAclsRequest::default().with_filters(vec![DeleteAclsFilter::default()]);
    let r = handlers::delete_acls::handle(&ctx, req).await;
    assert_eq!(r.filter_results[0].error_code, SECURITY_DISABLED);
    // And every other API behaves as before: no ACL needed.
    fixture::create_topic(&ctx, "t", 1).await;
    assert_eq!(produce(&as_(&ctx, EVE, 9), "t", None).await, OK);
}

#[tokio::test]
async fn acl_api_validation_and_filters() {
    let (_dir, ctx) = broker(false).await;
    let admin = as_(&ctx, ADMIN, 3);
    let creation = |kind: i8, name: &str, pattern: i8, principal: &str, op: i8, perm: i8| {
        AclCreation::default()
            .with_resource_type(kind)
            .with_resource_name(text(name))
            .with_resource_pattern_type(pattern)
            .with_principal(text(principal))
            .with_host(text("*"))
            .with_operation(op)
            .with_permission_type(perm)
    };
    let req = CreateAclsRequest::default().with_creations(vec![
        creation(2, "ok", 3, EVE, 3, 3),
        creation(2, "bad-pattern", 2, EVE, 3, 3), // MATCH is filter-only
        creation(2, "bad-op", 3, EVE, 1, 3),      // ANY is filter-only
        creation(4, "not-kafka-cluster", 3, EVE, 7, 3),
        creation(2, "no-type", 3, "eve", 3, 3),
        creation(2, "", 3, EVE, 3, 3),
        creation(3, "g", 4, EVE, 3, 2),
    ]);
    let r = handlers::create_acls::handle(&admin, req).await;
    let codes: Vec<i16> = r.results.iter().map(|r| r.error_code).collect();
    assert_eq!(
        codes,
        [0, 42, 42, 42, 42, 42, 0],
        "valid creations are stored, invalid ones are INVALID_REQUEST"
    );
    // DescribeAcls with MATCH finds literal, prefixed and wildcard bindings
    // that apply to a resource name.
    let req = describe_any()
        .with_resource_type_filter(2)
        .with_resource_name_filter(Some(text("alice-secret")))
        .with_pattern_type_filter(2);
    let r = handlers::describe_acls::handle(&admin, req).await;
    let patterns: Vec<(String, i8)> = r
        .resources
        .iter()
        .map(|r| (r.resource_name.to_string(), r.pattern_type))
        .collect();
    assert_eq!(
        patterns,
        [("alice-".to_owned(), 4), ("alice-secret".to_owned(), 3)]
    );
    let bad = describe_any().with_resource_type_filter(0);
    assert_eq!(
        handlers::describe_acls::handle(&admin, bad)
            .await
            .error_code,
        42
    );
    // DeleteAcls: a bad filter fails alone; a good one removes and reports.
    let good = delete_any().with_principal_filter(Some(text(EVE)));
    let bad = delete_any().with_pattern_type_filter(0);
    let r = handlers::delete_acls::handle(
        &admin,
        DeleteAclsRequest::default().with_filters(vec![good, bad]),
    )
    .await;
    assert_eq!(r.filter_results[0].error_code, OK);
    assert_eq!(r.filter_results[0].matching_acls.len(), 2, "'ok' and 'g'");
    assert_eq!(r.filter_results[1].error_code, 42);
    assert_eq!(ctx.broker.authorizer.acls().len(), acls().len());
}
