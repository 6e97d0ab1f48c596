//! Recovering the rollback state when `state.json` cannot be used (issue 15 §6): the cache
//! never bricks a boot, and a floor is never lowered silently.
//!
//! Boot flow position: right before a manifest is verified, by [`super::fetch_release`] (internet
//! mode, `phase fetch --state`) and by the boot stage reading the cache (local mode).
//! [`recover`] never fails; it takes, in order:
//! 1. the copies of [`RollbackState::load_copies`] that read, merged; each bad copy (corrupt,
//!    truncated, empty, unreadable) is reported and ignored;
//! 2. when no copy reads: floors rebuilt from the cached manifest `<dir>/manifest.json`, if its
//!    signatures verify against the trust root. Its `version` and `created_at` are signed
//!    evidence of a release this machine accepted (the cache holds only verified releases), so
//!    its expiry does not matter here; it is not booted from this check;
//! 3. otherwise no floors, said loudly. A directory with no copy and no cached manifest at all
//!    is a first boot and stays quiet.
//!
//! Recovery writes nothing (a local-mode cache is read-only): the next successful save after a
//! verified release writes both copies again.
//!
//! Console lines ([`Recovered::lines`]): `state copy unusable, ignored: <error chain>`,
//! `state recovered from <dir>/state.json.bak: <floors>`, `state LOST (...): floors REBUILT from
//! the signed cached manifest <path>: <floors>`, `state LOST (...) and nothing to rebuild it
//! from (<why>): no rollback or time floor until a release is accepted`.

use std::io::Read;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use phase_protocol::{
    verify, ClockTrust, Expectation, TrustRoot, VerifiedManifest, VerifyError, MAX_MANIFEST_BYTES,
};

use super::state::{RollbackState, StateError, BACKUP_FILE, STATE_FILE};
use crate::log;

/// File name of the cached verified manifest in the state directory (the cache's `phase/`).
pub const CACHED_MANIFEST: &str = "manifest.json";

/// Why the cached manifest cannot serve as evidence for the floors.
#[derive(Debug, thiserror::Error)]
pub enum EvidenceError {
    /// It could not be read.
    #[error("cannot read {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// It is larger than a manifest may be.
    #[error("{path} is over {MAX_MANIFEST_BYTES} bytes")]
    TooLarge {
        /// The file.
        path: PathBuf,
    },
    /// Its signatures (or schema) do not verify against the trust root.
    #[error("{path} refused")]
    Refused {
        /// The file.
        path: PathBuf,
        /// The verifier's reason.
        #[source]
        source: VerifyError,
    },
}

/// Where the recovered state came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// No copy and no cached manifest: nothing was ever accepted here (first boot).
    Fresh,
    /// `state.json` (merged with the backup when that read too).
    Saved,
    /// `state.json` was missing or unusable; `state.json.bak` was used.
    Backup,
    /// No copy read; the floors were rebuilt from this cached manifest.
    Rebuilt {
        /// `<dir>/manifest.json`.
        manifest: PathBuf,
    },
    /// No copy read and there was nothing to rebuild from: no floors.
    Lost,
}

/// What [`recover`] found and the state it settled on.
#[derive(Debug)]
pub struct Recovered {
    /// The state directory.
    pub dir: PathBuf,
    /// The state in effect: enforce it, and record the next accepted release into it.
    pub state: RollbackState,
    /// Where it came from.
    pub origin: Origin,
    /// Copies that exist but could not be used, with why.
    pub problems: Vec<StateError>,
    /// Why the cached manifest could not be used, when it was needed and present.
    pub evidence_error: Option<EvidenceError>,
}

/// Verifies `<dir>/manifest.json` as evidence: size cap, signatures by the trust root and
/// threshold, schema. Its validity window is not judged against any clock (it is evaluated at
/// its own signed `created_at`, [`ClockTrust::BelowFloor`]): an expired release is still proof
/// of what was accepted. `Ok(None)` when the file does not exist.
///
/// # Errors
/// [`EvidenceError`] when the file exists but cannot serve.
pub fn cached_evidence(
    dir: &Path,
    trust: &TrustRoot,
) -> Result<Option<VerifiedManifest>, EvidenceError> {
    let path = dir.join(CACHED_MANIFEST);
    let read = |source| EvidenceError::Read {
        path: path.clone(),
        source,
    };
    let file = match std::fs::File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(read(e)),
    };
    let mut bytes = Vec::new();
    file.take(MAX_MANIFEST_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(read)?;
    if bytes.len() > MAX_MANIFEST_BYTES {
        return Err(EvidenceError::TooLarge { path });
    }
    // No clock is consulted: under BelowFloor the verifier raises `now` to the signed
    // `created_at`, so only signatures, schema and created_at < expires_at are judged.
    let expect = Expectation {
        clock: ClockTrust::BelowFloor,
        ..Expectation::default()
    };
    verify(&bytes, trust, DateTime::<Utc>::MIN_UTC, &expect)
        .map(Some)
        .map_err(|source| EvidenceError::Refused { path, source })
}

/// Settles on the rollback state of `dir` (module docs); never fails.
pub fn recover(dir: &Path, trust: &TrustRoot) -> Recovered {
    let copies = RollbackState::load_copies(dir);
    let mut r = Recovered {
        dir: dir.to_owned(),
        state: RollbackState::empty(),
        origin: Origin::Fresh,
        problems: copies.problems,
        evidence_error: None,
    };
    if let Some(state) = copies.state {
        r.state = state;
        r.origin = if copies.used.first().is_some_and(|p| p.ends_with(STATE_FILE)) {
            Origin::Saved
        } else {
            Origin::Backup
        };
        return r;
    }
    match cached_evidence(dir, trust) {
        Ok(Some(m)) => {
            r.state.record(&m);
            r.origin = Origin::Rebuilt {
                manifest: dir.join(CACHED_MANIFEST),
            };
        }
        Ok(None) if r.problems.is_empty() => r.origin = Origin::Fresh,
        Ok(None) => r.origin = Origin::Lost,
        Err(e) => {
            r.evidence_error = Some(e);
            r.origin = Origin::Lost;
        }
    }
    r
}

impl Recovered {
    /// The console lines that report this recovery (without the `phase: ` prefix); none for a
    /// clean `state.json` or a first boot.
    pub fn lines(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .problems
            .iter()
            .map(|e| format!("state copy unusable, ignored: {}", log::error_chain(e)))
            .collect();
        let lost = format!(
            "state LOST (no usable {STATE_FILE} or {BACKUP_FILE} in {})",
            self.dir.display()
        );
        match &self.origin {
            Origin::Fresh | Origin::Saved => {}
            Origin::Backup => out.push(format!(
                "state recovered from {}: {}",
                self.dir.join(BACKUP_FILE).display(),
                self.state.summary()
            )),
            Origin::Rebuilt { manifest } => out.push(format!(
                "{lost}: floors REBUILT from the signed cached manifest {}: {}",
                manifest.display(),
                self.state.summary()
            )),
            Origin::Lost => {
                let why = match &self.evidence_error {
                    Some(e) => log::error_chain(e),
                    None => format!("no {CACHED_MANIFEST}"),
                };
                out.push(format!(
                    "{lost} and nothing to rebuild it from ({why}): no rollback or time floor \
                     until a release is accepted"
                ));
            }
        }
        out
    }

    /// Prints [`Self::lines`] and returns the state.
    pub fn logged(self) -> RollbackState {
        for l in self.lines() {
            log::line(&l);
        }
        self.state
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;
    use phase_protocol::signing;

    struct Fixture {
        dir: tempfile::TempDir,
        trust: TrustRoot,
        key: ed25519_dalek::SigningKey,
    }

    fn fixture() -> Fixture {
        let key = signing::generate_key();
        let trust = TrustRoot::new([key.verifying_key()], 1).unwrap();
        Fixture {
            dir: tempfile::tempdir().unwrap(),
            trust,
            key,
        }
    }

    impl Fixture {
        fn path(&self) -> &Path {
            self.dir.path()
        }

        /// Writes `manifest.json` of `version`, created `age_days` ago, valid for a day, signed
        /// by `key`.
        fn cache_manifest(&self, version: &str, age_days: i64, key: &ed25519_dalek::SigningKey) {
            let created = Utc::now() - Duration::days(age_days);
            let mut doc = serde_json::json!({
                "manifest_version": 1, "version": version, "channel": "stable", "arch": "x86_64",
                "created_at": created.to_rfc3339(),
                "expires_at": (created + Duration::days(1)).to_rfc3339(),
                "cmdline": "", "artifacts": {
                    "kernel": {"filename": "kernel", "size_bytes": 1,
                        "hash": format!("sha256:{}", "0".repeat(64))},
                    "initramfs": {"filename": "initramfs", "size_bytes": 1,
                        "hash": format!("sha256:{}", "0".repeat(64))}
                },
            });
            signing::sign_document(&mut doc, key, created).unwrap();
            std::fs::write(
                self.path().join(CACHED_MANIFEST),
                serde_json::to_vec(&doc).unwrap(),
            )
            .unwrap();
        }

        fn save(&self, version: &str) {
            let mut s = RollbackState::empty();
            s.releases.insert(
                "stable/x86_64".into(),
                super::super::state::AcceptedRelease {
                    version: version.parse().unwrap(),
                    created_at: Utc::now(),
                },
            );
            s.save(self.path()).unwrap();
        }

        fn spoil_both(&self) {
            std::fs::write(self.path().join(STATE_FILE), b"").unwrap();
            std::fs::write(self.path().join(BACKUP_FILE), b"{\"format\":1,\"rel").unwrap();
        }
    }

    fn min(r: &Recovered) -> Option<String> {
        r.state
            .min_version("stable", "x86_64")
            .map(ToString::to_string)
    }

    #[test]
    fn clean_state_is_used_quietly() {
        let f = fixture();
        f.save("2.0.0");
        f.cache_manifest("1.0.0", 0, &f.key);
        let r = recover(f.path(), &f.trust);
        assert_eq!(r.origin, Origin::Saved);
        assert_eq!(min(&r).as_deref(), Some("2.0.0"));
        assert!(r.lines().is_empty(), "{:?}", r.lines());
    }

    #[test]
    fn corrupt_state_json_is_reported_and_the_backup_used() {
        let f = fixture();
        f.save("2.0.0");
        std::fs::write(f.path().join(STATE_FILE), b"{not json").unwrap();
        let r = recover(f.path(), &f.trust);
        assert_eq!(r.origin, Origin::Backup);
        assert_eq!(min(&r).as_deref(), Some("2.0.0"));
        let lines = r.lines().join("\n");
        assert!(
            lines.contains("state copy unusable, ignored: state file ")
                && lines.contains("state.json is not valid")
                && lines.contains("state recovered from ")
                && lines.contains("stable/x86_64>=2.0.0"),
            "{lines}"
        );
    }

    #[test]
    fn both_copies_bad_rebuilds_the_floors_from_the_signed_cached_manifest() {
        let f = fixture();
        f.save("2.0.0");
        f.spoil_both();
        // Expired a week ago: still signed evidence of what was accepted.
        f.cache_manifest("1.5.0", 8, &f.key);
        let r = recover(f.path(), &f.trust);
        assert_eq!(
            r.origin,
            Origin::Rebuilt {
                manifest: f.path().join(CACHED_MANIFEST)
            }
        );
        assert_eq!(min(&r).as_deref(), Some("1.5.0"));
        assert!(r.state.time_floor.is_some());
        assert_eq!(r.problems.len(), 2);
        let lines = r.lines();
        let last = lines.last().unwrap();
        assert!(
            last.starts_with("state LOST (no usable state.json or state.json.bak in ")
                && last.contains("floors REBUILT from the signed cached manifest ")
                && last.contains("stable/x86_64>=1.5.0, time floor "),
            "{last}"
        );
    }

    #[test]
    fn missing_copies_beside_a_cached_manifest_are_rebuilt_not_a_first_boot() {
        let f = fixture();
        f.cache_manifest("1.5.0", 0, &f.key);
        let r = recover(f.path(), &f.trust);
        assert!(matches!(r.origin, Origin::Rebuilt { .. }));
        assert_eq!(min(&r).as_deref(), Some("1.5.0"));
        assert!(r.lines().iter().any(|l| l.contains("REBUILT")));
    }

    #[test]
    fn cached_manifest_of_an_untrusted_key_is_not_evidence() {
        let f = fixture();
        f.spoil_both();
        f.cache_manifest("9.0.0", 0, &signing::generate_key());
        let r = recover(f.path(), &f.trust);
        assert_eq!(r.origin, Origin::Lost);
        assert_eq!(min(&r), None);
        assert!(matches!(
            r.evidence_error,
            Some(EvidenceError::Refused { .. })
        ));
        let last = r.lines().pop().unwrap();
        assert!(
            last.starts_with("state LOST (")
                && last.contains("and nothing to rebuild it from (")
                && last.contains("manifest.json refused")
                && last.ends_with("no rollback or time floor until a release is accepted"),
            "{last}"
        );
    }

    #[test]
    fn both_copies_bad_and_no_cached_manifest_is_lost_loudly() {
        let f = fixture();
        f.spoil_both();
        let r = recover(f.path(), &f.trust);
        assert_eq!(r.origin, Origin::Lost);
        let last = r.lines().pop().unwrap();
        assert!(
            last.contains("nothing to rebuild it from (no manifest.json)"),
            "{last}"
        );
    }

    #[test]
    fn empty_directory_is_a_quiet_first_boot() {
        let f = fixture();
        let r = recover(f.path(), &f.trust);
        assert_eq!(r.origin, Origin::Fresh);
        assert_eq!(r.state, RollbackState::empty());
        assert!(r.lines().is_empty());
    }

    #[test]
    fn oversized_cached_manifest_is_not_read_whole() {
        let f = fixture();
        f.spoil_both();
        std::fs::write(
            f.path().join(CACHED_MANIFEST),
            vec![b' '; MAX_MANIFEST_BYTES + 10],
        )
        .unwrap();
        let r = recover(f.path(), &f.trust);
        assert!(matches!(
            r.evidence_error,
            Some(EvidenceError::TooLarge { .. })
        ));
    }
}
