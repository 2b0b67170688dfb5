//! The idempotent producer against the real binary: InitProducerId, duplicates answered with
//! their original offsets, gaps and stale epochs refused, and all of it surviving kill -9.

mod common;

use common::{create, fetch, produce, rt, BIN};
use kafka_protocol::messages::{
    InitProducerIdRequest, InitProducerIdResponse, ProducerId, TransactionalId,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use veil_client::Connection;
use veil_testkit::TestBroker;

const TS: i64 = 1_700_000_000_000;

/// A batch of `values` from producer `pid`/`epoch` starting at sequence `seq`.
fn batch(values: &[&str], pid: i64, epoch: i16, seq: i32) -> Vec<u8> {
    let records: Vec<veil_log::testing::TestRecord> = values
        .iter()
        .map(|v| (None, Some(v.as_bytes()), TS))
        .collect();
    veil_log::testing::build_batch_with_producer(&records, pid, epoch, seq)
}

/// A non-transactional request (kafka-protocol's default is an empty transactional id).
fn request() -> InitProducerIdRequest {
    InitProducerIdRequest::default().with_transactional_id(None)
}

async fn init(conn: &mut Connection, req: InitProducerIdRequest) -> InitProducerIdResponse {
    conn.send(&req.with_transaction_timeout_ms(60_000))
        .await
        .unwrap()
}

async fn new_producer(bootstrap: &str) -> (Connection, i64) {
    let mut conn = Connection::connect(bootstrap, "idempotence").await.unwrap();
    let resp = init(
        &mut conn,
        request()
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1),
    )
    .await;
    assert_eq!((resp.error_code, resp.producer_epoch), (0, 0));
    (conn, resp.producer_id.0)
}

/// Produce with acks=all; returns (error code, base offset).
async fn send(conn: &mut Connection, topic: &str, records: Vec<u8>) -> (i16, i64) {
    let resp = produce(conn, topic, 0, -1, records).await;
    let p = &resp.responses[0].partition_responses[0];
    (p.error_code, p.base_offset)
}

async fn high_watermark(conn: &mut Connection, topic: &str) -> i64 {
    fetch(conn, topic, 0, 0, 0).await.responses[0].partitions[0].high_watermark
}

#[test]
fn producer_ids_are_unique_across_restarts_and_transactional_ids_bump_their_epoch() {
    let mut broker = TestBroker::start(BIN);
    let (first, second) = rt().block_on(async {
        let (_, a) = new_producer(&broker.bootstrap()).await;
        let (_, b) = new_producer(&broker.bootstrap()).await;
        (a, b)
    });
    assert!(first >= 0 && second > first);
    broker.kill();
    broker.restart();
    rt().block_on(async {
        let (mut conn, after) = new_producer(&broker.bootstrap()).await;
        assert!(
            after > second,
            "id {after} reissued after a crash (had {second})"
        );

        // KIP-360 re-init of a non-transactional producer: a fresh id at epoch 0, as Kafka.
        let resp = init(
            &mut conn,
            request()
                .with_producer_id(ProducerId(after))
                .with_producer_epoch(3),
        )
        .await;
        assert_eq!(resp.error_code, 0);
        assert!(resp.producer_id.0 > after && resp.producer_epoch == 0);

        let half = request()
            .with_producer_id(ProducerId(after))
            .with_producer_epoch(-1);
        assert_eq!(
            init(&mut conn, half).await.error_code,
            ResponseError::InvalidRequest.code()
        );

        // A transactional id keeps its producer id; each InitProducerId bumps the epoch.
        let txn = || {
            request()
                .with_transactional_id(Some(TransactionalId(StrBytes::from_static_str("tx-1"))))
                .with_producer_id(ProducerId(-1))
                .with_producer_epoch(-1)
        };
        let first = init(&mut conn, txn()).await;
        assert_eq!(first.error_code, 0);
        assert!(first.producer_id.0 > resp.producer_id.0 && first.producer_epoch == 0);
        let again = init(&mut conn, txn()).await;
        assert_eq!(
            (again.error_code, again.producer_id.0, again.producer_epoch),
            (0, first.producer_id.0, 1)
        );
        // Beyond transaction.max.timeout.ms (15 minutes by default).
        let too_long: InitProducerIdResponse = conn
            .send(&txn().with_transaction_timeout_ms(3_600_000))
            .await
            .unwrap();
        assert_eq!(
            too_long.error_code,
            ResponseError::InvalidTransactionTimeout.code()
        );
    });
}

#[test]
fn duplicates_get_their_original_offset_gaps_and_stale_epochs_are_refused() {
    let broker = TestBroker::start(BIN);
    rt().block_on(async {
        create(&broker.bootstrap(), "idem", 1).await;
        let (mut conn, pid) = new_producer(&broker.bootstrap()).await;
        assert_eq!(
            send(&mut conn, "idem", batch(&["a", "b", "c"], pid, 0, 0)).await,
            (0, 0)
        );
        assert_eq!(
            send(&mut conn, "idem", batch(&["d", "e"], pid, 0, 3)).await,
            (0, 3)
        );
        // The retry of the first batch: its original offset, no error, nothing written.
        assert_eq!(
            send(&mut conn, "idem", batch(&["a", "b", "c"], pid, 0, 0)).await,
            (0, 0)
        );
        assert_eq!(high_watermark(&mut conn, "idem").await, 5);

        let (code, offset) = send(&mut conn, "idem", batch(&["x"], pid, 0, 9)).await;
        assert_eq!(
            (code, offset),
            (ResponseError::OutOfOrderSequenceNumber.code(), -1)
        );

        // Epoch 1 starts at 0; epoch 0 is then stale.
        assert_eq!(
            send(&mut conn, "idem", batch(&["f"], pid, 1, 0)).await,
            (0, 5)
        );
        let (code, _) = send(&mut conn, "idem", batch(&["g"], pid, 0, 5)).await;
        assert_eq!(code, ResponseError::InvalidProducerEpoch.code());
        assert_eq!(high_watermark(&mut conn, "idem").await, 6);
    });
}

#[test]
fn a_retry_after_kill_9_is_still_a_duplicate() {
    let mut broker = TestBroker::start(BIN);
    let pid = rt().block_on(async {
        create(&broker.bootstrap(), "crash", 1).await;
        let (mut conn, pid) = new_producer(&broker.bootstrap()).await;
        for i in 0..4 {
            let values = [format!("v{}", 2 * i), format!("v{}", 2 * i + 1)];
            let values: Vec<&str> = values.iter().map(String::as_str).collect();
            assert_eq!(
                send(&mut conn, "crash", batch(&values, pid, 0, 2 * i)).await,
                (0, i64::from(2 * i))
            );
        }
        pid
    });
    broker.kill();
    broker.restart();
    rt().block_on(async {
        let mut conn = Connection::connect(&broker.bootstrap(), "retry")
            .await
            .unwrap();
        // The response to the last batch was "lost": the producer sends it again.
        assert_eq!(
            send(&mut conn, "crash", batch(&["v6", "v7"], pid, 0, 6)).await,
            (0, 6)
        );
        assert_eq!(
            send(&mut conn, "crash", batch(&["v2", "v3"], pid, 0, 2)).await,
            (0, 2)
        );
        assert_eq!(high_watermark(&mut conn, "crash").await, 8);
        assert_eq!(
            send(&mut conn, "crash", batch(&["v8"], pid, 0, 8)).await,
            (0, 8)
        );
        let (code, _) = send(&mut conn, "crash", batch(&["v10"], pid, 0, 10)).await;
        assert_eq!(code, ResponseError::OutOfOrderSequenceNumber.code());
    });
}
