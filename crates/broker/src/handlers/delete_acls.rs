//! DeleteAcls: remove the bindings each filter selects and report them.
//!
//! As in Kafka (KRaft): ALTER on the cluster is required (else every filter
//! is CLUSTER_AUTHORIZATION_FAILED); without an authorizer every filter is
//! SECURITY_DISABLED; a filter with an UNKNOWN or undefined code is
//! INVALID_REQUEST on its own. Filters are resolved to concrete bindings
//! here and committed as one command, so what the response lists is exactly
//! what was removed.

use std::collections::BTreeSet;

use kafka_protocol::messages::delete_acls_response::{
    DeleteAclsFilterResult, DeleteAclsMatchingAcl,
};
use kafka_protocol::messages::{DeleteAclsRequest, DeleteAclsResponse};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use veil_meta::acl::{AclBinding, Operation};
use veil_meta::MetaCommand;

use super::create_acls::{NOT_AUTHORIZED, NO_AUTHORIZER};
use super::describe_acls::filter;
use crate::context::RequestContext;

fn failed(error: ResponseError, message: String) -> DeleteAclsFilterResult {
    DeleteAclsFilterResult::default()
        .with_error_code(error.code())
        .with_error_message(Some(StrBytes::from_string(message)))
}

fn matching(b: &AclBinding) -> DeleteAclsMatchingAcl {
    DeleteAclsMatchingAcl::default()
        .with_error_message(None)
        .with_resource_type(b.resource_type.code())
        .with_resource_name(StrBytes::from_string(b.resource_name.clone()))
        .with_pattern_type(b.pattern_type.code())
        .with_principal(StrBytes::from_string(b.principal.clone()))
        .with_host(StrBytes::from_string(b.host.clone()))
        .with_operation(b.operation.code())
        .with_permission_type(b.permission.code())
}

pub async fn handle(ctx: &RequestContext, req: DeleteAclsRequest) -> DeleteAclsResponse {
    let all = |error: ResponseError, message: &str| {
        ctx.count(error.code());
        let results = req
            .filters
            .iter()
            .map(|_| failed(error, message.to_owned()))
            .collect();
        DeleteAclsResponse::default().with_filter_results(results)
    };
    if !ctx.authorize_cluster(Operation::Alter) {
        return all(ResponseError::ClusterAuthorizationFailed, NOT_AUTHORIZED);
    }
    if !ctx.broker.authorizer.enabled() {
        return all(ResponseError::SecurityDisabled, NO_AUTHORIZER);
    }
    let acls = ctx.broker.authorizer.acls();
    let selected: Vec<Result<Vec<&AclBinding>, String>> = req
        .filters
        .iter()
        .map(|f| {
            let f = filter(
                f.resource_type_filter,
                f.resource_name_filter.as_ref(),
                f.pattern_type_filter,
                f.principal_filter.as_ref(),
                f.host_filter.as_ref(),
                f.operation,
                f.permission_type,
            )?;
            Ok(acls.iter().filter(|b| f.matches(b)).collect())
        })
        .collect();
    // A binding selected by two filters is removed once, reported under both.
    let doomed: BTreeSet<&AclBinding> = selected.iter().flatten().flatten().copied().collect();
    let committed = if doomed.is_empty() {
        Ok(())
    } else {
        let bindings = doomed.into_iter().cloned().collect();
        ctx.broker
            .commit(MetaCommand::DeleteAcls { bindings })
            .await
    };
    let results = selected
        .into_iter()
        .map(|s| match (s, &committed) {
            (Err(message), _) => {
                ctx.count(ResponseError::InvalidRequest.code());
                failed(ResponseError::InvalidRequest, message)
            }
            (Ok(bindings), Ok(())) => DeleteAclsFilterResult::default()
                .with_error_message(None)
                .with_matching_acls(bindings.into_iter().map(matching).collect()),
            (Ok(_), Err(e)) => {
                let code = ctx.code(e);
                let result = failed(ResponseError::UnknownServerError, e.client_message());
                result.with_error_code(code)
            }
        })
        .collect();
    DeleteAclsResponse::default().with_filter_results(results)
}
