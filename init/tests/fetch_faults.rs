//! Fault injection for artifact streaming (issue 5 "Tests"): each case shows safe behaviour
//! against a real HTTP server on 127.0.0.1 (see `fetch_support`).

mod fetch_support;

use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Duration;

use fetch_support::{data, listing, test_options, Behaviour, Server, Signer};
use phase_init::fetch::{
    fetch_release, FetchError, FetchOptions, FetchedRelease, MinRate, SourceError,
};
use phase_protocol::Sha256Digest;

const KERNEL: &str = "/stable/x86_64/kernel";
const INITRAMFS: &str = "/stable/x86_64/initramfs";
const MANIFEST: &str = "/stable/x86_64/manifest.json";
const SIZE: usize = 256 * 1024;

struct Case {
    server: Server,
    dir: tempfile::TempDir,
    opts: FetchOptions,
    kernel: Arc<Vec<u8>>,
}

/// A release whose kernel has `mirrors` (paths on the same server) besides the manifest-relative
/// URL; the initramfs is served honestly.
async fn case(mirrors: &[&str]) -> Case {
    let server = Server::start().await;
    let signer = Signer::new();
    let kernel = data(SIZE, 1);
    let initramfs = data(4096, 2);
    let urls: Vec<String> = mirrors.iter().map(|m| server.url(m)).collect();
    let manifest = signer.manifest(
        "1.0.0",
        "x86_64",
        &[("kernel", &kernel, urls), ("initramfs", &initramfs, vec![])],
    );
    server.route(MANIFEST, Behaviour::Serve(Arc::new(manifest)));
    server.route(INITRAMFS, Behaviour::Serve(initramfs));
    let dir = tempfile::tempdir().unwrap();
    let opts = test_options(&signer.trust, dir.path().join("out"), 2);
    Case {
        server,
        dir,
        opts,
        kernel,
    }
}

impl Case {
    async fn fetch(&self) -> Result<FetchedRelease, FetchError> {
        fetch_release(&self.server.url(MANIFEST), &self.opts).await
    }

    fn out(&self) -> std::path::PathBuf {
        self.dir.path().join("out")
    }

    fn assert_kernel_verified(&self, r: &FetchedRelease) {
        let k = &r.artifacts["kernel"];
        assert_eq!(std::fs::read(&k.path).unwrap(), *self.kernel);
        assert_eq!(k.hash, Sha256Digest::of(&self.kernel));
        assert_eq!(k.size, SIZE as u64);
        assert!(
            !listing(&self.out()).iter().any(|n| n.ends_with(".partial")),
            "{:?}",
            listing(&self.out())
        );
    }

    fn assert_no_kernel_on_disk(&self) {
        let files = listing(&self.out());
        assert!(
            !files.iter().any(|n| n == "kernel" || n == "kernel.partial"),
            "left behind: {files:?}"
        );
    }
}

fn bad(data: &[u8]) -> Arc<Vec<u8>> {
    let mut v = data.to_vec();
    v[SIZE / 2] ^= 0xff;
    Arc::new(v)
}

#[tokio::test]
async fn substituted_bytes_are_refused_and_the_next_source_is_used() {
    let c = case(&["/m1/kernel"]).await;
    c.server.route(KERNEL, Behaviour::Serve(bad(&c.kernel)));
    c.server
        .route("/m1/kernel", Behaviour::Serve(c.kernel.clone()));
    let r = c.fetch().await.unwrap();
    c.assert_kernel_verified(&r);
    assert!(
        matches!(r.failures[0].error, SourceError::HashMismatch { .. }),
        "{:?}",
        r.failures
    );
    // The good mirror had to deliver the whole file again (no resume onto poisoned bytes).
    assert_eq!(c.server.hits_for("/m1/kernel")[0].range, None);
}

#[tokio::test]
async fn substituted_bytes_on_every_source_leave_nothing_at_the_final_path() {
    let c = case(&["/m1/kernel"]).await;
    c.server.route(KERNEL, Behaviour::Serve(bad(&c.kernel)));
    c.server
        .route("/m1/kernel", Behaviour::Serve(bad(&c.kernel)));
    let err = c.fetch().await.unwrap_err();
    assert!(matches!(err, FetchError::AllSourcesFailed { .. }), "{err}");
    assert!(err.to_string().contains("hash mismatch"), "{err}");
    c.assert_no_kernel_on_disk();
}

#[tokio::test]
async fn endless_body_is_cut_past_size_and_the_next_source_is_used() {
    let c = case(&["/m1/kernel"]).await;
    c.server.route(KERNEL, Behaviour::Endless(c.kernel.clone()));
    c.server
        .route("/m1/kernel", Behaviour::Serve(c.kernel.clone()));
    let r = c.fetch().await.unwrap();
    c.assert_kernel_verified(&r);
    assert!(matches!(r.failures[0].error, SourceError::TooLong { size } if size == SIZE as u64));
}

#[tokio::test]
async fn endless_body_as_the_only_source_fails_without_a_file() {
    let c = case(&[]).await;
    c.server.route(KERNEL, Behaviour::Endless(c.kernel.clone()));
    let err = c.fetch().await.unwrap_err();
    assert!(
        err.to_string().contains("longer than the manifest's"),
        "{err}"
    );
    c.assert_no_kernel_on_disk();
}

#[tokio::test]
async fn short_body_is_resumed_from_the_verified_offset_on_the_next_source() {
    let c = case(&["/m1/kernel"]).await;
    c.server
        .route(KERNEL, Behaviour::Short(c.kernel.clone(), 100_000));
    c.server
        .route("/m1/kernel", Behaviour::Serve(c.kernel.clone()));
    let r = c.fetch().await.unwrap();
    c.assert_kernel_verified(&r);
    assert!(
        matches!(r.failures[0].error, SourceError::Short { got: 100_000, .. }),
        "{:?}",
        r.failures
    );
    assert_eq!(
        c.server.hits_for("/m1/kernel")[0].range.as_deref(),
        Some("bytes=100000-")
    );
}

#[tokio::test]
async fn content_length_of_2_pow_63_is_refused() {
    let c = case(&["/m1/kernel"]).await;
    c.server
        .route(KERNEL, Behaviour::HugeLength(c.kernel.clone()));
    c.server
        .route("/m1/kernel", Behaviour::Serve(c.kernel.clone()));
    let r = c.fetch().await.unwrap();
    c.assert_kernel_verified(&r);
    assert!(
        matches!(&r.failures[0].error, SourceError::ContentLength { got, expected } if got == "9223372036854775808" && *expected == SIZE as u64),
        "{:?}",
        r.failures
    );
}

#[tokio::test]
async fn server_ignoring_range_restarts_from_zero_and_is_not_appended() {
    let c = case(&["/m1/kernel"]).await;
    c.server
        .route(KERNEL, Behaviour::Short(c.kernel.clone(), 100_000));
    c.server
        .route("/m1/kernel", Behaviour::IgnoreRange(c.kernel.clone()));
    let r = c.fetch().await.unwrap();
    // Appending the 200 body to the prefix would make a file of SIZE + 100000 bytes.
    c.assert_kernel_verified(&r);
    assert_eq!(
        c.server.hits_for("/m1/kernel")[0].range.as_deref(),
        Some("bytes=100000-")
    );
}

#[tokio::test]
async fn wrong_content_range_is_refused_and_the_next_source_resumes() {
    let c = case(&["/m1/kernel", "/m2/kernel"]).await;
    c.server
        .route(KERNEL, Behaviour::Short(c.kernel.clone(), 100_000));
    c.server
        .route("/m1/kernel", Behaviour::WrongRange(c.kernel.clone()));
    c.server
        .route("/m2/kernel", Behaviour::Serve(c.kernel.clone()));
    let r = c.fetch().await.unwrap();
    c.assert_kernel_verified(&r);
    assert!(
        r.failures
            .iter()
            .any(|f| matches!(f.error, SourceError::ContentRange { .. })),
        "{:?}",
        r.failures
    );
    assert_eq!(
        c.server.hits_for("/m2/kernel")[0].range.as_deref(),
        Some("bytes=100000-")
    );
}

#[tokio::test]
async fn storm_of_503_then_success_is_retried_with_backoff() {
    let mut c = case(&[]).await;
    c.opts.retries = 5;
    let then = Box::new(Behaviour::Serve(c.kernel.clone()));
    c.server.route(
        KERNEL,
        Behaviour::StatusThen {
            status: 503,
            times: Arc::new(AtomicUsize::new(4)),
            then,
        },
    );
    let r = c.fetch().await.unwrap();
    c.assert_kernel_verified(&r);
    assert_eq!(c.server.hits_for(KERNEL).len(), 5);
}

#[tokio::test]
async fn endless_503_gives_up_naming_the_status_and_tries() {
    let c = case(&[]).await;
    c.server.route(KERNEL, Behaviour::Status(503));
    let err = c.fetch().await.unwrap_err();
    assert!(
        err.to_string()
            .contains("HTTP 503 Service Unavailable after 3 tries"),
        "{err}"
    );
    // retries = 2: 3 tries per turn, 3 rounds: bounded.
    assert_eq!(c.server.hits_for(KERNEL).len(), 9);
    c.assert_no_kernel_on_disk();
}

#[tokio::test]
async fn one_byte_per_second_trickle_hits_the_idle_timeout_and_moves_on() {
    let mut c = case(&["/m1/kernel"]).await;
    c.opts.idle_timeout = Duration::from_millis(300);
    c.server.route(
        KERNEL,
        Behaviour::Trickle(c.kernel.clone(), Duration::from_secs(1)),
    );
    c.server
        .route("/m1/kernel", Behaviour::Serve(c.kernel.clone()));
    let r = c.fetch().await.unwrap();
    c.assert_kernel_verified(&r);
    assert!(
        matches!(r.failures[0].error, SourceError::Idle { ms: 300, .. }),
        "{:?}",
        r.failures
    );
}

#[tokio::test]
async fn connection_reset_mid_body_is_resumed_on_another_source_and_verified() {
    let c = case(&["/m1/kernel"]).await;
    c.server
        .route(KERNEL, Behaviour::ResetAfter(c.kernel.clone(), 150_000));
    c.server
        .route("/m1/kernel", Behaviour::Serve(c.kernel.clone()));
    let r = c.fetch().await.unwrap();
    c.assert_kernel_verified(&r);
    assert!(
        matches!(r.failures[0].error, SourceError::Body { .. }),
        "{:?}",
        r.failures
    );
    let range = c.server.hits_for("/m1/kernel")[0].range.clone();
    // Bytes in flight may be lost with the RST, so the offset is at most what was sent.
    let off: u64 = range
        .as_deref()
        .and_then(|r| r.strip_prefix("bytes=")?.strip_suffix('-')?.parse().ok())
        .unwrap_or(0);
    assert!(off <= 150_000, "{range:?}");
}

#[tokio::test]
async fn all_sources_bad_error_names_each_source_and_reason() {
    let c = case(&["/m1/kernel", "/m2/kernel"]).await;
    c.server.route(KERNEL, Behaviour::Status(404));
    c.server.route("/m1/kernel", Behaviour::Status(410));
    c.server
        .route("/m2/kernel", Behaviour::Serve(bad(&c.kernel)));
    let err = c.fetch().await.unwrap_err();
    let text = err.to_string();
    for needle in [
        format!("{}: HTTP 404", c.server.url(KERNEL)),
        format!("{}: HTTP 410", c.server.url("/m1/kernel")),
        format!("{}: hash mismatch", c.server.url("/m2/kernel")),
        "artifact kernel: all 3 source(s) failed".to_owned(),
    ] {
        assert!(text.contains(&needle), "missing {needle:?} in {text}");
    }
    c.assert_no_kernel_on_disk();
}

#[tokio::test]
async fn mixed_sources_with_a_mismatch_fall_back_to_whole_file_fetches() {
    // Source 1 sends a correct prefix and resets; source 2 resumes but is corrupt; source 3 is
    // honest. Nobody can be blamed for the first mismatch, so each source must then deliver the
    // whole file alone.
    let c = case(&["/m1/kernel", "/m2/kernel"]).await;
    c.server
        .route(KERNEL, Behaviour::ResetAfter(c.kernel.clone(), 50_000));
    c.server
        .route("/m1/kernel", Behaviour::Serve(bad(&c.kernel)));
    c.server
        .route("/m2/kernel", Behaviour::Serve(c.kernel.clone()));
    let r = c.fetch().await.unwrap();
    c.assert_kernel_verified(&r);
    let last = c.server.hits_for("/m2/kernel");
    assert_eq!(last.last().unwrap().range, None, "{last:?}");
}

// Liveness (issue 15 §5): a source below the minimum rate is dropped and the next one resumes.

/// 1 KiB/s: 256 bytes every 250 ms.
fn one_kib_per_sec(d: &Arc<Vec<u8>>) -> Behaviour {
    Behaviour::Paced(d.clone(), 256, Duration::from_millis(250))
}

/// The byte a `Range: bytes=<n>-` header asks for.
fn range_start(range: Option<&str>) -> Option<u64> {
    range?
        .strip_prefix("bytes=")?
        .strip_suffix('-')?
        .parse()
        .ok()
}

#[tokio::test]
async fn slow_source_is_dropped_and_the_next_resumes_from_the_verified_offset() {
    let mut c = case(&["/m1/kernel"]).await;
    c.opts.min_rate = MinRate {
        bytes_per_sec: 64 * 1024,
        window: Duration::from_millis(600),
    };
    // At 1 KiB/s the kernel alone would need 256 s: without the floor the 20 s deadline ends it.
    c.opts.total_timeout = Duration::from_secs(20);
    c.server.route(KERNEL, one_kib_per_sec(&c.kernel));
    c.server
        .route("/m1/kernel", Behaviour::Serve(c.kernel.clone()));
    let started = std::time::Instant::now();
    let r = c.fetch().await.unwrap();
    let took = started.elapsed();
    c.assert_kernel_verified(&r);
    assert!(took < Duration::from_secs(8), "took {took:?}");
    let cut_at = match r.failures.as_slice() {
        [f] => match f.error {
            SourceError::TooSlow {
                rate,
                min_rate,
                offset,
                window_ms,
            } => {
                assert!(rate < 8 * 1024, "measured {rate} B/s");
                assert_eq!(min_rate, 64 * 1024);
                assert!(window_ms >= 600, "{window_ms}");
                offset
            }
            ref other => panic!("expected TooSlow, got {other}"),
        },
        other => panic!("expected one failure, got {other:?}"),
    };
    assert!(cut_at > 0, "the slow source delivered something first");
    let hits = c.server.hits_for("/m1/kernel");
    assert_eq!(hits.len(), 1, "{hits:?}");
    assert_eq!(range_start(hits[0].range.as_deref()), Some(cut_at));
    // The slow source is not asked again.
    assert_eq!(c.server.hits_for(KERNEL).len(), 1);
}

#[tokio::test]
async fn source_at_a_healthy_rate_is_not_dropped() {
    // Positive control: the same floor and window, a second source to go to, but the first
    // source runs at 640 KiB/s (32 KiB every 50 ms): it keeps the download.
    let mut c = case(&["/m1/kernel"]).await;
    c.opts.min_rate = MinRate {
        bytes_per_sec: 64 * 1024,
        window: Duration::from_millis(600),
    };
    c.server.route(
        KERNEL,
        Behaviour::Paced(c.kernel.clone(), 32 * 1024, Duration::from_millis(50)),
    );
    c.server
        .route("/m1/kernel", Behaviour::Serve(c.kernel.clone()));
    let r = c.fetch().await.unwrap();
    c.assert_kernel_verified(&r);
    assert!(r.failures.is_empty(), "{:?}", r.failures);
    assert!(c.server.hits_for("/m1/kernel").is_empty());
}

#[tokio::test]
async fn slow_only_source_is_kept_rather_than_failing_the_fetch() {
    // A floor far above what the only source can do: with nowhere else to go it is not cut.
    let mut c = case(&[]).await;
    c.opts.min_rate = MinRate {
        bytes_per_sec: 100 * 1024 * 1024,
        window: Duration::from_millis(100),
    };
    c.server.route(
        KERNEL,
        Behaviour::Paced(c.kernel.clone(), 32 * 1024, Duration::from_millis(50)),
    );
    let r = c.fetch().await.unwrap();
    c.assert_kernel_verified(&r);
    assert!(r.failures.is_empty(), "{:?}", r.failures);
    assert_eq!(c.server.hits_for(KERNEL).len(), 1);
}

#[tokio::test]
async fn slow_source_is_used_again_when_every_other_source_failed() {
    // The first source is dropped as slow while the mirror is left; the mirror is gone (404),
    // so the next round goes back to the slow source, without the floor, from its offset.
    let mut c = case(&["/m1/kernel"]).await;
    c.opts.min_rate = MinRate {
        bytes_per_sec: 100 * 1024 * 1024,
        window: Duration::from_millis(100),
    };
    c.server.route(
        KERNEL,
        Behaviour::Paced(c.kernel.clone(), 32 * 1024, Duration::from_millis(50)),
    );
    c.server.route("/m1/kernel", Behaviour::Status(404));
    let r = c.fetch().await.unwrap();
    c.assert_kernel_verified(&r);
    assert!(
        matches!(r.failures[0].error, SourceError::TooSlow { .. }),
        "{:?}",
        r.failures
    );
    let hits = c.server.hits_for(KERNEL);
    assert_eq!(hits.len(), 2, "{hits:?}");
    assert_eq!(hits[0].range, None);
    assert!(range_start(hits[1].range.as_deref()).is_some_and(|o| o > 0));
}

#[tokio::test]
async fn zero_min_rate_turns_the_floor_off() {
    let mut c = case(&["/m1/kernel"]).await;
    c.opts.min_rate = MinRate {
        bytes_per_sec: 0,
        window: Duration::from_millis(100),
    };
    c.server.route(
        KERNEL,
        Behaviour::Paced(c.kernel.clone(), 32 * 1024, Duration::from_millis(50)),
    );
    c.server
        .route("/m1/kernel", Behaviour::Serve(c.kernel.clone()));
    let r = c.fetch().await.unwrap();
    c.assert_kernel_verified(&r);
    assert!(r.failures.is_empty(), "{:?}", r.failures);
}
