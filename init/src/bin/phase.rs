//! The `phase` tool: fetch and verify signed boot releases (issue 5), for scripts and
//! debugging. Also runs as `phase-fetch`, `phase-verify`, `phase-discover` (`argv[0]` decides).
//! Thin: [`phase_init::cli::main`]. In the initramfs and the rootfs `phase` is a link to the init
//! binary, which runs the same function when called by one of these names (issue 18 §1); this
//! binary is the tool for hosts.

fn main() -> std::process::ExitCode {
    phase_init::cli::main()
}
