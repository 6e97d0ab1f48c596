//! DHCPv4 client state machine (RFC 2131 §4.4), pure: no sockets, no clock, no randomness of
//! its own beyond a seeded generator.
//!
//! Boot flow: after the link is up ([`super::link`]), [`super::bring_up`] drives a [`Client`]
//! through INIT -> SELECTING -> REQUESTING -> BOUND over a UDP socket ([`super::socket`]); in the
//! target stage [`super::renew`] drives the same machine through RENEWING (unicast to the
//! server at T1) and REBINDING (broadcast at T2).
//!
//! Inputs are received datagrams ([`Client::on_packet`]) and timer expiries
//! ([`Client::on_timeout`]); outputs are [`Step`]s: a packet to send with the next deadline, a
//! reason a packet was ignored, or the outcome (bound, lease lost). Messages are built and parsed
//! with `dhcproto`.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use dhcproto::v4::{DhcpOption, Flags, Message, MessageType, Opcode, OptionCode};
use dhcproto::{Decodable, Encodable};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// UDP port of DHCP servers (RFC 2131 §4.1).
pub const SERVER_PORT: u16 = 67;
/// UDP port of DHCP clients (RFC 2131 §4.1).
pub const CLIENT_PORT: u16 = 68;

/// Retransmission settings of a [`Client`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Wait after the first DISCOVER/REQUEST before retransmitting (RFC 2131 §4.1 uses 4 s;
    /// a boot loader wants less). Doubled after each retransmission.
    pub initial_backoff: Duration,
    /// Upper bound of the doubled wait (RFC 2131 §4.1: 64 s).
    pub max_backoff: Duration,
    /// Each wait is moved by a uniform random offset in `[-jitter, +jitter]` (RFC 2131: ±1 s),
    /// so a rack of machines powered on together does not retransmit in lockstep.
    pub jitter: Duration,
    /// REQUESTs sent in REQUESTING without an answer before starting over with DISCOVER.
    pub request_attempts: u32,
    /// Lower bound of the retransmission wait in RENEWING and REBINDING (RFC 2131 §4.4.5: 60 s).
    pub renew_min_retransmit: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(16),
            jitter: Duration::from_millis(500),
            request_attempts: 4,
            renew_min_retransmit: Duration::from_secs(60),
        }
    }
}

/// Where an [`Outgoing`] packet goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Destination {
    /// 255.255.255.255:67 (DISCOVER, REQUEST while selecting or rebinding).
    Broadcast,
    /// The server's address, port 67 (REQUEST while renewing).
    Unicast(Ipv4Addr),
}

/// A DHCP message to send and where to send it.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// The message (op BOOTREQUEST, our xid and chaddr).
    pub message: Message,
    /// Broadcast or unicast to the server.
    pub dest: Destination,
}

impl Outgoing {
    /// The message's wire bytes. Errors: `dhcproto`'s encoder error (an option too long).
    pub fn encode(&self) -> Result<Vec<u8>, dhcproto::error::EncodeError> {
        self.message.to_vec()
    }

    /// The DHCP message type (DISCOVER, REQUEST), if set.
    pub fn kind(&self) -> Option<MessageType> {
        self.message.opts().msg_type()
    }
}

/// What an ACK granted: the parameters a [`super::Lease`] is made of (RFC 2132 options). Its
/// JSON form (field names as here) is part of the lease handover ([`super::handover`]).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Granted {
    /// `yiaddr` of the ACK.
    pub addr: Ipv4Addr,
    /// Prefix length from option 1 (subnet mask); the classful default when absent.
    pub prefix_len: u8,
    /// First address of option 3 (router).
    pub router: Option<Ipv4Addr>,
    /// Option 6 (domain name servers).
    pub dns: Vec<Ipv4Addr>,
    /// Option 42 (NTP servers).
    pub ntp: Vec<Ipv4Addr>,
    /// Option 12 (host name).
    pub hostname: Option<String>,
    /// Option 54 (server identifier).
    pub server_id: Ipv4Addr,
    /// Option 51, seconds; `u32::MAX` means infinite (RFC 2132 §9.2).
    pub lease_secs: u32,
    /// Option 58, seconds; 0.5 × lease when absent (RFC 2131 §4.4.5).
    pub t1_secs: u32,
    /// Option 59, seconds; 0.875 × lease when absent (RFC 2131 §4.4.5).
    pub t2_secs: u32,
}

/// Why a received datagram did not change the state (the client keeps waiting).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ignored {
    /// `dhcproto` could not decode it.
    Malformed(String),
    /// Not a BOOTREPLY (our own broadcast looped back, another client).
    NotReply,
    /// Transaction id of another exchange.
    WrongXid {
        /// Our current xid.
        expected: u32,
        /// The packet's xid.
        got: u32,
    },
    /// `chaddr` is not our hardware address.
    WrongChaddr,
    /// `htype`/`hlen` do not describe an Ethernet address: `hlen` over the 16 bytes `chaddr`
    /// holds (which `dhcproto`'s `chaddr()` would slice past and panic on) or not 6.
    BadHardwareAddress {
        /// The packet's `hlen`, bytes.
        hlen: u8,
    },
    /// A message type this state does not expect (an OFFER while requesting, a duplicate ACK).
    Unexpected(Option<MessageType>),
    /// An OFFER/ACK/NAK without option 54.
    MissingServerId,
    /// From a server other than the one we requested from (a second server's late OFFER).
    OtherServer(Ipv4Addr),
    /// An OFFER or ACK with `yiaddr` 0.0.0.0.
    NoAddress,
    /// An OFFER or ACK whose parameters no sane network has (see [`BadLease`]).
    BadLease(BadLease),
    /// The client is not waiting for anything (INIT or BOUND).
    Idle,
}

/// Why the parameters of an OFFER or ACK were refused (a rogue or broken server). The honest
/// server's reply is still waited for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BadLease {
    /// `yiaddr` is not a usable unicast host address (0.0.0.0, 255.255.255.255, multicast,
    /// loopback, 240.0.0.0/4, or the network/broadcast address of its own subnet).
    #[error("yiaddr {0} is not a unicast host address")]
    Address(Ipv4Addr),
    /// Option 1 is not a contiguous mask of /1../32.
    #[error("subnet mask {0} is not a contiguous prefix of 1..=32 bits")]
    Mask(Ipv4Addr),
    /// Option 3's first router is not a unicast address in the leased subnet, or is the
    /// leased address itself.
    #[error("router {0} is not a unicast address in the leased subnet")]
    Router(Ipv4Addr),
    /// Option 54 is not a unicast address.
    #[error("server identifier {0} is not a unicast address")]
    ServerId(Ipv4Addr),
}

/// Why a bound lease was lost; the caller removes the address and starts over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lost {
    /// The server answered the renewal with a NAK (option 56 message, if any).
    Nak(Option<String>),
    /// Neither the server (T1..T2) nor any server (T2..expiry) answered in time.
    Expired,
}

/// One output of the machine.
#[derive(Debug, Clone)]
pub enum Step {
    /// Send `packet`, then wait for a reply or for the deadline `until`.
    Send {
        /// The message to send.
        packet: Outgoing,
        /// When to call [`Client::on_timeout`] if no useful packet arrived.
        until: Instant,
    },
    /// The packet was ignored; keep waiting until `until` (unchanged).
    Wait {
        /// The current deadline.
        until: Instant,
        /// Why the packet did not count.
        ignored: Ignored,
    },
    /// An ACK was accepted: the lease is bound (from REQUESTING, RENEWING or REBINDING).
    Bound(Granted),
    /// The lease is lost (NAK while renewing/rebinding, or expiry); the client is back in INIT.
    Lost(Lost),
}

/// RFC 2131 client states (figure 5), with the data each needs.
#[derive(Debug, Clone)]
enum State {
    Init,
    Selecting {
        attempts: u32,
    },
    Requesting {
        server_id: Ipv4Addr,
        offered: Ipv4Addr,
        attempts: u32,
    },
    Bound,
    Renewing {
        lease: Granted,
        bound_at: Instant,
    },
    Rebinding {
        lease: Granted,
        bound_at: Instant,
    },
}

/// The DHCPv4 client of one interface. See the module docs for the flow.
#[derive(Debug)]
pub struct Client {
    mac: [u8; 6],
    cfg: Config,
    rng: StdRng,
    xid: u32,
    state: State,
    started: Instant,
    deadline: Instant,
}

/// Options asked for in option 55 (issue 6 §4: subnet, router, DNS, lease time, T1/T2,
/// hostname, NTP, server id).
const REQUESTED: [OptionCode; 9] = [
    OptionCode::SubnetMask,
    OptionCode::Router,
    OptionCode::DomainNameServer,
    OptionCode::Hostname,
    OptionCode::DomainName,
    OptionCode::AddressLeaseTime,
    OptionCode::Renewal,
    OptionCode::Rebinding,
    OptionCode::NtpServers,
];

impl Client {
    /// A client in INIT for hardware address `mac`; `seed` feeds the xid and jitter generator
    /// (random in production, fixed in tests). `now` is the current time.
    pub fn new(mac: [u8; 6], cfg: Config, seed: u64, now: Instant) -> Client {
        let mut rng = StdRng::seed_from_u64(seed);
        let xid = rng.gen();
        Client {
            mac,
            cfg,
            rng,
            xid,
            state: State::Init,
            started: now,
            deadline: now,
        }
    }

    /// The transaction id of the current exchange.
    pub fn xid(&self) -> u32 {
        self.xid
    }

    /// The current deadline (when [`Client::on_timeout`] is due).
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Short state name for logs (`init`, `selecting`, `requesting`, `bound`, `renewing`,
    /// `rebinding`).
    pub fn state_name(&self) -> &'static str {
        match self.state {
            State::Init => "init",
            State::Selecting { .. } => "selecting",
            State::Requesting { .. } => "requesting",
            State::Bound => "bound",
            State::Renewing { .. } => "renewing",
            State::Rebinding { .. } => "rebinding",
        }
    }

    /// INIT -> SELECTING: a new xid and a broadcast DISCOVER.
    pub fn start(&mut self, now: Instant) -> Step {
        self.xid = self.rng.gen();
        self.started = now;
        self.state = State::Selecting { attempts: 1 };
        self.send_discover(now, 1)
    }

    /// BOUND -> RENEWING at T1: a unicast REQUEST (ciaddr = our address, no option 50/54) to
    /// the server of `lease`, which was bound at `bound_at`. Past T2 it goes to REBINDING
    /// instead, past expiry it returns [`Step::Lost`].
    pub fn renew(&mut self, lease: Granted, bound_at: Instant, now: Instant) -> Step {
        self.xid = self.rng.gen();
        self.started = now;
        self.state = State::Renewing { lease, bound_at };
        self.renewal_step(now)
    }

    /// Handles a received datagram (any source; everything is checked here).
    pub fn on_packet(&mut self, bytes: &[u8], now: Instant) -> Step {
        match self.check(bytes) {
            Ok(msg) => self.on_reply(&msg, now),
            Err(ignored) => self.wait(ignored),
        }
    }

    /// Handles the deadline passing without a useful reply: retransmit with backoff, give up on
    /// an unanswered REQUEST (back to DISCOVER), move from RENEWING to REBINDING at T2, or
    /// report expiry.
    pub fn on_timeout(&mut self, now: Instant) -> Step {
        match self.state.clone() {
            State::Init | State::Bound => self.wait(Ignored::Idle),
            State::Selecting { attempts } => {
                self.state = State::Selecting {
                    attempts: attempts + 1,
                };
                self.send_discover(now, attempts + 1)
            }
            State::Requesting {
                server_id,
                offered,
                attempts,
            } => {
                if attempts >= self.cfg.request_attempts {
                    return self.start(now);
                }
                self.state = State::Requesting {
                    server_id,
                    offered,
                    attempts: attempts + 1,
                };
                self.send_request(server_id, offered, now, attempts + 1)
            }
            State::Renewing { .. } | State::Rebinding { .. } => self.renewal_step(now),
        }
    }

    /// Decodes (only the options this client reads: [`retain_read_options`]) and checks op,
    /// xid and chaddr.
    fn check(&self, bytes: &[u8]) -> Result<Message, Ignored> {
        let bytes = retain_read_options(bytes)?;
        let msg = Message::from_bytes(&bytes).map_err(|e| Ignored::Malformed(e.to_string()))?;
        if msg.opcode() != Opcode::BootReply {
            return Err(Ignored::NotReply);
        }
        if msg.xid() != self.xid {
            return Err(Ignored::WrongXid {
                expected: self.xid,
                got: msg.xid(),
            });
        }
        // dhcproto's chaddr() slices its 16-byte array by hlen: check hlen first (a hostile
        // BOOTREPLY with our xid and hlen > 16 panicked PID 1 here, issue 15).
        if usize::from(msg.hlen()) != self.mac.len() {
            return Err(Ignored::BadHardwareAddress { hlen: msg.hlen() });
        }
        if msg.chaddr() != self.mac {
            return Err(Ignored::WrongChaddr);
        }
        Ok(msg)
    }

    fn on_reply(&mut self, msg: &Message, now: Instant) -> Step {
        let kind = msg.opts().msg_type();
        let Some(server) = server_id(msg) else {
            return self.wait(Ignored::MissingServerId);
        };
        if !is_unicast(server) {
            return self.wait(Ignored::BadLease(BadLease::ServerId(server)));
        }
        match (self.state.clone(), kind) {
            (State::Selecting { .. }, Some(MessageType::Offer)) => {
                let offered = msg.yiaddr();
                if offered.is_unspecified() {
                    return self.wait(Ignored::NoAddress);
                }
                // An OFFER whose address, mask or router is insane is not taken: the honest
                // server's OFFER may still come.
                if let Err(bad) = granted(msg, server) {
                    return self.wait(bad);
                }
                // First valid OFFER wins (RFC 2131 §4.4.1 lets the client choose; waiting for
                // more only slows the boot).
                self.state = State::Requesting {
                    server_id: server,
                    offered,
                    attempts: 1,
                };
                self.send_request(server, offered, now, 1)
            }
            (State::Requesting { server_id, .. }, Some(MessageType::Ack)) => {
                if server != server_id {
                    return self.wait(Ignored::OtherServer(server));
                }
                self.bind(msg, server)
            }
            (State::Requesting { server_id, .. }, Some(MessageType::Nak)) => {
                if server != server_id {
                    return self.wait(Ignored::OtherServer(server));
                }
                self.start(now)
            }
            (State::Renewing { lease, .. }, Some(MessageType::Ack | MessageType::Nak))
                if server != lease.server_id =>
            {
                self.wait(Ignored::OtherServer(server))
            }
            (State::Renewing { .. } | State::Rebinding { .. }, Some(MessageType::Ack)) => {
                self.bind(msg, server)
            }
            (State::Renewing { .. } | State::Rebinding { .. }, Some(MessageType::Nak)) => {
                self.state = State::Init;
                Step::Lost(Lost::Nak(nak_message(msg)))
            }
            (State::Init | State::Bound, _) => self.wait(Ignored::Idle),
            (_, kind) => self.wait(Ignored::Unexpected(kind)),
        }
    }

    fn bind(&mut self, msg: &Message, server: Ipv4Addr) -> Step {
        match granted(msg, server) {
            Ok(g) => {
                self.state = State::Bound;
                Step::Bound(g)
            }
            Err(ignored) => self.wait(ignored),
        }
    }

    /// RENEWING/REBINDING timer logic (RFC 2131 §4.4.5).
    fn renewal_step(&mut self, now: Instant) -> Step {
        let (lease, bound_at) = match &self.state {
            State::Renewing { lease, bound_at } | State::Rebinding { lease, bound_at } => {
                (lease.clone(), *bound_at)
            }
            _ => return self.wait(Ignored::Idle),
        };
        let t2 = bound_at + secs(lease.t2_secs);
        let expiry = bound_at + secs(lease.lease_secs);
        if now >= expiry {
            self.state = State::Init;
            return Step::Lost(Lost::Expired);
        }
        let (dest, end) = if now < t2 {
            (Destination::Unicast(lease.server_id), t2)
        } else {
            self.state = State::Rebinding {
                lease: lease.clone(),
                bound_at,
            };
            (Destination::Broadcast, expiry)
        };
        // Half the remaining time, at least the configured minimum, never past `end`.
        let wait = (end.saturating_duration_since(now) / 2).max(self.cfg.renew_min_retransmit);
        let until = (now + wait).min(end);
        let mut m = self.base(MessageType::Request, now);
        m.set_ciaddr(lease.addr);
        self.deadline = until;
        Step::Send {
            packet: Outgoing { message: m, dest },
            until,
        }
    }

    fn send_discover(&mut self, now: Instant, attempt: u32) -> Step {
        let mut m = self.base(MessageType::Discover, now);
        m.set_flags(Flags::default().set_broadcast());
        self.send_broadcast(m, now, attempt)
    }

    fn send_request(
        &mut self,
        server: Ipv4Addr,
        offered: Ipv4Addr,
        now: Instant,
        attempt: u32,
    ) -> Step {
        let mut m = self.base(MessageType::Request, now);
        m.set_flags(Flags::default().set_broadcast());
        m.opts_mut().insert(DhcpOption::RequestedIpAddress(offered));
        m.opts_mut().insert(DhcpOption::ServerIdentifier(server));
        self.send_broadcast(m, now, attempt)
    }

    fn send_broadcast(&mut self, message: Message, now: Instant, attempt: u32) -> Step {
        let until = now + self.backoff(attempt);
        self.deadline = until;
        Step::Send {
            packet: Outgoing {
                message,
                dest: Destination::Broadcast,
            },
            until,
        }
    }

    /// `initial × 2^(attempt-1)`, capped, plus jitter; never below 100 ms.
    fn backoff(&mut self, attempt: u32) -> Duration {
        let shift = attempt.saturating_sub(1).min(16);
        let base = self
            .cfg
            .initial_backoff
            .saturating_mul(1 << shift)
            .min(self.cfg.max_backoff);
        let j = self.cfg.jitter.as_millis() as i64;
        let offset = if j > 0 { self.rng.gen_range(-j..=j) } else { 0 };
        let ms = (base.as_millis() as i64 + offset).max(100);
        Duration::from_millis(ms as u64)
    }

    fn base(&self, kind: MessageType, now: Instant) -> Message {
        let mut m = Message::default();
        m.set_opcode(Opcode::BootRequest)
            .set_xid(self.xid)
            .set_chaddr(&self.mac)
            .set_secs(
                u16::try_from(now.saturating_duration_since(self.started).as_secs())
                    .unwrap_or(u16::MAX),
            );
        let mut client_id = vec![1u8];
        client_id.extend_from_slice(&self.mac);
        let opts = m.opts_mut();
        opts.insert(DhcpOption::MessageType(kind));
        opts.insert(DhcpOption::ClientIdentifier(client_id));
        opts.insert(DhcpOption::ParameterRequestList(REQUESTED.to_vec()));
        opts.insert(DhcpOption::MaxMessageSize(1500));
        m
    }

    fn wait(&self, ignored: Ignored) -> Step {
        Step::Wait {
            until: self.deadline,
            ignored,
        }
    }
}

/// Length of the fixed BOOTP header plus the magic cookie, bytes (RFC 2131 §3, figure 1).
const OPTIONS_START: usize = 240;

/// Options this client reads from a reply (RFC 2132): everything else is dropped before
/// `dhcproto` decodes the packet.
const READ_OPTIONS: [u8; 12] = [1, 3, 6, 12, 15, 42, 51, 53, 54, 56, 58, 59];

/// A copy of the reply `bytes` whose options field holds only [`READ_OPTIONS`], ended by an
/// End option. `dhcproto`'s decoder has `debug_assert!`s on the length of options this client
/// never uses (91-94, 80, 81...), and an allowlist keeps any such decoder path out of PID 1's
/// reach. A truncated option ends the walk (what came before it is kept).
///
/// # Errors
/// [`Ignored::Malformed`] when `bytes` is shorter than the header and magic cookie.
fn retain_read_options(bytes: &[u8]) -> Result<Vec<u8>, Ignored> {
    let (Some(head), Some(mut rest)) = (bytes.get(..OPTIONS_START), bytes.get(OPTIONS_START..))
    else {
        return Err(Ignored::Malformed(format!(
            "{} bytes, shorter than the {OPTIONS_START}-byte header",
            bytes.len()
        )));
    };
    let mut out = head.to_vec();
    while let Some((&code, tail)) = rest.split_first() {
        match code {
            0 => rest = tail,
            255 => break,
            _ => {
                let Some((&len, tail)) = tail.split_first() else {
                    break;
                };
                let Some(value) = tail.get(..usize::from(len)) else {
                    break;
                };
                if READ_OPTIONS.contains(&code) {
                    out.extend_from_slice(&[code, len]);
                    out.extend_from_slice(value);
                }
                rest = tail.get(usize::from(len)..).unwrap_or_default();
            }
        }
    }
    out.push(255);
    Ok(out)
}

fn secs(s: u32) -> Duration {
    Duration::from_secs(u64::from(s))
}

fn server_id(msg: &Message) -> Option<Ipv4Addr> {
    match msg.opts().get(OptionCode::ServerIdentifier) {
        Some(DhcpOption::ServerIdentifier(ip)) => Some(*ip),
        _ => None,
    }
}

fn nak_message(msg: &Message) -> Option<String> {
    match msg.opts().get(OptionCode::Message) {
        Some(DhcpOption::Message(s)) => Some(s.clone()),
        _ => None,
    }
}

/// Shortest lease accepted, seconds: a shorter option 51 (0 included) is raised to this, so a
/// server cannot make the client renew in a tight loop.
pub const MIN_LEASE_SECS: u32 = 60;

/// Reads and checks the lease parameters of an OFFER or ACK (RFC 2132 options 1, 3, 6, 12, 42,
/// 51, 58, 59).
///
/// Timers: option 51 below [`MIN_LEASE_SECS`] is raised to it; a T1 that is 0 or not below the
/// lease, and a T2 that is not in `T1..=lease`, are replaced by the RFC 2131 §4.4.5 defaults
/// (0.5 and 0.875 × lease).
///
/// # Errors
/// [`Ignored::NoAddress`] for `yiaddr` 0.0.0.0; [`Ignored::BadLease`] for an address, mask or
/// router no sane network has.
fn granted(msg: &Message, server_id: Ipv4Addr) -> Result<Granted, Ignored> {
    let addr = msg.yiaddr();
    if addr.is_unspecified() {
        return Err(Ignored::NoAddress);
    }
    let opts = msg.opts();
    let prefix_len = match opts.get(OptionCode::SubnetMask) {
        Some(DhcpOption::SubnetMask(mask)) => {
            mask_prefix(*mask).ok_or(Ignored::BadLease(BadLease::Mask(*mask)))?
        }
        _ => classful_prefix(addr),
    };
    if !is_host_in(addr, addr, prefix_len) {
        return Err(Ignored::BadLease(BadLease::Address(addr)));
    }
    let ips = |code| match opts.get(code) {
        Some(
            DhcpOption::Router(v) | DhcpOption::DomainNameServer(v) | DhcpOption::NtpServers(v),
        ) => v.clone(),
        _ => Vec::new(),
    };
    let router = ips(OptionCode::Router).first().copied();
    if let Some(r) = router {
        if r == addr || !is_host_in(r, addr, prefix_len) {
            return Err(Ignored::BadLease(BadLease::Router(r)));
        }
    }
    let u32_opt = |code| match opts.get(code) {
        Some(
            DhcpOption::AddressLeaseTime(n) | DhcpOption::Renewal(n) | DhcpOption::Rebinding(n),
        ) => Some(*n),
        _ => None,
    };
    let lease_secs = u32_opt(OptionCode::AddressLeaseTime)
        .unwrap_or(u32::MAX)
        .max(MIN_LEASE_SECS);
    let t1_secs = u32_opt(OptionCode::Renewal)
        .filter(|t1| (1..lease_secs).contains(t1))
        .unwrap_or(lease_secs / 2);
    let t2_secs = u32_opt(OptionCode::Rebinding)
        .filter(|t2| (t1_secs..=lease_secs).contains(t2))
        .unwrap_or((u64::from(lease_secs) * 7 / 8) as u32)
        .clamp(t1_secs, lease_secs);
    let hostname = match opts.get(OptionCode::Hostname) {
        Some(DhcpOption::Hostname(h)) if !h.is_empty() => Some(h.clone()),
        _ => None,
    };
    let unicast = |v: Vec<Ipv4Addr>| v.into_iter().filter(|ip| is_unicast(*ip)).collect();
    Ok(Granted {
        addr,
        prefix_len,
        router,
        dns: unicast(ips(OptionCode::DomainNameServer)),
        ntp: unicast(ips(OptionCode::NtpServers)),
        hostname,
        server_id,
        lease_secs,
        t1_secs,
        t2_secs,
    })
}

/// A unicast IPv4 address: not 0.0.0.0, 255.255.255.255, multicast, loopback or 240.0.0.0/4.
pub(crate) fn is_unicast(ip: Ipv4Addr) -> bool {
    !(ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_loopback()
        || ip.octets()[0] >= 240)
}

/// `ip` is a unicast host address of `subnet`/`prefix_len`: inside it and, below /31, neither
/// its network nor its broadcast address (RFC 3021 lets /31 and /32 use every address).
pub(crate) fn is_host_in(ip: Ipv4Addr, subnet: Ipv4Addr, prefix_len: u8) -> bool {
    let mask = u32::MAX
        .checked_shl(32 - u32::from(prefix_len))
        .unwrap_or(0);
    let (ip, net) = (u32::from(ip), u32::from(subnet) & mask);
    let host = ip & !mask;
    is_unicast(Ipv4Addr::from(ip))
        && ip & mask == net
        && (prefix_len >= 31 || (host != 0 && host != !mask))
}

/// The prefix length of a contiguous subnet mask of 1..=32 bits; `None` otherwise.
fn mask_prefix(mask: Ipv4Addr) -> Option<u8> {
    let bits = u32::from(mask);
    let ones = bits.leading_ones();
    (ones >= 1 && bits.count_ones() == ones).then_some(ones as u8)
}

/// Class A/B/C prefix for a server that sends no subnet mask.
fn classful_prefix(addr: Ipv4Addr) -> u8 {
    match addr.octets()[0] {
        0..=127 => 8,
        128..=191 => 16,
        _ => 24,
    }
}

#[cfg(test)]
mod tests;
