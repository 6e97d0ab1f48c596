//! Open connections of `plasmd serve`, in total and per client IP address (issue 15 §7).
//!
//! The accept loop in `server` asks [`ConnectionTracker::try_open`] for a [`ConnectionSlot`]
//! for every accepted connection; the slot lives in the connection's task and gives its place
//! back when the task ends, whatever the reason. Two things read it:
//! - the per-IP cap (`--max-connections-per-ip`): one address may hold at most that many
//!   connections at once, so a single client cannot take all of `--max-connections`;
//! - the `draining connections=N` log line at shutdown, which must count connections that are
//!   open at that moment ([`ConnectionTracker::open`]), not tasks that already finished.
//!
//! IPv4-mapped IPv6 addresses (`::ffff:192.0.2.1`, seen on a dual-stack listener) count as
//! the IPv4 address they carry.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};

/// A connection refused because its address already holds `limit` connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{ip} already has {limit} open connections (--max-connections-per-ip)")]
pub struct PerIpLimit {
    /// The client address (IPv4-mapped IPv6 shown as IPv4).
    pub ip: IpAddr,
    /// The per-IP cap.
    pub limit: usize,
    /// True for the first refusal since this address last had a free slot, so the caller
    /// logs one line per episode instead of one per attempt.
    pub first: bool,
}

#[derive(Debug, Default)]
struct Peer {
    open: usize,
    /// Refusals since this address was last under the cap.
    refused: u64,
}

#[derive(Debug, Default)]
struct State {
    open: usize,
    peers: HashMap<IpAddr, Peer>,
}

/// Counts open connections, in total and per client address, and enforces the per-IP cap.
#[derive(Debug, Clone)]
pub struct ConnectionTracker {
    per_ip: usize,
    state: Arc<Mutex<State>>,
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    // The counters stay consistent under a panic elsewhere: every change is one statement.
    state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl ConnectionTracker {
    /// A tracker allowing `per_ip` connections per client address (0 is taken as 1).
    pub fn new(per_ip: usize) -> Self {
        ConnectionTracker {
            per_ip: per_ip.max(1),
            state: Arc::new(Mutex::new(State::default())),
        }
    }

    /// Takes a slot for a connection from `ip`; the slot is given back when dropped.
    ///
    /// # Errors
    /// [`PerIpLimit`] when `ip` already holds `per_ip` connections.
    pub fn try_open(&self, ip: IpAddr) -> Result<ConnectionSlot, PerIpLimit> {
        let ip = ip.to_canonical();
        let mut s = lock(&self.state);
        let peer = s.peers.entry(ip).or_default();
        if peer.open >= self.per_ip {
            peer.refused += 1;
            return Err(PerIpLimit {
                ip,
                limit: self.per_ip,
                first: peer.refused == 1,
            });
        }
        peer.open += 1;
        peer.refused = 0;
        s.open += 1;
        Ok(ConnectionSlot {
            ip,
            state: Arc::clone(&self.state),
        })
    }

    /// Connections open now (slots not yet given back).
    pub fn open(&self) -> usize {
        lock(&self.state).open
    }

    /// Connections open now from `ip`.
    pub fn open_from(&self, ip: IpAddr) -> usize {
        lock(&self.state)
            .peers
            .get(&ip.to_canonical())
            .map_or(0, |p| p.open)
    }
}

/// One open connection's place in a [`ConnectionTracker`]; given back on drop.
#[derive(Debug)]
pub struct ConnectionSlot {
    ip: IpAddr,
    state: Arc<Mutex<State>>,
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let mut s = lock(&self.state);
        s.open = s.open.saturating_sub(1);
        if let Some(peer) = s.peers.get_mut(&self.ip) {
            peer.open = peer.open.saturating_sub(1);
            if peer.open == 0 {
                s.peers.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn open_count_drops_when_a_connection_finishes() {
        let t = ConnectionTracker::new(8);
        let a = t.try_open(ip("192.0.2.1")).unwrap();
        let _b = t.try_open(ip("192.0.2.2")).unwrap();
        assert_eq!(t.open(), 2);
        drop(a);
        assert_eq!(t.open(), 1);
    }

    #[test]
    fn connection_over_the_per_ip_cap_is_refused_until_one_closes() {
        let t = ConnectionTracker::new(2);
        let first = t.try_open(ip("192.0.2.1")).unwrap();
        let _second = t.try_open(ip("192.0.2.1")).unwrap();
        let refused = t.try_open(ip("192.0.2.1")).unwrap_err();
        assert_eq!(
            refused,
            PerIpLimit {
                ip: ip("192.0.2.1"),
                limit: 2,
                first: true
            }
        );
        // Only the first refusal of an episode asks for a log line.
        assert!(!t.try_open(ip("192.0.2.1")).unwrap_err().first);
        // Another address is not affected.
        let _other = t.try_open(ip("192.0.2.9")).unwrap();
        assert_eq!(t.open(), 3);
        // Positive control: after one closes, the address gets a slot again.
        drop(first);
        let _third = t.try_open(ip("192.0.2.1")).unwrap();
        assert_eq!(t.open_from(ip("192.0.2.1")), 2);
        assert!(t.try_open(ip("192.0.2.1")).unwrap_err().first);
    }

    #[test]
    fn ipv4_mapped_ipv6_counts_as_its_ipv4_address() {
        let t = ConnectionTracker::new(1);
        let _v4 = t.try_open(ip("192.0.2.1")).unwrap();
        assert!(t.try_open(ip("::ffff:192.0.2.1")).is_err());
        assert!(t.try_open(ip("2001:db8::1")).is_ok());
    }

    #[test]
    fn addresses_without_connections_are_forgotten() {
        let t = ConnectionTracker::new(1);
        drop(t.try_open(ip("192.0.2.1")).unwrap());
        assert!(lock(&t.state).peers.is_empty());
        assert_eq!(t.open(), 0);
    }
}
