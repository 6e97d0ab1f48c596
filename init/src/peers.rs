//! Peers in the boot stage (issue 19 §3): while a machine fetches a v2 release it serves the
//! chunks it has verified ([`crate::fetch::share`]) on its lease address, port [`PEER_PORT`],
//! announces itself on mDNS as `_phase-peer._tcp.local.` with the digest of the signed manifest
//! it verified ([`phase_protocol::mdns::PeerAdvert`]), and takes peers announcing the same
//! digest into its own download ([`crate::fetch::swarm`]). All of this ends when the boot
//! stage's fetch returns, just before the cache write and kexec; after kexec `plasmd serve`
//! serves the whole release as a provider.
//!
//! Only in modes that look on the LAN (local and internet, [`BootMode::serves_peers`]):
//! private mode never listens. `phase.peers=off` turns it off for one boot.
//!
//! Trust: an advert is unauthenticated. A peer's chunks are checked against the signed chunk
//! list like any source's, so a lying advert costs one peer slot until the swarm drops it; at
//! most [`MAX_FOUND`] peers are taken per boot.
//!
//! [`BootMode::serves_peers`]: phase_protocol::BootMode::serves_peers

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use phase_discovery::mdns::{MdnsAdvertiser, MdnsBrowser, MdnsEvent};
use phase_protocol::mdns::PeerAdvert;
use phase_protocol::{Sha256Digest, VerifiedManifest};
use tokio::sync::watch;

use crate::fetch::share::{self, Shelf};
use crate::fetch::PeerFinder;
use crate::log;

/// TCP port of the boot stage's chunk server.
pub const PEER_PORT: u16 = 7400;

/// Most peers taken from mDNS in one boot (a hostile LAN can announce many).
pub const MAX_FOUND: usize = 64;

/// How long one wait for an mDNS event lasts before the loop looks again.
const BROWSE_SLICE: Duration = Duration::from_secs(30);

/// The boot stage's chunk server, running on the current tokio runtime.
#[derive(Debug)]
pub struct BootPeers {
    shelf: Shelf,
    url: String,
    host: String,
    iface: String,
    task: tokio::task::JoinHandle<()>,
}

impl BootPeers {
    /// Binds `addr:PEER_PORT` and serves the shelf there until dropped. `iface` is where mDNS
    /// announces and browses.
    ///
    /// # Errors
    /// The bind error (address in use, not local).
    pub async fn start(addr: Ipv4Addr, iface: &str) -> std::io::Result<Self> {
        let listener = share::bind(SocketAddr::from((addr, PEER_PORT))).await?;
        let shelf = Shelf::new();
        let task = tokio::spawn(share::serve(listener, shelf.clone()));
        Ok(BootPeers {
            shelf,
            url: format!("http://{addr}:{PEER_PORT}"),
            host: format!("phase-{}", addr.to_string().replace('.', "-")),
            iface: iface.to_owned(),
            task,
        })
    }

    /// The shelf to hand the fetch ([`crate::fetch::FetchOptions::share`]).
    pub fn shelf(&self) -> Shelf {
        self.shelf.clone()
    }

    /// This machine's peer base URL (`http://192.0.2.11:7400`).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The finder for [`crate::fetch::FetchOptions::peer_finder`] ([`mdns_finder`] for this
    /// machine's URL, host label and interface).
    pub fn finder(&self) -> PeerFinder {
        mdns_finder(self.url.clone(), self.host.clone(), self.iface.clone())
    }
}

/// A peer finder over mDNS for a chunk server at `url` (`http://192.0.2.11:7400`): for each
/// verified manifest, a task on the current tokio runtime announces `_phase-peer._tcp` instance
/// `<host>-peer` on `iface` with the digest of the signed manifest bytes and `url`, and
/// collects the other peers announcing the same digest (itself excluded, at most
/// [`MAX_FOUND`]), until every receiver of its list is dropped; then it withdraws the
/// announcement. Used by the boot stage ([`BootPeers::finder`]) and `phase fetch
/// --mdns-peers`.
pub fn mdns_finder(url: String, host: String, iface: String) -> PeerFinder {
    PeerFinder(Arc::new(move |m: &VerifiedManifest| {
        let advert = PeerAdvert {
            manifest_sha256: Sha256Digest::of(m.raw()),
            url: url.clone(),
        };
        let (tx, rx) = watch::channel(Vec::new());
        tokio::spawn(announce_and_browse(advert, host.clone(), iface.clone(), tx));
        rx
    }))
}

impl Drop for BootPeers {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Announces `advert` and sends every new peer URL announcing the same digest on `tx`, until
/// `tx` has no receiver; then withdraws the announcement. mDNS failures are logged and end the
/// search: the fetch goes on with the sources it has.
async fn announce_and_browse(
    advert: PeerAdvert,
    host: String,
    iface: String,
    tx: watch::Sender<Vec<String>>,
) {
    let announced = match MdnsAdvertiser::start_peer(&advert, &host, Some(&iface)) {
        Ok(a) => {
            log::line(&format!(
                "peers: serving verified chunks at {} ({})",
                advert.url, advert.manifest_sha256
            ));
            Some(a)
        }
        Err(e) => {
            log::line(&format!(
                "peers: mDNS announce failed: {}",
                log::error_chain(&e)
            ));
            None
        }
    };
    match MdnsBrowser::start_peers(Some(&iface)) {
        Ok(mut browser) => {
            let mut invalid = 0u32;
            loop {
                let slice = Instant::now() + BROWSE_SLICE;
                let event = tokio::select! {
                    () = tx.closed() => break,
                    e = browser.next_event(slice) => e,
                };
                match event {
                    Some(MdnsEvent::Resolved { advert: a, .. }) => {
                        take(&tx, &advert, a);
                    }
                    Some(MdnsEvent::Invalid { fullname, error }) => {
                        invalid += 1;
                        if invalid <= 3 {
                            log::line(&format!("peers: ignoring {fullname}: {error}"));
                        }
                    }
                    Some(MdnsEvent::Removed { .. }) => {}
                    // The slice passed, or the daemon is gone (then stop rather than spin).
                    None if Instant::now() >= slice => {}
                    None => break,
                }
            }
            browser.stop();
        }
        Err(e) => log::line(&format!(
            "peers: mDNS browse failed: {}",
            log::error_chain(&e)
        )),
    }
    if let Some(a) = announced {
        // Wait for the fetch to end before the goodbye, so peers stop asking.
        tx.closed().await;
        a.shutdown().await;
    }
}

/// Adds `found`'s URL to the list when it announces `own`'s manifest digest, is not `own`, is
/// new, and the list holds fewer than [`MAX_FOUND`]. Returns whether it was added.
fn take(tx: &watch::Sender<Vec<String>>, own: &PeerAdvert, found: PeerAdvert) -> bool {
    if found.manifest_sha256 != own.manifest_sha256 || found.url == own.url {
        return false;
    }
    tx.send_if_modified(|list| {
        if list.len() >= MAX_FOUND || list.contains(&found.url) {
            return false;
        }
        list.push(found.url.clone());
        true
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn advert(m: &[u8], url: &str) -> PeerAdvert {
        PeerAdvert {
            manifest_sha256: Sha256Digest::of(m),
            url: url.to_owned(),
        }
    }

    #[test]
    fn only_new_peers_of_the_same_release_are_taken_up_to_the_cap() {
        let own = advert(b"m", "http://192.0.2.10:7400");
        let (tx, rx) = watch::channel(Vec::new());
        assert!(!take(&tx, &own, own.clone()), "itself");
        assert!(!take(&tx, &own, advert(b"other", "http://192.0.2.11:7400")));
        assert!(take(&tx, &own, advert(b"m", "http://192.0.2.11:7400")));
        assert!(
            !take(&tx, &own, advert(b"m", "http://192.0.2.11:7400")),
            "twice"
        );
        assert_eq!(*rx.borrow(), vec!["http://192.0.2.11:7400".to_string()]);
        for i in 0..2 * MAX_FOUND {
            take(
                &tx,
                &own,
                advert(b"m", &format!("http://192.0.2.{}:7400", 20 + i)),
            );
        }
        assert_eq!(rx.borrow().len(), MAX_FOUND);
    }
}
