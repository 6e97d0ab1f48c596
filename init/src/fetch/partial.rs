//! The `<filename>.partial` file an artifact streams into (DESIGN §7).
//!
//! Bytes land in `<out>/<filename>.partial`; only [`Partial::finish`], called after the hash
//! matched, fsyncs it and renames it to the final name. Dropping a [`Partial`] that was not
//! finished removes the file, so an error, a cancelled future or a refused hash never leaves
//! unverified bytes behind, at the final path or elsewhere.

use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// An I/O failure on the local file system (fatal for the fetch: another source cannot help).
#[derive(Debug, thiserror::Error)]
#[error("{op} {path}")]
pub struct LocalIoError {
    /// What was being done (`create`, `write`, `truncate`, `fsync`, `rename`, `remove`).
    pub op: &'static str,
    /// The file.
    pub path: PathBuf,
    /// The I/O error (ENOSPC, EROFS, EIO, ...).
    #[source]
    pub source: std::io::Error,
}

/// True when `file` lives on a tmpfs (`fstatfs`; false when that fails): the one file system
/// where giving a file its length before writing it pays ([`Partial::presize`]). On one without
/// holes (vfat) the kernel would write zeros over the whole length first.
pub fn on_tmpfs(file: &File) -> bool {
    rustix::fs::fstatfs(file).is_ok_and(|s| s.f_type as u64 == crate::sys::TMPFS_MAGIC)
}

/// A partial download; removed on drop unless finished.
#[derive(Debug)]
pub struct Partial {
    path: PathBuf,
    file: Option<File>,
    /// The length [`Partial::reset`] gives back ([`Partial::presize`]); 0 when not presized.
    presized: u64,
}

fn err(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> LocalIoError {
    let path = path.to_owned();
    move |source| LocalIoError { op, path, source }
}

impl Partial {
    /// Creates (or truncates) `path` for reading and writing, mode 0644.
    ///
    /// # Errors
    /// [`LocalIoError`] with op `create`.
    pub fn create(path: PathBuf) -> Result<Self, LocalIoError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .map_err(err("create", &path))?;
        Ok(Partial {
            path,
            file: Some(file),
            presized: 0,
        })
    }

    /// Opens an existing partial file for reading and writing without truncating it (to
    /// resume, [`super::resume`]); the file position is byte 0.
    ///
    /// # Errors
    /// [`LocalIoError`] with op `open`.
    pub fn open_existing(path: PathBuf) -> Result<Self, LocalIoError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(err("open", &path))?;
        Ok(Partial {
            path,
            file: Some(file),
            presized: 0,
        })
    }

    /// Moves the file position (where [`Partial::write`] appends) to `offset`.
    ///
    /// # Errors
    /// [`LocalIoError`] with op `seek`.
    pub fn seek_to(&mut self, offset: u64) -> Result<(), LocalIoError> {
        let path = self.path.clone();
        self.file()?
            .seek(SeekFrom::Start(offset))
            .map(|_| ())
            .map_err(err("seek", &path))
    }

    /// Leaves the partial file on disk (closed) instead of removing it: it holds only verified
    /// chunks and a later fetch resumes from it ([`super::resume`]).
    pub fn keep(mut self) {
        self.file.take();
    }

    /// A second descriptor of the partial file (`dup`), still valid after [`Partial::finish`]
    /// renamed it: for the peer server ([`super::share`]), which reads with `pread` only.
    ///
    /// # Errors
    /// [`LocalIoError`] with op `dup`.
    pub fn try_clone_file(&self) -> Result<File, LocalIoError> {
        let path = self.path.clone();
        match self.file.as_ref() {
            Some(f) => f.try_clone().map_err(err("dup", &path)),
            None => Err(LocalIoError {
                op: "dup",
                path,
                source: std::io::Error::other("partial file already finished"),
            }),
        }
    }

    /// The partial file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// True when the partial file lives on a tmpfs ([`on_tmpfs`]).
    pub fn on_tmpfs(&self) -> bool {
        self.file.as_ref().is_some_and(on_tmpfs)
    }

    fn file(&mut self) -> Result<&mut File, LocalIoError> {
        let path = self.path.clone();
        self.file.as_mut().ok_or_else(|| LocalIoError {
            op: "use",
            path,
            source: std::io::Error::other("partial file already finished"),
        })
    }

    /// Appends `bytes` (the page cache absorbs the write; [`Partial::finish`] fsyncs).
    ///
    /// # Errors
    /// [`LocalIoError`] with op `write` (ENOSPC lands here).
    pub fn write(&mut self, bytes: &[u8]) -> Result<(), LocalIoError> {
        let path = self.path.clone();
        self.file()?.write_all(bytes).map_err(err("write", &path))
    }

    /// Gives the file its final length `len` (bytes) before the first write, as a hole that
    /// [`Partial::write`] and [`Partial::write_at`] fill, and keeps that length across
    /// [`Partial::reset`]. On a tmpfs mounted `huge=within_size` (the boot stage's `/run`,
    /// [`crate::mounts::EARLY_MOUNTS`]) only a range inside the file's length gets 2 MiB pages,
    /// so a file that grows by appending never does; presized, it does (issue 18 §4).
    ///
    /// # Errors
    /// [`LocalIoError`] with op `truncate`.
    pub fn presize(&mut self, len: u64) -> Result<(), LocalIoError> {
        let path = self.path.clone();
        self.file()?.set_len(len).map_err(err("truncate", &path))?;
        self.presized = len;
        Ok(())
    }

    /// Writes `bytes` at byte `offset` (`pwrite`), leaving the file position alone.
    ///
    /// # Errors
    /// [`LocalIoError`] with op `write` (ENOSPC lands here).
    pub fn write_at(&mut self, offset: u64, bytes: &[u8]) -> Result<(), LocalIoError> {
        use std::os::unix::fs::FileExt;
        let path = self.path.clone();
        self.file()?
            .write_all_at(bytes, offset)
            .map_err(err("write", &path))
    }

    /// Reads exactly `buf.len()` bytes at byte `offset` (`pread`).
    ///
    /// # Errors
    /// [`LocalIoError`] with op `read`.
    pub fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), LocalIoError> {
        use std::os::unix::fs::FileExt;
        let file = self.file.as_ref().ok_or_else(|| LocalIoError {
            op: "read",
            path: self.path.clone(),
            source: std::io::Error::other("partial file already finished"),
        })?;
        file.read_exact_at(buf, offset)
            .map_err(err("read", &self.path))
    }

    /// Empties the file to start over from byte 0: every byte is dropped; a presized partial
    /// ([`Partial::presize`]) gets its length back as a hole.
    ///
    /// # Errors
    /// [`LocalIoError`] with op `truncate`.
    pub fn reset(&mut self) -> Result<(), LocalIoError> {
        let path = self.path.clone();
        let len = self.presized;
        let f = self.file()?;
        f.set_len(0).map_err(err("truncate", &path))?;
        f.set_len(len).map_err(err("truncate", &path))?;
        f.seek(SeekFrom::Start(0)).map_err(err("truncate", &path))?;
        Ok(())
    }

    /// fsyncs the file, renames it to `final_path`, fsyncs the directory (best effort) and
    /// returns the open file rewound to byte 0. Call only after the hash matched.
    ///
    /// # Errors
    /// [`LocalIoError`] with op `fsync` or `rename`; the partial is removed then.
    pub fn finish(&mut self, final_path: &Path) -> Result<File, LocalIoError> {
        let path = self.path.clone();
        let f = self.file()?;
        f.sync_all().map_err(err("fsync", &path))?;
        std::fs::rename(&path, final_path).map_err(err("rename", final_path))?;
        let mut file = self.file.take().ok_or_else(|| LocalIoError {
            op: "rename",
            path: path.clone(),
            source: std::io::Error::other("partial file vanished"),
        })?;
        if let Some(dir) = final_path.parent() {
            if let Ok(d) = File::open(dir) {
                let _ = d.sync_all();
            }
        }
        file.seek(SeekFrom::Start(0))
            .map_err(err("seek", final_path))?;
        Ok(file)
    }
}

impl Drop for Partial {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn dropped_partial_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k.partial");
        let mut part = Partial::create(p.clone()).unwrap();
        part.write(b"unverified").unwrap();
        assert!(p.exists());
        drop(part);
        assert!(!p.exists());
    }

    #[test]
    fn finished_partial_is_renamed_and_readable_from_the_start() {
        let dir = tempfile::tempdir().unwrap();
        let mut part = Partial::create(dir.path().join("k.partial")).unwrap();
        part.write(b"garbage").unwrap();
        part.reset().unwrap();
        part.write(b"good").unwrap();
        let mut f = part.finish(&dir.path().join("k")).unwrap();
        let mut s = String::new();
        f.read_to_string(&mut s).unwrap();
        assert_eq!(s, "good");
        assert!(!dir.path().join("k.partial").exists());
    }

    #[test]
    fn a_presized_partial_keeps_its_length_but_no_old_byte_across_reset() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k.partial");
        let mut part = Partial::create(p.clone()).unwrap();
        part.presize(10).unwrap();
        assert_eq!(std::fs::metadata(&p).unwrap().len(), 10);
        part.write(b"unverified").unwrap();
        part.reset().unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), [0u8; 10]);
        part.write(b"good").unwrap();
        assert_eq!(&std::fs::read(&p).unwrap()[..6], b"good\0\0");
    }

    /// `ShmemHugePages` of /proc/meminfo, in KiB.
    fn shmem_huge_kib() -> u64 {
        let info = std::fs::read_to_string("/proc/meminfo").unwrap();
        let line = info
            .lines()
            .find(|l| l.starts_with("ShmemHugePages:"))
            .unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }

    /// Issue 18 §4: on a tmpfs mounted as the boot stage mounts `/run` (`huge=within_size`), a
    /// presized partial written front to back by [`Partial::write`] lands in 2 MiB pages.
    #[test]
    fn a_presized_partial_on_a_huge_tmpfs_gets_huge_pages() {
        let run = crate::mounts::EARLY_MOUNTS
            .iter()
            .find(|m| m.target == "/run")
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let data = std::ffi::CString::new(run.data.unwrap()).unwrap();
        let mounted = rustix::mount::mount(
            "tmpfs",
            dir.path(),
            "tmpfs",
            rustix::mount::MountFlags::empty(),
            data.as_c_str(),
        );
        if let Err(e) = mounted {
            // Needs root; `make test` runs as root, on a kernel with transparent huge pages.
            assert!(!rustix::process::geteuid().is_root(), "mount: {e}");
            eprintln!("SKIP a_presized_partial_on_a_huge_tmpfs_gets_huge_pages: not root");
            return;
        }
        let size = 32u64 << 20;
        let before = shmem_huge_kib();
        let mut part = Partial::create(dir.path().join("rootfs.partial")).unwrap();
        part.presize(size).unwrap();
        let piece = vec![0x5au8; 256 << 10];
        for _ in 0..size / piece.len() as u64 {
            part.write(&piece).unwrap();
        }
        let gained = shmem_huge_kib().saturating_sub(before);
        drop(part);
        let _ = rustix::mount::unmount(dir.path(), rustix::mount::UnmountFlags::DETACH);
        // Other tests may free huge pages meanwhile; most of the 32 MiB must be in 2 MiB pages.
        assert!(
            gained >= (size >> 10) / 2,
            "{gained} KiB of a {size}-byte file in huge pages"
        );
    }
}
