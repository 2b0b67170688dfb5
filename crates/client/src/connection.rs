//! One Kafka protocol connection with version negotiation.

use std::collections::HashMap;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, RequestHeader, ResponseHeader,
    SaslAuthenticateRequest, SaslHandshakeRequest,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::error::{Error, Result};

/// Responses larger than this are refused rather than allocated.
const MAX_RESPONSE_BYTES: usize = 256 * 1024 * 1024;

/// Any byte stream a connection can run over: TCP, or TLS over TCP.
pub trait KafkaStream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> KafkaStream for T {}

pub struct Connection {
    stream: Box<dyn KafkaStream>,
    next_correlation_id: i32,
    client_id: String,
    /// api key → (min, max) the broker serves.
    versions: HashMap<i16, (i16, i16)>,
    timeout: Duration,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

impl Connection {
    /// Connects and negotiates versions with ApiVersions.
    pub async fn connect(addr: &str, client_id: &str) -> Result<Connection> {
        let stream = Connection::tcp(addr).await?;
        Connection::over(Box::new(stream), client_id).await
    }

    /// Opens the TCP connection only (to wrap it in TLS before [`Self::over`]).
    pub async fn tcp(addr: &str) -> Result<TcpStream> {
        let timeout = Duration::from_secs(30);
        let stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| Error::Timeout)?
            .map_err(|source| Error::Connect {
                addr: addr.to_owned(),
                source,
            })?;
        stream.set_nodelay(true)?;
        Ok(stream)
    }

    /// Negotiates versions over an established stream.
    pub async fn over(stream: Box<dyn KafkaStream>, client_id: &str) -> Result<Connection> {
        let timeout = Duration::from_secs(30);
        let mut conn = Connection {
            stream,
            next_correlation_id: 1,
            client_id: client_id.to_owned(),
            versions: HashMap::new(),
            timeout,
        };
        let req = ApiVersionsRequest::default()
            .with_client_software_name(StrBytes::from_static_str("veil"))
            .with_client_software_version(StrBytes::from_static_str(env!("CARGO_PKG_VERSION")));
        let resp: ApiVersionsResponse = conn.send_at(&req, 3).await?;
        if resp.error_code != 0 {
            return Err(Error::kafka("ApiVersions", resp.error_code, None));
        }
        conn.versions = resp
            .api_keys
            .iter()
            .map(|k| (k.api_key, (k.min_version, k.max_version)))
            .collect();
        Ok(conn)
    }

    /// The highest version of `R` both sides speak.
    pub fn version_for<R: Request>(&self) -> Result<i16> {
        let (min, max) = self
            .versions
            .get(&R::KEY)
            .copied()
            .ok_or(Error::Unsupported {
                api: api_name(R::KEY),
            })?;
        let ours = R::VERSIONS;
        let v = max.min(ours.max);
        if v < min.max(ours.min) {
            return Err(Error::Unsupported {
                api: api_name(R::KEY),
            });
        }
        Ok(v)
    }

    /// Sends `req` at the best common version and waits for its response.
    pub async fn send<R: Request>(&mut self, req: &R) -> Result<R::Response> {
        let version = self.version_for::<R>()?;
        self.send_at(req, version).await
    }

    /// Sends `req` at exactly `version`.
    pub async fn send_at<R: Request>(&mut self, req: &R, version: i16) -> Result<R::Response> {
        let correlation_id = self.next_correlation_id;
        self.next_correlation_id = self.next_correlation_id.wrapping_add(1);
        let header = RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(correlation_id)
            .with_client_id(Some(StrBytes::from_string(self.client_id.clone())));
        let header_version = R::header_version(version);
        let size = header
            .compute_size(header_version)
            .and_then(|h| Ok(h + req.compute_size(version)?))
            .map_err(|e| Error::Protocol(e.to_string()))?;
        let mut buf = BytesMut::with_capacity(size + 4);
        buf.put_i32(i32::try_from(size).map_err(|_| Error::Protocol("request too large".into()))?);
        header
            .encode(&mut buf, header_version)
            .and_then(|()| req.encode(&mut buf, version))
            .map_err(|e| Error::Protocol(e.to_string()))?;
        let timeout = self.timeout;
        tokio::time::timeout(timeout, self.stream.write_all(&buf))
            .await
            .map_err(|_| Error::Timeout)??;
        let mut body = tokio::time::timeout(timeout, self.read_frame())
            .await
            .map_err(|_| Error::Timeout)??;
        let response_header =
            ResponseHeader::decode(&mut body, R::Response::header_version(version))
                .map_err(|e| Error::Protocol(e.to_string()))?;
        if response_header.correlation_id != correlation_id {
            return Err(Error::Protocol(format!(
                "response correlation id {} does not match request {correlation_id}",
                response_header.correlation_id
            )));
        }
        R::Response::decode(&mut body, version).map_err(|e| Error::Protocol(e.to_string()))
    }

    /// The `(min, max)` versions the broker advertised for `api_key`, also
    /// for keys `kafka-protocol` does not know (Veil's extensions).
    pub fn advertised(&self, api_key: i16) -> Option<(i16, i16)> {
        self.versions.get(&api_key).copied()
    }

    /// Sends a request encoded elsewhere (Veil's extension APIs live in
    /// `veil-blind`, not `kafka-protocol`). `encode` gets the correlation id
    /// and returns the whole size-prefixed frame; the reply is returned
    /// without its size prefix, correlation id unchecked (the caller's
    /// decoder reads it).
    pub async fn send_frame(
        &mut self,
        encode: impl FnOnce(i32) -> Result<Vec<u8>>,
    ) -> Result<Bytes> {
        let correlation_id = self.next_correlation_id;
        self.next_correlation_id = self.next_correlation_id.wrapping_add(1);
        let frame = encode(correlation_id)?;
        let timeout = self.timeout;
        tokio::time::timeout(timeout, self.stream.write_all(&frame))
            .await
            .map_err(|_| Error::Timeout)??;
        tokio::time::timeout(timeout, self.read_frame())
            .await
            .map_err(|_| Error::Timeout)?
    }

    /// SaslHandshake v1 for `mechanism`.
    pub async fn sasl_handshake(&mut self, mechanism: &str) -> Result<()> {
        let req = SaslHandshakeRequest::default()
            .with_mechanism(StrBytes::from_string(mechanism.to_owned()));
        let resp = self.send_at(&req, 1).await?;
        if resp.error_code != 0 {
            return Err(Error::kafka("SaslHandshake", resp.error_code, None));
        }
        Ok(())
    }

    /// One SaslAuthenticate round trip: sends `token`, returns the broker's.
    pub async fn sasl_authenticate(&mut self, token: Vec<u8>) -> Result<Bytes> {
        let req = SaslAuthenticateRequest::default().with_auth_bytes(Bytes::from(token));
        let version = self.version_for::<SaslAuthenticateRequest>()?;
        let resp = self.send_at(&req, version).await?;
        if resp.error_code != 0 {
            return Err(Error::kafka(
                "SaslAuthenticate",
                resp.error_code,
                resp.error_message.map(|m| m.to_string()),
            ));
        }
        Ok(resp.auth_bytes)
    }

    /// Sets how long one request may take (default 30 s).
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    async fn read_frame(&mut self) -> Result<Bytes> {
        let size = self.stream.read_i32().await?;
        let len = usize::try_from(size)
            .ok()
            .filter(|&l| l <= MAX_RESPONSE_BYTES)
            .ok_or_else(|| Error::Protocol(format!("invalid response size {size}")))?;
        let mut buf = BytesMut::zeroed(len);
        self.stream.read_exact(&mut buf).await?;
        Ok(buf.freeze())
    }
}

fn api_name(key: i16) -> &'static str {
    match ApiKey::try_from(key) {
        Ok(ApiKey::CreateTopics) => "CreateTopics",
        Ok(ApiKey::DeleteTopics) => "DeleteTopics",
        Ok(ApiKey::Metadata) => "Metadata",
        Ok(ApiKey::DescribeConfigs) => "DescribeConfigs",
        Ok(ApiKey::IncrementalAlterConfigs) => "IncrementalAlterConfigs",
        Ok(ApiKey::CreatePartitions) => "CreatePartitions",
        Ok(ApiKey::Produce) => "Produce",
        Ok(ApiKey::Fetch) => "Fetch",
        Ok(ApiKey::ListOffsets) => "ListOffsets",
        Ok(ApiKey::DescribeCluster) => "DescribeCluster",
        Ok(ApiKey::DescribeQuorum) => "DescribeQuorum",
        _ => "this API",
    }
}
