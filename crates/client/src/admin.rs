//! Standard Kafka admin operations over one connection.

use std::collections::BTreeMap;

use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::describe_configs_response::DescribeConfigsResourceResult;
use kafka_protocol::messages::incremental_alter_configs_request::{
    AlterConfigsResource, AlterableConfig,
};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{
    CreatePartitionsRequest, CreateTopicsRequest, DeleteTopicsRequest, DescribeConfigsRequest,
    IncrementalAlterConfigsRequest, MetadataRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use uuid::Uuid;

use crate::connection::Connection;
use crate::error::{Error, Result};

/// Kafka's resource type code for topics in the config APIs.
const RESOURCE_TOPIC: i8 = 2;
const OP_SET: i8 = 0;
const OP_DELETE: i8 = 1;

/// What to create.
#[derive(Debug, Clone)]
pub struct TopicSpec {
    pub name: String,
    /// -1 lets the broker choose.
    pub partitions: i32,
    /// -1 lets the broker choose.
    pub replication_factor: i16,
    pub configs: BTreeMap<String, String>,
}

#[derive(Debug, Clone)]
pub struct PartitionDescription {
    pub partition: i32,
    pub leader: i32,
    pub leader_epoch: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    pub error_code: i16,
}

#[derive(Debug, Clone)]
pub struct TopicDescription {
    pub name: String,
    pub topic_id: Uuid,
    pub partitions: Vec<PartitionDescription>,
    /// (name, value, source code) for every config the broker reports.
    pub configs: Vec<(String, Option<String>, i8)>,
}

#[derive(Debug)]
pub struct Admin {
    conn: Connection,
}

fn name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_owned()))
}

/// A broker's error message, if it sent a non-empty one.
pub(crate) fn message(m: Option<&StrBytes>) -> Option<String> {
    m.map(ToString::to_string).filter(|m| !m.is_empty())
}

impl Admin {
    /// Admin operations over an already set-up (TLS, SASL) connection.
    pub fn from_connection(conn: Connection) -> Admin {
        Admin { conn }
    }

    pub async fn connect(bootstrap: &str) -> Result<Admin> {
        Ok(Admin {
            conn: Connection::connect(bootstrap, "veil-admin").await?,
        })
    }

    pub async fn create_topic(&mut self, spec: &TopicSpec, validate_only: bool) -> Result<()> {
        let topic = CreatableTopic::default()
            .with_name(name(&spec.name))
            .with_num_partitions(spec.partitions)
            .with_replication_factor(spec.replication_factor)
            .with_configs(
                spec.configs
                    .iter()
                    .map(|(k, v)| {
                        CreatableTopicConfig::default()
                            .with_name(StrBytes::from_string(k.clone()))
                            .with_value(Some(StrBytes::from_string(v.clone())))
                    })
                    .collect(),
            );
        let req = CreateTopicsRequest::default()
            .with_topics(vec![topic])
            .with_timeout_ms(30_000)
            .with_validate_only(validate_only);
        let resp = self.conn.send(&req).await?;
        for t in resp.topics {
            if t.error_code != 0 {
                return Err(Error::kafka(
                    format!("cannot create topic '{}'", spec.name),
                    t.error_code,
                    message(t.error_message.as_ref()),
                ));
            }
        }
        Ok(())
    }

    /// Names of all topics, sorted.
    pub async fn list_topics(&mut self) -> Result<Vec<String>> {
        let resp = self
            .conn
            .send(&MetadataRequest::default().with_topics(None))
            .await?;
        let mut names: Vec<String> = resp
            .topics
            .into_iter()
            .filter_map(|t| t.name.map(|n| n.0.to_string()))
            .collect();
        names.sort();
        Ok(names)
    }

    pub async fn describe_topic(&mut self, topic: &str) -> Result<TopicDescription> {
        let req = MetadataRequest::default().with_topics(Some(vec![
            MetadataRequestTopic::default().with_name(Some(name(topic))),
        ]));
        let resp = self.conn.send(&req).await?;
        let t = resp
            .topics
            .into_iter()
            .next()
            .ok_or_else(|| Error::Protocol("empty metadata response".into()))?;
        if t.error_code != 0 {
            return Err(Error::kafka(
                format!("cannot describe topic '{topic}'"),
                t.error_code,
                None,
            ));
        }
        let mut partitions: Vec<PartitionDescription> = t
            .partitions
            .into_iter()
            .map(|p| PartitionDescription {
                partition: p.partition_index,
                leader: p.leader_id.0,
                leader_epoch: p.leader_epoch,
                replicas: p.replica_nodes.iter().map(|b| b.0).collect(),
                isr: p.isr_nodes.iter().map(|b| b.0).collect(),
                error_code: p.error_code,
            })
            .collect();
        partitions.sort_by_key(|p| p.partition);
        let configs = self.describe_configs(topic).await?;
        Ok(TopicDescription {
            name: topic.to_owned(),
            topic_id: t.topic_id,
            partitions,
            configs,
        })
    }

    /// Every config of one resource (DescribeConfigs); `what` names it in
    /// the error.
    pub(crate) async fn resource_configs(
        &mut self,
        resource_type: i8,
        resource_name: &str,
        what: &str,
    ) -> Result<Vec<DescribeConfigsResourceResult>> {
        let req = DescribeConfigsRequest::default().with_resources(vec![
            DescribeConfigsResource::default()
                .with_resource_type(resource_type)
                .with_resource_name(StrBytes::from_string(resource_name.to_owned()))
                .with_configuration_keys(None),
        ]);
        let resp = self.conn.send(&req).await?;
        let r = resp
            .results
            .into_iter()
            .next()
            .ok_or_else(|| Error::Protocol("empty DescribeConfigs response".into()))?;
        if r.error_code != 0 {
            return Err(Error::kafka(
                format!("cannot describe {what}"),
                r.error_code,
                message(r.error_message.as_ref()),
            ));
        }
        Ok(r.configs)
    }

    pub async fn describe_configs(
        &mut self,
        topic: &str,
    ) -> Result<Vec<(String, Option<String>, i8)>> {
        let configs = self
            .resource_configs(RESOURCE_TOPIC, topic, &format!("configs of '{topic}'"))
            .await?;
        Ok(configs
            .into_iter()
            .map(|c| {
                (
                    c.name.to_string(),
                    c.value.map(|v| v.to_string()),
                    c.config_source,
                )
            })
            .collect())
    }

    pub async fn delete_topic(&mut self, topic: &str) -> Result<()> {
        let req = DeleteTopicsRequest::default()
            .with_topic_names(vec![name(topic)])
            .with_topics(vec![
                DeleteTopicState::default().with_name(Some(name(topic)))
            ])
            .with_timeout_ms(30_000);
        let resp = self.conn.send(&req).await?;
        for r in resp.responses {
            if r.error_code != 0 {
                return Err(Error::kafka(
                    format!("cannot delete topic '{topic}'"),
                    r.error_code,
                    message(r.error_message.as_ref()),
                ));
            }
        }
        Ok(())
    }

    /// Sets and removes topic configs incrementally.
    pub async fn alter_configs(
        &mut self,
        topic: &str,
        set: &BTreeMap<String, String>,
        remove: &[String],
        validate_only: bool,
    ) -> Result<()> {
        let mut configs: Vec<AlterableConfig> = set
            .iter()
            .map(|(k, v)| {
                AlterableConfig::default()
                    .with_name(StrBytes::from_string(k.clone()))
                    .with_config_operation(OP_SET)
                    .with_value(Some(StrBytes::from_string(v.clone())))
            })
            .collect();
        configs.extend(remove.iter().map(|k| {
            AlterableConfig::default()
                .with_name(StrBytes::from_string(k.clone()))
                .with_config_operation(OP_DELETE)
                .with_value(None)
        }));
        let req = IncrementalAlterConfigsRequest::default()
            .with_resources(vec![AlterConfigsResource::default()
                .with_resource_type(RESOURCE_TOPIC)
                .with_resource_name(StrBytes::from_string(topic.to_owned()))
                .with_configs(configs)])
            .with_validate_only(validate_only);
        let resp = self.conn.send(&req).await?;
        for r in resp.responses {
            if r.error_code != 0 {
                return Err(Error::kafka(
                    format!("cannot alter configs of '{topic}'"),
                    r.error_code,
                    message(r.error_message.as_ref()),
                ));
            }
        }
        Ok(())
    }

    /// Grows `topic` to `count` partitions.
    pub async fn create_partitions(
        &mut self,
        topic: &str,
        count: i32,
        validate_only: bool,
    ) -> Result<()> {
        let req = CreatePartitionsRequest::default()
            .with_topics(vec![CreatePartitionsTopic::default()
                .with_name(name(topic))
                .with_count(count)
                .with_assignments(None)])
            .with_timeout_ms(30_000)
            .with_validate_only(validate_only);
        let resp = self.conn.send(&req).await?;
        for r in resp.results {
            if r.error_code != 0 {
                return Err(Error::kafka(
                    format!("cannot add partitions to '{topic}'"),
                    r.error_code,
                    message(r.error_message.as_ref()),
                ));
            }
        }
        Ok(())
    }

    /// The underlying connection, for requests this type does not wrap.
    pub fn connection(&mut self) -> &mut Connection {
        &mut self.conn
    }
}
