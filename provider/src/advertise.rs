//! Advertisement of what `plasmd serve` serves: mDNS and the Kademlia DHT (issue 4, DESIGN §6).
//!
//! `serve` calls [`start`] once the artifact store is loaded (an advert names a manifest
//! version) and [`Advertiser::shutdown`] on exit, which sends the mDNS goodbyes; the `dht-node`
//! subcommand calls [`run_dht_node`]. The mechanisms live in `phase_discovery`, shared with the
//! init and the `phase` tool: one mDNS instance per (channel, arch), and per (channel, arch) a
//! DHT record under the shared key, one under the per-peer key and a provider record,
//! republished every half TTL (`phase_protocol::record::DEFAULT_TTL_SECS`).

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use phase_discovery::dht::{self, DhtConfig, DhtError, DhtNode, Publication, Role};
use phase_discovery::identity::{self, IdentityError};
use phase_discovery::mdns::{self, MdnsAdvertiser, MdnsError};
use phase_protocol::mdns::MdnsAdvert;
use phase_protocol::Arch;

/// Default `--dht-listen` address.
pub const DEFAULT_DHT_LISTEN: &str = "/ip4/0.0.0.0/tcp/4001";

/// One (channel, arch) that this provider serves.
#[derive(Debug, Clone, PartialEq, Eq)]
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
    /// The mDNS daemon or an instance could not start.
    #[error("mDNS advertisement")]
    Mdns(#[source] MdnsError),
    /// The DHT node could not start (bad multiaddr, transport, listen address).
    #[error("DHT node")]
    Dht(#[source] DhtError),
    /// `--identity` could not be read or created.
    #[error("DHT identity")]
    Identity(#[source] IdentityError),
    /// The DHT node listens nowhere after 5 s.
    #[error("DHT node is not listening on any of {0:?}")]
    NotListening(Vec<String>),
}

/// Running advertisement; dropping it without [`Advertiser::shutdown`] stops it abruptly (no
/// mDNS goodbye).
#[derive(Debug, Default)]
pub struct Advertiser {
    peer_id: Option<String>,
    mdns: Option<MdnsAdvertiser>,
    dht: Option<DhtNode>,
    opts: AdvertiseOptions,
    adverts: Vec<Advert>,
}

impl Advertiser {
    /// The libp2p peer id, when the DHT is on.
    pub fn peer_id(&self) -> Option<&str> {
        self.peer_id.as_deref()
    }

    /// What is advertised now.
    pub fn adverts(&self) -> &[Advert] {
        &self.adverts
    }

    /// Advertises `adverts` instead of what was advertised (after `plasmd serve` reloaded its
    /// artifacts): the mDNS instances say goodbye and are announced again with the new TXT
    /// records, and the DHT node (same peer id) publishes the new set at once and every half
    /// TTL from then on. Returns false, doing nothing, when `adverts` equal the current ones.
    ///
    /// # Errors
    /// [`AdvertiseError::Mdns`] when the new mDNS instances cannot start (none run then),
    /// [`AdvertiseError::Dht`] when the DHT node has stopped.
    pub async fn update(&mut self, adverts: Vec<Advert>) -> Result<bool, AdvertiseError> {
        if adverts == self.adverts {
            return Ok(false);
        }
        let dht = match &self.dht {
            Some(node) => node
                .publish(publications(&self.opts, &adverts))
                .map_err(AdvertiseError::Dht),
            None => Ok(()),
        };
        if let Some(m) = self.mdns.take() {
            m.shutdown().await;
        }
        let mdns = start_mdns(&self.opts, &adverts).map(|m| self.mdns = m);
        // Remembered only when both took, so the next update tries again otherwise.
        dht.and(mdns)?;
        self.adverts = adverts;
        Ok(true)
    }

    /// Sends mDNS goodbyes (bounded, 2 s per instance) and stops the DHT node.
    pub async fn shutdown(self) {
        if let Some(m) = self.mdns {
            m.shutdown().await;
        }
        if let Some(d) = self.dht {
            d.shutdown().await;
        }
    }
}

fn start_node(opts: &AdvertiseOptions) -> Result<DhtNode, AdvertiseError> {
    let keypair =
        identity::load_or_ephemeral(opts.identity.as_deref()).map_err(AdvertiseError::Identity)?;
    let listen = if opts.dht_listen.is_empty() {
        vec![DEFAULT_DHT_LISTEN.to_owned()]
    } else {
        opts.dht_listen.clone()
    };
    let listen = dht::parse_multiaddrs(&listen).map_err(AdvertiseError::Dht)?;
    let bootstrap = dht::parse_multiaddrs(&opts.bootstrap).map_err(AdvertiseError::Dht)?;
    DhtNode::start(DhtConfig {
        keypair,
        listen,
        bootstrap,
        role: Role::Server,
    })
    .map_err(AdvertiseError::Dht)
}

/// The mDNS instances for `adverts` (none when mDNS is off or there is nothing to announce).
fn start_mdns(
    opts: &AdvertiseOptions,
    adverts: &[Advert],
) -> Result<Option<MdnsAdvertiser>, AdvertiseError> {
    if !opts.mdns || adverts.is_empty() {
        return Ok(None);
    }
    let mdns_adverts: Vec<MdnsAdvert> = adverts
        .iter()
        .map(|a| MdnsAdvert {
            channel: a.channel.clone(),
            arch: a.arch,
            manifest_url: a.manifest_url.clone(),
            version: a.version.clone(),
        })
        .collect();
    let host = mdns::default_host_label(opts.provider_name.as_deref());
    MdnsAdvertiser::start(&mdns_adverts, &host, None)
        .map(Some)
        .map_err(AdvertiseError::Mdns)
}

/// The DHT records for `adverts`, with the default record TTL.
fn publications(opts: &AdvertiseOptions, adverts: &[Advert]) -> Vec<Publication> {
    let ttl = Duration::from_secs(phase_protocol::record::DEFAULT_TTL_SECS);
    adverts
        .iter()
        .map(|a| Publication {
            channel: a.channel.clone(),
            arch: a.arch,
            manifest_url: a.manifest_url.clone(),
            version: a.version.clone(),
            provider_name: opts.provider_name.clone(),
            ttl,
        })
        .collect()
}

/// Starts advertising `adverts` as `opts` says: mDNS instances first, then the DHT node, which
/// publishes every advert now and every half TTL (puts are confirmed in the log as
/// `dht put ok /phase/<channel>/<arch>/manifest`). [`Advertiser::update`] changes them later.
///
/// # Errors
/// [`AdvertiseError`] when the mDNS daemon or DHT node cannot start; nothing keeps running then.
pub async fn start(
    opts: AdvertiseOptions,
    adverts: Vec<Advert>,
) -> Result<Advertiser, AdvertiseError> {
    let mut advertiser = Advertiser {
        mdns: start_mdns(&opts, &adverts)?,
        ..Advertiser::default()
    };
    if opts.dht {
        let node = match start_node(&opts) {
            Ok(n) => n,
            Err(e) => {
                advertiser.shutdown().await;
                return Err(e);
            }
        };
        if let Err(e) = node.publish(publications(&opts, &adverts)) {
            advertiser.shutdown().await;
            return Err(AdvertiseError::Dht(e));
        }
        advertiser.peer_id = Some(node.peer_id().to_string());
        tracing::info!(peer_id = %node.peer_id(), adverts = adverts.len(), "dht advertising");
        advertiser.dht = Some(node);
    }
    advertiser.opts = opts;
    advertiser.adverts = adverts;
    Ok(advertiser)
}

/// Runs a DHT-only node (`plasmd dht-node`) until `shutdown` resolves. Prints one line on stdout
/// per listen address, `dht-node listening <multiaddr>/p2p/<peer id>`, as each appears; logs
/// every record other peers store here.
///
/// # Errors
/// [`AdvertiseError`] when the node cannot start or listens nowhere within 5 s.
pub async fn run_dht_node(
    opts: AdvertiseOptions,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), AdvertiseError> {
    let node = start_node(&opts)?;
    if node.listen_addrs(Duration::from_secs(5)).await.is_empty() {
        node.shutdown().await;
        return Err(AdvertiseError::NotListening(opts.dht_listen));
    }
    let mut addrs = node.watch_listen_addrs();
    let mut printed = 0;
    tokio::pin!(shutdown);
    loop {
        {
            let now = addrs.borrow_and_update();
            let mut out = std::io::stdout().lock();
            for a in now.iter().skip(printed) {
                let _ = writeln!(out, "dht-node listening {a}");
            }
            let _ = out.flush();
            printed = now.len();
        }
        tokio::select! {
            () = &mut shutdown => break,
            changed = addrs.changed() => if changed.is_err() { break },
        }
    }
    node.shutdown().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn advert(n: u8) -> Advert {
        Advert {
            channel: "stable".into(),
            arch: Arch::X86_64,
            manifest_url: format!("http://192.0.2.{n}:8080/stable/x86_64/manifest.json"),
            version: "0.1.0".into(),
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn started_advertiser_is_found_on_the_dht_with_a_stable_identity() {
        let dir = tempfile::tempdir().unwrap();
        let boot = DhtNode::start(DhtConfig {
            keypair: identity::ephemeral(),
            listen: vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()],
            bootstrap: vec![],
            role: Role::Server,
        })
        .unwrap();
        let boot_addr = boot.listen_addrs(Duration::from_secs(5)).await.remove(0);
        let key = dir.path().join("identity.key");
        let opts = AdvertiseOptions {
            mdns: false,
            dht: true,
            dht_listen: vec!["/ip4/127.0.0.1/tcp/0".into()],
            bootstrap: vec![boot_addr.to_string()],
            identity: Some(key.clone()),
            provider_name: Some("unit".into()),
        };
        let a = start(opts, vec![advert(7)]).await.unwrap();
        let peer = a.peer_id().unwrap().to_owned();
        assert_eq!(
            Some(peer.clone()),
            identity::load_or_create(&key)
                .ok()
                .map(|k| k.public().to_peer_id().to_string())
        );
        let client = DhtNode::start(DhtConfig {
            keypair: identity::ephemeral(),
            listen: vec![],
            bootstrap: vec![boot_addr],
            role: Role::Client,
        })
        .unwrap();
        // Bounded: retries while the first put replicates.
        let mut found = Vec::new();
        for _ in 0..10 {
            found = client
                .lookup("stable", Arch::X86_64, 1, Duration::from_secs(2))
                .await
                .unwrap();
            if !found.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].manifest_url, advert(7).manifest_url);
        assert_eq!(found[0].provider.as_deref(), Some(peer.as_str()));

        // After a reload: the same adverts change nothing; a new version is found from the
        // same peer id.
        let mut a = a;
        assert!(!a.update(vec![advert(7)]).await.unwrap());
        let newer = Advert {
            version: "0.2.0".into(),
            ..advert(7)
        };
        assert!(a.update(vec![newer.clone()]).await.unwrap());
        assert_eq!(a.adverts(), &[newer][..]);
        let mut version = String::new();
        for _ in 0..10 {
            let found = client
                .lookup("stable", Arch::X86_64, 1, Duration::from_secs(2))
                .await
                .unwrap();
            if let Some(r) = found.first() {
                assert_eq!(r.provider.as_deref(), Some(peer.as_str()));
                version = r.version.to_string();
                if version == "0.2.0" {
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        assert_eq!(version, "0.2.0", "the updated record was not found");
        a.shutdown().await;
    }

    #[tokio::test(flavor = "current_thread")]
    async fn bad_bootstrap_address_is_refused_at_start() {
        let opts = AdvertiseOptions {
            dht: true,
            dht_listen: vec!["/ip4/127.0.0.1/tcp/0".into()],
            bootstrap: vec!["/ip4/127.0.0.1/tcp/4001".into()],
            ..AdvertiseOptions::default()
        };
        assert!(matches!(
            start(opts, vec![advert(1)]).await,
            Err(AdvertiseError::Dht(DhtError::BootstrapWithoutPeerId(_)))
        ));
    }
}
