//! The root switch of the target stage (issue 7 §2): `switch_root` (chdir, then `MS_MOVE` onto
//! `/`, then chroot, as busybox does: the initramfs is rootfs, where `pivot_root` is not
//! allowed), and lazy unmounting at shutdown. The overlay mounts themselves go through
//! [`super::Syscalls::mount`]. Safe wrappers over `rustix`; each error names the call.

use std::path::{Path, PathBuf};

use rustix::mount::UnmountFlags;

/// Errors of the root switch and unmount calls.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    /// `mount(src, dst, NULL, MS_MOVE)` failed.
    #[error("mount({from}, {to}, MS_MOVE)")]
    Move {
        /// The mount moved.
        from: PathBuf,
        /// Its new place.
        to: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// `chdir`/`chroot` during switch_root failed.
    #[error("{call}({path})")]
    Root {
        /// `chdir` or `chroot`.
        call: &'static str,
        /// Its argument.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// `umount2(target, flags)` failed.
    #[error("umount2({target}, detach={detach})")]
    Unmount {
        /// The mount point.
        target: PathBuf,
        /// Whether `MNT_DETACH` was given.
        detach: bool,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// `mount(from, to, NULL, MS_MOVE)`: moves a mount (with its submounts) to `to`.
///
/// # Errors
/// [`MountError::Move`].
pub fn move_mount(from: &Path, to: &Path) -> Result<(), MountError> {
    rustix::mount::mount_move(from, to).map_err(|e| MountError::Move {
        from: from.to_path_buf(),
        to: to.to_path_buf(),
        source: e.into(),
    })
}

/// `chdir(newroot)`, `mount(".", "/", MS_MOVE)`, `chroot(".")`, `chdir("/")`: makes the mount at
/// `newroot` the root of this process (busybox `switch_root`). The caller deletes the initramfs
/// contents first.
///
/// # Errors
/// [`MountError::Root`] or [`MountError::Move`] naming the failing step.
pub fn switch_root(newroot: &Path) -> Result<(), MountError> {
    let root_err = |call: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |e: rustix::io::Errno| MountError::Root {
            call,
            path,
            source: e.into(),
        }
    };
    rustix::process::chdir(newroot).map_err(root_err("chdir", newroot))?;
    move_mount(Path::new("."), Path::new("/"))?;
    rustix::process::chroot(".").map_err(root_err("chroot", Path::new(".")))?;
    rustix::process::chdir("/").map_err(root_err("chdir", Path::new("/")))
}

/// `umount2(target, 0)`, or with `MNT_DETACH` when `detach` (lazy unmount: the mount leaves the
/// tree now and goes away once no longer busy).
///
/// # Errors
/// [`MountError::Unmount`].
pub fn unmount(target: &Path, detach: bool) -> Result<(), MountError> {
    let flags = if detach {
        UnmountFlags::DETACH
    } else {
        UnmountFlags::empty()
    };
    rustix::mount::unmount(target, flags).map_err(|e| MountError::Unmount {
        target: target.to_path_buf(),
        detach,
        source: e.into(),
    })
}

/// `sync()`: flushes every filesystem's dirty data; never fails.
pub fn sync() {
    rustix::fs::sync();
}
