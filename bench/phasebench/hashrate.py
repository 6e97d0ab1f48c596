"""Issue 10 "hash floor": the in-process SHA-256 rate of our code (`phase verify --artifacts`
over the page-cached release on tmpfs: the same sha2 crate and loop `phase fetch` uses) vs
`openssl speed -evp sha256` and sha256sum, with SHA-NI detection logged."""

import re

from .common import div, have, median, timed


def sha_ni():
    """Whether /proc/cpuinfo lists the sha_ni flag."""
    try:
        with open("/proc/cpuinfo") as f:
            return any("sha_ni" in line.split() for line in f if line.startswith("flags"))
    except OSError:
        return False


def openssl_rate(s):
    """openssl speed -evp sha256 at 16 KiB blocks, in bytes/s (median over runs)."""
    vals = []
    for _ in range(s.runs):
        secs = "1" if s.smoke else "3"
        _, _, _, rc, out, err = timed(s.pin("client") + ["openssl", "speed", "-seconds", secs, "-bytes", "16384",
                                                         "-evp", "sha256"], timeout=120)
        m = re.search(r"^sha256\s+([0-9.]+)k", out, re.M)
        if rc != 0 or not m:
            raise RuntimeError(f"openssl speed: exit {rc}: {out} {err}")
        vals.append(float(m.group(1)) * 1000)
    return median(vals)


def run_section(s, rel, res):
    """Adds the hash rows; stores sha2_Bps for the client's 90% target."""
    sec = "hash"
    ni = sha_ni()
    res.facts["sha_ni"] = ni
    res.notes.append(f"SHA-NI {'present' if ni else 'absent'} (grep sha_ni /proc/cpuinfo)")
    total = rel.size + 8192
    rates = []
    for i in range(s.warmup + s.runs):
        wall, _, _, rc, out, err = timed(s.pin("client") + [s.bin("phase"), "verify", "--trust", rel.trust,
                                                             rel.manifest, "--artifacts", rel.dir])
        if rc != 0:
            raise RuntimeError(f"phase verify --artifacts: exit {rc}: {err.strip()[-400:]}")
        if i >= s.warmup:
            rates.append(total / wall)
    ours = median(rates)
    res.facts["sha2_Bps"] = ours
    if have("openssl"):
        peer = openssl_rate(s)
        res.add(sec, f"SHA-256 in-process (phase verify, SHA-NI {'yes' if ni else 'no'})", ours / 1e9, "GB/s",
                "openssl speed -evp sha256", peer / 1e9, div(ours, peer), "reported (floor for fetch)")
    rates = []
    for i in range(s.warmup + s.runs):
        wall, _, _, rc, _, err = timed(s.pin("client") + ["sha256sum", f"{rel.dir}/rootfs"])
        if rc != 0:
            raise RuntimeError(f"sha256sum: {err}")
        if i >= s.warmup:
            rates.append(rel.size / wall)
    peer = median(rates)
    res.add(sec, "SHA-256 of the rootfs file", ours / 1e9, "GB/s", "sha256sum", peer / 1e9, div(ours, peer), "reported")
