//! The Veil extension APIs of BLIND.md §6b on the Kafka wire.
//!
//! Pure encoders/decoders shared by the broker (decode requests, encode
//! responses) and the client/KMS (the reverse). Framing is Kafka's: a 4-byte
//! size, request header v2 / response header v1 (every Veil API is flexible
//! from v0), compact strings/bytes/arrays and tagged fields. Only version 0
//! exists. Decisions and error codes: `docs/adr/0001-veil-extension-apis.md`.
//!
//! | key | API | request → response | who |
//! |---:|---|---|---|
//! | 32100 | `BlindShareRegister` | principal, kid, n, e2, d2 → error | KMS (ALTER on CLUSTER) |
//! | 32101 | `BlindShareRevoke` | principal, kid → error, revocation_epoch | KMS (ALTER on CLUSTER) |
//! | 32102 | `BlindShareList` | — → [principal, kid, created_ms, revocation_epoch] | KMS (DESCRIBE on CLUSTER) |
//! | 32103 | `BlindCreateTopic` | kid, c, partitions, rf, configs, [key principal] → physical name, topic id | producer |
//! | 32104 | `BlindResolve` | kid, c, [key principal] → physical name, topic id, partition leaders, brokers, [message] | producer/consumer |
//! | 32105 | `BlindKeyPut` | physical topic, dek_id, w → error | producer |
//! | 32106 | `BlindKeyGet` | physical topic, dek_id → W^{d2} | consumer |
//!
//! Fields in brackets are tagged fields (tag 0), added without a version
//! bump; peers that predate them skip them. Every response starts with
//! `throttle_time_ms` and `error_code`. The
//! broker always uses the share of the *authenticated* principal; no request
//! names whose share to use. Exponents appear only in `BlindShareRegister`,
//! sent by the KMS over an authenticated (and, in production, TLS) admin
//! connection; `Debug` of that request is redacted.
//!
//! Client sketch:
//! ```no_run
//! # fn demo(token: veil_blind::Token) -> veil_blind::Result<()> {
//! use veil_blind::protocol::{self, ResolveRequest};
//! let req = ResolveRequest { kid: b"t42-e3".to_vec(), token: token.into_bytes(), key_principal: None };
//! let frame = protocol::encode_request_frame(&req, 7, Some("veil-client"))?;
//! // write `frame`, read one size-prefixed response frame into `body`, then:
//! # let body: Vec<u8> = Vec::new();
//! let (correlation_id, resp) = protocol::decode_response_frame::<ResolveRequest>(&body)?;
//! # let _ = (correlation_id, resp); Ok(()) }
//! ```

/// Beyond the blind-topic APIs, one tagged field: the controller adds it to
/// each broker of a DescribeCluster response, the milliseconds since that
/// broker's last heartbeat reached it, as an 8-byte big-endian integer
/// (`veil cluster status` shows it; Kafka's clients skip unknown tags). The
/// tag is far above Kafka's own, which count up from 0.
pub const DESCRIBE_CLUSTER_HEARTBEAT_AGE_TAG: i32 = 32200;

mod codec;
mod messages;

pub use messages::{
    Broker, CreateTopicRequest, CreateTopicResponse, KeyGetRequest, KeyGetResponse, KeyPutRequest,
    KeyPutResponse, PartitionLeader, ResolveRequest, ResolveResponse, ShareEntry, ShareListRequest,
    ShareListResponse, ShareRegisterRequest, ShareRegisterResponse, ShareRevokeRequest,
    ShareRevokeResponse, TopicConfig,
};

use codec::{Decoder, Encoder};

use crate::error::{Error, Result};

/// Longest principal (`User:<name>`) accepted, in bytes.
pub const MAX_PRINCIPAL_LEN: usize = 1024;
/// Longest Kafka topic name.
pub const MAX_TOPIC_LEN: usize = 249;
/// Longest error message / host name carried.
pub const MAX_TEXT_LEN: usize = 4096;
/// Group elements are I2OSP(x, k) for k ∈ {256, 384} (2048/3072-bit n).
pub const ELEMENT_LENS: [usize; 2] = [256, 384];
/// Length of a random DEK id; the only other accepted id is
/// [`crate::TOPIC_KEY_ID`].
pub const DEK_ID_LEN: usize = 16;

/// The only version of every Veil API so far.
pub const VERSION: i16 = 0;

/// The Veil API keys: a range no Apache Kafka API uses (Kafka's keys are
/// below 100), so a Kafka client never sends one by accident.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(i16)]
pub enum VeilApi {
    ShareRegister = 32100,
    ShareRevoke = 32101,
    ShareList = 32102,
    CreateTopic = 32103,
    Resolve = 32104,
    KeyPut = 32105,
    KeyGet = 32106,
}

impl VeilApi {
    /// Every Veil API, for ApiVersions.
    pub const ALL: [VeilApi; 7] = [
        VeilApi::ShareRegister,
        VeilApi::ShareRevoke,
        VeilApi::ShareList,
        VeilApi::CreateTopic,
        VeilApi::Resolve,
        VeilApi::KeyPut,
        VeilApi::KeyGet,
    ];

    /// The wire key.
    pub const fn key(self) -> i16 {
        self as i16
    }

    /// `(min, max)` served version.
    pub const fn versions(self) -> (i16, i16) {
        (VERSION, VERSION)
    }

    /// The API for a wire key, if it is a Veil API.
    pub fn from_key(key: i16) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.key() == key)
    }

    /// A stable lowercase name for logs and metric labels.
    pub const fn name(self) -> &'static str {
        match self {
            VeilApi::ShareRegister => "blind_share_register",
            VeilApi::ShareRevoke => "blind_share_revoke",
            VeilApi::ShareList => "blind_share_list",
            VeilApi::CreateTopic => "blind_create_topic",
            VeilApi::Resolve => "blind_resolve",
            VeilApi::KeyPut => "blind_key_put",
            VeilApi::KeyGet => "blind_key_get",
        }
    }
}

/// Error codes in Veil responses: Kafka's where one fits, plus a few
/// Veil-specific ones in a range Kafka does not use.
pub mod error_code {
    pub const NONE: i16 = 0;
    pub const UNKNOWN_SERVER_ERROR: i16 = -1;
    /// Unknown physical topic or token that resolves to no topic.
    pub const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
    /// A Kafka ACL refuses WRITE (KeyPut) or READ (KeyGet) on the topic.
    pub const TOPIC_AUTHORIZATION_FAILED: i16 = 29;
    pub const CLUSTER_AUTHORIZATION_FAILED: i16 = 31;
    pub const INVALID_PARTITIONS: i16 = 37;
    pub const INVALID_REPLICATION_FACTOR: i16 = 38;
    pub const INVALID_CONFIG: i16 = 40;
    pub const INVALID_REQUEST: i16 = 42;
    /// The connection is not authenticated (`User:ANONYMOUS`).
    pub const SASL_AUTHENTICATION_FAILED: i16 = 58;
    /// Per-principal transform rate exceeded; see `throttle_time_ms`.
    pub const THROTTLING_QUOTA_EXCEEDED: i16 = 89;
    /// The authenticated principal's share for this kid was revoked (or,
    /// from older brokers, is missing for any reason). Says nothing about
    /// other principals.
    pub const NO_SHARE: i16 = 32000;
    /// A group element has the wrong length or lies outside [2, n−2].
    pub const INVALID_ELEMENT: i16 = 32001;
    /// No wrap is stored under this DEK id for this topic.
    pub const UNKNOWN_DEK: i16 = 32002;
    /// A different wrap is already stored under this DEK id (ids are
    /// write-once so no tenant member can swap another's data key).
    pub const DEK_EXISTS: i16 = 32003;
    /// The authenticated principal was never issued a share for this kid.
    pub const KEY_NOT_ISSUED: i16 = 32004;
    /// The request names the principal its user key was issued for, and it
    /// is not the authenticated one (another user's key file).
    pub const KEY_USER_MISMATCH: i16 = 32005;
}

/// A message body of one API version.
pub trait Message: Sized {
    /// Append the body (without header) at `version`.
    fn encode(&self, buf: &mut Vec<u8>, version: i16) -> Result<()>;
    /// Read a body at `version` from the front of `buf`, advancing it.
    fn decode(buf: &mut &[u8], version: i16) -> Result<Self>;
}

/// A Veil request type and its response type.
pub trait VeilRequest: Message {
    const API: VeilApi;
    type Response: Message;
}

pub(crate) fn check_version(version: i16) -> Result<()> {
    if version == VERSION {
        Ok(())
    } else {
        Err(Error::Format(format!(
            "unsupported Veil API version {version}"
        )))
    }
}

/// Request header v2 (flexible): key, version, correlation id, nullable
/// client id (a *non-compact* string, as in Kafka), tagged fields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestHeader {
    pub api_key: i16,
    pub api_version: i16,
    pub correlation_id: i32,
    pub client_id: Option<String>,
}

impl RequestHeader {
    pub fn encode(&self, buf: &mut Vec<u8>) -> Result<()> {
        let mut e = Encoder::new(buf);
        e.i16(self.api_key);
        e.i16(self.api_version);
        e.i32(self.correlation_id);
        match &self.client_id {
            None => e.i16(-1),
            Some(id) => {
                let len = i16::try_from(id.len())
                    .map_err(|_| Error::Format("client id too long".into()))?;
                e.i16(len);
                buf.extend_from_slice(id.as_bytes());
            }
        }
        Encoder::new(buf).tagged_fields();
        Ok(())
    }

    pub fn decode(buf: &mut &[u8]) -> Result<Self> {
        let (api_key, api_version, correlation_id, len) = {
            let mut d = Decoder::new(buf);
            (
                d.i16("api key")?,
                d.i16("api version")?,
                d.i32("correlation id")?,
                d.i16("client id")?,
            )
        };
        let client_id = match usize::try_from(len) {
            Err(_) if len == -1 => None,
            Err(_) => return Err(Error::Format("malformed client id".into())),
            Ok(len) => {
                if len > buf.len() {
                    return Err(Error::Format("truncated client id".into()));
                }
                let (raw, rest) = buf.split_at(len);
                *buf = rest;
                Some(
                    String::from_utf8(raw.to_vec())
                        .map_err(|_| Error::Format("malformed client id".into()))?,
                )
            }
        };
        Decoder::new(buf).tagged_fields()?;
        Ok(RequestHeader {
            api_key,
            api_version,
            correlation_id,
            client_id,
        })
    }
}

fn size_prefixed(body: Vec<u8>) -> Result<Vec<u8>> {
    let size = i32::try_from(body.len()).map_err(|_| Error::Format("frame too large".into()))?;
    let mut out = Vec::with_capacity(4 + body.len());
    out.extend_from_slice(&size.to_be_bytes());
    out.extend_from_slice(&body);
    Ok(out)
}

/// A whole size-prefixed request frame (client side).
pub fn encode_request_frame<R: VeilRequest>(
    request: &R,
    correlation_id: i32,
    client_id: Option<&str>,
) -> Result<Vec<u8>> {
    let mut body = Vec::new();
    RequestHeader {
        api_key: R::API.key(),
        api_version: VERSION,
        correlation_id,
        client_id: client_id.map(str::to_owned),
    }
    .encode(&mut body)?;
    request.encode(&mut body, VERSION)?;
    size_prefixed(body)
}

/// Parse a response frame (without its size prefix): header v1, then the
/// body of `R::Response`. Returns the correlation id and the response.
pub fn decode_response_frame<R: VeilRequest>(frame: &[u8]) -> Result<(i32, R::Response)> {
    let mut buf = frame;
    let mut d = Decoder::new(&mut buf);
    let correlation_id = d.i32("correlation id")?;
    d.tagged_fields()?;
    let resp = R::Response::decode(&mut buf, VERSION)?;
    if !buf.is_empty() {
        return Err(Error::Format("trailing bytes after response".into()));
    }
    Ok((correlation_id, resp))
}

/// A whole size-prefixed response frame (broker side): header v1 + body.
pub fn encode_response_frame<M: Message>(
    response: &M,
    version: i16,
    correlation_id: i32,
) -> Result<Vec<u8>> {
    let mut body = Vec::new();
    let mut e = Encoder::new(&mut body);
    e.i32(correlation_id);
    e.tagged_fields();
    response.encode(&mut body, version)?;
    size_prefixed(body)
}

macro_rules! veil_messages {
    ($( $api:ident : $req:ident, $resp:ident; )*) => {
        $( impl VeilRequest for $req {
            const API: VeilApi = VeilApi::$api;
            type Response = $resp;
        } )*

        /// A decoded Veil request (broker side).
        #[derive(Debug)]
        pub enum Request { $( $api($req), )* }

        /// A Veil response (broker side).
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub enum Response { $( $api($resp), )* }

        impl Request {
            /// Decode the body of `api` at `version`; the whole of `buf` must
            /// be consumed.
            pub fn decode(api: VeilApi, version: i16, buf: &mut &[u8]) -> Result<Self> {
                let req = match api { $( VeilApi::$api => Request::$api(<$req>::decode(buf, version)?), )* };
                if !buf.is_empty() {
                    return Err(Error::Format("trailing bytes after request".into()));
                }
                Ok(req)
            }

            pub fn api(&self) -> VeilApi {
                match self { $( Request::$api(_) => VeilApi::$api, )* }
            }
        }

        impl Response {
            pub fn api(&self) -> VeilApi {
                match self { $( Response::$api(_) => VeilApi::$api, )* }
            }

            /// Header v1 + body as one size-prefixed frame.
            pub fn encode_frame(&self, version: i16, correlation_id: i32) -> Result<Vec<u8>> {
                match self { $( Response::$api(r) => encode_response_frame(r, version, correlation_id), )* }
            }
        }

        $( impl From<$resp> for Response {
            fn from(r: $resp) -> Response { Response::$api(r) }
        } )*
    };
}

veil_messages! {
    ShareRegister: ShareRegisterRequest, ShareRegisterResponse;
    ShareRevoke: ShareRevokeRequest, ShareRevokeResponse;
    ShareList: ShareListRequest, ShareListResponse;
    CreateTopic: CreateTopicRequest, CreateTopicResponse;
    Resolve: ResolveRequest, ResolveResponse;
    KeyPut: KeyPutRequest, KeyPutResponse;
    KeyGet: KeyGetRequest, KeyGetResponse;
}

/// Decode a whole request frame (without its size prefix). `Ok(None)` if the
/// key is not a Veil API. Pure: the fuzz target drives exactly this.
pub fn decode_request_frame(frame: &[u8]) -> Result<Option<(RequestHeader, Request)>> {
    let mut buf = frame;
    let header = RequestHeader::decode(&mut buf)?;
    let Some(api) = VeilApi::from_key(header.api_key) else {
        return Ok(None);
    };
    let request = Request::decode(api, header.api_version, &mut buf)?;
    Ok(Some((header, request)))
}

#[cfg(test)]
mod tests;
