//! Every `unsafe` block and raw syscall of the init, one safe function per syscall
//! (STYLE.md "Unsafe and syscalls"). Error text names the call and its arguments.
//!
//! The boot and target sequences do not call these functions directly: they go through the
//! [`Syscalls`] trait, implemented by [`linux::Linux`] (the real calls) and by
//! [`fake::Recording`] (records each call as a line of text and can be told to fail one), as in
//! youki's `syscall/{syscall,linux,test}.rs`. Unit tests check a stage's plan against the record.

pub mod evdev;
pub mod fake;
pub mod linux;
pub mod loopdev;
pub mod signals;
pub mod switch_root;

use std::os::fd::BorrowedFd;
use std::path::Path;

pub use rustix::mount::MountFlags;

/// `statfs` `f_type` of a ramfs (`RAMFS_MAGIC`, `include/uapi/linux/magic.h`).
pub const RAMFS_MAGIC: u64 = 0x8584_58f6;
/// `statfs` `f_type` of a tmpfs (`TMPFS_MAGIC`, `include/uapi/linux/magic.h`).
pub const TMPFS_MAGIC: u64 = 0x0102_1994;

/// What `reboot(2)` should do (`LINUX_REBOOT_CMD_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RebootCmd {
    /// `LINUX_REBOOT_CMD_KEXEC`: jump into the kernel loaded by `kexec_file_load`.
    Kexec,
    /// `LINUX_REBOOT_CMD_POWER_OFF`.
    PowerOff,
    /// `LINUX_REBOOT_CMD_HALT`.
    Halt,
    /// `LINUX_REBOOT_CMD_RESTART`.
    Restart,
}

/// One `kexec_load` segment: `buf` is copied to physical address `mem`, and the rest of the
/// `memsz` bytes there is zeroed (`struct kexec_segment`, `include/uapi/linux/kexec.h`).
#[derive(Debug, Clone, Copy)]
pub struct KexecSegment<'a> {
    /// The bytes to copy.
    pub buf: &'a [u8],
    /// Physical destination address (page-aligned), in bytes.
    pub mem: u64,
    /// Bytes reserved at `mem` (page-aligned, at least `buf.len()`).
    pub memsz: u64,
}

/// A failed system call: the call with its arguments, and the OS error.
#[derive(Debug, thiserror::Error)]
#[error("{call}")]
pub struct SysError {
    /// The call and its arguments as text, e.g. `mount("proc", "/proc", "proc", NOSUID)`.
    pub call: String,
    /// The OS error (`errno`).
    #[source]
    pub source: std::io::Error,
}

impl SysError {
    /// A failed `call` with `errno`.
    pub fn new(call: impl Into<String>, source: impl Into<std::io::Error>) -> Self {
        SysError {
            call: call.into(),
            source: source.into(),
        }
    }

    /// The `errno` value, if the error came from the OS.
    pub fn errno(&self) -> Option<i32> {
        self.source.raw_os_error()
    }
}

/// The system calls the boot and target stages use. Paths are absolute; modes are permission
/// bits (`0o755`).
pub trait Syscalls {
    /// `mkdir -p path` with `mode` for the created directories; existing directories are fine.
    fn mkdir_all(&self, path: &Path, mode: u32) -> Result<(), SysError>;

    /// `mount(2)`: `source` (device or pseudo name), `target`, `fstype`, `flags`, `data`
    /// (comma-separated options such as `mode=0755`).
    fn mount(
        &self,
        source: &str,
        target: &Path,
        fstype: &str,
        flags: MountFlags,
        data: Option<&str>,
    ) -> Result<(), SysError>;

    /// `umount2(target, 0)`.
    fn unmount(&self, target: &Path) -> Result<(), SysError>;

    /// `finit_module(open(path), params, 0)`. `EEXIST` (already loaded) is returned as an error;
    /// the caller decides (see [`SysError::errno`]).
    fn finit_module(&self, path: &Path, params: &str) -> Result<(), SysError>;

    /// `finit_module(open(path), params, MODULE_INIT_COMPRESSED_FILE)`: the kernel decompresses
    /// the module itself (Linux 5.17+ with `CONFIG_MODULE_DECOMPRESS`, for the format named in
    /// `/sys/module/compression`). `EEXIST` as for [`Syscalls::finit_module`].
    fn finit_module_compressed(&self, path: &Path, params: &str) -> Result<(), SysError>;

    /// `init_module(image, len, params)`: loads a module image from memory (one this process
    /// decompressed). `EEXIST` as for [`Syscalls::finit_module`].
    fn init_module(&self, image: &[u8], params: &str) -> Result<(), SysError>;

    /// `mknod(path, S_IFBLK | 0600, makedev(major, minor))`; an existing node is fine.
    fn mknod_block(&self, path: &Path, major: u32, minor: u32) -> Result<(), SysError>;

    /// `kexec_file_load(kernel, initrd, cmdline, 0)`: loads the next kernel (Linux 3.17+).
    fn kexec_file_load(
        &self,
        kernel: BorrowedFd<'_>,
        initrd: BorrowedFd<'_>,
        cmdline: &str,
    ) -> Result<(), SysError>;

    /// `kexec_load(entry, segments, flags)`: loads the next kernel from segments the caller
    /// placed at physical addresses (`mem` and `memsz` page-aligned, none overlapping, at most
    /// 16); `entry` is the physical address the CPU jumps to. The arm64 path for kernels without
    /// `CONFIG_KEXEC_FILE` ([`crate::kexec::arm64`]).
    fn kexec_load(
        &self,
        entry: u64,
        segments: &[KexecSegment<'_>],
        flags: u64,
    ) -> Result<(), SysError>;
    /// `sync(2)`.
    fn sync(&self);

    /// `clock_settime(CLOCK_REALTIME, {secs, nanos})`: sets the system clock (issue 15 §3:
    /// only ever forward, to a floor, an SNTP reading or signed evidence).
    fn set_realtime(&self, secs: i64, nanos: u32) -> Result<(), SysError>;

    /// `reboot(2)` with `cmd`; returns only on failure.
    fn reboot(&self, cmd: RebootCmd) -> Result<(), SysError>;
}
