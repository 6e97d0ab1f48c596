//! The PID 1 stage machine (DESIGN §1, §9; seed 003 boot flow; issue 6 §8).
//!
//! [`pid1`] runs once per boot and never returns:
//! 1. [`early`]: mounts (table in [`crate::mounts`]), kmsg, `/proc/cmdline`; prints
//!    `init stage=<boot|target> ...`, `mounts ok ...`, `cmdline ok ...`.
//! 2. In a loop, until it hands over: `modules`, then either the target stage (when
//!    `/phase/boot/manifest.json` exists: after kexec, or `phase.kexec=never`) or
//!    [`boot_stage`]: cache (by mode) -> network -> discover -> manifest + fetch -> cache write
//!    -> kexec. Every stage prints one line; a failure prints its error chain and then
//!    [`crate::onfail`] decides (retry, rescue shell, reboot, halt).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::path::{Path, PathBuf};

use phase_discovery::{DiscoverError, DiscoverOptions};
use phase_protocol::trust::TrustError;
use phase_protocol::{BootMode, ClockTrust, Expectation, TrustRoot, VerifiedManifest, VerifyError};

use crate::cache::{self, Cache, CacheError};
use crate::clock::{self, Clock};
use crate::cmdline::{self, BootParams, CmdlineError, KexecMode};
use crate::fetch::{self, FetchError, FetchOptions, RollbackState, VerifiedFile};
use crate::kexec::{self, Handoff, KexecError, Verified};
use crate::log::{self, Stage};
use crate::modules::{self, ModulesError};
use crate::mounts::{self, MountError};
use crate::net::{self, NetError};
use crate::onfail;
use crate::sys::Syscalls;

/// The trust root built into the initramfs.
pub const TRUST_FILE: &str = "/etc/phase/trust.toml";
/// `key=value` release facts of the initramfs (`channel=stable`).
pub const RELEASE_FILE: &str = "/etc/phase/release";
/// Where artifacts are downloaded (tmpfs) before kexec.
pub const FETCH_DIR: &str = "/run/phase/fetch";
/// Pause before browsing again when a discovery round found only providers that failed.
const RELOOK_PAUSE: std::time::Duration = std::time::Duration::from_secs(1);
/// The file whose presence selects the target stage.
pub const TARGET_MARKER: &str = "/phase/boot/manifest.json";

/// The entry point of the target stage (issue 7): given the parameters, it never returns unless
/// it failed. The binary passes `phase_init::target::run`.
pub type TargetStage =
    fn(&BootParams) -> Result<Infallible, Box<dyn std::error::Error + Send + Sync>>;

/// Errors of the stage machine; each names the stage that failed.
#[derive(Debug, thiserror::Error)]
pub enum BootError {
    /// Early mounts.
    #[error("mounts")]
    Mounts(#[source] Box<MountError>),
    /// The command line.
    #[error("cmdline")]
    Cmdline(#[source] Box<CmdlineError>),
    /// Kernel modules.
    #[error("modules")]
    Modules(#[source] Box<ModulesError>),
    /// The trust root could not be loaded.
    #[error("trust root {path}")]
    Trust {
        /// The trust file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: Box<TrustError>,
    },
    /// The cache could not be mounted.
    #[error("cache")]
    Cache(#[source] Box<CacheError>),
    /// The async runtime could not be built.
    #[error("tokio runtime")]
    Runtime(#[source] std::io::Error),
    /// Link or DHCP.
    #[error("network")]
    Net(#[source] Box<NetError>),
    /// Discovery found nothing usable.
    #[error("discover")]
    Discover(#[source] Box<DiscoverError>),
    /// `phase.provider` is not a usable URL.
    #[error("phase.provider={url}")]
    ProviderUrl {
        /// The value given.
        url: String,
        /// The cause.
        #[source]
        source: Box<fetch::SourceUrlError>,
    },
    /// Every provider found failed; the last error is kept.
    #[error("fetch: {tried} provider(s) failed, last {url}")]
    Fetch {
        /// Providers tried.
        tried: usize,
        /// The last manifest URL tried.
        url: String,
        /// Its error.
        #[source]
        source: Box<FetchError>,
    },
    /// kexec.
    #[error("kexec")]
    Kexec(#[source] Box<KexecError>),
    /// The target stage failed.
    #[error("target stage")]
    Target(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// Private mode with `phase.net=off` found no verified release on the boot medium.
    #[error("private mode with phase.net=off: no verified release on the boot medium (a phase-cache partition or /phase-cache on the ESP, holding phase/manifest.json and its artifacts)")]
    NoOfflineRelease,
    /// The target stage is needed but this binary has none.
    #[error("target stage not available in this build")]
    NoTarget,
}

/// What [`early`] established: the command line and the stage to run.
#[derive(Debug, Clone)]
pub struct Early {
    /// `/proc/cmdline`, trimmed.
    pub cmdline: String,
    /// Parsed `phase.*` keys.
    pub params: BootParams,
    /// `channel=` of `/etc/phase/release`, if any.
    pub release_channel: Option<String>,
    /// True when `/phase/boot/manifest.json` exists (after kexec).
    pub target: bool,
}

impl Early {
    /// The channel in effect (`phase.channel`, else the release file, else `stable`).
    pub fn channel(&self) -> &str {
        self.params.channel_or(self.release_channel.as_deref())
    }
}

/// `channel=` of a `key=value` release file.
pub fn release_channel(text: &str) -> Option<String> {
    text.lines()
        .filter_map(|l| l.trim().split_once('='))
        .find(|(k, _)| k.trim() == "channel")
        .map(|(_, v)| v.trim().trim_matches('"').to_string())
        .filter(|v| !v.is_empty())
}

/// Mounts, kmsg and the command line; prints the `init`, `mounts` and `cmdline` lines (the init
/// line first, as the contract wants, although the mode is only known after /proc is mounted).
/// Errors: [`BootError::Mounts`], [`BootError::Cmdline`] (an invalid value of a known key).
pub fn early(sys: &dyn Syscalls) -> Result<Early, BootError> {
    let st = Stage::start("mounts");
    let mounted = mounts::mount_early(sys, mounts::EARLY_MOUNTS);
    log::init_kmsg();
    let mounted = match mounted {
        Ok(m) => m,
        Err(e) => {
            log::line(&format!(
                "init stage=boot version={}",
                env!("CARGO_PKG_VERSION")
            ));
            st.failed(&e);
            return Err(BootError::Mounts(Box::new(e)));
        }
    };
    let cl = Stage::start("cmdline");
    let target = Path::new(TARGET_MARKER).exists();
    let stage_name = if target { "target" } else { "boot" };
    let parsed = cmdline::read(Path::new("/proc/cmdline"));
    let mode = parsed
        .as_ref()
        .map(|(_, p)| p.params.mode.as_str())
        .unwrap_or("unknown");
    log::line(&format!(
        "init stage={stage_name} version={} mode={mode}",
        env!("CARGO_PKG_VERSION")
    ));
    let required: Vec<&str> = mounted
        .mounted
        .iter()
        .copied()
        .filter(|m| {
            mounts::EARLY_MOUNTS
                .iter()
                .any(|s| s.required && s.target.trim_start_matches('/') == *m)
        })
        .collect();
    st.ok(format_args!("{}", required.join(",")));
    for skipped in &mounted.skipped {
        log::line(&format!("mount skipped: {skipped}"));
    }
    for fallback in &mounted.fallbacks {
        log::line(&format!("mount fallback: {fallback}"));
    }
    let (text, parsed) = match parsed {
        Ok(p) => p,
        Err(e) => {
            cl.failed(&e);
            return Err(BootError::Cmdline(Box::new(e)));
        }
    };
    log::init_tracing(parsed.params.debug);
    for key in &parsed.unknown {
        log::line(&format!("cmdline unknown key phase.{key}"));
    }
    let release_channel = std::fs::read_to_string(RELEASE_FILE)
        .ok()
        .and_then(|t| release_channel(&t));
    let early = Early {
        cmdline: text,
        params: parsed.params,
        release_channel,
        target,
    };
    cl.ok(format_args!(
        "mode={} channel={} arch={}",
        early.params.mode,
        early.channel(),
        early.params.arch
    ));
    Ok(early)
}

/// Runs a stage closure, printing `<name> ok <details>` or `<name> failed ...`.
fn staged<T, E: std::error::Error + 'static>(
    name: &'static str,
    f: impl FnOnce() -> Result<T, E>,
    details: impl FnOnce(&T) -> String,
) -> Result<T, E> {
    let st = Stage::start(name);
    match f() {
        Ok(v) => {
            st.ok(details(&v));
            Ok(v)
        }
        Err(e) => {
            st.failed(&e);
            Err(e)
        }
    }
}

/// The modules stage: the modules of `/etc/phase/modules.list` that `stage` loads (the boot
/// stage skips `@target` ones; `@device` and `@disk` ones wait for hardware), from
/// `/lib/modules/$(uname -r)`, with the module parameters of `cmdline` ([`Early::cmdline`]).
/// Errors: [`BootError::Modules`].
pub fn load_modules(
    sys: &dyn Syscalls,
    stage: modules::ModuleStage,
    cmdline: &str,
) -> Result<(), BootError> {
    staged(
        "modules",
        || {
            let wanted = modules::read_list(Path::new(modules::MODULES_LIST), stage)?;
            modules::load(sys, &modules::modules_dir(), &wanted, cmdline)
        },
        |l| match &l.no_modules_for_kernel {
            Some(dir) => format!("0 loaded (no {}: drivers must be built in)", dir.display()),
            None => {
                let mut line = format!("{} loaded", l.loaded.len() + l.already.len());
                if !l.no_device.is_empty() {
                    line.push_str(&format!(", no device for {}", l.no_device.join(",")));
                }
                if !l.no_disk.is_empty() {
                    line.push_str(&format!(", no disk for {}", l.no_disk.join(",")));
                }
                line
            }
        },
    )
    .map(|_| ())
    .map_err(|e| BootError::Modules(Box::new(e)))
}

/// The manifest URL for `phase.provider=URL`: the URL itself when it ends in `.json`, else
/// `URL/{channel}/{arch}/manifest.json`. Errors: [`BootError::ProviderUrl`].
pub fn provider_manifest_url(url: &str, channel: &str, arch: &str) -> Result<String, BootError> {
    let perr = |source| BootError::ProviderUrl {
        url: url.to_string(),
        source: Box::new(source),
    };
    if url.ends_with(".json") {
        return fetch::sources::parse_http_url(url)
            .map(|u| u.to_string())
            .map_err(perr);
    }
    fetch::sources::provider_manifest_url(url, channel, arch)
        .map(|u| u.to_string())
        .map_err(perr)
}

/// A release ready for kexec: the verified manifest and its verified open files.
#[derive(Debug)]
pub struct Release {
    /// The verified manifest.
    pub manifest: VerifiedManifest,
    /// Verified artifacts by name.
    pub artifacts: BTreeMap<String, VerifiedFile>,
}

/// Local mode: the cached release, verified again (signature, expiry, rollback floors, sizes
/// and hashes). `None` (after a `discover failed` note) when absent or refused.
fn release_from_cache(
    c: &Cache,
    trust: &TrustRoot,
    state: &RollbackState,
    base: &Expectation,
) -> Option<Release> {
    #[derive(Debug, thiserror::Error)]
    enum CacheRead {
        #[error("reading {0}")]
        Io(PathBuf, #[source] std::io::Error),
        #[error("cached manifest refused")]
        Verify(#[source] VerifyError),
        #[error("cached artifacts refused")]
        Artifacts(#[source] fetch::LocalVerifyError),
    }
    let st = Stage::start("discover");
    let (mut manifest_ms, mut artifacts_ms) = (0, 0);
    let res = (|| {
        let path = c.manifest_path();
        let bytes = std::fs::read(&path).map_err(|e| CacheRead::Io(path.clone(), e))?;
        let exp = state.expectation_for(
            base.channel.as_deref().unwrap_or("stable"),
            base.arch.map(|a| a.as_str()).unwrap_or("x86_64"),
            base,
        );
        let t = std::time::Instant::now();
        let m = phase_protocol::verify(&bytes, trust, chrono::Utc::now(), &exp)
            .map_err(CacheRead::Verify)?;
        state.check(&m).map_err(CacheRead::Verify)?;
        manifest_ms = t.elapsed().as_millis();
        let t = std::time::Instant::now();
        // Hashed while copied into RAM: the disk is read once, and what kexec hands on is
        // what was hashed (crate::custody; docs/security.md).
        std::fs::create_dir_all(FETCH_DIR).map_err(|e| CacheRead::Io(FETCH_DIR.into(), e))?;
        let artifacts = fetch::copy_verified_artifacts(&m, &c.dir(), Path::new(FETCH_DIR))
            .map_err(CacheRead::Artifacts)?;
        artifacts_ms = t.elapsed().as_millis();
        Ok::<_, CacheRead>(Release {
            manifest: m,
            artifacts,
        })
    })();
    match res {
        Ok(r) => {
            st.ok(format_args!("cache {}", c.manifest_path().display()));
            log::line(&format!(
                "manifest ok version={} signers={} in {manifest_ms}ms",
                r.manifest.manifest().version,
                r.manifest.signers().len()
            ));
            // Same per-artifact lines as a download; the hashes were checked in one pass.
            for (name, v) in &r.artifacts {
                log::line(&format!(
                    "fetch ok {name} {} bytes in {artifacts_ms}ms (cache, all artifacts verified together)",
                    v.size
                ));
            }
            Some(r)
        }
        Err(e) => {
            log::line(&format!(
                "cache not usable, trying the network: {}",
                log::error_chain(&e)
            ));
            None
        }
    }
}

/// The boot stage after modules: returns only on failure (kexec does not return; with
/// `phase.kexec=never` it runs `target`).
pub fn boot_stage(
    sys: &dyn Syscalls,
    early: &Early,
    target: Option<TargetStage>,
) -> Result<Infallible, BootError> {
    let p = &early.params;
    let trust = TrustRoot::load(Path::new(TRUST_FILE)).map_err(|source| BootError::Trust {
        path: TRUST_FILE.into(),
        source: Box::new(source),
    })?;
    let base = Expectation {
        channel: Some(early.channel().to_string()),
        arch: Some(p.arch),
        ..Expectation::default()
    };
    let policy = cache::CachePolicy::for_boot(p.mode, p.net);
    let offline = p.mode == BootMode::Private && !p.net;
    let cache = if policy.mount {
        staged(
            "cache-mount",
            || cache::open_with(sys, policy, Path::new("/sys/class/block")),
            |c| match c {
                Some(c) => format!(
                    "mounted {}{}",
                    c.root.display(),
                    if c.writable { "" } else { " (ro)" }
                ),
                None => "none found".to_string(),
            },
        )
        .unwrap_or(None)
    } else {
        None
    };
    // The cache's rollback state, read once (rebuilt from the signed cached manifest when
    // state.json is lost): its time floor bounds the clock, its floors the releases accepted.
    let state = cache
        .as_ref()
        .map(|c| fetch::recovery::recover(&c.dir(), &trust).logged())
        .unwrap_or_else(RollbackState::empty);
    let mut clock = clock::settle(sys, state.time_floor);
    let base = Expectation {
        clock: clock.trust,
        ..base
    };
    let cached = match (&cache, p.mode) {
        (Some(c), BootMode::Local) => release_from_cache(c, &trust, &state, &base),
        (Some(c), BootMode::Private) if offline => release_from_cache(c, &trust, &state, &base),
        _ => None,
    };
    if offline {
        log::line("net off (phase.net=off): no interface brought up; only the release on the boot medium can boot");
    }
    // The DHCP lease of this stage, handed to the target stage with the initrd.
    let mut lease: Option<net::Lease> = None;
    let release = match cached {
        Some(r) => r,
        None if offline => return Err(BootError::NoOfflineRelease),
        None => {
            // Dropped before the handoff: the target stage wants no extra threads around.
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(BootError::Runtime)?;
            let (r, l) = rt.block_on(network_release(
                sys,
                &mut clock,
                early,
                &trust,
                &base,
                cache.as_ref(),
                &state,
            ))?;
            lease = Some(l);
            r
        }
    };
    if clock.trust == ClockTrust::BelowFloor {
        // Signed evidence: the verified manifest proves the time is at least its created_at.
        clock.advance(
            sys,
            release.manifest.checked_at(),
            clock::Source::Signed,
            false,
        );
    }
    if let (Some(c), true) = (&cache, p.mode.writes_cache()) {
        let arts: Vec<(String, Verified<'_>)> = release
            .manifest
            .manifest()
            .artifacts
            .iter()
            .filter_map(|(name, a)| {
                release.artifacts.get(name).map(|v| {
                    (
                        a.filename.clone(),
                        Verified {
                            file: &v.file,
                            size: v.size,
                        },
                    )
                })
            })
            .collect();
        // A cache that cannot be written does not stop the boot: the release is verified.
        let _ = staged(
            "cache",
            || cache::write_release(c, p.mode, release.manifest.raw(), &arts),
            |d| format!("wrote {}", d.display()),
        );
    }
    if let Some(c) = &cache {
        sys.sync();
        let _ = sys.unmount(&c.mount_point);
    }
    handoff(sys, early, release, lease.as_ref(), target)
}

/// Brings the network up, discovers and fetches the release; returns it with the DHCP lease.
async fn network_release(
    sys: &dyn Syscalls,
    clock: &mut Clock,
    early: &Early,
    trust: &TrustRoot,
    base: &Expectation,
    cache: Option<&Cache>,
    state: &RollbackState,
) -> Result<(Release, net::Lease), BootError> {
    let p = &early.params;
    let lease = net::bring_up(p.iface.as_deref(), p.timeout)
        .await
        .map_err(|e| BootError::Net(Box::new(e)))?;
    sntp_clock(sys, clock, &lease.granted.ntp).await;
    let mut opts = FetchOptions::new(trust.clone(), FETCH_DIR.into());
    opts.expectation = Expectation {
        clock: clock.trust,
        ..base.clone()
    };
    opts.connect_timeout = p.timeout.min(opts.connect_timeout);
    opts.min_rate.bytes_per_sec = p.min_rate;
    // Machines booting the same release at once take chunks from each other (issue 19 §3).
    // Dropped when this function returns, after the fetch and before the cache write and
    // kexec: the server stops, and the mDNS daemons with the runtime's tasks.
    let _peers = if p.mode.serves_peers() && p.peers {
        match crate::peers::BootPeers::start(lease.granted.addr, &lease.iface).await {
            Ok(peers) => {
                opts.share = Some(peers.shelf());
                opts.own_url = Some(peers.url().to_owned());
                // In a mode that looks in the DHT, peers are looked for there too.
                let dht = (p
                    .mode
                    .sources()
                    .contains(&phase_protocol::mode::Source::Dht)
                    && !p.bootstrap.is_empty())
                .then(|| crate::peers::DhtPeering {
                    bootstrap: p.bootstrap.clone(),
                    clock_trusted: clock.trust == ClockTrust::Trusted,
                    start_after: crate::peers::DHT_PEER_DELAY,
                });
                opts.peer_finder = Some(peers.finder(dht));
                Some(peers)
            }
            Err(e) => {
                log::line(&format!(
                    "peers: cannot listen on {}:{}, fetching without peers: {e}",
                    lease.granted.addr,
                    crate::peers::PEER_PORT
                ));
                None
            }
        }
    } else {
        None
    };
    match (cache, p.mode) {
        (Some(c), BootMode::Internet) if c.writable => opts.state_dir = Some(c.dir()),
        (Some(_), BootMode::Local) => {
            // Read-only cache: enforce its floors (recovered if need be) without saving.
            opts.expectation =
                state.expectation_for(early.channel(), p.arch.as_str(), &opts.expectation);
        }
        _ => {}
    }
    let mut tried: Vec<String> = Vec::new();
    let mut last: Option<(String, FetchError)> = None;
    if let Some(url) = &p.provider {
        let st = Stage::start("discover");
        let url = match provider_manifest_url(url, early.channel(), p.arch.as_str()) {
            Ok(u) => u,
            Err(e) => {
                st.failed(&e);
                return Err(e);
            }
        };
        st.ok(format_args!("cmdline {url}"));
        let found = vec![("cmdline".to_string(), url)];
        if let Some(r) = fetch_first(&found, &opts, &mut tried, &mut last).await {
            return Ok((r, lease));
        }
    } else {
        // Each round returns as soon as one provider not yet tried answers (fast boot). The
        // unauthenticated advertised version only orders candidates: a provider whose release
        // fails to verify is dropped and discovery keeps browsing for the next one until
        // phase.timeout (issue 15 §4), so a liar with a higher version cannot win by answering
        // first. Each round asks for one more provider than were tried, so memory stays bounded.
        let deadline = std::time::Instant::now() + p.timeout;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                log::line(&format!(
                    "discover: phase.timeout of {}s reached after trying {} provider(s)",
                    p.timeout.as_secs(),
                    tried.len()
                ));
                break;
            }
            let st = Stage::start("discover");
            let mut o = discover_options(early, cache, tried.len() + 1);
            o.clock_trusted = clock.trust == ClockTrust::Trusted;
            o.timeout = left;
            let mut res = phase_discovery::discover(&o).await;
            if let Err(DiscoverError::Identity(e)) = &res {
                // A broken identity file must not stop the boot: use a fresh key this time.
                log::line(&format!(
                    "discover: stable identity unusable, using a fresh key: {}",
                    log::error_chain(e)
                ));
                o.ephemeral = true;
                o.identity = None;
                res = phase_discovery::discover(&o).await;
            }
            let found = match res {
                Ok(found) => found
                    .into_iter()
                    .filter(|f| !tried.contains(&f.manifest_url))
                    .map(|f| (f.source.as_str().to_string(), f.manifest_url))
                    .collect::<Vec<_>>(),
                Err(e) => {
                    st.failed(&e);
                    if last.is_some() {
                        break;
                    }
                    return Err(BootError::Discover(Box::new(e)));
                }
            };
            match found.first() {
                Some((src, url)) => st.ok(format_args!("{src} {url}")),
                None => {
                    // Only providers that already failed answered: look again shortly (a
                    // lookup that ends early must not turn this into a busy loop).
                    st.ok("no provider besides those that failed");
                    tokio::time::sleep(RELOOK_PAUSE.min(left)).await;
                    continue;
                }
            }
            if let Some(r) = fetch_first(&found, &opts, &mut tried, &mut last).await {
                return Ok((r, lease));
            }
        }
    }
    match last {
        Some((url, source)) => Err(BootError::Fetch {
            tried: tried.len(),
            url,
            source: Box::new(source),
        }),
        None => Err(BootError::Discover(Box::new(DiscoverError::NothingEnabled))),
    }
}

/// Time allowed for one SNTP server, and servers asked at most (DHCP option 42 may list many).
const SNTP_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(1500);
const SNTP_SERVERS: usize = 3;

/// Asks the lease's NTP servers (option 42) for the time, one after another, until one answers
/// (each bounded by [`SNTP_TIMEOUT`]), and moves `clock` forward with the answer; prints an
/// `sntp` stage line. Nothing happens when the lease names no server.
async fn sntp_clock(sys: &dyn Syscalls, clock: &mut Clock, servers: &[std::net::Ipv4Addr]) {
    if servers.is_empty() {
        return;
    }
    let st = Stage::start("sntp");
    let mut errors = Vec::new();
    for server in servers.iter().take(SNTP_SERVERS) {
        match net::sntp::query(*server, SNTP_TIMEOUT, clock::build_floor()).await {
            Ok(t) => {
                clock.advance(sys, t, clock::Source::Sntp(*server), true);
                if clock.trust == ClockTrust::Trusted {
                    st.ok(format_args!("{server} {}", t.to_rfc3339()));
                    return;
                }
                errors.push(format!("{server}: {} is below the floor", t.to_rfc3339()));
            }
            Err(e) => errors.push(log::error_chain(&e)),
        }
    }
    log::line(&format!("sntp failed: {}", errors.join("; ")));
}

/// Discovery options for this boot: the mode's mechanisms, `phase.bootstrap`, `phase.timeout`,
/// `phase.iface`, the identity policy of the mode, and `want` providers.
fn discover_options(early: &Early, cache: Option<&Cache>, want: usize) -> DiscoverOptions {
    let p = &early.params;
    let sources = p.mode.sources();
    let mut o = DiscoverOptions::new(early.channel(), p.arch);
    o.mdns = sources.contains(&phase_protocol::mode::Source::Mdns);
    o.dht = sources.contains(&phase_protocol::mode::Source::Dht);
    o.bootstrap = p.bootstrap.clone();
    o.timeout = p.timeout;
    o.ephemeral = p.mode.ephemeral_identity();
    o.identity = if o.ephemeral {
        None
    } else {
        // Stable key: created on a writable cache, read from a read-only one if present.
        cache
            .map(Cache::identity_path)
            .filter(|k| cache.is_some_and(|c| c.writable) || k.exists())
    };
    o.iface = p.iface.clone();
    o.want = want;
    o
}

/// Fetches from each of `found` in order until one release verifies; records what was tried
/// and the last error.
async fn fetch_first(
    found: &[(String, String)],
    opts: &FetchOptions,
    tried: &mut Vec<String>,
    last: &mut Option<(String, FetchError)>,
) -> Option<Release> {
    for (_, url) in found {
        if !tried.is_empty() {
            log::line(&format!("trying next provider {url}"));
        }
        tried.push(url.clone());
        let st = Stage::start("fetch");
        match fetch::fetch_release(url, opts).await {
            Ok(r) => {
                return Some(Release {
                    manifest: r.manifest,
                    artifacts: r.artifacts,
                })
            }
            Err(e) => {
                st.failed(&e);
                *last = Some((url.clone(), e));
            }
        }
    }
    None
}

/// kexec into the verified release, or (`phase.kexec=never`) write `/phase/boot` and run the
/// target stage in this process.
fn handoff(
    sys: &dyn Syscalls,
    early: &Early,
    r: Release,
    lease: Option<&net::Lease>,
    target: Option<TargetStage>,
) -> Result<Infallible, BootError> {
    let Release {
        manifest,
        artifacts,
    } = r;
    // The download's descriptors are writable, which kexec_file_load refuses (ETXTBSY): reopen
    // each verified file read-only (same inode) and close the writable descriptors.
    let mut files: Vec<(&'static str, std::fs::File, u64)> = Vec::new();
    // What this stage hashed, for the target stage, which does not hash again (crate::custody).
    let custody = crate::custody::Record {
        entries: artifacts
            .iter()
            .map(|(name, v)| (name.clone(), (v.size, v.hash)))
            .collect(),
    }
    .render();
    for name in kexec::BOOT_ARTIFACTS {
        if let Some(v) = artifacts.get(name) {
            let ro = kexec::reopen_read_only(&v.file).map_err(|e| BootError::Kexec(Box::new(e)))?;
            files.push((name, ro, v.size));
        }
    }
    drop(artifacts);
    let artifacts: Vec<(&'static str, Verified<'_>)> = files
        .iter()
        .map(|(n, f, size)| {
            (
                *n,
                Verified {
                    file: f,
                    size: *size,
                },
            )
        })
        .collect();
    // The lease and the MAC it was granted to, for the target stage (net::handover).
    let lease_json = lease.and_then(|l| {
        let link = net::link::read_link(Path::new(net::link::SYS_CLASS_NET), &l.iface).ok()?;
        Some(net::handover::HandedLease::new(l, &link.mac, std::time::Instant::now()).to_json())
    });
    let h = Handoff {
        manifest_raw: manifest.raw(),
        artifacts,
        custody: &custody,
        lease: lease_json.as_deref(),
    };
    let st = Stage::start("kexec");
    if early.params.kexec == KexecMode::Never {
        if let Err(e) = kexec::write_boot_dir(Path::new(kexec::BOOT_DIR), &h) {
            st.failed(&e);
            return Err(BootError::Kexec(Box::new(e)));
        }
        st.ok("skipped (phase.kexec=never), wrote /phase/boot");
        // The boot stage skipped the `@target` modules (rootfs mount, power button).
        load_modules(sys, modules::ModuleStage::Target, &early.cmdline)?;
        let run = target.ok_or(BootError::NoTarget)?;
        return run(&early.params).map_err(BootError::Target);
    }
    let res = (|| {
        let kernel = h.get("kernel")?;
        let t = std::time::Instant::now();
        let (initrd, initrd_size) = kexec::initrd_memfd(&h)?;
        let compose_ms = t.elapsed().as_millis();
        let cmdline = kexec::compose_cmdline(&manifest.manifest().cmdline, &early.cmdline);
        let (kernel_file, kernel_size) = kexec::kernel_for_load(kernel)?;
        let t = std::time::Instant::now();
        let path = kexec::load(sys, &kernel_file, &initrd, &cmdline)?;
        let load_ms = t.elapsed().as_millis();
        Ok::<_, KexecError>((kernel_size, initrd_size, path, compose_ms, load_ms))
    })();
    match res {
        Ok((k, i, path, compose_ms, load_ms)) => st.ok(format_args!(
            "loaded kernel={k} initrd={i} by {path} (initrd composed in {compose_ms}ms, loaded in {load_ms}ms)"
        )),
        Err(e) => {
            st.failed(&e);
            return Err(BootError::Kexec(Box::new(e)));
        }
    }
    kexec::exec(sys).map_err(|e| BootError::Kexec(Box::new(e)))
}

/// Whether `err` is the target stage refusing the release handed over in `/phase/boot` (its
/// re-verification failed): retrying the target stage would fail the same way forever
/// (issue 15 §3), so the next attempt runs the boot stage.
fn handed_over_release_refused(err: &BootError) -> bool {
    match err {
        BootError::Target(t) => matches!(
            t.downcast_ref::<crate::target::TargetError>(),
            Some(crate::target::TargetError::Verify(_))
        ),
        _ => false,
    }
}

/// Whether `err` happened in the target stage after `switch_root`.
fn after_switch_root(err: &BootError) -> bool {
    match err {
        BootError::Target(t) => matches!(
            t.downcast_ref::<crate::target::TargetError>(),
            Some(crate::target::TargetError::AfterSwitchRoot(_))
        ),
        _ => false,
    }
}

/// PID 1: [`early`], then the stages in a loop governed by `phase.onfail`. Never returns.
pub fn pid1(sys: &'static (dyn Syscalls + Sync), target: Option<TargetStage>) -> ! {
    let mut attempt: u32 = 0;
    let mut early_done: Option<Early> = None;
    loop {
        attempt = attempt.saturating_add(1);
        let res = (|| {
            let e = match &early_done {
                Some(e) => e.clone(),
                None => {
                    let e = early(sys)?;
                    onfail::set_panic_policy(e.params.onfail());
                    early_done = Some(e.clone());
                    e
                }
            };
            let stage = match e.target {
                true => modules::ModuleStage::Target,
                false => modules::ModuleStage::Boot,
            };
            load_modules(sys, stage, &e.cmdline)?;
            if e.target {
                let run = target.ok_or(BootError::NoTarget)?;
                return run(&e.params).map_err(BootError::Target);
            }
            boot_stage(sys, &e, target)
        })();
        let Err(err) = res;
        if after_switch_root(&err) {
            // The initramfs is freed: nothing can run again in place. A rescue shell, then a
            // reboot (or the reboot/poweroff the policy names).
            let policy = early_done
                .as_ref()
                .map_or(cmdline::OnFail::Rescue, |e| e.params.onfail());
            log::line(&format!(
                "target failed after switch_root: {}",
                log::error_chain(&err)
            ));
            let action = onfail::decide_after_switch_root(policy, onfail::find_shell());
            loop {
                onfail::apply(sys, policy, &action);
                if matches!(action, onfail::Action::Shell(_)) {
                    log::line("rescue shell exited; rebooting");
                    onfail::apply(sys, policy, &onfail::Action::Reboot);
                }
            }
        }
        if let Some(e) = early_done.as_mut().filter(|e| e.target) {
            if handed_over_release_refused(&err) {
                // Retrying the same refused /phase/boot would loop forever: fetch again.
                log::line("target: the handed-over release was refused; the next attempt runs the boot stage and fetches again");
                e.target = false;
            }
        }
        let policy = early_done
            .as_ref()
            .map_or(cmdline::OnFail::Rescue, |e| e.params.onfail());
        log::line(&format!(
            "boot failed (attempt {attempt}): {}",
            log::error_chain(&err)
        ));
        onfail::apply(
            sys,
            policy,
            &onfail::decide(policy, attempt, onfail::find_shell()),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_handover_sends_the_retry_to_the_boot_stage_and_nothing_else_does() {
        let refused =
            crate::target::TargetError::Verify(crate::target::verify::ReverifyError::Read {
                path: "/phase/boot/manifest.json".into(),
                source: std::io::Error::from(std::io::ErrorKind::NotFound),
            });
        assert!(handed_over_release_refused(&BootError::Target(Box::new(
            refused
        ))));
        let other = crate::target::TargetError::Reboot(crate::sys::SysError::new(
            "reboot",
            std::io::Error::from(std::io::ErrorKind::Other),
        ));
        assert!(!handed_over_release_refused(&BootError::Target(Box::new(
            other
        ))));
        assert!(!handed_over_release_refused(&BootError::NoTarget));
    }

    #[test]
    fn only_errors_marked_after_switch_root_take_the_post_switch_path() {
        let exec = crate::target::TargetError::Exec {
            path: "/sbin/missing".into(),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        };
        let after = crate::target::TargetError::AfterSwitchRoot(Box::new(exec));
        assert!(after_switch_root(&BootError::Target(Box::new(after))));
        let before = crate::target::TargetError::NoServices { dir: "/x".into() };
        assert!(!after_switch_root(&BootError::Target(Box::new(before))));
        assert!(!after_switch_root(&BootError::NoTarget));
    }

    #[test]
    fn release_channel_is_read_from_key_value_text() {
        assert_eq!(
            release_channel("version=0.1.0\nchannel=stable\n").as_deref(),
            Some("stable")
        );
        assert_eq!(
            release_channel("channel = \"beta\"").as_deref(),
            Some("beta")
        );
        assert_eq!(release_channel("version=1\n"), None);
        assert_eq!(release_channel("channel=\n"), None);
    }

    #[test]
    fn provider_url_gets_channel_and_arch_unless_it_is_a_manifest() {
        assert_eq!(
            provider_manifest_url("http://192.0.2.1:8080", "stable", "x86_64").unwrap(),
            "http://192.0.2.1:8080/stable/x86_64/manifest.json"
        );
        assert_eq!(
            provider_manifest_url("http://192.0.2.1:8080/", "beta", "aarch64").unwrap(),
            "http://192.0.2.1:8080/beta/aarch64/manifest.json"
        );
        assert_eq!(
            provider_manifest_url("http://192.0.2.1:8080/x/manifest.json", "stable", "x86_64")
                .unwrap(),
            "http://192.0.2.1:8080/x/manifest.json"
        );
    }

    #[test]
    fn provider_url_that_is_not_http_is_refused() {
        let e = provider_manifest_url("ftp://192.0.2.1/", "stable", "x86_64").unwrap_err();
        assert!(
            log::error_chain(&e).contains("phase.provider=ftp://192.0.2.1/"),
            "{e}"
        );
    }

    mod cached {
        use super::super::*;
        use phase_protocol::{signing, Sha256Digest};

        struct Fixture {
            _dir: tempfile::TempDir,
            cache: Cache,
            trust: TrustRoot,
        }

        /// A cache dir holding a release signed by a fresh key: kernel + initramfs.
        fn fixture(version: &str) -> Fixture {
            let key = signing::generate_key();
            let trust = TrustRoot::new([key.verifying_key()], 1).unwrap();
            let dir = tempfile::tempdir().unwrap();
            let cache = Cache {
                root: dir.path().into(),
                mount_point: dir.path().into(),
                writable: false,
            };
            std::fs::create_dir_all(cache.dir()).unwrap();
            let mut arts = serde_json::Map::new();
            for (name, bytes) in [("kernel", &b"KERNEL"[..]), ("initramfs", &b"INITRAMFS"[..])] {
                std::fs::write(cache.dir().join(name), bytes).unwrap();
                arts.insert(
                    name.into(),
                    serde_json::json!({"filename": name, "size_bytes": bytes.len(),
                        "hash": Sha256Digest::of(bytes).to_string(), "download_url": name, "urls": []}),
                );
            }
            let now = chrono::Utc::now();
            let mut doc = serde_json::json!({
                "manifest_version": 1, "version": version, "channel": "stable", "arch": "x86_64",
                "created_at": (now - chrono::Duration::hours(1)).to_rfc3339(),
                "expires_at": (now + chrono::Duration::days(1)).to_rfc3339(),
                "cmdline": "console=ttyS0", "artifacts": arts,
            });
            signing::sign_document(&mut doc, &key, now).unwrap();
            std::fs::write(cache.manifest_path(), serde_json::to_vec(&doc).unwrap()).unwrap();
            Fixture {
                _dir: dir,
                cache,
                trust,
            }
        }

        /// [`release_from_cache`] with the cache's state recovered as [`boot_stage`] does.
        fn from_cache(c: &Cache, trust: &TrustRoot, e: &Expectation) -> Option<Release> {
            let state = fetch::recovery::recover(&c.dir(), trust).logged();
            release_from_cache(c, trust, &state, e)
        }

        fn base() -> Expectation {
            Expectation {
                channel: Some("stable".into()),
                arch: Some(phase_protocol::Arch::X86_64),
                ..Expectation::default()
            }
        }

        #[test]
        fn verified_cache_is_used_in_local_mode() {
            let f = fixture("1.2.0");
            let r = from_cache(&f.cache, &f.trust, &base()).expect("cache accepted");
            assert_eq!(r.artifacts.len(), 2);
            assert_eq!(r.manifest.manifest().version.to_string(), "1.2.0");
        }

        #[test]
        fn tampered_cached_kernel_is_refused() {
            let f = fixture("1.2.0");
            std::fs::write(f.cache.dir().join("kernel"), b"KERNEX").unwrap();
            assert!(from_cache(&f.cache, &f.trust, &base()).is_none());
        }

        #[test]
        fn cached_manifest_signed_by_unknown_key_is_refused() {
            let f = fixture("1.2.0");
            let other = TrustRoot::new([signing::generate_key().verifying_key()], 1).unwrap();
            assert!(from_cache(&f.cache, &other, &base()).is_none());
        }

        #[test]
        fn cached_release_for_another_channel_is_refused() {
            let f = fixture("1.2.0");
            let e = Expectation {
                channel: Some("beta".into()),
                ..base()
            };
            assert!(from_cache(&f.cache, &f.trust, &e).is_none());
        }

        #[test]
        fn cached_release_below_the_rollback_floor_is_refused() {
            let f = fixture("1.2.0");
            let e = Expectation {
                min_version: Some(semver::Version::new(2, 0, 0)),
                ..base()
            };
            assert!(from_cache(&f.cache, &f.trust, &e).is_none());
        }

        #[test]
        fn cached_release_boots_despite_a_corrupt_state_file() {
            let f = fixture("1.2.0");
            std::fs::write(f.cache.dir().join("state.json"), b"{\"format\":1,").unwrap();
            assert!(from_cache(&f.cache, &f.trust, &base()).is_some());
        }

        #[test]
        fn backup_state_floor_still_refuses_an_older_cached_release() {
            let f = fixture("1.2.0");
            let mut s = crate::fetch::RollbackState::empty();
            s.releases.insert(
                "stable/x86_64".into(),
                fetch::state::AcceptedRelease {
                    version: semver::Version::new(2, 0, 0),
                    created_at: chrono::Utc::now() - chrono::Duration::hours(2),
                },
            );
            s.save(&f.cache.dir()).unwrap();
            std::fs::write(f.cache.dir().join("state.json"), b"").unwrap();
            assert!(from_cache(&f.cache, &f.trust, &base()).is_none());
        }
    }
}
