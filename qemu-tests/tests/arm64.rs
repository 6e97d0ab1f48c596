//! Issue 17 §3-§4: arm64 guests (`qemu-system-aarch64 -M virt -cpu cortex-a57`, TCG) boot the
//! arm64 release end to end, in every mode, from the same x86_64 `plasmd` and release tree that
//! serve x86_64.
//!
//! The first kernel is Debian's arm64 kernel, built without `CONFIG_KEXEC_FILE`: the init must
//! take the `kexec_load` path (its own segments, DTB and trampoline) and say so on the console.
//! Run alone with `make test-qemu-arm`.

mod common;

use std::path::PathBuf;

use anyhow::{ensure, Context, Result};
use common::{expect_boot_stage, expect_kexec_to_switch_root, internet_lan, local_lan, secs};
use phase_qemu_tests::disk::CacheDisk;
use phase_qemu_tests::netns::Lan;
use phase_qemu_tests::provider::DhtNode;
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

fn arm64_vm(name: &str, mode: &str, extra: &str, mac: u8) -> Result<VmConfig> {
    let mut cfg = VmConfig::direct(
        name,
        &env::arm64_kernel()?,
        &env::arm64_initramfs(),
        format!("console=ttyAMA0 panic=-1 phase.mode={mode} phase.onfail=halt {extra}").trim(),
    );
    cfg.arch = GuestArch::Aarch64;
    cfg.mac_suffix = mac;
    Ok(cfg)
}

/// After `manifest ok`: the kexec (its console line must contain `path`: which system call
/// loaded the target), the target stage to `target ready`, and the target's own provider
/// serving the aarch64 release byte for byte. Returns the target's address.
fn kexec_to_serving_target(lan: &Lan, vm: &mut Vm, path: &str) -> Result<String> {
    expect_kexec_to_switch_root(vm)?;
    let lines = vm.lines();
    ensure!(
        lines
            .iter()
            .any(|l| l.contains("phase: cmdline ok mode=") && l.contains("arch=aarch64")),
        "the arm64 init did not default to arch=aarch64"
    );
    let kexec = lines
        .iter()
        .find(|l| l.contains("phase: kexec ok loaded kernel="))
        .context("no kexec ok line")?;
    ensure!(
        kexec.contains(path),
        "the kexec line does not say {path:?}: {kexec}"
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
    release::check_provider(lan, &base, &manifest).map_err(|e| vm.failure(&format!("{e:#}")))?;
    Ok(addr)
}

/// The first kernel of an arm64 boot test.
#[derive(Debug, Clone, Copy)]
enum FirstKernel {
    /// Debian's arm64 kernel (modules in the initramfs, no `KEXEC_FILE`): `kexec_load`.
    Debian,
    /// The project's own (`make kernel ARCH=arm64`: tinyconfig + phase-arm64.config, no
    /// modules, `KEXEC_FILE=y`): `kexec_file_load`, the x86_64 path.
    Own,
}

impl FirstKernel {
    /// The kexec line must contain this.
    fn kexec_path(self) -> &'static str {
        match self {
            FirstKernel::Debian => "by kexec_load (no KEXEC_FILE)",
            FirstKernel::Own => "by kexec_file_load",
        }
    }

    /// A VM config booting this kernel with the arm64 initramfs; `None` when the test must
    /// skip (the own kernel was not built, outside CI).
    fn vm(
        self,
        test: &str,
        name: &str,
        mode: &str,
        extra: &str,
        mac: u8,
    ) -> Result<Option<VmConfig>> {
        let mut cfg = arm64_vm(name, mode, extra, mac)?;
        if let FirstKernel::Own = self {
            let kernel = env::arm64_custom_kernel();
            if !kernel.exists() {
                let why = format!(
                    "{} missing (run `make kernel ARCH=arm64`)",
                    kernel.display()
                );
                return env::skip_or_fail(test, &why).map(|_| None);
            }
            cfg.kernel = Some(kernel);
        }
        Ok(Some(cfg))
    }
}

/// Local mode: mDNS finds the x86_64 host's plasmd, which serves the aarch64 release beside
/// the x86_64 one (§4); the target is loaded by `first`'s kexec path and serves the release.
fn local_mode(test: &str, first: FirstKernel, mac: u8) -> Result<()> {
    if !ready(test)? {
        return Ok(());
    }
    let name = format!("arm64-local-{first:?}").to_lowercase();
    let Some(cfg) = first.vm(test, &name, "local", "", mac)? else {
        return Ok(());
    };
    let work = env::work_dir(&name)?;
    let (mut lan, _p) = local_lan(&format!("a64l{mac:x}"), &work)?;
    let mut vm = Vm::start(&mut lan, cfg, &work)?;
    let discover = expect_boot_stage(&mut vm, "local", "mdns")?;
    ensure!(
        discover.contains("http://192.0.2.1:8080/stable/aarch64/"),
        "discovered another release: {discover}"
    );
    kexec_to_serving_target(&lan, &mut vm, first.kexec_path())?;
    Ok(())
}

/// An arm64 VM in `mode` on a LAN with 5 DHT nodes (`phase.bootstrap` set), with a fresh
/// 512 MiB cache disk, started and past `manifest ok` (discovery by the DHT).
struct DhtBoot {
    disk: CacheDisk,
    /// The disk's SHA-256 before the VM started.
    disk_before: String,
    lan: Lan,
    _dht: Vec<DhtNode>,
    vm: Vm,
    discover: String,
}

/// Starts a [`DhtBoot`]; `None` when the test must skip.
fn dht_boot(test: &str, first: FirstKernel, mode: &str, mac: u8) -> Result<Option<DhtBoot>> {
    if !ready(test)? {
        return Ok(None);
    }
    let name = format!("arm64-{mode}-{first:?}").to_lowercase();
    let work = env::work_dir(&name)?;
    let disk = CacheDisk::create(&work.join("cache.img"), 512)?;
    let disk_before = disk.sha256()?;
    let (mut lan, dht, bootstrap) = internet_lan(&format!("a64{mac:x}"), &work, 5)?;
    let extra = format!("phase.bootstrap={bootstrap}");
    let Some(mut cfg) = first.vm(test, &name, mode, &extra, mac)? else {
        return Ok(None);
    };
    cfg.disks.push(disk.path.clone());
    let mut vm = Vm::start(&mut lan, cfg, &work)?;
    let discover = expect_boot_stage(&mut vm, mode, "dht")?;
    Ok(Some(DhtBoot {
        disk,
        disk_before,
        lan,
        _dht: dht,
        vm,
        discover,
    }))
}

/// Internet mode: the DHT (the arch in the record key) finds the aarch64 release, the cache
/// disk gets it, and the target serves it.
fn internet_mode(test: &str, first: FirstKernel, mac: u8) -> Result<()> {
    let Some(mut b) = dht_boot(test, first, "internet", mac)? else {
        return Ok(());
    };
    ensure!(
        b.discover.contains("/stable/aarch64/"),
        "the DHT gave another release: {}",
        b.discover
    );
    b.vm.expect("phase: cache ok wrote", secs(300))?;
    kexec_to_serving_target(&b.lan, &mut b.vm, first.kexec_path())?;
    Ok(())
}

/// Private mode: the DHT with a fresh identity, nothing written to the cache disk.
fn private_mode(test: &str, first: FirstKernel, mac: u8) -> Result<()> {
    let Some(mut b) = dht_boot(test, first, "private", mac)? else {
        return Ok(());
    };
    kexec_to_serving_target(&b.lan, &mut b.vm, first.kexec_path())?;
    ensure!(
        !b.vm.lines().iter().any(|l| l.contains("phase: cache ok")),
        "private mode wrote the cache"
    );
    drop(b.vm);
    ensure!(
        b.disk.sha256()? == b.disk_before,
        "private mode changed the cache disk"
    );
    Ok(())
}

#[test]
fn arm64_local_mode_debian_kernel_kexec_load() -> Result<()> {
    local_mode(
        "arm64_local_mode_debian_kernel_kexec_load",
        FirstKernel::Debian,
        0x41,
    )
}

#[test]
fn arm64_local_mode_own_kernel_kexec_file_load() -> Result<()> {
    local_mode(
        "arm64_local_mode_own_kernel_kexec_file_load",
        FirstKernel::Own,
        0x45,
    )
}

#[test]
fn arm64_internet_mode_debian_kernel_kexec_load() -> Result<()> {
    internet_mode(
        "arm64_internet_mode_debian_kernel_kexec_load",
        FirstKernel::Debian,
        0x42,
    )
}

#[test]
fn arm64_internet_mode_own_kernel_kexec_file_load() -> Result<()> {
    internet_mode(
        "arm64_internet_mode_own_kernel_kexec_file_load",
        FirstKernel::Own,
        0x46,
    )
}

#[test]
fn arm64_private_mode_debian_kernel_kexec_load() -> Result<()> {
    private_mode(
        "arm64_private_mode_debian_kernel_kexec_load",
        FirstKernel::Debian,
        0x43,
    )
}

#[test]
fn arm64_private_mode_own_kernel_kexec_file_load() -> Result<()> {
    private_mode(
        "arm64_private_mode_own_kernel_kexec_file_load",
        FirstKernel::Own,
        0x47,
    )
}

/// The arm64 USB/ESP image (`make image ARCH=arm64 MODE=local`) under AAVMF: systemd-bootaa64
/// starts Debian's kernel through its EFI stub, and the init kexecs from that EFI boot (the
/// DTB's `linux,uefi-*` properties carried over) into the target.
#[test]
fn arm64_usb_image_boots_under_aavmf() -> Result<()> {
    let test = "arm64_usb_image_boots_under_aavmf";
    if !ready(test)? {
        return Ok(());
    }
    let code = PathBuf::from("/usr/share/AAVMF/AAVMF_CODE.fd");
    let vars_src = PathBuf::from("/usr/share/AAVMF/AAVMF_VARS.fd");
    let image = env::repo_root().join("build/aarch64/phase-local.img");
    if !image.exists() {
        return env::skip_or_fail(
            test,
            "no build/aarch64/phase-local.img (run `make ARCH=arm64 image MODE=local`)",
        )
        .map(|_| ());
    }
    if !code.exists() || !vars_src.exists() {
        return env::skip_or_fail(test, "AAVMF firmware missing (make deps ARCH=arm64)")
            .map(|_| ());
    }
    let work = env::work_dir("arm64-usb")?;
    let vars = work.join("AAVMF_VARS.fd");
    std::fs::copy(&vars_src, &vars)?;
    let disk = work.join("usb.img");
    common::copy_sparse(&image, &disk)?;
    let (mut lan, _p) = local_lan("a64u", &work)?;
    let cfg = VmConfig {
        kernel: None,
        initrd: None,
        disks: vec![disk],
        firmware: Some((code, vars)),
        ..arm64_vm("arm64-usb", "local", "", 0x44)?
    };
    let mut vm = Vm::start(&mut lan, cfg, &work)?;
    // AAVMF + systemd-boot under TCG take a while before the kernel prints anything.
    vm.expect("phase: init stage=boot version=", secs(600))?;
    vm.expect("phase: discover ok mdns", secs(240))?;
    vm.expect("phase: manifest ok", secs(60))?;
    kexec_to_serving_target(&lan, &mut vm, FirstKernel::Debian.kexec_path())?;
    Ok(())
}
