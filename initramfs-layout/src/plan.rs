//! Resolving a [`Layout`] into the exact, sorted list of archive entries, and writing it out.
//!
//! Build time only (issue 8): `phase-layout initramfs` writes the plan as a reproducible newc
//! cpio ([`crate::newc`]: sorted names, mtime 0, uid/gid 0), `phase-layout rootfs-tree`
//! populates a directory for `mksquashfs`, and `phase-layout list` prints it (the build tests
//! compare that listing with `cpio -t`). Kernel modules are resolved with
//! [`crate::modules_dep`] so the initramfs carries exactly the listed modules and their
//! dependencies, plus `modules.dep`/`modules.order` filtered to them and `modules.builtin`.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::kconfig::{self, KconfigError};
use crate::layout::{is_clean_absolute, Layout, NodeKind};
use crate::modules_dep::{ModulesDep, ModulesDepError};
use crate::newc::{Entry, EntryKind, NewcError, NewcWriter};

/// An error resolving or writing a plan.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// A file the layout needs is missing or unreadable on the build host.
    #[error("layout entry {path}: cannot read source {source_path}")]
    Source {
        /// Archive path of the entry.
        path: String,
        /// Host path that failed.
        source_path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Two entries want the same archive path with different contents.
    #[error("layout: {path} is defined twice ({first} and {second})")]
    Conflict {
        /// The archive path.
        path: String,
        /// What was there first.
        first: String,
        /// What came second.
        second: String,
    },
    /// A `[[tree]]` holds a name that cannot go into an archive (not UTF-8, or special file).
    #[error("layout tree {source_path}: unsupported entry")]
    TreeEntry {
        /// The host path.
        source_path: PathBuf,
    },
    /// The layout has `[modules]` but no kernel version was given.
    #[error("the layout lists kernel modules: pass --kver (and --modules-root)")]
    NoKernelVersion,
    /// The module list could not be read.
    #[error("reading the module list")]
    ModulesList(#[source] KconfigError),
    /// `modules.dep` could not be read or a module could not be resolved.
    #[error("resolving kernel modules for {kver} in {dir}")]
    Modules {
        /// Kernel version.
        kver: String,
        /// The modules directory (`/lib/modules/<kver>`).
        dir: PathBuf,
        /// The resolution error.
        #[source]
        source: ModulesDepError,
    },
    /// Writing the cpio archive failed.
    #[error("writing the cpio archive")]
    Cpio(#[source] NewcError),
    /// Creating something in the output directory failed.
    #[error("rootfs tree: cannot create {path}")]
    Output {
        /// The host path.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The output directory exists and is not empty.
    #[error("rootfs tree: output directory {0} is not empty")]
    OutputNotEmpty(PathBuf),
}

/// What one entry of a plan is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// A directory.
    Dir,
    /// A regular file copied from the host path.
    File(PathBuf),
    /// A regular file with generated contents (the module list, filtered modules.dep).
    Data(Vec<u8>),
    /// A symbolic link to the target.
    Symlink(String),
    /// A device node.
    Node {
        /// Character or block.
        kind: NodeKind,
        /// Major number.
        major: u32,
        /// Minor number.
        minor: u32,
    },
}

/// One resolved entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanEntry {
    /// Permission bits.
    pub mode: u32,
    /// What it is.
    pub kind: Kind,
}

/// Where kernel modules come from.
#[derive(Debug, Clone)]
pub struct KernelModules {
    /// Kernel version (`6.1.0-56-amd64`).
    pub kver: String,
    /// Directory holding `<kver>/` (normally `/lib/modules`).
    pub root: PathBuf,
}

/// A resolved layout: absolute archive path -> entry, sorted by path (byte order, so each
/// directory precedes its contents), plus the optional entries that were skipped.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// The entries.
    pub entries: BTreeMap<String, PlanEntry>,
    /// Optional files whose source was absent (archive path, host path).
    pub skipped: Vec<(String, PathBuf)>,
    /// Modules built into the kernel, so not carried.
    pub builtin_modules: Vec<String>,
}

fn describe(e: &PlanEntry) -> String {
    match &e.kind {
        Kind::Dir => "dir".to_owned(),
        Kind::File(p) => format!("file {}", p.display()),
        Kind::Data(d) => format!("generated {} bytes", d.len()),
        Kind::Symlink(t) => format!("symlink -> {t}"),
        Kind::Node { major, minor, .. } => format!("node {major}:{minor}"),
    }
}

impl Plan {
    /// Adds `entry` at `path`, creating missing parent directories (mode 0755).
    fn add(&mut self, path: &str, entry: PlanEntry) -> Result<(), PlanError> {
        let mut parent = String::new();
        let parts: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
        for part in parts.iter().take(parts.len().saturating_sub(1)) {
            parent.push('/');
            parent.push_str(part);
            self.add_one(
                &parent.clone(),
                PlanEntry {
                    mode: 0o755,
                    kind: Kind::Dir,
                },
            )?;
        }
        self.add_one(path, entry)
    }

    fn add_one(&mut self, path: &str, entry: PlanEntry) -> Result<(), PlanError> {
        match self.entries.get(path) {
            None => {
                self.entries.insert(path.to_owned(), entry);
                Ok(())
            }
            Some(old) if old.kind == Kind::Dir && entry.kind == Kind::Dir => Ok(()),
            Some(old) if *old == entry => Ok(()),
            Some(old) => Err(PlanError::Conflict {
                path: path.to_owned(),
                first: describe(old),
                second: describe(&entry),
            }),
        }
    }

    /// Resolves `layout`: checks every file exists, expands trees, applet links and modules.
    ///
    /// # Errors
    /// [`PlanError::Source`] (a required file is absent), [`PlanError::Conflict`],
    /// [`PlanError::TreeEntry`], [`PlanError::NoKernelVersion`], [`PlanError::ModulesList`],
    /// [`PlanError::Modules`].
    pub fn resolve(layout: &Layout, modules: Option<&KernelModules>) -> Result<Self, PlanError> {
        let mut plan = Plan::default();
        plan.add_one(
            "/",
            PlanEntry {
                mode: 0o755,
                kind: Kind::Dir,
            },
        )?;
        for d in &layout.dirs {
            plan.add(
                d,
                PlanEntry {
                    mode: 0o755,
                    kind: Kind::Dir,
                },
            )?;
        }
        for n in &layout.nodes {
            let kind = Kind::Node {
                kind: n.kind,
                major: n.major,
                minor: n.minor,
            };
            plan.add(
                &n.path,
                PlanEntry {
                    mode: n.mode & 0o7777,
                    kind,
                },
            )?;
        }
        for f in &layout.files {
            let source = PathBuf::from(&f.source);
            match std::fs::metadata(&source) {
                Ok(m) if m.is_file() => {
                    plan.add(
                        &f.path,
                        PlanEntry {
                            mode: f.mode & 0o7777,
                            kind: Kind::File(source),
                        },
                    )?;
                }
                Err(e) if f.optional && e.kind() == std::io::ErrorKind::NotFound => {
                    plan.skipped.push((f.path.clone(), source));
                }
                Ok(_) => {
                    let source_err =
                        std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a regular file");
                    return Err(PlanError::Source {
                        path: f.path.clone(),
                        source_path: source,
                        source: source_err,
                    });
                }
                Err(e) => {
                    return Err(PlanError::Source {
                        path: f.path.clone(),
                        source_path: source,
                        source: e,
                    })
                }
            }
        }
        for t in &layout.trees {
            plan.add_tree(Path::new(&t.source), &t.path)?;
        }
        if let Some(m) = &layout.modules {
            let km = modules.ok_or(PlanError::NoKernelVersion)?;
            plan.add_modules(Path::new(&m.list), &m.install_list, km)?;
        }
        // Conditional links last, so `requires` sees every file, tree and module.
        for l in &layout.symlinks {
            if l.requires
                .as_ref()
                .is_none_or(|r| plan.entries.contains_key(r))
            {
                plan.add(
                    &l.path,
                    PlanEntry {
                        mode: 0o777,
                        kind: Kind::Symlink(l.target.clone()),
                    },
                )?;
            }
        }
        for a in &layout.applets {
            if a.requires
                .as_ref()
                .is_none_or(|r| plan.entries.contains_key(r))
            {
                for name in &a.names {
                    let path = format!("{}/{name}", a.dir.trim_end_matches('/'));
                    plan.add(
                        &path,
                        PlanEntry {
                            mode: 0o777,
                            kind: Kind::Symlink(a.target.clone()),
                        },
                    )?;
                }
            }
        }
        Ok(plan)
    }

    /// Copies the host directory `source` to archive path `dest`, in sorted order. Regular
    /// files get mode 0755 when any execute bit is set, else 0644; `.gitkeep` files are skipped.
    fn add_tree(&mut self, source: &Path, dest: &str) -> Result<(), PlanError> {
        let read_err = |p: &Path, e| PlanError::Source {
            path: dest.to_owned(),
            source_path: p.to_owned(),
            source: e,
        };
        let mut listing: Vec<_> = std::fs::read_dir(source)
            .map_err(|e| read_err(source, e))?
            .collect::<Result<_, _>>()
            .map_err(|e| read_err(source, e))?;
        listing.sort_by_key(std::fs::DirEntry::file_name);
        for item in listing {
            let host = item.path();
            let name = item
                .file_name()
                .into_string()
                .map_err(|_| PlanError::TreeEntry {
                    source_path: host.clone(),
                })?;
            if name == ".gitkeep" {
                continue;
            }
            let path = if dest == "/" {
                format!("/{name}")
            } else {
                format!("{dest}/{name}")
            };
            if !is_clean_absolute(&path) {
                return Err(PlanError::TreeEntry { source_path: host });
            }
            let meta = std::fs::symlink_metadata(&host).map_err(|e| read_err(&host, e))?;
            if meta.is_dir() {
                self.add(
                    &path,
                    PlanEntry {
                        mode: 0o755,
                        kind: Kind::Dir,
                    },
                )?;
                self.add_tree(&host, &path)?;
            } else if meta.is_file() {
                use std::os::unix::fs::PermissionsExt;
                let mode = if meta.permissions().mode() & 0o111 != 0 {
                    0o755
                } else {
                    0o644
                };
                self.add(
                    &path,
                    PlanEntry {
                        mode,
                        kind: Kind::File(host),
                    },
                )?;
            } else if meta.file_type().is_symlink() {
                let target = std::fs::read_link(&host).map_err(|e| read_err(&host, e))?;
                let target =
                    target
                        .into_os_string()
                        .into_string()
                        .map_err(|_| PlanError::TreeEntry {
                            source_path: host.clone(),
                        })?;
                self.add(
                    &path,
                    PlanEntry {
                        mode: 0o777,
                        kind: Kind::Symlink(target),
                    },
                )?;
            } else {
                return Err(PlanError::TreeEntry { source_path: host });
            }
        }
        Ok(())
    }

    /// Adds the listed modules, their dependencies and the filtered module indexes.
    fn add_modules(
        &mut self,
        list: &Path,
        install_list: &str,
        km: &KernelModules,
    ) -> Result<(), PlanError> {
        let lines = kconfig::load_modules_list(list).map_err(PlanError::ModulesList)?;
        let wanted: Vec<String> = lines.iter().map(|l| l.module.clone()).collect();
        let dir = km.root.join(&km.kver);
        let modules_err = |source| PlanError::Modules {
            kver: km.kver.clone(),
            dir: dir.clone(),
            source,
        };
        let deps = ModulesDep::load(&dir).map_err(modules_err)?;
        let load = deps.resolve(&wanted).map_err(modules_err)?;
        let base = format!("/lib/modules/{}", km.kver);
        let mut carried = BTreeSet::new();
        for m in &load.modules {
            carried.insert(m.path.clone());
            self.add(
                &format!("{base}/{}", m.path),
                PlanEntry {
                    mode: 0o644,
                    kind: Kind::File(dir.join(&m.path)),
                },
            )?;
        }
        let read = |name: &str| {
            let p = dir.join(name);
            std::fs::read_to_string(&p).map_err(|e| PlanError::Source {
                path: format!("{base}/{name}"),
                source_path: p,
                source: e,
            })
        };
        // modules.dep and modules.order restricted to what the initramfs carries.
        let dep: String = read("modules.dep")?
            .lines()
            .filter(|l| {
                l.split_once(':')
                    .is_some_and(|(p, _)| carried.contains(p.trim()))
            })
            .map(|l| format!("{l}\n"))
            .collect();
        self.add(
            &format!("{base}/modules.dep"),
            PlanEntry {
                mode: 0o644,
                kind: Kind::Data(dep.into_bytes()),
            },
        )?;
        let order = match read("modules.order") {
            Ok(text) => text,
            Err(PlanError::Source { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                String::new()
            }
            Err(e) => return Err(e),
        };
        let order: String = order
            .lines()
            .filter(|l| carried.contains(l.trim()))
            .map(|l| format!("{l}\n"))
            .collect();
        self.add(
            &format!("{base}/modules.order"),
            PlanEntry {
                mode: 0o644,
                kind: Kind::Data(order.into_bytes()),
            },
        )?;
        if dir.join("modules.builtin").is_file() {
            self.add(
                &format!("{base}/modules.builtin"),
                PlanEntry {
                    mode: 0o644,
                    kind: Kind::File(dir.join("modules.builtin")),
                },
            )?;
        }
        // modules.alias (depmod's) restricted to the carried modules: the init matches the
        // `@device` modules' aliases against the devices' modaliases. Without one (a module
        // tree depmod never indexed) the init finds no aliases and loads those modules anyway.
        let alias = match read("modules.alias") {
            Ok(text) => Some(text),
            Err(PlanError::Source { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                None
            }
            Err(e) => return Err(e),
        };
        if let Some(text) = alias {
            let names: BTreeSet<&str> = load.modules.iter().map(|m| m.name.as_str()).collect();
            let kept: String = crate::modules_dep::parse_modules_alias(&text)
                .into_iter()
                .filter(|a| names.contains(a.module.as_str()))
                .map(|a| format!("alias {} {}\n", a.pattern, a.module))
                .collect();
            self.add(
                &format!("{base}/modules.alias"),
                PlanEntry {
                    mode: 0o644,
                    kind: Kind::Data(kept.into_bytes()),
                },
            )?;
        }
        // Names, markers and parameters, without the CONFIG_ options: the init's modules stage
        // reads this (phase_layout::modules_dep::parse_modules_list).
        let names: String = lines
            .iter()
            .filter(|l| !deps.is_builtin(&l.module))
            .map(|l| {
                let mut line = l.module.clone();
                for (on, marker) in [
                    (l.target_only, kconfig::TARGET_ONLY),
                    (l.device_only, kconfig::DEVICE_ONLY),
                    (l.disk_only, kconfig::DISK_ONLY),
                ] {
                    if on {
                        line.push(' ');
                        line.push_str(marker);
                    }
                }
                for p in &l.params {
                    line.push(' ');
                    line.push_str(p);
                }
                line.push('\n');
                line
            })
            .collect();
        self.add(
            install_list,
            PlanEntry {
                mode: 0o644,
                kind: Kind::Data(names.into_bytes()),
            },
        )?;
        self.builtin_modules = load.builtin;
        Ok(())
    }

    /// One line per entry, sorted: `<path without leading /> <type> <mode> [detail]`, the root
    /// directory omitted (as `cpio -t` lists it). Used by `phase-layout list` and the tests.
    pub fn listing(&self) -> Vec<String> {
        self.entries
            .iter()
            .filter(|(p, _)| p.as_str() != "/")
            .map(|(p, e)| format!("{} {} {:04o}", &p[1..], describe(e), e.mode))
            .collect()
    }

    /// Writes the plan as a reproducible newc archive to `out` (not compressed).
    ///
    /// # Errors
    /// [`PlanError::Source`] when a file cannot be opened, [`PlanError::Cpio`].
    pub fn write_cpio<W: Write>(&self, out: W) -> Result<W, PlanError> {
        let mut w = NewcWriter::new(out);
        for (path, e) in self.entries.iter().filter(|(p, _)| p.as_str() != "/") {
            let name = path[1..].to_owned();
            let entry = match &e.kind {
                Kind::Dir => Entry::dir(name, e.mode),
                Kind::Data(d) => Entry::bytes(name, e.mode, d),
                Kind::Symlink(t) => Entry::symlink(name, t.clone()),
                Kind::Node {
                    kind: NodeKind::Char,
                    major,
                    minor,
                } => Entry::char_dev(name, e.mode, *major, *minor),
                Kind::Node {
                    kind: NodeKind::Block,
                    major,
                    minor,
                } => Entry {
                    name,
                    mode: e.mode,
                    kind: EntryKind::BlockDev {
                        major: *major,
                        minor: *minor,
                    },
                },
                Kind::File(src) => {
                    let err = |source| PlanError::Source {
                        path: path.clone(),
                        source_path: src.clone(),
                        source,
                    };
                    let f = std::fs::File::open(src).map_err(err)?;
                    let size = f.metadata().map_err(err)?.len();
                    Entry::reader(name, e.mode, size, f)
                }
            };
            w.append(entry).map_err(PlanError::Cpio)?;
        }
        w.finish().map_err(PlanError::Cpio)
    }

    /// Creates the plan under the host directory `out` (absent or empty), for `mksquashfs`.
    /// Device nodes are not created (the target mounts devtmpfs); ownership is left to
    /// `mksquashfs -all-root` and times to `-all-time`.
    ///
    /// # Errors
    /// [`PlanError::OutputNotEmpty`], [`PlanError::Output`], [`PlanError::Source`].
    pub fn write_tree(&self, out: &Path) -> Result<(), PlanError> {
        use std::os::unix::fs::PermissionsExt;
        let oerr = |p: &Path| {
            let p = p.to_owned();
            move |source| PlanError::Output { path: p, source }
        };
        if let Ok(mut rd) = std::fs::read_dir(out) {
            if rd.next().is_some() {
                return Err(PlanError::OutputNotEmpty(out.to_owned()));
            }
        }
        std::fs::create_dir_all(out).map_err(oerr(out))?;
        for (path, e) in &self.entries {
            let host = out.join(path.trim_start_matches('/'));
            match &e.kind {
                Kind::Dir => std::fs::create_dir_all(&host).map_err(oerr(&host))?,
                Kind::File(src) => {
                    std::fs::copy(src, &host).map_err(|source| PlanError::Source {
                        path: path.clone(),
                        source_path: src.clone(),
                        source,
                    })?;
                }
                Kind::Data(d) => std::fs::write(&host, d).map_err(oerr(&host))?,
                Kind::Symlink(t) => std::os::unix::fs::symlink(t, &host).map_err(oerr(&host))?,
                Kind::Node { .. } => continue,
            }
            if !matches!(e.kind, Kind::Symlink(_)) {
                std::fs::set_permissions(&host, std::fs::Permissions::from_mode(e.mode))
                    .map_err(oerr(&host))?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::Layout;

    fn layout(text: &str) -> Layout {
        Layout::from_toml(text, Path::new("t.toml"), &BTreeMap::new()).unwrap()
    }

    #[test]
    fn parents_are_created_and_entries_sorted() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("bin");
        std::fs::write(&src, b"x").unwrap();
        let l = layout(&format!(
            "dirs = [\"/proc\"]\n[[file]]\npath = \"/usr/bin/plasmd\"\nsource = \"{}\"\nmode = 0o755\n",
            src.display()
        ));
        let p = Plan::resolve(&l, None).unwrap();
        let names: Vec<&str> = p.entries.keys().map(String::as_str).collect();
        assert_eq!(names, ["/", "/proc", "/usr", "/usr/bin", "/usr/bin/plasmd"]);
    }

    #[test]
    fn missing_required_file_is_an_error_naming_both_paths() {
        let l = layout("[[file]]\npath = \"/init\"\nsource = \"/nonexistent/phase-init\"\n");
        let err = Plan::resolve(&l, None).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("/init") && text.contains("/nonexistent/phase-init"),
            "{text}"
        );
    }

    #[test]
    fn missing_optional_file_is_skipped_with_its_dependent_link() {
        let l = layout(
            "[[file]]\npath = \"/bin/busybox\"\nsource = \"/nonexistent/busybox\"\noptional = true\n\
             [[symlink]]\npath = \"/bin/sh\"\ntarget = \"busybox\"\nrequires = \"/bin/busybox\"\n",
        );
        let p = Plan::resolve(&l, None).unwrap();
        assert!(!p.entries.contains_key("/bin/sh"));
        assert_eq!(p.skipped.len(), 1);
    }

    #[test]
    fn conflicting_entries_are_refused() {
        let l =
            layout("dirs = [\"/bin/sh\"]\n[[symlink]]\npath = \"/bin/sh\"\ntarget = \"busybox\"\n");
        assert!(matches!(
            Plan::resolve(&l, None),
            Err(PlanError::Conflict { .. })
        ));
    }

    #[test]
    fn modules_without_kernel_version_are_refused() {
        let l = layout("[modules]\nlist = \"x\"\ninstall_list = \"/etc/phase/modules.list\"\n");
        assert!(matches!(
            Plan::resolve(&l, None),
            Err(PlanError::NoKernelVersion)
        ));
    }

    #[test]
    fn modules_and_their_dependencies_are_carried_with_filtered_indexes() {
        let dir = tempfile::tempdir().unwrap();
        let k = dir.path().join("9.9.9");
        std::fs::create_dir_all(k.join("kernel/fs")).unwrap();
        for m in ["a", "b", "c"] {
            std::fs::write(k.join(format!("kernel/fs/{m}.ko")), m).unwrap();
        }
        std::fs::write(
            k.join("modules.dep"),
            "kernel/fs/a.ko: kernel/fs/b.ko\nkernel/fs/b.ko:\nkernel/fs/c.ko:\n",
        )
        .unwrap();
        std::fs::write(k.join("modules.builtin"), "kernel/fs/ext4.ko\n").unwrap();
        std::fs::write(
            k.join("modules.order"),
            "kernel/fs/c.ko\nkernel/fs/b.ko\nkernel/fs/a.ko\n",
        )
        .unwrap();
        let list = dir.path().join("modules.list");
        std::fs::write(
            &list,
            "a @device @disk x=1 y=2 CONFIG_A\next4 CONFIG_EXT4_FS\n",
        )
        .unwrap();
        let l = layout(&format!(
            "[modules]\nlist = \"{}\"\ninstall_list = \"/etc/phase/modules.list\"\n",
            list.display()
        ));
        let km = KernelModules {
            kver: "9.9.9".into(),
            root: dir.path().to_owned(),
        };
        // No modules.alias in the tree: none in the initramfs either.
        let p = Plan::resolve(&l, Some(&km)).unwrap();
        assert!(!p.entries.contains_key("/lib/modules/9.9.9/modules.alias"));
        std::fs::write(
            k.join("modules.alias"),
            "# Aliases\nalias pci:v00001AF4d* a\nalias virtio:d00000001v* c\nalias fs-b b\n",
        )
        .unwrap();
        let p = Plan::resolve(&l, Some(&km)).unwrap();
        assert!(p.entries.contains_key("/lib/modules/9.9.9/kernel/fs/a.ko"));
        assert!(p.entries.contains_key("/lib/modules/9.9.9/kernel/fs/b.ko"));
        assert!(!p.entries.contains_key("/lib/modules/9.9.9/kernel/fs/c.ko"));
        assert_eq!(p.builtin_modules, ["ext4"]);
        let data = |path: &str| match &p.entries[path].kind {
            Kind::Data(d) => String::from_utf8(d.clone()).unwrap(),
            other => panic!("{other:?}"),
        };
        assert_eq!(
            data("/lib/modules/9.9.9/modules.dep"),
            "kernel/fs/a.ko: kernel/fs/b.ko\nkernel/fs/b.ko:\n"
        );
        assert_eq!(
            data("/lib/modules/9.9.9/modules.order"),
            "kernel/fs/b.ko\nkernel/fs/a.ko\n"
        );
        assert_eq!(data("/etc/phase/modules.list"), "a @device @disk x=1 y=2\n");
        // Only the carried modules' aliases (c is not carried).
        assert_eq!(
            data("/lib/modules/9.9.9/modules.alias"),
            "alias pci:v00001AF4d* a\nalias fs-b b\n"
        );
    }

    #[test]
    fn unknown_module_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let k = dir.path().join("9.9.9");
        std::fs::create_dir_all(&k).unwrap();
        std::fs::write(k.join("modules.dep"), "").unwrap();
        let list = dir.path().join("modules.list");
        std::fs::write(&list, "nosuch CONFIG_NOSUCH\n").unwrap();
        let l = layout(&format!(
            "[modules]\nlist = \"{}\"\ninstall_list = \"/m\"\n",
            list.display()
        ));
        let km = KernelModules {
            kver: "9.9.9".into(),
            root: dir.path().to_owned(),
        };
        assert!(matches!(
            Plan::resolve(&l, Some(&km)),
            Err(PlanError::Modules { .. })
        ));
    }

    #[test]
    fn same_plan_gives_identical_cpio_bytes_and_tree_normalises_modes() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("tree");
        std::fs::create_dir_all(src.join("etc")).unwrap();
        std::fs::write(src.join("etc/os-release"), "ID=phase\n").unwrap();
        std::fs::write(src.join("etc/.gitkeep"), "").unwrap();
        let l = layout(&format!(
            "[[tree]]\nsource = \"{}\"\npath = \"/\"\n[[node]]\npath = \"/dev/console\"\nkind = \"char\"\nmajor = 5\nminor = 1\nmode = 0o600\n",
            src.display()
        ));
        let p = Plan::resolve(&l, None).unwrap();
        assert!(!p.entries.contains_key("/etc/.gitkeep"));
        assert_eq!(p.entries["/etc/os-release"].mode, 0o644);
        let a = p.write_cpio(Vec::new()).unwrap();
        let b = Plan::resolve(&l, None)
            .unwrap()
            .write_cpio(Vec::new())
            .unwrap();
        assert_eq!(a, b);
        let out = dir.path().join("out");
        p.write_tree(&out).unwrap();
        assert_eq!(
            std::fs::read_to_string(out.join("etc/os-release")).unwrap(),
            "ID=phase\n"
        );
        assert!(!out.join("dev/console").exists());
        assert!(matches!(
            p.write_tree(&out),
            Err(PlanError::OutputNotEmpty(_))
        ));
    }
}
