//! Manifest refusal and rollback state (issue 5 "Manifests that are expired, rolled back, for
//! the wrong arch, badly signed, or oversized"; "State").

mod fetch_support;

use std::sync::Arc;
use std::time::Duration;

use chrono::{Duration as ChronoDuration, Utc};
use fetch_support::{data, listing, Behaviour, Server, Signer};
use phase_init::fetch::recovery::CACHED_MANIFEST;
use phase_init::fetch::state::{BACKUP_FILE, STATE_FILE};
use phase_init::fetch::{
    fetch_manifest, fetch_release, FetchError, FetchOptions, RollbackState, StateError,
};
use phase_protocol::{Arch, VerifyError};

const MANIFEST: &str = "/stable/x86_64/manifest.json";

fn opts(signer: &Signer, out: &std::path::Path) -> FetchOptions {
    let mut o = FetchOptions::new(signer.trust.clone(), out.to_owned());
    o.retries = 1;
    o.backoff = Duration::from_millis(5);
    o.idle_timeout = Duration::from_secs(5);
    o.progress = false;
    o
}

/// Serves a release of `version` and returns its server.
async fn serve(signer: &Signer, version: &str, arch: &str) -> Server {
    let server = Server::start().await;
    let (k, i) = (data(1000, 1), data(2000, 2));
    let m = signer.manifest(
        version,
        arch,
        &[("kernel", &k, vec![]), ("initramfs", &i, vec![])],
    );
    server.route(MANIFEST, Behaviour::Serve(Arc::new(m)));
    server.route("/stable/x86_64/kernel", Behaviour::Serve(k));
    server.route("/stable/x86_64/initramfs", Behaviour::Serve(i));
    server
}

fn refused(err: FetchError) -> VerifyError {
    match err {
        FetchError::ManifestRefused { source, .. } => source,
        other => panic!("expected a refusal, got {other}"),
    }
}

#[tokio::test]
async fn expired_manifest_is_refused() {
    let signer = Signer::new();
    let server = Server::start().await;
    let now = Utc::now();
    let k = data(10, 1);
    let m = signer.manifest_at(
        "1.0.0",
        "x86_64",
        &[("kernel", &k, vec![]), ("initramfs", &k, vec![])],
        now - ChronoDuration::days(10),
        now - ChronoDuration::days(1),
    );
    server.route(MANIFEST, Behaviour::Serve(Arc::new(m)));
    let dir = tempfile::tempdir().unwrap();
    let err = fetch_manifest(&server.url(MANIFEST), &opts(&signer, dir.path()))
        .await
        .unwrap_err();
    assert!(matches!(refused(err), VerifyError::Expired { .. }));
}

#[tokio::test]
async fn clock_behind_the_time_floor_counts_as_the_floor() {
    // Valid by the wall clock, but the state says a release created two days from now was
    // already accepted: this manifest expires before that, so it is refused as expired.
    let signer = Signer::new();
    let server = serve(&signer, "1.0.0", "x86_64").await;
    let dir = tempfile::tempdir().unwrap();
    let state = RollbackState {
        format: 1,
        time_floor: Some(Utc::now() + ChronoDuration::days(2)),
        ..RollbackState::default()
    };
    state.save(dir.path()).unwrap();
    let mut o = opts(&signer, &dir.path().join("out"));
    o.state_dir = Some(dir.path().to_owned());
    let err = fetch_manifest(&server.url(MANIFEST), &o).await.unwrap_err();
    assert!(matches!(refused(err), VerifyError::Expired { .. }));
}

#[tokio::test]
async fn badly_signed_manifest_is_refused() {
    let signer = Signer::new();
    let other = Signer::new();
    let server = serve(&other, "1.0.0", "x86_64").await;
    let dir = tempfile::tempdir().unwrap();
    let err = fetch_release(
        &server.url(MANIFEST),
        &opts(&signer, &dir.path().join("out")),
    )
    .await
    .unwrap_err();
    assert!(matches!(
        refused(err),
        VerifyError::Threshold {
            valid: 0,
            needed: 1,
            ..
        }
    ));
    // Nothing was downloaded for a refused manifest.
    assert!(server.hits_for("/stable/x86_64/kernel").is_empty());
    assert!(listing(&dir.path().join("out")).is_empty());
}

#[tokio::test]
async fn tampered_manifest_is_refused() {
    let signer = Signer::new();
    let server = Server::start().await;
    let k = data(10, 1);
    let m = signer.manifest(
        "1.0.0",
        "x86_64",
        &[("kernel", &k, vec![]), ("initramfs", &k, vec![])],
    );
    let tampered = String::from_utf8(m)
        .unwrap()
        .replace("console=ttyS0", "console=ttyS0 init=/bin/sh");
    server.route(MANIFEST, Behaviour::Serve(Arc::new(tampered.into_bytes())));
    let dir = tempfile::tempdir().unwrap();
    let err = fetch_manifest(&server.url(MANIFEST), &opts(&signer, dir.path()))
        .await
        .unwrap_err();
    assert!(matches!(
        refused(err),
        VerifyError::Threshold { valid: 0, .. }
    ));
}

#[tokio::test]
async fn wrong_arch_manifest_is_refused() {
    let signer = Signer::new();
    let server = serve(&signer, "1.0.0", "aarch64").await;
    let dir = tempfile::tempdir().unwrap();
    let mut o = opts(&signer, dir.path());
    o.expectation.arch = Some(Arch::X86_64);
    let err = fetch_manifest(&server.url(MANIFEST), &o).await.unwrap_err();
    assert!(matches!(refused(err), VerifyError::WrongArch { .. }));
    // An alias of the expected arch is the same arch.
    let server = serve(&signer, "1.0.0", "amd64").await;
    assert!(fetch_manifest(&server.url(MANIFEST), &o).await.is_ok());
}

#[tokio::test]
async fn oversized_manifest_is_refused_by_length_and_by_stream() {
    let signer = Signer::new();
    let server = Server::start().await;
    let big = Arc::new(vec![b' '; (1 << 20) + 1]);
    server.route(MANIFEST, Behaviour::Serve(big.clone()));
    server.route("/endless.json", Behaviour::Endless(Arc::new(b"{".to_vec())));
    let dir = tempfile::tempdir().unwrap();
    let o = opts(&signer, dir.path());
    let err = fetch_manifest(&server.url(MANIFEST), &o).await.unwrap_err();
    assert!(matches!(refused(err), VerifyError::TooLarge { limit, .. } if limit == 1 << 20));
    // Without Content-Length the cap applies while reading.
    let err = fetch_manifest(&server.url("/endless.json"), &o)
        .await
        .unwrap_err();
    assert!(matches!(refused(err), VerifyError::TooLarge { .. }));
}

#[tokio::test]
async fn manifest_url_with_another_scheme_is_refused() {
    let signer = Signer::new();
    let dir = tempfile::tempdir().unwrap();
    let err = fetch_manifest("file:///etc/passwd", &opts(&signer, dir.path()))
        .await
        .unwrap_err();
    assert!(matches!(err, FetchError::Url(_)), "{err}");
}

#[tokio::test]
async fn accepted_release_is_recorded_and_an_older_one_is_then_a_rollback() {
    let signer = Signer::new();
    let dir = tempfile::tempdir().unwrap();
    let mut o = opts(&signer, &dir.path().join("out"));
    o.state_dir = Some(dir.path().join("state"));
    std::fs::create_dir_all(dir.path().join("state")).unwrap();

    let new = serve(&signer, "2.0.0", "x86_64").await;
    let r = fetch_release(&new.url(MANIFEST), &o).await.unwrap();
    assert_eq!(r.artifacts.len(), 2);
    let state = RollbackState::load(&dir.path().join("state")).unwrap();
    assert_eq!(
        state.min_version("stable", "amd64"),
        Some(&semver::Version::new(2, 0, 0))
    );
    assert!(state.time_floor.is_some());

    let old = serve(&signer, "1.9.9", "x86_64").await;
    let err = fetch_release(&old.url(MANIFEST), &o).await.unwrap_err();
    assert!(matches!(refused(err), VerifyError::Rollback { .. }));
    // The same version again is not a rollback.
    let same = serve(&signer, "2.0.0", "x86_64").await;
    assert!(fetch_release(&same.url(MANIFEST), &o).await.is_ok());
}

#[tokio::test]
async fn manifest_503_storm_is_retried_then_reported() {
    let signer = Signer::new();
    let server = Server::start().await;
    server.route(MANIFEST, Behaviour::Status(503));
    let dir = tempfile::tempdir().unwrap();
    let err = fetch_manifest(&server.url(MANIFEST), &opts(&signer, dir.path()))
        .await
        .unwrap_err();
    assert!(matches!(err, FetchError::ManifestFetch { .. }), "{err}");
    assert!(
        phase_init::log::error_chain(&err).contains("after 2 tries"),
        "{}",
        phase_init::log::error_chain(&err)
    );
    assert_eq!(server.hits_for(MANIFEST).len(), 2);
}

// The cache never bricks a boot (issue 15 §6): a lost or unwritable state.json is reported and
// recovered, and the rollback floor is not lowered.

/// A state directory whose saved state accepted `version` (both copies).
fn state_dir_at(version: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let mut s = RollbackState::empty();
    s.releases.insert(
        "stable/x86_64".into(),
        phase_init::fetch::state::AcceptedRelease {
            version: version.parse().unwrap(),
            created_at: Utc::now() - ChronoDuration::hours(2),
        },
    );
    s.save(dir.path()).unwrap();
    dir
}

fn with_state(signer: &Signer, dir: &std::path::Path) -> FetchOptions {
    let mut o = opts(signer, &dir.join("out"));
    o.state_dir = Some(dir.to_owned());
    o
}

#[tokio::test]
async fn corrupt_state_json_does_not_stop_the_fetch_and_the_backup_floor_holds() {
    let signer = Signer::new();
    let dir = state_dir_at("2.0.0");
    std::fs::write(dir.path().join(STATE_FILE), b"{\"format\":1,\"relea").unwrap();
    let o = with_state(&signer, dir.path());
    // The floor from state.json.bak still refuses a rollback ...
    let old = serve(&signer, "1.9.9", "x86_64").await;
    let err = fetch_release(&old.url(MANIFEST), &o).await.unwrap_err();
    assert!(matches!(refused(err), VerifyError::Rollback { .. }));
    // ... and the current release is fetched, verified and recorded: both copies are whole again.
    let cur = serve(&signer, "2.0.0", "x86_64").await;
    let r = fetch_release(&cur.url(MANIFEST), &o).await.unwrap();
    assert!(r.state_error.is_none());
    let copies = RollbackState::load_copies(dir.path());
    assert!(copies.problems.is_empty(), "{:?}", copies.problems);
    assert_eq!(copies.used.len(), 2);
}

#[tokio::test]
async fn lost_state_is_rebuilt_from_the_cached_manifest_and_still_refuses_a_rollback() {
    let signer = Signer::new();
    let dir = state_dir_at("2.0.0");
    std::fs::write(dir.path().join(STATE_FILE), b"").unwrap();
    std::fs::write(dir.path().join(BACKUP_FILE), b"\0\0\0\0").unwrap();
    // The cache still holds the verified manifest of the release it booted.
    let k = data(10, 1);
    let cached = signer.manifest(
        "2.0.0",
        "x86_64",
        &[("kernel", &k, vec![]), ("initramfs", &k, vec![])],
    );
    std::fs::write(dir.path().join(CACHED_MANIFEST), cached).unwrap();
    let o = with_state(&signer, dir.path());
    let old = serve(&signer, "1.9.9", "x86_64").await;
    let err = fetch_release(&old.url(MANIFEST), &o).await.unwrap_err();
    assert!(matches!(refused(err), VerifyError::Rollback { .. }));
    // Positive control: the rebuilt floor lets the same or a newer release through.
    let new = serve(&signer, "2.1.0", "x86_64").await;
    fetch_release(&new.url(MANIFEST), &o).await.unwrap();
    let s = RollbackState::load(dir.path()).unwrap();
    assert_eq!(
        s.min_version("stable", "x86_64"),
        Some(&semver::Version::new(2, 1, 0))
    );
}

#[tokio::test]
async fn lost_state_without_a_cached_manifest_does_not_stop_the_fetch() {
    let signer = Signer::new();
    let dir = state_dir_at("2.0.0");
    std::fs::write(dir.path().join(STATE_FILE), b"garbage").unwrap();
    std::fs::write(dir.path().join(BACKUP_FILE), b"garbage").unwrap();
    let o = with_state(&signer, dir.path());
    let server = serve(&signer, "1.0.0", "x86_64").await;
    let r = fetch_release(&server.url(MANIFEST), &o).await.unwrap();
    assert_eq!(r.artifacts.len(), 2);
    assert_eq!(
        RollbackState::load(dir.path())
            .unwrap()
            .min_version("stable", "x86_64"),
        Some(&semver::Version::new(1, 0, 0))
    );
}

#[tokio::test]
async fn enospc_while_saving_the_state_keeps_the_release_and_the_old_state() {
    let signer = Signer::new();
    let dir = state_dir_at("1.0.0");
    let before = std::fs::read(dir.path().join(STATE_FILE)).unwrap();
    // Every write to the temporary copy fails with ENOSPC, as on a full vfat cache.
    std::os::unix::fs::symlink("/dev/full", dir.path().join("state.json.tmp")).unwrap();
    let o = with_state(&signer, dir.path());
    let server = serve(&signer, "2.0.0", "x86_64").await;
    let r = fetch_release(&server.url(MANIFEST), &o).await.unwrap();
    assert_eq!(r.artifacts.len(), 2, "the verified release is still there");
    let chain = phase_init::log::error_chain(r.state_error.as_ref().expect("save reported"));
    assert!(
        chain.contains("write ") && chain.contains("state.json.tmp"),
        "{chain}"
    );
    assert!(
        matches!(r.state_error, Some(StateError::Io { ref source, .. }) if source.raw_os_error() == Some(libc::ENOSPC)),
        "{chain}"
    );
    assert_eq!(std::fs::read(dir.path().join(STATE_FILE)).unwrap(), before);
    assert_eq!(std::fs::read(dir.path().join(BACKUP_FILE)).unwrap(), before);
    assert!(std::fs::symlink_metadata(dir.path().join("state.json.tmp")).is_err());
    // Positive control: with space again the same fetch records 2.0.0.
    let r = fetch_release(&server.url(MANIFEST), &o).await.unwrap();
    assert!(r.state_error.is_none());
    assert_eq!(
        RollbackState::load(dir.path())
            .unwrap()
            .min_version("stable", "x86_64"),
        Some(&semver::Version::new(2, 0, 0))
    );
}
