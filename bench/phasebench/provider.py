"""Issue 3 targets: plasmd vs nginx (sendfile on) serving the rootfs to curl on loopback,
manifest requests/s with wrk, start-to-first-/health, RSS idle and with 64 downloads."""

import os
import re
import time

from .common import (div, free_port, have, log, median, rss_kib, start, stop, timed, wait_http,
                     MiB)

NGINX_CONF = """daemon off;
master_process off;
worker_processes 1;
pid {work}/nginx.pid;
error_log {work}/nginx-error.log warn;
events {{ worker_connections 1024; }}
http {{
    sendfile on;
    tcp_nopush on;
    access_log off;
    client_body_temp_path {work}/nginx-tmp;
    proxy_temp_path {work}/nginx-tmp;
    fastcgi_temp_path {work}/nginx-tmp;
    uwsgi_temp_path {work}/nginx-tmp;
    scgi_temp_path {work}/nginx-tmp;
    types {{ application/json json; }}
    default_type application/octet-stream;
    server {{
        listen 127.0.0.1:{port};
        root {root};
        location / {{ }}
    }}
}}
"""


class Servers:
    """plasmd and nginx over the same release, each pinned to core 0; stopped by PID."""

    def __init__(self, s, rel):
        self.s = s
        self.plasmd_port = free_port()
        self.plasmd = start(s.pin("server") + [s.bin("plasmd"), "serve", "-a", rel.dir, "--bind", "127.0.0.1",
                                                "--port", str(self.plasmd_port), "--no-dht", "--no-mdns",
                                                "--max-connections", "4096"],
                            os.path.join(s.work, "plasmd.log"))
        wait_http("127.0.0.1", self.plasmd_port, "/health", proc=self.plasmd)
        self.nginx = None
        self.nginx_port = None
        if have("nginx"):
            self.nginx_port = free_port()
            os.makedirs(os.path.join(s.work, "nginx-tmp"), exist_ok=True)
            conf = os.path.join(s.work, "nginx.conf")
            with open(conf, "w") as f:
                f.write(NGINX_CONF.format(work=s.work, port=self.nginx_port, root=rel.tree))
            nginx = "/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else "nginx"
            self.nginx = start(s.pin("server") + [nginx, "-c", conf, "-p", s.work],
                               os.path.join(s.work, "nginx.log"))
            wait_http("127.0.0.1", self.nginx_port, "/stable/x86_64/manifest.json", proc=self.nginx)

    def url(self, which, path):
        """URL of `path` on plasmd or nginx."""
        port = self.plasmd_port if which == "plasmd" else self.nginx_port
        return f"http://127.0.0.1:{port}{path}"

    def close(self):
        """Stops both servers."""
        for p in (self.plasmd, self.nginx):
            if p is not None:
                stop(p)


def curl_rate(s, url, size):
    """Median bytes/s of curl downloading url to /dev/null (after a warm-up)."""
    rates = []
    for i in range(s.warmup + s.runs):
        wall, _, _, rc, out, err = timed(s.pin("client") + ["curl", "-s", "-f", "-o", "/dev/null", url])
        if rc != 0:
            raise RuntimeError(f"curl {url}: exit {rc} {err}")
        if i >= s.warmup:
            rates.append(size / wall)
    return median(rates)


def wrk_rps(s, url):
    """Median requests/s of wrk (1 thread, 16 connections) over s.wrk_secs seconds per run."""
    vals = []
    for i in range(s.warmup + s.runs):
        _, _, _, rc, out, err = timed(s.pin("client") + ["wrk", "-t1", "-c16", f"-d{s.wrk_secs}s", url],
                                      timeout=s.wrk_secs + 30)
        m = re.search(r"Requests/sec:\s+([0-9.]+)", out)
        if rc != 0 or not m:
            raise RuntimeError(f"wrk {url}: exit {rc}: {out} {err}")
        non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
        if non2xx:
            raise RuntimeError(f"wrk {url}: {non2xx.group(1)} non-2xx answers")
        if i >= s.warmup:
            vals.append(float(m.group(1)))
    return median(vals)


def health_start_ms(s, rel):
    """Median ms from spawning plasmd to the first 200 on /health."""
    vals = []
    for _ in range(s.runs):
        port = free_port()
        t0 = time.monotonic()
        p = start([s.bin("plasmd"), "serve", "-a", rel.dir, "--bind", "127.0.0.1", "--port", str(port),
                   "--no-dht", "--no-mdns"])
        try:
            wait_http("127.0.0.1", port, "/health", timeout=10, proc=p)
            vals.append((time.monotonic() - t0) * 1000)
        finally:
            stop(p)
    return median(vals)


def rss_under_load(s, srv, url, clients=64, secs=4):
    """Peak VmRSS (KiB) of the plasmd process while `clients` rate-limited curls download url."""
    curls = [start(s.pin("client") + ["curl", "-s", "-o", "/dev/null", "--limit-rate", "8M", "-m", str(secs), url])
             for _ in range(clients)]
    peak = 0
    t0 = time.monotonic()
    try:
        while time.monotonic() - t0 < secs + 10 and any(c.poll() is None for c in curls):
            peak = max(peak, rss_kib(srv.plasmd.pid))
            time.sleep(0.05)
    finally:
        for c in curls:
            stop(c)
    return peak


def run_section(s, rel, res):
    """Adds the provider rows."""
    sec = "provider"
    srv = Servers(s, rel)
    try:
        idle = rss_kib(srv.plasmd.pid)
        art = "/stable/x86_64/rootfs"
        ours = curl_rate(s, srv.url("plasmd", art), rel.size)
        res.facts["plasmd_curl_Bps"] = ours
        if srv.nginx:
            peer = curl_rate(s, srv.url("nginx", art), rel.size)
            res.add(sec, f"serve {rel.size // MiB} MiB to curl (loopback)", ours / 1e9, "GB/s", "nginx sendfile",
                    peer / 1e9, div(ours, peer), ">= 1.0x nginx", ours >= peer)
        else:
            res.add(sec, f"serve {rel.size // MiB} MiB to curl (loopback)", ours / 1e9, "GB/s",
                    target=">= 1.0x nginx", note="nginx not installed (make bench-deps)")
        if have("wrk") and srv.nginx:
            path = "/stable/x86_64/manifest.json"
            ours = wrk_rps(s, srv.url("plasmd", path))
            peer = wrk_rps(s, srv.url("nginx", path))
            res.add(sec, "manifest requests/s (wrk -t1 -c16)", ours, "req/s", "nginx", peer, div(ours, peer),
                    ">= 0.5x nginx", ours >= 0.5 * peer)
        else:
            res.skip(sec, "manifest requests/s", "wrk or nginx not installed (make bench-deps)", ">= 0.5x nginx")
        res.add(sec, "plasmd RSS idle", idle / 1024, "MiB", target="< 10 MiB", met=idle < 10 * 1024)
        peak = rss_under_load(s, srv, srv.url("plasmd", art), secs=2 if s.smoke else 4)
        res.add(sec, "plasmd RSS with 64 downloads", peak / 1024, "MiB", target="< 32 MiB", met=peak < 32 * 1024)
    finally:
        srv.close()
    ms = health_start_ms(s, rel)
    res.add(sec, "start to first 200 on /health", ms, "ms", target="< 100 ms", met=ms < 100)
    log("provider: done")
