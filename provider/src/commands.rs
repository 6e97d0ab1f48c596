//! What each `plasmd` subcommand does (issue 3 "Must have" 4; seed 000 "CLI Commands").
//!
//! [`run`] is everything `main` calls. Exit codes: 0 success; 1 failure (for `manifest verify`:
//! the manifest was refused); 2 usage errors (bad flags, unreadable input files).

use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use chrono::Utc;

use crate::cli::{
    Cli, Command, DhtNodeArgs, KeygenArgs, ManifestCommand, ProviderCommand, ServeArgs,
};
use crate::config::{parse_duration, ConfigError, FileConfig, ServeConfig};
use crate::generate::{self, ReleaseInfo};

/// Why a subcommand failed.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// Bad settings (exit 2).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A file could not be read (exit 2).
    #[error("cannot read {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A file could not be written.
    #[error("cannot write {path}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A flag value is not usable (exit 2).
    #[error("{0}")]
    Usage(String),
    /// Building or signing a manifest failed.
    #[error(transparent)]
    Generate(#[from] generate::GenerateError),
    /// A key or trust file is not usable (exit 2).
    #[error(transparent)]
    Key(#[from] phase_protocol::signing::SignError),
    /// The trust file is not usable (exit 2).
    #[error(transparent)]
    Trust(#[from] phase_protocol::trust::TrustError),
    /// `serve` could not start.
    #[error(transparent)]
    Serve(#[from] crate::serve::ServeError),
    /// The provider could not be queried.
    #[error(transparent)]
    Client(#[from] crate::client::ClientError),
    /// The DHT node failed.
    #[error(transparent)]
    Advertise(#[from] crate::advertise::AdvertiseError),
    /// The async runtime could not start.
    #[error("cannot start the async runtime")]
    Runtime(#[source] std::io::Error),
}

impl CommandError {
    /// The exit code for this error: 2 for usage errors, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            CommandError::Config(_)
            | CommandError::Read { .. }
            | CommandError::Usage(_)
            | CommandError::Key(_)
            | CommandError::Trust(_) => 2,
            _ => 1,
        }
    }
}

/// Runs the parsed command line; returns the exit code on success (verify may return 1).
///
/// # Errors
/// [`CommandError`]; print it with [`crate::error_chain`] and exit with
/// [`CommandError::exit_code`].
pub fn run(cli: Cli) -> Result<u8, CommandError> {
    match cli.command {
        Command::Keygen(args) => keygen(&args),
        Command::Manifest(cmd) => manifest(cmd),
        Command::Serve(args) => {
            let cfg = serve_config(*args)?;
            runtime()?.block_on(async {
                let running = crate::serve::start(cfg).await?;
                running.run(crate::server::shutdown_signal()).await;
                Ok(0)
            })
        }
        Command::Provider(cmd) => runtime()?.block_on(provider(cmd)),
        Command::DhtNode(args) => runtime()?.block_on(dht_node(args)),
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, CommandError> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(std::thread::available_parallelism().map_or(2, |n| n.get().min(4)))
        .max_blocking_threads(8)
        .enable_all()
        .build()
        .map_err(CommandError::Runtime)
}

/// Merges defaults, `--config` and flags into the settings of `serve`.
///
/// # Errors
/// [`ConfigError`] wrapped in [`CommandError::Config`].
pub fn serve_config(args: ServeArgs) -> Result<ServeConfig, CommandError> {
    let mut cfg = ServeConfig::with_defaults(PathBuf::new());
    if let Some(path) = &args.config {
        cfg.apply_file(FileConfig::load(path)?)?;
    }
    if let Some(v) = args.artifacts {
        cfg.artifacts = v;
    }
    if !args.channels.is_empty() {
        cfg.channels = args.channels;
    }
    if let Some(v) = args.arch {
        cfg.arch = v.parse().map_err(ConfigError::from)?;
    }
    if let Some(v) = args.port {
        cfg.port = v;
    }
    if let Some(v) = args.bind {
        cfg.bind = v;
    }
    cfg.key = args.key.or(cfg.key);
    cfg.advertise_url = args.advertise_url.or(cfg.advertise_url);
    if let (Some(c), Some(k)) = (args.tls_cert, args.tls_key) {
        cfg.tls = Some((c, k));
    }
    cfg.dht &= !args.no_dht;
    cfg.mdns &= !args.no_mdns;
    if !args.dht_listen.is_empty() {
        cfg.dht_listen = args.dht_listen;
    }
    if !args.bootstrap.is_empty() {
        cfg.bootstrap = args.bootstrap;
    }
    cfg.identity = args.identity.or(cfg.identity);
    if let Some(v) = args.max_connections {
        cfg.max_connections = v;
    }
    if let Some(v) = args.max_connections_per_ip {
        cfg.max_connections_per_ip = v;
    }
    if let Some(v) = args.header_timeout {
        cfg.header_timeout = parse_duration(&v)?;
    }
    if let Some(v) = args.write_timeout {
        cfg.write_timeout = parse_duration(&v)?;
    }
    if let Some(v) = args.shutdown_timeout {
        cfg.shutdown_timeout = parse_duration(&v)?;
    }
    cfg.hash_cache = args.hash_cache.or(cfg.hash_cache);
    if let Some(v) = args.release_version {
        cfg.release_version = v
            .parse()
            .map_err(|e| ConfigError::BadVersion(v.clone(), e))?;
    }
    if let Some(v) = args.expires_in {
        cfg.expires_in = parse_duration(&v)?;
    }
    if let Some(v) = args.cmdline {
        cfg.cmdline = v;
    }
    cfg.name = args.name.or(cfg.name);
    cfg.validate()?;
    Ok(cfg)
}

fn write_new(path: &Path, text: &str, mode: u32, force: bool) -> Result<(), CommandError> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).mode(mode);
    if force {
        opts.create(true).truncate(true);
    } else {
        opts.create_new(true);
    }
    let write = |source| CommandError::Write {
        path: path.to_owned(),
        source,
    };
    let mut f = opts.open(path).map_err(write)?;
    f.write_all(text.as_bytes()).map_err(write)
}

fn keygen(args: &KeygenArgs) -> Result<u8, CommandError> {
    use phase_protocol::signing::{generate_key, public_key_text, secret_key_text};
    let key = generate_key();
    let mut pub_path = args.out.clone().into_os_string();
    pub_path.push(".pub");
    let pub_path = PathBuf::from(pub_path);
    write_new(&args.out, &secret_key_text(&key), 0o600, args.force)?;
    write_new(
        &pub_path,
        &public_key_text(&key.verifying_key()),
        0o644,
        args.force,
    )?;
    let trust = phase_protocol::TrustRoot::new([key.verifying_key()], 1)?;
    println!(
        "wrote secret key {} (mode 0600) and public key {}",
        args.out.display(),
        pub_path.display()
    );
    println!(
        "trust file snippet (/etc/phase/trust.toml):\n\n{}",
        trust.to_toml()
    );
    Ok(0)
}

fn read_input(path: Option<&Path>) -> Result<Vec<u8>, CommandError> {
    match path {
        Some(p) => std::fs::read(p).map_err(|source| CommandError::Read {
            path: p.to_owned(),
            source,
        }),
        None => {
            let mut buf = Vec::new();
            std::io::stdin()
                .read_to_end(&mut buf)
                .map_err(|source| CommandError::Read {
                    path: "-".into(),
                    source,
                })?;
            Ok(buf)
        }
    }
}

fn write_output(path: Option<&Path>, text: &str) -> Result<(), CommandError> {
    match path {
        Some(p) => std::fs::write(p, text).map_err(|source| CommandError::Write {
            path: p.to_owned(),
            source,
        }),
        None => std::io::stdout()
            .write_all(text.as_bytes())
            .map_err(|source| CommandError::Write {
                path: "-".into(),
                source,
            }),
    }
}

fn manifest(cmd: ManifestCommand) -> Result<u8, CommandError> {
    match cmd {
        ManifestCommand::Build {
            artifacts,
            channel,
            arch,
            version,
            expires_in,
            cmdline,
            manifest_version,
            chunk_size,
            out,
        } => {
            let mut info = ReleaseInfo::new(
                channel,
                arch.parse().map_err(ConfigError::from)?,
                version
                    .parse()
                    .map_err(|e| ConfigError::BadVersion(version.clone(), e))?,
                parse_duration(&expires_in)?,
                cmdline,
            );
            info.manifest_version = manifest_version;
            info.chunk_size = chunk_size;
            if manifest_version == 1 && chunk_size.is_some() {
                return Err(CommandError::Usage(
                    "--chunk-size needs --manifest-version 2 (v1 has no chunks)".into(),
                ));
            }
            // A throwaway cache: `manifest build` always hashes what is there now.
            let cache =
                crate::hashcache::HashCache::load(PathBuf::from("/nonexistent/plasmd-no-cache"));
            let m = generate::build_manifest(&artifacts, &info, &cache, Utc::now())?;
            let value = generate::unsigned_json(&m)?;
            let mut text =
                serde_json::to_string_pretty(&value).map_err(generate::GenerateError::Json)?;
            text.push('\n');
            write_output(out.as_deref(), &text)?;
            Ok(0)
        }
        ManifestCommand::Sign { key, input, out } => {
            let key = phase_protocol::signing::load_signing_key(&key)?;
            let bytes = read_input(input.as_deref())?;
            let value =
                phase_protocol::json::parse_strict(&bytes, phase_protocol::json::DEFAULT_MAX_DEPTH)
                    .map_err(|e| {
                        CommandError::Usage(format!(
                            "input is not acceptable JSON: {}",
                            crate::error_chain(&e)
                        ))
                    })?;
            let text = generate::sign_to_text(value, &key, Utc::now())?;
            write_output(out.as_deref(), &text)?;
            Ok(0)
        }
        ManifestCommand::Verify {
            trust,
            manifest,
            channel,
            arch,
            artifacts,
        } => {
            let trust = phase_protocol::TrustRoot::load(&trust)?;
            let bytes = read_input(Some(&manifest))?;
            let expect = phase_protocol::Expectation {
                channel,
                arch: arch
                    .map(|a| a.parse())
                    .transpose()
                    .map_err(ConfigError::from)?,
                ..Default::default()
            };
            let now = Utc::now();
            match phase_protocol::verify(&bytes, &trust, now, &expect) {
                Ok(v) => {
                    print!("{}", verify_report(&manifest, &v, trust.threshold(), now));
                    let Some(dir) = artifacts else {
                        return Ok(0);
                    };
                    let problems = check_artifact_files(v.manifest(), &dir);
                    for p in &problems {
                        println!("{}: REFUSED: {p}", manifest.display());
                    }
                    if problems.is_empty() {
                        println!(
                            "  files      match ({}, every artifact{})",
                            dir.display(),
                            if v.manifest().manifest_version >= 2 {
                                " and every chunk"
                            } else {
                                ""
                            }
                        );
                    }
                    Ok(u8::from(!problems.is_empty()))
                }
                Err(e) => {
                    println!(
                        "{}: REFUSED: {}",
                        manifest.display(),
                        crate::error_chain(&e)
                    );
                    Ok(1)
                }
            }
        }
    }
}

/// Checks each artifact file `<dir>/<filename>` against `m`: size, whole-file SHA-256 and, for
/// v2, every chunk's SHA-256 re-derived from the file (issue 19 §1). Returns one line per
/// problem (empty when all match); the first differing chunk is named with its byte offset.
pub fn check_artifact_files(m: &phase_protocol::BootManifest, dir: &Path) -> Vec<String> {
    let mut problems = Vec::new();
    for (name, a) in &m.artifacts {
        let path = dir.join(&a.filename);
        let chunk_size = a
            .chunk_size
            .unwrap_or(phase_protocol::chunks::MAX_CHUNK_SIZE);
        let list = match std::fs::File::open(&path)
            .and_then(|f| phase_protocol::chunks::chunk_list_of(f, chunk_size))
        {
            Ok(list) => list,
            Err(e) => {
                problems.push(format!("{name}: cannot read {}: {e}", path.display()));
                continue;
            }
        };
        if list.size != a.size_bytes {
            problems.push(format!(
                "{name}: {} is {} bytes, the manifest says {}",
                path.display(),
                list.size,
                a.size_bytes
            ));
        } else if list.whole != a.hash {
            problems.push(format!(
                "{name}: {} has SHA-256 {}, the manifest says {}",
                path.display(),
                list.whole,
                a.hash
            ));
        }
        if let Some((size, expected)) = a.chunking() {
            let bad = list
                .chunks
                .iter()
                .zip(expected)
                .position(|(got, want)| got != want);
            if let Some(i) = bad {
                problems.push(format!(
                    "{name}: chunk {i} (bytes {}..) of {} does not match the manifest's chunk list",
                    i as u64 * size,
                    path.display()
                ));
            } else if list.chunks.len() != expected.len() {
                problems.push(format!(
                    "{name}: {} has {} chunks, the manifest lists {}",
                    path.display(),
                    list.chunks.len(),
                    expected.len()
                ));
            }
        }
    }
    problems
}

/// The readable report of a manifest that verified.
pub fn verify_report(
    path: &Path,
    v: &phase_protocol::VerifiedManifest,
    threshold: usize,
    now: chrono::DateTime<Utc>,
) -> String {
    let m = v.manifest();
    let left = m.expires_at - now;
    let mut out = format!("{}: VALID\n", path.display());
    out += &format!(
        "  version    {}\n  channel    {}\n  arch       {}\n",
        m.version, m.channel, m.arch
    );
    out += &format!("  created    {}\n", generate::rfc3339(m.created_at));
    out += &format!(
        "  expires    {} (in {}d {}h)\n",
        generate::rfc3339(m.expires_at),
        left.num_days(),
        left.num_hours() % 24
    );
    out += &format!(
        "  signers    {} of threshold {}\n",
        v.signers().len(),
        threshold
    );
    for s in v.signers() {
        out += &format!("    {s}\n");
    }
    out += &format!(
        "  cmdline    {:?}\n  artifacts  {} ({} bytes)\n",
        m.cmdline,
        m.artifacts.len(),
        m.total_bytes()
    );
    out += &format!("  format     manifest_version {}\n", m.manifest_version);
    for (name, a) in &m.artifacts {
        out += &format!(
            "    {name:<10} {:<12} {:>12} bytes  {}\n",
            a.filename, a.size_bytes, a.hash
        );
        if let Some((size, list)) = a.chunking() {
            out += &format!("               {} chunks of {size} bytes\n", list.len());
        }
    }
    out
}

async fn provider(cmd: ProviderCommand) -> Result<u8, CommandError> {
    match cmd {
        ProviderCommand::Status { json, addr } => {
            let (code, body) = crate::client::get(&addr, "/status").await?;
            let (hcode, health) = crate::client::get(&addr, "/health").await?;
            if json {
                println!("{}", String::from_utf8_lossy(&body));
                return Ok(u8::from(code != 200));
            }
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            let h: serde_json::Value = serde_json::from_slice(&health).unwrap_or_default();
            println!(
                "provider   {} ({})",
                v["name"].as_str().unwrap_or("?"),
                addr
            );
            println!(
                "health     {} {}",
                hcode,
                h["status"].as_str().unwrap_or("?")
            );
            if let Some(reason) = h["reason"].as_str() {
                println!("reason     {reason}");
            }
            println!("uptime     {}s", v["uptime_secs"]);
            println!("requests   {}", v["requests"]);
            println!("served     {} bytes", v["bytes_served"]);
            println!("connections {} active", v["active_connections"]);
            println!("downloads  {} active", v["active_downloads"]);
            Ok(u8::from(hcode != 200))
        }
        ProviderCommand::List { addr } => {
            let (code, body) = crate::client::get(&addr, "/").await?;
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            let releases = v["releases"].as_array().cloned().unwrap_or_default();
            if releases.is_empty() {
                println!("no releases served by {addr} (HTTP {code})");
            }
            for r in releases {
                println!(
                    "{}/{}  version {}  {}",
                    r["channel"].as_str().unwrap_or("?"),
                    r["arch"].as_str().unwrap_or("?"),
                    r["version"].as_str().unwrap_or("(no manifest)"),
                    r["manifest_url"].as_str().unwrap_or("")
                );
                for a in r["artifacts"].as_array().into_iter().flatten() {
                    println!("    {}", a.as_str().unwrap_or("?"));
                }
            }
            Ok(u8::from(code != 200))
        }
    }
}

async fn dht_node(args: DhtNodeArgs) -> Result<u8, CommandError> {
    let opts = crate::advertise::AdvertiseOptions {
        mdns: false,
        dht: true,
        dht_listen: args.dht_listen,
        bootstrap: args.bootstrap,
        identity: args.identity,
        provider_name: None,
    };
    crate::advertise::run_dht_node(opts, crate::server::shutdown_signal()).await?;
    Ok(0)
}
