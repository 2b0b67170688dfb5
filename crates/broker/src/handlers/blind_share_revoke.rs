//! BlindShareRevoke (Veil 32101): delete a share, the principal's grants on
//! that kid's topics, and its cached tokens; bump the kid's revocation
//! counter. The visibility snapshot is rebuilt inside the commit, so the
//! principal's next request on any live connection fails.

use veil_blind::protocol::{error_code, ShareRevokeRequest, ShareRevokeResponse};
use veil_meta::blind::hex;
use veil_meta::{BlindCommand, MetaCommand};

use crate::auth::Operation;
use crate::blind::{self, Refusal};
use crate::context::RequestContext;
use crate::handlers::blind_share_register::admin_check;

pub async fn handle(ctx: &RequestContext, req: ShareRevokeRequest) -> ShareRevokeResponse {
    let kid = hex(&req.kid);
    let refused = |r: Refusal, msg: Option<&str>| ShareRevokeResponse {
        throttle_time_ms: r.throttle_ms,
        error_code: r.code,
        error_message: msg.map(str::to_owned),
        revocation_epoch: 0,
    };
    if let Err((r, msg)) = admin_check(ctx, Operation::Alter) {
        return refused(r, msg);
    }
    let exists = ctx
        .broker
        .with_meta(|m| m.blind().share(&req.principal, &kid).is_some());
    if !exists {
        return refused(
            Refusal::code(ctx, error_code::NO_SHARE),
            Some("no share registered for this principal and kid"),
        );
    }
    let cmd = MetaCommand::Blind(BlindCommand::RevokeShare {
        principal: req.principal.clone(),
        kid: kid.clone(),
    });
    let committed = ctx.broker.commit(cmd).await;
    // Flush even if the commit raced another revoke: nothing stale remains.
    blind::flush(ctx, &req.principal);
    if let Err(e) = committed {
        let code = ctx.code(&e);
        return refused(
            Refusal {
                code,
                throttle_ms: 0,
            },
            None,
        );
    }
    ctx.broker.metrics.blind_revocations.inc();
    tracing::info!(principal = %req.principal, "revoked a blind server share");
    ShareRevokeResponse {
        revocation_epoch: blind::revocation_epoch(ctx, &kid),
        ..ShareRevokeResponse::default()
    }
}
