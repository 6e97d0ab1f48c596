//! Stage "target" of phase-init (issue 7; DESIGN §1; seed 003 "OverlayFS Pattern", seed 000
//! "Self-Hosting Loop"): the same `/init` after kexec, when `/phase/boot/manifest.json` exists.
//! The caller (the boot dispatcher) has already mounted /proc, /sys, /dev, /run and loaded the
//! modules; [`run`] then:
//!
//! 1. [`verify`]: the manifest against `/etc/phase/trust.toml`, the boot stage's custody record
//!    ([`crate::custody`]) against the manifest, the artifacts' sizes (always; no switch skips
//!    it; the hashes are not computed again: docs/security.md "What the target stage
//!    trusts"): `phase: verify ok version=<v> artifacts=<n> in <N>ms`;
//! 2. [`rootfs`]: squashfs lower + tmpfs upper overlay on `/newroot`, `/phase/boot` read-only at
//!    `/var/lib/phase/boot`, API filesystems moved: `phase: rootfs ok overlay on /newroot`;
//! 3. frees the initramfs and switches root: `phase: switch_root ok in <N>ms`;
//! 4. `phase.init=PATH`: execs that init (systemd images, which run `plasmd.service`); else
//! 5. brings the network up again (fresh kernel), starts the [`service`]s under the
//!    [`supervisor`], prints `phase: target ready in <N>ms`, and supervises until SIGTERM
//!    (poweroff), SIGINT (ctrl-alt-del: reboot) or the power button (poweroff); then stops the
//!    services in stop order, syncs, unmounts and calls `reboot(2)`.

pub mod backoff;
pub mod rootfs;
pub mod service;
pub mod shutdown;
pub mod supervisor;
#[cfg(test)]
mod testutil;
pub mod verify;

use std::convert::Infallible;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::time::Duration;

use crate::cmdline::BootParams;
use crate::log::{self, Stage};
use crate::sys::evdev::PowerButton;
use crate::sys::signals::{self, SignalError, SignalFd};
use crate::sys::switch_root::MountError;
use crate::sys::SysError;
use backoff::{BackoffPolicy, MonotonicClock};
use shutdown::Reason;
use supervisor::{CommandSpawner, Supervisor};

/// The file whose presence selects the target stage.
pub const BOOT_MANIFEST: &str = "/phase/boot/manifest.json";
/// The trust root built into the initramfs.
pub const TRUST_FILE: &str = "/etc/phase/trust.toml";

/// Errors that end the target stage (the caller applies `phase.onfail`).
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    /// Blocking signals or opening the signalfd failed.
    #[error("signals")]
    Signals(#[source] SignalError),
    /// The check of the handover (manifest, custody record, sizes) failed.
    #[error("verify")]
    Verify(#[source] verify::ReverifyError),
    /// Building the overlay root failed.
    #[error("rootfs")]
    Rootfs(#[source] rootfs::RootfsError),
    /// `/` is not the initramfs (rootfs/tmpfs), so its contents must not be deleted.
    #[error("switch_root: / is not an initramfs (statfs f_type {f_type:#x})")]
    NotInitramfs {
        /// The filesystem magic found.
        f_type: u64,
    },
    /// The root switch failed.
    #[error("switch_root")]
    SwitchRoot(#[source] MountError),
    /// A failure after `switch_root`: the initramfs is freed, so the target stage cannot run
    /// again; `phase.onfail` is applied by [`crate::onfail::decide_after_switch_root`].
    #[error("after switch_root")]
    AfterSwitchRoot(#[source] Box<TargetError>),
    /// Neither `phase.init` nor any service file: the target would run nothing.
    #[error("no services to start (no phase.init and no files in {dir})")]
    NoServices {
        /// The services directory.
        dir: String,
    },
    /// `execve(phase.init)` failed.
    #[error("exec {path}")]
    Exec {
        /// The init that could not be executed.
        path: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The supervisor's poll loop failed.
    #[error("supervisor")]
    Supervise(#[source] SignalError),
    /// `reboot(2)` returned.
    #[error("shutdown")]
    Reboot(#[source] SysError),
}

/// Runs the target stage; returns only on error (success ends in `reboot(2)` or in `execve` of
/// `phase.init`).
///
/// # Errors
/// [`TargetError`] naming the step that failed.
pub fn run(params: &BootParams) -> Result<Infallible, TargetError> {
    // Before any thread exists, so every thread inherits the blocked mask.
    let signals = SignalFd::new().map_err(TargetError::Signals)?;

    // The kexec'd kernel read the RTC again: judge it against the build floor as the boot
    // stage did; the handed-over manifest is the signed evidence.
    let sys = &crate::sys::linux::Linux;
    let mut clock = crate::clock::settle(sys, None);
    let stage = Stage::start("verify");
    let verified = verify::reverify(
        Path::new("/phase/boot"),
        Path::new(TRUST_FILE),
        chrono::Utc::now(),
        clock.trust,
        params.channel.as_deref(),
        Some(params.arch),
    );
    let verified = match verified {
        Ok(v) => v,
        Err(e) => {
            stage.failed(&e);
            return Err(TargetError::Verify(e));
        }
    };
    if clock.trust == phase_protocol::ClockTrust::BelowFloor {
        clock.advance(
            sys,
            verified.checked_at(),
            crate::clock::Source::Signed,
            false,
        );
    }
    let m = verified.manifest();
    stage.ok(format!(
        "version={} artifacts={}",
        m.version,
        m.artifacts.len()
    ));

    // The boot stage's DHCP lease lives in the initramfs, which switch_root frees: read now.
    let handed =
        match crate::net::handover::HandedLease::read(Path::new(crate::net::handover::PATH)) {
            Ok(h) => h,
            Err(e) => {
                log::line(&format!(
                    "dhcp: the boot stage's lease is not taken over: {}",
                    log::error_chain(&e)
                ));
                None
            }
        };

    let layout = rootfs::Layout::default();
    let stage = Stage::start("rootfs");
    if let Err(e) = build_root(&layout) {
        stage.failed(&e);
        return Err(TargetError::Rootfs(e));
    }
    stage.ok(format!("overlay on {}", layout.newroot.display()));

    let stage = Stage::start("switch_root");
    if let Err(e) = switch(&layout) {
        stage.failed(&e);
        return Err(e);
    }
    stage.ok("");

    if let Some(init) = &params.init {
        log::line(&format!("exec {init} (phase.init)"));
        let err = std::process::Command::new(init).exec();
        return Err(TargetError::AfterSwitchRoot(Box::new(TargetError::Exec {
            path: init.clone(),
            source: err,
        })));
    }

    if let Err(e) = signals::ctrl_alt_del_to_sigint() {
        log::line(&format!(
            "ctrl-alt-del stays a hard reboot: {}",
            log::error_chain(&e)
        ));
    }
    if params.net {
        network(params, handed.as_ref());
    } else {
        log::line("net off (phase.net=off): no interface brought up");
    }
    let (services, errors) = service::load_dir(Path::new(service::SERVICES_DIR));
    for e in &errors {
        log::line(&format!("service file skipped: {}", log::error_chain(e)));
    }
    if services.is_empty() {
        return Err(TargetError::AfterSwitchRoot(Box::new(
            TargetError::NoServices {
                dir: service::SERVICES_DIR.to_string(),
            },
        )));
    }
    let mut sup = Supervisor::new(
        services,
        BackoffPolicy::default(),
        MonotonicClock,
        CommandSpawner,
    );
    // Watch the power button before saying "ready": a press between the two would be lost.
    let mut buttons = power_buttons();
    sup.start_due();
    log::line(&format!("target ready in {}ms", ms_since_start()));

    let reason =
        loop_until_shutdown(&mut sup, &signals, &mut buttons).map_err(TargetError::Supervise)?;
    shutdown::shutdown(&mut sup, reason, &crate::sys::linux::Linux).map_err(TargetError::Reboot)
}

/// [`run`] with the error boxed, matching `boot::TargetStage`, for the boot dispatcher.
///
/// # Errors
/// The [`TargetError`] of [`run`], boxed.
pub fn run_stage(
    params: &BootParams,
) -> Result<Infallible, Box<dyn std::error::Error + Send + Sync>> {
    run(params).map_err(Into::into)
}

fn build_root(layout: &rootfs::Layout) -> Result<(), rootfs::RootfsError> {
    if !layout.rootfs_image.is_file() {
        return Err(rootfs::RootfsError::NoImage {
            path: layout.rootfs_image.clone(),
        });
    }
    let mut loops = rootfs::LoopDevices::default();
    rootfs::execute(&rootfs::plan(layout), &crate::sys::linux::Linux, &mut loops)
}

/// The file systems an initramfs is unpacked into.
const INITRAMFS_MAGICS: [u64; 2] = [crate::sys::RAMFS_MAGIC, crate::sys::TMPFS_MAGIC];

fn switch(layout: &rootfs::Layout) -> Result<(), TargetError> {
    let f_type = rustix::fs::statfs("/")
        .map(|s| s.f_type as u64)
        .unwrap_or(0);
    if !INITRAMFS_MAGICS.contains(&f_type) {
        return Err(TargetError::NotInitramfs { f_type });
    }
    let freed = rootfs::free_initramfs(Path::new("/"), std::slice::from_ref(&layout.boot_dir));
    log::line(&format!(
        "initramfs freed {} entries, {} bytes ({} kept)",
        freed.removed,
        freed.bytes,
        layout.boot_dir.display()
    ));
    for f in freed.failed.iter().take(10) {
        log::line(&format!("initramfs not freed: {f}"));
    }
    crate::sys::switch_root::switch_root(&layout.newroot).map_err(TargetError::SwitchRoot)
}

/// Milliseconds since this process started: `/proc/uptime` minus the start time in
/// `/proc/self/stat` (field 22, clock ticks of 10 ms on Linux's USER_HZ=100).
fn ms_since_start() -> u64 {
    let uptime_ms = std::fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .next()
                .and_then(|u| u.parse::<f64>().ok())
        })
        .map_or(0, |s| (s * 1000.0) as u64);
    let start_ms = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(19)?.parse::<u64>().ok())
        })
        .map_or(0, |ticks| ticks * 10);
    uptime_ms.saturating_sub(start_ms)
}

/// The network of the target (a fresh kernel after kexec): `net::bring_up_with` the boot
/// stage's lease `handed` (configured without a new exchange when it may be,
/// [`crate::net::handover`]), which prints the `link` and `dhcp` lines, then a `dhcp` thread
/// keeps the lease with `net::maintain` (RENEWING at T1, REBINDING at T2, a new DISCOVER if it
/// is lost; RFC 2131 §4.4.5). The thread is spawned after the supervisor blocked its signals,
/// so it inherits that mask and signals still reach the signalfd. Failure is logged and the
/// services start anyway.
fn network(params: &BootParams, handed: Option<&crate::net::handover::HandedLease>) {
    let runtime = || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    };
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(e) => {
            log::line(&format!("network: tokio runtime: {e}"));
            return;
        }
    };
    let Ok(lease) = rt.block_on(crate::net::bring_up_with(
        params.iface.as_deref(),
        params.timeout,
        handed.map(|h| (h, crate::net::handover::uptime())),
    )) else {
        return; // bring_up printed the failure
    };
    drop(rt);
    let spawned = std::thread::Builder::new()
        .name("dhcp".into())
        .spawn(move || {
            let result = runtime().map_err(|e| e.to_string()).and_then(|rt| {
                rt.block_on(crate::net::maintain(lease))
                    .map_err(|e| log::error_chain(&e))
            });
            let Err(why) = result;
            log::line(&format!("dhcp lease upkeep stopped: {why}"));
        });
    if let Err(e) = spawned {
        log::line(&format!("dhcp lease upkeep not started: {e}"));
    }
}

/// Opens every "Power Button" input device, logging each one watched (or why not), so a
/// missing `button`/`evdev` module shows on the console.
fn power_buttons() -> Vec<PowerButton> {
    let buttons: Vec<PowerButton> = PowerButton::open_all()
        .into_iter()
        .filter_map(|b| {
            b.map_err(|e| log::line(&format!("power button: {}", log::error_chain(&e))))
                .ok()
        })
        .collect();
    for b in &buttons {
        log::line(&format!("power button watched {}", b.path().display()));
    }
    if buttons.is_empty() {
        log::line("power button: none found (modules button, evdev?); SIGTERM still powers off");
    }
    buttons
}

/// The supervisor loop: waits for a signal, a power-button press or the next restart; returns
/// why shutdown was requested.
fn loop_until_shutdown(
    sup: &mut Supervisor<MonotonicClock, CommandSpawner>,
    signals: &SignalFd,
    buttons: &mut [PowerButton],
) -> Result<Reason, SignalError> {
    loop {
        let wait = sup
            .next_start_in()
            .unwrap_or(Duration::from_secs(60))
            .min(Duration::from_secs(60));
        let ready = {
            use std::os::fd::AsFd;
            let mut fds = vec![signals.as_fd()];
            fds.extend(buttons.iter().map(|b| b.as_fd()));
            signals::wait_readable(&fds, Some(wait))?
        };
        if ready.first().copied().unwrap_or(false) {
            for _ in 0..64 {
                match signals.read()? {
                    Some(signals::Caught::Child) => {
                        sup.reap_all()?;
                    }
                    Some(signals::Caught::Term) => return Ok(Reason::Sigterm),
                    Some(signals::Caught::Int) => return Ok(Reason::Sigint),
                    Some(other) => log::line(&format!("signal {other:?} ignored")),
                    None => break,
                }
            }
        }
        for (button, _) in buttons
            .iter_mut()
            .zip(ready.iter().skip(1))
            .filter(|(_, r)| **r)
        {
            match button.pressed() {
                Ok(true) => return Ok(Reason::PowerButton),
                Ok(false) => {}
                Err(e) => log::line(&format!("power button: {}", log::error_chain(&e))),
            }
        }
        // Reap anyway: a SIGCHLD may have been coalesced with one read earlier.
        sup.reap_all()?;
        sup.start_due();
    }
}

/// Where the boot helper dispatches: true when the target stage applies (`/phase/boot/manifest.json`
/// exists under `root`, normally `/`).
pub fn is_target(root: &Path) -> bool {
    root.join(BOOT_MANIFEST.trim_start_matches('/')).is_file()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_stage_fits_the_boot_dispatchers_target_stage_type() {
        let f: crate::boot::TargetStage = run_stage;
        let _ = f;
    }

    #[test]
    fn target_stage_is_selected_only_by_the_boot_manifest() {
        let root = tempfile::tempdir().unwrap();
        assert!(!is_target(root.path()));
        std::fs::create_dir_all(root.path().join("phase/boot")).unwrap();
        std::fs::write(root.path().join("phase/boot/manifest.json"), b"{}").unwrap();
        assert!(is_target(root.path()));
    }
}
