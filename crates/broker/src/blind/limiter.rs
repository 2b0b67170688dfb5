//! Per-principal token buckets for modexp work (BLIND.md §6b, §9 rule 3):
//! each transform is milliseconds of CPU, so an unbounded caller could
//! starve every other tenant.

use std::collections::HashMap;

/// Principals tracked at most; beyond this, full buckets are forgotten.
const MAX_PRINCIPALS: usize = 100_000;

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    last_ms: i64,
}

#[derive(Debug)]
pub struct RateLimiter {
    rate_per_ms: f64,
    burst: f64,
    buckets: HashMap<String, Bucket>,
}

impl RateLimiter {
    pub fn new(per_second: f64, burst: u32) -> Self {
        RateLimiter {
            rate_per_ms: per_second / 1000.0,
            burst: f64::from(burst),
            buckets: HashMap::new(),
        }
    }

    /// Take one token for `principal`, or say how many ms until one is due.
    pub fn acquire(&mut self, principal: &str, now_ms: i64) -> Result<(), i32> {
        if self.buckets.len() >= MAX_PRINCIPALS && !self.buckets.contains_key(principal) {
            let (rate, burst) = (self.rate_per_ms, self.burst);
            self.buckets
                .retain(|_, b| b.tokens + (now_ms - b.last_ms).max(0) as f64 * rate < burst);
        }
        let burst = self.burst;
        let b = self.buckets.entry(principal.to_owned()).or_insert(Bucket {
            tokens: burst,
            last_ms: now_ms,
        });
        let elapsed = (now_ms - b.last_ms).max(0) as f64;
        b.tokens = (b.tokens + elapsed * self.rate_per_ms).min(burst);
        b.last_ms = now_ms;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            let wait = ((1.0 - b.tokens) / self.rate_per_ms).ceil();
            Err(wait.min(f64::from(i32::MAX)) as i32)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_refill_per_principal() {
        let mut l = RateLimiter::new(10.0, 2);
        assert!(l.acquire("a", 0).is_ok());
        assert!(l.acquire("a", 0).is_ok());
        assert_eq!(l.acquire("a", 0), Err(100));
        assert!(l.acquire("b", 0).is_ok(), "buckets are per principal");
        assert!(l.acquire("a", 100).is_ok());
        assert!(l.acquire("a", 100).is_err());
    }
}
