//! Step 1 of the target stage (issue 7 §1, issue 18 §3): check what the boot stage handed over
//! in `/phase/boot`. The manifest is verified again against the trust root built into the
//! initramfs (`/etc/phase/trust.toml`) with [`phase_protocol::verify()`] (signature, expiry,
//! channel, arch); the boot stage's chain-of-custody record ([`crate::custody`]) must name every
//! artifact with the manifest's size and SHA-256; each file must have that size. A handover
//! without a record comes from an older boot stage: then every artifact is hashed, as before.
//!
//! The artifacts are not hashed a second time: they arrive in the same initrd as this stage's
//! own `/init` and trust root, composed by the boot stage from bytes it hashed in RAM, so whoever
//! could alter them could alter the code that would re-check them (docs/security.md "What the
//! target stage trusts"). No rollback floor applies here: the boot stage enforced it.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use phase_protocol::{Arch, ClockTrust, Expectation, Sha256Digest, TrustRoot, VerifiedManifest};
use sha2::{Digest, Sha256};

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
    /// An artifact's SHA-256 differs from the manifest (checked only when the handover has no
    /// custody record, i.e. came from an older boot stage).
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
    /// The boot stage's custody record is malformed or disagrees with the manifest.
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
/// custody record `dir/verified` against the manifest, then every artifact's size. Without a
/// record (a boot stage from before it), every artifact's SHA-256 is checked instead. Nothing
/// on the command line turns a check off (DESIGN §3).
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
    // A boot stage older than the record (an old initramfs on a USB stick booting a new
    // release) writes none: then every artifact is hashed here, as before issue 18.
    let hash_all = match std::fs::read(&record_path) {
        Ok(record) => {
            custody::Record::parse(&record)
                .and_then(|r| r.check(verified.manifest()))
                .map_err(custody_err)?;
            false
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            crate::log::line(&format!(
                "no custody record {} (a boot stage older than it): hashing every artifact",
                record_path.display()
            ));
            true
        }
        Err(source) => {
            return Err(ReverifyError::Read {
                path: record_path,
                source,
            })
        }
    };
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
        if hash_all {
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
pub(crate) mod tests;
