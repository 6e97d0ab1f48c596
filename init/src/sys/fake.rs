//! A recording fake of [`Syscalls`] for unit tests (youki `syscall/test.rs`): each call is
//! appended to a log as one line of text and succeeds, unless a failure was injected for a
//! call whose text starts with a given prefix.

use std::os::fd::BorrowedFd;
use std::path::Path;
use std::sync::Mutex;

use super::{KexecSegment, MountFlags, RebootCmd, SysError, Syscalls};

/// Records calls; see the module docs. Line formats: `mkdir <path> <mode>`,
/// `mount <source> <target> <fstype> <flags:?> <data|->`, `umount <target>`,
/// `finit_module <path> <params>`, `mknod_block <path> <major>:<minor>`,
/// `kexec_file_load <cmdline>`, `kexec_load entry=<hex> flags=<hex> <mem>+<bufsz>/<memsz> ...`
/// (addresses in hex, sizes in bytes), `sync`, `reboot <Cmd:?>`. The segments' bytes of the
/// last `kexec_load` are kept for [`Recording::kexec_segments`].
#[derive(Debug, Default)]
pub struct Recording {
    calls: Mutex<Vec<String>>,
    failures: Mutex<Vec<(String, i32)>>,
    segments: Mutex<Vec<(u64, Vec<u8>)>>,
}

impl Recording {
    /// A fake with no calls and no failures.
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes every later call whose line starts with `prefix` fail with `errno`.
    pub fn fail_on(&self, prefix: &str, errno: i32) {
        if let Ok(mut f) = self.failures.lock() {
            f.push((prefix.to_string(), errno));
        }
    }

    /// The calls so far, in order.
    pub fn calls(&self) -> Vec<String> {
        self.calls.lock().map(|c| c.clone()).unwrap_or_default()
    }

    /// The segments of the last `kexec_load` call: physical address and bytes.
    pub fn kexec_segments(&self) -> Vec<(u64, Vec<u8>)> {
        self.segments.lock().map(|s| s.clone()).unwrap_or_default()
    }

    fn record(&self, line: String) -> Result<(), SysError> {
        let fail = self.failures.lock().ok().and_then(|f| {
            f.iter()
                .find(|(p, _)| line.starts_with(p.as_str()))
                .map(|(_, e)| *e)
        });
        if let Ok(mut c) = self.calls.lock() {
            c.push(line.clone());
        }
        match fail {
            Some(errno) => Err(SysError::new(
                line,
                std::io::Error::from_raw_os_error(errno),
            )),
            None => Ok(()),
        }
    }
}

impl Syscalls for Recording {
    fn mkdir_all(&self, path: &Path, mode: u32) -> Result<(), SysError> {
        self.record(format!("mkdir {} {mode:o}", path.display()))
    }

    fn mount(
        &self,
        source: &str,
        target: &Path,
        fstype: &str,
        flags: MountFlags,
        data: Option<&str>,
    ) -> Result<(), SysError> {
        self.record(format!(
            "mount {source} {} {fstype} {flags:?} {}",
            target.display(),
            data.unwrap_or("-")
        ))
    }

    fn unmount(&self, target: &Path) -> Result<(), SysError> {
        self.record(format!("umount {}", target.display()))
    }

    fn finit_module(&self, path: &Path, params: &str) -> Result<(), SysError> {
        self.record(format!("finit_module {} {params}", path.display()))
    }

    fn finit_module_compressed(&self, path: &Path, params: &str) -> Result<(), SysError> {
        self.record(format!(
            "finit_module_compressed {} {params}",
            path.display()
        ))
    }

    fn init_module(&self, image: &[u8], params: &str) -> Result<(), SysError> {
        self.record(format!("init_module {} bytes {params}", image.len()))
    }

    fn mknod_block(&self, path: &Path, major: u32, minor: u32) -> Result<(), SysError> {
        self.record(format!("mknod_block {} {major}:{minor}", path.display()))
    }

    fn kexec_file_load(
        &self,
        _kernel: BorrowedFd<'_>,
        _initrd: BorrowedFd<'_>,
        cmdline: &str,
    ) -> Result<(), SysError> {
        self.record(format!("kexec_file_load {cmdline}"))
    }

    fn kexec_load(
        &self,
        entry: u64,
        segments: &[KexecSegment<'_>],
        flags: u64,
    ) -> Result<(), SysError> {
        if let Ok(mut s) = self.segments.lock() {
            *s = segments.iter().map(|g| (g.mem, g.buf.to_vec())).collect();
        }
        let segs: Vec<String> = segments
            .iter()
            .map(|g| format!("{:#x}+{}/{}", g.mem, g.buf.len(), g.memsz))
            .collect();
        self.record(format!(
            "kexec_load entry={entry:#x} flags={flags:#x} {}",
            segs.join(" ")
        ))
    }

    fn sync(&self) {
        let _ = self.record("sync".to_string());
    }

    fn reboot(&self, cmd: RebootCmd) -> Result<(), SysError> {
        self.record(format!("reboot {cmd:?}"))
    }

    fn set_realtime(&self, secs: i64, nanos: u32) -> Result<(), SysError> {
        self.record(format!("clock_settime REALTIME {secs}.{nanos}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn injected_failure_hits_only_matching_calls() {
        let f = Recording::new();
        f.fail_on("finit_module /m/b.ko", libc::EEXIST);
        assert!(f.finit_module(Path::new("/m/a.ko"), "").is_ok());
        let e = f.finit_module(Path::new("/m/b.ko"), "").unwrap_err();
        assert_eq!(e.errno(), Some(libc::EEXIST));
        assert_eq!(
            f.calls(),
            ["finit_module /m/a.ko ", "finit_module /m/b.ko "]
        );
    }
}
