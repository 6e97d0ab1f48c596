//! Fetch and verify: manifest, then every artifact streamed and hashed (DESIGN §7, issue 5,
//! seed 003 "Verification Pipeline Pattern").
//!
//! Boot flow position: after discovery produced a manifest URL and before cache and kexec.
//! [`fetch_release`] fetches the manifest (capped at 1 MiB), verifies it with
//! [`phase_protocol::verify()`] against the trust root, the expectation and the rollback state,
//! then fetches all artifacts concurrently, each streamed through SHA-256 into
//! `<out>/<filename>.partial` and renamed only once its hash matched ([`download`]); a v2
//! artifact (chunk digests) with two or more sources has its chunks fetched from all of them
//! at once instead, each chunk checked before it is written ([`swarm`]). What it
//! returns holds the open descriptors of exactly the verified bytes, for `kexec_file_load`.
//!
//! Console lines: `manifest ok version=<v> signers=<n> in <N>ms` (from [`fetch_release`]),
//! progress at most once per second per artifact, then `fetch ok <artifact> <bytes> bytes in
//! <N>ms` per artifact. Failure lines are the caller's (`log::Stage::failed`). Also: a slow
//! source dropped ([`download`], [`rate`]), a rollback state recovered ([`recovery`]) or not
//! saved (`state save failed, ...`); none of these fails the fetch.

pub mod client;
pub mod download;
pub mod hashing;
pub mod local;
pub mod partial;
pub mod pieces;
pub mod progress;
pub mod rate;
pub mod recovery;
pub mod resume;
pub mod share;
pub mod sources;
pub mod state;
pub mod swarm;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use futures::future::try_join_all;
use phase_protocol::{
    verify, Artifact, Expectation, Sha256Digest, TrustRoot, VerifiedManifest, VerifyError,
    MAX_MANIFEST_BYTES,
};
use reqwest::Url;
use tokio::sync::watch;

pub use client::ClientError;
pub use download::{SourceError, SourceFailure};
pub use local::{copy_verified_artifacts, verify_artifacts_in_dir, LocalVerifyError};
pub use partial::LocalIoError;
pub use rate::MinRate;
pub use sources::SourceUrlError;
pub use state::{RollbackState, StateError};

use crate::log;

/// Everything a fetch needs besides the manifest URL.
#[derive(Debug, Clone)]
pub struct FetchOptions {
    /// Extra provider base URLs (`http://192.0.2.1:8080`); artifacts are also looked for at
    /// `<base>/{channel}/{arch}/<download_url>`, after the manifest's own location.
    pub providers: Vec<String>,
    /// Keys and threshold the manifest must satisfy.
    pub trust: TrustRoot,
    /// Channel, arch, rollback and time floors the manifest must meet (tightened by the state).
    pub expectation: Expectation,
    /// Directory the artifacts are written to (as `<filename>`).
    pub out_dir: PathBuf,
    /// Directory holding `state.json` (the cache); `None` reads and writes no state. When set,
    /// its floors (recovered if need be, [`recovery`]) are enforced and, after a complete
    /// verified release, raised and saved.
    pub state_dir: Option<PathBuf>,
    /// PEM certificates trusted for https besides the webpki roots.
    pub ca_file: Option<PathBuf>,
    /// TCP + TLS connect timeout.
    pub connect_timeout: Duration,
    /// Longest wait for response headers or the next body bytes from one source.
    pub idle_timeout: Duration,
    /// Longest time for the manifest, and for each artifact across all its sources.
    pub total_timeout: Duration,
    /// Extra tries on 5xx per source, and extra rounds over all sources.
    pub retries: u32,
    /// First retry backoff; doubles per retry, capped at 5 s.
    pub backoff: Duration,
    /// Minimum rate of an artifact source (bytes/s averaged over a window, [`rate`]); a slower
    /// source is cut and the next one resumes from the verified offset. Rate 0 turns it off.
    pub min_rate: MinRate,
    /// Print progress lines (at most one per second per artifact).
    pub progress: bool,
    /// Peer base URLs (`http://192.0.2.11:7400`): machines fetching or booted from the same
    /// release, asked for the chunks their have-map shows ([`swarm`], [`share`]). Used for v2
    /// artifacts only, and only with `swarm` set.
    pub peers: Vec<String>,
    /// Offer every verified chunk of a v2 artifact on this shelf while fetching, for peers
    /// ([`share`]); the caller serves it. `None` serves nothing (private mode).
    pub share: Option<share::Shelf>,
    /// This machine's peer base URL as its peers know it (`http://192.0.2.10:7400`: the
    /// `--serve` address, the boot stage's mDNS advert). With it, the chunks this machine asks
    /// a provider for first start at its place among the peers' URLs ([`swarm`], "Spread"),
    /// so a storm's machines take different chunks from the origin. `None`: no place.
    pub own_url: Option<String>,
    /// Called once the manifest verified, before the artifacts: starts looking for peers of
    /// that release (the boot stage's mDNS, [`crate::peers`]) and returns the growing list of
    /// their base URLs, which the swarm takes peers from while it runs. `None`: only `peers`.
    pub peer_finder: Option<PeerFinder>,
    /// Request bounds when a v2 artifact has two or more sources and its chunks are fetched
    /// from all of them at once ([`swarm`]); `None` streams every artifact from one source at a
    /// time, as v1 artifacts and single sources always are.
    pub swarm: Option<swarm::SwarmOptions>,
}

impl FetchOptions {
    /// Options with the defaults: no extra providers or state, connect 10 s, idle 30 s, total
    /// 30 min, 4 retries from 250 ms backoff, minimum rate 64 KiB/s over 10 s, progress on.
    pub fn new(trust: TrustRoot, out_dir: PathBuf) -> Self {
        FetchOptions {
            providers: Vec::new(),
            trust,
            expectation: Expectation::default(),
            out_dir,
            state_dir: None,
            ca_file: None,
            connect_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
            total_timeout: Duration::from_secs(30 * 60),
            retries: 4,
            backoff: Duration::from_millis(250),
            min_rate: MinRate::default(),
            progress: true,
            swarm: Some(swarm::SwarmOptions::default()),
            peers: Vec::new(),
            share: None,
            own_url: None,
            peer_finder: None,
        }
    }
}

/// The growing list of peer base URLs (`http://192.0.2.11:7400`) a [`PeerFinder`] reports.
pub type FoundPeers = watch::Receiver<Vec<String>>;

/// Starts a search for peers of a verified release and returns the receiving end of its
/// growing list of peer base URLs; the search ends when every receiver is dropped. See
/// [`FetchOptions::peer_finder`].
#[derive(Clone)]
pub struct PeerFinder(pub Arc<dyn Fn(&VerifiedManifest) -> FoundPeers + Send + Sync>);

impl std::fmt::Debug for PeerFinder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PeerFinder")
    }
}

impl PeerFinder {
    /// One finder over several (the boot stage's mDNS and DHT searches): for each manifest it
    /// starts every one of `finders` and reports the union of their lists, in the order the
    /// URLs arrived, without duplicates, at most `cap` URLs. A task on the current tokio
    /// runtime forwards the lists; it ends, dropping the inner receivers (which ends the inner
    /// searches), when every receiver of the union is dropped.
    pub fn union(finders: Vec<PeerFinder>, cap: usize) -> PeerFinder {
        PeerFinder(Arc::new(move |m: &VerifiedManifest| {
            let inner: Vec<FoundPeers> = finders.iter().map(|f| (f.0)(m)).collect();
            let (tx, rx) = watch::channel(Vec::new());
            tokio::spawn(forward_union(inner, tx, cap));
            rx
        }))
    }
}

/// Copies every URL new to `tx`'s list from `inner` (up to `cap`) whenever one of them changes,
/// until `tx` has no receiver. An inner search that ends (its sender dropped) leaves the rest
/// running.
async fn forward_union(mut inner: Vec<FoundPeers>, tx: watch::Sender<Vec<String>>, cap: usize) {
    loop {
        for rx in &mut inner {
            let list = rx.borrow_and_update().clone();
            tx.send_if_modified(|all| {
                let before = all.len();
                for url in list {
                    if all.len() < cap && !all.contains(&url) {
                        all.push(url);
                    }
                }
                all.len() != before
            });
        }
        if inner.is_empty() {
            tx.closed().await;
            return;
        }
        let changed =
            futures::future::select_all(inner.iter_mut().map(|rx| Box::pin(rx.changed())));
        let ended = tokio::select! {
            () = tx.closed() => return,
            (res, i, _) = changed => res.is_err().then_some(i),
        };
        if let Some(i) = ended {
            inner.swap_remove(i);
        }
    }
}

/// One artifact, verified and renamed to its final path.
#[derive(Debug)]
pub struct VerifiedFile {
    /// `<out>/<filename>`.
    pub path: PathBuf,
    /// The open file holding exactly the verified bytes, rewound to byte 0 (for
    /// `kexec_file_load` and loop mounts: use this descriptor, not the path).
    pub file: std::fs::File,
    /// Its size in bytes (= `size_bytes`).
    pub size: u64,
    /// Its SHA-256 (= the manifest's `hash`).
    pub hash: Sha256Digest,
}

/// A verified manifest and all its verified artifacts by name.
#[derive(Debug)]
pub struct FetchedRelease {
    /// The manifest as verified (its raw bytes are kept for the cache and relaying).
    pub manifest: VerifiedManifest,
    /// Every artifact of the manifest, by artifact name.
    pub artifacts: BTreeMap<String, VerifiedFile>,
    /// Source failures survived on the way (for logs and tests).
    pub failures: Vec<SourceFailure>,
    /// The rollback state could not be saved (already logged): the release is verified and
    /// usable; the floors on disk stay as last saved.
    pub state_error: Option<StateError>,
}

/// Why a fetch failed. Every variant is fail-closed: nothing unverified is left at a final path.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The HTTP client could not be built (CA file).
    #[error("cannot set up HTTP")]
    Client(#[from] ClientError),
    /// The manifest URL is unusable.
    #[error("bad manifest URL")]
    Url(#[from] SourceUrlError),
    /// The manifest could not be downloaded.
    #[error("cannot fetch manifest {url}")]
    ManifestFetch {
        /// The manifest URL.
        url: String,
        /// What went wrong.
        #[source]
        source: SourceError,
    },
    /// The manifest was downloaded but refused.
    #[error("manifest {url} refused")]
    ManifestRefused {
        /// The manifest URL.
        url: String,
        /// The verifier's reason.
        #[source]
        source: VerifyError,
    },
    /// Every source of an artifact failed.
    #[error("artifact {artifact}: all {} source(s) failed: {}", .failures.len(), list(.failures))]
    AllSourcesFailed {
        /// Artifact name.
        artifact: String,
        /// Every attempt, in order, with its reason.
        failures: Vec<SourceFailure>,
    },
    /// An artifact has no usable source URL at all.
    #[error("artifact {artifact}: no usable source URL")]
    NoSources {
        /// Artifact name.
        artifact: String,
    },
    /// The local file system failed (ENOSPC, read-only, ...).
    #[error("artifact {artifact}: local file system error")]
    Local {
        /// Artifact name.
        artifact: String,
        /// The I/O error with path and operation.
        #[source]
        source: LocalIoError,
    },
    /// The output directory could not be created.
    #[error("cannot create output directory {path}")]
    OutDir {
        /// The directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

fn list(failures: &[SourceFailure]) -> String {
    if failures.is_empty() {
        return "none tried".to_owned();
    }
    failures
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// The state of `opts.state_dir`, recovered and reported if need be ([`recovery`]).
fn load_state(opts: &FetchOptions) -> Option<RollbackState> {
    opts.state_dir
        .as_deref()
        .map(|dir| recovery::recover(dir, &opts.trust).logged())
}

/// Downloads the manifest at `url` (at most [`MAX_MANIFEST_BYTES`], 5xx retried) and verifies
/// it: trust root and threshold, `opts.expectation`, and the floors of the state in
/// `opts.state_dir` (a clock behind the time floor counts as the floor). A state that cannot
/// be read is recovered ([`recovery`]), never an error.
///
/// # Errors
/// [`FetchError::Url`], [`FetchError::Client`], [`FetchError::ManifestFetch`],
/// [`FetchError::ManifestRefused`] (including [`VerifyError::TooLarge`] for oversized bodies).
pub async fn fetch_manifest(
    url: &str,
    opts: &FetchOptions,
) -> Result<VerifiedManifest, FetchError> {
    let url = sources::parse_http_url(url)?;
    let client = client::build(opts.ca_file.as_deref(), opts.connect_timeout)?;
    let state = load_state(opts);
    manifest_with(&client, &url, opts, state.as_ref()).await
}

async fn manifest_with(
    client: &reqwest::Client,
    url: &Url,
    opts: &FetchOptions,
    state: Option<&RollbackState>,
) -> Result<VerifiedManifest, FetchError> {
    let limits = download::Limits {
        idle: opts.idle_timeout,
        deadline: tokio::time::Instant::now() + opts.total_timeout,
        total: opts.total_timeout,
        retries: opts.retries,
        backoff: opts.backoff,
        min_rate: opts.min_rate,
    };
    let bytes = download::fetch_capped(client, url, MAX_MANIFEST_BYTES, &limits)
        .await
        .map_err(|e| match e {
            download::CappedError::TooLarge(size) => FetchError::ManifestRefused {
                url: url.to_string(),
                source: VerifyError::TooLarge {
                    size,
                    limit: MAX_MANIFEST_BYTES,
                },
            },
            download::CappedError::Source(source) => FetchError::ManifestFetch {
                url: url.to_string(),
                source,
            },
        })?;
    let refused = |source| FetchError::ManifestRefused {
        url: url.to_string(),
        source,
    };
    let expectation = match state {
        Some(s) => s.tighten_time(&opts.expectation),
        None => opts.expectation.clone(),
    };
    let m = verify(&bytes, &opts.trust, Utc::now(), &expectation).map_err(refused)?;
    if let Some(s) = state {
        s.check(&m).map_err(refused)?;
    }
    Ok(m)
}

/// Fetches and verifies the manifest at `manifest_url`, prints `manifest ok ...`, then fetches
/// all its artifacts concurrently into `opts.out_dir` ([`fetch_artifacts`]). With
/// `opts.state_dir` set, the release is recorded in the rollback state once all artifacts are
/// verified. A failed save (ENOSPC, read-only cache) does not fail the fetch: it prints
/// `state save failed, ...` and lands in [`FetchedRelease::state_error`].
///
/// # Errors
/// Those of [`fetch_manifest`] and [`fetch_artifacts`].
pub async fn fetch_release(
    manifest_url: &str,
    opts: &FetchOptions,
) -> Result<FetchedRelease, FetchError> {
    let stage = log::Stage::start("manifest");
    let url = sources::parse_http_url(manifest_url)?;
    let client = client::build(opts.ca_file.as_deref(), opts.connect_timeout)?;
    let mut state = load_state(opts);
    let manifest = manifest_with(&client, &url, opts, state.as_ref()).await?;
    stage.ok(format_args!(
        "version={} signers={}",
        manifest.manifest().version,
        manifest.signers().len()
    ));
    let found = opts.peer_finder.as_ref().map(|f| (f.0)(&manifest));
    let (artifacts, failures) =
        artifacts_with(&client, &manifest, &url, opts, found.as_ref()).await?;
    drop(found);
    let mut state_error = None;
    if let (Some(s), Some(dir)) = (state.as_mut(), opts.state_dir.as_deref()) {
        s.record(&manifest);
        if let Err(e) = s.save(dir) {
            // The release is verified: a full or broken cache must not stop this boot.
            log::line(&format!(
                "state save failed, the floors on disk stay as last saved; using the verified \
                 release: {}",
                log::error_chain(&e)
            ));
            state_error = Some(e);
        }
    }
    Ok(FetchedRelease {
        manifest,
        artifacts,
        failures,
        state_error,
    })
}

/// Fetches every artifact of the verified manifest `m` (found at `manifest_url`) concurrently
/// into `opts.out_dir`, printing `fetch ok <artifact> <bytes> bytes in <N>ms` for each. If one
/// artifact fails the others are cancelled and their partial files removed.
///
/// # Errors
/// [`FetchError::AllSourcesFailed`] naming every source tried, [`FetchError::NoSources`],
/// [`FetchError::Local`] (ENOSPC ...), [`FetchError::OutDir`], [`FetchError::Client`],
/// [`FetchError::Url`].
pub async fn fetch_artifacts(
    m: &VerifiedManifest,
    manifest_url: &str,
    opts: &FetchOptions,
) -> Result<(BTreeMap<String, VerifiedFile>, Vec<SourceFailure>), FetchError> {
    let url = sources::parse_http_url(manifest_url)?;
    let client = client::build(opts.ca_file.as_deref(), opts.connect_timeout)?;
    artifacts_with(&client, m, &url, opts, None).await
}

async fn artifacts_with(
    client: &reqwest::Client,
    m: &VerifiedManifest,
    url: &Url,
    opts: &FetchOptions,
    found: Option<&FoundPeers>,
) -> Result<(BTreeMap<String, VerifiedFile>, Vec<SourceFailure>), FetchError> {
    std::fs::create_dir_all(&opts.out_dir).map_err(|source| FetchError::OutDir {
        path: opts.out_dir.clone(),
        source,
    })?;
    let jobs = m
        .manifest()
        .artifacts
        .iter()
        .map(|(name, a)| one_artifact(client, m, name, a, url, opts, found));
    let done = try_join_all(jobs).await?;
    let mut files = BTreeMap::new();
    let mut failures = Vec::new();
    for (name, file, mut f) in done {
        files.insert(name, file);
        failures.append(&mut f);
    }
    Ok((files, failures))
}

/// How long after an artifact's start a streamed download from one provider gives way to a
/// swarm download when a peer turns up (boot stage, [`FetchOptions::peer_finder`]). What was
/// streamed is fetched again chunk by chunk, so this bounds the bytes thrown away.
pub const PEER_SWITCH_WINDOW: Duration = Duration::from_secs(5);

/// Returns once the peer list is non-empty, if that happens within `window`; otherwise (or
/// when the finder is gone) never.
async fn peer_turns_up(mut rx: FoundPeers, window: Duration) {
    let seen = tokio::time::timeout(window, rx.wait_for(|list| !list.is_empty())).await;
    if !matches!(seen, Ok(Ok(_))) {
        std::future::pending::<()>().await;
    }
}

async fn one_artifact(
    client: &reqwest::Client,
    m: &VerifiedManifest,
    name: &str,
    a: &Artifact,
    url: &Url,
    opts: &FetchOptions,
    found: Option<&FoundPeers>,
) -> Result<(String, VerifiedFile, Vec<SourceFailure>), FetchError> {
    let stage = log::Stage::start("fetch");
    let candidates = sources::candidates(m.manifest(), a, url, &opts.providers);
    if candidates.is_empty() {
        return Err(FetchError::NoSources {
            artifact: name.to_owned(),
        });
    }
    let limits = download::Limits {
        idle: opts.idle_timeout,
        deadline: tokio::time::Instant::now() + opts.total_timeout,
        total: opts.total_timeout,
        retries: opts.retries,
        backoff: opts.backoff,
        min_rate: opts.min_rate,
    };
    let mut meter = progress::Meter::new(name, a.size_bytes, opts.progress);
    let peers = sources::peer_urls(m.manifest(), a, &opts.peers);
    let path = sources::peer_path(m.manifest(), a);
    let own = opts
        .own_url
        .as_ref()
        .and_then(|u| sources::peer_urls(m.manifest(), a, std::slice::from_ref(u)).pop());
    // Chunk by chunk when there is more than one source, or when the chunks are shared (`phase
    // fetch --serve`). With one provider and peers that may turn up (the boot stage), stream
    // first: the whole-file hash alone costs half the SHA-256 work of checking every chunk too
    // (a TCG boot's fetch stage: 0.7 s against 1.1-1.5 s), and a machine that boots alone never
    // needs more. A peer found within PEER_SWITCH_WINDOW turns it into a swarm download.
    let several = candidates.len() + peers.len() >= 2 || (opts.share.is_some() && found.is_none());
    let from = swarm::Sources {
        providers: &candidates,
        peers: &peers,
        share: opts.share.as_ref().map(|s| (s, path.as_str())),
        found: found.map(|rx| (rx, path.as_str())),
        own: own.as_ref(),
    };
    let dir = &opts.out_dir;
    let outcome = match (opts.swarm, a.chunking(), several, found) {
        (Some(so), Some(_), true, _) => {
            swarm::swarm_download(client, a, from, dir, limits, so, &mut meter).await
        }
        (Some(so), Some(_), false, Some(rx)) => {
            let streamed = tokio::select! {
                r = download::download(client, a, &candidates, dir, limits, &mut meter) => Some(r),
                () = peer_turns_up(rx.clone(), PEER_SWITCH_WINDOW) => None,
            };
            match streamed {
                Some(r) => r,
                None => {
                    log::line(&format!(
                        "fetch {name}: a peer turned up; fetching chunk by chunk from the \
                         provider and peers"
                    ));
                    swarm::swarm_download(client, a, from, dir, limits, so, &mut meter).await
                }
            }
        }
        _ => download::download(client, a, &candidates, dir, limits, &mut meter).await,
    }
    .map_err(|source| FetchError::Local {
        artifact: name.to_owned(),
        source,
    })?;
    match outcome {
        download::Outcome::Verified { file, failures } => {
            stage.ok(format_args!("{name} {} bytes", a.size_bytes));
            // A streamed artifact (whole-file hash checked) is offered whole too, so a machine
            // that fetched alone still serves it to peers that turn up later (a swarm download
            // offered its chunks as they came). Peers check every chunk against the signed list.
            if let (Some(shelf), Some((chunk_size, chunks))) = (&opts.share, a.chunking()) {
                if let Ok(dup) = file.try_clone() {
                    shelf.offer(
                        &path,
                        dup,
                        a.size_bytes,
                        chunk_size,
                        vec![true; chunks.len()],
                    );
                }
            }
            let vf = VerifiedFile {
                path: opts.out_dir.join(&a.filename),
                file,
                size: a.size_bytes,
                hash: a.hash,
            };
            Ok((name.to_owned(), vf, failures))
        }
        download::Outcome::Failed(failures) => Err(FetchError::AllSourcesFailed {
            artifact: name.to_owned(),
            failures,
        }),
    }
}
