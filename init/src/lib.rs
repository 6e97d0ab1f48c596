//! `phase-init`: the Phase Boot `/init` (PID 1) and the `phase` tool (DESIGN §1, seed 003).
//!
//! Stage "boot" (in the phase initramfs): mounts, `phase.*` command line, kernel modules, DHCP,
//! discovery, fetch + verify, cache, kexec. Stage "target" (after kexec, when
//! `/phase/boot/manifest.json` exists): check the handover ([`custody`]), overlay root,
//! switch_root, supervisor.
//! All `unsafe` and raw syscalls live in [`sys`] behind safe functions.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod boot;
pub mod cache;
pub mod cli;
pub mod clock;
pub mod cmdline;
pub mod custody;
pub mod fetch;
pub mod kexec;
pub mod log;
pub mod modules;
pub mod mounts;
pub mod net;
pub mod onfail;
pub mod peers;
pub mod sys;
pub mod target;
