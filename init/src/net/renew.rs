//! Lease renewal in the target stage (issue 6 §4, RFC 2131 §4.4.5): at T1 a unicast REQUEST to
//! the server that granted the lease (RENEWING), from T2 a broadcast REQUEST to any server
//! (REBINDING); an ACK extends the lease (and moves the address if the server changed it), a NAK
//! or expiry removes the address and starts DHCP over.
//!
//! The target-stage supervisor runs [`maintain`] as a task after [`super::bring_up`];
//! [`renew_once`] renews immediately (tests, or an operator's "renew now").

use std::convert::Infallible;
use std::path::Path;
use std::time::{Duration, Instant};

use super::configure::{self, Netlink};
use super::dhcp::{Client, Config, Lost};
use super::link::{self, Link};
use super::socket::{self, DhcpSocket, Outcome};
use super::{acquire, apply, Lease, NetError};
use crate::log;

/// Time allowed for each full DHCP attempt after a lease was lost.
const REACQUIRE_TRY: Duration = Duration::from_secs(60);
/// Shortest time between the starts of two renewals in [`maintain`].
const MIN_RENEW_GAP: Duration = Duration::from_secs(5);
/// Longest pause between two such attempts.
const REACQUIRE_MAX_PAUSE: Duration = Duration::from_secs(60);

/// Renews `lease` now: a unicast REQUEST to its server (or a broadcast one if T2 has passed),
/// waiting at most `timeout`. On ACK, `lease` is updated (new times from the ACK, counted from
/// now) and the interface reconfigured if the address changed. Needs root.
/// Errors: [`NetError::Timeout`] (no answer; the lease and address are kept),
/// [`NetError::Nak`] / [`NetError::Expired`] (the address was removed), socket, netlink and
/// sysfs errors.
pub async fn renew_once(lease: &mut Lease, timeout: Duration) -> Result<(), NetError> {
    let nl = Netlink::open().map_err(|source| NetError::Configure {
        iface: lease.iface.clone(),
        source,
    })?;
    let link =
        link::read_link(Path::new(link::SYS_CLASS_NET), &lease.iface).map_err(NetError::Link)?;
    renew_until(&nl, &link, lease, Instant::now() + timeout).await
}

/// Keeps `lease` alive forever: sleeps until T1, renews (RENEWING, then REBINDING after T2),
/// and when the lease is lost removes the address and runs DHCP again (60 s per attempt, with
/// pauses of 1, 2, 4 .. 60 s between attempts). Logs `phase: dhcp renewed <iface>
/// <addr>/<prefix> lease=<s>s` and `phase: dhcp lease lost on <iface>: <chain>`. Meant to be
/// spawned as a task by the target-stage supervisor; only returns on errors that retrying cannot
/// fix (no netlink socket, port 68 taken, interface gone).
pub async fn maintain(lease: Lease) -> Result<Infallible, NetError> {
    let mut lease = lease;
    let mut last_attempt: Option<Instant> = None;
    loop {
        // A server granting T1 = 0 must not turn this into a busy loop.
        let floor = last_attempt.map(|t| t + MIN_RENEW_GAP);
        let wake = floor.map_or(lease.next_renewal(), |f| f.max(lease.next_renewal()));
        tokio::time::sleep_until(wake.into()).await;
        last_attempt = Some(Instant::now());
        let nl = Netlink::open().map_err(|source| NetError::Configure {
            iface: lease.iface.clone(),
            source,
        })?;
        let link = link::read_link(Path::new(link::SYS_CLASS_NET), &lease.iface)
            .map_err(NetError::Link)?;
        let expires_at = lease.expires_at();
        match renew_until(&nl, &link, &mut lease, expires_at).await {
            Ok(()) => log::line(&format!(
                "dhcp renewed {} {}/{} lease={}s",
                lease.iface, lease.granted.addr, lease.granted.prefix_len, lease.granted.lease_secs
            )),
            Err(
                e @ (NetError::Nak { .. } | NetError::Expired { .. } | NetError::Timeout { .. }),
            ) => {
                log::line(&format!(
                    "dhcp lease lost on {}: {}",
                    lease.iface,
                    log::error_chain(&e)
                ));
                // Idempotent: a NAK or expiry already removed it.
                let _ = configure::remove_address(
                    &nl.handle,
                    link.index,
                    &lease.iface,
                    lease.granted.addr,
                )
                .await;
                lease = reacquire(&nl, &link).await?;
            }
            Err(e) => return Err(e),
        }
    }
}

/// One RENEWING/REBINDING exchange bounded by `give_up`; see [`renew_once`].
async fn renew_until(
    nl: &Netlink,
    link: &Link,
    lease: &mut Lease,
    give_up: Instant,
) -> Result<(), NetError> {
    let now = Instant::now();
    let sock_err = |source| NetError::Socket {
        iface: lease.iface.clone(),
        source,
    };
    let sock = DhcpSocket::open(&link.name).map_err(sock_err)?;
    let mut client = Client::new(link.mac, Config::default(), rand::random(), now);
    let first = client.renew(lease.granted.clone(), lease.acquired_at, now);
    let outcome = socket::exchange(&sock, &mut client, first, give_up)
        .await
        .map_err(sock_err)?;
    drop(sock);
    let cfg_err = |source| NetError::Configure {
        iface: lease.iface.clone(),
        source,
    };
    match outcome {
        Outcome::Bound {
            granted,
            requested_at,
        } => {
            let new = Lease::from_granted(&lease.iface, granted, requested_at);
            apply(nl, link.index, &new, Some(lease.granted.addr)).await?;
            *lease = new;
            Ok(())
        }
        Outcome::Lost(lost) => {
            configure::remove_address(&nl.handle, link.index, &lease.iface, lease.granted.addr)
                .await
                .map_err(cfg_err)?;
            Err(match lost {
                Lost::Nak(message) => NetError::Nak {
                    iface: lease.iface.clone(),
                    addr: lease.granted.addr,
                    server: lease.granted.server_id,
                    message: message.unwrap_or_else(|| "-".into()),
                },
                Lost::Expired => NetError::Expired {
                    iface: lease.iface.clone(),
                    addr: lease.granted.addr,
                },
            })
        }
        Outcome::TimedOut { state } => Err(NetError::Timeout {
            iface: lease.iface.clone(),
            state,
            waited_ms: now.elapsed().as_millis(),
        }),
    }
}

/// Full DHCP again after a lost lease, retried until it works; logs the `dhcp` stage line of
/// each attempt. Returns early only for errors other than a timeout.
async fn reacquire(nl: &Netlink, link: &Link) -> Result<Lease, NetError> {
    let mut pause = Duration::from_secs(1);
    loop {
        let stage = log::Stage::start("dhcp");
        match acquire(nl, link, Instant::now() + REACQUIRE_TRY).await {
            Ok(lease) => {
                stage.ok(format!(
                    "{} {}/{}",
                    lease.iface, lease.granted.addr, lease.granted.prefix_len
                ));
                return Ok(lease);
            }
            Err(e @ NetError::Timeout { .. }) => stage.failed(&e),
            Err(e) => {
                stage.failed(&e);
                return Err(e);
            }
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(REACQUIRE_MAX_PAUSE);
    }
}
