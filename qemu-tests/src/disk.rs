//! The cache disk a VM gets as a virtio block device: a GPT image with one partition named
//! `phase-cache` formatted vfat, built and read back without loop mounts (sfdisk, mkfs.vfat on a
//! separate image copied in at the partition's offset, mtools `-i img@@offset`).

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::process::{cmd, run};

/// Partition start: sector 2048 (1 MiB), as sfdisk aligns it.
pub const PART_OFFSET_BYTES: u64 = 1024 * 1024;

/// A raw GPT disk image holding the `phase-cache` partition.
#[derive(Debug, Clone)]
pub struct CacheDisk {
    /// Path of the image.
    pub path: PathBuf,
}

impl CacheDisk {
    /// Creates `path` of `size_mib` MiB: GPT, one partition from 1 MiB to the end with
    /// PARTLABEL `phase-cache`, vfat (FAT32) inside.
    ///
    /// Errors: sfdisk or mkfs.vfat fail, or the image cannot be written.
    pub fn create(path: &Path, size_mib: u64) -> Result<Self> {
        let total = size_mib * 1024 * 1024;
        let f =
            std::fs::File::create(path).with_context(|| format!("create {}", path.display()))?;
        f.set_len(total)?;
        drop(f);
        let script = "label: gpt\nstart=2048, name=\"phase-cache\", type=EBD0A0A2-B9E5-4433-87C0-68B6B72699C7\n";
        let mut child = cmd("sfdisk", ["--no-reread", "--no-tell-kernel", "-q"])
            .arg(path)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .spawn()
            .context("start sfdisk")?;
        child
            .stdin
            .take()
            .context("sfdisk stdin")?
            .write_all(script.as_bytes())?;
        let st = child.wait()?;
        anyhow::ensure!(st.success(), "sfdisk on {} failed ({st})", path.display());
        // The partition's size as sfdisk laid it out (GPT keeps 33 sectors at the end).
        let dump = run(cmd("sfdisk", ["-d"]).arg(path))?;
        let sectors: u64 = dump
            .lines()
            .find(|l| l.contains("phase-cache"))
            .and_then(|l| l.split("size=").nth(1))
            .and_then(|s| s.split(',').next())
            .and_then(|s| s.trim().parse().ok())
            .context("partition size from sfdisk -d")?;
        let fat = path.with_extension("fat.tmp");
        let _ = std::fs::remove_file(&fat);
        let fat_kib = sectors / 2;
        run(cmd("mkfs.vfat", ["-F", "32", "-n", "PHASECACHE", "-C"])
            .arg(&fat)
            .arg(fat_kib.to_string()))?;
        // Copied in with `conv=sparse`: the all-zero blocks stay holes, so each test's 512 MiB
        // image takes a few MiB of disk instead of 512 (a `make test` run keeps several).
        let copied = run(&mut cmd(
            "dd",
            [
                "bs=1M".to_string(),
                format!("seek={}", PART_OFFSET_BYTES / (1024 * 1024)),
                "conv=sparse,notrunc".to_string(),
                "status=none".to_string(),
                format!("if={}", fat.display()),
                format!("of={}", path.display()),
            ],
        ));
        let _ = std::fs::remove_file(&fat);
        copied.context("copy the vfat image into the partition")?;
        Ok(Self {
            path: path.to_path_buf(),
        })
    }

    /// `<path>@@<offset>` for mtools' `-i`.
    pub fn mtools_image(&self) -> String {
        format!("{}@@{}", self.path.display(), PART_OFFSET_BYTES)
    }

    /// Lists the file names in a directory of the vfat partition (`mdir -b`), e.g. `::phase`.
    ///
    /// Errors: mdir fails (missing directory or not a FAT file system).
    pub fn list(&self, dir: &str) -> Result<Vec<String>> {
        let out = run(&mut cmd("mdir", ["-b", "-i", &self.mtools_image(), dir]))?;
        Ok(out
            .lines()
            .map(|l| {
                l.trim()
                    .trim_end_matches('/')
                    .rsplit('/')
                    .next()
                    .unwrap_or("")
                    .to_string()
            })
            .filter(|l| !l.is_empty())
            .collect())
    }

    /// Copies one file out of the partition (`mcopy`), e.g. `::phase/manifest.json`.
    ///
    /// Errors: mcopy fails or the copy cannot be read.
    pub fn read(&self, file: &str, scratch: &Path) -> Result<Vec<u8>> {
        let dest = scratch.join(format!("mcopy-{}", file.replace(['/', ':'], "_")));
        let _ = std::fs::remove_file(&dest);
        run(cmd("mcopy", ["-n", "-o", "-i", &self.mtools_image(), file]).arg(&dest))?;
        let data = std::fs::read(&dest).with_context(|| format!("read {}", dest.display()))?;
        let _ = std::fs::remove_file(&dest);
        Ok(data)
    }

    /// Makes a directory in the partition (`mmd`), e.g. `::phase`.
    ///
    /// Errors: mmd fails (the directory exists, or not a FAT file system).
    pub fn mkdir(&self, dir: &str) -> Result<()> {
        run(&mut cmd("mmd", ["-i", &self.mtools_image(), dir]))?;
        Ok(())
    }

    /// Copies the host file `src` into the partition as `file` (`mcopy -o`), e.g.
    /// `::phase/manifest.json`.
    ///
    /// Errors: mcopy fails (missing directory, partition full).
    pub fn write(&self, src: &Path, file: &str) -> Result<()> {
        run(cmd("mcopy", ["-n", "-o", "-i", &self.mtools_image()])
            .arg(src)
            .arg(file))?;
        Ok(())
    }

    /// SHA-256 of the whole image, hex.
    ///
    /// Errors: the image cannot be read.
    pub fn sha256(&self) -> Result<String> {
        crate::release::sha256_file(&self.path)
    }
}
