//! `/init` in the Phase Boot initramfs.
fn main() {}
