//! `plasmd serve` settings: the flags of seed 000 merged over an optional TOML file
//! (`--config FILE`).
//!
//! The provider runs on an operator's machine and, after kexec, inside every booted target
//! (`plasmd serve --artifacts /var/lib/phase/boot`). Flags win over the file; the file wins over
//! the defaults. The file uses the long flag names with `_` for `-`:
//!
//! ```toml
//! artifacts = "/srv/phase"
//! channels = ["stable", "beta"]
//! port = 8080
//! key = "/etc/phase/release.key"
//! expires_in = "30d"
//! ```

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// Why the settings cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read config file {path}")]
    Read {
        /// The path given to `--config`.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The config file is not TOML of the documented shape.
    #[error("config file {path} is not valid")]
    Parse {
        /// The path given to `--config`.
        path: PathBuf,
        /// The TOML error (names the line and the key).
        #[source]
        source: toml::de::Error,
    },
    /// A duration is not `<number><unit>` with unit ms, s, m, h or d.
    #[error("duration {0:?} is not <number><ms|s|m|h|d> (e.g. 30d, 12h, 90m)")]
    BadDuration(String),
    /// No `--artifacts` directory was given, by flag or file.
    #[error("no artifacts directory: pass --artifacts DIR or set `artifacts` in the config file")]
    NoArtifacts,
    /// A channel name is not `[A-Za-z0-9._-]{1,64}`.
    #[error("channel {0:?} is not [A-Za-z0-9._-]{{1,64}}")]
    BadChannel(String),
    /// The architecture is unknown.
    #[error(transparent)]
    BadArch(#[from] phase_protocol::arch::UnknownArch),
    /// The release version is not SemVer.
    #[error("release version {0:?} is not SemVer")]
    BadVersion(String, #[source] semver::Error),
    /// Only one of `--tls-cert` and `--tls-key` was given.
    #[error("--tls-cert and --tls-key go together")]
    TlsHalf,
}

/// Parses `30d`, `12h`, `90m`, `45s` or `500ms` into a [`Duration`].
///
/// # Errors
/// [`ConfigError::BadDuration`] for anything else (no unit, negative, overflow).
pub fn parse_duration(text: &str) -> Result<Duration, ConfigError> {
    let bad = || ConfigError::BadDuration(text.to_owned());
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().map_err(|_| bad())?;
    let secs_per = match unit {
        "ms" => return Ok(Duration::from_millis(n)),
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(bad()),
    };
    n.checked_mul(secs_per)
        .map(Duration::from_secs)
        .ok_or_else(bad)
}

/// The TOML config file: every key optional, unknown keys refused.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Artifacts directory.
    pub artifacts: Option<PathBuf>,
    /// Channels served.
    pub channels: Option<Vec<String>>,
    /// Architecture (any alias).
    pub arch: Option<String>,
    /// TCP port.
    pub port: Option<u16>,
    /// Bind address.
    pub bind: Option<IpAddr>,
    /// Signing key for generated manifests.
    pub key: Option<PathBuf>,
    /// Base URL others should use.
    pub advertise_url: Option<String>,
    /// TLS certificate chain (PEM).
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    pub tls_key: Option<PathBuf>,
    /// Disable the DHT.
    pub no_dht: Option<bool>,
    /// Disable mDNS.
    pub no_mdns: Option<bool>,
    /// DHT listen multiaddrs.
    pub dht_listen: Option<Vec<String>>,
    /// DHT bootstrap multiaddrs.
    pub bootstrap: Option<Vec<String>>,
    /// libp2p identity key file.
    pub identity: Option<PathBuf>,
    /// Maximum simultaneous connections.
    pub max_connections: Option<usize>,
    /// Maximum simultaneous connections from one client IP address.
    pub max_connections_per_ip: Option<usize>,
    /// Header read timeout (`10s`).
    pub header_timeout: Option<String>,
    /// Write timeout: longest time without write progress (`30s`).
    pub write_timeout: Option<String>,
    /// Deadline for in-flight downloads on shutdown (`10s`).
    pub shutdown_timeout: Option<String>,
    /// Hash cache file.
    pub hash_cache: Option<PathBuf>,
    /// Version written into generated manifests.
    pub release_version: Option<String>,
    /// Lifetime of generated manifests (`30d`).
    pub expires_in: Option<String>,
    /// Target kernel command line written into generated manifests.
    pub cmdline: Option<String>,
    /// Provider name shown on `GET /` and advertised.
    pub name: Option<String>,
}

impl FileConfig {
    /// Reads and parses `path`.
    ///
    /// # Errors
    /// [`ConfigError::Read`], [`ConfigError::Parse`].
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source,
        })
    }
}

/// Default TCP port (seed 000).
pub const DEFAULT_PORT: u16 = 8080;
/// Default connection limit.
pub const DEFAULT_MAX_CONNECTIONS: usize = 512;
/// Default connection limit per client IP address. A booting machine opens about four
/// connections at once (the manifest, then kernel, initramfs and rootfs in parallel, plus a
/// retry or a resume now and then), so 64 leaves room for several machines behind one NAT
/// address and for load tests from one host (docs/benchmarks.md runs 64 downloads from
/// 127.0.0.1), while one address can still take at most an eighth of the default 512.
pub const DEFAULT_MAX_CONNECTIONS_PER_IP: usize = 64;
/// Default header read timeout (slowloris guard).
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Default write timeout: a client whose receive window stays full this long is dropped. The
/// same as the fetch client's idle timeout (`phase fetch --idle-timeout-ms`, 30 s): a client
/// that has not taken a byte for that long has given up on this connection itself. A slow but
/// steady reader is never dropped: each byte the kernel accepts restarts the clock.
pub const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// Default deadline for in-flight downloads after SIGTERM/SIGINT.
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);
/// Default lifetime of a generated manifest (30 days).
pub const DEFAULT_EXPIRES_IN: Duration = Duration::from_secs(30 * 86_400);

/// The resolved settings of `plasmd serve`.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Artifacts directory: a `{channel}/{arch}/` tree or a flat release dir.
    pub artifacts: PathBuf,
    /// Channels served from the tree; the first is the default for `/manifest.json`.
    pub channels: Vec<String>,
    /// Default architecture (host's unless given).
    pub arch: phase_protocol::Arch,
    /// Address to bind.
    pub bind: IpAddr,
    /// TCP port.
    pub port: u16,
    /// Signing key for generated manifests; never needed to relay one.
    pub key: Option<PathBuf>,
    /// Base URL others should use (`http://<first non-loopback IPv4>:<port>` if `None`).
    pub advertise_url: Option<String>,
    /// TLS certificate chain and key (PEM), both or neither.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Announce on mDNS.
    pub mdns: bool,
    /// Publish on the DHT.
    pub dht: bool,
    /// DHT listen multiaddrs.
    pub dht_listen: Vec<String>,
    /// DHT bootstrap multiaddrs.
    pub bootstrap: Vec<String>,
    /// libp2p identity key file.
    pub identity: Option<PathBuf>,
    /// Maximum simultaneous connections; more wait in the listen backlog.
    pub max_connections: usize,
    /// Maximum simultaneous connections from one client IP address; more are closed at once.
    pub max_connections_per_ip: usize,
    /// Time a client gets to send a complete request head.
    pub header_timeout: Duration,
    /// Longest time writes to a client may make no progress (its receive window stays full)
    /// before the connection is dropped.
    pub write_timeout: Duration,
    /// Deadline for in-flight requests after a shutdown signal.
    pub shutdown_timeout: Duration,
    /// Hash cache file (`<artifacts>/.plasmd-hashes.json` if `None`).
    pub hash_cache: Option<PathBuf>,
    /// Version of generated manifests.
    pub release_version: semver::Version,
    /// Lifetime of generated manifests.
    pub expires_in: Duration,
    /// Target kernel command line of generated manifests.
    pub cmdline: String,
    /// Provider name.
    pub name: Option<String>,
}

impl ServeConfig {
    /// Settings for `artifacts` with every default (used by tests and as the merge base).
    pub fn with_defaults(artifacts: impl Into<PathBuf>) -> Self {
        ServeConfig {
            artifacts: artifacts.into(),
            channels: vec!["stable".to_owned()],
            arch: phase_protocol::Arch::host().unwrap_or(phase_protocol::Arch::X86_64),
            bind: IpAddr::from([0, 0, 0, 0]),
            port: DEFAULT_PORT,
            key: None,
            advertise_url: None,
            tls: None,
            mdns: true,
            dht: true,
            dht_listen: Vec::new(),
            bootstrap: Vec::new(),
            identity: None,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_connections_per_ip: DEFAULT_MAX_CONNECTIONS_PER_IP,
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            write_timeout: DEFAULT_WRITE_TIMEOUT,
            shutdown_timeout: DEFAULT_SHUTDOWN_TIMEOUT,
            hash_cache: None,
            release_version: semver::Version::new(0, 1, 0),
            expires_in: DEFAULT_EXPIRES_IN,
            cmdline: String::new(),
            name: None,
        }
    }

    /// Applies a config file under the flags: each `Some` of `file` replaces the default.
    /// Flags are applied afterwards by the caller.
    ///
    /// # Errors
    /// [`ConfigError`] for a bad duration, channel, arch or version.
    pub fn apply_file(&mut self, file: FileConfig) -> Result<(), ConfigError> {
        if let Some(v) = file.artifacts {
            self.artifacts = v;
        }
        if let Some(v) = file.channels {
            self.channels = v;
        }
        if let Some(v) = file.arch {
            self.arch = v.parse()?;
        }
        if let Some(v) = file.port {
            self.port = v;
        }
        if let Some(v) = file.bind {
            self.bind = v;
        }
        self.key = file.key.or(self.key.take());
        self.advertise_url = file.advertise_url.or(self.advertise_url.take());
        match (file.tls_cert, file.tls_key) {
            (Some(c), Some(k)) => self.tls = Some((c, k)),
            (None, None) => {}
            _ => return Err(ConfigError::TlsHalf),
        }
        if file.no_dht == Some(true) {
            self.dht = false;
        }
        if file.no_mdns == Some(true) {
            self.mdns = false;
        }
        if let Some(v) = file.dht_listen {
            self.dht_listen = v;
        }
        if let Some(v) = file.bootstrap {
            self.bootstrap = v;
        }
        self.identity = file.identity.or(self.identity.take());
        if let Some(v) = file.max_connections {
            self.max_connections = v;
        }
        if let Some(v) = file.max_connections_per_ip {
            self.max_connections_per_ip = v;
        }
        if let Some(v) = file.header_timeout {
            self.header_timeout = parse_duration(&v)?;
        }
        if let Some(v) = file.write_timeout {
            self.write_timeout = parse_duration(&v)?;
        }
        if let Some(v) = file.shutdown_timeout {
            self.shutdown_timeout = parse_duration(&v)?;
        }
        self.hash_cache = file.hash_cache.or(self.hash_cache.take());
        if let Some(v) = file.release_version {
            self.release_version = v
                .parse()
                .map_err(|e| ConfigError::BadVersion(v.clone(), e))?;
        }
        if let Some(v) = file.expires_in {
            self.expires_in = parse_duration(&v)?;
        }
        if let Some(v) = file.cmdline {
            self.cmdline = v;
        }
        self.name = file.name.or(self.name.take());
        Ok(())
    }

    /// Checks what flags and file cannot check alone.
    ///
    /// # Errors
    /// [`ConfigError::BadChannel`], [`ConfigError::NoArtifacts`].
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.artifacts.as_os_str().is_empty() {
            return Err(ConfigError::NoArtifacts);
        }
        for c in &self.channels {
            if !phase_protocol::manifest::valid_channel(c) {
                return Err(ConfigError::BadChannel(c.clone()));
            }
        }
        if self.channels.is_empty() {
            return Err(ConfigError::BadChannel(String::new()));
        }
        Ok(())
    }

    /// The default channel: the first `--channel`.
    pub fn default_channel(&self) -> &str {
        self.channels.first().map_or("stable", String::as_str)
    }

    /// The hash cache path: `--hash-cache` or `<artifacts>/.plasmd-hashes.json`.
    pub fn hash_cache_path(&self) -> PathBuf {
        self.hash_cache
            .clone()
            .unwrap_or_else(|| self.artifacts.join(".plasmd-hashes.json"))
    }
}

/// The base URL to advertise when none was given: `http(s)://<first non-loopback IPv4>:<port>`,
/// or the bind address (127.0.0.1 if unspecified) when the host has no such address.
pub fn detect_advertise_url(bind: IpAddr, port: u16, tls: bool) -> String {
    let scheme = if tls { "https" } else { "http" };
    if !bind.is_unspecified() {
        return match bind {
            IpAddr::V4(a) => format!("{scheme}://{a}:{port}"),
            IpAddr::V6(a) => format!("{scheme}://[{a}]:{port}"),
        };
    }
    let found = if_addrs::get_if_addrs().ok().and_then(|addrs| {
        addrs.into_iter().find_map(|i| match i.ip() {
            IpAddr::V4(a) if !a.is_loopback() => Some(a),
            _ => None,
        })
    });
    let host = found.unwrap_or(std::net::Ipv4Addr::LOCALHOST);
    format!("{scheme}://{host}:{port}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units_and_refuse_garbage() {
        assert_eq!(
            parse_duration("30d").unwrap(),
            Duration::from_secs(30 * 86_400)
        );
        assert_eq!(
            parse_duration("12h").unwrap(),
            Duration::from_secs(12 * 3600)
        );
        assert_eq!(parse_duration("90m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        for bad in ["", "30", "d", "-1d", "3x", "1.5h", "99999999999999999999d"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn file_values_replace_defaults_and_unknown_keys_are_refused() {
        let file: FileConfig = toml::from_str(
            "port = 9000\nchannels = [\"beta\"]\nexpires_in = \"2d\"\narch = \"arm64\"\n\
             write_timeout = \"45s\"\nmax_connections_per_ip = 8",
        )
        .unwrap();
        let mut cfg = ServeConfig::with_defaults("/srv");
        cfg.apply_file(file).unwrap();
        assert_eq!(cfg.port, 9000);
        assert_eq!(cfg.default_channel(), "beta");
        assert_eq!(cfg.arch, phase_protocol::Arch::Aarch64);
        assert_eq!(cfg.expires_in, Duration::from_secs(2 * 86_400));
        assert_eq!(cfg.write_timeout, Duration::from_secs(45));
        assert_eq!(cfg.max_connections_per_ip, 8);
        assert!(toml::from_str::<FileConfig>("prot = 1").is_err());
    }

    #[test]
    fn half_tls_config_is_refused() {
        let file = FileConfig {
            tls_cert: Some("c.pem".into()),
            ..FileConfig::default()
        };
        let mut cfg = ServeConfig::with_defaults("/srv");
        assert!(matches!(cfg.apply_file(file), Err(ConfigError::TlsHalf)));
    }

    #[test]
    fn advertise_url_uses_a_specific_bind_address() {
        let url = detect_advertise_url("192.0.2.1".parse().unwrap(), 8080, false);
        assert_eq!(url, "http://192.0.2.1:8080");
        let url = detect_advertise_url("0.0.0.0".parse().unwrap(), 8443, true);
        assert!(
            url.starts_with("https://") && url.ends_with(":8443"),
            "{url}"
        );
    }
}
