//! The test LAN: a network namespace holding bridge `br0` (192.0.2.1/24, TEST-NET-1) and tap
//! devices for VMs. It has no veth, route or NAT to the host's interfaces, so nothing a VM does
//! can leave it. Dropping the [`Lan`] kills every process started in it and deletes it.
//!
//! Topology (see docs/testing.md):
//! host ── (nothing) ──  netns `phase-<test>-<pid>`: br0 192.0.2.1/24 ── tap0..tapN ── VMs

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::process::{cmd, run, ChildGuard};

/// Address of the bridge, where dnsmasq, the provider and the DHT nodes listen.
pub const BRIDGE_ADDR: &str = "192.0.2.1";
/// Second bridge address, for a second provider on the same LAN.
pub const BRIDGE_ADDR2: &str = "192.0.2.2";
/// The DHCP range handed out by dnsmasq.
pub const DHCP_RANGE: (&str, &str) = ("192.0.2.100", "192.0.2.199");

/// A network namespace with a bridge, and the processes started inside it.
#[derive(Debug)]
pub struct Lan {
    name: String,
    procs: Vec<ChildGuard>,
    taps: u32,
}

impl Lan {
    /// Creates namespace `phase-<tag>-<pid>` with lo up and br0 at 192.0.2.1/24 (plus
    /// 192.0.2.2/24 for a second provider).
    ///
    /// Errors: any `ip` command fails (the namespace is removed again).
    pub fn create(tag: &str) -> Result<Self> {
        let name = format!("phase-{tag}-{}", std::process::id());
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        run(&mut cmd("ip", ["netns", "add", &name]))?;
        let lan = Self {
            name,
            procs: Vec::new(),
            taps: 0,
        };
        lan.ip(&["link", "set", "lo", "up"])?;
        lan.ip(&["link", "add", "br0", "type", "bridge"])?;
        // No STP and no forwarding delay: a tap is forwarding as soon as it is up.
        lan.ip(&[
            "link",
            "set",
            "br0",
            "type",
            "bridge",
            "stp_state",
            "0",
            "forward_delay",
            "0",
        ])?;
        lan.ip(&["addr", "add", &format!("{BRIDGE_ADDR}/24"), "dev", "br0"])?;
        lan.ip(&["addr", "add", &format!("{BRIDGE_ADDR2}/24"), "dev", "br0"])?;
        lan.ip(&["link", "set", "br0", "up"])?;
        Ok(lan)
    }

    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs `ip -n <ns> <args>`.
    ///
    /// Errors: the command fails.
    pub fn ip(&self, args: &[&str]) -> Result<String> {
        let mut c = Command::new("ip");
        c.arg("-n").arg(&self.name).args(args);
        run(&mut c)
    }

    /// A command that runs `program` inside the namespace (`ip netns exec <ns> program`).
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).arg(program);
        c
    }

    /// Adds a tap device on br0 for a VM and returns its name (`tap<N>`).
    ///
    /// Errors: the `ip tuntap`/`ip link` commands fail.
    pub fn add_tap(&mut self) -> Result<String> {
        let tap = format!("tap{}", self.taps);
        self.taps += 1;
        self.ip(&["tuntap", "add", &tap, "mode", "tap"])?;
        self.ip(&["link", "set", &tap, "master", "br0"])?;
        self.ip(&["link", "set", &tap, "up"])?;
        Ok(tap)
    }

    /// Starts a process inside the namespace, logged to `log`; the LAN kills it on drop.
    /// Returns its index for [`Lan::proc`] / [`Lan::stop`].
    ///
    /// Errors: the process cannot be started.
    pub fn spawn(
        &mut self,
        name: &str,
        program: &Path,
        args: &[String],
        log: &Path,
    ) -> Result<usize> {
        let mut c = self.command(program);
        c.args(args);
        let g = ChildGuard::spawn_logged(name, c, log)?;
        self.procs.push(g);
        Ok(self.procs.len() - 1)
    }

    /// Names and PIDs of the processes started with [`Lan::spawn`].
    pub fn pids(&self) -> Vec<u32> {
        self.procs.iter().map(ChildGuard::pid).collect()
    }

    /// A process started with [`Lan::spawn`].
    pub fn proc(&mut self, idx: usize) -> Option<&mut ChildGuard> {
        self.procs.get_mut(idx)
    }

    /// Stops a process started with [`Lan::spawn`] (SIGTERM, then SIGKILL).
    pub fn stop(&mut self, idx: usize) {
        if let Some(p) = self.procs.get_mut(idx) {
            p.stop();
        }
    }

    /// Starts dnsmasq as the DHCP server on br0 (range 192.0.2.100-199, no DNS). `--no-ping`:
    /// on this private LAN no host can hold an unleased address, and dnsmasq's ICMP probe before
    /// each first OFFER otherwise costs every boot about 3 s.
    ///
    /// Errors: dnsmasq cannot start or exits within its first 300 ms.
    pub fn start_dnsmasq(&mut self, work: &Path) -> Result<usize> {
        self.start_dnsmasq_with(work, &[])
    }

    /// [`Lan::start_dnsmasq`] with `extra` dnsmasq arguments (e.g.
    /// `--dhcp-option=option:ntp-server,192.0.2.1`).
    ///
    /// Errors: dnsmasq cannot start or exits within its first 300 ms.
    pub fn start_dnsmasq_with(&mut self, work: &Path, extra: &[String]) -> Result<usize> {
        let leases = work.join("dnsmasq.leases");
        let mut args: Vec<String> = [
            "--no-daemon",
            "--conf-file=/dev/null",
            "--interface=br0",
            "--bind-interfaces",
            "--except-interface=lo",
            "--dhcp-range=192.0.2.100,192.0.2.199,255.255.255.0,12h",
            &format!("--dhcp-leasefile={}", leases.display()),
            "--pid-file=",
            "--port=0",
            "--log-dhcp",
            "--no-ping",
            "--user=root",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend_from_slice(extra);
        self.spawn_daemon("dnsmasq", Path::new("dnsmasq"), &args, work, 300)
    }

    /// [`Lan::spawn`] of a server that must still run `settle_ms` after its start (logged to
    /// `<work>/<name>.log`); returns its index.
    ///
    /// Errors: it cannot start or exits within `settle_ms`, with its log.
    fn spawn_daemon(
        &mut self,
        name: &str,
        program: &Path,
        args: &[String],
        work: &Path,
        settle_ms: u64,
    ) -> Result<usize> {
        let idx = self.spawn(name, program, args, &work.join(format!("{name}.log")))?;
        std::thread::sleep(Duration::from_millis(settle_ms));
        if let Some(p) = self.proc(idx) {
            if let Some(st) = p.try_wait() {
                bail!("{name} exited at start ({st}): {}", p.log_text());
            }
        }
        Ok(idx)
    }

    /// Starts a real NTP server on 192.0.2.1:123: `chronyd` (from Debian's chrony package,
    /// unpacked by `make test-qemu` without installing it, see [`crate::env::chronyd`]) serving
    /// its own clock at stratum 8 (`local stratum 8`), never adjusting the host's clock (`-x`).
    ///
    /// Errors: chronyd is missing, cannot start or exits within its first 500 ms.
    pub fn start_ntp(&mut self, work: &Path) -> Result<usize> {
        let conf = work.join("chrony.conf");
        std::fs::write(
            &conf,
            format!(
                "local stratum 8\nallow 192.0.2.0/24\nbindaddress {BRIDGE_ADDR}\nport 123\ncmdport 0\npidfile {}\n",
                work.join("chronyd.pid").display()
            ),
        )?;
        let args: Vec<String> = vec![
            "-f".into(),
            conf.display().to_string(),
            "-d".into(),
            "-x".into(),
            "-u".into(),
            "root".into(),
        ];
        self.spawn_daemon("chronyd", &crate::env::chronyd(), &args, work, 500)
    }

    /// `curl` inside the namespace: GET `url` and return the body (10 s timeout, HTTP errors
    /// are errors).
    ///
    /// Errors: connection failure, timeout or a status >= 400.
    pub fn http_get(&self, url: &str) -> Result<Vec<u8>> {
        let out = self
            .command("curl")
            .args([
                "-sS",
                "-f",
                "--max-time",
                "30",
                "--connect-timeout",
                "5",
                url,
            ])
            .output()
            .with_context(|| format!("curl {url}"))?;
        if !out.status.success() {
            bail!(
                "GET {url} failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(out.stdout)
    }

    /// HTTP status code of GET `url` from inside the namespace (0 when no answer).
    pub fn http_status(&self, url: &str) -> u16 {
        self.command("curl")
            .args([
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "--max-time",
                "10",
                url,
            ])
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        for p in self.procs.iter_mut().rev() {
            p.stop();
        }
        self.procs.clear();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// The addresses dnsmasq leased to `mac` (lower-case `aa:bb:..`), read from the lease file
/// [`Lan::start_dnsmasq`] writes in `work` (`<expiry> <mac> <ip> <hostname> <client-id>` per
/// line), newest lease first. A missing or unreadable file gives an empty list.
pub fn leased_addresses(work: &Path, mac: &str) -> Vec<String> {
    let text = std::fs::read_to_string(work.join("dnsmasq.leases")).unwrap_or_default();
    parse_leases(&text, mac)
}

fn parse_leases(text: &str, mac: &str) -> Vec<String> {
    let mut leases: Vec<(u64, String)> = text
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let expiry = f.next()?.parse().ok()?;
            let m = f.next()?;
            let ip = f.next()?;
            m.eq_ignore_ascii_case(mac)
                .then(|| (expiry, ip.to_string()))
        })
        .collect();
    leases.sort_by_key(|l| std::cmp::Reverse(l.0));
    leases.into_iter().map(|(_, ip)| ip).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leases_of_one_mac_newest_first() {
        let text = "1000 52:54:00:12:34:31 192.0.2.150 * *\n\
                    1200 52:54:00:12:34:31 192.0.2.151 phase-debian ff:aa\n\
                    1300 52:54:00:12:34:32 192.0.2.152 * *\n\
                    garbage line\n";
        assert_eq!(
            parse_leases(text, "52:54:00:12:34:31"),
            vec!["192.0.2.151".to_string(), "192.0.2.150".to_string()]
        );
        assert!(parse_leases(text, "52:54:00:12:34:99").is_empty());
    }
}
