//! The node's overload circuit breaker.
//!
//! Every settled frame is a sample: on time, or late (its deadline passed before its result,
//! whether it was dropped for that or delivered late). Over a sliding window the breaker
//! watches the miss ratio:
//!
//! ```text
//! closed --miss ratio > shed--> shedding_background --miss ratio > shed--> shedding_normal
//!    ^                                |      ^                               |
//!    |                    misses <= shed/2   +--- misses > shed ---+         | misses <= shed/2
//!    |                                v                             \        v
//!    +------ misses stay <= shed/2 -- half_open <-------------------------- +
//! ```
//!
//! Shedding refuses new frames of the shed classes (counted drops, reason `shed`); Urgent and
//! Emergency are never shed. Half-open lets one in `trickle` of the shed frames through; when
//! misses stay low for `hold`, the breaker closes, otherwise it returns to the state it came
//! from. Each state lasts at least `hold`, and the window restarts on every change, so a
//! decision is always made on samples taken under the current state.
//!
//! All functions take the time as an argument, so the policy is tested without a clock.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use its_proto::Priority;

/// Breaker state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Nothing is shed.
    Closed,
    /// Background frames are shed.
    SheddingBackground,
    /// Background and Normal frames are shed.
    SheddingNormal,
    /// Recovering: a trickle of the shed classes passes.
    HalfOpen,
}

impl BreakerState {
    /// The name used in NodeStatus and breaker events.
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::SheddingBackground => "shedding_background",
            BreakerState::SheddingNormal => "shedding_normal",
            BreakerState::HalfOpen => "half_open",
        }
    }
}

/// Breaker settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BreakerConfig {
    /// Length of the sliding window.
    pub window: Duration,
    /// Fewest samples in the window before the breaker opens.
    pub min_samples: u32,
    /// Miss ratio above which the breaker sheds the next class (0..1].
    pub shed_miss_ratio: f32,
    /// Least time in a state before the next change.
    pub hold: Duration,
    /// In half-open, one in this many frames of a shed class passes.
    pub trickle: u32,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            window: Duration::from_secs(1),
            min_samples: 20,
            shed_miss_ratio: 0.2,
            hold: Duration::from_millis(500),
            trickle: 4,
        }
    }
}

const BUCKETS: u32 = 10;

/// The breaker: its state and its window of samples.
#[derive(Debug, Clone)]
pub struct Breaker {
    cfg: BreakerConfig,
    state: BreakerState,
    /// The shedding state half-open came from.
    came_from: BreakerState,
    since: Instant,
    /// (bucket start, samples, misses), oldest first.
    buckets: VecDeque<(Instant, u32, u32)>,
    trickle_count: u32,
}

impl Breaker {
    /// A closed breaker.
    pub fn new(cfg: BreakerConfig, now: Instant) -> Self {
        Breaker {
            cfg,
            state: BreakerState::Closed,
            came_from: BreakerState::SheddingBackground,
            since: now,
            buckets: VecDeque::with_capacity(BUCKETS as usize + 1),
            trickle_count: 0,
        }
    }

    /// The state.
    pub fn state(&self) -> BreakerState {
        self.state
    }

    /// The settings.
    pub fn config(&self) -> BreakerConfig {
        self.cfg
    }

    /// Changes the miss ratio that opens the breaker.
    pub fn set_shed_miss_ratio(&mut self, r: f32) {
        self.cfg.shed_miss_ratio = r;
    }

    /// Whether a new frame of class `p` may be queued.
    pub fn admit(&mut self, p: Priority) -> bool {
        let shed = match self.state {
            BreakerState::Closed => false,
            BreakerState::SheddingBackground => p == Priority::Background,
            BreakerState::SheddingNormal => matches!(p, Priority::Background | Priority::Normal),
            BreakerState::HalfOpen => {
                if matches!(p, Priority::Background | Priority::Normal) {
                    self.trickle_count = self.trickle_count.wrapping_add(1);
                    !self.trickle_count.is_multiple_of(self.cfg.trickle.max(1))
                } else {
                    false
                }
            }
        };
        !shed
    }

    /// Whether class `p` is shed outright in the current state (queued frames of it can go).
    pub fn sheds(&self, p: Priority) -> bool {
        match self.state {
            BreakerState::SheddingBackground => p == Priority::Background,
            BreakerState::SheddingNormal => matches!(p, Priority::Background | Priority::Normal),
            BreakerState::Closed | BreakerState::HalfOpen => false,
        }
    }

    /// Records a settled frame: `missed` when its deadline passed before its result.
    pub fn record(&mut self, now: Instant, missed: bool) {
        let width = self.cfg.window / BUCKETS;
        match self.buckets.back_mut() {
            Some((start, n, m)) if now.saturating_duration_since(*start) < width => {
                *n += 1;
                *m += missed as u32;
            }
            _ => {
                self.buckets.push_back((now, 1, missed as u32));
                while self.buckets.len() > BUCKETS as usize {
                    self.buckets.pop_front();
                }
            }
        }
    }

    /// Samples and misses within the window ending at `now`.
    pub fn window(&self, now: Instant) -> (u32, u32) {
        self.buckets
            .iter()
            .filter(|(start, _, _)| now.saturating_duration_since(*start) < self.cfg.window)
            .fold((0, 0), |(n, m), (_, bn, bm)| (n + bn, m + bm))
    }

    /// Re-evaluates the state at `now`; returns the new state when it changed.
    pub fn evaluate(&mut self, now: Instant) -> Option<BreakerState> {
        if now.saturating_duration_since(self.since) < self.cfg.hold {
            return None;
        }
        let (n, m) = self.window(now);
        let ratio = if n == 0 { 0.0 } else { m as f32 / n as f32 };
        let high = n >= self.cfg.min_samples && ratio > self.cfg.shed_miss_ratio;
        let low = ratio <= self.cfg.shed_miss_ratio / 2.0;
        let next = match self.state {
            BreakerState::Closed if high => BreakerState::SheddingBackground,
            BreakerState::SheddingBackground if high => BreakerState::SheddingNormal,
            BreakerState::SheddingBackground | BreakerState::SheddingNormal if low => {
                self.came_from = self.state;
                BreakerState::HalfOpen
            }
            BreakerState::HalfOpen if ratio > self.cfg.shed_miss_ratio => self.came_from,
            BreakerState::HalfOpen if low => BreakerState::Closed,
            _ => return None,
        };
        self.state = next;
        self.since = now;
        self.buckets.clear();
        Some(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn feed(b: &mut Breaker, t: Instant, n: u32, missed: u32) {
        for i in 0..n {
            b.record(t, i < missed);
        }
    }

    #[test]
    fn sustained_misses_shed_background_then_normal_never_urgent() {
        let t0 = Instant::now();
        let mut b = Breaker::new(BreakerConfig::default(), t0);
        feed(&mut b, t0 + 100 * MS, 10, 10);
        assert_eq!(b.evaluate(t0 + 600 * MS), None, "too few samples");
        feed(&mut b, t0 + 600 * MS, 30, 20);
        assert_eq!(
            b.evaluate(t0 + 600 * MS),
            Some(BreakerState::SheddingBackground)
        );
        assert!(!b.admit(Priority::Background));
        assert!(b.admit(Priority::Normal));
        feed(&mut b, t0 + 700 * MS, 30, 20);
        assert_eq!(b.evaluate(t0 + 800 * MS), None, "held for at least 500 ms");
        assert_eq!(
            b.evaluate(t0 + 1100 * MS),
            Some(BreakerState::SheddingNormal)
        );
        assert!(!b.admit(Priority::Normal) && !b.admit(Priority::Background));
        assert!(b.admit(Priority::Urgent) && b.admit(Priority::Emergency));
    }

    #[test]
    fn recovery_goes_through_half_open_with_a_trickle() {
        let t0 = Instant::now();
        let mut b = Breaker::new(BreakerConfig::default(), t0);
        feed(&mut b, t0 + 500 * MS, 40, 40);
        b.evaluate(t0 + 500 * MS);
        assert_eq!(b.state(), BreakerState::SheddingBackground);
        feed(&mut b, t0 + 900 * MS, 40, 0);
        assert_eq!(b.evaluate(t0 + 1000 * MS), Some(BreakerState::HalfOpen));
        let passed = (0..100).filter(|_| b.admit(Priority::Background)).count();
        assert_eq!(passed, 25, "one in four");
        // Misses come back: return to shedding.
        feed(&mut b, t0 + 1200 * MS, 10, 5);
        assert_eq!(
            b.evaluate(t0 + 1500 * MS),
            Some(BreakerState::SheddingBackground)
        );
        feed(&mut b, t0 + 1800 * MS, 40, 0);
        assert_eq!(b.evaluate(t0 + 2000 * MS), Some(BreakerState::HalfOpen));
        feed(&mut b, t0 + 2200 * MS, 40, 1);
        assert_eq!(b.evaluate(t0 + 2500 * MS), Some(BreakerState::Closed));
        assert!(b.admit(Priority::Background));
    }

    #[test]
    fn old_samples_leave_the_window() {
        let t0 = Instant::now();
        let mut b = Breaker::new(BreakerConfig::default(), t0);
        feed(&mut b, t0, 50, 50);
        assert_eq!(b.window(t0 + 500 * MS), (50, 50));
        assert_eq!(b.window(t0 + 1500 * MS), (0, 0));
        assert_eq!(b.evaluate(t0 + 1500 * MS), None);
    }
}
