//! Integration test of the DHCP client (issue 6 §10): dnsmasq in network namespace A, the client
//! in namespace B, joined by a veth pair on 192.0.2.0/24 (TEST-NET-1, no link to the host).
//!
//! The client must run inside namespace B with B's /sys and /etc (ip netns exec bind-mounts
//! `/etc/netns/<ns>/resolv.conf` over /etc/resolv.conf), so each test re-runs this test binary
//! under `ip netns exec B` with `PHASE_DHCP_PROBE=<role>`: in that child the same test function
//! plays the client and asserts on the API results; the parent asserts on what the kernel and
//! dnsmasq saw. Needs root; otherwise prints SKIP (and fails when CI=true).

use std::io::Read;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use phase_init::net::{self, NetError};

const ROLE_ENV: &str = "PHASE_DHCP_PROBE";
const IFACE_ENV: &str = "PHASE_DHCP_PROBE_IFACE";
const SERVER: &str = "192.0.2.1";

// ---------------------------------------------------------------- tests

#[test]
fn client_gets_lease_configures_address_route_resolv_and_renews() {
    let Some((lan, stdout, stderr)) = parent_side(
        "client_gets_lease_configures_address_route_resolv_and_renews",
        'l',
        true,
        "lease",
    ) else {
        return;
    };

    let addr = field(&stdout, "PROBE bound", "addr").expect("probe printed the lease");
    assert!(
        addr.starts_with("192.0.2.1") && addr.len() == "192.0.2.100".len(),
        "address from the range: {addr}"
    );
    let b = &lan.ns_b;
    assert!(
        stderr.contains(&format!("phase: link ok {} in ", lan.veth_b)),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("phase: dhcp ok {} {addr}/24 in ", lan.veth_b)),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "phase: dhcp renewed {} {addr}/24 lease=120s",
            lan.veth_b
        )),
        "{stderr}"
    );

    let addrs = lan.ipv4_addrs_b();
    assert!(
        addrs.contains(&format!("inet {addr}/24")),
        "address configured: {addrs}"
    );
    let routes = cmd_out(&["ip", "-n", b, "-4", "route", "show", "default"]);
    assert!(
        routes.contains(&format!("default via {SERVER} dev {}", lan.veth_b)),
        "default route: {routes}"
    );
    // A new namespace's lo is down; bring_up set it up by its fixed index (LOOPBACK_IFINDEX).
    let lo = cmd_out(&["ip", "-n", b, "-o", "link", "show", "dev", "lo"]);
    assert!(
        lo.starts_with("1: lo: <LOOPBACK,UP"),
        "lo up, index 1: {lo}"
    );
    let resolv = std::fs::read_to_string(lan.resolv_conf()).unwrap_or_default();
    assert!(
        resolv.contains("nameserver 192.0.2.1\n"),
        "resolv.conf: {resolv}"
    );

    // The initial REQUEST, renew_once's unicast REQUEST and maintain's renewal at the shortened T1
    // were all acknowledged by dnsmasq.
    let log = lan.dnsmasq_log();
    let acks = log
        .matches(&format!("DHCPACK({}) {addr}", lan.veth_a))
        .count();
    assert!(
        acks >= 3,
        "3 ACKs expected (bind, renew_once, maintain), dnsmasq log:\n{log}"
    );
    assert!(log.contains("DHCPDISCOVER"), "{log}");
}

/// Issue 18 §3 lease handover: a lease handed over (as the boot stage writes it into the
/// initrd) is configured on a bare interface without a DHCP exchange, and dnsmasq renews it.
#[test]
fn a_handed_over_lease_is_configured_without_an_exchange_and_renews() {
    let Some((lan, stdout, stderr)) = parent_side(
        "a_handed_over_lease_is_configured_without_an_exchange_and_renews",
        'h',
        true,
        "handover",
    ) else {
        return;
    };
    let addr = field(&stdout, "PROBE taken", "addr").expect("probe printed the lease");
    assert!(
        stderr.contains(&format!(
            "phase: dhcp ok {} {addr}/24 (the boot stage's lease, ",
            lan.veth_b
        )),
        "{stderr}"
    );
    assert!(
        lan.ipv4_addrs_b().contains(&format!("inet {addr}/24")),
        "address configured"
    );
    // DISCOVERs only before the first ACK (the first bring_up; one may be retransmitted), then
    // two ACKs in all: the bind and the renewal of the lease taken over. The takeover itself
    // sent nothing.
    let log = lan.dnsmasq_log();
    let first_ack = log.find("DHCPACK(").expect("an ACK");
    assert!(!log[first_ack..].contains("DHCPDISCOVER"), "{log}");
    let acks = log
        .matches(&format!("DHCPACK({}) {addr}", lan.veth_a))
        .count();
    assert_eq!(acks, 2, "bind and renewal, dnsmasq log:\n{log}");
}

#[test]
fn client_without_server_times_out_and_missing_iface_is_named() {
    let Some((lan, stdout, stderr)) = parent_side(
        "client_without_server_times_out_and_missing_iface_is_named",
        't',
        false,
        "timeout",
    ) else {
        return;
    };
    assert!(stdout.contains("PROBE timeout ok"), "{stdout}");
    assert!(stdout.contains("PROBE notfound ok"), "{stdout}");
    assert!(stderr.contains("phase: dhcp failed after "), "{stderr}");
    assert!(stderr.contains("phase: link failed after "), "{stderr}");
    let addrs = lan.ipv4_addrs_b();
    assert!(
        !addrs.contains("inet "),
        "no address without a lease: {addrs}"
    );
}

#[test]
fn netlink_adds_two_addresses_and_removes_exactly_one() {
    let Some((lan, stdout, stderr)) = parent_side(
        "netlink_adds_two_addresses_and_removes_exactly_one",
        'a',
        false,
        "addresses",
    ) else {
        return;
    };
    assert!(
        stdout.contains("PROBE addresses ok"),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    let addrs = lan.ipv4_addrs_b();
    assert!(
        addrs.contains("inet 192.0.2.77/24"),
        "kept: {addrs}\n{stderr}"
    );
    assert!(!addrs.contains("198.51.100.78"), "removed: {addrs}");
    let routes = cmd_out(&["ip", "-n", &lan.ns_b, "-4", "route", "show", "default"]);
    assert!(
        routes.contains(&format!("default via {SERVER} dev {}", lan.veth_b)),
        "default route: {routes}"
    );
}

/// The parent side of `test`: in the probe child (`PHASE_DHCP_PROBE` set) it plays the probe
/// and returns `None`; otherwise it creates the LAN (`None` when skipped), runs the probe `role`
/// in namespace B and asserts it succeeded ([`Lan::probe_ok`]).
fn parent_side(
    test: &str,
    tag: char,
    with_dnsmasq: bool,
    role: &str,
) -> Option<(Lan, String, String)> {
    if let Ok(role) = std::env::var(ROLE_ENV) {
        probe(&role);
        return None;
    }
    let lan = Lan::create(tag, with_dnsmasq)?;
    let (stdout, stderr) = lan.probe_ok(test, role);
    Some((lan, stdout, stderr))
}

// ---------------------------------------------------------------- the client side (in netns B)

fn probe(role: &str) {
    let iface = std::env::var(IFACE_ENV).expect("probe needs PHASE_DHCP_PROBE_IFACE");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        match role {
            "lease" => probe_lease(&iface).await,
            "timeout" => probe_timeout(&iface).await,
            "addresses" => probe_addresses(&iface).await,
            "handover" => probe_handover(&iface).await,
            other => panic!("unknown probe role {other}"),
        }
    });
}

/// add_address in two subnets, set_default_route, then remove_address of the second one
/// (rtnetlink).
async fn probe_addresses(iface: &str) {
    use phase_init::net::configure;
    let index: u32 = std::fs::read_to_string(format!("/sys/class/net/{iface}/ifindex"))
        .expect("ifindex")
        .trim()
        .parse()
        .expect("ifindex number");
    let nl = configure::Netlink::open().expect("netlink");
    nl.handle
        .link()
        .set(rtnetlink::LinkUnspec::new_with_index(index).up().build())
        .execute()
        .await
        .expect("link up");
    // Two subnets: deleting a primary address also deletes the secondaries of its subnet.
    for addr in [
        Ipv4Addr::new(192, 0, 2, 77),
        Ipv4Addr::new(198, 51, 100, 78),
    ] {
        configure::add_address(&nl.handle, index, iface, addr, 24)
            .await
            .expect("add_address");
    }
    configure::set_default_route(&nl.handle, index, iface, SERVER.parse().unwrap())
        .await
        .expect("default route");
    configure::remove_address(&nl.handle, index, iface, Ipv4Addr::new(198, 51, 100, 78))
        .await
        .expect("remove_address");
    println!("PROBE addresses ok");
}

async fn probe_lease(iface: &str) {
    let mut lease = net::bring_up(Some(iface), Duration::from_secs(30))
        .await
        .expect("bring_up");
    println!(
        "PROBE bound addr={} prefix={} router={:?} dns={:?} ntp={:?} server={} lease={} t1={} t2={}",
        lease.granted.addr, lease.granted.prefix_len, lease.granted.router, lease.granted.dns, lease.granted.ntp, lease.granted.server_id, lease.granted.lease_secs,
        lease.granted.t1_secs, lease.granted.t2_secs
    );
    let server: Ipv4Addr = SERVER.parse().unwrap();
    assert_eq!(lease.iface, iface);
    assert_eq!(lease.granted.prefix_len, 24);
    assert_eq!(lease.granted.router, Some(server));
    assert_eq!(lease.granted.dns, vec![server]);
    assert_eq!(lease.granted.ntp, vec![server]);
    assert_eq!(lease.granted.server_id, server);
    assert_eq!(lease.granted.lease_secs, 120);
    assert!(
        lease.granted.t1_secs < lease.granted.t2_secs
            && lease.granted.t2_secs < lease.granted.lease_secs
    );

    let before = lease.acquired_at;
    let addr = lease.granted.addr;
    net::renew_once(&mut lease, Duration::from_secs(15))
        .await
        .expect("renew_once");
    assert_eq!(lease.granted.addr, addr, "dnsmasq renews the same address");
    assert!(
        lease.acquired_at > before,
        "renewal restarts the lease clock"
    );
    println!(
        "PROBE renewed addr={} lease={}",
        lease.granted.addr, lease.granted.lease_secs
    );

    // maintain() renews at T1; pull T1 in to 1 s after acquisition (T2 at 2 s) so it runs now.
    lease.granted.t1_secs = 1;
    lease.granted.t2_secs = 2;
    let ran = tokio::time::timeout(Duration::from_secs(8), net::maintain(lease)).await;
    match ran {
        Err(_elapsed) => println!("PROBE maintain running"),
        Ok(Err(e)) => panic!("maintain failed: {}", phase_init::log::error_chain(&e)),
        Ok(Ok(never)) => match never {},
    }
}

/// bring_up, hand the lease over as the boot stage does, drop the address (a fresh kernel has
/// none), bring_up_with the handed lease, then renew it with dnsmasq.
async fn probe_handover(iface: &str) {
    use phase_init::net::{configure, handover::HandedLease, link};
    let first = net::bring_up(Some(iface), Duration::from_secs(30))
        .await
        .expect("bring_up");
    let l = link::read_link(Path::new(link::SYS_CLASS_NET), iface).expect("link");
    let json = HandedLease::new(&first, &l.mac, Instant::now()).to_json();
    let nl = configure::Netlink::open().expect("netlink");
    configure::remove_address(&nl.handle, l.index, iface, first.granted.addr)
        .await
        .expect("remove_address");
    let handed = HandedLease::parse(&json).expect("parse");
    let since = Duration::from_secs(2);
    let mut lease = net::bring_up_with(Some(iface), Duration::from_secs(5), Some((&handed, since)))
        .await
        .expect("bring_up_with");
    assert_eq!(lease.granted.addr, first.granted.addr);
    assert!(
        lease.granted.lease_secs < first.granted.lease_secs,
        "age counted"
    );
    println!("PROBE taken addr={}", lease.granted.addr);
    net::renew_once(&mut lease, Duration::from_secs(15))
        .await
        .expect("renew_once of the lease taken over");
    assert_eq!(lease.granted.lease_secs, 120, "the ACK's times again");
}

async fn probe_timeout(iface: &str) {
    match net::bring_up(Some(iface), Duration::from_secs(3)).await {
        Err(NetError::Timeout { state, .. }) => {
            assert_eq!(state, "selecting", "no OFFER ever came");
            println!("PROBE timeout ok");
        }
        other => panic!("expected a DHCP timeout, got {other:?}"),
    }
    match net::bring_up(Some("phnosuch0"), Duration::from_millis(300)).await {
        Err(e @ NetError::Link(_)) => {
            let chain = phase_init::log::error_chain(&e);
            assert!(chain.contains("interface phnosuch0 not found"), "{chain}");
            println!("PROBE notfound ok");
        }
        other => panic!("expected a link error, got {other:?}"),
    }
}

// ---------------------------------------------------------------- the test LAN (parent side)

/// Namespaces A (dnsmasq, 192.0.2.1) and B (client) joined by a veth pair; removed on drop,
/// dnsmasq killed by PID.
struct Lan {
    ns_a: String,
    ns_b: String,
    veth_a: String,
    veth_b: String,
    dir: tempfile::TempDir,
    dnsmasq: Option<Child>,
}

impl Lan {
    /// Builds the LAN, or prints SKIP and returns None when not root (panics when CI=true).
    fn create(tag: char, with_dnsmasq: bool) -> Option<Lan> {
        if let Some(reason) = skip_reason() {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "CI=true but cannot run: {reason}"
            );
            eprintln!("SKIP: {reason}");
            return None;
        }
        let pid = std::process::id();
        let lan = Lan {
            ns_a: format!("phdhcp{tag}a{pid}"),
            ns_b: format!("phdhcp{tag}b{pid}"),
            veth_a: format!("ph{tag}a{pid}"),
            veth_b: format!("ph{tag}b{pid}"),
            dir: tempfile::tempdir().expect("tempdir"),
            dnsmasq: None,
        };
        let mut lan = lan;
        lan.setup(with_dnsmasq).expect("test LAN setup");
        Some(lan)
    }

    fn setup(&mut self, with_dnsmasq: bool) -> Result<()> {
        let (a, b, va, vb) = (&self.ns_a, &self.ns_b, &self.veth_a, &self.veth_b);
        run(&["ip", "netns", "add", a])?;
        run(&["ip", "netns", "add", b])?;
        run(&[
            "ip", "link", "add", va, "netns", a, "type", "veth", "peer", "name", vb, "netns", b,
        ])?;
        run(&[
            "ip",
            "-n",
            a,
            "addr",
            "add",
            &format!("{SERVER}/24"),
            "dev",
            va,
        ])?;
        run(&["ip", "-n", a, "link", "set", va, "up"])?;
        run(&["ip", "-n", a, "link", "set", "lo", "up"])?;
        // B's link stays down: the client must set it up itself.
        let etc = self.etc_netns();
        std::fs::create_dir_all(&etc).with_context(|| format!("mkdir {}", etc.display()))?;
        std::fs::write(self.resolv_conf(), "").context("resolv.conf for netns B")?;
        if with_dnsmasq {
            self.start_dnsmasq()?;
        }
        Ok(())
    }

    fn start_dnsmasq(&mut self) -> Result<()> {
        let d = self.dir.path();
        let args = [
            "netns".to_owned(),
            "exec".into(),
            self.ns_a.clone(),
            "dnsmasq".into(),
            "--no-daemon".into(),
            "--conf-file=/dev/null".into(),
            format!("--interface={}", self.veth_a),
            "--bind-interfaces".into(),
            "--dhcp-range=192.0.2.100,192.0.2.150,255.255.255.0,2m".into(),
            "--dhcp-option=3,192.0.2.1".into(),
            "--dhcp-option=6,192.0.2.1".into(),
            "--dhcp-option=42,192.0.2.1".into(),
            "--dhcp-authoritative".into(),
            format!("--dhcp-leasefile={}", d.join("leases").display()),
            format!("--pid-file={}", d.join("dnsmasq.pid").display()),
            format!("--log-facility={}", d.join("dnsmasq.log").display()),
            "--log-dhcp".into(),
            "--port=0".into(),
            "--user=root".into(),
        ];
        let child = Command::new("ip")
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("spawn dnsmasq")?;
        self.dnsmasq = Some(child);
        // Ready once it logged its DHCP range; bounded to 10 s.
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            if self.dnsmasq_log().contains("DHCP, IP range") {
                return Ok(());
            }
            if let Some(child) = self.dnsmasq.as_mut() {
                if let Some(status) = child.try_wait()? {
                    let mut err = String::new();
                    if let Some(mut e) = child.stderr.take() {
                        let _ = e.read_to_string(&mut err);
                    }
                    bail!("dnsmasq exited with {status}: {err}");
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!("dnsmasq not ready after 10s; log:\n{}", self.dnsmasq_log())
    }

    fn etc_netns(&self) -> PathBuf {
        Path::new("/etc/netns").join(&self.ns_b)
    }

    fn resolv_conf(&self) -> PathBuf {
        self.etc_netns().join("resolv.conf")
    }

    fn dnsmasq_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("dnsmasq.log")).unwrap_or_default()
    }

    /// [`Lan::run_probe`], asserting that the probe succeeded (the failure shows its output and
    /// dnsmasq's log); returns its stdout and stderr.
    fn probe_ok(&self, test: &str, role: &str) -> (String, String) {
        let out = self.run_probe(test, role);
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(
            out.status.success(),
            "probe failed\nstdout:\n{stdout}\nstderr:\n{stderr}\ndnsmasq:\n{}",
            self.dnsmasq_log()
        );
        (stdout, stderr)
    }

    /// `ip -4 addr show dev <veth B>` in namespace B.
    fn ipv4_addrs_b(&self) -> String {
        cmd_out(&[
            "ip",
            "-n",
            &self.ns_b,
            "-4",
            "addr",
            "show",
            "dev",
            &self.veth_b,
        ])
    }

    /// Runs this test binary as the client in namespace B; killed after 90 s.
    fn run_probe(&self, test: &str, role: &str) -> Output {
        let exe = std::env::current_exe().expect("current_exe");
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns_b])
            .arg(exe)
            .args(["--exact", test, "--nocapture", "--test-threads=1"])
            .env(ROLE_ENV, role)
            .env(IFACE_ENV, &self.veth_b)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn probe");
        wait_bounded(child, Duration::from_secs(90))
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        if let Some(mut child) = self.dnsmasq.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        for ns in [&self.ns_a, &self.ns_b] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
        let _ = std::fs::remove_dir_all(self.etc_netns());
        // /etc/netns itself is left: other tests may be using it.
    }
}

fn skip_reason() -> Option<String> {
    if !rustix::process::geteuid().is_root() {
        return Some("needs root for network namespaces".into());
    }
    for tool in ["ip", "dnsmasq"] {
        let found = ["/usr/sbin", "/usr/bin", "/sbin", "/bin"]
            .iter()
            .any(|d| Path::new(d).join(tool).exists());
        if !found {
            return Some(format!("{tool} not installed (iproute2, dnsmasq-base)"));
        }
    }
    None
}

/// Waits for `child` at most `limit` (polling every 50 ms), killing it after that; collects
/// its output.
fn wait_bounded(mut child: Child, limit: Duration) -> Output {
    let start = Instant::now();
    while start.elapsed() < limit {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            Err(_) => break,
        }
    }
    if matches!(child.try_wait(), Ok(None)) {
        let _ = child.kill();
    }
    child.wait_with_output().expect("wait for probe")
}

fn run(args: &[&str]) -> Result<()> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .with_context(|| format!("spawn {args:?}"))?;
    if !out.status.success() {
        bail!("{args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

fn cmd_out(args: &[&str]) -> String {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .expect("spawn");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `key=value` after `prefix` on the first line holding it (libtest may print
/// `test <name> ... ` in front of the probe's first line).
fn field(text: &str, prefix: &str, key: &str) -> Option<String> {
    let line = text.lines().find_map(|l| l.find(prefix).map(|i| &l[i..]))?;
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(&format!("{key}=")).map(str::to_owned))
}
