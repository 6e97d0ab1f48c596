//! Bounded chaos soak (issue 5): 50 fetches against sources that answer 503 half the time,
//! reset connections mid-body and add latency. Every run must end with verified files, and no
//! file at a final path may ever hold unverified bytes, success or not.

mod fetch_support;

use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Duration;

use fetch_support::{data, listing, Behaviour, Server, Signer};
use phase_init::fetch::{fetch_release, FetchOptions};
use phase_protocol::Sha256Digest;

const RUNS: usize = 50;

fn chaos(d: &Arc<Vec<u8>>, seed: usize, faults: &Arc<AtomicUsize>) -> Behaviour {
    Behaviour::Chaos {
        data: d.clone(),
        p503: 0.5,
        preset: 0.3,
        latency: Duration::from_millis(3),
        seed: Arc::new(AtomicUsize::new(seed)),
        faults: faults.clone(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_soak_always_ends_verified_and_never_exposes_unverified_bytes() {
    let signer = Signer::new();
    let kernel = data(96 * 1024, 11);
    let initramfs = data(160 * 1024, 12);
    let dir = tempfile::tempdir().unwrap();
    let faults = Arc::new(AtomicUsize::new(0));
    let mut requests = 0;
    for run in 0..RUNS {
        let server = Server::start().await;
        let mirrors = |name: &str| {
            vec![
                server.url(&format!("/m1/{name}")),
                server.url(&format!("/m2/{name}")),
            ]
        };
        let m = signer.manifest(
            "1.0.0",
            "x86_64",
            &[
                ("kernel", &kernel, mirrors("kernel")),
                ("initramfs", &initramfs, mirrors("initramfs")),
            ],
        );
        server.route(
            "/stable/x86_64/manifest.json",
            Behaviour::Serve(Arc::new(m)),
        );
        for (i, prefix) in ["/stable/x86_64", "/m1", "/m2"].iter().enumerate() {
            server.route(
                &format!("{prefix}/kernel"),
                chaos(&kernel, run * 7 + i, &faults),
            );
            server.route(
                &format!("{prefix}/initramfs"),
                chaos(&initramfs, run * 13 + i + 100, &faults),
            );
        }
        let out = dir.path().join(format!("run{run}"));
        let mut opts = FetchOptions::new(signer.trust.clone(), out.clone());
        opts.retries = 10;
        opts.backoff = Duration::from_millis(2);
        opts.idle_timeout = Duration::from_secs(5);
        opts.total_timeout = Duration::from_secs(60);
        opts.progress = false;
        let r = fetch_release(&server.url("/stable/x86_64/manifest.json"), &opts).await;
        // Whatever happened, every file at a final path holds exactly the verified bytes.
        for (name, want) in [("kernel", &kernel), ("initramfs", &initramfs)] {
            if let Ok(bytes) = std::fs::read(out.join(name)) {
                assert_eq!(
                    Sha256Digest::of(&bytes),
                    Sha256Digest::of(want),
                    "run {run}: {name} unverified"
                );
            }
        }
        let r = r.unwrap_or_else(|e| panic!("run {run}: {}", phase_init::log::error_chain(&e)));
        assert_eq!(r.artifacts.len(), 2);
        assert!(
            !listing(&out).iter().any(|n| n.ends_with(".partial")),
            "run {run}: {:?}",
            listing(&out)
        );
        requests += server.hits().len();
    }
    // The chaos was real: about half the requests were 503s or resets.
    let faults = faults.load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        faults * 3 > requests,
        "only {faults} faults in {requests} requests"
    );
}
