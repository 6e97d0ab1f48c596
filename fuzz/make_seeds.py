#!/usr/bin/env python3
"""Writes the seed corpus of the fuzz targets: fuzz/seeds/<target>/<name>.

Run from the repository root: python3 fuzz/make_seeds.py. Each target's input layout is in the
doc comment of fuzz/fuzz_targets/<target>.rs; the binary headers (state, clock, flags) are
packed here in the same big-endian order. Seeds are valid inputs plus the edge cases the
parsers must refuse; a crash found by fuzzing is added by hand next to them (crash-<what>).
"""

import ipaddress
import json
import os
import struct
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SEEDS = os.path.join(ROOT, "fuzz", "seeds")


def write(target, name, data):
    d = os.path.join(SEEDS, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def ts(iso):
    """Seconds since the epoch of a UTC date YYYY-MM-DD."""
    import datetime

    d = datetime.datetime.fromisoformat(iso).replace(tzinfo=datetime.timezone.utc)
    return int(d.timestamp())


def clock(secs, nanos=0):
    return struct.pack(">qI", secs, nanos)


# ---- dhcp_client -----------------------------------------------------------------------------
MAC = bytes.fromhex("525400123456")
SERVER = "192.0.2.1"


def ip(a):
    return ipaddress.IPv4Address(a).packed


def dhcp(kind, yiaddr="192.0.2.101", hlen=6, xid=0, opts=None, ciaddr="0.0.0.0"):
    """A BOOTREPLY as dnsmasq sends it (option order included)."""
    head = struct.pack(">BBBBIHH", 2, 1, hlen, 0, xid, 0, 0x8000)
    head += ip(ciaddr) + ip(yiaddr) + ip(SERVER) + ip("0.0.0.0")
    head += MAC.ljust(16, b"\0") + b"\0" * 64 + b"\0" * 128
    if opts is None:
        opts = [
            (53, bytes([kind])),
            (54, ip(SERVER)),
            (51, struct.pack(">I", 3600)),
            (58, struct.pack(">I", 1800)),
            (59, struct.pack(">I", 3150)),
            (1, ip("255.255.255.0")),
            (28, ip("192.0.2.255")),
            (3, ip(SERVER)),
            (6, ip(SERVER)),
            (15, b"lan"),
            (12, b"phase-vm"),
            (42, ip(SERVER)),
        ]
    body = b"".join(bytes([c, len(v)]) + v for c, v in opts)
    return head + b"\x63\x82\x53\x63" + body + b"\xff"


def rec(packet, ctrl=3, advance=0):
    return struct.pack(">BHH", ctrl, advance, len(packet)) + packet


def dhcp_input(state, records, lease=(3600, 1800, 3150)):
    return struct.pack(">BIII", state, *lease) + b"".join(records)


OFFER, ACK, NAK = 2, 5, 6
write("dhcp_client", "selecting-dnsmasq-offer-then-ack",
      dhcp_input(0, [rec(dhcp(OFFER)), rec(dhcp(ACK))]))
write("dhcp_client", "requesting-ack", dhcp_input(1, [rec(dhcp(ACK))]))
write("dhcp_client", "requesting-nak-with-message",
      dhcp_input(1, [rec(dhcp(NAK, yiaddr="0.0.0.0",
                              opts=[(53, b"\x06"), (54, ip(SERVER)), (56, b"wrong network")]))]))
write("dhcp_client", "requesting-timeouts-then-ack",
      dhcp_input(1, [rec(b"", ctrl=4, advance=2)] * 5 + [rec(dhcp(ACK))]))
write("dhcp_client", "renewing-ack", dhcp_input(2, [rec(dhcp(ACK, ciaddr="192.0.2.101"))]))
write("dhcp_client", "renewing-ack-from-other-server",
      dhcp_input(2, [rec(dhcp(ACK, opts=[(53, b"\x05"), (54, ip("192.0.2.9"))]))]))
write("dhcp_client", "rebinding-nak", dhcp_input(3, [rec(dhcp(NAK, opts=[(53, b"\x06"), (54, ip(SERVER))]))]))
write("dhcp_client", "rebinding-expires", dhcp_input(3, [rec(b"", ctrl=4, advance=0xFFFF)] * 3, lease=(120, 0, 0)))
write("dhcp_client", "infinite-lease", dhcp_input(2, [rec(dhcp(ACK))], lease=(0xFFFFFFFF, 0, 0xFFFFFFFF)))
# The issue 15 packet: our xid, hlen 17 (dhcproto's chaddr() sliced past its 16 bytes).
write("dhcp_client", "crash-hlen-17", dhcp_input(0, [rec(dhcp(OFFER, hlen=17), ctrl=1)]))
write("dhcp_client", "offer-bad-mask-and-router",
      dhcp_input(0, [rec(dhcp(OFFER, opts=[(53, b"\x02"), (54, ip(SERVER)), (1, ip("255.0.255.0")),
                                           (3, ip("10.0.0.1"))]))]))
write("dhcp_client", "offer-broadcast-address", dhcp_input(0, [rec(dhcp(OFFER, yiaddr="192.0.2.255"))]))
write("dhcp_client", "bootrequest-loopback", dhcp_input(0, [rec(b"\x01" + dhcp(OFFER)[1:])]))

# ---- dht_record ------------------------------------------------------------------------------
RECORD = {
    "channel": "stable",
    "arch": "x86_64",
    "manifest_url": "http://192.0.2.1:8080/stable/x86_64/manifest.json",
    "peer_id": "12D3KooWGzBvSLvqmrVXFAqcnAsEaB8WjFq2KQ3hgwFbAVUeUGYr",
    "provider_name": "lab-1",
    "version": "1.2.3",
    "created_at": "2026-11-21T12:00:00Z",
    "ttl_secs": 3600,
}
NOW = ts("2026-11-21T12:30:00")


def record_input(now, flags=0, **changes):
    r = dict(RECORD, **changes)
    return clock(now) + bytes([flags]) + json.dumps(r, separators=(",", ":")).encode()


write("dht_record", "valid", record_input(NOW))
write("dht_record", "valid-untrusted-clock", record_input(NOW, flags=1))
write("dht_record", "expired", record_input(NOW + 7200))
write("dht_record", "amd64-alias-no-name", record_input(NOW, arch="amd64", provider_name=None))
write("dht_record", "crash-year-262142", record_input(NOW, created_at="+262142-12-31T23:59:59Z"))
write("dht_record", "year-minus-262143", record_input(NOW, created_at="-262143-01-01T00:00:00Z"))
write("dht_record", "clock-at-max", record_input(2**63 - 1))
write("dht_record", "clock-at-min", record_input(-(2**63)))
write("dht_record", "ttl-u64-max", record_input(NOW, ttl_secs=2**64 - 1))
write("dht_record", "file-url", record_input(NOW, manifest_url="file:///etc/passwd"))

# ---- mdns_txt --------------------------------------------------------------------------------


def txt(*strings):
    return b"".join(bytes([len(s)]) + s for s in strings)


VALID_TXT = [b"arch=x86_64", b"channel=stable",
             b"manifest=http://192.0.2.1:8080/stable/x86_64/manifest.json", b"version=1.2.3"]
write("mdns_txt", "valid", txt(*VALID_TXT))
write("mdns_txt", "valid-extra-keys-and-flag", txt(b"txtvers=1", b"secure", *VALID_TXT))
write("mdns_txt", "missing-version", txt(*VALID_TXT[:3]))
write("mdns_txt", "bad-arch-and-url", txt(b"arch=mips", b"channel=stable", b"manifest=ftp://x", b"version=1"))
write("mdns_txt", "non-utf8-value", txt(b"arch=x86_64", b"channel=\xff\xfe", *VALID_TXT[2:]))
write("mdns_txt", "duplicate-keys", txt(*VALID_TXT, b"arch=aarch64", b"ARCH=riscv64"))
write("mdns_txt", "truncated", txt(*VALID_TXT)[:-5] + b"\x40abc")
write("mdns_txt", "empty-rdata", b"\x00")

# ---- manifest_verify -------------------------------------------------------------------------
with open(os.path.join(ROOT, "docs", "examples", "manifest.json"), "rb") as f:
    SIGNED = f.read()
MNOW = ts("2027-01-01T00:00:00")
write("manifest_verify", "signed-docs-example", clock(MNOW) + b"\x0f" + SIGNED)
write("manifest_verify", "signed-docs-example-clock-below-floor", clock(0) + b"\x18" + SIGNED)
write("manifest_verify", "signed-docs-example-expired", clock(ts("2040-01-01T00:00:00")) + b"\x00" + SIGNED)
write("manifest_verify", "signed-docs-example-clock-at-max", clock(2**63 - 1) + b"\x00" + SIGNED)
doc = json.loads(SIGNED)
tampered = dict(doc, version="9.9.9")
write("manifest_verify", "tampered-version", clock(MNOW) + b"\x0f" + json.dumps(tampered, indent=2).encode())
unsigned = {k: v for k, v in doc.items() if k != "signatures"}
write("manifest_verify", "resign-unsigned", clock(MNOW) + b"\x8f" + json.dumps(unsigned).encode())
far = dict(unsigned, created_at="+262142-01-01T00:00:00Z", expires_at="+262142-12-31T23:59:59Z")
write("manifest_verify", "resign-year-262142", clock(MNOW) + b"\x9f" + json.dumps(far).encode())
mirrors = json.loads(json.dumps(unsigned))
mirrors["artifacts"]["kernel"]["urls"] = ["https://mirror.example/kernel"]
mirrors["artifacts"]["kernel"]["size_bytes"] = 9007199254740991
mirrors["artifacts"]["extra-thing"] = {"filename": "extra", "hash": "sha256:" + "0" * 64, "size_bytes": 0}
write("manifest_verify", "resign-mirrors-and-extra", clock(MNOW) + b"\x80" + json.dumps(mirrors).encode())
# Manifest v2 (issue 19): piece fields, re-signed so the checks behind the signature see them.
v2 = json.loads(json.dumps(unsigned))
v2["manifest_version"] = 2
for a in v2["artifacts"].values():
    a["chunk_size"] = 65536
    a["chunks"] = ["sha256:" + "ab" * 32] * ((a["size_bytes"] + 65535) // 65536)
write("manifest_verify", "resign-v2-chunks", clock(MNOW) + b"\x8f" + json.dumps(v2).encode())
v2_bad = json.loads(json.dumps(v2))
v2_bad["artifacts"]["kernel"]["chunk_size"] = 1000
v2_bad["artifacts"]["rootfs"]["chunks"] = []
write("manifest_verify", "resign-v2-bad-chunk-size-and-count", clock(MNOW) + b"\x80" + json.dumps(v2_bad).encode())
write("manifest_verify", "duplicate-key", clock(MNOW) + b"\x00" + b'{"version":"1.0.0","version":"2.0.0"}')
write("manifest_verify", "deep-nesting", clock(MNOW) + b"\x80" + b"[" * 200 + b"]" * 200)

# ---- chunk_gate ------------------------------------------------------------------------------
# [chunk size - 1][flip][8 slice lengths - 1][data]
GATE_DATA = bytes(range(256)) * 3
write("chunk_gate", "good-64-byte-chunks", bytes([63, 0]) + bytes([6, 63, 64, 0, 200, 1, 9, 30]) + GATE_DATA)
write("chunk_gate", "flip-in-chunk-1", bytes([63, 2 * 100 + 1]) + bytes([15] * 8) + GATE_DATA)
write("chunk_gate", "one-byte-chunks-flip-first", bytes([0, 1]) + bytes([0] * 8) + GATE_DATA[:40])
write("chunk_gate", "empty-data", bytes([255, 3]) + bytes(8))

# ---- chunk_map -------------------------------------------------------------------------------
# [size: u64 BE][chunk size - 1: u16 BE][flip][map]; the hash field is replaced by the fixed one (7s)
# when flip is even.
def chunk_map(size, chunk, flags, flip=0):
    head = b"PHCHNK01" + bytes([7] * 32) + struct.pack("<QQ", size, chunk)
    return struct.pack(">QH", size, chunk - 1) + bytes([flip]) + head + bytes(flags)
write("chunk_map", "three-chunks-one-verified", chunk_map(150, 64, [0, 1, 0]))
write("chunk_map", "empty-artifact", chunk_map(0, 64, []))
write("chunk_map", "flag-2-refused", chunk_map(150, 64, [0, 2, 0]))
write("chunk_map", "foreign-hash", chunk_map(150, 64, [1, 1, 1], flip=1))

# ---- have_map --------------------------------------------------------------------------------
# [chunks: u8][range length: u8][range][map]
def have_map(chunks, rng, mp):
    return bytes([chunks, len(rng)]) + rng + bytes(mp)
write("have_map", "ten-chunks-two-held", have_map(10, b"bytes=0-15", [0x80, 0x40]))
write("have_map", "range-over-a-missing-chunk", have_map(10, b"bytes=0-40", [0xc0, 0x00]))
write("have_map", "spare-bit-refused", have_map(9, b"bytes=0-", [0xff, 0xc0]))
write("have_map", "whole-file", have_map(3, b"", [0xe0]))

# ---- http_range ------------------------------------------------------------------------------
ETAG = b'"a0c936696eb7d5ee3192bf53b9d281cecbb40ca9db520de72cb95817ad92ac72"'


def rng(size, flags, value, if_range=None):
    out = struct.pack(">QB", size, flags) + value
    if if_range is not None:
        out += b"\n" + if_range
    return out


for name, value in [("first-byte", b"bytes=0-0"), ("suffix", b"bytes=-500"), ("resume", b"bytes=10-"),
                    ("huge-start", b"bytes=99999999999999999999999-"), ("multi", b"bytes=0-1,5-6"),
                    ("reversed", b"bytes=5-2"), ("huge-end", b"bytes=10-18446744073709551615"),
                    ("spaces", b" bytes= 3 - 7 "), ("suffix-zero", b"bytes=-0")]:
    write("http_range", name, rng(100, 1, value))
write("http_range", "empty-file-suffix", rng(0, 1, b"bytes=-1"))
write("http_range", "size-u64-max-suffix", rng(2**64 - 1, 0, b"bytes=-18446744073709551615"))
write("http_range", "if-range-matching-etag", rng(100, 1, b"bytes=50-", ETAG))
write("http_range", "if-range-stale-etag", rng(100, 1, b"bytes=50-", b'"deadbeef"'))
write("http_range", "if-range-date", rng(100, 1, b"bytes=50-", b"Wed, 21 Oct 2015 07:28:00 GMT"))
write("http_range", "if-range-without-etag", rng(100, 0, b"bytes=50-", ETAG))
# Found by the fuzzer: a suffix over u64::MAX on an empty file (size 0xff01... % 4096) was
# answered 206 bytes 0-0/0 (provider/src/range.rs test suffix_over_u64_max_on_empty_file_...).
write("http_range", "crash-suffix-over-u64-on-empty-file",
      rng(0xFF01000000000000, 0xFB, b"bytes=-18546744073591032210"))

# ---- state_json ------------------------------------------------------------------------------


def state(first=None, second=None):
    """[flags][len u16][state.json][state.json.bak]; a copy given as None is missing."""
    first_b = (first or "").encode()
    flags = (first is not None) | ((second is not None) << 1)
    return struct.pack(">BH", flags, len(first_b)) + first_b + (second or "").encode()


REAL_STATE = json.dumps({
    "format": 1,
    "time_floor": "2026-11-21T12:00:00Z",
    "releases": {
        "stable/x86_64": {"version": "1.2.3", "created_at": "2026-11-21T12:00:00Z"},
        "testing/aarch64": {"version": "2.0.0-rc.1+build.5", "created_at": "2026-11-20T08:00:00.123456789Z"},
    },
}, indent=2) + "\n"
OLDER_STATE = '{"format":1,"time_floor":"2026-01-01T00:00:00Z","releases":{"stable/x86_64":{"version":"1.2.4","created_at":"2026-01-01T00:00:00Z"}}}'
write("state_json", "real-both-copies", state(REAL_STATE, REAL_STATE))
write("state_json", "two-copies-to-merge", state(REAL_STATE, OLDER_STATE))
write("state_json", "torn-first-copy-backup-good", state("\0" * 64, REAL_STATE))
write("state_json", "truncated-first-copy", state(REAL_STATE[:50], None))
write("state_json", "backup-only", state(None, REAL_STATE))
write("state_json", "empty-object", state("{}"))
write("state_json", "format-2", state('{"format":2}', '{"format":1}'))
write("state_json", "far-future-floor", state(json.dumps({
    "format": 1, "time_floor": "+262142-12-31T23:59:59Z",
    "releases": {"stable/amd64": {"version": "18446744073709551615.0.0", "created_at": "-262143-01-01T00:00:00Z"}}})))
write("state_json", "offset-dates", state('{"time_floor":"2026-11-21T12:00:00+14:00","releases":{"x":{"version":"1.0.0","created_at":"2026-11-21T12:00:00-12:00"}}}'))
write("state_json", "leap-second", state('{"time_floor":"2016-12-31T23:59:60Z"}'))
write("state_json", "wrong-types", state('{"format":"1","releases":[]}'))

# ---- trust_toml ------------------------------------------------------------------------------
with open(os.path.join(ROOT, "docs", "examples", "trust.toml"), "rb") as f:
    write("trust_toml", "docs-example", f.read())
K1 = "8a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c"
write("trust_toml", "make-keys", f'# Phase Boot trust root (make keys, KEY=build/keys/dev.key)\nthreshold = 1\nkeys = ["{K1}"]\n')
write("trust_toml", "duplicate-key-threshold-2", f'threshold = 2\nkeys = ["{K1}", "{K1.upper()}"]\n')
write("trust_toml", "threshold-0", f'threshold = 0\nkeys = ["{K1}"]\n')
write("trust_toml", "bad-key", 'threshold = 1\nkeys = ["zz"]\n')
write("trust_toml", "small-order-key", 'threshold = 1\nkeys = ["' + "00" * 32 + '"]\n')
write("trust_toml", "huge-threshold", f'threshold = 18446744073709551615\nkeys = [" {K1} "]\n')
write("trust_toml", "extra-field", f'threshold = 1\nkeys = ["{K1}"]\n[x]\ny = 1\n')

# ---- cmdline ---------------------------------------------------------------------------------
write("cmdline", "local", "BOOT_IMAGE=/vmlinuz-6.1.0-28-amd64 root=/dev/ram0 console=tty0 console=ttyS0,115200 panic=10 phase.mode=local phase.channel=stable\n")
write("cmdline", "internet-all-keys",
      "phase.mode=internet phase.arch=amd64 phase.provider=http://192.0.2.1:8080 "
      "phase.bootstrap=/ip4/192.0.2.1/tcp/4001/p2p/12D3KooWGzBvSLvqmrVXFAqcnAsEaB8WjFq2KQ3hgwFbAVUeUGYr,/ip4/192.0.2.1/tcp/4002 "
      "phase.iface=eth0 phase.timeout=120 phase.onfail=halt phase.kexec=never phase.init=/sbin/init "
      "phase.debug phase.colour=1 -- single")
write("cmdline", "quotes", 'phase.cmdline="console=ttyS0 quiet" "phase.channel=st able" phase.mode="private" "unterminated')
write("cmdline", "bad-values", "phase.timeout=99999999999999999999999 phase.mode= phase.onfail=maybe")
write("cmdline", "empty", "")

# ---- modules_dep -----------------------------------------------------------------------------
DEP = """kernel/drivers/net/virtio_net.ko.xz: kernel/drivers/net/net_failover.ko.xz kernel/net/core/failover.ko.xz
kernel/drivers/net/net_failover.ko.xz: kernel/net/core/failover.ko.xz
kernel/net/core/failover.ko.xz:
kernel/drivers/block/virtio_blk.ko.xz:
kernel/drivers/block/loop.ko.xz:
kernel/fs/squashfs/squashfs.ko.xz:
kernel/fs/overlayfs/overlay.ko.xz:
kernel/fs/fat/vfat.ko.xz: kernel/fs/fat/fat.ko.xz
kernel/fs/fat/fat.ko.xz:
kernel/arch/x86/events/intel/intel-uncore.ko.xz:
"""
BUILTIN = "kernel/drivers/virtio/virtio.ko\nkernel/drivers/virtio/virtio_ring.ko\nkernel/drivers/virtio/virtio_pci.ko\n"
LIST = "# modules.list\nvirtio_net\nvirtio_blk\nloop @target\nsquashfs @target\noverlay @target\nvfat\nvirtio_pci\nintel-uncore\n"
write("modules_dep", "debian-excerpt", DEP + "\0" + BUILTIN + "\0" + LIST)
write("modules_dep", "cycle", "a.ko: b.ko\nb.ko: c.ko\nc.ko: a.ko\n\0\0a\n")
write("modules_dep", "missing-dependency", "a.ko: gone.ko\n\0\0a\n")
write("modules_dep", "syntax-error", "a.ko b.ko\n\0\0a\n")
write("modules_dep", "no-builtin-no-list", DEP)

# ---- uevent ----------------------------------------------------------------------------------
write("uevent", "cache-partition", "MAJOR=254\nMINOR=2\nDEVNAME=vda2\nDEVTYPE=partition\nDISKSEQ=9\nPARTN=2\nPARTNAME=phase-cache\n")
write("uevent", "whole-disk", "MAJOR=8\nMINOR=0\nDEVNAME=sda\nDEVTYPE=disk\nDISKSEQ=1\n")
write("uevent", "crlf-and-huge-major", "MAJOR=99999999999\r\nMINOR=-1\r\nDEVNAME=\r\nPARTNAME=a=b\r\n")

# ---- proc_mounts -----------------------------------------------------------------------------
write("proc_mounts", "target-stage", """22 1 0:21 / / rw,relatime - overlay overlay rw,lowerdir=/run/phase/lower,upperdir=/run/phase/upper/data,workdir=/run/phase/upper/work
23 22 0:5 / /dev rw,nosuid,relatime - devtmpfs devtmpfs rw,size=491520k,nr_inodes=122880,mode=755
24 22 0:22 / /proc rw,nosuid,nodev,noexec,relatime - proc proc rw
25 22 0:23 / /sys rw,nosuid,nodev,noexec,relatime - sysfs sysfs rw
26 22 254:2 / /cache/phase rw,relatime - vfat /dev/vda2 rw,fmask=0022,dmask=0022
29 22 0:25 / /mnt/with\\040space rw - tmpfs tmpfs rw
30 22 0:26 / /mnt/tab\\011and\\134backslash rw - tmpfs tmpfs rw
""")
write("proc_mounts", "escape-edges", "1 1 0:1 / /a\\ rw\n2 1 0:1 / /b\\04 rw\n3 1 0:1 / /c\\0400 rw\n4 1 0:1 / \\\\\\ rw\n")
# Overflowed the octal decoder (init/src/target/shutdown.rs test
# mount_point_escape_above_0o377_is_kept_not_panicking); the second is the fuzzer's minimum.
write("proc_mounts", "crash-escape-777", "29 22 0:25 / /mnt/\\777 rw - tmpfs tmpfs rw\n")
write("proc_mounts", "crash-escape-777-min", "9 2 2 7 \\777")
write("proc_mounts", "short-lines", "1 2 3\n\n1 2 3 4\n")

print(f"seeds written under {os.path.relpath(SEEDS, ROOT)}", file=sys.stderr)
