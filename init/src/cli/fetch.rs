//! `phase fetch`: the CLI face of [`crate::fetch::fetch_release`] (issue 5).

// These doc comments are clap's --help text, where <placeholder> is the convention; rustdoc
// would read the brackets as HTML tags.
#![allow(rustdoc::invalid_html_tags)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use phase_protocol::{Arch, Expectation, TrustRoot};

use crate::fetch::share::{self, Shelf};
use crate::fetch::{fetch_release, FetchOptions, FoundPeers, MinRate, PeerFinder};

/// Arguments of `phase fetch`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Writes <OUT>/<filename> for every artifact only after its SHA-256 \
    matched; prints `<artifact> <bytes> <sha256:hex> <path>` per artifact on stdout and stage \
    lines (`phase: fetch ok ...`) on stderr. Example:\n  phase fetch --manifest-url \
    http://192.0.2.1:8080/stable/x86_64/manifest.json --trust /etc/phase/trust.toml --out /tmp/boot"
)]
pub struct FetchArgs {
    /// URL of the signed manifest (http or https).
    #[arg(long, value_name = "URL")]
    pub manifest_url: String,
    /// Extra provider base URL; artifacts are also tried at <URL>/<channel>/<arch>/<file>.
    /// Repeatable. With a v2 manifest (chunk digests) and two or more sources, each artifact's
    /// chunks come from all of them at once, each checked before it is written.
    #[arg(long = "provider", value_name = "URL")]
    pub providers: Vec<String>,
    /// Peer base URL (`http://192.0.2.11:7400`): another machine fetching or booted from the
    /// same release, serving with --serve. Its chunks are asked for as its have-map shows them
    /// (v2 manifests only). Repeatable; at most --max-peers are used at once, picked at random.
    #[arg(long = "peer", value_name = "URL")]
    pub peers: Vec<String>,
    /// Serve every chunk verified so far to peers while fetching, on this address
    /// (`0.0.0.0:7400`), at `/<channel>/<arch>/<filename>` and its `.have` map. LAN only:
    /// never on a machine that must not listen (private mode). With the address peers know
    /// (`192.0.2.10:7400`, not 0.0.0.0), the first chunks asked of a provider start at this
    /// machine's place among the peers' URLs, so a storm's machines ask the origin for
    /// different chunks.
    #[arg(long, value_name = "ADDR:PORT")]
    pub serve: Option<std::net::SocketAddr>,
    /// With --serve: keep serving this long after the fetch completed, in milliseconds, or
    /// until SIGTERM or SIGINT.
    #[arg(long, value_name = "MS", default_value_t = 0, requires = "serve")]
    pub linger_ms: u64,
    /// With --serve <IPv4>:<port>: once the manifest verified, announce this machine on mDNS
    /// on interface IFACE (`_phase-peer._tcp`, TXT `manifest-sha256` and `url`) until the fetch
    /// and --linger-ms end, and take every machine announcing the same signed manifest there as
    /// a --peer (at most 64). As in the boot stage: with one provider, an artifact streams
    /// until a peer turns up in its first 5 s.
    #[arg(long, value_name = "IFACE", requires = "serve")]
    pub mdns_peers: Option<String>,
    /// Peers asked at once.
    #[arg(long, value_name = "N", default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..=256))]
    pub max_peers: u64,
    /// Trust root (TOML: threshold + Ed25519 public keys).
    #[arg(long, value_name = "FILE", default_value = "/etc/phase/trust.toml")]
    pub trust: PathBuf,
    /// Directory the verified artifacts are written to (created if missing).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Directory with state.json (rollback and time floors); read, then updated on success.
    /// A corrupt or missing state.json falls back to state.json.bak, then to a signed
    /// manifest.json in DIR; a failed save is reported and does not fail the fetch.
    #[arg(long, value_name = "DIR")]
    pub state: Option<PathBuf>,
    /// Required channel of the manifest.
    #[arg(long)]
    pub channel: Option<String>,
    /// Required architecture (aliases accepted: amd64 = x86_64, arm64 = aarch64).
    #[arg(long)]
    pub arch: Option<Arch>,
    /// Extra PEM CA certificates for https (private CAs), besides the webpki roots.
    #[arg(long, value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
    /// TCP + TLS connect timeout in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 10_000)]
    pub connect_timeout_ms: u64,
    /// Longest wait for headers or the next body bytes from one source, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 30_000)]
    pub idle_timeout_ms: u64,
    /// Longest time for the manifest and for each artifact over all sources, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 1_800_000)]
    pub total_timeout_ms: u64,
    /// Retries on 5xx per source, and extra rounds over all sources.
    #[arg(long, default_value_t = 4)]
    pub retries: u32,
    /// Minimum rate of an artifact source in bytes per second, averaged over
    /// --min-rate-window: a slower source is dropped and the next one resumes from the verified
    /// offset (only while another source is left). 0 turns the floor off.
    #[arg(long, value_name = "BYTES_PER_SEC", default_value_t = crate::fetch::rate::DEFAULT_MIN_RATE)]
    pub min_rate: u64,
    /// Window the minimum rate is averaged over, in milliseconds (at least 1).
    #[arg(
        long = "min-rate-window",
        value_name = "MS",
        default_value_t = 10_000,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub min_rate_window_ms: u64,
    /// Requests in flight per source when chunks come from several sources at once.
    #[arg(long, value_name = "N", default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=64))]
    pub per_source: u64,
    /// Fetch each artifact from one source at a time, in order, even with a v2 manifest and
    /// several sources (the other sources are fallbacks).
    #[arg(long)]
    pub one_source_at_a_time: bool,
    /// No progress lines.
    #[arg(long, short)]
    pub quiet: bool,
}

impl FetchArgs {
    /// The library options these arguments describe.
    ///
    /// # Errors
    /// When the trust file cannot be loaded.
    pub fn options(&self) -> anyhow::Result<FetchOptions> {
        let trust = TrustRoot::load(&self.trust)?;
        let mut opts = FetchOptions::new(trust, self.out.clone());
        opts.providers.clone_from(&self.providers);
        opts.expectation = Expectation {
            channel: self.channel.clone(),
            arch: self.arch,
            ..Expectation::default()
        };
        opts.state_dir.clone_from(&self.state);
        opts.ca_file.clone_from(&self.ca_file);
        opts.connect_timeout = Duration::from_millis(self.connect_timeout_ms);
        opts.idle_timeout = Duration::from_millis(self.idle_timeout_ms);
        opts.total_timeout = Duration::from_millis(self.total_timeout_ms);
        opts.retries = self.retries;
        opts.swarm = (!self.one_source_at_a_time).then(|| crate::fetch::swarm::SwarmOptions {
            per_source: self.per_source as usize,
            max_peers: self.max_peers as usize,
            ..Default::default()
        });
        opts.peers.clone_from(&self.peers);
        opts.min_rate = MinRate {
            bytes_per_sec: self.min_rate,
            window: Duration::from_millis(self.min_rate_window_ms),
        };
        opts.progress = !self.quiet;
        Ok(opts)
    }
}

/// Runs `phase fetch`.
///
/// # Errors
/// Any [`crate::fetch::FetchError`] (printed with its chain by the caller).
pub async fn run(args: FetchArgs) -> anyhow::Result<()> {
    let mut opts = args.options()?;
    // The finder's lists are kept here too, so the announcements last through --linger-ms.
    let found: Arc<Mutex<Vec<FoundPeers>>> = Arc::default();
    if let Some(iface) = &args.mdns_peers {
        opts.peer_finder = Some(announcing_finder(args.serve, iface, &found)?);
    }
    let server = match args.serve {
        Some(addr) => {
            let listener = share::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr} for peers"))?;
            let shelf = Shelf::new();
            opts.share = Some(shelf.clone());
            // Peers know this machine by the address it serves on (none for 0.0.0.0).
            opts.own_url = (!addr.ip().is_unspecified()).then(|| format!("http://{addr}"));
            crate::log::line(&format!("serving verified chunks to peers on {addr}"));
            Some((shelf.clone(), tokio::spawn(share::serve(listener, shelf))))
        }
        None => None,
    };
    let release = fetch_release(&args.manifest_url, &opts)
        .await
        .with_context(|| format!("fetch from {}", args.manifest_url));
    let release = match release {
        Ok(r) => r,
        Err(e) => {
            if let Some((_, task)) = server {
                task.abort();
            }
            return Err(e);
        }
    };
    for (name, f) in &release.artifacts {
        println!("{name} {} {} {}", f.size, f.hash, f.path.display());
    }
    if let Some((shelf, task)) = server {
        use std::io::Write as _;
        let _ = std::io::stdout().flush();
        if args.linger_ms > 0 {
            linger(Duration::from_millis(args.linger_ms)).await;
        }
        task.abort();
        crate::log::line(&format!("served {} bytes to peers", shelf.sent_bytes()));
    }
    drop(found);
    Ok(())
}

/// The mDNS peer finder of `--mdns-peers IFACE` ([`crate::peers::mdns_finder`]) for the
/// `--serve` address, keeping each list it returns in `keep` as well.
///
/// # Errors
/// When `serve` is not one IPv4 address (0.0.0.0 or IPv6 cannot be announced as a peer URL).
fn announcing_finder(
    serve: Option<SocketAddr>,
    iface: &str,
    keep: &Arc<Mutex<Vec<FoundPeers>>>,
) -> anyhow::Result<PeerFinder> {
    let addr = match serve {
        Some(SocketAddr::V4(a)) if !a.ip().is_unspecified() => a,
        other => anyhow::bail!(
            "--mdns-peers announces the --serve address to peers, so it must be one IPv4 \
             address and port (192.0.2.11:7400), not {}",
            other.map_or_else(|| "missing".to_owned(), |a| a.to_string())
        ),
    };
    let host = format!(
        "phase-{}-{}",
        addr.ip().to_string().replace('.', "-"),
        addr.port()
    );
    let inner = crate::peers::mdns_finder(
        format!("http://{addr}"),
        host,
        iface.to_owned(),
        std::time::Duration::ZERO,
    );
    let keep = Arc::clone(keep);
    Ok(PeerFinder(Arc::new(move |m| {
        let rx = (inner.0)(m);
        if let Ok(mut k) = keep.lock() {
            k.push(rx.clone());
        }
        rx
    })))
}

/// Waits `time`, or until SIGTERM or SIGINT.
async fn linger(time: Duration) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tokio::time::sleep(time).await;
        return;
    };
    tokio::select! {
        () = tokio::time::sleep(time) => {}
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
