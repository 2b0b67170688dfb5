//! BlindShareRegister (Veil 32100): the KMS stores a user's server share.
//! Needs an authenticated principal with ALTER on CLUSTER. The share is
//! validated, sealed under the broker's share key, and only then committed.

use veil_blind::protocol::{error_code, ShareRegisterRequest, ShareRegisterResponse};
use veil_meta::blind::hex;
use veil_meta::{BlindCommand, MetaCommand};

use crate::auth::Operation;
use crate::blind::{self, Refusal};
use crate::context::RequestContext;

pub async fn handle(ctx: &RequestContext, req: ShareRegisterRequest) -> ShareRegisterResponse {
    match register(ctx, req).await {
        Ok(()) => ShareRegisterResponse::default(),
        Err((r, msg)) => ShareRegisterResponse {
            throttle_time_ms: r.throttle_ms,
            error_code: r.code,
            error_message: msg.map(str::to_owned),
        },
    }
}

type Failure = (Refusal, Option<&'static str>);

pub(crate) fn admin_check(ctx: &RequestContext, op: Operation) -> Result<(), Failure> {
    blind::require_authenticated(ctx).map_err(|r| (r, Some("authenticate first")))?;
    if ctx.authorize_cluster(op) {
        Ok(())
    } else {
        Err((
            Refusal::code(ctx, error_code::CLUSTER_AUTHORIZATION_FAILED),
            None,
        ))
    }
}

async fn register(ctx: &RequestContext, req: ShareRegisterRequest) -> Result<(), Failure> {
    admin_check(ctx, Operation::Alter)?;
    let invalid = |msg| (Refusal::code(ctx, error_code::INVALID_REQUEST), Some(msg));
    if !req.principal.starts_with("User:") || req.principal.len() <= "User:".len() {
        return Err(invalid("principal must be User:<name>"));
    }
    // Parsing checks sizes and exponent ranges; no modexp involved.
    let share = req.share().map_err(|_| invalid("invalid server share"))?;
    let plain = share
        .to_bytes()
        .map_err(|_| invalid("invalid server share"))?;
    let kid = hex(&req.kid);
    let sealed = ctx
        .broker
        .blind
        .sealer
        .seal(&req.principal, &kid, &plain)
        .map_err(|e| {
            tracing::error!(error = %e, "cannot seal a server share");
            (
                Refusal::code(ctx, error_code::UNKNOWN_SERVER_ERROR),
                Some("the broker cannot seal shares; see its log"),
            )
        })?;
    let cmd = MetaCommand::Blind(BlindCommand::RegisterShare {
        principal: req.principal.clone(),
        kid,
        sealed,
        created_ms: ctx.now_ms(),
    });
    ctx.broker.commit(cmd).await.map_err(|e| {
        let code = ctx.code(&e);
        (
            Refusal {
                code,
                throttle_ms: 0,
            },
            None,
        )
    })?;
    // Tokens of the old split (rotation) must not resolve any more.
    blind::flush(ctx, &req.principal);
    tracing::info!(principal = %req.principal, "registered a blind server share");
    Ok(())
}
