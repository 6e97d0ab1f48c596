//! The real [`Syscalls`] implementation: rustix wrappers where they exist, raw
//! `libc::syscall` for `kexec_file_load` (no wrapper in rustix or libc).

use std::ffi::CString;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::path::Path;

use rustix::fs::{FileType, Mode};
use rustix::mount::{MountFlags, UnmountFlags};
use rustix::system::RebootCommand;

use super::{KexecSegment, RebootCmd, SysError, Syscalls};

/// The running kernel.
#[derive(Debug, Clone, Copy, Default)]
pub struct Linux;

fn cstr(what: &str, s: &str) -> Result<CString, SysError> {
    CString::new(s).map_err(|_| {
        SysError::new(
            format!("{what}: argument {s:?} contains a NUL byte"),
            rustix::io::Errno::INVAL,
        )
    })
}

impl Syscalls for Linux {
    fn mkdir_all(&self, path: &Path, mode: u32) -> Result<(), SysError> {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(mode)
            .create(path)
            .map_err(|e| SysError::new(format!("mkdir -p {} (mode {mode:o})", path.display()), e))
    }

    fn mount(
        &self,
        source: &str,
        target: &Path,
        fstype: &str,
        flags: MountFlags,
        data: Option<&str>,
    ) -> Result<(), SysError> {
        let call = || {
            format!(
                "mount({source:?}, {}, {fstype:?}, {flags:?}, {data:?})",
                target.display()
            )
        };
        let data_c = data.map(|d| cstr("mount", d)).transpose()?;
        rustix::mount::mount(source, target, fstype, flags, data_c.as_deref())
            .map_err(|e| SysError::new(call(), e))
    }

    fn unmount(&self, target: &Path) -> Result<(), SysError> {
        rustix::mount::unmount(target, UnmountFlags::empty())
            .map_err(|e| SysError::new(format!("umount2({}, 0)", target.display()), e))
    }

    fn finit_module(&self, path: &Path, params: &str) -> Result<(), SysError> {
        let file = std::fs::File::open(path)
            .map_err(|e| SysError::new(format!("open({}) for finit_module", path.display()), e))?;
        let params_c = cstr("finit_module", params)?;
        rustix::system::finit_module(&file, &params_c, 0).map_err(|e| {
            SysError::new(
                format!("finit_module({}, {params:?}, 0)", path.display()),
                e,
            )
        })
    }

    fn finit_module_compressed(&self, path: &Path, params: &str) -> Result<(), SysError> {
        /// `MODULE_INIT_COMPRESSED_FILE` of `<linux/module.h>` (Linux 5.17).
        const MODULE_INIT_COMPRESSED_FILE: i32 = 4;
        let file = std::fs::File::open(path)
            .map_err(|e| SysError::new(format!("open({}) for finit_module", path.display()), e))?;
        let params_c = cstr("finit_module", params)?;
        rustix::system::finit_module(&file, &params_c, MODULE_INIT_COMPRESSED_FILE).map_err(|e| {
            SysError::new(
                format!(
                    "finit_module({}, {params:?}, MODULE_INIT_COMPRESSED_FILE)",
                    path.display()
                ),
                e,
            )
        })
    }

    fn init_module(&self, image: &[u8], params: &str) -> Result<(), SysError> {
        let params_c = cstr("init_module", params)?;
        rustix::system::init_module(image, &params_c).map_err(|e| {
            SysError::new(
                format!("init_module(<{} bytes>, {params:?})", image.len()),
                e,
            )
        })
    }

    fn mknod_block(&self, path: &Path, major: u32, minor: u32) -> Result<(), SysError> {
        let dev = rustix::fs::makedev(major, minor);
        match rustix::fs::mknodat(
            rustix::fs::CWD,
            path,
            FileType::BlockDevice,
            Mode::from_raw_mode(0o600),
            dev,
        ) {
            Ok(()) | Err(rustix::io::Errno::EXIST) => Ok(()),
            Err(e) => Err(SysError::new(
                format!("mknod({}, S_IFBLK|0600, {major}:{minor})", path.display()),
                e,
            )),
        }
    }

    fn kexec_file_load(
        &self,
        kernel: BorrowedFd<'_>,
        initrd: BorrowedFd<'_>,
        cmdline: &str,
    ) -> Result<(), SysError> {
        let call = || {
            format!(
                "kexec_file_load(kernel_fd={}, initrd_fd={}, cmdline={cmdline:?}, flags=0)",
                kernel.as_raw_fd(),
                initrd.as_raw_fd()
            )
        };
        let c = cstr("kexec_file_load", cmdline)?;
        let len = c.as_bytes_with_nul().len();
        // SAFETY: kexec_file_load(2) takes two fds (borrowed, so open for the duration of the
        // call), the cmdline length including its NUL, a pointer to that NUL-terminated buffer
        // (kept alive by `c` until after the call) and flags. The kernel only reads the buffer.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_kexec_file_load,
                kernel.as_raw_fd(),
                initrd.as_raw_fd(),
                len as libc::c_ulong,
                c.as_ptr(),
                0 as libc::c_ulong,
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(SysError::new(call(), std::io::Error::last_os_error()))
        }
    }

    fn kexec_load(
        &self,
        entry: u64,
        segments: &[KexecSegment<'_>],
        flags: u64,
    ) -> Result<(), SysError> {
        /// `struct kexec_segment` of `include/uapi/linux/kexec.h`.
        #[repr(C)]
        struct RawSegment {
            buf: *const libc::c_void,
            bufsz: libc::size_t,
            mem: libc::c_ulong,
            memsz: libc::size_t,
        }
        let call = || {
            let segs: Vec<String> = segments
                .iter()
                .map(|g| format!("{:#x}+{:#x}/{:#x}", g.mem, g.buf.len(), g.memsz))
                .collect();
            format!(
                "kexec_load(entry={entry:#x}, segments=[{}], flags={flags:#x})",
                segs.join(", ")
            )
        };
        let raw: Vec<RawSegment> = segments
            .iter()
            .map(|g| RawSegment {
                buf: g.buf.as_ptr().cast(),
                bufsz: g.buf.len(),
                mem: g.mem as libc::c_ulong,
                memsz: g.memsz as libc::size_t,
            })
            .collect();
        // SAFETY: kexec_load(2) reads `raw.len()` segment structs from `raw`, and from each
        // `bufsz` bytes at `buf`; both are borrowed slices that outlive the call. The kernel
        // only reads user memory here; it copies the bytes before returning.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_kexec_load,
                entry as libc::c_ulong,
                raw.len() as libc::c_ulong,
                raw.as_ptr(),
                flags as libc::c_ulong,
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(SysError::new(call(), std::io::Error::last_os_error()))
        }
    }

    fn sync(&self) {
        rustix::fs::sync();
    }

    fn set_realtime(&self, secs: i64, nanos: u32) -> Result<(), SysError> {
        let ts = rustix::time::Timespec {
            tv_sec: secs,
            tv_nsec: i64::from(nanos),
        };
        rustix::time::clock_settime(rustix::time::ClockId::Realtime, ts).map_err(|e| {
            SysError::new(
                format!("clock_settime(CLOCK_REALTIME, {secs}.{nanos:09})"),
                e,
            )
        })
    }

    fn reboot(&self, cmd: RebootCmd) -> Result<(), SysError> {
        let c = match cmd {
            RebootCmd::Kexec => RebootCommand::Kexec,
            RebootCmd::PowerOff => RebootCommand::PowerOff,
            RebootCmd::Halt => RebootCommand::Halt,
            RebootCmd::Restart => RebootCommand::Restart,
        };
        rustix::system::reboot(c).map_err(|e| SysError::new(format!("reboot({c:?})"), e))
    }
}

/// `memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING)`: an anonymous in-memory file (the
/// kexec initrd, an inflated kernel), which [`seal`] can seal.
pub fn memfd(name: &str) -> Result<std::fs::File, SysError> {
    rustix::fs::memfd_create(
        name,
        rustix::fs::MemfdFlags::CLOEXEC | rustix::fs::MemfdFlags::ALLOW_SEALING,
    )
    .map(std::fs::File::from)
    .map_err(|e| {
        SysError::new(
            format!("memfd_create({name:?}, MFD_CLOEXEC|MFD_ALLOW_SEALING)"),
            e,
        )
    })
}

/// Seals `file`, a memfd created with [`memfd`]: `F_SEAL_SHRINK | F_SEAL_GROW |
/// F_SEAL_WRITE | F_SEAL_SEAL`, so its bytes can no longer change through any descriptor.
/// Errors: [`SysError`] naming the call (`EPERM` if a writable mapping exists).
pub fn seal(file: &std::fs::File) -> Result<(), SysError> {
    use rustix::fs::SealFlags;
    rustix::fs::fcntl_add_seals(
        file,
        SealFlags::SHRINK | SealFlags::GROW | SealFlags::WRITE | SealFlags::SEAL,
    )
    .map_err(|e| SysError::new("fcntl(F_ADD_SEALS, SHRINK|GROW|WRITE|SEAL)", e))
}

/// Whether `name` matches the shell wildcard `pattern` (`*`, `?`, `[...]`), by glibc's
/// `fnmatch(3)` with no flags: what kmod uses to match a device's modalias against a module's
/// alias (`modules.alias`). A string with a NUL byte cannot be passed to C: it counts as a
/// match, so a module is loaded rather than wrongly left out.
pub fn fnmatch(pattern: &str, name: &str) -> bool {
    let (Ok(p), Ok(n)) = (CString::new(pattern), CString::new(name)) else {
        return true;
    };
    // SAFETY: fnmatch(3) reads the two NUL-terminated strings, which live until it returns,
    // and keeps no pointer to them.
    unsafe { libc::fnmatch(p.as_ptr(), n.as_ptr(), 0) == 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mkdir_all_creates_nested_dirs_and_tolerates_existing() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("a/b/c");
        Linux.mkdir_all(&p, 0o755).unwrap();
        Linux.mkdir_all(&p, 0o755).unwrap();
        assert!(p.is_dir());
    }

    #[test]
    fn finit_module_error_names_call_and_path() {
        let e = Linux
            .finit_module(Path::new("/nonexistent/x.ko"), "")
            .unwrap_err();
        assert!(e.to_string().contains("/nonexistent/x.ko"), "{e}");
        assert_eq!(e.errno(), Some(libc::ENOENT));
    }

    #[test]
    fn memfd_is_writable_and_readable() {
        use std::io::{Read, Seek, Write};
        let mut f = memfd("t").unwrap();
        f.write_all(b"abc").unwrap();
        f.rewind().unwrap();
        let mut s = String::new();
        f.read_to_string(&mut s).unwrap();
        assert_eq!(s, "abc");
    }

    #[test]
    fn mount_error_names_arguments() {
        let e = Linux
            .mount(
                "none",
                Path::new("/nonexistent-phase-test"),
                "nosuchfs",
                MountFlags::empty(),
                Some("x=1"),
            )
            .unwrap_err();
        let t = e.to_string();
        assert!(
            t.contains("nosuchfs") && t.contains("/nonexistent-phase-test"),
            "{t}"
        );
    }
}
