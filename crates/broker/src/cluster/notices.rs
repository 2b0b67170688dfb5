//! Problems between nodes repeat with every call — a node refused for its
//! voter set, a certificate from another CA, a handshake that fails — and
//! calls happen several times a second. Each distinct problem is logged as
//! a warning once, then at most every [`REPEAT_AFTER`]; in between only at
//! debug level, so the log says what to fix instead of flooding.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// How often a problem that persists is repeated at warning level.
pub const REPEAT_AFTER: Duration = Duration::from_secs(600);

/// Distinct problems remembered; beyond it the table starts over (which
/// only means some repeat early).
const MAX_NOTICES: usize = 256;

#[derive(Debug, Default)]
pub struct Notices {
    last: Mutex<HashMap<String, Instant>>,
}

impl Notices {
    /// Whether the problem `key` should be logged at warning level now.
    pub fn due(&self, key: &str) -> bool {
        let now = Instant::now();
        let mut last = self.last.lock();
        if let Some(at) = last.get(key) {
            if now.duration_since(*at) < REPEAT_AFTER {
                return false;
            }
        } else if last.len() >= MAX_NOTICES {
            last.clear();
        }
        last.insert(key.to_owned(), now);
        true
    }

    /// Logs `message` at warn the first time `key` comes up (and every
    /// [`REPEAT_AFTER`] while it persists), otherwise at debug.
    pub fn report(&self, key: &str, message: &str) {
        if self.due(key) {
            tracing::warn!("{message}");
        } else {
            tracing::debug!("{message}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_problem_is_due_once_and_the_table_stays_bounded() {
        let n = Notices::default();
        assert!(n.due("a"));
        assert!(!n.due("a"));
        assert!(n.due("b"));
        for i in 0..(MAX_NOTICES * 2) {
            n.due(&i.to_string());
        }
        assert!(n.last.lock().len() <= MAX_NOTICES);
    }
}
