//! Service files of the target stage's supervisor (issue 7 §3): `/etc/phase/services/*.toml` in
//! the new root, one service per file, started in file-name order.
//!
//! ```toml
//! name = "plasmd"                       # optional; defaults to the file stem
//! argv = ["/usr/bin/plasmd", "serve", "--artifacts", "/var/lib/phase/boot"]
//! restart = "always"                    # always | on-failure | never (default on-failure)
//! stop_order = 0                        # lower stops first; equal values stop together
//! stop_timeout_ms = 5000                # SIGTERM -> SIGKILL grace period (default 5000)
//! [env]
//! RUST_LOG = "info"
//! ```
//!
//! The environment of a service is exactly `PATH` (a default) plus `[env]`; nothing leaks from
//! PID 1's own environment. Unknown keys are errors, so a typo is not silently ignored.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Where the supervisor looks for service files (in the new root).
pub const SERVICES_DIR: &str = "/etc/phase/services";
/// `PATH` given to services that do not set one.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// Default SIGTERM-to-SIGKILL grace period, in ms.
pub const DEFAULT_STOP_TIMEOUT_MS: u64 = 5000;
/// Largest stop timeout accepted, in ms (5 minutes), so shutdown stays bounded.
pub const MAX_STOP_TIMEOUT_MS: u64 = 300_000;

/// When a service that exited is started again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    /// After every exit.
    Always,
    /// After an exit with a non-zero status or by a signal.
    OnFailure,
    /// Never.
    Never,
}

impl RestartPolicy {
    /// Whether an exit that was (`success`) or was not successful leads to a restart.
    pub fn restarts(self, success: bool) -> bool {
        match self {
            RestartPolicy::Always => true,
            RestartPolicy::OnFailure => !success,
            RestartPolicy::Never => false,
        }
    }
}

/// The file format, as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ServiceFile {
    name: Option<String>,
    argv: Vec<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    restart: Option<RestartPolicy>,
    #[serde(default)]
    stop_order: i32,
    stop_timeout_ms: Option<u64>,
}

/// One validated service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    /// Short name used in log lines (`phase: service <name> started pid=<pid>`).
    pub name: String,
    /// Program (absolute path) and arguments.
    pub argv: Vec<String>,
    /// Complete environment of the process (`PATH` defaulted).
    pub env: BTreeMap<String, String>,
    /// Restart policy.
    pub restart: RestartPolicy,
    /// Stop order at shutdown: lower values stop first, equal values together.
    pub stop_order: i32,
    /// Grace period between SIGTERM and SIGKILL, in ms.
    pub stop_timeout_ms: u64,
}

/// Errors in a service file.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The file could not be read.
    #[error("read {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The TOML is malformed or has unknown or mistyped keys.
    #[error("parse {path}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's error.
        #[source]
        source: toml::de::Error,
    },
    /// The content is well-formed but not acceptable.
    #[error("{path}: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// Parses the service file `text` read from `path` (the path names the default service name and
/// errors).
///
/// # Errors
/// [`ServiceError::Parse`] for bad TOML or unknown keys; [`ServiceError::Invalid`] for an empty
/// `argv`, a relative program path, a bad name, an env key with `=` or NUL, or a stop timeout
/// above [`MAX_STOP_TIMEOUT_MS`].
pub fn parse(path: &Path, text: &str) -> Result<Service, ServiceError> {
    let file: ServiceFile = toml::from_str(text).map_err(|source| ServiceError::Parse {
        path: path.to_path_buf(),
        source,
    })?;
    let invalid = |reason: String| ServiceError::Invalid {
        path: path.to_path_buf(),
        reason,
    };
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let name = file.name.unwrap_or(stem);
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.@".contains(c))
    {
        return Err(invalid(format!(
            "bad service name {name:?} (use [A-Za-z0-9-_.@])"
        )));
    }
    let Some(program) = file.argv.first() else {
        return Err(invalid("argv is empty".to_owned()));
    };
    if !program.starts_with('/') {
        return Err(invalid(format!(
            "argv[0] {program:?} is not an absolute path"
        )));
    }
    if file.argv.iter().any(|a| a.contains('\0')) {
        return Err(invalid("argv contains a NUL byte".to_owned()));
    }
    let mut env = file.env;
    for (k, v) in &env {
        if k.is_empty() || k.contains('=') || k.contains('\0') || v.contains('\0') {
            return Err(invalid(format!("bad env entry {k:?}")));
        }
    }
    env.entry("PATH".to_owned())
        .or_insert_with(|| DEFAULT_PATH.to_owned());
    let stop_timeout_ms = file.stop_timeout_ms.unwrap_or(DEFAULT_STOP_TIMEOUT_MS);
    if stop_timeout_ms > MAX_STOP_TIMEOUT_MS {
        return Err(invalid(format!(
            "stop_timeout_ms {stop_timeout_ms} above {MAX_STOP_TIMEOUT_MS}"
        )));
    }
    Ok(Service {
        name,
        argv: file.argv,
        env,
        restart: file.restart.unwrap_or(RestartPolicy::OnFailure),
        stop_order: file.stop_order,
        stop_timeout_ms,
    })
}

/// Loads every `*.toml` in `dir`, in file-name order. A bad file does not stop the others: it is
/// returned in the second list (the supervisor logs it). A missing directory means no services.
pub fn load_dir(dir: &Path) -> (Vec<Service>, Vec<ServiceError>) {
    let mut paths: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .collect(),
        Err(_) => Vec::new(),
    };
    paths.sort();
    let mut services: Vec<Service> = Vec::new();
    let mut errors = Vec::new();
    for path in paths {
        let parsed = std::fs::read_to_string(&path)
            .map_err(|source| ServiceError::Read {
                path: path.clone(),
                source,
            })
            .and_then(|text| parse(&path, &text));
        match parsed {
            Ok(s) if services.iter().any(|o| o.name == s.name) => {
                errors.push(ServiceError::Invalid {
                    path: path.clone(),
                    reason: format!("duplicate service name {:?}", s.name),
                })
            }
            Ok(s) => services.push(s),
            Err(e) => errors.push(e),
        }
    }
    (services, errors)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLASMD: &str =
        include_str!("../../../initramfs-layout/rootfs/etc/phase/services/plasmd.toml");

    #[test]
    fn shipped_plasmd_service_parses_to_the_default_service() {
        let s = parse(Path::new("/etc/phase/services/plasmd.toml"), PLASMD).unwrap();
        assert_eq!(s.name, "plasmd");
        assert_eq!(
            s.argv,
            [
                "/usr/bin/plasmd",
                "serve",
                "--artifacts",
                "/var/lib/phase/boot"
            ]
        );
        assert_eq!(s.restart, RestartPolicy::Always);
        assert_eq!(s.env.get("RUST_LOG").map(String::as_str), Some("info"));
        assert_eq!(s.env.get("PATH").map(String::as_str), Some(DEFAULT_PATH));
    }

    #[test]
    fn minimal_file_gets_defaults_and_name_from_file_stem() {
        let s = parse(
            Path::new("/x/sshd.toml"),
            "argv = [\"/usr/sbin/sshd\", \"-D\"]",
        )
        .unwrap();
        assert_eq!(s.name, "sshd");
        assert_eq!(s.restart, RestartPolicy::OnFailure);
        assert_eq!(s.stop_order, 0);
        assert_eq!(s.stop_timeout_ms, DEFAULT_STOP_TIMEOUT_MS);
    }

    #[test]
    fn bad_service_files_are_refused() {
        let cases = [
            ("argv = []", "argv is empty"),
            ("argv = [\"plasmd\"]", "not an absolute path"),
            ("argv = [\"/bin/x\"]\nrestart = \"sometimes\"", "parse"),
            ("argv = [\"/bin/x\"]\nrestrat = \"always\"", "parse"),
            ("argv = [\"/bin/x\"]\nname = \"a b\"", "bad service name"),
            (
                "argv = [\"/bin/x\"]\n[env]\n\"A=B\" = \"1\"",
                "bad env entry",
            ),
            ("argv = [\"/bin/x\"]\nstop_timeout_ms = 999999999", "above"),
            ("argv = \"/bin/x\"", "parse"),
        ];
        for (text, want) in cases {
            let err = parse(Path::new("/x/bad.toml"), text).unwrap_err();
            let chain = crate::log::error_chain(&err);
            assert!(chain.contains(want), "{text:?}: {chain}");
        }
    }

    #[test]
    fn load_dir_keeps_good_files_in_name_order_and_reports_bad_ones() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("20-b.toml"), "argv = [\"/bin/b\"]").unwrap();
        std::fs::write(
            dir.path().join("10-a.toml"),
            "name = \"a\"\nargv = [\"/bin/a\"]",
        )
        .unwrap();
        std::fs::write(dir.path().join("30-bad.toml"), "argv = [").unwrap();
        std::fs::write(
            dir.path().join("40-dup.toml"),
            "name = \"a\"\nargv = [\"/bin/a\"]",
        )
        .unwrap();
        std::fs::write(dir.path().join("README"), "not a service").unwrap();
        let (services, errors) = load_dir(dir.path());
        let names: Vec<_> = services.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["a", "20-b"]);
        assert_eq!(errors.len(), 2, "{errors:?}");
    }

    #[test]
    fn missing_services_dir_means_no_services() {
        let (s, e) = load_dir(Path::new("/nonexistent/phase/services"));
        assert!(s.is_empty() && e.is_empty());
    }
}
