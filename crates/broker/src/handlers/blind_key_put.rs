//! BlindKeyPut (Veil 32105): store W = w^{e_i2} under (topic, dek id). The
//! topic must be visible to the principal (share + grant) and writable by
//! Kafka ACLs; DEK ids are write-once.

use veil_blind::protocol::{error_code, KeyPutRequest, KeyPutResponse};
use veil_meta::blind::hex;
use veil_meta::{BlindCommand, MetaCommand};

use crate::auth::{Operation, ResourceType};
use crate::blind::{self, Refusal};
use crate::context::RequestContext;

pub async fn handle(ctx: &RequestContext, req: KeyPutRequest) -> KeyPutResponse {
    match put(ctx, req).await {
        Ok(epoch) => KeyPutResponse {
            revocation_epoch: epoch,
            ..KeyPutResponse::default()
        },
        Err(r) => KeyPutResponse {
            throttle_time_ms: r.throttle_ms,
            error_code: r.code,
            revocation_epoch: 0,
        },
    }
}

async fn put(ctx: &RequestContext, req: KeyPutRequest) -> Result<i64, Refusal> {
    let kid = blind::granted_topic(ctx, &req.physical_topic)?;
    if !ctx.authorize(Operation::Write, ResourceType::Topic, &req.physical_topic) {
        return Err(Refusal::code(ctx, error_code::TOPIC_AUTHORIZATION_FAILED));
    }
    let share = blind::share_of(ctx, &kid)?;
    let dek_id = hex(&req.dek_id);
    blind::throttle(ctx)?;
    let w = req.wrap;
    let stored = blind::modexp(ctx, move || share.store_wrap(&w)).await?;
    let cmd = MetaCommand::Blind(BlindCommand::PutWrap {
        name: req.physical_topic,
        dek_id,
        wrap: stored,
    });
    match ctx.broker.commit(cmd).await {
        Ok(()) => Ok(blind::revocation_epoch(ctx, &kid)),
        Err(crate::Error::Meta(veil_meta::Error::Blind(_))) => {
            Err(Refusal::code(ctx, error_code::DEK_EXISTS))
        }
        Err(e) => {
            let code = ctx.code(&e);
            Err(Refusal {
                code,
                throttle_ms: 0,
            })
        }
    }
}
