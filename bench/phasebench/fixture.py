"""The benchmark release: a flat release dir with a small kernel and initramfs and a big
rootfs (BENCH_SIZE bytes of random data), a manifest signed with a fresh key, and its trust
file. Served by plasmd directly and by nginx through a {channel}/{arch} symlink tree.

The manifest is v1 (whole-file hashes), so the fetch figures of issue 18 are measured as they
always were; `dir_v2` holds the same files (hard links) with a v2 manifest (chunk digests,
issue 19) for the client section's v2 row."""

import os

from .common import log, run


class Release:
    """Paths of the generated release (all under settings.work)."""

    def __init__(self, s):
        self.dir = os.path.join(s.work, "release")
        self.tree = os.path.join(s.work, "tree")  # tree/stable/x86_64 -> release (for nginx)
        self.key = os.path.join(s.work, "bench.key")
        self.trust = os.path.join(s.work, "trust.toml")
        self.manifest = os.path.join(self.dir, "manifest.json")
        self.size = s.size
        os.makedirs(self.dir, exist_ok=True)
        log(f"fixture: {s.size} byte rootfs in {self.dir}")
        with open("/dev/urandom", "rb") as src:
            for name, n in (("kernel", 4096), ("initramfs", 4096), ("rootfs", s.size)):
                with open(os.path.join(self.dir, name), "wb") as out:
                    left = n
                    while left:
                        chunk = src.read(min(left, 8 << 20))
                        out.write(chunk)
                        left -= len(chunk)
        plasmd = s.bin("plasmd")
        run([plasmd, "keygen", "--out", self.key, "--force"])
        with open(self.key + ".pub") as f:
            pub = "".join(f.read().split())
        with open(self.trust, "w") as f:
            f.write(f'threshold = 1\nkeys = ["{pub}"]\n')
        unsigned = os.path.join(s.work, "manifest.unsigned.json")
        run([plasmd, "manifest", "build", "--artifacts", self.dir, "--channel", "stable", "--arch", "x86_64",
             "--version", "1.0.0", "--expires-in", "1d", "--manifest-version", "1", "--out", unsigned])
        run([plasmd, "manifest", "sign", "--key", self.key, "--in", unsigned, "--out", self.manifest])
        self.dir_v2 = os.path.join(s.work, "release-v2")
        os.makedirs(self.dir_v2, exist_ok=True)
        for name in ("kernel", "initramfs", "rootfs"):
            dst = os.path.join(self.dir_v2, name)
            if os.path.exists(dst):
                os.unlink(dst)
            os.link(os.path.join(self.dir, name), dst)
        run([plasmd, "manifest", "build", "--artifacts", self.dir_v2, "--channel", "stable", "--arch", "x86_64",
             "--version", "1.0.0", "--expires-in", "1d", "--manifest-version", "2", "--out", unsigned])
        run([plasmd, "manifest", "sign", "--key", self.key, "--in", unsigned, "--out",
             os.path.join(self.dir_v2, "manifest.json")])
        os.makedirs(os.path.join(self.tree, "stable"), exist_ok=True)
        link = os.path.join(self.tree, "stable", "x86_64")
        if not os.path.islink(link):
            os.symlink(self.dir, link)
