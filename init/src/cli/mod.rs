//! The `phase` tool's subcommands (issue 5 CLI; seed 003 names `phase-discover`,
//! `phase-fetch`, `phase-verify`).
//!
//! The tool is for scripts and debugging, inside the initramfs and on any Linux host; the init
//! calls the same library functions directly. Invoked through a link named `phase-fetch`
//! (`phase-verify`, `phase-discover`) it runs that subcommand: [`argv_with_link_subcommand`].

pub mod discover;
pub mod fetch;
pub mod verify;

use std::ffi::OsString;
use std::path::Path;

/// The `phase` command line.
#[derive(Debug, clap::Parser)]
#[command(
    name = "phase",
    version,
    about = "Phase Boot tool: fetch and verify signed boot releases",
    long_about = "Phase Boot tool: fetch and verify signed boot releases.\n\n\
        Also runs as phase-fetch / phase-verify / phase-discover (the name it is called by \
        selects the subcommand).\n\nExit status: 0 success, 1 refused or failed, 2 usage error."
)]
pub struct Cli {
    /// The subcommand.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Find providers of signed boot manifests on the LAN (mDNS) or the DHT.
    Discover(discover::DiscoverArgs),
    /// Fetch a manifest, verify it, then stream and verify every artifact into a directory.
    Fetch(fetch::FetchArgs),
    /// Verify a manifest file (and optionally the artifacts next to it) against a trust root.
    Verify(verify::VerifyArgs),
}

/// Subcommands that links to the binary may select (`phase-<name>`).
pub const LINK_SUBCOMMANDS: [&str; 3] = ["discover", "fetch", "verify"];

/// When `argv[0]`'s basename is `phase-<sub>` for a known subcommand, returns the arguments with
/// `<sub>` inserted after `argv[0]`; otherwise returns them unchanged.
pub fn argv_with_link_subcommand(mut argv: Vec<OsString>) -> Vec<OsString> {
    let sub = argv
        .first()
        .and_then(|a0| Path::new(a0).file_name())
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_prefix("phase-"))
        .filter(|s| LINK_SUBCOMMANDS.contains(s))
        .map(OsString::from);
    if let Some(sub) = sub {
        argv.insert(1, sub);
    }
    argv
}

/// Whether `argv[0]` names the tool (issue 18 §1, one multicall binary): its basename is
/// `phase` or `phase-<sub>` for a known subcommand. `/init` and `phase-init` are not the tool.
/// The init binary checks this first, also as PID 1 (a container's entrypoint `phase fetch`
/// is the tool); the kernel never starts the init by one of these names.
pub fn invoked_as_tool(argv0: Option<&std::ffi::OsStr>) -> bool {
    argv0
        .and_then(|a0| Path::new(a0).file_name())
        .and_then(|n| n.to_str())
        .is_some_and(|n| {
            n == "phase"
                || n.strip_prefix("phase-")
                    .is_some_and(|s| LINK_SUBCOMMANDS.contains(&s))
        })
}

/// The tool's `main`: parses `std::env::args_os()` ([`argv_with_link_subcommand`] first) and
/// runs the subcommand. Exit status 0 success, 1 refused or failed, 2 usage error (clap).
pub fn main() -> std::process::ExitCode {
    use clap::Parser;
    use std::process::ExitCode;
    let argv = argv_with_link_subcommand(std::env::args_os().collect());
    let cli = Cli::parse_from(argv);
    match cli.command {
        Command::Verify(args) => ExitCode::from(verify::run(&args)),
        Command::Discover(args) => run_async("discover", discover::run(args)),
        Command::Fetch(args) => run_async("fetch", fetch::run(args)),
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
) -> std::process::ExitCode {
    use std::process::ExitCode;
    let stage = crate::log::Stage::start(name);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tool_is_recognised_by_its_names_and_the_init_is_not() {
        for tool in [
            "phase",
            "/bin/phase",
            "/bin/phase-fetch",
            "phase-verify",
            "./phase-discover",
        ] {
            assert!(invoked_as_tool(Some(std::ffi::OsStr::new(tool))), "{tool}");
        }
        for init in [
            "/init",
            "init",
            "/sbin/phase-init",
            "phase-init",
            "/bin/phase-x",
            "phasefetch",
            "",
        ] {
            assert!(!invoked_as_tool(Some(std::ffi::OsStr::new(init))), "{init}");
        }
        assert!(!invoked_as_tool(None));
    }

    fn args(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    #[test]
    fn link_name_selects_the_subcommand() {
        assert_eq!(
            argv_with_link_subcommand(args(&["/bin/phase-fetch", "--out", "x"])),
            args(&["/bin/phase-fetch", "fetch", "--out", "x"])
        );
        assert_eq!(
            argv_with_link_subcommand(args(&["phase-verify"])),
            args(&["phase-verify", "verify"])
        );
    }

    #[test]
    fn plain_or_unknown_names_are_left_alone() {
        assert_eq!(
            argv_with_link_subcommand(args(&["/bin/phase", "fetch"])),
            args(&["/bin/phase", "fetch"])
        );
        assert_eq!(
            argv_with_link_subcommand(args(&["phase-bogus", "x"])),
            args(&["phase-bogus", "x"])
        );
        assert_eq!(argv_with_link_subcommand(vec![]), Vec::<OsString>::new());
    }
}
