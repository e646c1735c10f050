//! Deadline-aware adaptive batching.
//!
//! The decision when to close a batch, given what is queued:
//! - at once when draining, when an Emergency frame waits, or when the largest batch is full;
//! - otherwise the batch waits for the next preferred size at most `timeout`, where `timeout` is
//!   the expected time for that many more frames to arrive at the measured arrival rate, clamped
//!   to `[min_timeout, max_timeout]`, counted from the oldest queued frame's arrival;
//! - and never later than the earliest deadline minus the predicted cost of the batch, so the
//!   earliest deadline in the batch is still met.
//!
//! All functions take the time as an argument, so the policy is tested without a clock.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// What to do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Dispatch a batch of this many frames now.
    Now(usize),
    /// Check again at this instant (or on the next arrival).
    WaitUntil(Instant),
    /// Nothing queued.
    Idle,
}

/// What the batcher needs to know about the queues.
#[derive(Debug, Clone, Copy)]
pub struct QueueView {
    /// Frames queued.
    pub queued: usize,
    /// Arrival of the oldest queued frame.
    pub oldest_arrival: Instant,
    /// Earliest deadline of the queued frames.
    pub earliest_deadline: Instant,
    /// Whether an Emergency frame is queued.
    pub has_emergency: bool,
}

/// Measured cost of a batch, per batch-size bucket (the smallest preferred size that holds it),
/// as an exponentially weighted moving average.
#[derive(Debug, Clone, Default)]
pub struct CostModel {
    ewma_ns: BTreeMap<usize, f64>,
}

/// Assumed cost of a batch before anything was measured.
const DEFAULT_COST: Duration = Duration::from_millis(5);

impl CostModel {
    /// Records the service time of a batch in `bucket`.
    pub fn observe(&mut self, bucket: usize, service: Duration) {
        let ns = service.as_nanos() as f64;
        self.ewma_ns
            .entry(bucket)
            .and_modify(|e| *e = 0.8 * *e + 0.2 * ns)
            .or_insert(ns);
    }

    /// Predicted service time of a batch in `bucket`: measured, else scaled linearly from the
    /// nearest measured bucket, else a default.
    pub fn predict(&self, bucket: usize) -> Duration {
        if let Some(ns) = self.ewma_ns.get(&bucket) {
            return Duration::from_nanos(*ns as u64);
        }
        let nearest = self
            .ewma_ns
            .iter()
            .min_by_key(|(b, _)| (**b as i64 - bucket as i64).unsigned_abs());
        match nearest {
            Some((b, ns)) => Duration::from_nanos((ns * bucket as f64 / *b as f64) as u64),
            None => DEFAULT_COST,
        }
    }
}

/// The batching policy and its arrival-rate estimate.
#[derive(Debug, Clone)]
pub struct Batcher {
    sizes: Vec<usize>,
    min_timeout: Duration,
    max_timeout: Duration,
    last_arrival: Option<Instant>,
    /// EWMA of the time between arrivals, seconds.
    interarrival_s: Option<f64>,
}

impl Batcher {
    /// `sizes` ascending and non-empty (validated by config).
    pub fn new(sizes: Vec<usize>, min_timeout: Duration, max_timeout: Duration) -> Self {
        Batcher {
            sizes,
            min_timeout,
            max_timeout,
            last_arrival: None,
            interarrival_s: None,
        }
    }

    /// Changes the preferred sizes and the wait bounds; the arrival-rate estimate stays.
    pub fn reconfigure(&mut self, sizes: Vec<usize>, min_timeout: Duration, max_timeout: Duration) {
        self.sizes = sizes;
        self.min_timeout = min_timeout;
        self.max_timeout = max_timeout;
    }

    /// The largest preferred batch size.
    pub fn max_batch(&self) -> usize {
        *self.sizes.last().expect("non-empty")
    }

    /// The bucket of a batch of `n`: the smallest preferred size that holds it.
    pub fn bucket(&self, n: usize) -> usize {
        self.sizes
            .iter()
            .copied()
            .find(|s| *s >= n)
            .unwrap_or(self.max_batch())
    }

    /// Records an arrival for the rate estimate.
    pub fn on_arrival(&mut self, now: Instant) {
        if let Some(last) = self.last_arrival {
            let dt = now.saturating_duration_since(last).as_secs_f64();
            self.interarrival_s = Some(match self.interarrival_s {
                Some(e) => 0.9 * e + 0.1 * dt,
                None => dt,
            });
        }
        self.last_arrival = Some(now);
    }

    /// Frames per second, as measured.
    pub fn arrival_rate(&self) -> Option<f64> {
        self.interarrival_s.filter(|s| *s > 0.0).map(|s| 1.0 / s)
    }

    /// How long a batch may wait to fill when `queued` frames are waiting.
    pub fn timeout(&self, queued: usize) -> Duration {
        let next = self
            .sizes
            .iter()
            .copied()
            .find(|s| *s > queued)
            .unwrap_or(self.max_batch());
        let missing = next.saturating_sub(queued) as f64;
        let fill = match self.arrival_rate() {
            Some(rate) => Duration::from_secs_f64((missing / rate).min(3600.0)),
            None => self.max_timeout,
        };
        fill.clamp(self.min_timeout, self.max_timeout)
    }

    /// Decides for the queues as they are at `now`, with `cost` the predicted cost model of the
    /// worker that would run the batch.
    pub fn decide(
        &self,
        now: Instant,
        q: Option<QueueView>,
        cost: &CostModel,
        draining: bool,
    ) -> Decision {
        let Some(q) = q.filter(|q| q.queued > 0) else {
            return Decision::Idle;
        };
        let max = self.max_batch();
        let n = q.queued.min(max);
        if draining || q.has_emergency || q.queued >= max {
            return Decision::Now(n);
        }
        let by_timeout = q.oldest_arrival + self.timeout(q.queued);
        let next = self.bucket(q.queued + 1);
        let by_deadline = q
            .earliest_deadline
            .checked_sub(cost.predict(next))
            .unwrap_or(now);
        let at = by_timeout.min(by_deadline);
        if at <= now {
            Decision::Now(n)
        } else {
            Decision::WaitUntil(at)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn batcher() -> Batcher {
        Batcher::new(vec![1, 4, 8, 16, 32], 2 * MS, 50 * MS)
    }

    fn view(t0: Instant, queued: usize, deadline_ms: u64, emergency: bool) -> Option<QueueView> {
        Some(QueueView {
            queued,
            oldest_arrival: t0,
            earliest_deadline: t0 + Duration::from_millis(deadline_ms),
            has_emergency: emergency,
        })
    }

    #[test]
    fn emergency_and_full_batches_go_at_once() {
        let b = batcher();
        let t0 = Instant::now();
        let c = CostModel::default();
        assert_eq!(
            b.decide(t0, view(t0, 1, 1000, true), &c, false),
            Decision::Now(1)
        );
        assert_eq!(
            b.decide(t0, view(t0, 40, 1000, false), &c, false),
            Decision::Now(32)
        );
        assert_eq!(
            b.decide(t0, view(t0, 3, 1000, false), &c, true),
            Decision::Now(3),
            "draining"
        );
        assert_eq!(b.decide(t0, None, &c, false), Decision::Idle);
    }

    #[test]
    fn the_timeout_follows_the_arrival_rate_within_bounds() {
        let mut b = batcher();
        assert_eq!(
            b.timeout(1),
            50 * MS,
            "no rate measured yet: the longest wait"
        );
        let t0 = Instant::now();
        // 1000 frames/s: 3 more frames to reach 4 take 3 ms.
        for i in 0..50 {
            b.on_arrival(t0 + Duration::from_millis(i));
        }
        let t = b.timeout(1);
        assert!(t >= 2 * MS && t <= 4 * MS, "{t:?}");
        // 10 frames/s: the wait is capped at 50 ms.
        let mut slow = batcher();
        for i in 0..10 {
            slow.on_arrival(t0 + Duration::from_millis(100 * i));
        }
        assert_eq!(slow.timeout(1), 50 * MS);
        // 1 000 000 frames/s: at least the 2 ms floor.
        let mut fast = batcher();
        for i in 0..10u32 {
            fast.on_arrival(t0 + Duration::from_micros(i as u64));
        }
        assert_eq!(fast.timeout(1), 2 * MS);
    }

    #[test]
    fn a_batch_closes_early_enough_to_meet_the_earliest_deadline() {
        let b = batcher();
        let t0 = Instant::now();
        let mut cost = CostModel::default();
        cost.observe(4, 30 * MS);
        // Deadline in 40 ms, a batch of 4 costs 30 ms: dispatch no later than t0 + 10 ms,
        // although the timeout (no rate yet) would allow 50 ms.
        assert_eq!(
            b.decide(t0, view(t0, 2, 40, false), &cost, false),
            Decision::WaitUntil(t0 + 10 * MS)
        );
        assert_eq!(
            b.decide(t0 + 10 * MS, view(t0, 2, 40, false), &cost, false),
            Decision::Now(2)
        );
    }

    #[test]
    fn costs_are_learned_per_bucket_and_extrapolated() {
        let mut c = CostModel::default();
        assert_eq!(c.predict(8), DEFAULT_COST);
        c.observe(4, 8 * MS);
        assert_eq!(c.predict(4), 8 * MS);
        assert_eq!(c.predict(8), 16 * MS, "scaled from the nearest bucket");
        c.observe(4, 18 * MS);
        assert_eq!(c.predict(4), 10 * MS, "EWMA 0.8 * 8 + 0.2 * 18");
        let b = batcher();
        assert_eq!(
            (b.bucket(1), b.bucket(3), b.bucket(9), b.bucket(99)),
            (1, 4, 16, 32)
        );
    }
}
