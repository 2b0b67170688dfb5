//! How many record bytes a Fetch may return: what the request asks for,
//! capped by the broker (Kafka's `fetch.max.bytes` for consumers,
//! `replica.fetch.max.bytes` per partition and
//! `replica.fetch.response.max.bytes` for followers).
//!
//! Decided once per request, so the connection can reserve room for the
//! response in its budget before the handler reads the log, and the handler
//! reads no more than was reserved. As in KIP-74 the first batch is returned
//! even when it alone is larger; `max.message.bytes` bounds it.

use kafka_protocol::messages::FetchRequest;

use crate::config::NetworkConfig;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FetchLimits {
    /// Record bytes in the whole response.
    pub response: usize,
    /// Record bytes per partition, before the request's own
    /// `partition_max_bytes`.
    partition: usize,
}

impl FetchLimits {
    pub fn of(req: &FetchRequest, net: &NetworkConfig) -> FetchLimits {
        let (response_cap, partition_cap) = if is_follower(req) {
            (
                net.replica_fetch_response_max_bytes,
                net.replica_fetch_max_bytes,
            )
        } else {
            (net.fetch_max_bytes, usize::MAX)
        };
        let partitions = req
            .topics
            .iter()
            .flat_map(|t| &t.partitions)
            .map(|p| bytes(p.partition_max_bytes).min(partition_cap))
            .fold(0usize, usize::saturating_add);
        FetchLimits {
            response: bytes(req.max_bytes).min(response_cap).min(partitions),
            partition: partition_cap,
        }
    }

    /// The limit for one partition that asked for `partition_max_bytes`.
    pub fn partition(&self, partition_max_bytes: usize) -> usize {
        partition_max_bytes.min(self.partition)
    }
}

/// A follower fetch names its replica (`replica_id`, or `replica_state` from
/// v15); consumers send -1.
pub fn is_follower(req: &FetchRequest) -> bool {
    req.replica_id.0 >= 0 || req.replica_state.replica_id.0 >= 0
}

fn bytes(wire: i32) -> usize {
    usize::try_from(wire.max(0)).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
    use kafka_protocol::messages::BrokerId;

    use super::*;

    fn request(replica: i32, max_bytes: i32, partitions: &[i32]) -> FetchRequest {
        FetchRequest::default()
            .with_replica_id(BrokerId(replica))
            .with_max_bytes(max_bytes)
            .with_topics(vec![FetchTopic::default().with_partitions(
                partitions
                    .iter()
                    .map(|&m| FetchPartition::default().with_partition_max_bytes(m))
                    .collect(),
            )])
    }

    #[test]
    fn the_broker_caps_what_a_fetch_asks_for() {
        let net = NetworkConfig::default();
        let everything = request(-1, i32::MAX, &[i32::MAX, i32::MAX]);
        let l = FetchLimits::of(&everything, &net);
        assert_eq!(l.response, 55 * 1024 * 1024);
        assert_eq!(l.partition(i32::MAX as usize), i32::MAX as usize);
        // Smaller requests keep their own limits, down to the partitions' sum.
        let small = FetchLimits::of(&request(-1, 1 << 20, &[1000, 2000, -5]), &net);
        assert_eq!(small.response, 3000);
        let follower = FetchLimits::of(&request(3, i32::MAX, &[i32::MAX; 20]), &net);
        assert_eq!(follower.response, 10 * 1024 * 1024);
        assert_eq!(follower.partition(i32::MAX as usize), 1024 * 1024);
        assert_eq!(follower.partition(100), 100);
    }
}
