//! Peers in the boot stage (issue 19 §3): while a machine fetches a v2 release it serves the
//! chunks it has verified ([`crate::fetch::share`]) on its lease address, port [`PEER_PORT`],
//! announces itself on mDNS as `_phase-peer._tcp.local.` with the digest of the signed manifest
//! it verified ([`phase_protocol::mdns::PeerAdvert`]), and takes peers announcing the same
//! digest into its own download ([`crate::fetch::swarm`]). In a mode that looks in the DHT
//! (internet) it also announces a [`phase_protocol::PeerRecord`] under
//! `/phase/peers/<digest>` and looks there for the others ([`dht_finder`]), so peers that mDNS
//! cannot reach (another segment, multicast filtered) are found too. All of this ends when the
//! boot stage's fetch returns, just before the cache write and kexec; after kexec `plasmd
//! serve` serves the whole release as a provider.
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
use phase_discovery::{identity, DhtConfig, DhtNode, Role};
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

/// Lifetime of this machine's DHT peer record (2 min): it is put again every minute while the
/// fetch runs, and disappears from the DHT within this time after the machine kexecs.
pub const PEER_RECORD_TTL: Duration = Duration::from_secs(120);

/// Longest one DHT lookup for peers runs.
const DHT_LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);

/// Pause between two DHT lookups for peers (peers start their fetches at different times).
const DHT_RELOOK: Duration = Duration::from_secs(2);

/// How long the boot stage's fetch runs before it joins the DHT to announce itself and look for
/// peers (1 s; issue 18 §3). A fetch from an idle provider on the LAN is done by then and never
/// pays for the DHT node (a new key, a TCP + Noise handshake with each bootstrap peer, a put and
/// the lookups), which would compete for the CPU with the very fetch it is meant to speed up;
/// a fetch that is slow because many machines boot at once, the case peers exist for, joins
/// after this delay.
pub const DHT_PEER_DELAY: Duration = Duration::from_secs(1);

/// How long the boot stage's fetch runs before it announces itself and browses for peers on
/// mDNS (1 s; issue 18 §3), for the reason of [`DHT_PEER_DELAY`]: the mDNS daemon (a thread,
/// its sockets, the announcement, the browse and the answers) cost a lone machine's boot about
/// 60 ms of fetch time on one vCPU under TCG and as much again in the next kernel, whose
/// unpack pays for the code the first stage ran. A storm's fetches last many seconds (the QEMU
/// storm test's, ~20 s), of which the peers miss the first. `phase fetch --mdns-peers` starts
/// at once.
pub const MDNS_PEER_DELAY: Duration = Duration::from_secs(1);

/// How the boot stage joins the DHT to find peers: its bootstrap peers (`phase.bootstrap`) and
/// whether its clock is trusted (records' TTLs are judged only then).
#[derive(Debug, Clone)]
pub struct DhtPeering {
    /// Bootstrap multiaddrs, each ending in `/p2p/<peer id>` (as `phase.bootstrap` gives them).
    pub bootstrap: Vec<String>,
    /// Whether this host's clock is trusted.
    pub clock_trusted: bool,
    /// How long the fetch runs before the DHT node starts ([`DHT_PEER_DELAY`] in the boot
    /// stage); a fetch that returns sooner never starts it.
    pub start_after: Duration,
}

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

    /// The finder for [`crate::fetch::FetchOptions::peer_finder`]: [`mdns_finder`] for this
    /// machine's URL, host label and interface, and with `dht` also [`dht_finder`], their
    /// lists joined ([`PeerFinder::union`], at most [`MAX_FOUND`] in all).
    pub fn finder(&self, dht: Option<DhtPeering>) -> PeerFinder {
        let mdns = mdns_finder(
            self.url.clone(),
            self.host.clone(),
            self.iface.clone(),
            MDNS_PEER_DELAY,
        );
        match dht {
            Some(dht) => {
                PeerFinder::union(vec![mdns, dht_finder(self.url.clone(), dht)], MAX_FOUND)
            }
            None => mdns,
        }
    }
}

/// A peer finder over mDNS for a chunk server at `url` (`http://192.0.2.11:7400`): for each
/// verified manifest, a task on the current tokio runtime waits `start_after` (and ends there
/// if every receiver of its list is dropped first: the fetch is done), then announces
/// `_phase-peer._tcp` instance `<host>-peer` on `iface` with the digest of the signed manifest
/// bytes and `url`, and collects the other peers announcing the same digest (itself excluded,
/// at most [`MAX_FOUND`]), until every receiver of its list is dropped; then it withdraws the
/// announcement. Used by the boot stage ([`BootPeers::finder`], after [`MDNS_PEER_DELAY`]) and
/// `phase fetch --mdns-peers` (at once).
pub fn mdns_finder(url: String, host: String, iface: String, start_after: Duration) -> PeerFinder {
    PeerFinder(Arc::new(move |m: &VerifiedManifest| {
        let advert = PeerAdvert {
            manifest_sha256: Sha256Digest::of(m.raw()),
            url: url.clone(),
        };
        let (tx, rx) = watch::channel(Vec::new());
        let (host, iface) = (host.clone(), iface.clone());
        tokio::spawn(async move {
            if start_after.is_zero() || open_after(&tx, start_after).await {
                announce_and_browse(advert, host, iface, tx).await;
            }
        });
        rx
    }))
}

/// A peer finder over the DHT for a chunk server at `url`: for each verified manifest, a task
/// on the current tokio runtime waits [`DhtPeering::start_after`] (and ends there if every
/// receiver of its list is dropped first: the fetch is done), then starts a client-mode DHT
/// node with a fresh key, announces
/// `url` for the manifest's digest ([`DhtNode::publish_peer`], every half
/// [`PEER_RECORD_TTL`]) and looks up the other peers of the same digest every 2 s
/// (itself excluded, at most [`MAX_FOUND`]), until every receiver of its list is dropped; then
/// it stops the node. DHT failures are logged and end the search: the fetch goes on with the
/// sources it has.
pub fn dht_finder(url: String, dht: DhtPeering) -> PeerFinder {
    PeerFinder(Arc::new(move |m: &VerifiedManifest| {
        let digest = Sha256Digest::of(m.raw());
        let (tx, rx) = watch::channel(Vec::new());
        tokio::spawn(publish_and_look_up(digest, url.clone(), dht.clone(), tx));
        rx
    }))
}

/// The task of [`dht_finder`].
async fn publish_and_look_up(
    digest: Sha256Digest,
    url: String,
    dht: DhtPeering,
    tx: watch::Sender<Vec<String>>,
) {
    if !open_after(&tx, dht.start_after).await {
        return;
    }
    let node = phase_discovery::dht::parse_multiaddrs(&dht.bootstrap)
        .and_then(|bootstrap| {
            DhtNode::start(DhtConfig {
                keypair: identity::ephemeral(),
                listen: Vec::new(),
                bootstrap,
                role: Role::Client,
            })
        })
        .and_then(|node| {
            node.publish_peer(digest, url.clone(), PEER_RECORD_TTL)
                .map(|()| node)
        });
    let node = match node {
        Ok(node) => node,
        Err(e) => {
            log::line(&format!(
                "peers: DHT announce failed: {}",
                log::error_chain(&e)
            ));
            return;
        }
    };
    log::line(&format!("peers: announcing {url} in the DHT for {digest}"));
    loop {
        let found = tokio::select! {
            () = tx.closed() => break,
            r = node.lookup_peers(digest, MAX_FOUND, DHT_LOOKUP_TIMEOUT, dht.clock_trusted) => r,
        };
        let Ok(found) = found else { break };
        for peer in found {
            if add_url(&tx, &url, &peer.url) {
                log::line(&format!("peers: found in the DHT {}", peer.url));
            }
        }
        tokio::select! {
            () = tx.closed() => break,
            () = tokio::time::sleep(DHT_RELOOK) => {}
        }
    }
    node.shutdown().await;
}

/// Waits `delay`; true when some receiver of `tx` still listens then (the fetch is still
/// running), false as soon as every receiver is dropped before it.
async fn open_after<T>(tx: &watch::Sender<T>, delay: Duration) -> bool {
    tokio::select! {
        () = tx.closed() => false,
        () = tokio::time::sleep(delay) => !tx.is_closed(),
    }
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

/// Adds `found`'s URL to the list when it announces `own`'s manifest digest ([`add_url`]).
/// Returns whether it was added.
fn take(tx: &watch::Sender<Vec<String>>, own: &PeerAdvert, found: PeerAdvert) -> bool {
    found.manifest_sha256 == own.manifest_sha256 && add_url(tx, &own.url, &found.url)
}

/// Adds peer `url` to the list when it is not this machine's own `own_url`, is new, and the
/// list holds fewer than [`MAX_FOUND`]. Returns whether it was added.
fn add_url(tx: &watch::Sender<Vec<String>>, own_url: &str, url: &str) -> bool {
    if url == own_url {
        return false;
    }
    tx.send_if_modified(|list| {
        if list.len() >= MAX_FOUND || list.iter().any(|u| u == url) {
            return false;
        }
        list.push(url.to_owned());
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

    /// A finder whose lists the test writes: each search's sender goes to `senders`.
    fn scripted(senders: &Arc<std::sync::Mutex<Vec<watch::Sender<Vec<String>>>>>) -> PeerFinder {
        let senders = senders.clone();
        PeerFinder(Arc::new(move |_m: &VerifiedManifest| {
            let (tx, rx) = watch::channel(Vec::new());
            senders.lock().unwrap().push(tx);
            rx
        }))
    }

    fn verified_manifest() -> (tempfile::TempDir, VerifiedManifest) {
        let dir = tempfile::tempdir().unwrap();
        let trust = crate::target::verify::tests::signed_boot_dir(dir.path());
        let bytes = std::fs::read(dir.path().join("manifest.json")).unwrap();
        let m = phase_protocol::verify(
            &bytes,
            &phase_protocol::TrustRoot::load(&trust).unwrap(),
            chrono::Utc::now(),
            &phase_protocol::Expectation::default(),
        )
        .unwrap();
        (dir, m)
    }

    /// The DHT gate (issue 18 §3): a fetch that ends before [`DhtPeering::start_after`] never
    /// starts the DHT node, and one still running then does.
    #[tokio::test]
    async fn the_dht_node_starts_only_when_the_fetch_outlasts_its_delay() {
        let (tx, rx) = watch::channel(());
        let t = Instant::now();
        let gate = tokio::spawn(async move { open_after(&tx, Duration::from_secs(30)).await });
        tokio::time::sleep(Duration::from_millis(50)).await;
        drop(rx);
        let started = tokio::time::timeout(Duration::from_secs(5), gate)
            .await
            .expect("the gate ends with the fetch, not after its delay")
            .unwrap();
        assert!(!started, "a fetch that ended first starts no DHT node");
        assert!(t.elapsed() < Duration::from_secs(5));

        let (tx, _rx) = watch::channel(());
        let t = Instant::now();
        assert!(open_after(&tx, Duration::from_millis(200)).await);
        assert!(
            t.elapsed() >= Duration::from_millis(200),
            "it waited its delay"
        );
    }

    /// The mDNS gate (issue 18 §3): the boot stage's finder starts no mDNS daemon (mdns-sd's
    /// `mDNS_daemon` thread) while it waits out its delay, none at all when the fetch ends
    /// first, and one at once without a delay (`phase fetch --mdns-peers`).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_mdns_finder_starts_no_daemon_before_its_delay() {
        let mdns_threads = || {
            let names = std::fs::read_dir("/proc/self/task").into_iter().flatten();
            names
                .flatten()
                .filter_map(|t| std::fs::read_to_string(t.path().join("comm")).ok())
                .filter(|c| c.trim() == "mDNS_daemon")
                .count()
        };
        let (_dir, m) = verified_manifest();
        let finder = |delay| {
            mdns_finder(
                "http://127.0.0.1:7400".into(),
                "phase-test".into(),
                "lo".into(),
                delay,
            )
        };
        let waiting = (finder(Duration::from_secs(30)).0)(&m);
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(mdns_threads(), 0, "no daemon during the delay");
        drop(waiting);
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(mdns_threads(), 0, "a fetch that ended first started none");

        let at_once = (finder(Duration::ZERO).0)(&m);
        let t = Instant::now();
        while mdns_threads() == 0 && t.elapsed() < Duration::from_secs(5) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(
            mdns_threads() > 0,
            "without a delay the daemon starts at once"
        );
        drop(at_once);
    }

    /// The same gate in [`dht_finder`]'s task: with a bootstrap that cannot parse, the task
    /// ends (and drops its list's sender) as soon as it tries to start the node. With a long
    /// delay it is still waiting after 300 ms; with a short one it has tried and ended.
    #[tokio::test]
    async fn the_dht_finder_tries_no_node_before_its_delay() {
        let (_dir, m) = verified_manifest();
        let finder = |start_after| {
            dht_finder(
                "http://192.0.2.9:7400".into(),
                DhtPeering {
                    bootstrap: vec!["not-a-multiaddr".into()],
                    clock_trusted: false,
                    start_after,
                },
            )
        };
        let mut waiting = (finder(Duration::from_secs(30)).0)(&m);
        let early = tokio::time::timeout(Duration::from_millis(300), waiting.changed()).await;
        assert!(early.is_err(), "the task is still waiting out its delay");
        let mut tried = (finder(Duration::from_millis(100)).0)(&m);
        let ended = tokio::time::timeout(Duration::from_secs(5), tried.changed())
            .await
            .expect("after its delay the task tries the node, fails and ends");
        assert!(ended.is_err(), "the task ended and dropped its sender");
    }

    /// The boot stage joins its mDNS and DHT searches: a peer both find is listed once, the
    /// union stops at its cap, and dropping the union's receiver ends both inner searches (so
    /// the DHT node and the mDNS announcement stop when the fetch returns).
    #[tokio::test]
    async fn a_union_of_finders_lists_each_peer_once_up_to_its_cap_and_ends_both_searches() {
        let senders = Arc::new(std::sync::Mutex::new(Vec::new()));
        let union = PeerFinder::union(vec![scripted(&senders), scripted(&senders)], 3);
        let (_dir, m) = verified_manifest();
        let mut rx = (union.0)(&m);
        let [mdns, dht]: [watch::Sender<Vec<String>>; 2] =
            std::mem::take(&mut *senders.lock().unwrap())
                .try_into()
                .unwrap();
        let url = |n: u8| format!("http://192.0.2.{n}:7400");
        let wait = |rx: &mut watch::Receiver<Vec<String>>, n: usize| {
            let mut rx = rx.clone();
            async move {
                tokio::time::timeout(Duration::from_secs(5), rx.wait_for(|l| l.len() >= n))
                    .await
                    .expect("union forwards")
                    .unwrap()
                    .clone()
            }
        };
        mdns.send_replace(vec![url(11)]);
        assert_eq!(wait(&mut rx, 1).await, [url(11)]);
        dht.send_replace(vec![url(11), url(12)]);
        assert_eq!(wait(&mut rx, 2).await, [url(11), url(12)]);
        mdns.send_replace(vec![url(11), url(13), url(14)]);
        assert_eq!(wait(&mut rx, 3).await, [url(11), url(12), url(13)]);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(rx.borrow().len(), 3, "the cap holds");
        drop(rx);
        for inner in [&mdns, &dht] {
            tokio::time::timeout(Duration::from_secs(5), inner.closed())
                .await
                .expect("the inner search is told to end");
        }
    }
}
