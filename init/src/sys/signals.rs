//! Signals and child processes for PID 1 in the target stage (issue 7 §3, Yelp/dumb-init): the
//! supervisor blocks SIGCHLD, SIGTERM, SIGINT and SIGHUP and reads them from a `signalfd` in its
//! poll loop, reaps with `waitpid(-1, WNOHANG)`, signals service process groups, and drives
//! `reboot(LINUX_REBOOT_CMD_CAD_OFF)` so ctrl-alt-del arrives as SIGINT.

use std::fmt;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::time::Duration;

use rustix::process::{Pid, Signal, WaitOptions};

/// Errors of the signal and process calls; each names the call.
#[derive(Debug, thiserror::Error)]
pub enum SignalError {
    /// `pthread_sigmask(SIG_BLOCK, ...)` or `signalfd(-1, ...)` failed.
    #[error("{call}(SIGCHLD|SIGTERM|SIGINT|SIGHUP)")]
    Setup {
        /// The failing call.
        call: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// `read(signalfd)` failed.
    #[error("read(signalfd)")]
    Read(#[source] std::io::Error),
    /// `waitpid(-1, WNOHANG)` failed with something other than ECHILD.
    #[error("waitpid(-1, WNOHANG)")]
    Wait(#[source] std::io::Error),
    /// `kill(-pgid, sig)` failed.
    #[error("kill(-{pgid}, {signal})")]
    Kill {
        /// The process group.
        pgid: i32,
        /// The signal number.
        signal: i32,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// `reboot(cmd)` or `prctl(PR_SET_CHILD_SUBREAPER)` failed.
    #[error("{call}")]
    Control {
        /// The failing call with its argument.
        call: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// A signal the supervisor acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caught {
    /// SIGCHLD: some child changed state; reap.
    Child,
    /// SIGTERM: power off.
    Term,
    /// SIGINT: ctrl-alt-del once CAD is off; reboot.
    Int,
    /// SIGHUP: ignored by the supervisor (logged).
    Hup,
    /// Anything else (signal number).
    Other(u32),
}

/// A `signalfd` for SIGCHLD, SIGTERM, SIGINT and SIGHUP, which [`SignalFd::new`] blocks in the
/// calling thread (call it before any thread is spawned so every thread inherits the mask).
#[derive(Debug)]
pub struct SignalFd {
    fd: OwnedFd,
}

fn supervised_set() -> Result<libc::sigset_t, SignalError> {
    let mut set = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
    // SAFETY: sigemptyset initialises the set it is given; sigaddset only writes into it.
    unsafe {
        libc::sigemptyset(set.as_mut_ptr());
        for sig in [libc::SIGCHLD, libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
            libc::sigaddset(set.as_mut_ptr(), sig);
        }
        Ok(set.assume_init())
    }
}

impl SignalFd {
    /// Blocks the four signals and opens a non-blocking, close-on-exec signalfd for them.
    /// (Services are spawned with [`reset_signals_on_exec`], so they start with none blocked.)
    ///
    /// # Errors
    /// [`SignalError::Setup`].
    pub fn new() -> Result<SignalFd, SignalError> {
        let set = supervised_set()?;
        // SAFETY: `set` is an initialised sigset_t; the old mask is not requested.
        let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
        if rc != 0 {
            return Err(SignalError::Setup {
                call: "pthread_sigmask",
                source: std::io::Error::from_raw_os_error(rc),
            });
        }
        // SAFETY: -1 asks for a new fd; `set` is initialised; flags are valid.
        let fd = unsafe { libc::signalfd(-1, &set, libc::SFD_NONBLOCK | libc::SFD_CLOEXEC) };
        if fd < 0 {
            return Err(SignalError::Setup {
                call: "signalfd",
                source: std::io::Error::last_os_error(),
            });
        }
        // SAFETY: signalfd returned a new descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(SignalFd { fd })
    }

    /// Reads one pending signal, or `None` when none is pending.
    ///
    /// # Errors
    /// [`SignalError::Read`].
    pub fn read(&self) -> Result<Option<Caught>, SignalError> {
        let mut info = std::mem::MaybeUninit::<libc::signalfd_siginfo>::uninit();
        let size = std::mem::size_of::<libc::signalfd_siginfo>();
        // SAFETY: the buffer is exactly one signalfd_siginfo; the fd is open and owned by self.
        let n = unsafe { libc::read(self.fd.as_raw_fd(), info.as_mut_ptr().cast(), size) };
        if n < 0 {
            let err = std::io::Error::last_os_error();
            if err.kind() == std::io::ErrorKind::WouldBlock {
                return Ok(None);
            }
            return Err(SignalError::Read(err));
        }
        if n as usize != size {
            return Ok(None);
        }
        // SAFETY: the kernel filled the whole structure (n == size).
        let signo = unsafe { info.assume_init() }.ssi_signo;
        Ok(Some(match signo as i32 {
            libc::SIGCHLD => Caught::Child,
            libc::SIGTERM => Caught::Term,
            libc::SIGINT => Caught::Int,
            libc::SIGHUP => Caught::Hup,
            _ => Caught::Other(signo),
        }))
    }
}

impl AsFd for SignalFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// How a reaped child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitKind {
    /// Exited with this status code.
    Exited(i32),
    /// Killed by this signal number.
    Signaled(i32),
}

impl ExitKind {
    /// True for `Exited(0)`.
    pub fn success(self) -> bool {
        self == ExitKind::Exited(0)
    }
}

impl fmt::Display for ExitKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitKind::Exited(code) => write!(f, "exit={code}"),
            ExitKind::Signaled(sig) => write!(f, "signal={sig}"),
        }
    }
}

/// `waitpid(-1, WNOHANG)`: one terminated child (pid, how it ended), or `None` when no child has
/// terminated (or there are no children at all, ECHILD).
///
/// # Errors
/// [`SignalError::Wait`] for errors other than ECHILD.
pub fn reap_one() -> Result<Option<(i32, ExitKind)>, SignalError> {
    loop {
        // `wait` is waitpid(-1): any child. (`waitpid(None)` is waitpid(0): only our process group.)
        match rustix::process::wait(WaitOptions::NOHANG) {
            Ok(None) => return Ok(None),
            Ok(Some((pid, status))) => {
                let kind = if let Some(code) = status.exit_status() {
                    ExitKind::Exited(code)
                } else if let Some(sig) = status.terminating_signal() {
                    ExitKind::Signaled(sig)
                } else {
                    continue; // stopped/continued: not an exit
                };
                return Ok(Some((pid.as_raw_pid(), kind)));
            }
            Err(rustix::io::Errno::CHILD) => return Ok(None),
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(SignalError::Wait(e.into())),
        }
    }
}

/// Sends `signal` (e.g. `libc::SIGTERM`) to the process group `pgid`. A group that no longer
/// exists (ESRCH) is not an error.
///
/// # Errors
/// [`SignalError::Kill`].
pub fn signal_group(pgid: i32, signal: i32) -> Result<(), SignalError> {
    let err = |source: std::io::Error| SignalError::Kill {
        pgid,
        signal,
        source,
    };
    let pid =
        Pid::from_raw(pgid).ok_or_else(|| err(std::io::Error::from_raw_os_error(libc::EINVAL)))?;
    let sig = Signal::from_named_raw(signal)
        .ok_or_else(|| err(std::io::Error::from_raw_os_error(libc::EINVAL)))?;
    match rustix::process::kill_process_group(pid, sig) {
        Ok(()) | Err(rustix::io::Errno::SRCH) => Ok(()),
        Err(e) => Err(err(e.into())),
    }
}

/// Makes `cmd`'s child start with a clean signal state: an empty signal mask and SIGPIPE back to
/// its default action. PID 1 blocks SIGTERM, SIGINT, SIGHUP and SIGCHLD for its signalfd and
/// Rust ignores SIGPIPE; both are inherited across `execve`, and a service with SIGTERM blocked
/// never stops (seen on a real boot: std's own reset did not happen in the static build). The
/// hook runs between `fork` and `execve` and only makes async-signal-safe calls.
pub fn reset_signals_on_exec(cmd: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs in the forked child before exec; sigemptyset, pthread_sigmask
    // and signal are async-signal-safe, allocate nothing and touch only the local set.
    unsafe {
        cmd.pre_exec(|| {
            let mut set = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
            libc::sigemptyset(set.as_mut_ptr());
            let rc = libc::pthread_sigmask(libc::SIG_SETMASK, set.as_ptr(), std::ptr::null_mut());
            if rc != 0 {
                return Err(std::io::Error::from_raw_os_error(rc));
            }
            if libc::signal(libc::SIGPIPE, libc::SIG_DFL) == libc::SIG_ERR {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// `prctl(PR_SET_CHILD_SUBREAPER, 1)`: orphaned descendants are re-parented to this process
/// (tests, and a supervisor that is not PID 1).
///
/// # Errors
/// [`SignalError::Control`].
pub fn set_child_subreaper() -> Result<(), SignalError> {
    let me = rustix::process::getpid();
    rustix::process::set_child_subreaper(Some(me)).map_err(|e| SignalError::Control {
        call: "prctl(PR_SET_CHILD_SUBREAPER, 1)",
        source: e.into(),
    })
}

/// `reboot(LINUX_REBOOT_CMD_CAD_OFF)`: ctrl-alt-del now sends SIGINT to PID 1 instead of
/// rebooting at once.
///
/// # Errors
/// [`SignalError::Control`].
pub fn ctrl_alt_del_to_sigint() -> Result<(), SignalError> {
    rustix::system::reboot(rustix::system::RebootCommand::CadOff).map_err(|e| {
        SignalError::Control {
            call: "reboot(LINUX_REBOOT_CMD_CAD_OFF)",
            source: e.into(),
        }
    })
}

/// `poll(fds, POLLIN, timeout)`: waits until one of `fds` is readable or `timeout` passes
/// (`None`: no limit). Returns, per fd, whether it is readable. EINTR counts as a timeout.
///
/// # Errors
/// [`SignalError::Control`] for other poll errors.
pub fn wait_readable(
    fds: &[BorrowedFd<'_>],
    timeout: Option<Duration>,
) -> Result<Vec<bool>, SignalError> {
    use rustix::event::{PollFd, PollFlags, Timespec};
    let mut polls: Vec<PollFd<'_>> = fds
        .iter()
        .map(|fd| PollFd::new(fd, PollFlags::IN))
        .collect();
    let ts = timeout.map(|d| Timespec {
        tv_sec: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        tv_nsec: i64::from(d.subsec_nanos()),
    });
    match rustix::event::poll(&mut polls, ts.as_ref()) {
        Ok(_) => Ok(polls.iter().map(|p| !p.revents().is_empty()).collect()),
        Err(rustix::io::Errno::INTR) => Ok(vec![false; fds.len()]),
        Err(e) => Err(SignalError::Control {
            call: "poll(signalfd, input devices)",
            source: e.into(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn child_starts_with_empty_mask_and_default_sigpipe_though_parent_blocks_sigterm() {
        // Block SIGTERM in this test thread only (the mask is per thread; fork copies the
        // caller's), as PID 1 does for its signalfd.
        // SAFETY: plain sigset manipulation on locals; the old mask is restored below.
        let old = unsafe {
            let mut set = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
            let mut old = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
            libc::sigemptyset(set.as_mut_ptr());
            libc::sigaddset(set.as_mut_ptr(), libc::SIGTERM);
            libc::pthread_sigmask(libc::SIG_BLOCK, set.as_ptr(), old.as_mut_ptr());
            old.assume_init()
        };
        let mut cmd = std::process::Command::new("sh");
        cmd.args(["-c", "grep -E '^(SigBlk|SigIgn):' /proc/self/status"]);
        reset_signals_on_exec(&mut cmd);
        let out = cmd.output().unwrap();
        // SAFETY: restores the mask saved above.
        unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut()) };
        let text = String::from_utf8(out.stdout).unwrap();
        let field = |name: &str| {
            let line = text.lines().find(|l| l.starts_with(name)).unwrap();
            u64::from_str_radix(line.split_whitespace().nth(1).unwrap(), 16).unwrap()
        };
        assert_eq!(field("SigBlk:"), 0, "{text}");
        assert_eq!(field("SigIgn:") & (1 << (libc::SIGPIPE - 1)), 0, "{text}");
    }
}
