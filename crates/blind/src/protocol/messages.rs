//! The request and response bodies of the Veil APIs (version 0).
//!
//! Field caps are checked on decode *and* encode. Group elements must be
//! exactly 256 or 384 bytes here; the broker then checks the exact k and the
//! range [2, n−2] against the principal's modulus ([`crate::check_element`]).

use std::fmt;

use zeroize::Zeroizing;

use super::codec::{Decoder, Encoder};
use super::{
    check_version, Message, DEK_ID_LEN, ELEMENT_LENS, MAX_PRINCIPAL_LEN, MAX_TEXT_LEN,
    MAX_TOPIC_LEN,
};
use crate::bignum::i2osp;
use crate::error::{Error, Result};
use crate::keys::ServerShare;
use crate::params::{Kid, MAX_KID_LEN};
use crate::wrap::TOPIC_KEY_ID;

const MAX_CONFIGS: usize = 1000;
const MAX_CONFIG_NAME: usize = 255;
const MAX_CONFIG_VALUE: usize = 32 * 1024;
const MAX_ELEMENT: usize = 384;
/// Tags of the optional fields added after version 0.
const KEY_PRINCIPAL_TAG: u32 = 0;
const ERROR_MESSAGE_TAG: u32 = 0;

fn element<'a>(d: &mut Decoder<'a, '_>, what: &str) -> Result<&'a [u8]> {
    let raw = d.bytes(MAX_ELEMENT, what)?;
    if ELEMENT_LENS.contains(&raw.len()) {
        Ok(raw)
    } else {
        Err(Error::InvalidElement)
    }
}

fn put_element(e: &mut Encoder<'_>, v: &[u8], what: &str) -> Result<()> {
    if !ELEMENT_LENS.contains(&v.len()) {
        return Err(Error::InvalidElement);
    }
    e.bytes(v, MAX_ELEMENT, what)
}

fn kid(d: &mut Decoder<'_, '_>) -> Result<Vec<u8>> {
    let raw = d.bytes(MAX_KID_LEN, "kid")?;
    if raw.is_empty() {
        return Err(Error::Format("empty kid".into()));
    }
    Ok(raw.to_vec())
}

fn put_kid(e: &mut Encoder<'_>, v: &[u8]) -> Result<()> {
    if v.is_empty() {
        return Err(Error::Format("empty kid".into()));
    }
    e.bytes(v, MAX_KID_LEN, "kid")
}

fn check_dek_id(v: &[u8]) -> Result<()> {
    if v.len() == DEK_ID_LEN || v == TOPIC_KEY_ID {
        Ok(())
    } else {
        Err(Error::Format(
            "dek id must be 16 bytes or \"topic-key\"".into(),
        ))
    }
}

fn dek_id(d: &mut Decoder<'_, '_>) -> Result<Vec<u8>> {
    let raw = d.bytes(DEK_ID_LEN, "dek id")?;
    check_dek_id(raw)?;
    Ok(raw.to_vec())
}

/// Head of every response: throttle time, error code.
fn head(d: &mut Decoder<'_, '_>) -> Result<(i32, i16)> {
    Ok((d.i32("throttle time")?, d.i16("error code")?))
}

// ---------------------------------------------------------------- register

/// `BlindShareRegister`: store (e2, d2) of `principal` for `kid`. Replaces an
/// existing share of the same (principal, kid) (user-key rotation).
#[derive(Clone, PartialEq, Eq)]
pub struct ShareRegisterRequest {
    /// Kafka principal, `User:<name>`.
    pub principal: String,
    pub kid: Vec<u8>,
    /// I2OSP(n, k).
    pub modulus: Vec<u8>,
    /// I2OSP(e_i2, k). Secret.
    pub e2: Zeroizing<Vec<u8>>,
    /// I2OSP(d_i2, k). Secret.
    pub d2: Zeroizing<Vec<u8>>,
}

impl ShareRegisterRequest {
    /// The request that registers `share` for `principal`.
    pub fn new(principal: &str, share: &ServerShare) -> Result<Self> {
        let k = share.bits.element_len();
        Ok(ShareRegisterRequest {
            principal: principal.to_owned(),
            kid: share.kid.as_bytes().to_vec(),
            modulus: share.modulus()?,
            e2: Zeroizing::new(i2osp(&share.e2, k)?.to_vec()),
            d2: Zeroizing::new(i2osp(&share.d2, k)?.to_vec()),
        })
    }

    /// The share carried, fully validated.
    pub fn share(&self) -> Result<ServerShare> {
        ServerShare::from_parts(
            Kid::new(self.kid.clone())?,
            &self.modulus,
            &self.e2,
            &self.d2,
        )
    }
}

impl fmt::Debug for ShareRegisterRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShareRegisterRequest")
            .field("principal", &self.principal)
            .field("kid", &String::from_utf8_lossy(&self.kid))
            .field("modulus_len", &self.modulus.len())
            .field("exponents", &"<redacted>")
            .finish_non_exhaustive()
    }
}

impl Message for ShareRegisterRequest {
    fn encode(&self, buf: &mut Vec<u8>, version: i16) -> Result<()> {
        check_version(version)?;
        let k = self.modulus.len();
        if self.e2.len() != k || self.d2.len() != k {
            return Err(Error::InvalidKey("exponents must be k bytes"));
        }
        let mut e = Encoder::new(buf);
        e.string(&self.principal, MAX_PRINCIPAL_LEN, "principal")?;
        put_kid(&mut e, &self.kid)?;
        put_element(&mut e, &self.modulus, "modulus")?;
        e.bytes(&self.e2, MAX_ELEMENT, "e2")?;
        e.bytes(&self.d2, MAX_ELEMENT, "d2")?;
        e.tagged_fields();
        Ok(())
    }

    fn decode(buf: &mut &[u8], version: i16) -> Result<Self> {
        check_version(version)?;
        let mut d = Decoder::new(buf);
        let principal = d.string(MAX_PRINCIPAL_LEN, "principal")?;
        let kid = kid(&mut d)?;
        let modulus = element(&mut d, "modulus")?.to_vec();
        let e2 = Zeroizing::new(d.bytes(MAX_ELEMENT, "e2")?.to_vec());
        let d2 = Zeroizing::new(d.bytes(MAX_ELEMENT, "d2")?.to_vec());
        if e2.len() != modulus.len() || d2.len() != modulus.len() {
            return Err(Error::InvalidKey("exponents must be k bytes"));
        }
        d.tagged_fields()?;
        Ok(ShareRegisterRequest {
            principal,
            kid,
            modulus,
            e2,
            d2,
        })
    }
}

/// Answer to [`ShareRegisterRequest`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ShareRegisterResponse {
    pub throttle_time_ms: i32,
    pub error_code: i16,
    pub error_message: Option<String>,
}

impl Message for ShareRegisterResponse {
    fn encode(&self, buf: &mut Vec<u8>, version: i16) -> Result<()> {
        check_version(version)?;
        let mut e = Encoder::new(buf);
        e.i32(self.throttle_time_ms);
        e.i16(self.error_code);
        e.nullable_string(self.error_message.as_deref(), MAX_TEXT_LEN, "error message")?;
        e.tagged_fields();
        Ok(())
    }

    fn decode(buf: &mut &[u8], version: i16) -> Result<Self> {
        check_version(version)?;
        let mut d = Decoder::new(buf);
        let (throttle_time_ms, error_code) = head(&mut d)?;
        let error_message = d.nullable_string(MAX_TEXT_LEN, "error message")?;
        d.tagged_fields()?;
        Ok(ShareRegisterResponse {
            throttle_time_ms,
            error_code,
            error_message,
        })
    }
}

// ------------------------------------------------------------------ revoke

/// `BlindShareRevoke`: delete the share of (principal, kid), the principal's
/// grants on that kid's topics, and bump the kid's revocation epoch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShareRevokeRequest {
    pub principal: String,
    pub kid: Vec<u8>,
}

impl Message for ShareRevokeRequest {
    fn encode(&self, buf: &mut Vec<u8>, version: i16) -> Result<()> {
        check_version(version)?;
        let mut e = Encoder::new(buf);
        e.string(&self.principal, MAX_PRINCIPAL_LEN, "principal")?;
        put_kid(&mut e, &self.kid)?;
        e.tagged_fields();
        Ok(())
    }

    fn decode(buf: &mut &[u8], version: i16) -> Result<Self> {
        check_version(version)?;
        let mut d = Decoder::new(buf);
        let principal = d.string(MAX_PRINCIPAL_LEN, "principal")?;
        let kid = kid(&mut d)?;
        d.tagged_fields()?;
        Ok(ShareRevokeRequest { principal, kid })
    }
}

/// Answer to [`ShareRevokeRequest`]. Revoking an absent share is an error
/// (`NO_SHARE`) so the KMS notices typos; the epoch is then unchanged.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ShareRevokeResponse {
    pub throttle_time_ms: i32,
    pub error_code: i16,
    pub error_message: Option<String>,
    /// The kid's revocation counter after this request.
    pub revocation_epoch: i64,
}

impl Message for ShareRevokeResponse {
    fn encode(&self, buf: &mut Vec<u8>, version: i16) -> Result<()> {
        check_version(version)?;
        let mut e = Encoder::new(buf);
        e.i32(self.throttle_time_ms);
        e.i16(self.error_code);
        e.nullable_string(self.error_message.as_deref(), MAX_TEXT_LEN, "error message")?;
        e.i64(self.revocation_epoch);
        e.tagged_fields();
        Ok(())
    }

    fn decode(buf: &mut &[u8], version: i16) -> Result<Self> {
        check_version(version)?;
        let mut d = Decoder::new(buf);
        let (throttle_time_ms, error_code) = head(&mut d)?;
        let error_message = d.nullable_string(MAX_TEXT_LEN, "error message")?;
        let revocation_epoch = d.i64("revocation epoch")?;
        d.tagged_fields()?;
        Ok(ShareRevokeResponse {
            throttle_time_ms,
            error_code,
            error_message,
            revocation_epoch,
        })
    }
}

// -------------------------------------------------------------------- list

/// `BlindShareList`: every registered share (never its exponents).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ShareListRequest {}

impl Message for ShareListRequest {
    fn encode(&self, buf: &mut Vec<u8>, version: i16) -> Result<()> {
        check_version(version)?;
        Encoder::new(buf).tagged_fields();
        Ok(())
    }

    fn decode(buf: &mut &[u8], version: i16) -> Result<Self> {
        check_version(version)?;
        Decoder::new(buf).tagged_fields()?;
        Ok(ShareListRequest {})
    }
}

/// One registered share.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ShareEntry {
    pub principal: String,
    pub kid: Vec<u8>,
    pub created_ms: i64,
    /// The kid's current revocation counter.
    pub revocation_epoch: i64,
}

/// Answer to [`ShareListRequest`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ShareListResponse {
    pub throttle_time_ms: i32,
    pub error_code: i16,
    pub shares: Vec<ShareEntry>,
}

impl Message for ShareListResponse {
    fn encode(&self, buf: &mut Vec<u8>, version: i16) -> Result<()> {
        check_version(version)?;
        let mut e = Encoder::new(buf);
        e.i32(self.throttle_time_ms);
        e.i16(self.error_code);
        e.array_len(self.shares.len(), usize::MAX, "shares")?;
        for s in &self.shares {
            e.string(&s.principal, MAX_PRINCIPAL_LEN, "principal")?;
            put_kid(&mut e, &s.kid)?;
            e.i64(s.created_ms);
            e.i64(s.revocation_epoch);
            e.tagged_fields();
        }
        e.tagged_fields();
        Ok(())
    }

    fn decode(buf: &mut &[u8], version: i16) -> Result<Self> {
        check_version(version)?;
        let mut d = Decoder::new(buf);
        let (throttle_time_ms, error_code) = head(&mut d)?;
        // principal(≥2) + kid(≥2) + 2×i64 + tags(1)
        let n = d.array_len(usize::MAX, 21, "shares")?;
        let mut shares = Vec::with_capacity(n);
        for _ in 0..n {
            let principal = d.string(MAX_PRINCIPAL_LEN, "principal")?;
            let kid = kid(&mut d)?;
            let created_ms = d.i64("created")?;
            let revocation_epoch = d.i64("revocation epoch")?;
            d.tagged_fields()?;
            shares.push(ShareEntry {
                principal,
                kid,
                created_ms,
                revocation_epoch,
            });
        }
        d.tagged_fields()?;
        Ok(ShareListResponse {
            throttle_time_ms,
            error_code,
            shares,
        })
    }
}

// ------------------------------------------------------------ create topic

/// A topic config for [`CreateTopicRequest`] (`retention.ms`, …).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TopicConfig {
    pub name: String,
    pub value: Option<String>,
}

/// `BlindCreateTopic`: token c under `kid` → physical topic, created if
/// absent (idempotent) with these settings.
#[derive(Clone, PartialEq, Eq)]
pub struct CreateTopicRequest {
    pub kid: Vec<u8>,
    /// c = σ^{e_i1}, I2OSP(c, k).
    pub token: Vec<u8>,
    /// −1 for the broker default.
    pub partitions: i32,
    /// −1 for the broker default.
    pub replication_factor: i16,
    pub configs: Vec<TopicConfig>,
    /// Tagged field 0: the principal the user key was issued for, so the
    /// broker can refuse another user's key (KEY_USER_MISMATCH).
    pub key_principal: Option<String>,
}

impl fmt::Debug for CreateTopicRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CreateTopicRequest")
            .field("kid", &String::from_utf8_lossy(&self.kid))
            .field("token", &"<redacted>")
            .field("partitions", &self.partitions)
            .field("replication_factor", &self.replication_factor)
            .field("configs", &self.configs)
            .field("key_principal", &self.key_principal)
            .finish()
    }
}

impl Message for CreateTopicRequest {
    fn encode(&self, buf: &mut Vec<u8>, version: i16) -> Result<()> {
        check_version(version)?;
        let mut e = Encoder::new(buf);
        put_kid(&mut e, &self.kid)?;
        put_element(&mut e, &self.token, "token")?;
        e.i32(self.partitions);
        e.i16(self.replication_factor);
        e.array_len(self.configs.len(), MAX_CONFIGS, "configs")?;
        for c in &self.configs {
            e.string(&c.name, MAX_CONFIG_NAME, "config name")?;
            e.nullable_string(c.value.as_deref(), MAX_CONFIG_VALUE, "config value")?;
            e.tagged_fields();
        }
        e.tagged_string(
            KEY_PRINCIPAL_TAG,
            self.key_principal.as_deref(),
            MAX_PRINCIPAL_LEN,
            "key principal",
        )?;
        Ok(())
    }

    fn decode(buf: &mut &[u8], version: i16) -> Result<Self> {
        check_version(version)?;
        let mut d = Decoder::new(buf);
        let kid = kid(&mut d)?;
        let token = element(&mut d, "token")?.to_vec();
        let partitions = d.i32("partitions")?;
        let replication_factor = d.i16("replication factor")?;
        let n = d.array_len(MAX_CONFIGS, 3, "configs")?;
        let mut configs = Vec::with_capacity(n);
        for _ in 0..n {
            let name = d.string(MAX_CONFIG_NAME, "config name")?;
            let value = d.nullable_string(MAX_CONFIG_VALUE, "config value")?;
            d.tagged_fields()?;
            configs.push(TopicConfig { name, value });
        }
        let key_principal =
            d.tagged_string(KEY_PRINCIPAL_TAG, MAX_PRINCIPAL_LEN, "key principal")?;
        Ok(CreateTopicRequest {
            kid,
            token,
            partitions,
            replication_factor,
            configs,
            key_principal,
        })
    }
}

/// Answer to [`CreateTopicRequest`]. `created` is false when the topic
/// already existed (the call is idempotent).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CreateTopicResponse {
    pub throttle_time_ms: i32,
    pub error_code: i16,
    pub error_message: Option<String>,
    pub physical_name: String,
    pub topic_id: [u8; 16],
    pub partitions: i32,
    pub created: bool,
    pub revocation_epoch: i64,
}

impl Message for CreateTopicResponse {
    fn encode(&self, buf: &mut Vec<u8>, version: i16) -> Result<()> {
        check_version(version)?;
        let mut e = Encoder::new(buf);
        e.i32(self.throttle_time_ms);
        e.i16(self.error_code);
        e.nullable_string(self.error_message.as_deref(), MAX_TEXT_LEN, "error message")?;
        e.string(&self.physical_name, MAX_TOPIC_LEN, "physical name")?;
        e.uuid(&self.topic_id);
        e.i32(self.partitions);
        buf.push(u8::from(self.created));
        let mut e = Encoder::new(buf);
        e.i64(self.revocation_epoch);
        e.tagged_fields();
        Ok(())
    }

    fn decode(buf: &mut &[u8], version: i16) -> Result<Self> {
        check_version(version)?;
        let mut d = Decoder::new(buf);
        let (throttle_time_ms, error_code) = head(&mut d)?;
        let error_message = d.nullable_string(MAX_TEXT_LEN, "error message")?;
        let physical_name = d.string(MAX_TOPIC_LEN, "physical name")?;
        let topic_id = d.uuid("topic id")?;
        let partitions = d.i32("partitions")?;
        let created = d.bool("created")?;
        let revocation_epoch = d.i64("revocation epoch")?;
        d.tagged_fields()?;
        Ok(CreateTopicResponse {
            throttle_time_ms,
            error_code,
            error_message,
            physical_name,
            topic_id,
            partitions,
            created,
            revocation_epoch,
        })
    }
}

// ----------------------------------------------------------------- resolve

/// `BlindResolve`: token c under `kid` → an existing physical topic.
#[derive(Clone, PartialEq, Eq)]
pub struct ResolveRequest {
    pub kid: Vec<u8>,
    /// c = σ^{e_i1}, I2OSP(c, k).
    pub token: Vec<u8>,
    /// Tagged field 0: as in [`CreateTopicRequest::key_principal`].
    pub key_principal: Option<String>,
}

impl fmt::Debug for ResolveRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResolveRequest")
            .field("kid", &String::from_utf8_lossy(&self.kid))
            .field("token", &"<redacted>")
            .field("key_principal", &self.key_principal)
            .finish()
    }
}

impl Message for ResolveRequest {
    fn encode(&self, buf: &mut Vec<u8>, version: i16) -> Result<()> {
        check_version(version)?;
        let mut e = Encoder::new(buf);
        put_kid(&mut e, &self.kid)?;
        put_element(&mut e, &self.token, "token")?;
        e.tagged_string(
            KEY_PRINCIPAL_TAG,
            self.key_principal.as_deref(),
            MAX_PRINCIPAL_LEN,
            "key principal",
        )
    }

    fn decode(buf: &mut &[u8], version: i16) -> Result<Self> {
        check_version(version)?;
        let mut d = Decoder::new(buf);
        let kid = kid(&mut d)?;
        let token = element(&mut d, "token")?.to_vec();
        let key_principal =
            d.tagged_string(KEY_PRINCIPAL_TAG, MAX_PRINCIPAL_LEN, "key principal")?;
        Ok(ResolveRequest {
            kid,
            token,
            key_principal,
        })
    }
}

/// One partition and its leader.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PartitionLeader {
    pub index: i32,
    pub leader_id: i32,
}

/// A broker address, as in Metadata.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Broker {
    pub node_id: i32,
    pub host: String,
    pub port: i32,
}

/// Answer to [`ResolveRequest`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ResolveResponse {
    pub throttle_time_ms: i32,
    pub error_code: i16,
    pub physical_name: String,
    pub topic_id: [u8; 16],
    pub partitions: Vec<PartitionLeader>,
    pub brokers: Vec<Broker>,
    /// The kid's revocation counter: producers roll their DEKs when it
    /// changes (BLIND.md §7).
    pub revocation_epoch: i64,
    /// Tagged field 0: why the request was refused, for the user.
    pub error_message: Option<String>,
}

impl Message for ResolveResponse {
    fn encode(&self, buf: &mut Vec<u8>, version: i16) -> Result<()> {
        check_version(version)?;
        let mut e = Encoder::new(buf);
        e.i32(self.throttle_time_ms);
        e.i16(self.error_code);
        e.string(&self.physical_name, MAX_TOPIC_LEN, "physical name")?;
        e.uuid(&self.topic_id);
        e.array_len(self.partitions.len(), usize::MAX, "partitions")?;
        for p in &self.partitions {
            e.i32(p.index);
            e.i32(p.leader_id);
            e.tagged_fields();
        }
        e.array_len(self.brokers.len(), usize::MAX, "brokers")?;
        for b in &self.brokers {
            e.i32(b.node_id);
            e.string(&b.host, MAX_TEXT_LEN, "host")?;
            e.i32(b.port);
            e.tagged_fields();
        }
        e.i64(self.revocation_epoch);
        e.tagged_string(
            ERROR_MESSAGE_TAG,
            self.error_message.as_deref(),
            MAX_TEXT_LEN,
            "error message",
        )
    }

    fn decode(buf: &mut &[u8], version: i16) -> Result<Self> {
        check_version(version)?;
        let mut d = Decoder::new(buf);
        let (throttle_time_ms, error_code) = head(&mut d)?;
        let physical_name = d.string(MAX_TOPIC_LEN, "physical name")?;
        let topic_id = d.uuid("topic id")?;
        let n = d.array_len(usize::MAX, 9, "partitions")?;
        let mut partitions = Vec::with_capacity(n);
        for _ in 0..n {
            let index = d.i32("partition")?;
            let leader_id = d.i32("leader")?;
            d.tagged_fields()?;
            partitions.push(PartitionLeader { index, leader_id });
        }
        let n = d.array_len(usize::MAX, 10, "brokers")?;
        let mut brokers = Vec::with_capacity(n);
        for _ in 0..n {
            let node_id = d.i32("node id")?;
            let host = d.string(MAX_TEXT_LEN, "host")?;
            let port = d.i32("port")?;
            d.tagged_fields()?;
            brokers.push(Broker {
                node_id,
                host,
                port,
            });
        }
        let revocation_epoch = d.i64("revocation epoch")?;
        let error_message = d.tagged_string(ERROR_MESSAGE_TAG, MAX_TEXT_LEN, "error message")?;
        Ok(ResolveResponse {
            throttle_time_ms,
            error_code,
            physical_name,
            topic_id,
            partitions,
            brokers,
            revocation_epoch,
            error_message,
        })
    }
}

// ----------------------------------------------------------------- key put

/// `BlindKeyPut`: store W = w^{e_i2} under (physical topic, dek id).
#[derive(Clone, PartialEq, Eq)]
pub struct KeyPutRequest {
    pub physical_topic: String,
    /// 16 random bytes, or `b"topic-key"` for the topic's key-tag secret.
    pub dek_id: Vec<u8>,
    /// w = r^{e_i1}, I2OSP(w, k).
    pub wrap: Vec<u8>,
}

impl fmt::Debug for KeyPutRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyPutRequest")
            .field("physical_topic", &self.physical_topic)
            .field("dek_id_len", &self.dek_id.len())
            .field("wrap", &"<redacted>")
            .finish()
    }
}

impl Message for KeyPutRequest {
    fn encode(&self, buf: &mut Vec<u8>, version: i16) -> Result<()> {
        check_version(version)?;
        check_dek_id(&self.dek_id)?;
        let mut e = Encoder::new(buf);
        e.string(&self.physical_topic, MAX_TOPIC_LEN, "physical topic")?;
        e.bytes(&self.dek_id, DEK_ID_LEN, "dek id")?;
        put_element(&mut e, &self.wrap, "wrap")?;
        e.tagged_fields();
        Ok(())
    }

    fn decode(buf: &mut &[u8], version: i16) -> Result<Self> {
        check_version(version)?;
        let mut d = Decoder::new(buf);
        let physical_topic = d.string(MAX_TOPIC_LEN, "physical topic")?;
        let dek_id = dek_id(&mut d)?;
        let wrap = element(&mut d, "wrap")?.to_vec();
        d.tagged_fields()?;
        Ok(KeyPutRequest {
            physical_topic,
            dek_id,
            wrap,
        })
    }
}

/// Answer to [`KeyPutRequest`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyPutResponse {
    pub throttle_time_ms: i32,
    pub error_code: i16,
    pub revocation_epoch: i64,
}

impl Message for KeyPutResponse {
    fn encode(&self, buf: &mut Vec<u8>, version: i16) -> Result<()> {
        check_version(version)?;
        let mut e = Encoder::new(buf);
        e.i32(self.throttle_time_ms);
        e.i16(self.error_code);
        e.i64(self.revocation_epoch);
        e.tagged_fields();
        Ok(())
    }

    fn decode(buf: &mut &[u8], version: i16) -> Result<Self> {
        check_version(version)?;
        let mut d = Decoder::new(buf);
        let (throttle_time_ms, error_code) = head(&mut d)?;
        let revocation_epoch = d.i64("revocation epoch")?;
        d.tagged_fields()?;
        Ok(KeyPutResponse {
            throttle_time_ms,
            error_code,
            revocation_epoch,
        })
    }
}

// ----------------------------------------------------------------- key get

/// `BlindKeyGet`: W^{d_j2} for (physical topic, dek id).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyGetRequest {
    pub physical_topic: String,
    pub dek_id: Vec<u8>,
}

impl Message for KeyGetRequest {
    fn encode(&self, buf: &mut Vec<u8>, version: i16) -> Result<()> {
        check_version(version)?;
        check_dek_id(&self.dek_id)?;
        let mut e = Encoder::new(buf);
        e.string(&self.physical_topic, MAX_TOPIC_LEN, "physical topic")?;
        e.bytes(&self.dek_id, DEK_ID_LEN, "dek id")?;
        e.tagged_fields();
        Ok(())
    }

    fn decode(buf: &mut &[u8], version: i16) -> Result<Self> {
        check_version(version)?;
        let mut d = Decoder::new(buf);
        let physical_topic = d.string(MAX_TOPIC_LEN, "physical topic")?;
        let dek_id = dek_id(&mut d)?;
        d.tagged_fields()?;
        Ok(KeyGetRequest {
            physical_topic,
            dek_id,
        })
    }
}

/// Answer to [`KeyGetRequest`]; `unwrapped` is empty on error.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct KeyGetResponse {
    pub throttle_time_ms: i32,
    pub error_code: i16,
    /// x = W^{d_j2}; the client raises it to d_j1 (`UserKey::open_dek`).
    pub unwrapped: Vec<u8>,
    pub revocation_epoch: i64,
}

impl fmt::Debug for KeyGetResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyGetResponse")
            .field("throttle_time_ms", &self.throttle_time_ms)
            .field("error_code", &self.error_code)
            .field("unwrapped", &"<redacted>")
            .field("revocation_epoch", &self.revocation_epoch)
            .finish()
    }
}

impl Message for KeyGetResponse {
    fn encode(&self, buf: &mut Vec<u8>, version: i16) -> Result<()> {
        check_version(version)?;
        let mut e = Encoder::new(buf);
        e.i32(self.throttle_time_ms);
        e.i16(self.error_code);
        if self.unwrapped.is_empty() {
            e.bytes(&[], 0, "unwrapped")?;
        } else {
            put_element(&mut e, &self.unwrapped, "unwrapped")?;
        }
        e.i64(self.revocation_epoch);
        e.tagged_fields();
        Ok(())
    }

    fn decode(buf: &mut &[u8], version: i16) -> Result<Self> {
        check_version(version)?;
        let mut d = Decoder::new(buf);
        let (throttle_time_ms, error_code) = head(&mut d)?;
        let raw = d.bytes(MAX_ELEMENT, "unwrapped")?;
        if !raw.is_empty() && !ELEMENT_LENS.contains(&raw.len()) {
            return Err(Error::InvalidElement);
        }
        let unwrapped = raw.to_vec();
        let revocation_epoch = d.i64("revocation epoch")?;
        d.tagged_fields()?;
        Ok(KeyGetResponse {
            throttle_time_ms,
            error_code,
            unwrapped,
            revocation_epoch,
        })
    }
}
