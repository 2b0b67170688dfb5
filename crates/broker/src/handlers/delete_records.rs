//! DeleteRecords: advance partitions' log start offsets.
//!
//! Offset -1 means the high watermark; anything above the high watermark, or
//! negative, is OFFSET_OUT_OF_RANGE. The low watermark answered is the new log
//! start offset. Deleting segments touches the disk, so the whole request
//! runs on the blocking pool.

use std::sync::Arc;

use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::{DeleteRecordsRequest, DeleteRecordsResponse, TopicName};
use kafka_protocol::ResponseError;

use crate::auth::{Operation, ResourceType};
use crate::context::RequestContext;
use crate::error::Error;
use crate::partition::Partition;

/// The offset that means "up to the high watermark".
const HIGH_WATERMARK: i64 = -1;
/// Kafka's `INVALID_LOW_WATERMARK`, answered with every error.
const INVALID_LOW_WATERMARK: i64 = -1;

/// The offset to delete before, given the partition's high watermark.
fn target_offset(requested: i64, high_watermark: i64) -> Result<i64, ResponseError> {
    let offset = if requested == HIGH_WATERMARK {
        high_watermark
    } else {
        requested
    };
    if offset < 0 || offset > high_watermark {
        Err(ResponseError::OffsetOutOfRange)
    } else {
        Ok(offset)
    }
}

fn delete_before(partition: &Partition, requested: i64) -> Result<i64, Error> {
    // One write lock: the high watermark cannot move between check and delete.
    partition.with_log_mut(|log| {
        let offset = target_offset(requested, log.log_end_offset()).map_err(|_| {
            Error::Log(veil_log::Error::OffsetOutOfRange {
                offset: requested,
                log_start_offset: log.log_start_offset(),
                log_end_offset: log.log_end_offset(),
            })
        })?;
        Ok(log.delete_records_before(offset)?)
    })
}

pub async fn handle(ctx: &RequestContext, req: DeleteRecordsRequest) -> DeleteRecordsResponse {
    /// A partition to delete from, or the error that prevents it.
    type Target = Result<Arc<Partition>, Error>;
    type Work = Vec<(TopicName, Vec<(i32, i64, Target)>)>;
    let work: Work = req
        .topics
        .iter()
        .map(|t| {
            let topic = ctx.visible_topic(&t.name);
            // Kafka checks DELETE before existence.
            let allowed = ctx.authorize(Operation::Delete, ResourceType::Topic, &t.name);
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    let partition = topic
                        .as_ref()
                        .ok_or(ResponseError::UnknownTopicOrPartition)
                        .and_then(|t| t.lookup(p.partition_index));
                    let target = match partition {
                        _ if !allowed => {
                            Err(Error::Unauthorized(ResponseError::TopicAuthorizationFailed))
                        }
                        Ok(p) => Ok(Arc::clone(p)),
                        Err(ResponseError::KafkaStorageError) => Err(Error::Offline),
                        Err(_) => Err(Error::UnknownTopicOrPartition),
                    };
                    (p.partition_index, p.offset, target)
                })
                .collect();
            (t.name.clone(), partitions)
        })
        .collect();

    let topics = tokio::task::spawn_blocking(move || {
        work.into_iter()
            .map(|(name, partitions)| {
                let results = partitions
                    .into_iter()
                    .map(|(index, offset, partition)| {
                        let outcome = match partition {
                            Err(e) => Err(e),
                            Ok(p) => delete_before(&p, offset).inspect_err(|e| {
                                tracing::debug!(topic = %p.topic, partition = index, error = %e,
                                    "DeleteRecords refused");
                            }),
                        };
                        let result =
                            DeleteRecordsPartitionResult::default().with_partition_index(index);
                        match outcome {
                            Ok(low_watermark) => result.with_low_watermark(low_watermark),
                            Err(e) => result
                                .with_error_code(e.code())
                                .with_low_watermark(INVALID_LOW_WATERMARK),
                        }
                    })
                    .collect();
                DeleteRecordsTopicResult::default()
                    .with_name(name)
                    .with_partitions(results)
            })
            .collect::<Vec<_>>()
    })
    .await
    .unwrap_or_else(|e| {
        tracing::error!(error = %e, "DeleteRecords task failed");
        failed(&req, ResponseError::UnknownServerError)
    });
    for t in &topics {
        for p in &t.partitions {
            ctx.count(p.error_code);
        }
    }
    DeleteRecordsResponse::default().with_topics(topics)
}

/// Every partition of `req` answered with `error`.
fn failed(req: &DeleteRecordsRequest, error: ResponseError) -> Vec<DeleteRecordsTopicResult> {
    req.topics
        .iter()
        .map(|t| {
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    DeleteRecordsPartitionResult::default()
                        .with_partition_index(p.partition_index)
                        .with_error_code(error.code())
                        .with_low_watermark(INVALID_LOW_WATERMARK)
                })
                .collect();
            DeleteRecordsTopicResult::default()
                .with_name(t.name.clone())
                .with_partitions(partitions)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use kafka_protocol::messages::delete_records_request::{
        DeleteRecordsPartition, DeleteRecordsTopic,
    };
    use kafka_protocol::protocol::StrBytes;
    use veil_log::testing::build_simple_batch;

    use super::*;
    use crate::test_fixture as fixture;

    /// (error, low watermark) per (topic, partition, offset).
    async fn delete(ctx: &RequestContext, targets: &[(&'static str, i32, i64)]) -> Vec<(i16, i64)> {
        let topics = targets
            .iter()
            .map(|&(name, index, offset)| {
                DeleteRecordsTopic::default()
                    .with_name(TopicName(StrBytes::from_static_str(name)))
                    .with_partitions(vec![DeleteRecordsPartition::default()
                        .with_partition_index(index)
                        .with_offset(offset)])
            })
            .collect();
        let resp = handle(ctx, DeleteRecordsRequest::default().with_topics(topics)).await;
        fixture::encodes(&resp, 0..=2);
        resp.topics
            .iter()
            .flat_map(|t| t.partitions.iter().map(|p| (p.error_code, p.low_watermark)))
            .collect()
    }

    #[tokio::test]
    async fn advances_the_log_start_offset_up_to_the_high_watermark() {
        let (_dir, ctx) = fixture::context(2);
        fixture::create_topic(&ctx, "t", 2).await;
        let p = ctx.broker.topics.partition("t", 0).unwrap();
        p.append(&mut build_simple_batch(5, 8, 100), 0).unwrap();
        p.append(&mut build_simple_batch(5, 8, 200), 0).unwrap();
        let out_of_range = ResponseError::OffsetOutOfRange.code();
        let unknown = ResponseError::UnknownTopicOrPartition.code();
        assert_eq!(delete(&ctx, &[("t", 0, 3)]).await, vec![(0, 3)]);
        assert_eq!(p.log_start_offset(), 3);
        assert_eq!(
            delete(&ctx, &[("t", 0, 1)]).await,
            vec![(0, 3)],
            "never moves back"
        );
        assert_eq!(
            delete(
                &ctx,
                &[("t", 0, 11), ("t", 1, -1), ("t", 2, 0), ("u", 0, 0)]
            )
            .await,
            vec![(out_of_range, -1), (0, 0), (unknown, -1), (unknown, -1)]
        );
        assert_eq!(delete(&ctx, &[("t", 0, -1)]).await, vec![(0, 10)]);
        assert_eq!(p.log_start_offset(), 10);
    }

    #[test]
    fn minus_one_means_the_high_watermark() {
        assert_eq!(target_offset(-1, 42), Ok(42));
        assert_eq!(target_offset(-1, 0), Ok(0));
    }

    #[test]
    fn offsets_must_lie_within_the_high_watermark() {
        assert_eq!(target_offset(0, 42), Ok(0));
        assert_eq!(target_offset(42, 42), Ok(42));
        assert_eq!(target_offset(43, 42), Err(ResponseError::OffsetOutOfRange));
        assert_eq!(target_offset(-2, 42), Err(ResponseError::OffsetOutOfRange));
    }
}
