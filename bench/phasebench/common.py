"""Shared plumbing: settings, processes we start (killed by PID at exit), timing with rusage,
medians and percentiles, HTTP polling. Python 3 stdlib only."""

import atexit
import http.client
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
GiB = 1 << 30
MiB = 1 << 20

_started = []  # Popen objects we started; killed by PID at exit


def log(msg):
    """One progress line on stderr."""
    print(f"bench: {msg}", file=sys.stderr, flush=True)


class Settings:
    """What to run and how big. Smoke mode: tiny input, one run, no warm-up, short wrk."""

    def __init__(self, smoke):
        self.smoke = smoke
        env = os.environ.get
        self.bin_dir = env("BIN_DIR", os.path.join(REPO, "target/x86_64-unknown-linux-gnu/release"))
        self.size = int(env("BENCH_SIZE", str(4 * MiB if smoke else GiB)))
        self.runs = int(env("BENCH_RUNS", "1" if smoke else "5"))
        self.warmup = 0 if smoke else 1
        self.wrk_secs = int(env("BENCH_WRK_SECS", "1" if smoke else "5"))
        self.discovery_runs = int(env("BENCH_DISCOVERY_RUNS", "3" if smoke else "50"))
        self.boot_runs = int(env("BENCH_BOOT_RUNS", "5"))
        self.boot_timeout = int(env("BENCH_BOOT_TIMEOUT", "120"))
        # Scratch on tmpfs so fsync and disk speed do not enter the numbers of either side.
        base = env("BENCH_WORK", "/dev/shm" if os.path.isdir("/dev/shm") else "/tmp")
        self.work = os.path.join(base, f"phase-bench-{os.getpid()}")
        os.makedirs(self.work, exist_ok=True)
        atexit.register(shutil.rmtree, self.work, True)
        self.cores = os.cpu_count() or 1

    def bin(self, name):
        """Path of one of our release binaries (phase, plasmd, phase-init)."""
        return os.path.join(self.bin_dir, name)

    def pin(self, role):
        """`taskset` prefix pinning the server to core 0 and clients to core 1 (when 2+ cores)."""
        if self.cores < 2 or not shutil.which("taskset"):
            return []
        return ["taskset", "-c", "0" if role == "server" else "1"]


class Results:
    """Rows of the report: one figure, our value, the peer's value, ratio, target, met."""

    def __init__(self):
        self.rows = []
        self.notes = []
        self.facts = {}

    def add(self, section, figure, value, unit, peer=None, peer_value=None, ratio=None,
            target=None, met=None, note=None):
        """Adds a row. `value` None means not measured; then `note` says why."""
        row = dict(section=section, figure=figure, value=value, unit=unit, peer=peer,
                   peer_value=peer_value, ratio=ratio, target=target, met=met, note=note)
        self.rows.append(row)
        shown = "" if value is None else f"{fmt(value)} {unit}"
        extra = f" vs {peer} {fmt(peer_value)}" if peer else ""
        log(f"{section}: {figure}: {shown}{extra}" + (f" ({note})" if note else ""))
        return row

    def skip(self, section, figure, why, target=None):
        """A row for a figure we could not measure, with the reason."""
        return self.add(section, figure, None, "", target=target, met=None, note=f"not measured: {why}")


def fmt(v):
    """Compact number formatting for the table."""
    if v is None:
        return "-"
    if isinstance(v, float):
        if v >= 100:
            return f"{v:.0f}"
        if v >= 10:
            return f"{v:.1f}"
        return f"{v:.3g}"
    return str(v)


def median(xs):
    """Median of a non-empty list."""
    return statistics.median(xs)


def percentile(xs, p):
    """Nearest-rank percentile (p in 0..100) of a non-empty list."""
    s = sorted(xs)
    k = max(0, min(len(s) - 1, int(round(p / 100.0 * len(s) + 0.5)) - 1))
    return s[k]


def start(cmd, log_path=None, **kw):
    """Starts a long-running process we own; it is killed by its PID at exit."""
    out = open(log_path, "wb") if log_path else subprocess.DEVNULL
    kw.setdefault("stdout", out)
    kw.setdefault("stderr", out)
    p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, **kw)
    _started.append(p)
    return p


def stop(p, timeout=10):
    """SIGTERM, bounded wait, then SIGKILL, for one process we started."""
    if p.poll() is None:
        try:
            p.send_signal(signal.SIGTERM)
            p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout=timeout)
        except ProcessLookupError:
            pass
    if p in _started:
        _started.remove(p)


@atexit.register
def _kill_all():
    for p in list(_started):
        try:
            stop(p, timeout=5)
        except Exception:  # noqa: BLE001 - best effort at exit
            pass


def timed(cmd, timeout=600, cwd=None, shell=False, env=None):
    """Runs cmd to completion and returns (wall_s, cpu_s, maxrss_kib, returncode, stdout, stderr).

    cpu and maxrss come from wait4 on the child, which on Linux covers the child and every
    descendant it waited for (a shell pipeline: all members; maxrss is the largest member).
    """
    # Peak RSS via GNU time: a child forked from this Python process inherits its RSS high-water
    # mark across exec, so wait4's ru_maxrss here would report Python's size, not the tool's.
    tfile = None
    if os.path.exists("/usr/bin/time"):
        import tempfile
        fd, tfile = tempfile.mkstemp(prefix="bench-time-")
        os.close(fd)
        if shell:
            cmd = ["/usr/bin/time", "-f", "%U %S %M", "-o", tfile, "/bin/bash", "-c", cmd]
            shell = False
        else:
            cmd = ["/usr/bin/time", "-f", "%U %S %M", "-o", tfile] + list(cmd)
    t0 = time.monotonic()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=cwd, shell=shell,
                         executable="/bin/bash" if shell else None, env=env)
    _started.append(p)
    deadline = t0 + timeout
    out_chunks, err_chunks = [], []
    import selectors
    sel = selectors.DefaultSelector()
    sel.register(p.stdout, selectors.EVENT_READ, out_chunks)
    sel.register(p.stderr, selectors.EVENT_READ, err_chunks)
    open_streams = 2
    while open_streams and time.monotonic() < deadline:
        for key, _ in sel.select(timeout=0.5):
            data = os.read(key.fileobj.fileno(), 65536)
            if not data:
                sel.unregister(key.fileobj)
                open_streams -= 1
            else:
                key.data.append(data)
    if open_streams:
        p.kill()
    _, status, ru = os.wait4(p.pid, 0)
    wall = time.monotonic() - t0
    p.returncode = os.waitstatus_to_exitcode(status)
    _started.remove(p)
    cpu, maxrss = ru.ru_utime + ru.ru_stime, ru.ru_maxrss
    if tfile:
        try:
            with open(tfile) as f:
                last = [line for line in f.read().splitlines() if line.strip()][-1].split()
            cpu, maxrss = float(last[0]) + float(last[1]), int(last[2])
        except (OSError, IndexError, ValueError):
            pass
        os.unlink(tfile)
    return (wall, cpu, maxrss, p.returncode,
            b"".join(out_chunks).decode(errors="replace"), b"".join(err_chunks).decode(errors="replace"))


def run(cmd, check=True, timeout=600, **kw):
    """Runs a short command and returns its stdout (raises on failure when check)."""
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd))}: exit {r.returncode}: {r.stderr.strip()[-500:]}")
    return r.stdout


def http_status(host, port, path, timeout=1.0):
    """Status code of one GET (0 when the connection fails)."""
    try:
        c = http.client.HTTPConnection(host, port, timeout=timeout)
        c.request("GET", path)
        r = c.getresponse()
        r.read()
        c.close()
        return r.status
    except OSError:
        return 0


def wait_http(host, port, path, timeout=30.0, proc=None):
    """Polls until GET answers 200 (bounded); returns seconds waited. Raises on timeout/exit."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if http_status(host, port, path, timeout=0.5) == 200:
            return time.monotonic() - t0
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{proc.args[0]} exited ({proc.returncode}) before {path} answered 200")
        time.sleep(0.002)
    raise RuntimeError(f"http://{host}:{port}{path} did not answer 200 within {timeout}s")


def free_port():
    """A TCP port free on 127.0.0.1 right now."""
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def rss_kib(pid):
    """VmRSS of a process in KiB (0 if gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def have(tool):
    """Whether a program is on PATH (or in /usr/sbin, /sbin)."""
    return shutil.which(tool) is not None or any(os.path.exists(os.path.join(d, tool)) for d in ("/usr/sbin", "/sbin"))


def is_root():
    """Effective uid 0."""
    return os.geteuid() == 0


def div(a, b):
    """a / b, or None when b is zero (a ratio that cannot be formed)."""
    return a / b if b else None
