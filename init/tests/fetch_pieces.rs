//! Manifest v2 in the streaming fetch, one source at a time (`FetchOptions::swarm = None`, the
//! path of a single source) (issue 19 §1-§2): every chunk is checked as it completes
//! and written only when it matches, so a bad chunk is pinned on the source that sent it and the
//! next source resumes at that chunk, keeping the verified ones. Real HTTP on 127.0.0.1
//! (`fetch_support`'s fault-injecting server).

mod fetch_support;

use std::sync::Arc;

use fetch_support::{data, test_options, Behaviour, Server, Signer};
use phase_init::fetch::{fetch_release, FetchError, FetchOptions, SourceError};
use phase_protocol::Sha256Digest;

const KERNEL: &str = "/stable/x86_64/kernel";
const INITRAMFS: &str = "/stable/x86_64/initramfs";
const MANIFEST: &str = "/stable/x86_64/manifest.json";
/// Four chunks of 64 KiB.
const CHUNK: usize = 64 * 1024;
const SIZE: usize = 4 * CHUNK;

struct Case {
    server: Server,
    dir: tempfile::TempDir,
    opts: FetchOptions,
    kernel: Arc<Vec<u8>>,
}

/// A v2 release whose kernel has `mirrors` (paths on the same server) after the
/// manifest-relative URL.
async fn case(mirrors: &[&str]) -> Case {
    let server = Server::start().await;
    let signer = Signer::new();
    let kernel = data(SIZE, 11);
    let initramfs = data(5000, 12);
    let urls: Vec<String> = mirrors.iter().map(|m| server.url(m)).collect();
    let manifest = signer.manifest_v2(
        "1.0.0",
        "x86_64",
        &[("kernel", &kernel, urls), ("initramfs", &initramfs, vec![])],
        CHUNK as u64,
    );
    server.route(MANIFEST, Behaviour::Serve(Arc::new(manifest)));
    server.route(INITRAMFS, Behaviour::Serve(initramfs));
    let dir = tempfile::tempdir().unwrap();
    let mut opts = test_options(&signer.trust, dir.path().join("out"), 1);
    // The streaming path, one source at a time (init/tests/fetch_swarm.rs has the other).
    opts.swarm = None;
    Case {
        server,
        dir,
        opts,
        kernel,
    }
}

/// `d` with one byte of chunk `index` flipped.
fn bad_chunk(d: &[u8], index: usize) -> Arc<Vec<u8>> {
    let mut v = d.to_vec();
    v[index * CHUNK + 100] ^= 0x01;
    Arc::new(v)
}

fn range_of(server: &Server, path: &str) -> Vec<Option<String>> {
    server.hits_for(path).into_iter().map(|h| h.range).collect()
}

#[tokio::test]
async fn v2_release_from_one_source_is_checked_by_its_whole_file_hash() {
    // One source: nobody else to blame or resume on, so the bytes are hashed once, as in v1.
    let c = case(&[]).await;
    c.server.route(KERNEL, Behaviour::Serve(c.kernel.clone()));
    let r = fetch_release(&c.server.url(MANIFEST), &c.opts)
        .await
        .unwrap();
    assert_eq!(r.manifest.manifest().manifest_version, 2);
    let k = &r.artifacts["kernel"];
    assert!(std::fs::read(&k.path).unwrap() == *c.kernel, "bytes differ");
    assert_eq!(k.hash, Sha256Digest::of(&c.kernel));
    assert!(r.failures.is_empty(), "{:?}", r.failures);
    c.server
        .route(KERNEL, Behaviour::Serve(bad_chunk(&c.kernel, 2)));
    let err = fetch_release(&c.server.url(MANIFEST), &c.opts)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("hash mismatch: got"), "{err}");
    let out = c.dir.path().join("out");
    assert!(!out.join("kernel").exists() && !out.join("kernel.partial").exists());
    assert!(!out.join("kernel.partial.chunks").exists());
}

#[tokio::test]
async fn bad_chunk_is_pinned_on_its_source_and_the_next_resumes_at_that_chunk() {
    let c = case(&["/m1/kernel"]).await;
    c.server
        .route(KERNEL, Behaviour::Serve(bad_chunk(&c.kernel, 2)));
    c.server
        .route("/m1/kernel", Behaviour::Serve(c.kernel.clone()));
    let r = fetch_release(&c.server.url(MANIFEST), &c.opts)
        .await
        .unwrap();
    assert_eq!(
        std::fs::read(&r.artifacts["kernel"].path).unwrap(),
        *c.kernel
    );
    assert_eq!(r.failures.len(), 1, "{:?}", r.failures);
    assert_eq!(r.failures[0].url.as_str(), c.server.url(KERNEL));
    assert!(
        matches!(
            r.failures[0].error,
            SourceError::ChunkMismatch { index: 2, offset, .. } if offset == 2 * CHUNK as u64
        ),
        "{:?}",
        r.failures
    );
    // Chunks 0 and 1 were verified and kept: the mirror is asked from chunk 2 on, not from 0.
    assert_eq!(
        range_of(&c.server, "/m1/kernel"),
        vec![Some(format!("bytes={}-", 2 * CHUNK))]
    );
    // The bad source is dropped for this artifact: asked once only.
    assert_eq!(c.server.hits_for(KERNEL).len(), 1);
}

#[tokio::test]
async fn with_several_contributors_the_liar_is_still_named_and_no_whole_file_refetch() {
    // Source 1 sends chunks 0-1 and resets mid chunk 2; source 2 resumes but lies in chunk 3;
    // source 3 is honest. v1 could blame nobody here and fell back to whole-file fetches.
    let c = case(&["/m1/kernel", "/m2/kernel"]).await;
    c.server.route(
        KERNEL,
        Behaviour::ResetAfter(c.kernel.clone(), 2 * CHUNK + 1000),
    );
    c.server
        .route("/m1/kernel", Behaviour::Serve(bad_chunk(&c.kernel, 3)));
    c.server
        .route("/m2/kernel", Behaviour::Serve(c.kernel.clone()));
    let r = fetch_release(&c.server.url(MANIFEST), &c.opts)
        .await
        .unwrap();
    assert_eq!(
        std::fs::read(&r.artifacts["kernel"].path).unwrap(),
        *c.kernel
    );
    let liar = r
        .failures
        .iter()
        .find(|f| matches!(f.error, SourceError::ChunkMismatch { .. }))
        .expect("a chunk mismatch is reported");
    assert_eq!(liar.url.as_str(), c.server.url("/m1/kernel"));
    assert!(matches!(
        liar.error,
        SourceError::ChunkMismatch { index: 3, .. }
    ));
    // The honest source was asked only for the chunk the liar spoiled.
    assert_eq!(
        range_of(&c.server, "/m2/kernel"),
        vec![Some(format!("bytes={}-", 3 * CHUNK))]
    );
}

#[tokio::test]
async fn bad_chunks_from_every_source_keep_only_verified_chunks_and_the_next_fetch_resumes() {
    let c = case(&["/m1/kernel"]).await;
    c.server
        .route(KERNEL, Behaviour::Serve(bad_chunk(&c.kernel, 0)));
    c.server
        .route("/m1/kernel", Behaviour::Serve(bad_chunk(&c.kernel, 1)));
    let err = fetch_release(&c.server.url(MANIFEST), &c.opts)
        .await
        .unwrap_err();
    assert!(matches!(err, FetchError::AllSourcesFailed { .. }), "{err}");
    let text = err.to_string();
    assert!(text.contains("chunk 0 (bytes 0..) hash mismatch"), "{text}");
    assert!(
        text.contains(&format!("chunk 1 (bytes {CHUNK}..) hash mismatch")),
        "{text}"
    );
    let out = c.dir.path().join("out");
    assert!(!out.join("kernel").exists(), "nothing at the final path");
    // Kept for the next fetch: chunk 0 (verified from m1) and nothing unverified.
    let partial = std::fs::read(out.join("kernel.partial")).unwrap();
    assert_eq!(partial.len(), SIZE);
    assert!(partial[..CHUNK] == c.kernel[..CHUNK], "chunk 0 kept");
    assert!(
        partial[CHUNK..].iter().all(|b| *b == 0),
        "unverified bytes were written"
    );
    let map = std::fs::read(out.join("kernel.partial.chunks")).unwrap();
    let flags = phase_init::fetch::resume::parse_map(
        &map,
        &Sha256Digest::of(&c.kernel),
        SIZE as u64,
        CHUNK as u64,
    )
    .unwrap();
    assert_eq!(flags, vec![true, false, false, false]);

    // The sources are mended: the next fetch re-checks chunk 0 and asks only for the rest.
    c.server.route(KERNEL, Behaviour::Serve(c.kernel.clone()));
    let before = c.server.hits_for(KERNEL).len();
    let r = fetch_release(&c.server.url(MANIFEST), &c.opts)
        .await
        .unwrap();
    assert_eq!(
        std::fs::read(&r.artifacts["kernel"].path).unwrap(),
        *c.kernel
    );
    let hits = c.server.hits_for(KERNEL);
    assert_eq!(
        hits[before].range.as_deref(),
        Some(&*format!("bytes={CHUNK}-"))
    );
    assert!(
        !out.join("kernel.partial.chunks").exists(),
        "the map goes with success"
    );
}

#[tokio::test]
async fn a_kept_chunk_changed_on_disk_is_fetched_again() {
    // A second source (here one that is not there) makes the stream check chunks.
    let c = case(&["/m1/kernel"]).await;
    // Chunks 0-2 are sent, then the connection resets: what arrived whole is kept.
    c.server.route(
        KERNEL,
        Behaviour::ResetAfter(c.kernel.clone(), 3 * CHUNK + 10),
    );
    let mut opts = c.opts.clone();
    opts.retries = 0;
    fetch_release(&c.server.url(MANIFEST), &opts)
        .await
        .unwrap_err();
    let out = c.dir.path().join("out");
    let mut partial = std::fs::read(out.join("kernel.partial")).unwrap();
    // Bytes in flight may be lost with the RST: at least chunk 0 is in.
    assert!(partial[..CHUNK] == c.kernel[..CHUNK], "chunk 0 kept");
    // The disk changes chunk 0 behind our back: the map still says verified.
    partial[5] ^= 0xff;
    std::fs::write(out.join("kernel.partial"), &partial).unwrap();
    c.server.route(KERNEL, Behaviour::Serve(c.kernel.clone()));
    let before = c.server.hits_for(KERNEL).len();
    let r = fetch_release(&c.server.url(MANIFEST), &c.opts)
        .await
        .unwrap();
    assert_eq!(
        std::fs::read(&r.artifacts["kernel"].path).unwrap(),
        *c.kernel
    );
    // Chunk 0 failed its re-check, so the verified prefix is empty: the whole file is asked for.
    assert_eq!(c.server.hits_for(KERNEL)[before].range, None);
}
