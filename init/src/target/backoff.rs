//! Restart backoff for crashed services (issue 7 §3) and the clock it reads, injectable so the
//! timing is unit-tested with a fake clock.
//!
//! The n-th consecutive restart waits `initial * 2^(n-1)`, capped at `max`. A service that ran
//! for at least `stable_after` before it exited counts as healthy again: its next restart waits
//! `initial` once more.

use std::cell::Cell;
use std::time::{Duration, Instant};

/// A monotonic clock.
pub trait Clock {
    /// The current instant.
    fn now(&self) -> Instant;
}

/// The real monotonic clock (`CLOCK_MONOTONIC` via [`Instant`]).
#[derive(Debug, Default, Clone, Copy)]
pub struct MonotonicClock;

impl Clock for MonotonicClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
}

/// A clock that moves only when told, for tests.
#[derive(Debug)]
pub struct FakeClock {
    now: Cell<Instant>,
}

impl FakeClock {
    /// A fake clock standing at the real current instant.
    pub fn new() -> FakeClock {
        FakeClock {
            now: Cell::new(Instant::now()),
        }
    }

    /// Moves the clock forward by `d`.
    pub fn advance(&self, d: Duration) {
        self.now.set(self.now.get() + d);
    }
}

impl Default for FakeClock {
    fn default() -> Self {
        FakeClock::new()
    }
}

impl Clock for FakeClock {
    fn now(&self) -> Instant {
        self.now.get()
    }
}

/// Backoff parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackoffPolicy {
    /// Delay before the first restart.
    pub initial: Duration,
    /// Largest delay.
    pub max: Duration,
    /// A run at least this long resets the backoff.
    pub stable_after: Duration,
}

impl Default for BackoffPolicy {
    /// 500 ms doubling up to 30 s; reset after 60 s of uptime.
    fn default() -> Self {
        BackoffPolicy {
            initial: Duration::from_millis(500),
            max: Duration::from_secs(30),
            stable_after: Duration::from_secs(60),
        }
    }
}

/// Backoff state of one service.
#[derive(Debug, Clone, Default)]
pub struct Backoff {
    failures: u32,
}

impl Backoff {
    /// Records an exit of a run that started at `started` and ended at `now`; returns the delay
    /// before the next start.
    pub fn next_delay(
        &mut self,
        policy: &BackoffPolicy,
        started: Instant,
        now: Instant,
    ) -> Duration {
        if now.saturating_duration_since(started) >= policy.stable_after {
            self.failures = 0;
        }
        let shift = self.failures.min(31);
        self.failures = self.failures.saturating_add(1);
        policy.initial.saturating_mul(1u32 << shift).min(policy.max)
    }

    /// Consecutive quick exits so far.
    pub fn failures(&self) -> u32 {
        self.failures
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> BackoffPolicy {
        BackoffPolicy {
            initial: Duration::from_millis(100),
            max: Duration::from_millis(1000),
            stable_after: Duration::from_secs(10),
        }
    }

    #[test]
    fn quick_crashes_double_the_delay_up_to_the_cap() {
        let clock = FakeClock::new();
        let mut b = Backoff::default();
        let mut delays = Vec::new();
        for _ in 0..7 {
            let started = clock.now();
            clock.advance(Duration::from_millis(50));
            let d = b.next_delay(&policy(), started, clock.now());
            delays.push(d.as_millis());
            clock.advance(d);
        }
        assert_eq!(delays, [100, 200, 400, 800, 1000, 1000, 1000]);
    }

    #[test]
    fn a_stable_run_resets_the_backoff() {
        let clock = FakeClock::new();
        let mut b = Backoff::default();
        for _ in 0..4 {
            let started = clock.now();
            clock.advance(Duration::from_millis(10));
            b.next_delay(&policy(), started, clock.now());
        }
        let started = clock.now();
        clock.advance(Duration::from_secs(9));
        assert_eq!(
            b.next_delay(&policy(), started, clock.now()),
            Duration::from_millis(1000)
        );
        let started = clock.now();
        clock.advance(Duration::from_secs(10));
        assert_eq!(
            b.next_delay(&policy(), started, clock.now()),
            Duration::from_millis(100)
        );
    }

    #[test]
    fn many_failures_do_not_overflow() {
        let clock = FakeClock::new();
        let mut b = Backoff::default();
        for _ in 0..100 {
            let now = clock.now();
            assert!(b.next_delay(&policy(), now, now) <= policy().max);
        }
    }
}
