//! arm64 `kexec_load(2)` (issue 17 §2), for kernels built without `CONFIG_KEXEC_FILE` (Debian's
//! arm64 kernels have only `CONFIG_KEXEC`, so `kexec_file_load` fails there with `ENOSYS`).
//!
//! The kernel's `kexec_load` copies segments to physical addresses the caller chose and jumps to
//! `entry` with the MMU off; unlike `kexec_file_load` it passes no device tree (x0 = 0). So this
//! module builds, as kexec-tools and u-root's `pkg/boot/linux` do:
//! - the Image at a 2 MiB-aligned base plus its `text_offset`, with `image_size` bytes of room
//!   (Linux `Documentation/arch/arm64/booting.rst`, "Call the kernel image");
//! - the initrd, page-aligned after it, within the 32 GiB window booting.rst allows;
//! - a DTB: the running kernel's `/sys/firmware/fdt` with `/chosen` rewritten (`bootargs`,
//!   `linux,initrd-start`/`-end`, fresh `kaslr-seed`/`rng-seed`; the crash-kernel and IMA
//!   properties of the old boot removed), as the kernel's own `of_kexec_alloc_and_setup_fdt`
//!   does for `kexec_file_load`;
//! - a 40-byte trampoline that sets x0 = the DTB address, x1-x3 = 0, and branches to the Image.
//!
//! Placement is first fit, lowest address, inside the usable "System RAM" of `/proc/iomem`
//! minus every region nested in it except the running kernel's code and data (which the kexec
//! copy may overwrite: it runs last, from pages the kernel set aside).
//!
//! Everything here but [`Inputs::read_live`] is pure, so the layout is unit-tested against the
//! syscall fake on any host, and the parsers of `/proc/iomem`, the Image header and the DTB are
//! fuzzed (`fuzz/fuzz_targets/arm64_kexec.rs`).

use std::ops::Range;

use dtoolkit::fdt::Fdt;
use dtoolkit::model::{DeviceTree, DeviceTreeNode, DeviceTreeProperty};
use dtoolkit::{Node, Property};

use crate::sys::{KexecSegment, SysError, Syscalls};

/// `"ARM\x64"`, little-endian, at byte 0x38 of an arm64 Image.
pub const IMAGE_MAGIC: u32 = 0x644d_5241;
/// `KEXEC_ARCH_AARCH64` (`EM_AARCH64` = 183, shifted into the high half of the flags).
pub const KEXEC_ARCH_AARCH64: u64 = 183 << 16;
/// The Image's base alignment (booting.rst): 2 MiB.
pub const IMAGE_ALIGN: u64 = 2 << 20;
/// The largest DTB the kernel maps at boot (booting.rst): 2 MiB.
pub const MAX_DTB: u64 = 2 << 20;
/// The initrd and the Image must lie in one 1 GiB-aligned window of this many bytes (32 GiB).
pub const INITRD_WINDOW: u64 = 32 << 30;
/// Size of [`trampoline`]'s code and data, in bytes.
pub const TRAMPOLINE_LEN: usize = 40;

/// `/chosen` properties of the running boot that must not reach the next kernel.
const STALE_CHOSEN: [&str; 7] = [
    "linux,elfcorehdr",
    "linux,usable-memory-range",
    "linux,initrd-start",
    "linux,initrd-end",
    "linux,ima-kexec-buffer",
    "kaslr-seed",
    "rng-seed",
];

/// Errors of the arm64 `kexec_load` path. Nothing is loaded when one is returned.
#[derive(Debug, thiserror::Error)]
pub enum Arm64Error {
    /// The kernel is not an arm64 Image this path can place (bad magic, big-endian, a page
    /// size other than the running kernel's, `image_size` 0 as before Linux 3.17, ...).
    #[error("kernel is not a loadable arm64 Image: {0}")]
    Image(String),
    /// `/sys/firmware/fdt` is not a valid flattened device tree.
    #[error("device tree from /sys/firmware/fdt: {0}")]
    Dtb(String),
    /// The rewritten DTB is larger than [`MAX_DTB`] (bytes).
    #[error("rewritten device tree is {0} bytes, more than the 2 MiB the kernel maps")]
    DtbTooLarge(u64),
    /// No usable RAM range in `/proc/iomem` holds a segment.
    #[error("no room in System RAM for the {what} ({size} bytes)")]
    NoRoom {
        /// Which segment: kernel, initrd, dtb or trampoline.
        what: &'static str,
        /// Its size in bytes.
        size: u64,
    },
    /// The initrd would end outside the 32 GiB window that starts at the Image's 1 GiB-aligned
    /// base (booting.rst).
    #[error("initrd at {initrd:#x} is outside the 32 GiB window of the kernel at {kernel:#x}")]
    InitrdWindow {
        /// Physical address of the Image.
        kernel: u64,
        /// Physical end of the initrd.
        initrd: u64,
    },
    /// Reading `/sys/firmware/fdt` or `/proc/iomem` failed.
    #[error("reading {path}")]
    Read {
        /// The file.
        path: &'static str,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// `kexec_load` itself failed (`EPERM` under lockdown or `kernel.kexec_load_disabled`,
    /// `EBUSY` when secondary CPUs cannot be stopped, `EINVAL`/`EADDRNOTAVAIL` on a bad layout).
    #[error("kexec_load")]
    Sys(#[source] SysError),
}

/// The fields of the 64-byte arm64 Image header this path uses (booting.rst, all little-endian).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageHeader {
    /// Offset of the Image from its 2 MiB-aligned base, in bytes (0 since Linux 5.8).
    pub text_offset: u64,
    /// Memory the Image needs from its start, BSS included, in bytes.
    pub image_size: u64,
    /// Header flags: bit 0 big-endian, bits 1-2 page size (1 = 4K, 2 = 16K, 3 = 64K).
    pub flags: u64,
}

impl ImageHeader {
    /// Parses and checks the header of `image` for a kernel running with `page_size`-byte pages.
    /// Errors: [`Arm64Error::Image`] naming the first failed check.
    pub fn parse(image: &[u8], page_size: u64) -> Result<Self, Arm64Error> {
        let bad = |m: String| Err(Arm64Error::Image(m));
        if image.len() < 64 {
            return bad(format!(
                "{} bytes, shorter than the 64-byte header",
                image.len()
            ));
        }
        if image.starts_with(&[0x1f, 0x8b]) {
            return bad("a gzip stream: kexec::kernel_for_load inflates an Image.gz first".into());
        }
        let u64_at = |o: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&image[o..o + 8]);
            u64::from_le_bytes(b)
        };
        let magic = u32::from_le_bytes([image[0x38], image[0x39], image[0x3a], image[0x3b]]);
        if magic != IMAGE_MAGIC {
            return bad(format!("magic {magic:#010x} at 0x38, not \"ARM\\x64\""));
        }
        let h = ImageHeader {
            text_offset: u64_at(0x08),
            image_size: u64_at(0x10),
            flags: u64_at(0x18),
        };
        if h.image_size == 0 {
            return bad("image_size 0 (a kernel older than Linux 3.17)".into());
        }
        if h.flags & 1 != 0 {
            return bad("a big-endian kernel".into());
        }
        let page = match (h.flags >> 1) & 3 {
            0 => None,
            1 => Some(4096),
            2 => Some(16384),
            _ => Some(65536),
        };
        if let Some(p) = page.filter(|p| *p != page_size) {
            return bad(format!(
                "built for {p}-byte pages, running with {page_size}"
            ));
        }
        if h.text_offset >= IMAGE_ALIGN || h.text_offset % page_size != 0 {
            return bad(format!(
                "text_offset {:#x} is not a page offset below 2 MiB",
                h.text_offset
            ));
        }
        Ok(h)
    }
}

/// Usable RAM from the text of `/proc/iomem` (read as root: other users see zero addresses):
/// every top-level `System RAM` range minus the ranges nested in it, except `Kernel code` and
/// `Kernel data`. Returns half-open `[start, end)` ranges in bytes, sorted. Lines that do not
/// parse are skipped (the kernel's format is `start-end : name`, hex, two spaces per level).
pub fn usable_ram(iomem: &str) -> Vec<Range<u64>> {
    let mut ram: Vec<Range<u64>> = Vec::new();
    let mut holes: Vec<Range<u64>> = Vec::new();
    for line in iomem.lines() {
        let depth = line.len() - line.trim_start_matches(' ').len();
        let Some((span, name)) = line.trim().split_once(" : ") else {
            continue;
        };
        let Some((a, b)) = span.split_once('-') else {
            continue;
        };
        let (Ok(a), Ok(b)) = (u64::from_str_radix(a, 16), u64::from_str_radix(b, 16)) else {
            continue;
        };
        if b < a {
            continue;
        }
        let r = a..b.saturating_add(1);
        if depth == 0 {
            if name == "System RAM" {
                ram.push(r);
            }
        } else if name != "Kernel code" && name != "Kernel data" {
            holes.push(r);
        }
    }
    for h in holes {
        ram = ram
            .into_iter()
            .flat_map(|r| {
                if h.end <= r.start || h.start >= r.end {
                    vec![r]
                } else {
                    let mut out = Vec::new();
                    if r.start < h.start {
                        out.push(r.start..h.start);
                    }
                    if h.end < r.end {
                        out.push(h.end..r.end);
                    }
                    out
                }
            })
            .collect();
    }
    ram.sort_by_key(|r| r.start);
    ram
}

fn align_up(x: u64, a: u64) -> Option<u64> {
    x.checked_add(a - 1).map(|v| v / a * a)
}

/// `n` bytes (at least 1) rounded up to whole `page`s: a segment's `memsz`. Saturates at
/// `u64::MAX`, which no RAM range holds, so an absurd size fails placement, not arithmetic.
fn page_round(n: u64, page: u64) -> u64 {
    align_up(n.max(1), page).unwrap_or(u64::MAX)
}

/// The lowest `align`-aligned address at or above `from` where `size` bytes fit in `ram`.
fn place(ram: &[Range<u64>], from: u64, size: u64, align: u64) -> Option<u64> {
    ram.iter().find_map(|r| {
        let start = align_up(r.start.max(from), align)?;
        (start.checked_add(size)? <= r.end).then_some(start)
    })
}

/// Physical addresses of the four segments, in bytes. `kernel` is the Image's load address
/// (base + `text_offset`), which is also where the trampoline branches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// Load address of the Image.
    pub kernel: u64,
    /// Bytes reserved for the Image (`image_size` or its file length, page-rounded).
    pub kernel_memsz: u64,
    /// Address of the initrd.
    pub initrd: u64,
    /// Address of the DTB.
    pub dtb: u64,
    /// Address of the trampoline, the `entry` of `kexec_load`.
    pub trampoline: u64,
}

/// Places the Image (`image_len` bytes), the initrd and the DTB (sizes in bytes) in `ram`, first
/// fit from the lowest address, every segment page-aligned and none overlapping. Errors:
/// [`Arm64Error::NoRoom`], [`Arm64Error::DtbTooLarge`], [`Arm64Error::InitrdWindow`].
pub fn plan(
    ram: &[Range<u64>],
    h: &ImageHeader,
    image_len: u64,
    initrd_len: u64,
    dtb_len: u64,
    page_size: u64,
) -> Result<Layout, Arm64Error> {
    if dtb_len > MAX_DTB {
        return Err(Arm64Error::DtbTooLarge(dtb_len));
    }
    let round = |n: u64| page_round(n, page_size);
    let kernel_memsz = round(h.image_size.max(image_len));
    let need = h.text_offset.saturating_add(kernel_memsz);
    let base = place(ram, 0, need, IMAGE_ALIGN).ok_or(Arm64Error::NoRoom {
        what: "kernel",
        size: need,
    })?;
    let kernel = base + h.text_offset;
    let kernel_end = kernel + kernel_memsz;
    let initrd =
        place(ram, kernel_end, round(initrd_len), page_size).ok_or(Arm64Error::NoRoom {
            what: "initrd",
            size: initrd_len,
        })?;
    let initrd_end = initrd + round(initrd_len);
    let window = base / (1 << 30) * (1 << 30);
    if initrd_end - window > INITRD_WINDOW {
        return Err(Arm64Error::InitrdWindow {
            kernel,
            initrd: initrd_end,
        });
    }
    let dtb = place(ram, initrd_end, round(dtb_len), page_size).ok_or(Arm64Error::NoRoom {
        what: "dtb",
        size: dtb_len,
    })?;
    let trampoline =
        place(ram, dtb + round(dtb_len), page_size, page_size).ok_or(Arm64Error::NoRoom {
            what: "trampoline",
            size: page_size,
        })?;
    Ok(Layout {
        kernel,
        kernel_memsz,
        initrd,
        dtb,
        trampoline,
    })
}

/// The trampoline `kexec_load` enters with the MMU off: `ldr x4, =kernel; ldr x0, =dtb;
/// mov x1, xzr; mov x2, xzr; mov x3, xzr; br x4`, then the two addresses as 8-byte-aligned
/// little-endian literals (booting.rst: x0 = DTB, x1-x3 = 0 at the Image's entry). The
/// instruction encoding is the one kexec-tools' purgatory and u-root use.
pub fn trampoline(kernel: u64, dtb: u64) -> [u8; TRAMPOLINE_LEN] {
    const CODE: [u32; 6] = [
        0x5800_00c4, // ldr x4, pc+0x18
        0x5800_00e0, // ldr x0, pc+0x1c (= +0x20 from the start)
        0xaa1f_03e1, // mov x1, xzr
        0xaa1f_03e2, // mov x2, xzr
        0xaa1f_03e3, // mov x3, xzr
        0xd61f_0080, // br x4
    ];
    let mut t = [0u8; TRAMPOLINE_LEN];
    for (i, w) in CODE.iter().enumerate() {
        t[i * 4..i * 4 + 4].copy_from_slice(&w.to_le_bytes());
    }
    t[24..32].copy_from_slice(&kernel.to_le_bytes());
    t[32..40].copy_from_slice(&dtb.to_le_bytes());
    t
}

/// Random seeds for the next kernel's `/chosen`: `kaslr-seed` (8 bytes) and `rng-seed`
/// (the bytes given). `None` leaves the property out (the kernel then uses RNDR or no KASLR).
#[derive(Debug, Clone, Default)]
pub struct Seeds {
    /// `/chosen/kaslr-seed`.
    pub kaslr: Option<u64>,
    /// `/chosen/rng-seed`.
    pub rng: Option<Vec<u8>>,
}

/// The next kernel's DTB: `fdt` (the running kernel's `/sys/firmware/fdt`) with `/chosen`
/// (created if missing) holding `bootargs` = `cmdline`, `linux,initrd-start`/`-end` = `initrd`
/// (8-byte big-endian cells), and `seeds`; the stale properties of this boot removed, and the
/// memory reservation of the old initrd dropped. The `linux,uefi-*` properties stay: an
/// EFI-booted kernel finds the firmware's memory map through them. Errors: [`Arm64Error::Dtb`].
pub fn rewrite_dtb(
    fdt: &[u8],
    cmdline: &str,
    initrd: Range<u64>,
    seeds: &Seeds,
) -> Result<Vec<u8>, Arm64Error> {
    let parsed = Fdt::new(fdt).map_err(|e| Arm64Error::Dtb(e.to_string()))?;
    let mut tree = DeviceTree::from_fdt(&parsed);
    let old_initrd = tree.find_node("/chosen").and_then(|c| {
        let cell = |name: &str| {
            c.properties()
                .find(|p| p.name() == name)
                .and_then(|p| be_cell(p.value()))
        };
        Some((cell("linux,initrd-start")?, cell("linux,initrd-end")?))
    });
    if let Some((start, end)) = old_initrd {
        tree.memory_reservations
            .retain(|r| !(r.address() == start && r.size() == end.saturating_sub(start)));
    }
    if tree.find_node("/chosen").is_none() {
        tree.root.add_child(DeviceTreeNode::new_unchecked("chosen"));
    }
    let chosen = tree
        .find_node_mut("/chosen")
        .ok_or_else(|| Arm64Error::Dtb("no /chosen node after adding it".into()))?;
    for name in STALE_CHOSEN {
        chosen.remove_property(name);
    }
    chosen.add_property(DeviceTreeProperty::new_unchecked("bootargs", cmdline));
    chosen.add_property(DeviceTreeProperty::new_unchecked(
        "linux,initrd-start",
        initrd.start,
    ));
    chosen.add_property(DeviceTreeProperty::new_unchecked(
        "linux,initrd-end",
        initrd.end,
    ));
    if let Some(k) = seeds.kaslr {
        chosen.add_property(DeviceTreeProperty::new_unchecked("kaslr-seed", k));
    }
    if let Some(r) = &seeds.rng {
        chosen.add_property(DeviceTreeProperty::new_unchecked("rng-seed", r.as_slice()));
    }
    Ok(tree.to_dtb())
}

/// A property value of one or two big-endian 32-bit cells (`linux,initrd-start` may be either).
fn be_cell(v: &[u8]) -> Option<u64> {
    match v.len() {
        4 => Some(u64::from(u32::from_be_bytes(v.try_into().ok()?))),
        8 => Some(u64::from_be_bytes(v.try_into().ok()?)),
        _ => None,
    }
}

/// What the arm64 path reads from the running system.
#[derive(Debug, Clone)]
pub struct Inputs {
    /// `/sys/firmware/fdt`: the DTB the running kernel booted with.
    pub fdt: Vec<u8>,
    /// The text of `/proc/iomem`.
    pub iomem: String,
    /// The running kernel's page size in bytes (`sysconf(_SC_PAGESIZE)`).
    pub page_size: u64,
    /// Fresh seeds for the next kernel.
    pub seeds: Seeds,
}

impl Inputs {
    /// Reads `/sys/firmware/fdt`, `/proc/iomem`, the page size and 8 + 64 random bytes
    /// (`getrandom`; seeds are left out if the pool cannot give them). Errors:
    /// [`Arm64Error::Read`].
    pub fn read_live() -> Result<Self, Arm64Error> {
        let read = |path: &'static str| {
            std::fs::read(path).map_err(|source| Arm64Error::Read { path, source })
        };
        let fdt = read("/sys/firmware/fdt")?;
        let iomem = String::from_utf8_lossy(&read("/proc/iomem")?).into_owned();
        let page_size = rustix::param::page_size() as u64;
        let mut rnd = [0u8; 72];
        let seeds = match rustix::rand::getrandom(&mut rnd, rustix::rand::GetRandomFlags::NONBLOCK)
        {
            Ok(72) => Seeds {
                kaslr: Some(u64::from_le_bytes(rnd[..8].try_into().unwrap_or_default())),
                rng: Some(rnd[8..].to_vec()),
            },
            _ => Seeds::default(),
        };
        Ok(Inputs {
            fdt,
            iomem,
            page_size,
            seeds,
        })
    }
}

/// Builds the four segments and calls `kexec_load(trampoline, segments, KEXEC_ARCH_AARCH64)`.
/// `image` is the verified kernel Image, `initrd` the composed initrd. Returns the layout used.
/// Errors: every [`Arm64Error`]; nothing is loaded unless `Ok`.
pub fn load(
    sys: &dyn Syscalls,
    image: &[u8],
    initrd: &[u8],
    cmdline: &str,
    inputs: &Inputs,
) -> Result<Layout, Arm64Error> {
    let page = inputs.page_size;
    let h = ImageHeader::parse(image, page)?;
    let ram = usable_ram(&inputs.iomem);
    // The DTB's size does not depend on the initrd addresses (fixed 8-byte cells), so a first
    // pass with placeholders sizes it for the plan.
    let sized = rewrite_dtb(&inputs.fdt, cmdline, 0..0, &inputs.seeds)?;
    let layout = plan(
        &ram,
        &h,
        image.len() as u64,
        initrd.len() as u64,
        sized.len() as u64,
        page,
    )?;
    let initrd_range = layout.initrd..layout.initrd + initrd.len() as u64;
    let dtb = rewrite_dtb(&inputs.fdt, cmdline, initrd_range, &inputs.seeds)?;
    if dtb.len() != sized.len() {
        return Err(Arm64Error::Dtb(format!(
            "rewritten DTB changed size ({} then {} bytes)",
            sized.len(),
            dtb.len()
        )));
    }
    let tramp = trampoline(layout.kernel, layout.dtb);
    let round = |n: usize| page_round(n as u64, page);
    let segments = [
        KexecSegment {
            buf: image,
            mem: layout.kernel,
            memsz: layout.kernel_memsz,
        },
        KexecSegment {
            buf: initrd,
            mem: layout.initrd,
            memsz: round(initrd.len()),
        },
        KexecSegment {
            buf: &dtb,
            mem: layout.dtb,
            memsz: round(dtb.len()),
        },
        KexecSegment {
            buf: &tramp,
            mem: layout.trampoline,
            memsz: page,
        },
    ];
    sys.kexec_load(layout.trampoline, &segments, KEXEC_ARCH_AARCH64)
        .map_err(Arm64Error::Sys)?;
    Ok(layout)
}

#[cfg(test)]
mod tests;
