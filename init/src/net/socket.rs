//! The thin I/O layer under the DHCP state machine ([`super::dhcp`]): one UDP socket bound to
//! 0.0.0.0:68 with SO_BROADCAST and SO_BINDTODEVICE(iface), which on Linux sends to
//! 255.255.255.255:67 and receives the broadcast replies before the interface has an address;
//! and [`exchange`], which feeds received packets and deadlines to a [`Client`] until it binds,
//! loses the lease or the overall time runs out.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Instant;

use super::dhcp::{
    Client, Destination, Granted, Ignored, Lost, Outgoing, Step, CLIENT_PORT, SERVER_PORT,
};

/// Largest datagram read (a DHCP message over Ethernet fits in 1500 bytes; be generous).
const MAX_DATAGRAM: usize = 4096;

/// Errors of this module.
#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    /// bind(0.0.0.0:68) or a socket option failed.
    #[error("{call} on the DHCP socket for {iface}")]
    Setup {
        /// The call (`bind 0.0.0.0:68`, `setsockopt SO_BINDTODEVICE`).
        call: &'static str,
        /// Interface name.
        iface: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Encoding a message failed.
    #[error("encoding a DHCP message")]
    Encode(#[source] dhcproto::error::EncodeError),
    /// sendto failed.
    #[error("sendto {dest} on {iface}")]
    Send {
        /// Destination address and port.
        dest: SocketAddrV4,
        /// Interface name.
        iface: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// recvfrom failed.
    #[error("recvfrom on the DHCP socket for {iface}")]
    Recv {
        /// Interface name.
        iface: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// A UDP socket on port 68 bound to one interface.
#[derive(Debug)]
pub struct DhcpSocket {
    sock: tokio::net::UdpSocket,
    iface: String,
}

impl DhcpSocket {
    /// Binds 0.0.0.0:68, sets SO_BINDTODEVICE(`iface`) and SO_BROADCAST. Needs
    /// CAP_NET_BIND_SERVICE and CAP_NET_RAW (root). Errors: [`SocketError::Setup`].
    pub fn open(iface: &str) -> Result<DhcpSocket, SocketError> {
        let setup = |call| {
            move |source| SocketError::Setup {
                call,
                iface: iface.to_owned(),
                source,
            }
        };
        let std_sock =
            std::net::UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, CLIENT_PORT))
                .map_err(setup("bind 0.0.0.0:68"))?;
        std_sock
            .set_nonblocking(true)
            .map_err(setup("fcntl O_NONBLOCK"))?;
        let sock =
            tokio::net::UdpSocket::from_std(std_sock).map_err(setup("register with tokio"))?;
        sock.bind_device(Some(iface.as_bytes()))
            .map_err(setup("setsockopt SO_BINDTODEVICE"))?;
        sock.set_broadcast(true)
            .map_err(setup("setsockopt SO_BROADCAST"))?;
        Ok(DhcpSocket {
            sock,
            iface: iface.to_owned(),
        })
    }

    /// Sends `packet` to 255.255.255.255:67 or to the server's port 67.
    /// Errors: [`SocketError::Encode`], [`SocketError::Send`].
    pub async fn send(&self, packet: &Outgoing) -> Result<(), SocketError> {
        let ip = match packet.dest {
            Destination::Broadcast => Ipv4Addr::BROADCAST,
            Destination::Unicast(ip) => ip,
        };
        let dest = SocketAddrV4::new(ip, SERVER_PORT);
        let bytes = packet.encode().map_err(SocketError::Encode)?;
        self.sock
            .send_to(&bytes, dest)
            .await
            .map(|_| ())
            .map_err(|source| SocketError::Send {
                dest,
                iface: self.iface.clone(),
                source,
            })
    }

    /// Receives one datagram into `buf`, or `None` once `deadline` passes.
    /// Errors: [`SocketError::Recv`].
    pub async fn recv_until(
        &self,
        buf: &mut [u8],
        deadline: Instant,
    ) -> Result<Option<usize>, SocketError> {
        match tokio::time::timeout_at(deadline.into(), self.sock.recv_from(buf)).await {
            Err(_elapsed) => Ok(None),
            Ok(Ok((n, _from))) => Ok(Some(n)),
            Ok(Err(source)) => Err(SocketError::Recv {
                iface: self.iface.clone(),
                source,
            }),
        }
    }
}

/// How an [`exchange`] ended.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// An ACK was accepted. `requested_at` is when the REQUEST it answers was sent (lease times
    /// count from there, RFC 2131 §4.4.1).
    Bound {
        /// The lease parameters.
        granted: Granted,
        /// Send time of the last REQUEST.
        requested_at: Instant,
    },
    /// The lease was lost (NAK while renewing, expiry).
    Lost(Lost),
    /// `give_up` passed first; `state` is the client state at that time.
    TimedOut {
        /// [`Client::state_name`].
        state: &'static str,
    },
}

/// Runs `client` from its first output `first` until it binds, loses the lease or `give_up`
/// passes. Each iteration sends one packet or waits for one, and every wait ends at the
/// client's deadline or `give_up`, so the loop is bounded in time. Ignored packets are traced at
/// debug level. Errors: socket errors only.
pub async fn exchange(
    sock: &DhcpSocket,
    client: &mut Client,
    first: Step,
    give_up: Instant,
) -> Result<Outcome, SocketError> {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let mut step = first;
    let mut requested_at = Instant::now();
    let mut last_refused: Option<Ignored> = None;
    loop {
        let until = match step {
            Step::Send { packet, until } => {
                sock.send(&packet).await?;
                requested_at = Instant::now();
                tracing::debug!(iface = %sock.iface, kind = ?packet.kind(), dest = ?packet.dest, xid = client.xid(), "dhcp sent");
                until
            }
            Step::Wait { until, ignored } => {
                log_ignored(&sock.iface, &ignored, &mut last_refused);
                until
            }
            Step::Bound(granted) => {
                return Ok(Outcome::Bound {
                    granted,
                    requested_at,
                })
            }
            Step::Lost(lost) => return Ok(Outcome::Lost(lost)),
        };
        if Instant::now() >= give_up {
            return Ok(Outcome::TimedOut {
                state: client.state_name(),
            });
        }
        step = match sock.recv_until(&mut buf, until.min(give_up)).await? {
            Some(n) => client.on_packet(buf.get(..n).unwrap_or_default(), Instant::now()),
            None if Instant::now() >= give_up => {
                return Ok(Outcome::TimedOut {
                    state: client.state_name(),
                })
            }
            None => client.on_timeout(Instant::now()),
        };
    }
}

/// Traces every ignored packet at debug level; a reply refused as hostile or broken (a bad
/// hardware address or insane lease parameters) also gets a console line, once per distinct
/// reason in a row, so a flood cannot fill the console.
fn log_ignored(iface: &str, ignored: &Ignored, last: &mut Option<Ignored>) {
    tracing::debug!(iface, ?ignored, "dhcp packet ignored");
    let text = match ignored {
        Ignored::BadHardwareAddress { hlen } => format!("hardware address length {hlen}"),
        Ignored::BadLease(bad) => bad.to_string(),
        _ => return,
    };
    if last.as_ref() != Some(ignored) {
        crate::log::line(&format!("dhcp refused a reply on {iface}: {text}"));
        *last = Some(ignored.clone());
    }
}
