//! Re-verifying artifacts already on disk (issue 5 `phase verify --artifacts`; the target
//! stage's `verify ok` over `/phase/boot`, DESIGN §1).
//!
//! Each artifact is opened by its manifest `filename`, its size checked with fstat, and its
//! SHA-256 computed over the open descriptor, which is then handed back: what is mounted or
//! kexec'd later is the very file that was hashed. [`copy_verified_artifacts`] (the boot
//! stage's cache, issue 18 §3) instead writes the bytes it hashes into RAM and hands back the
//! copy, so a disk that answers a second read with other bytes cannot reach the kexec initrd.

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use phase_protocol::{Sha256Digest, VerifiedManifest};
use sha2::{Digest, Sha256};

use super::VerifiedFile;

/// Read buffer for hashing files on disk (bytes).
const BUF: usize = 1 << 20;

/// Why an artifact on disk was refused.
#[derive(Debug, thiserror::Error)]
pub enum LocalVerifyError {
    /// The file could not be opened or read.
    #[error("artifact {artifact}: cannot {op} {path}")]
    Io {
        /// Artifact name.
        artifact: String,
        /// `open`, `stat`, `read` or `seek`.
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Its size is not `size_bytes`.
    #[error("artifact {artifact}: {path} is {found} bytes, manifest says {expected}")]
    Size {
        /// Artifact name.
        artifact: String,
        /// The file.
        path: PathBuf,
        /// `size_bytes`.
        expected: u64,
        /// Size on disk.
        found: u64,
    },
    /// Its SHA-256 is not the manifest's.
    #[error("artifact {artifact}: {path} has hash {found}, manifest says {expected}")]
    Hash {
        /// Artifact name.
        artifact: String,
        /// The file.
        path: PathBuf,
        /// The manifest's digest.
        expected: Sha256Digest,
        /// The file's digest.
        found: Sha256Digest,
    },
}

/// Verifies every artifact of `m` in `dir` (size, then SHA-256) and returns each open file,
/// rewound to byte 0, by artifact name. Blocking: call from `spawn_blocking` in async code.
///
/// # Errors
/// The first [`LocalVerifyError`] found (artifacts in name order).
pub fn verify_artifacts_in_dir(
    m: &VerifiedManifest,
    dir: &Path,
) -> Result<BTreeMap<String, VerifiedFile>, LocalVerifyError> {
    verify_in_dir(m, dir, None)
}

/// Where [`verify_in_dir`] copies to, and the list of copies it made.
type CopyTo<'a> = Option<(&'a Path, &'a mut Vec<PathBuf>)>;

/// Like [`verify_artifacts_in_dir`], but every byte hashed is also written to
/// `into/<filename>` (a tmpfs such as `/run/phase/fetch`), and the returned files are those
/// copies: the bytes handed on are the bytes hashed, read from `dir` exactly once. When any
/// artifact is refused, every copy made so far is removed (the RAM is given back).
///
/// # Errors
/// The first [`LocalVerifyError`] found; `op` `create` or `write` for the copy.
pub fn copy_verified_artifacts(
    m: &VerifiedManifest,
    dir: &Path,
    into: &Path,
) -> Result<BTreeMap<String, VerifiedFile>, LocalVerifyError> {
    let mut made = Vec::new();
    let res = verify_in_dir(m, dir, Some((into, &mut made)));
    if res.is_err() {
        for p in made {
            let _ = std::fs::remove_file(p);
        }
    }
    res
}

fn verify_in_dir(
    m: &VerifiedManifest,
    dir: &Path,
    mut copy_to: CopyTo<'_>,
) -> Result<BTreeMap<String, VerifiedFile>, LocalVerifyError> {
    let mut out = BTreeMap::new();
    let mut buf = vec![0u8; BUF];
    for (name, a) in &m.manifest().artifacts {
        let path = dir.join(&a.filename);
        let io = |op: &'static str| {
            let (artifact, path) = (name.clone(), path.clone());
            move |source| LocalVerifyError::Io {
                artifact,
                op,
                path,
                source,
            }
        };
        let mut file = std::fs::File::open(&path).map_err(io("open"))?;
        let found = file.metadata().map_err(io("stat"))?.len();
        let mut copy = match copy_to.as_mut() {
            Some((into, made)) => {
                let p = into.join(&a.filename);
                let f = std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .open(&p)
                    .map_err(|source| LocalVerifyError::Io {
                        artifact: name.clone(),
                        op: "create",
                        path: p.clone(),
                        source,
                    })?;
                made.push(p.clone());
                Some((p, f))
            }
            None => None,
        };
        if found != a.size_bytes {
            return Err(LocalVerifyError::Size {
                artifact: name.clone(),
                path,
                expected: a.size_bytes,
                found,
            });
        }
        if let Some((p, f)) = copy.as_ref().filter(|(_, f)| super::partial::on_tmpfs(f)) {
            // Full length first, for 2 MiB pages on the boot stage's /run (`Partial::presize`).
            f.set_len(a.size_bytes)
                .map_err(|source| LocalVerifyError::Io {
                    artifact: name.clone(),
                    op: "truncate",
                    path: p.clone(),
                    source,
                })?;
        }
        let mut hasher = Sha256::new();
        let mut total = 0u64;
        loop {
            let n = match file.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(io("read")(e)),
            };
            hasher.update(&buf[..n]);
            if let Some((p, f)) = &mut copy {
                if let Err(source) = f.write_all(&buf[..n]) {
                    return Err(LocalVerifyError::Io {
                        artifact: name.clone(),
                        op: "write",
                        path: p.clone(),
                        source,
                    });
                }
            }
            total += n as u64;
        }
        let digest = Sha256Digest(hasher.finalize().into());
        // A file that changed size while being read is refused like a wrong one.
        if total != a.size_bytes {
            return Err(LocalVerifyError::Size {
                artifact: name.clone(),
                path,
                expected: a.size_bytes,
                found: total,
            });
        }
        if digest != a.hash {
            return Err(LocalVerifyError::Hash {
                artifact: name.clone(),
                path,
                expected: a.hash,
                found: digest,
            });
        }
        file.seek(SeekFrom::Start(0)).map_err(io("seek"))?;
        let (path, file) = match copy {
            Some((p, mut f)) => {
                f.seek(SeekFrom::Start(0))
                    .map_err(|source| LocalVerifyError::Io {
                        artifact: name.clone(),
                        op: "seek",
                        path: p.clone(),
                        source,
                    })?;
                (p, f)
            }
            None => (path, file),
        };
        out.insert(
            name.clone(),
            VerifiedFile {
                path,
                file,
                size: total,
                hash: digest,
            },
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use phase_protocol::{Expectation, TrustRoot};

    /// A signed release in `dir` (target::verify's test helper) and its verified manifest.
    fn release(dir: &Path) -> VerifiedManifest {
        let trust = crate::target::verify::tests::signed_boot_dir(dir);
        let bytes = std::fs::read(dir.join("manifest.json")).unwrap();
        phase_protocol::verify(
            &bytes,
            &TrustRoot::load(&trust).unwrap(),
            chrono::Utc::now(),
            &Expectation::default(),
        )
        .unwrap()
    }

    #[test]
    fn the_copy_holds_the_bytes_hashed_even_when_the_disk_changes_afterwards() {
        let (disk, ram) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let m = release(disk.path());
        let got = copy_verified_artifacts(&m, disk.path(), ram.path()).unwrap();
        assert_eq!(got.len(), 3);
        // The cache disk now answers with other bytes of the same size.
        std::fs::write(disk.path().join("rootfs"), b"squashfs BYTES").unwrap();
        let v = &got["rootfs"];
        assert_eq!(v.path, ram.path().join("rootfs"));
        let mut handed_on = Vec::new();
        (&v.file).read_to_end(&mut handed_on).unwrap();
        assert_eq!(handed_on, b"squashfs bytes");
        assert_eq!(v.hash, Sha256Digest::of(b"squashfs bytes"));
        // Without the copy, the descriptor handed on reads whatever the disk holds now.
        let direct = verify_artifacts_in_dir(&m, disk.path()).unwrap_err();
        assert!(matches!(direct, LocalVerifyError::Hash { .. }), "{direct}");
    }

    #[test]
    fn a_refused_artifact_leaves_no_copy_behind() {
        let (disk, ram) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let m = release(disk.path());
        std::fs::write(disk.path().join("kernel"), b"kernel BYTES").unwrap();
        let e = copy_verified_artifacts(&m, disk.path(), ram.path()).unwrap_err();
        assert!(
            matches!(&e, LocalVerifyError::Hash { artifact, .. } if artifact == "kernel"),
            "{e}"
        );
        assert!(!ram.path().join("kernel").exists(), "refused copy kept");
        // "initramfs" comes first in name order and was verified before "kernel" failed.
        assert!(
            !ram.path().join("initramfs").exists(),
            "a verified copy kept after the release was refused"
        );
        std::fs::write(disk.path().join("kernel"), b"kernel").unwrap();
        let e = copy_verified_artifacts(&m, disk.path(), ram.path()).unwrap_err();
        assert!(matches!(e, LocalVerifyError::Size { .. }), "{e}");
        assert!(!ram.path().join("kernel").exists(), "refused copy kept");
    }
}
