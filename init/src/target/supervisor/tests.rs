use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use super::*;
use crate::target::backoff::FakeClock;
use crate::target::service::{RestartPolicy, Service};
use crate::target::testutil::isolated;

fn service(
    name: &str,
    argv: &[&str],
    restart: RestartPolicy,
    stop_order: i32,
    stop_timeout_ms: u64,
) -> Service {
    let mut env = BTreeMap::new();
    env.insert("PATH".to_owned(), "/usr/bin:/bin".to_owned());
    Service {
        name: name.to_owned(),
        argv: argv.iter().map(|s| (*s).to_owned()).collect(),
        env,
        restart,
        stop_order,
        stop_timeout_ms,
    }
}

/// Hands out pids 100, 101, ... and records which service each start was for.
#[derive(Debug, Default)]
struct FakeSpawner {
    next: i32,
    started: Vec<(String, i32)>,
    fail: bool,
}

impl Spawner for FakeSpawner {
    fn spawn(&mut self, s: &Service) -> std::io::Result<i32> {
        if self.fail {
            return Err(std::io::Error::from(std::io::ErrorKind::NotFound));
        }
        let pid = 100 + self.next;
        self.next += 1;
        self.started.push((s.name.clone(), pid));
        Ok(pid)
    }
}

fn policy() -> BackoffPolicy {
    BackoffPolicy {
        initial: Duration::from_millis(100),
        max: Duration::from_millis(400),
        stable_after: Duration::from_secs(5),
    }
}

fn sup(services: Vec<Service>) -> Supervisor<&'static FakeClock, FakeSpawner> {
    let clock: &'static FakeClock = Box::leak(Box::new(FakeClock::new()));
    Supervisor::new(services, policy(), clock, FakeSpawner::default())
}

impl Clock for &FakeClock {
    fn now(&self) -> Instant {
        (**self).now()
    }
}

#[test]
fn crashed_service_restarts_only_after_its_backoff_delay() {
    let mut s = sup(vec![service(
        "p",
        &["/bin/p"],
        RestartPolicy::Always,
        0,
        100,
    )]);
    assert_eq!(s.start_due(), 1);
    let delays = [100u64, 200, 400, 400];
    for (i, delay) in delays.into_iter().enumerate() {
        let pid = 100 + i as i32;
        s.clock.advance(Duration::from_millis(10));
        assert!(s.on_exit(pid, ExitKind::Exited(1)));
        assert_eq!(s.next_start_in(), Some(Duration::from_millis(delay)));
        s.clock.advance(Duration::from_millis(delay - 1));
        assert_eq!(s.start_due(), 0, "restart {i} came early");
        s.clock.advance(Duration::from_millis(1));
        assert_eq!(s.start_due(), 1, "restart {i} did not come");
    }
    assert_eq!(s.spawner.started.len(), 5);
}

#[test]
fn a_long_run_resets_the_backoff() {
    let mut s = sup(vec![service(
        "p",
        &["/bin/p"],
        RestartPolicy::Always,
        0,
        100,
    )]);
    s.start_due();
    for pid in 100..103 {
        s.on_exit(pid, ExitKind::Signaled(9));
        s.clock.advance(Duration::from_secs(1));
        s.start_due();
    }
    s.clock.advance(Duration::from_secs(5));
    s.on_exit(103, ExitKind::Exited(1));
    assert_eq!(s.next_start_in(), Some(Duration::from_millis(100)));
}

#[test]
fn restart_policies_decide_on_exit_status() {
    let mut s = sup(vec![
        service("always", &["/bin/a"], RestartPolicy::Always, 0, 100),
        service("onfail", &["/bin/b"], RestartPolicy::OnFailure, 0, 100),
        service("never", &["/bin/c"], RestartPolicy::Never, 0, 100),
    ]);
    assert_eq!(s.start_due(), 3);
    s.on_exit(100, ExitKind::Exited(0));
    s.on_exit(101, ExitKind::Exited(0));
    s.on_exit(102, ExitKind::Exited(3));
    assert!(matches!(s.state("always"), Some(UnitState::Waiting(_))));
    assert_eq!(
        s.state("onfail"),
        Some(&UnitState::Done(Some(ExitKind::Exited(0))))
    );
    assert_eq!(
        s.state("never"),
        Some(&UnitState::Done(Some(ExitKind::Exited(3))))
    );
    // on-failure restarts after a failure.
    let mut s = sup(vec![service(
        "onfail",
        &["/bin/b"],
        RestartPolicy::OnFailure,
        0,
        100,
    )]);
    s.start_due();
    s.on_exit(100, ExitKind::Signaled(11));
    assert!(matches!(s.state("onfail"), Some(UnitState::Waiting(_))));
}

#[test]
fn unknown_pid_is_not_taken_for_a_service() {
    let mut s = sup(vec![service(
        "p",
        &["/bin/p"],
        RestartPolicy::Always,
        0,
        100,
    )]);
    s.start_due();
    assert!(!s.on_exit(4242, ExitKind::Exited(1)));
    assert!(matches!(
        s.state("p"),
        Some(UnitState::Running { pid: 100, .. })
    ));
}

#[test]
fn spawn_failure_is_retried_with_backoff() {
    let mut s = sup(vec![service(
        "p",
        &["/nonexistent"],
        RestartPolicy::OnFailure,
        0,
        100,
    )]);
    s.spawner.fail = true;
    assert_eq!(s.start_due(), 0);
    assert_eq!(s.next_start_in(), Some(Duration::from_millis(100)));
    s.spawner.fail = false;
    s.clock.advance(Duration::from_millis(100));
    assert_eq!(s.start_due(), 1);
}

fn pid_exists(pid: i32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

fn real(
    services: Vec<Service>,
) -> Supervisor<crate::target::backoff::MonotonicClock, CommandSpawner> {
    Supervisor::new(
        services,
        policy(),
        crate::target::backoff::MonotonicClock,
        CommandSpawner,
    )
}

/// Reaps until `want` pids were seen or 10 s passed.
fn reap_until(
    s: &mut Supervisor<crate::target::backoff::MonotonicClock, CommandSpawner>,
    want: &[i32],
) -> Vec<(i32, ExitKind)> {
    let mut seen = Vec::new();
    for _ in 0..1000 {
        seen.extend(s.reap_all().unwrap());
        if want.iter().all(|w| seen.iter().any(|(p, _)| p == w)) {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    seen
}

#[test]
fn exited_children_and_orphans_are_reaped() {
    if !isolated("target::supervisor::tests::exited_children_and_orphans_are_reaped") {
        return;
    }
    crate::sys::signals::set_child_subreaper().unwrap();
    let mut s = real(vec![]);
    // Two direct children that exit, and an orphan: sh starts a background sleep and exits, so
    // the sleep is re-parented to us (the subreaper), like orphans are to PID 1.
    let a = std::process::Command::new("/bin/sh")
        .args(["-c", "exit 3"])
        .spawn()
        .unwrap()
        .id() as i32;
    let b = std::process::Command::new("/bin/sh")
        .args(["-c", "kill -9 $$"])
        .spawn()
        .unwrap()
        .id() as i32;
    let out = std::process::Command::new("/bin/sh")
        .args(["-c", "sleep 0.3 >/dev/null 2>&1 & echo $!"])
        .output()
        .unwrap();
    let orphan: i32 = String::from_utf8(out.stdout)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let seen = reap_until(&mut s, &[a, b, orphan]);
    assert!(seen.contains(&(a, ExitKind::Exited(3))), "{seen:?}");
    assert!(seen.contains(&(b, ExitKind::Signaled(9))), "{seen:?}");
    assert!(seen.contains(&(orphan, ExitKind::Exited(0))), "{seen:?}");
    for pid in [a, b, orphan] {
        assert!(!pid_exists(pid), "zombie {pid} left behind");
    }
    assert!(s.reap_all().unwrap().is_empty());
}

#[test]
fn crashed_real_service_is_reaped_and_restarted() {
    if !isolated("target::supervisor::tests::crashed_real_service_is_reaped_and_restarted") {
        return;
    }
    let mut s = real(vec![service(
        "crashy",
        &["/bin/sh", "-c", "exit 7"],
        RestartPolicy::OnFailure,
        0,
        100,
    )]);
    assert_eq!(s.start_due(), 1);
    let Some(UnitState::Running { pid: first, .. }) = s.state("crashy").cloned() else {
        panic!("not running")
    };
    let seen = reap_until(&mut s, &[first]);
    assert!(seen.contains(&(first, ExitKind::Exited(7))));
    assert!(matches!(s.state("crashy"), Some(UnitState::Waiting(_))));
    std::thread::sleep(s.next_start_in().unwrap());
    assert_eq!(s.start_due(), 1);
    let Some(UnitState::Running { pid: second, .. }) = s.state("crashy").cloned() else {
        panic!("not restarted")
    };
    assert_ne!(first, second);
    reap_until(&mut s, &[second]);
}

#[test]
fn shutdown_stops_in_stop_order_and_kills_services_that_ignore_sigterm() {
    if !isolated("target::supervisor::tests::shutdown_stops_in_stop_order_and_kills_services_that_ignore_sigterm") {
        return;
    }
    let mut s = real(vec![
        service(
            "late",
            &["/bin/sleep", "30"],
            RestartPolicy::Always,
            10,
            5000,
        ),
        service(
            "stubborn",
            &["/bin/sh", "-c", "trap '' TERM; sleep 30; sleep 30"],
            RestartPolicy::Always,
            0,
            300,
        ),
        service(
            "polite",
            &["/bin/sleep", "30"],
            RestartPolicy::Always,
            0,
            5000,
        ),
    ]);
    assert_eq!(s.start_due(), 3);
    let pids: Vec<i32> = ["late", "stubborn", "polite"]
        .iter()
        .map(|n| match s.state(n) {
            Some(UnitState::Running { pid, .. }) => *pid,
            other => panic!("{n}: {other:?}"),
        })
        .collect();
    // Let sh install its trap before the SIGTERM.
    std::thread::sleep(Duration::from_millis(200));
    let reports = s.stop_all();
    let order: Vec<(&str, StopOutcome)> = reports
        .iter()
        .map(|r| (r.name.as_str(), r.outcome))
        .collect();
    assert_eq!(
        order,
        [
            ("polite", StopOutcome::Terminated),
            ("stubborn", StopOutcome::Killed),
            ("late", StopOutcome::Terminated)
        ]
    );
    for pid in pids {
        assert!(!pid_exists(pid), "pid {pid} survived shutdown");
    }
    for n in ["late", "stubborn", "polite"] {
        assert!(
            matches!(s.state(n), Some(UnitState::Done(_))),
            "{n} would be restarted"
        );
    }
}
