//! BlindKeyGet (Veil 32106): W^{d_j2} for the authenticated consumer j. The
//! topic must be visible to j (share + grant) and readable by Kafka ACLs.

use veil_blind::protocol::{error_code, KeyGetRequest, KeyGetResponse};
use veil_meta::blind::hex;

use crate::auth::{Operation, ResourceType};
use crate::blind::{self, Refusal};
use crate::context::RequestContext;

pub async fn handle(ctx: &RequestContext, req: KeyGetRequest) -> KeyGetResponse {
    match get(ctx, req).await {
        Ok(r) => r,
        Err(r) => KeyGetResponse {
            throttle_time_ms: r.throttle_ms,
            error_code: r.code,
            ..KeyGetResponse::default()
        },
    }
}

async fn get(ctx: &RequestContext, req: KeyGetRequest) -> Result<KeyGetResponse, Refusal> {
    let kid = blind::granted_topic(ctx, &req.physical_topic)?;
    if !ctx.authorize(Operation::Read, ResourceType::Topic, &req.physical_topic) {
        return Err(Refusal::code(ctx, error_code::TOPIC_AUTHORIZATION_FAILED));
    }
    let wrap = ctx.broker.with_meta(|m| {
        m.blind()
            .wrap(&req.physical_topic, &hex(&req.dek_id))
            .map(<[u8]>::to_vec)
    });
    let wrap = wrap.ok_or_else(|| Refusal::code(ctx, error_code::UNKNOWN_DEK))?;
    let share = blind::share_of(ctx, &kid)?;
    blind::throttle(ctx)?;
    let unwrapped = blind::modexp(ctx, move || share.unwrap_for(&wrap)).await?;
    Ok(KeyGetResponse {
        unwrapped,
        revocation_epoch: blind::revocation_epoch(ctx, &kid),
        ..KeyGetResponse::default()
    })
}
