//! Stage "target" of phase-init (issue 7; DESIGN §1; seed 003 "OverlayFS Pattern", seed 000
//! "Self-Hosting Loop"): the same `/init` after kexec, when `/phase/boot/manifest.json` exists.
#![allow(missing_docs)]

pub mod backoff;
pub mod service;
pub mod supervisor;
#[cfg(test)]
mod testutil;
pub mod rootfs;
pub mod verify;
