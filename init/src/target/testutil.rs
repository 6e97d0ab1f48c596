//! Test helpers for the target stage (compiled only for tests).
//!
//! Tests that reap with `waitpid(-1)` must not run inside the shared test process: they would
//! steal other tests' children. [`isolated`] re-runs one test alone in a child process of the
//! test binary and reports its result.

use std::process::Command;
use std::time::{Duration, Instant};

/// Environment variable naming the test that runs in the isolated child.
const ISOLATED_ENV: &str = "PHASE_TARGET_ISOLATED_TEST";
/// Longest an isolated test may run.
const ISOLATED_TIMEOUT: Duration = Duration::from_secs(120);

/// Returns true in the isolated child (the caller then runs the test body). In the parent it runs
/// the test `name` (full libtest path, e.g. `target::supervisor::tests::x`) in a child process
/// and panics if it failed or ran out of time; then returns false (the caller returns).
pub fn isolated(name: &str) -> bool {
    if std::env::var(ISOLATED_ENV).is_ok_and(|v| v == name) {
        return true;
    }
    let exe = std::env::current_exe().unwrap();
    let mut child = Command::new(exe)
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env(ISOLATED_ENV, name)
        .spawn()
        .unwrap();
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "isolated test {name} failed: {status}");
            return false;
        }
        if start.elapsed() > ISOLATED_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("isolated test {name} ran out of time");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
