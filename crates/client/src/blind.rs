//! Blind topics, control path: turn a plaintext topic name into the
//! physical (Kafka) name the broker stores it under, without telling the
//! broker the name (BLIND.md §5.3, §6b).
//!
//! [`BlindClient`] holds the user's key, computes c = σ^{e_i1} once per topic
//! (cached: one modexp each), and asks the broker over an authenticated
//! connection (`BlindResolve` / `BlindCreateTopic`). The data path is plain
//! Kafka on the physical name: see [`crate::blind_data`].

use std::collections::HashMap;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;

use veil_blind::protocol::{
    self, error_code, CreateTopicRequest, KeyGetRequest, KeyPutRequest, ResolveRequest, VeilApi,
    VeilRequest,
};
use veil_blind::{Token, UserKey};

use crate::connection::Connection;
use crate::error::Error;

/// Opens a new authenticated connection (TLS/SASL as the caller configured).
/// Called again after a connection fails, so a broker restart is survived.
pub type Connector = Arc<
    dyn Fn() -> Pin<Box<dyn Future<Output = Result<Connection, BlindError>> + Send>> + Send + Sync,
>;

/// What went wrong with a blind topic, as one sentence a user can act on.
/// Never carries key material or tokens.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BlindError {
    #[error("the key file {path} does not exist")]
    MissingKeyFile { path: String },
    #[error("cannot use the key file {path}: {reason}")]
    BadKeyFile { path: String, reason: String },
    #[error("your key for tenant {tenant} was revoked (the broker holds no share for it)")]
    Revoked { tenant: String },
    /// The broker holds no share for this user and never did.
    #[error("{message} (tenant {tenant}): ask the key's owner to issue you one with `veil kms add-user`")]
    NotIssued { tenant: String, message: String },
    /// The key file names another user than the one this client logs in as.
    #[error("the key file {path} was issued for User:{key_user}, not for User:{user} (the user you log in as); use the key file issued for {user}")]
    KeyOfAnotherUser {
        path: String,
        key_user: String,
        user: String,
    },
    /// The broker saw the key's user differ from the authenticated one.
    #[error("{0}; use the key file issued for the user you log in as")]
    KeyUserMismatch(String),
    #[error("blind topic '{topic}' does not exist (or your key cannot see it)")]
    UnknownTopic { topic: String },
    #[error("blind topics need an authenticated connection (SASL or mTLS)")]
    NotAuthenticated,
    #[error("the broker does not support blind topics")]
    Unsupported,
    #[error("the broker is rate-limiting your blind-topic requests; retry later")]
    Throttled,
    #[error("{api} failed: {}{}", crate::error::error_name(*code), message.as_ref().map(|m| format!(": {m}")).unwrap_or_default())]
    Broker {
        api: &'static str,
        code: i16,
        message: Option<String>,
    },
    /// Opening the authenticated connection failed (unreachable broker,
    /// bad credentials): the connector's own sentence.
    #[error("{0}")]
    Connect(String),
    #[error(transparent)]
    Client(#[from] Error),
    #[error("{0}")]
    Scheme(String),
    #[error("Kafka client: {0}")]
    Kafka(String),
    /// A record on a sealed topic failed verification (tampered, moved,
    /// unsealed, or under a data key this user cannot get). Never skipped.
    #[error("record at partition {partition} offset {offset} failed verification: {reason}")]
    Integrity {
        partition: i32,
        offset: i64,
        reason: String,
    },
    #[error("blind topic '{topic}' is sealed: produce to it with --seal")]
    SealedTopic { topic: String },
}

/// Loads a user key file with the error a user expects.
pub fn load_user_key(path: &Path) -> Result<UserKey, BlindError> {
    let shown = path.display().to_string();
    let bytes = zeroize::Zeroizing::new(match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(BlindError::MissingKeyFile { path: shown })
        }
        Err(e) => {
            return Err(BlindError::BadKeyFile {
                path: shown,
                reason: e.to_string(),
            })
        }
    });
    UserKey::from_bytes(&bytes).map_err(|e| BlindError::BadKeyFile {
        path: shown,
        reason: e.to_string(),
    })
}

/// A resolved blind topic: what the ordinary Kafka APIs use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolved {
    /// The physical Kafka topic name (`vb1-…`); not secret.
    pub physical_name: String,
    pub topic_id: [u8; 16],
    /// The broker's revocation counter when it answered.
    pub revocation_epoch: i64,
    /// Partition count (what the sealed producer's partitioner divides by).
    pub partitions: i32,
}

/// The control path of one user key: token cache, resolution, creation.
pub struct BlindClient {
    key: UserKey,
    connect: Connector,
    conn: tokio::sync::Mutex<Option<Connection>>,
    /// (kid, topic) → c; the kid is fixed per client, so the topic is the key.
    tokens: std::sync::Mutex<HashMap<String, Token>>,
}

impl std::fmt::Debug for BlindClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlindClient")
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl BlindClient {
    pub fn new(key: UserKey, connect: Connector) -> Self {
        BlindClient {
            key,
            connect,
            conn: tokio::sync::Mutex::new(None),
            tokens: std::sync::Mutex::new(HashMap::new()),
        }
    }

    /// [`BlindClient::new`] for a client that logs in as `user` (its SASL
    /// name, if it has one): a key file issued for someone else is refused
    /// before any request, because its tokens would name topics nobody can
    /// read. `path` only names the file in the error.
    pub fn for_user(
        key: UserKey,
        user: Option<&str>,
        path: &Path,
        connect: Connector,
    ) -> Result<Self, BlindError> {
        if let (Some(key_user), Some(user)) = (key.user(), user) {
            if key_user != user {
                return Err(BlindError::KeyOfAnotherUser {
                    path: path.display().to_string(),
                    key_user: key_user.to_owned(),
                    user: user.to_owned(),
                });
            }
        }
        Ok(Self::new(key, connect))
    }

    /// The principal the key was issued for, which requests name so that
    /// the broker can refuse another user's key.
    fn key_principal(&self) -> Option<String> {
        self.key.user().map(|u| format!("User:{u}"))
    }

    /// The tenant of the key (for messages).
    pub fn tenant(&self) -> &str {
        self.key.tenant()
    }

    /// c for `topic`: one constant-time modexp, then cached.
    fn token(&self, topic: &str) -> Result<Token, BlindError> {
        if let Some(t) = self.tokens.lock().expect("token cache").get(topic) {
            return Ok(t.clone());
        }
        let t = self
            .key
            .token(topic)
            .map_err(|e| BlindError::Scheme(e.to_string()))?;
        self.tokens
            .lock()
            .expect("token cache")
            .insert(topic.to_owned(), t.clone());
        Ok(t)
    }

    /// `BlindResolve`: the physical name of an existing blind topic.
    pub async fn resolve(&self, topic: &str) -> Result<Resolved, BlindError> {
        let req = ResolveRequest {
            kid: self.key.kid().as_bytes().to_vec(),
            token: self.token(topic)?.into_bytes(),
            key_principal: self.key_principal(),
        };
        let resp = self.call(&req).await?;
        self.check(VeilApi::Resolve, resp.error_code, resp.error_message, topic)?;
        Ok(Resolved {
            physical_name: resp.physical_name,
            topic_id: resp.topic_id,
            revocation_epoch: resp.revocation_epoch,
            partitions: i32::try_from(resp.partitions.len()).unwrap_or(i32::MAX),
        })
    }

    /// The user key (sealed records derive and unwrap data keys with it).
    pub fn user_key(&self) -> &UserKey {
        &self.key
    }

    /// `BlindKeyPut`: register the wrap `w` of a data key (or of the topic
    /// key, id [`veil_blind::TOPIC_KEY_ID`]). Returns the revocation epoch;
    /// `Ok(None)` if that id is already taken (write-once).
    pub async fn key_put(
        &self,
        topic: &str,
        physical: &str,
        dek_id: &[u8],
        wrap: Vec<u8>,
    ) -> Result<Option<i64>, BlindError> {
        let req = KeyPutRequest {
            physical_topic: physical.to_owned(),
            dek_id: dek_id.to_vec(),
            wrap,
        };
        let resp = self.call(&req).await?;
        if resp.error_code == error_code::DEK_EXISTS {
            return Ok(None);
        }
        self.check(VeilApi::KeyPut, resp.error_code, None, topic)?;
        Ok(Some(resp.revocation_epoch))
    }

    /// `BlindKeyGet`: x = W^{d_j2} for `dek_id`, or `Ok(None)` if the broker
    /// stores no wrap under that id. A revoked key is [`BlindError::Revoked`].
    pub async fn key_get(
        &self,
        topic: &str,
        physical: &str,
        dek_id: &[u8],
    ) -> Result<Option<Vec<u8>>, BlindError> {
        let req = KeyGetRequest {
            physical_topic: physical.to_owned(),
            dek_id: dek_id.to_vec(),
        };
        let resp = self.call(&req).await?;
        if resp.error_code == error_code::UNKNOWN_DEK {
            return Ok(None);
        }
        self.check(VeilApi::KeyGet, resp.error_code, None, topic)?;
        Ok(Some(resp.unwrapped))
    }

    /// `BlindCreateTopic`: create (if absent) and resolve. `partitions` and
    /// the broker-default replication apply only to a new topic.
    pub async fn create_topic(&self, topic: &str, partitions: i32) -> Result<Resolved, BlindError> {
        let req = CreateTopicRequest {
            kid: self.key.kid().as_bytes().to_vec(),
            token: self.token(topic)?.into_bytes(),
            partitions,
            replication_factor: -1,
            configs: Vec::new(),
            key_principal: self.key_principal(),
        };
        let resp = self.call(&req).await?;
        self.check(
            VeilApi::CreateTopic,
            resp.error_code,
            resp.error_message,
            topic,
        )?;
        Ok(Resolved {
            physical_name: resp.physical_name,
            topic_id: resp.topic_id,
            revocation_epoch: resp.revocation_epoch,
            partitions: resp.partitions,
        })
    }

    fn check(
        &self,
        api: VeilApi,
        code: i16,
        message: Option<String>,
        topic: &str,
    ) -> Result<(), BlindError> {
        match code {
            error_code::NONE => Ok(()),
            error_code::NO_SHARE => Err(BlindError::Revoked {
                tenant: self.key.tenant().to_owned(),
            }),
            error_code::KEY_NOT_ISSUED => Err(BlindError::NotIssued {
                tenant: self.key.tenant().to_owned(),
                message: message.unwrap_or_else(|| "no key issued for this user".into()),
            }),
            error_code::KEY_USER_MISMATCH => {
                Err(BlindError::KeyUserMismatch(message.unwrap_or_else(|| {
                    format!(
                        "this key file was issued for {}, not for the authenticated user",
                        self.key_principal().unwrap_or_default()
                    )
                })))
            }
            error_code::UNKNOWN_TOPIC_OR_PARTITION => Err(BlindError::UnknownTopic {
                topic: topic.to_owned(),
            }),
            error_code::SASL_AUTHENTICATION_FAILED => Err(BlindError::NotAuthenticated),
            error_code::THROTTLING_QUOTA_EXCEEDED => Err(BlindError::Throttled),
            code => Err(BlindError::Broker {
                api: api.name(),
                code,
                message,
            }),
        }
    }

    /// One Veil request on the shared connection; reconnects once if the
    /// connection was lost.
    async fn call<R: VeilRequest>(&self, req: &R) -> Result<R::Response, BlindError> {
        let mut guard = self.conn.lock().await;
        for attempt in 0..2 {
            if guard.is_none() {
                let conn = (self.connect)().await?;
                if conn.advertised(R::API.key()).is_none() {
                    return Err(BlindError::Unsupported);
                }
                *guard = Some(conn);
            }
            let conn = guard.as_mut().expect("connected above");
            match send_raw(conn, req).await {
                Ok(frame) => return decode::<R>(&frame),
                Err(e) => {
                    *guard = None;
                    if attempt == 1 {
                        return Err(e.into());
                    }
                }
            }
        }
        unreachable!("the loop returns on its second attempt")
    }
}

async fn send_raw<R: VeilRequest>(conn: &mut Connection, req: &R) -> crate::Result<bytes::Bytes> {
    conn.send_frame(|id| {
        protocol::encode_request_frame(req, id, Some("veil-blind"))
            .map_err(|e| Error::Protocol(e.to_string()))
    })
    .await
}

fn decode<R: VeilRequest>(frame: &[u8]) -> Result<R::Response, BlindError> {
    let (_, resp) =
        protocol::decode_response_frame::<R>(frame).map_err(|e| Error::Protocol(e.to_string()))?;
    Ok(resp)
}

/// One Veil extension request on `conn` (the KMS's admin calls). The
/// caller checks the response's error code.
pub async fn veil_call<R: VeilRequest>(
    conn: &mut Connection,
    req: &R,
) -> Result<R::Response, BlindError> {
    if conn.advertised(R::API.key()).is_none() {
        return Err(BlindError::Unsupported);
    }
    decode::<R>(&send_raw(conn, req).await?)
}
