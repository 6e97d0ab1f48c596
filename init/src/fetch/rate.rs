//! The minimum-rate floor of one source (issue 15 §5 "fetch liveness").
//!
//! A source that stays below [`MinRate::bytes_per_sec`] averaged over a window of
//! [`MinRate::window`] is cut off by [`super::download`], which resumes from the verified offset
//! on the next source, so one slow source cannot spend the artifact's whole total deadline.
//! Windows are consecutive (tumbling): the first starts when the response headers arrived, and
//! each ends after `window`, checked both when a chunk arrives and by a timer when none does.
//!
//! The floor is a liveness policy, not a safety check: a rate of 0 (or a zero window) turns it
//! off, and [`super::download`] applies it only while another usable source is left to go to.

use std::fmt;
use std::time::Duration;

use tokio::time::Instant;

/// Default floor: 64 KiB/s.
pub const DEFAULT_MIN_RATE: u64 = 64 * 1024;
/// Default averaging window: 10 s.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(10);

/// The floor: at least `bytes_per_sec` on average over every `window`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MinRate {
    /// Minimum average rate in bytes per second; 0 disables the floor.
    pub bytes_per_sec: u64,
    /// Length of one averaging window; zero disables the floor.
    pub window: Duration,
}

impl Default for MinRate {
    /// [`DEFAULT_MIN_RATE`] over [`DEFAULT_WINDOW`].
    fn default() -> Self {
        MinRate {
            bytes_per_sec: DEFAULT_MIN_RATE,
            window: DEFAULT_WINDOW,
        }
    }
}

impl MinRate {
    /// False when the rate or the window is zero (the floor is off).
    pub fn active(&self) -> bool {
        self.bytes_per_sec > 0 && !self.window.is_zero()
    }
}

/// A window that ended below the floor: what was measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooSlow {
    /// Measured average over the window, in bytes per second.
    pub rate: u64,
    /// The window actually measured, in ms (at least the configured window).
    pub window_ms: u128,
    /// The floor, in bytes per second.
    pub min_rate: u64,
}

/// Bytes per second as KiB/s with one decimal (`1.0`, `64.0`).
pub fn kib(bytes_per_sec: u64) -> KiB {
    KiB(bytes_per_sec)
}

/// Display helper of [`kib`].
#[derive(Debug, Clone, Copy)]
pub struct KiB(u64);

impl fmt::Display for KiB {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:.1}", self.0 as f64 / 1024.0)
    }
}

/// The running window of one attempt.
#[derive(Debug, Clone, Copy)]
pub struct RateWindow {
    floor: MinRate,
    start: Instant,
    start_offset: u64,
}

impl RateWindow {
    /// A first window starting at `now` with `offset` bytes already verified-so-far; `None`
    /// when the floor is off.
    pub fn start(floor: MinRate, now: Instant, offset: u64) -> Option<Self> {
        floor.active().then_some(RateWindow {
            floor,
            start: now,
            start_offset: offset,
        })
    }

    /// When the current window ends.
    pub fn ends_at(&self) -> Instant {
        self.start + self.floor.window
    }

    /// At `now`, with `offset` bytes received in total: before the window's end nothing
    /// happens; after it, the average over the window is compared with the floor and, if it
    /// holds, the next window starts at `now`.
    ///
    /// # Errors
    /// [`TooSlow`] with the measured rate when the window ended below the floor.
    pub fn check(&mut self, now: Instant, offset: u64) -> Result<(), TooSlow> {
        if now < self.ends_at() {
            return Ok(());
        }
        let elapsed_ms = now.duration_since(self.start).as_millis().max(1);
        let bytes = u128::from(offset.saturating_sub(self.start_offset));
        // bytes / elapsed < floor, in integers: bytes * 1000 < floor * elapsed_ms.
        if bytes * 1000 < u128::from(self.floor.bytes_per_sec) * elapsed_ms {
            let rate = u64::try_from(bytes * 1000 / elapsed_ms).unwrap_or(u64::MAX);
            return Err(TooSlow {
                rate,
                window_ms: elapsed_ms,
                min_rate: self.floor.bytes_per_sec,
            });
        }
        self.start = now;
        self.start_offset = offset;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FLOOR: MinRate = MinRate {
        bytes_per_sec: 64 * 1024,
        window: Duration::from_secs(10),
    };

    #[test]
    fn window_below_the_floor_is_too_slow_with_the_measured_rate() {
        let t0 = Instant::now();
        let mut w = RateWindow::start(FLOOR, t0, 5000).unwrap();
        // 10 KiB in 10 s: 1 KiB/s.
        let e = w.check(t0 + Duration::from_secs(10), 5000 + 10 * 1024);
        assert_eq!(
            e,
            Err(TooSlow {
                rate: 1024,
                window_ms: 10_000,
                min_rate: 64 * 1024
            })
        );
        assert_eq!(kib(1024).to_string(), "1.0");
    }

    #[test]
    fn window_at_or_above_the_floor_passes_and_the_next_one_starts() {
        let t0 = Instant::now();
        let mut w = RateWindow::start(FLOOR, t0, 0).unwrap();
        let t1 = t0 + Duration::from_secs(10);
        assert_eq!(w.check(t1, 640 * 1024), Ok(()));
        assert_eq!(w.ends_at(), t1 + Duration::from_secs(10));
        // The next window is measured on its own: nothing more arrived, so it is too slow.
        assert!(w.check(t1 + Duration::from_secs(10), 640 * 1024).is_err());
    }

    #[test]
    fn nothing_is_judged_before_the_window_ends() {
        let t0 = Instant::now();
        let mut w = RateWindow::start(FLOOR, t0, 0).unwrap();
        assert_eq!(w.check(t0 + Duration::from_millis(9_999), 0), Ok(()));
        assert!(w.check(t0 + Duration::from_secs(10), 0).is_err());
    }

    #[test]
    fn zero_rate_or_zero_window_turns_the_floor_off() {
        let t0 = Instant::now();
        let off = MinRate {
            bytes_per_sec: 0,
            ..FLOOR
        };
        assert!(RateWindow::start(off, t0, 0).is_none());
        let off = MinRate {
            window: Duration::ZERO,
            ..FLOOR
        };
        assert!(RateWindow::start(off, t0, 0).is_none());
        assert!(RateWindow::start(FLOOR, t0, 0).is_some());
    }
}
