//! Progress lines for one artifact (issue 5 "Progress"): at most one per second,
//! `phase: fetch <artifact> <bytes>/<total> bytes <pct>% <MB/s> MB/s eta <s>s`.

use std::time::{Duration, Instant};

use crate::log;

/// Shortest gap between two progress lines of one artifact.
pub const INTERVAL: Duration = Duration::from_secs(1);

/// Rate-limited progress printer for one artifact.
#[derive(Debug)]
pub struct Meter {
    name: String,
    total: u64,
    start: Instant,
    last: Instant,
    enabled: bool,
}

impl Meter {
    /// A meter for `name` of `total` bytes; prints nothing when `enabled` is false.
    pub fn new(name: &str, total: u64, enabled: bool) -> Self {
        let now = Instant::now();
        Meter {
            name: name.to_owned(),
            total,
            start: now,
            last: now,
            enabled,
        }
    }

    /// The artifact name this meter reports on.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Notes that `done` bytes are verified-so-far; prints a line if [`INTERVAL`] has passed.
    pub fn tick(&mut self, done: u64) {
        if !self.enabled || self.last.elapsed() < INTERVAL {
            return;
        }
        self.last = Instant::now();
        log::line(&self.text(done, self.start.elapsed()));
    }

    /// The progress line for `done` bytes after `elapsed` (without the `phase: ` prefix).
    pub fn text(&self, done: u64, elapsed: Duration) -> String {
        let secs = elapsed.as_secs_f64().max(1e-3);
        let rate = done as f64 / secs;
        let pct = if self.total == 0 {
            100.0
        } else {
            done as f64 * 100.0 / self.total as f64
        };
        let eta = if rate > 0.0 {
            (self.total.saturating_sub(done)) as f64 / rate
        } else {
            f64::INFINITY
        };
        let eta = if eta.is_finite() {
            format!("{eta:.0}s")
        } else {
            "?".to_owned()
        };
        format!(
            "fetch {} {done}/{} bytes {pct:.0}% {:.1} MB/s eta {eta}",
            self.name,
            self.total,
            rate / 1e6
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_text_has_bytes_percent_rate_and_eta() {
        let m = Meter::new("rootfs", 4_000_000, true);
        let t = m.text(1_000_000, Duration::from_secs(1));
        assert_eq!(t, "fetch rootfs 1000000/4000000 bytes 25% 1.0 MB/s eta 3s");
        assert!(m.text(0, Duration::from_secs(1)).ends_with("eta ?"));
    }
}
