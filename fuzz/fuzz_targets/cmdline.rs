//! The kernel command line (`/proc/cmdline`, partly set by whoever controls the boot loader or
//! the previous kernel's kexec) through `phase_init::cmdline::parse`, the word splitters and
//! the module parameters (`phase_init::modules::cmdline_params`).
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
    // Module parameters (`loop.max_loop=8`): every one is a non-empty parameter of a named
    // module, and never a word after `--`.
    for (module, params) in phase_init::modules::cmdline_params(text) {
        assert!(!module.is_empty() && !module.contains('-'), "{module:?}");
        assert!(params.iter().all(|p| !p.is_empty() && !p.starts_with('=')), "{params:?}");
    }
});
