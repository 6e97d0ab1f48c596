//! The DHT record that points at a manifest (DESIGN §6; seeds 003 "DHT Advertisement Pattern"
//! and 004).
//!
//! Key: `/phase/{channel}/{arch}/manifest` (canonical arch name). Value: the JSON of
//! [`ManifestRecord`]. A record only points: the manifest it leads to is verified like any
//! other, so a poisoned record costs time, not trust.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use crate::arch::Arch;
use crate::json::parse_strict;

/// Largest record value accepted, in bytes.
pub const MAX_RECORD_BYTES: usize = 4096;
/// Default record lifetime (1 hour); providers republish at half of it.
pub const DEFAULT_TTL_SECS: u64 = 3600;
/// Longest lifetime a record may claim (1 day).
pub const MAX_TTL_SECS: u64 = 86_400;

/// The DHT key for a (channel, arch): `/phase/{channel}/{arch}/manifest`.
pub fn dht_key(channel: &str, arch: Arch) -> String {
    format!("/phase/{channel}/{}/manifest", arch.as_str())
}

/// The value stored under [`dht_key`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestRecord {
    /// Channel served.
    pub channel: String,
    /// Architecture served (canonical name).
    pub arch: String,
    /// Absolute http(s) URL of the manifest.
    pub manifest_url: String,
    /// The provider's libp2p peer id (base58).
    pub peer_id: String,
    /// A human-readable provider name, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_name: Option<String>,
    /// Version of the manifest advertised (informational; the manifest decides).
    pub version: String,
    /// When this record was made.
    pub created_at: DateTime<Utc>,
    /// Lifetime in seconds from `created_at`.
    pub ttl_secs: u64,
}

/// A record that a client must skip.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// Larger than [`MAX_RECORD_BYTES`].
    #[error("record is {0} bytes, over the {MAX_RECORD_BYTES}-byte cap")]
    TooLarge(usize),
    /// Not strict JSON.
    #[error("record is not acceptable JSON")]
    Json(#[from] crate::json::JsonError),
    /// JSON, but not a record.
    #[error("record has the wrong shape")]
    Schema(#[source] serde_json::Error),
    /// For another channel.
    #[error("record is for channel {found:?}, wanted {wanted:?}")]
    WrongChannel {
        /// Wanted channel.
        wanted: String,
        /// The record's channel.
        found: String,
    },
    /// For another arch.
    #[error("record is for arch {found:?}, wanted {wanted}")]
    WrongArch {
        /// Wanted arch.
        wanted: Arch,
        /// The record's arch.
        found: String,
    },
    /// Past `created_at + ttl_secs`, or the TTL is longer than [`MAX_TTL_SECS`].
    #[error("record expired or has an unacceptable ttl ({created_at} + {ttl_secs}s, now {now:?})")]
    Expired {
        /// The record's created_at.
        created_at: DateTime<Utc>,
        /// The record's ttl.
        ttl_secs: u64,
        /// The clock used (`None`: not trusted, only the TTL cap was checked).
        now: Option<DateTime<Utc>>,
    },
    /// created_at is more than the skew in the future.
    #[error("record created_at {0} is in the future")]
    FromTheFuture(DateTime<Utc>),
    /// The manifest URL is not absolute http(s).
    #[error("record manifest_url {0:?} is not an absolute http(s) URL")]
    BadUrl(String),
}

impl ManifestRecord {
    /// The JSON bytes stored in the DHT.
    pub fn to_bytes(&self) -> Vec<u8> {
        // Serialising a struct of strings and integers cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Parses a record value (size cap, strict JSON, shape); no semantic checks.
    ///
    /// # Errors
    /// [`RecordError::TooLarge`], [`RecordError::Json`], [`RecordError::Schema`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, RecordError> {
        if bytes.len() > MAX_RECORD_BYTES {
            return Err(RecordError::TooLarge(bytes.len()));
        }
        let v = parse_strict(bytes, 4)?;
        serde_json::from_value(v).map_err(RecordError::Schema)
    }

    /// When the record stops being valid: `created_at` + `ttl_secs` (capped at
    /// [`MAX_TTL_SECS`]), saturating at chrono's latest date. `created_at` comes from the
    /// network and chrono accepts years up to ±262142, so unchecked addition overflowed and
    /// panicked (issue 15).
    pub fn expires_at(&self) -> DateTime<Utc> {
        let ttl = i64::try_from(self.ttl_secs.min(MAX_TTL_SECS)).unwrap_or(0);
        crate::verify::add_saturating(self.created_at, Duration::seconds(ttl))
    }

    /// Checks that the record is for `channel`/`arch`, within its TTL at `now`, and points at
    /// an http(s) URL. `now` is `None` when the caller's clock is known to be wrong (below its
    /// floors, no SNTP; issue 15 §3): then neither the TTL nor a `created_at` in the future
    /// is judged, since a record only points and the manifest it leads to is verified anyway.
    ///
    /// # Errors
    /// The first failing [`RecordError`].
    pub fn validate_for(
        &self,
        channel: &str,
        arch: Arch,
        now: Option<DateTime<Utc>>,
    ) -> Result<(), RecordError> {
        if self.channel != channel {
            return Err(RecordError::WrongChannel {
                wanted: channel.into(),
                found: self.channel.clone(),
            });
        }
        if !arch.matches(&self.arch) {
            return Err(RecordError::WrongArch {
                wanted: arch,
                found: self.arch.clone(),
            });
        }
        if self.ttl_secs > MAX_TTL_SECS {
            return Err(RecordError::Expired {
                created_at: self.created_at,
                ttl_secs: self.ttl_secs,
                now,
            });
        }
        if let Some(now) = now {
            if self.expires_at() <= now {
                return Err(RecordError::Expired {
                    created_at: self.created_at,
                    ttl_secs: self.ttl_secs,
                    now: Some(now),
                });
            }
            if self.created_at
                > crate::verify::add_saturating(now, crate::verify::DEFAULT_CLOCK_SKEW)
            {
                return Err(RecordError::FromTheFuture(self.created_at));
            }
        }
        let url = &self.manifest_url;
        let rest = url
            .strip_prefix("http://")
            .or_else(|| url.strip_prefix("https://"));
        if !matches!(rest, Some(r) if !r.is_empty())
            || url.bytes().any(|b| b.is_ascii_control() || b == b' ')
        {
            return Err(RecordError::BadUrl(url.clone()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        "2026-11-21T12:00:00Z".parse().unwrap()
    }

    fn rec() -> ManifestRecord {
        ManifestRecord {
            channel: "stable".into(),
            arch: "x86_64".into(),
            manifest_url: "http://192.0.2.1:8080/stable/x86_64/manifest.json".into(),
            peer_id: "12D3KooWexample".into(),
            provider_name: Some("lab-1".into()),
            version: "1.2.3".into(),
            created_at: now(),
            ttl_secs: 60,
        }
    }

    #[test]
    fn key_uses_the_canonical_arch() {
        assert_eq!(
            dht_key("stable", "amd64".parse().unwrap()),
            "/phase/stable/x86_64/manifest"
        );
    }

    #[test]
    fn record_round_trips_and_validates() {
        let r = ManifestRecord::from_bytes(&rec().to_bytes()).unwrap();
        assert_eq!(r, rec());
        r.validate_for("stable", Arch::X86_64, Some(now())).unwrap();
    }

    #[test]
    fn poisoned_records_are_refused() {
        assert!(ManifestRecord::from_bytes(b"garbage").is_err());
        assert!(ManifestRecord::from_bytes(b"{}").is_err());
        assert!(matches!(
            ManifestRecord::from_bytes(&vec![b' '; 5000]),
            Err(RecordError::TooLarge(_))
        ));
        let r = rec();
        assert!(matches!(
            r.validate_for("testing", Arch::X86_64, Some(now())),
            Err(RecordError::WrongChannel { .. })
        ));
        assert!(matches!(
            r.validate_for("stable", Arch::Aarch64, Some(now())),
            Err(RecordError::WrongArch { .. })
        ));
        let later = now() + Duration::seconds(61);
        assert!(matches!(
            r.validate_for("stable", Arch::X86_64, Some(later)),
            Err(RecordError::Expired { .. })
        ));
        let mut long = rec();
        long.ttl_secs = MAX_TTL_SECS + 1;
        assert!(matches!(
            long.validate_for("stable", Arch::X86_64, Some(now())),
            Err(RecordError::Expired { .. })
        ));
        let mut bad = rec();
        bad.manifest_url = "file:///etc/passwd".into();
        assert!(matches!(
            bad.validate_for("stable", Arch::X86_64, Some(now())),
            Err(RecordError::BadUrl(_))
        ));
    }

    /// The issue-15 record: chrono parses the ± year form, and `created_at + ttl` overflowed
    /// and panicked inside PID 1 for every machine on the channel.
    #[test]
    fn record_with_year_262142_is_refused_not_panicking() {
        let mut v: serde_json::Value = serde_json::from_slice(&rec().to_bytes()).unwrap();
        v["created_at"] = "+262142-12-31T23:59:59Z".into();
        let r = ManifestRecord::from_bytes(&serde_json::to_vec(&v).unwrap()).unwrap();
        assert_eq!(r.expires_at(), DateTime::<Utc>::MAX_UTC);
        assert!(matches!(
            r.validate_for("stable", Arch::X86_64, Some(now())),
            Err(RecordError::FromTheFuture(_))
        ));
        // The far past and a clock at chrono's limit do not panic either.
        v["created_at"] = "-262143-01-01T00:00:00Z".into();
        let r = ManifestRecord::from_bytes(&serde_json::to_vec(&v).unwrap()).unwrap();
        assert!(matches!(
            r.validate_for("stable", Arch::X86_64, Some(now())),
            Err(RecordError::Expired { .. })
        ));
        assert!(rec()
            .validate_for("stable", Arch::X86_64, Some(DateTime::<Utc>::MAX_UTC))
            .is_err());
    }

    #[test]
    fn an_untrusted_clock_judges_neither_ttl_nor_future_but_still_the_rest() {
        let mut future = rec();
        future.created_at = now() + Duration::days(400);
        assert!(future
            .validate_for("stable", Arch::X86_64, Some(now()))
            .is_err());
        future.validate_for("stable", Arch::X86_64, None).unwrap();
        let mut long = rec();
        long.ttl_secs = MAX_TTL_SECS + 1;
        assert!(long.validate_for("stable", Arch::X86_64, None).is_err());
        let mut bad = rec();
        bad.manifest_url = "ftp://x".into();
        assert!(bad.validate_for("stable", Arch::X86_64, None).is_err());
    }
}
