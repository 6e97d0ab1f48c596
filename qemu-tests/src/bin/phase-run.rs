//! `make run`: the README's main job. Starts the test LAN (namespace, bridge, dnsmasq), the
//! host provider over `make release`'s tree, boots one VM in local mode with its console
//! streamed live, and ends with a summary (time per stage, the VM's provider answering).
//! Everything is stopped at the end unless `KEEP=1`. Works with or without a terminal.
//!
//! Environment: `KEEP=1` leaves the LAN and VM running; `PHASE_MODE` (local), `PHASE_APPEND`
//! (extra kernel arguments), `PHASE_TIMEOUT` (seconds until `target ready`, or until the exec of
//! the release's own `phase.init`, default 900), and the
//! path overrides of `phase_qemu_tests::env`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use phase_qemu_tests::netns::Lan;
use phase_qemu_tests::provider::{self, ProviderOpts};
use phase_qemu_tests::qemu::{Vm, VmConfig};
use phase_qemu_tests::{env, timing};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

fn main() {
    if let Err(e) = run() {
        eprintln!("make run: error: {e:#}");
        std::process::exit(1);
    }
}

fn run() -> Result<()> {
    // Ctrl-C reaches QEMU too (same process group), which ends the console and so the wait
    // below; we only need to survive it long enough to clean up.
    // SAFETY: installing an async-signal-safe handler that only stores to an atomic.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
    env::check_host().context("make run needs root, network namespaces, QEMU, dnsmasq and curl")?;
    let kernel = env::kernel()?;
    for p in [
        env::initramfs(),
        env::release_manifest(),
        env::plasmd(),
        kernel.clone(),
    ] {
        if !p.exists() {
            bail!("{} is missing: run `make release` first", p.display());
        }
    }
    let keep = std::env::var("KEEP").is_ok_and(|v| v == "1");
    let mode = std::env::var("PHASE_MODE").unwrap_or_else(|_| "local".into());
    let extra = std::env::var("PHASE_APPEND").unwrap_or_default();
    let timeout = Duration::from_secs(
        std::env::var("PHASE_TIMEOUT")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(900),
    );
    let work = env::work_dir("run")?;
    let mut lan = Lan::create("run")?;
    lan.start_dnsmasq(&work)?;
    let opts = ProviderOpts::local();
    provider::start_provider(&mut lan, &opts, &work, "host")?;
    eprintln!(
        "make run: LAN {} up; provider {} serving {}",
        lan.name(),
        opts.url(),
        opts.artifacts.display()
    );

    let append = format!("console=ttyS0,115200 panic=-1 phase.mode={mode} {extra}");
    let mut cfg = VmConfig::direct("run", &kernel, &env::initramfs(), append.trim());
    cfg.echo = true;
    let mac = cfg.mac();
    let mut vm = Vm::start(&mut lan, cfg, &work)?;
    let started = Instant::now();
    // A release with its own init (make release ROOTFS=... INIT=...) ends phase-init's part at
    // the exec of that init; its network and plasmd come up under that init.
    let ready = vm.expect_any(&["phase: target ready in", "(phase.init)"], timeout);
    if INTERRUPTED.load(Ordering::SeqCst) {
        bail!("interrupted; stopped the VM and removed {}", lan.name());
    }
    let (which, line) = ready?;
    let addr = if which == 0 {
        vm.dhcp_addr()
            .context("no `phase: dhcp ok` line with the VM's address")?
    } else {
        eprintln!("make run: {line}: waiting up to 300 s for its plasmd on a leased address");
        provider::serving_address(&lan, &work, &mac, Duration::from_secs(300))
            .context("the target's own init ran, but no address leased to it answered /health on :8080 in 300 s")?
    };
    let health = format!("http://{addr}:8080/health");
    let mut code = 0;
    for _ in 0..60 {
        code = lan.http_status(&health);
        if code == 200 || INTERRUPTED.load(Ordering::SeqCst) {
            break;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    eprintln!();
    eprintln!("{}", timing::table("run", &vm.lines()));
    eprintln!(
        "make run: VM booted to target in {:.1}s (wall clock, TCG)",
        started.elapsed().as_secs_f64()
    );
    eprintln!("make run: the VM's provider {health} answered {code}");
    if code != 200 {
        bail!("the VM's provider did not answer 200 on {health}");
    }
    if keep {
        eprintln!(
            "make run: KEEP=1: left running: namespace {ns}, QEMU pid {q}, dnsmasq/plasmd pids {p:?}.\n\
             Try: ip netns exec {ns} curl {health}\n\
             Stop: kill {q} {pids}; ip netns del {ns}",
            ns = lan.name(),
            q = vm.pid(),
            p = lan.pids(),
            pids = lan.pids().iter().map(u32::to_string).collect::<Vec<_>>().join(" "),
        );
        std::mem::forget(vm);
        std::mem::forget(lan);
    } else {
        vm.monitor("system_powerdown").ok();
        let _ = vm.wait_exit(Duration::from_secs(60));
        eprintln!("make run: stopped everything (KEEP=1 keeps the VM and LAN running)");
    }
    Ok(())
}
