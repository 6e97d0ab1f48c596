//! The `phase` tool: fetch and verify signed boot releases (issue 5), for scripts and
//! debugging. Also runs as `phase-fetch`, `phase-verify`, `phase-discover` (`argv[0]` decides).
//! Thin: parses arguments and calls [`phase_init::cli`].

use std::process::ExitCode;

use clap::Parser;
use phase_init::cli::{self, Cli, Command};
use phase_init::log;

fn main() -> ExitCode {
    let argv = cli::argv_with_link_subcommand(std::env::args_os().collect());
    // Usage errors exit with status 2 (clap's default).
    let cli = Cli::parse_from(argv);
    match cli.command {
        Command::Verify(args) => ExitCode::from(cli::verify::run(&args)),
        Command::Discover(args) => run_async("discover", cli::discover::run(args)),
        Command::Fetch(args) => run_async("fetch", cli::fetch::run(args)),
    }
}

/// Runs an async subcommand; an error is printed as `phase: <stage> failed after <N>ms:
/// <chain>` and gives exit status 1.
///
/// The runtime follows the CPUs this process may use (its affinity mask, so `taskset` counts):
/// with one, a current-thread runtime, so a download's connection task and its hashing task
/// do not hand every chunk between two threads that share that CPU; with more, two workers, so
/// receiving overlaps with hashing and writing.
fn run_async(
    name: &'static str,
    fut: impl std::future::Future<Output = anyhow::Result<()>>,
) -> ExitCode {
    let stage = log::Stage::start(name);
    let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    let mut builder = if cpus > 1 {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(2);
        b
    } else {
        tokio::runtime::Builder::new_current_thread()
    };
    let rt = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            stage.failed(&e);
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(fut) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            stage.failed(AsRef::<dyn std::error::Error>::as_ref(&e));
            ExitCode::FAILURE
        }
    }
}
