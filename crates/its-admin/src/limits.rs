//! Rate limit of the mutating endpoints: a token bucket per client address.
//!
//! Reads are not limited (they only read the view this process keeps). Every request that
//! changes something (POST, PUT, PATCH, DELETE on `/api/v1`) takes one token from its client
//! address's bucket after its role was checked; an empty bucket is a 429 problem with
//! `Retry-After`. The policy is a pure function of the time given, tested without a clock.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Mutating requests a client address may send at once.
pub const MUTATION_BURST: f64 = 60.0;
/// Mutating requests per second a client address may send in the long run.
pub const MUTATIONS_PER_SEC: f64 = 10.0;
/// Addresses tracked at most; beyond it, buckets that are full again are forgotten, and if
/// none is, the oldest one.
const MAX_CLIENTS: usize = 4096;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Token buckets per client address.
#[derive(Debug)]
pub(crate) struct RateLimiter {
    burst: f64,
    per_sec: f64,
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
}

impl RateLimiter {
    pub(crate) fn new(burst: f64, per_sec: f64) -> Self {
        RateLimiter {
            burst,
            per_sec,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    fn refill(&self, b: Bucket, now: Instant) -> Bucket {
        let dt = now.saturating_duration_since(b.at).as_secs_f64();
        Bucket {
            tokens: (b.tokens + dt * self.per_sec).min(self.burst),
            at: now,
        }
    }

    /// Takes one token for `client` at `now`; when none is left, how long until one is.
    pub(crate) fn admit(&self, client: IpAddr, now: Instant) -> Result<(), Duration> {
        let mut map = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if !map.contains_key(&client) && map.len() >= MAX_CLIENTS {
            let full: Vec<IpAddr> = map
                .iter()
                .filter(|(_, b)| self.refill(**b, now).tokens >= self.burst)
                .map(|(ip, _)| *ip)
                .collect();
            for ip in &full {
                map.remove(ip);
            }
            if map.len() >= MAX_CLIENTS
                && let Some(oldest) = map.iter().min_by_key(|(_, b)| b.at).map(|(ip, _)| *ip)
            {
                map.remove(&oldest);
            }
        }
        let b = map.entry(client).or_insert(Bucket {
            tokens: self.burst,
            at: now,
        });
        *b = self.refill(*b, now);
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - b.tokens) / self.per_sec))
        }
    }

    #[cfg(test)]
    fn clients(&self) -> usize {
        self.buckets.lock().unwrap().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(n: u32) -> IpAddr {
        IpAddr::from(n.to_be_bytes())
    }

    #[test]
    fn a_burst_then_the_sustained_rate() {
        let l = RateLimiter::new(5.0, 2.0);
        let t0 = Instant::now();
        for _ in 0..5 {
            assert!(l.admit(ip(1), t0).is_ok());
        }
        let wait = l.admit(ip(1), t0).unwrap_err();
        assert_eq!(wait, Duration::from_millis(500));
        // Another client has its own bucket.
        assert!(l.admit(ip(2), t0).is_ok());
        // Half a second later exactly one more is allowed.
        let t1 = t0 + Duration::from_millis(500);
        assert!(l.admit(ip(1), t1).is_ok());
        assert!(l.admit(ip(1), t1).is_err());
        // A long pause refills to the burst, never beyond.
        let t2 = t1 + Duration::from_secs(60);
        for _ in 0..5 {
            assert!(l.admit(ip(1), t2).is_ok());
        }
        assert!(l.admit(ip(1), t2).is_err());
    }

    #[test]
    fn the_table_of_clients_is_bounded() {
        // So slow a refill that no bucket is full again: the oldest ones are forgotten.
        let l = RateLimiter::new(2.0, 1e-3);
        let t0 = Instant::now();
        let at = |n: u32| t0 + Duration::from_micros(n as u64);
        let busy = ip(u32::MAX);
        l.admit(busy, at(0)).unwrap();
        l.admit(busy, at(0)).unwrap();
        assert!(l.admit(busy, at(0)).is_err());
        for n in 1..(MAX_CLIENTS as u32 + 100) {
            l.admit(ip(n), at(n)).unwrap();
            // The busy client keeps its bucket while it keeps trying.
            assert!(l.admit(busy, at(n)).is_err(), "client {n}");
        }
        assert!(l.clients() <= MAX_CLIENTS);
        let end = at(MAX_CLIENTS as u32 + 100);
        // The newest client kept its half-spent bucket ...
        let newest = ip(MAX_CLIENTS as u32 + 99);
        assert!(l.admit(newest, end).is_ok());
        assert!(l.admit(newest, end).is_err());
        // ... the oldest was forgotten and comes back with a full one.
        assert!(l.admit(ip(1), end).is_ok());
        assert!(l.admit(ip(1), end).is_ok());
    }
}
