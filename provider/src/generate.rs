//! Building and signing manifests from a release directory (DESIGN §5; seed 003 "Boot Manifest
//! Schema Pattern" and "Manifest Signing Pattern").
//!
//! Used by `plasmd manifest build|sign` (the Makefile's `make release`) and by `plasmd serve
//! --key` for a tree without a `manifest.json`. Artifacts are `kernel` and `initramfs`
//! (required) and `rootfs` (optional); each artifact's filename is its name and its
//! `download_url` is that filename, relative to the manifest URL.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use ed25519_dalek::SigningKey;
use phase_protocol::chunks::default_chunk_size;
use phase_protocol::manifest::{MANIFEST_VERSION, MANIFEST_VERSION_V1};
use phase_protocol::{Arch, Artifact, BootManifest, ManifestError};

use crate::hashcache::{HashCache, HashError};

/// Artifact names a generated manifest may hold, in order; the first two are required.
pub const ARTIFACT_NAMES: [&str; 3] = ["kernel", "initramfs", "rootfs"];

/// Why a manifest could not be built or signed.
#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    /// A required artifact file is missing from the directory.
    #[error("{dir} has no {name:?} file (a manifest needs kernel and initramfs)")]
    Missing {
        /// The release directory.
        dir: PathBuf,
        /// The artifact name (= filename).
        name: &'static str,
    },
    /// An artifact could not be hashed.
    #[error(transparent)]
    Hash(#[from] HashError),
    /// The result breaks a manifest rule (bad channel, cmdline...).
    #[error("generated manifest is invalid")]
    Invalid(#[source] ManifestError),
    /// The lifetime does not fit a date.
    #[error("expiry {0:?} is out of range")]
    Expiry(Duration),
    /// Signing failed.
    #[error("cannot sign manifest")]
    Sign(#[source] phase_protocol::signing::SignError),
    /// The manifest could not be turned into JSON.
    #[error("cannot serialise manifest")]
    Json(#[source] serde_json::Error),
}

/// What a generated manifest says besides its artifacts.
#[derive(Debug, Clone)]
pub struct ReleaseInfo {
    /// Channel.
    pub channel: String,
    /// Architecture (written in its canonical spelling).
    pub arch: Arch,
    /// SemVer of the release.
    pub version: semver::Version,
    /// Time from `created_at` to `expires_at`.
    pub expires_in: Duration,
    /// Kernel command line of the target.
    pub cmdline: String,
    /// `manifest_version` to write: [`MANIFEST_VERSION`] (2, with chunk digests) or
    /// [`MANIFEST_VERSION_V1`] (for boot media older than v2).
    pub manifest_version: u32,
    /// v2 chunk size in bytes for every artifact; `None` picks
    /// [`default_chunk_size`] per artifact (1-4 MiB by size).
    pub chunk_size: Option<u64>,
}

impl ReleaseInfo {
    /// `info` with the newest manifest version and per-artifact default chunk sizes.
    pub fn new(
        channel: String,
        arch: Arch,
        version: semver::Version,
        expires_in: Duration,
        cmdline: String,
    ) -> Self {
        ReleaseInfo {
            channel,
            arch,
            version,
            expires_in,
            cmdline,
            manifest_version: MANIFEST_VERSION,
            chunk_size: None,
        }
    }
}

/// Builds an unsigned manifest for the `kernel`, `initramfs` and `rootfs` files of `dir`,
/// hashing through `hashes`, created at `now`. Blocking (reads every artifact not cached).
///
/// # Errors
/// [`GenerateError::Missing`], [`GenerateError::Hash`], [`GenerateError::Invalid`],
/// [`GenerateError::Expiry`].
pub fn build_manifest(
    dir: &Path,
    info: &ReleaseInfo,
    hashes: &HashCache,
    now: DateTime<Utc>,
) -> Result<BootManifest, GenerateError> {
    let mut artifacts = BTreeMap::new();
    for (i, name) in ARTIFACT_NAMES.into_iter().enumerate() {
        let path = dir.join(name);
        if !path.is_file() {
            if i < 2 {
                return Err(GenerateError::Missing {
                    dir: dir.to_owned(),
                    name,
                });
            }
            continue;
        }
        let (size_bytes, hash, chunk_size, chunks) = if info.manifest_version == MANIFEST_VERSION_V1
        {
            let (hash, stamp) = hashes.hash(&path)?;
            (stamp.size, hash, None, None)
        } else {
            let size = std::fs::metadata(&path)
                .map_err(|source| HashError::Io {
                    path: path.clone(),
                    source,
                })?
                .len();
            let chunk_size = info.chunk_size.unwrap_or_else(|| default_chunk_size(size));
            let (list, stamp) = hashes.chunk_list(&path, chunk_size)?;
            (stamp.size, list.whole, Some(chunk_size), Some(list.chunks))
        };
        artifacts.insert(
            name.to_owned(),
            Artifact {
                filename: name.to_owned(),
                size_bytes,
                hash,
                download_url: Some(name.to_owned()),
                urls: Vec::new(),
                chunk_size,
                chunks,
                extra: BTreeMap::new(),
            },
        );
    }
    // Whole seconds, so the RFC 3339 text is stable and short.
    let created_at = DateTime::from_timestamp(now.timestamp(), 0).unwrap_or(now);
    let expires_at = chrono::Duration::from_std(info.expires_in)
        .ok()
        .and_then(|d| created_at.checked_add_signed(d))
        .ok_or(GenerateError::Expiry(info.expires_in))?;
    let manifest = BootManifest {
        manifest_version: info.manifest_version,
        version: info.version.clone(),
        channel: info.channel.clone(),
        arch: info.arch.as_str().to_owned(),
        created_at,
        expires_at,
        cmdline: info.cmdline.clone(),
        artifacts,
        signatures: Vec::new(),
        extra: BTreeMap::new(),
    };
    manifest.validate().map_err(GenerateError::Invalid)?;
    Ok(manifest)
}

/// The manifest as pretty JSON text without `signatures` (what `plasmd manifest build` writes).
///
/// # Errors
/// [`GenerateError::Json`].
pub fn unsigned_json(manifest: &BootManifest) -> Result<serde_json::Value, GenerateError> {
    let mut value = manifest.to_value().map_err(GenerateError::Json)?;
    if let Some(map) = value.as_object_mut() {
        map.remove("signatures");
    }
    Ok(value)
}

/// Signs `document` with `key` at `now` and returns the signed JSON text (pretty, newline at the
/// end). Existing signatures are kept.
///
/// # Errors
/// [`GenerateError::Sign`], [`GenerateError::Json`].
pub fn sign_to_text(
    mut document: serde_json::Value,
    key: &SigningKey,
    now: DateTime<Utc>,
) -> Result<String, GenerateError> {
    phase_protocol::signing::sign_document(&mut document, key, now).map_err(GenerateError::Sign)?;
    let mut text = serde_json::to_string_pretty(&document).map_err(GenerateError::Json)?;
    text.push('\n');
    Ok(text)
}

/// RFC 3339 text of `t` in whole seconds (`2026-11-21T00:00:00Z`).
pub fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use phase_protocol::{verify, Expectation, TrustRoot};

    fn info() -> ReleaseInfo {
        ReleaseInfo::new(
            "stable".into(),
            Arch::X86_64,
            semver::Version::new(0, 1, 0),
            Duration::from_secs(86_400),
            "console=ttyS0".into(),
        )
    }

    #[test]
    fn v2_chunks_are_the_files_pieces_and_v1_has_none() {
        let dir = tempfile::tempdir().unwrap();
        let rootfs: Vec<u8> = (0..300_000u32).map(|i| (i * 31 % 256) as u8).collect();
        std::fs::write(dir.path().join("kernel"), b"k").unwrap();
        std::fs::write(dir.path().join("initramfs"), b"").unwrap();
        std::fs::write(dir.path().join("rootfs"), &rootfs).unwrap();
        let cache = HashCache::load(dir.path().join(".c"));
        let mut i = info();
        i.chunk_size = Some(65536);
        let m = build_manifest(dir.path(), &i, &cache, Utc::now()).unwrap();
        assert_eq!(m.manifest_version, 2);
        let (size, list) = m.artifacts["rootfs"].chunking().unwrap();
        assert_eq!(size, 65536);
        let by_hand: Vec<_> = rootfs
            .chunks(65536)
            .map(phase_protocol::Sha256Digest::of)
            .collect();
        assert_eq!(list, &by_hand[..]);
        assert_eq!(m.artifacts["initramfs"].chunking().unwrap().1.len(), 0);
        // The default picks 1 MiB for small artifacts.
        let m = build_manifest(dir.path(), &info(), &cache, Utc::now()).unwrap();
        assert_eq!(m.artifacts["rootfs"].chunk_size, Some(1 << 20));
        i.manifest_version = MANIFEST_VERSION_V1;
        let m = build_manifest(dir.path(), &i, &cache, Utc::now()).unwrap();
        assert_eq!(m.manifest_version, 1);
        assert!(m.artifacts.values().all(|a| a.chunking().is_none()));
        // A chunk size outside the rules is refused by validation.
        i.manifest_version = MANIFEST_VERSION;
        i.chunk_size = Some(1000);
        assert!(matches!(
            build_manifest(dir.path(), &i, &cache, Utc::now()),
            Err(GenerateError::Invalid(ManifestError::BadChunkSize { .. }))
        ));
    }

    #[test]
    fn built_and_signed_manifest_verifies() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("kernel"), b"k").unwrap();
        std::fs::write(dir.path().join("initramfs"), b"i").unwrap();
        let cache = HashCache::load(dir.path().join(".c"));
        let now = Utc::now();
        let m = build_manifest(dir.path(), &info(), &cache, now).unwrap();
        assert_eq!(m.artifacts.len(), 2);
        assert_eq!(
            m.artifacts["kernel"].download_url.as_deref(),
            Some("kernel")
        );
        let key = phase_protocol::signing::generate_key();
        let text = sign_to_text(unsigned_json(&m).unwrap(), &key, now).unwrap();
        let trust = TrustRoot::new([key.verifying_key()], 1).unwrap();
        let v = verify(text.as_bytes(), &trust, now, &Expectation::default()).unwrap();
        assert_eq!(v.manifest().artifacts["initramfs"].size_bytes, 1);
    }

    #[test]
    fn release_without_initramfs_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("kernel"), b"k").unwrap();
        let cache = HashCache::load(dir.path().join(".c"));
        let err = build_manifest(dir.path(), &info(), &cache, Utc::now()).unwrap_err();
        assert!(
            matches!(
                err,
                GenerateError::Missing {
                    name: "initramfs",
                    ..
                }
            ),
            "{err}"
        );
    }
}
