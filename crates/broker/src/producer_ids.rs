//! Producer ids for InitProducerId, reserved in blocks through the metadata log.
//!
//! Kafka's controller hands out blocks of 1000 ids (KIP-730) and records the high-water mark,
//! so an id is never issued twice, even after a restart. We do the same with
//! `MetaCommand::AllocateProducerIds`: ids of a block that was reserved but not handed out before
//! a restart are simply skipped.

use std::sync::Arc;

use tokio::sync::Mutex;
use veil_meta::MetaCommand;

use crate::error::Result;
use crate::state::BrokerState;

/// Ids reserved per metadata command, as Kafka's `ProducerIdManager`.
pub const BLOCK_SIZE: i64 = 1000;

/// The unused rest `[next, end)` of the current block.
#[derive(Debug, Default)]
pub struct ProducerIdAllocator {
    /// An async lock: reserving a block awaits an fsynced metadata commit, and concurrent
    /// requests must not both reserve one.
    block: Mutex<(i64, i64)>,
}

impl ProducerIdAllocator {
    /// A fresh producer id, reserving a new block first when the current one is used up.
    pub async fn next(&self, broker: &Arc<BrokerState>) -> Result<i64> {
        let mut block = self.block.lock().await;
        if block.0 >= block.1 {
            let start = broker.with_meta(veil_meta::MetaState::next_producer_id);
            broker
                .commit(MetaCommand::AllocateProducerIds {
                    block_start: start,
                    block_size: BLOCK_SIZE,
                })
                .await?;
            *block = (start, start + BLOCK_SIZE);
        }
        let id = block.0;
        block.0 += 1;
        Ok(id)
    }
}
