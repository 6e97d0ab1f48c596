//! The boot stage's DHCP lease, handed to the target stage across the kexec (issue 18 §3).
//!
//! The lease belongs to the machine (its MAC, the `chaddr` the server bound it to), not to the
//! kernel: the kexec changes the kernel a few seconds after the ACK, and the DHCP client stays
//! BOUND (RFC 2131 §4.4.5). So the boot stage writes what the ACK granted to
//! `/phase/lease.json` in the appended initrd cpio ([`HandedLease`], with its age in ms at the
//! handoff), and the target stage configures it at once instead of running
//! DISCOVER/OFFER/REQUEST/ACK again; its lease upkeep renews at T1 as after any ACK. Under
//! TCG the full exchange cost the target 29-35 ms.
//!
//! Taken over only when it is safe ([`HandedLease::take_over`]): the same interface and MAC,
//! parameters a DHCP ACK would be accepted with (the checks of [`super::dhcp`]), and at least
//! [`MIN_LEFT_SECS`] of the lease left after counting its age, the target kernel's uptime and
//! [`KEXEC_ALLOWANCE`]. Anything else, and a file that does not parse, runs DHCP from INIT.
//! The file carries no secret and grants nothing a DHCP server on the LAN could not.

use std::path::Path;
use std::time::{Duration, Instant};

use super::dhcp::Granted;
use super::link::Link;
use super::Lease;

/// The file's path in the initrd's cpio (no leading `/`).
pub const FILE: &str = "phase/lease.json";

/// Where the target stage reads it.
pub const PATH: &str = "/phase/lease.json";

/// Largest file read, bytes: a lease is a few hundred.
pub const MAX_BYTES: u64 = 4096;

/// Time counted for the kexec jump itself (purgatory, the new kernel's decompression), which
/// neither kernel's clock sees; generous, so the lease is never thought younger than it is.
pub const KEXEC_ALLOWANCE: Duration = Duration::from_secs(10);

/// Least lease time left for a takeover, seconds; with less, DHCP runs from INIT.
pub const MIN_LEFT_SECS: u32 = 60;

/// The lease as the boot stage hands it over (JSON; field names are the file format).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HandedLease {
    /// Interface name (`eth0`).
    pub iface: String,
    /// The interface's MAC, `52:54:00:12:34:56`.
    pub mac: String,
    /// What the ACK granted, timers counted from the grant.
    pub granted: Granted,
    /// Age of the lease at the handoff, ms (from the REQUEST that got the ACK).
    pub age_ms: u64,
}

/// Why a handed-over lease is not used (DHCP then runs from INIT).
#[derive(Debug, thiserror::Error)]
pub enum HandoverError {
    /// The file could not be read.
    #[error("reading {PATH}")]
    Read(#[source] std::io::Error),
    /// The file is over [`MAX_BYTES`].
    #[error("{PATH} is over {MAX_BYTES} bytes")]
    TooLarge,
    /// The file is not a [`HandedLease`].
    #[error("{PATH} does not parse")]
    Parse(#[source] serde_json::Error),
    /// Another interface or MAC than the one this stage found.
    #[error("it was granted to {iface} {mac}, this stage's link is {found_iface} {found_mac}")]
    OtherLink {
        /// Interface of the lease.
        iface: String,
        /// MAC of the lease.
        mac: String,
        /// Interface found now.
        found_iface: String,
        /// Its MAC.
        found_mac: String,
    },
    /// Parameters a DHCP ACK would have been refused for.
    #[error("its parameters are not a usable lease ({0})")]
    Invalid(&'static str),
    /// Too little of the lease is left.
    #[error("{left_secs}s of the {lease_secs}s lease left (at least {MIN_LEFT_SECS}s wanted)")]
    Expiring {
        /// Seconds left, counted conservatively.
        left_secs: u64,
        /// The lease time.
        lease_secs: u32,
    },
}

/// `aa:bb:cc:dd:ee:ff`, lower case, as sysfs writes a MAC.
pub fn mac_string(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

impl HandedLease {
    /// The handover of `lease` on the interface whose MAC is `mac`, at `now` (the boot stage's
    /// monotonic clock).
    pub fn new(lease: &Lease, mac: &[u8; 6], now: Instant) -> HandedLease {
        HandedLease {
            iface: lease.iface.clone(),
            mac: mac_string(mac),
            granted: lease.granted.clone(),
            age_ms: now.saturating_duration_since(lease.acquired_at).as_millis() as u64,
        }
    }

    /// The file's bytes (JSON, one line).
    pub fn to_json(&self) -> Vec<u8> {
        // Serializing plain fields cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Parses the file's bytes. Errors: [`HandoverError::TooLarge`], [`HandoverError::Parse`].
    pub fn parse(bytes: &[u8]) -> Result<HandedLease, HandoverError> {
        if bytes.len() as u64 > MAX_BYTES {
            return Err(HandoverError::TooLarge);
        }
        serde_json::from_slice(bytes).map_err(HandoverError::Parse)
    }

    /// Reads `path` ([`PATH`]): `Ok(None)` when there is none (a boot stage without network,
    /// `phase.kexec=never`). Errors: [`HandoverError::Read`], and as [`HandedLease::parse`].
    pub fn read(path: &Path) -> Result<Option<HandedLease>, HandoverError> {
        use std::io::Read;
        let f = match std::fs::File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(HandoverError::Read(e)),
        };
        let mut bytes = Vec::new();
        f.take(MAX_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(HandoverError::Read)?;
        Self::parse(&bytes).map(Some)
    }

    /// The lease to configure on `link` at `now`, `since_handover` after the handoff (the
    /// target kernel's uptime; [`KEXEC_ALLOWANCE`] is added): its timers shortened by its
    /// whole age, counted from `now`. Errors: [`HandoverError::OtherLink`],
    /// [`HandoverError::Invalid`], [`HandoverError::Expiring`].
    pub fn take_over(
        &self,
        link: &Link,
        now: Instant,
        since_handover: Duration,
    ) -> Result<Lease, HandoverError> {
        let found_mac = mac_string(&link.mac);
        if self.iface != link.name || !self.mac.eq_ignore_ascii_case(&found_mac) {
            return Err(HandoverError::OtherLink {
                iface: self.iface.clone(),
                mac: self.mac.clone(),
                found_iface: link.name.clone(),
                found_mac,
            });
        }
        self.check()?;
        let age = Duration::from_millis(self.age_ms)
            .saturating_add(since_handover)
            .saturating_add(KEXEC_ALLOWANCE);
        // Whole seconds, rounded up: never younger than it is.
        let age_secs =
            u32::try_from(age.as_secs() + u64::from(age.subsec_nanos() > 0)).unwrap_or(u32::MAX);
        let g = &self.granted;
        let left = |t: u32| {
            if g.lease_secs == u32::MAX {
                t
            } else {
                t.saturating_sub(age_secs)
            }
        };
        let lease_left = left(g.lease_secs);
        if lease_left < MIN_LEFT_SECS {
            return Err(HandoverError::Expiring {
                left_secs: u64::from(lease_left),
                lease_secs: g.lease_secs,
            });
        }
        Ok(Lease {
            iface: self.iface.clone(),
            granted: Granted {
                lease_secs: lease_left,
                t1_secs: left(g.t1_secs),
                t2_secs: left(g.t2_secs),
                ..g.clone()
            },
            acquired_at: now,
        })
    }

    /// The checks an ACK's parameters pass in [`super::dhcp`] (address, mask, router, server,
    /// timers in order), so the file cannot configure what DHCP would have refused.
    fn check(&self) -> Result<(), HandoverError> {
        use super::dhcp::{is_host_in, is_unicast};
        let g = &self.granted;
        if !(1..=32).contains(&g.prefix_len) {
            return Err(HandoverError::Invalid("prefix length"));
        }
        if !is_unicast(g.addr) || !is_host_in(g.addr, g.addr, g.prefix_len) {
            return Err(HandoverError::Invalid("address"));
        }
        if let Some(r) = g.router {
            if r == g.addr || !is_host_in(r, g.addr, g.prefix_len) {
                return Err(HandoverError::Invalid("router"));
            }
        }
        if !is_unicast(g.server_id) {
            return Err(HandoverError::Invalid("server identifier"));
        }
        if g.t1_secs > g.t2_secs || g.t2_secs > g.lease_secs {
            return Err(HandoverError::Invalid("T1 <= T2 <= lease time"));
        }
        if g.dns.iter().chain(&g.ntp).any(|ip| !is_unicast(*ip)) {
            return Err(HandoverError::Invalid("DNS or NTP server"));
        }
        Ok(())
    }
}

/// The target kernel's uptime (`CLOCK_BOOTTIME`): how long ago the kexec'd kernel started.
pub fn uptime() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Boottime);
    Duration::new(
        u64::try_from(t.tv_sec).unwrap_or(0),
        u32::try_from(t.tv_nsec).unwrap_or(0),
    )
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];

    fn link() -> Link {
        Link {
            name: "eth0".into(),
            index: 2,
            mac: MAC,
        }
    }

    fn lease(t0: Instant) -> Lease {
        Lease {
            iface: "eth0".into(),
            granted: Granted {
                addr: Ipv4Addr::new(192, 0, 2, 158),
                prefix_len: 24,
                router: Some(Ipv4Addr::new(192, 0, 2, 1)),
                dns: vec![Ipv4Addr::new(192, 0, 2, 1)],
                ntp: vec![],
                hostname: Some("node-7".into()),
                server_id: Ipv4Addr::new(192, 0, 2, 1),
                lease_secs: 3600,
                t1_secs: 1800,
                t2_secs: 3150,
            },
            acquired_at: t0,
        }
    }

    #[test]
    fn a_fresh_lease_round_trips_and_is_taken_over_with_its_age_counted() {
        let t0 = Instant::now();
        let handed = HandedLease::new(&lease(t0), &MAC, t0 + Duration::from_millis(2500));
        assert_eq!(handed.mac, "52:54:00:12:34:56");
        assert_eq!(handed.age_ms, 2500);
        let parsed = HandedLease::parse(&handed.to_json()).unwrap();
        assert_eq!(parsed, handed);
        let now = Instant::now();
        let got = parsed
            .take_over(&link(), now, Duration::from_millis(1900))
            .unwrap();
        // 2.5 s + 1.9 s + 10 s, rounded up: 15 s.
        assert_eq!(got.granted.lease_secs, 3600 - 15);
        assert_eq!(got.granted.t1_secs, 1800 - 15);
        assert_eq!(got.granted.t2_secs, 3150 - 15);
        assert_eq!(got.acquired_at, now);
        assert_eq!(got.granted.addr, lease(t0).granted.addr);
        assert_eq!(got.granted.router, lease(t0).granted.router);
        assert_eq!(got.granted.hostname.as_deref(), Some("node-7"));
    }

    #[test]
    fn an_infinite_lease_stays_infinite() {
        let t0 = Instant::now();
        let mut l = lease(t0);
        l.granted.lease_secs = u32::MAX;
        l.granted.t1_secs = u32::MAX / 2;
        l.granted.t2_secs = u32::MAX / 8 * 7;
        let got = HandedLease::new(&l, &MAC, t0)
            .take_over(&link(), t0, Duration::from_secs(3))
            .unwrap();
        assert_eq!(got.granted.lease_secs, u32::MAX);
        assert_eq!(got.granted.t1_secs, u32::MAX / 2);
    }

    #[test]
    fn another_mac_or_interface_is_refused() {
        let t0 = Instant::now();
        let handed = HandedLease::new(&lease(t0), &MAC, t0);
        let mut other = link();
        other.mac[5] = 0x57;
        let e = handed.take_over(&other, t0, Duration::ZERO).unwrap_err();
        assert!(matches!(e, HandoverError::OtherLink { .. }), "{e}");
        assert!(e.to_string().contains("52:54:00:12:34:57"), "{e}");
        let renamed = Link {
            name: "eth1".into(),
            ..link()
        };
        assert!(matches!(
            handed.take_over(&renamed, t0, Duration::ZERO),
            Err(HandoverError::OtherLink { .. })
        ));
        // Upper-case hex in the file is the same MAC.
        let upper = HandedLease {
            mac: handed.mac.to_uppercase(),
            ..handed
        };
        assert!(upper.take_over(&link(), t0, Duration::ZERO).is_ok());
    }

    #[test]
    fn a_lease_near_its_end_is_refused() {
        let t0 = Instant::now();
        let mut l = lease(t0);
        l.granted.lease_secs = 120;
        l.granted.t1_secs = 60;
        l.granted.t2_secs = 105;
        let handed = HandedLease::new(&l, &MAC, t0 + Duration::from_secs(40));
        // 40 + 15 + 10 = 65 s old: 55 s left, under 60.
        let e = handed
            .take_over(&link(), t0, Duration::from_secs(15))
            .unwrap_err();
        assert!(
            matches!(e, HandoverError::Expiring { left_secs: 55, .. }),
            "{e}"
        );
        // Ten seconds younger: 65 s left, taken over, T1 already due.
        let ok = handed
            .take_over(&link(), t0, Duration::from_secs(5))
            .unwrap();
        assert_eq!(ok.granted.lease_secs, 65);
        assert_eq!(ok.granted.t1_secs, 5);
    }

    #[test]
    fn parameters_dhcp_would_refuse_are_refused() {
        let t0 = Instant::now();
        let good = HandedLease::new(&lease(t0), &MAC, t0);
        type Change = fn(&mut Granted);
        let cases: [(Change, &str); 8] = [
            (|g| g.prefix_len = 0, "prefix"),
            (|g| g.prefix_len = 33, "prefix"),
            (|g| g.addr = Ipv4Addr::new(192, 0, 2, 255), "address"),
            (
                |g| {
                    g.addr = Ipv4Addr::new(127, 0, 0, 1);
                    g.prefix_len = 8;
                    g.router = None;
                },
                "address",
            ),
            (
                |g| g.router = Some(Ipv4Addr::new(198, 51, 100, 1)),
                "router",
            ),
            (|g| g.server_id = Ipv4Addr::BROADCAST, "server"),
            (|g| g.t1_secs = 3200, "T1"),
            (|g| g.dns = vec![Ipv4Addr::new(224, 0, 0, 251)], "DNS"),
        ];
        for (change, what) in cases {
            let mut bad = good.clone();
            change(&mut bad.granted);
            let e = bad.take_over(&link(), t0, Duration::ZERO).unwrap_err();
            assert!(
                matches!(e, HandoverError::Invalid(_)) && e.to_string().contains(what),
                "{what}: {e}"
            );
        }
        assert!(good.take_over(&link(), t0, Duration::ZERO).is_ok());
    }

    #[test]
    fn bad_files_are_errors_and_a_missing_one_is_none() {
        assert!(matches!(
            HandedLease::parse(b"{\"iface\":"),
            Err(HandoverError::Parse(_))
        ));
        assert!(matches!(
            HandedLease::parse(&vec![b' '; 5000]),
            Err(HandoverError::TooLarge)
        ));
        let t0 = Instant::now();
        let mut v: serde_json::Value =
            serde_json::from_slice(&HandedLease::new(&lease(t0), &MAC, t0).to_json()).unwrap();
        v["extra"] = serde_json::json!(1);
        assert!(matches!(
            HandedLease::parse(&serde_json::to_vec(&v).unwrap()),
            Err(HandoverError::Parse(_))
        ));
        let d = tempfile::tempdir().unwrap();
        assert!(HandedLease::read(&d.path().join("none.json"))
            .unwrap()
            .is_none());
        let f = d.path().join("lease.json");
        std::fs::write(&f, HandedLease::new(&lease(t0), &MAC, t0).to_json()).unwrap();
        assert!(HandedLease::read(&f).unwrap().is_some());
        std::fs::write(&f, vec![b'x'; 9000]).unwrap();
        assert!(matches!(
            HandedLease::read(&f),
            Err(HandoverError::TooLarge)
        ));
    }
}
