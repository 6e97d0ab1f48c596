//! The shutdown sequence of the target stage (issue 7 §3). SIGTERM, SIGINT (ctrl-alt-del, once
//! CAD is off) and the ACPI power button all run the same steps, each logged:
//!
//! ```text
//! phase: shutdown requested by <SIGTERM|SIGINT|power-button>
//! phase: service <name> stopped in <N>ms      (stop_order ascending; SIGTERM, wait, SIGKILL)
//! phase: unmount ok in <N>ms                  (sync, then every mount but / in reverse order,
//!                                              lazily (MNT_DETACH) when busy, then sync again)
//! phase: poweroff | phase: reboot             (reboot(2))
//! ```
//!
//! SIGINT (ctrl-alt-del) means reboot; SIGTERM and the power button mean poweroff.

use std::convert::Infallible;
use std::path::{Path, PathBuf};

use super::backoff::Clock;
use super::supervisor::{Spawner, Supervisor};
use crate::log::{self, Stage};
use crate::sys::{RebootCmd, SysError, Syscalls};

/// What asked for the shutdown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// SIGTERM to PID 1 (e.g. `kill 1`).
    Sigterm,
    /// SIGINT: ctrl-alt-del.
    Sigint,
    /// `KEY_POWER` from the "Power Button" input device (QEMU `system_powerdown`).
    PowerButton,
}

impl Reason {
    /// The word in `phase: shutdown requested by <word>`.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Sigterm => "SIGTERM",
            Reason::Sigint => "SIGINT",
            Reason::PowerButton => "power-button",
        }
    }

    /// Reboot for ctrl-alt-del, poweroff otherwise.
    pub fn action(self) -> RebootCmd {
        match self {
            Reason::Sigint => RebootCmd::Restart,
            Reason::Sigterm | Reason::PowerButton => RebootCmd::PowerOff,
        }
    }
}

/// The word logged for `cmd`: `poweroff`, `reboot`, `halt`.
pub fn action_word(cmd: RebootCmd) -> &'static str {
    match cmd {
        RebootCmd::PowerOff => "poweroff",
        RebootCmd::Restart => "reboot",
        RebootCmd::Halt => "halt",
        RebootCmd::Kexec => "kexec",
    }
}

/// Mount points of `/proc/self/mountinfo` text in the order to unmount them: reverse of
/// mounting, without `/` (the overlay we run from; it goes with the power). Octal escapes
/// (`\040` for space) are decoded.
pub fn unmount_order(mountinfo: &str) -> Vec<PathBuf> {
    let mut points: Vec<PathBuf> = mountinfo
        .lines()
        .filter_map(|l| l.split_whitespace().nth(4))
        .filter(|p| *p != "/")
        .map(|p| PathBuf::from(unescape(p)))
        .collect();
    points.reverse();
    points
}

fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if let Some(v) = octal_escape(&b[i..]) {
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The byte of a `\ooo` escape at the start of `b` (the kernel writes space, tab, newline and
/// backslash so); `None` when `b` does not start with one or its value is over 0o377 (`\777`
/// overflowed a `u8` and panicked with overflow checks: fuzz target `proc_mounts`, issue 15).
fn octal_escape(b: &[u8]) -> Option<u8> {
    let [b'\\', d @ ..] = b else {
        return None;
    };
    let digits = d.get(..3)?;
    if !digits.iter().all(|c| (b'0'..=b'7').contains(c)) {
        return None;
    }
    let v = digits.iter().fold(0u32, |v, c| v * 8 + u32::from(c - b'0'));
    u8::try_from(v).ok()
}

/// Stops the services, syncs, unmounts everything but `/` and calls `reboot(2)` through `sys`
/// for `reason`. Returns only if `reboot(2)` failed.
///
/// # Errors
/// The [`SysError`] of the failed `reboot(2)`.
pub fn shutdown<C: Clock, S: Spawner>(
    sup: &mut Supervisor<C, S>,
    reason: Reason,
    sys: &dyn Syscalls,
) -> Result<Infallible, SysError> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut detach = |p: &Path| crate::sys::switch_root::unmount(p, true).is_ok();
    shutdown_with(sup, reason, sys, &mountinfo, &mut detach)
}

/// [`shutdown`] with the mount table text and the lazy-unmount fallback (`MNT_DETACH`, used
/// when `umount2(target, 0)` fails) given, so it runs against fakes.
///
/// # Errors
/// The [`SysError`] of the failed `reboot(2)`.
pub fn shutdown_with<C: Clock, S: Spawner>(
    sup: &mut Supervisor<C, S>,
    reason: Reason,
    sys: &dyn Syscalls,
    mountinfo: &str,
    detach: &mut dyn FnMut(&Path) -> bool,
) -> Result<Infallible, SysError> {
    log::line(&format!("shutdown requested by {}", reason.as_str()));
    sup.stop_all();
    let stage = Stage::start("unmount");
    sys.sync();
    let mut detached = 0;
    for point in unmount_order(mountinfo) {
        // Busy (the overlay's lower layer, a shell's cwd): detach it from the tree.
        if sys.unmount(&point).is_err() && detach(&point) {
            detached += 1;
        }
    }
    sys.sync();
    stage.ok(if detached > 0 {
        format!("({detached} detached)")
    } else {
        String::new()
    });
    let cmd = reason.action();
    log::line(action_word(cmd));
    match sys.reboot(cmd) {
        Ok(()) => Err(SysError::new(
            format!("reboot({cmd:?}) returned"),
            std::io::Error::other("still running"),
        )),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::fake::Recording;
    use crate::target::backoff::FakeClock;

    const MOUNTINFO: &str = "\
22 1 0:20 / / rw - overlay overlay rw,lowerdir=/run/phase/lower
23 22 0:5 / /dev rw - devtmpfs devtmpfs rw
24 22 0:21 / /proc rw - proc proc rw
25 22 0:22 / /sys rw - sysfs sysfs rw
26 22 0:23 / /run rw - tmpfs tmpfs rw
27 26 7:0 / /run/phase/lower ro - squashfs /dev/loop0 ro
28 22 0:24 / /var/lib/phase/boot ro - rootfs rootfs ro
29 22 0:25 / /mnt/with\\040space rw - tmpfs tmpfs rw
";

    #[test]
    fn mounts_are_unmounted_in_reverse_order_without_root() {
        let order: Vec<String> = unmount_order(MOUNTINFO)
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        assert_eq!(
            order,
            [
                "/mnt/with space",
                "/var/lib/phase/boot",
                "/run/phase/lower",
                "/run",
                "/sys",
                "/proc",
                "/dev"
            ]
        );
    }

    /// Fuzz target `proc_mounts` (fuzz/seeds/proc_mounts/crash-escape-777): `\777` is not a
    /// byte; it overflowed the decoder. Such a name is kept as written.
    #[test]
    fn mount_point_escape_above_0o377_is_kept_not_panicking() {
        assert_eq!(unmount_order("9 2 2 7 \\777"), [PathBuf::from("\\777")]);
        assert_eq!(
            unmount_order("9 2 2 7 /a\\377\\134\\04"),
            [PathBuf::from(
                String::from_utf8_lossy(b"/a\xff\\\\04").into_owned()
            )]
        );
    }

    #[test]
    fn ctrl_alt_del_reboots_and_sigterm_or_power_button_power_off() {
        assert_eq!(Reason::Sigint.action(), RebootCmd::Restart);
        assert_eq!(Reason::Sigterm.action(), RebootCmd::PowerOff);
        assert_eq!(Reason::PowerButton.action(), RebootCmd::PowerOff);
        assert_eq!(Reason::PowerButton.as_str(), "power-button");
    }

    struct NoSpawn;
    impl Spawner for NoSpawn {
        fn spawn(&mut self, _: &crate::target::service::Service) -> std::io::Result<i32> {
            Err(std::io::Error::other("no"))
        }
    }

    #[test]
    fn shutdown_syncs_unmounts_then_reboots_with_the_reasons_command() {
        let sys = Recording::new();
        sys.fail_on("umount", libc::EBUSY);
        sys.fail_on("reboot", libc::EPERM);
        let mut sup = Supervisor::new(Vec::new(), Default::default(), FakeClock::new(), NoSpawn);
        let mut detached = Vec::new();
        let mut detach = |p: &Path| {
            detached.push(p.to_path_buf());
            true
        };
        let err =
            shutdown_with(&mut sup, Reason::Sigint, &sys, MOUNTINFO, &mut detach).unwrap_err();
        assert_eq!(
            detached.len(),
            7,
            "busy mounts were not detached: {detached:?}"
        );
        assert_eq!(err.errno(), Some(libc::EPERM));
        let calls = sys.calls();
        assert_eq!(calls.first().map(String::as_str), Some("sync"));
        assert_eq!(calls.last().map(String::as_str), Some("reboot Restart"));
        assert_eq!(calls[calls.len() - 2], "sync");
        let umounts: Vec<_> = calls.iter().filter(|c| c.starts_with("umount")).collect();
        assert_eq!(umounts.len(), 7, "{calls:?}");
        assert_eq!(umounts[0].as_str(), "umount /mnt/with space");
    }
}
