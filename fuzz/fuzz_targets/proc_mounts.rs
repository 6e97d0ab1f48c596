//! `/proc/self/mountinfo` text (mount points under user control, octal escapes such as `\040`)
//! through `phase_init::target::shutdown::unmount_order`, which splits the lines and decodes the
//! escapes of each mount point.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // shutdown reads it with read_to_string: UTF-8 only.
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = phase_init::target::shutdown::unmount_order(text);
    }
});
