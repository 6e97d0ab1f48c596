//! Kernel configuration checks: `make check-kernel-config` and the last step of `make kernel`.
//!
//! Build time only (issue 8). Inputs:
//! - a kernel `.config` (`/boot/config-<kver>` of a distro kernel, or the one `make kernel` made);
//! - the fragment `kernel-config/phase.config`: `CONFIG_X=y` lines (plus `# CONFIG_X is not set`
//!   and string/number values for the custom build). Comment lines `# phase:required`,
//!   `# phase:recommended` and `# phase:build` set the class of the options that follow:
//!   a distro kernel without a *required* option cannot run Phase Boot, a missing *recommended*
//!   one is a warning, *build* options only matter to `make kernel`;
//! - the module list `kernel-config/modules.list`:
//!   `<module> [@target] [@device] [@disk] [param=value ...] CONFIG_A [CONFIG_B ...]` per line
//!   (`#` comments), in load order; `@target` marks a module only the target stage needs (the
//!   rootfs mount, the power button), which the boot stage does not load; `@device` and `@disk`
//!   ([`DEVICE_ONLY`], [`DISK_ONLY`]) modules that wait for hardware; `param=value` words are
//!   the module's parameters (as in modprobe.d's `options` lines). A required
//!   option that the kernel has as `=m` is only usable when the initramfs carries its module,
//!   i.e. when some line maps it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// An error reading a configuration input.
#[derive(Debug, thiserror::Error)]
pub enum KconfigError {
    /// A file could not be read.
    #[error("cannot read {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A line of the fragment or module list is malformed.
    #[error("{path}:{line}: {message}")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        message: String,
    },
}

/// A parsed kernel `.config`: option name (`CONFIG_X`) to value (`y`, `m`, `"text"`, `17`;
/// `n` for `# CONFIG_X is not set`).
pub type Config = BTreeMap<String, String>;

/// How much an option of the fragment matters to a distro kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Class {
    /// Without it Phase Boot cannot run.
    Required,
    /// Without it something degrades (e.g. no ACPI power-off); reported as a warning.
    Recommended,
    /// Only for `make kernel` (e.g. a smaller build); not checked on distro kernels.
    Build,
}

/// One option of the fragment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FragmentOption {
    /// `CONFIG_X`.
    pub name: String,
    /// Requested value (`y`, `n`, a string with quotes, a number).
    pub value: String,
    /// Its class.
    pub class: Class,
}

/// One line of `kernel-config/modules.list`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleLine {
    /// Module name as `modprobe` spells it (`virtio_net`).
    pub module: String,
    /// Options this module provides when they are `=m`.
    pub options: Vec<String>,
    /// `@target`: only the target stage loads it (see [`TARGET_ONLY`]).
    pub target_only: bool,
    /// `@device`: loaded only for a device present at its turn (see [`DEVICE_ONLY`]).
    pub device_only: bool,
    /// `@disk`: loaded only when a disk is present at its turn (see [`DISK_ONLY`]).
    pub disk_only: bool,
    /// Module parameters, `name=value` words in list order (see [`is_module_param`]).
    pub params: Vec<String>,
}

/// The marker, after the module name in `modules.list` and in the installed
/// `/etc/phase/modules.list`, of a module only the target stage needs.
pub const TARGET_ONLY: &str = "@target";

/// The marker of a device driver that is loaded only when a device present at its turn in the
/// list has a `modalias` (sysfs) that one of the module's aliases (`modules.alias`, written by
/// depmod from the module's `.modinfo`) matches: e1000 is not loaded in a VM with virtio-net
/// only. For drivers of devices present at power-on (PCI, virtio, ACPI), not hotplugged ones.
pub const DEVICE_ONLY: &str = "@device";

/// The marker of a module only a disk makes useful (the file systems of the cache partition:
/// vfat and its code pages): loaded only when, at its turn in the list, `/sys/block` holds a
/// device that is not virtual (not under `/sys/devices/virtual`: loop, ram and zram are).
/// A diskless netboot machine skips them in both stages.
pub const DISK_ONLY: &str = "@disk";

/// Whether `word` is a module parameter as `modules.list` takes it: `name=value`, the name of
/// ASCII letters, digits, `_` and `-` (the kernel treats `-` as `_`), the value non-empty and
/// without quotes (`max_loop=0`). Values with spaces are not supported.
pub fn is_module_param(word: &str) -> bool {
    match word.split_once('=') {
        Some((name, value)) => {
            !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
                && !value.is_empty()
                && !value.contains(['"', '\''])
        }
        None => false,
    }
}

/// Reads a file into a string.
fn read(path: &Path) -> Result<String, KconfigError> {
    std::fs::read_to_string(path).map_err(|source| KconfigError::Read {
        path: path.to_owned(),
        source,
    })
}

/// Parses `.config` text. Lines that are neither `CONFIG_X=v` nor `# CONFIG_X is not set` are
/// ignored, as kconfig does.
pub fn parse_config(text: &str) -> Config {
    let mut out = Config::new();
    for line in text.lines() {
        let line = line.trim();
        if let Some(rest) = line.strip_prefix("# ") {
            if let Some(name) = rest.strip_suffix(" is not set") {
                if name.starts_with("CONFIG_") && !name.contains(' ') {
                    out.insert(name.to_owned(), "n".to_owned());
                }
            }
        } else if let Some((name, value)) = line.split_once('=') {
            if name.starts_with("CONFIG_") {
                out.insert(name.to_owned(), value.to_owned());
            }
        }
    }
    out
}

/// Reads and parses a kernel `.config`.
///
/// # Errors
/// [`KconfigError::Read`].
pub fn load_config(path: &Path) -> Result<Config, KconfigError> {
    Ok(parse_config(&read(path)?))
}

/// Parses fragment text (`origin` names it in errors).
///
/// # Errors
/// [`KconfigError::Syntax`] for a line that is not an option, a comment or a class marker.
pub fn parse_fragment(text: &str, origin: &Path) -> Result<Vec<FragmentOption>, KconfigError> {
    let mut class = Class::Required;
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        let syntax = |message: &str| KconfigError::Syntax {
            path: origin.to_owned(),
            line: i + 1,
            message: message.to_owned(),
        };
        match line {
            "" => continue,
            "# phase:required" => class = Class::Required,
            "# phase:recommended" => class = Class::Recommended,
            "# phase:build" => class = Class::Build,
            _ if line.starts_with("# phase:") => return Err(syntax("unknown class marker")),
            _ => {
                let parsed = parse_config(line);
                match parsed.into_iter().next() {
                    Some((name, value)) => out.push(FragmentOption { name, value, class }),
                    None if line.starts_with('#') => continue,
                    None => return Err(syntax("expected CONFIG_X=value")),
                }
            }
        }
    }
    Ok(out)
}

/// Reads and parses the fragment file.
///
/// # Errors
/// [`KconfigError::Read`], [`KconfigError::Syntax`].
pub fn load_fragment(path: &Path) -> Result<Vec<FragmentOption>, KconfigError> {
    parse_fragment(&read(path)?, path)
}

/// Parses module list text (`origin` names it in errors).
///
/// # Errors
/// [`KconfigError::Syntax`] for a line with a module name but no `CONFIG_` option, a module
/// name containing `/`, an `@` marker other than [`TARGET_ONLY`], [`DEVICE_ONLY`] and
/// [`DISK_ONLY`], one given twice, or a word between the markers and the options that is not
/// a module parameter ([`is_module_param`]).
pub fn parse_modules_list(text: &str, origin: &Path) -> Result<Vec<ModuleLine>, KconfigError> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.split('#').next().unwrap_or_default().trim();
        if line.is_empty() {
            continue;
        }
        let syntax = |message: &str| KconfigError::Syntax {
            path: origin.to_owned(),
            line: i + 1,
            message: message.to_owned(),
        };
        let mut words = line.split_whitespace();
        let module = words.next().unwrap_or_default().to_owned();
        if module.contains('/') || module.starts_with("CONFIG_") {
            return Err(syntax("expected a module name first"));
        }
        let mut words = words.peekable();
        let (mut target_only, mut device_only, mut disk_only) = (false, false, false);
        while let Some(marker) = words.next_if(|w| w.starts_with('@')) {
            let seen = match marker {
                TARGET_ONLY => std::mem::replace(&mut target_only, true),
                DEVICE_ONLY => std::mem::replace(&mut device_only, true),
                DISK_ONLY => std::mem::replace(&mut disk_only, true),
                _ => {
                    return Err(syntax(
                        "the markers after a module name are `@target`, `@device` and `@disk`",
                    ))
                }
            };
            if seen {
                return Err(syntax("a marker given twice"));
            }
        }
        let mut params = Vec::new();
        while let Some(p) = words.next_if(|w| !w.starts_with("CONFIG_")) {
            if !is_module_param(p) {
                return Err(syntax(&format!(
                    "`{p}` is not a module parameter `name=value` (no spaces or quotes)"
                )));
            }
            params.push(p.to_owned());
        }
        let options: Vec<String> = words.map(str::to_owned).collect();
        if options.is_empty() || options.iter().any(|o| !o.starts_with("CONFIG_")) {
            return Err(syntax(
                "expected `<module> [@target] [@device] [@disk] [param=value ...] CONFIG_X [CONFIG_Y ...]`",
            ));
        }
        out.push(ModuleLine {
            module,
            options,
            target_only,
            device_only,
            disk_only,
            params,
        });
    }
    Ok(out)
}

/// Reads and parses `kernel-config/modules.list`.
///
/// # Errors
/// [`KconfigError::Read`], [`KconfigError::Syntax`].
pub fn load_modules_list(path: &Path) -> Result<Vec<ModuleLine>, KconfigError> {
    parse_modules_list(&read(path)?, path)
}

/// What a distro kernel's config means for Phase Boot.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Required options that are unset or absent.
    pub missing_required: Vec<String>,
    /// Required options that are `=m` but no line of modules.list provides them.
    pub modular_unlisted: Vec<String>,
    /// Recommended options that are unset or absent (warnings).
    pub missing_recommended: Vec<String>,
    /// Modules the initramfs must carry (modules.list order): those with an option at `=m`.
    pub modules: Vec<String>,
    /// Modules of modules.list whose options are all built in (`=y`): nothing to load.
    pub builtin: Vec<String>,
}

impl Report {
    /// True when the kernel can run Phase Boot with the listed modules.
    pub fn usable(&self) -> bool {
        self.missing_required.is_empty() && self.modular_unlisted.is_empty()
    }
}

/// Checks a distro kernel `config` against the fragment and the module list.
///
/// Only `=y` options of the `Required`/`Recommended` classes are checked; `=m` in the config
/// satisfies them when a modules.list line maps the option.
pub fn check_distro(
    config: &Config,
    fragment: &[FragmentOption],
    modules: &[ModuleLine],
) -> Report {
    let mut report = Report::default();
    let mapped = |name: &str| modules.iter().any(|m| m.options.iter().any(|o| o == name));
    for opt in fragment
        .iter()
        .filter(|o| o.value == "y" && o.class != Class::Build)
    {
        let have = config.get(&opt.name).map(String::as_str);
        let missing = match opt.class {
            Class::Required => &mut report.missing_required,
            _ => &mut report.missing_recommended,
        };
        match have {
            Some("y") => {}
            Some("m") if mapped(&opt.name) => {}
            Some("m") if opt.class == Class::Required => {
                report.modular_unlisted.push(opt.name.clone())
            }
            Some("m") => missing.push(opt.name.clone()),
            _ => missing.push(opt.name.clone()),
        }
    }
    for line in modules {
        let values: Vec<Option<&str>> = line
            .options
            .iter()
            .map(|o| config.get(o).map(String::as_str))
            .collect();
        if values.contains(&Some("m")) {
            report.modules.push(line.module.clone());
        } else if values.iter().all(|v| *v == Some("y")) {
            report.builtin.push(line.module.clone());
        }
    }
    report
}

/// A fragment option whose value did not survive `make olddefconfig`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    /// `CONFIG_X`.
    pub name: String,
    /// The fragment's value.
    pub wanted: String,
    /// The resulting value (`None`: absent, i.e. its dependencies are not met).
    pub got: Option<String>,
}

/// Compares a freshly configured `.config` with every option of the fragment (all classes):
/// `make kernel` fails on any mismatch. `n` matches an absent option.
pub fn check_exact(config: &Config, fragment: &[FragmentOption]) -> Vec<Mismatch> {
    fragment
        .iter()
        .filter_map(|opt| {
            let got = config.get(&opt.name);
            let ok = match got {
                Some(v) => *v == opt.value,
                None => opt.value == "n",
            };
            (!ok).then(|| Mismatch {
                name: opt.name.clone(),
                wanted: opt.value.clone(),
                got: got.cloned(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const FRAGMENT: &str = "\
# phase:required
CONFIG_KEXEC_FILE=y
CONFIG_OVERLAY_FS=y
CONFIG_VFAT_FS=y
# phase:recommended
CONFIG_ACPI=y
# phase:build
CONFIG_CMDLINE=\"\"
# CONFIG_MODULES is not set
";
    const MODULES: &str =
        "overlay CONFIG_OVERLAY_FS\nvfat CONFIG_VFAT_FS CONFIG_FAT_FS # fat via modules.dep\n";

    fn inputs() -> (Vec<FragmentOption>, Vec<ModuleLine>) {
        (
            parse_fragment(FRAGMENT, Path::new("f")).unwrap(),
            parse_modules_list(MODULES, Path::new("m")).unwrap(),
        )
    }

    #[test]
    fn fragment_classes_follow_markers() {
        let (f, _) = inputs();
        assert_eq!(f.len(), 6);
        assert_eq!(f[0].class, Class::Required);
        assert_eq!(
            f[3],
            FragmentOption {
                name: "CONFIG_ACPI".into(),
                value: "y".into(),
                class: Class::Recommended
            }
        );
        assert_eq!(f[5].value, "n");
        assert_eq!(f[5].class, Class::Build);
    }

    #[test]
    fn modular_options_are_usable_and_listed_as_modules() {
        let (f, m) = inputs();
        let cfg = parse_config("CONFIG_KEXEC_FILE=y\nCONFIG_OVERLAY_FS=m\nCONFIG_VFAT_FS=y\nCONFIG_FAT_FS=m\nCONFIG_ACPI=y\n");
        let r = check_distro(&cfg, &f, &m);
        assert!(r.usable(), "{r:?}");
        assert_eq!(r.modules, ["overlay", "vfat"]);
        assert!(r.builtin.is_empty());
    }

    #[test]
    fn kexec_file_unset_makes_kernel_unusable() {
        let (f, m) = inputs();
        let cfg = parse_config("# CONFIG_KEXEC_FILE is not set\nCONFIG_OVERLAY_FS=y\nCONFIG_VFAT_FS=y\nCONFIG_FAT_FS=y\n");
        let r = check_distro(&cfg, &f, &m);
        assert!(!r.usable());
        assert_eq!(r.missing_required, ["CONFIG_KEXEC_FILE"]);
        assert_eq!(r.missing_recommended, ["CONFIG_ACPI"]);
        assert_eq!(r.builtin, ["overlay", "vfat"]);
    }

    #[test]
    fn required_module_without_modules_list_line_is_unusable() {
        let (f, _) = inputs();
        let cfg = parse_config(
            "CONFIG_KEXEC_FILE=y\nCONFIG_OVERLAY_FS=m\nCONFIG_VFAT_FS=y\nCONFIG_ACPI=y\n",
        );
        let r = check_distro(&cfg, &f, &[]);
        assert!(!r.usable());
        assert_eq!(r.modular_unlisted, ["CONFIG_OVERLAY_FS"]);
    }

    #[test]
    fn exact_check_reports_dropped_and_changed_options() {
        let (f, _) = inputs();
        let cfg = parse_config(
            "CONFIG_KEXEC_FILE=y\nCONFIG_OVERLAY_FS=m\nCONFIG_ACPI=y\nCONFIG_CMDLINE=\"\"\n",
        );
        let bad = check_exact(&cfg, &f);
        let names: Vec<&str> = bad.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["CONFIG_OVERLAY_FS", "CONFIG_VFAT_FS"]);
        assert_eq!(bad[1].got, None);
    }

    #[test]
    fn exact_check_passes_when_everything_survived() {
        let (f, _) = inputs();
        let cfg = parse_config("CONFIG_KEXEC_FILE=y\nCONFIG_OVERLAY_FS=y\nCONFIG_VFAT_FS=y\nCONFIG_ACPI=y\nCONFIG_CMDLINE=\"\"\n# CONFIG_MODULES is not set\n");
        assert!(check_exact(&cfg, &f).is_empty());
    }

    #[test]
    fn target_marker_follows_the_module_name() {
        let lines = parse_modules_list(
            "virtio_net CONFIG_VIRTIO_NET\nloop @target CONFIG_BLK_DEV_LOOP # rootfs\n",
            Path::new("m"),
        )
        .unwrap();
        assert!(!lines[0].target_only);
        assert!(lines[1].target_only);
        assert_eq!(lines[1].module, "loop");
        assert_eq!(lines[1].options, ["CONFIG_BLK_DEV_LOOP"]);
    }

    #[test]
    fn device_marker_alone_or_with_target_in_either_order() {
        let lines = parse_modules_list(
            "e1000 @device CONFIG_E1000
button @device @target CONFIG_ACPI_BUTTON
\
             evdev @target @device CONFIG_INPUT_EVDEV
loop @target CONFIG_BLK_DEV_LOOP
",
            Path::new("m"),
        )
        .unwrap();
        let flags: Vec<(bool, bool)> = lines
            .iter()
            .map(|l| (l.target_only, l.device_only))
            .collect();
        assert_eq!(
            flags,
            [(false, true), (true, true), (true, true), (true, false)]
        );
        let twice = parse_modules_list(
            "e1000 @device @device CONFIG_E1000
",
            Path::new("m"),
        );
        assert!(twice.unwrap_err().to_string().contains("twice"));
    }

    #[test]
    fn disk_marker_and_parameters_are_read_and_bad_parameters_refused() {
        let lines = parse_modules_list(
            "vfat @disk CONFIG_VFAT_FS CONFIG_FAT_FS\nloop @target max_loop=0 CONFIG_BLK_DEV_LOOP\n",
            Path::new("m"),
        )
        .unwrap();
        assert!(lines[0].disk_only && !lines[0].target_only && lines[0].params.is_empty());
        assert_eq!(lines[0].options, ["CONFIG_VFAT_FS", "CONFIG_FAT_FS"]);
        assert!(lines[1].target_only && !lines[1].disk_only);
        assert_eq!(lines[1].params, ["max_loop=0"]);
        assert_eq!(lines[1].options, ["CONFIG_BLK_DEV_LOOP"]);
        for bad in [
            "loop max_loop CONFIG_BLK_DEV_LOOP\n",
            "loop max_loop= CONFIG_BLK_DEV_LOOP\n",
            "loop =0 CONFIG_BLK_DEV_LOOP\n",
            "loop a\"b=1 CONFIG_BLK_DEV_LOOP\n",
            "loop max_loop=\"0\" CONFIG_BLK_DEV_LOOP\n",
            "loop max_loop=0\n",
            "vfat @disk @disk CONFIG_VFAT_FS\n",
        ] {
            let err = parse_modules_list(bad, Path::new("m")).unwrap_err();
            assert!(err.to_string().starts_with("m:1:"), "{bad:?}: {err}");
        }
    }

    #[test]
    fn malformed_lines_are_errors_with_line_numbers() {
        let err = parse_fragment("CONFIG_A=y\nbogus\n", Path::new("f")).unwrap_err();
        assert!(err.to_string().starts_with("f:2:"), "{err}");
        assert!(parse_fragment("# phase:optional\n", Path::new("f")).is_err());
        assert!(parse_modules_list("overlay\n", Path::new("m")).is_err());
        assert!(parse_modules_list("overlay @target\n", Path::new("m")).is_err());
        assert!(parse_modules_list("overlay @boot CONFIG_OVERLAY_FS\n", Path::new("m")).is_err());
        assert!(parse_modules_list("CONFIG_X overlay\n", Path::new("m")).is_err());
    }
}
