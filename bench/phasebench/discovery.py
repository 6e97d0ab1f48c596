"""Issue 4 targets: mDNS browse to the first resolved provider (p50 < 100 ms over veth, p50/p95
over N runs, beside avahi-browse in the same run) and DHT lookup p50/p95 with 5 and 20
`plasmd dht-node`s on loopback (target p50 < 300 ms with 20).

mDNS runs in two network namespaces we create (`pbm<pid>a/b`, 192.0.2.1 and .2 on a veth
pair, no link to the host); they are deleted at the end. Needs root; otherwise the rows say
"not measured: not root"."""

import os
import re
import select
import subprocess
import tempfile
import time

from .common import free_port, have, is_root, log, percentile, run, start, stop, timed

DISCOVER_MS = re.compile(r"phase: discover ok \S+ \S+ in (\d+)ms")
BUS_CONF = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig><type>system</type><listen>unix:path={bus}</listen><auth>EXTERNAL</auth>
<policy context="default"><allow user="*"/><allow own="*"/><allow send_destination="*" eavesdrop="true"/>
<allow receive_sender="*"/></policy></busconfig>
"""
AVAHI_CONF = """[server]
host-name=phase-bench-b
use-ipv4=yes
use-ipv6=no
allow-interfaces={iface}
enable-dbus=yes
[wide-area]
enable-wide-area=no
[publish]
publish-addresses=no
publish-hinfo=no
publish-workstation=no
[rlimits]
"""


def _discover_ms(cmd, timeout=15):
    """Runs one `phase discover` and returns its wall time in ms, process start included (the
    time the tool itself reports can leave out setup), or None when it found nothing."""
    wall, _, _, rc, out, err = timed(cmd, timeout=timeout)
    return wall * 1000 if rc == 0 and DISCOVER_MS.search(err) else None


def _row(res, figure, vals, runs, target_ms, peer=None, peer_vals=None):
    if not vals:
        res.skip("discovery", figure, f"no lookup succeeded in {runs} runs", f"p50 < {target_ms} ms")
        return
    p50, p95 = percentile(vals, 50), percentile(vals, 95)
    note = f"p95 {p95:.0f} ms; {len(vals)}/{runs} runs found it"
    if peer_vals:
        pp50 = percentile(peer_vals, 50)
        note += f"; peer p95 {percentile(peer_vals, 95):.0f} ms, {len(peer_vals)}/{runs} found"
        res.add("discovery", figure, float(p50), "ms p50", peer, float(pp50), p50 / pp50 if pp50 else None,
                f"p50 < {target_ms} ms", p50 < target_ms, note)
    else:
        res.add("discovery", figure, float(p50), "ms p50", peer, None, None, f"p50 < {target_ms} ms",
                p50 < target_ms, note + (f"; {peer}" if peer else ""))


class Netns:
    """Two namespaces joined by a veth pair; deleted on close."""

    def __init__(self):
        pid = os.getpid()
        self.a, self.b = f"pbm{pid}a", f"pbm{pid}b"
        self.va, self.vb = f"pbm{pid}va", f"pbm{pid}vb"
        run(["ip", "netns", "add", self.a])
        run(["ip", "netns", "add", self.b])
        run(["ip", "link", "add", self.va, "type", "veth", "peer", "name", self.vb])
        run(["ip", "link", "set", self.va, "netns", self.a])
        run(["ip", "link", "set", self.vb, "netns", self.b])
        for ns, dev, addr in ((self.a, self.va, "192.0.2.1/24"), (self.b, self.vb, "192.0.2.2/24")):
            run(["ip", "-n", ns, "addr", "add", addr, "dev", dev])
            run(["ip", "-n", ns, "link", "set", dev, "up"])
            run(["ip", "-n", ns, "link", "set", "lo", "up"])

    def close(self):
        """Deleting a namespace deletes the veth end in it, and with it the pair."""
        for ns in (self.a, self.b):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def _avahi_first_ms(ns, env, timeout=5.0):
    """ms from starting `avahi-browse -rp` to its first resolved line for our service (or None)."""
    t0 = time.monotonic()
    p = subprocess.Popen(["ip", "netns", "exec", ns, "avahi-browse", "-rp", "_phase-image._tcp"],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
    buf = b""
    try:
        while time.monotonic() - t0 < timeout:
            r, _, _ = select.select([p.stdout], [], [], 0.2)
            if r:
                chunk = os.read(p.stdout.fileno(), 4096)
                if not chunk:
                    return None
                buf += chunk
                if any(l.startswith(b"=;") and b"stable" in l for l in buf.split(b"\n")):
                    return (time.monotonic() - t0) * 1000
        return None
    finally:
        p.kill()
        p.wait()


def mdns(s, rel, res):
    """mDNS rows (needs root and ip netns)."""
    fig = "mDNS browse to first provider (veth)"
    if not is_root():
        res.skip("discovery", fig, "not root (network namespaces needed)", "p50 < 100 ms")
        return
    rel_dir = rel.dir
    lan = Netns()
    procs = []
    try:
        adv = start(["ip", "netns", "exec", lan.a, s.bin("plasmd"), "serve", "-a", rel_dir, "--bind", "192.0.2.1",
                     "--port", "8080", "--no-dht", "--advertise-url", "http://192.0.2.1:8080", "-c", "stable",
                     "-A", "x86_64"], os.path.join(s.work, "plasmd-mdns.log"))
        procs.append(adv)
        time.sleep(1.0)  # let the announcement go out once (bounded)
        cmd = ["ip", "netns", "exec", lan.b, s.bin("phase"), "discover", "--mdns-only", "--channel", "stable",
               "--arch", "x86_64", "--want", "1", "--timeout", "5"]
        _discover_ms(cmd)  # warm-up
        ours = [v for v in (_discover_ms(cmd) for _ in range(s.discovery_runs)) if v is not None]
        peer_vals, peer_note = [], None
        if all(have(t) for t in ("avahi-daemon", "avahi-browse", "dbus-daemon")):
            tmp = tempfile.mkdtemp(dir=s.work)
            bus = os.path.join(tmp, "bus")
            with open(os.path.join(tmp, "bus.conf"), "w") as f:
                f.write(BUS_CONF.format(bus=bus))
            with open(os.path.join(tmp, "avahi.conf"), "w") as f:
                f.write(AVAHI_CONF.format(iface=lan.vb))
            procs.append(start(["ip", "netns", "exec", lan.b, "dbus-daemon", "--nofork", "--config-file",
                                os.path.join(tmp, "bus.conf")], os.path.join(s.work, "dbus.log")))
            for _ in range(50):
                if os.path.exists(bus):
                    break
                time.sleep(0.1)
            env = dict(os.environ, DBUS_SYSTEM_BUS_ADDRESS=f"unix:path={bus}")
            # Private /run/avahi-daemon in the mount namespace `ip netns exec` makes.
            script = ("mkdir -p /run/avahi-daemon && mount -t tmpfs tmpfs /run/avahi-daemon && "
                      f"exec avahi-daemon --no-drop-root --no-chroot --no-rlimits -f {tmp}/avahi.conf")
            procs.append(start(["ip", "netns", "exec", lan.b, "sh", "-c", script],
                               os.path.join(s.work, "avahi.log"), env=env))
            first = None
            for _ in range(20):  # until the daemon is up and has resolved us once (bounded)
                first = _avahi_first_ms(lan.b, env)
                if first is not None:
                    break
                time.sleep(0.5)
            if first is None:
                peer_note = "avahi-browse never resolved our service"
            else:
                peer_vals = [v for v in (_avahi_first_ms(lan.b, env) for _ in range(s.discovery_runs)) if v is not None]
        else:
            peer_note = "avahi-daemon/avahi-browse/dbus-daemon not installed"
        _row(res, fig, ours, s.discovery_runs, 100, "avahi-browse -rp (warm daemon)" if peer_vals else peer_note,
             peer_vals)
    finally:
        for p in reversed(procs):
            stop(p)
        lan.close()


def _read_addr(p, timeout=15):
    """Waits (bounded) for the `dht-node listening <multiaddr>` line of a dht-node we started."""
    t0 = time.monotonic()
    buf = b""
    while time.monotonic() - t0 < timeout:
        r, _, _ = select.select([p.stdout], [], [], 0.2)
        if r:
            chunk = os.read(p.stdout.fileno(), 4096)
            if not chunk:
                break
            buf += chunk
            m = re.search(rb"dht-node listening (\S+/p2p/\S+)", buf)
            if m:
                return m.group(1).decode()
    raise RuntimeError(f"plasmd dht-node printed no listening address in {timeout}s: {buf[-300:]!r}")


def dht(s, rel, res, n):
    """DHT lookup rows with n nodes on loopback."""
    fig = f"DHT lookup, {n} nodes (loopback)"
    nodes, addrs = [], []
    try:
        for i in range(n):
            cmd = [s.bin("plasmd"), "dht-node", "--dht-listen", "/ip4/127.0.0.1/tcp/0"]
            if addrs:
                cmd += ["--bootstrap", addrs[0]]
            p = start(cmd, stdout=subprocess.PIPE, stderr=open(os.path.join(s.work, f"dht-{n}-{i}.log"), "wb"))
            nodes.append(p)
            addrs.append(_read_addr(p))
        prov_log = os.path.join(s.work, f"dht-{n}-provider.log")
        rel_dir = rel.dir
        prov = start([s.bin("plasmd"), "serve", "-a", rel_dir, "--bind", "127.0.0.1", "--port", str(free_port()), "--no-mdns",
                      "--dht-listen", "/ip4/127.0.0.1/tcp/0", "--bootstrap", addrs[0], "--advertise-url",
                      "http://127.0.0.1:8080", "-c", "stable", "-A", "x86_64"], prov_log,
                     env=dict(os.environ, RUST_LOG=os.environ.get("RUST_LOG", "info")))
        nodes.append(prov)
        t0 = time.monotonic()
        while time.monotonic() - t0 < 30:  # until the put is confirmed (bounded)
            with open(prov_log, "rb") as f:
                if b"put ok" in f.read():
                    break
            if prov.poll() is not None:
                raise RuntimeError(f"plasmd serve exited: {open(prov_log, 'rb').read()[-400:]!r}")
            time.sleep(0.2)
        vals = []
        for i in range(s.discovery_runs + 1):
            boot = addrs[(i + 1) % n]
            v = _discover_ms([s.bin("phase"), "discover", "--dht-only", "--ephemeral", "--bootstrap", boot,
                              "--channel", "stable", "--arch", "x86_64", "--want", "1", "--timeout", "10"])
            if i > 0 and v is not None:  # first is the warm-up
                vals.append(v)
        _row(res, fig, vals, s.discovery_runs, 300 if n >= 20 else 300)
    finally:
        for p in reversed(nodes):
            stop(p)


def run_section(s, rel, res):
    """Adds the discovery rows."""
    try:
        mdns(s, rel, res)
    except Exception as e:  # noqa: BLE001 - record and go on with the DHT
        log(f"discovery: mDNS failed: {e}")
        res.skip("discovery", "mDNS browse to first provider (veth)", f"error: {e}", "p50 < 100 ms")
    for n in (5, 20):
        dht(s, rel, res, n)
