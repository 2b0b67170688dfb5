//! ACL administration (CreateAcls, DescribeAcls, DeleteAcls), with Kafka's
//! wire codes so the SDK works against any Kafka-compatible broker.

use kafka_protocol::messages::create_acls_request::AclCreation;
use kafka_protocol::messages::delete_acls_request::DeleteAclsFilter;
use kafka_protocol::messages::{CreateAclsRequest, DeleteAclsRequest, DescribeAclsRequest};
use kafka_protocol::protocol::StrBytes;

use crate::admin::{message, Admin};
use crate::error::{Error, Result};

/// One ACL binding. Codes are Kafka's: resource type (TOPIC = 2, GROUP = 3,
/// CLUSTER = 4, TRANSACTIONAL_ID = 5), pattern type (LITERAL = 3,
/// PREFIXED = 4), operation (ALL = 2, READ = 3, ...), permission (DENY = 2,
/// ALLOW = 3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acl {
    pub resource_type: i8,
    pub resource_name: String,
    pub pattern_type: i8,
    pub principal: String,
    pub host: String,
    pub operation: i8,
    pub permission: i8,
}

/// Selects bindings: code 1 is ANY (pattern type 2 is MATCH), `None` any value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AclFilter {
    pub resource_type: i8,
    pub resource_name: Option<String>,
    pub pattern_type: i8,
    pub principal: Option<String>,
    pub host: Option<String>,
    pub operation: i8,
    pub permission: i8,
}

fn text(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_owned())
}

fn opt(s: Option<&String>) -> Option<StrBytes> {
    s.map(|s| text(s))
}

impl Admin {
    /// Stores `acls`; fails with the first error the broker reports.
    pub async fn create_acls(&mut self, acls: &[Acl]) -> Result<()> {
        let creations = acls
            .iter()
            .map(|a| {
                AclCreation::default()
                    .with_resource_type(a.resource_type)
                    .with_resource_name(text(&a.resource_name))
                    .with_resource_pattern_type(a.pattern_type)
                    .with_principal(text(&a.principal))
                    .with_host(text(&a.host))
                    .with_operation(a.operation)
                    .with_permission_type(a.permission)
            })
            .collect();
        let req = CreateAclsRequest::default().with_creations(creations);
        let resp = self.connection().send(&req).await?;
        match resp.results.iter().find(|r| r.error_code != 0) {
            Some(r) => Err(Error::kafka(
                "cannot create ACLs",
                r.error_code,
                message(r.error_message.as_ref()),
            )),
            None => Ok(()),
        }
    }

    /// The bindings `filter` selects.
    pub async fn describe_acls(&mut self, filter: &AclFilter) -> Result<Vec<Acl>> {
        let req = DescribeAclsRequest::default()
            .with_resource_type_filter(filter.resource_type)
            .with_resource_name_filter(opt(filter.resource_name.as_ref()))
            .with_pattern_type_filter(filter.pattern_type)
            .with_principal_filter(opt(filter.principal.as_ref()))
            .with_host_filter(opt(filter.host.as_ref()))
            .with_operation(filter.operation)
            .with_permission_type(filter.permission);
        let resp = self.connection().send(&req).await?;
        if resp.error_code != 0 {
            return Err(Error::kafka(
                "cannot describe ACLs",
                resp.error_code,
                message(resp.error_message.as_ref()),
            ));
        }
        Ok(resp
            .resources
            .iter()
            .flat_map(|r| {
                r.acls.iter().map(|a| Acl {
                    resource_type: r.resource_type,
                    resource_name: r.resource_name.to_string(),
                    pattern_type: r.pattern_type,
                    principal: a.principal.to_string(),
                    host: a.host.to_string(),
                    operation: a.operation,
                    permission: a.permission_type,
                })
            })
            .collect())
    }

    /// Removes what each filter selects; returns the removed bindings.
    pub async fn delete_acls(&mut self, filters: &[AclFilter]) -> Result<Vec<Acl>> {
        let filters = filters
            .iter()
            .map(|f| {
                DeleteAclsFilter::default()
                    .with_resource_type_filter(f.resource_type)
                    .with_resource_name_filter(opt(f.resource_name.as_ref()))
                    .with_pattern_type_filter(f.pattern_type)
                    .with_principal_filter(opt(f.principal.as_ref()))
                    .with_host_filter(opt(f.host.as_ref()))
                    .with_operation(f.operation)
                    .with_permission_type(f.permission)
            })
            .collect();
        let resp = self
            .connection()
            .send(&DeleteAclsRequest::default().with_filters(filters))
            .await?;
        let mut removed = Vec::new();
        for r in resp.filter_results {
            if r.error_code != 0 {
                return Err(Error::kafka(
                    "cannot delete ACLs",
                    r.error_code,
                    message(r.error_message.as_ref()),
                ));
            }
            removed.extend(r.matching_acls.into_iter().map(|a| Acl {
                resource_type: a.resource_type,
                resource_name: a.resource_name.to_string(),
                pattern_type: a.pattern_type,
                principal: a.principal.to_string(),
                host: a.host.to_string(),
                operation: a.operation,
                permission: a.permission_type,
            }));
        }
        Ok(removed)
    }
}
