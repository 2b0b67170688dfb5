//! The cluster as Kafka's admin APIs describe it: brokers, the controller
//! and fencing (DescribeCluster v2), the metadata quorum (DescribeQuorum,
//! which only the quorum leader — the controller — answers), and broker
//! configs (DescribeConfigs / IncrementalAlterConfigs on BROKER resources).

use std::collections::BTreeMap;

use kafka_protocol::messages::describe_quorum_request::{PartitionData, TopicData};
use kafka_protocol::messages::incremental_alter_configs_request::{
    AlterConfigsResource, AlterableConfig,
};
use kafka_protocol::messages::{
    DescribeClusterRequest, DescribeQuorumRequest, IncrementalAlterConfigsRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use veil_blind::protocol::DESCRIBE_CLUSTER_HEARTBEAT_AGE_TAG;

use crate::admin::{message, Admin};
use crate::error::{Error, Result};

/// The metadata log in Kafka's protocol.
const METADATA_TOPIC: &str = "__cluster_metadata";
const RESOURCE_BROKER: i8 = 4;

/// A broker as DescribeCluster reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerInfo {
    pub node_id: i32,
    pub host: String,
    pub port: i32,
    pub rack: Option<String>,
    /// The controller stopped accepting it (lease expired, restarting,
    /// catching up): it leads nothing and clients are not sent to it.
    pub fenced: bool,
    /// Milliseconds since its last heartbeat reached the controller; only
    /// a Veil controller reports it.
    pub heartbeat_age_ms: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterDescription {
    pub cluster_id: String,
    /// `None` when the answering node knows no controller.
    pub controller: Option<i32>,
    pub brokers: Vec<BrokerInfo>,
}

/// One replica of the metadata log (Kafka's `ReplicaState`); -1 is unknown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuorumReplica {
    pub node_id: i32,
    pub log_end_offset: i64,
    /// When the leader last heard from it (ms since the epoch, its clock).
    pub last_fetch_ms: i64,
    /// When its log last reached the leader's end.
    pub last_caught_up_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuorumDescription {
    pub leader_id: i32,
    pub leader_epoch: i32,
    pub high_watermark: i64,
    pub voters: Vec<QuorumReplica>,
    pub observers: Vec<QuorumReplica>,
}

/// One broker config (DescribeConfigs on a BROKER resource).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerConfig {
    pub name: String,
    pub value: Option<String>,
    /// Kafka's config source (2 this broker, 3 every broker, 4 static, 5 default).
    pub source: i8,
    pub read_only: bool,
}

impl Admin {
    /// DescribeCluster, with fenced brokers where the broker serves v2.
    pub async fn describe_cluster(&mut self) -> Result<ClusterDescription> {
        let req = DescribeClusterRequest::default()
            .with_include_fenced_brokers(true)
            .with_endpoint_type(1);
        let resp = self.connection().send(&req).await?;
        if resp.error_code != 0 {
            return Err(Error::kafka(
                "DescribeCluster",
                resp.error_code,
                message(resp.error_message.as_ref()),
            ));
        }
        let mut brokers: Vec<BrokerInfo> = resp
            .brokers
            .into_iter()
            .map(|b| {
                let age = b
                    .unknown_tagged_fields
                    .get(&DESCRIBE_CLUSTER_HEARTBEAT_AGE_TAG)
                    .and_then(|v| <[u8; 8]>::try_from(&v[..]).ok())
                    .map(i64::from_be_bytes);
                BrokerInfo {
                    node_id: b.broker_id.0,
                    host: b.host.to_string(),
                    port: b.port,
                    rack: b.rack.map(|r| r.to_string()),
                    fenced: b.is_fenced,
                    heartbeat_age_ms: age,
                }
            })
            .collect();
        brokers.sort_by_key(|b| b.node_id);
        Ok(ClusterDescription {
            cluster_id: resp.cluster_id.to_string(),
            controller: Some(resp.controller_id.0).filter(|c| *c >= 0),
            brokers,
        })
    }

    /// DescribeQuorum. A node that does not lead the quorum answers
    /// NOT_LEADER_OR_FOLLOWER (6): ask the controller.
    pub async fn describe_quorum(&mut self) -> Result<QuorumDescription> {
        let req = DescribeQuorumRequest::default().with_topics(vec![TopicData::default()
            .with_topic_name(TopicName(StrBytes::from_static_str(METADATA_TOPIC)))
            .with_partitions(vec![PartitionData::default().with_partition_index(0)])]);
        let resp = self.connection().send(&req).await?;
        if resp.error_code != 0 {
            return Err(Error::kafka(
                "DescribeQuorum",
                resp.error_code,
                message(resp.error_message.as_ref()),
            ));
        }
        let p = resp
            .topics
            .into_iter()
            .flat_map(|t| t.partitions)
            .next()
            .ok_or_else(|| Error::Protocol("empty DescribeQuorum response".into()))?;
        if p.error_code != 0 {
            return Err(Error::kafka(
                "DescribeQuorum",
                p.error_code,
                message(p.error_message.as_ref()),
            ));
        }
        let replicas =
            |list: Vec<kafka_protocol::messages::describe_quorum_response::ReplicaState>| {
                list.into_iter()
                    .map(|r| QuorumReplica {
                        node_id: r.replica_id.0,
                        log_end_offset: r.log_end_offset,
                        last_fetch_ms: r.last_fetch_timestamp,
                        last_caught_up_ms: r.last_caught_up_timestamp,
                    })
                    .collect()
            };
        Ok(QuorumDescription {
            leader_id: p.leader_id.0,
            leader_epoch: p.leader_epoch,
            high_watermark: p.high_watermark,
            voters: replicas(p.current_voters),
            observers: replicas(p.observers),
        })
    }

    /// The configs of a broker resource: `""` for the cluster-wide dynamic
    /// defaults, or a node id (which only that node describes).
    pub async fn describe_broker_configs(&mut self, broker: &str) -> Result<Vec<BrokerConfig>> {
        let configs = self
            .resource_configs(
                RESOURCE_BROKER,
                broker,
                &format!("broker '{broker}' configs"),
            )
            .await?;
        Ok(configs
            .into_iter()
            .map(|c| BrokerConfig {
                name: c.name.to_string(),
                value: c.value.map(|v| v.to_string()),
                source: c.config_source,
                read_only: c.read_only,
            })
            .collect())
    }

    /// Sets and removes dynamic configs of a broker resource (`""` for
    /// every broker), as `kafka-configs --entity-type brokers` does.
    pub async fn alter_broker_configs(
        &mut self,
        broker: &str,
        set: &BTreeMap<String, String>,
        remove: &[String],
    ) -> Result<()> {
        let mut configs: Vec<AlterableConfig> = set
            .iter()
            .map(|(k, v)| {
                AlterableConfig::default()
                    .with_name(StrBytes::from_string(k.clone()))
                    .with_config_operation(0)
                    .with_value(Some(StrBytes::from_string(v.clone())))
            })
            .collect();
        configs.extend(remove.iter().map(|k| {
            AlterableConfig::default()
                .with_name(StrBytes::from_string(k.clone()))
                .with_config_operation(1)
                .with_value(None)
        }));
        let req = IncrementalAlterConfigsRequest::default().with_resources(vec![
            AlterConfigsResource::default()
                .with_resource_type(RESOURCE_BROKER)
                .with_resource_name(StrBytes::from_string(broker.to_owned()))
                .with_configs(configs),
        ]);
        let resp = self.connection().send(&req).await?;
        for r in resp.responses {
            if r.error_code != 0 {
                return Err(Error::kafka(
                    format!("cannot alter broker '{broker}' configs"),
                    r.error_code,
                    message(r.error_message.as_ref()),
                ));
            }
        }
        Ok(())
    }
}

/// One partition's answer to ElectLeaders: 0, or Kafka's error code
/// (84 ELECTION_NOT_NEEDED, 80 PREFERRED_LEADER_NOT_AVAILABLE,
/// 83 ELIGIBLE_LEADERS_NOT_AVAILABLE, 3 UNKNOWN_TOPIC_OR_PARTITION).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ElectionResult {
    pub topic: String,
    pub partition: i32,
    pub error_code: i16,
    pub message: Option<String>,
}

impl Admin {
    /// ElectLeaders: preferred leaders (or, `unclean`, any live replica for
    /// partitions without a leader) for `partitions`, or every partition.
    pub async fn elect_leaders(
        &mut self,
        unclean: bool,
        partitions: Option<Vec<(String, Vec<i32>)>>,
    ) -> Result<Vec<ElectionResult>> {
        use kafka_protocol::messages::elect_leaders_request::TopicPartitions;
        use kafka_protocol::messages::ElectLeadersRequest;
        let topics = partitions.map(|list| {
            list.into_iter()
                .map(|(t, ps)| {
                    TopicPartitions::default()
                        .with_topic(TopicName(StrBytes::from_string(t)))
                        .with_partitions(ps)
                })
                .collect()
        });
        let req = ElectLeadersRequest::default()
            .with_election_type(i8::from(unclean))
            .with_topic_partitions(topics)
            .with_timeout_ms(30_000);
        let resp = self.connection().send(&req).await?;
        if resp.error_code != 0 {
            return Err(Error::kafka("ElectLeaders", resp.error_code, None));
        }
        let mut out = Vec::new();
        for t in resp.replica_election_results {
            for p in t.partition_result {
                out.push(ElectionResult {
                    topic: t.topic.to_string(),
                    partition: p.partition_id,
                    error_code: p.error_code,
                    message: message(p.error_message.as_ref()),
                });
            }
        }
        out.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
        Ok(out)
    }
}

/// A partition move under way (ListPartitionReassignments).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OngoingReassignment {
    pub topic: String,
    pub partition: i32,
    pub replicas: Vec<i32>,
    pub adding: Vec<i32>,
    pub removing: Vec<i32>,
}

impl Admin {
    /// AlterPartitionReassignments for one partition: move it to
    /// `replicas`, or cancel its move (`None`). Kafka's per-partition error
    /// comes back as an error.
    pub async fn reassign_partition(
        &mut self,
        topic: &str,
        partition: i32,
        replicas: Option<Vec<i32>>,
    ) -> Result<()> {
        use kafka_protocol::messages::alter_partition_reassignments_request::{
            ReassignablePartition, ReassignableTopic,
        };
        use kafka_protocol::messages::{AlterPartitionReassignmentsRequest, BrokerId};
        let req = AlterPartitionReassignmentsRequest::default()
            .with_timeout_ms(30_000)
            .with_allow_replication_factor_change(true)
            .with_topics(vec![ReassignableTopic::default()
                .with_name(TopicName(StrBytes::from_string(topic.to_owned())))
                .with_partitions(vec![ReassignablePartition::default()
                    .with_partition_index(partition)
                    .with_replicas(
                        replicas.map(|r| r.into_iter().map(BrokerId).collect()),
                    )])]);
        let resp = self.connection().send(&req).await?;
        if resp.error_code != 0 {
            return Err(Error::kafka(
                "AlterPartitionReassignments",
                resp.error_code,
                message(resp.error_message.as_ref()),
            ));
        }
        for p in resp.responses.into_iter().flat_map(|t| t.partitions) {
            if p.error_code != 0 {
                return Err(Error::kafka(
                    "AlterPartitionReassignments",
                    p.error_code,
                    message(p.error_message.as_ref()),
                ));
            }
        }
        Ok(())
    }

    /// ListPartitionReassignments of every partition.
    pub async fn list_reassignments(&mut self) -> Result<Vec<OngoingReassignment>> {
        use kafka_protocol::messages::ListPartitionReassignmentsRequest;
        let req = ListPartitionReassignmentsRequest::default()
            .with_timeout_ms(30_000)
            .with_topics(None);
        let resp = self.connection().send(&req).await?;
        if resp.error_code != 0 {
            return Err(Error::kafka(
                "ListPartitionReassignments",
                resp.error_code,
                message(resp.error_message.as_ref()),
            ));
        }
        let ids = |v: Vec<kafka_protocol::messages::BrokerId>| v.into_iter().map(|b| b.0).collect();
        let mut out = Vec::new();
        for t in resp.topics {
            for p in t.partitions {
                out.push(OngoingReassignment {
                    topic: t.name.to_string(),
                    partition: p.partition_index,
                    replicas: ids(p.replicas),
                    adding: ids(p.adding_replicas),
                    removing: ids(p.removing_replicas),
                });
            }
        }
        Ok(out)
    }
}
