//! The "modules" stage (issue 6 §3): for distro kernels such as Debian's, where virtio_net, loop,
//! squashfs and overlay are modules. Reads `/etc/phase/modules.list`, resolves dependencies from
//! `/lib/modules/<uname -r>/modules.dep` ([`phase_layout::modules_dep`]) and loads each module
//! with `finit_module`, dependencies first. Built-in and already loaded modules are fine.
//! Runs after the early mounts and the command line, before the network.

use std::path::{Path, PathBuf};

use phase_layout::modules_dep::{parse_modules_list, ModulesDep, ModulesDepError};

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

/// What the stage did: counts for the `modules ok` line.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Loaded {
    /// Modules loaded now, in load order.
    pub loaded: Vec<String>,
    /// Modules that were already loaded (`EEXIST`).
    pub already: Vec<String>,
    /// Modules built into the kernel.
    pub builtin: Vec<String>,
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

/// Loads `wanted` from `dir` (which holds `modules.dep` and the `.ko` files). A `dir` that does
/// not exist at all means a kernel this initramfs has no modules for (see
/// [`Loaded::no_modules_for_kernel`]); an existing `dir` without `modules.dep` is an error. Errors:
/// [`ModulesError::Resolve`] (missing module, missing dependency, cycle, no modules.dep),
/// [`ModulesError::Load`] (finit_module failed with anything but `EEXIST`).
pub fn load(sys: &dyn Syscalls, dir: &Path, wanted: &[String]) -> Result<Loaded, ModulesError> {
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
    let plan = dep.resolve(wanted).map_err(resolve)?;
    out.builtin = plan.builtin;
    for m in plan.modules {
        match sys.finit_module(&dir.join(&m.path), "") {
            Ok(()) => out.loaded.push(m.name),
            Err(e) if e.errno() == Some(libc::EEXIST) => out.already.push(m.name),
            Err(source) => {
                return Err(ModulesError::Load {
                    name: m.name,
                    source,
                })
            }
        }
    }
    Ok(out)
}

/// Reads the module names from `list` (a missing list means no modules: a kernel with
/// everything built in). Errors: [`ModulesError::List`] if the file exists but cannot be read.
pub fn read_list(list: &Path) -> Result<Vec<String>, ModulesError> {
    match std::fs::read_to_string(list) {
        Ok(text) => Ok(parse_modules_list(&text)),
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

    #[test]
    fn loads_dependencies_first_and_skips_builtins() {
        let d = moddir();
        let f = Recording::new();
        let l = load(
            &f,
            d.path(),
            &["virtio_net".into(), "loop".into(), "overlay".into()],
        )
        .unwrap();
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
        let l = load(&f, &dir, &["virtio_net".into()]).unwrap();
        assert_eq!(l.no_modules_for_kernel.as_deref(), Some(dir.as_path()));
        assert!(l.loaded.is_empty() && f.calls().is_empty());
    }

    #[test]
    fn existing_modules_dir_without_modules_dep_is_an_error() {
        let d = tempfile::tempdir().unwrap();
        let err = load(&Recording::new(), d.path(), &["loop".into()]).unwrap_err();
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
        let l = load(&f, d.path(), &["virtio_net".into()]).unwrap();
        assert_eq!(l.already, ["failover"]);
        assert_eq!(l.loaded, ["net_failover", "virtio_net"]);
    }

    #[test]
    fn missing_module_error_names_it_and_loads_nothing() {
        let d = moddir();
        let f = Recording::new();
        let e = load(&f, d.path(), &["virtio_net".into(), "squashfs".into()]).unwrap_err();
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
        let e = load(&f, d.path(), &["overlay".into()]).unwrap_err();
        assert!(
            matches!(&e, ModulesError::Load { name, .. } if name == "overlay"),
            "{e}"
        );
    }

    #[test]
    fn missing_list_means_no_modules() {
        assert!(read_list(Path::new("/nonexistent/modules.list"))
            .unwrap()
            .is_empty());
    }
}
