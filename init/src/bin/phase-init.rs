//! `/init` in the Phase Boot initramfs: PID 1 for both the boot stage and, after kexec, the
//! target stage (DESIGN §1). All logic lives in the library ([`phase_init::boot::pid1`]); this
//! binary installs the panic hook and never returns.
//!
//! One multicall binary (issue 18 §1): called as `phase` or `phase-<sub>` (the links in the
//! initramfs and the rootfs, the host's `phase` from `make build`), it is the `phase` tool
//! ([`phase_init::cli::main`]), also as PID 1: a container whose entrypoint is `phase fetch`
//! runs the tool, not an init. The kernel starts the init as `/init` (`rdinit`) or by the path
//! `init=` names (`/sbin/phase-init`), never by a tool name. Under any other name the binary is
//! the init, and only as PID 1; any other process gets an error (exit status 2) instead of an
//! init that would mount and reboot a running system.

use phase_init::sys::linux::Linux;

/// The real syscall layer, shared with the panic hook for the process lifetime.
static SYS: Linux = Linux;

fn main() -> std::process::ExitCode {
    // The release /init has no unwind tables (init/link/discard-unwind-tables.ld), and libgcc's
    // unwinder aborts the process when asked for a backtrace without them: `RUST_BACKTRACE=1`
    // (an environment variable, or a word on the kernel command line, which the kernel hands
    // to PID 1 as one) would turn the first error anyhow records into a SIGABRT, and for PID 1
    // into a kernel panic. Still single-threaded here, so nothing reads the environment meanwhile.
    for var in ["RUST_BACKTRACE", "RUST_LIB_BACKTRACE"] {
        std::env::remove_var(var);
    }
    if phase_init::cli::invoked_as_tool(std::env::args_os().next().as_deref()) {
        return phase_init::cli::main();
    }
    if std::process::id() != 1 {
        // The init mounts, loads modules and reboots: never on a running system by mistake.
        eprintln!(
            "phase-init: this is the /init of the Phase Boot initramfs and runs only as PID 1; \
             called as phase, phase-fetch, phase-verify or phase-discover it is the phase tool"
        );
        return std::process::ExitCode::from(2);
    }
    phase_init::onfail::install_panic_hook(&SYS);
    phase_init::boot::pid1(&SYS, Some(phase_init::target::run_stage))
}
