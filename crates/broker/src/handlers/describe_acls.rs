//! DescribeAcls: the stored bindings a filter selects, grouped by resource
//! pattern.
//!
//! As in Kafka: DESCRIBE on the cluster is required (else
//! CLUSTER_AUTHORIZATION_FAILED); without an authorizer the answer is
//! SECURITY_DISABLED; a filter with an UNKNOWN or undefined code is
//! INVALID_REQUEST.

use std::collections::BTreeMap;

use kafka_protocol::messages::describe_acls_response::{AclDescription, DescribeAclsResource};
use kafka_protocol::messages::{DescribeAclsRequest, DescribeAclsResponse};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use veil_meta::acl::{AclFilter, Operation};

use super::create_acls::{NOT_AUTHORIZED, NO_AUTHORIZER};
use crate::context::RequestContext;

/// The filter of a DescribeAcls or DeleteAcls request.
pub(crate) fn filter(
    resource_type: i8,
    resource_name: Option<&StrBytes>,
    pattern: i8,
    principal: Option<&StrBytes>,
    host: Option<&StrBytes>,
    operation: i8,
    permission: i8,
) -> Result<AclFilter, String> {
    let text = |s: Option<&StrBytes>| s.map(ToString::to_string);
    Ok(AclFilter {
        resource_name: text(resource_name),
        principal: text(principal),
        host: text(host),
        ..AclFilter::from_codes(resource_type, pattern, operation, permission)
            .map_err(|e| e.to_string())?
    })
}

pub async fn handle(ctx: &RequestContext, req: DescribeAclsRequest) -> DescribeAclsResponse {
    let fail = |error: ResponseError, message: String| {
        ctx.count(error.code());
        DescribeAclsResponse::default()
            .with_error_code(error.code())
            .with_error_message(Some(StrBytes::from_string(message)))
    };
    if !ctx.authorize_cluster(Operation::Describe) {
        return fail(
            ResponseError::ClusterAuthorizationFailed,
            NOT_AUTHORIZED.into(),
        );
    }
    if !ctx.broker.authorizer.enabled() {
        return fail(ResponseError::SecurityDisabled, NO_AUTHORIZER.into());
    }
    let filter = match filter(
        req.resource_type_filter,
        req.resource_name_filter.as_ref(),
        req.pattern_type_filter,
        req.principal_filter.as_ref(),
        req.host_filter.as_ref(),
        req.operation,
        req.permission_type,
    ) {
        Ok(f) => f,
        Err(message) => return fail(ResponseError::InvalidRequest, message),
    };
    // Bindings are sorted by pattern first, so grouping keeps Kafka's shape:
    // one resource entry per (type, name, pattern type).
    let mut resources: BTreeMap<_, Vec<AclDescription>> = BTreeMap::new();
    for b in ctx
        .broker
        .authorizer
        .acls()
        .iter()
        .filter(|b| filter.matches(b))
    {
        resources
            .entry((b.resource_type, b.resource_name.clone(), b.pattern_type))
            .or_default()
            .push(
                AclDescription::default()
                    .with_principal(StrBytes::from_string(b.principal.clone()))
                    .with_host(StrBytes::from_string(b.host.clone()))
                    .with_operation(b.operation.code())
                    .with_permission_type(b.permission.code()),
            );
    }
    let resources = resources
        .into_iter()
        .map(|((kind, name, pattern), acls)| {
            DescribeAclsResource::default()
                .with_resource_type(kind.code())
                .with_resource_name(StrBytes::from_string(name))
                .with_pattern_type(pattern.code())
                .with_acls(acls)
        })
        .collect();
    DescribeAclsResponse::default()
        .with_error_message(None)
        .with_resources(resources)
}
