//! The SASL side of a connection: which requests an unauthenticated
//! connection may send, SaslHandshake and SaslAuthenticate, re-authentication
//! (KIP-368) and the backoff after failed logins ([`super::throttle`]).
//!
//! As in Kafka, a SASL listener accepts only ApiVersions, SaslHandshake and
//! SaslAuthenticate until the client has authenticated, and closes the
//! connection on anything else and after every failed authentication. The
//! connection checks this from the header prefix, before decoding a body.
//! PLAIN passwords are checked on the blocking pool ([`super::plain_check`]),
//! a few at a time.

use std::fmt;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use bytes::Bytes;
use hmac::{Hmac, Mac};
use kafka_protocol::messages::{
    ApiKey, SaslAuthenticateRequest, SaslAuthenticateResponse, SaslHandshakeRequest,
    SaslHandshakeResponse,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use sha2::Sha256;
use tokio::sync::Semaphore;

use super::plain::{self, PlainUsers};
use super::plain_check::PlainCheck;
use super::scram::{self, Credential, Mechanism, ScramServer, DECOY_ITERATIONS};
use super::throttle::FailureThrottle;
use crate::config::Config;
use crate::context::{RequestContext, ANONYMOUS};
use crate::dispatch::{Handled, Response};
use crate::state::BrokerState;

/// The one message every failed login gets: it never says whether the user
/// exists or which step failed.
pub fn failure_message(mechanism: &str) -> String {
    format!("Authentication failed during authentication due to invalid credentials with SASL mechanism {mechanism}")
}

/// Broker-wide SASL state: PLAIN users, the secret behind decoy salts, the
/// failed-login backoff, and the permits for password derivations.
pub struct Authenticator {
    plain: PlainUsers,
    decoy_key: [u8; 32],
    throttle: FailureThrottle,
    /// `connections.max.reauth.ms` (0: no limit); a dynamic broker config,
    /// so it applies to logins after a change.
    max_reauth_ms: AtomicU64,
    /// One PBKDF2 per core at a time: a burst of PLAIN logins queues here
    /// instead of taking every blocking-pool thread.
    derivations: Arc<Semaphore>,
}

impl fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authenticator")
            .field("plain", &self.plain)
            .finish_non_exhaustive()
    }
}

impl Authenticator {
    pub fn new(config: &Config) -> Result<Authenticator, String> {
        let plain = match &config.sasl.plain_users_file {
            Some(p) => PlainUsers::load(p)?,
            None => PlainUsers::default(),
        };
        Ok(Authenticator {
            plain,
            decoy_key: rand::random(),
            throttle: FailureThrottle::new(Duration::from_millis(config.sasl.max_failure_delay_ms)),
            max_reauth_ms: AtomicU64::new(config.sasl.max_reauth_ms),
            derivations: Arc::new(Semaphore::new(
                std::thread::available_parallelism().map_or(1, std::num::NonZero::get),
            )),
        })
    }

    /// Sets `connections.max.reauth.ms` for logins from now on.
    pub fn set_max_reauth_ms(&self, ms: u64) {
        self.max_reauth_ms.store(ms, Ordering::Relaxed);
    }

    /// How long a session lasts before it must re-authenticate, if limited.
    pub fn max_reauth(&self) -> Option<Duration> {
        let ms = self.max_reauth_ms.load(Ordering::Relaxed);
        (ms > 0).then(|| Duration::from_millis(ms))
    }

    /// A stable, secret-derived salt for a user that does not exist, so the
    /// server-first message looks the same whether or not it does.
    fn decoy(&self, mech: Mechanism, user: &str) -> (Vec<u8>, u32) {
        let salt = Hmac::<Sha256>::new_from_slice(&self.decoy_key)
            .map(|m| {
                m.chain_update(mech.name())
                    .chain_update([0])
                    .chain_update(user)
                    .finalize()
                    .into_bytes()[..16]
                    .to_vec()
            })
            .unwrap_or_default();
        (salt, DECOY_ITERATIONS)
    }

    /// Checks a PLAIN password on the blocking pool.
    async fn verify_plain(&self, broker: &BrokerState, user: &str, password: String) -> bool {
        let (decoy_salt, _) = self.decoy(Mechanism::Sha256, user);
        let check = PlainCheck::new(
            user,
            &self.plain,
            |mech| scram_credential(broker, mech, user),
            decoy_salt,
        );
        let Ok(_permit) = Arc::clone(&self.derivations).acquire_owned().await else {
            return false;
        };
        tokio::task::spawn_blocking(move || check.verify(&password))
            .await
            .unwrap_or(false)
    }
}

impl Authenticator {
    /// Checks a user name and password against the users SASL/PLAIN
    /// accepts (the PLAIN users file and SCRAM credentials), with the same
    /// failed-login backoff; the MQTT front end's CONNECT uses it.
    /// `Err(delay)`: wrong, answer after `delay`.
    pub async fn verify_password(
        &self,
        broker: &BrokerState,
        peer: IpAddr,
        user: &str,
        password: String,
    ) -> Result<(), Duration> {
        if self.verify_plain(broker, user, password).await {
            self.throttle.succeeded(peer, user);
            Ok(())
        } else {
            Err(self.throttle.failed(peer, Some(user), Instant::now()))
        }
    }
}

enum Step {
    /// Waiting for SaslHandshake.
    Start,
    /// Handshake done; the mechanism's first SaslAuthenticate comes next.
    Handshaken(String),
    /// Mid-SCRAM: the server-first message was sent.
    Scram(Box<ScramServer>),
}

/// What the connection should do with a request.
pub enum Gate {
    /// Serve it normally.
    Pass,
    /// Close the connection without answering (Kafka's behaviour for a
    /// request before authentication, or after the session expired).
    Close(&'static str),
}

/// The SASL state of one connection.
pub struct Session {
    /// SASL is required before anything but ApiVersions.
    sasl: bool,
    mechanisms: Vec<String>,
    principal: String,
    authenticated: bool,
    /// The mechanism of the last successful login (re-authentication must
    /// use the same one).
    mechanism: Option<String>,
    step: Step,
    /// KIP-368: the session ends here unless re-authenticated.
    expires: Option<Instant>,
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("principal", &self.principal)
            .field("authenticated", &self.authenticated)
            .finish_non_exhaustive()
    }
}

impl Session {
    /// `tls_principal` is the mapped client-certificate principal, if any.
    pub fn new(broker: &BrokerState, listener: &str, tls_principal: Option<String>) -> Session {
        let l = broker.config.listeners.iter().find(|l| l.name == listener);
        let sasl = l.is_some_and(|l| l.protocol.uses_sasl());
        Session {
            sasl,
            mechanisms: l
                .map(crate::config::ListenerConfig::mechanisms)
                .unwrap_or_default(),
            principal: tls_principal.unwrap_or_else(|| ANONYMOUS.to_owned()),
            authenticated: !sasl,
            mechanism: None,
            step: Step::Start,
            expires: None,
        }
    }

    pub fn principal(&self) -> &str {
        &self.principal
    }

    /// The listener uses SASL, so the client must authenticate.
    pub fn requires_authentication(&self) -> bool {
        self.sasl
    }

    pub fn is_authenticated(&self) -> bool {
        self.authenticated
    }

    /// Whether this connection handles SaslHandshake/SaslAuthenticate itself.
    pub fn intercepts(&self, key: ApiKey) -> bool {
        self.sasl && matches!(key, ApiKey::SaslHandshake | ApiKey::SaslAuthenticate)
    }

    /// Decides whether a request of `key` may be served now (`None`: a Veil
    /// extension API, which always needs an authenticated session).
    pub fn gate(&self, key: Option<ApiKey>, now: Instant) -> Gate {
        if !self.sasl
            || matches!(
                key,
                Some(ApiKey::SaslHandshake | ApiKey::SaslAuthenticate | ApiKey::ApiVersions)
            )
        {
            return Gate::Pass;
        }
        if !self.authenticated {
            return Gate::Close("request before SASL authentication");
        }
        if self.expires.is_some_and(|e| now >= e) {
            return Gate::Close("SASL session expired without re-authentication");
        }
        Gate::Pass
    }

    /// Answers SaslHandshake; the bool says whether to close afterwards.
    pub fn handshake(
        &mut self,
        ctx: &RequestContext,
        req: SaslHandshakeRequest,
    ) -> (Handled, bool) {
        let mechanisms = self
            .mechanisms
            .iter()
            .map(|m| StrBytes::from_string(m.clone()))
            .collect();
        let wanted = req.mechanism.to_string();
        let mut resp = SaslHandshakeResponse::default().with_mechanisms(mechanisms);
        let (code, close) = if !matches!(self.step, Step::Start) {
            (ResponseError::IllegalSaslState.code(), true)
        } else if !self.mechanisms.contains(&wanted) {
            (ResponseError::UnsupportedSaslMechanism.code(), true)
        } else if self.authenticated && self.mechanism.as_deref() != Some(wanted.as_str()) {
            // Re-authentication must not switch mechanisms (KIP-368).
            (ResponseError::IllegalSaslState.code(), true)
        } else if ctx.api_version == 0 {
            // v0 means raw SASL frames without Kafka headers follow; Veil
            // serves only the framed SaslAuthenticate exchange.
            (ResponseError::UnsupportedVersion.code(), true)
        } else {
            self.step = Step::Handshaken(wanted);
            (0, false)
        };
        ctx.count(code);
        resp.error_code = code;
        (resp.into(), close)
    }

    /// Runs one SaslAuthenticate step; the bool says whether to close after
    /// the (possibly delayed) answer.
    pub async fn authenticate(
        &mut self,
        ctx: &RequestContext,
        req: SaslAuthenticateRequest,
        peer: IpAddr,
    ) -> (Handled, bool) {
        let broker = Arc::clone(&ctx.broker);
        let auth = &broker.sasl;
        let step = std::mem::replace(&mut self.step, Step::Start);
        let mech_name = match &step {
            Step::Start => {
                let resp = SaslAuthenticateResponse::default()
                    .with_error_code(ResponseError::IllegalSaslState.code())
                    .with_error_message(Some(StrBytes::from_static_str(
                        "SaslAuthenticate before SaslHandshake",
                    )));
                ctx.count(resp.error_code);
                return (resp.into(), true);
            }
            Step::Handshaken(m) => m.clone(),
            Step::Scram(s) => s.mechanism().name().to_owned(),
        };
        let outcome = match step {
            // Answered above.
            Step::Start => Outcome::Failure("out of order", None),
            Step::Handshaken(m) if m == "PLAIN" => match plain::parse(&req.auth_bytes) {
                Ok(msg) => {
                    let plain::PlainMessage { username, password } = msg;
                    if auth.verify_plain(&broker, &username, password).await {
                        Outcome::Success(Bytes::new(), username)
                    } else {
                        Outcome::Failure("wrong PLAIN credentials", Some(username))
                    }
                }
                Err(_) => Outcome::Failure("malformed PLAIN message", None),
            },
            Step::Handshaken(m) => match Mechanism::from_name(&m) {
                Some(mech) => {
                    let mut server = Box::new(ScramServer::new(mech));
                    let nonce = B64.encode(rand::random::<[u8; 18]>());
                    match server.first(
                        &req.auth_bytes,
                        &nonce,
                        |user| scram_credential(&broker, mech, user),
                        |user| auth.decoy(mech, user),
                    ) {
                        Ok(server_first) => {
                            self.step = Step::Scram(server);
                            Outcome::Continue(Bytes::from(server_first))
                        }
                        Err(e) => Outcome::ScramFailure(e, None),
                    }
                }
                None => Outcome::Failure("unknown mechanism", None),
            },
            Step::Scram(mut server) => {
                let user = server.username().map(str::to_owned);
                match server.finish(&req.auth_bytes) {
                    Ok((server_final, user)) => Outcome::Success(Bytes::from(server_final), user),
                    Err(e) => Outcome::ScramFailure(e, user),
                }
            }
        };
        self.finish_step(ctx, &mech_name, outcome, peer)
    }

    fn finish_step(
        &mut self,
        ctx: &RequestContext,
        mech: &str,
        outcome: Outcome,
        peer: IpAddr,
    ) -> (Handled, bool) {
        let broker = &ctx.broker;
        let metrics = &broker.metrics;
        let mut resp = SaslAuthenticateResponse::default();
        match outcome {
            Outcome::Continue(bytes) => {
                resp.auth_bytes = bytes;
                (resp.into(), false)
            }
            Outcome::Success(bytes, user) => {
                let principal = format!("User:{user}");
                if self.authenticated
                    && self.sasl
                    && self.mechanism.is_some()
                    && principal != self.principal
                {
                    // KIP-368: re-authentication cannot change who you are.
                    tracing::debug!("re-authentication tried to change the principal");
                    return self.fail(ctx, mech, peer, Some(&user));
                }
                let now = Instant::now();
                let lifetime = broker.sasl.max_reauth();
                self.expires = lifetime.map(|d| now + d);
                resp.auth_bytes = bytes;
                resp.session_lifetime_ms = lifetime.map_or(0, |d| d.as_millis() as i64);
                broker.sasl.throttle.succeeded(peer, &user);
                metrics
                    .sasl_authentications
                    .with_label_values(&[mech, "success"])
                    .inc();
                tracing::debug!(%principal, mechanism = mech, "SASL authentication succeeded");
                self.principal = principal;
                self.authenticated = true;
                self.mechanism = Some(mech.to_owned());
                (resp.into(), false)
            }
            Outcome::ScramFailure(e, user) => {
                tracing::debug!(reason = %e, mechanism = mech, "SASL authentication failed");
                self.fail(ctx, mech, peer, user.as_deref())
            }
            Outcome::Failure(reason, user) => {
                tracing::debug!(reason, mechanism = mech, "SASL authentication failed");
                self.fail(ctx, mech, peer, user.as_deref())
            }
        }
    }

    /// SASL_AUTHENTICATION_FAILED, answered after the backoff; then close.
    /// `user` is the name the client gave, if it got that far.
    fn fail(
        &self,
        ctx: &RequestContext,
        mech: &str,
        peer: IpAddr,
        user: Option<&str>,
    ) -> (Handled, bool) {
        debug_assert!(
            matches!(self.step, Step::Start),
            "a failed exchange starts over"
        );
        let broker = &ctx.broker;
        broker
            .metrics
            .sasl_authentications
            .with_label_values(&[mech, "failure"])
            .inc();
        let code = ResponseError::SaslAuthenticationFailed.code();
        ctx.count(code);
        let resp = SaslAuthenticateResponse::default()
            .with_error_code(code)
            .with_error_message(Some(StrBytes::from_string(failure_message(mech))));
        let delay = broker.sasl.throttle.failed(peer, user, Instant::now());
        let fut = async move {
            tokio::time::sleep(delay).await;
            Response::SaslAuthenticate(resp)
        };
        (Handled::Deferred(Box::pin(fut)), true)
    }
}

/// How a step ended; failures carry the user name the client gave, if any.
enum Outcome {
    Continue(Bytes),
    Success(Bytes, String),
    Failure(&'static str, Option<String>),
    ScramFailure(scram::ScramError, Option<String>),
}

fn scram_credential(broker: &BrokerState, mech: Mechanism, user: &str) -> Option<Credential> {
    broker.with_meta(|m| {
        m.scram_credential(user, mech.name()).map(|r| Credential {
            salt: r.salt.clone(),
            iterations: r.iterations,
            stored_key: r.stored_key.clone(),
            server_key: r.server_key.clone(),
        })
    })
}
