//! Per-camera rate limit of the frame intake: a token bucket per camera id.
//!
//! Each camera's bucket holds at most `burst` frames of credit and gains `fps` frames of credit
//! per second; a frame takes one frame of credit or, when there is none, is refused (the intake
//! drops it as `rate_limited`). A camera never seen starts with a full bucket.
//!
//! Credit is integer arithmetic, exact at any rate: one frame is [`UNITS_PER_FRAME`] units and
//! a bucket gains `fps` units per nanosecond.
//!
//! Memory is bounded under any stream of camera ids. A bucket left alone for `burst / fps`
//! seconds is full again, the state of a camera never seen, so it is forgotten without changing
//! any later decision. At most `max_cameras` buckets are kept: a camera new to a full table
//! evicts the one seen least recently, which then starts full when it comes back (it may be
//! admitted more, never less). A hostile stream of random ids therefore costs at most
//! `max_cameras` buckets, and a camera sending steadily stays among the most recently seen.
//! The clock is an argument ([`CameraRateLimiter::admit`]), so tests drive it.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

/// Credit units per frame: a bucket gains `fps` units per nanosecond.
pub const UNITS_PER_FRAME: u64 = 1_000_000_000;

/// Buckets the node's intake keeps at most (cameras seen within the last `burst / fps` s).
pub const MAX_TRACKED_CAMERAS: usize = 10_000;

/// The limit applied to each camera.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CameraRate {
    /// Frames per second a camera's bucket refills at (at least 1).
    pub fps: u32,
    /// Frames a full bucket holds: what a camera may send at once (at least 1).
    pub burst: u32,
    /// Most buckets kept (at least 1); see the module documentation.
    pub max_cameras: usize,
}

impl CameraRate {
    /// `fps` and `burst` with the node's table bound, [`MAX_TRACKED_CAMERAS`]; `None` when
    /// `fps` is 0 (no limit).
    pub fn per_second(fps: u32, burst: u32) -> Option<CameraRate> {
        (fps > 0).then_some(CameraRate {
            fps,
            burst: burst.max(1),
            max_cameras: MAX_TRACKED_CAMERAS,
        })
    }
}

#[derive(Debug)]
struct Bucket {
    /// Credit at `last`, units.
    credit: u64,
    last: Instant,
    /// Key of this camera in `CameraRateLimiter::by_recency`.
    touch: u64,
}

/// Token buckets of every camera seen recently. Not shared: the intake task owns it.
#[derive(Debug)]
pub struct CameraRateLimiter {
    rate: CameraRate,
    capacity: u64,
    /// Time an empty bucket takes to fill: a bucket untouched this long is full.
    refill: Duration,
    buckets: HashMap<String, Bucket>,
    /// Camera ids by their last touch, oldest first; touches are numbered in time order.
    by_recency: BTreeMap<u64, String>,
    next_touch: u64,
}

impl CameraRateLimiter {
    /// An empty table applying `rate` to each camera.
    pub fn new(rate: CameraRate) -> Self {
        let rate = CameraRate {
            fps: rate.fps.max(1),
            burst: rate.burst.max(1),
            max_cameras: rate.max_cameras.max(1),
        };
        let capacity = u64::from(rate.burst) * UNITS_PER_FRAME;
        CameraRateLimiter {
            rate,
            capacity,
            refill: Duration::from_nanos(capacity.div_ceil(u64::from(rate.fps))),
            buckets: HashMap::new(),
            by_recency: BTreeMap::new(),
            next_touch: 0,
        }
    }

    /// The limit applied.
    pub fn rate(&self) -> CameraRate {
        self.rate
    }

    /// Buckets held now.
    pub fn tracked(&self) -> usize {
        self.buckets.len()
    }

    /// Whether a frame of `camera` arriving at `now` is within its limit; takes its credit
    /// when it is. `now` must not go backwards between calls (an earlier `now` adds no credit).
    pub fn admit(&mut self, camera: &str, now: Instant) -> bool {
        self.forget_idle(now);
        let touch = self.next_touch;
        self.next_touch += 1;
        let bucket = match self.buckets.get_mut(camera) {
            Some(b) => {
                let elapsed = u64::try_from(now.saturating_duration_since(b.last).as_nanos())
                    .unwrap_or(u64::MAX);
                b.credit = b
                    .credit
                    .saturating_add(elapsed.saturating_mul(u64::from(self.rate.fps)))
                    .min(self.capacity);
                b.last = b.last.max(now);
                let id = self
                    .by_recency
                    .remove(&b.touch)
                    .expect("every bucket is in the recency index");
                self.by_recency.insert(touch, id);
                b.touch = touch;
                b
            }
            None => {
                while self.buckets.len() >= self.rate.max_cameras {
                    let Some((_, oldest)) = self.by_recency.pop_first() else {
                        break;
                    };
                    self.buckets.remove(&oldest);
                }
                self.by_recency.insert(touch, camera.to_owned());
                self.buckets.entry(camera.to_owned()).or_insert(Bucket {
                    credit: self.capacity,
                    last: now,
                    touch,
                })
            }
        };
        if bucket.credit >= UNITS_PER_FRAME {
            bucket.credit -= UNITS_PER_FRAME;
            true
        } else {
            false
        }
    }

    /// Forgets the buckets untouched for `refill` (full again), oldest first.
    fn forget_idle(&mut self, now: Instant) {
        while let Some((&touch, id)) = self.by_recency.first_key_value() {
            let idle = self
                .buckets
                .get(id)
                .is_none_or(|b| now.saturating_duration_since(b.last) >= self.refill);
            if !idle {
                break;
            }
            let id = self.by_recency.remove(&touch).expect("first key");
            self.buckets.remove(&id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(fps: u32, burst: u32, max_cameras: usize) -> CameraRateLimiter {
        CameraRateLimiter::new(CameraRate {
            fps,
            burst,
            max_cameras,
        })
    }

    /// How many of `n` frames of `camera` at `now` are admitted.
    fn admitted(l: &mut CameraRateLimiter, camera: &str, n: u32, now: Instant) -> u32 {
        (0..n).filter(|_| l.admit(camera, now)).count() as u32
    }

    #[test]
    fn a_new_camera_gets_its_burst_then_exactly_the_rate() {
        let t0 = Instant::now();
        let mut l = limiter(60, 30, 100);
        assert_eq!(
            admitted(&mut l, "a", 100, t0),
            30,
            "the burst, at one instant"
        );
        // One frame per 1/60 s (16 666 667 ns, rounded up), and not one nanosecond earlier.
        let frame = Duration::from_nanos(UNITS_PER_FRAME.div_ceil(60));
        assert!(!l.admit("a", t0 + frame - Duration::from_nanos(1)));
        let mut now = t0 + frame;
        let mut n = 0;
        for _ in 0..600 {
            n += admitted(&mut l, "a", 3, now);
            now += frame;
        }
        assert_eq!(
            n, 600,
            "one frame per 1/60 s for 10 s, however many are offered"
        );
        // A frame every 10 ms offered for 1 s: 60 admitted (what accrued, nothing more).
        let start = now - frame;
        let mut n = 0;
        for i in 1..=100u32 {
            n += admitted(&mut l, "a", 1, start + Duration::from_millis(10) * i);
        }
        assert_eq!(n, 60);
    }

    #[test]
    fn credit_refills_at_the_rate_up_to_the_burst() {
        let t0 = Instant::now();
        let mut l = limiter(10, 5, 100);
        assert_eq!(admitted(&mut l, "a", 5, t0), 5);
        assert_eq!(admitted(&mut l, "a", 1, t0), 0);
        // 250 ms at 10 fps: 2.5 frames of credit, 2 admitted, the half frame kept.
        assert_eq!(
            admitted(&mut l, "a", 10, t0 + Duration::from_millis(250)),
            2
        );
        assert_eq!(
            admitted(&mut l, "a", 10, t0 + Duration::from_millis(300)),
            1
        );
        // A long pause refills to the burst, never beyond it.
        assert_eq!(admitted(&mut l, "a", 50, t0 + Duration::from_secs(60)), 5);
        // Cameras do not share credit.
        assert_eq!(admitted(&mut l, "b", 50, t0 + Duration::from_secs(60)), 5);
    }

    #[test]
    fn idle_buckets_are_forgotten_once_full_again() {
        let t0 = Instant::now();
        let mut l = limiter(10, 5, 100);
        for cam in ["a", "b", "c"] {
            assert_eq!(admitted(&mut l, cam, 10, t0), 5);
        }
        assert_eq!(l.tracked(), 3);
        // 499 ms: not yet full (4.99 frames), kept.
        assert_eq!(admitted(&mut l, "d", 1, t0 + Duration::from_millis(499)), 1);
        assert_eq!(l.tracked(), 4);
        // 500 ms: a, b and c are full again and forgotten; d, touched at 499 ms, stays.
        let t1 = t0 + Duration::from_millis(500);
        assert_eq!(admitted(&mut l, "e", 1, t1), 1);
        assert_eq!(l.tracked(), 2, "d and e");
        // Forgetting changed nothing: a comes back to a full bucket, as it would have had.
        assert_eq!(admitted(&mut l, "a", 10, t1), 5);
    }

    #[test]
    fn random_camera_ids_never_grow_the_table_past_its_cap() {
        let t0 = Instant::now();
        let mut l = limiter(10, 5, 64);
        // A steady camera, already held to its rate.
        assert_eq!(admitted(&mut l, "steady", 10, t0), 5);
        let mut steady = 0;
        // 100 000 frames from 100 000 ids within 200 ms (none idle long enough to be forgotten),
        // the steady camera sending every 50 of them.
        for i in 0..100_000u64 {
            let now = t0 + Duration::from_nanos(i * 2_000);
            assert!(l.admit(&format!("random-{i}"), now), "a new id starts full");
            assert!(l.tracked() <= 64, "{} buckets", l.tracked());
            assert_eq!(l.by_recency.len(), l.tracked());
            if i % 50 == 0 && l.admit("steady", now) {
                steady += 1;
            }
        }
        assert_eq!(l.tracked(), 64);
        // The steady camera stayed among the most recently seen, so its bucket was never reset:
        // just under 200 ms at 10 fps is one frame of credit.
        assert_eq!(
            steady, 1,
            "the steady camera was held to its rate throughout"
        );
        assert!(l.buckets.contains_key("steady"));
        // Once the flood stops, its buckets are forgotten as they fill.
        let later = t0 + Duration::from_secs(2);
        assert!(l.admit("next", later));
        assert_eq!(l.tracked(), 1);
    }
}
