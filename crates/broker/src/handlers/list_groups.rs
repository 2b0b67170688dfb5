//! ListGroups: every live group, filtered by state (v4+, case-insensitive)
//! and type (v5+; all of Veil's groups are "classic").
//!
//! Authorization, as in Kafka: DESCRIBE on the cluster lists every group;
//! otherwise the groups the principal may not DESCRIBE are silently left out.

use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::{GroupId, ListGroupsRequest, ListGroupsResponse};
use kafka_protocol::protocol::StrBytes;

use crate::auth::{Operation, ResourceType};
use crate::context::RequestContext;

const GROUP_TYPE: &str = "classic";

pub async fn handle(ctx: &RequestContext, req: ListGroupsRequest) -> ListGroupsResponse {
    let wanted = |filter: &[StrBytes], value: &str| {
        filter.is_empty() || filter.iter().any(|f| f.eq_ignore_ascii_case(value))
    };
    let all_visible = ctx.authorize_cluster(Operation::Describe);
    let groups = ctx
        .broker
        .groups
        .read(super::super::group::Coordinator::list)
        .into_iter()
        .filter(|(id, _, _)| {
            all_visible || ctx.authorize(Operation::Describe, ResourceType::Group, id)
        })
        .filter(|(_, _, state)| wanted(&req.states_filter, state.name()))
        .filter(|_| wanted(&req.types_filter, GROUP_TYPE))
        .map(|(id, protocol_type, state)| {
            ListedGroup::default()
                .with_group_id(GroupId(StrBytes::from_string(id)))
                .with_protocol_type(StrBytes::from_string(protocol_type))
                .with_group_state(StrBytes::from_static_str(state.name()))
                .with_group_type(StrBytes::from_static_str(GROUP_TYPE))
        })
        .collect();
    ListGroupsResponse::default().with_groups(groups)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handlers::offset_commit;
    use crate::test_fixture as fixture;

    #[tokio::test]
    async fn lists_groups_with_state_filters() {
        let (_dir, ctx) = fixture::groups_context(4).await;
        fixture::create_topic(&ctx, "t", 1).await;
        offset_commit::handle(&ctx, offset_commit::tests::commit_request("g", "t", 0, 3)).await;
        let all = handle(&ctx, ListGroupsRequest::default()).await;
        assert_eq!(all.groups.len(), 1);
        assert_eq!(all.groups[0].group_state.as_str(), "Empty");
        fixture::encodes(&all, 0..=5);
        let stable = ListGroupsRequest::default()
            .with_states_filter(vec![StrBytes::from_static_str("stable")]);
        assert!(handle(&ctx, stable).await.groups.is_empty());
        let empty = ListGroupsRequest::default()
            .with_states_filter(vec![StrBytes::from_static_str("EMPTY")]);
        assert_eq!(handle(&ctx, empty).await.groups.len(), 1);
        let consumer = ListGroupsRequest::default()
            .with_types_filter(vec![StrBytes::from_static_str("consumer")]);
        assert!(handle(&ctx, consumer).await.groups.is_empty());
    }
}
