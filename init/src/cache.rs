//! The cache partition (DESIGN §4, issue 6 §6): the verified manifest and artifacts of the last
//! internet boot, the rollback state (`state.json` and `state.json.bak`, see
//! [`crate::fetch::state`]; lost copies are rebuilt by [`crate::fetch::recovery`]) and the stable
//! libp2p identity (`identity.key`), in `<cache>/phase/`.
//!
//! Found by GPT PARTLABEL `phase-cache` (`PARTNAME=` in `/sys/class/block/*/uevent`) and mounted
//! (vfat) at `/cache`; or else a `phase-cache` directory on the ESP (a partition labelled
//! `EFI System Partition`/`ESP`/`EFI`, mounted at `/run/phase/esp`).
//!
//! Policy by mode ([`CachePolicy::for_mode`]): internet mounts read-write and writes; local
//! mounts read-only and reads (every file is verified again before use); private never mounts
//! it at all, so nothing can be written to any disk.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use phase_protocol::BootMode;

use crate::kexec::{PosReader, Verified};
use crate::sys::{MountFlags, SysError, Syscalls};

/// The GPT partition label of the cache partition.
pub const PARTLABEL: &str = "phase-cache";
/// Mount point of the cache partition.
pub const MOUNT_POINT: &str = "/cache";
/// Mount point used to look for a `phase-cache` directory on the ESP.
pub const ESP_MOUNT_POINT: &str = "/run/phase/esp";
/// Partition labels taken for an ESP.
pub const ESP_LABELS: [&str; 4] = ["EFI System Partition", "ESP", "EFI", "esp"];
/// vfat mount options (codepage 437 and ascii names: modules nls_cp437, nls_ascii).
pub const VFAT_OPTIONS: &str = "codepage=437,iocharset=ascii,shortname=mixed";

/// Errors of the cache.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// Reading `/sys/class/block` failed.
    #[error("scanning {path} for PARTNAME={PARTLABEL}")]
    Scan {
        /// The directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// mknod, mkdir or mount of the cache failed.
    #[error("mounting the cache {device} on {target}")]
    Mount {
        /// The block device.
        device: PathBuf,
        /// The mount point.
        target: PathBuf,
        /// The failed call.
        #[source]
        source: SysError,
    },
    /// A write was asked for in a mode that must not write (local, private).
    #[error("refusing to write the cache in {0} mode")]
    NotWritable(BootMode),
    /// An artifact's filename is not a plain file name.
    #[error("artifact filename {0:?} is not a plain file name")]
    BadFilename(String),
    /// Writing a file in the cache failed.
    #[error("writing {path}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
}

/// What a mode may do with the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CachePolicy {
    /// Look for and mount the cache at all.
    pub mount: bool,
    /// Mount it read-write and write the verified release (internet only).
    pub write: bool,
}

impl CachePolicy {
    /// internet: mount read-write, write; local: mount read-only; private: do not mount.
    pub fn for_mode(mode: BootMode) -> Self {
        CachePolicy {
            mount: mode.reads_cache(),
            write: mode.writes_cache(),
        }
    }

    /// [`CachePolicy::for_mode`], except that private mode without a network (`phase.net=off`,
    /// issue 16 §6) mounts the boot medium read-only: the release it carries is the only one.
    pub fn for_boot(mode: BootMode, net: bool) -> Self {
        if mode == BootMode::Private && !net {
            return CachePolicy {
                mount: true,
                write: false,
            };
        }
        Self::for_mode(mode)
    }
}

/// A block device from sysfs: `/dev/<name>` with its numbers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockDev {
    /// Kernel name (`vda2`).
    pub name: String,
    /// Device major number.
    pub major: u32,
    /// Device minor number.
    pub minor: u32,
    /// The GPT partition label (`PARTNAME=`), if any.
    pub partname: Option<String>,
}

/// Parses one `uevent` file of `/sys/class/block/<dev>`.
pub fn parse_uevent(text: &str) -> Option<BlockDev> {
    let mut name = None;
    let (mut major, mut minor, mut partname) = (None, None, None);
    for line in text.lines() {
        match line.split_once('=') {
            Some(("DEVNAME", v)) => name = Some(v.to_string()),
            Some(("MAJOR", v)) => major = v.parse().ok(),
            Some(("MINOR", v)) => minor = v.parse().ok(),
            Some(("PARTNAME", v)) => partname = Some(v.to_string()),
            _ => {}
        }
    }
    Some(BlockDev {
        name: name?,
        major: major?,
        minor: minor?,
        partname,
    })
}

/// Every block device under `sys_class_block` (normally `/sys/class/block`), by name order.
/// Errors: [`CacheError::Scan`].
pub fn block_devices(sys_class_block: &Path) -> Result<Vec<BlockDev>, CacheError> {
    let scan = |source| CacheError::Scan {
        path: sys_class_block.to_path_buf(),
        source,
    };
    let mut out = Vec::new();
    for entry in std::fs::read_dir(sys_class_block).map_err(scan)? {
        let entry = entry.map_err(scan)?;
        if let Ok(text) = std::fs::read_to_string(entry.path().join("uevent")) {
            out.extend(parse_uevent(&text));
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// A mounted cache: files live in `<root>/phase/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cache {
    /// The cache root (`/cache`, or `/run/phase/esp/phase-cache`).
    pub root: PathBuf,
    /// Where it is mounted, for unmounting.
    pub mount_point: PathBuf,
    /// Mounted read-write (internet mode).
    pub writable: bool,
}

impl Cache {
    /// `<root>/phase`: manifest.json, artifacts, state.json, identity.key.
    pub fn dir(&self) -> PathBuf {
        self.root.join("phase")
    }

    /// The cached manifest path.
    pub fn manifest_path(&self) -> PathBuf {
        self.dir().join(crate::fetch::recovery::CACHED_MANIFEST)
    }

    /// The stable libp2p identity key path.
    pub fn identity_path(&self) -> PathBuf {
        self.dir().join("identity.key")
    }
}

fn mount_dev(
    sys: &dyn Syscalls,
    dev: &BlockDev,
    target: &Path,
    writable: bool,
) -> Result<(), CacheError> {
    let device = Path::new("/dev").join(&dev.name);
    let err = |source| CacheError::Mount {
        device: device.clone(),
        target: target.to_path_buf(),
        source,
    };
    sys.mknod_block(&device, dev.major, dev.minor)
        .map_err(err)?;
    sys.mkdir_all(target, 0o755).map_err(err)?;
    let mut flags = MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC;
    if !writable {
        flags |= MountFlags::RDONLY;
    }
    let source = device.to_string_lossy();
    sys.mount(&source, target, "vfat", flags, Some(VFAT_OPTIONS))
        .map_err(err)
}

/// Finds and mounts the cache as `mode` allows. Returns `Ok(None)` when the mode does not use
/// a cache (private: no call is made at all) or no cache exists. The ESP fallback is used only
/// when its mount succeeds and it holds a `phase-cache` directory (else it is unmounted).
/// Errors: [`CacheError::Scan`], [`CacheError::Mount`] for the `phase-cache` partition.
pub fn open(
    sys: &dyn Syscalls,
    mode: BootMode,
    sys_class_block: &Path,
) -> Result<Option<Cache>, CacheError> {
    open_with(sys, CachePolicy::for_mode(mode), sys_class_block)
}

/// [`open`] with an explicit policy ([`CachePolicy::for_boot`]).
///
/// # Errors
/// As [`open`].
pub fn open_with(
    sys: &dyn Syscalls,
    policy: CachePolicy,
    sys_class_block: &Path,
) -> Result<Option<Cache>, CacheError> {
    if !policy.mount {
        return Ok(None);
    }
    let devs = block_devices(sys_class_block)?;
    if let Some(dev) = devs
        .iter()
        .find(|d| d.partname.as_deref() == Some(PARTLABEL))
    {
        mount_dev(sys, dev, Path::new(MOUNT_POINT), policy.write)?;
        let cache = Cache {
            root: MOUNT_POINT.into(),
            mount_point: MOUNT_POINT.into(),
            writable: policy.write,
        };
        prepare(sys, &cache, dev)?;
        return Ok(Some(cache));
    }
    let esp = Path::new(ESP_MOUNT_POINT);
    for dev in devs.iter().filter(|d| {
        d.partname
            .as_deref()
            .is_some_and(|p| ESP_LABELS.contains(&p))
    }) {
        if mount_dev(sys, dev, esp, policy.write).is_err() {
            continue;
        }
        let root = esp.join(PARTLABEL);
        if root.is_dir() {
            let cache = Cache {
                root,
                mount_point: esp.into(),
                writable: policy.write,
            };
            prepare(sys, &cache, dev)?;
            return Ok(Some(cache));
        }
        let _ = sys.unmount(esp);
    }
    Ok(None)
}

/// A writable cache gets its `phase/` directory at once: the DHT identity key and the rollback
/// state are written there before the release is.
fn prepare(sys: &dyn Syscalls, cache: &Cache, dev: &BlockDev) -> Result<(), CacheError> {
    if !cache.writable {
        return Ok(());
    }
    sys.mkdir_all(&cache.dir(), 0o755)
        .map_err(|source| CacheError::Mount {
            device: Path::new("/dev").join(&dev.name),
            target: cache.mount_point.clone(),
            source,
        })
}

fn plain_name(name: &str) -> Result<&str, CacheError> {
    if name.is_empty() || name.contains('/') || name == "." || name == ".." || name.contains('\0') {
        return Err(CacheError::BadFilename(name.to_string()));
    }
    Ok(name)
}

fn write_atomic(
    dir: &Path,
    name: &str,
    src: &mut dyn Read,
    size: Option<u64>,
) -> Result<(), CacheError> {
    let path = dir.join(name);
    let tmp = dir.join(format!(".{name}.tmp"));
    let werr = |p: &Path| {
        let p = p.to_path_buf();
        move |source| CacheError::Write { path: p, source }
    };
    let mut f = File::create(&tmp).map_err(werr(&tmp))?;
    let n = io::copy(src, &mut f).map_err(werr(&tmp))?;
    if size.is_some_and(|s| s != n) {
        let _ = std::fs::remove_file(&tmp);
        return Err(CacheError::Write {
            path,
            source: io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "verified file shorter than its size",
            ),
        });
    }
    f.flush().and_then(|()| f.sync_all()).map_err(werr(&tmp))?;
    std::fs::rename(&tmp, &path).map_err(werr(&path))
}

/// Writes a verified release to the cache: each artifact (from its verified descriptor, under
/// its manifest filename) then `manifest.json` (the exact verified bytes), each through a
/// temporary name and rename. Errors: [`CacheError::NotWritable`] unless `mode` is internet and
/// the cache was mounted read-write (a test shows local and private refuse),
/// [`CacheError::BadFilename`], [`CacheError::Write`].
pub fn write_release(
    cache: &Cache,
    mode: BootMode,
    manifest_raw: &[u8],
    artifacts: &[(String, Verified<'_>)],
) -> Result<PathBuf, CacheError> {
    if !CachePolicy::for_mode(mode).write || !cache.writable {
        return Err(CacheError::NotWritable(mode));
    }
    let dir = cache.dir();
    std::fs::create_dir_all(&dir).map_err(|source| CacheError::Write {
        path: dir.clone(),
        source,
    })?;
    for (filename, v) in artifacts {
        let name = plain_name(filename)?;
        let mut rd = PosReader {
            file: v.file,
            pos: 0,
        }
        .take(v.size);
        write_atomic(&dir, name, &mut rd, Some(v.size))?;
    }
    write_atomic(
        &dir,
        crate::fetch::recovery::CACHED_MANIFEST,
        &mut &manifest_raw[..],
        None,
    )?;
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::fake::Recording;

    fn sysfs(devs: &[(&str, u32, u32, Option<&str>)]) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        for (name, major, minor, part) in devs {
            let p = d.path().join(name);
            std::fs::create_dir_all(&p).unwrap();
            let mut text =
                format!("MAJOR={major}\nMINOR={minor}\nDEVNAME={name}\nDEVTYPE=partition\n");
            if let Some(pn) = part {
                text.push_str(&format!("PARTN=1\nPARTNAME={pn}\n"));
            }
            std::fs::write(p.join("uevent"), text).unwrap();
        }
        d
    }

    #[test]
    fn partlabel_is_found_and_mounted_read_write_in_internet_mode() {
        let s = sysfs(&[
            ("vda", 254, 0, None),
            ("vda1", 254, 1, Some("ESP")),
            ("vda2", 254, 2, Some("phase-cache")),
        ]);
        let f = Recording::new();
        let c = open(&f, BootMode::Internet, s.path()).unwrap().unwrap();
        assert!(c.writable);
        assert_eq!(c.dir(), Path::new("/cache/phase"));
        assert_eq!(
            f.calls(),
            [
                "mknod_block /dev/vda2 254:2".to_string(),
                "mkdir /cache 755".to_string(),
                format!(
                    "mount /dev/vda2 /cache vfat {:?} {VFAT_OPTIONS}",
                    MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC
                ),
                "mkdir /cache/phase 755".to_string(),
            ]
        );
    }

    #[test]
    fn local_mode_mounts_read_only() {
        let s = sysfs(&[("vda2", 254, 2, Some("phase-cache"))]);
        let f = Recording::new();
        let c = open(&f, BootMode::Local, s.path()).unwrap().unwrap();
        assert!(!c.writable);
        let mount = f
            .calls()
            .into_iter()
            .find(|c| c.starts_with("mount "))
            .unwrap();
        assert!(mount.contains("RDONLY"), "{mount}");
    }

    #[test]
    fn private_mode_never_touches_the_cache() {
        let s = sysfs(&[("vda2", 254, 2, Some("phase-cache"))]);
        let f = Recording::new();
        assert_eq!(open(&f, BootMode::Private, s.path()).unwrap(), None);
        assert!(f.calls().is_empty(), "{:?}", f.calls());
    }

    #[test]
    fn private_mode_without_network_mounts_the_boot_medium_read_only() {
        let s = sysfs(&[("vda2", 254, 2, Some("phase-cache"))]);
        let f = Recording::new();
        let policy = CachePolicy::for_boot(BootMode::Private, false);
        let c = open_with(&f, policy, s.path()).unwrap().unwrap();
        assert!(!c.writable);
        let mount = f
            .calls()
            .into_iter()
            .find(|c| c.starts_with("mount "))
            .unwrap();
        assert!(mount.contains("RDONLY"), "{mount}");
        // With the network on, private mode still does not touch it.
        assert!(!CachePolicy::for_boot(BootMode::Private, true).mount);
        assert_eq!(
            CachePolicy::for_boot(BootMode::Local, false),
            CachePolicy::for_mode(BootMode::Local)
        );
    }

    #[test]
    fn no_cache_partition_is_not_an_error() {
        let s = sysfs(&[("vda", 254, 0, None), ("vda1", 254, 1, Some("root"))]);
        let f = Recording::new();
        assert_eq!(open(&f, BootMode::Internet, s.path()).unwrap(), None);
        assert!(f.calls().is_empty());
    }

    #[test]
    fn failed_cache_mount_names_device_and_target() {
        let s = sysfs(&[("vda2", 254, 2, Some("phase-cache"))]);
        let f = Recording::new();
        f.fail_on("mount /dev/vda2", libc::EINVAL);
        let e = open(&f, BootMode::Internet, s.path()).unwrap_err();
        let t = crate::log::error_chain(&e);
        assert!(t.contains("/dev/vda2") && t.contains("/cache"), "{t}");
    }

    fn tmp_cache(writable: bool) -> (tempfile::TempDir, Cache) {
        let d = tempfile::tempdir().unwrap();
        let c = Cache {
            root: d.path().into(),
            mount_point: d.path().into(),
            writable,
        };
        (d, c)
    }

    fn file_with(bytes: &[u8]) -> File {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(bytes).unwrap();
        f
    }

    #[test]
    fn internet_mode_writes_manifest_and_artifacts() {
        let (_d, c) = tmp_cache(true);
        let k = file_with(b"kernel!");
        let arts = vec![("kernel".to_string(), Verified { file: &k, size: 7 })];
        write_release(&c, BootMode::Internet, b"{}", &arts).unwrap();
        assert_eq!(std::fs::read(c.dir().join("kernel")).unwrap(), b"kernel!");
        assert_eq!(std::fs::read(c.manifest_path()).unwrap(), b"{}");
        assert!(!c.dir().join(".kernel.tmp").exists());
    }

    #[test]
    fn local_and_private_modes_refuse_to_write() {
        for mode in [BootMode::Local, BootMode::Private] {
            let (d, c) = tmp_cache(true);
            let k = file_with(b"k");
            let arts = vec![("kernel".to_string(), Verified { file: &k, size: 1 })];
            let e = write_release(&c, mode, b"{}", &arts).unwrap_err();
            assert!(matches!(e, CacheError::NotWritable(m) if m == mode));
            assert_eq!(
                std::fs::read_dir(d.path()).unwrap().count(),
                0,
                "nothing written in {mode}"
            );
        }
    }

    #[test]
    fn read_only_mount_refuses_to_write_even_in_internet_mode() {
        let (_d, c) = tmp_cache(false);
        assert!(matches!(
            write_release(&c, BootMode::Internet, b"{}", &[]),
            Err(CacheError::NotWritable(_))
        ));
    }

    #[test]
    fn path_traversal_filename_is_refused() {
        let (_d, c) = tmp_cache(true);
        let k = file_with(b"k");
        let arts = vec![("../evil".to_string(), Verified { file: &k, size: 1 })];
        assert!(matches!(
            write_release(&c, BootMode::Internet, b"{}", &arts),
            Err(CacheError::BadFilename(_))
        ));
    }

    #[test]
    fn short_verified_file_is_not_cached() {
        let (_d, c) = tmp_cache(true);
        let k = file_with(b"k");
        let arts = vec![("kernel".to_string(), Verified { file: &k, size: 10 })];
        assert!(write_release(&c, BootMode::Internet, b"{}", &arts).is_err());
        assert!(!c.dir().join("kernel").exists());
        assert!(!c.manifest_path().exists());
    }
}
