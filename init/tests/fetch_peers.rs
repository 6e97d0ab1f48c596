//! Peers serve verified chunks while they fetch, and take chunks from each other (issue 19
//! §2-§3): real HTTP on 127.0.0.1, the origin is `fetch_support`'s server, each peer is a
//! real `fetch_release` with a [`Shelf`] served by `share::serve`. Liars (a bad chunk, a bad
//! have-map) are `fetch_support` servers standing in for a peer.

mod fetch_support;

use std::sync::Arc;
use std::time::Duration;

use fetch_support::{data, listing, test_options, Behaviour, Server, Signer};
use phase_init::fetch::share::{self, Shelf};
use phase_init::fetch::{fetch_release, FetchOptions, FetchedRelease, PeerFinder, SourceError};

const ROOTFS: &str = "/stable/x86_64/rootfs";
const MANIFEST: &str = "/stable/x86_64/manifest.json";
/// Sixteen chunks of 64 KiB.
const CHUNK: usize = 64 * 1024;
const SIZE: usize = 16 * CHUNK;

struct Origin {
    server: Server,
    signer: Signer,
    rootfs: Arc<Vec<u8>>,
}

/// A v2 release (rootfs of 16 chunks; kernel and initramfs of one) on an honest origin.
async fn origin() -> Origin {
    let server = Server::start().await;
    let signer = Signer::new();
    let rootfs = data(SIZE, 31);
    let kernel = data(100, 32);
    let initramfs = data(100, 33);
    let manifest = signer.manifest_v2(
        "1.0.0",
        "x86_64",
        &[
            ("kernel", &kernel, vec![]),
            ("initramfs", &initramfs, vec![]),
            ("rootfs", &rootfs, vec![]),
        ],
        CHUNK as u64,
    );
    server.route(MANIFEST, Behaviour::Serve(Arc::new(manifest)));
    server.route("/stable/x86_64/kernel", Behaviour::Serve(kernel));
    server.route("/stable/x86_64/initramfs", Behaviour::Serve(initramfs));
    server.route(ROOTFS, Behaviour::Serve(rootfs.clone()));
    Origin {
        server,
        signer,
        rootfs,
    }
}

/// A machine: its output directory, options, and (if it shares) its shelf and base URL.
struct Machine {
    dir: tempfile::TempDir,
    opts: FetchOptions,
    shelf: Shelf,
    base: String,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for Machine {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn machine(o: &Origin, peers: Vec<String>) -> Machine {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = test_options(&o.signer.trust, dir.path().join("out"), 1);
    let shelf = Shelf::new();
    let listener = share::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(share::serve(listener, shelf.clone()));
    opts.share = Some(shelf.clone());
    opts.peers = peers;
    if let Some(s) = opts.swarm.as_mut() {
        s.have_interval = Duration::from_millis(50);
    }
    Machine {
        dir,
        opts,
        shelf,
        base,
        server,
    }
}

impl Machine {
    async fn fetch(&self, o: &Origin) -> FetchedRelease {
        fetch_release(&o.server.url(MANIFEST), &self.opts)
            .await
            .unwrap()
    }

    fn assert_rootfs(&self, o: &Origin, r: &FetchedRelease) {
        let f = &r.artifacts["rootfs"];
        assert!(std::fs::read(&f.path).unwrap() == *o.rootfs, "bytes differ");
        let out = self.dir.path().join("out");
        assert!(!listing(&out).iter().any(|n| n.contains(".partial")));
    }
}

fn origin_rootfs_requests(o: &Origin) -> usize {
    o.server.hits_for(ROOTFS).len()
}

#[tokio::test]
async fn a_machine_takes_the_chunks_a_peer_holds_from_that_peer() {
    let o = origin().await;
    let a = machine(&o, vec![]).await;
    let ra = a.fetch(&o).await;
    a.assert_rootfs(&o, &ra);
    assert_eq!(origin_rootfs_requests(&o), 16, "a fetched every chunk once");
    // a keeps serving what it verified: the whole have-map is set.
    assert_eq!(a.shelf.have(ROOTFS), Some(vec![true; 16]));

    let b = machine(&o, vec![a.base.clone()]).await;
    let rb = b.fetch(&o).await;
    b.assert_rootfs(&o, &rb);
    assert!(rb.failures.is_empty(), "{:?}", rb.failures);
    // Before a's have-map arrives b is idle and asks the origin for one chunk; after it, only a.
    let from_origin = origin_rootfs_requests(&o) - 16;
    assert!(from_origin <= 2, "{from_origin} chunks from the origin");
    assert!(
        a.shelf.sent_bytes() >= (14 * CHUNK) as u64,
        "a sent {} bytes",
        a.shelf.sent_bytes()
    );
}

#[tokio::test]
async fn two_machines_fetching_at_once_trade_chunks() {
    let o = origin().await;
    // A slow origin (64 KiB per 100 ms per request): trading pays.
    o.server.route(
        ROOTFS,
        Behaviour::Paced(o.rootfs.clone(), 16 * 1024, Duration::from_millis(25)),
    );
    // Each machine needs the other's address before either starts.
    let mut a = machine(&o, vec![]).await;
    let mut b = machine(&o, vec![a.base.clone()]).await;
    a.opts.peers = vec![b.base.clone()];
    b.opts.peers = vec![a.base.clone()];
    let (ra, rb) = tokio::join!(a.fetch(&o), b.fetch(&o));
    a.assert_rootfs(&o, &ra);
    b.assert_rootfs(&o, &rb);
    let from_origin = origin_rootfs_requests(&o);
    // Alone, each would take all 16 chunks from the origin.
    assert!(from_origin < 32, "{from_origin} chunks from the origin");
    assert!(a.shelf.sent_bytes() > 0 && b.shelf.sent_bytes() > 0);
}

#[tokio::test]
async fn a_peer_sending_a_bad_chunk_is_named_dropped_and_nothing_unverified_is_kept() {
    let o = origin().await;
    let liar = Server::start().await;
    let mut lies = o.rootfs.to_vec();
    for k in 0..SIZE / CHUNK {
        lies[k * CHUNK + 7] ^= 0x10;
    }
    liar.route(ROOTFS, Behaviour::Serve(Arc::new(lies)));
    liar.route(
        &format!("{ROOTFS}.have"),
        Behaviour::Serve(Arc::new(vec![0xff, 0xff])),
    );
    let b = machine(&o, vec![liar.base()]).await;
    let rb = b.fetch(&o).await;
    b.assert_rootfs(&o, &rb);
    let liar_url = liar.url(ROOTFS);
    let bad: Vec<_> = rb
        .failures
        .iter()
        .filter(|f| matches!(f.error, SourceError::ChunkMismatch { .. }))
        .collect();
    assert!(!bad.is_empty(), "{:?}", rb.failures);
    assert!(bad.iter().all(|f| f.url.as_str() == liar_url), "{bad:?}");
    // Dropped at its first answers: at most its two request slots.
    assert!(liar.hits_for(ROOTFS).len() <= 2);
    // b offered only verified chunks: its have-map is full and matches the file.
    assert_eq!(b.shelf.have(ROOTFS), Some(vec![true; 16]));
}

#[tokio::test]
async fn a_bad_have_map_drops_the_peer_and_a_silent_peer_is_harmless() {
    let o = origin().await;
    let liar = Server::start().await;
    liar.route(ROOTFS, Behaviour::Serve(o.rootfs.clone()));
    // Three bytes for sixteen chunks.
    liar.route(
        &format!("{ROOTFS}.have"),
        Behaviour::Serve(Arc::new(vec![0xff, 0xff, 0xff])),
    );
    // Nothing listens here (a port that was just free).
    let silent = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let b = machine(&o, vec![liar.base(), silent]).await;
    let rb = b.fetch(&o).await;
    b.assert_rootfs(&o, &rb);
    assert!(
        rb.failures
            .iter()
            .any(|f| f.url.as_str() == liar.url(ROOTFS)
                && matches!(f.error, SourceError::HaveMap(_))),
        "{:?}",
        rb.failures
    );
    assert!(liar.hits_for(ROOTFS).is_empty(), "no chunk asked of it");
}

#[tokio::test]
async fn dead_peers_and_a_dead_origin_fail_the_fetch_instead_of_waiting() {
    let o = origin().await;
    o.server.route(ROOTFS, Behaviour::Status(404));
    let dead = |_: usize| {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let b = machine(&o, (0..3).map(dead).collect()).await;
    let started = std::time::Instant::now();
    let err = fetch_release(&o.server.url(MANIFEST), &b.opts)
        .await
        .unwrap_err();
    // 20 refused polls 50 ms apart per peer: about a second, far below the 60 s total timeout.
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    let text = err.to_string();
    assert!(text.contains("rootfs") && text.contains("404"), "{text}");
    assert!(!listing(&b.dir.path().join("out"))
        .iter()
        .any(|n| n.starts_with("rootfs")));
}

#[tokio::test]
async fn a_peer_found_while_fetching_is_taken_into_the_download() {
    let o = origin().await;
    let a = machine(&o, vec![]).await;
    let ra = a.fetch(&o).await;
    a.assert_rootfs(&o, &ra);
    let before = origin_rootfs_requests(&o);
    // Now a slow origin; b starts with no peer and learns of a 300 ms into its download, as
    // the boot stage's mDNS browse would tell it (phase_init::peers).
    o.server.route(
        ROOTFS,
        Behaviour::Paced(o.rootfs.clone(), 16 * 1024, Duration::from_millis(50)),
    );
    let mut b = machine(&o, vec![]).await;
    let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (seen, base) = (calls.clone(), a.base.clone());
    b.opts.peer_finder = Some(PeerFinder(Arc::new(move |m| {
        seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        assert!(m.manifest().artifacts.contains_key("rootfs"));
        let (tx, rx) = tokio::sync::watch::channel(Vec::new());
        let base = base.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let _ = tx.send(vec![base]);
            tx.closed().await;
        });
        rx
    })));
    let rb = b.fetch(&o).await;
    b.assert_rootfs(&o, &rb);
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 1);
    let from_origin = origin_rootfs_requests(&o) - before;
    assert!(
        from_origin < 12,
        "{from_origin} of 16 chunks from the origin"
    );
    assert!(
        a.shelf.sent_bytes() >= (4 * CHUNK) as u64,
        "a sent {} bytes",
        a.shelf.sent_bytes()
    );
}

#[tokio::test]
async fn alone_with_a_peer_finder_an_artifact_streams_in_one_request() {
    // The boot stage of a machine that boots alone: its finder never reports a peer, so each
    // artifact streams from the provider in one request (whole-file hash only), not 16 ranges.
    let o = origin().await;
    let mut a = machine(&o, vec![]).await;
    a.opts.peer_finder = Some(PeerFinder(Arc::new(|_| {
        let (tx, rx) = tokio::sync::watch::channel(Vec::new());
        tokio::spawn(async move { tx.closed().await });
        rx
    })));
    let ra = a.fetch(&o).await;
    a.assert_rootfs(&o, &ra);
    let hits = o.server.hits_for(ROOTFS);
    assert_eq!(hits.len(), 1, "requests for the rootfs: {hits:?}");
    // Streamed and verified whole, it is still offered to peers that turn up later.
    assert_eq!(a.shelf.have(ROOTFS), Some(vec![true; 16]));
    let b = machine(&o, vec![a.base.clone()]).await;
    let rb = b.fetch(&o).await;
    b.assert_rootfs(&o, &rb);
    assert!(
        a.shelf.sent_bytes() >= (14 * CHUNK) as u64,
        "a sent {} bytes",
        a.shelf.sent_bytes()
    );
}

#[tokio::test]
async fn a_silent_peer_makes_way_for_one_that_answers() {
    // One active peer allowed. The first accepts connections and never answers (a host whose
    // SYN-ACKs arrive but whose HTTP never does, or SYNs lost on a full link); the second,
    // found 300 ms in, holds every chunk. Without the silence rule the silent peer keeps the
    // only slot and the whole file comes from the slow origin.
    let o = origin().await;
    let a = machine(&o, vec![]).await;
    let ra = a.fetch(&o).await;
    a.assert_rootfs(&o, &ra);
    let before = origin_rootfs_requests(&o);
    o.server.route(
        ROOTFS,
        Behaviour::Paced(o.rootfs.clone(), 16 * 1024, Duration::from_millis(50)),
    );
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut b = machine(&o, vec![format!("http://{}", silent.local_addr().unwrap())]).await;
    if let Some(s) = b.opts.swarm.as_mut() {
        s.max_peers = 1;
    }
    let base = a.base.clone();
    b.opts.peer_finder = Some(PeerFinder(Arc::new(move |_| {
        let (tx, rx) = tokio::sync::watch::channel(Vec::new());
        let base = base.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let _ = tx.send(vec![base]);
            tx.closed().await;
        });
        rx
    })));
    let rb = b.fetch(&o).await;
    b.assert_rootfs(&o, &rb);
    let from_origin = origin_rootfs_requests(&o) - before;
    assert!(
        a.shelf.sent_bytes() >= (4 * CHUNK) as u64,
        "a sent {} bytes; {from_origin} of 16 chunks from the origin",
        a.shelf.sent_bytes()
    );
    drop(silent);
}
