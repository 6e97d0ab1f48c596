//! Rollback state: the highest accepted version per (channel, arch) and the time floor
//! (issue 5 "State", DESIGN §4 cache).
//!
//! Kept as `state.json` in the state directory (the cache, `/cache/phase` in internet mode;
//! never written in private mode). A manifest older than the recorded version for its (channel,
//! arch) is a rollback; a clock behind the time floor (newest `created_at` ever accepted)
//! counts as the floor, so a machine with a dead RTC cannot be fed an expired manifest.
//!
//! File shape (JSON):
//! `{"format":1,"time_floor":"<RFC 3339>","releases":{"stable/x86_64":{"version":"1.2.3","created_at":"<RFC 3339>"}}}`

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use phase_protocol::{Arch, Expectation, VerifiedManifest, VerifyError};
use serde::{Deserialize, Serialize};

/// File name of the state inside the state directory.
pub const STATE_FILE: &str = "state.json";

/// Why the state could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// Reading, writing, syncing or renaming a file failed.
    #[error("{op} {path}")]
    Io {
        /// What was being done (`read`, `write`, `fsync`, `rename`).
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not state JSON.
    #[error("state file {path} is not valid")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's complaint.
        #[source]
        source: serde_json::Error,
    },
}

/// The accepted release for one (channel, arch).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AcceptedRelease {
    /// Highest version accepted.
    pub version: semver::Version,
    /// Its `created_at`.
    pub created_at: DateTime<Utc>,
}

/// The rollback state of module docs. `Default` is the empty state (nothing accepted yet).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RollbackState {
    /// Always 1.
    #[serde(default = "format_one")]
    pub format: u32,
    /// Newest `created_at` accepted for any (channel, arch).
    #[serde(default)]
    pub time_floor: Option<DateTime<Utc>>,
    /// Accepted releases keyed `"<channel>/<canonical arch>"`.
    #[serde(default)]
    pub releases: BTreeMap<String, AcceptedRelease>,
}

fn format_one() -> u32 {
    1
}

/// The state key of (channel, arch): the arch in canonical spelling, so aliases share a floor.
fn key(channel: &str, arch: &str) -> String {
    let arch = arch.parse::<Arch>().map(Arch::as_str).unwrap_or(arch);
    format!("{channel}/{arch}")
}

impl RollbackState {
    /// Reads `<dir>/state.json`; a missing file is the empty state.
    ///
    /// # Errors
    /// [`StateError::Io`] for other read errors, [`StateError::Parse`].
    pub fn load(dir: &Path) -> Result<Self, StateError> {
        let path = dir.join(STATE_FILE);
        match std::fs::read(&path) {
            Ok(bytes) => {
                serde_json::from_slice(&bytes).map_err(|source| StateError::Parse { path, source })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self {
                format: 1,
                ..Self::default()
            }),
            Err(source) => Err(StateError::Io {
                op: "read",
                path,
                source,
            }),
        }
    }

    /// The recorded minimum version for (channel, arch), if any.
    pub fn min_version(&self, channel: &str, arch: &str) -> Option<&semver::Version> {
        self.releases.get(&key(channel, arch)).map(|r| &r.version)
    }

    /// `base` tightened by this state: the time floor raised to ours and, for (channel, arch),
    /// the rollback floor raised to the recorded version.
    pub fn expectation_for(&self, channel: &str, arch: &str, base: &Expectation) -> Expectation {
        let mut e = self.tighten_time(base);
        if let Some(v) = self.min_version(channel, arch) {
            if e.min_version.as_ref().is_none_or(|m| m < v) {
                e.min_version = Some(v.clone());
            }
        }
        e
    }

    /// `base` with the time floor raised to ours (no per-release floor: used before the
    /// manifest's channel and arch are known; [`RollbackState::check`] runs after).
    pub fn tighten_time(&self, base: &Expectation) -> Expectation {
        let mut e = base.clone();
        if let Some(floor) = self.time_floor {
            if e.time_floor.is_none_or(|t| t < floor) {
                e.time_floor = Some(floor);
            }
        }
        e
    }

    /// Refuses `m` when it is older than the version recorded for its (channel, arch).
    ///
    /// # Errors
    /// [`VerifyError::Rollback`].
    pub fn check(&self, m: &VerifiedManifest) -> Result<(), VerifyError> {
        let man = m.manifest();
        match self.min_version(&man.channel, &man.arch) {
            Some(min) if &man.version < min => Err(VerifyError::Rollback {
                version: man.version.clone(),
                minimum: min.clone(),
            }),
            _ => Ok(()),
        }
    }

    /// Records `m` as accepted: raises its (channel, arch) version and the time floor.
    pub fn record(&mut self, m: &VerifiedManifest) {
        let man = m.manifest();
        let entry = self
            .releases
            .entry(key(&man.channel, &man.arch))
            .or_insert(AcceptedRelease {
                version: man.version.clone(),
                created_at: man.created_at,
            });
        if man.version >= entry.version {
            entry.version = man.version.clone();
            entry.created_at = man.created_at;
        }
        if self.time_floor.is_none_or(|t| t < man.created_at) {
            self.time_floor = Some(man.created_at);
        }
        self.format = 1;
    }

    /// Writes `<dir>/state.json` atomically: a temporary file, fsync, rename, fsync of `dir`.
    ///
    /// # Errors
    /// [`StateError::Io`] naming the step that failed.
    pub fn save(&self, dir: &Path) -> Result<(), StateError> {
        let path = dir.join(STATE_FILE);
        let tmp = dir.join(format!("{STATE_FILE}.tmp"));
        let io = |op, path: &Path| {
            let path = path.to_owned();
            move |source| StateError::Io { op, path, source }
        };
        let mut text = serde_json::to_vec_pretty(self).map_err(|source| StateError::Parse {
            path: path.clone(),
            source,
        })?;
        text.push(b'\n');
        let mut f = std::fs::File::create(&tmp).map_err(io("create", &tmp))?;
        f.write_all(&text).map_err(io("write", &tmp))?;
        f.sync_all().map_err(io("fsync", &tmp))?;
        drop(f);
        std::fs::rename(&tmp, &path).map_err(io("rename", &path))?;
        // Best effort: some file systems (vfat) do not support fsync on a directory.
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }
}
