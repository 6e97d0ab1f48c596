//! Kademlia DHT publication and lookup of manifest records (DESIGN §6, seeds 002 and 004).
//!
//! Boot flow: `plasmd serve` publishes one [`Publication`] per (channel, arch) it serves;
//! `plasmd dht-node` runs a bare node; the init (internet and private modes) and
//! `phase discover` run a short-lived client node and call [`DhtNode::lookup`].
//!
//! Transport: TCP + Noise + Yamux, Kademlia on the protocol `/phase/kad/1.0.0` (so Phase Boot
//! nodes never mix with the IPFS DHT) and, on [`Role::Server`] nodes only, identify
//! `/phase/id/1.0.0`, whose listen addresses fill the routing table.
//!
//! How several providers of one key are all found: each provider
//! 1. puts its [`ManifestRecord`](phase_protocol::ManifestRecord) under the shared key `/phase/{channel}/{arch}/manifest`
//!    (the closest nodes keep whichever copy reached them last),
//! 2. puts the same record under its own per-peer key
//!    `/phase/{channel}/{arch}/manifest/<peer id>` (nobody else overwrites it), and
//! 3. announces itself with `start_providing(shared key)`.
//!
//! A lookup runs `get_providers(shared key)` and `get_record(shared key)` together and, for
//! every provider peer id that comes back, `get_record(per-peer key)`. Every record is parsed,
//! bound to its publisher ([`binding`]: `peer_id`, per-peer key suffix and publisher agree) and
//! validated (`validate_for(channel, arch, now)`); a bad one is skipped with a log line.
//! Storing nodes keep a `/phase/` record only when it is bound to the authenticated peer that
//! put it, within a per-publisher quota. The lookup ends as soon as it holds `want` valid records, when
//! all its queries are done, or at its deadline, whichever comes first: never Kademlia's 60 s
//! query timeout.
//!
//! Boot-stage peers (issue 19 §3) use the same three steps under `/phase/peers/<hex>` (the
//! SHA-256 of the signed manifest bytes): [`DhtNode::publish_peer`] puts a
//! [`PeerRecord`](phase_protocol::PeerRecord) naming the node's chunk server, and
//! [`DhtNode::lookup_peers`] finds the other peers of the same release, bound and validated
//! like manifest records.
//!
//! Republication: a publishing node re-puts fresh records (new `created_at`) and re-announces
//! itself every half TTL. Storing nodes keep records at most their TTL (the Kademlia record
//! expiry travels with the put), and clients check `created_at + ttl_secs` themselves, so a
//! provider that stops republishing disappears within one TTL.

pub mod binding;
mod driver;

use std::time::Duration;

use libp2p::identity::Keypair;
use libp2p::{Multiaddr, PeerId};
use phase_protocol::{Arch, Sha256Digest};
use tokio::sync::{mpsc, oneshot, watch};

use crate::Found;

/// The Kademlia protocol name of the Phase Boot DHT.
pub const KAD_PROTOCOL: &str = "/phase/kad/1.0.0";
/// The identify protocol version string of Phase Boot nodes.
pub const IDENTIFY_PROTOCOL: &str = "/phase/id/1.0.0";

/// The per-peer key of `peer` under a shared key: `{shared}/{peer id}`.
pub fn per_peer_key(shared: &str, peer: &PeerId) -> String {
    format!("{shared}/{peer}")
}

/// Whether a node answers DHT requests and stores records for others.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Kademlia server mode: stores records and provider records for others (providers and
    /// `plasmd dht-node`).
    Server,
    /// Kademlia client mode: asks, never answers, stores nothing for others (the init and
    /// `phase discover`; ephemeral/private mode).
    Client,
}

/// How to start a [`DhtNode`].
#[derive(Debug, Clone)]
pub struct DhtConfig {
    /// The node's key (see [`crate::identity`]).
    pub keypair: Keypair,
    /// Addresses to listen on, e.g. `/ip4/0.0.0.0/tcp/4001`; empty for clients.
    pub listen: Vec<Multiaddr>,
    /// Bootstrap peers; each must end in `/p2p/<peer id>`.
    pub bootstrap: Vec<Multiaddr>,
    /// Server or client mode.
    pub role: Role,
}

/// One record this node keeps published: what [`DhtNode::publish`] takes.
#[derive(Debug, Clone)]
pub struct Publication {
    /// Channel served.
    pub channel: String,
    /// Architecture served.
    pub arch: Arch,
    /// Absolute http(s) URL of the manifest.
    pub manifest_url: String,
    /// Version of the manifest served.
    pub version: String,
    /// Human-readable provider name.
    pub provider_name: Option<String>,
    /// Record lifetime; the node republishes every half of it. Default
    /// `phase_protocol::record::DEFAULT_TTL_SECS` (1 hour); tests use seconds.
    pub ttl: Duration,
}

/// A boot-stage peer found by [`DhtNode::lookup_peers`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundPeer {
    /// Its chunk server, `http://<host>:<port>` (checked by
    /// [`phase_protocol::mdns::peer_base_url`]).
    pub url: String,
    /// The peer id that published the record (base58).
    pub peer_id: String,
}

/// Errors of the DHT node.
#[derive(Debug, thiserror::Error)]
pub enum DhtError {
    /// A bootstrap address has no `/p2p/<peer id>` suffix.
    #[error("bootstrap address {0} has no /p2p/<peer id> suffix")]
    BootstrapWithoutPeerId(Multiaddr),
    /// A multiaddr string did not parse.
    #[error("bad multiaddr {addr:?}")]
    BadMultiaddr {
        /// The text given.
        addr: String,
        /// The parse error.
        #[source]
        source: libp2p::multiaddr::Error,
    },
    /// Building the TCP/Noise/Yamux transport failed.
    #[error("building the libp2p transport")]
    Transport(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// Listening on an address failed.
    #[error("listening on {addr}")]
    Listen {
        /// The address.
        addr: Multiaddr,
        /// The transport error.
        #[source]
        source: libp2p::TransportError<std::io::Error>,
    },
    /// The node's task has stopped.
    #[error("the DHT node has stopped")]
    Stopped,
}

/// Parses multiaddr strings (`--bootstrap`, `--dht-listen`).
///
/// # Errors
/// [`DhtError::BadMultiaddr`] for the first that does not parse.
pub fn parse_multiaddrs(addrs: &[String]) -> Result<Vec<Multiaddr>, DhtError> {
    addrs
        .iter()
        .map(|a| {
            a.parse().map_err(|source| DhtError::BadMultiaddr {
                addr: a.clone(),
                source,
            })
        })
        .collect()
}

pub(crate) enum Command {
    Publish(Vec<Publication>),
    PublishPeer {
        manifest_sha256: Sha256Digest,
        url: String,
        ttl: Duration,
    },
    LookupPeers {
        manifest_sha256: Sha256Digest,
        want: usize,
        timeout: Duration,
        clock_trusted: bool,
        reply: oneshot::Sender<Vec<FoundPeer>>,
    },
    PublishRaw {
        shared_key: String,
        value: Vec<u8>,
        ttl: Duration,
    },
    Lookup {
        channel: String,
        arch: Arch,
        want: usize,
        timeout: Duration,
        clock_trusted: bool,
        reply: oneshot::Sender<Vec<Found>>,
    },
    Shutdown(oneshot::Sender<()>),
}

/// A running DHT node: a task on the current tokio runtime that owns the libp2p swarm.
///
/// Works on a current-thread runtime (PID 1). Dropping the handle stops the task.
#[derive(Debug)]
pub struct DhtNode {
    peer_id: PeerId,
    commands: mpsc::UnboundedSender<Command>,
    listen: watch::Receiver<Vec<Multiaddr>>,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Command::Publish(_) => "Publish",
            Command::PublishPeer { .. } => "PublishPeer",
            Command::LookupPeers { .. } => "LookupPeers",
            Command::PublishRaw { .. } => "PublishRaw",
            Command::Lookup { .. } => "Lookup",
            Command::Shutdown(_) => "Shutdown",
        })
    }
}

impl DhtNode {
    /// Builds the swarm, starts listening and dials the bootstrap peers. Must be called inside
    /// a tokio runtime.
    ///
    /// # Errors
    /// [`DhtError::BootstrapWithoutPeerId`], [`DhtError::Transport`], [`DhtError::Listen`].
    pub fn start(config: DhtConfig) -> Result<Self, DhtError> {
        let peer_id = config.keypair.public().to_peer_id();
        let (commands, rx) = mpsc::unbounded_channel();
        let (listen_tx, listen) = watch::channel(Vec::new());
        let driver = driver::Driver::new(config, rx, listen_tx)?;
        let task = tokio::spawn(driver.run());
        Ok(DhtNode {
            peer_id,
            commands,
            listen,
            task,
        })
    }

    /// This node's peer id.
    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// The addresses the node listens on, each ending in `/p2p/<peer id>`; waits up to
    /// `timeout` for the first one. Empty for clients or when listening failed.
    pub async fn listen_addrs(&self, timeout: Duration) -> Vec<Multiaddr> {
        let mut rx = self.listen.clone();
        let _ = tokio::time::timeout(timeout, rx.wait_for(|a| !a.is_empty())).await;
        let addrs = rx.borrow().clone();
        addrs
    }

    /// A watch of the listen addresses (each ending in `/p2p/<peer id>`); it changes as the
    /// node starts listening on each interface.
    pub fn watch_listen_addrs(&self) -> watch::Receiver<Vec<Multiaddr>> {
        self.listen.clone()
    }

    /// Replaces the set of records this node publishes, puts them now and every half TTL.
    ///
    /// # Errors
    /// [`DhtError::Stopped`] when the node's task has ended.
    pub fn publish(&self, publications: Vec<Publication>) -> Result<(), DhtError> {
        self.commands
            .send(Command::Publish(publications))
            .map_err(|_| DhtError::Stopped)
    }

    /// Publishes `value` as this peer's record under `shared_key` exactly as [`Self::publish`]
    /// does with a real record (shared key, per-peer key, provider record), once, without
    /// validation. For tests and tools that need to inject poisoned records.
    ///
    /// # Errors
    /// [`DhtError::Stopped`] when the node's task has ended.
    pub fn publish_raw(
        &self,
        shared_key: String,
        value: Vec<u8>,
        ttl: Duration,
    ) -> Result<(), DhtError> {
        self.commands
            .send(Command::PublishRaw {
                shared_key,
                value,
                ttl,
            })
            .map_err(|_| DhtError::Stopped)
    }

    /// Finds the manifest records for `channel`/`arch`: returns as soon as `want` valid ones are
    /// in hand, when every query has finished, or after `timeout`, whichever is first. Records
    /// that fail validation are skipped and logged. Order: newest version first.
    ///
    /// # Errors
    /// [`DhtError::Stopped`] when the node's task has ended.
    pub async fn lookup(
        &self,
        channel: &str,
        arch: Arch,
        want: usize,
        timeout: Duration,
    ) -> Result<Vec<Found>, DhtError> {
        self.lookup_with_clock(channel, arch, want, timeout, true)
            .await
    }

    /// [`DhtNode::lookup`] for a host whose clock may be wrong: with `clock_trusted` false,
    /// records are not judged by TTL or `created_at` (a record only points; issue 15 §3).
    ///
    /// # Errors
    /// [`DhtError::Stopped`] when the node's task has ended.
    pub async fn lookup_with_clock(
        &self,
        channel: &str,
        arch: Arch,
        want: usize,
        timeout: Duration,
        clock_trusted: bool,
    ) -> Result<Vec<Found>, DhtError> {
        let (reply, rx) = oneshot::channel();
        let cmd = Command::Lookup {
            channel: channel.to_owned(),
            arch,
            want: want.max(1),
            timeout,
            clock_trusted,
            reply,
        };
        self.commands.send(cmd).map_err(|_| DhtError::Stopped)?;
        let mut found = rx.await.map_err(|_| DhtError::Stopped)?;
        crate::sort_best_first(&mut found);
        Ok(found)
    }

    /// Announces this node as a boot-stage peer of the release whose signed manifest has digest
    /// `manifest_sha256`, serving verified chunks at `url` (`http://192.0.2.11:7400`): a
    /// [`PeerRecord`](phase_protocol::PeerRecord) under `/phase/peers/<hex>` and this node's
    /// per-peer key below it, plus a provider record; put now and every half `ttl` until the
    /// node stops. A second call for the same release replaces the first.
    ///
    /// # Errors
    /// [`DhtError::Stopped`] when the node's task has ended.
    pub fn publish_peer(
        &self,
        manifest_sha256: Sha256Digest,
        url: String,
        ttl: Duration,
    ) -> Result<(), DhtError> {
        self.commands
            .send(Command::PublishPeer {
                manifest_sha256,
                url,
                ttl,
            })
            .map_err(|_| DhtError::Stopped)
    }

    /// Finds the boot-stage peers of the release whose signed manifest has digest
    /// `manifest_sha256` (this node left out): returns as soon as `want` valid records are in
    /// hand, when every query has finished, or after `timeout`. Records are bound to their
    /// publisher and validated ([`phase_protocol::PeerRecord::validate_for`]; with
    /// `clock_trusted` false the TTL is not judged); bad ones are skipped and logged.
    ///
    /// # Errors
    /// [`DhtError::Stopped`] when the node's task has ended.
    pub async fn lookup_peers(
        &self,
        manifest_sha256: Sha256Digest,
        want: usize,
        timeout: Duration,
        clock_trusted: bool,
    ) -> Result<Vec<FoundPeer>, DhtError> {
        let (reply, rx) = oneshot::channel();
        let cmd = Command::LookupPeers {
            manifest_sha256,
            want: want.max(1),
            timeout,
            clock_trusted,
            reply,
        };
        self.commands.send(cmd).map_err(|_| DhtError::Stopped)?;
        rx.await.map_err(|_| DhtError::Stopped)
    }

    /// Stops the node: closes its connections and ends its task (bounded: 2 s).
    pub async fn shutdown(self) {
        let (tx, rx) = oneshot::channel();
        if self.commands.send(Command::Shutdown(tx)).is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(2), rx).await;
        }
        self.task.abort();
    }
}

impl Drop for DhtNode {
    fn drop(&mut self) {
        self.task.abort();
    }
}
