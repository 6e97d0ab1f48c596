//! Rollback state: the highest accepted version per (channel, arch) and the time floor
//! (issue 5 "State", issue 15 §6, DESIGN §4 cache).
//!
//! Kept in the state directory (the cache, `/cache/phase` in internet mode; never written in
//! private mode). A manifest older than the recorded version for its (channel, arch) is a
//! rollback; a clock behind the time floor (newest `created_at` ever accepted) counts as the
//! floor, so a machine with a dead RTC cannot be fed an expired manifest.
//!
//! Two copies, `state.json` and `state.json.bak`, with the same content: [`RollbackState::save`]
//! replaces the first (temporary file, fsync, rename) and only then the second, so a crash, a
//! torn rename on vfat or ENOSPC leaves at least one complete copy, old or new.
//! [`RollbackState::load`] merges every copy that reads (floors only rise, so the merge takes the
//! higher of each); what happens when none does is [`super::recovery`]'s business.
//!
//! File shape (JSON):
//! `{"format":1,"time_floor":"<RFC 3339>","releases":{"stable/x86_64":{"version":"1.2.3","created_at":"<RFC 3339>"}}}`

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use phase_protocol::{Arch, Expectation, VerifiedManifest, VerifyError};
use serde::{Deserialize, Serialize};

/// File name of the state inside the state directory.
pub const STATE_FILE: &str = "state.json";
/// File name of the second copy, written after [`STATE_FILE`].
pub const BACKUP_FILE: &str = "state.json.bak";
/// Largest state file read, in bytes (a real one is well under 4 KiB per release).
pub const MAX_STATE_BYTES: u64 = 1 << 20;

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
    /// The file is not state JSON (truncated, corrupt, another format).
    #[error("state file {path} is not valid")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's complaint.
        #[source]
        source: serde_json::Error,
    },
    /// The file is empty or holds only zero bytes (typical of a write or rename torn by a power
    /// cut on vfat).
    #[error("state file {path} is empty (or only zero bytes)")]
    Empty {
        /// The file.
        path: PathBuf,
    },
    /// The file is larger than [`MAX_STATE_BYTES`].
    #[error("state file {path} is over {MAX_STATE_BYTES} bytes")]
    TooLarge {
        /// The file.
        path: PathBuf,
    },
    /// The file says a format other than 1: its floors cannot be read with certainty.
    #[error("state file {path} has format {format}, this init reads format 1")]
    Format {
        /// The file.
        path: PathBuf,
        /// The `format` found.
        format: u32,
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
    /// Reads the copies in `dir` (`state.json`, `state.json.bak`) and merges those that read:
    /// for each (channel, arch) the higher version, and the later time floor. No copy at all is
    /// the empty state. One bad copy beside a good one is ignored here; [`Self::load_copies`]
    /// tells which.
    ///
    /// # Errors
    /// When copies exist but none reads: the error of `state.json` ([`StateError::Io`],
    /// [`StateError::Parse`], [`StateError::Empty`], [`StateError::TooLarge`],
    /// [`StateError::Format`]).
    pub fn load(dir: &Path) -> Result<Self, StateError> {
        let copies = Self::load_copies(dir);
        match (copies.state, copies.problems.into_iter().next()) {
            (Some(state), _) => Ok(state),
            (None, Some(problem)) => Err(problem),
            (None, None) => Ok(Self::empty()),
        }
    }

    /// Reads every copy in `dir` and says what was found (see [`Copies`]).
    pub fn load_copies(dir: &Path) -> Copies {
        let mut copies = Copies::default();
        for name in [STATE_FILE, BACKUP_FILE] {
            let path = dir.join(name);
            match read_copy(&path) {
                Ok(None) => {}
                Ok(Some(s)) => {
                    copies.used.push(path);
                    match copies.state.as_mut() {
                        Some(merged) => merged.merge(&s),
                        None => copies.state = Some(s),
                    }
                }
                Err(e) => copies.problems.push(e),
            }
        }
        copies
    }

    /// The empty state (format 1, nothing accepted).
    pub fn empty() -> Self {
        Self {
            format: 1,
            ..Self::default()
        }
    }

    /// Raises this state's floors to `other`'s where `other`'s are higher; never lowers one.
    pub fn merge(&mut self, other: &RollbackState) {
        for (k, r) in &other.releases {
            match self.releases.get_mut(k) {
                Some(mine) if mine.version >= r.version => {}
                Some(mine) => *mine = r.clone(),
                None => {
                    self.releases.insert(k.clone(), r.clone());
                }
            }
        }
        if let Some(t) = other.time_floor {
            if self.time_floor.is_none_or(|mine| mine < t) {
                self.time_floor = Some(t);
            }
        }
        self.format = 1;
    }

    /// The floors in one line for logs: `stable/x86_64>=1.2.3, time floor <RFC 3339>`, or
    /// `no floors`.
    pub fn summary(&self) -> String {
        let mut parts: Vec<String> = self
            .releases
            .iter()
            .map(|(k, r)| format!("{k}>={}", r.version))
            .collect();
        if let Some(t) = self.time_floor {
            parts.push(format!(
                "time floor {}",
                t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            ));
        }
        if parts.is_empty() {
            return "no floors".to_owned();
        }
        parts.join(", ")
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

    /// Writes `<dir>/state.json`, then `<dir>/state.json.bak`, each atomically: a temporary file
    /// (`<name>.tmp`), fsync, rename, fsync of `dir` (best effort: vfat has none). The second
    /// copy is only touched once the first is complete, so one complete copy always survives.
    /// A failed step removes its temporary file and leaves the existing copies as they were.
    ///
    /// # Errors
    /// [`StateError::Io`] naming the step and file that failed (ENOSPC shows as `write` or
    /// `fsync` of `state.json.tmp`).
    pub fn save(&self, dir: &Path) -> Result<(), StateError> {
        self.save_with(dir, &|p: &Path| std::fs::File::create(p))
    }

    /// [`Self::save`] with the temporary files opened by `create` (the seam for write errors).
    fn save_with(
        &self,
        dir: &Path,
        create: &dyn Fn(&Path) -> std::io::Result<std::fs::File>,
    ) -> Result<(), StateError> {
        let mut text = serde_json::to_vec_pretty(self).map_err(|source| StateError::Parse {
            path: dir.join(STATE_FILE),
            source,
        })?;
        text.push(b'\n');
        for name in [STATE_FILE, BACKUP_FILE] {
            write_copy(dir, name, &text, create)?;
        }
        Ok(())
    }
}

/// What [`RollbackState::load_copies`] found.
#[derive(Debug, Default)]
pub struct Copies {
    /// The merge of every copy that read; `None` when none did (or none exists).
    pub state: Option<RollbackState>,
    /// The copies merged into `state`, in order.
    pub used: Vec<PathBuf>,
    /// Copies that exist but could not be used, with why.
    pub problems: Vec<StateError>,
}

/// Reads one copy: `Ok(None)` when it does not exist.
fn read_copy(path: &Path) -> Result<Option<RollbackState>, StateError> {
    let io = |op, source| StateError::Io {
        op,
        path: path.to_owned(),
        source,
    };
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io("open", e)),
    };
    let mut bytes = Vec::new();
    file.take(MAX_STATE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| io("read", e))?;
    let path = path.to_owned();
    if bytes.len() as u64 > MAX_STATE_BYTES {
        return Err(StateError::TooLarge { path });
    }
    if bytes.iter().all(|b| b.is_ascii_whitespace() || *b == 0) {
        return Err(StateError::Empty { path });
    }
    let state: RollbackState =
        serde_json::from_slice(&bytes).map_err(|source| StateError::Parse {
            path: path.clone(),
            source,
        })?;
    if state.format != 1 {
        return Err(StateError::Format {
            path,
            format: state.format,
        });
    }
    Ok(Some(state))
}

/// Writes `text` to `<dir>/<name>` through `<dir>/<name>.tmp` (see [`RollbackState::save`]).
fn write_copy(
    dir: &Path,
    name: &str,
    text: &[u8],
    create: &dyn Fn(&Path) -> std::io::Result<std::fs::File>,
) -> Result<(), StateError> {
    let path = dir.join(name);
    let tmp = dir.join(format!("{name}.tmp"));
    let fail = |op, p: &Path, source| {
        // The old copy stays; only the temporary file goes (it may hold the space ENOSPC lacks).
        let _ = std::fs::remove_file(&tmp);
        StateError::Io {
            op,
            path: p.to_owned(),
            source,
        }
    };
    let mut f = create(&tmp).map_err(|e| fail("create", &tmp, e))?;
    f.write_all(text).map_err(|e| fail("write", &tmp, e))?;
    f.sync_all().map_err(|e| fail("fsync", &tmp, e))?;
    drop(f);
    std::fs::rename(&tmp, &path).map_err(|e| fail("rename", &path, e))?;
    // Best effort: some file systems (vfat) do not support fsync on a directory.
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(version: &str, floor: &str) -> RollbackState {
        let mut s = RollbackState::empty();
        s.releases.insert(
            "stable/x86_64".into(),
            AcceptedRelease {
                version: version.parse().unwrap(),
                created_at: floor.parse().unwrap(),
            },
        );
        s.time_floor = Some(floor.parse().unwrap());
        s
    }

    fn saved(version: &str) -> (tempfile::TempDir, RollbackState) {
        let dir = tempfile::tempdir().unwrap();
        let s = state(version, "2026-01-01T00:00:00Z");
        s.save(dir.path()).unwrap();
        (dir, s)
    }

    fn min(s: &RollbackState) -> String {
        s.min_version("stable", "x86_64").unwrap().to_string()
    }

    #[test]
    fn save_writes_both_copies_and_a_clean_pair_loads_from_both() {
        let (dir, s) = saved("2.0.0");
        let copies = RollbackState::load_copies(dir.path());
        assert_eq!(copies.state.as_ref(), Some(&s));
        assert_eq!(
            copies.used,
            [dir.path().join(STATE_FILE), dir.path().join(BACKUP_FILE)]
        );
        assert!(copies.problems.is_empty());
        assert!(!dir.path().join("state.json.tmp").exists());
        assert!(!dir.path().join("state.json.bak.tmp").exists());
    }

    #[test]
    fn corrupt_truncated_or_empty_state_json_falls_back_to_the_backup() {
        for (what, bytes) in [
            (
                "corrupt",
                &b"{\"format\":1,\"releases\":{\"stable/x86_64\":7}}"[..],
            ),
            ("truncated", &b"{\n  \"format\": 1,\n  \"time_flo"[..]),
            ("empty", &b""[..]),
            ("zero-filled", &[0u8; 512][..]),
        ] {
            let (dir, s) = saved("2.0.0");
            std::fs::write(dir.path().join(STATE_FILE), bytes).unwrap();
            let copies = RollbackState::load_copies(dir.path());
            assert_eq!(copies.state.as_ref(), Some(&s), "{what}");
            assert_eq!(copies.used, [dir.path().join(BACKUP_FILE)], "{what}");
            assert_eq!(copies.problems.len(), 1, "{what}");
            assert_eq!(RollbackState::load(dir.path()).unwrap(), s, "{what}");
        }
    }

    #[test]
    fn missing_state_json_with_a_backup_uses_the_backup() {
        let (dir, s) = saved("2.0.0");
        std::fs::remove_file(dir.path().join(STATE_FILE)).unwrap();
        let copies = RollbackState::load_copies(dir.path());
        assert_eq!(copies.state, Some(s));
        assert!(copies.problems.is_empty());
    }

    #[test]
    fn both_copies_bad_is_an_error_and_no_copy_is_the_empty_state() {
        let (dir, _) = saved("2.0.0");
        std::fs::write(dir.path().join(STATE_FILE), b"").unwrap();
        std::fs::write(dir.path().join(BACKUP_FILE), b"{").unwrap();
        let copies = RollbackState::load_copies(dir.path());
        assert!(copies.state.is_none());
        assert_eq!(copies.problems.len(), 2);
        assert!(matches!(
            RollbackState::load(dir.path()),
            Err(StateError::Empty { .. })
        ));
        let none = tempfile::tempdir().unwrap();
        assert_eq!(
            RollbackState::load(none.path()).unwrap(),
            RollbackState::empty()
        );
    }

    #[test]
    fn another_format_is_not_read_as_format_1() {
        let (dir, _) = saved("2.0.0");
        let text = std::fs::read_to_string(dir.path().join(STATE_FILE)).unwrap();
        std::fs::write(
            dir.path().join(BACKUP_FILE),
            text.replace("\"format\": 1", "\"format\": 2"),
        )
        .unwrap();
        let copies = RollbackState::load_copies(dir.path());
        assert!(matches!(
            copies.problems.as_slice(),
            [StateError::Format { format: 2, .. }]
        ));
        assert_eq!(copies.used, [dir.path().join(STATE_FILE)]);
    }

    #[test]
    fn two_copies_merge_to_the_higher_floors() {
        let dir = tempfile::tempdir().unwrap();
        state("2.0.0", "2026-01-01T00:00:00Z")
            .save(dir.path())
            .unwrap();
        // A backup that is ahead (the primary was torn back to an older copy) wins per field.
        let newer = state("2.1.0", "2026-02-01T00:00:00Z");
        std::fs::write(
            dir.path().join(BACKUP_FILE),
            serde_json::to_vec(&newer).unwrap(),
        )
        .unwrap();
        let s = RollbackState::load(dir.path()).unwrap();
        assert_eq!(min(&s), "2.1.0");
        assert_eq!(s.time_floor, newer.time_floor);
        let mut lower = newer.clone();
        lower.merge(&state("1.0.0", "2025-01-01T00:00:00Z"));
        assert_eq!(lower, newer, "a merge never lowers a floor");
    }

    fn dev_full(_: &Path) -> std::io::Result<std::fs::File> {
        std::fs::OpenOptions::new().write(true).open("/dev/full")
    }

    #[test]
    fn enospc_while_saving_keeps_both_old_copies_untouched() {
        let (dir, old) = saved("1.0.0");
        let before = (
            std::fs::read(dir.path().join(STATE_FILE)).unwrap(),
            std::fs::read(dir.path().join(BACKUP_FILE)).unwrap(),
        );
        let e = state("2.0.0", "2026-03-01T00:00:00Z")
            .save_with(dir.path(), &dev_full)
            .unwrap_err();
        match &e {
            StateError::Io { op, path, source } => {
                assert_eq!(*op, "write");
                assert_eq!(path, &dir.path().join("state.json.tmp"));
                assert_eq!(source.raw_os_error(), Some(libc::ENOSPC));
            }
            other => panic!("expected an I/O error, got {other}"),
        }
        let after = (
            std::fs::read(dir.path().join(STATE_FILE)).unwrap(),
            std::fs::read(dir.path().join(BACKUP_FILE)).unwrap(),
        );
        assert_eq!(before, after);
        assert_eq!(RollbackState::load(dir.path()).unwrap(), old);
        // Positive control: the same save through real files lands in both copies.
        let new = state("2.0.0", "2026-03-01T00:00:00Z");
        new.save(dir.path()).unwrap();
        assert_eq!(RollbackState::load(dir.path()).unwrap(), new);
    }

    #[test]
    fn a_save_cut_between_the_copies_leaves_one_new_and_one_old_complete_copy() {
        let (dir, _) = saved("1.0.0");
        let backup_fails = |p: &Path| {
            if p.ends_with("state.json.bak.tmp") {
                dev_full(p)
            } else {
                std::fs::File::create(p)
            }
        };
        let new = state("2.0.0", "2026-03-01T00:00:00Z");
        assert!(new.save_with(dir.path(), &backup_fails).is_err());
        let copies = RollbackState::load_copies(dir.path());
        assert!(copies.problems.is_empty(), "{:?}", copies.problems);
        assert_eq!(copies.used.len(), 2);
        assert_eq!(copies.state, Some(new), "the merge is the newer copy");
    }
}
