//! The declarative layout files (`initramfs-layout/initramfs.toml`, `rootfs.toml`).
//!
//! Build time only (issue 8, seed 003 "Build System Pattern"): `make initramfs` and
//! `make rootfs` run `phase-layout`, which loads one of these files, substitutes the `${var}`
//! references given on its command line and hands the result to [`crate::plan`], which turns it
//! into a sorted list of archive entries. The format is documented in `docs/building.md`:
//!
//! ```toml
//! dirs = ["/bin", "/dev", "/etc/phase"]
//! [[node]]                      # device node (char or block), made with mknod by the kernel
//! path = "/dev/console"         # when it unpacks the cpio
//! kind = "char"
//! major = 5
//! minor = 1
//! mode = 0o600
//! [[file]]                      # a file copied from the build host
//! path = "/init"
//! source = "${bin_dir}/phase-init"
//! mode = 0o755
//! optional = false              # true: skipped (and reported) when the source is absent
//! [[symlink]]
//! path = "/bin/sh"
//! target = "busybox"
//! [[applets]]                   # one symlink per name: <dir>/<name> -> <target>
//! dir = "/bin"
//! target = "busybox"
//! names = ["ls", "cat"]
//! [[tree]]                      # a directory copied recursively (sorted, modes normalised)
//! source = "${layout_dir}/rootfs"
//! path = "/"
//! [modules]                     # kernel modules, resolved with modules.dep
//! list = "${repo}/kernel-config/modules.list"
//! install_list = "/etc/phase/modules.list"
//! ```
//!
//! An entry with `requires = "/some/path"` is only included when that path is part of the result
//! (e.g. `/bin/sh -> busybox` only when the optional busybox was found).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// An error loading a layout file.
#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    /// The layout file could not be read.
    #[error("cannot read layout file {path}")]
    Read {
        /// The layout file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The layout file is not valid TOML of the documented shape.
    #[error("layout file {path} is not valid")]
    Parse {
        /// The layout file.
        path: PathBuf,
        /// The TOML error (with line and column).
        #[source]
        source: toml::de::Error,
    },
    /// A `${name}` reference has no value.
    #[error("layout file {path}: ${{{name}}} is used but not defined (pass --var {name}=VALUE)")]
    UndefinedVar {
        /// The layout file.
        path: PathBuf,
        /// The variable name.
        name: String,
    },
    /// A `${` without its closing `}`.
    #[error("layout file {path}: unterminated ${{ in {text:?}")]
    Unterminated {
        /// The layout file.
        path: PathBuf,
        /// The string holding it.
        text: String,
    },
    /// An archive path that is not absolute or contains `.`/`..` components.
    #[error("layout file {path}: {entry:?} is not a clean absolute path")]
    BadPath {
        /// The layout file.
        path: PathBuf,
        /// The offending archive path.
        entry: String,
    },
}

/// Kind of a device node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeKind {
    /// Character device.
    Char,
    /// Block device.
    Block,
}

/// A device node entry (`[[node]]`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Node {
    /// Absolute path in the archive, e.g. `/dev/console`.
    pub path: String,
    /// Character or block device.
    pub kind: NodeKind,
    /// Device major number.
    pub major: u32,
    /// Device minor number.
    pub minor: u32,
    /// Permission bits (e.g. `0o600`).
    pub mode: u32,
}

/// A file copied from the build host (`[[file]]`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct File {
    /// Absolute path in the archive.
    pub path: String,
    /// Path on the build host (after `${var}` substitution).
    pub source: String,
    /// Permission bits; default `0o644`.
    #[serde(default = "default_file_mode")]
    pub mode: u32,
    /// When true a missing source is skipped (and reported) instead of failing the build.
    #[serde(default)]
    pub optional: bool,
}

/// A symbolic link (`[[symlink]]`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Symlink {
    /// Absolute path of the link in the archive.
    pub path: String,
    /// Link target, stored verbatim (usually relative, e.g. `busybox`).
    pub target: String,
    /// Only included when this archive path is part of the result.
    #[serde(default)]
    pub requires: Option<String>,
}

/// A set of multi-call applet links (`[[applets]]`): `<dir>/<name> -> <target>`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Applets {
    /// Directory holding the links, e.g. `/bin`.
    pub dir: String,
    /// Link target, e.g. `busybox` or `/bin/busybox`.
    pub target: String,
    /// Applet names.
    pub names: Vec<String>,
    /// Only included when this archive path is part of the result.
    #[serde(default)]
    pub requires: Option<String>,
}

/// A host directory copied recursively (`[[tree]]`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tree {
    /// Directory on the build host.
    pub source: String,
    /// Where its contents go in the archive (`/` for the root).
    pub path: String,
}

/// Kernel modules to carry (`[modules]`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Modules {
    /// The module list on the build host (`kernel-config/modules.list`, see [`crate::kconfig`]).
    pub list: String,
    /// Where the plain list of module names (one per line, load order) goes in the archive.
    pub install_list: String,
}

/// A whole layout file, after `${var}` substitution.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Layout {
    /// Directories (mode 0755) created in the archive.
    #[serde(default)]
    pub dirs: Vec<String>,
    /// Device nodes.
    #[serde(default, rename = "node")]
    pub nodes: Vec<Node>,
    /// Files copied from the host.
    #[serde(default, rename = "file")]
    pub files: Vec<File>,
    /// Symbolic links.
    #[serde(default, rename = "symlink")]
    pub symlinks: Vec<Symlink>,
    /// Multi-call applet links.
    #[serde(default)]
    pub applets: Vec<Applets>,
    /// Host directories copied recursively.
    #[serde(default, rename = "tree")]
    pub trees: Vec<Tree>,
    /// Kernel modules, if any.
    #[serde(default)]
    pub modules: Option<Modules>,
}

fn default_file_mode() -> u32 {
    0o644
}

impl Layout {
    /// Reads and parses the layout file at `path`, substituting `${name}` from `vars`.
    ///
    /// `${layout_dir}` is always defined as the directory holding the layout file.
    ///
    /// # Errors
    /// [`LayoutError::Read`], [`LayoutError::Parse`], [`LayoutError::UndefinedVar`],
    /// [`LayoutError::Unterminated`], [`LayoutError::BadPath`].
    pub fn load(path: &Path, vars: &BTreeMap<String, String>) -> Result<Self, LayoutError> {
        let text = std::fs::read_to_string(path).map_err(|source| LayoutError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut vars = vars.clone();
        let dir = path.parent().map(Path::to_owned).unwrap_or_default();
        let dir = if dir.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            dir
        };
        vars.entry("layout_dir".to_owned())
            .or_insert_with(|| dir.display().to_string());
        Self::from_toml(&text, path, &vars)
    }

    /// Parses layout TOML `text` (`origin` names it in errors), substituting `${name}`.
    ///
    /// Substitution happens on string values only, after parsing, so a value cannot inject
    /// TOML syntax.
    ///
    /// # Errors
    /// As [`Layout::load`], without [`LayoutError::Read`].
    pub fn from_toml(
        text: &str,
        origin: &Path,
        vars: &BTreeMap<String, String>,
    ) -> Result<Self, LayoutError> {
        let mut layout: Layout = toml::from_str(text).map_err(|source| LayoutError::Parse {
            path: origin.to_owned(),
            source,
        })?;
        let sub = |s: &mut String| -> Result<(), LayoutError> {
            *s = substitute(s, vars, origin)?;
            Ok(())
        };
        for d in &mut layout.dirs {
            sub(d)?;
        }
        for n in &mut layout.nodes {
            sub(&mut n.path)?;
        }
        for f in &mut layout.files {
            sub(&mut f.path)?;
            sub(&mut f.source)?;
        }
        for l in &mut layout.symlinks {
            sub(&mut l.path)?;
            sub(&mut l.target)?;
            if let Some(r) = &mut l.requires {
                sub(r)?;
            }
        }
        for a in &mut layout.applets {
            sub(&mut a.dir)?;
            sub(&mut a.target)?;
            if let Some(r) = &mut a.requires {
                sub(r)?;
            }
        }
        for t in &mut layout.trees {
            sub(&mut t.source)?;
            sub(&mut t.path)?;
        }
        if let Some(m) = &mut layout.modules {
            sub(&mut m.list)?;
            sub(&mut m.install_list)?;
        }
        layout.check_paths(origin)?;
        Ok(layout)
    }

    fn check_paths(&self, origin: &Path) -> Result<(), LayoutError> {
        let paths = self
            .dirs
            .iter()
            .chain(self.nodes.iter().map(|n| &n.path))
            .chain(self.files.iter().map(|f| &f.path))
            .chain(self.symlinks.iter().map(|l| &l.path))
            .chain(self.applets.iter().map(|a| &a.dir))
            .chain(self.trees.iter().map(|t| &t.path))
            .chain(self.modules.iter().map(|m| &m.install_list));
        for p in paths {
            if !is_clean_absolute(p) {
                return Err(LayoutError::BadPath {
                    path: origin.to_owned(),
                    entry: p.clone(),
                });
            }
        }
        for a in &self.applets {
            for name in &a.names {
                if name.is_empty() || name.contains('/') || name == "." || name == ".." {
                    return Err(LayoutError::BadPath {
                        path: origin.to_owned(),
                        entry: format!("{}/{name}", a.dir),
                    });
                }
            }
        }
        Ok(())
    }
}

/// True for `/` and for absolute paths without empty, `.` or `..` components.
pub fn is_clean_absolute(p: &str) -> bool {
    if p == "/" {
        return true;
    }
    match p.strip_prefix('/') {
        Some(rest) => rest
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != ".."),
        None => false,
    }
}

/// Replaces every `${name}` in `text` with `vars[name]`; `$$` is a literal `$`.
fn substitute(
    text: &str,
    vars: &BTreeMap<String, String>,
    origin: &Path,
) -> Result<String, LayoutError> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(tail) = after.strip_prefix('{') {
            let end = tail.find('}').ok_or_else(|| LayoutError::Unterminated {
                path: origin.to_owned(),
                text: text.to_owned(),
            })?;
            let name = &tail[..end];
            let value = vars.get(name).ok_or_else(|| LayoutError::UndefinedVar {
                path: origin.to_owned(),
                name: name.to_owned(),
            })?;
            out.push_str(value);
            rest = &tail[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn variables_are_substituted_in_sources() {
        let text = r#"
            dirs = ["/bin"]
            [[file]]
            path = "/init"
            source = "${bin}/phase-init"
            mode = 0o755
        "#;
        let l = Layout::from_toml(text, Path::new("t.toml"), &vars(&[("bin", "/x/rel")])).unwrap();
        assert_eq!(l.files[0].source, "/x/rel/phase-init");
        assert_eq!(l.files[0].mode, 0o755);
        assert!(!l.files[0].optional);
    }

    #[test]
    fn undefined_variable_is_an_error_naming_it() {
        let text = "[[file]]\npath = \"/init\"\nsource = \"${nope}/x\"\n";
        let err = Layout::from_toml(text, Path::new("t.toml"), &vars(&[])).unwrap_err();
        assert!(matches!(err, LayoutError::UndefinedVar { ref name, .. } if name == "nope"));
        assert!(err.to_string().contains("--var nope="));
    }

    #[test]
    fn unterminated_variable_is_an_error() {
        let text = "[[file]]\npath = \"/init\"\nsource = \"${bin/x\"\n";
        let err = Layout::from_toml(text, Path::new("t.toml"), &vars(&[("bin", "b")])).unwrap_err();
        assert!(matches!(err, LayoutError::Unterminated { .. }));
    }

    #[test]
    fn dotdot_archive_path_is_refused() {
        let text = "dirs = [\"/etc/../x\"]\n";
        let err = Layout::from_toml(text, Path::new("t.toml"), &vars(&[])).unwrap_err();
        assert!(matches!(err, LayoutError::BadPath { .. }));
        let text = "dirs = [\"relative\"]\n";
        assert!(Layout::from_toml(text, Path::new("t.toml"), &vars(&[])).is_err());
    }

    #[test]
    fn applet_name_with_slash_is_refused() {
        let text = "[[applets]]\ndir = \"/bin\"\ntarget = \"busybox\"\nnames = [\"../sh\"]\n";
        assert!(Layout::from_toml(text, Path::new("t.toml"), &vars(&[])).is_err());
    }

    #[test]
    fn unknown_field_is_refused() {
        let text = "[[file]]\npath = \"/init\"\nsource = \"x\"\nmod = 1\n";
        let err = Layout::from_toml(text, Path::new("t.toml"), &vars(&[])).unwrap_err();
        assert!(matches!(err, LayoutError::Parse { .. }));
    }

    #[test]
    fn dollar_dollar_is_a_literal_dollar() {
        let s = substitute("a$$b$c", &vars(&[]), Path::new("t")).unwrap();
        assert_eq!(s, "a$b$c");
    }

    #[test]
    fn clean_absolute_paths() {
        assert!(is_clean_absolute("/"));
        assert!(is_clean_absolute("/etc/phase/trust.toml"));
        assert!(!is_clean_absolute("/etc//x"));
        assert!(!is_clean_absolute("/etc/"));
        assert!(!is_clean_absolute("etc"));
        assert!(!is_clean_absolute("/./etc"));
    }
}
