//! DeleteGroups: remove Empty groups and their offsets; groups with members
//! are NON_EMPTY_GROUP, unknown ones GROUP_ID_NOT_FOUND. Each group needs
//! DELETE, checked first (GROUP_AUTHORIZATION_FAILED, and left untouched).

use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::{DeleteGroupsRequest, DeleteGroupsResponse};
use kafka_protocol::ResponseError;

use crate::auth::{Operation, ResourceType};
use crate::context::RequestContext;

pub async fn handle(ctx: &RequestContext, req: DeleteGroupsRequest) -> DeleteGroupsResponse {
    let ids: Vec<String> = req.groups_names.iter().map(|g| g.0.to_string()).collect();
    let allowed: Vec<bool> = ids
        .iter()
        .map(|id| ctx.authorize(Operation::Delete, ResourceType::Group, id))
        .collect();
    // Each group is deleted by its own coordinator.
    let mut hosted = Vec::with_capacity(ids.len());
    for (id, &allowed) in ids.iter().zip(&allowed) {
        hosted.push(if allowed {
            crate::group::offsets_topic::ready(&ctx.broker, id).await
        } else {
            Err(ResponseError::GroupAuthorizationFailed)
        });
    }
    let (errors, durable) = ctx.broker.groups.run(|core, now, out| {
        ids.iter()
            .zip(&hosted)
            .map(|(id, hosted)| match hosted {
                Ok(()) => core.delete_group(id, now, out),
                Err(e) => Some(*e),
            })
            .collect::<Vec<_>>()
    });
    let failed = durable.wait().await;
    let results = req
        .groups_names
        .into_iter()
        .zip(errors)
        .map(|(id, e)| {
            let e = match e {
                None if failed.is_some() => failed,
                other => other,
            };
            let code = e.map_or(0, |e| e.code());
            ctx.count(code);
            DeletableGroupResult::default()
                .with_group_id(id)
                .with_error_code(code)
        })
        .collect();
    DeleteGroupsResponse::default().with_results(results)
}

#[cfg(test)]
mod tests {
    use kafka_protocol::messages::GroupId;
    use kafka_protocol::protocol::StrBytes;

    use super::*;
    use crate::handlers::offset_commit;
    use crate::test_fixture as fixture;

    #[tokio::test]
    async fn deletes_empty_groups_only_once() {
        let (_dir, ctx) = fixture::groups_context(2).await;
        fixture::create_topic(&ctx, "t", 1).await;
        offset_commit::handle(&ctx, offset_commit::tests::commit_request("g", "t", 0, 3)).await;
        let req = DeleteGroupsRequest::default()
            .with_groups_names(vec![GroupId(StrBytes::from_static_str("g"))]);
        let r = handle(&ctx, req.clone()).await;
        assert_eq!(r.results[0].error_code, 0);
        fixture::encodes(&r, 0..=2);
        assert_eq!(
            handle(&ctx, req).await.results[0].error_code,
            ResponseError::GroupIdNotFound.code()
        );
    }
}
