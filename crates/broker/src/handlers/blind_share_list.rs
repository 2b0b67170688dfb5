//! BlindShareList (Veil 32102): who holds a share for which kid (never the
//! exponents). Needs an authenticated principal with DESCRIBE on CLUSTER.

use veil_blind::protocol::{ShareEntry, ShareListRequest, ShareListResponse};

use crate::auth::Operation;
use crate::context::RequestContext;
use crate::handlers::blind_share_register::admin_check;

pub async fn handle(ctx: &RequestContext, _req: ShareListRequest) -> ShareListResponse {
    if let Err((r, _)) = admin_check(ctx, Operation::Describe) {
        return ShareListResponse {
            throttle_time_ms: r.throttle_ms,
            error_code: r.code,
            shares: Vec::new(),
        };
    }
    let shares = ctx.broker.with_meta(|m| {
        let b = m.blind();
        b.shares()
            .map(|(principal, kid, rec)| ShareEntry {
                principal: principal.to_owned(),
                kid: unhex(kid),
                created_ms: rec.created_ms,
                revocation_epoch: b.revocation_epoch(kid),
            })
            .collect()
    });
    ShareListResponse {
        shares,
        ..ShareListResponse::default()
    }
}

/// Kids are stored as hex of their bytes (always well-formed: we wrote it).
fn unhex(s: &str) -> Vec<u8> {
    (0..s.len() / 2)
        .filter_map(|i| u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok())
        .collect()
}
