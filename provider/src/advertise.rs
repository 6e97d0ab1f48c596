//! Advertisement of what `plasmd serve` serves: mDNS and the Kademlia DHT (issue 4, DESIGN §6).
//!
//! STUB: the interface below is fixed; the bodies are being written (issue 4). `serve` calls
//! [`start`] once the artifact store is loaded and [`Advertiser::shutdown`] on exit; the
//! `dht-node` subcommand calls [`run_dht_node`].

use std::path::PathBuf;

use phase_protocol::Arch;

/// One (channel, arch) that this provider serves.
#[derive(Debug, Clone)]
pub struct Advert {
    /// Channel served.
    pub channel: String,
    /// Architecture served.
    pub arch: Arch,
    /// Absolute URL of the manifest, as others should fetch it (from `--advertise-url` or the
    /// detected address).
    pub manifest_url: String,
    /// Version of the manifest served.
    pub version: String,
}

/// Advertisement settings from the `serve` flags.
#[derive(Debug, Clone, Default)]
pub struct AdvertiseOptions {
    /// Announce on mDNS (`--no-mdns` clears it).
    pub mdns: bool,
    /// Publish on the DHT (`--no-dht` clears it).
    pub dht: bool,
    /// `--dht-listen` multiaddrs (default `/ip4/0.0.0.0/tcp/4001`).
    pub dht_listen: Vec<String>,
    /// `--bootstrap` multiaddrs (each with `/p2p/<peer id>`).
    pub bootstrap: Vec<String>,
    /// `--identity FILE`: stable libp2p key, created with mode 0600 if absent; `None` = fresh.
    pub identity: Option<PathBuf>,
    /// Human-readable provider name (host name by default).
    pub provider_name: Option<String>,
}

/// Errors starting advertisement.
#[derive(Debug, thiserror::Error)]
pub enum AdvertiseError {
    /// Anything that went wrong, with context.
    #[error("advertisement failed: {0}")]
    Failed(String),
}

/// Running advertisement; dropping it without [`Advertiser::shutdown`] stops it abruptly.
#[derive(Debug, Default)]
pub struct Advertiser {
    peer_id: Option<String>,
}

impl Advertiser {
    /// The libp2p peer id, when the DHT is on.
    pub fn peer_id(&self) -> Option<&str> {
        self.peer_id.as_deref()
    }

    /// Sends mDNS goodbyes and stops the DHT node.
    pub async fn shutdown(self) {}
}

/// Starts advertising `adverts` as `opts` says.
///
/// # Errors
/// [`AdvertiseError`] when the mDNS daemon or DHT node cannot start.
pub async fn start(opts: AdvertiseOptions, adverts: Vec<Advert>) -> Result<Advertiser, AdvertiseError> {
    let _ = (opts, adverts);
    Ok(Advertiser::default())
}

/// Runs a DHT-only node (`plasmd dht-node`) until `shutdown` resolves.
///
/// # Errors
/// [`AdvertiseError`] when the node cannot start.
pub async fn run_dht_node(
    opts: AdvertiseOptions,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), AdvertiseError> {
    let _ = opts;
    shutdown.await;
    Ok(())
}
