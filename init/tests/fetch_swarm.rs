//! Multi-source fetch of a v2 artifact (issue 19 §2): chunks come from every source at once,
//! each checked before it is written; a liar is named and dropped, a dead or stalled source's
//! chunks go elsewhere, the endgame does not wait for a slow source. Real HTTP on 127.0.0.1
//! (`fetch_support`'s fault-injecting server; each path stands for one provider).

mod fetch_support;

use std::sync::Arc;
use std::time::Duration;

use fetch_support::{data, listing, test_options, Behaviour, Server, Signer};
use phase_init::fetch::{fetch_release, FetchError, FetchOptions, SourceError};
use phase_protocol::Sha256Digest;

const ROOTFS: &str = "/stable/x86_64/rootfs";
const MANIFEST: &str = "/stable/x86_64/manifest.json";
/// Sixteen chunks of 64 KiB.
const CHUNK: usize = 64 * 1024;
const SIZE: usize = 16 * CHUNK;
const PEERS: [&str; 3] = ["/p1/rootfs", "/p2/rootfs", "/p3/rootfs"];

struct Case {
    server: Server,
    dir: tempfile::TempDir,
    opts: FetchOptions,
    rootfs: Arc<Vec<u8>>,
}

/// A v2 release whose rootfs is also at `PEERS` (mirror URLs); kernel and initramfs are tiny.
async fn case() -> Case {
    let server = Server::start().await;
    let signer = Signer::new();
    let rootfs = data(SIZE, 21);
    let kernel = data(100, 22);
    let initramfs = data(100, 23);
    let urls: Vec<String> = PEERS.iter().map(|m| server.url(m)).collect();
    let manifest = signer.manifest_v2(
        "1.0.0",
        "x86_64",
        &[
            ("kernel", &kernel, vec![]),
            ("initramfs", &initramfs, vec![]),
            ("rootfs", &rootfs, urls),
        ],
        CHUNK as u64,
    );
    server.route(MANIFEST, Behaviour::Serve(Arc::new(manifest)));
    server.route("/stable/x86_64/kernel", Behaviour::Serve(kernel));
    server.route("/stable/x86_64/initramfs", Behaviour::Serve(initramfs));
    server.route(ROOTFS, Behaviour::Serve(rootfs.clone()));
    for p in PEERS {
        server.route(p, Behaviour::Serve(rootfs.clone()));
    }
    let dir = tempfile::tempdir().unwrap();
    let opts = test_options(&signer.trust, dir.path().join("out"), 1);
    Case {
        server,
        dir,
        opts,
        rootfs,
    }
}

impl Case {
    async fn fetch(&self) -> Result<phase_init::fetch::FetchedRelease, FetchError> {
        fetch_release(&self.server.url(MANIFEST), &self.opts).await
    }

    fn assert_rootfs(&self, r: &phase_init::fetch::FetchedRelease) {
        let f = &r.artifacts["rootfs"];
        assert!(
            std::fs::read(&f.path).unwrap() == *self.rootfs,
            "bytes differ"
        );
        assert_eq!(f.hash, Sha256Digest::of(&self.rootfs));
        assert!(!listing(&self.dir.path().join("out"))
            .iter()
            .any(|n| n.ends_with(".partial")));
    }

    /// The chunk ranges `path` was asked for.
    fn ranges(&self, path: &str) -> Vec<String> {
        self.server
            .hits_for(path)
            .into_iter()
            .filter_map(|h| h.range)
            .collect()
    }
}

#[tokio::test]
async fn chunks_come_from_every_source_as_single_chunk_ranges() {
    let c = case().await;
    let r = c.fetch().await.unwrap();
    c.assert_rootfs(&r);
    assert!(r.failures.is_empty(), "{:?}", r.failures);
    let mut asked = 0;
    for p in [ROOTFS, PEERS[0], PEERS[1], PEERS[2]] {
        let ranges = c.ranges(p);
        assert!(!ranges.is_empty(), "{p} was never asked");
        for range in &ranges {
            let (a, b) = range
                .strip_prefix("bytes=")
                .and_then(|r| r.split_once('-'))
                .unwrap();
            let (a, b): (usize, usize) = (a.parse().unwrap(), b.parse().unwrap());
            assert_eq!(a % CHUNK, 0, "{range}");
            assert_eq!(b - a + 1, CHUNK, "{range}");
        }
        asked += ranges.len();
    }
    assert!(asked >= SIZE / CHUNK, "{asked} requests for 16 chunks");
}

#[tokio::test]
async fn a_source_sending_a_bad_chunk_is_named_and_dropped_and_the_fetch_completes() {
    let c = case().await;
    // p2 corrupts every chunk: whichever it is asked for first is refused.
    let mut lies = c.rootfs.to_vec();
    for i in 0..SIZE / CHUNK {
        lies[i * CHUNK + 3] ^= 0x01;
    }
    c.server.route(PEERS[1], Behaviour::Serve(Arc::new(lies)));
    let r = c.fetch().await.unwrap();
    c.assert_rootfs(&r);
    let bad: Vec<_> = r
        .failures
        .iter()
        .filter(|f| matches!(f.error, SourceError::ChunkMismatch { .. }))
        .collect();
    assert!(!bad.is_empty(), "{:?}", r.failures);
    assert!(
        bad.iter().all(|f| f.url.as_str() == c.server.url(PEERS[1])),
        "{bad:?}"
    );
    // Dropped after its first answer(s): at most the requests already in flight (2 per source).
    assert!(c.ranges(PEERS[1]).len() <= 2, "{:?}", c.ranges(PEERS[1]));
}

#[tokio::test]
async fn dead_and_resetting_sources_have_their_chunks_fetched_elsewhere() {
    let c = case().await;
    c.server.route(PEERS[0], Behaviour::Status(404));
    c.server
        .route(PEERS[2], Behaviour::ResetAfter(c.rootfs.clone(), 1000));
    let r = c.fetch().await.unwrap();
    c.assert_rootfs(&r);
    assert!(
        r.failures
            .iter()
            .any(|f| f.url.as_str() == c.server.url(PEERS[0])
                && matches!(f.error, SourceError::Status(s) if s.as_u16() == 404)),
        "{:?}",
        r.failures
    );
    // The resetting source was asked; its chunks were completed elsewhere (by another source,
    // or by the endgame before its reset arrived, which cancels its request: no failure then).
    assert!(!c.ranges(PEERS[2]).is_empty());
    // 404 drops p1 at once: asked at most for its first slots.
    assert!(c.ranges(PEERS[0]).len() <= 2);
}

#[tokio::test]
async fn endgame_does_not_wait_for_a_stalled_source() {
    let mut c = case().await;
    // p3 sends one byte every 3 s: under the 5 s idle timeout, so it never times out within a
    // chunk's 65536 bytes. Without the endgame its chunks would hold the fetch past the
    // 20 s total timeout.
    c.server.route(
        PEERS[2],
        Behaviour::Trickle(c.rootfs.clone(), Duration::from_secs(3)),
    );
    c.opts.total_timeout = Duration::from_secs(20);
    let r = c.fetch().await.unwrap();
    c.assert_rootfs(&r);
}

#[tokio::test]
async fn bad_chunks_from_every_source_fail_the_fetch_and_leave_nothing() {
    let c = case().await;
    for (i, p) in [ROOTFS, PEERS[0], PEERS[1], PEERS[2]].iter().enumerate() {
        let mut lies = c.rootfs.to_vec();
        for k in 0..SIZE / CHUNK {
            lies[k * CHUNK + i] ^= 0x01;
        }
        c.server.route(p, Behaviour::Serve(Arc::new(lies)));
    }
    let err = c.fetch().await.unwrap_err();
    assert!(matches!(err, FetchError::AllSourcesFailed { .. }), "{err}");
    assert!(err.to_string().contains("hash mismatch"), "{err}");
    let files = listing(&c.dir.path().join("out"));
    assert!(!files.iter().any(|n| n.starts_with("rootfs")), "{files:?}");
}

#[tokio::test]
async fn a_server_ignoring_range_is_dropped_not_appended() {
    let c = case().await;
    c.server
        .route(PEERS[0], Behaviour::IgnoreRange(c.rootfs.clone()));
    let r = c.fetch().await.unwrap();
    c.assert_rootfs(&r);
    assert!(
        r.failures
            .iter()
            .any(|f| f.url.as_str() == c.server.url(PEERS[0])
                && matches!(f.error, SourceError::ContentRange { .. })),
        "{:?}",
        r.failures
    );
}

#[tokio::test]
async fn a_failed_swarm_keeps_its_verified_chunks_and_the_next_asks_only_for_the_rest() {
    let c = case().await;
    let all = [ROOTFS, PEERS[0], PEERS[1], PEERS[2]];
    // Every source lies about chunks 8..16 the same way: 0..8 verify, the rest never do.
    let mut lies = c.rootfs.to_vec();
    for k in 8..SIZE / CHUNK {
        lies[k * CHUNK] ^= 0x01;
    }
    let lies = Arc::new(lies);
    for p in all {
        c.server.route(p, Behaviour::Serve(lies.clone()));
    }
    let out = c.dir.path().join("out");
    let lower_half_kept = || {
        let map = std::fs::read(out.join("rootfs.partial.chunks")).unwrap_or_default();
        let flags = phase_init::fetch::resume::parse_map(
            &map,
            &Sha256Digest::of(&c.rootfs),
            SIZE as u64,
            CHUNK as u64,
        );
        flags.is_some_and(|f| f[..8].iter().all(|v| *v) && !f[8..].iter().any(|v| *v))
    };
    // Chunks are drawn at random, so the sources may all draw a bad chunk before every good
    // one is in; each failed run keeps what it verified, so a few runs fill the lower half.
    let mut runs = 0;
    while !lower_half_kept() && runs < 30 {
        let err = fetch_release(&c.server.url(MANIFEST), &c.opts).await;
        assert!(err.is_err(), "chunks 8.. can never verify");
        runs += 1;
    }
    assert!(lower_half_kept(), "after {runs} runs");
    let partial = std::fs::read(out.join("rootfs.partial")).unwrap();
    assert!(
        partial[..8 * CHUNK] == c.rootfs[..8 * CHUNK],
        "lower half kept"
    );
    assert!(
        partial[8 * CHUNK..].iter().all(|b| *b == 0),
        "unverified bytes were written"
    );

    for p in all {
        c.server.route(p, Behaviour::Serve(c.rootfs.clone()));
    }
    let before: Vec<usize> = all.iter().map(|p| c.ranges(p).len()).collect();
    let r = c.fetch().await.unwrap();
    c.assert_rootfs(&r);
    let starts: Vec<usize> = all
        .iter()
        .zip(&before)
        .flat_map(|(p, n)| c.ranges(p).into_iter().skip(*n))
        .filter_map(|r| r.strip_prefix("bytes=")?.split_once('-')?.0.parse().ok())
        .collect();
    assert!(starts.len() >= 8, "{starts:?}");
    assert!(
        starts.iter().all(|s| *s >= 8 * CHUNK),
        "asked again for a kept chunk: {starts:?}"
    );
}
