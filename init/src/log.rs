//! Console logging for PID 1 and the `phase` tool (DESIGN §9, u-root `pkg/ulog`).
//!
//! Every stage prints one line, `phase: <stage> ok <details> in <ms>ms`, or
//! `phase: <stage> failed: <error chain>`; the QEMU tests match these lines. As PID 1 the lines go
//! to `/dev/kmsg` (which the kernel copies to the console with a timestamp); when kmsg cannot be
//! opened, or outside PID 1, they go to stderr (the console for PID 1).

use std::error::Error;
use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::sync::{Mutex, OnceLock};
use std::time::Instant;

/// Where log lines go once [`init_kmsg`] has run (or stderr when it has not or failed).
static KMSG: OnceLock<Mutex<File>> = OnceLock::new();

/// Sends later log lines to `/dev/kmsg` and lifts the kernel's rate limit on user messages
/// (`/proc/sys/kernel/printk_devkmsg` = `on`) so no stage line is dropped. Call after /dev and
/// /proc are mounted. Returns false (and keeps logging to stderr) if kmsg cannot be opened.
pub fn init_kmsg() -> bool {
    // Best effort: without this the kernel may drop bursts of user lines.
    let _ = std::fs::write("/proc/sys/kernel/printk_devkmsg", "on\n");
    match OpenOptions::new().write(true).open("/dev/kmsg") {
        Ok(f) => KMSG.set(Mutex::new(f)).is_ok(),
        Err(_) => false,
    }
}

/// Writes `phase: <msg>` as one line: to kmsg at level 6 (info) if [`init_kmsg`] succeeded,
/// otherwise to stderr. Never fails and never panics; a line that cannot be written is lost.
pub fn line(msg: &str) {
    if let Some(kmsg) = KMSG.get() {
        if let Ok(mut f) = kmsg.lock() {
            // kmsg takes one record per write(2); split long messages by line.
            let mut ok = true;
            for part in msg.lines() {
                ok &= f
                    .write_all(format!("<6>phase: {part}\n").as_bytes())
                    .is_ok();
            }
            if ok {
                return;
            }
        }
    }
    let _ = writeln!(std::io::stderr(), "phase: {msg}");
}

/// `Display` of an error and each of its sources, joined by `: ` (cloud-hypervisor
/// `cli_print_error_chain`).
pub fn error_chain(err: &(dyn Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut cur = err.source();
    while let Some(e) = cur {
        let _ = write!(out, ": {e}");
        cur = e.source();
    }
    out
}

/// A timed boot stage: [`Stage::ok`] and [`Stage::failed`] print its one line with the
/// elapsed milliseconds.
#[derive(Debug)]
pub struct Stage {
    name: &'static str,
    start: Instant,
}

impl Stage {
    /// Starts timing the stage `name` (a short word: `dhcp`, `fetch`, `kexec`).
    pub fn start(name: &'static str) -> Stage {
        Stage {
            name,
            start: Instant::now(),
        }
    }

    /// Milliseconds since [`Stage::start`].
    pub fn elapsed_ms(&self) -> u128 {
        self.start.elapsed().as_millis()
    }

    /// Prints `phase: <stage> ok <details> in <ms>ms`.
    pub fn ok(self, details: impl std::fmt::Display) {
        let details = details.to_string();
        let sep = if details.is_empty() { "" } else { " " };
        line(&format!(
            "{} ok{sep}{details} in {}ms",
            self.name,
            self.elapsed_ms()
        ));
    }

    /// Prints `phase: <stage> failed: <error chain>` (after `<ms>ms`).
    pub fn failed(self, err: &(dyn Error + 'static)) {
        line(&format!(
            "{} failed after {}ms: {}",
            self.name,
            self.elapsed_ms(),
            error_chain(err)
        ));
    }
}

/// Sends the `tracing` events of the libraries (discovery, fetch) to the console through
/// [`ConsoleWriter`]: warnings from everything, and info from `phase_discovery` (which logs the
/// DHT client's peer id and every record it skips); `debug` (`phase.debug`) lowers both to debug.
/// A second call does nothing.
pub fn init_tracing(debug: bool) {
    use tracing::Level;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    // filter::Targets, not EnvFilter: the same target=level rules without regex-automata in
    // /init (issue 18 §1).
    let filter = if debug {
        tracing_subscriber::filter::Targets::new()
            .with_default(Level::INFO)
            .with_target("phase_discovery", Level::DEBUG)
            .with_target("phase_init", Level::DEBUG)
    } else {
        tracing_subscriber::filter::Targets::new()
            .with_default(Level::WARN)
            .with_target("phase_discovery", Level::INFO)
    };
    let _ = tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(ConsoleWriter)
                .with_ansi(false)
                .without_time(),
        )
        .with(filter)
        .try_init();
}

/// A `tracing_subscriber` writer that sends each formatted event through [`line()`]-style output
/// (kmsg when available, else stderr), so library logs (libp2p, mdns-sd) reach the console too.
#[derive(Debug, Clone, Copy, Default)]
pub struct ConsoleWriter;

impl Write for ConsoleWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        let text = text.trim_end_matches('\n');
        if !text.is_empty() {
            line(text);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for ConsoleWriter {
    type Writer = ConsoleWriter;

    fn make_writer(&'a self) -> Self::Writer {
        *self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn error_chain_joins_every_source() {
        let e = Outer(std::io::Error::other("inner"));
        assert_eq!(error_chain(&e), "outer: inner");
    }
}
