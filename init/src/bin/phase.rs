//! The `phase` tool: discover, fetch, verify.
fn main() {}
