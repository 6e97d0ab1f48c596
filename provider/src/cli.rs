//! The `plasmd` command line (clap derive; seed 000 "CLI Commands", issue 3 "Must have" 4).
//!
//! `main.rs` only parses [`Cli`] and calls [`crate::commands::run`]. The Makefile calls
//! `keygen` and `manifest build|sign|verify` with exactly these names and flags.

// These doc comments are clap's --help text, where <placeholder> is the convention; rustdoc
// would read the brackets as HTML tags.
#![allow(rustdoc::invalid_html_tags)]

use std::net::IpAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

const ABOUT: &str = "Phase Boot provider: serves signed boot artifacts over HTTP and advertises them on mDNS and the DHT";

const LONG_ABOUT: &str = "\
Phase Boot provider: serves signed boot artifacts (kernel, initramfs, rootfs and their signed
manifest.json) over HTTP, and advertises them on mDNS and the Kademlia DHT so machines running
the Phase Boot initramfs can find them. Every booted target runs `plasmd serve` too.

Examples:
  plasmd keygen --out release.key
  plasmd manifest build --artifacts build/release/stable/x86_64 --channel stable --arch x86_64 \\
      --version 0.1.0 --expires-in 30d --out manifest.unsigned.json
  plasmd manifest sign --key release.key --in manifest.unsigned.json --out manifest.json
  plasmd manifest verify --trust trust.toml --artifacts build/release/stable/x86_64 manifest.json
  plasmd serve --artifacts build/release --port 8080
  plasmd provider status -a http://192.0.2.1:8080";

/// `plasmd`: the Phase Boot provider.
#[derive(Debug, Parser)]
#[command(name = "plasmd", version, about = ABOUT, long_about = LONG_ABOUT)]
pub struct Cli {
    /// Log filter (tracing EnvFilter syntax), e.g. `info` or `phase_provider=debug`.
    #[arg(long, global = true, env = "PLASMD_LOG", default_value = "info")]
    pub log: String,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve boot artifacts over HTTP and advertise them.
    #[command(long_about = SERVE_LONG)]
    Serve(Box<ServeArgs>),
    /// Query a running provider.
    #[command(subcommand)]
    Provider(ProviderCommand),
    /// Generate an Ed25519 signing key (FILE, mode 0600) and its public key (FILE.pub).
    Keygen(KeygenArgs),
    /// Build, sign and verify manifests.
    #[command(subcommand)]
    Manifest(ManifestCommand),
    /// Run a DHT-only node (a bootstrap node for the LAN or the internet).
    DhtNode(DhtNodeArgs),
}

const SERVE_LONG: &str = "\
Serve boot artifacts over HTTP and advertise them on mDNS and the DHT.

The artifacts directory is either a tree {channel}/{arch}/{kernel,initramfs,rootfs,manifest.json}
(arch directories may be named amd64 or x86_64, arm64 or aarch64), or a flat release directory
holding manifest.json and the artifact files (channel and arch then come from the manifest).
A manifest.json found is served byte for byte. Without one, --key makes plasmd generate and sign
one (hashes are cached by path, size and mtime); with neither, artifacts are served and the
manifest endpoint answers 404 saying why.

Limits against abusive clients: at most --max-connections connections at once (more wait in
the listen backlog), at most --max-connections-per-ip from one address (more are closed at
once), --header-timeout to send a request head, and --write-timeout while sending: a client
that stops reading is dropped once no byte could be sent to it for that long. /health answers
503 with \"reason\":\"hashing\" until every release's manifest can be served.

After adding or replacing files, send SIGHUP (kill -HUP <pid>): plasmd lists the directory
again, hashes what changed, signs again with --key, swaps the new release in once it is complete
and updates its mDNS and DHT adverts. Requests keep being served throughout.

Examples:
  plasmd serve -a /srv/phase -c stable -c beta
  plasmd serve -a /srv/phase --key release.key --release-version 1.2.0 --expires-in 7d
  plasmd serve -a /var/lib/phase/boot --no-dht
  plasmd serve --config /etc/plasmd.toml --tls-cert cert.pem --tls-key key.pem";

/// Flags of `plasmd serve` (seed 000 plus issue 3). Unset flags fall back to `--config`, then
/// to the defaults shown.
#[derive(Debug, Args, Default)]
pub struct ServeArgs {
    /// Artifacts directory: a {channel}/{arch}/ tree or a flat release dir.
    #[arg(short = 'a', long, value_name = "DIR")]
    pub artifacts: Option<PathBuf>,
    /// Channel to serve (repeatable; the first is the default) [default: stable].
    #[arg(short = 'c', long = "channel", value_name = "CHANNEL")]
    pub channels: Vec<String>,
    /// Default architecture, any alias [default: this host's].
    #[arg(short = 'A', long, value_name = "ARCH")]
    pub arch: Option<String>,
    /// TCP port [default: 8080].
    #[arg(short = 'p', long)]
    pub port: Option<u16>,
    /// Address to bind [default: 0.0.0.0].
    #[arg(short = 'b', long, value_name = "ADDR")]
    pub bind: Option<IpAddr>,
    /// TOML config file; flags given here override it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Secret key to sign generated manifests (never needed to relay one).
    #[arg(long, value_name = "FILE")]
    pub key: Option<PathBuf>,
    /// Base URL others should use [default: http://<first non-loopback IPv4>:<port>].
    #[arg(long, value_name = "URL")]
    pub advertise_url: Option<String>,
    /// TLS certificate chain (PEM); needs --tls-key.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM); needs --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Do not publish on the DHT.
    #[arg(long)]
    pub no_dht: bool,
    /// Do not announce on mDNS.
    #[arg(long)]
    pub no_mdns: bool,
    /// DHT listen multiaddr (repeatable) [default: /ip4/0.0.0.0/tcp/4001].
    #[arg(long, value_name = "MULTIADDR")]
    pub dht_listen: Vec<String>,
    /// DHT bootstrap multiaddr with /p2p/<peer id> (repeatable).
    #[arg(long, value_name = "MULTIADDR")]
    pub bootstrap: Vec<String>,
    /// libp2p identity key file (created 0600 if absent) [default: a fresh key].
    #[arg(long, value_name = "FILE")]
    pub identity: Option<PathBuf>,
    /// Maximum simultaneous connections; more wait in the listen backlog [default: 512].
    #[arg(long, value_name = "N")]
    pub max_connections: Option<usize>,
    /// Maximum simultaneous connections from one client IP address; more are closed at once
    /// (a booting machine opens about 4) [default: 64].
    #[arg(long, value_name = "N")]
    pub max_connections_per_ip: Option<usize>,
    /// Time a client gets to send its request head [default: 10s].
    #[arg(long, value_name = "DURATION")]
    pub header_timeout: Option<String>,
    /// Drop a client that stops reading once no byte could be sent to it for this long; a
    /// slow but steady reader is never dropped [default: 30s].
    #[arg(long, value_name = "DURATION")]
    pub write_timeout: Option<String>,
    /// Deadline for in-flight downloads on SIGTERM/SIGINT [default: 10s].
    #[arg(long, value_name = "DURATION")]
    pub shutdown_timeout: Option<String>,
    /// Hash cache file [default: <artifacts>/.plasmd-hashes.json].
    #[arg(long, value_name = "FILE")]
    pub hash_cache: Option<PathBuf>,
    /// Version of generated manifests [default: 0.1.0].
    #[arg(long, value_name = "SEMVER")]
    pub release_version: Option<String>,
    /// Lifetime of generated manifests, e.g. 30d, 12h, 90m [default: 30d].
    #[arg(long, value_name = "DURATION")]
    pub expires_in: Option<String>,
    /// Target kernel command line of generated manifests [default: empty].
    #[arg(long, value_name = "CMDLINE")]
    pub cmdline: Option<String>,
    /// Provider name on GET / and in adverts [default: the host name].
    #[arg(long)]
    pub name: Option<String>,
}

/// `plasmd provider ...`.
#[derive(Debug, Subcommand)]
pub enum ProviderCommand {
    /// Show a provider's health and counters.
    Status {
        /// Print the raw /status JSON.
        #[arg(long)]
        json: bool,
        /// Provider base URL or host:port.
        #[arg(short = 'a', long = "addr", default_value = "http://127.0.0.1:8080")]
        addr: String,
    },
    /// List the releases and artifacts a provider serves.
    List {
        /// Provider base URL or host:port.
        #[arg(short = 'a', long = "addr", default_value = "http://127.0.0.1:8080")]
        addr: String,
    },
}

/// `plasmd keygen`.
#[derive(Debug, Args)]
pub struct KeygenArgs {
    /// Secret key file to write (mode 0600); the public key goes to FILE.pub.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// Overwrite existing files.
    #[arg(long)]
    pub force: bool,
}

/// `plasmd manifest ...`.
#[derive(Debug, Subcommand)]
pub enum ManifestCommand {
    /// Write an unsigned manifest for the kernel, initramfs and rootfs files of a directory.
    Build {
        /// Directory holding kernel, initramfs and (optionally) rootfs.
        #[arg(long, value_name = "DIR")]
        artifacts: PathBuf,
        /// Channel.
        #[arg(long)]
        channel: String,
        /// Architecture (any alias; written in canonical form).
        #[arg(long)]
        arch: String,
        /// SemVer of the release.
        #[arg(long)]
        version: String,
        /// Lifetime, e.g. 30d, 12h, 90m.
        #[arg(long, value_name = "DURATION")]
        expires_in: String,
        /// Target kernel command line.
        #[arg(long, default_value = "")]
        cmdline: String,
        /// manifest_version to write: 2 lists the SHA-256 of every chunk of every artifact, so
        /// clients can check pieces from several peers (docs/manifest.md); 1 has whole-file
        /// hashes only, for boot media built before v2 (they refuse v2).
        #[arg(long, value_name = "1|2", default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=2))]
        manifest_version: u32,
        /// v2 chunk size: a power of two from 64K to 16M (suffix K or M for KiB, MiB)
        /// [default: per artifact, 1M up to 256 MiB, 2M up to 1 GiB, 4M above].
        #[arg(long, value_name = "BYTES", value_parser = parse_chunk_size)]
        chunk_size: Option<u64>,
        /// Output file [default: stdout].
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Append a signature to a manifest.
    Sign {
        /// Secret key file from `plasmd keygen`.
        #[arg(long, value_name = "FILE")]
        key: PathBuf,
        /// Input manifest [default: stdin].
        #[arg(long = "in", value_name = "FILE")]
        input: Option<PathBuf>,
        /// Output file [default: stdout].
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Verify a manifest against a trust file; exit 0 valid, 1 refused, 2 usage error.
    Verify {
        /// Trust file (TOML: threshold = N, keys = ["<hex>", ...]).
        #[arg(long, value_name = "FILE")]
        trust: PathBuf,
        /// Manifest to verify.
        manifest: PathBuf,
        /// Required channel.
        #[arg(long)]
        channel: Option<String>,
        /// Required architecture (any alias).
        #[arg(long)]
        arch: Option<String>,
        /// Also check the artifact files in DIR (by filename) against the manifest: size,
        /// whole-file SHA-256 and, for v2, every chunk's SHA-256 re-derived from the file.
        #[arg(long, value_name = "DIR")]
        artifacts: Option<PathBuf>,
    },
}

/// A v2 chunk size: `<n>`, `<n>K` or `<n>M` (KiB, MiB), a power of two from 64 KiB to 16 MiB.
///
/// # Errors
/// A message naming the rule broken.
pub fn parse_chunk_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let (digits, unit) = match t.as_bytes().last() {
        Some(b'K' | b'k') => (&t[..t.len() - 1], 1u64 << 10),
        Some(b'M' | b'm') => (&t[..t.len() - 1], 1u64 << 20),
        _ => (t, 1),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?} is not a byte count like 1M, 512K or 1048576"))?;
    let bytes = n
        .checked_mul(unit)
        .ok_or_else(|| format!("{text:?} is too large"))?;
    if !phase_protocol::chunks::valid_chunk_size(bytes) {
        return Err(format!(
            "{text:?} ({bytes} bytes) is not a power of two from 64K to 16M"
        ));
    }
    Ok(bytes)
}

/// `plasmd dht-node`.
#[derive(Debug, Args)]
pub struct DhtNodeArgs {
    /// Listen multiaddr (repeatable) [default: /ip4/0.0.0.0/tcp/4001].
    #[arg(long, value_name = "MULTIADDR")]
    pub dht_listen: Vec<String>,
    /// Bootstrap multiaddr with /p2p/<peer id> (repeatable).
    #[arg(long, value_name = "MULTIADDR")]
    pub bootstrap: Vec<String>,
    /// libp2p identity key file (created 0600 if absent).
    #[arg(long, value_name = "FILE")]
    pub identity: Option<PathBuf>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn serve_flags_parse_with_short_forms_and_repeats() {
        let cli = Cli::parse_from([
            "plasmd", "serve", "-a", "/srv", "-c", "stable", "-c", "beta", "-p", "9000", "--no-dht",
        ]);
        let Command::Serve(args) = cli.command else {
            panic!("not serve")
        };
        assert_eq!(args.channels, ["stable", "beta"]);
        assert_eq!(args.port, Some(9000));
        assert!(args.no_dht && !args.no_mdns);
        assert!(Cli::try_parse_from(["plasmd", "serve", "--tls-cert", "c.pem"]).is_err());
    }

    #[test]
    fn serve_help_documents_the_abuse_limits_with_defaults() {
        let cli = Cli::parse_from([
            "plasmd",
            "serve",
            "--write-timeout",
            "45s",
            "--max-connections-per-ip",
            "8",
        ]);
        let Command::Serve(args) = cli.command else {
            panic!("not serve")
        };
        assert_eq!(args.write_timeout.as_deref(), Some("45s"));
        assert_eq!(args.max_connections_per_ip, Some(8));
        let mut cmd = Cli::command();
        let help = cmd
            .find_subcommand_mut("serve")
            .unwrap()
            .render_long_help()
            .to_string();
        use crate::config::{DEFAULT_MAX_CONNECTIONS_PER_IP, DEFAULT_WRITE_TIMEOUT};
        for want in [
            "--write-timeout <DURATION>".to_owned(),
            format!("[default: {}s]", DEFAULT_WRITE_TIMEOUT.as_secs()),
            "--max-connections-per-ip <N>".to_owned(),
            format!("[default: {DEFAULT_MAX_CONNECTIONS_PER_IP}]"),
        ] {
            assert!(help.contains(&want), "{want:?} missing from:\n{help}");
        }
    }
}
