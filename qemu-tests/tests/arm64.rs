//! Issue 17 §3-§4: arm64 guests (`qemu-system-aarch64 -M virt -cpu cortex-a57`, TCG) boot the
//! arm64 release end to end from the same x86_64 `plasmd` and release tree that serve x86_64.
//!
//! The first kernel is Debian's arm64 kernel, built without `CONFIG_KEXEC_FILE`: the init must
//! take the `kexec_load` path (its own segments, DTB and trampoline) and say so on the console.
//! Run alone with `make test-qemu-arm`.

mod common;

use anyhow::{ensure, Context, Result};
use common::{expect_boot_stage, expect_kexec_to_switch_root, local_lan, secs};
use phase_qemu_tests::qemu::{GuestArch, Vm, VmConfig};
use phase_qemu_tests::{env, release, timing};

fn ready(test: &str) -> Result<bool> {
    let mut inputs = vec![
        env::arm64_initramfs(),
        env::arm64_release_manifest(),
        env::plasmd(),
    ];
    if let Ok(k) = env::arm64_kernel() {
        inputs.push(k);
    }
    if !env::which("qemu-system-aarch64") {
        return env::skip_or_fail(test, "qemu-system-aarch64 not found (make deps ARCH=arm64)");
    }
    env::ready(test, &inputs)
}

fn arm64_vm(name: &str, mode: &str, mac: u8) -> Result<VmConfig> {
    let mut cfg = VmConfig::direct(
        name,
        &env::arm64_kernel()?,
        &env::arm64_initramfs(),
        &format!("console=ttyAMA0 panic=-1 phase.mode={mode} phase.onfail=halt"),
    );
    cfg.arch = GuestArch::Aarch64;
    cfg.mac_suffix = mac;
    Ok(cfg)
}

/// Local mode on Debian's arm64 kernel: mDNS finds the x86_64 host's plasmd, which serves the
/// aarch64 release beside the x86_64 one; the init loads the target with `kexec_load`; the
/// target reaches `target ready` and serves the aarch64 release byte for byte.
#[test]
fn arm64_local_mode_boots_debian_kernel_through_kexec_load() -> Result<()> {
    let test = "arm64_local_mode_boots_debian_kernel_through_kexec_load";
    if !ready(test)? {
        return Ok(());
    }
    let work = env::work_dir("arm64-local")?;
    let (mut lan, _p) = local_lan("a64", &work)?;
    let mut vm = Vm::start(&mut lan, arm64_vm("arm64-local", "local", 0x41)?, &work)?;
    let discover = expect_boot_stage(&mut vm, "local", "mdns")?;
    ensure!(
        discover.contains("http://192.0.2.1:8080"),
        "discovered another provider: {discover}"
    );
    expect_kexec_to_switch_root(&mut vm)?;
    let lines = vm.lines();
    ensure!(
        lines
            .iter()
            .any(|l| l.contains("phase: cmdline ok mode=local channel=stable arch=aarch64")),
        "the arm64 init did not default to arch=aarch64"
    );
    let kexec = lines
        .iter()
        .find(|l| l.contains("phase: kexec ok loaded kernel="))
        .context("no kexec ok line")?;
    ensure!(
        kexec.contains("by kexec_load (no KEXEC_FILE)"),
        "Debian's arm64 kernel has no kexec_file_load, yet: {kexec}"
    );
    let dhcp = vm.expect("phase: dhcp ok", secs(120))?;
    vm.expect("phase: target ready in", secs(180))?;
    let addr = timing::dhcp_addr(&dhcp).context("address in the target's dhcp line")?;
    let manifest = std::fs::read(env::arm64_release_manifest())?;
    let base = format!("http://{addr}:8080");
    for _ in 0..60 {
        if lan.http_status(&format!("{base}/health")) == 200 {
            break;
        }
        std::thread::sleep(secs(1));
    }
    release::check_provider(&lan, &base, &manifest).map_err(|e| vm.failure(&format!("{e:#}")))
}
