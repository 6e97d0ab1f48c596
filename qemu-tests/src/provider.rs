//! The host side of the boot: `plasmd serve` over a release tree and `plasmd dht-node`s, all
//! started inside the test [`Lan`] (issue 3 and 4 flags).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::env;
use crate::netns::Lan;
use crate::process::ChildGuard;

/// How to run one `plasmd serve`.
#[derive(Debug, Clone)]
pub struct ProviderOpts {
    /// Artifacts tree (`{channel}/{arch}/...` or a flat release dir).
    pub artifacts: PathBuf,
    /// Address to bind, one of the bridge addresses.
    pub bind: String,
    /// TCP port (8080).
    pub port: u16,
    /// Announce on mDNS.
    pub mdns: bool,
    /// Publish on the DHT, listening on `/ip4/<bind>/tcp/<dht_port>`.
    pub dht_port: Option<u16>,
    /// `--bootstrap` multiaddrs.
    pub bootstrap: Vec<String>,
}

impl ProviderOpts {
    /// A provider on 192.0.2.1:8080 over `make release`'s tree, mDNS on, DHT off.
    pub fn local() -> Self {
        Self {
            artifacts: env::release_dir(),
            bind: crate::netns::BRIDGE_ADDR.to_string(),
            port: 8080,
            mdns: true,
            dht_port: None,
            bootstrap: Vec::new(),
        }
    }

    /// The base URL clients use.
    pub fn url(&self) -> String {
        format!("http://{}:{}", self.bind, self.port)
    }

    /// The `plasmd serve` arguments.
    pub fn args(&self) -> Vec<String> {
        let mut a = vec![
            "serve".to_string(),
            "--artifacts".into(),
            self.artifacts.display().to_string(),
            "--bind".into(),
            self.bind.clone(),
            "--port".into(),
            self.port.to_string(),
            "--advertise-url".into(),
            self.url(),
        ];
        if !self.mdns {
            a.push("--no-mdns".into());
        }
        match self.dht_port {
            Some(p) => {
                a.push("--dht-listen".into());
                a.push(format!("/ip4/{}/tcp/{p}", self.bind));
                for b in &self.bootstrap {
                    a.push("--bootstrap".into());
                    a.push(b.clone());
                }
            }
            None => a.push("--no-dht".into()),
        }
        a
    }
}

/// Starts `plasmd serve` in the LAN and waits (up to 30 s) until `/health` answers 200.
/// Returns the process index in the LAN.
///
/// Errors: plasmd is missing, exits, or never becomes healthy.
pub fn start_provider(lan: &mut Lan, opts: &ProviderOpts, work: &Path, tag: &str) -> Result<usize> {
    let plasmd = env::plasmd();
    let log = work.join(format!("plasmd-{tag}.log"));
    let idx = lan.spawn(&format!("plasmd-{tag}"), &plasmd, &opts.args(), &log)?;
    let health = format!("{}/health", opts.url());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if lan.http_status(&health) == 200 {
            return Ok(idx);
        }
        if let Some(p) = lan.proc(idx) {
            if let Some(st) = p.try_wait() {
                bail!(
                    "plasmd {tag} exited ({st}) before answering {health}:\n{}",
                    p.log_text()
                );
            }
        }
        if Instant::now() > deadline {
            let text = lan.proc(idx).map(|p| p.log_text()).unwrap_or_default();
            bail!("plasmd {tag} never answered {health} with 200 in 30 s:\n{text}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A running `plasmd dht-node`.
#[derive(Debug)]
pub struct DhtNode {
    /// The process (killed on drop).
    pub guard: ChildGuard,
    /// Its full multiaddr including `/p2p/<peer id>`.
    pub multiaddr: String,
}

/// Starts `count` DHT nodes on 192.0.2.1 tcp `first_port`.., each bootstrapping from the first,
/// and returns them once each printed `dht-node listening <multiaddr>` (30 s each).
///
/// Errors: a node fails to start or never prints its address.
pub fn start_dht_nodes(
    lan: &Lan,
    count: usize,
    first_port: u16,
    work: &Path,
) -> Result<Vec<DhtNode>> {
    let mut nodes: Vec<DhtNode> = Vec::new();
    for i in 0..count {
        let port = first_port + i as u16;
        let mut c: Command = lan.command(env::plasmd());
        c.args([
            "dht-node",
            "--dht-listen",
            &format!("/ip4/{}/tcp/{port}", crate::netns::BRIDGE_ADDR),
        ]);
        if let Some(first) = nodes.first() {
            c.args(["--bootstrap", &first.multiaddr]);
        }
        let err = std::fs::File::create(work.join(format!("dht-node-{i}.log")))?;
        c.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(err);
        let mut child = c.spawn().context("start plasmd dht-node")?;
        let stdout = child.stdout.take().context("dht-node stdout")?;
        let guard = ChildGuard::from_child(&format!("dht-node-{i}"), child);
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("dht-node listening ").nth(1) {
                    let _ = tx.send(rest.trim().to_string());
                }
            }
        });
        let multiaddr = rx.recv_timeout(Duration::from_secs(30)).with_context(|| {
            format!("dht-node {i} did not print `dht-node listening <multiaddr>` in 30 s")
        })?;
        nodes.push(DhtNode { guard, multiaddr });
    }
    Ok(nodes)
}

/// The address at which a VM's plasmd answers `GET /health` with 200 on port 8080: one of the
/// addresses dnsmasq leased to `mac` ([`crate::netns::leased_addresses`]), tried newest first,
/// every 2 s for up to `timeout`. A target with its own init (`phase.init`, e.g. systemd with
/// networkd) prints no `phase: dhcp ok` line and may lease another address than its boot stage.
/// `None` if none answered in time.
pub fn serving_address(lan: &Lan, work: &Path, mac: &str, timeout: Duration) -> Option<String> {
    let deadline = Instant::now() + timeout;
    loop {
        for ip in crate::netns::leased_addresses(work, mac) {
            if lan.http_status(&format!("http://{ip}:8080/health")) == 200 {
                return Some(ip);
            }
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_secs(2));
    }
}
