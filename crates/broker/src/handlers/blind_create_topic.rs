//! BlindCreateTopic (Veil 32103): c → T → physical name with the share of
//! the authenticated principal; creates the topic through the ordinary
//! metadata path if absent (idempotent), marks it blind, grants it.
//! Creating still needs Kafka's CREATE (on CLUSTER or the topic). Another
//! user's key (named in the request) is refused first: KEY_USER_MISMATCH.

use veil_blind::protocol::{error_code, CreateTopicRequest, CreateTopicResponse};
use veil_meta::{BlindCommand, MetaCommand, TopicConfigs};

use crate::auth::{Operation, ResourceType};
use crate::blind::{self, Refusal};
use crate::context::RequestContext;

pub async fn handle(ctx: &RequestContext, req: CreateTopicRequest) -> CreateTopicResponse {
    match create(ctx, &req).await {
        Ok(r) => r,
        Err((r, msg)) => CreateTopicResponse {
            throttle_time_ms: r.throttle_ms,
            error_code: r.code,
            error_message: msg.or_else(|| {
                blind::refusal_message(ctx, r.code, &req.kid, req.key_principal.as_deref())
            }),
            ..CreateTopicResponse::default()
        },
    }
}

type Failure = (Refusal, Option<String>);

fn meta_failure(ctx: &RequestContext, e: &crate::Error) -> Failure {
    let code = ctx.code(e);
    (
        Refusal {
            code,
            throttle_ms: 0,
        },
        Some(e.client_message()),
    )
}

async fn create(
    ctx: &RequestContext,
    req: &CreateTopicRequest,
) -> Result<CreateTopicResponse, Failure> {
    let (kid, name) = blind::resolve_token(ctx, &req.kid, &req.token, req.key_principal.as_deref())
        .await
        .map_err(|r| (r, None))?;
    let broker = &ctx.broker;
    let exists = broker.with_meta(|m| m.topic(&name).is_some());
    let mut created = false;
    if !exists {
        if !ctx.authorize_cluster(Operation::Create)
            && !ctx.authorize(Operation::Create, ResourceType::Topic, &name)
        {
            let code = error_code::CLUSTER_AUTHORIZATION_FAILED;
            return Err((Refusal::code(ctx, code), None));
        }
        let partitions = if req.partitions == -1 {
            broker.config.topics.default_partitions
        } else {
            req.partitions
        };
        let rf = if req.replication_factor == -1 {
            broker.config.topics.default_replication_factor
        } else {
            req.replication_factor
        };
        let configs: TopicConfigs = req
            .configs
            .iter()
            .filter_map(|c| Some((c.name.clone(), c.value.clone()?)))
            .collect();
        let cmd = broker
            .create_topic_command(&name, partitions, rf, configs)
            .map_err(|e| meta_failure(ctx, &e))?;
        match broker.commit(cmd).await {
            Ok(()) => created = true,
            // A concurrent create won: the topic is there, which is all we need.
            Err(crate::Error::Meta(veil_meta::Error::TopicExists(_))) => {}
            Err(e) => return Err(meta_failure(ctx, &e)),
        }
    }
    let registered = broker.with_meta(|m| m.blind().topic(&name).map(|t| t.kid.clone()));
    match registered {
        Some(k) if k != kid => {
            return Err((
                Refusal::code(ctx, error_code::UNKNOWN_TOPIC_OR_PARTITION),
                None,
            ));
        }
        Some(_) => {}
        None => {
            let cmd = MetaCommand::Blind(BlindCommand::RegisterTopic {
                name: name.clone(),
                kid: kid.clone(),
                created_by: ctx.principal.clone(),
            });
            broker
                .commit(cmd)
                .await
                .map_err(|e| meta_failure(ctx, &e))?;
        }
    }
    blind::grant(ctx, &name).await.map_err(|r| (r, None))?;
    let (topic_id, partitions) = blind::topic_layout(ctx, &name).ok_or_else(|| {
        (
            Refusal::code(ctx, error_code::UNKNOWN_TOPIC_OR_PARTITION),
            None,
        )
    })?;
    if created {
        tracing::info!(topic = %name, "created a blind topic");
    }
    Ok(CreateTopicResponse {
        physical_name: name,
        topic_id,
        partitions: partitions.len() as i32,
        created,
        revocation_epoch: blind::revocation_epoch(ctx, &kid),
        ..CreateTopicResponse::default()
    })
}
