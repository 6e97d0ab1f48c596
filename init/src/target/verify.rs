//! Step 1 of the target stage (issue 7 §1): verify again what the boot stage handed over in
//! `/phase/boot`. The manifest is checked against the trust root built into the initramfs
//! (`/etc/phase/trust.toml`) with [`phase_protocol::verify()`], then each artifact's size and
//! SHA-256 (there is no switch to skip it: DESIGN §3). No rollback floor applies here: the boot stage enforced it.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use phase_protocol::{Arch, ClockTrust, Expectation, Sha256Digest, TrustRoot, VerifiedManifest};
use sha2::{Digest, Sha256};

/// Errors of the re-verification.
#[derive(Debug, thiserror::Error)]
pub enum ReverifyError {
    /// The trust root could not be loaded.
    #[error("trust root {path}")]
    Trust {
        /// The trust file.
        path: PathBuf,
        /// Why.
        #[source]
        source: phase_protocol::trust::TrustError,
    },
    /// Reading the manifest or an artifact failed.
    #[error("read {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The manifest failed verification.
    #[error("manifest {path}")]
    Manifest {
        /// The manifest file.
        path: PathBuf,
        /// The failed check.
        #[source]
        source: phase_protocol::VerifyError,
    },
    /// An artifact's size differs from the manifest.
    #[error("artifact {name} ({path}): size {found} bytes, manifest says {expected}")]
    Size {
        /// Artifact name.
        name: String,
        /// The file.
        path: PathBuf,
        /// Size on disk, bytes.
        found: u64,
        /// Size in the manifest, bytes.
        expected: u64,
    },
    /// An artifact's SHA-256 differs from the manifest.
    #[error("artifact {name} ({path}): sha256:{found}, manifest says {expected}")]
    Hash {
        /// Artifact name.
        name: String,
        /// The file.
        path: PathBuf,
        /// Hex digest found.
        found: String,
        /// `sha256:<hex>` expected.
        expected: String,
    },
}

/// The file of artifact `name` in `dir`: `dir/<name>` (the layout of the appended cpio), else
/// `dir/<filename>` (a release directory).
pub fn artifact_path(dir: &Path, name: &str, filename: &str) -> PathBuf {
    let by_name = dir.join(name);
    if by_name.exists() {
        by_name
    } else {
        dir.join(filename)
    }
}

/// Verifies `dir/manifest.json` against the trust root in `trust_file` at `now`, believed as
/// `clock` says ([`ClockTrust`]; channel and arch checked when given), then every artifact's
/// size and SHA-256. Nothing on the command line turns the hashes off (DESIGN §3).
///
/// # Errors
/// [`ReverifyError`] naming the file and the failed check.
pub fn reverify(
    dir: &Path,
    trust_file: &Path,
    now: DateTime<Utc>,
    clock: ClockTrust,
    channel: Option<&str>,
    arch: Option<Arch>,
) -> Result<VerifiedManifest, ReverifyError> {
    let trust = TrustRoot::load(trust_file).map_err(|source| ReverifyError::Trust {
        path: trust_file.to_path_buf(),
        source,
    })?;
    let path = dir.join("manifest.json");
    let bytes = std::fs::read(&path).map_err(|source| ReverifyError::Read {
        path: path.clone(),
        source,
    })?;
    let expect = Expectation {
        channel: channel.map(str::to_owned),
        arch,
        clock,
        ..Expectation::default()
    };
    let verified = phase_protocol::verify(&bytes, &trust, now, &expect)
        .map_err(|source| ReverifyError::Manifest { path, source })?;
    for (name, artifact) in &verified.manifest().artifacts {
        let path = artifact_path(dir, name, &artifact.filename);
        let found = std::fs::metadata(&path)
            .map_err(|source| ReverifyError::Read {
                path: path.clone(),
                source,
            })?
            .len();
        if found != artifact.size_bytes {
            return Err(ReverifyError::Size {
                name: name.clone(),
                path,
                found,
                expected: artifact.size_bytes,
            });
        }
        let digest = sha256_file(&path)?;
        if digest != artifact.hash {
            return Err(ReverifyError::Hash {
                name: name.clone(),
                path,
                found: digest.hex(),
                expected: artifact.hash.to_string(),
            });
        }
    }
    Ok(verified)
}

/// SHA-256 of the file at `path`, read in 1 MiB blocks.
///
/// # Errors
/// [`ReverifyError::Read`].
pub fn sha256_file(path: &Path) -> Result<Sha256Digest, ReverifyError> {
    let err = |source| ReverifyError::Read {
        path: path.to_path_buf(),
        source,
    };
    let mut file = File::open(path).map_err(err)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(err)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(Sha256Digest(hasher.finalize().into()))
}

#[cfg(test)]
mod tests;
