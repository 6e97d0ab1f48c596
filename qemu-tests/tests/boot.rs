//! The boot tests of issue 9: each boots Debian's kernel (or the custom one) with the phase
//! initramfs under QEMU/TCG on a namespace LAN, through a real kexec into the target stage.
//! Run them one at a time (`.config/nextest.toml` puts them in a group of one thread).

mod common;

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use common::*;
use phase_qemu_tests::disk::CacheDisk;
use phase_qemu_tests::netns::BRIDGE_ADDR2;
use phase_qemu_tests::provider::{self, ProviderOpts};
use phase_qemu_tests::qemu::{NicModel, Vm, VmConfig};
use phase_qemu_tests::{env, release, timing};

/// Test 1: local: mDNS, fetch + verify, kexec, target, overlay; the VM's plasmd serves the release.
#[test]
fn local_mode_boots_via_mdns_and_target_serves_identical_release() -> Result<()> {
    let test = "local_mode_boots_via_mdns_and_target_serves_identical_release";
    if !ready(test)? {
        return Ok(());
    }
    let work = env::work_dir("local")?;
    let (mut lan, _p) = local_lan("local", &work)?;
    let mut vm = Vm::start(&mut lan, vm_config("local", "local", "", 0x11)?, &work)?;
    let discover = expect_boot_stage(&mut vm, "local", "mdns")?;
    ensure!(
        discover.contains("http://192.0.2.1:8080"),
        "discovered another provider: {discover}"
    );
    let addr = expect_kexec_and_target(&mut vm)?;
    end_checks(&lan, &vm, &addr)?;
    // Debian's kernel has transparent huge pages: /run takes `huge=within_size` (issue 18 §4).
    let lines = vm.lines();
    let fallback = lines.iter().find(|l| l.contains("mount fallback"));
    ensure!(
        fallback.is_none(),
        "Debian's kernel refused a mount option: {fallback:?}"
    );
    Ok(())
}

/// Test 2: internet: no mDNS, a DHT of 5 nodes + phase.bootstrap; the end checks; the cache disk holds
/// the manifest and artifacts after poweroff.
#[test]
fn internet_mode_boots_via_dht_and_fills_cache_disk() -> Result<()> {
    let test = "internet_mode_boots_via_dht_and_fills_cache_disk";
    if !ready(test)? {
        return Ok(());
    }
    let work = env::work_dir("internet")?;
    let disk = CacheDisk::create(&work.join("cache.img"), 512)?;
    let (mut lan, _dht, bootstrap) = internet_lan("inet", &work, 5)?;
    let mut cfg = vm_config(
        "internet",
        "internet",
        &format!("phase.bootstrap={bootstrap}"),
        0x12,
    )?;
    cfg.disks.push(disk.path.clone());
    let mut vm = Vm::start(&mut lan, cfg, &work)?;
    expect_boot_stage(&mut vm, "internet", "dht")?;
    vm.expect("phase: cache ok wrote", secs(300))?;
    let addr = expect_kexec_and_target(&mut vm)?;
    end_checks(&lan, &vm, &addr)?;
    powerdown(&mut vm)?;
    drop(vm);

    let manifest = publisher_manifest()?;
    let listing = disk.list("::phase")?;
    eprintln!("cache disk ::phase = {listing:?}");
    let cached = disk.read("::phase/manifest.json", &work)?;
    ensure!(
        cached == manifest,
        "cached manifest differs from the publisher's"
    );
    for a in release::artifacts(&manifest)? {
        let data = disk.read(&format!("::phase/{}", a.name), &work)?;
        ensure!(
            release::sha256_hex(&data) == a.sha256 && data.len() as u64 == a.size_bytes,
            "cached {} does not match the manifest",
            a.name
        );
    }
    Ok(())
}

/// Test 3: private: nothing is written to the cache disk and the peer id is fresh on every boot.
#[test]
fn private_mode_leaves_disk_untouched_and_uses_fresh_peer_id() -> Result<()> {
    let test = "private_mode_leaves_disk_untouched_and_uses_fresh_peer_id";
    if !ready(test)? {
        return Ok(());
    }
    let work = env::work_dir("private")?;
    let disk = CacheDisk::create(&work.join("cache.img"), 512)?;
    let before = disk.sha256()?;
    let (mut lan, _dht, bootstrap) = internet_lan("priv", &work, 5)?;
    let mut peers = Vec::new();
    for round in 0..2u8 {
        let name = format!("private{round}");
        let mut cfg = vm_config(
            &name,
            "private",
            &format!("phase.bootstrap={bootstrap}"),
            0x20 + round,
        )?;
        cfg.disks.push(disk.path.clone());
        let mut vm = Vm::start(&mut lan, cfg, &work)?;
        expect_boot_stage(&mut vm, "private", "dht")?;
        let addr = expect_kexec_and_target(&mut vm)?;
        end_checks(&lan, &vm, &addr)?;
        ensure!(
            !vm.lines().iter().any(|l| l.contains("phase: cache ok")),
            "private mode wrote the cache"
        );
        // Private mode never listens: no chunk server, no `_phase-peer._tcp` announcement.
        ensure!(
            !vm.lines().iter().any(|l| l.contains("peers: ")),
            "private mode served or looked for peers"
        );
        let ids = peer_ids(&vm.lines());
        let id = ids
            .first()
            .cloned()
            .ok_or_else(|| vm.failure("no libp2p peer id (12D3KooW...) on the console"))?;
        eprintln!("boot {round}: peer id {id}");
        peers.push(id);
        powerdown(&mut vm)?;
    }
    ensure!(
        peers[0] != peers[1],
        "peer id {} was reused across private boots",
        peers[0]
    );
    ensure!(
        disk.sha256()? == before,
        "private mode changed the cache disk"
    );
    Ok(())
}

/// Test 4: offline from cache: local mode, no provider at all, boots from a cache disk holding
/// the publisher's release in the layout test 2 checks the init writes (`::phase/manifest.json`
/// and one file per artifact name), filled on the host so this test runs on its own.
#[test]
fn local_mode_boots_offline_from_cache_disk() -> Result<()> {
    let test = "local_mode_boots_offline_from_cache_disk";
    if !ready(test)? {
        return Ok(());
    }
    let work = env::work_dir("offline")?;
    let disk = cache_disk_with_release(&work)?;
    let img = disk.path.clone();
    let mut lan = phase_qemu_tests::netns::Lan::create("offline")?;
    lan.start_dnsmasq(&work)?;
    let mut cfg = vm_config("offline", "local", "", 0x14)?;
    cfg.disks.push(img);
    let mut vm = Vm::start(&mut lan, cfg, &work)?;
    expect_boot_stage(&mut vm, "local", "cache")?;
    let addr = expect_kexec_and_target(&mut vm)?;
    // The boot stage ran no DHCP (the release came from the disk): nothing to hand over, so
    // the target ran the whole exchange (issue 18 §3 lease handover, the path without one).
    let lines = vm.lines();
    ensure!(
        !lines
            .iter()
            .any(|l| l.contains("phase: dhcp ok") && l.contains("the boot stage's lease")),
        "a lease was taken over although the boot stage had none"
    );
    end_checks(&lan, &vm, &addr)?;
    Ok(())
}

/// A cache disk holding the publisher's release in the layout test 2 checks the init writes
/// (`::phase/manifest.json` and one file per artifact name), filled on the host with mtools.
fn cache_disk_with_release(work: &std::path::Path) -> Result<CacheDisk> {
    let disk = CacheDisk::create(&work.join("cache.img"), 512)?;
    disk.mkdir("::phase")?;
    let manifest_path = env::release_manifest();
    disk.write(&manifest_path, "::phase/manifest.json")?;
    let release_dir = manifest_path
        .parent()
        .context("manifest has no directory")?;
    for a in release::artifacts(&publisher_manifest()?)? {
        disk.write(
            &release_dir.join(&a.download_url),
            &format!("::phase/{}", a.name),
        )?;
    }
    Ok(disk)
}

/// Issue 16 §6: private mode with `phase.net=off` on a machine with no network device at all
/// boots the signed release carried on its cache partition, brings no interface up, says so
/// in both stages, and writes nothing (the disk is byte-identical afterwards).
#[test]
fn private_mode_without_network_boots_the_release_on_the_boot_medium() -> Result<()> {
    let test = "private_mode_without_network_boots_the_release_on_the_boot_medium";
    if !ready(test)? {
        return Ok(());
    }
    let work = env::work_dir("private-offline")?;
    let disk = cache_disk_with_release(&work)?;
    let before = disk.sha256()?;
    let mut lan = phase_qemu_tests::netns::Lan::create("privoff")?;
    let mut cfg = vm_config("private-offline", "private", "phase.net=off", 0x1d)?;
    cfg.nic = false;
    cfg.disks.push(disk.path.clone());
    let mut vm = Vm::start(&mut lan, cfg, &work)?;
    vm.expect("phase: init stage=boot version=", secs(240))?;
    vm.expect("phase: cmdline ok mode=private", secs(60))?;
    vm.expect("phase: cache-mount ok mounted", secs(120))?;
    vm.expect("phase: discover ok cache", secs(120))?;
    vm.expect("phase: manifest ok", secs(60))?;
    vm.expect(
        "phase: net off (phase.net=off): no interface brought up",
        secs(60),
    )?;
    vm.expect("phase: kexec ok loaded kernel=", secs(600))?;
    vm.expect("phase: init stage=target version=", secs(300))?;
    vm.expect("phase: switch_root ok", secs(120))?;
    vm.expect(
        "phase: net off (phase.net=off): no interface brought up",
        secs(60),
    )?;
    vm.expect("phase: target ready in", secs(120))?;
    let lines = vm.lines();
    for forbidden in ["phase: link ", "phase: dhcp ", "phase: cache ok wrote"] {
        if lines.iter().any(|l| l.contains(forbidden)) {
            return Err(vm.failure(&format!("'{forbidden}' with phase.net=off")));
        }
    }
    powerdown(&mut vm)?;
    drop(vm);
    ensure!(
        disk.sha256()? == before,
        "private mode without network changed the boot medium"
    );
    Ok(())
}

/// Test 5: self-hosting loop: VM A boots from the host, the host provider stops, VM B boots from A.
#[test]
fn second_vm_boots_from_first_vm_after_host_provider_stops() -> Result<()> {
    let test = "second_vm_boots_from_first_vm_after_host_provider_stops";
    if !ready(test)? {
        return Ok(());
    }
    let work = env::work_dir("selfhost")?;
    let (mut lan, host) = local_lan("self", &work)?;
    let mut a = Vm::start(&mut lan, vm_config("vm-a", "local", "", 0x15)?, &work)?;
    expect_boot_stage(&mut a, "local", "mdns")?;
    let addr_a = expect_kexec_and_target(&mut a)?;
    end_checks(&lan, &a, &addr_a)?;
    lan.stop(host);
    ensure!(
        lan.http_status("http://192.0.2.1:8080/health") == 0,
        "host provider still answers"
    );
    let mut b = Vm::start(&mut lan, vm_config("vm-b", "local", "", 0x16)?, &work)?;
    let discover = expect_boot_stage(&mut b, "local", "mdns")?;
    ensure!(
        discover.contains(&format!("http://{addr_a}:8080")),
        "VM B did not discover VM A: {discover}"
    );
    let addr_b = expect_kexec_and_target(&mut b)?;
    end_checks(&lan, &b, &addr_b)?;
    Ok(())
}

/// Test 6: USB image: `make image` under OVMF through systemd-boot's local entry, then test 1's checks.
#[test]
fn usb_image_boots_under_uefi_via_systemd_boot_local_entry() -> Result<()> {
    let test = "usb_image_boots_under_uefi_via_systemd_boot_local_entry";
    if !ready(test)? {
        return Ok(());
    }
    let code = std::path::PathBuf::from("/usr/share/OVMF/OVMF_CODE_4M.fd");
    let vars_src = std::path::PathBuf::from("/usr/share/OVMF/OVMF_VARS_4M.fd");
    let Some(image) = env::usb_image().filter(|p| p.exists()) else {
        return env::skip_or_fail(
            test,
            "no build/phase-local.img (run `make image MODE=local`)",
        )
        .map(|_| ());
    };
    if !code.exists() || !vars_src.exists() {
        return env::skip_or_fail(test, "OVMF firmware missing (apt-get install ovmf)").map(|_| ());
    }
    let work = env::work_dir("usb")?;
    let vars = work.join("OVMF_VARS_4M.fd");
    std::fs::copy(&vars_src, &vars)?;
    let disk = work.join("usb.img");
    copy_sparse(&image, &disk)?;
    let (mut lan, _p) = local_lan("usb", &work)?;
    let cfg = VmConfig {
        kernel: None,
        initrd: None,
        disks: vec![disk],
        firmware: Some((code, vars)),
        mac_suffix: 0x17,
        ..VmConfig::direct(
            "usb",
            std::path::Path::new("-"),
            std::path::Path::new("-"),
            "",
        )
    };
    let mut vm = Vm::start(&mut lan, cfg, &work)?;
    // OVMF + systemd-boot under TCG take a while before the kernel prints anything.
    vm.expect("phase: init stage=boot version=", secs(600))?;
    vm.expect("phase: cmdline ok mode=local", secs(60))?;
    vm.expect("phase: discover ok", secs(240))?;
    vm.expect("phase: manifest ok", secs(60))?;
    let addr = expect_kexec_and_target(&mut vm)?;
    end_checks(&lan, &vm, &addr)?;
    Ok(())
}

/// Test 7: custom kernel: `make kernel`'s bzImage (no modules) boots the initramfs and kexecs.
#[test]
fn custom_kernel_boots_without_modules_and_kexecs() -> Result<()> {
    let test = "custom_kernel_boots_without_modules_and_kexecs";
    if !ready(test)? {
        return Ok(());
    }
    let kernel = env::custom_kernel();
    if !kernel.exists() {
        return env::skip_or_fail(
            test,
            &format!("{} missing (run `make kernel`, ~6 min)", kernel.display()),
        )
        .map(|_| ());
    }
    let work = env::work_dir("custom")?;
    let (mut lan, _p) = local_lan("custom", &work)?;
    let mut cfg = vm_config("custom", "local", "", 0x18)?;
    cfg.kernel = Some(kernel);
    let mut vm = Vm::start(&mut lan, cfg, &work)?;
    expect_boot_stage(&mut vm, "local", "mdns")?;
    let addr = expect_kexec_and_target(&mut vm)?;
    end_checks(&lan, &vm, &addr)?;
    // This kernel has no transparent huge pages (tinyconfig): it refused /run's
    // `huge=within_size` and the boot stage mounted /run with its fallback options. The target
    // stage runs the release's (Debian's) kernel, which takes the option.
    let lines = vm.lines();
    let target = lines
        .iter()
        .position(|l| l.contains("phase: init stage=target"))
        .context("no target stage line")?;
    let fallbacks: Vec<usize> = lines
        .iter()
        .enumerate()
        .filter(|(_, l)| l.contains("phase: mount fallback: tmpfs on /run"))
        .map(|(i, _)| i)
        .collect();
    ensure!(
        fallbacks.len() == 1 && fallbacks[0] < target,
        "`mount fallback` lines for /run at {fallbacks:?}, expected one before the target \
         stage's first line ({target})"
    );
    Ok(())
}

/// Test 8a: refusal: a provider serving a tampered rootfs is refused and the good provider is used.
#[test]
fn tampered_rootfs_is_refused_and_good_provider_used() -> Result<()> {
    let test = "tampered_rootfs_is_refused_and_good_provider_used";
    if !ready(test)? {
        return Ok(());
    }
    let work = env::work_dir("tamper")?;
    let bad_tree = tampered_release(&work)?;
    let (mut lan, _good) = local_lan("tamper", &work)?;
    let mut bad = ProviderOpts::local();
    bad.artifacts = bad_tree;
    bad.bind = BRIDGE_ADDR2.to_string();
    provider::start_provider(&mut lan, &bad, &work, "bad")?;
    let mut vm = Vm::start(&mut lan, vm_config("tamper", "local", "", 0x19)?, &work)?;
    expect_boot_stage(&mut vm, "local", "mdns")?;
    let addr = expect_kexec_and_target(&mut vm)?;
    // Whatever the order the two providers were tried in, what booted is the signed rootfs.
    end_checks(&lan, &vm, &addr)?;
    let lines = vm.lines();
    let used_bad = lines
        .iter()
        .any(|l| l.contains("phase: fetch ok rootfs") && l.contains(BRIDGE_ADDR2));
    ensure!(
        !used_bad,
        "the tampered rootfs from {BRIDGE_ADDR2} was accepted"
    );
    let tried_bad = lines
        .iter()
        .any(|l| l.contains(BRIDGE_ADDR2) && l.contains("rootfs"));
    if tried_bad {
        ensure!(
            lines
                .iter()
                .any(|l| l.contains("phase:") && (l.contains("mismatch") || l.contains("refused"))),
            "the tampered rootfs was fetched but no refusal was logged"
        );
    }
    Ok(())
}

/// Test 8b: refusal: with only the tampered provider and phase.onfail=halt the machine halts with the
/// error on the console and never kexecs.
#[test]
fn only_tampered_provider_with_onfail_halt_halts_with_error() -> Result<()> {
    let test = "only_tampered_provider_with_onfail_halt_halts_with_error";
    if !ready(test)? {
        return Ok(());
    }
    let work = env::work_dir("tamperhalt")?;
    let bad_tree = tampered_release(&work)?;
    let mut lan = phase_qemu_tests::netns::Lan::create("thalt")?;
    lan.start_dnsmasq(&work)?;
    let mut bad = ProviderOpts::local();
    bad.artifacts = bad_tree;
    provider::start_provider(&mut lan, &bad, &work, "bad")?;
    let mut vm = Vm::start(
        &mut lan,
        vm_config("tamperhalt", "local", "phase.timeout=30", 0x1a)?,
        &work,
    )?;
    vm.set_fail_on(&[
        "Kernel panic",
        "phase: kexec ok",
        "phase: init stage=target",
    ]);
    expect_boot_stage(&mut vm, "local", "mdns")?;
    let failed = vm.expect(" failed after ", secs(600))?;
    ensure!(
        failed.contains("phase:"),
        "unexpected failure line: {failed}"
    );
    // Discovery keeps browsing for another provider until phase.timeout (30 s) runs out.
    vm.expect("phase: discover: phase.timeout of 30s reached", secs(120))?;
    vm.expect("phase: onfail=halt", secs(60))?;
    // Nothing more may happen: no kexec within a further 20 s.
    let more = vm.expect("phase: kexec ok", Duration::from_secs(20));
    ensure!(more.is_err(), "machine went on after onfail=halt");
    let text = vm.lines().join("\n");
    ensure!(
        text.contains("rootfs"),
        "the error on the console does not name the rootfs:\n{failed}"
    );
    Ok(())
}

/// Test 9: orderly shutdown: ACPI powerdown stops the services, logs poweroff, QEMU exits.
#[test]
fn acpi_powerdown_stops_services_and_powers_off() -> Result<()> {
    let test = "acpi_powerdown_stops_services_and_powers_off";
    if !ready(test)? {
        return Ok(());
    }
    let work = env::work_dir("shutdown")?;
    let (mut lan, _p) = local_lan("shut", &work)?;
    let mut vm = Vm::start(&mut lan, vm_config("shutdown", "local", "", 0x1b)?, &work)?;
    expect_boot_stage(&mut vm, "local", "mdns")?;
    expect_kexec_and_target(&mut vm)?;
    vm.monitor("system_powerdown")?;
    vm.expect("phase: shutdown requested by power-button", secs(60))?;
    vm.expect("phase: service ", secs(60))?;
    let stopped = vm
        .lines()
        .iter()
        .rev()
        .find(|l| l.contains("phase: service "))
        .cloned()
        .unwrap_or_default();
    ensure!(
        stopped.contains(" stopped in "),
        "expected a service stop line, got {stopped:?}"
    );
    vm.expect("phase: unmount ok", secs(60))?;
    vm.expect("phase: poweroff", secs(60))?;
    let st = vm.wait_exit(secs(60))?;
    eprintln!("QEMU exited: {st}");
    Ok(())
}

/// `phase.kexec=never`: the boot stage writes `/phase/boot` and runs the target stage on the
/// running kernel. The boot stage skipped the modules marked `@target` (loop, squashfs, overlay,
/// evdev, button; issue 18 §3), so it loads them first: the overlay root mounts, the power
/// button is watched, and the machine serves the release it booted.
#[test]
fn kexec_never_loads_the_target_modules_and_runs_the_target_in_process() -> Result<()> {
    let test = "kexec_never_loads_the_target_modules_and_runs_the_target_in_process";
    if !ready(test)? {
        return Ok(());
    }
    let work = env::work_dir("nokexec")?;
    let (mut lan, _p) = local_lan("nokex", &work)?;
    let cfg = vm_config("nokexec", "local", "phase.kexec=never", 0x1e)?;
    let mut vm = Vm::start(&mut lan, cfg, &work)?;
    vm.set_fail_on(&[
        "Kernel panic",
        "phase: onfail=",
        "phase: kexec ok loaded",
        "phase: init stage=target",
    ]);
    expect_boot_stage(&mut vm, "local", "mdns")?;
    vm.expect("phase: kexec ok skipped (phase.kexec=never)", secs(600))?;
    vm.expect("phase: modules ok", secs(120))?;
    vm.expect("phase: verify ok version=", secs(300))?;
    vm.expect("phase: rootfs ok overlay on /newroot", secs(120))?;
    vm.expect("phase: power button watched", secs(120))?;
    vm.expect("phase: target ready in", secs(120))?;
    let lines = vm.lines();
    let dhcp = lines
        .iter()
        .rev()
        .find(|l| l.contains("phase: dhcp ok"))
        .context("no dhcp ok line")?;
    let addr = timing::dhcp_addr(dhcp).context("address in the dhcp line")?;
    end_checks(&lan, &vm, &addr)
}

/// Issue 18 §3, `@device` modules: a machine whose only NIC is an Intel 82540EM (QEMU's
/// `e1000`) and no virtio device at all. Each stage loads e1000 because a PCI device's modalias
/// matches one of its aliases, leaves out the virtio drivers (no device), and the boot runs
/// through mDNS, the kexec and the target stage on that NIC. Every other test boots virtio-net
/// only, where e1000 is the one left out. No disk either: `@disk` modules (vfat) are left out.
#[test]
fn e1000_only_machine_loads_e1000_and_leaves_out_the_virtio_drivers() -> Result<()> {
    let test = "e1000_only_machine_loads_e1000_and_leaves_out_the_virtio_drivers";
    if !ready(test)? {
        return Ok(());
    }
    let work = env::work_dir("e1000")?;
    let (mut lan, _p) = local_lan("e1000", &work)?;
    let cfg = VmConfig {
        nic_model: NicModel::E1000,
        ..vm_config("e1000", "local", "", 0x1f)?
    };
    let mut vm = Vm::start(&mut lan, cfg, &work)?;
    vm.set_fail_on(&["Kernel panic", "phase: onfail="]);
    let check = |line: &str| -> Result<()> {
        let no_device = line
            .split_once("no device for ")
            .map(|(_, rest)| rest.split_whitespace().next().unwrap_or_default())
            .unwrap_or_default()
            .trim_end_matches(',');
        let left_out: Vec<&str> = no_device.split(',').collect();
        ensure!(
            ["virtio_pci", "virtio_net", "virtio_blk", "virtio_rng"]
                .iter()
                .all(|m| left_out.contains(m))
                && !left_out.contains(&"e1000"),
            "virtio drivers left out, e1000 loaded: {line}"
        );
        // No disk either: the cache's vfat modules wait for one (`@disk`); the cache-disk tests
        // (internet mode writes the cache) show them loaded when a disk is there.
        ensure!(
            line.contains(", no disk for vfat,nls_cp437,nls_ascii "),
            "vfat left out on a diskless machine: {line}"
        );
        Ok(())
    };
    vm.expect("phase: init stage=boot version=", secs(240))?;
    // The driver's probe prints while the module loads, before the stage's line.
    vm.expect("e1000 0000:", secs(120))?;
    check(&vm.expect("phase: modules ok", secs(120))?)?;
    vm.expect("phase: link ok eth0", secs(90))?;
    let boot_dhcp = vm.expect("phase: dhcp ok", secs(90))?;
    vm.expect("phase: discover ok mdns", secs(180))?;
    vm.expect("phase: init stage=target version=", secs(600))?;
    check(&vm.expect("phase: modules ok", secs(120))?)?;
    let dhcp = vm.expect("phase: dhcp ok", secs(120))?;
    vm.expect("phase: target ready in", secs(120))?;
    let addr = timing::dhcp_addr(&dhcp).context("address in the target's dhcp line")?;
    // The target configured the boot stage's lease without a DHCP exchange (handed over in the
    // initrd): the same address, said on its line.
    ensure!(
        dhcp.contains("(the boot stage's lease, ")
            && timing::dhcp_addr(&boot_dhcp).as_deref() == Some(addr.as_str()),
        "the target did not take over the boot stage's lease: {boot_dhcp} / {dhcp}"
    );
    end_checks(&lan, &vm, &addr)
}

/// Issue 18 §3: the initramfs's rescue tools are klibc-utils' (scripts/rescue-tools.sh), not
/// busybox. A boot stage that fails at once (an unknown `phase.mode`: no policy could be read,
/// so PID 1 falls back to rescue) opens the initramfs's `/bin/sh` on the console; a command
/// typed there runs, a second klibc tool (`uname`) loads the klibc shared object from `/lib`,
/// and after `exit` PID 1 runs the stages again.
#[test]
fn failed_boot_stage_opens_the_initramfs_rescue_shell() -> Result<()> {
    let test = "failed_boot_stage_opens_the_initramfs_rescue_shell";
    if !ready(test)? {
        return Ok(());
    }
    let work = env::work_dir("irescue")?;
    let mut lan = phase_qemu_tests::netns::Lan::create("iresc")?;
    let cfg = VmConfig {
        append: append("no-such-mode", "").replace("phase.onfail=halt", ""),
        ..vm_config("irescue", "local", "", 0x1d)?
    };
    let mut vm = Vm::start(&mut lan, cfg, &work)?;
    vm.set_fail_on(&["Kernel panic", "phase: kexec ok"]);
    vm.expect("phase: init stage=boot version=", secs(240))?;
    vm.expect("phase: boot failed (attempt 1)", secs(60))?;
    vm.expect("phase: onfail=rescue exec /bin/sh", secs(60))?;
    vm.send_console("echo rescue-ok-$((6*7)); uname -s -m\nexit\n")?;
    vm.expect("rescue-ok-42", secs(60))?;
    vm.expect("Linux x86_64", secs(60))?;
    let exited = vm.expect("phase: rescue shell exited", secs(60))?;
    ensure!(
        exited.contains("exit status: 0"),
        "the rescue shell did not exit cleanly: {exited}"
    );
    vm.expect("phase: boot failed (attempt 2)", secs(60))?;
    Ok(())
}

/// Issue 16 §5: with `phase.onfail=rescue`, a target stage that fails after switch_root (here
/// `phase.init` names an init the rootfs does not have) opens the rootfs's shell on the console
/// instead of retrying a stage whose initramfs is gone; a command typed there runs, and after
/// `exit` the machine reboots (QEMU `-no-reboot` then exits).
#[test]
fn missing_phase_init_after_switch_root_opens_the_rootfs_shell_then_reboots() -> Result<()> {
    let test = "missing_phase_init_after_switch_root_opens_the_rootfs_shell_then_reboots";
    if !ready(test)? {
        return Ok(());
    }
    let work = env::work_dir("rescue")?;
    let (mut lan, _p) = local_lan("rescue", &work)?;
    let cfg = VmConfig {
        append: append("local", "phase.init=/sbin/no-such-init phase.onfail=rescue")
            .replace("phase.onfail=halt ", ""),
        ..vm_config("rescue", "local", "", 0x1c)?
    };
    let mut vm = Vm::start(&mut lan, cfg, &work)?;
    // The rootfs's busybox banner is the expected outcome here, not a failure.
    vm.set_fail_on(&["Kernel panic"]);
    expect_boot_stage(&mut vm, "local", "mdns")?;
    vm.expect("phase: switch_root ok", secs(600))?;
    vm.expect("phase: exec /sbin/no-such-init (phase.init)", secs(60))?;
    vm.expect("phase: target failed after switch_root", secs(60))?;
    vm.expect("phase: onfail=rescue exec /bin/sh", secs(60))?;
    vm.expect("built-in shell (ash)", secs(60))?;
    vm.send_console("echo rescue-ok-$((6*7))\nexit\n")?;
    vm.expect("rescue-ok-42", secs(60))?;
    vm.expect("phase: rescue shell exited; rebooting", secs(60))?;
    vm.expect("phase: onfail=rescue reboot", secs(60))?;
    vm.wait_exit(secs(60))?;
    ensure!(
        !vm.lines().iter().any(|l| l.contains("phase: target ready")),
        "the target reported ready without an init"
    );
    Ok(())
}
