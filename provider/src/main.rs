//! `plasmd` binary: a thin wrapper around the `phase_provider` library (parse, log, run).
#![deny(unsafe_code)]

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use phase_provider::cli::Cli;

/// One glibc malloc arena instead of one per thread (up to 8 × cores). Read chunks are
/// allocated on the blocking threads and freed on the workers; each thread's arena kept up to
/// its trim threshold (4 MiB once a 2 MiB chunk was freed) of freed chunks, which made peak RSS
/// with 64 downloads about 30 MiB instead of about 17 MiB (issue 3 target < 32 MB; figures in
/// docs/benchmarks.md). Serving throughput did not change: chunks are few and large. Must run
/// before any thread starts. Setting a fixed trim or mmap threshold instead would turn every
/// 2 MiB chunk into an mmap/munmap pair, which cost about 40% of single-client throughput.
#[allow(unsafe_code)]
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter; it is called at the top of main,
    // before any other thread exists, with a valid parameter and value. A refusal (return 0)
    // only leaves glibc's default, so the result is not needed.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

fn main() -> ExitCode {
    limit_malloc_arenas();
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_new(&cli.log)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only for a person at a terminal: not for logs, serial consoles (a service started
    // by phase-init has no TERM) or NO_COLOR (https://no-color.org).
    let colour = std::io::stderr().is_terminal()
        && std::env::var_os("NO_COLOR").is_none()
        && std::env::var("TERM").is_ok_and(|t| !t.is_empty() && t != "dumb");
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(colour)
        .init();
    match phase_provider::commands::run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("plasmd: {}", phase_provider::error_chain(&e));
            ExitCode::from(e.exit_code())
        }
    }
}
