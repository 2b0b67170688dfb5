//! Transaction administration through Kafka's APIs (KIP-664): list and
//! describe transactional ids, and abort an open transaction by fencing its
//! producer.

use kafka_protocol::messages::{
    DescribeTransactionsRequest, InitProducerIdRequest, ListTransactionsRequest, ProducerId,
    TransactionalId,
};
use kafka_protocol::protocol::StrBytes;

use crate::admin::Admin;
use crate::error::{Error, Result};

/// FindCoordinator's key type for transactional ids.
const TRANSACTION: i8 = 1;

#[derive(Debug, Clone)]
pub struct TransactionListing {
    pub transactional_id: String,
    pub producer_id: i64,
    pub state: String,
}

#[derive(Debug, Clone)]
pub struct TransactionDescription {
    pub transactional_id: String,
    pub state: String,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub timeout_ms: i32,
    /// -1 when no transaction is open.
    pub start_time_ms: i64,
    pub partitions: Vec<(String, i32)>,
}

fn txn_id(id: &str) -> TransactionalId {
    TransactionalId(StrBytes::from_string(id.to_owned()))
}

impl Admin {
    /// The coordinator of `transactional_id` as `host:port`.
    pub async fn find_transaction_coordinator(&mut self, transactional_id: &str) -> Result<String> {
        self.coordinator_of(
            TRANSACTION,
            transactional_id,
            &format!("transactional id '{transactional_id}'"),
        )
        .await
    }

    /// Transactions the connected broker coordinates, optionally only in
    /// the given states (Kafka's names: `Ongoing`, `CompleteAbort`, ...).
    pub async fn list_transactions(
        &mut self,
        states: &[String],
    ) -> Result<Vec<TransactionListing>> {
        let req = ListTransactionsRequest::default().with_state_filters(
            states
                .iter()
                .map(|s| StrBytes::from_string(s.clone()))
                .collect(),
        );
        let resp = self.connection().send(&req).await?;
        if resp.error_code != 0 {
            return Err(Error::kafka(
                "cannot list transactions",
                resp.error_code,
                None,
            ));
        }
        if let Some(unknown) = resp.unknown_state_filters.first() {
            return Err(Error::Invalid(format!(
                "unknown transaction state '{unknown}'"
            )));
        }
        let mut out: Vec<TransactionListing> = resp
            .transaction_states
            .into_iter()
            .map(|t| TransactionListing {
                transactional_id: t.transactional_id.0.to_string(),
                producer_id: t.producer_id.0,
                state: t.transaction_state.to_string(),
            })
            .collect();
        out.sort_by(|a, b| a.transactional_id.cmp(&b.transactional_id));
        Ok(out)
    }

    pub async fn describe_transaction(
        &mut self,
        transactional_id: &str,
    ) -> Result<TransactionDescription> {
        let req = DescribeTransactionsRequest::default()
            .with_transactional_ids(vec![txn_id(transactional_id)]);
        let resp = self.connection().send(&req).await?;
        let Some(t) = resp.transaction_states.into_iter().next() else {
            return Err(Error::Invalid("the broker answered no transaction".into()));
        };
        if t.error_code != 0 {
            return Err(Error::kafka(
                format!("cannot describe transactional id '{transactional_id}'"),
                t.error_code,
                None,
            ));
        }
        Ok(TransactionDescription {
            transactional_id: t.transactional_id.0.to_string(),
            state: t.transaction_state.to_string(),
            producer_id: t.producer_id.0,
            producer_epoch: t.producer_epoch,
            timeout_ms: t.transaction_timeout_ms,
            start_time_ms: t.transaction_start_time_ms,
            partitions: t
                .topics
                .into_iter()
                .flat_map(|tp| {
                    let topic = tp.topic.0.to_string();
                    tp.partitions.into_iter().map(move |p| (topic.clone(), p))
                })
                .collect(),
        })
    }

    /// Aborts the open transaction of `transactional_id` by fencing its
    /// producer: an InitProducerId for the id bumps the epoch and the
    /// coordinator aborts the transaction under it (the producer that left
    /// it gets PRODUCER_FENCED). Returns the epoch the id now has.
    pub async fn abort_transaction(&mut self, transactional_id: &str) -> Result<i16> {
        let described = self.describe_transaction(transactional_id).await?;
        if described.state != "Ongoing" {
            return Err(Error::Invalid(format!(
                "transactional id '{transactional_id}' has no open transaction (state {})",
                described.state
            )));
        }
        let req = InitProducerIdRequest::default()
            .with_transactional_id(Some(txn_id(transactional_id)))
            .with_transaction_timeout_ms(described.timeout_ms)
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1);
        let resp = self.connection().send(&req).await?;
        // CONCURRENT_TRANSACTIONS (51): the abort started; anything else failed.
        match resp.error_code {
            0 | 51 => Ok(described.producer_epoch.saturating_add(1)),
            code => Err(Error::kafka(
                format!("cannot abort the transaction of '{transactional_id}'"),
                code,
                None,
            )),
        }
    }
}
