//! The table of served Kafka APIs, request decoding, the one exhaustive
//! dispatch, and response encoding.
//!
//! Every served API appears once in [`served_apis!`]; the `Request` and
//! `Response` enums, the decoder, the dispatcher and the ApiVersions answer
//! are all generated from that one list, so they cannot disagree.

use std::future::Future;
use std::pin::Pin;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{
    AddOffsetsToTxnRequest, AddOffsetsToTxnResponse, AddPartitionsToTxnRequest,
    AddPartitionsToTxnResponse, DescribeTransactionsRequest, DescribeTransactionsResponse,
    EndTxnRequest, EndTxnResponse, ListTransactionsRequest, ListTransactionsResponse,
    TxnOffsetCommitRequest, TxnOffsetCommitResponse, WriteTxnMarkersRequest,
    WriteTxnMarkersResponse,
};
use kafka_protocol::messages::{
    AlterConfigsRequest, AlterConfigsResponse, AlterPartitionReassignmentsRequest,
    AlterPartitionReassignmentsResponse, ApiKey, ApiVersionsRequest, ApiVersionsResponse,
    CreatePartitionsRequest, CreatePartitionsResponse, CreateTopicsRequest, CreateTopicsResponse,
    DeleteGroupsRequest, DeleteGroupsResponse, DeleteRecordsRequest, DeleteRecordsResponse,
    DeleteTopicsRequest, DeleteTopicsResponse, DescribeClusterRequest, DescribeClusterResponse,
    DescribeConfigsRequest, DescribeConfigsResponse, DescribeGroupsRequest, DescribeGroupsResponse,
    DescribeQuorumRequest, DescribeQuorumResponse, ElectLeadersRequest, ElectLeadersResponse,
    FetchRequest, FetchResponse, FindCoordinatorRequest, FindCoordinatorResponse, HeartbeatRequest,
    HeartbeatResponse, IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse,
    InitProducerIdRequest, InitProducerIdResponse, JoinGroupRequest, JoinGroupResponse,
    LeaveGroupRequest, LeaveGroupResponse, ListGroupsRequest, ListGroupsResponse,
    ListOffsetsRequest, ListOffsetsResponse, ListPartitionReassignmentsRequest,
    ListPartitionReassignmentsResponse, MetadataRequest, MetadataResponse, OffsetCommitRequest,
    OffsetCommitResponse, OffsetDeleteRequest, OffsetDeleteResponse, OffsetFetchRequest,
    OffsetFetchResponse, OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse, ProduceRequest,
    ProduceResponse, RequestHeader, ResponseHeader, SyncGroupRequest, SyncGroupResponse,
};
use kafka_protocol::messages::{
    AlterUserScramCredentialsRequest, AlterUserScramCredentialsResponse,
    DescribeUserScramCredentialsRequest, DescribeUserScramCredentialsResponse,
    SaslAuthenticateRequest, SaslAuthenticateResponse, SaslHandshakeRequest, SaslHandshakeResponse,
};
use kafka_protocol::messages::{
    CreateAclsRequest, CreateAclsResponse, DeleteAclsRequest, DeleteAclsResponse,
    DescribeAclsRequest, DescribeAclsResponse,
};
use kafka_protocol::protocol::{
    decode_request_header_from_buffer, Decodable, Encodable, HeaderVersion,
};

use kafka_protocol::protocol::StrBytes;
use veil_blind::protocol::VeilApi;

use crate::context::RequestContext;
use crate::frame::HeaderPrefix;
use crate::handlers;

/// What a handler produced: a response now, one that completes later
/// (durability waits, long polls), or none at all (acks=0).
pub enum Handled {
    Ready(Response),
    Deferred(Pin<Box<dyn Future<Output = Response> + Send>>),
    NoResponse,
}

macro_rules! served_apis {
    ($( $variant:ident : $req:ty, $resp:ty => $module:ident, $min:literal..=$max:literal; )*) => {
        /// A decoded request of a served API.
        #[derive(Debug)]
        pub enum Request {
            $( $variant($req), )*
            /// A Veil extension API (`veil_blind::protocol`).
            Blind(veil_blind::protocol::Request),
            /// An inter-node call (inter-node listener only).
            Cluster(crate::cluster::rpc::Envelope<crate::cluster::rpc::Call>),
        }

        /// A response of a served API.
        #[derive(Debug)]
        pub enum Response {
            $( $variant($resp), )*
            Blind(veil_blind::protocol::Response),
            Cluster(Box<crate::cluster::rpc::Envelope<crate::cluster::rpc::Reply>>),
        }

        $(
            impl From<$resp> for Handled {
                fn from(r: $resp) -> Handled {
                    Handled::Ready(Response::$variant(r))
                }
            }
        )*

        /// (api key, min version, max version) of every served API.
        pub const SERVED: &[(ApiKey, i16, i16)] = &[ $( (ApiKey::$variant, $min, $max), )* ];

        /// Decodes the body of a served API; `None` if the API is not served.
        pub fn decode_body(key: ApiKey, version: i16, body: &mut Bytes) -> anyhow::Result<Option<Request>> {
            Ok(match key {
                $( ApiKey::$variant => Some(Request::$variant(<$req>::decode(body, version)?)), )*
                _ => None,
            })
        }

        impl Request {
            pub fn api(&self) -> Api {
                match self {
                    $( Request::$variant(_) => Api::Kafka(ApiKey::$variant), )*
                    Request::Blind(r) => Api::Veil(r.api()),
                    Request::Cluster(_) => Api::Cluster,
                }
            }
        }

        impl Response {
            pub fn api(&self) -> Api {
                match self {
                    $( Response::$variant(_) => Api::Kafka(ApiKey::$variant), )*
                    Response::Blind(r) => Api::Veil(r.api()),
                    Response::Cluster(_) => Api::Cluster,
                }
            }

            /// Encodes header and body as one size-prefixed frame. Veil
            /// responses use header v1 (flexible from v0), like Kafka's.
            pub fn encode_frame(&self, version: i16, correlation_id: i32) -> anyhow::Result<BytesMut> {
                match self {
                    $( Response::$variant(r) => encode_frame(r, version, correlation_id), )*
                    Response::Blind(r) => Ok(BytesMut::from(&r.encode_frame(version, correlation_id)?[..])),
                    Response::Cluster(r) => Ok(crate::cluster::rpc::encode_response(correlation_id, r)?),
                }
            }
        }

        /// Runs the handler of `request`.
        pub async fn dispatch(ctx: &RequestContext, request: Request) -> Handled {
            match request {
                $( Request::$variant(r) => handlers::$module::handle(ctx, r).await.into(), )*
                Request::Blind(r) => crate::blind::dispatch(ctx, r).await,
                Request::Cluster(call) => {
                    // Deferred: a proposal may wait for the quorum, and the
                    // connection keeps reading meanwhile.
                    let ctx = ctx.clone();
                    Handled::Deferred(Box::pin(async move {
                        let reply = crate::cluster::handler::serve(&ctx.broker, &ctx.principal, call).await;
                        Response::Cluster(Box::new(reply))
                    }))
                }
            }
        }
    };
}

served_apis! {
    Produce: ProduceRequest, ProduceResponse => produce, 3..=11;
    Fetch: FetchRequest, FetchResponse => fetch, 4..=16;
    ListOffsets: ListOffsetsRequest, ListOffsetsResponse => list_offsets, 1..=8;
    Metadata: MetadataRequest, MetadataResponse => metadata, 0..=12;
    OffsetForLeaderEpoch: OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse => offset_for_leader_epoch, 2..=4;
    ApiVersions: ApiVersionsRequest, ApiVersionsResponse => api_versions, 0..=4;
    CreateTopics: CreateTopicsRequest, CreateTopicsResponse => create_topics, 2..=7;
    DeleteTopics: DeleteTopicsRequest, DeleteTopicsResponse => delete_topics, 1..=6;
    DeleteRecords: DeleteRecordsRequest, DeleteRecordsResponse => delete_records, 0..=2;
    DescribeConfigs: DescribeConfigsRequest, DescribeConfigsResponse => describe_configs, 1..=4;
    AlterConfigs: AlterConfigsRequest, AlterConfigsResponse => alter_configs, 0..=2;
    CreatePartitions: CreatePartitionsRequest, CreatePartitionsResponse => create_partitions, 0..=3;
    IncrementalAlterConfigs: IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse => incremental_alter_configs, 0..=1;
    DescribeCluster: DescribeClusterRequest, DescribeClusterResponse => describe_cluster, 0..=2;
    DescribeQuorum: DescribeQuorumRequest, DescribeQuorumResponse => describe_quorum, 0..=2;
    ElectLeaders: ElectLeadersRequest, ElectLeadersResponse => elect_leaders, 0..=2;
    AlterPartitionReassignments: AlterPartitionReassignmentsRequest, AlterPartitionReassignmentsResponse => alter_partition_reassignments, 0..=1;
    ListPartitionReassignments: ListPartitionReassignmentsRequest, ListPartitionReassignmentsResponse => list_partition_reassignments, 0..=0;
    DescribeAcls: DescribeAclsRequest, DescribeAclsResponse => describe_acls, 1..=3;
    CreateAcls: CreateAclsRequest, CreateAclsResponse => create_acls, 1..=3;
    DeleteAcls: DeleteAclsRequest, DeleteAclsResponse => delete_acls, 1..=3;
    InitProducerId: InitProducerIdRequest, InitProducerIdResponse => init_producer_id, 0..=5;
    SaslHandshake: SaslHandshakeRequest, SaslHandshakeResponse => sasl_handshake, 0..=1;
    SaslAuthenticate: SaslAuthenticateRequest, SaslAuthenticateResponse => sasl_authenticate, 0..=2;
    AlterUserScramCredentials: AlterUserScramCredentialsRequest, AlterUserScramCredentialsResponse => alter_user_scram_credentials, 0..=0;
    DescribeUserScramCredentials: DescribeUserScramCredentialsRequest, DescribeUserScramCredentialsResponse => describe_user_scram_credentials, 0..=0;
    FindCoordinator: FindCoordinatorRequest, FindCoordinatorResponse => find_coordinator, 0..=5;
    JoinGroup: JoinGroupRequest, JoinGroupResponse => join_group, 0..=9;
    SyncGroup: SyncGroupRequest, SyncGroupResponse => sync_group, 0..=5;
    Heartbeat: HeartbeatRequest, HeartbeatResponse => heartbeat, 0..=4;
    LeaveGroup: LeaveGroupRequest, LeaveGroupResponse => leave_group, 0..=5;
    ListGroups: ListGroupsRequest, ListGroupsResponse => list_groups, 0..=5;
    DescribeGroups: DescribeGroupsRequest, DescribeGroupsResponse => describe_groups, 0..=5;
    DeleteGroups: DeleteGroupsRequest, DeleteGroupsResponse => delete_groups, 0..=2;
    OffsetCommit: OffsetCommitRequest, OffsetCommitResponse => offset_commit, 2..=9;
    OffsetFetch: OffsetFetchRequest, OffsetFetchResponse => offset_fetch, 1..=9;
    OffsetDelete: OffsetDeleteRequest, OffsetDeleteResponse => offset_delete, 0..=0;
    AddPartitionsToTxn: AddPartitionsToTxnRequest, AddPartitionsToTxnResponse => add_partitions_to_txn, 0..=4;
    AddOffsetsToTxn: AddOffsetsToTxnRequest, AddOffsetsToTxnResponse => add_offsets_to_txn, 0..=3;
    EndTxn: EndTxnRequest, EndTxnResponse => end_txn, 0..=3;
    WriteTxnMarkers: WriteTxnMarkersRequest, WriteTxnMarkersResponse => write_txn_markers, 1..=1;
    TxnOffsetCommit: TxnOffsetCommitRequest, TxnOffsetCommitResponse => txn_offset_commit, 0..=3;
    DescribeTransactions: DescribeTransactionsRequest, DescribeTransactionsResponse => describe_transactions, 0..=0;
    ListTransactions: ListTransactionsRequest, ListTransactionsResponse => list_transactions, 0..=1;
}

/// Which API a request or response belongs to: Kafka's, or a Veil
/// extension API (keys outside kafka-protocol's `ApiKey`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    Kafka(ApiKey),
    Veil(VeilApi),
    /// Inter-node calls.
    Cluster,
}

impl Api {
    /// A stable lowercase name for logs and metric labels.
    pub fn name(self) -> &'static str {
        match self {
            Api::Kafka(key) => api_name(key),
            Api::Veil(api) => api.name(),
            Api::Cluster => crate::cluster::rpc::API_NAME,
        }
    }

    pub fn kafka(self) -> Option<ApiKey> {
        match self {
            Api::Kafka(key) => Some(key),
            Api::Veil(_) | Api::Cluster => None,
        }
    }
}

/// A request frame, decoded. Lives only until it is dispatched, so the size
/// difference between the variants costs nothing worth a box.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
pub enum Decoded {
    Request {
        header: RequestHeader,
        request: Request,
    },
    /// ApiVersions at a version we do not serve: answered at v0 with
    /// UNSUPPORTED_VERSION and our ranges (KIP-511).
    UnsupportedApiVersions { correlation_id: i32 },
}

/// Why a frame cannot be served. Kafka closes the connection for each of
/// these: there is no response layout to answer with.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("request shorter than its header")]
    Short,
    #[error("unknown API key {0}")]
    UnknownApi(i16),
    #[error("API {0} is not served")]
    NotServed(&'static str),
    #[error("{api} v{version} is not served")]
    UnsupportedVersion { api: &'static str, version: i16 },
    #[error("malformed {api} request: {reason}")]
    Malformed { api: &'static str, reason: String },
}

/// Decodes one request frame (without its size prefix). Pure: the fuzz
/// target drives exactly this.
pub fn decode_request(mut frame: Bytes) -> Result<Decoded, DecodeError> {
    let prefix = HeaderPrefix::parse(&frame).ok_or(DecodeError::Short)?;
    if prefix.api_key == crate::cluster::rpc::API_KEY {
        let (correlation_id, client_id, call) = crate::cluster::rpc::decode_request(&frame)
            .map_err(|reason| DecodeError::Malformed {
                api: crate::cluster::rpc::API_NAME,
                reason,
            })?;
        let header = RequestHeader::default()
            .with_request_api_key(prefix.api_key)
            .with_request_api_version(prefix.api_version)
            .with_correlation_id(correlation_id)
            .with_client_id(client_id.map(StrBytes::from_string));
        return Ok(Decoded::Request {
            header,
            request: Request::Cluster(call),
        });
    }
    if let Some(api) = VeilApi::from_key(prefix.api_key) {
        return decode_veil(api, prefix.api_version, &frame);
    }
    let key =
        ApiKey::try_from(prefix.api_key).map_err(|()| DecodeError::UnknownApi(prefix.api_key))?;
    let api = api_name(key);
    let (min, max) = served_versions(key).ok_or(DecodeError::NotServed(api))?;
    if !(min..=max).contains(&prefix.api_version) {
        if key == ApiKey::ApiVersions {
            return Ok(Decoded::UnsupportedApiVersions {
                correlation_id: prefix.correlation_id,
            });
        }
        return Err(DecodeError::UnsupportedVersion {
            api,
            version: prefix.api_version,
        });
    }
    let malformed = |e: anyhow::Error| DecodeError::Malformed {
        api,
        reason: e.to_string(),
    };
    let header = decode_request_header_from_buffer(&mut frame).map_err(malformed)?;
    let request = decode_body(key, prefix.api_version, &mut frame)
        .map_err(malformed)?
        .ok_or(DecodeError::NotServed(api))?;
    Ok(Decoded::Request { header, request })
}

/// A Veil extension request: header v2 and body by `veil_blind::protocol`.
fn decode_veil(api: VeilApi, version: i16, frame: &[u8]) -> Result<Decoded, DecodeError> {
    let (min, max) = api.versions();
    if !(min..=max).contains(&version) {
        return Err(DecodeError::UnsupportedVersion {
            api: api.name(),
            version,
        });
    }
    let malformed = |e: veil_blind::Error| DecodeError::Malformed {
        api: api.name(),
        reason: e.to_string(),
    };
    let (h, request) = veil_blind::protocol::decode_request_frame(frame)
        .map_err(malformed)?
        .ok_or(DecodeError::NotServed(api.name()))?;
    let header = RequestHeader::default()
        .with_request_api_key(h.api_key)
        .with_request_api_version(h.api_version)
        .with_correlation_id(h.correlation_id)
        .with_client_id(h.client_id.map(StrBytes::from_string));
    Ok(Decoded::Request {
        header,
        request: Request::Blind(request),
    })
}

/// The served version range of `key`, if served.
pub fn served_versions(key: ApiKey) -> Option<(i16, i16)> {
    SERVED
        .iter()
        .find(|(k, _, _)| *k == key)
        .map(|&(_, min, max)| (min, max))
}

/// A stable lowercase name for logs and metric labels.
pub fn api_name(key: ApiKey) -> &'static str {
    macro_rules! names {
        ($($k:ident => $n:literal),* $(,)?) => {
            match key { $( ApiKey::$k => $n, )* _ => "other" }
        };
    }
    names! {
        Produce => "produce", Fetch => "fetch", ListOffsets => "list_offsets",
        Metadata => "metadata", OffsetForLeaderEpoch => "offset_for_leader_epoch",
        ApiVersions => "api_versions", CreateTopics => "create_topics",
        DeleteTopics => "delete_topics", DeleteRecords => "delete_records",
        DescribeConfigs => "describe_configs", AlterConfigs => "alter_configs",
        CreatePartitions => "create_partitions",
        IncrementalAlterConfigs => "incremental_alter_configs",
        DescribeAcls => "describe_acls", CreateAcls => "create_acls", DeleteAcls => "delete_acls",
        DescribeCluster => "describe_cluster", DescribeQuorum => "describe_quorum",
        ElectLeaders => "elect_leaders",
        AlterPartitionReassignments => "alter_partition_reassignments",
        ListPartitionReassignments => "list_partition_reassignments",
        InitProducerId => "init_producer_id",
        SaslHandshake => "sasl_handshake", SaslAuthenticate => "sasl_authenticate",
        AlterUserScramCredentials => "alter_user_scram_credentials",
        DescribeUserScramCredentials => "describe_user_scram_credentials",
        FindCoordinator => "find_coordinator", JoinGroup => "join_group",
        SyncGroup => "sync_group", Heartbeat => "heartbeat", LeaveGroup => "leave_group",
        ListGroups => "list_groups", DescribeGroups => "describe_groups",
        DeleteGroups => "delete_groups", OffsetCommit => "offset_commit",
        OffsetFetch => "offset_fetch", OffsetDelete => "offset_delete",
    }
}

fn encode_frame<R: Encodable + HeaderVersion>(
    response: &R,
    version: i16,
    correlation_id: i32,
) -> anyhow::Result<BytesMut> {
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    let header_version = R::header_version(version);
    let size = header.compute_size(header_version)? + response.compute_size(version)?;
    let mut buf = BytesMut::with_capacity(4 + size);
    buf.put_i32(i32::try_from(size)?);
    header.encode(&mut buf, header_version)?;
    response.encode(&mut buf, version)?;
    Ok(buf)
}
