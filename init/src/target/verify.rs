//! Step 1 of the target stage (issue 7 §1, issue 18 §3): check what the boot stage handed over
//! in `/phase/boot`. The manifest is verified again against the trust root built into the
//! initramfs (`/etc/phase/trust.toml`) with [`phase_protocol::verify()`] (signature, expiry,
//! channel, arch); the boot stage's chain-of-custody record ([`crate::custody`]) must name every
//! artifact with the manifest's size and SHA-256; each file must have that size.
//!
//! The artifacts are not hashed a second time: they arrive in the same initrd as this stage's
//! own `/init` and trust root, composed by the boot stage from bytes it hashed in RAM, so whoever
//! could alter them could alter the code that would re-check them (docs/security.md "What the
//! target stage trusts"). No rollback floor applies here: the boot stage enforced it.

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use phase_protocol::{Arch, ClockTrust, Expectation, TrustRoot, VerifiedManifest};

use crate::custody::{self, CustodyError};

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
    /// The boot stage's custody record is missing, malformed, or disagrees with the manifest.
    #[error("custody record {path}")]
    Custody {
        /// The record file.
        path: PathBuf,
        /// The failed check.
        #[source]
        source: CustodyError,
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
/// `clock` says ([`ClockTrust`]; channel and arch checked when given), then the boot stage's
/// custody record `dir/verified` against the manifest, then every artifact's size. Nothing on
/// the command line turns a check off (DESIGN §3).
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
    let record_path = dir.join(custody::FILE);
    let custody_err = |source| ReverifyError::Custody {
        path: record_path.clone(),
        source,
    };
    let record = std::fs::read(&record_path).map_err(|source| ReverifyError::Read {
        path: record_path.clone(),
        source,
    })?;
    custody::Record::parse(&record)
        .and_then(|r| r.check(verified.manifest()))
        .map_err(custody_err)?;
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
    }
    Ok(verified)
}

#[cfg(test)]
pub(crate) mod tests;
