//! The applied metadata as the rest of the node sees it: one [`MetaState`]
//! behind a read/write lock, the index it has reached, and what changed
//! since the node last looked.
//!
//! The state machine writes; request handlers read for a moment at a time;
//! the broker's metadata listener waits on [`MetaView::subscribe`] and
//! brings topics, ACLs and blind-topic caches in line with
//! [`MetaView::take_changes`].

use parking_lot::{Mutex, RwLock};
use tokio::sync::watch;

use crate::MetaState;

/// Which parts of the state changed; accumulated until taken.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Changes {
    pub topics: bool,
    pub acls: bool,
    pub blind: bool,
    pub scram: bool,
    pub brokers: bool,
    pub configs: bool,
    pub transactions: bool,
}

impl Changes {
    /// Everything (after a snapshot replaced the whole state).
    pub const ALL: Changes = Changes {
        topics: true,
        acls: true,
        blind: true,
        scram: true,
        brokers: true,
        configs: true,
        transactions: true,
    };

    pub fn merge(&mut self, other: Changes) {
        self.topics |= other.topics;
        self.acls |= other.acls;
        self.blind |= other.blind;
        self.scram |= other.scram;
        self.brokers |= other.brokers;
        self.configs |= other.configs;
        self.transactions |= other.transactions;
    }

    pub fn any(self) -> bool {
        self != Changes::default()
    }
}

#[derive(Debug)]
pub struct MetaView {
    state: RwLock<MetaState>,
    applied: watch::Sender<u64>,
    changes: Mutex<Changes>,
}

impl MetaView {
    pub fn new(state: MetaState) -> MetaView {
        let applied = state.last_applied();
        MetaView {
            state: RwLock::new(state),
            applied: watch::Sender::new(applied),
            changes: Mutex::new(Changes::ALL),
        }
    }

    /// Runs `f` on the current state (hold it briefly: applies wait).
    pub fn read<T>(&self, f: impl FnOnce(&MetaState) -> T) -> T {
        f(&self.state.read())
    }

    /// A copy of the whole state (snapshots).
    pub fn clone_state(&self) -> MetaState {
        self.state.read().clone()
    }

    /// The index of the last applied entry.
    pub fn applied(&self) -> u64 {
        *self.applied.borrow()
    }

    /// Notified after every apply with the new applied index.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.applied.subscribe()
    }

    /// What changed since the last call.
    pub fn take_changes(&self) -> Changes {
        std::mem::take(&mut *self.changes.lock())
    }

    /// Applies under the write lock, then announces the new index.
    pub(crate) fn update<T>(&self, f: impl FnOnce(&mut MetaState) -> (T, Changes)) -> T {
        let (out, changes, index) = {
            let mut state = self.state.write();
            let (out, changes) = f(&mut state);
            (out, changes, state.last_applied())
        };
        self.changes.lock().merge(changes);
        self.applied.send_replace(index);
        out
    }
}
