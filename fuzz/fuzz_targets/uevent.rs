//! `/sys/class/block/<dev>/uevent` text (a GPT partition label on any disk plugged in ends up
//! in `PARTNAME=`) through `phase_init::cache::parse_uevent`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // block_devices reads it with read_to_string: UTF-8 only.
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = phase_init::cache::parse_uevent(text);
    }
});
