//! Issue 19 §6: a small boot storm. Three VMs boot at once in local mode from one provider
//! whose link is capped (`tc tbf` on br0: what the namespace's own stack sends, which is the
//! provider, dnsmasq and its mDNS; frames the bridge forwards between VMs do not pass it). The
//! VMs find each other by mDNS (`_phase-peer._tcp`) and trade verified chunks, so the provider
//! sends well under three copies of the release. In internet mode two VMs find each other in
//! the DHT (`/phase/peers/<manifest digest>`).

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
    cap_br0(&lan, PROVIDER_RATE)?;
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

/// Caps what the LAN namespace sends out of br0 (the provider, dnsmasq, the DHT nodes) at
/// `rate` (`tc tbf`), so that a fetch lasts long enough for peers to meet.
fn cap_br0(lan: &phase_qemu_tests::netns::Lan, rate: &str) -> Result<()> {
    phase_qemu_tests::process::run(lan.command("tc").args([
        "qdisc", "add", "dev", "br0", "root", "tbf", "rate", rate, "burst", "32kb", "latency",
        "400ms",
    ]))?;
    Ok(())
}

/// Issue 19 §3, the DHT half: two VMs boot at once in internet mode (DHT discovery, the
/// provider capped). Each announces its chunk server under `/phase/peers/<manifest digest>` in
/// the DHT, and at least one finds the other there (`peers: found in the DHT`), which a boot
/// without the DHT peer record cannot log. Both reach `target ready`.
#[test]
fn two_vms_in_internet_mode_find_each_other_in_the_dht() -> Result<()> {
    let test = "two_vms_in_internet_mode_find_each_other_in_the_dht";
    if !ready(test)? {
        return Ok(());
    }
    let work = env::work_dir("storm-dht")?;
    let (mut lan, _dht, bootstrap) = internet_lan("stormdht", &work, 3)?;
    cap_br0(&lan, PROVIDER_RATE)?;
    let mut vms = Vec::new();
    for i in 0..2u8 {
        let cfg = vm_config(
            &format!("stormdht{i}"),
            "internet",
            &format!("phase.bootstrap={bootstrap}"),
            0x70 + i,
        )?;
        vms.push(Vm::start(&mut lan, cfg, &work)?);
    }
    for vm in vms.iter_mut() {
        expect_boot_stage(vm, "internet", "dht")?;
    }
    for vm in vms.iter_mut() {
        expect_kexec_and_target(vm)?;
    }
    let mut found = 0;
    for (i, vm) in vms.iter().enumerate() {
        let lines = vm.lines();
        if !lines.iter().any(|l| {
            l.contains("peers: announcing http://192.0.2.") && l.contains(" in the DHT for sha256:")
        }) {
            return Err(vm.failure("no `peers: announcing ... in the DHT` line"));
        }
        for l in lines
            .iter()
            .filter(|l| l.contains("peers: found in the DHT http://192.0.2."))
        {
            eprintln!("storm-dht: vm {i}: {}", l.trim());
            found += 1;
        }
    }
    ensure!(found >= 1, "neither VM found the other in the DHT");
    Ok(())
}

/// Waits up to `timeout` for `needle` in the log of process `idx`; returns the log.
fn wait_log(
    lan: &mut phase_qemu_tests::netns::Lan,
    idx: usize,
    needle: &str,
    timeout: std::time::Duration,
) -> Result<String> {
    let until = Instant::now() + timeout;
    loop {
        let p = lan.proc(idx).context("process")?;
        let text = p.log_text();
        if text.contains(needle) {
            return Ok(text);
        }
        ensure!(
            Instant::now() < until && p.try_wait().is_none(),
            "no `{needle}` in {timeout:?}; the log: {text}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// `phase fetch --mdns-peers`: machines running the tool (not the boot stage) find each other
/// on mDNS the same way. No VM: two `phase fetch` processes in the LAN namespace on their own
/// br0 addresses, the provider's loopback traffic capped so a fetch takes seconds. A fetches
/// the release and lingers, announcing it; B, started after, must find A by mDNS alone (no
/// --peer) and take chunks from it.
#[test]
fn phase_fetch_with_mdns_peers_finds_a_lingering_peer_and_takes_chunks_from_it() -> Result<()> {
    let test = "phase_fetch_with_mdns_peers_finds_a_lingering_peer_and_takes_chunks_from_it";
    if !ready(test)? {
        return Ok(());
    }
    let phase = env::plasmd().with_file_name("phase");
    let trust = env::repo_root().join("build/keys/trust.toml");
    ensure!(
        phase.exists() && trust.exists(),
        "needs {} and {} (make build release)",
        phase.display(),
        trust.display()
    );
    let work = env::work_dir("mdns-peers")?;
    let (mut lan, _p) = local_lan("mdnspeers", &work)?;
    lan.ip(&["addr", "add", "192.0.2.50/24", "dev", "br0"])?;
    lan.ip(&["addr", "add", "192.0.2.51/24", "dev", "br0"])?;
    // Everything between local addresses passes lo: 40 Mbit/s makes one copy take seconds.
    phase_qemu_tests::process::run(lan.command("tc").args([
        "qdisc", "add", "dev", "lo", "root", "tbf", "rate", "40mbit", "burst", "256kb", "latency",
        "400ms",
    ]))?;
    let args = |me: &str, linger: bool| -> Vec<String> {
        let mut a: Vec<String> = [
            "fetch",
            "-q",
            "--manifest-url",
            "http://192.0.2.1:8080/stable/x86_64/manifest.json",
            "--trust",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        a.push(trust.display().to_string());
        a.push("--out".into());
        a.push(work.join(format!("out-{me}")).display().to_string());
        a.extend([
            "--serve".into(),
            format!("{me}:7400"),
            "--mdns-peers".into(),
            "br0".into(),
        ]);
        if linger {
            a.extend(["--linger-ms".into(), "120000".into()]);
        }
        a
    };
    let a = lan.spawn(
        "fetch-a",
        &phase,
        &args("192.0.2.50", true),
        &work.join("fetch-a.log"),
    )?;
    for artifact in ["kernel", "initramfs", "rootfs"] {
        wait_log(&mut lan, a, &format!("fetch ok {artifact}"), secs(60))?;
    }
    let b = lan.spawn(
        "fetch-b",
        &phase,
        &args("192.0.2.51", false),
        &work.join("fetch-b.log"),
    )?;
    let status = lan
        .proc(b)
        .context("b")?
        .wait_timeout(secs(90))
        .context("phase fetch B did not finish in 90 s")?;
    let b_log = lan.proc(b).context("b")?.log_text();
    ensure!(status.success(), "phase fetch B failed: {b_log}");
    ensure!(
        b_log.contains("peer found http://192.0.2.50:7400/"),
        "B did not find A on mDNS: {b_log}"
    );
    ensure!(
        b_log.contains("chunks from peer http://192.0.2.50:7400/"),
        "B took no chunk from A: {b_log}\nA: {}",
        lan.proc(a).context("a")?.log_text()
    );
    lan.stop(a);
    let a_log = lan.proc(a).context("a")?.log_text();
    eprintln!("mdns-peers: A: {}\nB: {b_log}", a_log.trim());
    let served: u64 = a_log
        .lines()
        .find_map(|l| {
            l.split("served ")
                .nth(1)?
                .strip_suffix(" bytes to peers")?
                .parse()
                .ok()
        })
        .with_context(|| {
            format!("no `served <n> bytes to peers` line from A after SIGTERM: {a_log}")
        })?;
    ensure!(served > 0, "A served nothing: {a_log}");
    Ok(())
}
