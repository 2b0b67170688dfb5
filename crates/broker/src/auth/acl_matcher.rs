//! The authorization decision, pure: Kafka's ACL rules over a list of
//! bindings (the semantics of `AclAuthorizer` and KRaft's `StandardAuthorizer`).
//!
//! 1. A super user is allowed everything.
//! 2. The bindings whose pattern covers the resource are collected (LITERAL
//!    name, LITERAL `*`, every PREFIXED prefix). If there are none at all,
//!    for any principal, `allow_everyone_if_no_acl_found` decides.
//! 3. Of those, the ones for this principal (or `User:*`) and host (or `*`)
//!    count: a DENY for the operation or ALL refuses, whatever else matches;
//!    otherwise an ALLOW for the operation, for ALL, or for an operation that
//!    implies it (READ/WRITE/DELETE/ALTER imply DESCRIBE, ALTER_CONFIGS
//!    implies DESCRIBE_CONFIGS) grants. Nothing matching refuses.

use std::collections::HashSet;
use std::net::IpAddr;

use veil_meta::acl::{AclBinding, Operation, PatternType, Permission, ResourceType};

/// The broker-wide settings the decision depends on.
#[derive(Debug, Clone, Copy)]
pub struct Policy<'a> {
    pub super_users: &'a [String],
    pub allow_everyone_if_no_acl_found: bool,
}

/// Who wants to do what, on which resource.
#[derive(Debug, Clone, Copy)]
pub struct Action<'a> {
    pub principal: &'a str,
    pub host: IpAddr,
    pub operation: Operation,
    pub resource_type: ResourceType,
    pub name: &'a str,
}

/// Why a decision came out as it did, for the debug log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    SuperUser,
    AllowAcl,
    DenyAcl,
    /// No binding covers the resource at all.
    NoAclFound,
    /// Bindings cover the resource, but none allows this principal.
    NoMatchingAllow,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allow(Reason),
    Deny(Reason),
}

impl Decision {
    pub fn allowed(self) -> bool {
        matches!(self, Decision::Allow(_))
    }
}

/// Whether an ALLOW binding for `granted` permits `wanted`.
pub fn grants(granted: Operation, wanted: Operation) -> bool {
    use Operation as O;
    granted == O::All
        || granted == wanted
        || (wanted == O::Describe && matches!(granted, O::Read | O::Write | O::Delete | O::Alter))
        || (wanted == O::DescribeConfigs && granted == O::AlterConfigs)
}

/// Decides one action against `acls`.
pub fn decide<'b>(
    acls: impl IntoIterator<Item = &'b AclBinding>,
    policy: Policy<'_>,
    action: Action<'_>,
) -> Decision {
    if policy.super_users.iter().any(|u| u == action.principal) {
        return Decision::Allow(Reason::SuperUser);
    }
    let mut resource_has_acls = false;
    let mut allowed = false;
    for b in acls {
        if !b.matches_resource(action.resource_type, action.name) {
            continue;
        }
        resource_has_acls = true;
        if !b.matches_principal_and_host(action.principal, action.host) {
            continue;
        }
        match b.permission {
            Permission::Deny if matches!(b.operation, Operation::All) => {
                return Decision::Deny(Reason::DenyAcl)
            }
            Permission::Deny if b.operation == action.operation => {
                return Decision::Deny(Reason::DenyAcl)
            }
            Permission::Deny => {}
            Permission::Allow => allowed |= grants(b.operation, action.operation),
        }
    }
    match (resource_has_acls, allowed) {
        (false, _) if policy.allow_everyone_if_no_acl_found => Decision::Allow(Reason::NoAclFound),
        (false, _) => Decision::Deny(Reason::NoAclFound),
        (true, true) => Decision::Allow(Reason::AllowAcl),
        (true, false) => Decision::Deny(Reason::NoMatchingAllow),
    }
}

/// Kafka's `authorizeByResourceType`: may the principal perform `operation`
/// on *some* resource of the type? (InitProducerId: WRITE on any topic.)
///
/// Allowed if a check on an arbitrary literal name is allowed (super users,
/// wildcard ALLOWs, no ACLs with allow-everyone), else if some ALLOW pattern
/// for the exact operation or ALL is not covered by a DENY: a LITERAL `*`
/// DENY covers everything, a LITERAL DENY its own name, a PREFIXED DENY every
/// pattern it is a prefix of.
pub fn decide_any<'b>(
    acls: impl IntoIterator<Item = &'b AclBinding> + Clone,
    policy: Policy<'_>,
    principal: &str,
    host: IpAddr,
    operation: Operation,
    resource_type: ResourceType,
) -> Decision {
    let probe = Action {
        principal,
        host,
        operation,
        resource_type,
        name: "hardcode",
    };
    if let d @ Decision::Allow(_) = decide(acls.clone(), policy, probe) {
        return d;
    }
    let mut deny_literal = HashSet::new();
    let mut deny_prefixed = HashSet::new();
    let mut allows: Vec<(&str, PatternType)> = Vec::new();
    for b in acls {
        if b.resource_type != resource_type
            || !b.matches_principal_and_host(principal, host)
            || !(b.operation == operation || b.operation == Operation::All)
        {
            continue;
        }
        let name = b.resource_name.as_str();
        match (b.permission, b.pattern_type) {
            (Permission::Deny, PatternType::Literal) if name == "*" => {
                return Decision::Deny(Reason::DenyAcl)
            }
            (Permission::Deny, PatternType::Literal) => {
                deny_literal.insert(name);
            }
            (Permission::Deny, PatternType::Prefixed) => {
                deny_prefixed.insert(name);
            }
            (Permission::Allow, PatternType::Literal) if name == "*" => {
                return Decision::Allow(Reason::AllowAcl)
            }
            (Permission::Allow, pattern) => allows.push((name, pattern)),
        }
    }
    let dominated = |name: &str, pattern: PatternType| {
        (pattern == PatternType::Literal && deny_literal.contains(name))
            || name
                .char_indices()
                .map(|(i, c)| &name[..i + c.len_utf8()])
                .any(|prefix| deny_prefixed.contains(prefix))
    };
    if allows
        .iter()
        .any(|&(name, pattern)| !dominated(name, pattern))
    {
        Decision::Allow(Reason::AllowAcl)
    } else {
        Decision::Deny(Reason::NoMatchingAllow)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use veil_meta::acl::{PatternType as P, CLUSTER_NAME};

    use super::*;
    use Operation as O;
    use ResourceType as R;

    const HOST: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1));

    fn acl(
        principal: &str,
        kind: R,
        name: &str,
        pattern: P,
        op: O,
        perm: Permission,
    ) -> AclBinding {
        AclBinding {
            resource_type: kind,
            resource_name: name.into(),
            pattern_type: pattern,
            principal: principal.into(),
            host: "*".into(),
            operation: op,
            permission: perm,
        }
    }

    fn allow(principal: &str, kind: R, name: &str, pattern: P, op: O) -> AclBinding {
        acl(principal, kind, name, pattern, op, Permission::Allow)
    }

    fn deny(principal: &str, kind: R, name: &str, pattern: P, op: O) -> AclBinding {
        acl(principal, kind, name, pattern, op, Permission::Deny)
    }

    const STRICT: Policy<'static> = Policy {
        super_users: &[],
        allow_everyone_if_no_acl_found: false,
    };

    fn check(acls: &[AclBinding], principal: &str, op: O, kind: R, name: &str) -> Decision {
        let action = Action {
            principal,
            host: HOST,
            operation: op,
            resource_type: kind,
            name,
        };
        decide(acls, STRICT, action)
    }

    #[test]
    fn literal_and_prefixed_allows() {
        let acls = [
            allow("User:alice", R::Topic, "orders", P::Literal, O::Read),
            allow("User:alice", R::Topic, "logs-", P::Prefixed, O::Write),
        ];
        let ok = |op, name| check(&acls, "User:alice", op, R::Topic, name).allowed();
        assert!(ok(O::Read, "orders"));
        assert!(!ok(O::Write, "orders"));
        assert!(!ok(O::Read, "orders2"), "a literal is not a prefix");
        assert!(ok(O::Write, "logs-eu"));
        assert!(ok(O::Write, "logs-"));
        assert!(!ok(O::Write, "logs"));
        assert!(!check(&acls, "User:bob", O::Read, R::Topic, "orders").allowed());
        assert!(!check(&acls, "User:alice", O::Read, R::Group, "orders").allowed());
    }

    #[test]
    fn deny_beats_allow_including_all_and_wildcards() {
        let acls = [
            allow("User:*", R::Topic, "*", P::Literal, O::All),
            deny("User:mallory", R::Topic, "secret", P::Prefixed, O::Read),
        ];
        assert_eq!(
            check(&acls, "User:mallory", O::Read, R::Topic, "secret-1"),
            Decision::Deny(Reason::DenyAcl)
        );
        assert!(check(&acls, "User:mallory", O::Write, R::Topic, "secret-1").allowed());
        assert!(
            check(&acls, "User:mallory", O::Describe, R::Topic, "secret-1").allowed(),
            "a DENY READ does not deny the DESCRIBE it would imply"
        );
        let acls = [
            allow("User:alice", R::Topic, "t", P::Literal, O::Read),
            deny("User:*", R::Topic, "t", P::Literal, O::All),
        ];
        assert_eq!(
            check(&acls, "User:alice", O::Read, R::Topic, "t"),
            Decision::Deny(Reason::DenyAcl)
        );
    }

    #[test]
    fn implied_operations() {
        for granted in [O::Read, O::Write, O::Delete, O::Alter] {
            let acls = [allow("User:a", R::Topic, "t", P::Literal, granted)];
            assert!(check(&acls, "User:a", O::Describe, R::Topic, "t").allowed());
            assert!(!check(&acls, "User:a", O::DescribeConfigs, R::Topic, "t").allowed());
        }
        let acls = [allow("User:a", R::Topic, "t", P::Literal, O::AlterConfigs)];
        assert!(check(&acls, "User:a", O::DescribeConfigs, R::Topic, "t").allowed());
        assert!(!check(&acls, "User:a", O::Describe, R::Topic, "t").allowed());
        let acls = [allow("User:a", R::Topic, "t", P::Literal, O::Describe)];
        assert!(
            !check(&acls, "User:a", O::Read, R::Topic, "t").allowed(),
            "no upward implication"
        );
        let acls = [allow("User:a", R::Topic, "t", P::Literal, O::Create)];
        assert!(!check(&acls, "User:a", O::Describe, R::Topic, "t").allowed());
    }

    #[test]
    fn hosts_must_match() {
        let mut b = allow("User:a", R::Topic, "t", P::Literal, O::Read);
        b.host = "10.0.0.9".into();
        assert_eq!(
            check(&[b.clone()], "User:a", O::Read, R::Topic, "t"),
            Decision::Deny(Reason::NoMatchingAllow)
        );
        b.host = "10.0.0.1".into();
        assert!(check(&[b], "User:a", O::Read, R::Topic, "t").allowed());
    }

    #[test]
    fn super_users_and_the_no_acl_rule() {
        let acls = [deny(
            "User:root",
            R::Cluster,
            CLUSTER_NAME,
            P::Literal,
            O::All,
        )];
        let supers = ["User:root".to_owned()];
        let policy = Policy {
            super_users: &supers,
            allow_everyone_if_no_acl_found: false,
        };
        let action = Action {
            principal: "User:root",
            host: HOST,
            operation: O::Alter,
            resource_type: R::Cluster,
            name: CLUSTER_NAME,
        };
        assert_eq!(
            decide(&acls, policy, action),
            Decision::Allow(Reason::SuperUser)
        );
        assert_eq!(
            check(&[], "User:a", O::Read, R::Topic, "t"),
            Decision::Deny(Reason::NoAclFound)
        );
        let open = Policy {
            super_users: &[],
            allow_everyone_if_no_acl_found: true,
        };
        let action = Action {
            principal: "User:a",
            operation: O::Read,
            resource_type: R::Topic,
            name: "t",
            ..action
        };
        assert!(decide(&[], open, action).allowed());
        // Any binding on the resource, even for someone else, ends "no ACL found".
        let other = [allow("User:b", R::Topic, "t", P::Literal, O::Read)];
        assert_eq!(
            decide(&other, open, action),
            Decision::Deny(Reason::NoMatchingAllow)
        );
        let elsewhere = [allow("User:b", R::Topic, "u", P::Literal, O::Read)];
        assert!(decide(&elsewhere, open, action).allowed());
    }

    #[test]
    fn by_resource_type_needs_an_undominated_allow() {
        let any = |acls: &[AclBinding]| {
            decide_any(acls, STRICT, "User:a", HOST, O::Write, R::Topic).allowed()
        };
        assert!(!any(&[]));
        assert!(any(&[allow("User:a", R::Topic, "t", P::Literal, O::Write)]));
        assert!(!any(&[allow("User:a", R::Topic, "t", P::Literal, O::Read)]));
        assert!(any(&[allow("User:a", R::Topic, "t", P::Literal, O::All)]));
        assert!(!any(&[
            allow("User:a", R::Topic, "t", P::Literal, O::Write),
            deny("User:a", R::Topic, "t", P::Literal, O::Write),
        ]));
        assert!(!any(&[
            allow("User:a", R::Topic, "team-x", P::Prefixed, O::Write),
            deny("User:a", R::Topic, "team", P::Prefixed, O::Write),
        ]));
        assert!(any(&[
            allow("User:a", R::Topic, "team", P::Prefixed, O::Write),
            deny("User:a", R::Topic, "team-x", P::Prefixed, O::Write),
        ]));
        assert!(!any(&[
            allow("User:a", R::Topic, "t", P::Literal, O::Write),
            deny("User:*", R::Topic, "*", P::Literal, O::Write),
        ]));
        assert!(any(&[allow("User:*", R::Topic, "*", P::Literal, O::Write)]));
    }

    fn op() -> impl Strategy<Value = O> {
        prop::sample::select(O::ALL_VALUES.to_vec())
    }

    fn pattern() -> impl Strategy<Value = P> {
        prop::sample::select(vec![P::Literal, P::Prefixed])
    }

    fn binding() -> impl Strategy<Value = AclBinding> {
        (
            prop::sample::select(vec!["User:a", "User:b", "User:*"]),
            prop::sample::select(vec!["t", "topic", "topic-1", "*", "to"]),
            pattern(),
            op(),
            any::<bool>(),
            prop::sample::select(vec!["*", "10.0.0.1", "10.0.0.2"]),
        )
            .prop_map(|(principal, name, pattern, op, is_allow, host)| {
                let mut b = if is_allow {
                    allow(principal, R::Topic, name, pattern, op)
                } else {
                    deny(principal, R::Topic, name, pattern, op)
                };
                b.host = host.into();
                b
            })
    }

    proptest! {
        /// Adding a DENY that applies to (principal, operation, resource) to
        /// any set of bindings refuses the action, however many ALLOWs match.
        #[test]
        fn a_matching_deny_always_wins(
            mut acls in prop::collection::vec(binding(), 0..12),
            wanted in op(),
            name in prop::sample::select(vec!["t", "topic", "topic-1", "top"]),
            deny_all in any::<bool>(),
            deny_pattern in pattern(),
            wildcard_principal in any::<bool>(),
            at in any::<prop::sample::Index>(),
        ) {
            let principal = if wildcard_principal { "User:*" } else { "User:a" };
            let deny_name = if deny_pattern == P::Prefixed { &name[..1] } else { name };
            let deny_op = if deny_all { O::All } else { wanted };
            let d = deny(principal, R::Topic, deny_name, deny_pattern, deny_op);
            let index = at.index(acls.len() + 1);
            acls.insert(index, d);
            // Also an explicit ALLOW for exactly this, to make sure it loses.
            acls.push(allow("User:a", R::Topic, name, P::Literal, wanted));
            let decision = check(&acls, "User:a", wanted, R::Topic, name);
            prop_assert_eq!(decision, Decision::Deny(Reason::DenyAcl));
        }

        /// Without a super user, an allowed action always has a matching ALLOW
        /// (or no ACL at all under allow-everyone); decide never panics.
        #[test]
        fn allows_need_a_reason(
            acls in prop::collection::vec(binding(), 0..12),
            wanted in op(),
            name in prop::sample::select(vec!["t", "topic", "topic-1", "x"]),
        ) {
            let decision = check(&acls, "User:a", wanted, R::Topic, name);
            if decision.allowed() {
                let has_allow = acls.iter().any(|b| b.permission == Permission::Allow
                    && b.matches_resource(R::Topic, name)
                    && b.matches_principal_and_host("User:a", HOST)
                    && grants(b.operation, wanted));
                prop_assert!(has_allow);
            }
        }
    }
}
