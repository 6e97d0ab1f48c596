//! `/init` in the Phase Boot initramfs: PID 1 for both the boot stage and, after kexec, the
//! target stage (DESIGN §1). All logic lives in the library ([`phase_init::boot::pid1`]); this
//! binary installs the panic hook and never returns.

use phase_init::sys::linux::Linux;

/// The real syscall layer, shared with the panic hook for the process lifetime.
static SYS: Linux = Linux;

fn main() {
    phase_init::onfail::install_panic_hook(&SYS);
    phase_init::boot::pid1(&SYS, Some(phase_init::target::run_stage))
}
