//! Boot manifest v1 and v2 (DESIGN §5; seed 003 "Boot Manifest Schema Pattern", with its fixes;
//! issue 19 §1 for v2).
//!
//! A manifest names one release for one (channel, arch): its SemVer `version`, validity window,
//! the signed kernel command line of the target and the artifacts (`kernel` and `initramfs`
//! required, `rootfs` optional), each with size and SHA-256. Version 2 adds to every artifact a
//! `chunk_size` and the SHA-256 of every chunk ([`crate::chunks`]); version 1 has neither. Artifacts live in a `BTreeMap`;
//! unknown members are kept in `extra` and stay covered by the signature because signing works
//! on the received JSON value ([`crate::canonical`]), never on this struct.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::arch::Arch;
use crate::digest::Sha256Digest;

/// The newest `manifest_version`: what `plasmd manifest build` writes (piece digests, issue 19).
pub const MANIFEST_VERSION: u32 = 2;
/// The first `manifest_version`: whole-file hashes only; still accepted, and written by
/// `plasmd manifest build --manifest-version 1` for boot media older than v2.
pub const MANIFEST_VERSION_V1: u32 = 1;
/// Artifacts every manifest must name.
pub const REQUIRED_ARTIFACTS: [&str; 2] = ["kernel", "initramfs"];
/// Longest `cmdline` accepted, in bytes; x86's 2048-byte limit leaves room for `phase.*` keys.
pub const MAX_CMDLINE_BYTES: usize = 1536;

/// A boot manifest v1. Field meanings and JSON names follow DESIGN §5.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BootManifest {
    /// Schema version: [`MANIFEST_VERSION_V1`] or [`MANIFEST_VERSION`] (2).
    pub manifest_version: u32,
    /// SemVer of the release; rollback protection compares it.
    pub version: semver::Version,
    /// Release channel, e.g. `stable`.
    pub channel: String,
    /// Architecture name as published (any alias of [`Arch`]).
    pub arch: String,
    /// When the release was made (RFC 3339).
    pub created_at: DateTime<Utc>,
    /// After this instant the manifest is refused (RFC 3339).
    pub expires_at: DateTime<Utc>,
    /// Kernel command line of the target; signed, so a mirror cannot alter it.
    #[serde(default)]
    pub cmdline: String,
    /// Artifacts by name (`kernel`, `initramfs`, `rootfs`, ...).
    pub artifacts: BTreeMap<String, Artifact>,
    /// Detached signatures over the canonical form of everything else.
    #[serde(default)]
    pub signatures: Vec<SignatureEntry>,
    /// Members this version does not know; covered by the signature all the same.
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

/// One artifact of a manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Artifact {
    /// File name in the provider's `{channel}/{arch}/` directory; a single path component.
    pub filename: String,
    /// Exact size in bytes; a download is cut off here.
    pub size_bytes: u64,
    /// SHA-256 of the whole file, `sha256:<hex>`.
    pub hash: Sha256Digest,
    /// URL relative to the manifest URL (usually just the filename).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub download_url: Option<String>,
    /// Absolute http(s) mirrors, tried after every provider.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub urls: Vec<String>,
    /// v2: the chunk size in bytes, a power of two in 64 KiB..=16 MiB
    /// ([`crate::chunks::valid_chunk_size`]); absent in v1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunk_size: Option<u64>,
    /// v2: SHA-256 of every chunk in order, `ceil(size_bytes / chunk_size)` of them; absent in v1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunks: Option<Vec<Sha256Digest>>,
    /// Members this version does not know.
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

impl Artifact {
    /// The v2 piece list: `(chunk_size in bytes, one digest per chunk)`, or `None` for a v1
    /// artifact. Meaningful on a manifest that passed [`BootManifest::validate`].
    pub fn chunking(&self) -> Option<(u64, &[Sha256Digest])> {
        Some((self.chunk_size?, self.chunks.as_deref()?))
    }
}

/// One signature entry: Ed25519 over SHA-256 of the RFC 8785 signing bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignatureEntry {
    /// Always `ed25519`.
    pub algorithm: String,
    /// The signer's public key, 64 lowercase hex digits.
    pub key_id: String,
    /// The signature, 128 lowercase hex digits.
    pub signature: String,
    /// When it was signed (RFC 3339); informational, not trusted.
    pub signed_at: String,
}

/// A manifest that parses but breaks a rule of DESIGN §5.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    /// `manifest_version` is neither 1 nor 2.
    #[error("manifest_version {0} is not supported (this build reads versions {MANIFEST_VERSION_V1} and {MANIFEST_VERSION})")]
    UnsupportedVersion(u32),
    /// A v2 artifact lacks `chunk_size` or `chunks`, or a v1 artifact has one of them.
    #[error("artifact {artifact:?}: manifest_version {version} {why}")]
    ChunkFields {
        /// Artifact name.
        artifact: String,
        /// The manifest's version.
        version: u32,
        /// `needs chunk_size and chunks` or `has no chunk_size or chunks`.
        why: &'static str,
    },
    /// A v2 `chunk_size` is not a power of two in 64 KiB..=16 MiB.
    #[error("artifact {artifact:?}: chunk_size {chunk_size} is not a power of two from 65536 to 16777216 bytes")]
    BadChunkSize {
        /// Artifact name.
        artifact: String,
        /// The declared chunk size.
        chunk_size: u64,
    },
    /// A v2 chunk list does not have `ceil(size_bytes / chunk_size)` entries.
    #[error("artifact {artifact:?}: {got} chunk digests for {size_bytes} bytes in chunks of {chunk_size} (expected {expected})")]
    ChunkCount {
        /// Artifact name.
        artifact: String,
        /// Its size in bytes.
        size_bytes: u64,
        /// Its chunk size in bytes.
        chunk_size: u64,
        /// Entries required.
        expected: u64,
        /// Entries listed.
        got: usize,
    },
    /// A required artifact is absent.
    #[error("manifest has no {0:?} artifact")]
    MissingArtifact(&'static str),
    /// An artifact name is not `[a-z0-9_-]{1,64}`.
    #[error("artifact name {0:?} is not [a-z0-9_-]{{1,64}}")]
    BadArtifactName(String),
    /// A filename is not a single safe path component.
    #[error("artifact {artifact:?} has unsafe filename {filename:?}")]
    BadFilename {
        /// Artifact name.
        artifact: String,
        /// The offending filename.
        filename: String,
    },
    /// Two artifacts share one filename.
    #[error("artifacts share the filename {0:?}")]
    DuplicateFilename(String),
    /// A URL is not of the allowed form.
    #[error("artifact {artifact:?} has bad URL {url:?}: {why}")]
    BadUrl {
        /// Artifact name.
        artifact: String,
        /// The offending URL.
        url: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// The channel is not `[A-Za-z0-9._-]{1,64}` (or is `.`/`..`).
    #[error("channel {0:?} is not [A-Za-z0-9._-]{{1,64}}")]
    BadChannel(String),
    /// The arch is not a known architecture.
    #[error(transparent)]
    BadArch(#[from] crate::arch::UnknownArch),
    /// `expires_at` is not after `created_at`.
    #[error("expires_at {expires_at} is not after created_at {created_at}")]
    ExpiresBeforeCreated {
        /// created_at as given.
        created_at: DateTime<Utc>,
        /// expires_at as given.
        expires_at: DateTime<Utc>,
    },
    /// The cmdline is too long or holds control characters.
    #[error("cmdline is longer than {MAX_CMDLINE_BYTES} bytes or holds control characters")]
    BadCmdline,
}

/// True for a channel name usable as a path component and DHT key part.
pub fn valid_channel(channel: &str) -> bool {
    (1..=64).contains(&channel.len())
        && channel != "."
        && channel != ".."
        && channel
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// True for a filename that is one safe path component (no `/`, `\`, NUL, `.`, `..`, leading
/// dot) and not `manifest.json`.
pub fn valid_filename(name: &str) -> bool {
    (1..=128).contains(&name.len())
        && !name.starts_with('.')
        && name != "manifest.json"
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'+'))
}

fn valid_artifact_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'-'))
}

fn is_http_url(url: &str) -> bool {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"));
    matches!(rest, Some(r) if !r.is_empty() && !r.starts_with('/'))
        && !url.bytes().any(|b| b.is_ascii_control() || b == b' ')
}

impl BootManifest {
    /// Checks every rule of DESIGN §5 that does not need a key, a clock or an expectation.
    ///
    /// # Errors
    /// The first [`ManifestError`] found.
    pub fn validate(&self) -> Result<(), ManifestError> {
        if self.manifest_version != MANIFEST_VERSION && self.manifest_version != MANIFEST_VERSION_V1
        {
            return Err(ManifestError::UnsupportedVersion(self.manifest_version));
        }
        if !valid_channel(&self.channel) {
            return Err(ManifestError::BadChannel(self.channel.clone()));
        }
        self.arch.parse::<Arch>()?;
        if self.expires_at <= self.created_at {
            return Err(ManifestError::ExpiresBeforeCreated {
                created_at: self.created_at,
                expires_at: self.expires_at,
            });
        }
        if self.cmdline.len() > MAX_CMDLINE_BYTES || self.cmdline.chars().any(char::is_control) {
            return Err(ManifestError::BadCmdline);
        }
        for required in REQUIRED_ARTIFACTS {
            if !self.artifacts.contains_key(required) {
                return Err(ManifestError::MissingArtifact(required));
            }
        }
        let mut filenames = std::collections::BTreeSet::new();
        for (name, a) in &self.artifacts {
            if !valid_artifact_name(name) {
                return Err(ManifestError::BadArtifactName(name.clone()));
            }
            if !valid_filename(&a.filename) {
                return Err(ManifestError::BadFilename {
                    artifact: name.clone(),
                    filename: a.filename.clone(),
                });
            }
            if !filenames.insert(a.filename.as_str()) {
                return Err(ManifestError::DuplicateFilename(a.filename.clone()));
            }
            if let Some(rel) = &a.download_url {
                if rel.is_empty()
                    || rel.contains("://")
                    || rel.starts_with("//")
                    || rel.contains('\\')
                {
                    return Err(ManifestError::BadUrl {
                        artifact: name.clone(),
                        url: rel.clone(),
                        why: "download_url must be a relative reference",
                    });
                }
            }
            for url in &a.urls {
                if !is_http_url(url) {
                    return Err(ManifestError::BadUrl {
                        artifact: name.clone(),
                        url: url.clone(),
                        why: "mirrors must be absolute http:// or https:// URLs",
                    });
                }
            }
            self.validate_chunks(name, a)?;
        }
        Ok(())
    }

    /// The v2 piece rules for one artifact (issue 19 §1): both chunk fields present in v2 and
    /// absent in v1, a valid chunk size, and one digest per chunk.
    fn validate_chunks(&self, name: &str, a: &Artifact) -> Result<(), ManifestError> {
        let fields = |why| ManifestError::ChunkFields {
            artifact: name.to_owned(),
            version: self.manifest_version,
            why,
        };
        let (chunk_size, chunks) = match (self.manifest_version, a.chunk_size, &a.chunks) {
            (MANIFEST_VERSION_V1, None, None) => return Ok(()),
            (MANIFEST_VERSION_V1, ..) => return Err(fields("has no chunk_size or chunks")),
            (_, Some(size), Some(list)) => (size, list),
            _ => return Err(fields("needs chunk_size and chunks")),
        };
        if !crate::chunks::valid_chunk_size(chunk_size) {
            return Err(ManifestError::BadChunkSize {
                artifact: name.to_owned(),
                chunk_size,
            });
        }
        let expected = crate::chunks::chunk_count(a.size_bytes, chunk_size);
        if chunks.len() as u64 != expected {
            return Err(ManifestError::ChunkCount {
                artifact: name.to_owned(),
                size_bytes: a.size_bytes,
                chunk_size,
                expected,
                got: chunks.len(),
            });
        }
        Ok(())
    }

    /// The parsed architecture. Only fails on a manifest that did not pass [`validate`](Self::validate).
    ///
    /// # Errors
    /// [`crate::arch::UnknownArch`].
    pub fn arch(&self) -> Result<Arch, crate::arch::UnknownArch> {
        self.arch.parse()
    }

    /// The artifact named `name`, if any.
    pub fn artifact(&self, name: &str) -> Option<&Artifact> {
        self.artifacts.get(name)
    }

    /// Sum of all artifact sizes in bytes.
    pub fn total_bytes(&self) -> u64 {
        self.artifacts.values().map(|a| a.size_bytes).sum()
    }

    /// This manifest as a JSON value (for signing with [`crate::signing::sign_document`]).
    ///
    /// # Errors
    /// Only if serialisation fails, which it does not for a valid manifest.
    pub fn to_value(&self) -> Result<Value, serde_json::Error> {
        serde_json::to_value(self)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A valid unsigned manifest with three artifacts, for tests across the crate.
    pub(crate) fn sample() -> BootManifest {
        let art = |name: &str, size: u64| Artifact {
            filename: name.to_owned(),
            size_bytes: size,
            hash: Sha256Digest::of(name.as_bytes()),
            download_url: Some(name.to_owned()),
            urls: vec![],
            chunk_size: None,
            chunks: None,
            extra: BTreeMap::new(),
        };
        BootManifest {
            manifest_version: 1,
            version: semver::Version::new(1, 2, 3),
            channel: "stable".into(),
            arch: "x86_64".into(),
            created_at: "2026-11-01T00:00:00Z".parse().unwrap(),
            expires_at: "2027-11-01T00:00:00Z".parse().unwrap(),
            cmdline: "console=ttyS0 quiet".into(),
            artifacts: [("kernel", 10), ("initramfs", 20), ("rootfs", 30)]
                .into_iter()
                .map(|(n, s)| (n.to_owned(), art(n, s)))
                .collect(),
            signatures: vec![],
            extra: BTreeMap::new(),
        }
    }

    #[test]
    fn sample_is_valid_and_round_trips() {
        let m = sample();
        m.validate().unwrap();
        let back: BootManifest = serde_json::from_value(m.to_value().unwrap()).unwrap();
        assert_eq!(back, m);
        assert_eq!(m.total_bytes(), 60);
    }

    /// [`sample`] as v2: 64 KiB chunks, one (made-up) digest per chunk.
    pub(crate) fn sample_v2() -> BootManifest {
        let mut m = sample();
        m.manifest_version = MANIFEST_VERSION;
        for a in m.artifacts.values_mut() {
            a.size_bytes = 3 * 65536 + 5;
            a.chunk_size = Some(65536);
            a.chunks = Some(vec![Sha256Digest::of(b"c"); 4]);
        }
        m
    }

    #[test]
    fn v2_sample_is_valid_and_round_trips_with_its_chunks() {
        let m = sample_v2();
        m.validate().unwrap();
        let v = m.to_value().unwrap();
        assert_eq!(v["artifacts"]["kernel"]["chunk_size"], 65536);
        assert_eq!(
            v["artifacts"]["kernel"]["chunks"].as_array().unwrap().len(),
            4
        );
        let back: BootManifest = serde_json::from_value(v).unwrap();
        assert_eq!(back, m);
        let (size, list) = back.artifacts["rootfs"].chunking().unwrap();
        assert_eq!((size, list.len()), (65536, 4));
        assert!(sample().artifacts["rootfs"].chunking().is_none());
    }

    #[test]
    fn v2_piece_rules_are_enforced() {
        let mut m = sample_v2();
        m.artifacts.get_mut("kernel").unwrap().chunks = None;
        assert!(matches!(
            m.validate(),
            Err(ManifestError::ChunkFields { version: 2, .. })
        ));
        let mut m = sample_v2();
        m.artifacts.get_mut("kernel").unwrap().chunk_size = None;
        assert!(matches!(
            m.validate(),
            Err(ManifestError::ChunkFields { .. })
        ));
        for bad in [0, 1000, 65536 + 1, 32 << 10, 32 << 20] {
            let mut m = sample_v2();
            m.artifacts.get_mut("kernel").unwrap().chunk_size = Some(bad);
            assert!(
                matches!(m.validate(), Err(ManifestError::BadChunkSize { chunk_size, .. }) if chunk_size == bad),
                "{bad}"
            );
        }
        for n in [0, 3, 5] {
            let mut m = sample_v2();
            m.artifacts.get_mut("rootfs").unwrap().chunks = Some(vec![Sha256Digest::of(b"c"); n]);
            assert!(
                matches!(m.validate(), Err(ManifestError::ChunkCount { expected: 4, got, .. }) if got == n),
                "{n}"
            );
        }
        // An empty artifact has no chunk.
        let mut m = sample_v2();
        let a = m.artifacts.get_mut("rootfs").unwrap();
        a.size_bytes = 0;
        a.chunks = Some(vec![]);
        m.validate().unwrap();
        // v1 carries no piece fields.
        let mut m = sample();
        m.artifacts.get_mut("kernel").unwrap().chunk_size = Some(65536);
        assert!(matches!(
            m.validate(),
            Err(ManifestError::ChunkFields { version: 1, .. })
        ));
    }

    #[test]
    fn missing_kernel_is_refused() {
        let mut m = sample();
        m.artifacts.remove("kernel");
        assert_eq!(m.validate(), Err(ManifestError::MissingArtifact("kernel")));
    }

    #[test]
    fn traversal_filenames_are_refused() {
        for bad in [
            "../etc/passwd",
            "a/b",
            "..",
            ".hidden",
            "",
            "manifest.json",
            "a\0b",
            "a\\b",
        ] {
            let mut m = sample();
            m.artifacts.get_mut("rootfs").unwrap().filename = bad.into();
            assert!(
                matches!(m.validate(), Err(ManifestError::BadFilename { .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn bad_fields_are_refused_with_typed_errors() {
        for v in [0, 3, u32::MAX] {
            let mut m = sample();
            m.manifest_version = v;
            assert_eq!(m.validate(), Err(ManifestError::UnsupportedVersion(v)));
        }
        let mut m = sample();
        m.channel = "../x".into();
        assert!(matches!(m.validate(), Err(ManifestError::BadChannel(_))));
        let mut m = sample();
        m.arch = "sparc".into();
        assert!(matches!(m.validate(), Err(ManifestError::BadArch(_))));
        let mut m = sample();
        m.expires_at = m.created_at;
        assert!(matches!(
            m.validate(),
            Err(ManifestError::ExpiresBeforeCreated { .. })
        ));
        let mut m = sample();
        m.cmdline = "a\nb".into();
        assert_eq!(m.validate(), Err(ManifestError::BadCmdline));
        let mut m = sample();
        m.artifacts.get_mut("kernel").unwrap().urls = vec!["file:///etc/passwd".into()];
        assert!(matches!(m.validate(), Err(ManifestError::BadUrl { .. })));
        let mut m = sample();
        m.artifacts.get_mut("kernel").unwrap().download_url = Some("http://evil/k".into());
        assert!(matches!(m.validate(), Err(ManifestError::BadUrl { .. })));
        let mut m = sample();
        m.artifacts.get_mut("kernel").unwrap().filename = "rootfs".into();
        assert!(matches!(
            m.validate(),
            Err(ManifestError::DuplicateFilename(_))
        ));
    }

    #[test]
    fn version_must_be_semver() {
        let mut v = sample().to_value().unwrap();
        v["version"] = "2026.11".into();
        assert!(serde_json::from_value::<BootManifest>(v).is_err());
    }
}
