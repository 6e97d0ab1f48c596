#![allow(clippy::single_range_in_vec_init)] // memory maps of one RAM range
use super::*;
use crate::sys::fake::Recording;
use dtoolkit::model::DeviceTree;

const PAGE: u64 = 4096;

/// A 64-byte arm64 Image header (plus `body` bytes) with the given fields.
fn image(text_offset: u64, image_size: u64, flags: u64, body: usize) -> Vec<u8> {
    let mut v = vec![0u8; 64 + body];
    v[0..4].copy_from_slice(b"MZ\x40\xfa"); // an EFI stub's first word, as in Debian's Image
    v[8..16].copy_from_slice(&text_offset.to_le_bytes());
    v[16..24].copy_from_slice(&image_size.to_le_bytes());
    v[24..32].copy_from_slice(&flags.to_le_bytes());
    v[0x38..0x3c].copy_from_slice(&IMAGE_MAGIC.to_le_bytes());
    for (i, b) in v[64..].iter_mut().enumerate() {
        *b = (i % 251) as u8;
    }
    v
}

/// QEMU virt's memory map as /proc/iomem shows it with 1 GiB of RAM at 0x4000_0000.
const IOMEM: &str = "\
09000000-09000fff : pl011@9000000
  09000000-09000fff : 9000000.pl011 pl011@9000000
40000000-7fffffff : System RAM
  40210000-41c4ffff : Kernel code
  41c50000-4226ffff : reserved
  42270000-4268ffff : Kernel data
  48000000-483fffff : reserved
  7fbf0000-7fffffff : reserved
4010000000-401fffffff : PCI ECAM
";

/// A small DTB like QEMU's: /chosen with bootargs, an old initrd and a kaslr-seed, a memory
/// reservation of the old initrd, and a /memory node.
fn qemu_like_dtb() -> Vec<u8> {
    let mut t = DeviceTree::new();
    t.root.add_property(DeviceTreeProperty::new_unchecked(
        "compatible",
        "linux,dummy-virt",
    ));
    let mut chosen = DeviceTreeNode::new_unchecked("chosen");
    chosen.add_property(DeviceTreeProperty::new_unchecked(
        "bootargs",
        "console=ttyAMA0",
    ));
    chosen.add_property(DeviceTreeProperty::new_unchecked(
        "linux,initrd-start",
        0x4800_0000u32,
    ));
    chosen.add_property(DeviceTreeProperty::new_unchecked(
        "linux,initrd-end",
        0x4840_0000u32,
    ));
    chosen.add_property(DeviceTreeProperty::new_unchecked("kaslr-seed", 0u64));
    chosen.add_property(DeviceTreeProperty::new_unchecked(
        "linux,uefi-system-table",
        0x7fe0_0000u64,
    ));
    t.root.add_child(chosen);
    let mut mem = DeviceTreeNode::new_unchecked("memory@40000000");
    mem.add_property(DeviceTreeProperty::new_unchecked("device_type", "memory"));
    t.root.add_child(mem);
    let bytes = t.to_dtb();
    // Add the old initrd's reservation through a parse/serialise round trip.
    let mut t2 = DeviceTree::from_fdt(&Fdt::new(&bytes).unwrap());
    t2.memory_reservations
        .push(dtoolkit::memreserve::MemoryReservation::new(
            0x4800_0000,
            0x40_0000,
        ));
    t2.to_dtb()
}

fn chosen_prop(dtb: &[u8], name: &str) -> Option<Vec<u8>> {
    let fdt = Fdt::new(dtb).unwrap();
    let tree = DeviceTree::from_fdt(&fdt);
    let c = tree.find_node("/chosen")?;
    c.properties()
        .find(|p| p.name() == name)
        .map(|p| p.value().to_vec())
}

#[test]
fn header_of_a_modern_image_parses() {
    let h = ImageHeader::parse(&image(0, 0x200_0000, 0b1010, 100), PAGE).unwrap();
    assert_eq!(
        h,
        ImageHeader {
            text_offset: 0,
            image_size: 0x200_0000,
            flags: 0b1010
        }
    );
}

#[test]
fn bad_images_are_refused_before_anything_is_loaded() {
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (image(0, 1 << 20, 2, 0)[..63].to_vec(), "shorter than"),
        (
            {
                let mut v = image(0, 1 << 20, 2, 0);
                v[0x38] = b'X';
                v
            },
            "magic",
        ),
        (image(0, 0, 2, 0), "image_size 0"),
        (image(0, 1 << 20, 3, 0), "big-endian"),
        (image(0, 1 << 20, 6, 0), "65536-byte pages"),
        (image(0x123, 1 << 20, 2, 0), "text_offset"),
        (image(2 << 20, 1 << 20, 2, 0), "text_offset"),
        (
            {
                let mut v = image(0, 1 << 20, 2, 0);
                v[0] = 0x1f;
                v[1] = 0x8b;
                v
            },
            "gzip",
        ),
    ];
    for (img, want) in cases {
        let e = ImageHeader::parse(&img, PAGE).unwrap_err().to_string();
        assert!(e.contains(want), "{e} should say {want}");
    }
}

#[test]
fn iomem_gives_system_ram_minus_reserved_but_not_kernel() {
    assert_eq!(
        usable_ram(IOMEM),
        vec![
            0x4000_0000..0x41c5_0000,
            0x4227_0000..0x4800_0000,
            0x4840_0000..0x7fbf_0000
        ]
    );
    // Unprivileged readers see zeros and garbage lines are skipped.
    assert!(
        usable_ram("00000000-00000000 : System RAM\nnonsense\nzz-1 : System RAM\n")
            .iter()
            .all(|r| r.end - r.start <= 1)
    );
}

#[test]
fn plan_places_every_segment_aligned_in_ram_without_overlap() {
    let ram = usable_ram(IOMEM);
    let h = ImageHeader::parse(&image(0, 0x180_0000, 2, 100), PAGE).unwrap();
    let l = plan(&ram, &h, 0x170_0000, 0x3a0_0001, 0x1234, PAGE).unwrap();
    assert_eq!(l.kernel, 0x4000_0000);
    assert_eq!(l.kernel_memsz, 0x180_0000);
    let segs = [
        (l.kernel, l.kernel_memsz),
        (l.initrd, 0x3a0_1000),
        (l.dtb, 0x2000),
        (l.trampoline, PAGE),
    ];
    for (i, (a, len)) in segs.iter().enumerate() {
        assert_eq!(a % PAGE, 0, "segment {i} not page-aligned");
        assert!(
            ram.iter().any(|r| r.start <= *a && a + len <= r.end),
            "segment {i} at {a:#x} not in usable RAM"
        );
        for (b, blen) in &segs[i + 1..] {
            assert!(a + len <= *b || b + blen <= *a, "segments overlap");
        }
    }
    // The initrd skips the reserved hole at 0x41c5_0000..0x4227_0000: it does not fit before.
    assert_eq!(l.initrd, 0x4227_0000);
    // A kernel too big for the first range goes to the next 2 MiB-aligned base that holds it.
    let big = ImageHeader::parse(&image(0, 0x220_0000, 2, 100), PAGE).unwrap();
    let l = plan(&ram, &big, 0x100, 0x1000, 0x100, PAGE).unwrap();
    assert_eq!(l.kernel, 0x4240_0000);
}

#[test]
fn plan_keeps_text_offset_of_old_kernels() {
    let ram = [0x4000_0000..0x8000_0000];
    let h = ImageHeader::parse(&image(0x8_0000, 0x100_0000, 2, 0), PAGE).unwrap();
    let l = plan(&ram, &h, 0x100, 0x1000, 0x100, PAGE).unwrap();
    assert_eq!(l.kernel, 0x4008_0000);
}

#[test]
fn plan_refuses_what_does_not_fit() {
    let h = ImageHeader::parse(&image(0, 0x100_0000, 2, 0), PAGE).unwrap();
    let small = [0x4000_0000..0x4080_0000];
    assert!(matches!(
        plan(&small, &h, 0x100, 0x1000, 0x100, PAGE),
        Err(Arm64Error::NoRoom { what: "kernel", .. })
    ));
    let ram = [0x4000_0000..0x4200_0000];
    assert!(matches!(
        plan(&ram, &h, 0x100, 0x200_0000, 0x100, PAGE),
        Err(Arm64Error::NoRoom { what: "initrd", .. })
    ));
    assert!(matches!(
        plan(&ram, &h, 0x100, 0x1000, MAX_DTB + 1, PAGE),
        Err(Arm64Error::DtbTooLarge(_))
    ));
    // RAM beyond the kernel's 32 GiB window: the initrd would land outside it.
    let split = vec![0x4000_0000..0x4100_0000, 0x9_0000_0000..0x9_1000_0000];
    assert!(matches!(
        plan(&split, &h, 0x100, 0x100_0000, 0x100, PAGE),
        Err(Arm64Error::InitrdWindow { .. })
    ));
    assert!(matches!(
        plan(&[], &h, 0x100, 0x1000, 0x100, PAGE),
        Err(Arm64Error::NoRoom { .. })
    ));
}

#[test]
fn trampoline_sets_x0_to_the_dtb_and_branches_to_the_kernel() {
    let t = trampoline(0x4000_0000, 0x4a00_0000);
    // ldr x4, #0x18; ldr x0, #0x1c; mov x1..x3, xzr; br x4 (checked with aarch64 objdump).
    assert_eq!(
        &t[..24],
        &[
            0xc4, 0, 0, 0x58, 0xe0, 0, 0, 0x58, 0xe1, 3, 0x1f, 0xaa, 0xe2, 3, 0x1f, 0xaa, 0xe3, 3,
            0x1f, 0xaa, 0x80, 0, 0x1f, 0xd6
        ]
    );
    assert_eq!(
        u64::from_le_bytes(t[24..32].try_into().unwrap()),
        0x4000_0000
    );
    assert_eq!(
        u64::from_le_bytes(t[32..40].try_into().unwrap()),
        0x4a00_0000
    );
}

#[test]
fn dtb_gets_new_chosen_and_loses_the_old_boot() {
    let seeds = Seeds {
        kaslr: Some(0x1122_3344_5566_7788),
        rng: Some(vec![7; 64]),
    };
    let out = rewrite_dtb(
        &qemu_like_dtb(),
        "console=ttyAMA0 phase.mode=local",
        0x5000_0000..0x5123_4567,
        &seeds,
    )
    .unwrap();
    assert_eq!(
        chosen_prop(&out, "bootargs").unwrap(),
        b"console=ttyAMA0 phase.mode=local\0"
    );
    assert_eq!(
        chosen_prop(&out, "linux,initrd-start").unwrap(),
        0x5000_0000u64.to_be_bytes()
    );
    assert_eq!(
        chosen_prop(&out, "linux,initrd-end").unwrap(),
        0x5123_4567u64.to_be_bytes()
    );
    assert_eq!(
        chosen_prop(&out, "kaslr-seed").unwrap(),
        0x1122_3344_5566_7788u64.to_be_bytes()
    );
    assert_eq!(chosen_prop(&out, "rng-seed").unwrap(), vec![7; 64]);
    // The EFI system table stays; the old initrd's reservation goes.
    assert!(chosen_prop(&out, "linux,uefi-system-table").is_some());
    let fdt = Fdt::new(&out).unwrap();
    assert_eq!(fdt.memory_reservations().count(), 0);
    assert!(DeviceTree::from_fdt(&fdt)
        .find_node("/memory@40000000")
        .is_some());
    // Without seeds, none are carried over from the old boot.
    let bare = rewrite_dtb(&qemu_like_dtb(), "x", 0..0, &Seeds::default()).unwrap();
    assert!(chosen_prop(&bare, "kaslr-seed").is_none());
    assert!(chosen_prop(&bare, "rng-seed").is_none());
}

#[test]
fn dtb_without_chosen_gets_one_and_garbage_is_refused() {
    let t = DeviceTree::new().to_dtb();
    let out = rewrite_dtb(&t, "a b", 1..2, &Seeds::default()).unwrap();
    assert_eq!(chosen_prop(&out, "bootargs").unwrap(), b"a b\0");
    for bad in [&b""[..], b"\xd0\x0d\xfe\xed", &t[..t.len() - 4]] {
        assert!(matches!(
            rewrite_dtb(bad, "x", 0..0, &Seeds::default()),
            Err(Arm64Error::Dtb(_))
        ));
    }
}

fn inputs() -> Inputs {
    Inputs {
        fdt: qemu_like_dtb(),
        iomem: IOMEM.into(),
        page_size: PAGE,
        seeds: Seeds {
            kaslr: Some(42),
            rng: None,
        },
    }
}

#[test]
fn load_hands_the_verified_bytes_to_kexec_load() {
    let img = image(0, 0x80_0000, 2, 5000);
    let initrd = vec![0xabu8; 10_000];
    let f = Recording::new();
    let l = load(&f, &img, &initrd, "console=ttyAMA0", &inputs()).unwrap();
    let calls = f.calls();
    assert_eq!(calls.len(), 1);
    assert!(
        calls[0].starts_with(&format!(
            "kexec_load entry={:#x} flags=0xb70000 {:#x}+{}/{} {:#x}+10000/12288",
            l.trampoline,
            l.kernel,
            img.len(),
            0x80_0000,
            l.initrd
        )),
        "{}",
        calls[0]
    );
    let segs = f.kexec_segments();
    assert_eq!(segs[0], (l.kernel, img.clone()));
    assert_eq!(segs[1], (l.initrd, initrd.clone()));
    assert_eq!(
        segs[3],
        (l.trampoline, trampoline(l.kernel, l.dtb).to_vec())
    );
    let dtb = &segs[2].1;
    assert_eq!(
        chosen_prop(dtb, "linux,initrd-end").unwrap(),
        (l.initrd + 10_000).to_be_bytes()
    );
}

#[test]
fn tampered_kernel_is_never_loaded_by_either_path() {
    // The arm64 path loads exactly the bytes of the descriptor the fetch verified; a kernel
    // whose header was altered is refused before kexec_load, and a refused kexec_load is
    // reported, never followed by a reboot.
    let mut img = image(0, 0x80_0000, 2, 100);
    img[0x39] ^= 1;
    let f = Recording::new();
    assert!(matches!(
        load(&f, &img, b"i", "x", &inputs()),
        Err(Arm64Error::Image(_))
    ));
    assert!(f.calls().is_empty(), "{:?}", f.calls());
    let f = Recording::new();
    f.fail_on("kexec_load", libc::EPERM);
    let e = load(&f, &image(0, 0x80_0000, 2, 100), b"i", "x", &inputs()).unwrap_err();
    assert!(matches!(e, Arm64Error::Sys(_)), "{e}");
}
