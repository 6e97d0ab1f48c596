//! Network bring-up of phase-init (issue 6 §4): wait for a link, DHCPv4, configure the address,
//! default route and resolver, and keep the lease renewed in the target stage.
//!
//! Boot flow: after `modules` (virtio_net) the boot stage calls [`bring_up`], which prints
//! `phase: link ok <iface> in <N>ms` and `phase: dhcp ok <iface> <addr>/<prefix> in <N>ms`
//! (or `phase: link|dhcp failed after <N>ms: <chain>`; callers need not print it again) and
//! returns the [`Lease`]. Discovery then uses the configured interface. In the target stage the
//! supervisor calls [`bring_up_with`] with the boot stage's lease ([`handover`]), which it
//! configures without a new exchange when it may, and runs [`maintain`] to renew at T1/T2.
//!
//! Parts: [`link`] (sysfs + carrier wait), [`dhcp`] (pure RFC 2131 state machine),
//! [`socket`] (UDP port 68 I/O driving the machine), [`configure`] (rtnetlink, resolv.conf),
//! [`renew`] (T1/T2 renewal).

pub mod configure;
pub mod dhcp;
pub mod handover;
pub mod link;
pub mod renew;
pub mod sntp;
pub mod socket;

use std::net::Ipv4Addr;
use std::path::Path;
use std::time::{Duration, Instant};

pub use renew::{maintain, renew_once};

use crate::log::Stage;
use configure::{ConfigureError, Netlink};
use dhcp::{Client, Config, Granted, Lost};
use link::{Link, LinkError};
use socket::{DhcpSocket, Outcome, SocketError};

/// Errors of the network bring-up and lease maintenance.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// Waiting for an interface failed.
    #[error("waiting for a network interface")]
    Link(#[source] LinkError),
    /// Netlink or resolv.conf configuration failed.
    #[error("configuring {iface}")]
    Configure {
        /// Interface name.
        iface: String,
        /// The cause.
        #[source]
        source: ConfigureError,
    },
    /// The DHCP socket failed.
    #[error("DHCP on {iface}")]
    Socket {
        /// Interface name.
        iface: String,
        /// The cause.
        #[source]
        source: SocketError,
    },
    /// No lease within the time allowed.
    #[error("no DHCP lease on {iface} after {waited_ms}ms (client state {state})")]
    Timeout {
        /// Interface name.
        iface: String,
        /// Client state when time ran out (`selecting`: no OFFER; `requesting`: no ACK).
        state: &'static str,
        /// Time spent, ms.
        waited_ms: u128,
    },
    /// The server refused the renewal (DHCPNAK); the address was removed.
    #[error("DHCP server {server} refused the lease of {addr} on {iface} (NAK: {message})")]
    Nak {
        /// Interface name.
        iface: String,
        /// The address that was refused.
        addr: Ipv4Addr,
        /// The server that sent the NAK.
        server: Ipv4Addr,
        /// Option 56 text, or `-`.
        message: String,
    },
    /// The lease expired without an ACK; the address was removed.
    #[error("DHCP lease of {addr} on {iface} expired")]
    Expired {
        /// Interface name.
        iface: String,
        /// The address that was removed.
        addr: Ipv4Addr,
    },
}

/// A bound DHCPv4 lease and the interface it is configured on (RFC 2131 §4.4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// Interface name (`eth0`).
    pub iface: String,
    /// What the ACK granted: address, prefix, router, DNS, lease times (seconds).
    pub granted: Granted,
    /// When the REQUEST that got the ACK was sent; lease times count from here.
    pub acquired_at: Instant,
}

impl Lease {
    fn from_granted(iface: &str, granted: Granted, acquired_at: Instant) -> Lease {
        Lease {
            iface: iface.to_owned(),
            granted,
            acquired_at,
        }
    }

    /// When to start renewing (T1); for an infinite lease, about 68 years from now.
    pub fn next_renewal(&self) -> Instant {
        self.at(self.granted.t1_secs)
    }

    /// When to start rebinding (T2).
    pub fn rebind_at(&self) -> Instant {
        self.at(self.granted.t2_secs)
    }

    /// When the lease expires.
    pub fn expires_at(&self) -> Instant {
        self.at(self.granted.lease_secs)
    }

    fn at(&self, secs: u32) -> Instant {
        let d = Duration::from_secs(u64::from(secs));
        self.acquired_at
            .checked_add(d)
            .unwrap_or_else(|| self.acquired_at + Duration::from_secs(u64::from(u32::MAX / 2)))
    }
}

/// Brings the network up: `lo` up, waits for `iface` (or the first Ethernet interface with a
/// carrier), runs DHCP (DISCOVER/OFFER/REQUEST/ACK with retries), configures the address and
/// default route through rtnetlink and writes `/etc/resolv.conf`. Everything is bounded by
/// `timeout` in total. Prints the `link` and `dhcp` stage lines (ok or failed). Must run inside
/// a tokio runtime (current-thread is fine); needs root.
/// Errors: [`NetError::Link`], [`NetError::Timeout`], [`NetError::Socket`],
/// [`NetError::Configure`].
pub async fn bring_up(iface: Option<&str>, timeout: Duration) -> Result<Lease, NetError> {
    bring_up_with(iface, timeout, None).await
}

/// [`bring_up`], taking over `handed` (the boot stage's lease, [`handover`], with the time since
/// the handoff: the target kernel's [`handover::uptime`]) instead of running DHCP when
/// [`handover::HandedLease::take_over`] accepts it for the link found: the address,
/// route and resolver are configured from it and the `dhcp` line says so
/// (`dhcp ok eth0 192.0.2.158/24 (the boot stage's lease, 3585s left) in 3ms`). A refused one
/// is logged with its reason and DHCP runs from INIT. Errors: as [`bring_up`].
pub async fn bring_up_with(
    iface: Option<&str>,
    timeout: Duration,
    handed: Option<(&handover::HandedLease, Duration)>,
) -> Result<Lease, NetError> {
    let deadline = Instant::now() + timeout;
    let nl = Netlink::open().map_err(|source| NetError::Configure {
        iface: "lo".into(),
        source,
    })?;
    if let Err(e) = configure::loopback_up(&nl.handle).await {
        crate::log::line(&format!("link lo not up: {}", crate::log::error_chain(&e)));
    }

    let stage = Stage::start("link");
    let link = match link::wait_for_link(&nl.handle, Path::new(link::SYS_CLASS_NET), iface, timeout)
        .await
    {
        Ok(l) => {
            stage.ok(&l.name);
            l
        }
        Err(e) => {
            let e = NetError::Link(e);
            stage.failed(&e);
            return Err(e);
        }
    };

    let stage = Stage::start("dhcp");
    if let Some((h, since_handover)) = handed {
        match h.take_over(&link, Instant::now(), since_handover) {
            Ok(lease) => {
                return match apply(&nl, link.index, &lease, None).await {
                    Ok(()) => {
                        stage.ok(format!(
                            "{} {}/{} (the boot stage's lease, {}s left)",
                            lease.iface,
                            lease.granted.addr,
                            lease.granted.prefix_len,
                            lease.granted.lease_secs
                        ));
                        Ok(lease)
                    }
                    Err(e) => {
                        stage.failed(&e);
                        Err(e)
                    }
                };
            }
            Err(e) => crate::log::line(&format!(
                "dhcp: the boot stage's lease is not taken over, asking again: {}",
                crate::log::error_chain(&e)
            )),
        }
    }
    match acquire(&nl, &link, deadline).await {
        Ok(lease) => {
            stage.ok(format!(
                "{} {}/{}",
                lease.iface, lease.granted.addr, lease.granted.prefix_len
            ));
            Ok(lease)
        }
        Err(e) => {
            stage.failed(&e);
            Err(e)
        }
    }
}

/// DHCP from INIT to BOUND on `link`, then [`apply`]. Bounded by `deadline`.
pub(crate) async fn acquire(
    nl: &Netlink,
    link: &Link,
    deadline: Instant,
) -> Result<Lease, NetError> {
    let start = Instant::now();
    let sock = DhcpSocket::open(&link.name).map_err(|source| NetError::Socket {
        iface: link.name.clone(),
        source,
    })?;
    let mut client = Client::new(link.mac, Config::default(), rand::random(), start);
    let first = client.start(start);
    let outcome = socket::exchange(&sock, &mut client, first, deadline)
        .await
        .map_err(|source| NetError::Socket {
            iface: link.name.clone(),
            source,
        })?;
    match outcome {
        Outcome::Bound {
            granted,
            requested_at,
        } => {
            let lease = Lease::from_granted(&link.name, granted, requested_at);
            apply(nl, link.index, &lease, None).await?;
            Ok(lease)
        }
        Outcome::TimedOut { state } => Err(NetError::Timeout {
            iface: link.name.clone(),
            state,
            waited_ms: start.elapsed().as_millis(),
        }),
        // Only RENEWING/REBINDING lose leases; keep the error meaningful anyway.
        Outcome::Lost(Lost::Expired) | Outcome::Lost(Lost::Nak(_)) => Err(NetError::Timeout {
            iface: link.name.clone(),
            state: client.state_name(),
            waited_ms: start.elapsed().as_millis(),
        }),
    }
}

/// Configures `lease` on interface `index`: removes `old` (a previous address) if it differs,
/// `ip addr replace`, default route via the router, `/etc/resolv.conf`.
/// Errors: [`NetError::Configure`].
pub(crate) async fn apply(
    nl: &Netlink,
    index: u32,
    lease: &Lease,
    old: Option<Ipv4Addr>,
) -> Result<(), NetError> {
    let cfg = |source| NetError::Configure {
        iface: lease.iface.clone(),
        source,
    };
    if let Some(old) = old.filter(|o| *o != lease.granted.addr) {
        configure::remove_address(&nl.handle, index, &lease.iface, old)
            .await
            .map_err(cfg)?;
    }
    configure::add_address(
        &nl.handle,
        index,
        &lease.iface,
        lease.granted.addr,
        lease.granted.prefix_len,
    )
    .await
    .map_err(cfg)?;
    if let Some(router) = lease.granted.router {
        configure::set_default_route(&nl.handle, index, &lease.iface, router)
            .await
            .map_err(cfg)?;
    }
    configure::write_resolv_conf(
        Path::new(configure::RESOLV_CONF),
        &lease.granted.dns,
        &lease.iface,
    )
    .map_err(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_times_count_from_acquisition() {
        let t0 = Instant::now();
        let g = Granted {
            addr: Ipv4Addr::new(192, 0, 2, 101),
            prefix_len: 24,
            router: None,
            dns: vec![],
            ntp: vec![],
            hostname: None,
            server_id: Ipv4Addr::new(192, 0, 2, 1),
            lease_secs: 120,
            t1_secs: 60,
            t2_secs: 105,
        };
        let lease = Lease::from_granted("eth0", g.clone(), t0);
        assert_eq!(lease.next_renewal() - t0, Duration::from_secs(60));
        assert_eq!(lease.rebind_at() - t0, Duration::from_secs(105));
        assert_eq!(lease.expires_at() - t0, Duration::from_secs(120));
        assert_eq!(lease.granted, g);
        let infinite = Lease {
            granted: Granted {
                lease_secs: u32::MAX,
                t1_secs: u32::MAX / 2,
                ..g
            },
            ..lease
        };
        assert!(infinite.expires_at() > t0 + Duration::from_secs(3600 * 24 * 365));
    }
}
