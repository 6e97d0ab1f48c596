//! Issue 16 §2, bring your own root filesystem: a real Debian rootfs (`make distro-rootfs
//! DISTRO=debian`: mmdebstrap minbase + systemd) made into a signed release by `make release
//! ROOTFS=build/distro/debian.tar INIT=/lib/systemd/systemd`, booted in local mode. systemd is
//! PID 1 of the target; the `plasmd.service` and the systemd-networkd config that
//! scripts/own-rootfs.sh added bring the provider up, and the VM serves the signed manifest and
//! every artifact byte for byte. A second VM then boots from the first (the self-hosting loop
//! with a real distribution).

mod common;

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{ensure, Context, Result};
use common::*;
use phase_qemu_tests::netns::{self, Lan};
use phase_qemu_tests::provider::{self, ProviderOpts};
use phase_qemu_tests::qemu::Vm;
use phase_qemu_tests::{env, release};

const INIT: &str = "/lib/systemd/systemd";

fn manifest_path() -> PathBuf {
    env::debian_release_dir().join("stable/x86_64/manifest.json")
}

/// After the boot stage: kexec, the target stage up to the exec of systemd, then systemd up to
/// `multi-user.target` (or the serial getty, which it pulls in) with `plasmd.service` started.
/// Fails early if a unit of ours fails or systemd falls into emergency mode.
///
/// systemd stops printing status lines on ttyS0 once the serial getty owns it, so whether
/// `Reached target multi-user.target` reaches the console depends on which comes first: in a
/// CI run on a loaded host it did not, and the test waited 600 s for it.
fn expect_systemd_target(vm: &mut Vm) -> Result<()> {
    expect_kexec_to_switch_root(vm)?;
    vm.expect(&format!("phase: exec {INIT} (phase.init)"), secs(30))?;
    vm.expect("running in system mode", secs(120))?;
    // Index 0 is needed; 1 or 2 ends the boot.
    let wanted = [
        "Started plasmd.service",
        "Reached target multi-user.target",
        "Started serial-getty@ttyS0",
    ];
    let failed = [
        "Failed to start plasmd.service",
        "Failed to start systemd-networkd.service",
        // The console truncates long unit names: `systemd-networkd-wait-…`.
        "Failed to start systemd-networkd-wait",
        "You are in emergency mode",
        "Cannot open access to console",
    ];
    let patterns: Vec<&str> = wanted.iter().chain(failed.iter()).copied().collect();
    let mut seen = [false; 3];
    let deadline = Instant::now() + secs(600);
    while !(seen[0] && (seen[1] || seen[2])) {
        let left = deadline.saturating_duration_since(Instant::now());
        let (i, line) = vm.expect_any(&patterns, left)?;
        if i >= wanted.len() {
            return Err(vm.failure(&format!("systemd in the target: {line}")));
        }
        seen[i] = true;
    }
    Ok(())
}

/// The address at which the VM's plasmd serves (see [`provider::serving_address`]), within
/// 180 s.
fn serving_address(lan: &Lan, vm: &Vm, work: &Path, mac: &str) -> Result<String> {
    provider::serving_address(lan, work, mac, secs(180)).ok_or_else(|| {
        vm.failure(&format!(
            "no address leased to {mac} answered /health on :8080 within 180 s (leases: {:?})",
            netns::leased_addresses(work, mac)
        ))
    })
}

#[test]
fn debian_rootfs_boots_systemd_serves_its_release_and_boots_a_second_vm() -> Result<()> {
    let test = "debian_rootfs_boots_systemd_serves_its_release_and_boots_a_second_vm";
    let mut inputs = vec![env::initramfs(), manifest_path(), env::plasmd()];
    if let Ok(k) = env::kernel() {
        inputs.push(k);
    }
    if !env::ready(test, &inputs)? {
        return Ok(());
    }
    let manifest = std::fs::read(manifest_path())
        .with_context(|| format!("read {}", manifest_path().display()))?;
    ensure!(
        String::from_utf8_lossy(&manifest).contains(&format!("phase.init={INIT}")),
        "{} does not sign phase.init={INIT} into its cmdline",
        manifest_path().display()
    );
    let rootfs = release::artifacts(&manifest)?
        .into_iter()
        .find(|a| a.name == "rootfs")
        .context("no rootfs artifact in the Debian release")?;
    eprintln!("harness: Debian rootfs {} bytes", rootfs.size_bytes);

    let work = env::work_dir("debian")?;
    let mut lan = Lan::create("deb")?;
    lan.start_dnsmasq(&work)?;
    let opts = ProviderOpts {
        artifacts: env::debian_release_dir(),
        ..ProviderOpts::local()
    };
    let host = provider::start_provider(&mut lan, &opts, &work, "host")?;

    let cfg = vm_config("deb-a", "local", "", 0x31)?;
    let mac_a = cfg.mac();
    let mut a = Vm::start(&mut lan, cfg, &work)?;
    expect_boot_stage(&mut a, "local", "mdns")?;
    expect_systemd_target(&mut a)?;
    let addr_a = serving_address(&lan, &a, &work, &mac_a)?;
    release::check_provider(&lan, &format!("http://{addr_a}:8080"), &manifest)
        .map_err(|e| a.failure(&format!("{e:#}")))?;

    // The self-hosting loop: only VM A can serve the release now.
    lan.stop(host);
    ensure!(
        lan.http_status("http://192.0.2.1:8080/health") == 0,
        "host provider still answers"
    );
    let cfg = vm_config("deb-b", "local", "", 0x32)?;
    let mac_b = cfg.mac();
    let mut b = Vm::start(&mut lan, cfg, &work)?;
    let discover = expect_boot_stage(&mut b, "local", "mdns")?;
    ensure!(
        discover.contains(&format!("http://{addr_a}:8080")),
        "VM B did not discover VM A ({addr_a}): {discover}"
    );
    expect_systemd_target(&mut b)?;
    let addr_b = serving_address(&lan, &b, &work, &mac_b)?;
    release::check_provider(&lan, &format!("http://{addr_b}:8080"), &manifest)
        .map_err(|e| b.failure(&format!("{e:#}")))?;
    Ok(())
}
