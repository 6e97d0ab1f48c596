//! `phase verify`: check a manifest file, and optionally artifacts on disk, against a trust
//! root (issue 5). Exit status 0 valid, 1 refused, 2 usage (unreadable trust root or file).

use std::path::PathBuf;

use chrono::Utc;
use phase_protocol::{verify, Arch, Expectation, TrustRoot};

use crate::fetch::{verify_artifacts_in_dir, RollbackState};
use crate::log::{self, Stage};

/// Arguments of `phase verify`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Prints `phase: manifest ok version=<v> signers=<n> in <N>ms`, and with \
    --artifacts `phase: verify ok version=<v> artifacts=<n> in <N>ms`. Exit status: 0 valid, \
    1 refused, 2 usage error."
)]
pub struct VerifyArgs {
    /// Trust root (TOML: threshold + Ed25519 public keys).
    #[arg(long, value_name = "FILE", default_value = "/etc/phase/trust.toml")]
    pub trust: PathBuf,
    /// The manifest.json to verify.
    #[arg(value_name = "MANIFEST")]
    pub manifest: PathBuf,
    /// Also verify size and SHA-256 of each artifact (by filename) in this directory.
    #[arg(long, value_name = "DIR")]
    pub artifacts: Option<PathBuf>,
    /// Required channel.
    #[arg(long)]
    pub channel: Option<String>,
    /// Required architecture (aliases accepted).
    #[arg(long)]
    pub arch: Option<Arch>,
    /// Directory with state.json whose rollback and time floors apply (read only).
    #[arg(long, value_name = "DIR")]
    pub state: Option<PathBuf>,
}

/// Exit status: valid.
pub const EXIT_VALID: u8 = 0;
/// Exit status: refused.
pub const EXIT_REFUSED: u8 = 1;
/// Exit status: usage error (bad arguments, unreadable trust root or manifest).
pub const EXIT_USAGE: u8 = 2;

/// Runs `phase verify` and returns the exit status, printing stage lines on the way.
pub fn run(args: &VerifyArgs) -> u8 {
    let stage = Stage::start("manifest");
    let trust = match TrustRoot::load(&args.trust) {
        Ok(t) => t,
        Err(e) => {
            log::line(&format!("verify usage error: {}", log::error_chain(&e)));
            return EXIT_USAGE;
        }
    };
    let bytes = match std::fs::read(&args.manifest) {
        Ok(b) => b,
        Err(e) => {
            log::line(&format!(
                "verify usage error: cannot read {}: {e}",
                args.manifest.display()
            ));
            return EXIT_USAGE;
        }
    };
    let state = match args.state.as_deref().map(RollbackState::load).transpose() {
        Ok(s) => s,
        Err(e) => {
            stage.failed(&e);
            return EXIT_REFUSED;
        }
    };
    let base = Expectation {
        channel: args.channel.clone(),
        arch: args.arch,
        ..Expectation::default()
    };
    let expect = state
        .as_ref()
        .map_or_else(|| base.clone(), |s| s.tighten_time(&base));
    let checked = verify(&bytes, &trust, Utc::now(), &expect)
        .and_then(|m| state.as_ref().map_or(Ok(()), |s| s.check(&m)).map(|()| m));
    let m = match checked {
        Ok(m) => m,
        Err(e) => {
            stage.failed(&e);
            return EXIT_REFUSED;
        }
    };
    stage.ok(format_args!(
        "version={} signers={}",
        m.manifest().version,
        m.signers().len()
    ));
    if let Some(dir) = &args.artifacts {
        let stage = Stage::start("verify");
        match verify_artifacts_in_dir(&m, dir) {
            Ok(files) => stage.ok(format_args!(
                "version={} artifacts={}",
                m.manifest().version,
                files.len()
            )),
            Err(e) => {
                stage.failed(&e);
                return EXIT_REFUSED;
            }
        }
    }
    EXIT_VALID
}
