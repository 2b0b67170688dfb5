//! DescribeGroups: state, protocol and members; member metadata and
//! assignments only once the group is Stable. An unknown group is
//! described as Dead with no error, as Kafka does before v6.
//! Each group needs DESCRIBE, checked before existence: a refused group is
//! GROUP_AUTHORIZATION_FAILED with an empty state and nothing else.

use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::{DescribeGroupsRequest, DescribeGroupsResponse};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use crate::auth::{Operation, ResourceType};
use crate::context::RequestContext;

/// Kafka's "not requested" value for authorized-operation bitfields.
const OPERATIONS_NOT_REQUESTED: i32 = i32::MIN;

pub async fn handle(ctx: &RequestContext, req: DescribeGroupsRequest) -> DescribeGroupsResponse {
    let mut hosted = Vec::with_capacity(req.groups.len());
    for id in &req.groups {
        hosted.push(crate::group::offsets_topic::ready(&ctx.broker, id).await);
    }
    let groups = req
        .groups
        .into_iter()
        .zip(hosted)
        .map(|(id, hosted)| {
            if !ctx.authorize(Operation::Describe, ResourceType::Group, &id) {
                let code = ResponseError::GroupAuthorizationFailed.code();
                ctx.count(code);
                return DescribedGroup::default()
                    .with_group_id(id)
                    .with_error_code(code)
                    .with_authorized_operations(OPERATIONS_NOT_REQUESTED);
            }
            if let Err(e) = hosted {
                ctx.count(e.code());
                return DescribedGroup::default()
                    .with_group_id(id)
                    .with_error_code(e.code())
                    .with_authorized_operations(OPERATIONS_NOT_REQUESTED);
            }
            let summary = ctx.broker.groups.read(|c| c.describe(&id));
            let operations = if req.include_authorized_operations {
                ctx.authorized_operations(ResourceType::Group, &id)
            } else {
                OPERATIONS_NOT_REQUESTED
            };
            let members = summary
                .members
                .into_iter()
                .map(|m| {
                    DescribedGroupMember::default()
                        .with_member_id(StrBytes::from_string(m.member_id))
                        .with_group_instance_id(m.instance_id.map(StrBytes::from_string))
                        .with_client_id(StrBytes::from_string(m.client_id))
                        .with_client_host(StrBytes::from_string(m.client_host))
                        .with_member_metadata(m.metadata)
                        .with_member_assignment(m.assignment)
                })
                .collect();
            DescribedGroup::default()
                .with_group_id(id)
                .with_group_state(StrBytes::from_static_str(summary.state.name()))
                .with_protocol_type(StrBytes::from_string(summary.protocol_type))
                .with_protocol_data(StrBytes::from_string(summary.protocol_name))
                .with_members(members)
                .with_authorized_operations(operations)
        })
        .collect();
    DescribeGroupsResponse::default().with_groups(groups)
}

#[cfg(test)]
mod tests {
    use kafka_protocol::messages::GroupId;

    use super::*;
    use crate::test_fixture as fixture;

    #[tokio::test]
    async fn unknown_groups_are_dead() {
        let (_dir, ctx) = fixture::groups_context(5).await;
        let req = DescribeGroupsRequest::default()
            .with_groups(vec![GroupId(StrBytes::from_static_str("g"))]);
        let r = handle(&ctx, req).await;
        assert_eq!(
            (r.groups[0].error_code, r.groups[0].group_state.as_str()),
            (0, "Dead")
        );
        assert_eq!(r.groups[0].authorized_operations, OPERATIONS_NOT_REQUESTED);
        fixture::encodes(&r, 0..=5);
    }
}
