//! ElectLeaders (KIP-183, KIP-460): move partitions back to their preferred
//! leader (election type 0; the only one before v1), or give a partition
//! without a live leader one (type 1, unclean: any live replica when no
//! in-sync one is left, accepting the loss of what only the others had).
//! A null topic list means every partition. Needs ALTER on the cluster:
//! otherwise CLUSTER_AUTHORIZATION_FAILED (top-level from v1, per
//! partition in v0).
//!
//! Per partition: ELECTION_NOT_NEEDED when the leader is already the one
//! the election would pick, PREFERRED_LEADER_NOT_AVAILABLE when the
//! preferred replica is fenced or not in sync, ELIGIBLE_LEADERS_NOT_AVAILABLE
//! when no replica is live, UNKNOWN_TOPIC_OR_PARTITION; otherwise the
//! `ElectLeader` change is committed to the metadata quorum before the
//! answer.

use kafka_protocol::messages::elect_leaders_response::{PartitionResult, ReplicaElectionResult};
use kafka_protocol::messages::{ElectLeadersRequest, ElectLeadersResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use veil_meta::elections::{choose_leader, ElectionRefused};
use veil_meta::MetaCommand;

use crate::auth::Operation;
use crate::context::RequestContext;

const UNCLEAN: i8 = 1;

fn refused_code(r: ElectionRefused) -> ResponseError {
    match r {
        ElectionRefused::NotNeeded => ResponseError::ElectionNotNeeded,
        ElectionRefused::PreferredNotAvailable => ResponseError::PreferredLeaderNotAvailable,
        ElectionRefused::NoEligibleLeader => ResponseError::EligibleLeadersNotAvailable,
        ElectionRefused::UnknownPartition => ResponseError::UnknownTopicOrPartition,
    }
}

/// Elects a leader for one partition; the error that prevented it.
async fn elect(
    ctx: &RequestContext,
    topic: &str,
    partition: i32,
    unclean: bool,
) -> Option<(i16, String)> {
    if !ctx.blind_visible(topic) {
        let e = ResponseError::UnknownTopicOrPartition;
        return Some((e.code(), e.to_string()));
    }
    let chosen = ctx
        .broker
        .with_meta(|s| choose_leader(s, topic, partition, unclean));
    let leader = match chosen {
        Ok(leader) => leader,
        Err(r) => {
            let e = refused_code(r);
            return Some((e.code(), e.to_string()));
        }
    };
    let cmd = MetaCommand::ElectLeader {
        topic: topic.to_owned(),
        partition,
        leader,
    };
    match ctx.broker.commit(cmd).await {
        Ok(()) => {
            tracing::info!(
                topic,
                partition,
                leader,
                unclean,
                "leader elected on request"
            );
            None
        }
        Err(e) => Some((e.code(), e.to_string())),
    }
}

pub async fn handle(ctx: &RequestContext, req: ElectLeadersRequest) -> ElectLeadersResponse {
    let unclean = ctx.api_version >= 1 && req.election_type == UNCLEAN;
    let wanted: Vec<(String, Vec<i32>)> = match &req.topic_partitions {
        Some(topics) => topics
            .iter()
            .map(|t| (t.topic.to_string(), t.partitions.clone()))
            .collect(),
        None => ctx.broker.with_meta(|s| {
            s.topics()
                .filter(|t| ctx.blind_visible(&t.name))
                .map(|t| (t.name.clone(), (0..t.partitions).collect()))
                .collect()
        }),
    };
    let allowed = ctx.authorize_cluster(Operation::Alter);
    if !allowed && ctx.api_version >= 1 {
        let code = ResponseError::ClusterAuthorizationFailed.code();
        ctx.count(code);
        return ElectLeadersResponse::default().with_error_code(code);
    }
    let mut results = Vec::with_capacity(wanted.len());
    for (topic, partitions) in wanted {
        let mut out = Vec::with_capacity(partitions.len());
        for partition in partitions {
            let failed = if allowed {
                elect(ctx, &topic, partition, unclean).await
            } else {
                let e = ResponseError::ClusterAuthorizationFailed;
                Some((e.code(), e.to_string()))
            };
            let (code, message) = match failed {
                Some((code, m)) => (code, Some(StrBytes::from_string(m))),
                None => (0, None),
            };
            ctx.count(code);
            out.push(
                PartitionResult::default()
                    .with_partition_id(partition)
                    .with_error_code(code)
                    .with_error_message(message),
            );
        }
        results.push(
            ReplicaElectionResult::default()
                .with_topic(TopicName(StrBytes::from_string(topic)))
                .with_partition_result(out),
        );
    }
    ElectLeadersResponse::default().with_replica_election_results(results)
}

#[cfg(test)]
mod tests {
    use kafka_protocol::messages::elect_leaders_request::TopicPartitions;

    use super::*;
    use crate::test_fixture as fixture;

    #[tokio::test]
    async fn a_single_node_needs_no_election_and_unknown_partitions_are_named() {
        let (_dir, ctx) = fixture::context(2).await;
        fixture::create_topic(&ctx, "t", 2).await;
        let req = ElectLeadersRequest::default().with_topic_partitions(Some(vec![
            TopicPartitions::default()
                .with_topic(TopicName(StrBytes::from_static_str("t")))
                .with_partitions(vec![0, 1, 7]),
        ]));
        let resp = handle(&ctx, req.clone()).await;
        fixture::encodes(&resp, 0..=2);
        let codes: Vec<i16> = resp.replica_election_results[0]
            .partition_result
            .iter()
            .map(|p| p.error_code)
            .collect();
        let not_needed = ResponseError::ElectionNotNeeded.code();
        let unknown = ResponseError::UnknownTopicOrPartition.code();
        assert_eq!(codes, vec![not_needed, not_needed, unknown]);
        // Unclean: the leader is live, so nothing to do either.
        let resp = handle(&ctx, req.with_election_type(UNCLEAN)).await;
        assert_eq!(
            resp.replica_election_results[0].partition_result[0].error_code,
            not_needed
        );
        // All partitions.
        let resp = handle(
            &ctx,
            ElectLeadersRequest::default().with_topic_partitions(None),
        )
        .await;
        assert_eq!(resp.replica_election_results.len(), 1);
        assert_eq!(resp.replica_election_results[0].partition_result.len(), 2);
    }
}
