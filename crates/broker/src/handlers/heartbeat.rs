//! Heartbeat: keeps a member's session alive and tells it when to rejoin
//! (REBALANCE_IN_PROGRESS). Needs READ on the group, checked first.

use kafka_protocol::messages::{HeartbeatRequest, HeartbeatResponse};
use kafka_protocol::ResponseError;

use crate::auth::{Operation, ResourceType};
use crate::context::RequestContext;

pub async fn handle(ctx: &RequestContext, req: HeartbeatRequest) -> HeartbeatResponse {
    if !ctx.authorize(Operation::Read, ResourceType::Group, &req.group_id) {
        let code = ResponseError::GroupAuthorizationFailed.code();
        ctx.count(code);
        return HeartbeatResponse::default().with_error_code(code);
    }
    let group_id = req.group_id.0.to_string();
    if let Err(e) = crate::group::offsets_topic::ready(&ctx.broker, &group_id).await {
        ctx.count(e.code());
        return HeartbeatResponse::default().with_error_code(e.code());
    }
    let (error, durable) = ctx.broker.groups.run(|core, now, out| {
        core.heartbeat(
            &group_id,
            &req.member_id,
            req.group_instance_id.as_deref(),
            req.generation_id,
            now,
            out,
        )
        // No such group: nobody can be a member of it.
        .or_else(|| {
            core.group(&group_id)
                .is_none()
                .then_some(ResponseError::UnknownMemberId)
        })
    });
    drop(durable);
    let code = error.map_or(0, |e| e.code());
    ctx.count(code);
    HeartbeatResponse::default().with_error_code(code)
}

#[cfg(test)]
mod tests {
    use kafka_protocol::protocol::StrBytes;

    use super::*;
    use crate::test_fixture as fixture;

    #[tokio::test]
    async fn unknown_group_or_member_is_unknown_member_id() {
        let (_dir, ctx) = fixture::groups_context(4).await;
        let req = HeartbeatRequest::default().with_member_id(StrBytes::from_static_str("m"));
        let resp = handle(
            &ctx,
            req.clone().with_group_id(kafka_protocol::messages::GroupId(
                StrBytes::from_static_str("g"),
            )),
        )
        .await;
        assert_eq!(resp.error_code, ResponseError::UnknownMemberId.code());
        assert_eq!(
            handle(&ctx, req).await.error_code,
            ResponseError::InvalidGroupId.code()
        );
        fixture::encodes(&resp, 0..=4);
    }
}
