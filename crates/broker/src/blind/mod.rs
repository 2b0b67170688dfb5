//! Blind topics on the broker (BLIND.md §6b): the runtime state behind the
//! Veil extension handlers (`handlers/blind_*.rs`) and the one visibility
//! check every topic-resolving handler calls.
//!
//! - [`BlindRuntime::visible`]: a blind topic exists for a principal only
//!   with an active share for its kid *and* a grant. Backed by a snapshot
//!   rebuilt on every blind metadata commit, so a revocation takes effect at
//!   the next request of a live connection and the data path never takes
//!   the metadata lock.
//! - [`sealing`]: shares are sealed before they reach the metadata log.
//! - [`limiter`], [`cache`]: per-principal modexp budget, token cache.
//!
//! Never logged here: c, T, w, W, exponents. Physical names are fine.

pub mod cache;
pub mod config;
pub mod limiter;
pub mod sealing;
#[cfg(test)]
mod tests;

use std::collections::HashSet;
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use veil_blind::protocol::{error_code, Request, Response};
use veil_blind::ServerShare;
use veil_meta::blind::hex;
use veil_meta::MetaState;

pub use config::BlindConfig;

use crate::config::Config;
use crate::context::{RequestContext, ANONYMOUS};
use crate::dispatch::Handled;
use crate::handlers;

/// Who may see which blind topics, derived from metadata.
#[derive(Debug, Default)]
struct Visibility {
    blind: HashSet<String>,
    allowed: HashSet<(String, String)>,
}

impl Visibility {
    fn from_meta(meta: &MetaState) -> Self {
        let b = meta.blind();
        Visibility {
            blind: b.topics().map(|(n, _)| n.to_owned()).collect(),
            allowed: b
                .grants()
                .filter(|(p, t)| b.visible(p, t))
                .map(|(p, t)| (p.to_owned(), t.to_owned()))
                .collect(),
        }
    }
}

#[derive(Debug)]
pub struct BlindRuntime {
    pub sealer: sealing::ShareSealer,
    pub limiter: Mutex<limiter::RateLimiter>,
    pub cache: Mutex<cache::TokenCache>,
    visibility: RwLock<Visibility>,
}

impl BlindRuntime {
    pub fn new(config: &Config, meta: &MetaState) -> Self {
        let b = &config.blind;
        BlindRuntime {
            sealer: {
                let sealer = sealing::ShareSealer::new(b.share_key_path(&config.data_dir));
                // Every node opens every share: one key, given to all of them.
                if config.cluster.is_clustered() && b.share_key_file.is_none() {
                    sealer.never_create(
                        "in a cluster every node needs the same share key: create one 32-byte \
                         file (e.g. `head -c 32 /dev/urandom`), copy it to every node and set \
                         blind.share_key_file",
                    )
                } else {
                    sealer
                }
            },
            limiter: Mutex::new(limiter::RateLimiter::new(b.transforms_per_second, b.burst)),
            cache: Mutex::new(cache::TokenCache::new(b.cache_entries)),
            visibility: RwLock::new(Visibility::from_meta(meta)),
        }
    }

    /// Rebuild the visibility snapshot (called under the metadata lock after
    /// every blind command and topic deletion).
    pub fn refresh(&self, meta: &MetaState) {
        *self.visibility.write() = Visibility::from_meta(meta);
    }

    /// The one check: may `principal` see `topic` at all?
    pub fn visible(&self, principal: &str, topic: &str) -> bool {
        let v = self.visibility.read();
        !v.blind.contains(topic)
            || v.allowed
                .contains(&(principal.to_owned(), topic.to_owned()))
    }
}

/// Runs the Veil API handler of `request`. Exhaustive over our own enum.
pub async fn dispatch(ctx: &RequestContext, request: Request) -> Handled {
    let response: Response = match request {
        Request::ShareRegister(r) => handlers::blind_share_register::handle(ctx, r).await.into(),
        Request::ShareRevoke(r) => handlers::blind_share_revoke::handle(ctx, r).await.into(),
        Request::ShareList(r) => handlers::blind_share_list::handle(ctx, r).await.into(),
        Request::CreateTopic(r) => handlers::blind_create_topic::handle(ctx, r).await.into(),
        Request::Resolve(r) => handlers::blind_resolve::handle(ctx, r).await.into(),
        Request::KeyPut(r) => handlers::blind_key_put::handle(ctx, r).await.into(),
        Request::KeyGet(r) => handlers::blind_key_get::handle(ctx, r).await.into(),
    };
    Handled::Ready(crate::dispatch::Response::Blind(response))
}

/// Why a Veil request was refused: a code, and a throttle time when the
/// rate limit said no.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    pub code: i16,
    pub throttle_ms: i32,
}

impl Refusal {
    pub fn code(ctx: &RequestContext, code: i16) -> Self {
        ctx.count(code);
        Refusal {
            code,
            throttle_ms: 0,
        }
    }
}

/// Blind APIs are for authenticated principals only.
pub fn require_authenticated(ctx: &RequestContext) -> Result<(), Refusal> {
    if ctx.principal == ANONYMOUS {
        Err(Refusal::code(ctx, error_code::SASL_AUTHENTICATION_FAILED))
    } else {
        Ok(())
    }
}

/// The authenticated principal's share for `kid_hex`, unsealed. Absent is
/// NO_SHARE if it was revoked, KEY_NOT_ISSUED if there never was one. A share
/// that fails to unseal is logged (without content) and treated as revoked.
pub fn share_of(ctx: &RequestContext, kid_hex: &str) -> Result<Arc<ServerShare>, Refusal> {
    let (sealed, revoked) = ctx.broker.with_meta(|m| {
        let b = m.blind();
        (
            b.share(&ctx.principal, kid_hex).map(|s| s.sealed.clone()),
            b.was_revoked(&ctx.principal, kid_hex),
        )
    });
    let Some(sealed) = sealed else {
        let code = if revoked {
            error_code::NO_SHARE
        } else {
            error_code::KEY_NOT_ISSUED
        };
        return Err(Refusal::code(ctx, code));
    };
    let blind = &ctx.broker.blind;
    match blind
        .sealer
        .open(&ctx.principal, kid_hex, &sealed)
        .map_err(|e| e.to_string())
        .and_then(|plain| ServerShare::from_bytes(&plain).map_err(|e| e.to_string()))
    {
        Ok(share) => Ok(Arc::new(share)),
        Err(reason) => {
            tracing::error!(
                principal = %ctx.principal,
                reason,
                "a stored share cannot be used (in a cluster, every node must read the same \
                 blind.share_key_file)"
            );
            Err(Refusal::code(ctx, error_code::NO_SHARE))
        }
    }
}

pub fn revocation_epoch(ctx: &RequestContext, kid_hex: &str) -> i64 {
    ctx.broker
        .with_meta(|m| m.blind().revocation_epoch(kid_hex))
}

/// Spend one modexp token of the principal's budget.
pub fn throttle(ctx: &RequestContext) -> Result<(), Refusal> {
    let now = ctx.now_ms();
    ctx.broker
        .blind
        .limiter
        .lock()
        .acquire(&ctx.principal, now)
        .map_err(|throttle_ms| {
            ctx.count(error_code::THROTTLING_QUOTA_EXCEEDED);
            Refusal {
                code: error_code::THROTTLING_QUOTA_EXCEEDED,
                throttle_ms,
            }
        })
}

/// Run one modexp on the blocking pool (never on the async workers).
/// Element validation failures become INVALID_ELEMENT.
pub async fn modexp<T, F>(ctx: &RequestContext, f: F) -> Result<T, Refusal>
where
    T: Send + 'static,
    F: FnOnce() -> veil_blind::Result<T> + Send + 'static,
{
    match tokio::task::spawn_blocking(f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(veil_blind::Error::InvalidElement)) => {
            Err(Refusal::code(ctx, error_code::INVALID_ELEMENT))
        }
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "blind transform failed");
            Err(Refusal::code(ctx, error_code::UNKNOWN_SERVER_ERROR))
        }
        Err(_) => Err(Refusal::code(ctx, error_code::UNKNOWN_SERVER_ERROR)),
    }
}

/// Token → physical name for the authenticated principal: the key's own
/// principal if the request names it, then c, the cache, and (rate-limited)
/// one modexp. Another user's token would resolve to an unrelated name, a
/// topic nobody can read, so a named mismatch is refused first.
pub async fn resolve_token(
    ctx: &RequestContext,
    kid: &[u8],
    token: &[u8],
    key_principal: Option<&str>,
) -> Result<(String, String), Refusal> {
    require_authenticated(ctx)?;
    if key_principal.is_some_and(|p| p != ctx.principal) {
        return Err(Refusal::code(ctx, error_code::KEY_USER_MISMATCH));
    }
    let kid_hex = hex(kid);
    let share = share_of(ctx, &kid_hex)?;
    if share.kid().as_bytes() != kid {
        return Err(Refusal::code(ctx, error_code::NO_SHARE));
    }
    let cached = ctx
        .broker
        .blind
        .cache
        .lock()
        .get(&ctx.principal, &kid_hex, token);
    if let Some(name) = cached {
        return Ok((kid_hex, name));
    }
    let modulus = share
        .modulus()
        .map_err(|_| Refusal::code(ctx, error_code::UNKNOWN_SERVER_ERROR))?;
    if veil_blind::check_element(token, &modulus).is_err() {
        return Err(Refusal::code(ctx, error_code::INVALID_ELEMENT));
    }
    throttle(ctx)?;
    let c = token.to_vec();
    let name = modexp(ctx, move || share.resolve(&c)).await?.into_string();
    ctx.broker
        .blind
        .cache
        .lock()
        .insert(&ctx.principal, &kid_hex, token, name.clone());
    Ok((kid_hex, name))
}

/// Grant `principal` the topic (idempotent; skipped if already held).
pub async fn grant(ctx: &RequestContext, name: &str) -> Result<(), Refusal> {
    let held = ctx
        .broker
        .with_meta(|m| m.blind().has_grant(&ctx.principal, name));
    if held {
        return Ok(());
    }
    let cmd = veil_meta::MetaCommand::Blind(veil_meta::BlindCommand::Grant {
        principal: ctx.principal.clone(),
        name: name.to_owned(),
    });
    ctx.broker.commit(cmd).await.map_err(|e| {
        // A revocation racing this request: the share is gone.
        tracing::debug!(error = %e, "grant refused");
        Refusal::code(ctx, error_code::NO_SHARE)
    })
}

/// Resolve a physical topic named in KeyPut/KeyGet: blind, visible to the
/// principal (share + grant); returns its kid. Anything else is
/// UNKNOWN_TOPIC_OR_PARTITION, whatever the reason.
pub fn granted_topic(ctx: &RequestContext, name: &str) -> Result<String, Refusal> {
    require_authenticated(ctx)?;
    let kid = ctx.broker.with_meta(|m| {
        let b = m.blind();
        b.topic(name)
            .filter(|_| b.visible(&ctx.principal, name))
            .map(|t| t.kid.clone())
    });
    kid.ok_or_else(|| Refusal::code(ctx, error_code::UNKNOWN_TOPIC_OR_PARTITION))
}

/// Cached topic ids and partitions of a blind topic, for responses.
pub fn topic_layout(ctx: &RequestContext, name: &str) -> Option<([u8; 16], Vec<i32>)> {
    let t = ctx.broker.topics.get(name)?;
    let ids = (0..t.partition_count()).collect();
    Some((*t.id.as_bytes(), ids))
}

/// The sentence a refusal of Resolve or CreateTopic carries, where the
/// code alone would not tell the user what is wrong with their key.
pub fn refusal_message(
    ctx: &RequestContext,
    code: i16,
    kid: &[u8],
    key_principal: Option<&str>,
) -> Option<String> {
    let principal = &ctx.principal;
    let kid = String::from_utf8_lossy(kid);
    match code {
        error_code::KEY_USER_MISMATCH => Some(format!(
            "this key file was issued for {}, but the connection is authenticated as {principal}",
            key_principal.unwrap_or("another user")
        )),
        error_code::KEY_NOT_ISSUED => Some(format!(
            "no key issued for this user ({principal}) in key epoch {kid}"
        )),
        error_code::NO_SHARE => Some(format!(
            "the key of {principal} for key epoch {kid} was revoked"
        )),
        _ => None,
    }
}

/// Flush cached tokens of a principal whose share changed.
pub fn flush(ctx: &RequestContext, principal: &str) {
    ctx.broker.blind.cache.lock().flush_principal(principal);
}
