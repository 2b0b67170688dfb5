//! ACLs end to end over the real binary: `veil acl add|list|remove` against
//! a broker whose anonymous principal is a super user, persistence across a
//! restart, and enforcement once that principal is an ordinary one.
//!
//! The full principal × API × resource matrix runs in-process in
//! `veil-broker` (`auth::acl_matrix`), where a test can choose the principal.

mod common;

use std::process::Command;

use common::{batch, create, produce, rt, BIN};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::MetadataRequest;
use veil_client::{Admin, Connection};
use veil_testkit::TestBroker;

const TOPIC_AUTHORIZATION_FAILED: i16 = 29;

/// Runs `veil acl ARGS` against `bootstrap`: (success, stdout, stderr).
fn veil_acl(bootstrap: &str, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(BIN)
        .arg("acl")
        .args(args)
        .env("VEIL_BOOTSTRAP", bootstrap)
        .env_remove("VEIL_SECURITY_PROTOCOL")
        .output()
        .expect("run veil acl");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn list(bootstrap: &str, args: &[&str]) -> String {
    let mut all = vec!["list"];
    all.extend_from_slice(args);
    let (ok, out, err) = veil_acl(bootstrap, &all);
    assert!(ok, "veil acl list failed: {err}");
    out
}

#[test]
fn acl_cli_round_trip_persists_then_enforces_for_anonymous() {
    let mut broker = TestBroker::start_with(
        BIN,
        &[
            "--set",
            "authorizer.enabled=true",
            "--set",
            r#"authorizer.super_users=["User:ANONYMOUS"]"#,
        ],
    );
    let b = broker.bootstrap();
    rt().block_on(create(&b, "orders-eu", 1));

    let (ok, out, err) = veil_acl(
        &b,
        &[
            "add",
            "--allow-principal",
            "User:alice",
            "--deny-principal",
            "User:mallory",
            "--operation",
            "read",
            "--operation",
            "describe",
            "--topic",
            "orders-",
            "--resource-pattern-type",
            "prefixed",
        ],
    );
    assert!(ok, "{err}");
    assert!(out.contains("added 4 ACL(s)"), "{out}");
    let (ok, _, err) = veil_acl(
        &b,
        &[
            "add",
            "--allow-principal",
            "User:ops",
            "--operation",
            "alter",
            "--cluster",
        ],
    );
    assert!(ok, "{err}");
    let (ok, _, err) = veil_acl(
        &b,
        &[
            "add",
            "--allow-principal",
            "alice",
            "--operation",
            "read",
            "--topic",
            "t",
        ],
    );
    assert!(!ok && err.contains("Type:name"), "{err}");

    let all = list(&b, &[]);
    assert!(
        all.contains("ResourcePattern(resourceType=TOPIC, name=orders-, patternType=PREFIXED)"),
        "{all}"
    );
    assert!(
        all.contains("(principal=User:alice, host=*, operation=READ, permissionType=ALLOW)"),
        "{all}"
    );
    assert!(
        all.contains("(principal=User:mallory, host=*, operation=DESCRIBE, permissionType=DENY)"),
        "{all}"
    );
    assert!(
        all.contains("resourceType=CLUSTER, name=kafka-cluster"),
        "{all}"
    );
    // MATCH: what applies to one topic (the prefixed ACLs, not the cluster's).
    let matching = list(
        &b,
        &["--topic", "orders-eu", "--resource-pattern-type", "match"],
    );
    assert_eq!(matching.matches("principal=").count(), 4, "{matching}");

    // ACLs are cluster metadata: they survive a restart.
    broker.terminate();
    broker.restart();
    let b = broker.bootstrap();
    assert_eq!(list(&b, &[]), all);

    let (ok, out, err) = veil_acl(
        &b,
        &[
            "remove",
            "--deny-principal",
            "User:mallory",
            "--topic",
            "orders-",
            "--resource-pattern-type",
            "prefixed",
        ],
    );
    assert!(ok, "{err}");
    assert!(out.contains("removed 2 ACL(s)"), "{out}");
    let after = list(&b, &[]);
    assert!(
        !after.contains("mallory") && after.contains("User:alice"),
        "{after}"
    );

    // The same data, but ANONYMOUS is no longer a super user and no ACL
    // names it: nothing is allowed, and nothing is even visible.
    broker.terminate();
    let data_dir = format!("data_dir={}", broker.data_dir().display());
    let strict = TestBroker::start_with(
        BIN,
        &["--set", "authorizer.enabled=true", "--set", &data_dir],
    );
    let b = strict.bootstrap();
    rt().block_on(async {
        let mut conn = Connection::connect(&b, "t").await.unwrap();
        let resp = produce(&mut conn, "orders-eu", 0, 1, batch(&["x"], 1)).await;
        assert_eq!(
            resp.responses[0].partition_responses[0].error_code,
            TOPIC_AUTHORIZATION_FAILED
        );
        let resp = produce(&mut conn, "no-such-topic", 0, 1, batch(&["x"], 1)).await;
        assert_eq!(
            resp.responses[0].partition_responses[0].error_code, TOPIC_AUTHORIZATION_FAILED,
            "existence is not revealed"
        );
        let mut admin = Admin::connect(&b).await.unwrap();
        assert!(admin.list_topics().await.unwrap().is_empty());
        let req = MetadataRequest::default().with_topics(Some(vec![
            MetadataRequestTopic::default().with_name(Some(common::topic("orders-eu"))),
        ]));
        let resp = admin.connection().send(&req).await.unwrap();
        assert_eq!(resp.topics[0].error_code, TOPIC_AUTHORIZATION_FAILED);
    });
    let (ok, _, err) = veil_acl(&b, &["list"]);
    assert!(!ok && err.contains("CLUSTER_AUTHORIZATION_FAILED"), "{err}");
    let (_, metrics) = strict.http_get("/metrics");
    assert!(
        metrics.contains(
            r#"veil_authorization_decisions_total{decision="deny",operation="write",resource_type="topic"} 2"#
        ),
        "{metrics}"
    );
}

#[test]
fn acl_apis_are_security_disabled_without_the_authorizer() {
    let broker = TestBroker::start(BIN);
    let (ok, _, err) = veil_acl(&broker.bootstrap(), &["list"]);
    assert!(!ok && err.contains("SECURITY_DISABLED"), "{err}");
}
