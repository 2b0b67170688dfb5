//! Consumer lag on `/metrics`, computed at scrape time.

use crate::state::BrokerState;

/// Sets `veil_group_lag{group,topic,partition}` = high watermark − committed
/// offset (never negative) for every committed offset of a partition that
/// still exists; series of vanished groups and partitions disappear.
pub fn update_lag(state: &BrokerState) {
    let offsets = state.groups.read(super::Coordinator::all_offsets);
    let gauge = &state.metrics.group_lag;
    gauge.reset();
    for (group, (topic, partition), committed) in offsets {
        let Ok(p) = state.topics.partition(&topic, partition) else {
            continue;
        };
        let lag = (p.high_watermark() - committed).max(0);
        let index = partition.to_string();
        gauge
            .with_label_values(&[group.as_str(), topic.as_str(), index.as_str()])
            .set(lag);
    }
}
