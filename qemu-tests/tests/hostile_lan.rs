//! Issue 15 §8: the hostile-LAN boots. Next to dnsmasq and the honest provider the test LAN
//! holds a rogue DHCP responder (qemu-tests/rogue/rogue_dhcp.py: every DISCOVER and REQUEST
//! answered first with malformed replies: hlen 17 and 255, cut-off options, bogus server ids,
//! a broadcast yiaddr, a broken mask, an off-subnet router, an ACK and a NAK from a server the
//! client did not select) and a rogue provider on 192.0.2.2 whose manifest claims version 9.9.9
//! but is signed by a key outside the trust root, advertised by mDNS (local mode) or on the DHT
//! together with a peer publishing junk and hostile records (internet mode). The VM must boot
//! the honest release, and its console must name what it refused.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, ensure, Context, Result};
use common::*;
use phase_qemu_tests::env;
use phase_qemu_tests::netns::{Lan, BRIDGE_ADDR, BRIDGE_ADDR2};
use phase_qemu_tests::provider::{self, ProviderOpts};
use phase_qemu_tests::qemu::Vm;

/// The rogue release: the honest artifacts with a manifest of version 9.9.9 signed by a fresh
/// key the VM does not trust.
fn badly_signed_release(work: &Path) -> Result<PathBuf> {
    let tree = work.join("rogue-release");
    let dir = tree.join("stable/x86_64");
    std::fs::create_dir_all(&dir)?;
    let src = env::release_dir().join("stable/x86_64");
    for name in ["kernel", "initramfs", "rootfs"] {
        std::fs::copy(src.join(name), dir.join(name)).with_context(|| format!("copy {name}"))?;
    }
    let key = work.join("rogue.key");
    let unsigned = work.join("rogue.unsigned.json");
    let plasmd = env::plasmd();
    let run = |args: &[&str]| -> Result<()> {
        let out = Command::new(&plasmd).args(args).output()?;
        if !out.status.success() {
            bail!(
                "plasmd {args:?} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    };
    let (key_s, unsigned_s, dir_s) = (
        key.display().to_string(),
        unsigned.display().to_string(),
        dir.display().to_string(),
    );
    run(&["keygen", "--out", &key_s])?;
    run(&[
        "manifest",
        "build",
        "--artifacts",
        &dir_s,
        "--channel",
        "stable",
        "--arch",
        "x86_64",
        "--version",
        "9.9.9",
        "--expires-in",
        "1d",
        "--cmdline",
        "console=ttyS0",
        "--out",
        &unsigned_s,
    ])?;
    let manifest = dir.join("manifest.json").display().to_string();
    run(&[
        "manifest",
        "sign",
        "--key",
        &key_s,
        "--in",
        &unsigned_s,
        "--out",
        &manifest,
    ])?;
    Ok(tree)
}

/// Starts the rogue DHCP responder in the LAN; returns once it is sniffing.
fn start_rogue_dhcp(lan: &mut Lan, work: &Path) -> Result<usize> {
    let script = env::repo_root().join("qemu-tests/rogue/rogue_dhcp.py");
    let log = work.join("rogue-dhcp.log");
    let idx = lan.spawn(
        "rogue-dhcp",
        Path::new("python3"),
        &[
            script.display().to_string(),
            "br0".into(),
            BRIDGE_ADDR2.into(),
        ],
        &log,
    )?;
    for _ in 0..50 {
        if std::fs::read_to_string(&log).is_ok_and(|t| t.contains("rogue-dhcp ready")) {
            return Ok(idx);
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let text = lan.proc(idx).map(|p| p.log_text()).unwrap_or_default();
    bail!("rogue DHCP responder did not start:\n{text}")
}

/// The checks both boots share: the rogue DHCP server did answer, the VM logged refusing its
/// replies, and if the VM tried the rogue provider it logged refusing its manifest.
fn check_refusals(vm: &Vm, work: &Path) -> Result<()> {
    let rogue = std::fs::read_to_string(work.join("rogue-dhcp.log")).unwrap_or_default();
    ensure!(
        rogue.contains("rogue-dhcp sent hlen-17"),
        "the rogue DHCP responder never answered (its log: {rogue})"
    );
    let lines = vm.lines();
    if !lines
        .iter()
        .any(|l| l.contains("phase: dhcp refused a reply"))
    {
        return Err(vm.failure("no 'dhcp refused a reply' line although the rogue answered"));
    }
    let rogue_url = format!("http://{BRIDGE_ADDR2}:8080");
    let tried_rogue = lines
        .iter()
        .any(|l| l.contains(&rogue_url) && l.contains("phase:"));
    if tried_rogue
        && !lines
            .iter()
            .any(|l| l.contains(&rogue_url) && l.contains("signatures valid"))
    {
        return Err(vm.failure("the rogue provider was tried but no signature refusal names it"));
    }
    if lines
        .iter()
        .any(|l| l.contains("phase: fetch ok") && l.contains(&rogue_url))
    {
        return Err(vm.failure("an artifact of the rogue provider was accepted"));
    }
    eprintln!("rogue provider tried: {tried_rogue}");
    Ok(())
}

/// Local mode (mDNS) on a hostile LAN.
#[test]
fn hostile_lan_local_mode_boots_the_honest_release() -> Result<()> {
    let test = "hostile_lan_local_mode_boots_the_honest_release";
    if !ready(test)? {
        return Ok(());
    }
    let work = env::work_dir("hostile-local")?;
    let rogue_tree = badly_signed_release(&work)?;
    let (mut lan, _honest) = local_lan("hostl", &work)?;
    start_rogue_dhcp(&mut lan, &work)?;
    let mut rogue = ProviderOpts::local();
    rogue.artifacts = rogue_tree;
    rogue.bind = BRIDGE_ADDR2.to_string();
    provider::start_provider(&mut lan, &rogue, &work, "rogue")?;
    let mut vm = Vm::start(
        &mut lan,
        vm_config("hostile-local", "local", "", 0x41)?,
        &work,
    )?;
    expect_boot_stage(&mut vm, "local", "mdns")?;
    let addr = expect_kexec_and_target(&mut vm)?;
    end_checks(&lan, &vm, &addr)?;
    check_refusals(&vm, &work)?;
    Ok(())
}

/// Internet mode (DHT) on a hostile LAN: besides the rogue provider's own (well-formed, badly
/// signed) record, a peer publishes junk bytes, a record dated +262142-12-31 (the issue-15
/// overflow) and a record in another peer's name under the channel's key.
#[test]
fn hostile_lan_internet_mode_boots_the_honest_release() -> Result<()> {
    let test = "hostile_lan_internet_mode_boots_the_honest_release";
    let probe = env::discovery_probe();
    if !ready(test)? || !env::ready(test, std::slice::from_ref(&probe))? {
        return Ok(());
    }
    let work = env::work_dir("hostile-inet")?;
    let rogue_tree = badly_signed_release(&work)?;
    let (mut lan, dht, bootstrap) = internet_lan("hosti", &work, 3)?;
    start_rogue_dhcp(&mut lan, &work)?;
    let mut rogue = ProviderOpts::local();
    rogue.artifacts = rogue_tree;
    rogue.bind = BRIDGE_ADDR2.to_string();
    rogue.mdns = false;
    rogue.dht_port = Some(4101);
    rogue.bootstrap = dht.iter().take(2).map(|n| n.multiaddr.clone()).collect();
    provider::start_provider(&mut lan, &rogue, &work, "rogue")?;

    let key = "/phase/stable/x86_64/manifest";
    let record = |peer: &str, created_at: &str, url: &str| {
        format!(
            r#"{{"channel":"stable","arch":"x86_64","manifest_url":"{url}","peer_id":"{peer}","version":"99.0.0","created_at":"{created_at}","ttl_secs":3600}}"#
        )
    };
    let files = [
        ("junk", b"\xff\x00 not a record {".to_vec()),
        (
            "year-262142",
            record(
                "@PEER@",
                "+262142-12-31T23:59:59Z",
                &format!("http://{BRIDGE_ADDR}:9/x.json"),
            )
            .into_bytes(),
        ),
        (
            "in-another-name",
            record(
                "12D3KooWLzi9E2ZzVvJ4D8BftFZ3TwGqz5ntN1DHR5Y9y5jXvQyR",
                "2026-12-01T00:00:00Z",
                &format!("http://{BRIDGE_ADDR2}:8080/stable/x86_64/manifest.json"),
            )
            .into_bytes(),
        ),
    ];
    let mut args = vec![
        "dht-put".to_string(),
        "--listen".into(),
        format!("/ip4/{BRIDGE_ADDR2}/tcp/4102"),
    ];
    for n in dht.iter().take(2) {
        args.push("--bootstrap".into());
        args.push(n.multiaddr.clone());
    }
    for (name, bytes) in &files {
        let path = work.join(format!("hostile-record-{name}"));
        std::fs::write(&path, bytes)?;
        args.push("--put".into());
        args.push(format!("{key}={}", path.display()));
    }
    let putter_log = work.join("dht-put.log");
    lan.spawn("dht-put", &probe, &args, &putter_log)?;
    std::thread::sleep(secs(3));

    let cfg = vm_config(
        "hostile-inet",
        "internet",
        &format!("phase.bootstrap={bootstrap}"),
        0x42,
    )?;
    let mut vm = Vm::start(&mut lan, cfg, &work)?;
    expect_boot_stage(&mut vm, "internet", "dht")?;
    let addr = expect_kexec_and_target(&mut vm)?;
    end_checks(&lan, &vm, &addr)?;
    check_refusals(&vm, &work)?;
    drop(dht);
    Ok(())
}
