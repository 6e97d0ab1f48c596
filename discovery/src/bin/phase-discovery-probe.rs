//! `phase-discovery-probe`: a small mDNS tool over the phase-discovery library, for debugging a
//! LAN and for the network-namespace tests (which run it under `ip netns exec`).
//!
//! - `advertise --advert CHANNEL,ARCH,URL,VERSION... [--host H] [--iface I]`: prints
//!   `advertising <fullname>` per instance, then `ready`; on stdin EOF or SIGTERM withdraws them
//!   (goodbye packets) and prints `withdrawn`.
//! - `browse --channel C --arch A [--want N] [--timeout S] [--iface I]`: prints
//!   `found <url> <version> <instance>` per match, best first; exit status 1 when none.
//! - `watch [--timeout S] [--iface I]`: prints `resolved <fullname> <channel> <arch> <url>`,
//!   `removed <fullname>` and `invalid <fullname>` lines as they happen, until the timeout.
//! - `dht-put --listen MA --bootstrap MA... --put KEY=FILE...`: a DHT server node that
//!   publishes each FILE's bytes as its raw record under KEY (`@PEER@` in a file is replaced by
//!   the node's peer id), unvalidated, as a hostile peer would (issue 15 §8); prints
//!   `dht-put <peer id> published <n>`, then runs until stdin EOF or SIGTERM.

use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use phase_discovery::dht::parse_multiaddrs;
use phase_discovery::mdns::{self, MdnsAdvertiser, MdnsBrowser, MdnsEvent};
use phase_discovery::{DhtConfig, DhtNode, Role};
use phase_protocol::mdns::MdnsAdvert;
use phase_protocol::Arch;

#[derive(Parser)]
#[command(about = "mDNS probe for Phase Boot discovery")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Advertise instances until stdin closes or SIGTERM.
    Advertise {
        /// CHANNEL,ARCH,URL,VERSION (repeatable).
        #[arg(long, required = true)]
        advert: Vec<String>,
        /// Host label (default: host name or random).
        #[arg(long)]
        host: Option<String>,
        /// Only this interface.
        #[arg(long)]
        iface: Option<String>,
    },
    /// Browse for one channel/arch.
    Browse {
        /// Channel wanted.
        #[arg(long, default_value = "stable")]
        channel: String,
        /// Arch wanted.
        #[arg(long, default_value = "x86_64")]
        arch: Arch,
        /// Stop after this many.
        #[arg(long, default_value_t = 1)]
        want: usize,
        /// Seconds.
        #[arg(long, default_value_t = 5.0)]
        timeout: f64,
        /// Only this interface.
        #[arg(long)]
        iface: Option<String>,
    },
    /// Publish raw (hostile) DHT records until stdin closes or SIGTERM.
    DhtPut {
        /// Listen multiaddr, e.g. /ip4/192.0.2.2/tcp/4200.
        #[arg(long)]
        listen: String,
        /// Bootstrap multiaddrs ending in `/p2p/<peer id>`.
        #[arg(long, required = true)]
        bootstrap: Vec<String>,
        /// KEY=FILE: publish FILE's bytes under KEY (repeatable).
        #[arg(long, required = true)]
        put: Vec<String>,
    },
    /// Print every resolution and withdrawal.
    Watch {
        /// Seconds.
        #[arg(long, default_value_t = 10.0)]
        timeout: f64,
        /// Only this interface.
        #[arg(long)]
        iface: Option<String>,
    },
}

/// Waits for stdin EOF or SIGTERM.
async fn wait_for_stop() -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let stdin_closed = tokio::task::spawn_blocking(|| {
        let mut sink = Vec::new();
        let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut sink);
    });
    tokio::select! {
        _ = term.recv() => {}
        _ = stdin_closed => {}
    }
    Ok(())
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    phase_discovery::log_to_stderr_from_env();
    match Cli::parse().cmd {
        Cmd::Advertise {
            advert,
            host,
            iface,
        } => {
            let adverts = advert
                .iter()
                .map(|a| {
                    let parts: Vec<&str> = a.splitn(4, ',').collect();
                    let [channel, arch, url, version] = parts[..] else {
                        bail!("--advert {a:?} is not CHANNEL,ARCH,URL,VERSION");
                    };
                    Ok(MdnsAdvert {
                        channel: channel.into(),
                        arch: arch.parse()?,
                        manifest_url: url.into(),
                        version: version.into(),
                    })
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            let host = mdns::default_host_label(host.as_deref());
            let adv = MdnsAdvertiser::start(&adverts, &host, iface.as_deref())
                .context("starting mDNS advertisement")?;
            for name in adv.fullnames() {
                say(&format!("advertising {name}"));
            }
            say("ready");
            wait_for_stop().await?;
            adv.shutdown().await;
            say("withdrawn");
        }
        Cmd::Browse {
            channel,
            arch,
            want,
            timeout,
            iface,
        } => {
            let found = mdns::browse(
                &channel,
                arch,
                want,
                Duration::from_secs_f64(timeout),
                iface.as_deref(),
            )
            .await?;
            for f in &found {
                say(&format!(
                    "found {} {} {}",
                    f.manifest_url,
                    f.version,
                    f.provider.as_deref().unwrap_or("-")
                ));
            }
            if found.is_empty() {
                bail!("no provider of {channel}/{arch} found");
            }
        }
        Cmd::DhtPut {
            listen,
            bootstrap,
            put,
        } => {
            let node = DhtNode::start(DhtConfig {
                keypair: phase_discovery::identity::ephemeral(),
                listen: parse_multiaddrs(&[listen])?,
                bootstrap: parse_multiaddrs(&bootstrap)?,
                role: Role::Server,
            })?;
            node.listen_addrs(Duration::from_secs(5)).await;
            let me = node.peer_id().to_string();
            for p in &put {
                let Some((key, file)) = p.split_once('=') else {
                    bail!("--put {p:?} is not KEY=FILE");
                };
                let text = std::fs::read(file).with_context(|| format!("read {file}"))?;
                let value = match std::str::from_utf8(&text) {
                    Ok(t) => t.replace("@PEER@", &me).into_bytes(),
                    Err(_) => text,
                };
                node.publish_raw(key.to_owned(), value, Duration::from_secs(3600))?;
            }
            say(&format!("dht-put {me} published {}", put.len()));
            wait_for_stop().await?;
            node.shutdown().await;
        }
        Cmd::Watch { timeout, iface } => {
            let deadline = Instant::now() + Duration::from_secs_f64(timeout);
            let mut browser = MdnsBrowser::start(iface.as_deref())?;
            while let Some(event) = browser.next_event(deadline).await {
                match event {
                    MdnsEvent::Resolved { fullname, advert } => {
                        say(&format!(
                            "resolved {fullname} {} {} {}",
                            advert.channel, advert.arch, advert.manifest_url
                        ));
                    }
                    MdnsEvent::Removed { fullname } => say(&format!("removed {fullname}")),
                    MdnsEvent::Invalid { fullname, error } => {
                        say(&format!("invalid {fullname} {error}"))
                    }
                }
            }
            browser.stop();
        }
    }
    Ok(())
}
