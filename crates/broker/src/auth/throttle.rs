//! The failed-login backoff. Each failure's answer waits longer the more
//! failures came before it, counted two ways:
//!
//! * per (address, user): doubles with every failure; only that user's own
//!   success from that address resets it, so logging in as someone else in
//!   between does not help guess a password;
//! * per address: doubles with every second failure, whatever the user, so
//!   trying many users from one address backs off too. Successes do not
//!   reset it; it is forgotten after five quiet minutes.
//!
//! Only failures wait; a successful login is never delayed. Memory is
//! bounded: user names are kept as keyed hashes, and when a table is full,
//! stale entries go, and if none are stale, all do.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

const ENTRIES: usize = 10_000;
const FORGET: Duration = Duration::from_secs(300);
const FIRST_DELAY: Duration = Duration::from_millis(100);

#[derive(Debug, Clone, Copy)]
struct Count {
    failures: u32,
    last: Instant,
}

/// Failures keyed by `K`, bounded in entries.
#[derive(Debug)]
struct Counts<K>(HashMap<K, Count>);

impl<K: std::hash::Hash + Eq> Counts<K> {
    fn record(&mut self, key: K, now: Instant) -> u32 {
        if self.0.len() >= ENTRIES && !self.0.contains_key(&key) {
            self.0.retain(|_, c| now.duration_since(c.last) < FORGET);
            if self.0.len() >= ENTRIES {
                self.0.clear();
            }
        }
        let c = self.0.entry(key).or_insert(Count {
            failures: 0,
            last: now,
        });
        if now.duration_since(c.last) >= FORGET {
            c.failures = 0;
        }
        c.failures = c.failures.saturating_add(1);
        c.last = now;
        c.failures
    }
}

#[derive(Debug)]
pub struct FailureThrottle {
    max_delay: Duration,
    /// Keys user names so the table never holds attacker-chosen strings.
    names: RandomState,
    per_user: Mutex<Counts<(IpAddr, u64)>>,
    per_address: Mutex<Counts<IpAddr>>,
}

impl FailureThrottle {
    pub fn new(max_delay: Duration) -> FailureThrottle {
        FailureThrottle {
            max_delay,
            names: RandomState::new(),
            per_user: Mutex::new(Counts(HashMap::new())),
            per_address: Mutex::new(Counts(HashMap::new())),
        }
    }

    /// Records a failed login from `ip` (for `user`, when the client got as
    /// far as naming one) and returns how long to delay the answer.
    pub fn failed(&self, ip: IpAddr, user: Option<&str>, now: Instant) -> Duration {
        let ip = ip.to_canonical();
        let by_address = self.per_address.lock().record(ip, now);
        let by_user = user.map_or(0, |u| self.per_user.lock().record((ip, self.key(u)), now));
        // Doublings so far: one per failure of this user, one per two of the address.
        let doublings = by_user.max(by_address.div_ceil(2)).saturating_sub(1);
        (FIRST_DELAY * (1u32 << doublings.min(16))).min(self.max_delay)
    }

    /// `user` logged in from `ip`: its own failures from there are forgiven.
    pub fn succeeded(&self, ip: IpAddr, user: &str) {
        let key = (ip.to_canonical(), self.key(user));
        self.per_user.lock().0.remove(&key);
    }

    /// Entries held (both tables).
    pub fn tracked(&self) -> usize {
        self.per_user.lock().0.len() + self.per_address.lock().0.len()
    }

    fn key(&self, user: &str) -> u64 {
        self.names.hash_one(user)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(d: Duration) -> u128 {
        d.as_millis()
    }

    #[test]
    fn one_user_doubles_per_failure_up_to_the_cap() {
        let t = FailureThrottle::new(Duration::from_millis(500));
        let ip: IpAddr = [10, 0, 0, 1].into();
        let now = Instant::now();
        let delays: Vec<u128> = (0..5).map(|_| ms(t.failed(ip, Some("bob"), now))).collect();
        assert_eq!(delays, [100, 200, 400, 500, 500]);
        t.succeeded(ip, "bob");
        // bob's own count is gone; the address still remembers five failures.
        assert_eq!(ms(t.failed(ip, Some("bob"), now)), 400);
    }

    #[test]
    fn another_users_success_does_not_reset_a_users_failures() {
        let t = FailureThrottle::new(Duration::from_secs(5));
        let ip: IpAddr = [10, 0, 0, 1].into();
        let now = Instant::now();
        let mut delays = Vec::new();
        for _ in 0..14 {
            delays.push(ms(t.failed(ip, Some("bob"), now)));
            t.succeeded(ip, "alice");
        }
        assert_eq!(&delays[..6], [100, 200, 400, 800, 1600, 3200]);
        assert_eq!(delays[13], 5000, "fourteen failures reach the cap");
    }

    #[test]
    fn many_users_from_one_address_back_off_by_address() {
        let t = FailureThrottle::new(Duration::from_secs(5));
        let ip: IpAddr = [10, 0, 0, 1].into();
        let now = Instant::now();
        let delays: Vec<u128> = (0..8)
            .map(|i| ms(t.failed(ip, Some(&format!("user{i}")), now)))
            .collect();
        assert_eq!(delays, [100, 100, 200, 200, 400, 400, 800, 800]);
        // Another address is unaffected; five quiet minutes forget it all.
        assert_eq!(ms(t.failed([10, 0, 0, 2].into(), Some("user0"), now)), 100);
        let later = now + FORGET;
        assert_eq!(ms(t.failed(ip, Some("user0"), later)), 100);
    }

    #[test]
    fn tables_stay_bounded() {
        let t = FailureThrottle::new(Duration::from_millis(500));
        let now = Instant::now();
        for i in 0..(ENTRIES as u32 + 50) {
            t.failed(IpAddr::from(i.to_be_bytes()), Some("u"), now);
            t.failed([10, 0, 0, 1].into(), Some(&i.to_string()), now);
        }
        assert!(t.tracked() <= 2 * ENTRIES);
    }
}
