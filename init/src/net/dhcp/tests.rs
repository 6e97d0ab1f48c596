//! State-machine tests with server packets built by `dhcproto` (issue 6 §9).

use super::*;

const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
const SERVER: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const SERVER2: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
const OFFERED: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 101);

fn client(now: Instant) -> Client {
    Client::new(MAC, Config::default(), 7, now)
}

/// A server reply of type `kind` to `xid`, from `server`, offering `OFFERED`.
fn reply(kind: MessageType, xid: u32, server: Ipv4Addr) -> Message {
    let mut m = Message::default();
    m.set_opcode(Opcode::BootReply)
        .set_xid(xid)
        .set_chaddr(&MAC);
    if kind != MessageType::Nak {
        m.set_yiaddr(OFFERED);
    }
    let o = m.opts_mut();
    o.insert(DhcpOption::MessageType(kind));
    o.insert(DhcpOption::ServerIdentifier(server));
    if kind != MessageType::Nak {
        o.insert(DhcpOption::SubnetMask(Ipv4Addr::new(255, 255, 255, 0)));
        o.insert(DhcpOption::Router(vec![SERVER]));
        o.insert(DhcpOption::DomainNameServer(vec![SERVER, SERVER2]));
        o.insert(DhcpOption::NtpServers(vec![SERVER2]));
        o.insert(DhcpOption::Hostname("node1".into()));
        o.insert(DhcpOption::AddressLeaseTime(120));
    }
    m
}

fn bytes(m: &Message) -> Vec<u8> {
    m.to_vec().unwrap()
}

fn sent(step: Step) -> (Outgoing, Instant) {
    match step {
        Step::Send { packet, until } => (packet, until),
        other => panic!("expected Send, got {other:?}"),
    }
}

/// Runs DISCOVER -> OFFER and returns the client in REQUESTING with the REQUEST it sent.
fn to_requesting(now: Instant) -> (Client, Outgoing) {
    let mut c = client(now);
    let (discover, _) = sent(c.start(now));
    let offer = reply(MessageType::Offer, discover.message.xid(), SERVER);
    let (request, _) = sent(c.on_packet(&bytes(&offer), now));
    (c, request)
}

fn granted_lease() -> Granted {
    granted(&reply(MessageType::Ack, 1, SERVER), SERVER).unwrap()
}

#[test]
fn discover_is_broadcast_with_flag_and_requested_options() {
    let now = Instant::now();
    let mut c = client(now);
    let (p, until) = sent(c.start(now));
    assert_eq!(p.kind(), Some(MessageType::Discover));
    assert_eq!(p.dest, Destination::Broadcast);
    assert!(p.message.flags().broadcast());
    assert_eq!(p.message.chaddr(), MAC);
    assert!(until > now);
    match p.message.opts().get(OptionCode::ParameterRequestList) {
        Some(DhcpOption::ParameterRequestList(codes)) => {
            for want in [
                OptionCode::SubnetMask,
                OptionCode::Router,
                OptionCode::DomainNameServer,
                OptionCode::AddressLeaseTime,
                OptionCode::Renewal,
                OptionCode::Rebinding,
                OptionCode::Hostname,
                OptionCode::NtpServers,
            ] {
                assert!(codes.contains(&want), "{want:?} not requested");
            }
        }
        other => panic!("no parameter request list: {other:?}"),
    }
    // Encodes and decodes back.
    let back = Message::from_bytes(&p.encode().unwrap()).unwrap();
    assert_eq!(back.xid(), c.xid());
}

#[test]
fn offer_then_ack_binds_with_all_options() {
    let now = Instant::now();
    let (mut c, request) = to_requesting(now);
    assert_eq!(request.kind(), Some(MessageType::Request));
    assert_eq!(request.dest, Destination::Broadcast);
    assert!(request.message.flags().broadcast());
    assert_eq!(
        request.message.opts().get(OptionCode::RequestedIpAddress),
        Some(&DhcpOption::RequestedIpAddress(OFFERED))
    );
    assert_eq!(
        request.message.opts().get(OptionCode::ServerIdentifier),
        Some(&DhcpOption::ServerIdentifier(SERVER))
    );
    let ack = reply(MessageType::Ack, c.xid(), SERVER);
    match c.on_packet(&bytes(&ack), now) {
        Step::Bound(g) => {
            assert_eq!(g.addr, OFFERED);
            assert_eq!(g.prefix_len, 24);
            assert_eq!(g.router, Some(SERVER));
            assert_eq!(g.dns, vec![SERVER, SERVER2]);
            assert_eq!(g.ntp, vec![SERVER2]);
            assert_eq!(g.hostname.as_deref(), Some("node1"));
            assert_eq!(g.server_id, SERVER);
            assert_eq!((g.lease_secs, g.t1_secs, g.t2_secs), (120, 60, 105));
        }
        other => panic!("expected Bound, got {other:?}"),
    }
    assert_eq!(c.state_name(), "bound");
}

#[test]
fn reply_with_wrong_xid_is_ignored() {
    let now = Instant::now();
    let mut c = client(now);
    let (d, until) = sent(c.start(now));
    let offer = reply(MessageType::Offer, d.message.xid().wrapping_add(1), SERVER);
    match c.on_packet(&bytes(&offer), now) {
        Step::Wait {
            until: u,
            ignored: Ignored::WrongXid { .. },
        } => assert_eq!(u, until),
        other => panic!("expected WrongXid, got {other:?}"),
    }
    assert_eq!(c.state_name(), "selecting");
}

#[test]
fn reply_for_another_chaddr_or_a_request_or_garbage_is_ignored() {
    let now = Instant::now();
    let mut c = client(now);
    let (d, _) = sent(c.start(now));
    let mut other = reply(MessageType::Offer, d.message.xid(), SERVER);
    other.set_chaddr(&[1, 2, 3, 4, 5, 6]);
    assert!(matches!(
        c.on_packet(&bytes(&other), now),
        Step::Wait {
            ignored: Ignored::WrongChaddr,
            ..
        }
    ));
    // Our own broadcast DISCOVER looping back.
    assert!(matches!(
        c.on_packet(&d.encode().unwrap(), now),
        Step::Wait {
            ignored: Ignored::NotReply,
            ..
        }
    ));
    assert!(matches!(
        c.on_packet(b"\x02\x01junk", now),
        Step::Wait {
            ignored: Ignored::Malformed(_),
            ..
        }
    ));
    let mut no_sid = reply(MessageType::Offer, d.message.xid(), SERVER);
    no_sid.opts_mut().remove(OptionCode::ServerIdentifier);
    assert!(matches!(
        c.on_packet(&bytes(&no_sid), now),
        Step::Wait {
            ignored: Ignored::MissingServerId,
            ..
        }
    ));
    assert_eq!(c.state_name(), "selecting");
}

#[test]
fn nak_while_requesting_restarts_with_new_discover() {
    let now = Instant::now();
    let (mut c, request) = to_requesting(now);
    let old_xid = request.message.xid();
    let nak = reply(MessageType::Nak, old_xid, SERVER);
    let (p, _) = sent(c.on_packet(&bytes(&nak), now));
    assert_eq!(p.kind(), Some(MessageType::Discover));
    assert_ne!(p.message.xid(), old_xid, "a restart uses a new xid");
    assert_eq!(c.state_name(), "selecting");
}

#[test]
fn offer_and_nak_from_second_server_are_ignored_while_requesting() {
    let now = Instant::now();
    let (mut c, _) = to_requesting(now);
    let late_offer = reply(MessageType::Offer, c.xid(), SERVER2);
    assert!(matches!(
        c.on_packet(&bytes(&late_offer), now),
        Step::Wait {
            ignored: Ignored::Unexpected(_),
            ..
        }
    ));
    let other_nak = reply(MessageType::Nak, c.xid(), SERVER2);
    assert!(
        matches!(c.on_packet(&bytes(&other_nak), now), Step::Wait { ignored: Ignored::OtherServer(s), .. } if s == SERVER2)
    );
    let other_ack = reply(MessageType::Ack, c.xid(), SERVER2);
    assert!(matches!(
        c.on_packet(&bytes(&other_ack), now),
        Step::Wait {
            ignored: Ignored::OtherServer(_),
            ..
        }
    ));
    assert_eq!(c.state_name(), "requesting");
    // The chosen server's ACK still binds.
    let ack = reply(MessageType::Ack, c.xid(), SERVER);
    assert!(matches!(c.on_packet(&bytes(&ack), now), Step::Bound(_)));
}

#[test]
fn discover_timeouts_back_off_exponentially_up_to_the_cap() {
    let cfg = Config {
        jitter: Duration::ZERO,
        ..Config::default()
    };
    let mut now = Instant::now();
    let mut c = Client::new(MAC, cfg.clone(), 1, now);
    let (_, mut until) = sent(c.start(now));
    let xid = c.xid();
    let mut waits = vec![until - now];
    for _ in 0..6 {
        now = until;
        let (p, u) = sent(c.on_timeout(now));
        assert_eq!(p.kind(), Some(MessageType::Discover));
        assert_eq!(p.message.xid(), xid, "retransmissions keep the xid");
        waits.push(u - now);
        until = u;
    }
    let secs: Vec<u64> = waits.iter().map(Duration::as_secs).collect();
    assert_eq!(secs, vec![1, 2, 4, 8, 16, 16, 16]);
}

#[test]
fn jitter_stays_within_bounds() {
    let now = Instant::now();
    for seed in 0..50 {
        let mut c = Client::new(MAC, Config::default(), seed, now);
        let (_, until) = sent(c.start(now));
        let w = until - now;
        assert!(
            w >= Duration::from_millis(500) && w <= Duration::from_millis(1500),
            "{w:?}"
        );
    }
}

#[test]
fn unanswered_requests_fall_back_to_discover() {
    let mut now = Instant::now();
    let (mut c, _) = to_requesting(now);
    for _ in 1..Config::default().request_attempts {
        now = c.deadline();
        let (p, _) = sent(c.on_timeout(now));
        assert_eq!(p.kind(), Some(MessageType::Request));
    }
    now = c.deadline();
    let (p, _) = sent(c.on_timeout(now));
    assert_eq!(p.kind(), Some(MessageType::Discover));
}

#[test]
fn renewal_is_unicast_request_with_ciaddr_and_ack_rebinds() {
    let t0 = Instant::now();
    let lease = granted_lease();
    let mut c = client(t0);
    let at_t1 = t0 + Duration::from_secs(60);
    let (p, until) = sent(c.renew(lease.clone(), t0, at_t1));
    assert_eq!(p.kind(), Some(MessageType::Request));
    assert_eq!(p.dest, Destination::Unicast(SERVER));
    assert_eq!(p.message.ciaddr(), OFFERED);
    assert!(p.message.opts().get(OptionCode::ServerIdentifier).is_none());
    assert!(p
        .message
        .opts()
        .get(OptionCode::RequestedIpAddress)
        .is_none());
    assert!(
        until <= t0 + Duration::from_secs(105),
        "never waits past T2"
    );
    let ack = reply(MessageType::Ack, c.xid(), SERVER);
    assert!(matches!(c.on_packet(&bytes(&ack), at_t1), Step::Bound(g) if g.addr == OFFERED));
}

#[test]
fn renewal_past_t2_broadcasts_and_past_expiry_is_lost() {
    let t0 = Instant::now();
    let lease = granted_lease();
    let mut c = client(t0);
    let (_, until) = sent(c.renew(lease, t0, t0 + Duration::from_secs(60)));
    assert_eq!(
        until,
        t0 + Duration::from_secs(105),
        "the 60s minimum is cut at T2"
    );
    let (p, until) = sent(c.on_timeout(until));
    assert_eq!(c.state_name(), "rebinding");
    assert_eq!(p.dest, Destination::Broadcast);
    assert_eq!(
        until,
        t0 + Duration::from_secs(120),
        "rebinding waits up to expiry"
    );
    assert!(matches!(c.on_timeout(until), Step::Lost(Lost::Expired)));
    assert_eq!(c.state_name(), "init");
}

#[test]
fn nak_while_renewing_loses_the_lease() {
    let t0 = Instant::now();
    let mut c = client(t0);
    sent(c.renew(granted_lease(), t0, t0 + Duration::from_secs(60)));
    let mut nak = reply(MessageType::Nak, c.xid(), SERVER);
    nak.opts_mut()
        .insert(DhcpOption::Message("wrong network".into()));
    match c.on_packet(&bytes(&nak), t0) {
        Step::Lost(Lost::Nak(Some(m))) => assert_eq!(m, "wrong network"),
        other => panic!("expected Lost(Nak), got {other:?}"),
    }
}

#[test]
fn missing_mask_and_timers_get_rfc_defaults() {
    let mut ack = reply(MessageType::Ack, 1, SERVER);
    ack.opts_mut().remove(OptionCode::SubnetMask);
    ack.opts_mut().remove(OptionCode::AddressLeaseTime);
    let g = granted(&ack, SERVER).unwrap();
    assert_eq!(g.prefix_len, 24, "192.x is class C");
    assert_eq!(g.lease_secs, u32::MAX);
    assert_eq!(g.t1_secs, u32::MAX / 2);
    ack.set_yiaddr(Ipv4Addr::UNSPECIFIED);
    assert_eq!(granted(&ack, SERVER), Err(Ignored::NoAddress));
}

/// The issue-15 packet: a BOOTREPLY with our xid and `hlen` 17..=255. dhcproto's `chaddr()`
/// slices its 16-byte array by `hlen`, so before the fix this panicked PID 1 in every state
/// that waits for a reply.
fn hostile_hlen_reply(xid: u32, hlen: u8) -> Vec<u8> {
    let mut raw = bytes(&reply(MessageType::Offer, xid, SERVER));
    raw[2] = hlen; // op, htype, hlen (RFC 2131 §2)
    raw
}

#[test]
fn reply_with_hlen_over_16_is_ignored_in_every_waiting_state() {
    let now = Instant::now();
    for hlen in [0u8, 5, 7, 16, 17, 64, 255] {
        // SELECTING
        let mut c = client(now);
        let (discover, _) = sent(c.start(now));
        let step = c.on_packet(&hostile_hlen_reply(discover.message.xid(), hlen), now);
        assert!(
            matches!(step, Step::Wait { ignored: Ignored::BadHardwareAddress { hlen: h }, .. } if h == hlen),
            "selecting, hlen {hlen}: {step:?}"
        );
        // REQUESTING
        let (mut c, request) = to_requesting(now);
        let step = c.on_packet(&hostile_hlen_reply(request.message.xid(), hlen), now);
        assert!(matches!(
            step,
            Step::Wait {
                ignored: Ignored::BadHardwareAddress { .. },
                ..
            }
        ));
        // RENEWING
        let mut c = client(now);
        let (renew, _) = sent(c.renew(granted_lease(), now, now));
        let step = c.on_packet(&hostile_hlen_reply(renew.message.xid(), hlen), now);
        assert!(matches!(
            step,
            Step::Wait {
                ignored: Ignored::BadHardwareAddress { .. },
                ..
            }
        ));
    }
    // Positive control: the same packet with hlen 6 is taken.
    let mut c = client(now);
    let (discover, _) = sent(c.start(now));
    let step = c.on_packet(&hostile_hlen_reply(discover.message.xid(), 6), now);
    assert!(matches!(step, Step::Send { .. }), "{step:?}");
}

/// An OFFER from `SERVER` with one change made by `edit`.
fn edited_offer(xid: u32, edit: impl FnOnce(&mut Message)) -> Vec<u8> {
    let mut m = reply(MessageType::Offer, xid, SERVER);
    edit(&mut m);
    bytes(&m)
}

#[test]
fn offers_with_insane_address_mask_router_or_server_id_are_ignored() {
    let now = Instant::now();
    let ip = Ipv4Addr::new;
    type Edit<'a> = Box<dyn Fn(&mut Message) + 'a>;
    let bad: Vec<(Edit<'_>, BadLease)> = vec![
        (
            Box::new(|m: &mut Message| {
                m.set_yiaddr(Ipv4Addr::BROADCAST);
            }),
            BadLease::Address(Ipv4Addr::BROADCAST),
        ),
        (
            Box::new(|m: &mut Message| {
                m.set_yiaddr(ip(224, 0, 0, 251));
            }),
            BadLease::Address(ip(224, 0, 0, 251)),
        ),
        (
            Box::new(|m: &mut Message| {
                m.set_yiaddr(ip(127, 0, 0, 1));
            }),
            BadLease::Address(ip(127, 0, 0, 1)),
        ),
        (
            Box::new(|m: &mut Message| {
                m.set_yiaddr(ip(240, 1, 2, 3));
            }),
            BadLease::Address(ip(240, 1, 2, 3)),
        ),
        (
            Box::new(|m: &mut Message| {
                m.set_yiaddr(ip(192, 0, 2, 0));
            }),
            BadLease::Address(ip(192, 0, 2, 0)),
        ),
        (
            Box::new(|m: &mut Message| {
                m.set_yiaddr(ip(192, 0, 2, 255));
            }),
            BadLease::Address(ip(192, 0, 2, 255)),
        ),
        (
            Box::new(|m: &mut Message| {
                m.opts_mut()
                    .insert(DhcpOption::SubnetMask(ip(255, 0, 255, 0)));
            }),
            BadLease::Mask(ip(255, 0, 255, 0)),
        ),
        (
            Box::new(|m: &mut Message| {
                m.opts_mut()
                    .insert(DhcpOption::SubnetMask(Ipv4Addr::UNSPECIFIED));
            }),
            BadLease::Mask(Ipv4Addr::UNSPECIFIED),
        ),
        (
            Box::new(|m: &mut Message| {
                m.opts_mut()
                    .insert(DhcpOption::Router(vec![ip(198, 51, 100, 1)]));
            }),
            BadLease::Router(ip(198, 51, 100, 1)),
        ),
        (
            Box::new(|m: &mut Message| {
                m.opts_mut().insert(DhcpOption::Router(vec![OFFERED]));
            }),
            BadLease::Router(OFFERED),
        ),
        (
            Box::new(|m: &mut Message| {
                m.opts_mut()
                    .insert(DhcpOption::Router(vec![Ipv4Addr::BROADCAST]));
            }),
            BadLease::Router(Ipv4Addr::BROADCAST),
        ),
        (
            Box::new(|m: &mut Message| {
                m.opts_mut()
                    .insert(DhcpOption::ServerIdentifier(Ipv4Addr::UNSPECIFIED));
            }),
            BadLease::ServerId(Ipv4Addr::UNSPECIFIED),
        ),
        (
            Box::new(|m: &mut Message| {
                m.opts_mut()
                    .insert(DhcpOption::ServerIdentifier(ip(224, 0, 0, 1)));
            }),
            BadLease::ServerId(ip(224, 0, 0, 1)),
        ),
    ];
    for (edit, want) in bad {
        let mut c = client(now);
        let (discover, _) = sent(c.start(now));
        let step = c.on_packet(&edited_offer(discover.message.xid(), edit), now);
        assert!(
            matches!(&step, Step::Wait { ignored: Ignored::BadLease(got), .. } if *got == want),
            "{want:?}: {step:?}"
        );
        assert_eq!(c.state_name(), "selecting");
        // The honest OFFER that follows is still taken.
        let honest = reply(MessageType::Offer, discover.message.xid(), SERVER);
        assert!(matches!(
            c.on_packet(&bytes(&honest), now),
            Step::Send { .. }
        ));
        assert_eq!(c.state_name(), "requesting");
    }
}

#[test]
fn an_ack_with_an_insane_address_does_not_bind() {
    let now = Instant::now();
    let (mut c, request) = to_requesting(now);
    let mut ack = reply(MessageType::Ack, request.message.xid(), SERVER);
    ack.set_yiaddr(Ipv4Addr::BROADCAST);
    let step = c.on_packet(&bytes(&ack), now);
    assert!(
        matches!(
            step,
            Step::Wait {
                ignored: Ignored::BadLease(BadLease::Address(_)),
                ..
            }
        ),
        "{step:?}"
    );
    assert_eq!(c.state_name(), "requesting");
}

#[test]
fn slash_31_and_32_leases_and_classful_defaults_are_accepted() {
    for (mask, yiaddr, router) in [
        (
            Ipv4Addr::new(255, 255, 255, 254),
            Ipv4Addr::new(192, 0, 2, 0),
            Some(Ipv4Addr::new(192, 0, 2, 1)),
        ),
        (Ipv4Addr::BROADCAST, Ipv4Addr::new(192, 0, 2, 7), None),
    ] {
        let mut ack = reply(MessageType::Ack, 1, SERVER);
        ack.set_yiaddr(yiaddr);
        ack.opts_mut().insert(DhcpOption::SubnetMask(mask));
        match router {
            Some(r) => ack.opts_mut().insert(DhcpOption::Router(vec![r])),
            None => ack.opts_mut().remove(OptionCode::Router),
        };
        let g = granted(&ack, SERVER).unwrap();
        assert_eq!(g.addr, yiaddr);
        assert_eq!(g.router, router);
    }
}

/// Lease timers of an ACK with options 51/58/59 set to `lease`, `t1`, `t2` (None: absent).
fn timers(lease: Option<u32>, t1: Option<u32>, t2: Option<u32>) -> (u32, u32, u32) {
    let mut ack = reply(MessageType::Ack, 1, SERVER);
    ack.opts_mut().remove(OptionCode::AddressLeaseTime);
    if let Some(v) = lease {
        ack.opts_mut().insert(DhcpOption::AddressLeaseTime(v));
    }
    if let Some(v) = t1 {
        ack.opts_mut().insert(DhcpOption::Renewal(v));
    }
    if let Some(v) = t2 {
        ack.opts_mut().insert(DhcpOption::Rebinding(v));
    }
    let g = granted(&ack, SERVER).unwrap();
    (g.lease_secs, g.t1_secs, g.t2_secs)
}

#[test]
fn lease_timer_edge_cases_get_sane_values() {
    // A zero (or tiny) lease would make the client renew in a tight loop.
    assert_eq!(timers(Some(0), None, None), (MIN_LEASE_SECS, 30, 52));
    assert_eq!(timers(Some(1), Some(0), Some(0)), (MIN_LEASE_SECS, 30, 52));
    // T1 past the lease, T2 before T1: RFC 2131 §4.4.5 defaults.
    assert_eq!(timers(Some(3600), Some(7200), None), (3600, 1800, 3150));
    assert_eq!(
        timers(Some(3600), Some(1000), Some(500)),
        (3600, 1000, 3150)
    );
    assert_eq!(timers(Some(3600), Some(0), Some(9999)), (3600, 1800, 3150));
    // Sane values are kept.
    assert_eq!(
        timers(Some(3600), Some(1000), Some(2000)),
        (3600, 1000, 2000)
    );
    // Infinite lease.
    assert_eq!(
        timers(Some(u32::MAX), None, None),
        (u32::MAX, u32::MAX / 2, (u64::from(u32::MAX) * 7 / 8) as u32)
    );
}

#[test]
fn ack_and_nak_from_another_server_are_ignored_while_renewing() {
    let now = Instant::now();
    let mut c = client(now);
    let (renew, _) = sent(c.renew(granted_lease(), now, now));
    for kind in [MessageType::Ack, MessageType::Nak] {
        let other = reply(kind, renew.message.xid(), SERVER2);
        let step = c.on_packet(&bytes(&other), now);
        assert!(
            matches!(step, Step::Wait { ignored: Ignored::OtherServer(s), .. } if s == SERVER2),
            "{kind:?}: {step:?}"
        );
        assert_eq!(c.state_name(), "renewing");
    }
    // Positive control: the selected server's ACK binds.
    let ack = reply(MessageType::Ack, renew.message.xid(), SERVER);
    assert!(matches!(c.on_packet(&bytes(&ack), now), Step::Bound(_)));
}

/// Found by the state-machine proptest: option 93 (BulkLeaseQueryQueryStartTime) with a length
/// other than 4 tripped a `debug_assert!` in dhcproto's decoder.
#[test]
fn options_the_client_does_not_read_are_dropped_before_decoding() {
    let now = Instant::now();
    let mut c = client(now);
    let (discover, _) = sent(c.start(now));
    let mut raw = bytes(&reply(MessageType::Offer, discover.message.xid(), SERVER));
    // Replace End with: 93 len 1, 81 len 0, 80 len 3, 151 len 0, a truncated 43, End.
    assert_eq!(raw.pop(), Some(255));
    raw.extend_from_slice(&[93, 1, 0, 81, 0, 80, 3, 1, 2, 3, 151, 0, 255]);
    let step = c.on_packet(&raw, now);
    assert!(matches!(step, Step::Send { .. }), "{step:?}");
    // A truncated option ends the walk; what came before still counts.
    let (mut c, _) = (client(now), ());
    let (discover, _) = sent(c.start(now));
    let mut raw = bytes(&reply(MessageType::Offer, discover.message.xid(), SERVER));
    raw.pop();
    raw.extend_from_slice(&[43, 200, 1, 2]);
    assert!(matches!(c.on_packet(&raw, now), Step::Send { .. }));
    // Shorter than the header: malformed, not a panic.
    assert!(matches!(
        c.on_packet(&raw[..239], now),
        Step::Wait {
            ignored: Ignored::Malformed(_),
            ..
        }
    ));
}

mod state_machine {
    //! proptest over the whole machine (issue 15 §1): random reply sequences and timeouts never
    //! panic, and nothing binds without a unicast server id and sane timers.
    use super::*;
    use proptest::prelude::*;

    /// What a generated reply looks like (kind index, our xid or not, server index, yiaddr,
    /// hlen, options dropped by bitmask, option 51 and 58).
    #[derive(Debug, Clone)]
    struct Fields {
        kind: u8,
        our_xid: bool,
        server: u8,
        yiaddr: u32,
        hlen: u8,
        drop: u8,
        lease: Option<u32>,
        t1: Option<u32>,
    }

    /// One event fed to the client.
    #[derive(Debug, Clone)]
    enum Event {
        /// A well-formed reply (kind index, our xid or not, server index, yiaddr, hlen, options
        /// dropped by bitmask).
        Reply(Fields),
        /// Arbitrary bytes.
        Raw(Vec<u8>),
        /// A well-formed reply cut short after `n` bytes.
        Truncated(usize),
        /// The deadline passes, plus `ms`.
        Timeout(u16),
        /// Start a renewal of a fixed lease.
        Renew,
    }

    fn event() -> impl Strategy<Value = Event> {
        prop_oneof![
            4 => (0u8..8, any::<bool>(), 0u8..4, any::<u32>(), prop_oneof![Just(6u8), any::<u8>()], any::<u8>(),
                  proptest::option::of(any::<u32>()), proptest::option::of(any::<u32>()))
                .prop_map(|(kind, our_xid, server, yiaddr, hlen, drop, lease, t1)| Event::Reply(Fields { kind, our_xid, server, yiaddr, hlen, drop, lease, t1 })),
            1 => proptest::collection::vec(any::<u8>(), 0..400).prop_map(Event::Raw),
            1 => (0usize..300).prop_map(Event::Truncated),
            2 => any::<u16>().prop_map(Event::Timeout),
            1 => Just(Event::Renew),
        ]
    }

    const KINDS: [MessageType; 8] = [
        MessageType::Offer,
        MessageType::Ack,
        MessageType::Nak,
        MessageType::Discover,
        MessageType::Request,
        MessageType::Decline,
        MessageType::Release,
        MessageType::Inform,
    ];
    const SERVERS: [Ipv4Addr; 4] = [SERVER, SERVER2, Ipv4Addr::UNSPECIFIED, Ipv4Addr::BROADCAST];

    fn reply_bytes(c: &Client, f: &Fields) -> Vec<u8> {
        let Fields {
            kind,
            our_xid,
            server,
            yiaddr,
            hlen,
            drop,
            lease,
            t1,
        } = f.clone();
        let xid = if our_xid {
            c.xid()
        } else {
            c.xid().wrapping_add(1)
        };
        let mut m = reply(
            KINDS[usize::from(kind % 8)],
            xid,
            SERVERS[usize::from(server % 4)],
        );
        // Mostly the usual address, sometimes any.
        if yiaddr % 3 != 0 {
            m.set_yiaddr(Ipv4Addr::from(yiaddr));
        }
        let codes = [
            OptionCode::ServerIdentifier,
            OptionCode::SubnetMask,
            OptionCode::Router,
            OptionCode::MessageType,
            OptionCode::AddressLeaseTime,
        ];
        for (i, code) in codes.iter().enumerate() {
            if drop & (1 << i) != 0 {
                m.opts_mut().remove(*code);
            }
        }
        if let Some(v) = lease {
            m.opts_mut().insert(DhcpOption::AddressLeaseTime(v));
        }
        if let Some(v) = t1 {
            m.opts_mut().insert(DhcpOption::Renewal(v));
        }
        let mut raw = bytes(&m);
        raw[2] = hlen;
        raw
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]
        #[test]
        fn random_replies_and_timeouts_never_panic_or_bind_without_a_server_id(
            events in proptest::collection::vec(event(), 1..40)
        ) {
            let t0 = Instant::now();
            let mut now = t0;
            let mut c = client(now);
            let _ = c.start(now);
            for e in events {
                let step = match e {
                    Event::Reply(f) => c.on_packet(&reply_bytes(&c, &f), now),
                    Event::Raw(raw) => c.on_packet(&raw, now),
                    Event::Truncated(n) => {
                        let f = Fields { kind: 0, our_xid: true, server: 0, yiaddr: 1, hlen: 6, drop: 0, lease: None, t1: None };
                        let raw = reply_bytes(&c, &f);
                        c.on_packet(&raw[..n.min(raw.len())], now)
                    }
                    Event::Timeout(ms) => {
                        now = c.deadline().max(now) + Duration::from_millis(u64::from(ms));
                        c.on_timeout(now)
                    }
                    Event::Renew => c.renew(granted_lease(), now, now),
                };
                if let Step::Bound(g) = step {
                    prop_assert!(SERVERS[..2].contains(&g.server_id), "bound with server id {}", g.server_id);
                    prop_assert!(is_unicast(g.addr), "bound to {}", g.addr);
                    prop_assert!(g.lease_secs >= MIN_LEASE_SECS);
                    prop_assert!(g.t1_secs > 0 && g.t1_secs <= g.t2_secs && g.t2_secs <= g.lease_secs);
                    prop_assert!(g.prefix_len >= 1 && g.prefix_len <= 32);
                    let _ = c.start(now);
                }
            }
        }
    }
}
