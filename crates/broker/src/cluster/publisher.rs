//! Bringing the node in line with applied metadata: after the quorum's
//! state machine applies entries, open and close partition replicas, take
//! new leaders and ISRs, refresh the ACL copy and the blind-topic caches,
//! then publish the index reached. A metadata change made on this node
//! returns only once it is published here, so the request that made it
//! sees its own effect.

use std::sync::{Arc, Weak};

use tokio_util::sync::CancellationToken;

use crate::state::BrokerState;

/// Follows the applied index until shutdown.
pub async fn run(state: Weak<BrokerState>, shutdown: CancellationToken) {
    let Some(mut applied) = state.upgrade().map(|s| s.cluster.quorum.view().subscribe()) else {
        return;
    };
    loop {
        let Some(strong) = state.upgrade() else {
            return;
        };
        let work = Arc::clone(&strong);
        drop(strong);
        // Blocking pool: reconciling opens files and may run recovery.
        let _ = tokio::task::spawn_blocking(move || publish(&work)).await;
        tokio::select! {
            () = shutdown.cancelled() => return,
            changed = applied.changed() => if changed.is_err() { return },
        }
    }
}

/// One pass: everything that changed since the last one.
pub fn publish(state: &Arc<BrokerState>) {
    let view = state.cluster.quorum.view();
    // In this order: every change up to `applied` is recorded before the
    // index is announced, so it is among the changes taken.
    let applied = view.applied();
    let changes = view.take_changes();
    if changes.any() {
        if changes.acls {
            view.read(|s| state.authorizer.refresh(s));
        }
        if changes.blind {
            view.read(|s| state.blind.refresh(s));
        }
        if changes.topics || changes.brokers {
            let topics: Vec<veil_meta::TopicRecord> = view.read(|s| s.topics().cloned().collect());
            if let Err(e) = state
                .topics
                .reconcile(&topics, state.node_id(), state.clock.now_ms())
            {
                tracing::error!(error = %e, "some partition replicas could not be opened");
            }
            crate::replication::Replication::sync_fetchers(state);
            state.groups.set_leadership(state);
        }
        if changes.configs {
            state.apply_dynamic_configs();
        }
    }
    state.mark_published(applied);
}
