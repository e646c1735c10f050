//! Restart policy of one camera: exponential backoff with jitter, and quarantine for a camera
//! that keeps failing. Pure: every decision takes the time it is given, so it is tested
//! without a clock.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Restart and quarantine settings.
#[derive(Debug, Clone, PartialEq)]
pub struct RestartPolicy {
    /// First wait after a failure.
    pub initial: Duration,
    /// Longest wait between attempts.
    pub max: Duration,
    /// Random spread of each wait: 0.2 means ±20 %.
    pub jitter: f64,
    /// A camera that streamed this long before failing starts again from `initial`.
    pub stable_after: Duration,
    /// Failures within `quarantine_window` that put a camera in quarantine.
    pub quarantine_failures: u32,
    /// Window over which failures are counted.
    pub quarantine_window: Duration,
    /// How long a quarantined camera waits before its next attempt.
    pub quarantine_for: Duration,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        RestartPolicy {
            initial: Duration::from_millis(500),
            max: Duration::from_secs(30),
            jitter: 0.2,
            stable_after: Duration::from_secs(30),
            quarantine_failures: 8,
            quarantine_window: Duration::from_secs(120),
            quarantine_for: Duration::from_secs(300),
        }
    }
}

/// What to do after a failure.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Verdict {
    /// Wait this long, then try again.
    Backoff(Duration),
    /// Too many failures: wait this long (quarantine), then try again.
    Quarantine(Duration),
}

/// The failure history of one camera.
#[derive(Debug, Clone)]
pub struct Backoff {
    policy: RestartPolicy,
    consecutive: u32,
    failures: VecDeque<Instant>,
}

impl Backoff {
    /// A fresh history.
    pub fn new(policy: RestartPolicy) -> Self {
        Backoff {
            policy,
            consecutive: 0,
            failures: VecDeque::new(),
        }
    }

    /// Records a failure at `now` of an attempt that streamed for `streamed`; `unit` is a
    /// uniform random number in [0, 1) for the jitter.
    pub fn on_failure(&mut self, now: Instant, streamed: Duration, unit: f64) -> Verdict {
        let p = &self.policy;
        if streamed >= p.stable_after {
            self.consecutive = 0;
        }
        self.failures.push_back(now);
        while let Some(&first) = self.failures.front() {
            if now.duration_since(first) > p.quarantine_window {
                self.failures.pop_front();
            } else {
                break;
            }
        }
        if p.quarantine_failures > 0 && self.failures.len() >= p.quarantine_failures as usize {
            self.failures.clear();
            self.consecutive = 0;
            return Verdict::Quarantine(p.quarantine_for);
        }
        let exp = self.consecutive.min(30);
        self.consecutive += 1;
        let base = p.initial.as_secs_f64() * 2f64.powi(exp as i32);
        let base = base.min(p.max.as_secs_f64());
        let spread = 1.0 + p.jitter * (2.0 * unit.clamp(0.0, 1.0) - 1.0);
        Verdict::Backoff(Duration::from_secs_f64((base * spread).max(0.0)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RestartPolicy {
        RestartPolicy {
            initial: Duration::from_millis(100),
            max: Duration::from_millis(1000),
            jitter: 0.2,
            stable_after: Duration::from_secs(10),
            quarantine_failures: 6,
            quarantine_window: Duration::from_secs(60),
            quarantine_for: Duration::from_secs(300),
        }
    }

    #[test]
    fn waits_double_up_to_the_cap_with_bounded_jitter() {
        let mut b = Backoff::new(RestartPolicy {
            quarantine_failures: 0,
            ..policy()
        });
        let t0 = Instant::now();
        let waits: Vec<Duration> = (0..6)
            .map(
                |i| match b.on_failure(t0 + Duration::from_secs(i), Duration::ZERO, 0.5) {
                    Verdict::Backoff(d) => d,
                    v => panic!("{v:?}"),
                },
            )
            .collect();
        let ms: Vec<u128> = waits.iter().map(|d| d.as_millis()).collect();
        assert_eq!(ms, [100, 200, 400, 800, 1000, 1000]);
        let Verdict::Backoff(lo) = b.on_failure(t0, Duration::ZERO, 0.0) else {
            panic!()
        };
        let Verdict::Backoff(hi) = b.on_failure(t0, Duration::ZERO, 0.999_999) else {
            panic!()
        };
        assert_eq!(lo.as_millis(), 800);
        assert_eq!(hi.as_millis(), 1199);
    }

    #[test]
    fn a_stable_stream_resets_the_wait() {
        let mut b = Backoff::new(policy());
        let t0 = Instant::now();
        b.on_failure(t0, Duration::ZERO, 0.5);
        b.on_failure(t0, Duration::ZERO, 0.5);
        assert_eq!(
            b.on_failure(t0, Duration::from_secs(11), 0.5),
            Verdict::Backoff(Duration::from_millis(100))
        );
    }

    #[test]
    fn flapping_is_quarantined_and_old_failures_expire() {
        let mut b = Backoff::new(policy());
        let t0 = Instant::now();
        for i in 0..5 {
            assert!(matches!(
                b.on_failure(t0 + Duration::from_secs(i), Duration::from_secs(20), 0.5),
                Verdict::Backoff(_)
            ));
        }
        assert_eq!(
            b.on_failure(t0 + Duration::from_secs(5), Duration::from_secs(20), 0.5),
            Verdict::Quarantine(Duration::from_secs(300))
        );
        // Failures spread wider than the window never add up to a quarantine.
        let mut b = Backoff::new(policy());
        for i in 0..20 {
            assert!(matches!(
                b.on_failure(t0 + Duration::from_secs(i * 13), Duration::ZERO, 0.5),
                Verdict::Backoff(_)
            ));
        }
    }
}
