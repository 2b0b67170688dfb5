//! AlterPartitionReassignments and ListPartitionReassignments (KIP-455):
//! move a partition's replicas to other nodes while it keeps serving. The
//! new replicas join the replica set and copy the log by ordinary
//! replication; once every one of them is in sync the controller makes the
//! target the replica set (handing leadership to a target replica if the
//! leader leaves), and nodes that are no longer replicas delete their copy.
//! A null replica list cancels a move (back to the original replicas).
//! Alter needs ALTER on the cluster, List DESCRIBE on the cluster
//! (CLUSTER_AUTHORIZATION_FAILED, top-level).

use kafka_protocol::messages::alter_partition_reassignments_response::{
    ReassignablePartitionResponse, ReassignableTopicResponse,
};
use kafka_protocol::messages::list_partition_reassignments_response::{
    OngoingPartitionReassignment, OngoingTopicReassignment,
};
use kafka_protocol::messages::{
    AlterPartitionReassignmentsRequest, AlterPartitionReassignmentsResponse, BrokerId,
    ListPartitionReassignmentsRequest, ListPartitionReassignmentsResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use veil_meta::MetaCommand;

use crate::auth::Operation;
use crate::context::RequestContext;

/// Checks one requested move against the metadata; the error to answer.
fn check(
    ctx: &RequestContext,
    topic: &str,
    partition: i32,
    target: Option<&[i32]>,
    allow_rf_change: bool,
) -> Result<(), (ResponseError, String)> {
    let unknown = || {
        let e = ResponseError::UnknownTopicOrPartition;
        (e, e.to_string())
    };
    if !ctx.blind_visible(topic) {
        return Err(unknown());
    }
    ctx.broker.with_meta(|s| {
        let p = s
            .topic(topic)
            .and_then(|t| t.partition(partition))
            .ok_or_else(unknown)?;
        let Some(target) = target else {
            return if p.reassignment.is_some() {
                Ok(())
            } else {
                let e = ResponseError::NoReassignmentInProgress;
                Err((e, format!("{topic}-{partition} is not being reassigned")))
            };
        };
        let invalid = |m: String| Err((ResponseError::InvalidReplicaAssignment, m));
        let mut distinct = target.to_vec();
        distinct.sort_unstable();
        distinct.dedup();
        if target.is_empty() || distinct.len() != target.len() {
            return invalid(format!(
                "replicas {target:?} must be distinct and not empty"
            ));
        }
        if let Some(r) = target.iter().find(|r| s.broker(**r).is_none()) {
            return invalid(format!("broker {r} is not registered"));
        }
        let current = p
            .reassignment
            .as_ref()
            .map_or(p.replicas.len(), |r| r.original.len());
        if !allow_rf_change && target.len() != current {
            let e = ResponseError::InvalidReplicationFactor;
            return Err((
                e,
                format!(
                    "{} replicas requested, the partition has {current}",
                    target.len()
                ),
            ));
        }
        Ok(())
    })
}

/// Commits one move (or cancellation) to the metadata quorum.
async fn commit(
    ctx: &RequestContext,
    topic: &str,
    partition: i32,
    target: Option<Vec<i32>>,
) -> Result<(), (ResponseError, String)> {
    let cmd = MetaCommand::ReassignPartition {
        topic: topic.to_owned(),
        partition,
        target: target.clone(),
    };
    match ctx.broker.commit(cmd).await {
        Ok(()) => {
            tracing::info!(topic, partition, ?target, "partition reassignment");
            Ok(())
        }
        Err(e) => {
            let code = match e.response_error() {
                // A broker the metadata refuses as a replica.
                ResponseError::InvalidRequest => ResponseError::InvalidReplicaAssignment,
                other => other,
            };
            Err((code, e.to_string()))
        }
    }
}

pub async fn alter(
    ctx: &RequestContext,
    req: AlterPartitionReassignmentsRequest,
) -> AlterPartitionReassignmentsResponse {
    let resp = AlterPartitionReassignmentsResponse::default()
        .with_allow_replication_factor_change(req.allow_replication_factor_change);
    if !ctx.authorize_cluster(Operation::Alter) {
        let code = ResponseError::ClusterAuthorizationFailed.code();
        ctx.count(code);
        return resp.with_error_code(code);
    }
    let allow_rf_change = ctx.api_version < 1 || req.allow_replication_factor_change;
    let mut topics = Vec::with_capacity(req.topics.len());
    for t in req.topics {
        let mut partitions = Vec::with_capacity(t.partitions.len());
        for p in t.partitions {
            let target: Option<Vec<i32>> =
                p.replicas.as_ref().map(|r| r.iter().map(|b| b.0).collect());
            let checked = check(
                ctx,
                &t.name,
                p.partition_index,
                target.as_deref(),
                allow_rf_change,
            );
            let outcome = if let Err(failed) = checked {
                Err(failed)
            } else {
                commit(ctx, t.name.as_str(), p.partition_index, target).await
            };
            let (code, message) = match outcome {
                Ok(()) => (0, None),
                Err((e, m)) => (e.code(), Some(StrBytes::from_string(m))),
            };
            ctx.count(code);
            partitions.push(
                ReassignablePartitionResponse::default()
                    .with_partition_index(p.partition_index)
                    .with_error_code(code)
                    .with_error_message(message),
            );
        }
        topics.push(
            ReassignableTopicResponse::default()
                .with_name(t.name)
                .with_partitions(partitions),
        );
    }
    resp.with_responses(topics)
}

fn ids(v: &[i32]) -> Vec<BrokerId> {
    v.iter().copied().map(BrokerId).collect()
}

pub async fn list(
    ctx: &RequestContext,
    req: ListPartitionReassignmentsRequest,
) -> ListPartitionReassignmentsResponse {
    if !ctx.authorize_cluster(Operation::Describe) {
        let code = ResponseError::ClusterAuthorizationFailed.code();
        ctx.count(code);
        return ListPartitionReassignmentsResponse::default().with_error_code(code);
    }
    let wanted: Option<Vec<(String, Vec<i32>)>> = req.topics.map(|ts| {
        ts.into_iter()
            .map(|t| (t.name.to_string(), t.partition_indexes))
            .collect()
    });
    let topics = ctx.broker.with_meta(|s| {
        let mut out = Vec::new();
        for t in s.topics().filter(|t| ctx.blind_visible(&t.name)) {
            let only = wanted.as_ref().map(|w| {
                w.iter()
                    .filter(|(name, _)| *name == t.name)
                    .flat_map(|(_, ps)| ps.iter().copied())
                    .collect::<Vec<i32>>()
            });
            if only.as_ref().is_some_and(Vec::is_empty) {
                continue;
            }
            let partitions: Vec<OngoingPartitionReassignment> = t
                .assignments
                .iter()
                .enumerate()
                .filter(|(i, _)| only.as_ref().is_none_or(|o| o.contains(&(*i as i32))))
                .filter_map(|(i, p)| {
                    let r = p.reassignment.as_ref()?;
                    Some(
                        OngoingPartitionReassignment::default()
                            .with_partition_index(i as i32)
                            .with_replicas(ids(&p.replicas))
                            .with_adding_replicas(ids(&r.adding()))
                            .with_removing_replicas(ids(&r.removing())),
                    )
                })
                .collect();
            if !partitions.is_empty() {
                out.push(
                    OngoingTopicReassignment::default()
                        .with_name(TopicName(StrBytes::from_string(t.name.clone())))
                        .with_partitions(partitions),
                );
            }
        }
        out
    });
    ListPartitionReassignmentsResponse::default().with_topics(topics)
}
