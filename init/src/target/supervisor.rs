//! The PID 1 supervisor of the target stage (issue 7 §3, Yelp/dumb-init): starts the services
//! of `/etc/phase/services/*.toml`, reaps every zombie with `waitpid(-1, WNOHANG)` on SIGCHLD,
//! restarts exited services per their policy with exponential backoff ([`super::backoff`]), and
//! stops the services in `stop_order` at shutdown (SIGTERM to the service's process group, wait
//! `stop_timeout_ms`, SIGKILL). DHCP lease upkeep runs on its own thread (`target::network`).
//!
//! Process creation goes through [`Spawner`] and time through [`Clock`], so restart decisions
//! are unit-tested with fakes; reaping and stopping are tested with real children.

use std::collections::BTreeMap;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::backoff::{Backoff, BackoffPolicy, Clock};
use super::service::Service;
use crate::log;
use crate::sys::signals::{self, ExitKind, SignalError};

/// How often the stop loop polls for exited children, in ms.
const STOP_POLL_MS: u64 = 10;
/// How long to wait for a SIGKILLed service to be reaped, in ms.
const KILL_GRACE_MS: u64 = 2000;
/// Most children reaped in one [`Supervisor::reap_all`] call (bounds the loop).
const MAX_REAP_PER_CALL: usize = 100_000;

/// Starts a service's process; returns its pid (which is also its process group id).
pub trait Spawner {
    /// Starts `service`.
    ///
    /// # Errors
    /// The OS error from fork/exec.
    fn spawn(&mut self, service: &Service) -> std::io::Result<i32>;
}

/// Real process creation: `argv` with exactly `env`, stdin from /dev/null, stdout and stderr
/// inherited (the console), in a new process group so stop signals reach the whole service.
/// The child's signal mask is emptied and SIGPIPE restored ([`signals::reset_signals_on_exec`]).
#[derive(Debug, Default, Clone, Copy)]
pub struct CommandSpawner;

impl Spawner for CommandSpawner {
    fn spawn(&mut self, service: &Service) -> std::io::Result<i32> {
        let (program, args) = service
            .argv
            .split_first()
            .ok_or_else(|| std::io::Error::other("empty argv"))?;
        let mut cmd = Command::new(program);
        cmd.args(args)
            .env_clear()
            .envs(&service.env)
            .current_dir("/")
            .stdin(Stdio::null())
            .process_group(0);
        signals::reset_signals_on_exec(&mut cmd);
        let child = cmd.spawn()?;
        // The child is reaped by waitpid(-1), never through this handle.
        i32::try_from(child.id()).map_err(std::io::Error::other)
    }
}

/// The process state and signal masks of `pid` from `/proc/<pid>/status` (`State`, `SigBlk`,
/// `SigIgn`, `SigCgt`), for the log line of a service that ignored SIGTERM.
fn signal_state(pid: i32) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let fields: Vec<&str> = status
        .lines()
        .filter(|l| {
            ["State:", "SigBlk:", "SigIgn:", "SigCgt:"]
                .iter()
                .any(|k| l.starts_with(k))
        })
        .map(str::trim)
        .collect();
    if fields.is_empty() {
        "no /proc status".to_owned()
    } else {
        fields.join(" ").replace('\t', " ")
    }
}

/// State of one service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UnitState {
    /// To be started at this instant.
    Waiting(Instant),
    /// Running as this pid since this instant.
    Running {
        /// Process id (= process group id).
        pid: i32,
        /// When it was started.
        since: Instant,
    },
    /// Exited and not restarted (policy, or shutdown).
    Done(Option<ExitKind>),
}

#[derive(Debug)]
struct Unit {
    service: Service,
    state: UnitState,
    backoff: Backoff,
}

/// How a service ended at shutdown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopOutcome {
    /// It exited after SIGTERM.
    Terminated,
    /// It had to be SIGKILLed.
    Killed,
    /// Even SIGKILL did not end it within the grace period (uninterruptible sleep).
    Unresponsive,
}

/// One service stopped at shutdown, in the order stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StopReport {
    /// Service name.
    pub name: String,
    /// Its pid.
    pub pid: i32,
    /// How it ended.
    pub outcome: StopOutcome,
    /// Milliseconds from SIGTERM to its exit.
    pub ms: u128,
}

/// The supervisor's services and their states.
#[derive(Debug)]
pub struct Supervisor<C: Clock, S: Spawner> {
    clock: C,
    spawner: S,
    policy: BackoffPolicy,
    units: Vec<Unit>,
}

impl<C: Clock, S: Spawner> Supervisor<C, S> {
    /// A supervisor for `services` (started in this order), all due now.
    pub fn new(services: Vec<Service>, policy: BackoffPolicy, clock: C, spawner: S) -> Self {
        let now = clock.now();
        let units = services
            .into_iter()
            .map(|service| Unit {
                service,
                state: UnitState::Waiting(now),
                backoff: Backoff::default(),
            })
            .collect();
        Supervisor {
            clock,
            spawner,
            policy,
            units,
        }
    }

    /// The state of the service `name`.
    pub fn state(&self, name: &str) -> Option<&UnitState> {
        self.units
            .iter()
            .find(|u| u.service.name == name)
            .map(|u| &u.state)
    }

    /// Starts every service that is due; logs `phase: service <name> started pid=<pid>`. A spawn
    /// failure is logged and handled like a failed exit (restart with backoff per policy).
    /// Returns how many were started.
    pub fn start_due(&mut self) -> usize {
        let now = self.clock.now();
        let mut started = 0;
        for unit in &mut self.units {
            let UnitState::Waiting(at) = unit.state else {
                continue;
            };
            if at > now {
                continue;
            }
            match self.spawner.spawn(&unit.service) {
                Ok(pid) => {
                    log::line(&format!("service {} started pid={pid}", unit.service.name));
                    unit.state = UnitState::Running { pid, since: now };
                    started += 1;
                }
                Err(err) => {
                    log::line(&format!(
                        "service {} failed to start: {}: {err}",
                        unit.service.name, unit.service.argv[0]
                    ));
                    unit.state = after_exit(unit, &self.policy, now, now, None);
                }
            }
        }
        started
    }

    /// Handles the exit of `pid`: if it is a service, logs it and schedules the restart its
    /// policy asks for. Returns false for other processes (orphans re-parented to PID 1).
    pub fn on_exit(&mut self, pid: i32, kind: ExitKind) -> bool {
        let now = self.clock.now();
        let Some(unit) = self
            .units
            .iter_mut()
            .find(|u| matches!(u.state, UnitState::Running { pid: p, .. } if p == pid))
        else {
            return false;
        };
        let UnitState::Running { since, .. } = unit.state else {
            return false;
        };
        unit.state = after_exit(unit, &self.policy, since, now, Some(kind));
        true
    }

    /// Reaps every terminated child (`waitpid(-1, WNOHANG)` until none is left) and hands each
    /// to [`Supervisor::on_exit`]. Returns the reaped `(pid, how)` pairs.
    ///
    /// # Errors
    /// [`SignalError::Wait`].
    pub fn reap_all(&mut self) -> Result<Vec<(i32, ExitKind)>, SignalError> {
        let mut reaped = Vec::new();
        for _ in 0..MAX_REAP_PER_CALL {
            let Some((pid, kind)) = signals::reap_one()? else {
                break;
            };
            self.on_exit(pid, kind);
            reaped.push((pid, kind));
        }
        Ok(reaped)
    }

    /// Time until the next service is due to start, or `None` if none is waiting.
    pub fn next_start_in(&self) -> Option<Duration> {
        let now = self.clock.now();
        self.units
            .iter()
            .filter_map(|u| match u.state {
                UnitState::Waiting(at) => Some(at.saturating_duration_since(now)),
                _ => None,
            })
            .min()
    }

    /// Stops every service (issue 7 §3): groups by `stop_order` ascending; in each group sends
    /// SIGTERM to every running service's process group, waits up to each one's
    /// `stop_timeout_ms`, SIGKILLs what is left and waits up to 2 s more. Services waiting for
    /// a restart are cancelled. Logs `phase: service <name> stopped in <N>ms`. Uses the real
    /// clock (shutdown waits really). Returns the reports in the order the services ended.
    pub fn stop_all(&mut self) -> Vec<StopReport> {
        let mut orders: Vec<i32> = self.units.iter().map(|u| u.service.stop_order).collect();
        orders.sort_unstable();
        orders.dedup();
        let mut reports = Vec::new();
        for order in orders {
            for unit in self
                .units
                .iter_mut()
                .filter(|u| u.service.stop_order == order)
            {
                if matches!(unit.state, UnitState::Waiting(_)) {
                    unit.state = UnitState::Done(None);
                }
            }
            self.stop_group(order, &mut reports);
        }
        reports
    }

    fn stop_group(&mut self, order: i32, reports: &mut Vec<StopReport>) {
        let start = Instant::now();
        // pid -> (unit index, deadline, killed)
        let mut pending: BTreeMap<i32, (usize, Instant, bool)> = BTreeMap::new();
        for (i, unit) in self.units.iter().enumerate() {
            if unit.service.stop_order != order {
                continue;
            }
            if let UnitState::Running { pid, .. } = unit.state {
                if let Err(e) = signals::signal_group(pid, libc::SIGTERM) {
                    log::line(&format!(
                        "service {}: {}",
                        unit.service.name,
                        log::error_chain(&e)
                    ));
                }
                let deadline = start + Duration::from_millis(unit.service.stop_timeout_ms);
                pending.insert(pid, (i, deadline, false));
            }
        }
        let longest = pending
            .values()
            .map(|(_, d, _)| d.saturating_duration_since(start))
            .max()
            .unwrap_or_default();
        let max_polls = (longest.as_millis() as u64 + KILL_GRACE_MS) / STOP_POLL_MS + 2;
        for _ in 0..max_polls {
            loop {
                match signals::reap_one() {
                    Ok(Some((pid, kind))) => {
                        if let Some((i, _, killed)) = pending.remove(&pid) {
                            let unit = &mut self.units[i];
                            unit.state = UnitState::Done(Some(kind));
                            let ms = start.elapsed().as_millis();
                            log::line(&format!("service {} stopped in {ms}ms", unit.service.name));
                            let outcome = if killed {
                                StopOutcome::Killed
                            } else {
                                StopOutcome::Terminated
                            };
                            reports.push(StopReport {
                                name: unit.service.name.clone(),
                                pid,
                                outcome,
                                ms,
                            });
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        log::line(&format!("stop: {}", log::error_chain(&e)));
                        break;
                    }
                }
            }
            if pending.is_empty() {
                return;
            }
            let now = Instant::now();
            for (pid, (i, deadline, killed)) in pending.iter_mut() {
                if !*killed && now >= *deadline {
                    let unit = &self.units[*i];
                    log::line(&format!(
                        "service {} did not stop in {}ms ({}), sending SIGKILL",
                        unit.service.name,
                        unit.service.stop_timeout_ms,
                        signal_state(*pid)
                    ));
                    if let Err(e) = signals::signal_group(*pid, libc::SIGKILL) {
                        log::line(&format!(
                            "service {}: {}",
                            unit.service.name,
                            log::error_chain(&e)
                        ));
                    }
                    *killed = true;
                    *deadline = now + Duration::from_millis(KILL_GRACE_MS);
                }
            }
            std::thread::sleep(Duration::from_millis(STOP_POLL_MS));
        }
        for (pid, (i, _, _)) in pending {
            let unit = &mut self.units[i];
            log::line(&format!(
                "service {} still running after SIGKILL; giving up on it",
                unit.service.name
            ));
            unit.state = UnitState::Done(None);
            let ms = start.elapsed().as_millis();
            reports.push(StopReport {
                name: unit.service.name.clone(),
                pid,
                outcome: StopOutcome::Unresponsive,
                ms,
            });
        }
    }
}

/// The state after a run (`since`..`now`) ended with `kind` (`None`: it never started).
fn after_exit(
    unit: &mut Unit,
    policy: &BackoffPolicy,
    since: Instant,
    now: Instant,
    kind: Option<ExitKind>,
) -> UnitState {
    let success = kind.is_some_and(ExitKind::success);
    let how = kind.map_or_else(|| "start failed".to_owned(), |k| format!("exited {k}"));
    if unit.service.restart.restarts(success) {
        let delay = unit.backoff.next_delay(policy, since, now);
        log::line(&format!(
            "service {} {how}, restart in {}ms",
            unit.service.name,
            delay.as_millis()
        ));
        UnitState::Waiting(now + delay)
    } else {
        log::line(&format!(
            "service {} {how}, not restarted (restart={:?})",
            unit.service.name, unit.service.restart
        ));
        UnitState::Done(kind)
    }
}

#[cfg(test)]
mod tests;
