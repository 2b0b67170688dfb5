//! CreateAcls: store ACL bindings in cluster metadata.
//!
//! As in Kafka: the caller needs ALTER on the cluster (else every creation is
//! CLUSTER_AUTHORIZATION_FAILED); without an authorizer every creation is
//! SECURITY_DISABLED; a creation with an undefined code, a MATCH/ANY pattern,
//! an empty name, a CLUSTER name other than `kafka-cluster` or a principal
//! not of the form `Type:name` is INVALID_REQUEST on its own. The valid rest
//! is committed as one metadata command; storing a binding twice is a no-op.

use kafka_protocol::messages::create_acls_request::AclCreation;
use kafka_protocol::messages::create_acls_response::AclCreationResult;
use kafka_protocol::messages::{CreateAclsRequest, CreateAclsResponse};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use veil_meta::acl::{AclBinding, Operation, PatternType, Permission, ResourceType};
use veil_meta::MetaCommand;

use crate::context::RequestContext;

/// Kafka's message when no authorizer is configured.
pub(crate) const NO_AUTHORIZER: &str = "No Authorizer is configured.";
/// Our message for a principal lacking the cluster permission the ACL APIs need.
pub(crate) const NOT_AUTHORIZED: &str = "Cluster authorization failed.";

/// The binding a creation asks for, or why it is invalid.
fn binding(c: &AclCreation) -> Result<AclBinding, String> {
    let code = |what: &str, code: i8| format!("invalid {what} code {code}");
    let binding = AclBinding {
        resource_type: ResourceType::from_code(c.resource_type)
            .ok_or_else(|| code("resource type", c.resource_type))?,
        resource_name: c.resource_name.to_string(),
        pattern_type: PatternType::from_code(c.resource_pattern_type).ok_or_else(|| {
            code(
                "pattern type (use LITERAL or PREFIXED)",
                c.resource_pattern_type,
            )
        })?,
        principal: c.principal.to_string(),
        host: c.host.to_string(),
        operation: Operation::from_code(c.operation)
            .ok_or_else(|| code("operation", c.operation))?,
        permission: Permission::from_code(c.permission_type)
            .ok_or_else(|| code("permission type", c.permission_type))?,
    };
    binding.validate().map_err(|e| e.to_string())?;
    Ok(binding)
}

fn failed(error: ResponseError, message: &str) -> AclCreationResult {
    AclCreationResult::default()
        .with_error_code(error.code())
        .with_error_message(Some(StrBytes::from_string(message.to_owned())))
}

pub async fn handle(ctx: &RequestContext, req: CreateAclsRequest) -> CreateAclsResponse {
    let all = |error: ResponseError, message: &str| {
        ctx.count(error.code());
        let results = req
            .creations
            .iter()
            .map(|_| failed(error, message))
            .collect();
        CreateAclsResponse::default().with_results(results)
    };
    if !ctx.authorize_cluster(Operation::Alter) {
        return all(ResponseError::ClusterAuthorizationFailed, NOT_AUTHORIZED);
    }
    if !ctx.broker.authorizer.enabled() {
        return all(ResponseError::SecurityDisabled, NO_AUTHORIZER);
    }
    let parsed: Vec<Result<AclBinding, String>> = req.creations.iter().map(binding).collect();
    let valid: Vec<AclBinding> = parsed
        .iter()
        .filter_map(|p| p.as_ref().ok())
        .cloned()
        .collect();
    let committed = if valid.is_empty() {
        Ok(())
    } else {
        ctx.broker
            .commit(MetaCommand::CreateAcls { bindings: valid })
            .await
    };
    let results = parsed
        .into_iter()
        .map(|p| match (p, &committed) {
            (Err(message), _) => {
                ctx.count(ResponseError::InvalidRequest.code());
                failed(ResponseError::InvalidRequest, &message)
            }
            (Ok(_), Ok(())) => AclCreationResult::default().with_error_message(None),
            (Ok(_), Err(e)) => {
                let code = ctx.code(e);
                AclCreationResult::default()
                    .with_error_code(code)
                    .with_error_message(Some(StrBytes::from_string(e.client_message())))
            }
        })
        .collect();
    CreateAclsResponse::default().with_results(results)
}
