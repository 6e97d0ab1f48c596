//! `plasmd` binary: a thin wrapper around the `phase_provider` library.
fn main() {}
