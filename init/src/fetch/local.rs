//! Re-verifying artifacts already on disk (issue 5 `phase verify --artifacts`; the target
//! stage's `verify ok` over `/phase/boot`, DESIGN §1).
//!
//! Each artifact is opened by its manifest `filename`, its size checked with fstat, and its
//! SHA-256 computed over the open descriptor, which is then handed back: what is mounted or
//! kexec'd later is the very file that was hashed.

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};
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
        if found != a.size_bytes {
            return Err(LocalVerifyError::Size {
                artifact: name.clone(),
                path,
                expected: a.size_bytes,
                found,
            });
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
