//! The "kexec" stage, last of the boot stage (seed 003 "kexec Handoff", issue 6 §7).
//!
//! - The target command line is the manifest's signed `cmdline` plus the `phase.*` words of the
//!   running command line (those override a `phase.*` key the manifest also sets).
//! - The initrd is built in a memfd: the verified initramfs bytes, zero-padded to 4 bytes, then
//!   an appended reproducible newc cpio ([`phase_layout::newc`]) holding `phase/`, `phase/boot/`
//!   and `phase/boot/{manifest.json,verified,kernel,initramfs,rootfs}`: the exact verified
//!   manifest bytes, the chain-of-custody record ([`crate::custody`]: what the boot stage hashed)
//!   and the artifacts copied from the verified file descriptors kept since the fetch. The
//!   kernel unpacks both archives into the target's rootfs, where the target stage finds
//!   `/phase/boot/manifest.json`.
//! - `kexec_file_load(kernel fd, initrd fd, cmdline)`, `sync`, `reboot(LINUX_REBOOT_CMD_KEXEC)`.
//!   On an arm64 kernel without `CONFIG_KEXEC_FILE` (`ENOSYS`), `kexec_load` with segments
//!   built by [`arm64`] from the same verified descriptors (issue 17 §2).
//!
//! With `phase.kexec=never`, [`write_boot_dir`] puts the same files in `/phase/boot` and the
//! target stage runs on the running kernel.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use phase_layout::newc::{self, Entry, NewcError};

pub mod arm64;

use crate::cmdline::{raw_tokens, word_key};
use crate::sys::{RebootCmd, SysError, Syscalls};

/// Where the target stage finds the release, inside the initrd (no leading `/` in the cpio).
pub const BOOT_DIR: &str = "/phase/boot";

/// The artifact names copied next to the manifest, in this order when present.
pub const BOOT_ARTIFACTS: [&str; 3] = ["kernel", "initramfs", "rootfs"];

/// Errors of the kexec stage.
#[derive(Debug, thiserror::Error)]
pub enum KexecError {
    /// The manifest has no artifact of this name (kernel and initramfs are required).
    #[error("release has no {0} artifact")]
    MissingArtifact(&'static str),
    /// Creating or writing the initrd memfd failed.
    #[error("composing the initrd ({what})")]
    Initrd {
        /// What was being written.
        what: String,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// Writing the appended cpio failed.
    #[error("composing the /phase/boot cpio")]
    Cpio(#[source] NewcError),
    /// Reopening a verified file read-only through `/proc/self/fd` failed.
    #[error("reopen /proc/self/fd/{fd} read-only")]
    Reopen {
        /// The descriptor being reopened.
        fd: i32,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// A system call failed (memfd_create, kexec_file_load, reboot).
    #[error("kexec")]
    Sys(#[source] SysError),
    /// The arm64 `kexec_load` path failed ([`arm64::Arm64Error`]).
    #[error("arm64 kexec_load")]
    Arm64(#[from] arm64::Arm64Error),
    /// Writing `/phase/boot/<name>` for `phase.kexec=never` failed.
    #[error("writing {path}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
}

/// One verified file to hand over: an open descriptor holding exactly `size` verified bytes.
/// Reads use `pread` from offset 0, so the descriptor's position does not matter.
#[derive(Debug, Clone, Copy)]
pub struct Verified<'a> {
    /// The verified file (kept open since the hash matched).
    pub file: &'a File,
    /// Its size in bytes (the manifest's `size_bytes`).
    pub size: u64,
}

/// What the target stage needs: the exact verified manifest bytes and the artifacts by name.
#[derive(Debug, Clone)]
pub struct Handoff<'a> {
    /// The manifest exactly as verified (`VerifiedManifest::raw`).
    pub manifest_raw: &'a [u8],
    /// Artifacts by name (`kernel`, `initramfs`, optional `rootfs`).
    pub artifacts: Vec<(&'static str, Verified<'a>)>,
    /// `phase/boot/verified`: [`crate::custody::Record::render`] of the sizes and SHA-256
    /// digests the boot stage computed over these artifacts' bytes.
    pub custody: &'a str,
    /// `phase/lease.json` ([`crate::net::handover`]): the boot stage's DHCP lease for the
    /// target stage, when it had one. Only in the initrd (`phase.kexec=never` keeps the
    /// running network).
    pub lease: Option<&'a [u8]>,
}

impl<'a> Handoff<'a> {
    /// The artifact `name`. Errors: [`KexecError::MissingArtifact`].
    pub fn get(&self, name: &'static str) -> Result<Verified<'a>, KexecError> {
        self.artifacts
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| *v)
            .ok_or(KexecError::MissingArtifact(name))
    }
}

/// Reads a file with `pread` from a start offset, never moving the descriptor's position
/// (so a verified descriptor can be read by several consumers).
#[derive(Debug)]
pub struct PosReader<'a> {
    /// The file read.
    pub file: &'a File,
    /// Next offset to read, in bytes.
    pub pos: u64,
}

impl Read for PosReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.file.read_at(buf, self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

fn reader(v: Verified<'_>) -> PosReader<'_> {
    PosReader {
        file: v.file,
        pos: 0,
    }
}

/// The target command line: the words of `manifest_cmdline`, except `phase.*` keys that
/// `current` also sets, then the `phase.*` words of `current` (the last one of each key).
/// Quotes are kept as written.
pub fn compose_cmdline(manifest_cmdline: &str, current: &str) -> String {
    let mut ours: Vec<String> = Vec::new();
    for w in raw_tokens(current)
        .into_iter()
        .filter(|w| w.starts_with("phase."))
    {
        let key = word_key(&w).to_string();
        ours.retain(|o| word_key(o) != key);
        ours.push(w);
    }
    let mut words: Vec<String> = raw_tokens(manifest_cmdline)
        .into_iter()
        .filter(|w| !ours.iter().any(|o| word_key(o) == word_key(w)))
        .collect();
    words.extend(ours);
    words.join(" ")
}

/// Writes the initrd to `out` at its current position: the verified initramfs, zero padding
/// to a multiple of 4 bytes, then the newc cpio of [`BOOT_DIR`]. Returns the total size in
/// bytes. Every verified file goes from its descriptor to `out` with `sendfile(2)`
/// ([`send_verified`]), inside the kernel: the release is not copied through user space on its
/// way into the initrd (issue 18 §3). Errors: [`KexecError::MissingArtifact`],
/// [`KexecError::Initrd`], [`KexecError::Cpio`] (including a verified file that is shorter
/// than its size: nothing unverified is padded in).
pub fn compose_initrd(out: &mut File, h: &Handoff<'_>) -> Result<u64, KexecError> {
    let initramfs = h.get("initramfs")?;
    let io_err = |what: &str| {
        let what = what.to_string();
        move |source| KexecError::Initrd { what, source }
    };
    let start = out.stream_position().map_err(io_err("position"))?;
    let copied = send_verified(out, initramfs).map_err(io_err("initramfs bytes"))?;
    if copied != initramfs.size {
        return Err(KexecError::Cpio(NewcError::ShortSource {
            name: "initramfs".into(),
            expected: initramfs.size,
            got: copied,
        }));
    }
    out.write_all(&[0u8; 4][..newc::pad4(copied)])
        .map_err(io_err("padding"))?;
    /// One entry of the appended cpio: written by the archive writer, or sent from a verified
    /// descriptor.
    enum Item<'b> {
        Entry(Entry<'b>),
        Verified(String, Verified<'b>),
    }
    let mut items = vec![
        Item::Entry(Entry::dir("phase", 0o755)),
        Item::Entry(Entry::dir("phase/boot", 0o755)),
        Item::Entry(Entry::bytes(
            "phase/boot/manifest.json",
            0o444,
            h.manifest_raw,
        )),
        Item::Entry(Entry::bytes(
            format!("phase/boot/{}", crate::custody::FILE),
            0o444,
            h.custody.as_bytes(),
        )),
    ];
    if let Some(lease) = h.lease {
        items.push(Item::Entry(Entry::bytes(
            crate::net::handover::FILE,
            0o444,
            lease,
        )));
    }
    for (name, v) in &h.artifacts {
        if BOOT_ARTIFACTS.contains(name) {
            items.push(Item::Verified(format!("phase/boot/{name}"), *v));
        }
    }
    items.sort_by(|a, b| {
        let name = |i: &Item<'_>| match i {
            Item::Entry(e) => e.name.clone(),
            Item::Verified(n, _) => n.clone(),
        };
        name(a).cmp(&name(b))
    });
    let mut w = newc::NewcWriter::new(&mut *out);
    for item in items {
        match item {
            Item::Entry(e) => w.append(e),
            Item::Verified(name, v) => {
                w.append_file_with(name, 0o444, v.size, |o| send_verified(o, v))
            }
        }
        .map_err(KexecError::Cpio)?;
    }
    w.finish().map_err(KexecError::Cpio)?;
    let end = out.stream_position().map_err(io_err("position"))?;
    Ok(end - start)
}

/// Copies the `v.size` verified bytes of `v` (from offset 0) to `out` at its position with
/// `sendfile(2)`, in calls of at most 1 GiB; when the kernel refuses `sendfile` for these files
/// (`EINVAL`, `ENOSYS`, `EOPNOTSUPP` before the first byte), with `pread`/`write` instead.
/// Returns the bytes copied: fewer than `v.size` when the file is shorter than its verified
/// size. Errors: the failed call's.
pub fn send_verified(out: &File, v: Verified<'_>) -> io::Result<u64> {
    use rustix::io::Errno;
    let mut off = 0u64;
    while off < v.size {
        let want = (v.size - off).min(1 << 30) as usize;
        match rustix::fs::sendfile(out, v.file, Some(&mut off), want) {
            Ok(0) => break,
            Ok(_) => {}
            Err(Errno::INTR) => {}
            Err(Errno::INVAL | Errno::NOSYS | Errno::OPNOTSUPP) if off == 0 => {
                let mut w = out;
                return io::copy(&mut reader(v).take(v.size), &mut w);
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(off)
}

/// Builds the initrd in a memfd and returns it reopened read-only (see
/// [`reopen_read_only`]; the writable descriptor is closed) with its size in bytes.
pub fn initrd_memfd(h: &Handoff<'_>) -> Result<(File, u64), KexecError> {
    let mut f = crate::sys::linux::memfd("phase-initrd").map_err(KexecError::Sys)?;
    let size = compose_initrd(&mut f, h)?;
    f.seek(SeekFrom::Start(0))
        .map_err(|source| KexecError::Initrd {
            what: "rewind".into(),
            source,
        })?;
    let ro = reopen_read_only(&f)?;
    Ok((ro, size))
}

/// Reopens `file` read-only through `/proc/self/fd/<n>`: the same inode, so the very bytes that
/// were verified, in a new open file description without write access. `kexec_file_load`
/// refuses a file that any descriptor holds open for writing (`ETXTBSY`, the kernel's
/// `deny_write_access`), and the download wrote through its descriptor: reopen, then close the
/// writable one. Errors: [`KexecError::Reopen`].
pub fn reopen_read_only(file: &File) -> Result<File, KexecError> {
    use std::os::fd::AsRawFd;
    let fd = file.as_raw_fd();
    File::open(format!("/proc/self/fd/{fd}")).map_err(|source| KexecError::Reopen { fd, source })
}

/// The largest kernel Image a gzip `Image.gz` may inflate to, in bytes (256 MiB; Debian's
/// arm64 Image is 33 MB).
pub const MAX_INFLATED_KERNEL: u64 = 256 << 20;

/// The kernel file to load: `kernel` itself, or, when it is a gzip stream (an arm64 `Image.gz`,
/// which neither `kexec_file_load` nor the `kexec_load` path accepts), its inflated bytes in a
/// sealed memfd reopened read-only. The inflation reads the verified descriptor, so what is
/// loaded is what was verified. Returns the file and its size in bytes. Errors:
/// [`KexecError::Sys`] (memfd, seals), [`KexecError::Initrd`] (a corrupt stream, or one over
/// [`MAX_INFLATED_KERNEL`]), [`KexecError::Reopen`].
pub fn kernel_for_load(kernel: Verified<'_>) -> Result<(File, u64), KexecError> {
    let mut magic = [0u8; 2];
    let is_gzip = kernel.file.read_at(&mut magic, 0).ok() == Some(2) && magic == [0x1f, 0x8b];
    if !is_gzip {
        return Ok((reopen_read_only(kernel.file)?, kernel.size));
    }
    let inflate_err = |source: io::Error| KexecError::Initrd {
        what: "inflating the gzip kernel Image".into(),
        source,
    };
    let mut out = crate::sys::linux::memfd("phase-kernel").map_err(KexecError::Sys)?;
    let mut gz = flate2::read::GzDecoder::new(reader(kernel).take(kernel.size))
        .take(MAX_INFLATED_KERNEL + 1);
    let n = io::copy(&mut gz, &mut out).map_err(inflate_err)?;
    if n > MAX_INFLATED_KERNEL {
        return Err(inflate_err(io::Error::other(format!(
            "inflates to more than {MAX_INFLATED_KERNEL} bytes"
        ))));
    }
    crate::sys::linux::seal(&out).map_err(KexecError::Sys)?;
    Ok((reopen_read_only(&out)?, n))
}

/// Which system call loaded the next kernel; the kexec stage logs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoadPath {
    /// `kexec_file_load`: the kernel parsed and placed the files itself.
    FileLoad,
    /// arm64 `kexec_load` with the segments of [`arm64::load`] (a kernel without
    /// `CONFIG_KEXEC_FILE`).
    Arm64Load(arm64::Layout),
}

impl std::fmt::Display for LoadPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LoadPath::FileLoad => f.write_str("kexec_file_load"),
            LoadPath::Arm64Load(l) => write!(
                f,
                "kexec_load (no KEXEC_FILE) kernel@{:#x} initrd@{:#x} dtb@{:#x} entry@{:#x}",
                l.kernel, l.initrd, l.dtb, l.trampoline
            ),
        }
    }
}

/// What [`load_with`] reads when `kexec_file_load` is missing (`ENOSYS`): on arm64 the running
/// system's DTB, memory map and seeds ([`arm64::Inputs::read_live`]); elsewhere nothing.
pub type Fallback<'a> = Option<&'a dyn Fn() -> Result<arm64::Inputs, arm64::Arm64Error>>;

/// Loads the verified kernel with `initrd` and `cmdline`: `kexec_file_load`, or on an arm64
/// kernel without `CONFIG_KEXEC_FILE` the `kexec_load` path of [`arm64`]. Returns the path
/// taken. Errors: as [`load_with`].
pub fn load(
    sys: &dyn Syscalls,
    kernel: &File,
    initrd: &File,
    cmdline: &str,
) -> Result<LoadPath, KexecError> {
    let live: &dyn Fn() -> Result<arm64::Inputs, arm64::Arm64Error> = &arm64::Inputs::read_live;
    load_with(
        sys,
        kernel,
        initrd,
        cmdline,
        cfg!(target_arch = "aarch64").then_some(live),
    )
}

/// [`load`] with the arm64 fallback's inputs given (`None`: no fallback). The arm64 path reads
/// the kernel and initrd from the same verified descriptors `kexec_file_load` was given.
/// Errors: [`KexecError::Sys`] naming the call and its arguments; [`KexecError::Arm64`];
/// [`KexecError::Initrd`] when reading a descriptor fails.
pub fn load_with(
    sys: &dyn Syscalls,
    kernel: &File,
    initrd: &File,
    cmdline: &str,
    fallback: Fallback<'_>,
) -> Result<LoadPath, KexecError> {
    let err = match sys.kexec_file_load(kernel.as_fd(), initrd.as_fd(), cmdline) {
        Ok(()) => return Ok(LoadPath::FileLoad),
        Err(e) => e,
    };
    let Some(inputs) = fallback.filter(|_| err.errno() == Some(libc::ENOSYS)) else {
        return Err(KexecError::Sys(err));
    };
    let read_all = |f: &File, what: &str| {
        let mut v = Vec::new();
        PosReader { file: f, pos: 0 }
            .read_to_end(&mut v)
            .map(|_| v)
            .map_err(|source| KexecError::Initrd {
                what: format!("reading the {what} for kexec_load"),
                source,
            })
    };
    let image = read_all(kernel, "kernel")?;
    let initrd = read_all(initrd, "initrd")?;
    let layout = arm64::load(sys, &image, &initrd, cmdline, &inputs()?)?;
    Ok(LoadPath::Arm64Load(layout))
}

/// `sync`, then `reboot(LINUX_REBOOT_CMD_KEXEC)` into the loaded kernel. Returns only on
/// failure ([`KexecError::Sys`]).
pub fn exec(sys: &dyn Syscalls) -> Result<std::convert::Infallible, KexecError> {
    sys.sync();
    sys.reboot(RebootCmd::Kexec).map_err(KexecError::Sys)?;
    // reboot(KEXEC) does not return on success; a fake or a refused call ends here.
    Err(KexecError::Sys(SysError::new(
        "reboot(LINUX_REBOOT_CMD_KEXEC) returned",
        io::Error::other("still running"),
    )))
}

/// [`load_with`] then [`exec`]. Returns only on failure.
pub fn load_and_exec(
    sys: &dyn Syscalls,
    kernel: &File,
    initrd: &File,
    cmdline: &str,
    fallback: Fallback<'_>,
) -> Result<std::convert::Infallible, KexecError> {
    load_with(sys, kernel, initrd, cmdline, fallback)?;
    exec(sys)
}

/// For `phase.kexec=never`: writes the manifest and artifacts to `dir` (normally [`BOOT_DIR`])
/// from the verified descriptors, as the appended cpio would have. Errors: [`KexecError::Write`].
pub fn write_boot_dir(dir: &Path, h: &Handoff<'_>) -> Result<(), KexecError> {
    let werr = |path: PathBuf| move |source| KexecError::Write { path, source };
    std::fs::create_dir_all(dir).map_err(werr(dir.to_path_buf()))?;
    let m = dir.join("manifest.json");
    std::fs::write(&m, h.manifest_raw).map_err(werr(m))?;
    let c = dir.join(crate::custody::FILE);
    std::fs::write(&c, h.custody).map_err(werr(c))?;
    for (name, v) in &h.artifacts {
        if !BOOT_ARTIFACTS.contains(name) {
            continue;
        }
        let path = dir.join(name);
        let mut out = File::create(&path).map_err(werr(path.clone()))?;
        let n = io::copy(&mut reader(*v).take(v.size), &mut out).map_err(werr(path.clone()))?;
        if n != v.size {
            return Err(KexecError::Write {
                path,
                source: io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "verified file shorter than its size",
                ),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::fake::Recording;
    use std::process::{Command, Stdio};

    fn file_with(bytes: &[u8]) -> File {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(bytes).unwrap();
        // Leave the position at the end: composition must not depend on it.
        f
    }

    #[test]
    fn cmdline_appends_phase_keys_and_current_ones_override() {
        let got = compose_cmdline(
            "console=ttyS0,115200 panic=10 phase.mode=internet phase.channel=stable",
            "BOOT_IMAGE=/vmlinuz console=tty0 phase.mode=local phase.debug phase.mode=private quiet",
        );
        assert_eq!(
            got,
            "console=ttyS0,115200 panic=10 phase.channel=stable phase.debug phase.mode=private"
        );
    }

    #[test]
    fn cmdline_keeps_quoted_words() {
        let got = compose_cmdline("console=ttyS0", "phase.init=\"/sbin/init -s\"");
        assert_eq!(got, "console=ttyS0 phase.init=\"/sbin/init -s\"");
    }

    #[test]
    fn cmdline_with_no_phase_keys_is_the_manifest_one() {
        assert_eq!(
            compose_cmdline("console=ttyS0 panic=10", "console=tty0 ro"),
            "console=ttyS0 panic=10"
        );
    }

    fn handoff_files() -> (File, File, File, Vec<u8>) {
        (
            file_with(b"KERNEL-BYTES"),
            file_with(b"INITRAMFS-5"),
            file_with(&[7u8; 5000]),
            b"{\"m\":1}".to_vec(),
        )
    }

    /// The handoff of [`handoff_files`] with all three artifacts at their true sizes.
    fn full_handoff<'a>(k: &'a File, i: &'a File, r: &'a File, m: &'a [u8]) -> Handoff<'a> {
        Handoff {
            manifest_raw: m,
            artifacts: vec![
                ("kernel", Verified { file: k, size: 12 }),
                ("initramfs", Verified { file: i, size: 11 }),
                (
                    "rootfs",
                    Verified {
                        file: r,
                        size: 5000,
                    },
                ),
            ],
            custody: CUSTODY,
            lease: None,
        }
    }

    /// [`compose_initrd`] into a temporary file: its size and the bytes written.
    fn compose_to_vec(h: &Handoff<'_>) -> Result<(u64, Vec<u8>), KexecError> {
        let mut f = tempfile::tempfile().unwrap();
        let size = compose_initrd(&mut f, h)?;
        let mut out = Vec::new();
        f.seek(SeekFrom::Start(0)).unwrap();
        f.read_to_end(&mut out).unwrap();
        Ok((size, out))
    }

    #[test]
    fn initramfs_shorter_than_its_verified_size_is_refused() {
        let (k, i, _, m) = handoff_files();
        let h = Handoff {
            manifest_raw: &m,
            artifacts: vec![
                ("kernel", Verified { file: &k, size: 12 }),
                (
                    "initramfs",
                    Verified {
                        file: &i,
                        size: 4096,
                    },
                ),
            ],
            custody: CUSTODY,
            lease: None,
        };
        let e = compose_to_vec(&h).unwrap_err();
        assert!(
            matches!(
                e,
                KexecError::Cpio(NewcError::ShortSource {
                    expected: 4096,
                    got: 11,
                    ..
                })
            ),
            "{e}"
        );
    }

    #[test]
    fn send_verified_copies_exactly_the_verified_size() {
        let src = file_with(&[9u8; 70_000]);
        let out = tempfile::tempfile().unwrap();
        let v = Verified {
            file: &src,
            size: 65_536,
        };
        assert_eq!(send_verified(&out, v).unwrap(), 65_536);
        assert_eq!(
            out.metadata().unwrap().len(),
            65_536,
            "no byte past the verified size"
        );
        let short = Verified {
            file: &src,
            size: 80_000,
        };
        assert_eq!(
            send_verified(&out, short).unwrap(),
            70_000,
            "short file reported"
        );
    }

    /// A stand-in custody record (its contents are the boot stage's business, not kexec's).
    const CUSTODY: &str =
        "kernel 12 sha256:0000000000000000000000000000000000000000000000000000000000000000\n";

    #[test]
    fn initrd_is_initramfs_padded_then_cpio_the_cpio_tool_extracts() {
        let (k, i, r, m) = handoff_files();
        let lease = br#"{"iface":"eth0"}"#;
        let h = Handoff {
            lease: Some(lease),
            ..full_handoff(&k, &i, &r, &m)
        };
        let (size, out) = compose_to_vec(&h).unwrap();
        assert_eq!(size, out.len() as u64);
        assert_eq!(&out[..11], b"INITRAMFS-5");
        assert_eq!(&out[11..12], &[0], "padded to 4 bytes");
        assert_eq!(&out[12..18], b"070701", "cpio starts 4-byte aligned");
        if Command::new("cpio")
            .arg("--version")
            .stdout(Stdio::null())
            .status()
            .is_err()
        {
            eprintln!("SKIP: cpio tool not installed");
            assert!(std::env::var("CI").as_deref() != Ok("true"));
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let mut child = Command::new("cpio")
            .args(["-idv", "--quiet", "--no-absolute-filenames"])
            .current_dir(dir.path())
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(&out[12..]).unwrap();
        let res = child.wait_with_output().unwrap();
        assert!(res.status.success());
        let listed = String::from_utf8_lossy(&res.stderr);
        let names: Vec<&str> = listed.lines().collect();
        assert_eq!(
            names,
            [
                "phase",
                "phase/boot",
                "phase/boot/initramfs",
                "phase/boot/kernel",
                "phase/boot/manifest.json",
                "phase/boot/rootfs",
                "phase/boot/verified",
                "phase/lease.json"
            ]
        );
        assert_eq!(
            std::fs::read(dir.path().join(crate::net::handover::FILE)).unwrap(),
            lease
        );
        let b = dir.path().join("phase/boot");
        assert_eq!(std::fs::read(b.join("manifest.json")).unwrap(), m);
        assert_eq!(std::fs::read(b.join("kernel")).unwrap(), b"KERNEL-BYTES");
        assert_eq!(std::fs::read(b.join("initramfs")).unwrap(), b"INITRAMFS-5");
        assert_eq!(std::fs::read(b.join("rootfs")).unwrap(), vec![7u8; 5000]);
        assert_eq!(
            std::fs::read(b.join("verified")).unwrap(),
            CUSTODY.as_bytes()
        );
    }

    #[test]
    fn initrd_is_reproducible() {
        let (k, i, r, m) = handoff_files();
        let h = full_handoff(&k, &i, &r, &m);
        assert_eq!(compose_to_vec(&h).unwrap(), compose_to_vec(&h).unwrap());
    }

    #[test]
    fn truncated_verified_file_is_refused() {
        let (k, i, _, m) = handoff_files();
        let h = Handoff {
            manifest_raw: &m,
            artifacts: vec![
                ("kernel", Verified { file: &k, size: 99 }),
                ("initramfs", Verified { file: &i, size: 11 }),
            ],
            custody: CUSTODY,
            lease: None,
        };
        let e = compose_to_vec(&h).unwrap_err();
        assert!(
            matches!(e, KexecError::Cpio(NewcError::ShortSource { .. })),
            "{e}"
        );
    }

    #[test]
    fn missing_initramfs_is_refused() {
        let (k, _, _, m) = handoff_files();
        let h = Handoff {
            manifest_raw: &m,
            artifacts: vec![("kernel", Verified { file: &k, size: 12 })],
            custody: CUSTODY,
            lease: None,
        };
        assert!(matches!(
            compose_to_vec(&h),
            Err(KexecError::MissingArtifact("initramfs"))
        ));
    }

    #[test]
    fn kexec_loads_then_syncs_then_reboots() {
        let (k, i, _, _) = handoff_files();
        let f = Recording::new();
        let _ = load_and_exec(&f, &k, &i, "console=ttyS0 phase.mode=local", None);
        assert_eq!(
            f.calls(),
            [
                "kexec_file_load console=ttyS0 phase.mode=local",
                "sync",
                "reboot Kexec"
            ]
        );
    }

    #[test]
    fn refused_kexec_load_does_not_reboot() {
        let (k, i, _, _) = handoff_files();
        let f = Recording::new();
        f.fail_on("kexec_file_load", libc::EKEYREJECTED);
        let e = load_and_exec(&f, &k, &i, "x", None).unwrap_err();
        assert!(
            crate::log::error_chain(&e).contains("kexec_file_load"),
            "{e}"
        );
        assert_eq!(f.calls(), ["kexec_file_load x"]);
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(bytes).unwrap();
        e.finish().unwrap()
    }

    fn read_all(mut f: &File) -> Vec<u8> {
        let mut v = Vec::new();
        f.read_to_end(&mut v).unwrap();
        v
    }

    #[test]
    fn gzip_kernel_is_inflated_into_a_sealed_read_only_memfd() {
        let image: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let gz = gzip(&image);
        let f = file_with(&gz);
        let (k, size) = kernel_for_load(Verified {
            file: &f,
            size: gz.len() as u64,
        })
        .unwrap();
        assert_eq!(size, image.len() as u64);
        assert_eq!(read_all(&k), image);
        let mut w = std::fs::OpenOptions::new()
            .write(true)
            .open(format!(
                "/proc/self/fd/{}",
                std::os::fd::AsRawFd::as_raw_fd(&k)
            ))
            .unwrap();
        assert!(
            w.write_all(b"tamper").is_err(),
            "the inflated kernel must be sealed against writes"
        );
        // A raw Image is passed through unchanged.
        let raw = file_with(b"KERNEL-BYTES");
        let (k, size) = kernel_for_load(Verified {
            file: &raw,
            size: 12,
        })
        .unwrap();
        assert_eq!((read_all(&k), size), (b"KERNEL-BYTES".to_vec(), 12));
    }

    #[test]
    fn corrupt_or_oversized_gzip_kernel_is_refused() {
        let gz = gzip(&[1u8; 100_000]);
        let cut = file_with(&gz[..gz.len() / 2]);
        let e = kernel_for_load(Verified {
            file: &cut,
            size: (gz.len() / 2) as u64,
        })
        .unwrap_err();
        assert!(crate::log::error_chain(&e).contains("inflating"), "{e}");
        // Only the verified size is read: bytes after it are not part of the kernel.
        let mut longer = gz.clone();
        longer.extend_from_slice(b"junk after the verified bytes");
        let f = file_with(&longer);
        let (k, _) = kernel_for_load(Verified {
            file: &f,
            size: gz.len() as u64,
        })
        .unwrap();
        assert_eq!(read_all(&k), vec![1u8; 100_000]);
    }

    #[test]
    fn arm64_fallback_runs_only_on_enosys_and_loads_the_inflated_image() {
        use super::arm64::{Inputs, Seeds, IMAGE_MAGIC};
        let mut image = vec![0u8; 4096];
        image[16..24].copy_from_slice(&(1u64 << 20).to_le_bytes());
        image[24..32].copy_from_slice(&2u64.to_le_bytes());
        image[0x38..0x3c].copy_from_slice(&IMAGE_MAGIC.to_le_bytes());
        let gz = gzip(&image);
        let f = file_with(&gz);
        let (k, _) = kernel_for_load(Verified {
            file: &f,
            size: gz.len() as u64,
        })
        .unwrap();
        let i = file_with(b"INITRD");
        let inputs = || {
            Ok(Inputs {
                fdt: dtoolkit::model::DeviceTree::new().to_dtb(),
                iomem: "40000000-7fffffff : System RAM\n".into(),
                page_size: 4096,
                seeds: Seeds::default(),
            })
        };
        // Another error than ENOSYS is reported as is: no fallback.
        let sys = Recording::new();
        sys.fail_on("kexec_file_load", libc::EKEYREJECTED);
        assert!(matches!(
            load_with(&sys, &k, &i, "x", Some(&inputs)),
            Err(KexecError::Sys(_))
        ));
        assert_eq!(sys.calls().len(), 1);
        // ENOSYS without a fallback (x86_64) is reported too.
        let sys = Recording::new();
        sys.fail_on("kexec_file_load", libc::ENOSYS);
        assert!(load_with(&sys, &k, &i, "x", None).is_err());
        // ENOSYS with the fallback: kexec_load gets the inflated Image, not the gzip bytes.
        let sys = Recording::new();
        sys.fail_on("kexec_file_load", libc::ENOSYS);
        let path = load_with(&sys, &k, &i, "x", Some(&inputs)).unwrap();
        assert!(matches!(path, LoadPath::Arm64Load(_)), "{path}");
        assert!(
            sys.calls()[1].starts_with("kexec_load "),
            "{:?}",
            sys.calls()
        );
        assert_eq!(sys.kexec_segments()[0].1, image);
        assert_eq!(sys.kexec_segments()[1].1, b"INITRD");
    }

    #[test]
    fn reopened_file_is_the_same_bytes_and_read_only() {
        let mut w = tempfile::tempfile().unwrap();
        w.write_all(b"verified").unwrap();
        let mut ro = reopen_read_only(&w).unwrap();
        drop(w);
        let mut s = String::new();
        ro.read_to_string(&mut s).unwrap();
        assert_eq!(s, "verified");
        assert!(
            ro.write_all(b"x").is_err(),
            "reopened file must not be writable"
        );
    }

    #[test]
    fn boot_dir_gets_manifest_and_artifacts() {
        let (k, i, r, m) = handoff_files();
        let h = full_handoff(&k, &i, &r, &m);
        let d = tempfile::tempdir().unwrap();
        write_boot_dir(&d.path().join("phase/boot"), &h).unwrap();
        assert_eq!(
            std::fs::read(d.path().join("phase/boot/manifest.json")).unwrap(),
            m
        );
        assert_eq!(
            std::fs::read(d.path().join("phase/boot/rootfs"))
                .unwrap()
                .len(),
            5000
        );
        assert_eq!(
            std::fs::read_to_string(d.path().join("phase/boot/verified")).unwrap(),
            CUSTODY
        );
    }
}
