//! Consumer-group administration: list, describe, delete, read and reset
//! committed offsets, and look up partition offsets.

use std::collections::BTreeMap;

use bytes::{Buf, Bytes};
use kafka_protocol::messages::consumer_protocol_assignment::ConsumerProtocolAssignment;
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::{
    BrokerId, DeleteGroupsRequest, DescribeGroupsRequest, FindCoordinatorRequest, GroupId,
    ListGroupsRequest, ListOffsetsRequest, OffsetCommitRequest, OffsetFetchRequest, TopicName,
};
use kafka_protocol::protocol::{Decodable, StrBytes};

use crate::admin::Admin;
use crate::error::{Error, Result};

/// A topic partition, `(topic, partition)`.
pub type TopicPartition = (String, i32);

#[derive(Debug, Clone)]
pub struct GroupListing {
    pub group_id: String,
    pub state: String,
    pub protocol_type: String,
}

#[derive(Debug, Clone)]
pub struct MemberDescription {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    /// Partitions assigned to the member (consumer protocol only).
    pub assignment: Vec<TopicPartition>,
}

#[derive(Debug, Clone)]
pub struct GroupDescription {
    pub group_id: String,
    pub state: String,
    pub protocol_type: String,
    pub protocol: String,
    pub members: Vec<MemberDescription>,
}

/// Which offset ListOffsets should return.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetSpec {
    Earliest,
    Latest,
    /// The first offset whose timestamp is at or after this (ms since the epoch).
    Timestamp(i64),
}

fn group_id(g: &str) -> GroupId {
    GroupId(StrBytes::from_string(g.to_owned()))
}

fn topic_name(t: &str) -> TopicName {
    TopicName(StrBytes::from_string(t.to_owned()))
}

/// Decodes a consumer-protocol assignment; other protocols give nothing.
fn decode_assignment(bytes: &Bytes) -> Vec<TopicPartition> {
    let mut buf = bytes.clone();
    if buf.remaining() < 2 {
        return Vec::new();
    }
    let version = buf.clone().get_i16().clamp(0, 3);
    ConsumerProtocolAssignment::decode(&mut buf.split_off(2), version)
        .map(|a| {
            a.assigned_partitions
                .into_iter()
                .flat_map(|tp| {
                    let topic = tp.topic.0.to_string();
                    tp.partitions.into_iter().map(move |p| (topic.clone(), p))
                })
                .collect()
        })
        .unwrap_or_default()
}

impl Admin {
    /// The coordinator of `group` as `host:port`.
    pub async fn find_coordinator(&mut self, group: &str) -> Result<String> {
        self.coordinator_of(0, group, &format!("group '{group}'"))
            .await
    }

    /// FindCoordinator for one key of `key_type` (0 group, 1 transactional
    /// id); `what` names it in the error.
    pub(crate) async fn coordinator_of(
        &mut self,
        key_type: i8,
        key: &str,
        what: &str,
    ) -> Result<String> {
        // v4+ batches keys; older versions carry one key.
        let batched = self.connection().version_for::<FindCoordinatorRequest>()? >= 4;
        let key = StrBytes::from_string(key.to_owned());
        let req = if batched {
            FindCoordinatorRequest::default().with_coordinator_keys(vec![key])
        } else {
            FindCoordinatorRequest::default().with_key(key)
        }
        .with_key_type(key_type);
        let resp = self.connection().send(&req).await?;
        let (code, host, port) = match resp.coordinators.first() {
            Some(c) => (c.error_code, c.host.to_string(), c.port),
            None => (resp.error_code, resp.host.to_string(), resp.port),
        };
        if code != 0 {
            return Err(Error::kafka(
                format!("cannot find the coordinator of {what}"),
                code,
                None,
            ));
        }
        Ok(format!("{host}:{port}"))
    }

    pub async fn list_groups(&mut self) -> Result<Vec<GroupListing>> {
        let resp = self
            .connection()
            .send(&ListGroupsRequest::default())
            .await?;
        if resp.error_code != 0 {
            return Err(Error::kafka("cannot list groups", resp.error_code, None));
        }
        let mut groups: Vec<GroupListing> = resp
            .groups
            .into_iter()
            .map(|g| GroupListing {
                group_id: g.group_id.0.to_string(),
                state: g.group_state.to_string(),
                protocol_type: g.protocol_type.to_string(),
            })
            .collect();
        groups.sort_by(|a, b| a.group_id.cmp(&b.group_id));
        Ok(groups)
    }

    pub async fn describe_group(&mut self, group: &str) -> Result<GroupDescription> {
        let req = DescribeGroupsRequest::default().with_groups(vec![group_id(group)]);
        let resp = self.connection().send(&req).await?;
        let g = resp
            .groups
            .into_iter()
            .next()
            .ok_or_else(|| Error::Protocol("empty DescribeGroups response".into()))?;
        if g.error_code != 0 {
            return Err(Error::kafka(
                format!("cannot describe group '{group}'"),
                g.error_code,
                g.error_message.map(|m| m.to_string()),
            ));
        }
        let consumer = g.protocol_type.as_str() == "consumer";
        Ok(GroupDescription {
            group_id: group.to_owned(),
            state: g.group_state.to_string(),
            protocol_type: g.protocol_type.to_string(),
            protocol: g.protocol_data.to_string(),
            members: g
                .members
                .into_iter()
                .map(|m| MemberDescription {
                    member_id: m.member_id.to_string(),
                    group_instance_id: m.group_instance_id.map(|i| i.to_string()),
                    client_id: m.client_id.to_string(),
                    client_host: m.client_host.to_string(),
                    assignment: if consumer {
                        decode_assignment(&m.member_assignment)
                    } else {
                        Vec::new()
                    },
                })
                .collect(),
        })
    }

    pub async fn delete_group(&mut self, group: &str) -> Result<()> {
        let req = DeleteGroupsRequest::default().with_groups_names(vec![group_id(group)]);
        let resp = self.connection().send(&req).await?;
        match resp
            .results
            .into_iter()
            .find(|r| r.group_id.0.as_str() == group)
        {
            Some(r) if r.error_code != 0 => Err(Error::kafka(
                format!("cannot delete group '{group}'"),
                r.error_code,
                None,
            )),
            Some(_) => Ok(()),
            None => Err(Error::Protocol(
                "group missing from DeleteGroups response".into(),
            )),
        }
    }

    /// Every committed offset of `group`.
    pub async fn committed_offsets(
        &mut self,
        group: &str,
    ) -> Result<BTreeMap<TopicPartition, i64>> {
        // v8+ batches groups; older versions name one group.
        let batched = self.connection().version_for::<OffsetFetchRequest>()? >= 8;
        let req = if batched {
            OffsetFetchRequest::default().with_groups(vec![
                kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestGroup::default()
                    .with_group_id(group_id(group))
                    .with_topics(None),
            ])
        } else {
            OffsetFetchRequest::default()
                .with_group_id(group_id(group))
                .with_topics(None)
        };
        let resp = self.connection().send(&req).await?;
        let mut out = BTreeMap::new();
        if let Some(g) = resp.groups.into_iter().next() {
            if g.error_code != 0 {
                return Err(Error::kafka(
                    format!("cannot fetch offsets of '{group}'"),
                    g.error_code,
                    None,
                ));
            }
            for t in g.topics {
                for p in t.partitions.into_iter().filter(|p| p.committed_offset >= 0) {
                    out.insert(
                        (t.name.0.to_string(), p.partition_index),
                        p.committed_offset,
                    );
                }
            }
        } else {
            if resp.error_code != 0 {
                return Err(Error::kafka(
                    format!("cannot fetch offsets of '{group}'"),
                    resp.error_code,
                    None,
                ));
            }
            for t in resp.topics {
                for p in t.partitions.into_iter().filter(|p| p.committed_offset >= 0) {
                    out.insert(
                        (t.name.0.to_string(), p.partition_index),
                        p.committed_offset,
                    );
                }
            }
        }
        Ok(out)
    }

    /// Commits offsets as an administrator (no generation), which Kafka
    /// accepts only while the group has no active members.
    pub async fn commit_offsets(
        &mut self,
        group: &str,
        offsets: &BTreeMap<TopicPartition, i64>,
    ) -> Result<()> {
        let mut by_topic: BTreeMap<&str, Vec<OffsetCommitRequestPartition>> = BTreeMap::new();
        for ((topic, partition), offset) in offsets {
            by_topic.entry(topic).or_default().push(
                OffsetCommitRequestPartition::default()
                    .with_partition_index(*partition)
                    .with_committed_offset(*offset)
                    .with_committed_leader_epoch(-1)
                    .with_committed_metadata(Some(StrBytes::default())),
            );
        }
        let req = OffsetCommitRequest::default()
            .with_group_id(group_id(group))
            .with_generation_id_or_member_epoch(-1)
            .with_member_id(StrBytes::default())
            .with_retention_time_ms(-1)
            .with_topics(
                by_topic
                    .into_iter()
                    .map(|(t, parts)| {
                        OffsetCommitRequestTopic::default()
                            .with_name(topic_name(t))
                            .with_partitions(parts)
                    })
                    .collect(),
            );
        let resp = self.connection().send(&req).await?;
        for t in resp.topics {
            for p in t.partitions {
                if p.error_code != 0 {
                    return Err(Error::kafka(
                        format!(
                            "cannot commit {}:{} for group '{group}'",
                            t.name.0, p.partition_index
                        ),
                        p.error_code,
                        None,
                    ));
                }
            }
        }
        Ok(())
    }

    /// The offset `spec` selects in each partition (-1 when a timestamp
    /// is newer than every record).
    pub async fn list_offsets(
        &mut self,
        partitions: &[TopicPartition],
        spec: OffsetSpec,
    ) -> Result<BTreeMap<TopicPartition, i64>> {
        let timestamp = match spec {
            OffsetSpec::Earliest => -2,
            OffsetSpec::Latest => -1,
            OffsetSpec::Timestamp(ts) => ts,
        };
        let mut by_topic: BTreeMap<&str, Vec<ListOffsetsPartition>> = BTreeMap::new();
        for (topic, partition) in partitions {
            by_topic.entry(topic).or_default().push(
                ListOffsetsPartition::default()
                    .with_partition_index(*partition)
                    .with_current_leader_epoch(-1)
                    .with_timestamp(timestamp),
            );
        }
        let req = ListOffsetsRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_topics(
                by_topic
                    .into_iter()
                    .map(|(t, parts)| {
                        ListOffsetsTopic::default()
                            .with_name(topic_name(t))
                            .with_partitions(parts)
                    })
                    .collect(),
            );
        let resp = self.connection().send(&req).await?;
        let mut out = BTreeMap::new();
        for t in resp.topics {
            for p in t.partitions {
                if p.error_code != 0 {
                    return Err(Error::kafka(
                        format!("cannot list offsets of {}:{}", t.name.0, p.partition_index),
                        p.error_code,
                        None,
                    ));
                }
                out.insert((t.name.0.to_string(), p.partition_index), p.offset);
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use bytes::{BufMut, BytesMut};
    use kafka_protocol::messages::consumer_protocol_assignment::TopicPartition as Tp;
    use kafka_protocol::protocol::Encodable;

    use super::*;

    #[test]
    fn decodes_consumer_assignments_and_ignores_garbage() {
        let a = ConsumerProtocolAssignment::default().with_assigned_partitions(vec![Tp::default()
            .with_topic(topic_name("t"))
            .with_partitions(vec![0, 2])]);
        let mut buf = BytesMut::new();
        buf.put_i16(1);
        a.encode(&mut buf, 1).unwrap();
        assert_eq!(
            decode_assignment(&buf.freeze()),
            vec![("t".to_owned(), 0), ("t".to_owned(), 2)]
        );
        assert!(decode_assignment(&Bytes::from_static(&[0, 1, 0xff])).is_empty());
        assert!(decode_assignment(&Bytes::new()).is_empty());
    }
}
