//! The DHT record that points at a manifest (DESIGN §6; seeds 003 "DHT Advertisement Pattern"
//! and 004).
//!
//! Key: `/phase/{channel}/{arch}/manifest` (canonical arch name). Value: the JSON of
//! [`ManifestRecord`]. A record only points: the manifest it leads to is verified like any
//! other, so a poisoned record costs time, not trust.
//!
//! Boot-stage peers (issue 19 §3) announce themselves under `/phase/peers/<hex>`, the SHA-256
//! of the signed manifest bytes they verified ([`peers_dht_key`]), with a [`PeerRecord`]: where
//! their verified chunks are served. It only points too: every chunk a peer sends is checked
//! against the signed chunk list.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use crate::arch::Arch;
use crate::digest::Sha256Digest;
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

/// The prefix of every boot-stage peer key (`/phase/peers/`).
pub const PEERS_KEY_PREFIX: &str = "/phase/peers/";

/// The DHT key under which boot-stage peers of one release announce themselves:
/// `/phase/peers/<64 hex digits>`, the SHA-256 of the exact signed manifest bytes.
pub fn peers_dht_key(manifest_sha256: &Sha256Digest) -> String {
    format!("{PEERS_KEY_PREFIX}{}", manifest_sha256.hex())
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
    /// A peer record for another release (another signed manifest).
    #[error("peer record is for manifest {found}, wanted {wanted}")]
    WrongRelease {
        /// The digest wanted.
        wanted: Sha256Digest,
        /// The record's digest.
        found: Sha256Digest,
    },
    /// A peer record's URL is not `http://host:port` ([`crate::mdns::peer_base_url`]).
    #[error("peer record url {0:?} is not http://host:port")]
    BadPeerUrl(String),
}

/// Parses a record value of type `T`: at most [`MAX_RECORD_BYTES`], strict JSON, then shape.
fn parse_value<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, RecordError> {
    if bytes.len() > MAX_RECORD_BYTES {
        return Err(RecordError::TooLarge(bytes.len()));
    }
    let v = parse_strict(bytes, 4)?;
    serde_json::from_value(v).map_err(RecordError::Schema)
}

/// `created_at` + `ttl_secs` (capped at [`MAX_TTL_SECS`]), saturating at chrono's latest
/// date: `created_at` comes from the network and chrono accepts years up to ±262142, so
/// unchecked addition overflowed and panicked (issue 15).
fn expiry(created_at: DateTime<Utc>, ttl_secs: u64) -> DateTime<Utc> {
    let ttl = i64::try_from(ttl_secs.min(MAX_TTL_SECS)).unwrap_or(0);
    crate::verify::add_saturating(created_at, Duration::seconds(ttl))
}

/// The lifetime checks of both record kinds: a TTL over [`MAX_TTL_SECS`] is refused always;
/// with a trusted clock `now`, so is an expired record or one created beyond the clock skew in
/// the future.
fn check_lifetime(
    created_at: DateTime<Utc>,
    ttl_secs: u64,
    now: Option<DateTime<Utc>>,
) -> Result<(), RecordError> {
    let expired = RecordError::Expired {
        created_at,
        ttl_secs,
        now,
    };
    if ttl_secs > MAX_TTL_SECS {
        return Err(expired);
    }
    if let Some(now) = now {
        if expiry(created_at, ttl_secs) <= now {
            return Err(expired);
        }
        if created_at > crate::verify::add_saturating(now, crate::verify::DEFAULT_CLOCK_SKEW) {
            return Err(RecordError::FromTheFuture(created_at));
        }
    }
    Ok(())
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
        parse_value(bytes)
    }

    /// When the record stops being valid: `created_at` + `ttl_secs` (capped at
    /// [`MAX_TTL_SECS`]), saturating at chrono's latest date. `created_at` comes from the
    /// network and chrono accepts years up to ±262142, so unchecked addition overflowed and
    /// panicked (issue 15).
    pub fn expires_at(&self) -> DateTime<Utc> {
        expiry(self.created_at, self.ttl_secs)
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
        check_lifetime(self.created_at, self.ttl_secs, now)?;
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

/// The value a boot-stage peer stores under [`peers_dht_key`] and under its per-peer key
/// `{shared}/{peer id}` (issue 19 §3): the release it fetches and where it serves the chunks it
/// has verified. Untrusted: a peer's chunks are checked against the signed chunk list like any
/// source's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerRecord {
    /// SHA-256 of the exact signed manifest bytes the peer verified (`sha256:<hex>`).
    pub manifest_sha256: Sha256Digest,
    /// The peer's chunk server, `http://<host>:<port>` ([`crate::mdns::peer_base_url`]).
    pub url: String,
    /// The peer's libp2p peer id (base58): the key that published the record.
    pub peer_id: String,
    /// When this record was made.
    pub created_at: DateTime<Utc>,
    /// Lifetime in seconds from `created_at` (at most [`MAX_TTL_SECS`]).
    pub ttl_secs: u64,
}

impl PeerRecord {
    /// The JSON bytes stored in the DHT.
    pub fn to_bytes(&self) -> Vec<u8> {
        // Serialising a struct of strings and integers cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Parses a record value (size cap [`MAX_RECORD_BYTES`], strict JSON, shape, a well-formed
    /// `sha256:<hex>`); no semantic checks.
    ///
    /// # Errors
    /// [`RecordError::TooLarge`], [`RecordError::Json`], [`RecordError::Schema`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, RecordError> {
        parse_value(bytes)
    }

    /// When the record stops being valid (as [`ManifestRecord::expires_at`]).
    pub fn expires_at(&self) -> DateTime<Utc> {
        expiry(self.created_at, self.ttl_secs)
    }

    /// Checks that the record is for the release whose signed manifest has digest
    /// `manifest_sha256`, within its TTL at `now` (`None`: a clock known to be wrong, as in
    /// [`ManifestRecord::validate_for`]), and that its URL is `http://host:port`; returns that
    /// URL in its one accepted form.
    ///
    /// # Errors
    /// The first failing [`RecordError`]: [`RecordError::WrongRelease`],
    /// [`RecordError::Expired`], [`RecordError::FromTheFuture`], [`RecordError::BadPeerUrl`].
    pub fn validate_for(
        &self,
        manifest_sha256: &Sha256Digest,
        now: Option<DateTime<Utc>>,
    ) -> Result<String, RecordError> {
        if self.manifest_sha256 != *manifest_sha256 {
            return Err(RecordError::WrongRelease {
                wanted: *manifest_sha256,
                found: self.manifest_sha256,
            });
        }
        check_lifetime(self.created_at, self.ttl_secs, now)?;
        crate::mdns::peer_base_url(&self.url)
            .ok_or_else(|| RecordError::BadPeerUrl(self.url.clone()))
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

    fn peer() -> PeerRecord {
        PeerRecord {
            manifest_sha256: Sha256Digest::of(b"signed manifest"),
            url: "http://192.0.2.11:7400".into(),
            peer_id: "12D3KooWexample".into(),
            created_at: now(),
            ttl_secs: 120,
        }
    }

    #[test]
    fn peer_key_is_the_hex_digest_under_phase_peers() {
        let d = Sha256Digest::of(b"signed manifest");
        assert_eq!(peers_dht_key(&d), format!("/phase/peers/{}", d.hex()));
        assert!(peers_dht_key(&d).starts_with(PEERS_KEY_PREFIX));
    }

    #[test]
    fn peer_record_round_trips_and_validates_to_its_url() {
        let r = PeerRecord::from_bytes(&peer().to_bytes()).unwrap();
        assert_eq!(r, peer());
        let digest = Sha256Digest::of(b"signed manifest");
        assert_eq!(
            r.validate_for(&digest, Some(now())).unwrap(),
            "http://192.0.2.11:7400"
        );
        let mut slash = peer();
        slash.url = "http://192.0.2.11:7400/".into();
        assert_eq!(
            slash.validate_for(&digest, None).unwrap(),
            "http://192.0.2.11:7400"
        );
    }

    #[test]
    fn poisoned_peer_records_are_refused() {
        let digest = Sha256Digest::of(b"signed manifest");
        assert!(PeerRecord::from_bytes(b"{}").is_err());
        assert!(matches!(
            PeerRecord::from_bytes(&vec![b' '; MAX_RECORD_BYTES + 1]),
            Err(RecordError::TooLarge(_))
        ));
        // A digest that is not sha256:<64 lowercase hex> does not parse.
        let mut v: serde_json::Value = serde_json::from_slice(&peer().to_bytes()).unwrap();
        v["manifest_sha256"] = "sha256:ABCD".into();
        assert!(matches!(
            PeerRecord::from_bytes(&serde_json::to_vec(&v).unwrap()),
            Err(RecordError::Schema(_))
        ));
        assert!(matches!(
            peer().validate_for(&Sha256Digest::of(b"another release"), Some(now())),
            Err(RecordError::WrongRelease { .. })
        ));
        assert!(matches!(
            peer().validate_for(&digest, Some(now() + Duration::seconds(121))),
            Err(RecordError::Expired { .. })
        ));
        assert!(matches!(
            peer().validate_for(&digest, Some(now() - Duration::days(1))),
            Err(RecordError::FromTheFuture(_))
        ));
        let mut long = peer();
        long.ttl_secs = MAX_TTL_SECS + 1;
        assert!(matches!(
            long.validate_for(&digest, None),
            Err(RecordError::Expired { .. })
        ));
        for url in [
            "https://192.0.2.11:7400",
            "http://192.0.2.11",
            "http://192.0.2.11:0",
            "http://192.0.2.11:7400/stable/x86_64",
            "http://user@192.0.2.11:7400",
            "file:///etc/passwd",
        ] {
            let mut bad = peer();
            bad.url = url.into();
            assert!(
                matches!(
                    bad.validate_for(&digest, None),
                    Err(RecordError::BadPeerUrl(_))
                ),
                "{url}"
            );
        }
    }
}
