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

/// The early mounts in order: proc, sys, devtmpfs on /dev, tmpfs on /run (required), then
/// devpts on /dev/pts (optional).
pub const EARLY_MOUNTS: &[MountSpec] = &[
    MountSpec {
        source: "proc",
        target: "/proc",
        fstype: "proc",
        flags: NOSUID_NODEV_NOEXEC,
        data: None,
        required: true,
    },
    MountSpec {
        source: "sysfs",
        target: "/sys",
        fstype: "sysfs",
        flags: NOSUID_NODEV_NOEXEC,
        data: None,
        required: true,
    },
    MountSpec {
        source: "devtmpfs",
        target: "/dev",
        fstype: "devtmpfs",
        flags: MountFlags::NOSUID,
        data: Some("mode=0755"),
        required: true,
    },
    MountSpec {
        source: "tmpfs",
        target: "/run",
        fstype: "tmpfs",
        flags: MountFlags::NOSUID.union(MountFlags::NODEV),
        data: Some("mode=0755"),
        required: true,
    },
    MountSpec {
        source: "devpts",
        target: "/dev/pts",
        fstype: "devpts",
        flags: MountFlags::NOSUID.union(MountFlags::NOEXEC),
        data: Some("gid=5,mode=0620,ptmxmode=0666"),
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

/// Outcome of [`mount_early`]: the names of what was mounted, and the optional mounts that
/// failed (already logged).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Mounted {
    /// Mount point names without `/` (`proc`, `sys`, `dev`, `run`, `dev/pts`).
    pub mounted: Vec<&'static str>,
    /// Optional mounts that failed, as text with their error.
    pub skipped: Vec<String>,
}

/// Mounts `table` in order. `EBUSY` (already mounted: the kernel may have mounted devtmpfs with
/// `CONFIG_DEVTMPFS_MOUNT`, or a retry runs this again) counts as mounted. Errors:
/// [`MountError::Failed`] on the first failed required mount.
pub fn mount_early(sys: &dyn Syscalls, table: &[MountSpec]) -> Result<Mounted, MountError> {
    let mut out = Mounted::default();
    for spec in table {
        let target = Path::new(spec.target);
        let res = sys
            .mkdir_all(target, 0o755)
            .and_then(|()| sys.mount(spec.source, target, spec.fstype, spec.flags, spec.data));
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

    #[test]
    fn failed_optional_mount_is_skipped() {
        let f = Recording::new();
        f.fail_on("mount devpts", libc::ENODEV);
        let m = mount_early(&f, EARLY_MOUNTS).unwrap();
        assert_eq!(m.mounted, ["proc", "sys", "dev", "run"]);
        assert_eq!(m.skipped.len(), 1);
    }
}
