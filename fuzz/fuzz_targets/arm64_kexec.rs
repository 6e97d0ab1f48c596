//! The inputs of the arm64 `kexec_load` path (issue 17 §2) from disk and the running system:
//! a kernel Image header (from the verified kernel file), `/proc/iomem` text and a flattened
//! device tree (`/sys/firmware/fdt`), through `ImageHeader::parse`, `usable_ram`, `plan` and
//! `rewrite_dtb`. Nothing may panic; a plan that succeeds must keep every segment page-aligned
//! inside usable RAM, and a rewritten DTB must parse again.
#![no_main]

use libfuzzer_sys::fuzz_target;
use phase_init::kexec::arm64::{plan, rewrite_dtb, usable_ram, ImageHeader, Seeds};

fuzz_target!(|data: &[u8]| {
    // First byte picks the part; the rest is that part's input.
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    match which % 3 {
        0 => {
            if let Ok(h) = ImageHeader::parse(rest, 4096) {
                let ram = [0x4000_0000..0x8000_0000];
                if let Ok(l) = plan(&ram, &h, rest.len() as u64, 1 << 20, 4096, 4096) {
                    for a in [l.kernel, l.initrd, l.dtb, l.trampoline] {
                        assert_eq!(a % 4096, 0);
                        assert!((0x4000_0000..0x8000_0000).contains(&a));
                    }
                }
            }
        }
        1 => {
            if let Ok(text) = std::str::from_utf8(rest) {
                let ram = usable_ram(text);
                for r in &ram {
                    assert!(r.start < r.end);
                }
                let h = ImageHeader {
                    text_offset: 0,
                    image_size: 1 << 21,
                    flags: 2,
                };
                if let Ok(l) = plan(&ram, &h, 1 << 20, 1 << 20, 4096, 4096) {
                    assert!(ram.iter().any(|r| r.start <= l.kernel && l.kernel < r.end));
                }
            }
        }
        _ => {
            let seeds = Seeds {
                kaslr: Some(1),
                rng: Some(vec![2; 16]),
            };
            if let Ok(out) = rewrite_dtb(rest, "console=ttyAMA0", 0x4800_0000..0x4900_0000, &seeds) {
                assert!(rewrite_dtb(&out, "x", 0..0, &Seeds::default()).is_ok());
            }
        }
    }
});
