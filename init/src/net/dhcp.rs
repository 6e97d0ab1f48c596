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

/// What an ACK granted: the parameters a [`super::Lease`] is made of (RFC 2132 options).
#[derive(Debug, Clone, PartialEq, Eq)]
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
    /// A message type this state does not expect (an OFFER while requesting, a duplicate ACK).
    Unexpected(Option<MessageType>),
    /// An OFFER/ACK/NAK without option 54.
    MissingServerId,
    /// From a server other than the one we requested from (a second server's late OFFER).
    OtherServer(Ipv4Addr),
    /// An OFFER or ACK with `yiaddr` 0.0.0.0.
    NoAddress,
    /// The client is not waiting for anything (INIT or BOUND).
    Idle,
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

    /// Decodes and checks op, xid and chaddr.
    fn check(&self, bytes: &[u8]) -> Result<Message, Ignored> {
        let msg = Message::from_bytes(bytes).map_err(|e| Ignored::Malformed(e.to_string()))?;
        if msg.opcode() != Opcode::BootReply {
            return Err(Ignored::NotReply);
        }
        if msg.xid() != self.xid {
            return Err(Ignored::WrongXid {
                expected: self.xid,
                got: msg.xid(),
            });
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
        match (self.state.clone(), kind) {
            (State::Selecting { .. }, Some(MessageType::Offer)) => {
                let offered = msg.yiaddr();
                if offered.is_unspecified() {
                    return self.wait(Ignored::NoAddress);
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
            Some(g) => {
                self.state = State::Bound;
                Step::Bound(g)
            }
            None => self.wait(Ignored::NoAddress),
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

/// Reads the lease parameters of an ACK; `None` if `yiaddr` is 0.0.0.0.
fn granted(msg: &Message, server_id: Ipv4Addr) -> Option<Granted> {
    let addr = msg.yiaddr();
    if addr.is_unspecified() {
        return None;
    }
    let opts = msg.opts();
    let prefix_len = match opts.get(OptionCode::SubnetMask) {
        Some(DhcpOption::SubnetMask(mask)) => u32::from(*mask).leading_ones() as u8,
        _ => classful_prefix(addr),
    };
    let ips = |code| match opts.get(code) {
        Some(
            DhcpOption::Router(v) | DhcpOption::DomainNameServer(v) | DhcpOption::NtpServers(v),
        ) => v.clone(),
        _ => Vec::new(),
    };
    let u32_opt = |code| match opts.get(code) {
        Some(
            DhcpOption::AddressLeaseTime(n) | DhcpOption::Renewal(n) | DhcpOption::Rebinding(n),
        ) => Some(*n),
        _ => None,
    };
    let lease_secs = u32_opt(OptionCode::AddressLeaseTime).unwrap_or(u32::MAX);
    let t1_secs = u32_opt(OptionCode::Renewal)
        .unwrap_or(lease_secs / 2)
        .min(lease_secs);
    let t2_secs = u32_opt(OptionCode::Rebinding)
        .unwrap_or((u64::from(lease_secs) * 7 / 8) as u32)
        .clamp(t1_secs, lease_secs);
    let hostname = match opts.get(OptionCode::Hostname) {
        Some(DhcpOption::Hostname(h)) if !h.is_empty() => Some(h.clone()),
        _ => None,
    };
    Some(Granted {
        addr,
        prefix_len,
        router: ips(OptionCode::Router).first().copied(),
        dns: ips(OptionCode::DomainNameServer),
        ntp: ips(OptionCode::NtpServers),
        hostname,
        server_id,
        lease_secs,
        t1_secs,
        t2_secs,
    })
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
