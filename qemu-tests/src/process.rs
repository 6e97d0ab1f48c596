//! Child processes the harness starts (dnsmasq, plasmd, QEMU): each one is owned by a
//! [`ChildGuard`] that kills it by PID when dropped, even when a test panics.
//!
//! Output of a guarded process goes to a log file under the test's work directory, so a failing
//! test can print it and nothing blocks on a full pipe.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

/// A running child process killed (SIGTERM, then SIGKILL after 3 s) when dropped.
#[derive(Debug)]
pub struct ChildGuard {
    name: String,
    child: Option<Child>,
    log: Option<PathBuf>,
}

impl ChildGuard {
    /// Spawns `cmd` with stdin closed and stdout+stderr appended to `log`.
    ///
    /// Errors: the log cannot be created or the program cannot be started.
    pub fn spawn_logged(name: &str, mut cmd: Command, log: &Path) -> Result<Self> {
        let out = File::create(log).with_context(|| format!("create log {}", log.display()))?;
        let err = out.try_clone().context("dup log fd")?;
        cmd.stdin(Stdio::null()).stdout(out).stderr(err);
        let child = cmd
            .spawn()
            .with_context(|| format!("start {name}: {cmd:?}"))?;
        Ok(Self {
            name: name.to_string(),
            child: Some(child),
            log: Some(log.to_path_buf()),
        })
    }

    /// Wraps an already spawned child (its pipes belong to the caller).
    pub fn from_child(name: &str, child: Child) -> Self {
        Self {
            name: name.to_string(),
            child: Some(child),
            log: None,
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    /// The log file, when output goes to one.
    pub fn log_path(&self) -> Option<&Path> {
        self.log.as_deref()
    }

    /// The log's contents so far (empty when there is no log).
    pub fn log_text(&self) -> String {
        let mut s = String::new();
        if let Some(p) = &self.log {
            if let Ok(mut f) = File::open(p) {
                let _ = f.read_to_string(&mut s);
            }
        }
        s
    }

    /// Returns the exit status if the process has exited.
    pub fn try_wait(&mut self) -> Option<std::process::ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// Waits for the process to exit, at most `timeout`; `None` if it is still running.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(st) = self.try_wait() {
                return Some(st);
            }
            thread::sleep(Duration::from_millis(100));
        }
        None
    }

    /// Sends SIGTERM, waits up to 3 s, then SIGKILL; reaps the process.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if matches!(child.try_wait(), Ok(Some(_))) {
            return;
        }
        let pid = child.id() as libc::pid_t;
        // SAFETY: kill(2) on the PID of a child we spawned and have not reaped yet, so the PID
        // cannot have been reused by another process.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        for _ in 0..30 {
            if matches!(child.try_wait(), Ok(Some(_))) {
                return;
            }
            thread::sleep(Duration::from_millis(100));
        }
        eprintln!(
            "harness: {} (pid {pid}) ignored SIGTERM, killing",
            self.name
        );
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Runs a command to completion and returns its stdout; errors carry the command and stderr.
pub fn run(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("run {cmd:?}"))?;
    if !out.status.success() {
        anyhow::bail!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Builds a [`Command`] from a program and arguments.
pub fn cmd<I, S>(program: &str, args: I) -> Command
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let mut c = Command::new(program);
    c.args(args);
    c
}
