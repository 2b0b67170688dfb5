//! BlindResolve (Veil 32104): c → physical name, topic id and partition
//! leaders for an *existing* blind topic of the token's key epoch; records a
//! grant. Unknown → UNKNOWN_TOPIC_OR_PARTITION and nothing else; another
//! user's key (named in the request) → KEY_USER_MISMATCH.

use veil_blind::protocol::{error_code, Broker, PartitionLeader, ResolveRequest, ResolveResponse};

use crate::blind::{self, Refusal};
use crate::context::RequestContext;

pub async fn handle(ctx: &RequestContext, req: ResolveRequest) -> ResolveResponse {
    let outcome = resolve(ctx, &req).await;
    let result = match &outcome {
        Ok(_) => "resolved",
        Err(r) if r.code == error_code::UNKNOWN_TOPIC_OR_PARTITION => "unknown",
        Err(_) => "refused",
    };
    ctx.broker
        .metrics
        .blind_resolves
        .with_label_values(&[result])
        .inc();
    match outcome {
        Ok(r) => r,
        Err(r) => ResolveResponse {
            throttle_time_ms: r.throttle_ms,
            error_code: r.code,
            error_message: blind::refusal_message(
                ctx,
                r.code,
                &req.kid,
                req.key_principal.as_deref(),
            ),
            ..ResolveResponse::default()
        },
    }
}

async fn resolve(ctx: &RequestContext, req: &ResolveRequest) -> Result<ResolveResponse, Refusal> {
    let key_principal = req.key_principal.as_deref();
    let (kid, name) = blind::resolve_token(ctx, &req.kid, &req.token, key_principal).await?;
    let known = ctx
        .broker
        .with_meta(|m| m.blind().topic(&name).is_some_and(|t| t.kid == kid));
    if !known {
        return Err(Refusal::code(ctx, error_code::UNKNOWN_TOPIC_OR_PARTITION));
    }
    blind::grant(ctx, &name).await?;
    let (topic_id, partitions) = blind::topic_layout(ctx, &name)
        .ok_or_else(|| Refusal::code(ctx, error_code::UNKNOWN_TOPIC_OR_PARTITION))?;
    let node = ctx.broker.node_id();
    let brokers = ctx
        .broker
        .advertised_for(&ctx.listener)
        .map(|a| Broker {
            node_id: node,
            host: a.host,
            port: a.port,
        })
        .into_iter()
        .collect();
    Ok(ResolveResponse {
        physical_name: name,
        topic_id,
        partitions: partitions
            .into_iter()
            .map(|index| PartitionLeader {
                index,
                leader_id: node,
            })
            .collect(),
        brokers,
        revocation_epoch: blind::revocation_epoch(ctx, &kid),
        ..ResolveResponse::default()
    })
}
