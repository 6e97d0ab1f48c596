//! DHCP replies from the network through `phase_init::net::dhcp::Client::on_packet`, in every
//! state that waits for one, with `on_timeout` interleaved.
//!
//! Input: `[state u8][lease u32][t1 u32][t2 u32]` then records
//! `[ctrl u8][advance u16 s][len u16][len bytes of a datagram]` (big-endian) to the end.
//! - state % 4: 0 SELECTING (after `start`), 1 REQUESTING (after a valid OFFER built here),
//!   2 RENEWING and 3 REBINDING (after a valid OFFER and an ACK with options 51/58/59 = lease,
//!   t1, t2, then `renew` at T1 or T2);
//! - ctrl bit 0 writes our current xid into the datagram, bit 1 our MAC into `chaddr` (so the
//!   fuzzer need not guess them), bit 2 calls `on_timeout` before the datagram, bit 3 after.
//!
//! Checks besides "no panic": every packet the client wants to send encodes, and a bound lease
//! keeps the documented timer and prefix invariants.
#![no_main]

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use dhcproto::v4::{DhcpOption, Message, MessageType, Opcode};
use dhcproto::Encodable;
use libfuzzer_sys::fuzz_target;
use phase_fuzz::Input;
use phase_init::net::dhcp::{Client, Config, Granted, Step, MIN_LEASE_SECS};

const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
const SERVER: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const OFFERED: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 101);

/// A dnsmasq-like OFFER or ACK for `client`'s current exchange.
fn reply(client: &Client, kind: MessageType, lease: Option<(u32, u32, u32)>) -> Vec<u8> {
    let mut m = Message::default();
    m.set_opcode(Opcode::BootReply)
        .set_xid(client.xid())
        .set_chaddr(&MAC)
        .set_yiaddr(OFFERED)
        .set_siaddr(SERVER);
    let o = m.opts_mut();
    o.insert(DhcpOption::MessageType(kind));
    o.insert(DhcpOption::ServerIdentifier(SERVER));
    o.insert(DhcpOption::SubnetMask(Ipv4Addr::new(255, 255, 255, 0)));
    o.insert(DhcpOption::Router(vec![SERVER]));
    o.insert(DhcpOption::DomainNameServer(vec![SERVER]));
    let (l, t1, t2) = lease.unwrap_or((3600, 1800, 3150));
    o.insert(DhcpOption::AddressLeaseTime(l));
    o.insert(DhcpOption::Renewal(t1));
    o.insert(DhcpOption::Rebinding(t2));
    m.to_vec().unwrap_or_default()
}

/// What every step must satisfy.
fn check(step: &Step) {
    match step {
        Step::Send { packet, .. } => {
            let _ = packet.encode();
        }
        Step::Bound(g) => check_granted(g),
        Step::Wait { .. } | Step::Lost(_) => {}
    }
}

fn check_granted(g: &Granted) {
    assert!((1..=32).contains(&g.prefix_len), "{g:?}");
    assert!(g.lease_secs >= MIN_LEASE_SECS, "{g:?}");
    assert!(g.t1_secs <= g.t2_secs && g.t2_secs <= g.lease_secs, "{g:?}");
    assert!(!g.addr.is_unspecified(), "{g:?}");
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let state = input.u8() % 4;
    let lease = (input.u32(), input.u32(), input.u32());
    let mut now = Instant::now();
    let mut client = Client::new(MAC, Config::default(), 15, now);
    check(&client.start(now));
    if state >= 1 {
        let offer = reply(&client, MessageType::Offer, None);
        let step = client.on_packet(&offer, now);
        assert!(
            matches!(step, Step::Send { .. }),
            "valid OFFER refused: {step:?}"
        );
        assert_eq!(client.state_name(), "requesting");
    }
    if state >= 2 {
        let ack = reply(&client, MessageType::Ack, Some(lease));
        let Step::Bound(granted) = client.on_packet(&ack, now) else {
            panic!("valid ACK refused");
        };
        check_granted(&granted);
        let bound_at = now;
        let at = if state == 2 {
            granted.t1_secs
        } else {
            granted.t2_secs
        };
        now = bound_at + Duration::from_secs(u64::from(at));
        check(&client.renew(granted, bound_at, now));
    }
    while !input.is_empty() {
        let ctrl = input.u8();
        now += Duration::from_secs(u64::from(input.u16()));
        let len = usize::from(input.u16());
        let mut packet = input.bytes(len).to_vec();
        if ctrl & 1 != 0 && packet.len() >= 8 {
            packet[4..8].copy_from_slice(&client.xid().to_be_bytes());
        }
        if ctrl & 2 != 0 && packet.len() >= 34 {
            packet[28..34].copy_from_slice(&MAC);
        }
        if ctrl & 4 != 0 {
            check(&client.on_timeout(now));
        }
        check(&client.on_packet(&packet, now));
        if ctrl & 8 != 0 {
            check(&client.on_timeout(now));
        }
    }
});
