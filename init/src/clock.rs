//! The time the init believes (issue 15 §3, DESIGN §7): a clock is never believed below the
//! init's build time nor below the cached time floor; SNTP and signed evidence move it
//! forward, never back.
//!
//! Boot flow: [`settle`] runs once the cache (and its floor) is known, in both stages. A clock
//! below its floors is set to the highest floor and marked [`ClockTrust::BelowFloor`]: it is
//! then a lower bound, not a reading. DHCP option 42 servers are asked by SNTP
//! ([`crate::net::sntp`]), and a manifest that verifies under the trust root proves the time is
//! at least its `created_at` ([`phase_protocol::VerifiedManifest::checked_at`]); [`Clock::advance`]
//! takes either. An unsigned HTTP `Date` is never used.

use chrono::{DateTime, Utc};
use phase_protocol::ClockTrust;

use crate::sys::Syscalls;

/// The init's build time, Unix seconds (from `build.rs`: the source's commit time).
pub const BUILD_EPOCH_SECS: i64 = parse_epoch(env!("PHASE_BUILD_EPOCH"));

const fn parse_epoch(s: &str) -> i64 {
    let b = s.as_bytes();
    let mut i = 0;
    let mut v: i64 = 0;
    while i < b.len() {
        v = v * 10 + (b[i] - b'0') as i64;
        i += 1;
    }
    v
}

/// [`BUILD_EPOCH_SECS`] as a date.
pub fn build_floor() -> DateTime<Utc> {
    DateTime::from_timestamp(BUILD_EPOCH_SECS, 0).unwrap_or(DateTime::<Utc>::UNIX_EPOCH)
}

/// Where the time the init uses came from (logged: the QEMU tests match it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The real-time clock, at or above every floor.
    Rtc,
    /// The RTC was below a floor; the clock was set to the floor named (`build` or `cache`).
    Floor(&'static str),
    /// An SNTP server (RFC 4330) named in DHCP option 42.
    Sntp(std::net::Ipv4Addr),
    /// The `created_at` of a manifest signed by the trust root.
    Signed,
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Rtc => f.write_str("rtc"),
            Source::Floor(which) => write!(f, "{which}-floor"),
            Source::Sntp(ip) => write!(f, "sntp {ip}"),
            Source::Signed => f.write_str("signed-manifest"),
        }
    }
}

/// What the init believes about the time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Clock {
    /// Whether a `created_at` beyond the clock may be taken as evidence instead of refused.
    pub trust: ClockTrust,
    /// Where the current setting came from.
    pub source: Source,
    /// The highest floor: the clock is never set below it.
    pub floor: DateTime<Utc>,
}

/// Judges a clock reading `rtc` against the build floor `build` and the cache's floor
/// `cached` (the newest `created_at` ever accepted, from state.json): the clock to set (if
/// any) and what to believe. Pure.
pub fn judge(
    rtc: DateTime<Utc>,
    build: DateTime<Utc>,
    cached: Option<DateTime<Utc>>,
) -> (Option<DateTime<Utc>>, Clock) {
    let (floor, which) = match cached {
        Some(c) if c > build => (c, "cache"),
        _ => (build, "build"),
    };
    if rtc >= floor {
        let c = Clock {
            trust: ClockTrust::Trusted,
            source: Source::Rtc,
            floor,
        };
        return (None, c);
    }
    let c = Clock {
        trust: ClockTrust::BelowFloor,
        source: Source::Floor(which),
        floor,
    };
    (Some(floor), c)
}

/// Reads the clock, judges it ([`judge`]) with the build floor and `cached`, sets it to the
/// floor when it is below, and logs one `clock` line saying where the time came from, e.g.
/// `phase: clock 1970-01-01T00:00:05Z below build-floor 2026-12-01T00:00:00Z: set to the
/// floor, untrusted until SNTP or a signed manifest`. A failed `clock_settime` is logged and
/// the judgement stands (verification uses the floor either way).
pub fn settle(sys: &dyn Syscalls, cached: Option<DateTime<Utc>>) -> Clock {
    let rtc = Utc::now();
    let (set, clock) = judge(rtc, build_floor(), cached);
    match set {
        None => crate::log::line(&format!(
            "clock ok {} from rtc (floor {})",
            rtc.to_rfc3339(),
            clock.floor.to_rfc3339()
        )),
        Some(t) => {
            set_clock(sys, t);
            crate::log::line(&format!(
                "clock {} below {} {}: set to the floor, untrusted until sntp or a signed manifest",
                rtc.to_rfc3339(),
                clock.source,
                t.to_rfc3339()
            ));
        }
    }
    clock
}

impl Clock {
    /// Moves the clock forward to `t` from `source` (SNTP or signed evidence): never below the
    /// floor, never backward. `trusted` says whether the new reading is a measurement (SNTP)
    /// that makes the clock trusted; signed evidence only raises the lower bound. Returns
    /// whether the clock was changed.
    pub fn advance(
        &mut self,
        sys: &dyn Syscalls,
        t: DateTime<Utc>,
        source: Source,
        trusted: bool,
    ) -> bool {
        if t < self.floor {
            crate::log::line(&format!(
                "clock refused {} from {source}: below the floor {}",
                t.to_rfc3339(),
                self.floor.to_rfc3339()
            ));
            return false;
        }
        let now = Utc::now();
        if trusted {
            self.trust = ClockTrust::Trusted;
        }
        if t <= now {
            if trusted {
                self.source = source;
                crate::log::line(&format!(
                    "clock ok {} from {}",
                    now.to_rfc3339(),
                    self.source
                ));
            }
            return false;
        }
        set_clock(sys, t);
        self.floor = t;
        self.source = source;
        crate::log::line(&format!(
            "clock set {} from {}{}",
            t.to_rfc3339(),
            self.source,
            if self.trust == ClockTrust::Trusted {
                ""
            } else {
                " (a lower bound)"
            }
        ));
        true
    }
}

fn set_clock(sys: &dyn Syscalls, t: DateTime<Utc>) {
    if let Err(e) = sys.set_realtime(t.timestamp(), t.timestamp_subsec_nanos()) {
        crate::log::line(&format!("clock not set: {}", crate::log::error_chain(&e)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn build_floor_is_the_build_time_not_1970() {
        assert!(
            build_floor() >= t("2026-12-01T00:00:00Z"),
            "{}",
            build_floor()
        );
    }

    #[test]
    fn rtc_at_or_above_the_floors_is_trusted_and_not_set() {
        let (set, c) = judge(
            t("2027-01-01T00:00:00Z"),
            t("2026-12-01T00:00:00Z"),
            Some(t("2026-12-24T00:00:00Z")),
        );
        assert_eq!(set, None);
        assert_eq!(c.trust, ClockTrust::Trusted);
        assert_eq!(c.source, Source::Rtc);
    }

    #[test]
    fn rtc_of_1970_is_set_to_the_highest_floor_and_untrusted() {
        let build = t("2026-12-01T00:00:00Z");
        let (set, c) = judge(DateTime::<Utc>::UNIX_EPOCH, build, None);
        assert_eq!(set, Some(build));
        assert_eq!(c.trust, ClockTrust::BelowFloor);
        assert_eq!(c.source, Source::Floor("build"));
        let cached = t("2027-03-01T00:00:00Z");
        let (set, c) = judge(t("2026-12-05T00:00:00Z"), build, Some(cached));
        assert_eq!(
            set,
            Some(cached),
            "a clock below the cached floor is not believed"
        );
        assert_eq!(c.source, Source::Floor("cache"));
        // A cached floor below the build floor does not lower it.
        let (set, _) = judge(
            DateTime::<Utc>::UNIX_EPOCH,
            build,
            Some(t("2020-01-01T00:00:00Z")),
        );
        assert_eq!(set, Some(build));
    }

    #[test]
    fn advance_never_goes_below_the_floor_and_records_the_setting() {
        let sys = crate::sys::fake::Recording::default();
        let floor = t("2999-01-01T00:00:00Z");
        let mut c = Clock {
            trust: ClockTrust::BelowFloor,
            source: Source::Floor("build"),
            floor,
        };
        // Below the floor: refused, nothing set.
        assert!(!c.advance(&sys, t("2998-01-01T00:00:00Z"), Source::Signed, false));
        assert!(sys.calls().is_empty(), "{:?}", sys.calls());
        assert_eq!(c.trust, ClockTrust::BelowFloor);
        // Above: set, and signed evidence keeps the clock a lower bound.
        let later = t("2999-06-01T00:00:00Z");
        assert!(c.advance(&sys, later, Source::Signed, false));
        assert_eq!(c.trust, ClockTrust::BelowFloor);
        assert_eq!(c.floor, later);
        assert_eq!(
            sys.calls(),
            vec![format!("clock_settime REALTIME {}.0", later.timestamp())]
        );
        // SNTP makes it trusted.
        let sntp = Source::Sntp(std::net::Ipv4Addr::new(192, 0, 2, 1));
        assert!(c.advance(&sys, t("2999-06-02T00:00:00Z"), sntp.clone(), true));
        assert_eq!(c.trust, ClockTrust::Trusted);
        assert_eq!(c.source, sntp);
    }
}
