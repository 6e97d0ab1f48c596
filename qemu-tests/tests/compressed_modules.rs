//! Issue 16 §3: kernel modules as distributions ship them. Debian's 6.1 kernel cannot
//! decompress modules itself (no `CONFIG_MODULE_DECOMPRESS`), so an initramfs whose modules were
//! compressed with xz or zstd at build time (`make initramfs-compressed-modules`:
//! build/initramfs-mod{xz,zst}.cpio.zst) boots only if the init decompresses them. Each boot
//! must load every module of the list (virtio_net among them: no network otherwise) and go on
//! through kexec to the target stage in local mode.

mod common;

use std::path::PathBuf;

use anyhow::Result;
use common::*;
use phase_qemu_tests::env;
use phase_qemu_tests::qemu::{Vm, VmConfig};

fn compressed_initramfs(fmt: &str) -> PathBuf {
    env::repo_root().join(format!("build/initramfs-mod{fmt}.cpio.zst"))
}

fn boot_with_compressed_modules(fmt: &str, mac: u8) -> Result<()> {
    let test = format!("{fmt}_compressed_modules_are_loaded_by_the_init");
    let initrd = compressed_initramfs(fmt);
    if !ready(&test)? || !env::ready(&test, std::slice::from_ref(&initrd))? {
        return Ok(());
    }
    let work = env::work_dir(&format!("modules-{fmt}"))?;
    let (mut lan, _p) = local_lan(&format!("km{fmt}"), &work)?;
    let mut cfg = VmConfig::direct(
        &format!("modules-{fmt}"),
        &env::kernel()?,
        &initrd,
        &append("local", ""),
    );
    cfg.mac_suffix = mac;
    let mut vm = Vm::start(&mut lan, cfg, &work)?;
    let modules = vm.expect("phase: modules ok", secs(240))?;
    let loaded = modules
        .split_whitespace()
        .skip_while(|w| *w != "ok")
        .nth(1)
        .and_then(|n| n.parse::<u32>().ok())
        .unwrap_or(0);
    if loaded == 0 {
        return Err(vm.failure(&format!("no module loaded: {modules}")));
    }
    vm.expect("phase: link ok", secs(60))?;
    vm.expect("phase: dhcp ok", secs(90))?;
    vm.expect("phase: discover ok mdns", secs(180))?;
    vm.expect("phase: manifest ok", secs(60))?;
    let addr = expect_kexec_and_target(&mut vm)?;
    end_checks(&lan, &vm, &addr)?;
    eprintln!("{fmt}: {modules}; target at {addr}");
    Ok(())
}

#[test]
fn xz_compressed_modules_are_loaded_by_the_init() -> Result<()> {
    boot_with_compressed_modules("xz", 0x51)
}

#[test]
fn zstd_compressed_modules_are_loaded_by_the_init() -> Result<()> {
    boot_with_compressed_modules("zst", 0x52)
}
