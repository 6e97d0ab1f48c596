//! The host half of the harness without a VM: `plasmd serve` runs inside the namespace LAN over
//! a small signed release, and the end checks that the boot tests apply to a VM's provider pass
//! on the untouched tree and fail once an artifact is tampered with.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use phase_qemu_tests::netns::Lan;
use phase_qemu_tests::process::{cmd, run};
use phase_qemu_tests::provider::{start_provider, ProviderOpts};
use phase_qemu_tests::{env, release};

fn plasmd() -> PathBuf {
    let p = env::plasmd();
    if p.exists() {
        return p;
    }
    env::repo_root().join("target/debug/plasmd")
}

/// A signed `{stable}/{x86_64}` tree with small random artifacts; returns (root, manifest bytes).
fn small_release(dir: &Path, bin: &Path) -> Result<(PathBuf, Vec<u8>)> {
    let root = dir.join("release");
    let rel = root.join("stable/x86_64");
    std::fs::create_dir_all(&rel)?;
    for (name, len) in [
        ("kernel", 70_000usize),
        ("initramfs", 50_000),
        ("rootfs", 90_000),
    ] {
        let data: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
        std::fs::write(rel.join(name), data)?;
    }
    let key = dir.join("dev.key");
    run(cmd(bin.to_str().context("path")?, ["keygen", "--out"]).arg(&key))?;
    let unsigned = dir.join("manifest.unsigned.json");
    run(cmd(
        bin.to_str().context("path")?,
        [
            "manifest",
            "build",
            "--channel",
            "stable",
            "--arch",
            "x86_64",
            "--version",
            "0.1.0",
            "--expires-in",
            "1d",
            "--artifacts",
        ],
    )
    .arg(&rel)
    .arg("--out")
    .arg(&unsigned))?;
    let manifest = rel.join("manifest.json");
    run(
        cmd(bin.to_str().context("path")?, ["manifest", "sign", "--key"])
            .arg(&key)
            .arg("--in")
            .arg(&unsigned)
            .arg("--out")
            .arg(&manifest),
    )?;
    let bytes = std::fs::read(&manifest)?;
    Ok((root, bytes))
}

#[test]
fn provider_in_namespace_passes_end_checks_and_tampered_artifact_fails_them() -> Result<()> {
    let test = "provider_in_namespace_passes_end_checks_and_tampered_artifact_fails_them";
    let bin = plasmd();
    if !env::ready(test, std::slice::from_ref(&bin))? {
        return Ok(());
    }
    std::env::set_var("PHASE_PLASMD", &bin);
    let work = env::work_dir("provider-lan")?;
    let (root, manifest) = small_release(&work, &bin)?;
    let mut lan = Lan::create("prov")?;
    let mut opts = ProviderOpts::local();
    opts.artifacts = root.clone();
    opts.mdns = false;
    start_provider(&mut lan, &opts, &work, "host")?;
    release::check_provider(&lan, &opts.url(), &manifest)?;

    let rootfs = root.join("stable/x86_64/rootfs");
    let mut data = std::fs::read(&rootfs)?;
    data[1000] ^= 0x55;
    std::fs::write(&rootfs, data)?;
    let err = release::check_provider(&lan, &opts.url(), &manifest)
        .expect_err("tampered rootfs must fail the checks");
    assert!(
        format!("{err:#}").contains("rootfs"),
        "error does not name the rootfs: {err:#}"
    );
    Ok(())
}

#[test]
fn five_dht_nodes_start_in_namespace_with_distinct_peer_ids() -> Result<()> {
    let test = "five_dht_nodes_start_in_namespace_with_distinct_peer_ids";
    let bin = plasmd();
    if !env::ready(test, std::slice::from_ref(&bin))? {
        return Ok(());
    }
    std::env::set_var("PHASE_PLASMD", &bin);
    let work = env::work_dir("dht-lan")?;
    let lan = Lan::create("dht")?;
    let nodes = phase_qemu_tests::provider::start_dht_nodes(&lan, 5, 4001, &work)?;
    let mut ids: Vec<&str> = nodes
        .iter()
        .filter_map(|n| n.multiaddr.split("/p2p/").nth(1))
        .collect();
    assert_eq!(
        ids.len(),
        5,
        "multiaddrs without /p2p/: {:?}",
        nodes.iter().map(|n| &n.multiaddr).collect::<Vec<_>>()
    );
    assert!(nodes
        .iter()
        .all(|n| n.multiaddr.starts_with("/ip4/192.0.2.1/tcp/400")));
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 5, "peer ids repeat");
    Ok(())
}
