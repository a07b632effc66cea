//! Rate limits as token buckets per key: per (aggregator, peer address) on the intake, checked
//! before any signature verification so a flood costs the node a hash lookup per task; per peer
//! address on the management API, before a request is read.
//!
//! The aggregator address is the task's own claim, not yet verified: keying by it alone would let
//! anyone spend an honest aggregator's budget by naming it. Keying by (claim, peer IP) gives each
//! source its own bucket, so a spoofer exhausts only its own. The number of buckets is bounded:
//! past [`MAX_BUCKETS`], full (idle) buckets are dropped first, then every bucket not used in the
//! last second; sources beyond that share one overflow bucket per aggregator.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use avsnode_signer::messages::Address;

/// Most buckets one AVS keeps.
pub const MAX_BUCKETS: usize = 4096;
const SWEEP_EVERY: Duration = Duration::from_millis(100);

/// Token buckets of `rate` calls per second and `burst` capacity, one per key (by default
/// per (aggregator, peer address)).
#[derive(Debug)]
pub struct RateLimiter<K = (Address, Option<IpAddr>)> {
    rate: f64,
    burst: f64,
    inner: Mutex<Buckets<K>>,
}

#[derive(Debug)]
struct Buckets<K> {
    map: HashMap<K, Bucket>,
    /// When the map was last swept for idle buckets (at most every 100 ms, so a flood from
    /// many sources does not make every task pay for a sweep).
    swept: Option<Instant>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn refill(&mut self, now: Instant, rate: f64, burst: f64) {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate).min(burst);
        self.at = now;
    }
}

impl RateLimiter {
    /// Takes one token from the bucket of `aggregator` at `peer`; false when it is empty.
    pub fn allow(&self, aggregator: Address, peer: Option<IpAddr>, now: Instant) -> bool {
        self.take((aggregator, peer), (aggregator, None), now)
    }
}

impl<K: Hash + Eq + Copy> RateLimiter<K> {
    /// `rate` calls per second with bursts of up to `burst` (both at least 1).
    pub fn new(rate: f64, burst: u32) -> RateLimiter<K> {
        RateLimiter {
            rate: rate.max(f64::MIN_POSITIVE),
            burst: f64::from(burst.max(1)),
            inner: Mutex::new(Buckets {
                map: HashMap::new(),
                swept: None,
            }),
        }
    }

    /// Takes one token from the bucket of `key`; false when it is empty. Past [`MAX_BUCKETS`]
    /// keys, new keys share the bucket of `overflow`.
    pub fn take(&self, key: K, overflow: K, now: Instant) -> bool {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let Buckets {
            map: buckets,
            swept,
        } = &mut *inner;
        let mut key = key;
        if !buckets.contains_key(&key) && buckets.len() >= MAX_BUCKETS {
            let due = swept.is_none_or(|at| now.saturating_duration_since(at) >= SWEEP_EVERY);
            if due {
                *swept = Some(now);
                let (rate, burst) = (self.rate, self.burst);
                buckets.retain(|_, b| {
                    b.refill(now, rate, burst);
                    b.tokens < burst
                });
                if buckets.len() >= MAX_BUCKETS {
                    buckets.retain(|_, b| {
                        now.saturating_duration_since(b.at) < Duration::from_secs(1)
                    });
                }
            }
            if buckets.len() >= MAX_BUCKETS {
                key = overflow;
            }
        }
        let bucket = buckets.entry(key).or_insert(Bucket {
            tokens: self.burst,
            at: now,
        });
        bucket.refill(now, self.rate, self.burst);
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: Address = Address([0xaa; 20]);

    fn ip(last: u8) -> Option<IpAddr> {
        Some(IpAddr::from([10, 0, 0, last]))
    }

    #[test]
    fn a_burst_then_the_rate() {
        let limiter = RateLimiter::new(10.0, 5);
        let t0 = Instant::now();
        let allowed = (0..20).filter(|_| limiter.allow(A, ip(1), t0)).count();
        assert_eq!(allowed, 5, "the burst");
        // 10 per second: 3 more after 300 ms.
        let t1 = t0 + Duration::from_millis(300);
        let allowed = (0..20).filter(|_| limiter.allow(A, ip(1), t1)).count();
        assert_eq!(allowed, 3);
        // Never more than the burst, however long it was idle.
        let t2 = t1 + Duration::from_secs(3600);
        let allowed = (0..20).filter(|_| limiter.allow(A, ip(1), t2)).count();
        assert_eq!(allowed, 5);
    }

    #[test]
    fn a_spoofer_at_another_address_spends_only_its_own_bucket() {
        let limiter = RateLimiter::new(1.0, 3);
        let t0 = Instant::now();
        assert_eq!((0..100).filter(|_| limiter.allow(A, ip(66), t0)).count(), 3);
        assert_eq!((0..3).filter(|_| limiter.allow(A, ip(1), t0)).count(), 3);
    }

    #[test]
    fn buckets_are_bounded() {
        let limiter = RateLimiter::new(1.0, 2);
        let t0 = Instant::now();
        // Many sources, each leaving its bucket non-full, all within one second.
        for n in 0..MAX_BUCKETS as u32 {
            let peer = Some(IpAddr::from(n.to_be_bytes()));
            assert!(limiter.allow(A, peer, t0));
        }
        // Sources past the cap share the overflow bucket (2 tokens): it runs dry.
        let overflow = (0..100)
            .filter(|n| limiter.allow(A, Some(IpAddr::from([192, 168, 0, *n as u8])), t0))
            .count();
        assert_eq!(overflow, 2);
        let len = limiter
            .inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .map
            .len();
        assert_eq!(
            len,
            MAX_BUCKETS + 1,
            "the sources' buckets and one overflow bucket"
        );
        // Two seconds later the idle buckets are dropped and new sources get their own.
        let t1 = t0 + Duration::from_secs(2);
        assert!(limiter.allow(A, ip(200), t1));
        assert!(limiter.allow(A, ip(200), t1));
    }
}
