//! Shared steps of the boot tests: prerequisites, the LAN with its provider and DHT, the
//! expected console sequence of a boot through kexec into the target, and the end checks.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use phase_qemu_tests::netns::Lan;
use phase_qemu_tests::provider::{self, DhtNode, ProviderOpts};
use phase_qemu_tests::qemu::{Vm, VmConfig};
use phase_qemu_tests::{env, release, timing};

/// Seconds, for readability.
pub fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// Checks host prerequisites and the build outputs every boot test needs.
pub fn ready(test: &str) -> Result<bool> {
    let mut inputs = vec![env::initramfs(), env::release_manifest(), env::plasmd()];
    if let Ok(k) = env::kernel() {
        inputs.push(k);
    }
    env::ready(test, &inputs)
}

/// The publisher's manifest bytes.
pub fn publisher_manifest() -> Result<Vec<u8>> {
    let p = env::release_manifest();
    std::fs::read(&p).with_context(|| format!("read {}", p.display()))
}

/// Kernel command line for the first kernel.
pub fn append(mode: &str, extra: &str) -> String {
    format!("console=ttyS0,115200 panic=-1 phase.mode={mode} phase.onfail=halt {extra}")
        .trim()
        .to_string()
}

/// A LAN with dnsmasq and the host provider over `make release` (mDNS on, DHT off).
pub fn local_lan(tag: &str, work: &Path) -> Result<(Lan, usize)> {
    let mut lan = Lan::create(tag)?;
    lan.start_dnsmasq(work)?;
    let p = provider::start_provider(&mut lan, &ProviderOpts::local(), work, "host")?;
    Ok((lan, p))
}

/// A LAN with dnsmasq, `nodes` DHT nodes (tcp 4001..) and the host provider publishing on the
/// DHT (tcp 4100) with mDNS off. Returns the LAN, the nodes and a `phase.bootstrap=` value.
pub fn internet_lan(tag: &str, work: &Path, nodes: usize) -> Result<(Lan, Vec<DhtNode>, String)> {
    let mut lan = Lan::create(tag)?;
    lan.start_dnsmasq(work)?;
    let dht = provider::start_dht_nodes(&lan, nodes, 4001, work)?;
    let mut opts = ProviderOpts::local();
    opts.mdns = false;
    opts.dht_port = Some(4100);
    opts.bootstrap = dht.iter().take(2).map(|n| n.multiaddr.clone()).collect();
    provider::start_provider(&mut lan, &opts, work, "host")?;
    // Give the provider time to put its record into the DHT before a client asks.
    std::thread::sleep(secs(5));
    let bootstrap = dht
        .iter()
        .take(3)
        .map(|n| n.multiaddr.clone())
        .collect::<Vec<_>>()
        .join(",");
    Ok((lan, dht, bootstrap))
}

/// A direct-boot VM config: Debian's kernel + the phase initramfs.
pub fn vm_config(name: &str, mode: &str, extra: &str, mac: u8) -> Result<VmConfig> {
    let mut cfg = VmConfig::direct(
        name,
        &env::kernel()?,
        &env::initramfs(),
        &append(mode, extra),
    );
    cfg.mac_suffix = mac;
    Ok(cfg)
}

/// Waits for the boot stage up to the kexec, for `mode`; `source` is the expected discovery
/// source (`mdns`, `dht`, `cache`, `cmdline`). Returns the `discover ok` line.
pub fn expect_boot_stage(vm: &mut Vm, mode: &str, source: &str) -> Result<String> {
    vm.expect("phase: init stage=boot version=", secs(240))?;
    vm.expect("phase: mounts ok", secs(60))?;
    vm.expect(&format!("phase: cmdline ok mode={mode}"), secs(30))?;
    vm.expect("phase: modules ok", secs(120))?;
    if source != "cache" {
        vm.expect("phase: link ok", secs(60))?;
        vm.expect("phase: dhcp ok", secs(90))?;
    }
    let discover = vm.expect(&format!("phase: discover ok {source}"), secs(180))?;
    vm.expect("phase: manifest ok", secs(60))?;
    Ok(discover)
}

/// After `manifest ok`: waits for the kexec, then the target stage up to `switch_root ok`
/// (re-verify, overlay root).
pub fn expect_kexec_to_switch_root(vm: &mut Vm) -> Result<()> {
    vm.expect("phase: kexec ok loaded kernel=", secs(600))?;
    vm.expect("phase: init stage=target version=", secs(300))?;
    vm.expect("phase: verify ok version=", secs(300))?;
    vm.expect("phase: rootfs ok overlay on /newroot", secs(120))?;
    vm.expect("phase: switch_root ok", secs(60))?;
    Ok(())
}

/// After `manifest ok`: waits for the kexec, then the whole target stage up to `target ready`.
/// Returns the VM's address from the target's `dhcp ok` line.
pub fn expect_kexec_and_target(vm: &mut Vm) -> Result<String> {
    expect_kexec_to_switch_root(vm)?;
    let dhcp = vm.expect("phase: dhcp ok", secs(120))?;
    vm.expect("phase: service ", secs(60))?;
    vm.expect("phase: target ready in", secs(120))?;
    let addr = timing::dhcp_addr(&dhcp).context("address in the target's dhcp line")?;
    check_fetch_lines(vm)?;
    Ok(addr)
}

/// Every artifact of the publisher's manifest has a `phase: fetch ok <name> <size> bytes` line.
pub fn check_fetch_lines(vm: &Vm) -> Result<()> {
    let manifest = publisher_manifest()?;
    let lines = vm.lines();
    for a in release::artifacts(&manifest)? {
        let want = format!("phase: fetch ok {} {} bytes", a.name, a.size_bytes);
        if !lines.iter().any(|l| l.contains(&want)) {
            return Err(vm.failure(&format!("no console line {want:?}")));
        }
    }
    Ok(())
}

/// Test 1's end checks against the VM's own provider at http://<addr>:8080. The provider may
/// need a moment after `target ready`, so /health is polled for up to 60 s first.
pub fn end_checks(lan: &Lan, vm: &Vm, addr: &str) -> Result<()> {
    let base = format!("http://{addr}:8080");
    let mut code = 0;
    for _ in 0..60 {
        code = lan.http_status(&format!("{base}/health"));
        if code == 200 {
            break;
        }
        std::thread::sleep(secs(1));
    }
    if code != 200 {
        return Err(vm.failure(&format!("{base}/health answered {code} for 60 s")));
    }
    release::check_provider(lan, &base, &publisher_manifest()?)
        .map_err(|e| vm.failure(&format!("{e:#}")))
}

/// Orderly poweroff through the monitor: services stop, `phase: poweroff`, QEMU exits.
pub fn powerdown(vm: &mut Vm) -> Result<()> {
    vm.monitor("system_powerdown")?;
    vm.expect("phase: shutdown requested by power-button", secs(60))?;
    vm.expect("phase: unmount ok", secs(60))?;
    vm.expect("phase: poweroff", secs(60))?;
    vm.wait_exit(secs(60))?;
    Ok(())
}

/// Libp2p peer ids (`12D3KooW...`, ed25519 keys) that appear on the console.
pub fn peer_ids(lines: &[String]) -> Vec<String> {
    // Only the boot's own DHT client line counts: `phase: INFO phase_discovery: dht client
    // started peer_id=12D3KooW... identity=...`. Other ids (bootstrap multiaddrs echoed in the
    // kernel command line, providers) are not this machine's.
    let mut out: Vec<String> = Vec::new();
    for l in lines.iter().filter(|l| l.contains("dht client started")) {
        if let Some(id) = l
            .split_whitespace()
            .find_map(|w| w.strip_prefix("peer_id="))
            .filter(|id| id.starts_with("12D3KooW"))
        {
            if !out.iter().any(|o| o == id) {
                out.push(id.to_string());
            }
        }
    }
    out
}

/// Copies the release tree and flips one byte in the middle of the rootfs (same size), so the
/// manifest still lists the original hash.
pub fn tampered_release(work: &Path) -> Result<PathBuf> {
    let dst = work.join("tampered-release");
    let st = std::process::Command::new("cp")
        .arg("-a")
        .arg(env::release_dir())
        .arg(&dst)
        .status()?;
    if !st.success() {
        bail!(
            "cp -a {} {} failed",
            env::release_dir().display(),
            dst.display()
        );
    }
    let rootfs = dst.join("stable/x86_64/rootfs");
    let mut bytes = std::fs::read(&rootfs).with_context(|| format!("read {}", rootfs.display()))?;
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&rootfs, bytes)?;
    // Drop any hash cache copied along, so the provider cannot answer from stale entries.
    for entry in std::fs::read_dir(&dst)?.flatten() {
        if entry.file_name().to_string_lossy().contains("hash") {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    Ok(dst)
}

/// `cp --sparse=always FROM TO`: a private copy of a disk image for one VM.
///
/// Errors: cp cannot run or fails.
pub fn copy_sparse(from: &Path, to: &Path) -> Result<()> {
    let st = std::process::Command::new("cp")
        .arg("--sparse=always")
        .arg(from)
        .arg(to)
        .status()?;
    anyhow::ensure!(st.success(), "copy {}", from.display());
    Ok(())
}
