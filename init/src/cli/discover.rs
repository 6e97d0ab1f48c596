//! `phase discover` (also `phase-discover`): finds providers of a channel/arch by mDNS and the
//! Kademlia DHT and prints every manifest URL found, best first (issue 4; seed 004's
//! `phase-discover --channel stable --arch arm64 --timeout 30`).
//!
//! The init calls the same `phase_discovery::discover` in its discover stage; this subcommand is
//! for scripts and debugging. A URL printed here is not trusted: `phase fetch` verifies the
//! manifest it points at.

// These doc comments are clap's --help text, where <placeholder> is the convention; rustdoc
// would read the brackets as HTML tags.
#![allow(rustdoc::invalid_html_tags)]

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use phase_discovery::{DiscoverOptions, Found};
use phase_protocol::Arch;

use crate::log;

/// Arguments of `phase discover`.
#[derive(Debug, Clone, clap::Args)]
pub struct DiscoverArgs {
    /// Channel to look for.
    #[arg(long, default_value = "stable")]
    pub channel: String,
    /// Architecture to look for (x86_64/amd64, aarch64/arm64, riscv64); default: this machine's.
    #[arg(long)]
    pub arch: Option<Arch>,
    /// Browse mDNS only (no DHT).
    #[arg(long, conflicts_with = "dht_only")]
    pub mdns_only: bool,
    /// Look up the DHT only (no mDNS).
    #[arg(long)]
    pub dht_only: bool,
    /// DHT bootstrap multiaddr ending in /p2p/<peer id> (repeatable, or comma-separated).
    #[arg(long, value_name = "MULTIADDR", value_delimiter = ',')]
    pub bootstrap: Vec<String>,
    /// Time limit in seconds (fractions allowed).
    #[arg(long, default_value_t = 10.0, value_name = "SECONDS")]
    pub timeout: f64,
    /// Stop as soon as this many providers are found (default: collect until the timeout or
    /// until every DHT query has finished).
    #[arg(long, value_name = "N")]
    pub want: Option<usize>,
    /// Use a fresh DHT key (private mode); `--identity` is ignored.
    #[arg(long)]
    pub ephemeral: bool,
    /// Stable libp2p key file (protobuf keypair, created 0600 if absent).
    #[arg(long, value_name = "FILE")]
    pub identity: Option<PathBuf>,
    /// Browse mDNS on this interface only.
    #[arg(long, value_name = "IFACE")]
    pub iface: Option<String>,
    /// Print a JSON array of {manifest_url, source, version, provider} instead of one URL per line.
    #[arg(long)]
    pub json: bool,
}

impl DiscoverArgs {
    /// The library options these arguments ask for.
    ///
    /// # Errors
    /// When no architecture is given and this machine's is not one Phase Boot names, or the
    /// timeout is not a positive number of seconds.
    pub fn options(&self) -> anyhow::Result<DiscoverOptions> {
        let arch = match self.arch {
            Some(a) => a,
            None => Arch::host()
                .context("this machine's architecture has no Phase Boot name; pass --arch")?,
        };
        let timeout = Duration::try_from_secs_f64(self.timeout)
            .ok()
            .filter(|t| !t.is_zero())
            .with_context(|| {
                format!(
                    "--timeout {} is not a positive number of seconds",
                    self.timeout
                )
            })?;
        let mut o = DiscoverOptions::new(self.channel.clone(), arch);
        o.mdns = !self.dht_only;
        o.dht = !self.mdns_only;
        o.bootstrap = self.bootstrap.clone();
        o.timeout = timeout;
        o.ephemeral = self.ephemeral || self.identity.is_none();
        o.identity = if self.ephemeral {
            None
        } else {
            self.identity.clone()
        };
        o.want = self.want.unwrap_or(usize::MAX);
        o.iface = self.iface.clone();
        Ok(o)
    }
}

/// The JSON form of one result.
fn to_json(f: &Found) -> serde_json::Value {
    serde_json::json!({
        "manifest_url": f.manifest_url,
        "source": f.source.as_str(),
        "version": f.version,
        "provider": f.provider,
    })
}

/// Runs the discovery and prints the results on stdout (URLs one per line, or `--json`), with a
/// `phase: discover ok <source> <url> in <N>ms` line on stderr.
///
/// # Errors
/// Bad arguments, or the `phase_discovery::DiscoverError` chain when nothing was found.
pub async fn run(args: DiscoverArgs) -> anyhow::Result<()> {
    let opts = args.options()?;
    let stage = log::Stage::start("discover");
    let found = phase_discovery::discover(&opts)
        .await
        .with_context(|| format!("discovering {}/{}", opts.channel, opts.arch))?;
    if let Some(best) = found.first() {
        stage.ok(format_args!("{} {}", best.source, best.manifest_url));
    }
    if args.json {
        let list: Vec<serde_json::Value> = found.iter().map(to_json).collect();
        println!("{}", serde_json::Value::Array(list));
    } else {
        for f in &found {
            println!("{}", f.manifest_url);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, clap::Parser)]
    struct T {
        #[command(flatten)]
        args: DiscoverArgs,
    }

    fn parse(v: &[&str]) -> Result<DiscoverArgs, clap::Error> {
        T::try_parse_from(std::iter::once("phase-discover").chain(v.iter().copied()))
            .map(|t| t.args)
    }

    #[test]
    fn seed_004_command_line_gives_those_options() {
        let a = parse(&["--channel", "stable", "--arch", "arm64", "--timeout", "30"]).unwrap();
        let o = a.options().unwrap();
        assert_eq!(
            (o.channel.as_str(), o.arch, o.timeout),
            ("stable", Arch::Aarch64, Duration::from_secs(30))
        );
        assert!(o.mdns && o.dht && o.ephemeral);
        assert_eq!(o.want, usize::MAX);
    }

    #[test]
    fn only_flags_select_one_mechanism_and_conflict_together() {
        let o = parse(&[
            "--arch",
            "x86_64",
            "--dht-only",
            "--bootstrap",
            "/ip4/192.0.2.1/tcp/4001/p2p/x,/ip4/192.0.2.1/tcp/4002/p2p/y",
        ])
        .unwrap()
        .options()
        .unwrap();
        assert!(!o.mdns && o.dht);
        assert_eq!(o.bootstrap.len(), 2);
        assert!(parse(&["--mdns-only", "--dht-only"]).is_err());
    }

    #[test]
    fn identity_is_used_unless_ephemeral() {
        let o = parse(&[
            "--arch",
            "x86_64",
            "--identity",
            "/cache/phase/identity.key",
        ])
        .unwrap()
        .options()
        .unwrap();
        assert!(!o.ephemeral);
        assert_eq!(
            o.identity.as_deref(),
            Some(std::path::Path::new("/cache/phase/identity.key"))
        );
        let o = parse(&["--arch", "x86_64", "--identity", "/k", "--ephemeral"])
            .unwrap()
            .options()
            .unwrap();
        assert!(o.ephemeral && o.identity.is_none());
    }

    #[test]
    fn zero_or_negative_timeout_is_refused() {
        assert!(parse(&["--arch", "x86_64", "--timeout", "0"])
            .unwrap()
            .options()
            .is_err());
        assert!(parse(&["--arch", "x86_64", "--timeout=-1"])
            .unwrap()
            .options()
            .is_err());
    }
}
