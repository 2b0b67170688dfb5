//! ListOffsets: the offset for a timestamp, or one of Kafka's special
//! timestamps (earliest, latest, max timestamp).
//!
//! On a single replica without transactions the high watermark, the last
//! stable offset and the log end offset coincide, so `read_committed` and
//! replica requests get the same "latest" as consumers. Timestamp lookups read
//! segment files, so a request needing one runs on the blocking pool.

use std::collections::HashMap;
use std::sync::Arc;

use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse, TopicName};
use kafka_protocol::ResponseError;

use crate::auth::{Operation, ResourceType};
use crate::context::RequestContext;
use crate::error::Error;
use crate::partition::Partition;

/// Kafka's special ListOffsets timestamps.
const LATEST: i64 = -1;
const EARLIEST: i64 = -2;
/// v7+ (KIP-734): the record with the largest timestamp.
const MAX_TIMESTAMP: i64 = -3;
/// v8+ (KIP-405): the first offset in local storage; all storage is local here.
const EARLIEST_LOCAL: i64 = -4;

/// Kafka's leader-epoch fencing (`Partition.checkCurrentLeaderEpoch`): -1
/// skips the check; an older epoch is fenced, a newer one not known yet.
pub(crate) fn check_current_leader_epoch(requested: i32, ours: i32) -> Result<(), ResponseError> {
    if requested == -1 || requested == ours {
        Ok(())
    } else if requested < ours {
        Err(ResponseError::FencedLeaderEpoch)
    } else {
        Err(ResponseError::UnknownLeaderEpoch)
    }
}

/// What to do for one requested partition, decided before touching any log.
enum Plan {
    Fail(ResponseError),
    Lookup {
        partition: Arc<Partition>,
        timestamp: i64,
        current_leader_epoch: i32,
    },
}

impl Plan {
    /// Whether answering reads segment files (not just in-memory bounds).
    fn reads_files(&self) -> bool {
        matches!(self, Plan::Lookup { timestamp, .. }
            if !matches!(*timestamp, LATEST | EARLIEST | EARLIEST_LOCAL))
    }
}

pub async fn handle(ctx: &RequestContext, req: ListOffsetsRequest) -> ListOffsetsResponse {
    let mut occurrences: HashMap<(&str, i32), usize> = HashMap::new();
    for t in &req.topics {
        for p in &t.partitions {
            *occurrences
                .entry((t.name.0.as_str(), p.partition_index))
                .or_default() += 1;
        }
    }
    let plans: Vec<(TopicName, Vec<(i32, Plan)>)> = req
        .topics
        .iter()
        .map(|t| {
            let topic = ctx.visible_topic(&t.name);
            // Kafka checks DESCRIBE before duplicates and existence.
            let allowed = ctx.authorize(Operation::Describe, ResourceType::Topic, &t.name);
            let plans = t
                .partitions
                .iter()
                .map(|p| {
                    let duplicate = occurrences[&(t.name.0.as_str(), p.partition_index)] > 1;
                    let partition = topic
                        .as_ref()
                        .map(|t| t.led_here(p.partition_index, ctx.broker.node_id()));
                    let plan = match partition {
                        _ if !allowed => Plan::Fail(ResponseError::TopicAuthorizationFailed),
                        _ if duplicate => Plan::Fail(ResponseError::InvalidRequest),
                        Some(Err(e)) => Plan::Fail(e.response_error()),
                        None => Plan::Fail(ResponseError::UnknownTopicOrPartition),
                        Some(Ok(partition)) => Plan::Lookup {
                            partition: Arc::clone(partition),
                            timestamp: p.timestamp,
                            current_leader_epoch: p.current_leader_epoch,
                        },
                    };
                    (p.partition_index, plan)
                })
                .collect();
            (t.name.clone(), plans)
        })
        .collect();

    let with_epoch = ctx.api_version >= 4;
    // READ_COMMITTED (v2+) sees the log up to the last stable offset.
    let committed = ctx.api_version >= 2 && req.isolation_level == 1;
    let reads_files = plans
        .iter()
        .any(|(_, p)| p.iter().any(|(_, plan)| plan.reads_files()));
    let answer_all = move || {
        plans
            .into_iter()
            .map(|(name, plans)| {
                let partitions = plans
                    .into_iter()
                    .map(|(index, plan)| answer(index, plan, with_epoch, committed))
                    .collect();
                ListOffsetsTopicResponse::default()
                    .with_name(name)
                    .with_partitions(partitions)
            })
            .collect::<Vec<_>>()
    };
    let topics = if reads_files {
        match tokio::task::spawn_blocking(answer_all).await {
            Ok(topics) => topics,
            Err(e) => {
                tracing::error!(error = %e, "ListOffsets lookup task failed");
                failed(&req, ResponseError::UnknownServerError)
            }
        }
    } else {
        answer_all()
    };
    for t in &topics {
        for p in &t.partitions {
            ctx.count(p.error_code);
        }
    }
    ListOffsetsResponse::default().with_topics(topics)
}

/// Every partition of `req` answered with `error`.
fn failed(req: &ListOffsetsRequest, error: ResponseError) -> Vec<ListOffsetsTopicResponse> {
    req.topics
        .iter()
        .map(|t| {
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    ListOffsetsPartitionResponse::default()
                        .with_partition_index(p.partition_index)
                        .with_error_code(error.code())
                })
                .collect();
            ListOffsetsTopicResponse::default()
                .with_name(t.name.clone())
                .with_partitions(partitions)
        })
        .collect()
}

/// Answers one partition (may read segment files).
fn answer(
    index: i32,
    plan: Plan,
    with_epoch: bool,
    committed: bool,
) -> ListOffsetsPartitionResponse {
    let response = ListOffsetsPartitionResponse::default().with_partition_index(index);
    let (partition, timestamp, current_leader_epoch) = match plan {
        Plan::Fail(error) => return response.with_error_code(error.code()),
        Plan::Lookup {
            partition,
            timestamp,
            current_leader_epoch,
        } => (partition, timestamp, current_leader_epoch),
    };
    let leader_epoch = partition.leader_epoch();
    if let Err(error) = check_current_leader_epoch(current_leader_epoch, leader_epoch) {
        return response.with_error_code(error.code());
    }
    // Consumers see the log up to the high watermark (read_committed ones
    // up to the last stable offset), lookups too.
    let high_watermark = if committed {
        partition.last_stable_offset()
    } else {
        partition.high_watermark()
    };
    let found: Result<Option<(i64, i64)>, Error> = partition.with_log(|log| {
        Ok(match timestamp {
            LATEST => Some((high_watermark, -1)),
            EARLIEST | EARLIEST_LOCAL => Some((log.log_start_offset(), -1)),
            MAX_TIMESTAMP => log
                .max_timestamp()?
                .map(|(ts, offset)| (offset, ts))
                .filter(|(offset, _)| *offset < high_watermark),
            ts => log
                .offset_for_timestamp(ts)?
                .filter(|(offset, _)| *offset < high_watermark),
        })
    });
    match found {
        Ok(Some((offset, ts))) => {
            let response = response.with_offset(offset).with_timestamp(ts);
            if with_epoch {
                response.with_leader_epoch(leader_epoch)
            } else {
                response
            }
        }
        // Kafka's UNKNOWN_OFFSET / UNKNOWN_TIMESTAMP (the defaults): no
        // record at or after the timestamp.
        Ok(None) => response,
        Err(e) => {
            tracing::warn!(topic = %partition.topic, partition = index, error = %e, "offset lookup failed");
            response.with_error_code(e.code())
        }
    }
}

#[cfg(test)]
mod tests {
    use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
    use kafka_protocol::protocol::StrBytes;
    use veil_log::testing::build_simple_batch;

    use super::*;
    use crate::test_fixture as fixture;

    fn request(partitions: &[(i32, i64, i32)]) -> ListOffsetsRequest {
        let partitions = partitions
            .iter()
            .map(|&(index, timestamp, epoch)| {
                ListOffsetsPartition::default()
                    .with_partition_index(index)
                    .with_timestamp(timestamp)
                    .with_current_leader_epoch(epoch)
            })
            .collect();
        let topic = ListOffsetsTopic::default()
            .with_name(TopicName(StrBytes::from_static_str("t")))
            .with_partitions(partitions);
        ListOffsetsRequest::default().with_topics(vec![topic])
    }

    /// (error, offset, timestamp, leader epoch) for one partition-0 lookup.
    async fn lookup(ctx: &RequestContext, timestamp: i64, epoch: i32) -> (i16, i64, i64, i32) {
        let resp = handle(ctx, request(&[(0, timestamp, epoch)])).await;
        fixture::encodes(&resp, ctx.api_version.max(4)..=8);
        let p = &resp.topics[0].partitions[0];
        (p.error_code, p.offset, p.timestamp, p.leader_epoch)
    }

    #[tokio::test]
    async fn answers_special_and_searched_timestamps() {
        let (_dir, ctx) = fixture::context(8).await;
        fixture::create_topic(&ctx, "t", 1).await;
        let p = ctx.broker.topics.partition("t", 0).unwrap();
        p.append(&mut build_simple_batch(3, 8, 100), 0).unwrap(); // offsets 0-2, ts 100-102
        p.append(&mut build_simple_batch(2, 8, 50), 0).unwrap(); // offsets 3-4, ts 50-51
                                                                 // Not yet fsynced: beyond the high watermark, so not there for lookups.
        assert_eq!(lookup(&ctx, LATEST, -1).await, (0, 0, -1, 0));
        p.sync().unwrap();
        assert_eq!(lookup(&ctx, EARLIEST, -1).await, (0, 0, -1, 0));
        assert_eq!(lookup(&ctx, LATEST, -1).await, (0, 5, -1, 0));
        assert_eq!(lookup(&ctx, MAX_TIMESTAMP, -1).await, (0, 2, 102, 0));
        assert_eq!(lookup(&ctx, 101, 0).await, (0, 1, 101, 0));
        assert_eq!(
            lookup(&ctx, 51, -1).await,
            (0, 0, 100, 0),
            "first offset at or after"
        );
        assert_eq!(lookup(&ctx, 500, -1).await, (0, -1, -1, -1));
        assert_eq!(
            lookup(&ctx, LATEST, 1).await.0,
            ResponseError::UnknownLeaderEpoch.code()
        );

        let v1 = RequestContext {
            api_version: 1,
            ..ctx.clone()
        };
        assert_eq!(
            lookup(&v1, LATEST, -1).await,
            (0, 5, -1, -1),
            "no leader epoch before v4"
        );
        let resp = handle(
            &v1,
            request(&[(0, LATEST, -1), (0, EARLIEST, -1), (9, LATEST, -1)]),
        )
        .await;
        fixture::encodes(&resp, 1..=8);
        let codes: Vec<i16> = resp.topics[0]
            .partitions
            .iter()
            .map(|p| p.error_code)
            .collect();
        assert_eq!(
            codes,
            vec![42, 42, 3],
            "repeats are INVALID_REQUEST, unknown partitions 3"
        );
    }

    #[test]
    fn leader_epoch_fencing_follows_kafka() {
        assert_eq!(check_current_leader_epoch(-1, 5), Ok(()));
        assert_eq!(check_current_leader_epoch(5, 5), Ok(()));
        assert_eq!(
            check_current_leader_epoch(4, 5),
            Err(ResponseError::FencedLeaderEpoch)
        );
        assert_eq!(
            check_current_leader_epoch(6, 5),
            Err(ResponseError::UnknownLeaderEpoch)
        );
    }
}
