//! The kernel command line (`/proc/cmdline`, partly set by whoever controls the boot loader or
//! the previous kernel's kexec) through `phase_init::cmdline::parse` and the word splitters.
#![no_main]

use libfuzzer_sys::fuzz_target;
use phase_init::cmdline;

fuzz_target!(|data: &[u8]| {
    // cmdline::read uses read_to_string: non-UTF-8 never reaches the parser.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(parsed) = cmdline::parse(text) {
        let _ = parsed.params.onfail();
        let _ = parsed.params.channel_or(Some("stable"));
    }
    for word in cmdline::raw_tokens(text) {
        let _ = cmdline::word_key(&word);
    }
    let _ = cmdline::tokens(text);
});
