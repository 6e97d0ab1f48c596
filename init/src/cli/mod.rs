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

#[cfg(test)]
mod tests {
    use super::*;

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
