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
    assert!(granted(&ack, SERVER).is_none());
}
