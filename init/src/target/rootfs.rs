//! Step 2 of the target stage (issue 7 §2; seed 003 "OverlayFS Pattern"): the verified rootfs
//! squashfs on a read-only loop device as the overlay's lowerdir, upperdir and workdir on a
//! tmpfs, the overlay on `/newroot`, `/phase/boot` bind-mounted read-only at
//! `/newroot/var/lib/phase/boot` (plasmd serves it), and `/proc`, `/sys`, `/dev`, `/run` moved
//! into the new root. Then the initramfs files no longer needed are deleted (RAM returned) and
//! the root is switched.
//!
//! The sequence is data ([`plan`] returns [`MountOp`]s, each printable for the log, as u-root's
//! `root_linux.go` tables) run by [`execute`] against [`Syscalls`], so it is unit-tested against
//! the recording fake. The lower layer and the tmpfs live under `/run/phase/`, so they move
//! with `/run` and stay visible in the target for debugging.

use std::fmt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::sys::loopdev::{self, LoopDevice, LoopError};
use crate::sys::{MountFlags, SysError, Syscalls};

/// Where things go; [`Layout::default`] is the real one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// Directory with `manifest.json` and the artifacts (from the appended cpio).
    pub boot_dir: PathBuf,
    /// The squashfs image (the `rootfs` artifact).
    pub rootfs_image: PathBuf,
    /// Mount point of the squashfs (lowerdir).
    pub lower: PathBuf,
    /// Mount point of the tmpfs holding `upper/` and `work/`.
    pub overlay: PathBuf,
    /// Mount point of the overlay (the new root).
    pub newroot: PathBuf,
    /// Where `boot_dir` appears inside the new root (absolute path in the new root).
    pub served_at: PathBuf,
    /// API filesystems moved into the new root, in order.
    pub moved: Vec<PathBuf>,
}

impl Default for Layout {
    fn default() -> Self {
        Layout {
            boot_dir: PathBuf::from("/phase/boot"),
            rootfs_image: PathBuf::from("/phase/boot/rootfs"),
            lower: PathBuf::from("/run/phase/lower"),
            overlay: PathBuf::from("/run/phase/overlay"),
            newroot: PathBuf::from("/newroot"),
            served_at: PathBuf::from("/var/lib/phase/boot"),
            moved: ["/proc", "/sys", "/dev", "/run"]
                .iter()
                .map(PathBuf::from)
                .collect(),
        }
    }
}

/// One step of the root filesystem setup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountOp {
    /// `mkdir -p` (mode 0755).
    Mkdir(PathBuf),
    /// Attach `image` to a read-only loop device and mount it read-only as `fstype` on `target`.
    MountImage {
        /// The image file.
        image: PathBuf,
        /// Mount point.
        target: PathBuf,
        /// Filesystem type (`squashfs`).
        fstype: &'static str,
    },
    /// A pseudo filesystem (`tmpfs`, `overlay`) on `target` with options `data`.
    Mount {
        /// Filesystem type, also used as the source name.
        fstype: &'static str,
        /// Mount point.
        target: PathBuf,
        /// Options.
        data: String,
    },
    /// `MS_BIND` then `MS_REMOUNT|MS_BIND|MS_RDONLY`.
    BindReadOnly {
        /// What is exposed.
        from: PathBuf,
        /// Where.
        to: PathBuf,
    },
    /// `MS_MOVE`.
    Move {
        /// The mount point now.
        from: PathBuf,
        /// Its new place.
        to: PathBuf,
    },
}

impl fmt::Display for MountOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MountOp::Mkdir(p) => write!(f, "mkdir -p {}", p.display()),
            MountOp::MountImage {
                image,
                target,
                fstype,
            } => {
                write!(
                    f,
                    "mount -t {fstype} -o ro,loop {} {}",
                    image.display(),
                    target.display()
                )
            }
            MountOp::Mount {
                fstype,
                target,
                data,
            } => write!(
                f,
                "mount -t {fstype} -o {data} {fstype} {}",
                target.display()
            ),
            MountOp::BindReadOnly { from, to } => {
                write!(f, "mount -o bind,ro {} {}", from.display(), to.display())
            }
            MountOp::Move { from, to } => {
                write!(f, "mount --move {} {}", from.display(), to.display())
            }
        }
    }
}

/// Errors of the root filesystem setup.
#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    /// The boot directory has no rootfs image.
    #[error("no rootfs image at {path} (the manifest has no rootfs artifact)")]
    NoImage {
        /// Where it was expected.
        path: PathBuf,
    },
    /// A step failed.
    #[error("{op}")]
    Step {
        /// The step, as printed by [`MountOp`]'s `Display`.
        op: String,
        /// The failed call.
        #[source]
        source: StepError,
    },
}

/// The call that failed in a step.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    /// A system call through [`Syscalls`].
    #[error(transparent)]
    Sys(#[from] SysError),
    /// Attaching the loop device.
    #[error(transparent)]
    Loop(#[from] LoopError),
}

/// Attaches images to read-only loop devices (behind a trait so the plan runs against a fake).
pub trait LoopAttach {
    /// Attaches `image`; returns the device node. The device stays attached as long as `self`
    /// lives (or, once mounted, as long as the mount).
    ///
    /// # Errors
    /// [`LoopError`].
    fn attach(&mut self, image: &Path) -> Result<PathBuf, LoopError>;
}

/// Real loop devices ([`loopdev::attach_read_only`]), kept open until this value is dropped.
#[derive(Debug, Default)]
pub struct LoopDevices {
    held: Vec<LoopDevice>,
}

impl LoopAttach for LoopDevices {
    fn attach(&mut self, image: &Path) -> Result<PathBuf, LoopError> {
        let dev = loopdev::attach_read_only(image)?;
        let path = dev.path().to_path_buf();
        self.held.push(dev);
        Ok(path)
    }
}

/// The steps that build the new root for `layout`, in order.
pub fn plan(layout: &Layout) -> Vec<MountOp> {
    let upper = layout.overlay.join("upper");
    let work = layout.overlay.join("work");
    let served = layout.newroot.join(
        layout
            .served_at
            .strip_prefix("/")
            .unwrap_or(&layout.served_at),
    );
    let mut ops = vec![
        MountOp::Mkdir(layout.lower.clone()),
        MountOp::MountImage {
            image: layout.rootfs_image.clone(),
            target: layout.lower.clone(),
            fstype: "squashfs",
        },
        MountOp::Mkdir(layout.overlay.clone()),
        MountOp::Mount {
            fstype: "tmpfs",
            target: layout.overlay.clone(),
            data: "mode=0755".to_owned(),
        },
        MountOp::Mkdir(upper.clone()),
        MountOp::Mkdir(work.clone()),
        MountOp::Mkdir(layout.newroot.clone()),
        MountOp::Mount {
            fstype: "overlay",
            target: layout.newroot.clone(),
            data: format!(
                "lowerdir={},upperdir={},workdir={}",
                layout.lower.display(),
                upper.display(),
                work.display()
            ),
        },
        MountOp::Mkdir(served.clone()),
        MountOp::BindReadOnly {
            from: layout.boot_dir.clone(),
            to: served,
        },
    ];
    for fs in &layout.moved {
        let to = layout.newroot.join(fs.strip_prefix("/").unwrap_or(fs));
        ops.push(MountOp::Mkdir(to.clone()));
        ops.push(MountOp::Move {
            from: fs.clone(),
            to,
        });
    }
    ops
}

/// `MS_MOVE`, which rustix keeps out of the public [`MountFlags`]; the kernel takes raw bits.
fn ms(bits: libc::c_ulong) -> MountFlags {
    MountFlags::from_bits_retain(bits as _)
}

/// Runs `ops` in order; stops at the first failure.
///
/// # Errors
/// [`RootfsError::Step`] naming the step and the failed call.
pub fn execute(
    ops: &[MountOp],
    sys: &dyn Syscalls,
    loops: &mut dyn LoopAttach,
) -> Result<(), RootfsError> {
    for op in ops {
        run_op(op, sys, loops).map_err(|source| RootfsError::Step {
            op: op.to_string(),
            source,
        })?;
    }
    Ok(())
}

fn run_op(op: &MountOp, sys: &dyn Syscalls, loops: &mut dyn LoopAttach) -> Result<(), StepError> {
    match op {
        MountOp::Mkdir(p) => sys.mkdir_all(p, 0o755)?,
        MountOp::MountImage {
            image,
            target,
            fstype,
        } => {
            let dev = loops.attach(image)?;
            sys.mount(
                &dev.to_string_lossy(),
                target,
                fstype,
                MountFlags::RDONLY,
                None,
            )?;
        }
        MountOp::Mount {
            fstype,
            target,
            data,
        } => sys.mount(fstype, target, fstype, MountFlags::empty(), Some(data))?,
        MountOp::BindReadOnly { from, to } => {
            sys.mount(&from.to_string_lossy(), to, "", MountFlags::BIND, None)?;
            sys.mount(
                "none",
                to,
                "",
                ms(libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY),
                None,
            )?;
        }
        MountOp::Move { from, to } => {
            sys.mount(&from.to_string_lossy(), to, "", ms(libc::MS_MOVE), None)?
        }
    }
    Ok(())
}

/// What [`free_initramfs`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Freed {
    /// Files, links and directories removed.
    pub removed: u64,
    /// Bytes of regular files removed.
    pub bytes: u64,
    /// Entries that could not be removed (path and error text), logged by the caller.
    pub failed: Vec<String>,
}

/// Deletes everything under `root` that lives on `root`'s filesystem, except `keep` and its
/// ancestors (busybox `switch_root`'s `delete_contents`): mount points of other filesystems
/// (`/newroot`, the moved API filesystems) are never entered, so only initramfs memory is
/// returned. `keep` (`/phase/boot`: bind-mounted and served) stays. Best effort: failures are
/// collected, not fatal.
pub fn free_initramfs(root: &Path, keep: &[PathBuf]) -> Freed {
    let mut freed = Freed::default();
    match std::fs::symlink_metadata(root) {
        Ok(meta) => delete_under(root, meta.dev(), keep, &mut freed, 0),
        Err(e) => freed.failed.push(format!("{}: {e}", root.display())),
    }
    freed
}

/// Deepest directory nesting entered (the initramfs is shallow; this bounds the recursion).
const MAX_DEPTH: usize = 64;

fn delete_under(dir: &Path, dev: u64, keep: &[PathBuf], freed: &mut Freed, depth: usize) {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => return freed.failed.push(format!("{}: {e}", dir.display())),
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.dev() != dev || keep.iter().any(|k| k == &path) {
            continue;
        }
        let is_ancestor = keep.iter().any(|k| k.starts_with(&path));
        if meta.is_dir() {
            if depth < MAX_DEPTH {
                delete_under(&path, dev, keep, freed, depth + 1);
            }
            if !is_ancestor {
                match std::fs::remove_dir(&path) {
                    Ok(()) => freed.removed += 1,
                    Err(e) => freed.failed.push(format!("{}: {e}", path.display())),
                }
            }
        } else {
            match std::fs::remove_file(&path) {
                Ok(()) => {
                    freed.removed += 1;
                    if meta.is_file() {
                        freed.bytes += meta.len();
                    }
                }
                Err(e) => freed.failed.push(format!("{}: {e}", path.display())),
            }
        }
    }
}

#[cfg(test)]
mod tests;
