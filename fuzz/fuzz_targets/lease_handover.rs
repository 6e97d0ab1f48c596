//! The boot stage's DHCP lease in the target's initrd (`/phase/lease.json`) through
//! `phase_init::net::handover::HandedLease::{parse, take_over}`: a lease that parses is taken
//! over only for its own interface and MAC, never configures what a DHCP ACK would have been
//! refused for, never lengthens its timers, and survives a round trip.
//!
//! Input: `[uptime u16 (s)][file bytes]`.
#![no_main]

use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use phase_init::net::handover::{mac_string, HandedLease, MIN_LEFT_SECS};
use phase_init::net::link::Link;

fuzz_target!(|data: &[u8]| {
    let Some((head, file)) = data.split_at_checked(2) else {
        return;
    };
    let uptime = Duration::from_secs(u64::from(u16::from_le_bytes([head[0], head[1]])));
    let Ok(h) = HandedLease::parse(file) else {
        return;
    };
    assert_eq!(HandedLease::parse(&h.to_json()).ok().as_ref(), Some(&h));
    let link = Link {
        name: "eth0".into(),
        index: 2,
        mac: [0x52, 0x54, 0x00, 0x12, 0x34, 0x56],
    };
    let now = Instant::now();
    if let Ok(lease) = h.take_over(&link, now, uptime) {
        assert_eq!(lease.iface, link.name);
        assert!(h.mac.eq_ignore_ascii_case(&mac_string(&link.mac)));
        let g = &lease.granted;
        assert!((1..=32).contains(&g.prefix_len));
        assert!(g.lease_secs >= MIN_LEFT_SECS);
        assert!(g.lease_secs <= h.granted.lease_secs && g.t1_secs <= h.granted.t1_secs && g.t2_secs <= h.granted.t2_secs);
        assert!(g.t1_secs <= g.t2_secs && g.t2_secs <= g.lease_secs);
        assert!(!g.addr.is_broadcast() && !g.addr.is_unspecified() && !g.addr.is_loopback());
        assert!(g.router != Some(g.addr));
        assert_eq!(lease.acquired_at, now);
    }
});
