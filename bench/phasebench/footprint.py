"""Issue 10 footprint: compressed initramfs vs the seed-003 baseline (bench/baseline), and
binary sizes. RSS figures come from the provider and client sections."""

import os

from .common import REPO, MiB


def _size(path):
    return os.path.getsize(path) if os.path.exists(path) else None


def run_section(s, res):
    """Adds the footprint rows."""
    sec = "footprint"
    ours = next((p for p in (os.path.join(REPO, "build/initramfs.cpio.zst"), os.path.join(REPO, "build/initramfs.cpio.gz"))
                 if os.path.exists(p)), None)
    base = os.path.join(REPO, "build/bench/baseline/initramfs.cpio.zst")
    if ours and os.path.exists(base):
        a, b = _size(ours), _size(base)
        res.add(sec, "compressed initramfs (zstd -19)", a / MiB, "MiB", "seed-003 shell baseline", b / MiB, a / b,
                "< 4.0 MiB (issue 18 §2)", a < 4.0 * MiB)
    else:
        missing = [p for p in (ours or "build/initramfs.cpio.zst", base) if not os.path.exists(p)]
        res.skip(sec, "compressed initramfs (zstd -19)", f"missing {', '.join(missing)} (make initramfs bench-baseline)")
    for name in ("phase-init", "plasmd"):
        n = _size(s.bin(name))
        if n is None:
            res.skip(sec, f"{name} binary (static, release)", f"{s.bin(name)} missing (make build)")
        else:
            res.add(sec, f"{name} binary (static, release)", n / MiB, "MiB", target="reported")
