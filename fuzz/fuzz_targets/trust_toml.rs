//! The trust root file (`/etc/phase/trust.toml`, `--trust FILE`) through
//! `phase_protocol::TrustRoot::from_toml`, and its `to_toml` round trip.
#![no_main]

use libfuzzer_sys::fuzz_target;
use phase_protocol::TrustRoot;

fuzz_target!(|data: &[u8]| {
    // TrustRoot::load reads the file with read_to_string: non-UTF-8 never reaches the parser.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(root) = TrustRoot::from_toml(text) else {
        return;
    };
    let back = TrustRoot::from_toml(&root.to_toml()).expect("to_toml output parses");
    assert_eq!(back, root);
});
