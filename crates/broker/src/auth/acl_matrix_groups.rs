//! The ACL matrix for consumer groups: several principals × every group API
//! × allowed, denied and no-ACL groups, asserting the exact error code of
//! each cell (Kafka's KafkaApis checks), driven in-process like
//! [`super::acl_matrix`].

use std::collections::BTreeSet;
use std::sync::Arc;

use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::leave_group_request::MemberIdentity;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_delete_request::{
    OffsetDeleteRequestPartition, OffsetDeleteRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::{
    OffsetFetchRequestGroup, OffsetFetchRequestTopic, OffsetFetchRequestTopics,
};
use kafka_protocol::messages::{
    DeleteGroupsRequest, DescribeGroupsRequest, FindCoordinatorRequest, GroupId, HeartbeatRequest,
    JoinGroupRequest, LeaveGroupRequest, ListGroupsRequest, OffsetCommitRequest,
    OffsetDeleteRequest, OffsetFetchRequest, SyncGroupRequest, TopicName,
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
const UNKNOWN_MEMBER: i16 = 25;
const TOPIC_DENIED: i16 = 29;
const GROUP_DENIED: i16 = 30;
const TRANSACTIONAL_ID_DENIED: i16 = 53;
const MEMBER_ID_REQUIRED: i16 = 79;

const ADMIN: &str = "User:admin";
const ALICE: &str = "User:alice";
const BOB: &str = "User:bob";
const EVE: &str = "User:eve";
const PRINCIPALS: [&str; 4] = [ADMIN, ALICE, BOB, EVE];
const GROUPS: [&str; 4] = ["team-a", "team-secret", "shared-g", "other-g"];

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

/// The ACLs every cell runs against. "other-g" and the topic "secret" are
/// mentioned by none.
fn acls() -> Vec<AclBinding> {
    use PatternType::{Literal, Prefixed};
    use Permission::{Allow, Deny};
    vec![
        // alice owns every group under "team-" ...
        binding(ALICE, R::Group, "team-", Prefixed, O::All, Allow),
        // ... except one: a LITERAL DENY beats the PREFIXED ALLOW ALL.
        binding(ALICE, R::Group, "team-secret", Literal, O::All, Deny),
        // Everyone may consume as "shared-g"; bob may also delete it.
        binding("User:*", R::Group, "shared-g", Literal, O::Read, Allow),
        binding(BOB, R::Group, "shared-g", Literal, O::Delete, Allow),
        // eve may not READ "shared-g", but the DESCRIBE the wildcard READ
        // implies is not denied by a DENY READ.
        binding(EVE, R::Group, "shared-g", Literal, O::Read, Deny),
        binding(
            BOB,
            R::Cluster,
            crate::auth::CLUSTER_NAME,
            Literal,
            O::Describe,
            Allow,
        ),
        binding(
            EVE,
            R::TransactionalId,
            "eve-tx",
            Literal,
            O::Describe,
            Allow,
        ),
        // Every topic under "orders" is readable by everyone.
        binding("User:*", R::Topic, "orders", Prefixed, O::Read, Allow),
    ]
}

/// What each principal may do on each group, written out by hand (the
/// oracle must not be the matcher under test).
fn granted(principal: &str, group: &str) -> BTreeSet<O> {
    use O::{Delete, Describe, Read};
    match (principal, group) {
        (ADMIN, _) | (ALICE, "team-a") | (BOB, "shared-g") => [Read, Describe, Delete].into(),
        (ALICE, "shared-g") => [Read, Describe].into(),
        (EVE, "shared-g") => [Describe].into(),
        _ => BTreeSet::new(),
    }
}

/// Whether the principal may READ (and so DESCRIBE) the topic, by hand.
fn reads_topic(principal: &str, topic: &str) -> bool {
    principal == ADMIN || topic.starts_with("orders")
}

/// A broker with groups enabled, the authorizer on, `admin` as super user,
/// the topics "orders" and "secret", and the ACLs above.
async fn broker(allow_if_no_acl: bool) -> (tempfile::TempDir, RequestContext) {
    let (dir, base) = fixture::groups_context(0).await;
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
    for t in ["orders", "secret"] {
        fixture::create_topic(&ctx, t, 1).await;
    }
    ctx.broker
        .commit(MetaCommand::CreateAcls { bindings: acls() })
        .await
        .unwrap();
    (dir, ctx)
}

/// Admin commits offsets of "orders" and "secret" for every group, so each
/// exists (Empty) with something to fetch and delete.
async fn seed_groups(ctx: &RequestContext) {
    for g in GROUPS {
        let r =
            handlers::offset_commit::handle(&as_(ctx, ADMIN, 8), commit(g, &["orders", "secret"]))
                .await;
        for t in &r.topics {
            assert_eq!(t.partitions[0].error_code, OK, "seeding {g}");
        }
    }
}

fn as_(ctx: &RequestContext, principal: &str, version: i16) -> RequestContext {
    RequestContext {
        principal: principal.into(),
        api_version: version,
        ..ctx.clone()
    }
}

fn text(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_owned())
}

fn group_id(s: &str) -> GroupId {
    GroupId(text(s))
}

fn topic(s: &str) -> TopicName {
    TopicName(text(s))
}

fn commit(group: &str, topics: &[&str]) -> OffsetCommitRequest {
    OffsetCommitRequest::default()
        .with_group_id(group_id(group))
        .with_generation_id_or_member_epoch(-1)
        .with_retention_time_ms(-1)
        .with_topics(
            topics
                .iter()
                .map(|t| {
                    OffsetCommitRequestTopic::default()
                        .with_name(topic(t))
                        .with_partitions(vec![OffsetCommitRequestPartition::default()
                            .with_partition_index(0)
                            .with_committed_offset(5)])
                })
                .collect(),
        )
}

async fn settle(handled: Handled) -> Response {
    match handled {
        Handled::Ready(r) => r,
        Handled::Deferred(f) => f.await,
        Handled::NoResponse => panic!("expected a response"),
    }
}

/// Every group API once, on one group, as (API, error code). Mutating
/// calls run in an order that keeps later cells meaningful: offsets are
/// fetched before they are deleted, the group deleted before it is joined.
#[allow(clippy::too_many_lines)]
async fn group_cells(
    ctx: &RequestContext,
    principal: &str,
    group: &str,
) -> Vec<(&'static str, i16)> {
    let at = |v| as_(ctx, principal, v);
    let mut cells = Vec::new();

    let find = FindCoordinatorRequest::default().with_key(text(group));
    let r = handlers::find_coordinator::handle(&at(3), find).await;
    cells.push(("find_coordinator_v3", r.error_code));
    if r.error_code != OK {
        assert_eq!((r.node_id.0, r.port), (-1, -1), "no coordinator leaks");
    }
    let find = FindCoordinatorRequest::default().with_coordinator_keys(vec![text(group)]);
    let r = handlers::find_coordinator::handle(&at(4), find).await;
    cells.push(("find_coordinator_v4", r.coordinators[0].error_code));

    let req = DescribeGroupsRequest::default()
        .with_groups(vec![group_id(group)])
        .with_include_authorized_operations(true);
    let r = handlers::describe_groups::handle(&at(5), req).await;
    let g = &r.groups[0];
    cells.push(("describe_groups", g.error_code));
    if g.error_code == OK {
        assert_eq!(g.group_state.as_str(), "Empty");
        assert_ne!(g.authorized_operations, i32::MIN);
    } else {
        assert_eq!(g.group_state.as_str(), "", "nothing about a refused group");
        assert_eq!(g.authorized_operations, i32::MIN);
    }

    let topics = ["orders", "secret", "orders-ghost", "ghost"];
    let r = handlers::offset_commit::handle(&at(8), commit(group, &topics)).await;
    for (api, t) in [
        "offset_commit",
        "offset_commit_secret",
        "offset_commit_orders_ghost",
        "offset_commit_ghost",
    ]
    .into_iter()
    .zip(&r.topics)
    {
        cells.push((api, t.partitions[0].error_code));
    }

    let fetch_topics = |names: &[&str]| {
        names
            .iter()
            .map(|n| {
                OffsetFetchRequestTopics::default()
                    .with_name(topic(n))
                    .with_partition_indexes(vec![0])
            })
            .collect()
    };
    let req = OffsetFetchRequest::default().with_groups(vec![OffsetFetchRequestGroup::default()
        .with_group_id(group_id(group))
        .with_topics(Some(fetch_topics(&["orders", "secret"])))]);
    let r = handlers::offset_fetch::handle(&at(8), req).await;
    let g = &r.groups[0];
    cells.push(("offset_fetch_v8", g.error_code));
    if g.error_code == OK {
        let codes: Vec<i16> = g
            .topics
            .iter()
            .map(|t| t.partitions[0].error_code)
            .collect();
        cells.push(("offset_fetch_v8_orders", codes[0]));
        cells.push(("offset_fetch_v8_secret", codes[1]));
    } else {
        assert!(g.topics.is_empty());
    }
    let req = OffsetFetchRequest::default().with_groups(vec![OffsetFetchRequestGroup::default()
        .with_group_id(group_id(group))
        .with_topics(None)]);
    let r = handlers::offset_fetch::handle(&at(8), req).await;
    let g = &r.groups[0];
    if g.error_code == OK {
        let names: Vec<&str> = g.topics.iter().map(|t| t.name.as_str()).collect();
        let visible: Vec<&str> = ["orders", "secret"]
            .into_iter()
            .filter(|t| reads_topic(principal, t))
            .collect();
        assert_eq!(names, visible, "{principal} {group}: all-topics fetch");
    }
    let req = OffsetFetchRequest::default()
        .with_group_id(group_id(group))
        .with_topics(Some(vec![OffsetFetchRequestTopic::default()
            .with_name(topic("orders"))
            .with_partition_indexes(vec![0])]));
    let r = handlers::offset_fetch::handle(&at(7), req.clone()).await;
    cells.push(("offset_fetch_v7", r.error_code));
    let r = handlers::offset_fetch::handle(&at(1), req).await;
    cells.push(("offset_fetch_v1", r.topics[0].partitions[0].error_code));

    let req = OffsetDeleteRequest::default()
        .with_group_id(group_id(group))
        .with_topics(
            ["orders", "secret"]
                .iter()
                .map(|t| {
                    OffsetDeleteRequestTopic::default()
                        .with_name(topic(t))
                        .with_partitions(vec![
                            OffsetDeleteRequestPartition::default().with_partition_index(0)
                        ])
                })
                .collect(),
        );
    let r = handlers::offset_delete::handle(&at(0), req).await;
    cells.push(("offset_delete", r.error_code));
    if r.error_code == OK {
        cells.push(("offset_delete_orders", r.topics[0].partitions[0].error_code));
        cells.push(("offset_delete_secret", r.topics[1].partitions[0].error_code));
    } else {
        assert!(r.topics.is_empty());
    }

    let req = DeleteGroupsRequest::default().with_groups_names(vec![group_id(group)]);
    let r = handlers::delete_groups::handle(&at(2), req).await;
    cells.push(("delete_groups", r.results[0].error_code));

    let req = JoinGroupRequest::default()
        .with_group_id(group_id(group))
        .with_session_timeout_ms(10_000)
        .with_rebalance_timeout_ms(10_000)
        .with_protocol_type(text("consumer"))
        .with_protocols(vec![
            JoinGroupRequestProtocol::default().with_name(text("range"))
        ]);
    let Response::JoinGroup(r) = settle(handlers::join_group::handle(&at(5), req).await).await
    else {
        panic!("join")
    };
    cells.push(("join_group", r.error_code));

    let req = SyncGroupRequest::default()
        .with_group_id(group_id(group))
        .with_generation_id(1)
        .with_member_id(text("m"));
    let Response::SyncGroup(r) = settle(handlers::sync_group::handle(&at(5), req).await).await
    else {
        panic!("sync")
    };
    cells.push(("sync_group", r.error_code));

    let req = HeartbeatRequest::default()
        .with_group_id(group_id(group))
        .with_generation_id(1)
        .with_member_id(text("m"));
    let r = handlers::heartbeat::handle(&at(4), req).await;
    cells.push(("heartbeat", r.error_code));

    let req = LeaveGroupRequest::default()
        .with_group_id(group_id(group))
        .with_member_id(text("m"))
        .with_members(vec![MemberIdentity::default().with_member_id(text("m"))]);
    let r = handlers::leave_group::handle(&at(3), req.clone()).await;
    cells.push(("leave_group_v3", r.error_code));
    if r.error_code == OK {
        cells.push(("leave_group_v3_member", r.members[0].error_code));
    } else {
        assert!(r.members.is_empty());
    }
    let r = handlers::leave_group::handle(&at(1), req).await;
    cells.push(("leave_group_v1", r.error_code));
    cells
}

/// The expected code of each cell: (operation on the group, code when
/// allowed); a refusal is always GROUP_AUTHORIZATION_FAILED. Cells after a
/// topic check depend on the topic too, so they get the principal.
fn expected(api: &str, principal: &str) -> (O, i16) {
    let topic = |t: &str, ok: i16| {
        if reads_topic(principal, t) {
            ok
        } else {
            TOPIC_DENIED
        }
    };
    match api {
        "find_coordinator_v3"
        | "find_coordinator_v4"
        | "describe_groups"
        | "offset_fetch_v8"
        | "offset_fetch_v7"
        | "offset_fetch_v1" => (O::Describe, OK),
        "offset_fetch_v8_orders" => (O::Describe, topic("orders", OK)),
        "offset_fetch_v8_secret" => (O::Describe, topic("secret", OK)),
        "offset_commit" => (O::Read, topic("orders", OK)),
        "offset_commit_secret" => (O::Read, topic("secret", OK)),
        // Unauthorized before unknown: only who may read it learns it is missing.
        "offset_commit_orders_ghost" => (O::Read, topic("orders-ghost", UNKNOWN_TOPIC)),
        "offset_commit_ghost" => (O::Read, topic("ghost", UNKNOWN_TOPIC)),
        "offset_delete" | "delete_groups" => (O::Delete, OK),
        "offset_delete_orders" => (O::Delete, topic("orders", OK)),
        "offset_delete_secret" => (O::Delete, topic("secret", OK)),
        "join_group" => (O::Read, MEMBER_ID_REQUIRED),
        "sync_group" | "heartbeat" | "leave_group_v3_member" | "leave_group_v1" => {
            (O::Read, UNKNOWN_MEMBER)
        }
        "leave_group_v3" => (O::Read, OK),
        other => panic!("no expectation for {other}"),
    }
}

#[tokio::test]
async fn group_apis_by_principal_and_group() {
    let mut failures = Vec::new();
    let mut cells = 0;
    for principal in PRINCIPALS {
        for group in GROUPS {
            // Fresh state per (principal, group): cells delete and join.
            let (_dir, ctx) = broker(false).await;
            seed_groups(&ctx).await;
            for (api, code) in group_cells(&ctx, principal, group).await {
                cells += 1;
                let (needs, ok) = expected(api, principal);
                let want = if granted(principal, group).contains(&needs) {
                    ok
                } else {
                    GROUP_DENIED
                };
                if code != want {
                    failures.push(format!(
                        "{principal} {api} {group}: got {code}, want {want}"
                    ));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(cells > 16 * 15, "only {cells} cells ran");
}

#[tokio::test]
async fn list_groups_shows_all_with_cluster_describe_else_describable_ones() {
    let (_dir, ctx) = broker(false).await;
    seed_groups(&ctx).await;
    for (principal, want) in [
        (ADMIN, &["other-g", "shared-g", "team-a", "team-secret"][..]),
        (BOB, &["other-g", "shared-g", "team-a", "team-secret"]),
        (ALICE, &["shared-g", "team-a"]),
        (EVE, &["shared-g"]),
    ] {
        let r =
            handlers::list_groups::handle(&as_(&ctx, principal, 4), ListGroupsRequest::default())
                .await;
        assert_eq!(r.error_code, OK);
        let mut names: Vec<&str> = r.groups.iter().map(|g| g.group_id.as_str()).collect();
        names.sort_unstable();
        assert_eq!(names, want, "{principal}");
    }
}

#[tokio::test]
async fn batched_requests_are_authorized_per_group_or_key() {
    let (_dir, ctx) = broker(false).await;
    seed_groups(&ctx).await;
    let alice = |v| as_(&ctx, ALICE, v);
    let keys = ["team-a", "team-secret", "other-g", "shared-g"];
    let find = FindCoordinatorRequest::default()
        .with_coordinator_keys(keys.iter().map(|k| text(k)).collect());
    let r = handlers::find_coordinator::handle(&alice(4), find).await;
    let codes: Vec<i16> = r.coordinators.iter().map(|c| c.error_code).collect();
    assert_eq!(codes, [OK, GROUP_DENIED, GROUP_DENIED, OK]);
    assert_eq!(r.coordinators[1].node_id.0, -1);

    let req = DescribeGroupsRequest::default().with_groups(keys.map(group_id).to_vec());
    let r = handlers::describe_groups::handle(&alice(5), req).await;
    let codes: Vec<i16> = r.groups.iter().map(|g| g.error_code).collect();
    assert_eq!(codes, [OK, GROUP_DENIED, GROUP_DENIED, OK]);

    let req = DeleteGroupsRequest::default().with_groups_names(keys.map(group_id).to_vec());
    let r = handlers::delete_groups::handle(&alice(2), req).await;
    let codes: Vec<i16> = r.results.iter().map(|g| g.error_code).collect();
    assert_eq!(codes, [OK, GROUP_DENIED, GROUP_DENIED, GROUP_DENIED]);
    let left: Vec<String> = ctx
        .broker
        .groups
        .read(crate::group::Coordinator::list)
        .into_iter()
        .map(|(id, _, _)| id)
        .collect();
    assert!(!left.contains(&"team-a".to_owned()) && left.len() == 3);

    let req = OffsetFetchRequest::default().with_groups(
        keys.iter()
            .map(|k| {
                OffsetFetchRequestGroup::default()
                    .with_group_id(group_id(k))
                    .with_topics(None)
            })
            .collect(),
    );
    let r = handlers::offset_fetch::handle(&alice(8), req).await;
    let codes: Vec<i16> = r.groups.iter().map(|g| g.error_code).collect();
    assert_eq!(codes, [OK, GROUP_DENIED, GROUP_DENIED, OK]);
}

#[tokio::test]
async fn find_coordinator_for_transactions_needs_describe_on_the_id() {
    let (_dir, ctx) = broker(false).await;
    let find = |principal, key: &str| {
        let ctx = as_(&ctx, principal, 4);
        let req = FindCoordinatorRequest::default()
            .with_key_type(1)
            .with_coordinator_keys(vec![text(key)]);
        async move {
            handlers::find_coordinator::handle(&ctx, req)
                .await
                .coordinators[0]
                .error_code
        }
    };
    // Authorized ids find the controller, which coordinates transactions.
    assert_eq!(find(ADMIN, "bob-tx").await, 0);
    assert_eq!(find(EVE, "eve-tx").await, 0);
    assert_eq!(find(EVE, "bob-tx").await, TRANSACTIONAL_ID_DENIED);
    assert_eq!(find(ALICE, "eve-tx").await, TRANSACTIONAL_ID_DENIED);
}

#[tokio::test]
async fn allow_everyone_if_no_acl_found_opens_only_unmentioned_groups() {
    let (_dir, ctx) = broker(true).await;
    seed_groups(&ctx).await;
    let eve = as_(&ctx, EVE, 4);
    let beat = |group: &str| {
        HeartbeatRequest::default()
            .with_group_id(group_id(group))
            .with_member_id(text("m"))
    };
    let code = handlers::heartbeat::handle(&eve, beat("other-g"))
        .await
        .error_code;
    assert_eq!(code, UNKNOWN_MEMBER, "no ACL mentions 'other-g'");
    let code = handlers::heartbeat::handle(&eve, beat("team-a"))
        .await
        .error_code;
    assert_eq!(code, GROUP_DENIED, "'team-a' has ACLs");
    // The group is open, the topic "secret" too, so eve commits to both.
    let r = handlers::offset_commit::handle(
        &as_(&ctx, EVE, 8),
        commit("other-g", &["orders", "secret"]),
    )
    .await;
    let codes: Vec<i16> = r
        .topics
        .iter()
        .map(|t| t.partitions[0].error_code)
        .collect();
    assert_eq!(codes, [OK, OK]);
}
