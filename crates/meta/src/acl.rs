//! Kafka's ACL vocabulary: resource patterns, operations, permissions, the
//! bindings stored in cluster metadata and the filters that select them.
//!
//! Codes are Kafka's wire codes (`AclOperation`, `ResourceType`,
//! `PatternType`, `AclPermissionType`), so handlers convert at the edge and
//! nothing else needs to know them. The authorization decision itself lives in
//! the broker; this module only knows what a binding *is* and which bindings a
//! filter selects (DescribeAcls, DeleteAcls).

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// The one name a CLUSTER resource may have (Kafka's `kafka-cluster`).
pub const CLUSTER_NAME: &str = "kafka-cluster";
/// A LITERAL resource name that matches every resource of its type.
pub const WILDCARD_RESOURCE: &str = "*";
/// The principal that matches every user.
pub const WILDCARD_PRINCIPAL: &str = "User:*";
/// The host that matches every client address.
pub const WILDCARD_HOST: &str = "*";

/// Defines a Kafka enum with its wire codes and a lowercase label.
macro_rules! kafka_enum {
    ($(#[$doc:meta])* $name:ident { $($variant:ident = $code:literal, $label:literal;)* }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $($variant,)* }

        impl $name {
            /// Every value, in code order.
            pub const ALL_VALUES: &'static [$name] = &[$($name::$variant,)*];

            /// Kafka's wire code.
            pub fn code(self) -> i8 {
                match self { $($name::$variant => $code,)* }
            }

            /// The value of a wire code; `None` for UNKNOWN, ANY, MATCH and
            /// codes Kafka does not define (a filter-only code is not a value).
            pub fn from_code(code: i8) -> Option<$name> {
                match code { $($code => Some($name::$variant),)* _ => None }
            }

            /// A stable lowercase name for CLI flags, logs and metric labels.
            pub fn label(self) -> &'static str {
                match self { $($name::$variant => $label,)* }
            }

            /// Parses [`Self::label`], ignoring case, `-` and `_`.
            pub fn parse(text: &str) -> Option<$name> {
                let norm = |s: &str| s.to_ascii_lowercase().replace(['-', '_'], "");
                let wanted = norm(text);
                Self::ALL_VALUES.iter().copied().find(|v| norm(v.label()) == wanted)
            }
        }
    };
}

kafka_enum!(
    /// What an ACL protects (Kafka's `ResourceType`).
    ResourceType {
        Topic = 2, "topic";
        Group = 3, "group";
        Cluster = 4, "cluster";
        TransactionalId = 5, "transactional_id";
        DelegationToken = 6, "delegation_token";
        User = 7, "user";
    }
);

kafka_enum!(
    /// How a binding's resource name is matched (Kafka's `PatternType`).
    PatternType {
        Literal = 3, "literal";
        Prefixed = 4, "prefixed";
    }
);

kafka_enum!(
    /// What a principal wants to do (Kafka's `AclOperation`).
    Operation {
        All = 2, "all";
        Read = 3, "read";
        Write = 4, "write";
        Create = 5, "create";
        Delete = 6, "delete";
        Alter = 7, "alter";
        Describe = 8, "describe";
        ClusterAction = 9, "cluster_action";
        DescribeConfigs = 10, "describe_configs";
        AlterConfigs = 11, "alter_configs";
        IdempotentWrite = 12, "idempotent_write";
        CreateTokens = 13, "create_tokens";
        DescribeTokens = 14, "describe_tokens";
    }
);

kafka_enum!(
    /// Whether a binding grants or refuses (Kafka's `AclPermissionType`).
    Permission {
        Deny = 2, "deny";
        Allow = 3, "allow";
    }
);

impl ResourceType {
    /// The operations Kafka defines on this resource type
    /// (`AclEntry.supportedOperations`), which authorized-operation bitfields
    /// are computed over.
    pub fn supported_operations(self) -> &'static [Operation] {
        use Operation as O;
        match self {
            ResourceType::Topic => &[
                O::Read,
                O::Write,
                O::Create,
                O::Describe,
                O::Delete,
                O::Alter,
                O::DescribeConfigs,
                O::AlterConfigs,
            ],
            ResourceType::Group => &[O::Read, O::Describe, O::Delete],
            ResourceType::Cluster => &[
                O::Create,
                O::ClusterAction,
                O::DescribeConfigs,
                O::AlterConfigs,
                O::IdempotentWrite,
                O::Alter,
                O::Describe,
            ],
            ResourceType::TransactionalId => &[O::Describe, O::Write],
            ResourceType::DelegationToken => &[O::Describe],
            ResourceType::User => &[O::CreateTokens, O::DescribeTokens],
        }
    }
}

/// "Principal P is Allowed/Denied Operation O From Host H on resources
/// matching pattern R" — one stored ACL.
///
/// Field order is the sort order, so bindings of one resource type sit
/// together in [`crate::MetaState`]'s set.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct AclBinding {
    pub resource_type: ResourceType,
    pub resource_name: String,
    pub pattern_type: PatternType,
    /// `Type:name`, e.g. `User:alice`, or [`WILDCARD_PRINCIPAL`].
    pub principal: String,
    /// A client IP address or [`WILDCARD_HOST`].
    pub host: String,
    pub operation: Operation,
    pub permission: Permission,
}

impl AclBinding {
    /// Kafka's rules for a binding that may be stored (CreateAcls).
    pub fn validate(&self) -> Result<()> {
        let invalid = |why: String| Err(Error::InvalidAcl(why));
        if self.resource_name.is_empty() {
            return invalid("the resource name must not be empty".into());
        }
        if self.resource_type == ResourceType::Cluster && self.resource_name != CLUSTER_NAME {
            return invalid(format!(
                "the only valid name for the CLUSTER resource is '{CLUSTER_NAME}'"
            ));
        }
        match self.principal.split_once(':') {
            Some((kind, _)) if !kind.is_empty() => {}
            _ => {
                return invalid(format!(
                    "principal '{}' is not of the form Type:name (e.g. User:alice)",
                    self.principal
                ))
            }
        }
        if self.host.is_empty() {
            return invalid("the host must be an IP address or '*'".into());
        }
        Ok(())
    }

    /// Whether this binding's pattern covers the resource `name` of `kind`.
    pub fn matches_resource(&self, kind: ResourceType, name: &str) -> bool {
        self.resource_type == kind
            && match self.pattern_type {
                PatternType::Literal => {
                    self.resource_name == name || self.resource_name == WILDCARD_RESOURCE
                }
                PatternType::Prefixed => name.starts_with(&self.resource_name),
            }
    }

    /// Whether this binding applies to `principal` connecting from `host`.
    pub fn matches_principal_and_host(&self, principal: &str, host: IpAddr) -> bool {
        (self.principal == principal || self.principal == WILDCARD_PRINCIPAL)
            && host_matches(&self.host, host)
    }
}

/// `*` matches everything; otherwise the ACL host is compared as an address
/// (so `::ffff:10.0.0.1` and `10.0.0.1` agree), falling back to text.
fn host_matches(acl_host: &str, client: IpAddr) -> bool {
    if acl_host == WILDCARD_HOST {
        return true;
    }
    match acl_host.parse::<IpAddr>() {
        Ok(ip) => ip.to_canonical() == client.to_canonical(),
        Err(_) => acl_host == client.to_string(),
    }
}

/// How a filter selects resource patterns (Kafka's filter `PatternType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatternFilter {
    /// Any pattern type; a name must equal the binding's name exactly.
    Any,
    /// Every binding that would apply to the named resource: the literal
    /// name, the literal wildcard and every prefix of it.
    Match,
    /// Only this pattern type; a name must equal the binding's name exactly.
    Exactly(PatternType),
}

impl PatternFilter {
    /// Decodes Kafka's filter code (ANY = 1, MATCH = 2, LITERAL, PREFIXED).
    pub fn from_code(code: i8) -> Option<PatternFilter> {
        match code {
            1 => Some(PatternFilter::Any),
            2 => Some(PatternFilter::Match),
            other => PatternType::from_code(other).map(PatternFilter::Exactly),
        }
    }
}

/// Selects bindings (DescribeAcls, DeleteAcls). `None` means ANY / null.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AclFilter {
    pub resource_type: Option<ResourceType>,
    pub resource_name: Option<String>,
    pub pattern: PatternFilter,
    pub principal: Option<String>,
    pub host: Option<String>,
    pub operation: Option<Operation>,
    pub permission: Option<Permission>,
}

/// Kafka's filter code for ANY in the operation, permission and resource type enums.
const ANY_CODE: i8 = 1;

impl AclFilter {
    /// A filter that selects every binding.
    pub fn any() -> AclFilter {
        AclFilter {
            resource_type: None,
            resource_name: None,
            pattern: PatternFilter::Any,
            principal: None,
            host: None,
            operation: None,
            permission: None,
        }
    }

    /// Builds a filter from wire codes; UNKNOWN or undefined codes are an
    /// error, as Kafka refuses "indefinite" filters with INVALID_REQUEST.
    pub fn from_codes(
        resource_type: i8,
        pattern: i8,
        operation: i8,
        permission: i8,
    ) -> Result<AclFilter> {
        fn any_or<T>(code: i8, what: &str, parse: fn(i8) -> Option<T>) -> Result<Option<T>> {
            if code == ANY_CODE {
                return Ok(None);
            }
            parse(code)
                .map(Some)
                .ok_or_else(|| Error::InvalidAcl(format!("unknown {what} code {code} in filter")))
        }
        Ok(AclFilter {
            resource_type: any_or(resource_type, "resource type", ResourceType::from_code)?,
            pattern: PatternFilter::from_code(pattern).ok_or_else(|| {
                Error::InvalidAcl(format!("unknown pattern type code {pattern} in filter"))
            })?,
            operation: any_or(operation, "operation", Operation::from_code)?,
            permission: any_or(permission, "permission type", Permission::from_code)?,
            ..AclFilter::any()
        })
    }

    /// Kafka's `AclBindingFilter.matches`: exact comparisons, except that a
    /// MATCH pattern expands to the bindings that apply to the named resource.
    pub fn matches(&self, b: &AclBinding) -> bool {
        let is = |want: Option<&str>, have: &str| want.is_none_or(|w| w == have);
        if self.resource_type.is_some_and(|t| t != b.resource_type)
            || self.operation.is_some_and(|o| o != b.operation)
            || self.permission.is_some_and(|p| p != b.permission)
            || !is(self.principal.as_deref(), &b.principal)
            || !is(self.host.as_deref(), &b.host)
        {
            return false;
        }
        match self.pattern {
            PatternFilter::Exactly(p) if p != b.pattern_type => false,
            PatternFilter::Any | PatternFilter::Exactly(_) => {
                is(self.resource_name.as_deref(), &b.resource_name)
            }
            PatternFilter::Match => match &self.resource_name {
                None => true,
                Some(name) => b.matches_resource(b.resource_type, name),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binding(kind: ResourceType, name: &str, pattern: PatternType) -> AclBinding {
        AclBinding {
            resource_type: kind,
            resource_name: name.into(),
            pattern_type: pattern,
            principal: "User:alice".into(),
            host: "*".into(),
            operation: Operation::Read,
            permission: Permission::Allow,
        }
    }

    #[test]
    fn codes_round_trip_and_filter_codes_are_not_values() {
        for op in Operation::ALL_VALUES {
            assert_eq!(Operation::from_code(op.code()), Some(*op));
            assert_eq!(Operation::parse(op.label()), Some(*op));
        }
        assert_eq!(
            Operation::parse("Describe-Configs"),
            Some(Operation::DescribeConfigs)
        );
        for code in [0, 1, 15, -1] {
            assert_eq!(Operation::from_code(code), None, "{code}");
        }
        assert_eq!(PatternType::from_code(2), None, "MATCH only in filters");
        assert_eq!(ResourceType::Cluster.code(), 4);
        assert_eq!(Permission::Allow.code(), 3);
    }

    #[test]
    fn bindings_are_validated_like_kafka() {
        let ok = binding(ResourceType::Topic, "t", PatternType::Literal);
        ok.validate().unwrap();
        let empty = binding(ResourceType::Topic, "", PatternType::Literal);
        assert!(empty.validate().is_err());
        let cluster = binding(ResourceType::Cluster, "other", PatternType::Literal);
        assert!(cluster.validate().is_err());
        binding(ResourceType::Cluster, CLUSTER_NAME, PatternType::Literal)
            .validate()
            .unwrap();
        let mut bad_principal = ok.clone();
        bad_principal.principal = "alice".into();
        assert!(bad_principal.validate().is_err());
        bad_principal.principal = ":alice".into();
        assert!(bad_principal.validate().is_err());
    }

    #[test]
    fn literal_prefixed_and_wildcard_resources() {
        let lit = binding(ResourceType::Topic, "orders", PatternType::Literal);
        assert!(lit.matches_resource(ResourceType::Topic, "orders"));
        assert!(!lit.matches_resource(ResourceType::Topic, "orders-eu"));
        assert!(!lit.matches_resource(ResourceType::Group, "orders"));
        let pre = binding(ResourceType::Topic, "orders", PatternType::Prefixed);
        assert!(pre.matches_resource(ResourceType::Topic, "orders-eu"));
        assert!(pre.matches_resource(ResourceType::Topic, "orders"));
        assert!(!pre.matches_resource(ResourceType::Topic, "order"));
        let star = binding(ResourceType::Topic, "*", PatternType::Literal);
        assert!(star.matches_resource(ResourceType::Topic, "anything"));
        let star_prefix = binding(ResourceType::Topic, "*", PatternType::Prefixed);
        assert!(
            !star_prefix.matches_resource(ResourceType::Topic, "anything"),
            "a PREFIXED '*' is just the prefix '*'"
        );
    }

    #[test]
    fn principals_and_hosts() {
        let mut b = binding(ResourceType::Topic, "t", PatternType::Literal);
        let local: IpAddr = "10.0.0.1".parse().unwrap();
        let other: IpAddr = "10.0.0.2".parse().unwrap();
        assert!(b.matches_principal_and_host("User:alice", local));
        assert!(!b.matches_principal_and_host("User:bob", local));
        b.principal = WILDCARD_PRINCIPAL.into();
        assert!(b.matches_principal_and_host("User:bob", local));
        b.host = "10.0.0.1".into();
        assert!(b.matches_principal_and_host("User:bob", local));
        assert!(!b.matches_principal_and_host("User:bob", other));
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        assert!(b.matches_principal_and_host("User:bob", mapped));
    }

    #[test]
    fn filters_select_exactly_or_by_match() {
        let lit = binding(ResourceType::Topic, "orders", PatternType::Literal);
        let pre = binding(ResourceType::Topic, "ord", PatternType::Prefixed);
        let star = binding(ResourceType::Topic, "*", PatternType::Literal);
        let all = [lit.clone(), pre.clone(), star.clone()];
        let selected = |f: &AclFilter| all.iter().filter(|b| f.matches(b)).count();
        assert_eq!(selected(&AclFilter::any()), 3);
        let named = AclFilter {
            resource_name: Some("orders".into()),
            ..AclFilter::any()
        };
        assert_eq!(selected(&named), 1, "ANY compares names exactly");
        let matching = AclFilter {
            pattern: PatternFilter::Match,
            ..named.clone()
        };
        assert_eq!(
            selected(&matching),
            3,
            "MATCH: literal, prefix and wildcard"
        );
        let prefixed = AclFilter {
            pattern: PatternFilter::Exactly(PatternType::Prefixed),
            resource_name: None,
            ..AclFilter::any()
        };
        assert_eq!(selected(&prefixed), 1);
        let by_op = AclFilter {
            operation: Some(Operation::Write),
            ..AclFilter::any()
        };
        assert_eq!(selected(&by_op), 0);
        let by_principal = AclFilter {
            principal: Some("User:alice".into()),
            permission: Some(Permission::Allow),
            ..AclFilter::any()
        };
        assert_eq!(selected(&by_principal), 3);
    }

    #[test]
    fn acl_commands_store_dedupe_and_delete() {
        use crate::{MetaCommand, MetaState};
        let mut s = MetaState::default();
        let a = binding(ResourceType::Topic, "t", PatternType::Literal);
        let b = binding(ResourceType::Group, "g", PatternType::Prefixed);
        let create = MetaCommand::CreateAcls {
            bindings: vec![a.clone(), b.clone(), a.clone()],
        };
        s.apply(1, &create).unwrap();
        s.apply(2, &create).unwrap();
        assert_eq!(s.acls().count(), 2, "identical bindings are stored once");
        let bad = MetaCommand::CreateAcls {
            bindings: vec![
                a.clone(),
                binding(ResourceType::Cluster, "x", PatternType::Literal),
            ],
        };
        assert!(matches!(s.apply(3, &bad), Err(Error::InvalidAcl(_))));
        assert_eq!(
            s.acls().count(),
            2,
            "a command with one invalid binding stores none"
        );
        let delete = MetaCommand::DeleteAcls {
            bindings: vec![a.clone()],
        };
        s.apply(3, &delete).unwrap();
        s.apply(4, &delete).unwrap();
        assert_eq!(s.acls().collect::<Vec<_>>(), vec![&b]);
    }

    #[test]
    fn acls_survive_a_snapshot_round_trip() {
        use crate::{MetaCommand, MetaState};
        let mut s = MetaState::default();
        let a = binding(ResourceType::Topic, "t", PatternType::Literal);
        let b = binding(ResourceType::TransactionalId, "tx", PatternType::Prefixed);
        let bindings = vec![a.clone(), b.clone()];
        s.apply(1, &MetaCommand::CreateAcls { bindings }).unwrap();
        let mut restored: MetaState =
            serde_json::from_slice(&serde_json::to_vec(&s).unwrap()).unwrap();
        let delete = MetaCommand::DeleteAcls { bindings: vec![a] };
        restored.apply(2, &delete).unwrap();
        assert_eq!(restored.acls().collect::<Vec<_>>(), vec![&b]);
    }

    #[test]
    fn unknown_filter_codes_are_refused() {
        assert!(AclFilter::from_codes(1, 1, 1, 1).is_ok());
        assert!(AclFilter::from_codes(0, 1, 1, 1).is_err(), "UNKNOWN type");
        assert!(
            AclFilter::from_codes(1, 0, 1, 1).is_err(),
            "UNKNOWN pattern"
        );
        assert!(
            AclFilter::from_codes(1, 1, 0, 1).is_err(),
            "UNKNOWN operation"
        );
        assert!(
            AclFilter::from_codes(1, 1, 1, 9).is_err(),
            "undefined permission"
        );
        let f = AclFilter::from_codes(2, 2, 3, 3).unwrap();
        assert_eq!(f.resource_type, Some(ResourceType::Topic));
        assert_eq!(f.pattern, PatternFilter::Match);
        assert_eq!(f.operation, Some(Operation::Read));
        assert_eq!(f.permission, Some(Permission::Allow));
    }
}
