//! Issue 15 §3: a machine without a real-time clock (QEMU `-rtc base=1970-01-01`, as most arm64
//! boards read at power-on) boots in local and internet mode on a LAN with no NTP server, and
//! in local mode on a LAN whose lease names a real NTP server (chronyd). The
//! init never believes a clock below its build time: it sets the clock to that floor, takes the
//! signed manifest's `created_at` as evidence of the time, and says so on the console, in both
//! the boot and the target stage.

mod common;

use anyhow::Result;
use common::*;
use phase_qemu_tests::env;
use phase_qemu_tests::provider::{self, ProviderOpts};
use phase_qemu_tests::qemu::{Vm, VmConfig};

/// Checks the clock lines of one boot through the target stage: each stage found the RTC in
/// 1970 below the build floor, and each moved the clock forward by the signed manifest.
fn check_clock_lines(vm: &Vm) -> Result<()> {
    let lines = vm.lines();
    let below = lines
        .iter()
        .filter(|l| l.contains("phase: clock 1970-01-01") && l.contains("below build-floor"))
        .count();
    if below != 2 {
        return Err(vm.failure(&format!(
            "expected a 'clock 1970-01-01... below build-floor' line in each stage, found {below}"
        )));
    }
    let signed = lines
        .iter()
        .filter(|l| l.contains("phase: clock set ") && l.contains("from signed-manifest"))
        .count();
    if signed != 2 {
        return Err(vm.failure(&format!(
            "expected a 'clock set ... from signed-manifest' line in each stage, found {signed}"
        )));
    }
    Ok(())
}

fn rtc_1970(mut cfg: VmConfig) -> VmConfig {
    cfg.rtc_base = Some("1970-01-01".into());
    cfg
}

/// Local mode (mDNS) with the RTC at 1970: boots, and the target serves the release.
#[test]
fn rtc_of_1970_boots_in_local_mode_by_signed_evidence() -> Result<()> {
    let test = "rtc_of_1970_boots_in_local_mode_by_signed_evidence";
    if !ready(test)? {
        return Ok(());
    }
    let work = env::work_dir("rtc1970-local")?;
    let (mut lan, _p) = local_lan("rtcl", &work)?;
    let cfg = rtc_1970(vm_config("rtc1970-local", "local", "", 0x31)?);
    let mut vm = Vm::start(&mut lan, cfg, &work)?;
    expect_boot_stage(&mut vm, "local", "mdns")?;
    let addr = expect_kexec_and_target(&mut vm)?;
    check_clock_lines(&vm)?;
    end_checks(&lan, &vm, &addr)?;
    Ok(())
}

/// Internet mode (DHT) with the RTC at 1970: the DHT records are not judged by a clock known to
/// be wrong, the manifest is, by its own signed date.
#[test]
fn rtc_of_1970_boots_in_internet_mode_by_signed_evidence() -> Result<()> {
    let test = "rtc_of_1970_boots_in_internet_mode_by_signed_evidence";
    if !ready(test)? {
        return Ok(());
    }
    let work = env::work_dir("rtc1970-inet")?;
    let (mut lan, _dht, bootstrap) = internet_lan("rtci", &work, 3)?;
    let cfg = rtc_1970(vm_config(
        "rtc1970-inet",
        "internet",
        &format!("phase.bootstrap={bootstrap}"),
        0x32,
    )?);
    let mut vm = Vm::start(&mut lan, cfg, &work)?;
    expect_boot_stage(&mut vm, "internet", "dht")?;
    let addr = expect_kexec_and_target(&mut vm)?;
    check_clock_lines(&vm)?;
    end_checks(&lan, &vm, &addr)?;
    Ok(())
}

/// Local mode with the RTC at 1970 on a LAN whose DHCP server names an NTP server (option 42,
/// a real chronyd): the boot stage sets its clock by SNTP and says so; the target stage, whose
/// kernel read the RTC again, still has the signed manifest as evidence.
#[test]
fn rtc_of_1970_takes_the_time_from_the_leases_ntp_server() -> Result<()> {
    let test = "rtc_of_1970_takes_the_time_from_the_leases_ntp_server";
    if !ready(test)? || !env::ready(test, &[env::chronyd()])? {
        return Ok(());
    }
    let work = env::work_dir("rtc1970-ntp")?;
    let mut lan = phase_qemu_tests::netns::Lan::create("rtcn")?;
    lan.start_ntp(&work)?;
    lan.start_dnsmasq_with(
        &work,
        &["--dhcp-option=option:ntp-server,192.0.2.1".to_string()],
    )?;
    provider::start_provider(&mut lan, &ProviderOpts::local(), &work, "host")?;
    let cfg = rtc_1970(vm_config("rtc1970-ntp", "local", "", 0x33)?);
    let mut vm = Vm::start(&mut lan, cfg, &work)?;
    vm.expect("phase: clock 1970-01-01", secs(240))?;
    let sntp = vm.expect("phase: sntp ok 192.0.2.1", secs(120))?;
    eprintln!("{sntp}");
    expect_boot_stage_rest(&mut vm)?;
    let addr = expect_kexec_and_target(&mut vm)?;
    let lines = vm.lines();
    if !lines
        .iter()
        .any(|l| l.contains("phase: clock set ") && l.contains("from sntp 192.0.2.1"))
    {
        return Err(vm.failure("no 'clock set ... from sntp 192.0.2.1' line"));
    }
    end_checks(&lan, &vm, &addr)?;
    Ok(())
}

/// The boot stage after the clock and SNTP lines: discovery by mDNS and the manifest.
fn expect_boot_stage_rest(vm: &mut Vm) -> Result<()> {
    vm.expect("phase: discover ok mdns", secs(180))?;
    vm.expect("phase: manifest ok", secs(60))?;
    Ok(())
}
