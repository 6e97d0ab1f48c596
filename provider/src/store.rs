//! The artifact store of `plasmd serve`: which releases and files exist and what may be served
//! (issue 3 "Must have" 1 and 3, DESIGN §8).
//!
//! Two layouts are read:
//! - a tree `{artifacts}/{channel}/{arch}/{kernel,initramfs,rootfs,manifest.json,...}` for the
//!   `--channel`s served (arch directories may use any alias: `amd64` or `x86_64`);
//! - a flat release dir: `{artifacts}/manifest.json` plus the artifact files beside it, whose
//!   channel and arch come from that manifest. A booted target serves `/var/lib/phase/boot`
//!   this way.
//!
//! Startup only lists directories and stats files, so the server listens at once; hashing
//! (for ETags of files without a manifest, and for manifests generated with `--key`) runs in
//! the background ([`Store::complete`]) and `/health` reports it. A `manifest.json` found is
//! served byte for byte and parsed only to learn versions and hashes. Files are resolved again
//! on every request ([`Store::open`]): canonicalised and checked to lie under the artifacts
//! root, so a symlink that points out is refused even if it was swapped in after the scan.
//!
//! [`Store::reload`] (on SIGHUP) lists the directory again and swaps in the new snapshot only
//! once it is hashed and signed, so a request sees the old release or the new one, never a
//! half-read tree. One writer at a time changes the snapshot (hashing, reload, re-signing).

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use bytes::Bytes;
use ed25519_dalek::SigningKey;
use phase_protocol::manifest::valid_filename;
use phase_protocol::{Arch, BootManifest, Sha256Digest, MAX_MANIFEST_BYTES};

use crate::generate::{build_manifest, sign_to_text, unsigned_json, ReleaseInfo};
use crate::hashcache::{FileStamp, HashCache};

/// Why a file cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The file vanished or cannot be opened.
    #[error("cannot open {path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file resolves (through a symlink) outside the artifacts root, or is not a regular file.
    #[error("{path} resolves outside the artifacts directory or is not a regular file")]
    Outside {
        /// The path as listed.
        path: PathBuf,
    },
}

/// The manifest of one release, as far as the provider knows it.
#[derive(Debug, Clone)]
pub enum ManifestState {
    /// A `manifest.json` found on disk, served byte for byte.
    Found {
        /// Its exact bytes.
        bytes: Bytes,
        /// Its `version`, or `unknown` when it does not parse as manifest v1.
        version: String,
    },
    /// Generated and signed by this provider with `--key`.
    Generated {
        /// The signed JSON text.
        bytes: Bytes,
        /// Its `version`.
        version: String,
        /// Its `created_at`; [`Store::resign_due`] signs it again after half its lifetime.
        signed_at: chrono::DateTime<chrono::Utc>,
    },
    /// Being generated (hashing in progress).
    Pending,
    /// No manifest can be served; the reason is the 404 body.
    Absent {
        /// Why, in words for an operator.
        reason: String,
    },
}

impl ManifestState {
    /// The bytes to serve, if any.
    pub fn bytes(&self) -> Option<&Bytes> {
        match self {
            ManifestState::Found { bytes, .. } | ManifestState::Generated { bytes, .. } => {
                Some(bytes)
            }
            _ => None,
        }
    }

    /// The release version, if a manifest is served.
    pub fn version(&self) -> Option<&str> {
        match self {
            ManifestState::Found { version, .. } | ManifestState::Generated { version, .. } => {
                Some(version)
            }
            _ => None,
        }
    }
}

/// One servable file of a release.
#[derive(Debug, Clone)]
pub struct FileEntry {
    /// Path under the release directory (not yet canonicalised).
    pub path: PathBuf,
    /// Size and mtime when listed or hashed.
    pub stamp: FileStamp,
    /// Its SHA-256 (from the manifest or the hash cache), when known for `stamp`.
    pub sha256: Option<Sha256Digest>,
}

/// One (channel, arch) release.
#[derive(Debug, Clone)]
pub struct Release {
    /// Channel.
    pub channel: String,
    /// Architecture.
    pub arch: Arch,
    /// Its directory.
    pub dir: PathBuf,
    /// Its manifest.
    pub manifest: ManifestState,
    /// Servable files by filename.
    pub files: BTreeMap<String, FileEntry>,
    /// Artifact name -> filename, from the manifest.
    pub names: BTreeMap<String, String>,
}

impl Release {
    /// The file called `name`: a filename, or an artifact name of the manifest.
    pub fn file(&self, name: &str) -> Option<(&str, &FileEntry)> {
        if let Some((k, f)) = self.files.get_key_value(name) {
            return Some((k.as_str(), f));
        }
        let filename = self.names.get(name)?;
        self.files
            .get_key_value(filename)
            .map(|(k, f)| (k.as_str(), f))
    }
}

/// What the store holds at one moment; replaced whole when hashing completes.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Releases by (channel, arch).
    pub releases: BTreeMap<(String, Arch), Release>,
    /// Problems an operator should see on `/health` (unreadable dir, bad manifest...).
    pub problems: Vec<String>,
    /// True when the artifacts dir is a flat release dir.
    pub flat: bool,
    /// True when the artifacts root could be read.
    pub readable: bool,
}

impl Snapshot {
    /// The release for `channel` and any spelling of `arch`.
    pub fn release(&self, channel: &str, arch: &str) -> Option<&Release> {
        let arch: Arch = arch.parse().ok()?;
        self.releases.get(&(channel.to_owned(), arch))
    }
}

/// Settings the store needs from `serve`.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Artifacts directory.
    pub artifacts: PathBuf,
    /// Channels served from a tree.
    pub channels: Vec<String>,
    /// Default architecture.
    pub arch: Arch,
    /// Key to sign generated manifests.
    pub key: Option<SigningKey>,
    /// Hash cache file.
    pub hash_cache: PathBuf,
    /// Version, lifetime and cmdline of generated manifests.
    pub release_version: semver::Version,
    /// Lifetime of generated manifests.
    pub expires_in: std::time::Duration,
    /// Target cmdline of generated manifests.
    pub cmdline: String,
}

/// The artifact store shared by all requests.
#[derive(Debug)]
pub struct Store {
    opts: StoreOptions,
    root: Option<PathBuf>,
    snapshot: RwLock<Arc<Snapshot>>,
    hashes: HashCache,
    hashing: AtomicBool,
    /// Held by whoever builds the next snapshot: [`Store::complete`], [`Store::reload`] and
    /// [`Store::resign_due`] never interleave.
    writer: Mutex<()>,
}

impl Store {
    /// Lists the artifacts directory (stat only, no hashing). Never fails: problems are
    /// recorded in the snapshot and reported by `/health`.
    pub fn scan(opts: StoreOptions) -> Store {
        let hashes = HashCache::load(&opts.hash_cache);
        let root = std::fs::canonicalize(&opts.artifacts).ok();
        let snapshot = scan(root.as_deref(), &opts, &hashes);
        let pending = snapshot.releases.values().any(|r| {
            matches!(r.manifest, ManifestState::Pending)
                || r.files.values().any(|f| f.sha256.is_none())
        });
        Store {
            opts,
            root,
            snapshot: RwLock::new(Arc::new(snapshot)),
            hashes,
            hashing: AtomicBool::new(pending),
            writer: Mutex::new(()),
        }
    }

    fn lock_writer(&self) -> MutexGuard<'_, ()> {
        self.writer
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn replace(&self, next: Snapshot) {
        let mut guard = match self.snapshot.write() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        *guard = Arc::new(next);
    }

    /// The current snapshot.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        match self.snapshot.read() {
            Ok(s) => Arc::clone(&s),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// True while background hashing has work left.
    pub fn hashing(&self) -> bool {
        self.hashing.load(Ordering::Relaxed)
    }

    /// The canonical artifacts root, if it could be read.
    pub fn root(&self) -> Option<&Path> {
        self.root.as_deref()
    }

    /// The default architecture.
    pub fn default_arch(&self) -> Arch {
        self.opts.arch
    }

    /// The release behind `/manifest.json`: the flat release, else the first `--channel` with
    /// the default arch, else the only release there is.
    pub fn default_release(&self, snap: &Snapshot) -> Option<(String, Arch)> {
        if snap.flat || snap.releases.len() == 1 {
            return snap.releases.keys().next().cloned();
        }
        let key = (
            self.opts.channels.first().cloned().unwrap_or_default(),
            self.opts.arch,
        );
        snap.releases.contains_key(&key).then_some(key)
    }

    /// Opens `entry` for reading after checking that it resolves to a regular file under the
    /// artifacts root. Blocking.
    ///
    /// # Errors
    /// [`OpenError::Outside`] for a symlink out or a non-file, [`OpenError::Io`].
    pub fn open(&self, entry: &FileEntry) -> Result<(File, std::fs::Metadata), OpenError> {
        let io = |source| OpenError::Io {
            path: entry.path.clone(),
            source,
        };
        let root = self.root.as_deref().ok_or_else(|| OpenError::Outside {
            path: entry.path.clone(),
        })?;
        let real = std::fs::canonicalize(&entry.path).map_err(io)?;
        if !real.starts_with(root) {
            return Err(OpenError::Outside {
                path: entry.path.clone(),
            });
        }
        let file = File::open(&real).map_err(io)?;
        let meta = file.metadata().map_err(io)?;
        if !meta.is_file() {
            return Err(OpenError::Outside {
                path: entry.path.clone(),
            });
        }
        Ok((file, meta))
    }

    /// Hashes files without an ETag and generates + signs manifests for releases that need one,
    /// then swaps in the completed snapshot and saves the hash cache. Blocking; `serve` runs it
    /// on a blocking thread after it starts listening.
    pub fn complete(&self) {
        let _writer = self.lock_writer();
        self.fill_and_replace(Snapshot::clone(&self.snapshot()));
    }

    /// Lists the artifacts directory again (`plasmd serve` does it on SIGHUP): new, replaced and
    /// removed releases and files, a new `manifest.json`. Files whose size and mtime did not
    /// change keep their hash (hash cache); others are hashed again, and with `--key` every
    /// generated manifest is signed again. The new snapshot replaces the old one only when it
    /// is complete. Blocking; returns the new snapshot (its `problems` are for the log).
    pub fn reload(&self) -> Arc<Snapshot> {
        let _writer = self.lock_writer();
        // `hashing` stays false: what is served meanwhile (the old snapshot) is complete.
        self.fill_and_replace(scan(self.root.as_deref(), &self.opts, &self.hashes));
        self.snapshot()
    }

    /// Hashes the files of `snap` that have no ETag yet, generates the manifests it still
    /// needs (`ManifestState::Pending`), swaps it in and saves the hash cache. The caller holds
    /// the writer lock.
    fn fill_and_replace(&self, mut snap: Snapshot) {
        for release in snap.releases.values_mut() {
            for entry in release.files.values_mut() {
                if entry.sha256.is_some() {
                    continue;
                }
                match self.hashes.hash(&entry.path) {
                    Ok((digest, stamp)) => {
                        entry.sha256 = Some(digest);
                        entry.stamp = stamp;
                    }
                    Err(e) => tracing::warn!(error = %crate::error_chain(&e), "hashing failed"),
                }
            }
            if matches!(release.manifest, ManifestState::Pending) {
                release.manifest = self.generate(release, chrono::Utc::now());
            }
        }
        self.replace(snap);
        self.save_hashes();
        self.hashing.store(false, Ordering::Relaxed);
    }

    fn save_hashes(&self) {
        if let Err(e) = self.hashes.save() {
            tracing::info!(error = %crate::error_chain(&e), "hash cache not saved");
        }
    }

    /// Signs again every generated manifest that has used half of its lifetime
    /// (`expires_in`) at `now`, so a long-running `plasmd serve --key` never serves an expired
    /// manifest. Artifact hashes come from the hash cache (a file whose size or mtime changed
    /// is hashed again). A release that cannot be signed any more (a file went missing) gets
    /// the 404 reason instead of a manifest that no longer matches. Blocking; returns how many
    /// manifests were signed again.
    pub fn resign_due(&self, now: chrono::DateTime<chrono::Utc>) -> usize {
        let _writer = self.lock_writer();
        let half_life =
            chrono::Duration::from_std(self.opts.expires_in / 2).unwrap_or(chrono::Duration::MAX);
        let mut next = Snapshot::clone(&self.snapshot());
        let mut n = 0;
        for release in next.releases.values_mut() {
            let ManifestState::Generated { signed_at, .. } = &release.manifest else {
                continue;
            };
            if now - *signed_at < half_life {
                continue;
            }
            let state = self.generate(release, now);
            if let ManifestState::Absent { reason } = &state {
                tracing::warn!(channel = %release.channel, arch = %release.arch, %reason, "manifest not signed again");
            }
            release.manifest = state;
            n += 1;
        }
        if n > 0 {
            self.replace(next);
            self.save_hashes();
        }
        n
    }

    fn generate(&self, release: &Release, now: chrono::DateTime<chrono::Utc>) -> ManifestState {
        let Some(key) = &self.opts.key else {
            return ManifestState::Absent {
                reason: "no --key to sign a manifest".into(),
            };
        };
        let info = ReleaseInfo::new(
            release.channel.clone(),
            release.arch,
            self.opts.release_version.clone(),
            self.opts.expires_in,
            self.opts.cmdline.clone(),
        );
        let signed = build_manifest(&release.dir, &info, &self.hashes, now)
            .and_then(|m| sign_to_text(unsigned_json(&m)?, key, now));
        match signed {
            Ok(text) => {
                tracing::info!(channel = %release.channel, arch = %release.arch, "manifest generated and signed");
                ManifestState::Generated {
                    bytes: Bytes::from(text),
                    version: info.version.to_string(),
                    signed_at: now,
                }
            }
            Err(e) => ManifestState::Absent {
                reason: format!("cannot generate a manifest: {}", crate::error_chain(&e)),
            },
        }
    }
}

/// The snapshot of the artifacts directory (`root`: its canonical path, `None` when it could
/// not be resolved), stat only.
fn scan(root: Option<&Path>, opts: &StoreOptions, hashes: &HashCache) -> Snapshot {
    match root {
        Some(root) => scan_root(root, opts, hashes),
        None => Snapshot {
            problems: vec![format!(
                "artifacts directory {} cannot be read",
                opts.artifacts.display()
            )],
            ..Snapshot::default()
        },
    }
}

fn scan_root(root: &Path, opts: &StoreOptions, hashes: &HashCache) -> Snapshot {
    let mut snap = Snapshot {
        readable: std::fs::read_dir(root).is_ok(),
        ..Snapshot::default()
    };
    if !snap.readable {
        snap.problems.push(format!(
            "artifacts directory {} cannot be read",
            root.display()
        ));
        return snap;
    }
    if root.join("manifest.json").is_file() {
        snap.flat = true;
        let default = (
            opts.channels.first().cloned().unwrap_or_default(),
            opts.arch,
        );
        let release = scan_release(root, root, default, opts, hashes, &mut snap.problems);
        snap.releases
            .insert((release.channel.clone(), release.arch), release);
        return snap;
    }
    for channel in &opts.channels {
        let Ok(entries) = std::fs::read_dir(root.join(channel)) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Ok(arch) = name.parse::<Arch>() else {
                continue;
            };
            let dir = entry.path();
            if !dir.is_dir() || !within(root, &dir) {
                continue;
            }
            let key = (channel.clone(), arch);
            if snap.releases.contains_key(&key) {
                snap.problems.push(format!(
                    "{} duplicates arch {arch} of channel {channel}",
                    dir.display()
                ));
                continue;
            }
            let release = scan_release(root, &dir, key.clone(), opts, hashes, &mut snap.problems);
            snap.releases.insert(key, release);
        }
    }
    if snap.releases.is_empty() {
        snap.problems.push(format!(
            "no release under {} (expected {{channel}}/{{arch}}/ for channels {:?}, or a manifest.json)",
            root.display(),
            opts.channels
        ));
    }
    snap
}

fn within(root: &Path, path: &Path) -> bool {
    std::fs::canonicalize(path).is_ok_and(|p| p.starts_with(root))
}

fn scan_release(
    root: &Path,
    dir: &Path,
    (channel, arch): (String, Arch),
    opts: &StoreOptions,
    hashes: &HashCache,
    problems: &mut Vec<String>,
) -> Release {
    let mut release = Release {
        channel,
        arch,
        dir: dir.to_owned(),
        manifest: ManifestState::Pending,
        files: BTreeMap::new(),
        names: BTreeMap::new(),
    };
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let path = entry.path();
            if !valid_filename(&name) {
                continue;
            }
            let Ok(meta) = std::fs::metadata(&path) else {
                continue;
            };
            if !meta.is_file() {
                continue;
            }
            if !within(root, &path) {
                problems.push(format!(
                    "{} points outside the artifacts directory; not served",
                    path.display()
                ));
                continue;
            }
            let stamp = FileStamp::of(&meta);
            let sha256 = hashes.cached(&path, stamp);
            release.files.insert(
                name,
                FileEntry {
                    path,
                    stamp,
                    sha256,
                },
            );
        }
    }
    let manifest_path = dir.join("manifest.json");
    release.manifest = match read_manifest(&manifest_path) {
        Ok(Some(bytes)) => found_manifest(&mut release, bytes, root == dir, problems),
        Ok(None) if opts.key.is_some() => ManifestState::Pending,
        Ok(None) => ManifestState::Absent {
            reason: format!(
                "no manifest.json in {} and no --key to generate and sign one",
                dir.display()
            ),
        },
        Err(reason) => {
            problems.push(reason.clone());
            ManifestState::Absent { reason }
        }
    };
    release
}

fn read_manifest(path: &Path) -> Result<Option<Bytes>, String> {
    match std::fs::metadata(path) {
        Err(_) => return Ok(None),
        Ok(m) if m.len() > MAX_MANIFEST_BYTES as u64 => {
            return Err(format!(
                "{} is over the {MAX_MANIFEST_BYTES}-byte manifest cap",
                path.display()
            ))
        }
        Ok(_) => {}
    }
    std::fs::read(path)
        .map(|b| Some(Bytes::from(b)))
        .map_err(|e| format!("cannot read {}: {e}", path.display()))
}

/// Learns version, names and hashes from a manifest found on disk; serves it as is.
fn found_manifest(
    release: &mut Release,
    bytes: Bytes,
    flat: bool,
    problems: &mut Vec<String>,
) -> ManifestState {
    let parsed =
        phase_protocol::json::parse_strict(&bytes, phase_protocol::json::DEFAULT_MAX_DEPTH)
            .ok()
            .and_then(|v| serde_json::from_value::<BootManifest>(v).ok());
    let Some(m) = parsed else {
        problems.push(format!(
            "{}/manifest.json does not parse as manifest v1; relayed as is",
            release.dir.display()
        ));
        return ManifestState::Found {
            bytes,
            version: "unknown".into(),
        };
    };
    if flat {
        release.channel = m.channel.clone();
        match m.arch() {
            Ok(a) => release.arch = a,
            Err(e) => problems.push(e.to_string()),
        }
    } else if m.channel != release.channel || !release.arch.matches(&m.arch) {
        problems.push(format!(
            "{}/manifest.json says {}/{}, served as {}/{}",
            release.dir.display(),
            m.channel,
            m.arch,
            release.channel,
            release.arch
        ));
    }
    if m.expires_at <= chrono::Utc::now() {
        problems.push(format!(
            "manifest of {}/{} expired at {}",
            release.channel, release.arch, m.expires_at
        ));
    }
    for (name, art) in &m.artifacts {
        release.names.insert(name.clone(), art.filename.clone());
        match release.files.get_mut(&art.filename) {
            Some(f) if f.stamp.size == art.size_bytes => f.sha256 = Some(art.hash),
            Some(_) => problems.push(format!(
                "{} has another size than its manifest says",
                art.filename
            )),
            None => problems.push(format!(
                "artifact {name} ({}) of {}/{} is missing",
                art.filename, release.channel, release.arch
            )),
        }
    }
    ManifestState::Found {
        bytes,
        version: m.version.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn opts(dir: &Path) -> StoreOptions {
        StoreOptions {
            artifacts: dir.to_owned(),
            channels: vec!["stable".into()],
            arch: Arch::X86_64,
            key: None,
            hash_cache: dir.join(".plasmd-hashes.json"),
            release_version: semver::Version::new(0, 1, 0),
            expires_in: std::time::Duration::from_secs(86_400),
            cmdline: String::new(),
        }
    }

    #[test]
    fn tree_with_alias_arch_dir_is_found_and_hashed_in_background() {
        let dir = tempfile::tempdir().unwrap();
        let rel = dir.path().join("stable/amd64");
        std::fs::create_dir_all(&rel).unwrap();
        std::fs::write(rel.join("kernel"), b"k").unwrap();
        std::fs::write(rel.join("initramfs"), b"i").unwrap();
        let store = Store::scan(opts(dir.path()));
        let snap = store.snapshot();
        let r = snap.release("stable", "x86_64").unwrap();
        assert!(matches!(r.manifest, ManifestState::Absent { .. }));
        assert!(r.files["kernel"].sha256.is_none());
        assert!(store.hashing());
        store.complete();
        assert!(!store.hashing());
        let snap = store.snapshot();
        let r = snap.release("stable", "amd64").unwrap();
        assert_eq!(r.files["kernel"].sha256, Some(Sha256Digest::of(b"k")));
    }

    /// A `stable/x86_64` release (kernel `k`, initramfs `i`) without a manifest under `root`,
    /// scanned with a fresh key and a manifest lifetime of `expires_in`: (store, key, release).
    fn keyed_store(root: &Path, expires_in: std::time::Duration) -> (Store, SigningKey, PathBuf) {
        let rel = root.join("stable/x86_64");
        std::fs::create_dir_all(&rel).unwrap();
        std::fs::write(rel.join("kernel"), b"k").unwrap();
        std::fs::write(rel.join("initramfs"), b"i").unwrap();
        let key = phase_protocol::signing::generate_key();
        let store = Store::scan(StoreOptions {
            key: Some(key.clone()),
            expires_in,
            ..opts(root)
        });
        (store, key, rel)
    }

    #[test]
    fn tree_without_manifest_and_with_key_gets_a_signed_manifest() {
        let dir = tempfile::tempdir().unwrap();
        let (store, key, _) = keyed_store(dir.path(), std::time::Duration::from_secs(86_400));
        assert!(matches!(
            store.snapshot().releases.values().next().unwrap().manifest,
            ManifestState::Pending
        ));
        store.complete();
        let snap = store.snapshot();
        let bytes = snap
            .release("stable", "x86_64")
            .unwrap()
            .manifest
            .bytes()
            .unwrap()
            .clone();
        let trust = phase_protocol::TrustRoot::new([key.verifying_key()], 1).unwrap();
        phase_protocol::verify(&bytes, &trust, chrono::Utc::now(), &Default::default()).unwrap();
    }

    #[test]
    fn generated_manifest_is_signed_again_after_half_its_lifetime() {
        let dir = tempfile::tempdir().unwrap();
        let (store, key, rel) = keyed_store(dir.path(), std::time::Duration::from_secs(3600));
        store.complete();
        let served = |store: &Store| {
            store
                .snapshot()
                .release("stable", "x86_64")
                .unwrap()
                .manifest
                .bytes()
                .unwrap()
                .clone()
        };
        let first = served(&store);
        let trust = phase_protocol::TrustRoot::new([key.verifying_key()], 1).unwrap();
        let t0 = chrono::Utc::now();
        // Before half the lifetime: nothing to do.
        assert_eq!(store.resign_due(t0 + chrono::Duration::minutes(29)), 0);
        assert_eq!(served(&store), first);
        // At 40 minutes the first one still verifies; at 61 minutes it would be expired.
        let later = t0 + chrono::Duration::minutes(40);
        assert_eq!(store.resign_due(later), 1);
        let second = served(&store);
        assert_ne!(second, first);
        let opts = Default::default();
        assert!(
            phase_protocol::verify(&first, &trust, t0 + chrono::Duration::minutes(61), &opts)
                .is_err()
        );
        let m = phase_protocol::verify(&second, &trust, t0 + chrono::Duration::minutes(61), &opts)
            .unwrap();
        assert_eq!(
            m.manifest().artifacts["kernel"].hash,
            Sha256Digest::of(b"k")
        );
        // A file that vanished: no stale manifest, a 404 reason instead.
        std::fs::remove_file(rel.join("kernel")).unwrap();
        assert_eq!(store.resign_due(later + chrono::Duration::minutes(40)), 1);
        let snap = store.snapshot();
        let state = &snap.release("stable", "x86_64").unwrap().manifest;
        assert!(matches!(state, ManifestState::Absent { .. }), "{state:?}");
    }

    #[test]
    fn reload_picks_up_replaced_and_added_files_and_signs_again() {
        let dir = tempfile::tempdir().unwrap();
        let (store, key, rel) = keyed_store(dir.path(), std::time::Duration::from_secs(86_400));
        store.complete();
        let before = store.snapshot();
        std::fs::write(rel.join("kernel"), b"k2").unwrap();
        std::fs::write(rel.join("rootfs"), b"r").unwrap();
        let after = store.reload();
        assert!(!store.hashing());
        // The snapshot taken before is untouched: requests in flight keep what they had.
        let old = before.release("stable", "x86_64").unwrap();
        assert_eq!(old.files["kernel"].sha256, Some(Sha256Digest::of(b"k")));
        assert!(!old.files.contains_key("rootfs"));
        let r = after.release("stable", "x86_64").unwrap();
        assert_eq!(r.files["kernel"].sha256, Some(Sha256Digest::of(b"k2")));
        assert_eq!(r.files["rootfs"].sha256, Some(Sha256Digest::of(b"r")));
        let trust = phase_protocol::TrustRoot::new([key.verifying_key()], 1).unwrap();
        let bytes = r.manifest.bytes().unwrap();
        let m =
            phase_protocol::verify(bytes, &trust, chrono::Utc::now(), &Default::default()).unwrap();
        assert_eq!(
            m.manifest().artifacts["kernel"].hash,
            Sha256Digest::of(b"k2")
        );
        assert_eq!(
            m.manifest().artifacts["rootfs"].hash,
            Sha256Digest::of(b"r")
        );
    }

    #[test]
    fn reload_drops_an_oversized_manifest_and_a_removed_release() {
        let dir = tempfile::tempdir().unwrap();
        let rel = dir.path().join("stable/x86_64");
        std::fs::create_dir_all(&rel).unwrap();
        std::fs::write(rel.join("kernel"), b"k").unwrap();
        std::fs::write(rel.join("manifest.json"), b"{}").unwrap();
        let store = Store::scan(opts(dir.path()));
        store.complete();
        assert!(store
            .snapshot()
            .release("stable", "x86_64")
            .unwrap()
            .manifest
            .bytes()
            .is_some());
        // Replaced by a file over the cap: no longer served, and the reason is on /health.
        std::fs::write(
            rel.join("manifest.json"),
            vec![b' '; MAX_MANIFEST_BYTES + 1],
        )
        .unwrap();
        let snap = store.reload();
        let state = &snap.release("stable", "x86_64").unwrap().manifest;
        assert!(state.bytes().is_none(), "{state:?}");
        assert!(
            snap.problems.iter().any(|p| p.contains("cap")),
            "{:?}",
            snap.problems
        );
        // The release directory removed: the release is gone, not served from memory.
        std::fs::remove_dir_all(&rel).unwrap();
        let snap = store.reload();
        assert!(snap.releases.is_empty());
        assert!(
            snap.problems.iter().any(|p| p.contains("no release under")),
            "{:?}",
            snap.problems
        );
    }

    #[test]
    fn symlink_out_of_the_root_is_not_listed_nor_opened() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), b"s").unwrap();
        let rel = dir.path().join("stable/x86_64");
        std::fs::create_dir_all(&rel).unwrap();
        std::os::unix::fs::symlink(outside.path().join("secret"), rel.join("kernel")).unwrap();
        let store = Store::scan(opts(dir.path()));
        let snap = store.snapshot();
        assert!(snap.release("stable", "x86_64").unwrap().files.is_empty());
        let forged = FileEntry {
            path: rel.join("kernel"),
            stamp: FileStamp {
                size: 1,
                mtime_ns: 0,
            },
            sha256: None,
        };
        assert!(matches!(
            store.open(&forged),
            Err(OpenError::Outside { .. })
        ));
    }

    #[test]
    fn unreadable_root_is_a_problem_not_a_crash() {
        let store = Store::scan(opts(Path::new("/nonexistent/plasmd-test")));
        let snap = store.snapshot();
        assert!(snap.releases.is_empty());
        assert!(snap.problems[0].contains("cannot be read"));
    }
}
