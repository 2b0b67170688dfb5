//! EndTxn: commit or abort the producer's open transaction. Answered once
//! the decision is stored (PrepareCommit / PrepareAbort in the metadata
//! quorum); the markers are written after, and until they all are the
//! transactional id answers CONCURRENT_TRANSACTIONS (clients retry).
//!
//! Authorization: WRITE on the transactional id.

use kafka_protocol::messages::{EndTxnRequest, EndTxnResponse};
use kafka_protocol::ResponseError;

use super::add_partitions_to_txn::{fenced_for, FENCED_FROM};
use crate::auth::{Operation, ResourceType};
use crate::context::RequestContext;

pub async fn handle(ctx: &RequestContext, req: EndTxnRequest) -> EndTxnResponse {
    let id = req.transactional_id.0.as_str();
    let outcome = if ctx.authorize(Operation::Write, ResourceType::TransactionalId, id) {
        ctx.broker
            .transactions
            .end(
                &ctx.broker,
                id,
                (req.producer_id.0, req.producer_epoch),
                req.committed,
            )
            .await
    } else {
        Err(ResponseError::TransactionalIdAuthorizationFailed)
    };
    let code = outcome.map_or_else(|e| fenced_for(ctx, e, FENCED_FROM).code(), |()| 0);
    ctx.count(code);
    EndTxnResponse::default().with_error_code(code)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_fixture as fixture;
    use kafka_protocol::messages::{ProducerId, TransactionalId};
    use kafka_protocol::protocol::StrBytes;

    fn end(id: &str, pid: i64, epoch: i16, committed: bool) -> EndTxnRequest {
        EndTxnRequest::default()
            .with_transactional_id(TransactionalId(StrBytes::from_string(id.into())))
            .with_producer_id(ProducerId(pid))
            .with_producer_epoch(epoch)
            .with_committed(committed)
    }

    #[tokio::test]
    async fn bad_ids_and_epochs_get_kafkas_errors_by_version() {
        let (_dir, mut ctx) = fixture::context(3).await;
        let code = |r: EndTxnResponse| r.error_code;
        assert_eq!(
            code(handle(&ctx, end("nobody", 1, 0, true)).await),
            ResponseError::InvalidProducerIdMapping.code()
        );
        let (pid, _) = ctx
            .broker
            .transactions
            .init_producer_id(&ctx.broker, "tx", 60_000, (-1, -1))
            .await
            .unwrap();
        // Nothing open: aborting is not a valid transition.
        assert_eq!(
            code(handle(&ctx, end("tx", pid, 0, false)).await),
            ResponseError::InvalidTxnState.code()
        );
        assert_eq!(
            code(handle(&ctx, end("tx", pid, 5, true)).await),
            ResponseError::ProducerFenced.code()
        );
        ctx.api_version = 1;
        let resp = handle(&ctx, end("tx", pid, 5, true)).await;
        fixture::encodes(&resp, 1..=1);
        assert_eq!(code(resp), ResponseError::InvalidProducerEpoch.code());
    }
}
