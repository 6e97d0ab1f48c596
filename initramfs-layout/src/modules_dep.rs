//! `modules.dep` / `modules.builtin` parsing and dependency resolution (kmod's `depmod` output
//! format, `man 5 modules.dep`).
//!
//! Shared by the build (which copies the listed modules and their dependencies into the
//! initramfs) and by the init's "modules" stage (which loads them with `finit_module` in the
//! order returned by [`ModulesDep::resolve`]: dependencies first). A module is named as the
//! kernel names it: the file name without `.ko` (and `.xz`/`.zst`/`.gz`), `-` replaced by `_`
//! (`intel-uncore.ko` is `intel_uncore`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Errors of parsing or resolving module dependencies.
#[derive(Debug, thiserror::Error)]
pub enum ModulesDepError {
    /// Reading `modules.dep` (or `modules.builtin`) failed.
    #[error("reading {path}")]
    Read {
        /// File that could not be read.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A `modules.dep` line has no `:` separator.
    #[error("modules.dep line {line}: expected `path.ko: dep.ko ...`, got {text:?}")]
    Syntax {
        /// 1-based line number.
        line: usize,
        /// The offending line.
        text: String,
    },
    /// A wanted module is neither in `modules.dep` nor in `modules.builtin`.
    #[error("kernel module {name} not found in modules.dep or modules.builtin")]
    Missing {
        /// Normalised module name.
        name: String,
    },
    /// A dependency listed for `module` has no line of its own in `modules.dep`.
    #[error("kernel module {module} depends on {dep}, which has no modules.dep entry")]
    MissingDependency {
        /// The module whose line names the dependency.
        module: String,
        /// The dependency's normalised name.
        dep: String,
    },
    /// The dependency graph has a cycle; `chain` is the path that closes it (`a -> b -> a`).
    #[error("kernel module dependency cycle: {}", chain.join(" -> "))]
    Cycle {
        /// Module names along the cycle, first and last equal.
        chain: Vec<String>,
    },
}

/// One loadable module: its kernel name and its path relative to `/lib/modules/<kver>/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleFile {
    /// Normalised name (`virtio_net`).
    pub name: String,
    /// Path relative to the modules directory (`kernel/drivers/net/virtio_net.ko`).
    pub path: String,
}

/// The result of [`ModulesDep::resolve`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadPlan {
    /// Modules to load, each after all of its dependencies; no duplicates.
    pub modules: Vec<ModuleFile>,
    /// Wanted modules (or dependencies) built into the kernel: nothing to load.
    pub builtin: Vec<String>,
}

/// Parsed `modules.dep` plus the set of built-in module names.
#[derive(Debug, Clone, Default)]
pub struct ModulesDep {
    /// name -> (relative path, dependency names in file order).
    entries: BTreeMap<String, (String, Vec<String>)>,
    builtin: BTreeSet<String>,
}

/// The kernel's name for a module path: base name without `.ko[.xz|.zst|.gz]`, `-` -> `_`.
pub fn module_name(path: &str) -> String {
    let base = path.rsplit('/').next().unwrap_or(path);
    let base = [".ko.xz", ".ko.zst", ".ko.gz", ".ko"]
        .iter()
        .find_map(|ext| base.strip_suffix(ext))
        .unwrap_or(base);
    base.replace('-', "_")
}

/// One line of `/etc/phase/modules.list`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedModule {
    /// The module's name, normalised as [`module_name`].
    pub name: String,
    /// Marked `@target` ([`crate::kconfig::TARGET_ONLY`]): only the target stage loads it.
    pub target_only: bool,
    /// Marked `@device` ([`crate::kconfig::DEVICE_ONLY`]): loaded only when a present device's
    /// modalias matches one of its aliases ([`parse_modules_alias`]).
    pub device_only: bool,
    /// Marked `@disk` ([`crate::kconfig::DISK_ONLY`]): loaded only when a disk is present.
    pub disk_only: bool,
    /// Its parameters, `name=value` words ([`crate::kconfig::is_module_param`]), in order.
    pub params: Vec<String>,
}

/// Parses `/etc/phase/modules.list`: one module name per line, optionally followed by the
/// markers `@target`, `@device`, `@disk` and `name=value` parameters; `#` comments and blank
/// lines ignored, names normalised as [`module_name`]. Other words after the name are ignored
/// (an unknown marker then loads the module in every stage, whatever the hardware: loading one
/// module too many costs time, one too few can stop a boot).
pub fn parse_modules_list(text: &str) -> Vec<ListedModule> {
    text.lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .filter(|l| !l.is_empty())
        .map(|l| {
            let mut words = l.split_whitespace();
            let name = module_name(words.next().unwrap_or_default());
            let (mut target_only, mut device_only, mut disk_only) = (false, false, false);
            let mut params = Vec::new();
            for w in words {
                target_only |= w == crate::kconfig::TARGET_ONLY;
                device_only |= w == crate::kconfig::DEVICE_ONLY;
                disk_only |= w == crate::kconfig::DISK_ONLY;
                if crate::kconfig::is_module_param(w) {
                    params.push(w.to_owned());
                }
            }
            ListedModule {
                name,
                target_only,
                device_only,
                disk_only,
                params,
            }
        })
        .collect()
}

/// One line of `modules.alias` (depmod's output, `man 5 modules.alias` of kmod): the module
/// `module` (normalised as [`module_name`]) serves devices whose modalias matches `pattern`, a
/// shell wildcard pattern as `fnmatch(3)` reads it (`pci:v00008086d0000100Esv*sd*bc*sc*i*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleAlias {
    /// The wildcard pattern.
    pub pattern: String,
    /// The module's normalised name.
    pub module: String,
}

/// Parses `modules.alias`: `alias <pattern> <module>` lines; comments (`#`), blank lines and
/// lines of any other shape are skipped (kmod skips them too), so it never fails. Patterns and
/// names longer than 4096 bytes are skipped (no modalias is that long).
pub fn parse_modules_alias(text: &str) -> Vec<ModuleAlias> {
    const MAX: usize = 4096;
    text.lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            match (w.next(), w.next(), w.next(), w.next()) {
                (Some("alias"), Some(pattern), Some(module), None)
                    if pattern.len() <= MAX && module.len() <= MAX =>
                {
                    Some(ModuleAlias {
                        pattern: pattern.to_owned(),
                        module: module_name(module),
                    })
                }
                _ => None,
            }
        })
        .collect()
}

impl ModulesDep {
    /// Parses the text of `modules.dep` and `modules.builtin` (pass `""` when absent).
    /// Errors: [`ModulesDepError::Syntax`] for a non-empty line without `:`.
    pub fn parse(dep: &str, builtin: &str) -> Result<Self, ModulesDepError> {
        let mut entries = BTreeMap::new();
        for (i, raw) in dep.lines().enumerate() {
            let text = raw.trim();
            if text.is_empty() || text.starts_with('#') {
                continue;
            }
            let (path, deps) = text
                .split_once(':')
                .ok_or_else(|| ModulesDepError::Syntax {
                    line: i + 1,
                    text: raw.to_string(),
                })?;
            let path = path.trim().to_string();
            let deps = deps.split_whitespace().map(module_name).collect();
            entries.insert(module_name(&path), (path, deps));
        }
        let builtin = builtin
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(module_name)
            .collect();
        Ok(ModulesDep { entries, builtin })
    }

    /// Reads `<dir>/modules.dep` and, if present, `<dir>/modules.builtin`.
    /// Errors: [`ModulesDepError::Read`] (modules.dep missing or unreadable), or as [`Self::parse`].
    pub fn load(dir: &Path) -> Result<Self, ModulesDepError> {
        let dep_path = dir.join("modules.dep");
        let dep = std::fs::read_to_string(&dep_path).map_err(|source| ModulesDepError::Read {
            path: dep_path.clone(),
            source,
        })?;
        let builtin_path = dir.join("modules.builtin");
        let builtin = match std::fs::read_to_string(&builtin_path) {
            Ok(s) => s,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(source) => {
                return Err(ModulesDepError::Read {
                    path: builtin_path,
                    source,
                })
            }
        };
        Self::parse(&dep, &builtin)
    }

    /// True if `name` (normalised) is built into the kernel.
    pub fn is_builtin(&self, name: &str) -> bool {
        self.builtin.contains(&module_name(name))
    }

    /// Resolves `wanted` (names as in modules.list) to a load order: each module after its
    /// dependencies, each once; built-ins go to [`LoadPlan::builtin`]. Errors:
    /// [`ModulesDepError::Missing`] (a wanted name is unknown), [`ModulesDepError::MissingDependency`],
    /// [`ModulesDepError::Cycle`].
    pub fn resolve<S: AsRef<str>>(&self, wanted: &[S]) -> Result<LoadPlan, ModulesDepError> {
        let mut plan = LoadPlan::default();
        let mut done = BTreeSet::new();
        for w in wanted {
            let name = module_name(w.as_ref());
            if !self.entries.contains_key(&name) && !self.builtin.contains(&name) {
                return Err(ModulesDepError::Missing { name });
            }
            let mut stack = Vec::new();
            self.visit(&name, None, &mut stack, &mut done, &mut plan)?;
        }
        Ok(plan)
    }

    fn visit(
        &self,
        name: &str,
        parent: Option<&str>,
        stack: &mut Vec<String>,
        done: &mut BTreeSet<String>,
        plan: &mut LoadPlan,
    ) -> Result<(), ModulesDepError> {
        if done.contains(name) {
            return Ok(());
        }
        if let Some(pos) = stack.iter().position(|s| s == name) {
            let mut chain = stack[pos..].to_vec();
            chain.push(name.to_string());
            return Err(ModulesDepError::Cycle { chain });
        }
        let Some((path, deps)) = self.entries.get(name) else {
            // Not loadable: built-in (fine) or a dangling dependency.
            if self.builtin.contains(name) {
                done.insert(name.to_string());
                plan.builtin.push(name.to_string());
                return Ok(());
            }
            return Err(match parent {
                Some(p) => ModulesDepError::MissingDependency {
                    module: p.to_string(),
                    dep: name.to_string(),
                },
                None => ModulesDepError::Missing {
                    name: name.to_string(),
                },
            });
        };
        stack.push(name.to_string());
        // modules.dep lists the transitive closure with the deepest dependency last (modprobe
        // loads the list in reverse): visit in reverse so the natural order comes out.
        for d in deps.iter().rev() {
            self.visit(d, Some(name), stack, done, plan)?;
        }
        stack.pop();
        done.insert(name.to_string());
        plan.modules.push(ModuleFile {
            name: name.to_string(),
            path: path.clone(),
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEP: &str = "\
kernel/drivers/net/virtio_net.ko: kernel/drivers/net/net_failover.ko kernel/net/core/failover.ko
kernel/drivers/net/net_failover.ko: kernel/net/core/failover.ko
kernel/net/core/failover.ko:
kernel/fs/fat/vfat.ko: kernel/fs/fat/fat.ko
kernel/fs/fat/fat.ko:
kernel/arch/x86/events/intel/intel-uncore.ko:
kernel/fs/overlayfs/overlay.ko:
";
    const BUILTIN: &str = "kernel/drivers/block/loop.ko\nkernel/fs/squashfs/squashfs.ko\n";

    fn names(p: &LoadPlan) -> Vec<&str> {
        p.modules.iter().map(|m| m.name.as_str()).collect()
    }

    #[test]
    fn dependencies_come_first_and_once() {
        let d = ModulesDep::parse(DEP, BUILTIN).unwrap();
        let p = d.resolve(&["virtio_net", "net_failover", "vfat"]).unwrap();
        assert_eq!(
            names(&p),
            ["failover", "net_failover", "virtio_net", "fat", "vfat"]
        );
        assert_eq!(p.modules[2].path, "kernel/drivers/net/virtio_net.ko");
    }

    #[test]
    fn builtins_are_skipped_not_errors() {
        let d = ModulesDep::parse(DEP, BUILTIN).unwrap();
        let p = d.resolve(&["loop", "squashfs", "overlay"]).unwrap();
        assert_eq!(names(&p), ["overlay"]);
        assert_eq!(p.builtin, ["loop", "squashfs"]);
    }

    #[test]
    fn dashes_and_suffixes_are_normalised() {
        let d = ModulesDep::parse(DEP, "").unwrap();
        assert_eq!(
            names(&d.resolve(&["intel-uncore"]).unwrap()),
            ["intel_uncore"]
        );
        assert_eq!(module_name("kernel/x/foo-bar.ko.zst"), "foo_bar");
    }

    #[test]
    fn missing_module_is_named() {
        let d = ModulesDep::parse(DEP, BUILTIN).unwrap();
        let e = d.resolve(&["virtio_net", "nosuchmod"]).unwrap_err();
        assert!(
            matches!(&e, ModulesDepError::Missing { name } if name == "nosuchmod"),
            "{e}"
        );
        assert!(e.to_string().contains("nosuchmod"));
    }

    #[test]
    fn missing_dependency_entry_is_refused() {
        let d = ModulesDep::parse("a.ko: b.ko\n", "").unwrap();
        let e = d.resolve(&["a"]).unwrap_err();
        assert!(
            matches!(&e, ModulesDepError::MissingDependency { module, dep } if module == "a" && dep == "b"),
            "{e}"
        );
    }

    #[test]
    fn cycle_is_detected_with_its_chain() {
        let d = ModulesDep::parse("a.ko: b.ko\nb.ko: c.ko\nc.ko: a.ko\n", "").unwrap();
        let e = d.resolve(&["a"]).unwrap_err();
        match e {
            ModulesDepError::Cycle { chain } => assert_eq!(chain, ["a", "b", "c", "a"]),
            other => panic!("expected a cycle, got {other}"),
        }
    }

    #[test]
    fn line_without_colon_is_a_syntax_error() {
        let e = ModulesDep::parse("kernel/a.ko\n", "").unwrap_err();
        assert!(matches!(e, ModulesDepError::Syntax { line: 1, .. }));
    }

    #[test]
    fn modules_list_ignores_comments_and_blanks() {
        let names: Vec<String> =
            parse_modules_list("# net\nvirtio_net\n\n  loop  # block\nintel-uncore\n")
                .into_iter()
                .map(|m| m.name)
                .collect();
        assert_eq!(names, ["virtio_net", "loop", "intel_uncore"]);
    }

    #[test]
    fn modules_list_marks_target_only_modules_and_ignores_other_words() {
        let listed = parse_modules_list("virtio_net\nloop @target\nevdev @later\ne1000 @device\n");
        let flags: Vec<(&str, bool, bool)> = listed
            .iter()
            .map(|m| (m.name.as_str(), m.target_only, m.device_only))
            .collect();
        assert_eq!(
            flags,
            [
                ("virtio_net", false, false),
                ("loop", true, false),
                ("evdev", false, false),
                ("e1000", false, true)
            ]
        );
    }

    #[test]
    fn modules_list_reads_the_disk_marker_and_parameters() {
        let listed = parse_modules_list("vfat @disk\nloop @target max_loop=0 junk x=\"1\"\n");
        assert!(listed[0].disk_only && listed[0].params.is_empty());
        assert!(listed[1].target_only && !listed[1].disk_only);
        assert_eq!(listed[1].params, ["max_loop=0"]);
    }

    #[test]
    fn modules_alias_keeps_alias_lines_and_skips_the_rest() {
        let text = "# Aliases extracted from modules themselves.\n\
                    alias pci:v00008086d0000100Esv*sd*bc*sc*i* e1000\n\
                    alias virtio:d00000001v* virtio-net\n\
                    alias fs-vfat\n\
                    softdep virtio_net pre: failover\n\
                    alias a b c\n\n";
        let a = parse_modules_alias(text);
        assert_eq!(
            a,
            [
                ModuleAlias {
                    pattern: "pci:v00008086d0000100Esv*sd*bc*sc*i*".into(),
                    module: "e1000".into()
                },
                ModuleAlias {
                    pattern: "virtio:d00000001v*".into(),
                    module: "virtio_net".into()
                }
            ]
        );
        let long = format!("alias {} m\n", "x".repeat(5000));
        assert!(parse_modules_alias(&long).is_empty());
    }

    #[test]
    fn host_modules_dep_resolves_virtio_net_when_present() {
        let Some(dir) = std::fs::read_dir("/lib/modules")
            .ok()
            .and_then(|mut it| it.find_map(|e| e.ok()).map(|e| e.path()))
            .filter(|d| d.join("modules.dep").exists())
        else {
            eprintln!("SKIP: no /lib/modules/*/modules.dep on this machine");
            return;
        };
        let d = ModulesDep::load(&dir).unwrap();
        let p = d.resolve(&["virtio_net"]).unwrap();
        assert_eq!(
            p.modules.last().map(|m| m.name.as_str()),
            Some("virtio_net")
        );
        let pos = |n: &str| p.modules.iter().position(|m| m.name == n);
        if let (Some(f), Some(v)) = (pos("failover"), pos("net_failover")) {
            assert!(f < v, "failover must load before net_failover");
        }
    }
}
