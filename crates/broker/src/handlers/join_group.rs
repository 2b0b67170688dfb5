//! JoinGroup: enter a group's rebalance. The response waits until the
//! join phase completes (all members rejoined, or the rebalance timeout), so
//! the handler registers with the coordinator now and defers the answer.
//! READ on the group comes first (GROUP_AUTHORIZATION_FAILED, at once), then
//! the caps of [`limits`] (INVALID_REQUEST, at once).

use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::{JoinGroupRequest, JoinGroupResponse};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use tokio::sync::oneshot;

use crate::auth::{Operation, ResourceType};
use crate::context::RequestContext;
use crate::dispatch::{Handled, Response};
use crate::group::{limits, JoinRequest, JoinResult, Protocol, Reply};

/// Kafka names members `<client id or instance id>-<uuid>`.
pub(crate) fn fresh_member_id(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4())
}

/// Kafka shows client hosts as `/<address>`.
pub(crate) fn client_host(ctx: &RequestContext) -> String {
    format!("/{}", ctx.client_host)
}

pub async fn handle(ctx: &RequestContext, req: JoinGroupRequest) -> Handled {
    let version = ctx.api_version;
    if !ctx.authorize(Operation::Read, ResourceType::Group, &req.group_id) {
        let denied = JoinResult::error("", ResponseError::GroupAuthorizationFailed);
        return Handled::Ready(Response::JoinGroup(response(ctx, denied, version)));
    }
    let fits =
        limits::names_fit(
            [
                req.group_id.as_str(),
                req.member_id.as_str(),
                req.protocol_type.as_str(),
            ]
            .into_iter()
            .chain(req.group_instance_id.as_deref()),
        ) && limits::protocols_fit(req.protocols.iter().map(|p| (p.name.as_str(), &p.metadata)));
    if !fits {
        let refused = JoinResult::error(&req.member_id, ResponseError::InvalidRequest);
        return Handled::Ready(Response::JoinGroup(response(ctx, refused, version)));
    }
    let client_id = ctx.client_id.clone().unwrap_or_default();
    let instance_id = req.group_instance_id.as_ref().map(ToString::to_string);
    let prefix = instance_id.clone().unwrap_or_else(|| client_id.clone());
    if let Err(e) = crate::group::offsets_topic::ready(&ctx.broker, &req.group_id).await {
        let moved = JoinResult::error(&req.member_id, e);
        return Handled::Ready(Response::JoinGroup(response(ctx, moved, version)));
    }
    let groups = &ctx.broker.groups;
    let (waiter, rx) = groups.waiter();
    let join = JoinRequest {
        member_id: req.member_id.to_string(),
        require_known_member_id: version >= 4 && instance_id.is_none(),
        instance_id,
        client_id,
        client_host: client_host(ctx),
        session_timeout_ms: req.session_timeout_ms,
        // v0 had no rebalance timeout: the session timeout served as both.
        rebalance_timeout_ms: if version >= 1 {
            req.rebalance_timeout_ms
        } else {
            req.session_timeout_ms
        },
        protocol_type: req.protocol_type.to_string(),
        protocols: req
            .protocols
            .iter()
            .map(|p| Protocol {
                name: p.name.to_string(),
                metadata: p.metadata.clone(),
            })
            .collect(),
        fresh_member_id: fresh_member_id(&prefix),
        waiter,
    };
    let group_id = req.group_id.0.to_string();
    let ((), durable) = groups.run(|core, now, out| core.join(&group_id, join, now, out));
    drop(durable);
    let ctx = ctx.clone();
    Handled::Deferred(Box::pin(async move {
        let result = wait(rx, &req.member_id).await;
        Response::JoinGroup(response(&ctx, result, version))
    }))
}

async fn wait(rx: oneshot::Receiver<Reply>, member_id: &StrBytes) -> JoinResult {
    match rx.await {
        Ok(Reply::Join(_, r)) => r,
        // The coordinator is shutting down.
        Ok(Reply::Sync(..)) | Err(_) => {
            JoinResult::error(member_id, ResponseError::CoordinatorNotAvailable)
        }
    }
}

pub(crate) fn response(ctx: &RequestContext, r: JoinResult, version: i16) -> JoinGroupResponse {
    let code = r.error.map_or(0, |e| e.code());
    ctx.count(code);
    let members = r
        .members
        .into_iter()
        .map(|m| {
            JoinGroupResponseMember::default()
                .with_member_id(StrBytes::from_string(m.member_id))
                .with_group_instance_id(m.instance_id.map(StrBytes::from_string))
                .with_metadata(m.metadata)
        })
        .collect();
    // Before v7 the protocol name is a non-nullable string.
    let protocol_name = match r.protocol_name {
        None if version < 7 => Some(String::new()),
        other => other,
    };
    JoinGroupResponse::default()
        .with_error_code(code)
        .with_generation_id(r.generation_id)
        .with_protocol_type(r.protocol_type.map(StrBytes::from_string))
        .with_protocol_name(protocol_name.map(StrBytes::from_string))
        .with_leader(StrBytes::from_string(r.leader))
        .with_member_id(StrBytes::from_string(r.member_id))
        .with_members(members)
}

#[cfg(test)]
mod tests {
    use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
    use kafka_protocol::messages::GroupId;

    use super::*;
    use crate::group::member::JoinedMember;
    use crate::test_fixture as fixture;

    fn request(member: &str) -> JoinGroupRequest {
        JoinGroupRequest::default()
            .with_group_id(GroupId(StrBytes::from_static_str("g")))
            .with_session_timeout_ms(10_000)
            .with_rebalance_timeout_ms(10_000)
            .with_member_id(StrBytes::from_string(member.to_owned()))
            .with_protocol_type(StrBytes::from_static_str("consumer"))
            .with_protocols(vec![JoinGroupRequestProtocol::default()
                .with_name(StrBytes::from_static_str("range"))
                .with_metadata(bytes::Bytes::from_static(b"sub"))])
    }

    async fn join(ctx: &RequestContext, req: JoinGroupRequest) -> JoinGroupResponse {
        match handle(ctx, req).await {
            Handled::Deferred(f) => match f.await {
                Response::JoinGroup(r) => r,
                other => panic!("{other:?}"),
            },
            _ => panic!("JoinGroup is deferred"),
        }
    }

    #[tokio::test]
    async fn member_id_required_then_joined_and_every_version_encodes() {
        let (_dir, mut ctx) = fixture::groups_context(5).await;
        let r = join(&ctx, request("")).await;
        assert_eq!(r.error_code, ResponseError::MemberIdRequired.code());
        let id = r.member_id.clone();
        let r = join(&ctx, request(&id)).await;
        assert_eq!((r.error_code, r.generation_id), (0, 1));
        assert_eq!(r.leader, id);
        assert_eq!(r.members[0].metadata, bytes::Bytes::from_static(b"sub"));
        ctx.api_version = 3;
        let other = request("").with_group_id(GroupId(StrBytes::from_static_str("g3")));
        let r = join(&ctx, other).await;
        assert_eq!(
            r.error_code, 0,
            "before v4 a member id is handed out directly"
        );
        let bad = request("").with_session_timeout_ms(10);
        assert_eq!(
            join(&ctx, bad).await.error_code,
            ResponseError::InvalidSessionTimeout.code()
        );
        for v in 0..=9 {
            let full = JoinResult {
                error: None,
                member_id: "m".into(),
                generation_id: 1,
                protocol_type: Some("consumer".into()),
                protocol_name: Some("range".into()),
                leader: "m".into(),
                members: vec![JoinedMember {
                    member_id: "m".into(),
                    instance_id: Some("i".into()),
                    metadata: bytes::Bytes::new(),
                }],
            };
            fixture::encodes(&response(&ctx, full, v), v..=v);
            let failed = JoinResult::error("", ResponseError::UnknownMemberId);
            fixture::encodes(&response(&ctx, failed, v), v..=v);
        }
    }
}
