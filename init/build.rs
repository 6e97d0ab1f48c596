//! Sets `PHASE_BUILD_EPOCH` (Unix seconds), the time floor the init never believes a clock
//! below (issue 15 §3; systemd's TIME_EPOCH does the same). Reproducible: it is the commit time
//! of the checked-out source, not the wall clock of the build. Order: the `PHASE_BUILD_EPOCH`
//! environment variable, else `SOURCE_DATE_EPOCH` when above 0, else `git log -1 --format=%ct`,
//! else the date this file was last changed by hand.
//!
//! For the static release `/init` (crt-static, the release profile's panic = "abort") it links
//! `link/discard-unwind-tables.ld`, which drops `.eh_frame` and `.eh_frame_hdr` from the
//! `phase-init` binary (issue 18 §3: 0.9 MB of 7.65 MB; 265 KB of the zstd initramfs). Nothing
//! unwinds with panic = "abort"; test and debug builds, which unwind, keep their tables.

use std::process::Command;

/// 2026-12-01T00:00:00Z: the floor when no git history is at hand (a source tarball).
const FALLBACK_EPOCH: i64 = 1_796_083_200;

fn main() {
    println!("cargo:rerun-if-env-changed=PHASE_BUILD_EPOCH");
    println!("cargo:rerun-if-env-changed=SOURCE_DATE_EPOCH");
    let git_log = std::path::Path::new("../.git/logs/HEAD");
    if git_log.exists() {
        println!("cargo:rerun-if-changed=../.git/logs/HEAD");
    }
    let from_env = |name: &str| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.trim().parse::<i64>().ok())
            .filter(|v| *v > 0)
    };
    let epoch = from_env("PHASE_BUILD_EPOCH")
        .or_else(|| from_env("SOURCE_DATE_EPOCH"))
        .or_else(|| {
            Command::new("git")
                .args(["log", "-1", "--format=%ct"])
                .output()
                .ok()
                .filter(|o| o.status.success())
                .and_then(|o| String::from_utf8(o.stdout).ok())
                .and_then(|s| s.trim().parse::<i64>().ok())
        })
        .unwrap_or(FALLBACK_EPOCH)
        .max(FALLBACK_EPOCH);
    println!("cargo:rustc-env=PHASE_BUILD_EPOCH={epoch}");

    let script = "link/discard-unwind-tables.ld";
    println!("cargo:rerun-if-changed={script}");
    // The release profile is the one with panic = "abort" (Cargo.toml); CARGO_CFG_PANIC
    // reports the target's default (unwind), not the profile's.
    let release = std::env::var("PROFILE").is_ok_and(|p| p == "release");
    let crt_static = std::env::var("CARGO_CFG_TARGET_FEATURE")
        .is_ok_and(|f| f.split(',').any(|f| f == "crt-static"));
    let linux = std::env::var("CARGO_CFG_TARGET_OS").is_ok_and(|os| os == "linux");
    if release && crt_static && linux {
        let dir = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| ".".into());
        println!("cargo:rustc-link-arg-bin=phase-init=-Wl,-T,{dir}/{script}");
    }
}
