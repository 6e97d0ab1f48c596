//! Issue 19 §6: a small boot storm. Three VMs boot at once in local mode from one provider
//! whose link is capped (`tc tbf` on br0: what the namespace's own stack sends, which is the
//! provider, dnsmasq and its mDNS; frames the bridge forwards between VMs do not pass it). The
//! VMs find each other by mDNS (`_phase-peer._tcp`) and trade verified chunks, so the provider
//! sends well under three copies of the release.

mod common;

use std::time::Instant;

use anyhow::{ensure, Context, Result};
use common::*;
use phase_qemu_tests::qemu::Vm;
use phase_qemu_tests::{env, release};

/// The provider's cap: 8 Mbit/s, about 20 s for one copy of the ~20 MB test release.
const PROVIDER_RATE: &str = "8mbit";
const VMS: u8 = 3;

/// Bytes the namespace has sent out of br0 (the provider's egress, plus DHCP and mDNS).
fn br0_tx_bytes(lan: &phase_qemu_tests::netns::Lan) -> Result<u64> {
    let out = lan.ip(&["-s", "-j", "link", "show", "br0"])?;
    let v: serde_json::Value = serde_json::from_str(&out).context("ip -j output")?;
    v[0]["stats64"]["tx"]["bytes"]
        .as_u64()
        .context("tx bytes of br0")
}

/// Test 19.6: three VMs at once, the provider capped; each reaches `target ready`, the VMs
/// name the peers they took chunks from, and the provider sent less than two releases.
#[test]
fn three_vms_boot_at_once_and_fetch_chunks_from_each_other() -> Result<()> {
    let test = "three_vms_boot_at_once_and_fetch_chunks_from_each_other";
    if !ready(test)? {
        return Ok(());
    }
    let manifest = publisher_manifest()?;
    let release_bytes: u64 = release::artifacts(&manifest)?
        .iter()
        .map(|a| a.size_bytes)
        .sum();
    let work = env::work_dir("storm")?;
    let (mut lan, _p) = local_lan("storm", &work)?;
    phase_qemu_tests::process::run(lan.command("tc").args([
        "qdisc",
        "add",
        "dev",
        "br0",
        "root",
        "tbf",
        "rate",
        PROVIDER_RATE,
        "burst",
        "32kb",
        "latency",
        "400ms",
    ]))?;
    let tx_before = br0_tx_bytes(&lan)?;
    let mut vms = Vec::new();
    for i in 0..VMS {
        let cfg = vm_config(&format!("storm{i}"), "local", "", 0x60 + i)?;
        vms.push(Vm::start(&mut lan, cfg, &work)?);
    }
    let started = Instant::now();
    // All three in parallel: wait for each in turn, the others keep running meanwhile.
    for vm in vms.iter_mut() {
        expect_boot_stage(vm, "local", "mdns")?;
    }
    for vm in vms.iter_mut() {
        expect_kexec_and_target(vm)?;
    }
    let sent = br0_tx_bytes(&lan)? - tx_before;
    eprintln!(
        "storm: {VMS} VMs ready in {:.0} s; provider sent {sent} bytes = {:.2} releases of {release_bytes}",
        started.elapsed().as_secs_f64(),
        sent as f64 / release_bytes as f64
    );
    let mut from_peers = 0;
    for (i, vm) in vms.iter().enumerate() {
        let lines = vm.lines();
        if !lines
            .iter()
            .any(|l| l.contains("peers: serving verified chunks at http://192.0.2."))
        {
            return Err(vm.failure("no `peers: serving verified chunks` line"));
        }
        let named: Vec<&String> = lines
            .iter()
            .filter(|l| l.contains(" chunks from peer http://192.0.2."))
            .collect();
        for l in &named {
            eprintln!("storm: vm {i}: {}", l.trim());
        }
        from_peers += usize::from(!named.is_empty());
    }
    ensure!(
        from_peers >= 2,
        "only {from_peers} of {VMS} VMs took chunks from a peer"
    );
    ensure!(
        sent < 2 * release_bytes,
        "the provider sent {sent} bytes, not below two releases ({})",
        2 * release_bytes
    );
    Ok(())
}
