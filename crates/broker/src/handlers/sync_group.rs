//! SyncGroup: the leader hands out assignments; every member receives its
//! own. Followers wait until the leader has synced, so the answer is deferred.
//! READ on the group comes first (GROUP_AUTHORIZATION_FAILED, at once), then
//! the caps of [`limits`] (INVALID_REQUEST, at once).

use kafka_protocol::messages::{SyncGroupRequest, SyncGroupResponse};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use crate::auth::{Operation, ResourceType};
use crate::context::RequestContext;
use crate::dispatch::{Handled, Response};
use crate::group::{limits, Reply, SyncResult};

pub async fn handle(ctx: &RequestContext, req: SyncGroupRequest) -> Handled {
    if !ctx.authorize(Operation::Read, ResourceType::Group, &req.group_id) {
        let denied = SyncResult::error(ResponseError::GroupAuthorizationFailed);
        return Handled::Ready(Response::SyncGroup(response(ctx, denied)));
    }
    let fits = limits::names_fit(
        [req.group_id.as_str(), req.member_id.as_str()]
            .into_iter()
            .chain(req.group_instance_id.as_deref())
            .chain(req.protocol_type.as_deref())
            .chain(req.protocol_name.as_deref()),
    ) && limits::assignments_fit(req.assignments.iter().map(|a| &a.assignment));
    if !fits {
        let refused = SyncResult::error(ResponseError::InvalidRequest);
        return Handled::Ready(Response::SyncGroup(response(ctx, refused)));
    }
    if let Err(e) = crate::group::offsets_topic::ready(&ctx.broker, &req.group_id).await {
        return Handled::Ready(Response::SyncGroup(response(ctx, SyncResult::error(e))));
    }
    let groups = &ctx.broker.groups;
    let (waiter, rx) = groups.waiter();
    let assignments = req
        .assignments
        .iter()
        .map(|a| (a.member_id.to_string(), a.assignment.clone()))
        .collect();
    let group_id = req.group_id.0.to_string();
    let ((), durable) = groups.run(|core, now, out| {
        core.sync(
            &group_id,
            &req.member_id,
            req.group_instance_id.as_deref(),
            req.generation_id,
            req.protocol_type.as_deref(),
            req.protocol_name.as_deref(),
            assignments,
            waiter,
            now,
            out,
        );
    });
    drop(durable);
    let ctx = ctx.clone();
    Handled::Deferred(Box::pin(async move {
        let result = match rx.await {
            Ok(Reply::Sync(_, r)) => r,
            Ok(Reply::Join(..)) | Err(_) => {
                SyncResult::error(ResponseError::CoordinatorNotAvailable)
            }
        };
        Response::SyncGroup(response(&ctx, result))
    }))
}

pub(crate) fn response(ctx: &RequestContext, r: SyncResult) -> SyncGroupResponse {
    let code = r.error.map_or(0, |e| e.code());
    ctx.count(code);
    SyncGroupResponse::default()
        .with_error_code(code)
        .with_protocol_type(r.protocol_type.map(StrBytes::from_string))
        .with_protocol_name(r.protocol_name.map(StrBytes::from_string))
        .with_assignment(r.assignment)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_fixture as fixture;

    #[tokio::test]
    async fn unknown_group_is_unknown_member_and_every_version_encodes() {
        let (_dir, ctx) = fixture::groups_context(5).await;
        let req = SyncGroupRequest::default()
            .with_group_id(kafka_protocol::messages::GroupId(
                StrBytes::from_static_str("g"),
            ))
            .with_generation_id(1)
            .with_member_id(StrBytes::from_static_str("m"));
        let Handled::Deferred(f) = handle(&ctx, req).await else {
            panic!("deferred")
        };
        let Response::SyncGroup(r) = f.await else {
            panic!("sync")
        };
        assert_eq!(r.error_code, ResponseError::UnknownMemberId.code());
        let ok = SyncResult {
            error: None,
            protocol_type: Some("consumer".into()),
            protocol_name: Some("range".into()),
            assignment: bytes::Bytes::from_static(b"a"),
        };
        fixture::encodes(&response(&ctx, ok), 0..=5);
        fixture::encodes(&r, 0..=5);
    }
}
