//! Discovery shared by `phase-init`, the `phase` tool and `plasmd` (DESIGN §6, seeds 002 and 004):
//! mDNS advertisement and browsing of `_phase-image._tcp.local.` ([`mdns`]), and Kademlia DHT
//! publication and lookup of `/phase/{channel}/{arch}/manifest` records ([`dht`]).
//!
//! Boot flow: after DHCP the init calls [`discover`] (mDNS and/or DHT by boot mode) and gets
//! manifest URLs, best first; it then fetches and verifies the manifest. A record only points at
//! a manifest URL: the manifest it leads to is always verified by `phase_protocol::verify`, so a
//! poisoned advertisement costs time, not trust.
#![forbid(unsafe_code)]

pub mod dht;
pub mod identity;
pub mod mdns;

use std::path::PathBuf;
use std::time::Duration;

use phase_protocol::Arch;

pub use dht::{DhtConfig, DhtError, DhtNode, FoundPeer, Publication, Role};
pub use mdns::{MdnsAdvertiser, MdnsBrowser, MdnsError, MdnsEvent};

/// Sends `tracing` events to stderr, filtered by `RUST_LOG` in `target=level` form (e.g.
/// `warn,phase_discovery=debug`; [`tracing_subscriber::filter::Targets`], which needs no regex
/// engine in the initramfs binaries that link this crate); errors only when `RUST_LOG` is unset
/// or does not parse. For the probe tool and tests; a second call does nothing.
pub fn log_to_stderr_from_env() {
    use tracing_subscriber::filter::Targets;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|s| s.parse::<Targets>().ok())
        .unwrap_or_else(|| Targets::new().with_default(tracing::Level::ERROR));
    let _ = tracing_subscriber::registry()
        .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
        .with(filter)
        .try_init();
}

/// Where a provider was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FoundSource {
    /// mDNS on the local network.
    Mdns,
    /// The Kademlia DHT.
    Dht,
}

impl FoundSource {
    /// `mdns` or `dht`, as the console stage line prints it.
    pub fn as_str(self) -> &'static str {
        match self {
            FoundSource::Mdns => "mdns",
            FoundSource::Dht => "dht",
        }
    }
}

impl std::fmt::Display for FoundSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One provider found: where its manifest is. Not trusted: the manifest must be verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// Absolute http(s) URL of the manifest.
    pub manifest_url: String,
    /// How it was found.
    pub source: FoundSource,
    /// The version the advertisement claims (informational; the manifest decides).
    pub version: String,
    /// The provider: libp2p peer id (DHT) or DNS-SD instance full name (mDNS).
    pub provider: Option<String>,
}

/// What [`discover`] looks for and how.
#[derive(Debug, Clone)]
pub struct DiscoverOptions {
    /// Channel wanted (`stable`).
    pub channel: String,
    /// Architecture wanted.
    pub arch: Arch,
    /// Browse mDNS.
    pub mdns: bool,
    /// Look up the DHT.
    pub dht: bool,
    /// DHT bootstrap multiaddrs, each ending in `/p2p/<peer id>`.
    pub bootstrap: Vec<String>,
    /// Overall time limit of the discovery.
    pub timeout: Duration,
    /// Private mode: a fresh key (ignores `identity`); the DHT node is always a Kademlia client.
    pub ephemeral: bool,
    /// Stable libp2p key file (created 0600 if absent); `None` = fresh key.
    pub identity: Option<PathBuf>,
    /// Return as soon as this many providers are found (1 for boot; more for the CLI).
    pub want: usize,
    /// Browse mDNS on this interface only (e.g. `eth0`).
    pub iface: Option<String>,
    /// Whether this host's clock can judge DHT records' TTL and `created_at` (false when the
    /// init knows its clock is below its floors; issue 15 §3).
    pub clock_trusted: bool,
    /// With both mechanisms on, how long the DHT lookup waits for mDNS before it starts (it
    /// starts at once when mDNS ends sooner). [`MDNS_HEAD_START`] by default; zero races both
    /// from the start.
    pub mdns_head_start: Duration,
}

/// The default [`DiscoverOptions::mdns_head_start`]: 50 ms. A provider on the LAN answers the
/// mDNS query within a few ms (31-47 ms from the browse's start, daemon start included, in the
/// QEMU boots); a DHT client started at the same time spends that time building its swarm and
/// handshaking with the bootstrap peer on the same core, which delayed the mDNS answer to
/// 100-110 ms in internet mode. The LAN is preferred anyway ([`sort_best_first`]); a DHT lookup
/// over the internet takes hundreds of ms, to which this adds at most 50 ms (the same trade as
/// Happy Eyeballs' resolution delay, RFC 8305 §3).
pub const MDNS_HEAD_START: Duration = Duration::from_millis(50);

impl DiscoverOptions {
    /// Both mechanisms on, no bootstrap, 10 s, ephemeral, want 1, every interface, the DHT after
    /// [`MDNS_HEAD_START`].
    pub fn new(channel: impl Into<String>, arch: Arch) -> Self {
        DiscoverOptions {
            channel: channel.into(),
            arch,
            mdns: true,
            dht: true,
            bootstrap: Vec::new(),
            timeout: Duration::from_secs(10),
            ephemeral: true,
            identity: None,
            want: 1,
            iface: None,
            clock_trusted: true,
            mdns_head_start: MDNS_HEAD_START,
        }
    }
}

/// Errors of [`discover`].
#[derive(Debug, thiserror::Error)]
pub enum DiscoverError {
    /// Neither mDNS nor the DHT was enabled.
    #[error("no discovery mechanism enabled (mDNS and DHT both off)")]
    NothingEnabled,
    /// mDNS failed and nothing else found a provider.
    #[error("mDNS discovery failed")]
    Mdns(#[source] MdnsError),
    /// The DHT failed and nothing else found a provider.
    #[error("DHT discovery failed")]
    Dht(#[source] DhtError),
    /// The identity file could not be used.
    #[error("DHT identity")]
    Identity(#[source] identity::IdentityError),
    /// Every enabled mechanism ran and found nothing.
    #[error(
        "no provider of channel {channel} arch {arch} found by {mechanisms} within {timeout_ms}ms"
    )]
    NotFound {
        /// Channel wanted.
        channel: String,
        /// Arch wanted.
        arch: Arch,
        /// `mdns`, `dht` or `mdns+dht`.
        mechanisms: &'static str,
        /// The time limit, in ms.
        timeout_ms: u64,
    },
}

/// Sorts providers best first: mDNS (same LAN) before DHT, then the higher SemVer version first
/// (unparsable versions last); the order found is kept otherwise.
pub fn sort_best_first(found: &mut [Found]) {
    found.sort_by(|a, b| {
        let va = semver::Version::parse(&a.version).ok();
        let vb = semver::Version::parse(&b.version).ok();
        a.source.cmp(&b.source).then_with(|| vb.cmp(&va))
    });
}

/// `error: cause: cause...` on one line.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// Waits until `head_start` has passed or `ended` is notified (a permit stored before the call
/// counts), whichever comes first; returns the time waited. Zero returns at once.
async fn wait_head_start(head_start: Duration, ended: &tokio::sync::Notify) -> Duration {
    let started = tokio::time::Instant::now();
    if !head_start.is_zero() {
        tokio::select! {
            _ = tokio::time::sleep(head_start) => {}
            _ = ended.notified() => {}
        }
    }
    started.elapsed()
}

async fn discover_dht(
    opts: &DiscoverOptions,
    timeout: Duration,
) -> Result<Vec<Found>, DiscoverError> {
    let keypair = if opts.ephemeral {
        identity::ephemeral()
    } else {
        identity::load_or_ephemeral(opts.identity.as_deref()).map_err(DiscoverError::Identity)?
    };
    let bootstrap = dht::parse_multiaddrs(&opts.bootstrap).map_err(DiscoverError::Dht)?;
    let node = DhtNode::start(DhtConfig {
        keypair,
        listen: Vec::new(),
        bootstrap,
        role: Role::Client,
    })
    .map_err(DiscoverError::Dht)?;
    // The QEMU tests compare this id across boots: fresh in private mode, stable otherwise.
    tracing::info!(
        "dht client started peer_id={} identity={}",
        node.peer_id(),
        if opts.ephemeral {
            "ephemeral"
        } else {
            "stable"
        }
    );
    let found = node
        .lookup_with_clock(
            &opts.channel,
            opts.arch,
            opts.want,
            timeout,
            opts.clock_trusted,
        )
        .await;
    node.shutdown().await;
    found.map_err(DiscoverError::Dht)
}

async fn discover_mdns(opts: &DiscoverOptions) -> Result<Vec<Found>, DiscoverError> {
    mdns::browse(
        &opts.channel,
        opts.arch,
        opts.want,
        opts.timeout,
        opts.iface.as_deref(),
    )
    .await
    .map_err(DiscoverError::Mdns)
}

/// Finds providers of `opts.channel`/`opts.arch` by mDNS and/or the DHT, concurrently; returns
/// as soon as `opts.want` are found or after `opts.timeout`. Results are deduplicated by manifest
/// URL and sorted best first ([`sort_best_first`]). Works on a current-thread tokio runtime.
///
/// # Errors
/// [`DiscoverError::NothingEnabled`]; [`DiscoverError::NotFound`] when nothing was found; the
/// mechanism's error when one failed and the other found nothing.
pub async fn discover(opts: &DiscoverOptions) -> Result<Vec<Found>, DiscoverError> {
    let want = opts.want.max(1);
    let mechanisms = match (opts.mdns, opts.dht) {
        (true, true) => "mdns+dht",
        (true, false) => "mdns",
        (false, true) => "dht",
        (false, false) => return Err(DiscoverError::NothingEnabled),
    };
    // mDNS ending (found or failed) before its head start is over starts the DHT at once.
    let mdns_ended = tokio::sync::Notify::new();
    let head_start = if opts.mdns {
        opts.mdns_head_start.min(opts.timeout)
    } else {
        Duration::ZERO
    };
    let mdns = async {
        if opts.mdns {
            let r = discover_mdns(opts).await;
            mdns_ended.notify_one();
            Some(r)
        } else {
            None
        }
    };
    let dht = async {
        if opts.dht {
            let waited = wait_head_start(head_start, &mdns_ended).await;
            let left = opts.timeout.saturating_sub(waited);
            Some(discover_dht(opts, left).await)
        } else {
            None
        }
    };
    tokio::pin!(mdns, dht);
    let (mut mdns_done, mut dht_done) = (!opts.mdns, !opts.dht);
    let mut found: Vec<Found> = Vec::new();
    let mut first_error = None;
    while !(mdns_done && dht_done) {
        let result = tokio::select! {
            r = &mut mdns, if !mdns_done => { mdns_done = true; r }
            r = &mut dht, if !dht_done => { dht_done = true; r }
        };
        match result {
            Some(Ok(list)) => {
                for f in list {
                    if !found.iter().any(|g| g.manifest_url == f.manifest_url) {
                        found.push(f);
                    }
                }
            }
            Some(Err(e)) => {
                tracing::warn!(error = %error_chain(&e), "discovery mechanism failed");
                first_error.get_or_insert(e);
            }
            None => {}
        }
        if found.len() >= want {
            break;
        }
    }
    sort_best_first(&mut found);
    if found.is_empty() {
        return Err(first_error.unwrap_or(DiscoverError::NotFound {
            channel: opts.channel.clone(),
            arch: opts.arch,
            mechanisms,
            timeout_ms: u64::try_from(opts.timeout.as_millis()).unwrap_or(u64::MAX),
        }));
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(url: &str, source: FoundSource, version: &str) -> Found {
        Found {
            manifest_url: url.into(),
            source,
            version: version.into(),
            provider: None,
        }
    }

    #[tokio::test]
    async fn dht_head_start_ends_when_mdns_ends_first() {
        let ended = tokio::sync::Notify::new();
        ended.notify_one(); // mDNS ended before the DHT future first waited
        let waited = tokio::time::timeout(
            Duration::from_secs(5),
            wait_head_start(Duration::from_secs(60), &ended),
        )
        .await
        .expect("the head start ends with mDNS, not after 60 s");
        assert!(waited < Duration::from_secs(5), "{waited:?}");
    }

    #[tokio::test]
    async fn dht_head_start_waits_while_mdns_runs_and_zero_waits_nothing() {
        let ended = tokio::sync::Notify::new();
        let waited = wait_head_start(Duration::from_millis(30), &ended).await;
        assert!(waited >= Duration::from_millis(30), "{waited:?}");
        let waited = tokio::time::timeout(
            Duration::from_secs(5),
            wait_head_start(Duration::ZERO, &ended),
        )
        .await
        .expect("zero head start");
        assert!(waited < Duration::from_secs(5), "{waited:?}");
        assert_eq!(
            DiscoverOptions::new("stable", Arch::X86_64).mdns_head_start,
            MDNS_HEAD_START
        );
    }

    #[test]
    fn mdns_beats_dht_and_newer_versions_come_first() {
        let mut v = vec![
            f("a", FoundSource::Dht, "1.0.0"),
            f("b", FoundSource::Dht, "1.10.0"),
            f("c", FoundSource::Mdns, "0.1.0"),
            f("d", FoundSource::Dht, "junk"),
        ];
        sort_best_first(&mut v);
        let order: Vec<&str> = v.iter().map(|x| x.manifest_url.as_str()).collect();
        assert_eq!(order, ["c", "b", "a", "d"]);
    }

    #[tokio::test]
    async fn discovery_with_nothing_enabled_is_an_error() {
        let mut o = DiscoverOptions::new("stable", Arch::X86_64);
        o.mdns = false;
        o.dht = false;
        assert!(matches!(
            discover(&o).await,
            Err(DiscoverError::NothingEnabled)
        ));
    }

    #[tokio::test]
    async fn dht_lookup_without_bootstrap_reports_not_found_quickly() {
        let mut o = DiscoverOptions::new("stable", Arch::X86_64);
        o.mdns = false;
        o.timeout = Duration::from_secs(5);
        assert!(matches!(
            discover(&o).await,
            Err(DiscoverError::NotFound {
                mechanisms: "dht",
                ..
            })
        ));
    }
}
