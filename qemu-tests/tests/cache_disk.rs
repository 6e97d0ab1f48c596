//! The harness's cache disk: GPT with PARTLABEL `phase-cache`, vfat, readable with mtools,
//! built without loop mounts (what tests 2-4 rely on to inspect a VM's cache).

use anyhow::Result;
use phase_qemu_tests::disk::CacheDisk;
use phase_qemu_tests::env;
use phase_qemu_tests::process::{cmd, run};

fn tools_present(test: &str) -> Result<bool> {
    for t in ["sfdisk", "mkfs.vfat", "mdir", "mcopy"] {
        if !env::which(t) {
            return env::skip_or_fail(
                test,
                &format!("{t} not installed (fdisk, dosfstools, mtools)"),
            );
        }
    }
    Ok(true)
}

#[test]
fn cache_disk_has_phase_cache_partlabel_and_round_trips_files() -> Result<()> {
    if !tools_present("cache_disk_has_phase_cache_partlabel_and_round_trips_files")? {
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let disk = CacheDisk::create(&dir.path().join("cache.img"), 64)?;
    // Sparse: the FAT's empty space is holes, not 64 MiB of written zeros (a `make test` run
    // keeps several 512 MiB images).
    let allocated = std::os::unix::fs::MetadataExt::blocks(&std::fs::metadata(&disk.path)?) * 512;
    assert!(
        allocated < 16 * 1024 * 1024,
        "cache image takes {allocated} bytes of disk"
    );
    let table = run(cmd("sfdisk", ["-d"]).arg(&disk.path))?;
    assert!(table.contains("label: gpt"), "not GPT:\n{table}");
    assert!(
        table.contains("name=\"phase-cache\""),
        "no phase-cache PARTLABEL:\n{table}"
    );
    let src = dir.path().join("manifest.json");
    std::fs::write(&src, b"{\"x\":1}")?;
    run(&mut cmd("mmd", ["-i", &disk.mtools_image(), "::phase"]))?;
    run(cmd("mcopy", ["-i", &disk.mtools_image()])
        .arg(&src)
        .arg("::phase/manifest.json"))?;
    assert_eq!(disk.list("::phase")?, vec!["manifest.json".to_string()]);
    assert_eq!(
        disk.read("::phase/manifest.json", dir.path())?,
        b"{\"x\":1}"
    );
    Ok(())
}

#[test]
fn reading_a_missing_file_from_cache_disk_fails() -> Result<()> {
    if !tools_present("reading_a_missing_file_from_cache_disk_fails")? {
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let disk = CacheDisk::create(&dir.path().join("cache.img"), 64)?;
    assert!(disk.read("::phase/kernel", dir.path()).is_err());
    assert!(disk.list("::phase").is_err());
    Ok(())
}
