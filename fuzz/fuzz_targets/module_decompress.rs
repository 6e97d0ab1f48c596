//! Compressed kernel modules from the boot medium (`.ko.xz`, `.ko.zst`) through
//! `phase_init::modules::decompress` (lzma-rs, ruzstd, with the 64 MiB output cap).
//!
//! Input: `[format u8: even xz, odd zstd][compressed bytes]`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use phase_fuzz::Input;
use phase_init::modules::{decompress, Compression};

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let c = if input.u8() % 2 == 0 {
        Compression::Xz
    } else {
        Compression::Zstd
    };
    if let Ok(image) = decompress(input.rest(), c) {
        assert!(image.len() as u64 <= phase_init::modules::MAX_MODULE_BYTES);
    }
});
