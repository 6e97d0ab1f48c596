//! Reproducible newc ("SVR4 new ASCII", magic `070701`) cpio archives, as the kernel unpacks
//! them into the initramfs rootfs (kernel `Documentation/driver-api/early-userspace/buffer-format.rst`).
//!
//! Used twice in the boot flow: by the build (`make initramfs`) to write the phase initramfs, and
//! by the init's kexec stage to append `/phase/boot/{manifest.json,kernel,initramfs,rootfs}` to
//! the verified initramfs (seed 003 "kexec Handoff"). Archives are reproducible: every entry has
//! mtime 0, uid 0, gid 0, nlink 1 (2 for directories) and inode numbers counted from 1 in write
//! order; [`write_archive`] also sorts entries by name, so parents come before children.
//!
//! The headers are produced by the `cpio` crate; this module adds the entry kinds, the exact
//! size check (a short source is an error, never a truncated file) and the trailer.

use std::io::{self, Read, Write};

/// File type bits of `st_mode` (`S_IFDIR`, `S_IFREG`, `S_IFLNK`, `S_IFCHR`, `S_IFBLK`).
mod ifmt {
    pub const DIR: u32 = 0o040000;
    pub const REG: u32 = 0o100000;
    pub const LNK: u32 = 0o120000;
    pub const CHR: u32 = 0o020000;
    pub const BLK: u32 = 0o060000;
}

/// Errors while writing a newc archive.
#[derive(Debug, thiserror::Error)]
pub enum NewcError {
    /// Writing the header or data of `name` to the output failed.
    #[error("cpio: writing entry {name:?}")]
    Write {
        /// Entry name (path inside the archive, no leading `/`).
        name: String,
        /// The underlying I/O error.
        #[source]
        source: io::Error,
    },
    /// Reading the contents of `name` from its source failed.
    #[error("cpio: reading the source of entry {name:?}")]
    Read {
        /// Entry name.
        name: String,
        /// The underlying I/O error.
        #[source]
        source: io::Error,
    },
    /// The source of `name` ended before its declared size.
    #[error("cpio: entry {name:?} declared {expected} bytes but its source ended after {got}")]
    ShortSource {
        /// Entry name.
        name: String,
        /// Declared size in bytes.
        expected: u64,
        /// Bytes actually read.
        got: u64,
    },
    /// newc stores sizes in 32 bits: files of 4 GiB or more cannot be archived.
    #[error("cpio: entry {name:?} is {size} bytes, newc allows at most 4294967295")]
    TooLarge {
        /// Entry name.
        name: String,
        /// Size in bytes.
        size: u64,
    },
    /// The name is empty, absolute, contains a NUL, `.` or `..` component.
    #[error("cpio: invalid entry name {name:?} (must be relative, without NUL, '.' or '..')")]
    BadName {
        /// The rejected name.
        name: String,
    },
    /// Writing the `TRAILER!!!` entry or flushing failed.
    #[error("cpio: writing the trailer")]
    Trailer(#[source] io::Error),
}

/// What an archive entry is. Permission bits are given separately ([`Entry::mode`]).
pub enum EntryKind<'a> {
    /// A directory.
    Dir,
    /// A regular file of exactly `size` bytes read from `source` (extra bytes are not read).
    File {
        /// Size in bytes; the source must provide at least this many.
        size: u64,
        /// Where the contents come from (an open file, a byte slice...).
        source: Box<dyn Read + 'a>,
    },
    /// A symbolic link pointing at `target`.
    Symlink {
        /// Link target, stored as the entry's data.
        target: String,
    },
    /// A character device node.
    CharDev {
        /// Device major number.
        major: u32,
        /// Device minor number.
        minor: u32,
    },
    /// A block device node.
    BlockDev {
        /// Device major number.
        major: u32,
        /// Device minor number.
        minor: u32,
    },
}

impl std::fmt::Debug for EntryKind<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EntryKind::Dir => f.write_str("Dir"),
            EntryKind::File { size, .. } => write!(f, "File({size} bytes)"),
            EntryKind::Symlink { target } => write!(f, "Symlink({target})"),
            EntryKind::CharDev { major, minor } => write!(f, "CharDev({major}:{minor})"),
            EntryKind::BlockDev { major, minor } => write!(f, "BlockDev({major}:{minor})"),
        }
    }
}

/// One archive entry: a relative path (`phase/boot/kernel`, no leading `/`), permission bits
/// (`0o755`; the file type bits are added from the kind) and its kind.
#[derive(Debug)]
pub struct Entry<'a> {
    /// Path inside the archive, relative, `/`-separated.
    pub name: String,
    /// Permission bits only (e.g. `0o644`).
    pub mode: u32,
    /// Directory, file, symlink or device node.
    pub kind: EntryKind<'a>,
}

impl<'a> Entry<'a> {
    /// A directory entry with mode `perm`.
    pub fn dir(name: impl Into<String>, perm: u32) -> Self {
        Entry {
            name: name.into(),
            mode: perm,
            kind: EntryKind::Dir,
        }
    }

    /// A regular file whose contents are `data`.
    pub fn bytes(name: impl Into<String>, perm: u32, data: &'a [u8]) -> Self {
        Entry {
            name: name.into(),
            mode: perm,
            kind: EntryKind::File {
                size: data.len() as u64,
                source: Box::new(data),
            },
        }
    }

    /// A regular file of `size` bytes read from `source` (an open, verified file for kexec).
    pub fn reader(name: impl Into<String>, perm: u32, size: u64, source: impl Read + 'a) -> Self {
        Entry {
            name: name.into(),
            mode: perm,
            kind: EntryKind::File {
                size,
                source: Box::new(source),
            },
        }
    }

    /// A symlink `name -> target` (mode 0777 like `ln -s`).
    pub fn symlink(name: impl Into<String>, target: impl Into<String>) -> Self {
        Entry {
            name: name.into(),
            mode: 0o777,
            kind: EntryKind::Symlink {
                target: target.into(),
            },
        }
    }

    /// A character device node (e.g. `dev/console`, 5:1, 0o600).
    pub fn char_dev(name: impl Into<String>, perm: u32, major: u32, minor: u32) -> Self {
        Entry {
            name: name.into(),
            mode: perm,
            kind: EntryKind::CharDev { major, minor },
        }
    }
}

/// Streaming writer of one newc archive. Entries are written in call order; call
/// [`NewcWriter::finish`] to append the `TRAILER!!!` entry.
#[derive(Debug)]
pub struct NewcWriter<W: Write> {
    out: W,
    next_ino: u32,
    written: u64,
}

/// Counts bytes passing through to the wrapped writer.
struct Counting<'w, W: Write> {
    inner: &'w mut W,
    count: &'w mut u64,
}

impl<W: Write> Write for Counting<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        *self.count += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

fn check_name(name: &str) -> Result<(), NewcError> {
    let bad = name.is_empty()
        || name.starts_with('/')
        || name.contains('\0')
        || name
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..");
    if bad {
        return Err(NewcError::BadName {
            name: name.to_string(),
        });
    }
    Ok(())
}

impl<W: Write> NewcWriter<W> {
    /// Starts an archive on `out` (nothing is written until the first entry).
    pub fn new(out: W) -> Self {
        NewcWriter {
            out,
            next_ino: 1,
            written: 0,
        }
    }

    /// Bytes written to the output so far (headers, data and padding).
    pub fn bytes_written(&self) -> u64 {
        self.written
    }

    /// Writes one entry. Errors: [`NewcError::BadName`], [`NewcError::TooLarge`],
    /// [`NewcError::ShortSource`] (the source ended early), [`NewcError::Read`]/[`NewcError::Write`].
    pub fn append(&mut self, entry: Entry<'_>) -> Result<(), NewcError> {
        check_name(&entry.name)?;
        let name = entry.name;
        let perm = entry.mode & 0o7777;
        let builder = cpio::newc::Builder::new(&name)
            .ino(self.next_ino)
            .uid(0)
            .gid(0)
            .mtime(0);
        self.next_ino = self.next_ino.wrapping_add(1);
        let wr = |source| NewcError::Write {
            name: name.clone(),
            source,
        };
        let mut out = Counting {
            inner: &mut self.out,
            count: &mut self.written,
        };
        match entry.kind {
            EntryKind::Dir => {
                let w = builder.mode(ifmt::DIR | perm).nlink(2).write(&mut out, 0);
                w.finish().map_err(wr)?;
            }
            EntryKind::Symlink { target } => {
                let len = u32::try_from(target.len()).map_err(|_| NewcError::TooLarge {
                    name: name.clone(),
                    size: target.len() as u64,
                })?;
                let mut w = builder.mode(ifmt::LNK | perm).write(&mut out, len);
                w.write_all(target.as_bytes()).map_err(wr)?;
                w.finish().map_err(wr)?;
            }
            EntryKind::CharDev { major, minor } => {
                let w = builder
                    .mode(ifmt::CHR | perm)
                    .rdev_major(major)
                    .rdev_minor(minor)
                    .write(&mut out, 0);
                w.finish().map_err(wr)?;
            }
            EntryKind::BlockDev { major, minor } => {
                let w = builder
                    .mode(ifmt::BLK | perm)
                    .rdev_major(major)
                    .rdev_minor(minor)
                    .write(&mut out, 0);
                w.finish().map_err(wr)?;
            }
            EntryKind::File { size, source } => {
                let len = u32::try_from(size).map_err(|_| NewcError::TooLarge {
                    name: name.clone(),
                    size,
                })?;
                let mut w = builder.mode(ifmt::REG | perm).write(&mut out, len);
                let mut limited = source.take(size);
                let mut buf = vec![0u8; 256 * 1024];
                let mut got: u64 = 0;
                loop {
                    let n = match limited.read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(source) => return Err(NewcError::Read { name, source }),
                    };
                    w.write_all(&buf[..n]).map_err(wr)?;
                    got += n as u64;
                }
                if got != size {
                    return Err(NewcError::ShortSource {
                        name,
                        expected: size,
                        got,
                    });
                }
                w.finish().map_err(wr)?;
            }
        }
        Ok(())
    }

    /// Writes a regular file entry whose `size` data bytes the caller puts on the output itself,
    /// e.g. with `sendfile(2)` from a verified file so they never pass through user space (the
    /// kexec stage, issue 18 §3). Order: the header (from the `cpio` crate), then `data(out)`,
    /// which must write exactly `size` bytes and return how many it wrote, then the zero padding
    /// to 4 bytes. Errors: as [`Self::append`]; [`NewcError::Read`] when `data` fails and
    /// [`NewcError::ShortSource`] when it wrote another count (the archive is then unusable).
    pub fn append_file_with(
        &mut self,
        name: impl Into<String>,
        perm: u32,
        size: u64,
        data: impl FnOnce(&mut W) -> io::Result<u64>,
    ) -> Result<(), NewcError> {
        let name = name.into();
        check_name(&name)?;
        let len = u32::try_from(size).map_err(|_| NewcError::TooLarge {
            name: name.clone(),
            size,
        })?;
        // The crate's entry writer emits its header on the first write, even an empty one; the
        // data then goes around it, straight to the output.
        let mut header = Vec::with_capacity(128);
        {
            let mut w = cpio::newc::Builder::new(&name)
                .ino(self.next_ino)
                .uid(0)
                .gid(0)
                .mtime(0)
                .mode(ifmt::REG | (perm & 0o7777))
                .write(&mut header, len);
            w.write(&[]).map_err(|source| NewcError::Write {
                name: name.clone(),
                source,
            })?;
        }
        self.next_ino = self.next_ino.wrapping_add(1);
        let wr = |name: &str, source| NewcError::Write {
            name: name.to_string(),
            source,
        };
        self.out.write_all(&header).map_err(|e| wr(&name, e))?;
        self.written += header.len() as u64;
        let got = match data(&mut self.out) {
            Ok(n) => n,
            Err(source) => return Err(NewcError::Read { name, source }),
        };
        self.written += got;
        if got != size {
            return Err(NewcError::ShortSource {
                name,
                expected: size,
                got,
            });
        }
        // The header is a multiple of 4 bytes long (newc pads the name), so the data ends
        // aligned after pad4(size) zero bytes.
        let pad = pad4(size);
        self.out
            .write_all(&[0u8; 4][..pad])
            .map_err(|e| wr(&name, e))?;
        self.written += pad as u64;
        Ok(())
    }

    /// Appends the `TRAILER!!!` entry, flushes and returns the output.
    pub fn finish(mut self) -> Result<W, NewcError> {
        let out = Counting {
            inner: &mut self.out,
            count: &mut self.written,
        };
        cpio::newc::trailer(out).map_err(NewcError::Trailer)?;
        self.out.flush().map_err(NewcError::Trailer)?;
        Ok(self.out)
    }
}

/// Writes a complete reproducible archive: `entries` sorted by name (so every directory comes
/// before what it contains), then the trailer. Returns the output. Errors as
/// [`NewcWriter::append`].
pub fn write_archive<W: Write>(out: W, mut entries: Vec<Entry<'_>>) -> Result<W, NewcError> {
    entries.sort_by(|a, b| a.name.as_bytes().cmp(b.name.as_bytes()));
    let mut w = NewcWriter::new(out);
    for e in entries {
        w.append(e)?;
    }
    w.finish()
}

/// Number of zero bytes to add after `len` bytes to reach a multiple of 4, the alignment the
/// kernel needs between concatenated initramfs archives.
pub fn pad4(len: u64) -> usize {
    ((4 - (len % 4)) % 4) as usize
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Command, Stdio};

    fn cpio_available() -> bool {
        Command::new("cpio")
            .arg("--version")
            .stdout(Stdio::null())
            .status()
            .is_ok()
    }

    fn sample() -> Vec<u8> {
        let entries = vec![
            Entry::bytes("phase/boot/kernel", 0o644, b"KERNEL"),
            Entry::dir("phase", 0o755),
            Entry::dir("phase/boot", 0o755),
            Entry::symlink("bin/sh", "busybox"),
            Entry::dir("bin", 0o755),
            Entry::char_dev("dev/console", 0o600, 5, 1),
            Entry::dir("dev", 0o755),
        ];
        write_archive(Vec::new(), entries).unwrap()
    }

    #[test]
    fn archive_is_reproducible_and_sorted() {
        let a = sample();
        assert_eq!(a, sample());
        assert_eq!(a.len() % 4, 0);
        let mut names = Vec::new();
        let mut rd = std::io::Cursor::new(a);
        loop {
            let r = cpio::newc::Reader::new(rd).unwrap();
            if r.entry().is_trailer() {
                break;
            }
            names.push(r.entry().name().to_string());
            assert_eq!(r.entry().mtime(), 0);
            assert_eq!(r.entry().uid(), 0);
            rd = r.finish().unwrap();
        }
        assert_eq!(
            names,
            [
                "bin",
                "bin/sh",
                "dev",
                "dev/console",
                "phase",
                "phase/boot",
                "phase/boot/kernel"
            ]
        );
    }

    #[test]
    fn cpio_tool_extracts_names_and_bytes() {
        if !cpio_available() {
            eprintln!("SKIP: the cpio tool is not installed");
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "cpio tool missing in CI"
            );
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let mut child = Command::new("cpio")
            .args(["-idm", "--quiet", "--no-absolute-filenames"])
            .current_dir(dir.path())
            .stdin(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(&sample()).unwrap();
        assert!(child.wait().unwrap().success());
        assert_eq!(
            std::fs::read(dir.path().join("phase/boot/kernel")).unwrap(),
            b"KERNEL"
        );
        assert_eq!(
            std::fs::read_link(dir.path().join("bin/sh"))
                .unwrap()
                .to_str(),
            Some("busybox")
        );
        assert!(dir.path().join("phase/boot").is_dir());
    }

    #[test]
    fn file_written_by_the_caller_is_byte_identical_to_a_read_one() {
        for size in 0..9u64 {
            let data: Vec<u8> = (0..size as u8).map(|b| b + 1).collect();
            let mut a = NewcWriter::new(Vec::new());
            a.append(Entry::dir("d", 0o755)).unwrap();
            a.append(Entry::reader("d/f", 0o444, size, &data[..]))
                .unwrap();
            a.append(Entry::bytes("d/g", 0o444, b"xyz")).unwrap();
            let mut b = NewcWriter::new(Vec::new());
            b.append(Entry::dir("d", 0o755)).unwrap();
            b.append_file_with("d/f", 0o444, size, |out| {
                out.extend_from_slice(&data);
                Ok(size)
            })
            .unwrap();
            b.append(Entry::bytes("d/g", 0o444, b"xyz")).unwrap();
            assert_eq!(a.bytes_written(), b.bytes_written(), "size {size}");
            assert_eq!(a.finish().unwrap(), b.finish().unwrap(), "size {size}");
        }
    }

    #[test]
    fn file_written_by_the_caller_must_have_its_declared_size() {
        let mut w = NewcWriter::new(Vec::new());
        let err = w
            .append_file_with("f", 0o444, 10, |out| {
                out.extend_from_slice(b"abc");
                Ok(3)
            })
            .unwrap_err();
        assert!(
            matches!(
                err,
                NewcError::ShortSource {
                    expected: 10,
                    got: 3,
                    ..
                }
            ),
            "{err}"
        );
        let mut w = NewcWriter::new(Vec::new());
        let err = w
            .append_file_with("f", 0o444, 1, |_| Err(io::Error::other("gone")))
            .unwrap_err();
        assert!(matches!(err, NewcError::Read { .. }), "{err}");
        let mut w = NewcWriter::new(Vec::new());
        assert!(matches!(
            w.append_file_with("../f", 0o444, 0, |_| Ok(0)),
            Err(NewcError::BadName { .. })
        ));
    }

    #[test]
    fn short_source_is_refused() {
        let mut w = NewcWriter::new(Vec::new());
        let err = w
            .append(Entry::reader("f", 0o644, 10, &b"abc"[..]))
            .unwrap_err();
        assert!(
            matches!(
                err,
                NewcError::ShortSource {
                    expected: 10,
                    got: 3,
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn longer_source_is_cut_at_declared_size() {
        let out = write_archive(
            Vec::new(),
            vec![Entry::reader("f", 0o644, 2, &b"abcdef"[..])],
        )
        .unwrap();
        let r = cpio::newc::Reader::new(std::io::Cursor::new(out)).unwrap();
        assert_eq!(r.entry().file_size(), 2);
    }

    #[test]
    fn absolute_and_dotdot_names_are_refused() {
        for bad in ["/etc/passwd", "a/../b", "", "a//b", "./a"] {
            let mut w = NewcWriter::new(Vec::new());
            assert!(
                matches!(
                    w.append(Entry::dir(bad, 0o755)),
                    Err(NewcError::BadName { .. })
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn pad4_reaches_multiple_of_four() {
        assert_eq!(
            [pad4(0), pad4(1), pad4(2), pad4(3), pad4(4)],
            [0, 3, 2, 1, 0]
        );
    }
}
