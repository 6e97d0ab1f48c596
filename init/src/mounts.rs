//! Early mounts: the first thing PID 1 does in both stages (DESIGN §1, issue 6 §1), before the
//! command line can be read or kmsg opened. The mounts are a table of data (u-root
//! `pkg/libinit/root_linux.go`), each entry printable for the log.

use std::path::Path;

use crate::sys::{MountFlags, SysError, Syscalls};

/// One early mount: `mount(source, target, fstype, flags, data)` after `mkdir -p target`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MountSpec {
    /// Source (pseudo file systems take their type name).
    pub source: &'static str,
    /// Absolute mount point.
    pub target: &'static str,
    /// File system type.
    pub fstype: &'static str,
    /// Mount flags.
    pub flags: MountFlags,
    /// Options string, if any.
    pub data: Option<&'static str>,
    /// Options tried instead when the kernel refuses `data` with `EINVAL` (an option this
    /// kernel does not have, such as `huge=` without transparent huge pages).
    pub fallback_data: Option<&'static str>,
    /// False: a failure is logged and the boot goes on (e.g. /dev/pts).
    pub required: bool,
}

impl std::fmt::Display for MountSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} on {} type {}", self.source, self.target, self.fstype)?;
        if let Some(d) = self.data {
            write!(f, " ({d})")?;
        }
        Ok(())
    }
}

const NOSUID_NODEV_NOEXEC: MountFlags = MountFlags::NOSUID
    .union(MountFlags::NODEV)
    .union(MountFlags::NOEXEC);

/// The options of the tmpfs on `/run`, where the boot stage downloads the artifacts
/// ([`crate::boot::FETCH_DIR`]). `huge=within_size`: every 2 MiB range inside a file's length
/// gets one 2 MiB page, and the download presizes its file ([`crate::fetch::partial`]), so a
/// GiB costs 512 page allocations instead of 262,144 (issue 18 §4; `make bench` fetches into a
/// tmpfs mounted with these options, read from this line).
pub const RUN_TMPFS_DATA: &str = "mode=0755,huge=within_size";

/// The early mounts in order: proc, sys, devtmpfs on /dev, tmpfs on /run (required), then
/// devpts on /dev/pts (optional).
pub const EARLY_MOUNTS: &[MountSpec] = &[
    MountSpec {
        source: "proc",
        target: "/proc",
        fstype: "proc",
        flags: NOSUID_NODEV_NOEXEC,
        data: None,
        fallback_data: None,
        required: true,
    },
    MountSpec {
        source: "sysfs",
        target: "/sys",
        fstype: "sysfs",
        flags: NOSUID_NODEV_NOEXEC,
        data: None,
        fallback_data: None,
        required: true,
    },
    MountSpec {
        source: "devtmpfs",
        target: "/dev",
        fstype: "devtmpfs",
        flags: MountFlags::NOSUID,
        data: Some("mode=0755"),
        fallback_data: None,
        required: true,
    },
    MountSpec {
        source: "tmpfs",
        target: "/run",
        fstype: "tmpfs",
        flags: MountFlags::NOSUID.union(MountFlags::NODEV),
        data: Some(RUN_TMPFS_DATA),
        fallback_data: Some("mode=0755"),
        required: true,
    },
    MountSpec {
        source: "devpts",
        target: "/dev/pts",
        fstype: "devpts",
        flags: MountFlags::NOSUID.union(MountFlags::NOEXEC),
        data: Some("gid=5,mode=0620,ptmxmode=0666"),
        fallback_data: None,
        required: false,
    },
];

/// Errors of the early mounts.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    /// A required mount (or creating its mount point) failed.
    #[error("early mount {spec}")]
    Failed {
        /// The mount, as text.
        spec: String,
        /// The failed call.
        #[source]
        source: SysError,
    },
}

/// Outcome of [`mount_early`]: the names of what was mounted, the optional mounts that failed,
/// and the mounts made with their fallback options (the caller logs both).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Mounted {
    /// Mount point names without `/` (`proc`, `sys`, `dev`, `run`, `dev/pts`).
    pub mounted: Vec<&'static str>,
    /// Optional mounts that failed, as text with their error.
    pub skipped: Vec<String>,
    /// Mounts made with their `fallback_data` after `EINVAL`, as text with the first error.
    pub fallbacks: Vec<String>,
}

/// Mounts `table` in order. `EBUSY` (already mounted: the kernel may have mounted devtmpfs with
/// `CONFIG_DEVTMPFS_MOUNT`, or a retry runs this again) counts as mounted. Errors:
/// [`MountError::Failed`] on the first failed required mount.
pub fn mount_early(sys: &dyn Syscalls, table: &[MountSpec]) -> Result<Mounted, MountError> {
    let mut out = Mounted::default();
    for spec in table {
        let target = Path::new(spec.target);
        let mount = |data| sys.mount(spec.source, target, spec.fstype, spec.flags, data);
        let res = sys.mkdir_all(target, 0o755).and_then(|()| {
            match (mount(spec.data), spec.fallback_data) {
                (Err(e), Some(fallback)) if e.errno() == Some(libc::EINVAL) => {
                    out.fallbacks.push(format!(
                        "{spec}: {}; mounted with ({fallback}) instead",
                        crate::log::error_chain(&e),
                    ));
                    mount(Some(fallback))
                }
                (other, _) => other,
            }
        });
        match res {
            Ok(()) => {}
            Err(e) if e.errno() == Some(libc::EBUSY) => {}
            Err(e) if !spec.required => {
                out.skipped
                    .push(format!("{spec}: {}", crate::log::error_chain(&e)));
                continue;
            }
            Err(source) => {
                return Err(MountError::Failed {
                    spec: spec.to_string(),
                    source,
                })
            }
        }
        out.mounted.push(spec.target.trim_start_matches('/'));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::fake::Recording;

    #[test]
    fn mount_plan_is_proc_sys_dev_run_then_pts() {
        let f = Recording::new();
        let m = mount_early(&f, EARLY_MOUNTS).unwrap();
        assert_eq!(m.mounted, ["proc", "sys", "dev", "run", "dev/pts"]);
        let mounts: Vec<String> = f
            .calls()
            .into_iter()
            .filter(|c| c.starts_with("mount "))
            .collect();
        assert_eq!(mounts.len(), 5);
        assert!(
            mounts[0].starts_with("mount proc /proc proc"),
            "{}",
            mounts[0]
        );
        assert!(
            mounts[2].starts_with("mount devtmpfs /dev devtmpfs")
                && mounts[2].ends_with("mode=0755")
        );
        assert!(mounts[3].starts_with("mount tmpfs /run tmpfs"));
        // Every mount point is created before it is mounted.
        assert_eq!(f.calls()[0], "mkdir /proc 755");
    }

    #[test]
    fn already_mounted_dev_is_fine() {
        let f = Recording::new();
        f.fail_on("mount devtmpfs", libc::EBUSY);
        let m = mount_early(&f, EARLY_MOUNTS).unwrap();
        assert!(m.mounted.contains(&"dev"));
    }

    #[test]
    fn failed_required_mount_stops_with_its_name() {
        let f = Recording::new();
        f.fail_on("mount sysfs", libc::ENODEV);
        let e = mount_early(&f, EARLY_MOUNTS).unwrap_err();
        let text = crate::log::error_chain(&e);
        assert!(
            text.contains("sysfs on /sys type sysfs") && text.contains("mount sysfs"),
            "{text}"
        );
        // Nothing after /sys was attempted.
        assert!(!f.calls().iter().any(|c| c.contains("/run")));
    }

    /// The mount call of `/run` as the fake records it, up to its options.
    fn run_mount() -> String {
        let run = EARLY_MOUNTS.iter().find(|s| s.target == "/run").unwrap();
        format!("mount tmpfs /run tmpfs {:?} ", run.flags)
    }

    #[test]
    fn run_asks_for_huge_pages_within_size() {
        let f = Recording::new();
        let m = mount_early(&f, EARLY_MOUNTS).unwrap();
        let calls = f.calls();
        let run: Vec<&String> = calls
            .iter()
            .filter(|c| c.starts_with(&run_mount()))
            .collect();
        assert_eq!(run, [&format!("{}mode=0755,huge=within_size", run_mount())]);
        assert!(m.fallbacks.is_empty());
    }

    #[test]
    fn a_kernel_without_huge_pages_gets_run_with_the_fallback_options() {
        let f = Recording::new();
        f.fail_on(&format!("{}mode=0755,huge", run_mount()), libc::EINVAL);
        let m = mount_early(&f, EARLY_MOUNTS).unwrap();
        assert!(m.mounted.contains(&"run"), "{m:?}");
        let calls = f.calls();
        let last = calls.iter().rfind(|c| c.starts_with(&run_mount())).unwrap();
        assert_eq!(last, &format!("{}mode=0755", run_mount()));
        assert_eq!(m.fallbacks.len(), 1);
        assert!(
            m.fallbacks[0].contains("tmpfs on /run") && m.fallbacks[0].contains("(mode=0755)"),
            "{:?}",
            m.fallbacks
        );
        assert!(m.skipped.is_empty());
    }

    #[test]
    fn only_einval_tries_the_fallback_options() {
        let f = Recording::new();
        f.fail_on(&run_mount(), libc::ENOMEM);
        let e = mount_early(&f, EARLY_MOUNTS).unwrap_err();
        assert!(crate::log::error_chain(&e).contains("tmpfs on /run"));
        let tries = f
            .calls()
            .iter()
            .filter(|c| c.starts_with(&run_mount()))
            .count();
        assert_eq!(tries, 1);
    }

    #[test]
    fn failed_optional_mount_is_skipped() {
        let f = Recording::new();
        f.fail_on("mount devpts", libc::ENODEV);
        let m = mount_early(&f, EARLY_MOUNTS).unwrap();
        assert_eq!(m.mounted, ["proc", "sys", "dev", "run"]);
        assert_eq!(m.skipped.len(), 1);
    }
}
