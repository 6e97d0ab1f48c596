//! The "modules" stage (issue 6 §3): for distro kernels such as Debian's, where virtio_net, loop,
//! squashfs and overlay are modules. Reads `/etc/phase/modules.list`, resolves dependencies from
//! `/lib/modules/<uname -r>/modules.dep` ([`phase_layout::modules_dep`]) and loads each module
//! with `finit_module`, dependencies first. Built-in and already loaded modules are fine.
//! Runs after the early mounts and the command line, before the network.
//!
//! Compressed modules (`.ko.xz`, `.ko.zst`, as Debian trixie, Ubuntu and Fedora ship them; issue
//! 16 §3) are loaded as kmod's `modprobe` does: with `MODULE_INIT_COMPRESSED_FILE` when the
//! running kernel decompresses that format itself (`/sys/module/compression`), otherwise
//! decompressed here (pure Rust: lzma-rust2, ruzstd; capped at [`MAX_MODULE_BYTES`]) and loaded
//! from memory with `init_module`.
//!
//! A module marked `@device` in the list is a driver loaded only when, at its turn, a device in
//! `/sys/bus/*/devices` has a `modalias` that one of the module's aliases matches (the
//! initramfs's `modules.alias`, depmod's, matched with `fnmatch(3)` as kmod does; issue 18 §3:
//! e1000, 330 KB, was verified and linked twice per boot in VMs with virtio-net only). A
//! `@device` module without any alias is loaded (fail open).
//!
//! A module marked `@disk` (vfat and its code pages, for the cache partition) is loaded only
//! when, at its turn, `/sys/block` lists a device outside `/sys/devices/virtual` ([`disk_present`]):
//! a diskless machine skips it in both stages (issue 18 §3: ~15 ms per stage under TCG).
//!
//! Parameters: the `name=value` words of a module's list line (`loop @target max_loop=0`), then
//! the kernel command line's `<module>.<param>=<value>` words ([`cmdline_params`], as kmod's
//! modprobe reads them), given to the kernel in that order, so the command line wins.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use phase_layout::modules_dep::{
    parse_modules_alias, parse_modules_list, ListedModule, ModulesDep, ModulesDepError,
};

use crate::sys::{SysError, Syscalls};

/// Where the list of modules to load lives in the initramfs (one name per line).
pub const MODULES_LIST: &str = "/etc/phase/modules.list";

/// Errors of the modules stage.
#[derive(Debug, thiserror::Error)]
pub enum ModulesError {
    /// Reading the modules list failed.
    #[error("reading {path}")]
    List {
        /// The list file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// `modules.dep` could not be read or resolved (names the missing module or the cycle).
    #[error("resolving kernel modules in {dir}")]
    Resolve {
        /// The modules directory.
        dir: PathBuf,
        /// The cause.
        #[source]
        source: ModulesDepError,
    },
    /// Decompressing a compressed module failed (corrupt, truncated, over the size cap, or a
    /// format this init does not decode).
    #[error("decompressing kernel module {path}")]
    Decompress {
        /// The module file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: DecompressError,
    },
    /// Loading one module failed.
    #[error("loading kernel module {name}")]
    Load {
        /// The module's name.
        name: String,
        /// The failed call.
        #[source]
        source: SysError,
    },
}

/// Largest decompressed module accepted, bytes (64 MiB; the largest distribution modules are
/// a few MiB), so a corrupt or hostile file cannot exhaust memory.
pub const MAX_MODULE_BYTES: u64 = 64 << 20;

/// How a module file is compressed, from its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// `.ko`.
    None,
    /// `.ko.xz`.
    Xz,
    /// `.ko.zst`.
    Zstd,
    /// `.ko.gz` (loaded only by a kernel that decompresses gzip itself).
    Gzip,
}

impl Compression {
    /// The compression of module file `path`, by its extension.
    pub fn of(path: &Path) -> Compression {
        match path.extension().and_then(|e| e.to_str()) {
            Some("xz") => Compression::Xz,
            Some("zst") => Compression::Zstd,
            Some("gz") => Compression::Gzip,
            _ => Compression::None,
        }
    }

    /// The name `/sys/module/compression` uses for this format.
    pub fn sysfs_name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Xz => "xz",
            Compression::Zstd => "zstd",
            Compression::Gzip => "gzip",
        }
    }
}

/// Why a module could not be decompressed.
#[derive(Debug, thiserror::Error)]
pub enum DecompressError {
    /// Reading the file failed.
    #[error("read")]
    Io(#[source] std::io::Error),
    /// The xz stream is corrupt or truncated.
    #[error("xz: {0}")]
    Xz(String),
    /// The zstd frame is corrupt or truncated.
    #[error("zstd: {0}")]
    Zstd(String),
    /// The module would be larger than [`MAX_MODULE_BYTES`].
    #[error("decompressed size over the {MAX_MODULE_BYTES}-byte cap")]
    TooLarge,
    /// A format this init does not decode (gzip: only kernels that decompress it load it).
    #[error("{0} modules are not decompressed by the init")]
    Unsupported(&'static str),
}

/// Memory the xz decoder may allocate for one block's dictionary, KiB (64 MiB; kbuild uses a
/// 1 MiB dictionary), so a hostile header cannot make PID 1 allocate gigabytes.
const XZ_MEM_LIMIT_KB: u32 = 64 << 10;

/// Reads `r` to the end, at most [`MAX_MODULE_BYTES`]; `wrap` turns a decoder error into ours.
fn read_capped(
    r: impl std::io::Read,
    wrap: fn(String) -> DecompressError,
) -> Result<Vec<u8>, DecompressError> {
    use std::io::Read;
    let mut out = Vec::new();
    r.take(MAX_MODULE_BYTES + 1)
        .read_to_end(&mut out)
        .map_err(|e| wrap(e.to_string()))?;
    if out.len() as u64 > MAX_MODULE_BYTES {
        return Err(DecompressError::TooLarge);
    }
    Ok(out)
}

/// Decompresses module bytes `data` of format `c` (the whole image, at most
/// [`MAX_MODULE_BYTES`]).
///
/// # Errors
/// [`DecompressError`]: corrupt or truncated data, over the cap, or an unsupported format.
pub fn decompress(data: &[u8], c: Compression) -> Result<Vec<u8>, DecompressError> {
    match c {
        Compression::None => Ok(data.to_vec()),
        Compression::Xz => read_capped(
            lzma_rust2::XzReader::new_mem_limit(data, false, XZ_MEM_LIMIT_KB),
            DecompressError::Xz,
        ),
        Compression::Zstd => {
            let mut src = data;
            let dec = ruzstd::decoding::StreamingDecoder::new(&mut src)
                .map_err(|e| DecompressError::Zstd(e.to_string()))?;
            read_capped(dec, DecompressError::Zstd)
        }
        Compression::Gzip => Err(DecompressError::Unsupported("gzip")),
    }
}

/// The module compression the running kernel decompresses itself: the contents of
/// `/sys/module/compression` (`xz`, `zstd` or `gzip`; absent without
/// `CONFIG_MODULE_DECOMPRESS`).
pub fn kernel_decompresses() -> Option<String> {
    std::fs::read_to_string("/sys/module/compression")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
}

/// What the stage did: counts for the `modules ok` line.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Loaded {
    /// Modules loaded now, in load order.
    pub loaded: Vec<String>,
    /// Modules that were already loaded (`EEXIST`).
    pub already: Vec<String>,
    /// Modules built into the kernel.
    pub builtin: Vec<String>,
    /// `@device` modules left out: no present device matched any of their aliases.
    pub no_device: Vec<String>,
    /// `@disk` modules left out: no disk ([`disk_present`]).
    pub no_disk: Vec<String>,
    /// Set when this initramfs carries no modules for the running kernel (no
    /// `/lib/modules/<release>`): a kernel with its drivers built in, such as `make kernel`'s.
    /// Nothing is loaded; a driver that is really missing shows up at the stage that needs it.
    pub no_modules_for_kernel: Option<PathBuf>,
}

/// `/lib/modules/<release>` for the running kernel (`uname -r`).
pub fn modules_dir() -> PathBuf {
    let release = rustix::system::uname();
    let release = release.release().to_string_lossy().into_owned();
    Path::new("/lib/modules").join(release)
}

/// Where the init reads the devices' modaliases for `@device` modules.
pub const SYS_BUS: &str = "/sys/bus";

/// Where the init looks for a disk for `@disk` modules.
pub const SYS_BLOCK: &str = "/sys/block";

/// What [`load_with`] reads besides the modules directory (fakes in tests).
#[derive(Debug, Clone, Copy)]
pub struct LoadEnv<'a> {
    /// The module compression the running kernel decompresses itself
    /// ([`kernel_decompresses`]), `None` when it does none.
    pub kernel_format: Option<&'a str>,
    /// The sysfs bus directory for `@device` modules ([`SYS_BUS`]).
    pub sys_bus: &'a Path,
    /// The sysfs block directory for `@disk` modules ([`SYS_BLOCK`]).
    pub sys_block: &'a Path,
    /// Parameters from the kernel command line by module name ([`cmdline_params`]).
    pub cmdline_params: &'a BTreeMap<String, Vec<String>>,
}

/// The module parameters of a kernel command line, by module name, as kmod's modprobe reads
/// `/proc/cmdline`: every word `<module>.<param>[=<value>]` (the module name of ASCII letters,
/// digits, `_` and `-`, which becomes `_` as the kernel spells names), in order. Words without
/// a `.` before their `=`, with another character in the module name, or with an empty module
/// or parameter name, are not module parameters.
pub fn cmdline_params(cmdline: &str) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for word in crate::cmdline::raw_tokens(cmdline) {
        let key = word.split_once('=').map_or(word.as_str(), |(k, _)| k);
        let Some((module, _)) = key.split_once('.') else {
            continue;
        };
        let param = &word[module.len() + 1..];
        let module = module.replace('-', "_");
        let is_name = !module.is_empty()
            && module
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !is_name || param.is_empty() || param.starts_with('=') {
            continue;
        }
        out.entry(module).or_default().push(param.to_owned());
    }
    out
}

/// Whether `sys_block` (`/sys/block`) lists a disk: an entry whose link does not lead into
/// `devices/virtual/` (loop, ram, zram, device-mapper devices do). An entry that is not a link,
/// or a directory that cannot be read, counts as a disk (fail open: load the module).
pub fn disk_present(sys_block: &Path) -> bool {
    let Ok(it) = std::fs::read_dir(sys_block) else {
        return true;
    };
    it.filter_map(Result::ok)
        .take(MAX_DEVICES_PER_BUS)
        .any(|e| match std::fs::read_link(e.path()) {
            Ok(target) => !target
                .components()
                .collect::<Vec<_>>()
                .windows(2)
                .any(|w| w[0].as_os_str() == "devices" && w[1].as_os_str() == "virtual"),
            Err(_) => true,
        })
}

/// Loads `wanted` from `dir` (which holds `modules.dep` and the `.ko` files), in list order,
/// each after its dependencies; an `@device` module only when [`DeviceMatch`] finds a device
/// for it in [`SYS_BUS`]. A `dir` that does not exist at all means a kernel this initramfs has
/// no modules for (see [`Loaded::no_modules_for_kernel`]); an existing `dir` without
/// `modules.dep` is an error. Errors: [`ModulesError::Resolve`] (missing module, missing
/// dependency, cycle, no modules.dep), [`ModulesError::Load`] (finit_module failed with anything
/// but `EEXIST`). `cmdline` is the kernel command line the stage already read, for its
/// module parameters ([`cmdline_params`]).
pub fn load(
    sys: &dyn Syscalls,
    dir: &Path,
    wanted: &[ListedModule],
    cmdline: &str,
) -> Result<Loaded, ModulesError> {
    let params = cmdline_params(cmdline);
    let format = kernel_decompresses();
    load_with(
        sys,
        dir,
        wanted,
        LoadEnv {
            kernel_format: format.as_deref(),
            sys_bus: Path::new(SYS_BUS),
            sys_block: Path::new(SYS_BLOCK),
            cmdline_params: &params,
        },
    )
}

/// [`load`] with what it reads from the running system given in `env`, for tests.
///
/// # Errors
/// As [`load`], and [`ModulesError::Decompress`] for a compressed module this init must
/// decompress and cannot.
pub fn load_with(
    sys: &dyn Syscalls,
    dir: &Path,
    wanted: &[ListedModule],
    env: LoadEnv<'_>,
) -> Result<Loaded, ModulesError> {
    let mut out = Loaded::default();
    if wanted.is_empty() {
        return Ok(out);
    }
    if !dir.exists() {
        out.no_modules_for_kernel = Some(dir.to_path_buf());
        return Ok(out);
    }
    let resolve = |source| ModulesError::Resolve {
        dir: dir.to_path_buf(),
        source,
    };
    let dep = ModulesDep::load(dir).map_err(resolve)?;
    // Every listed module must exist, loaded or not: a typo fails the stage before any load.
    let names: Vec<&str> = wanted.iter().map(|w| w.name.as_str()).collect();
    dep.resolve(&names).map_err(resolve)?;
    let mut devices = DeviceMatch::new(dir, env.sys_bus);
    let mut done = BTreeSet::new();
    for w in wanted {
        if w.device_only && !devices.wanted(&w.name) {
            out.no_device.push(w.name.clone());
            continue;
        }
        if w.disk_only && !disk_present(env.sys_block) {
            out.no_disk.push(w.name.clone());
            continue;
        }
        let plan = dep
            .resolve(std::slice::from_ref(&w.name))
            .map_err(resolve)?;
        for b in plan.builtin {
            if !out.builtin.contains(&b) {
                out.builtin.push(b);
            }
        }
        for m in plan.modules {
            if !done.insert(m.name.clone()) {
                continue;
            }
            let own = if m.name == w.name { &w.params[..] } else { &[] };
            let from_cmdline = env.cmdline_params.get(&m.name).map_or(&[][..], |p| &p[..]);
            let params = own
                .iter()
                .chain(from_cmdline)
                .map(String::as_str)
                .collect::<Vec<_>>()
                .join(" ");
            match load_one(sys, &dir.join(&m.path), &params, env.kernel_format) {
                Ok(()) => {
                    // Its probe may have added devices (virtio_pci adds the virtio bus's).
                    devices.devices_changed();
                    out.loaded.push(m.name)
                }
                Err(LoadError::Sys(e)) if e.errno() == Some(libc::EEXIST) => {
                    out.already.push(m.name)
                }
                Err(LoadError::Sys(source)) => {
                    return Err(ModulesError::Load {
                        name: m.name,
                        source,
                    })
                }
                Err(LoadError::Decompress(source)) => {
                    return Err(ModulesError::Decompress {
                        path: dir.join(&m.path),
                        source,
                    })
                }
            }
        }
    }
    Ok(out)
}

/// Most devices read per bus, and bytes per modalias: bounds on what sysfs can make the init
/// read (a machine has tens to hundreds of devices; a modalias is under 512 bytes).
const MAX_DEVICES_PER_BUS: usize = 4096;
const MAX_MODALIAS_BYTES: u64 = 4096;

/// Decides whether an `@device` module has a device: its aliases (from `<dir>/modules.alias`,
/// [`parse_modules_alias`]) against the `modalias` of every device of the buses in `sys_bus`,
/// read when first needed and again after [`DeviceMatch::devices_changed`]. An alias of the
/// `pci:` or `virtio:` kind reads only that bus; any other reads every bus (`of:` devices sit on
/// the platform bus, `acpi*:` ones on two).
#[derive(Debug)]
pub struct DeviceMatch {
    aliases: BTreeMap<String, Vec<String>>,
    sys_bus: PathBuf,
    buses: BTreeMap<String, Vec<String>>,
    all_read: bool,
}

impl DeviceMatch {
    /// Reads `<dir>/modules.alias`; a missing or unreadable one gives no aliases (every
    /// `@device` module is then loaded).
    pub fn new(dir: &Path, sys_bus: &Path) -> Self {
        let mut aliases: BTreeMap<String, Vec<String>> = BTreeMap::new();
        if let Ok(text) = std::fs::read_to_string(dir.join("modules.alias")) {
            for a in parse_modules_alias(&text) {
                aliases.entry(a.module).or_default().push(a.pattern);
            }
        }
        DeviceMatch {
            aliases,
            sys_bus: sys_bus.to_path_buf(),
            buses: BTreeMap::new(),
            all_read: false,
        }
    }

    /// Whether `module` is to be loaded: it has no alias, or a present device's modalias
    /// matches one ([`crate::sys::linux::fnmatch`]).
    pub fn wanted(&mut self, module: &str) -> bool {
        let Some(patterns) = self.aliases.get(module).filter(|p| !p.is_empty()).cloned() else {
            return true;
        };
        patterns.iter().any(|pattern| {
            let found = match pattern.split_once(':').map(|(bus, _)| bus) {
                Some(bus @ ("pci" | "virtio")) => self.bus(bus).to_vec(),
                _ => self.every_bus(),
            };
            found
                .iter()
                .any(|modalias| crate::sys::linux::fnmatch(pattern, modalias))
        })
    }

    /// Forgets what was read: a module was loaded, and its probe may have added devices.
    pub fn devices_changed(&mut self) {
        self.buses.clear();
        self.all_read = false;
    }

    fn bus(&mut self, bus: &str) -> &[String] {
        let dir = self.sys_bus.join(bus).join("devices");
        self.buses
            .entry(bus.to_owned())
            .or_insert_with(|| read_modaliases(&dir))
    }

    fn every_bus(&mut self) -> Vec<String> {
        if !self.all_read {
            let names: Vec<String> = std::fs::read_dir(&self.sys_bus)
                .map(|it| {
                    it.filter_map(Result::ok)
                        .filter_map(|e| e.file_name().into_string().ok())
                        .take(MAX_DEVICES_PER_BUS)
                        .collect()
                })
                .unwrap_or_default();
            for name in names {
                self.bus(&name);
            }
            self.all_read = true;
        }
        self.buses.values().flatten().cloned().collect()
    }
}

/// The `modalias` of each device under `devices` (one directory or link per device); devices
/// without one are skipped.
fn read_modaliases(devices: &Path) -> Vec<String> {
    use std::io::Read;
    let Ok(it) = std::fs::read_dir(devices) else {
        return Vec::new();
    };
    it.filter_map(Result::ok)
        .take(MAX_DEVICES_PER_BUS)
        .filter_map(|e| {
            let mut text = String::new();
            std::fs::File::open(e.path().join("modalias"))
                .ok()?
                .take(MAX_MODALIAS_BYTES)
                .read_to_string(&mut text)
                .ok()?;
            let text = text.trim();
            (!text.is_empty()).then(|| text.to_owned())
        })
        .collect()
}

/// Loads one module file with `params` (space-separated `name=value`): plain with
/// `finit_module`; compressed with the kernel's own decompression when it handles that format
/// (falling back to ours when it refuses: `EINVAL`, `EOPNOTSUPP`), else decompressed here and
/// loaded with `init_module`.
fn load_one(
    sys: &dyn Syscalls,
    path: &Path,
    params: &str,
    kernel_format: Option<&str>,
) -> Result<(), LoadError> {
    let c = Compression::of(path);
    if c == Compression::None {
        return sys.finit_module(path, params).map_err(LoadError::Sys);
    }
    if kernel_format == Some(c.sysfs_name()) {
        match sys.finit_module_compressed(path, params) {
            Err(e) if matches!(e.errno(), Some(libc::EINVAL | libc::EOPNOTSUPP)) => {}
            other => return other.map_err(LoadError::Sys),
        }
    }
    let data = std::fs::read(path).map_err(|e| LoadError::Decompress(DecompressError::Io(e)))?;
    let image = decompress(&data, c).map_err(LoadError::Decompress)?;
    sys.init_module(&image, params).map_err(LoadError::Sys)
}

/// Why [`load_one`] failed.
enum LoadError {
    Sys(SysError),
    Decompress(DecompressError),
}

/// The stage loading modules: the boot stage skips the modules `/etc/phase/modules.list` marks
/// `@target` (the rootfs mount's loop, squashfs and overlay; the power button's evdev and
/// button), which only the target stage uses (issue 18 §3: about a third of the module bytes,
/// each verified and linked by the kernel).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModuleStage {
    /// Before the kexec: network, cache disk, entropy.
    Boot,
    /// After the kexec, or in-process with `phase.kexec=never`: every listed module.
    Target,
}

/// Reads the modules `stage` loads from `list`, in list order, with their markers (a missing
/// list means no modules: a kernel with everything built in). Errors: [`ModulesError::List`] if
/// the file exists but cannot be read.
pub fn read_list(list: &Path, stage: ModuleStage) -> Result<Vec<ListedModule>, ModulesError> {
    match std::fs::read_to_string(list) {
        Ok(text) => Ok(parse_modules_list(&text)
            .into_iter()
            .filter(|m| stage == ModuleStage::Target || !m.target_only)
            .collect()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(source) => Err(ModulesError::List {
            path: list.to_path_buf(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::fake::Recording;

    /// The list entries of `text` (modules.list syntax).
    fn listed(text: &str) -> Vec<ListedModule> {
        parse_modules_list(text)
    }

    static NO_PARAMS: BTreeMap<String, Vec<String>> = BTreeMap::new();

    /// A [`LoadEnv`] with the kernel's decompression `format`, sysfs bus `bus`, no block
    /// devices directory (every `@disk` module loads) and no command-line parameters.
    fn env<'a>(format: Option<&'a str>, bus: &'a Path) -> LoadEnv<'a> {
        LoadEnv {
            kernel_format: format,
            sys_bus: bus,
            sys_block: Path::new("/nonexistent"),
            cmdline_params: &NO_PARAMS,
        }
    }

    /// [`load_with`] of `virtio_net` from `d` with the kernel's decompression `format`, no sysfs.
    fn load_virtio_net(
        f: &Recording,
        d: &tempfile::TempDir,
        format: Option<&str>,
    ) -> Result<Loaded, ModulesError> {
        load_with(
            f,
            d.path(),
            &listed("virtio_net"),
            env(format, Path::new("/nonexistent")),
        )
    }

    fn moddir() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(
            d.path().join("modules.dep"),
            "kernel/virtio_net.ko: kernel/net_failover.ko kernel/failover.ko\n\
             kernel/net_failover.ko: kernel/failover.ko\nkernel/failover.ko:\nkernel/overlay.ko:\n",
        )
        .unwrap();
        std::fs::write(d.path().join("modules.builtin"), "kernel/loop.ko\n").unwrap();
        d
    }

    /// The plain image both samples decompress to (made with `xz --check=crc32
    /// --lzma2=dict=1MiB` as kbuild does, and `zstd -19`).
    fn sample_image() -> Vec<u8> {
        "phase test module image ".repeat(40).into_bytes()
    }
    const SAMPLE_XZ: &[u8] = include_bytes!("modules/sample.ko.xz");
    const SAMPLE_ZST: &[u8] = include_bytes!("modules/sample.ko.zst");

    /// A modules dir whose two modules are xz and zstd compressed.
    fn compressed_moddir() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("kernel")).unwrap();
        std::fs::write(
            d.path().join("modules.dep"),
            "kernel/virtio_net.ko.xz: kernel/failover.ko.zst\nkernel/failover.ko.zst:\n",
        )
        .unwrap();
        std::fs::write(d.path().join("kernel/virtio_net.ko.xz"), SAMPLE_XZ).unwrap();
        std::fs::write(d.path().join("kernel/failover.ko.zst"), SAMPLE_ZST).unwrap();
        d
    }

    #[test]
    fn xz_and_zstd_samples_decompress_to_the_image() {
        assert_eq!(
            decompress(SAMPLE_XZ, Compression::Xz).unwrap(),
            sample_image()
        );
        assert_eq!(
            decompress(SAMPLE_ZST, Compression::Zstd).unwrap(),
            sample_image()
        );
    }

    #[test]
    fn corrupt_truncated_and_gzip_modules_are_errors_not_panics() {
        for (data, c) in [
            (&SAMPLE_XZ[..SAMPLE_XZ.len() / 2], Compression::Xz),
            (&SAMPLE_ZST[..SAMPLE_ZST.len() / 2], Compression::Zstd),
            (&b"not xz at all"[..], Compression::Xz),
            (&b"not zstd at all"[..], Compression::Zstd),
            (&b""[..], Compression::Zstd),
        ] {
            assert!(decompress(data, c).is_err(), "{c:?} {data:?}");
        }
        let mut flipped = SAMPLE_XZ.to_vec();
        flipped[SAMPLE_XZ.len() / 2] ^= 0xff;
        assert!(
            decompress(&flipped, Compression::Xz).is_err(),
            "xz CRC32 not checked"
        );
        assert!(matches!(
            decompress(b"\x1f\x8b", Compression::Gzip),
            Err(DecompressError::Unsupported("gzip"))
        ));
    }

    /// Found by the `module_decompress` fuzz target in lzma-rs (the decoder used first): an xz
    /// footer whose backward size is 0xffffffff overflowed `(backward_size + 1) << 2`.
    #[test]
    fn xz_footer_with_the_largest_backward_size_is_an_error_not_a_panic() {
        let crash: &[u8] = &[
            0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00, 0x00, 0x01, 0x69, 0x22, 0xde, 0x36, 0x02, 0x00,
            0x21, 0x01, 0x10, 0x00, 0x00, 0x00, 0xa8, 0x70, 0x8e, 0x86, 0xe0, 0x03, 0xbf, 0x00,
            0x24, 0x5d, 0x00, 0x38, 0x1a, 0x08, 0x48, 0x59, 0x21, 0xd0, 0x3b, 0x3d, 0x4f, 0xcb,
            0xc0, 0x8a, 0x78, 0xf7, 0xd0, 0x7e, 0x96, 0x7a, 0xdb, 0x25, 0x6c, 0x68, 0x20, 0x8a,
            0x12, 0xad, 0x92, 0x0a, 0xb7, 0x2a, 0x4e, 0x37, 0xf4, 0x00, 0x00, 0x00, 0x44, 0x1c,
            0x45, 0xa4, 0x00, 0x01, 0x3c, 0xc0, 0x07, 0x00, 0x00, 0x00, 0x69, 0xc3, 0x2f, 0xc4,
            0x3e, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
            0xff, 0xff, 0x30, 0x0d, 0x5a,
        ];
        assert!(decompress(crash, Compression::Xz).is_err());
    }

    #[test]
    fn an_xz_header_asking_for_a_huge_dictionary_is_refused_before_allocating() {
        // xz -9e uses a 64 MiB dictionary: allowed. A 1.5 GiB one (--lzma2=dict=1536MiB) is
        // refused by the decoder's memory limit.
        let big_dict = std::process::Command::new("sh")
            .args(["-c", "printf hello | xz --lzma2=dict=1536MiB -c"])
            .output()
            .unwrap();
        assert!(big_dict.status.success());
        assert!(decompress(&big_dict.stdout, Compression::Xz).is_err());
        let ok = std::process::Command::new("sh")
            .args(["-c", "printf hello | xz --lzma2=dict=1MiB -c"])
            .output()
            .unwrap();
        assert_eq!(decompress(&ok.stdout, Compression::Xz).unwrap(), b"hello");
    }

    #[test]
    fn xz_and_zstd_bombs_stop_at_the_cap() {
        // 80 MiB of zeros compress to a few KiB: decoding must stop at MAX_MODULE_BYTES.
        for (tool, c) in [
            ("zstd -q -1 -c", Compression::Zstd),
            ("xz -0 -c", Compression::Xz),
        ] {
            let big = std::process::Command::new("sh")
                .args(["-c", &format!("head -c 83886080 /dev/zero | {tool}")])
                .output()
                .unwrap();
            assert!(big.status.success() && big.stdout.len() < 1 << 20, "{tool}");
            assert!(
                matches!(decompress(&big.stdout, c), Err(DecompressError::TooLarge)),
                "{tool}"
            );
        }
    }

    #[test]
    fn compressed_modules_are_decompressed_here_when_the_kernel_cannot() {
        let d = compressed_moddir();
        let f = Recording::new();
        let l = load_virtio_net(&f, &d, None).unwrap();
        assert_eq!(l.loaded, ["failover", "virtio_net"]);
        let n = sample_image().len();
        assert_eq!(
            f.calls(),
            [
                format!("init_module {n} bytes "),
                format!("init_module {n} bytes ")
            ]
        );
    }

    #[test]
    fn compressed_modules_go_to_the_kernel_when_it_decompresses_that_format() {
        let d = compressed_moddir();
        let f = Recording::new();
        // The kernel does xz itself, not zstd.
        load_virtio_net(&f, &d, Some("xz")).unwrap();
        let root = d.path().display();
        assert_eq!(
            f.calls(),
            [
                format!("init_module {} bytes ", sample_image().len()),
                format!("finit_module_compressed {root}/kernel/virtio_net.ko.xz "),
            ]
        );
    }

    #[test]
    fn a_kernel_refusing_the_compressed_flag_falls_back_to_our_decompression() {
        let d = compressed_moddir();
        let f = Recording::new();
        f.fail_on("finit_module_compressed", libc::EOPNOTSUPP);
        let l = load_virtio_net(&f, &d, Some("xz")).unwrap();
        assert_eq!(l.loaded, ["failover", "virtio_net"]);
        assert_eq!(
            f.calls().last().unwrap(),
            &format!("init_module {} bytes ", sample_image().len())
        );
    }

    #[test]
    fn a_corrupt_compressed_module_is_a_decompress_error_naming_it() {
        let d = compressed_moddir();
        std::fs::write(d.path().join("kernel/failover.ko.zst"), b"garbage").unwrap();
        let f = Recording::new();
        let e = load_virtio_net(&f, &d, None).unwrap_err();
        assert!(matches!(e, ModulesError::Decompress { .. }), "{e}");
        assert!(e.to_string().contains("failover.ko.zst"), "{e}");
        assert!(f.calls().is_empty());
    }

    #[test]
    fn loads_dependencies_first_and_skips_builtins() {
        let d = moddir();
        let f = Recording::new();
        let l = load(&f, d.path(), &listed("virtio_net\nloop\noverlay"), "").unwrap();
        assert_eq!(
            l.loaded,
            ["failover", "net_failover", "virtio_net", "overlay"]
        );
        assert_eq!(l.builtin, ["loop"]);
        let root = d.path().display();
        assert_eq!(
            f.calls(),
            [
                format!("finit_module {root}/kernel/failover.ko "),
                format!("finit_module {root}/kernel/net_failover.ko "),
                format!("finit_module {root}/kernel/virtio_net.ko "),
                format!("finit_module {root}/kernel/overlay.ko "),
            ]
        );
    }

    #[test]
    fn kernel_without_a_modules_dir_loads_nothing_and_says_so() {
        let d = tempfile::tempdir().unwrap();
        let f = Recording::new();
        let dir = d.path().join("6.18.0-custom");
        let l = load(&f, &dir, &listed("virtio_net"), "").unwrap();
        assert_eq!(l.no_modules_for_kernel.as_deref(), Some(dir.as_path()));
        assert!(l.loaded.is_empty() && f.calls().is_empty());
    }

    #[test]
    fn existing_modules_dir_without_modules_dep_is_an_error() {
        let d = tempfile::tempdir().unwrap();
        let err = load(&Recording::new(), d.path(), &listed("loop"), "").unwrap_err();
        assert!(matches!(err, ModulesError::Resolve { .. }), "{err}");
    }

    #[test]
    fn already_loaded_module_is_fine() {
        let d = moddir();
        let f = Recording::new();
        f.fail_on(
            &format!("finit_module {}/kernel/failover.ko", d.path().display()),
            libc::EEXIST,
        );
        let l = load(&f, d.path(), &listed("virtio_net"), "").unwrap();
        assert_eq!(l.already, ["failover"]);
        assert_eq!(l.loaded, ["net_failover", "virtio_net"]);
    }

    #[test]
    fn missing_module_error_names_it_and_loads_nothing() {
        let d = moddir();
        let f = Recording::new();
        let e = load(&f, d.path(), &listed("virtio_net\nsquashfs"), "").unwrap_err();
        assert!(crate::log::error_chain(&e).contains("squashfs"), "{e}");
        assert!(f.calls().is_empty());
    }

    #[test]
    fn failed_load_names_the_module() {
        let d = moddir();
        let f = Recording::new();
        f.fail_on(
            &format!("finit_module {}/kernel/overlay.ko", d.path().display()),
            libc::ENOEXEC,
        );
        let e = load(&f, d.path(), &listed("overlay"), "").unwrap_err();
        assert!(
            matches!(&e, ModulesError::Load { name, .. } if name == "overlay"),
            "{e}"
        );
    }

    #[test]
    fn boot_stage_skips_target_only_modules_and_the_target_loads_all() {
        let d = tempfile::tempdir().unwrap();
        let list = d.path().join("modules.list");
        std::fs::write(&list, "virtio_net\nloop @target\nvfat\noverlay @target\n").unwrap();
        let names = |stage| -> Vec<String> {
            read_list(&list, stage)
                .unwrap()
                .into_iter()
                .map(|m| m.name)
                .collect()
        };
        assert_eq!(names(ModuleStage::Boot), ["virtio_net", "vfat"]);
        assert_eq!(
            names(ModuleStage::Target),
            ["virtio_net", "loop", "vfat", "overlay"]
        );
    }

    #[test]
    fn missing_list_means_no_modules() {
        assert!(
            read_list(Path::new("/nonexistent/modules.list"), ModuleStage::Boot)
                .unwrap()
                .is_empty()
        );
    }

    /// A module tree with virtio_pci, virtio_net, e1000 and overlay, their aliases, and a
    /// sysfs bus directory with one virtio PCI function (no Intel NIC), as in the QEMU boots.
    fn device_tree(alias: Option<&str>) -> (tempfile::TempDir, PathBuf) {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(
            d.path().join("modules.dep"),
            "kernel/virtio_pci.ko:\nkernel/virtio_net.ko:\nkernel/e1000.ko:\n\
             kernel/overlay.ko:\nkernel/of_drv.ko:\n",
        )
        .unwrap();
        if let Some(text) = alias {
            std::fs::write(d.path().join("modules.alias"), text).unwrap();
        }
        let bus = d.path().join("sys-bus");
        let dev = bus.join("pci/devices/0000:00:02.0");
        std::fs::create_dir_all(&dev).unwrap();
        std::fs::write(
            dev.join("modalias"),
            "pci:v00001AF4d00001000sv00001AF4sd00000001bc02sc00i00\n",
        )
        .unwrap();
        // A device without a modalias file is skipped.
        std::fs::create_dir_all(bus.join("pci/devices/0000:00:00.0")).unwrap();
        (d, bus)
    }

    const ALIASES: &str = "alias pci:v00001AF4d*sv*sd*bc*sc*i* virtio_pci\n\
                           alias virtio:d00000001v* virtio_net\n\
                           alias pci:v00008086d0000100Esv*sd*bc*sc*i* e1000\n\
                           alias of:N*T*Cvirtio,mmio of_drv\n";

    #[test]
    fn device_modules_load_only_for_a_present_device() {
        let (d, bus) = device_tree(Some(ALIASES));
        let f = Recording::new();
        let l = load_with(
            &f,
            d.path(),
            &listed("virtio_pci @device\ne1000 @device\noverlay\nof_drv @device"),
            env(None, &bus),
        )
        .unwrap();
        assert_eq!(l.loaded, ["virtio_pci", "overlay"]);
        assert_eq!(l.no_device, ["e1000", "of_drv"]);
        let root = d.path().display();
        assert_eq!(
            f.calls(),
            [
                format!("finit_module {root}/kernel/virtio_pci.ko "),
                format!("finit_module {root}/kernel/overlay.ko "),
            ]
        );
    }

    #[test]
    fn device_modules_without_aliases_are_loaded() {
        // No modules.alias at all, and one that does not name e1000: both load everything.
        for alias in [
            None,
            Some("alias pci:v00001AF4d*sv*sd*bc*sc*i* virtio_pci\n"),
        ] {
            let (d, bus) = device_tree(alias);
            let f = Recording::new();
            let l = load_with(&f, d.path(), &listed("e1000 @device"), env(None, &bus)).unwrap();
            assert_eq!(l.loaded, ["e1000"], "{alias:?}");
            assert!(l.no_device.is_empty());
        }
    }

    #[test]
    fn devices_are_read_again_after_a_module_was_loaded() {
        let (d, bus) = device_tree(Some(ALIASES));
        let mut m = DeviceMatch::new(d.path(), &bus);
        assert!(!m.wanted("virtio_net"), "no virtio bus yet");
        // virtio_pci's probe adds the virtio device.
        let dev = bus.join("virtio/devices/virtio0");
        std::fs::create_dir_all(&dev).unwrap();
        std::fs::write(dev.join("modalias"), "virtio:d00000001v00001AF4\n").unwrap();
        assert!(!m.wanted("virtio_net"), "read once until told");
        m.devices_changed();
        assert!(m.wanted("virtio_net"));
        assert!(m.wanted("virtio_pci"));
        assert!(!m.wanted("e1000"));
        assert!(m.wanted("not_in_modules_alias"));
    }

    #[test]
    fn an_alias_of_another_kind_is_matched_on_every_bus() {
        let (d, bus) = device_tree(Some(ALIASES));
        let dev = bus.join("platform/devices/a000000.virtio_mmio");
        std::fs::create_dir_all(&dev).unwrap();
        std::fs::write(dev.join("modalias"), "of:NvirtioT(null)Cvirtio,mmio\n").unwrap();
        assert!(DeviceMatch::new(d.path(), &bus).wanted("of_drv"));
    }

    /// A `/sys/block` with links named as `links` (name, target).
    fn block_dir(links: &[(&str, &str)]) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        for (name, target) in links {
            std::os::unix::fs::symlink(target, d.path().join(name)).unwrap();
        }
        d
    }

    #[test]
    fn a_disk_is_a_block_device_outside_devices_virtual() {
        let virtual_only = block_dir(&[
            ("loop0", "../devices/virtual/block/loop0"),
            ("ram0", "../devices/virtual/block/ram0"),
        ]);
        assert!(!disk_present(virtual_only.path()));
        assert!(!disk_present(block_dir(&[]).path()));
        let with_disk = block_dir(&[
            ("loop0", "../devices/virtual/block/loop0"),
            (
                "vda",
                "../devices/pci0000:00/0000:00:04.0/virtio1/block/vda",
            ),
        ]);
        assert!(disk_present(with_disk.path()));
        // Unreadable: fail open.
        assert!(disk_present(Path::new("/nonexistent/sys/block")));
    }

    #[test]
    fn disk_modules_load_only_with_a_disk_and_take_their_parameters() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(
            d.path().join("modules.dep"),
            "kernel/vfat.ko: kernel/fat.ko\nkernel/fat.ko:\nkernel/loop.ko:\nkernel/overlay.ko:\n",
        )
        .unwrap();
        let list = listed("vfat @disk\nloop max_loop=0\noverlay");
        let root = d.path().display();
        let no_bus = Path::new("/nonexistent");
        let cmdline = cmdline_params("console=ttyS0 loop.max_part=4 overlay.redirect_dir=on");

        let diskless = block_dir(&[("loop0", "../devices/virtual/block/loop0")]);
        let f = Recording::new();
        let run_env = LoadEnv {
            sys_block: diskless.path(),
            cmdline_params: &cmdline,
            ..env(None, no_bus)
        };
        let l = load_with(&f, d.path(), &list, run_env).unwrap();
        assert_eq!(l.loaded, ["loop", "overlay"]);
        assert_eq!(l.no_disk, ["vfat"]);
        assert_eq!(
            f.calls(),
            [
                format!("finit_module {root}/kernel/loop.ko max_loop=0 max_part=4"),
                format!("finit_module {root}/kernel/overlay.ko redirect_dir=on"),
            ]
        );

        let with_disk = block_dir(&[("vda", "../devices/pci0000:00/virtio1/block/vda")]);
        let f = Recording::new();
        let run_env = LoadEnv {
            sys_block: with_disk.path(),
            ..env(None, no_bus)
        };
        let l = load_with(&f, d.path(), &list, run_env).unwrap();
        assert_eq!(l.loaded, ["fat", "vfat", "loop", "overlay"]);
        assert!(l.no_disk.is_empty());
        // The list's parameters go to the listed module only, not to its dependencies.
        assert_eq!(f.calls()[0], format!("finit_module {root}/kernel/fat.ko "));
    }

    #[test]
    fn command_line_module_parameters_are_read_as_kmod_does() {
        let p = cmdline_params(
            "root=/dev/vda phase.mode=local loop.max_loop=8 ip-vs.conn_tab_bits=12 \
             usbcore.autosuspend=-1 nomodeset .x=1 y.=2 z.=3 vfat.flag a/b.c=1 \"q\".r=1 \
             overlay.x=\"a b\" -- loop.after=1",
        );
        assert_eq!(p["loop"], ["max_loop=8"]);
        assert_eq!(p["ip_vs"], ["conn_tab_bits=12"]);
        assert_eq!(p["usbcore"], ["autosuspend=-1"]);
        assert_eq!(p["vfat"], ["flag"]);
        assert_eq!(p["overlay"], ["x=\"a b\""]);
        assert_eq!(p["phase"], ["mode=local"]);
        assert!(!p.contains_key("") && !p.contains_key("y") && !p.contains_key("z"));
        assert_eq!(p.len(), 6, "{p:?}");
    }

    #[test]
    fn fnmatch_reads_wildcards_as_kmod_does() {
        use crate::sys::linux::fnmatch;
        assert!(fnmatch("virtio:d00000001v*", "virtio:d00000001v00001AF4"));
        assert!(!fnmatch("virtio:d00000001v*", "virtio:d00000002v00001AF4"));
        assert!(fnmatch("acpi*:PNP0C0C:*", "acpi:PNP0C0C:"));
        assert!(fnmatch("pci:v0000[0-9]*", "pci:v00008086"));
        assert!(!fnmatch("pci:v0000[0-7]*", "pci:v00008086"));
        // A NUL byte cannot reach C: counted as a match (load rather than leave out).
        assert!(fnmatch("a\0b", "c"));
    }
}
