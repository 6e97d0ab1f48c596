//! `phase-layout`: data shared by the build (`make initramfs`, `make rootfs`) and by the init:
//! the declarative initramfs layout, `modules.dep` resolution and reproducible newc cpio
//! archives (issue 8; the init's kexec initrd uses the same cpio writer).
#![forbid(unsafe_code)]

pub mod kconfig;
pub mod layout;
pub mod modules_dep;
pub mod newc;
pub mod plan;
