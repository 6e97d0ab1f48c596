//! One QEMU virtual machine on the test LAN: TCG, `-nographic -no-reboot`, serial console on a
//! pipe read line by line, the monitor on a unix socket (`system_powerdown`, `quit`).
//!
//! [`Vm::expect`] waits for console lines in order, each with its own timeout; on failure the
//! error holds the QEMU command line and the last 100 console lines (u-root's integration tests
//! work the same way). Dropping a [`Vm`] kills QEMU and prints the stage-time table.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::netns::Lan;
use crate::process::ChildGuard;
use crate::timing;

/// The guest's architecture: which QEMU binary, machine, CPU and serial console.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuestArch {
    /// `qemu-system-x86_64 -machine q35`, console `ttyS0`.
    X86_64,
    /// `qemu-system-aarch64 -machine virt -cpu cortex-a57` (a CPU TCG emulates much faster than
    /// `max`), console `ttyAMA0` (issue 17 §3).
    Aarch64,
}

impl GuestArch {
    /// The QEMU system emulator for this architecture.
    pub fn qemu(self) -> &'static str {
        match self {
            GuestArch::X86_64 => "qemu-system-x86_64",
            GuestArch::Aarch64 => "qemu-system-aarch64",
        }
    }

    /// The `console=` value of its serial port.
    pub fn console(self) -> &'static str {
        match self {
            GuestArch::X86_64 => "ttyS0,115200",
            GuestArch::Aarch64 => "ttyAMA0",
        }
    }
}

/// The network device QEMU emulates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NicModel {
    /// `virtio-net-pci` (PCI 1af4:1000): every test but the one for `@device` modules.
    VirtioNet,
    /// `e1000`, the Intel 82540EM (PCI 8086:100e), driven by the e1000 module.
    E1000,
}

/// What to boot and how.
#[derive(Debug, Clone)]
pub struct VmConfig {
    /// The guest architecture.
    pub arch: GuestArch,
    /// Name used in logs and file names.
    pub name: String,
    /// `-kernel` (direct boot); `None` with `firmware` set boots a disk through UEFI.
    pub kernel: Option<PathBuf>,
    /// `-initrd`.
    pub initrd: Option<PathBuf>,
    /// `-append` (the harness adds `console=ttyS0,115200 panic=-1` when missing).
    pub append: String,
    /// Guest RAM in MiB.
    pub memory_mib: u32,
    /// Last byte of the MAC 52:54:00:12:34:xx.
    pub mac_suffix: u8,
    /// Raw disk images attached as virtio block devices, in order (vda, vdb...).
    pub disks: Vec<PathBuf>,
    /// UEFI firmware: (OVMF code, writable copy of the vars); boots `disks[0]`.
    pub firmware: Option<(PathBuf, PathBuf)>,
    /// Echo every console line to stderr as it arrives (`make run`, debugging).
    pub echo: bool,
    /// Console substrings that end any [`Vm::expect`] at once with an error.
    pub fail_on: Vec<String>,
    /// Attach a NIC to the LAN's tap (`false`: `-nic none`, a machine without any network
    /// device).
    pub nic: bool,
    /// The NIC's model when `nic` is set.
    pub nic_model: NicModel,
    /// `-rtc base=...` (e.g. `1970-01-01`: a board without a battery-backed clock); `None`
    /// starts the RTC at the host's time.
    pub rtc_base: Option<String>,
}

impl VmConfig {
    /// A VM booting `kernel` + `initrd` with `append`, 1024 MiB, no disks.
    pub fn direct(name: &str, kernel: &Path, initrd: &Path, append: &str) -> Self {
        Self {
            arch: GuestArch::X86_64,
            name: name.to_string(),
            kernel: Some(kernel.to_path_buf()),
            initrd: Some(initrd.to_path_buf()),
            append: append.to_string(),
            memory_mib: 1024,
            mac_suffix: 0x56,
            disks: Vec::new(),
            firmware: None,
            echo: std::env::var_os("PHASE_ECHO").is_some(),
            // A rescue shell also means the boot failed: `phase: onfail=` announces it, and
            // the rootfs's busybox shell prints its banner.
            fail_on: vec![
                "Kernel panic".into(),
                "phase: onfail=".into(),
                "built-in shell (ash)".into(),
            ],
            rtc_base: None,
            nic: true,
            nic_model: NicModel::VirtioNet,
        }
    }

    /// The NIC's MAC address, `52:54:00:12:34:<mac_suffix>` (lower-case hex, as dnsmasq's
    /// lease file writes it).
    pub fn mac(&self) -> String {
        format!("52:54:00:12:34:{:02x}", self.mac_suffix)
    }

    /// The QEMU arguments (without the program name).
    pub fn args(&self, tap: &str, monitor: &Path) -> Vec<String> {
        let accel = std::env::var("PHASE_QEMU_ACCEL").unwrap_or_else(|_| "tcg".into());
        let (machine, tcg_cpu) = match self.arch {
            GuestArch::X86_64 => ("q35", "max"),
            GuestArch::Aarch64 => ("virt", "cortex-a57"),
        };
        let mut a: Vec<String> = vec![
            "-machine".into(),
            machine.into(),
            "-accel".into(),
            accel.clone(),
            "-cpu".into(),
            if accel == "kvm" {
                "host".into()
            } else {
                tcg_cpu.into()
            },
            "-m".into(),
            self.memory_mib.to_string(),
            "-smp".into(),
            "1".into(),
            "-nographic".into(),
            "-no-reboot".into(),
            "-serial".into(),
            "stdio".into(),
            "-monitor".into(),
            format!("unix:{},server,nowait", monitor.display()),
        ];
        if self.nic {
            a.push("-netdev".into());
            a.push(format!("tap,id=n0,ifname={tap},script=no,downscript=no"));
            a.push("-device".into());
            // No option ROM on arm64: Debian's qemu-system-arm ships no efi-virtio.rom, and
            // neither the direct boot nor AAVMF needs it.
            let rom = if self.arch == GuestArch::Aarch64 {
                ",romfile="
            } else {
                ""
            };
            let model = match self.nic_model {
                NicModel::VirtioNet => "virtio-net-pci",
                NicModel::E1000 => "e1000",
            };
            a.push(format!("{model},netdev=n0,mac={}{rom}", self.mac()));
        } else {
            a.push("-nic".into());
            a.push("none".into());
        }
        if let Some(base) = &self.rtc_base {
            a.push("-rtc".into());
            a.push(format!("base={base}"));
        }
        if let Some((code, vars)) = &self.firmware {
            a.push("-drive".into());
            a.push(format!(
                "if=pflash,format=raw,unit=0,readonly=on,file={}",
                code.display()
            ));
            a.push("-drive".into());
            a.push(format!(
                "if=pflash,format=raw,unit=1,file={}",
                vars.display()
            ));
        }
        if let Some(k) = &self.kernel {
            a.push("-kernel".into());
            a.push(k.display().to_string());
            let mut append = self.append.clone();
            if !append.contains("console=") {
                append = format!("console={} {append}", self.arch.console());
            }
            if !append.contains("panic=") {
                append.push_str(" panic=-1");
            }
            a.push("-append".into());
            a.push(append);
        }
        if let Some(i) = &self.initrd {
            a.push("-initrd".into());
            a.push(i.display().to_string());
        }
        for d in &self.disks {
            a.push("-drive".into());
            a.push(format!("file={},format=raw,if=virtio", d.display()));
        }
        a
    }
}

#[derive(Debug, Default)]
struct Console {
    lines: Vec<String>,
    closed: bool,
}

/// A running VM.
#[derive(Debug)]
pub struct Vm {
    cfg: VmConfig,
    cmdline: String,
    guard: ChildGuard,
    console: Arc<(Mutex<Console>, Condvar)>,
    cursor: usize,
    monitor: PathBuf,
    log: PathBuf,
    started: Instant,
    serial_in: Option<std::process::ChildStdin>,
}

impl Vm {
    /// Adds a tap to `lan` and starts QEMU inside the namespace. The console is also written to
    /// `<work>/<name>.console.log`.
    ///
    /// Errors: the tap cannot be created or QEMU cannot start.
    pub fn start(lan: &mut Lan, cfg: VmConfig, work: &Path) -> Result<Self> {
        let tap = if cfg.nic {
            lan.add_tap()?
        } else {
            String::new()
        };
        let monitor = work.join(format!("{}.monitor.sock", cfg.name));
        let log = work.join(format!("{}.console.log", cfg.name));
        let args = cfg.args(&tap, &monitor);
        let qemu = cfg.arch.qemu();
        let cmdline = format!(
            "ip netns exec {} {qemu} {}",
            lan.name(),
            args.iter()
                .map(|a| shell_quote(a))
                .collect::<Vec<_>>()
                .join(" ")
        );
        eprintln!("harness: starting VM {}: {cmdline}", cfg.name);
        let mut c = lan.command(qemu);
        c.args(&args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c.spawn().with_context(|| format!("start {qemu}"))?;
        let stdout = child.stdout.take().context("qemu stdout")?;
        let stderr = child.stderr.take().context("qemu stderr")?;
        let serial_in = child.stdin.take();
        let console = Arc::new((Mutex::new(Console::default()), Condvar::new()));
        let mut file =
            std::fs::File::create(&log).with_context(|| format!("create {}", log.display()))?;
        let (echo, name) = (cfg.echo, cfg.name.clone());
        let shared = Arc::clone(&console);
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut buf = Vec::new();
            loop {
                buf.clear();
                match reader.read_until(b'\n', &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
                // Without colour codes: systemd highlights unit names on the console.
                let line = strip_ansi(String::from_utf8_lossy(&buf).trim_end_matches(['\r', '\n']));
                let _ = writeln!(file, "{line}");
                if echo {
                    eprintln!("[{name}] {line}");
                }
                let (m, cv) = &*shared;
                if let Ok(mut c) = m.lock() {
                    c.lines.push(line);
                }
                cv.notify_all();
            }
            let (m, cv) = &*shared;
            if let Ok(mut c) = m.lock() {
                c.closed = true;
            }
            cv.notify_all();
        });
        let shared = Arc::clone(&console);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("qemu stderr: {line}");
                let (m, cv) = &*shared;
                if let Ok(mut c) = m.lock() {
                    c.lines.push(format!("qemu stderr: {line}"));
                }
                cv.notify_all();
            }
        });
        let guard = ChildGuard::from_child(&format!("qemu-{}", cfg.name), child);
        Ok(Self {
            cfg,
            cmdline,
            guard,
            console,
            cursor: 0,
            monitor,
            log,
            started: Instant::now(),
            serial_in,
        })
    }

    /// Types `text` on the serial console (QEMU's stdin), e.g. a command for a rescue shell.
    ///
    /// Errors: the console input is closed (QEMU exited).
    pub fn send_console(&mut self, text: &str) -> Result<()> {
        let w = self
            .serial_in
            .as_mut()
            .context("serial console input closed")?;
        w.write_all(text.as_bytes())
            .and_then(|()| w.flush())
            .context("write to the serial console")
    }

    /// The QEMU command line, ready to paste into a shell.
    pub fn cmdline(&self) -> &str {
        &self.cmdline
    }

    /// QEMU's process id.
    pub fn pid(&self) -> u32 {
        self.guard.pid()
    }

    /// Where the full console log is written.
    pub fn console_log(&self) -> &Path {
        &self.log
    }

    /// All console lines so far.
    pub fn lines(&self) -> Vec<String> {
        self.console
            .0
            .lock()
            .map(|c| c.lines.clone())
            .unwrap_or_default()
    }

    /// Waits up to `timeout` for the next console line (after the previous match) that contains
    /// `pattern`, and returns it.
    ///
    /// Errors: timeout, QEMU exited, or a `fail_on` line appeared first; the error holds the
    /// QEMU command line and the last 100 console lines.
    pub fn expect(&mut self, pattern: &str, timeout: Duration) -> Result<String> {
        let pats = [pattern];
        self.expect_any(&pats, timeout).map(|(_, l)| l)
    }

    /// Like [`Vm::expect`] for several patterns; returns (index of the pattern, line).
    ///
    /// Errors: as [`Vm::expect`].
    pub fn expect_any(&mut self, patterns: &[&str], timeout: Duration) -> Result<(usize, String)> {
        let deadline = Instant::now() + timeout;
        let (m, cv) = &*self.console;
        let mut guard = m
            .lock()
            .map_err(|_| anyhow::anyhow!("console lock poisoned"))?;
        loop {
            while self.cursor < guard.lines.len() {
                let line = guard.lines[self.cursor].clone();
                self.cursor += 1;
                if let Some(i) = patterns.iter().position(|p| line.contains(p)) {
                    return Ok((i, line));
                }
                if let Some(f) = self.cfg.fail_on.iter().find(|f| line.contains(f.as_str())) {
                    let why =
                        format!("console showed {f:?} while waiting for {patterns:?}: {line}");
                    drop(guard);
                    return Err(self.failure(&why));
                }
            }
            let now = Instant::now();
            if guard.closed || now >= deadline {
                let why = if guard.closed {
                    format!("QEMU exited while waiting for {patterns:?}")
                } else {
                    format!("timed out after {timeout:?} waiting for {patterns:?}")
                };
                drop(guard);
                return Err(self.failure(&why));
            }
            let (g, _) = cv
                .wait_timeout(guard, deadline - now)
                .map_err(|_| anyhow::anyhow!("console lock poisoned"))?;
            guard = g;
        }
    }

    /// Replaces the substrings that make [`Vm::expect`] fail early.
    pub fn set_fail_on(&mut self, patterns: &[&str]) {
        self.cfg.fail_on = patterns.iter().map(|s| s.to_string()).collect();
    }

    /// Builds the failure report: reason, QEMU command line, last 100 console lines.
    pub fn failure(&self, why: &str) -> anyhow::Error {
        let lines = self.lines();
        let tail = lines[lines.len().saturating_sub(100)..].join("\n");
        anyhow::anyhow!(
            "VM {}: {why}\n--- QEMU command line ---\n{}\n--- last {} console lines ({}) ---\n{tail}\n---",
            self.cfg.name,
            self.cmdline,
            lines.len().min(100),
            self.log.display()
        )
    }

    /// Sends one human monitor command (`system_powerdown`, `quit`, `info status`) and returns
    /// what the monitor printed within 1 s.
    ///
    /// Errors: the monitor socket cannot be reached within 10 s.
    pub fn monitor(&self, command: &str) -> Result<String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut sock = loop {
            match UnixStream::connect(&self.monitor) {
                Ok(s) => break s,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(e) => {
                    return Err(e)
                        .with_context(|| format!("connect monitor {}", self.monitor.display()))
                }
            }
        };
        sock.set_read_timeout(Some(Duration::from_secs(1)))?;
        writeln!(sock, "{command}").context("write monitor command")?;
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        let end = Instant::now() + Duration::from_secs(1);
        while Instant::now() < end {
            match std::io::Read::read(&mut sock, &mut buf) {
                Ok(0) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
                Err(_) => break,
            }
        }
        Ok(String::from_utf8_lossy(&out).into_owned())
    }

    /// Waits up to `timeout` for QEMU to exit on its own.
    ///
    /// Errors: it is still running (the report holds the console tail).
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<std::process::ExitStatus> {
        match self.guard.wait_timeout(timeout) {
            Some(st) => Ok(st),
            None => Err(self.failure(&format!("QEMU still running after {timeout:?}"))),
        }
    }

    /// The VM's address from the last `phase: dhcp ok <iface> <addr>/<prefix>` line.
    pub fn dhcp_addr(&self) -> Option<String> {
        self.lines().iter().rev().find_map(|l| timing::dhcp_addr(l))
    }

    /// Seconds since QEMU started.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Prints the stage-time table parsed from the console so far.
    pub fn print_stage_table(&self) {
        eprintln!("{}", timing::table(&self.cfg.name, &self.lines()));
    }

    /// Kills QEMU now.
    pub fn kill(&mut self) {
        self.guard.stop();
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        self.guard.stop();
        self.print_stage_table();
    }
}

fn shell_quote(s: &str) -> String {
    if s.chars()
        .all(|c| c.is_ascii_alphanumeric() || "-_./:=,@+".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// `line` without ANSI escape sequences: CSI (`ESC [` parameters, final byte `@`..`~`, as in
/// colour codes) and two-byte `ESC x` sequences (ECMA-48).
pub fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c != '\u{1b}' {
            out.push(c);
            continue;
        }
        // A two-byte `ESC x` ends with x; a CSI runs to its final byte.
        if let Some('[') = chars.next() {
            for f in chars.by_ref() {
                if ('@'..='~').contains(&f) {
                    break;
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strip_ansi_removes_systemd_colour_codes_and_keeps_text() {
        let raw = "[\u{1b}[0;32m  OK  \u{1b}[0m] Reached target \u{1b}[0;1;39mmulti-user.target\u{1b}[0m - Multi-User System.";
        assert_eq!(
            strip_ansi(raw),
            "[  OK  ] Reached target multi-user.target - Multi-User System."
        );
        assert_eq!(strip_ansi("phase: dhcp ok"), "phase: dhcp ok");
        assert_eq!(strip_ansi("a\u{1b}"), "a");
        assert_eq!(strip_ansi("\u{1b}[2J\u{1b}cb"), "b");
    }

    #[test]
    fn mac_is_lower_case_hex_of_the_suffix() {
        let mut cfg = VmConfig::direct("t", Path::new("-"), Path::new("-"), "");
        cfg.mac_suffix = 0xab;
        assert_eq!(cfg.mac(), "52:54:00:12:34:ab");
    }
}
