//! The failure policy of PID 1 (`phase.onfail`, DESIGN §9, issue 6 §8). PID 1 never exits (the
//! kernel panics when it does) and never panics: every error of the stage machine ends here,
//! and a panic hook routes panics here too.
//!
//! Defaults per mode ([`OnFail::default_for`]): internet and private `retry`, local `rescue`.
//! - rescue: the error chain is already printed; run `/bin/sh` on the console if the initramfs has
//!   one, and when the shell exits, retry (so PID 1 stays alive). Without a shell: retry.
//! - retry: wait [`backoff`] (1 s doubling to 60 s), then run the stage machine again.
//! - reboot: `sync`, `reboot(RESTART)`.
//! - halt: `sync`, `reboot(POWER_OFF)`, falling back to `reboot(HALT)`.
//!
//! Each decision prints `phase: onfail=<policy> <action>`.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use crate::cmdline::OnFail;
use crate::log;
use crate::sys::{RebootCmd, Syscalls};

/// The rescue shell (busybox `sh`), optional in the initramfs.
pub const RESCUE_SHELL: &str = "/bin/sh";

/// Longest wait between retries.
pub const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// What to do after a failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Sleep, then run the stage machine again.
    Retry(Duration),
    /// Run this shell on the console, then retry.
    Shell(String),
    /// `reboot(RESTART)`.
    Reboot,
    /// `reboot(POWER_OFF)`.
    PowerOff,
}

/// Wait before retry number `attempt` (1-based): 1 s, 2 s, 4 s ... capped at [`MAX_BACKOFF`].
pub fn backoff(attempt: u32) -> Duration {
    let secs = 1u64 << attempt.saturating_sub(1).min(6);
    Duration::from_secs(secs).min(MAX_BACKOFF)
}

/// The action for `policy` after failure number `attempt` (1-based); `shell` is the rescue shell
/// if the initramfs has one.
pub fn decide(policy: OnFail, attempt: u32, shell: Option<&str>) -> Action {
    match policy {
        OnFail::Rescue => match shell {
            Some(s) => Action::Shell(s.to_string()),
            None => Action::Retry(backoff(attempt)),
        },
        OnFail::Retry => Action::Retry(backoff(attempt)),
        OnFail::Reboot => Action::Reboot,
        OnFail::Halt => Action::PowerOff,
    }
}

/// The action for `policy` after a failure in the target stage after `switch_root` (issue 16
/// §5): the initramfs is gone, so the stage cannot be retried in place. Rescue opens `shell`
/// (the rootfs's, if it has one) and otherwise follows the next policy, a reboot; retry becomes
/// a reboot (a fresh boot is the only way to run the stages again); reboot and halt stay.
pub fn decide_after_switch_root(policy: OnFail, shell: Option<&str>) -> Action {
    match (policy, shell) {
        (OnFail::Rescue, Some(s)) => Action::Shell(s.to_string()),
        (OnFail::Rescue | OnFail::Retry | OnFail::Reboot, _) => Action::Reboot,
        (OnFail::Halt, _) => Action::PowerOff,
    }
}

/// The rescue shell if it exists on this system.
pub fn find_shell() -> Option<&'static str> {
    Path::new(RESCUE_SHELL).exists().then_some(RESCUE_SHELL)
}

/// Carries out `action` (printing `phase: onfail=<policy> ...`). Returns when the stage machine
/// should run again (after the retry wait or the shell's exit); reboot and power-off return only
/// if the call failed, after which it waits [`MAX_BACKOFF`] so the caller retries.
pub fn apply(sys: &dyn Syscalls, policy: OnFail, action: &Action) {
    let p = policy.as_str();
    match action {
        Action::Retry(wait) => {
            log::line(&format!("onfail={p} retry in {}ms", wait.as_millis()));
            std::thread::sleep(*wait);
        }
        Action::Shell(sh) => {
            log::line(&format!("onfail={p} exec {sh}"));
            match std::process::Command::new(sh).arg("-l").status() {
                Ok(status) => log::line(&format!("rescue shell exited ({status}); retrying")),
                Err(e) => {
                    log::line(&format!(
                        "rescue shell {sh} failed: {e}; retrying in {}ms",
                        backoff(1).as_millis()
                    ));
                    std::thread::sleep(backoff(1));
                }
            }
        }
        Action::Reboot => {
            log::line(&format!("onfail={p} reboot"));
            sys.sync();
            if let Err(e) = sys.reboot(RebootCmd::Restart) {
                log::line(&format!("reboot failed: {}", log::error_chain(&e)));
                std::thread::sleep(MAX_BACKOFF);
            }
        }
        Action::PowerOff => {
            log::line(&format!("onfail={p} poweroff"));
            sys.sync();
            if let Err(e) = power_off(sys) {
                log::line(&format!("poweroff failed: {}", log::error_chain(&e)));
                std::thread::sleep(MAX_BACKOFF);
            }
        }
    }
}

/// `reboot(POWER_OFF)`, and `reboot(HALT)` if that fails. Returns only on failure (with the
/// HALT error).
pub fn power_off(sys: &dyn Syscalls) -> Result<(), crate::sys::SysError> {
    sys.reboot(RebootCmd::PowerOff)
        .or_else(|_| sys.reboot(RebootCmd::Halt))
}

/// The policy the panic hook follows; updated once the command line is parsed.
static PANIC_POLICY: AtomicU8 = AtomicU8::new(0);

fn encode(p: OnFail) -> u8 {
    match p {
        OnFail::Rescue => 0,
        OnFail::Retry => 1,
        OnFail::Reboot => 2,
        OnFail::Halt => 3,
    }
}

fn decode(v: u8) -> OnFail {
    match v {
        1 => OnFail::Retry,
        2 => OnFail::Reboot,
        3 => OnFail::Halt,
        _ => OnFail::Rescue,
    }
}

/// Sets the policy the panic hook follows (call once `phase.onfail` is known).
pub fn set_panic_policy(policy: OnFail) {
    PANIC_POLICY.store(encode(policy), Ordering::SeqCst);
}

/// Installs the PID 1 panic hook: it logs `phase: panic: <message> at <file:line>`, then follows
/// the policy. It never returns (release builds use `panic = "abort"`, and an abort of PID 1
/// panics the kernel): retry re-executes `/proc/self/exe` (same PID 1, fresh state), rescue runs
/// the shell first, reboot/halt call reboot(2); if all of that fails it sleeps forever.
pub fn install_panic_hook(sys: &'static (dyn Syscalls + Sync)) {
    std::panic::set_hook(Box::new(move |info| {
        log::line(&format!("panic: {info}"));
        let policy = decode(PANIC_POLICY.load(Ordering::SeqCst));
        match decide(policy, 1, find_shell()) {
            Action::Reboot | Action::PowerOff => apply(sys, policy, &decide(policy, 1, None)),
            Action::Shell(sh) => apply(sys, policy, &Action::Shell(sh)),
            Action::Retry(wait) => apply(sys, policy, &Action::Retry(wait)),
        }
        let args: Vec<String> = std::env::args().skip(1).collect();
        let err = std::process::Command::new("/proc/self/exe")
            .args(args)
            .exec();
        log::line(&format!("re-exec of /init failed: {err}; PID 1 sleeps"));
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::fake::Recording;

    #[test]
    fn backoff_doubles_and_is_capped() {
        let got: Vec<u64> = (1..=9).map(|a| backoff(a).as_secs()).collect();
        assert_eq!(got, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(backoff(0).as_secs(), 1);
    }

    #[test]
    fn after_switch_root_rescue_opens_the_rootfs_shell_else_reboots_and_retry_reboots() {
        assert_eq!(
            decide_after_switch_root(OnFail::Rescue, Some("/bin/sh")),
            Action::Shell("/bin/sh".into())
        );
        assert_eq!(
            decide_after_switch_root(OnFail::Rescue, None),
            Action::Reboot
        );
        assert_eq!(
            decide_after_switch_root(OnFail::Retry, Some("/bin/sh")),
            Action::Reboot
        );
        assert_eq!(
            decide_after_switch_root(OnFail::Reboot, None),
            Action::Reboot
        );
        assert_eq!(
            decide_after_switch_root(OnFail::Halt, Some("/bin/sh")),
            Action::PowerOff
        );
    }

    #[test]
    fn rescue_without_shell_falls_back_to_retry() {
        assert_eq!(
            decide(OnFail::Rescue, 3, None),
            Action::Retry(Duration::from_secs(4))
        );
        assert_eq!(
            decide(OnFail::Rescue, 1, Some("/bin/sh")),
            Action::Shell("/bin/sh".into())
        );
        assert_eq!(decide(OnFail::Halt, 1, Some("/bin/sh")), Action::PowerOff);
        assert_eq!(decide(OnFail::Reboot, 1, None), Action::Reboot);
    }

    #[test]
    fn halt_syncs_then_powers_off() {
        let f = Recording::new();
        apply(&f, OnFail::Halt, &Action::PowerOff);
        assert_eq!(f.calls(), ["sync", "reboot PowerOff"]);
    }

    #[test]
    fn failed_power_off_falls_back_to_halt() {
        let f = Recording::new();
        f.fail_on("reboot PowerOff", libc::EPERM);
        power_off(&f).unwrap();
        assert_eq!(f.calls(), ["reboot PowerOff", "reboot Halt"]);
    }

    #[test]
    fn reboot_syncs_first() {
        let f = Recording::new();
        apply(&f, OnFail::Reboot, &Action::Reboot);
        assert_eq!(f.calls(), ["sync", "reboot Restart"]);
    }

    #[test]
    fn panic_policy_round_trips() {
        for p in [OnFail::Rescue, OnFail::Retry, OnFail::Reboot, OnFail::Halt] {
            assert_eq!(decode(encode(p)), p);
        }
    }
}
