//! SNTP client (RFC 4330) for the servers of DHCP option 42 (issue 15 §3).
//!
//! Boot flow: after the lease, when it names NTP servers, the boot stage asks them one after
//! another ([`query`], bounded in time) and moves the clock forward with the answer
//! ([`crate::clock::Clock::advance`]), never below the floors. A reply counts only when it
//! echoes the random transmit timestamp of our request in its originate field (RFC 4330 §5),
//! comes from a synchronised server (leap indicator not 3, stratum 1..=15) in server mode, so a
//! blind spoofer on the LAN must guess 64 random bits. An attacker who sees the request can
//! still answer first: the clock is then only as good as the LAN, which is why the signed
//! manifest, not SNTP, decides what boots (docs/security.md "No clock").

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use tokio::net::UdpSocket;

/// UDP port of NTP servers (RFC 4330 §4).
pub const NTP_PORT: u16 = 123;
/// Length of an NTP header without extensions or authenticator, bytes (RFC 4330 §4).
pub const PACKET_BYTES: usize = 48;
/// Seconds from the NTP epoch (1900-01-01) to the Unix epoch.
const NTP_TO_UNIX_SECS: i64 = 2_208_988_800;
/// One NTP era: 2^32 seconds (the 32-bit seconds field wraps in 2036).
const ERA_SECS: i64 = 1 << 32;

/// Why an SNTP exchange gave no time.
#[derive(Debug, thiserror::Error)]
pub enum SntpError {
    /// Shorter than [`PACKET_BYTES`].
    #[error("reply of {0} bytes, shorter than an NTP header (48)")]
    Short(usize),
    /// Not mode 4 (server), or a version other than 1..=4.
    #[error("reply mode {mode} version {version} is not an NTP server reply")]
    NotServer {
        /// The mode field (RFC 4330 §4).
        mode: u8,
        /// The version field.
        version: u8,
    },
    /// Leap indicator 3 (clock not synchronised) or stratum 0 (kiss-o'-death) or over 15.
    #[error("server is not synchronised (leap indicator {leap}, stratum {stratum})")]
    Unsynchronised {
        /// Leap indicator.
        leap: u8,
        /// Stratum.
        stratum: u8,
    },
    /// The originate timestamp is not the transmit timestamp we sent (a spoofed or stale
    /// reply).
    #[error("reply does not echo our request (originate {got:#018x})")]
    WrongOrigin {
        /// The reply's originate timestamp.
        got: u64,
    },
    /// A transmit timestamp of 0.
    #[error("reply has no transmit timestamp")]
    NoTime,
    /// Socket error (bind, send, receive).
    #[error("{op} {server}")]
    Io {
        /// What failed: `bind`, `send to`, `receive from`.
        op: &'static str,
        /// The server.
        server: Ipv4Addr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// No acceptable reply before the deadline.
    #[error("no acceptable reply from {server} within {waited_ms}ms")]
    Timeout {
        /// The server.
        server: Ipv4Addr,
        /// Time waited, ms.
        waited_ms: u64,
    },
}

/// A client request (LI 0, version 4, mode 3) whose transmit timestamp is `cookie`, 48 bytes.
pub fn request(cookie: u64) -> [u8; PACKET_BYTES] {
    let mut p = [0u8; PACKET_BYTES];
    p[0] = (4 << 3) | 3;
    p[40..48].copy_from_slice(&cookie.to_be_bytes());
    p
}

/// Parses a server reply to the request carrying `cookie`; returns the server's transmit time.
/// The 32-bit seconds are placed in the NTP era that puts them closest above `pivot` - 68
/// years (the init's build floor is the pivot: RFC 4330 §3's era rule), so it stays right after
/// 2036.
///
/// # Errors
/// [`SntpError::Short`], [`SntpError::NotServer`], [`SntpError::Unsynchronised`],
/// [`SntpError::WrongOrigin`], [`SntpError::NoTime`].
pub fn parse_reply(
    bytes: &[u8],
    cookie: u64,
    pivot: DateTime<Utc>,
) -> Result<DateTime<Utc>, SntpError> {
    let Some(head) = bytes.get(..PACKET_BYTES) else {
        return Err(SntpError::Short(bytes.len()));
    };
    let word = |at: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&head[at..at + 8]);
        u64::from_be_bytes(b)
    };
    let (leap, version, mode) = (head[0] >> 6, (head[0] >> 3) & 7, head[0] & 7);
    if mode != 4 || !(1..=4).contains(&version) {
        return Err(SntpError::NotServer { mode, version });
    }
    let stratum = head[1];
    if leap == 3 || !(1..=15).contains(&stratum) {
        return Err(SntpError::Unsynchronised { leap, stratum });
    }
    let origin = word(24);
    if origin != cookie {
        return Err(SntpError::WrongOrigin { got: origin });
    }
    let transmit = word(40);
    if transmit == 0 {
        return Err(SntpError::NoTime);
    }
    let secs = i64::from((transmit >> 32) as u32) - NTP_TO_UNIX_SECS;
    let nanos = ((transmit & 0xffff_ffff) * 1_000_000_000) >> 32;
    // The first era (0, 1 or 2) that lands at or after pivot - 2^31 s.
    let low = pivot.timestamp() - ERA_SECS / 2;
    let unix = (0..3)
        .map(|era| secs + era * ERA_SECS)
        .find(|u| *u >= low)
        .unwrap_or(secs);
    DateTime::from_timestamp(unix, nanos as u32).ok_or(SntpError::NoTime)
}

/// Asks `server` for the time: one request, then replies are read until one is acceptable or
/// `timeout` passes (replies that fail [`parse_reply`] are skipped, so a spoofer cannot end the
/// wait). The answer is corrected by half the round trip. `pivot` as in [`parse_reply`].
///
/// # Errors
/// [`SntpError::Io`] or [`SntpError::Timeout`].
pub async fn query(
    server: Ipv4Addr,
    timeout: Duration,
    pivot: DateTime<Utc>,
) -> Result<DateTime<Utc>, SntpError> {
    let io = |op| move |source| SntpError::Io { op, server, source };
    let sock = UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0))
        .await
        .map_err(io("bind"))?;
    let cookie: u64 = rand::random();
    let sent = Instant::now();
    sock.send_to(&request(cookie), SocketAddrV4::new(server, NTP_PORT))
        .await
        .map_err(io("send to"))?;
    let deadline = tokio::time::Instant::from_std(sent + timeout);
    let mut buf = [0u8; 512];
    loop {
        let recv = tokio::time::timeout_at(deadline, sock.recv_from(&mut buf)).await;
        let (n, from) = match recv {
            Err(_) => {
                return Err(SntpError::Timeout {
                    server,
                    waited_ms: sent.elapsed().as_millis() as u64,
                })
            }
            Ok(r) => r.map_err(io("receive from"))?,
        };
        if from.ip() != std::net::IpAddr::V4(server) || from.port() != NTP_PORT {
            continue;
        }
        match parse_reply(buf.get(..n).unwrap_or_default(), cookie, pivot) {
            Ok(t) => {
                let half_rtt = chrono::Duration::from_std(sent.elapsed() / 2).unwrap_or_default();
                return Ok(phase_protocol::verify::add_saturating(t, half_rtt));
            }
            Err(e) => tracing::debug!(%server, error = %e, "sntp reply skipped"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pivot() -> DateTime<Utc> {
        "2026-12-01T00:00:00Z".parse().unwrap()
    }

    /// A server reply to `cookie` at Unix time `unix` (+ 0.5 s).
    fn reply(cookie: u64, unix: i64) -> Vec<u8> {
        let mut p = vec![0u8; PACKET_BYTES];
        p[0] = (4 << 3) | 4;
        p[1] = 2;
        p[24..32].copy_from_slice(&cookie.to_be_bytes());
        let ntp = ((unix + NTP_TO_UNIX_SECS) as u64 & 0xffff_ffff) << 32 | 0x8000_0000;
        p[40..48].copy_from_slice(&ntp.to_be_bytes());
        p
    }

    #[test]
    fn request_is_a_version_4_client_packet_carrying_the_cookie() {
        let r = request(0x0102_0304_0506_0708);
        assert_eq!(r[0], 0x23);
        assert_eq!(&r[40..], &0x0102_0304_0506_0708u64.to_be_bytes());
    }

    #[test]
    fn reply_echoing_the_cookie_gives_the_server_time() {
        let unix = pivot().timestamp() + 86_400;
        let t = parse_reply(&reply(42, unix), 42, pivot()).unwrap();
        assert_eq!(t.timestamp(), unix);
        assert_eq!(t.timestamp_subsec_millis(), 500);
    }

    #[test]
    fn times_after_the_2036_wrap_land_in_the_next_era() {
        let unix = 2_200_000_000; // 2039, past the NTP era boundary of 2036-02-07
        let t = parse_reply(&reply(7, unix), 7, pivot()).unwrap();
        assert_eq!(t.timestamp(), unix);
    }

    #[test]
    fn spoofed_unsynchronised_and_short_replies_are_refused() {
        let good = reply(42, pivot().timestamp());
        assert!(matches!(
            parse_reply(&good, 43, pivot()),
            Err(SntpError::WrongOrigin { .. })
        ));
        assert!(matches!(
            parse_reply(&good[..47], 42, pivot()),
            Err(SntpError::Short(47))
        ));
        let mut kod = good.clone();
        kod[1] = 0;
        assert!(matches!(
            parse_reply(&kod, 42, pivot()),
            Err(SntpError::Unsynchronised { .. })
        ));
        let mut alarm = good.clone();
        alarm[0] |= 0xc0;
        assert!(matches!(
            parse_reply(&alarm, 42, pivot()),
            Err(SntpError::Unsynchronised { .. })
        ));
        let mut client = good.clone();
        client[0] = (4 << 3) | 3;
        assert!(matches!(
            parse_reply(&client, 42, pivot()),
            Err(SntpError::NotServer { .. })
        ));
        let mut zero = good.clone();
        zero[40..48].fill(0);
        assert!(matches!(
            parse_reply(&zero, 42, pivot()),
            Err(SntpError::NoTime)
        ));
        // Positive control.
        assert!(parse_reply(&good, 42, pivot()).is_ok());
    }

    #[tokio::test]
    async fn query_against_a_real_udp_server_skips_a_spoofed_reply() {
        // A server on 127.0.0.1:123 needs root; a test server elsewhere is not port 123, so
        // this exercises the socket path only where it can bind 123.
        let Ok(server) = std::net::UdpSocket::bind("127.0.0.1:123") else {
            eprintln!("skipped: cannot bind 127.0.0.1:123 (not root)");
            return;
        };
        let unix = pivot().timestamp() + 1000;
        let handle = std::thread::spawn(move || {
            let mut buf = [0u8; 64];
            let (n, from) = server.recv_from(&mut buf).unwrap();
            assert_eq!(n, PACKET_BYTES);
            let mut cookie = [0u8; 8];
            cookie.copy_from_slice(&buf[40..48]);
            let cookie = u64::from_be_bytes(cookie);
            server
                .send_to(&reply(cookie ^ 1, unix - 5000), from)
                .unwrap();
            server.send_to(&reply(cookie, unix), from).unwrap();
        });
        let t = query(Ipv4Addr::LOCALHOST, Duration::from_secs(2), pivot())
            .await
            .unwrap();
        assert!((t.timestamp() - unix).abs() <= 1, "{t}");
        handle.join().unwrap();
    }
}
