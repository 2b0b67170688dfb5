//! LeaveGroup: members leave (v3+ batches several, and may name a static
//! member by instance id alone); the group rebalances without them.
//! Needs READ on the group, checked first: a refusal is the top-level error
//! with no member results, in every version.

use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::{LeaveGroupRequest, LeaveGroupResponse};
use kafka_protocol::ResponseError;

use crate::auth::{Operation, ResourceType};
use crate::context::RequestContext;

pub async fn handle(ctx: &RequestContext, req: LeaveGroupRequest) -> LeaveGroupResponse {
    if !ctx.authorize(Operation::Read, ResourceType::Group, &req.group_id) {
        let code = ResponseError::GroupAuthorizationFailed.code();
        ctx.count(code);
        return LeaveGroupResponse::default().with_error_code(code);
    }
    let batched = ctx.api_version >= 3;
    let leaving: Vec<(String, Option<String>)> = if batched {
        req.members
            .iter()
            .map(|m| {
                (
                    m.member_id.to_string(),
                    m.group_instance_id.as_ref().map(ToString::to_string),
                )
            })
            .collect()
    } else {
        vec![(req.member_id.to_string(), None)]
    };
    let group_id = req.group_id.0.to_string();
    if let Err(e) = crate::group::offsets_topic::ready(&ctx.broker, &group_id).await {
        ctx.count(e.code());
        return LeaveGroupResponse::default().with_error_code(e.code());
    }
    let ((top, errors), durable) = ctx
        .broker
        .groups
        .run(|core, now, out| core.leave(&group_id, &leaving, now, out));
    let failed = durable.wait().await;
    let top = top.or(failed);
    let code = |e: Option<ResponseError>| e.map_or(0, |e| e.code());
    if !batched {
        // Before v3 the one member's error is the response's error.
        let c = code(top.or(errors.first().copied().flatten()));
        ctx.count(c);
        return LeaveGroupResponse::default().with_error_code(c);
    }
    ctx.count(code(top));
    let members = req
        .members
        .into_iter()
        .zip(errors)
        .map(|(m, e)| {
            ctx.count(code(e));
            MemberResponse::default()
                .with_member_id(m.member_id)
                .with_group_instance_id(m.group_instance_id)
                .with_error_code(code(e))
        })
        .collect();
    LeaveGroupResponse::default()
        .with_error_code(code(top))
        .with_members(members)
}

#[cfg(test)]
mod tests {
    use kafka_protocol::messages::leave_group_request::MemberIdentity;
    use kafka_protocol::messages::GroupId;
    use kafka_protocol::protocol::StrBytes;

    use super::*;
    use crate::test_fixture as fixture;

    #[tokio::test]
    async fn unknown_members_per_member_from_v3_and_top_level_before() {
        let (_dir, mut ctx) = fixture::groups_context(3).await;
        let req = LeaveGroupRequest::default()
            .with_group_id(GroupId(StrBytes::from_static_str("g")))
            .with_member_id(StrBytes::from_static_str("m"))
            .with_members(vec![
                MemberIdentity::default().with_member_id(StrBytes::from_static_str("m"))
            ]);
        let resp = handle(&ctx, req.clone()).await;
        assert_eq!(
            (resp.error_code, resp.members[0].error_code),
            (0, ResponseError::UnknownMemberId.code())
        );
        fixture::encodes(&resp, 3..=5);
        ctx.api_version = 1;
        let resp = handle(&ctx, req).await;
        assert_eq!(resp.error_code, ResponseError::UnknownMemberId.code());
        fixture::encodes(&resp, 0..=2);
    }
}
