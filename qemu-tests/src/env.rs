//! Where the harness finds its inputs (kernel, initramfs, release tree, plasmd) and whether this
//! machine can run the boot tests at all (root, network namespaces, QEMU, dnsmasq).
//!
//! Every path can be overridden by an environment variable so a test can be pointed at other
//! build outputs by hand: `PHASE_KERNEL`, `PHASE_INITRAMFS`, `PHASE_RELEASE`, `PHASE_PLASMD`,
//! `PHASE_IMAGE`, `PHASE_CUSTOM_KERNEL`, `PHASE_DEBIAN_RELEASE`, `PHASE_ARM64_KERNEL`,
//! `PHASE_ARM64_INITRAMFS`, `PHASE_ARM64_CUSTOM_KERNEL`.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

/// The repository root (the parent of this crate's directory).
pub fn repo_root() -> PathBuf {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    here.parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| here.to_path_buf())
}

fn env_path(var: &str, default: impl FnOnce() -> PathBuf) -> PathBuf {
    std::env::var_os(var)
        .map(PathBuf::from)
        .unwrap_or_else(default)
}

/// The newest kernel version in /lib/modules that has a matching `/boot/vmlinuz-<kver>`.
///
/// Errors: no such pair exists.
pub fn kernel_version() -> Result<String> {
    let mut kvers: Vec<String> = std::fs::read_dir("/lib/modules")
        .context("read /lib/modules")?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|k| Path::new(&format!("/boot/vmlinuz-{k}")).exists())
        .collect();
    kvers.sort_by_key(|k| version_key(k));
    kvers
        .pop()
        .context("no /lib/modules/<kver> with a matching /boot/vmlinuz-<kver>")
}

fn version_key(k: &str) -> Vec<u64> {
    k.split(|c: char| !c.is_ascii_digit())
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// The first-stage kernel: `PHASE_KERNEL` or Debian's `/boot/vmlinuz-<kver>`.
pub fn kernel() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("PHASE_KERNEL") {
        return Ok(PathBuf::from(p));
    }
    Ok(PathBuf::from(format!(
        "/boot/vmlinuz-{}",
        kernel_version()?
    )))
}

/// The phase initramfs booted first: `PHASE_INITRAMFS`, build/initramfs.cpio.zst, or
/// build/initramfs.cpio.gz when only that exists (kernels without RD_ZSTD).
pub fn initramfs() -> PathBuf {
    env_path("PHASE_INITRAMFS", || {
        let zst = repo_root().join("build/initramfs.cpio.zst");
        let gz = repo_root().join("build/initramfs.cpio.gz");
        if !zst.exists() && gz.exists() {
            gz
        } else {
            zst
        }
    })
}

/// The release tree from `make release`: `PHASE_RELEASE` or build/release.
pub fn release_dir() -> PathBuf {
    env_path("PHASE_RELEASE", || repo_root().join("build/release"))
}

/// The manifest the publisher signed: `<release>/stable/x86_64/manifest.json`.
pub fn release_manifest() -> PathBuf {
    release_dir().join("stable/x86_64/manifest.json")
}

/// The release built from the reference Debian rootfs with systemd as its init (`make
/// test-qemu` runs `make distro-rootfs` and `make release ROOTFS=build/distro/debian.tar
/// INIT=/lib/systemd/systemd RELEASE_ROOT=build/release-debian`): `PHASE_DEBIAN_RELEASE` or
/// build/release-debian.
pub fn debian_release_dir() -> PathBuf {
    env_path("PHASE_DEBIAN_RELEASE", || {
        repo_root().join("build/release-debian")
    })
}

/// The plasmd binary: `PHASE_PLASMD` or target/x86_64-unknown-linux-gnu/release/plasmd.
pub fn plasmd() -> PathBuf {
    env_path("PHASE_PLASMD", || {
        repo_root().join("target/x86_64-unknown-linux-gnu/release/plasmd")
    })
}

/// `chronyd`, the NTP server of the no-clock test: `PHASE_CHRONYD` or
/// build/chrony/usr/sbin/chronyd (unpacked from Debian's chrony package by `make test-qemu`).
pub fn chronyd() -> PathBuf {
    env_path("PHASE_CHRONYD", || {
        repo_root().join("build/chrony/usr/sbin/chronyd")
    })
}

/// `phase-discovery-probe` (the hostile DHT peer of the hostile-LAN test): `PHASE_PROBE` or
/// target/debug/phase-discovery-probe (`make test-qemu` builds it).
pub fn discovery_probe() -> PathBuf {
    env_path("PHASE_PROBE", || {
        repo_root().join("target/debug/phase-discovery-probe")
    })
}

/// The USB/ESP image from `make image MODE=local`: `PHASE_IMAGE`, build/phase-local.img, or the
/// first other build/*.img.
pub fn usb_image() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("PHASE_IMAGE") {
        return Some(PathBuf::from(p));
    }
    let root = repo_root().join("build");
    for cand in ["phase-local.img", "phase-boot.img", "phase.img"] {
        let p = root.join(cand);
        if p.exists() {
            return Some(p);
        }
    }
    let mut imgs: Vec<PathBuf> = std::fs::read_dir(&root)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "img"))
        .collect();
    imgs.sort();
    imgs.into_iter().next()
}

/// Debian's arm64 kernel that `make ARCH=arm64` unpacked (built without `CONFIG_KEXEC_FILE`):
/// `PHASE_ARM64_KERNEL` or the newest `build/debian-arm64/boot/vmlinuz-*`.
///
/// Errors: none is there (run `make ARCH=arm64 release`).
pub fn arm64_kernel() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("PHASE_ARM64_KERNEL") {
        return Ok(PathBuf::from(p));
    }
    let boot = repo_root().join("build/debian-arm64/boot");
    let mut ks: Vec<PathBuf> = std::fs::read_dir(&boot)
        .with_context(|| format!("read {} (run make ARCH=arm64 release)", boot.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-"))
        })
        .collect();
    ks.sort();
    ks.pop()
        .with_context(|| format!("no vmlinuz-* in {}", boot.display()))
}

/// The arm64 phase initramfs: `PHASE_ARM64_INITRAMFS` or build/aarch64/initramfs.cpio.zst.
pub fn arm64_initramfs() -> PathBuf {
    env_path("PHASE_ARM64_INITRAMFS", || {
        repo_root().join("build/aarch64/initramfs.cpio.zst")
    })
}

/// The arm64 release's manifest, served from the same tree as x86_64's:
/// `<release>/stable/aarch64/manifest.json`.
pub fn arm64_release_manifest() -> PathBuf {
    release_dir().join("stable/aarch64/manifest.json")
}

/// The arm64 kernel from `make kernel ARCH=arm64`: `PHASE_ARM64_CUSTOM_KERNEL` or
/// build/kernel-arm64/Image.
pub fn arm64_custom_kernel() -> PathBuf {
    env_path("PHASE_ARM64_CUSTOM_KERNEL", || {
        repo_root().join("build/kernel-arm64/Image")
    })
}

/// The kernel from `make kernel`: `PHASE_CUSTOM_KERNEL` or build/kernel/bzImage.
pub fn custom_kernel() -> PathBuf {
    env_path("PHASE_CUSTOM_KERNEL", || {
        repo_root().join("build/kernel/bzImage")
    })
}

/// Scratch directory for one test run: `build/qemu-tests/<name>-<pid>`, created fresh.
///
/// Earlier runs of the same test are pruned first ([`prune_old_runs`]): only the newest one
/// stays, so the consoles of the last failure can still be read, and the disk images (512 MiB
/// each) of older runs do not pile up.
///
/// Errors: the directory cannot be created.
pub fn work_dir(name: &str) -> Result<PathBuf> {
    let root = repo_root().join("build/qemu-tests");
    prune_old_runs(&root, name, 1);
    let d = root.join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).with_context(|| format!("create {}", d.display()))?;
    Ok(d)
}

/// Removes `<root>/<name>-<pid>` directories of finished runs (no process `<pid>` alive),
/// keeping the `keep` most recently modified ones. Best effort: errors are ignored, and
/// directories of live processes or with other names are never touched.
pub fn prune_old_runs(root: &Path, name: &str, keep: usize) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    let prefix = format!("{name}-");
    let mut finished: Vec<(std::time::SystemTime, PathBuf)> = entries
        .flatten()
        .filter_map(|e| {
            let file_name = e.file_name();
            let pid = file_name.to_str()?.strip_prefix(&prefix)?;
            if pid.is_empty() || !pid.bytes().all(|b| b.is_ascii_digit()) {
                return None; // another test whose name starts with ours, or not a run dir
            }
            if Path::new("/proc").join(pid).exists() {
                return None; // still running (or the pid was reused: keep it to be safe)
            }
            let meta = e.metadata().ok().filter(std::fs::Metadata::is_dir)?;
            Some((meta.modified().ok()?, e.path()))
        })
        .collect();
    finished.sort_by_key(|(modified, _)| std::cmp::Reverse(*modified));
    for (_, dir) in finished.into_iter().skip(keep) {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// True when env `CI` is `true` (or `1`): missing prerequisites then fail instead of skipping.
pub fn in_ci() -> bool {
    matches!(std::env::var("CI").as_deref(), Ok("true") | Ok("1"))
}

/// Checks that this machine can run namespace + QEMU tests: root, `ip netns`, /dev/net/tun,
/// qemu-system-x86_64, dnsmasq and curl.
///
/// Errors: the first missing prerequisite, in words a person can act on.
pub fn check_host() -> Result<()> {
    // SAFETY: geteuid(2) has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        bail!("not root: network namespaces and tap devices need root (run with sudo)");
    }
    for tool in ["ip", "qemu-system-x86_64", "dnsmasq", "curl"] {
        if !which(tool) {
            bail!("{tool} not found in PATH (make deps installs it)");
        }
    }
    if !Path::new("/dev/net/tun").exists() {
        bail!("/dev/net/tun missing: tap devices unavailable");
    }
    let probe = format!("phase-probe-{}", std::process::id());
    let ok = Command::new("ip")
        .args(["netns", "add", &probe])
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        let _ = Command::new("ip").args(["netns", "del", &probe]).status();
    } else {
        bail!("`ip netns add` failed: network namespaces are unavailable here");
    }
    Ok(())
}

/// Whether `tool` is an executable in PATH.
pub fn which(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|d| d.join(tool).is_file()))
}

/// Decides what a test does when something it needs is missing: in CI it fails (returns the
/// error), elsewhere it prints `SKIP <test>: <reason>` and returns Ok(false).
///
/// Errors: `reason` when running in CI.
pub fn skip_or_fail(test: &str, reason: &str) -> Result<bool> {
    if in_ci() {
        bail!("{test}: cannot run: {reason} (CI=true, so this is a failure)");
    }
    eprintln!("SKIP {test}: {reason}");
    Ok(false)
}

/// Checks the host and the listed build inputs; Ok(true) means the test can run.
///
/// Errors: something is missing and CI=true.
pub fn ready(test: &str, inputs: &[PathBuf]) -> Result<bool> {
    if let Err(e) = check_host() {
        return skip_or_fail(test, &format!("{e:#}"));
    }
    for p in inputs {
        if !p.exists() {
            return skip_or_fail(
                test,
                &format!(
                    "{} is missing (run `make release` / the build first)",
                    p.display()
                ),
            );
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mkdir_aged(root: &Path, name: &str, age_secs: u64) -> PathBuf {
        let d = root.join(name);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("console.log"), b"x").unwrap();
        let t = std::time::SystemTime::now() - std::time::Duration::from_secs(age_secs);
        std::fs::File::open(&d).unwrap().set_modified(t).unwrap();
        d
    }

    #[test]
    fn prune_keeps_the_newest_finished_run_live_runs_and_other_tests() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        // pids far above pid_max (4194304) cannot be alive.
        let newest = mkdir_aged(r, "local-99999991", 10);
        let older = mkdir_aged(r, "local-99999992", 100);
        let oldest = mkdir_aged(r, "local-99999993", 1000);
        let live = mkdir_aged(r, &format!("local-{}", std::process::id()), 5000);
        let other = mkdir_aged(r, "local-mdns-99999994", 5000);
        let image = r.join("local-cache.img");
        std::fs::write(&image, b"disk").unwrap();
        prune_old_runs(r, "local", 1);
        assert!(newest.exists(), "the newest finished run is kept");
        assert!(
            !older.exists() && !oldest.exists(),
            "older finished runs are removed"
        );
        assert!(live.exists(), "a live process's directory is never removed");
        assert!(other.exists(), "another test's directory is not touched");
        assert!(image.exists(), "files are not touched");
    }
}
