//! The broker's authorizer: the configured policy, an in-memory copy of the
//! ACL bindings in metadata, and the one entry point handlers use (through
//! [`crate::context::RequestContext::authorize`]).
//!
//! The bindings are copied out of metadata after every ACL change so that a
//! check never waits for the metadata lock, which is held across fsyncs.

use std::net::IpAddr;
use std::sync::Arc;

use parking_lot::RwLock;
use veil_meta::acl::{AclBinding, Operation, ResourceType};
use veil_meta::MetaState;

use super::acl_matcher::{self, Action, Decision, Policy};
use crate::config::AuthorizerConfig;
use crate::metrics::Metrics;

/// Kafka's "not requested" value for authorized-operation bitfields.
pub const OPERATIONS_NOT_REQUESTED: i32 = i32::MIN;

#[derive(Debug)]
pub struct Authorizer {
    config: AuthorizerConfig,
    acls: RwLock<Arc<Vec<AclBinding>>>,
}

impl Authorizer {
    pub fn new(config: &AuthorizerConfig, state: &MetaState) -> Authorizer {
        let authorizer = Authorizer {
            config: config.clone(),
            acls: RwLock::new(Arc::default()),
        };
        authorizer.refresh(state);
        authorizer
    }

    /// Whether ACLs are enforced; when not, every check passes and the ACL
    /// APIs answer SECURITY_DISABLED, as Kafka does without an authorizer.
    pub fn enabled(&self) -> bool {
        self.config.enabled
    }

    /// Takes a fresh copy of the bindings after metadata changed.
    pub fn refresh(&self, state: &MetaState) {
        *self.acls.write() = Arc::new(state.acls().cloned().collect());
    }

    /// The bindings as of the last refresh.
    pub fn acls(&self) -> Arc<Vec<AclBinding>> {
        Arc::clone(&self.acls.read())
    }

    fn policy(&self) -> Policy<'_> {
        Policy {
            super_users: &self.config.super_users,
            allow_everyone_if_no_acl_found: self.config.allow_everyone_if_no_acl_found,
        }
    }

    /// Decides, logs at debug and counts one access check.
    pub fn authorize(&self, metrics: &Metrics, action: Action<'_>) -> bool {
        if !self.config.enabled {
            return true;
        }
        let decision = acl_matcher::decide(self.acls().iter(), self.policy(), action);
        record(metrics, action, decision);
        decision.allowed()
    }

    /// Kafka's `authorizeByResourceType`; see [`acl_matcher::decide_any`].
    pub fn authorize_any(
        &self,
        metrics: &Metrics,
        principal: &str,
        host: IpAddr,
        operation: Operation,
        resource_type: ResourceType,
    ) -> bool {
        if !self.config.enabled {
            return true;
        }
        let acls = self.acls();
        let decision = acl_matcher::decide_any(
            acls.iter(),
            self.policy(),
            principal,
            host,
            operation,
            resource_type,
        );
        let action = Action {
            principal,
            host,
            operation,
            resource_type,
            name: "<any>",
        };
        record(metrics, action, decision);
        decision.allowed()
    }

    /// The bitfield of the resource type's operations the principal may
    /// perform (bit n for operation code n). Like Kafka, these checks are
    /// neither logged nor counted: they describe, they do not grant.
    pub fn authorized_operations(
        &self,
        principal: &str,
        host: IpAddr,
        resource_type: ResourceType,
        name: &str,
    ) -> i32 {
        let acls = self.acls();
        resource_type
            .supported_operations()
            .iter()
            .filter(|&&operation| {
                !self.config.enabled
                    || acl_matcher::decide(
                        acls.iter(),
                        self.policy(),
                        Action {
                            principal,
                            host,
                            operation,
                            resource_type,
                            name,
                        },
                    )
                    .allowed()
            })
            .fold(0, |bits, op| bits | (1 << op.code()))
    }
}

fn record(metrics: &Metrics, action: Action<'_>, decision: Decision) {
    let label = if decision.allowed() { "allow" } else { "deny" };
    tracing::debug!(
        principal = action.principal,
        host = %action.host,
        operation = action.operation.label(),
        resource_type = action.resource_type.label(),
        resource = action.name,
        decision = label,
        reason = ?decision,
        "authorization"
    );
    metrics
        .authorization
        .with_label_values(&[
            label,
            action.operation.label(),
            action.resource_type.label(),
        ])
        .inc();
}

#[cfg(test)]
mod tests {
    use veil_meta::acl::{PatternType, Permission, CLUSTER_NAME};
    use veil_meta::MetaCommand;

    use super::*;

    fn state_with(bindings: Vec<AclBinding>) -> MetaState {
        let mut s = MetaState::default();
        s.apply(1, &MetaCommand::CreateAcls { bindings }).unwrap();
        s
    }

    fn action(name: &str, operation: Operation) -> Action<'_> {
        Action {
            principal: "User:a",
            host: std::net::Ipv4Addr::LOCALHOST.into(),
            operation,
            resource_type: ResourceType::Topic,
            name,
        }
    }

    #[test]
    fn disabled_allows_everything_and_counts_nothing() {
        let metrics = Metrics::new();
        let a = Authorizer::new(&AuthorizerConfig::default(), &MetaState::default());
        assert!(!a.enabled());
        assert!(a.authorize(&metrics, action("t", Operation::Write)));
        assert!(!metrics
            .render()
            .contains("veil_authorization_decisions_total"));
        let all_topic_ops = a.authorized_operations(
            "User:a",
            action("t", Operation::Read).host,
            ResourceType::Topic,
            "t",
        );
        assert_eq!(
            all_topic_ops, 0b1101_1111_1000,
            "codes 3-8, 10, 11: every TOPIC operation"
        );
    }

    #[test]
    fn enabled_decides_from_refreshed_bindings_and_counts() {
        let metrics = Metrics::new();
        let config = AuthorizerConfig {
            enabled: true,
            ..AuthorizerConfig::default()
        };
        let a = Authorizer::new(&config, &MetaState::default());
        assert!(!a.authorize(&metrics, action("t", Operation::Read)));
        let read = AclBinding {
            resource_type: ResourceType::Topic,
            resource_name: "t".into(),
            pattern_type: PatternType::Literal,
            principal: "User:a".into(),
            host: "*".into(),
            operation: Operation::Read,
            permission: Permission::Allow,
        };
        a.refresh(&state_with(vec![read]));
        assert!(a.authorize(&metrics, action("t", Operation::Read)));
        let text = metrics.render();
        assert!(
            text.contains(r#"veil_authorization_decisions_total{decision="allow",operation="read",resource_type="topic"} 1"#),
            "{text}"
        );
        let host = action("t", Operation::Read).host;
        let ops = a.authorized_operations("User:a", host, ResourceType::Topic, "t");
        assert_eq!(ops, (1 << 3) | (1 << 8), "READ and the DESCRIBE it implies");
        assert_eq!(
            a.authorized_operations("User:a", host, ResourceType::Cluster, CLUSTER_NAME),
            0
        );
    }
}
