//! The one way to trust a manifest: [`verify`] (DESIGN §5, §7; seed 003 "Verification Pipeline
//! Pattern").
//!
//! Order of checks, each failure a distinct [`VerifyError`]: size cap, strict JSON parse (nesting
//! limit, duplicate keys), signatures against the trust root and threshold, schema and
//! [`BootManifest::validate`], validity window, channel and arch (with aliases), rollback.
//! Nothing about a manifest is believed before its signatures are counted.

use std::collections::BTreeSet;
use std::fmt;

use chrono::{DateTime, Duration, Utc};
use ed25519_dalek::{Signature, VerifyingKey};
use serde_json::Value;

use crate::arch::Arch;
use crate::canonical::{signing_digest, CanonicalError, SIGNATURES_FIELD};
use crate::json::{parse_strict, JsonError, DEFAULT_MAX_DEPTH};
use crate::manifest::{BootManifest, ManifestError};
use crate::trust::TrustRoot;

/// Largest manifest accepted, in bytes (1 MiB).
pub const MAX_MANIFEST_BYTES: usize = 1 << 20;

/// Default allowance for a provider clock ahead of ours when checking `created_at` (5 minutes).
pub const DEFAULT_CLOCK_SKEW: Duration = Duration::minutes(5);

/// `t + d`, or chrono's latest/earliest date where that overflows. Dates from the wire reach
/// the year ±262142, where unchecked `+` panics (issue 15).
pub fn add_saturating(t: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    t.checked_add_signed(d).unwrap_or(if d < Duration::zero() {
        DateTime::<Utc>::MIN_UTC
    } else {
        DateTime::<Utc>::MAX_UTC
    })
}

/// How far the verifier may believe the `now` it is given (issue 15 §3, DESIGN §7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ClockTrust {
    /// `now` is plausible (an RTC at or above the floors, or SNTP): a `created_at` beyond
    /// `now` + skew is refused as [`VerifyError::FromTheFuture`].
    #[default]
    Trusted,
    /// `now` is known to be too low (the RTC read below the init's build time or the cached
    /// floor, and no SNTP answered). A manifest signed by the trust root proves that the time
    /// is at least its `created_at`, so the clock used is moved forward to it and expiry is
    /// judged against that ([`VerifiedManifest::checked_at`]). A replayed manifest that is
    /// old but not expired relative to its own `created_at` and the floors is accepted: see
    /// docs/security.md "No clock".
    BelowFloor,
}

/// What the verifier expects of a manifest besides a valid signature.
#[derive(Debug, Clone)]
pub struct Expectation {
    /// Required channel; `None` accepts any.
    pub channel: Option<String>,
    /// Required architecture (any alias matches); `None` accepts any.
    pub arch: Option<Arch>,
    /// Rollback floor: the manifest's `version` must be at least this.
    pub min_version: Option<semver::Version>,
    /// Newest `created_at` accepted before (the cache's time floor); a clock behind it counts
    /// as the floor.
    pub time_floor: Option<DateTime<Utc>>,
    /// How far `created_at` may lie in the future.
    pub clock_skew: Duration,
    /// Whether `now` is believed; see [`ClockTrust`].
    pub clock: ClockTrust,
}

impl Default for Expectation {
    fn default() -> Self {
        Expectation {
            channel: None,
            arch: None,
            min_version: None,
            time_floor: None,
            clock_skew: DEFAULT_CLOCK_SKEW,
            clock: ClockTrust::Trusted,
        }
    }
}

/// What happened to one entry of `signatures`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignatureFinding {
    /// A valid signature by a trusted key that counted toward the threshold.
    Valid {
        /// The key's hex id.
        key_id: String,
    },
    /// A valid signature by a key that already counted.
    DuplicateKey {
        /// The key's hex id.
        key_id: String,
    },
    /// Signed by a key not in the trust root (not checked further).
    UnknownKey {
        /// The key's hex id as given.
        key_id: String,
    },
    /// A trusted key, but the signature does not match the document.
    BadSignature {
        /// The key's hex id.
        key_id: String,
    },
    /// The entry is not of the documented shape or names another algorithm.
    Malformed {
        /// Index in the `signatures` array.
        index: usize,
        /// What is wrong with it.
        why: &'static str,
    },
}

impl fmt::Display for SignatureFinding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let short = |k: &str| k.chars().take(16).collect::<String>();
        match self {
            Self::Valid { key_id } => write!(f, "valid ({})", short(key_id)),
            Self::DuplicateKey { key_id } => {
                write!(f, "duplicate key ({}) counted once", short(key_id))
            }
            Self::UnknownKey { key_id } => write!(f, "unknown key ({})", short(key_id)),
            Self::BadSignature { key_id } => write!(f, "bad signature ({})", short(key_id)),
            Self::Malformed { index, why } => write!(f, "entry {index} malformed: {why}"),
        }
    }
}

/// Why a manifest was refused. Every refusal is fail-closed.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// More than [`MAX_MANIFEST_BYTES`].
    #[error("manifest is {size} bytes, over the {limit}-byte cap")]
    TooLarge {
        /// Bytes received (at least).
        size: usize,
        /// The cap.
        limit: usize,
    },
    /// Not strict JSON (syntax, nesting, duplicate key, unsafe integer).
    #[error("manifest is not acceptable JSON")]
    Json(#[from] JsonError),
    /// The signing bytes could not be made.
    #[error("manifest cannot be canonicalised")]
    Canonical(#[from] CanonicalError),
    /// Fewer distinct trusted keys signed than the threshold.
    #[error("{valid} of {needed} required signatures valid ({})", findings_text(.findings))]
    Threshold {
        /// Distinct trusted keys with a valid signature.
        valid: usize,
        /// The trust root's threshold.
        needed: usize,
        /// What was found for each entry of `signatures`.
        findings: Vec<SignatureFinding>,
    },
    /// Signed, but not a manifest v1 (wrong types, missing members).
    #[error("signed document is not a boot manifest v1")]
    Schema(#[source] serde_json::Error),
    /// Signed, but breaks a rule of DESIGN §5.
    #[error("signed manifest is invalid")]
    Invalid(#[from] ManifestError),
    /// `expires_at` is not after the (floored) clock.
    #[error("manifest expired at {expires_at} (now {now})")]
    Expired {
        /// Its `expires_at`.
        expires_at: DateTime<Utc>,
        /// The clock used (never behind the time floor).
        now: DateTime<Utc>,
    },
    /// `created_at` lies further ahead than the allowed skew.
    #[error("manifest created_at {created_at} is in the future (now {now}, skew {skew_secs}s)")]
    FromTheFuture {
        /// Its `created_at`.
        created_at: DateTime<Utc>,
        /// The clock used.
        now: DateTime<Utc>,
        /// Allowed skew in seconds.
        skew_secs: i64,
    },
    /// Another channel than expected.
    #[error("manifest is for channel {found:?}, expected {expected:?}")]
    WrongChannel {
        /// Expected channel.
        expected: String,
        /// The manifest's channel.
        found: String,
    },
    /// Another architecture than expected.
    #[error("manifest is for arch {found:?}, expected {expected}")]
    WrongArch {
        /// Expected architecture.
        expected: Arch,
        /// The manifest's arch as written.
        found: String,
    },
    /// Older than the rollback floor.
    #[error("manifest version {version} is older than the accepted minimum {minimum} (rollback)")]
    Rollback {
        /// The manifest's version.
        version: semver::Version,
        /// The floor.
        minimum: semver::Version,
    },
}

fn findings_text(findings: &[SignatureFinding]) -> String {
    if findings.is_empty() {
        return "no signatures".to_owned();
    }
    findings
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// A manifest that passed [`verify`]. It can be made no other way, so holding one means the
/// checks ran. It keeps the exact bytes received, for relaying byte for byte.
#[derive(Debug, Clone)]
pub struct VerifiedManifest {
    manifest: BootManifest,
    raw: Vec<u8>,
    signers: Vec<String>,
    checked_at: DateTime<Utc>,
}

impl VerifiedManifest {
    /// The parsed manifest.
    pub fn manifest(&self) -> &BootManifest {
        &self.manifest
    }

    /// The exact bytes that were verified.
    pub fn raw(&self) -> &[u8] {
        &self.raw
    }

    /// The time expiry was judged against: `now` raised to the time floor and, under
    /// [`ClockTrust::BelowFloor`], to the signed `created_at`. A caller whose clock is below
    /// it may set its clock forward to it (signed evidence; never backward).
    pub fn checked_at(&self) -> DateTime<Utc> {
        self.checked_at
    }

    /// Hex ids of the trusted keys whose signatures counted.
    pub fn signers(&self) -> &[String] {
        &self.signers
    }
}

/// Verifies manifest `bytes` against `trust` at time `now` and `expect`.
///
/// # Errors
/// The first failing check, as a [`VerifyError`].
pub fn verify(
    bytes: &[u8],
    trust: &TrustRoot,
    now: DateTime<Utc>,
    expect: &Expectation,
) -> Result<VerifiedManifest, VerifyError> {
    if bytes.len() > MAX_MANIFEST_BYTES {
        return Err(VerifyError::TooLarge {
            size: bytes.len(),
            limit: MAX_MANIFEST_BYTES,
        });
    }
    let document = parse_strict(bytes, DEFAULT_MAX_DEPTH)?;
    let signers = check_signatures(&document, trust)?;

    let manifest: BootManifest = serde_json::from_value(document).map_err(VerifyError::Schema)?;
    manifest.validate()?;

    let mut now = match expect.time_floor {
        Some(floor) if floor > now => floor,
        _ => now,
    };
    if expect.clock == ClockTrust::BelowFloor && manifest.created_at > now {
        now = manifest.created_at;
    }
    if manifest.expires_at <= now {
        return Err(VerifyError::Expired {
            expires_at: manifest.expires_at,
            now,
        });
    }
    if manifest.created_at > add_saturating(now, expect.clock_skew) {
        return Err(VerifyError::FromTheFuture {
            created_at: manifest.created_at,
            now,
            skew_secs: expect.clock_skew.num_seconds(),
        });
    }
    if let Some(channel) = &expect.channel {
        if &manifest.channel != channel {
            return Err(VerifyError::WrongChannel {
                expected: channel.clone(),
                found: manifest.channel.clone(),
            });
        }
    }
    if let Some(arch) = expect.arch {
        if !arch.matches(&manifest.arch) {
            return Err(VerifyError::WrongArch {
                expected: arch,
                found: manifest.arch.clone(),
            });
        }
    }
    if let Some(minimum) = &expect.min_version {
        if manifest.version < *minimum {
            return Err(VerifyError::Rollback {
                version: manifest.version.clone(),
                minimum: minimum.clone(),
            });
        }
    }
    Ok(VerifiedManifest {
        manifest,
        raw: bytes.to_vec(),
        signers,
        checked_at: now,
    })
}

/// Counts distinct trusted keys with a valid signature over `document`; returns their ids.
fn check_signatures(document: &Value, trust: &TrustRoot) -> Result<Vec<String>, VerifyError> {
    let digest = signing_digest(document)?;
    let entries = match document.get(SIGNATURES_FIELD) {
        Some(Value::Array(list)) => list.as_slice(),
        Some(_) => &[],
        None => &[],
    };
    let mut counted = BTreeSet::new();
    let mut findings = Vec::with_capacity(entries.len());
    for (index, entry) in entries.iter().enumerate() {
        let finding = check_one(index, entry, &digest, trust, &mut counted);
        findings.push(finding);
    }
    if counted.len() >= trust.threshold() {
        return Ok(counted.into_iter().map(hex::encode).collect());
    }
    Err(VerifyError::Threshold {
        valid: counted.len(),
        needed: trust.threshold(),
        findings,
    })
}

/// Key ids and signatures are written in lowercase hex only, so one signature has one spelling.
fn is_lower_hex(s: &str) -> bool {
    s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn check_one(
    index: usize,
    entry: &Value,
    digest: &[u8; 32],
    trust: &TrustRoot,
    counted: &mut BTreeSet<[u8; 32]>,
) -> SignatureFinding {
    let malformed = |why| SignatureFinding::Malformed { index, why };
    let field = |name| entry.get(name).and_then(Value::as_str);
    if field("algorithm") != Some("ed25519") {
        return malformed("algorithm is not \"ed25519\"");
    }
    let (Some(key_id), Some(sig_hex)) = (field("key_id"), field("signature")) else {
        return malformed("key_id or signature missing");
    };
    let mut key = [0u8; 32];
    if !is_lower_hex(key_id) || hex::decode_to_slice(key_id, &mut key).is_err() {
        return malformed("key_id is not 64 lowercase hex digits");
    }
    if !trust.trusts(&key) {
        return SignatureFinding::UnknownKey {
            key_id: key_id.to_owned(),
        };
    }
    let mut sig = [0u8; 64];
    if !is_lower_hex(sig_hex) || hex::decode_to_slice(sig_hex, &mut sig).is_err() {
        return malformed("signature is not 128 lowercase hex digits");
    }
    let key_id = key_id.to_owned();
    let Ok(vk) = VerifyingKey::from_bytes(&key) else {
        return SignatureFinding::BadSignature { key_id };
    };
    // verify_strict refuses small-order keys and non-canonical signatures.
    if vk
        .verify_strict(digest, &Signature::from_bytes(&sig))
        .is_err()
    {
        return SignatureFinding::BadSignature { key_id };
    }
    if counted.insert(key) {
        SignatureFinding::Valid { key_id }
    } else {
        SignatureFinding::DuplicateKey { key_id }
    }
}

#[cfg(test)]
mod tests;
