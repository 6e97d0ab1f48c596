//! `plasmd` binary: a thin wrapper around the `phase_provider` library (parse, log, run).
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;
use phase_provider::cli::Cli;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_new(&cli.log)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    match phase_provider::commands::run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("plasmd: {}", phase_provider::error_chain(&e));
            ExitCode::from(e.exit_code())
        }
    }
}
