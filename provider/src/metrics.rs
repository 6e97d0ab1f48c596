//! Counters behind `/status` (JSON) and `/metrics` (Prometheus text exposition 0.0.4)
//! (issue 3 "Must have" 2, seed 000 "Request metrics and health checks").
//!
//! All counters are lock-free atomics except the per-artifact table, which takes a short mutex
//! once per response and once per body chunk.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::Serialize;

/// Requests and bytes of one artifact (`channel/arch/filename`).
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct ArtifactCounters {
    /// Responses that started a body (200 and 206), HEAD excluded.
    pub requests: u64,
    /// Body bytes sent.
    pub bytes: u64,
}

/// Process-wide counters.
#[derive(Debug)]
pub struct Metrics {
    started: Instant,
    requests: AtomicU64,
    bytes_served: AtomicU64,
    active_connections: AtomicU64,
    connections_total: AtomicU64,
    connections_refused: AtomicU64,
    write_timeouts: AtomicU64,
    active_downloads: AtomicU64,
    not_found: AtomicU64,
    artifacts: Mutex<BTreeMap<String, ArtifactCounters>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            started: Instant::now(),
            requests: AtomicU64::new(0),
            bytes_served: AtomicU64::new(0),
            active_connections: AtomicU64::new(0),
            connections_total: AtomicU64::new(0),
            connections_refused: AtomicU64::new(0),
            write_timeouts: AtomicU64::new(0),
            active_downloads: AtomicU64::new(0),
            not_found: AtomicU64::new(0),
            artifacts: Mutex::new(BTreeMap::new()),
        }
    }
}

/// A snapshot of the counters, as `/status` returns it.
#[derive(Debug, Clone, Serialize)]
pub struct MetricsSnapshot {
    /// Seconds since the provider started.
    pub uptime_secs: u64,
    /// HTTP requests received.
    pub requests: u64,
    /// Body bytes of artifacts sent.
    pub bytes_served: u64,
    /// Open connections.
    pub active_connections: u64,
    /// Connections accepted since start.
    pub connections_total: u64,
    /// Connections closed at once because their address was at `--max-connections-per-ip`.
    pub connections_refused: u64,
    /// Connections dropped because the client stopped reading (`--write-timeout`).
    pub write_timeouts: u64,
    /// Artifact bodies being sent.
    pub active_downloads: u64,
    /// 404 answers.
    pub not_found: u64,
    /// Per artifact (`channel/arch/filename`).
    pub artifacts: BTreeMap<String, ArtifactCounters>,
}

/// Decrements a gauge when dropped.
#[derive(Debug)]
pub struct GaugeGuard {
    metrics: Arc<Metrics>,
    which: Gauge,
}

#[derive(Debug, Clone, Copy)]
enum Gauge {
    Connections,
    Downloads,
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        let g = match self.which {
            Gauge::Connections => &self.metrics.active_connections,
            Gauge::Downloads => &self.metrics.active_downloads,
        };
        g.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Metrics {
    /// Seconds since start.
    pub fn uptime_secs(&self) -> u64 {
        self.started.elapsed().as_secs()
    }

    /// Counts one request.
    pub fn request(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one 404.
    pub fn not_found(&self) {
        self.not_found.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts an accepted connection until the guard drops.
    pub fn connection(self: &Arc<Self>) -> GaugeGuard {
        self.connections_total.fetch_add(1, Ordering::Relaxed);
        self.active_connections.fetch_add(1, Ordering::Relaxed);
        GaugeGuard {
            metrics: Arc::clone(self),
            which: Gauge::Connections,
        }
    }

    /// Counts a connection refused by the per-IP cap.
    pub fn connection_refused(&self) {
        self.connections_refused.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a connection dropped by the write timeout.
    pub fn write_timeout(&self) {
        self.write_timeouts.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a body download of `artifact` until the guard drops.
    pub fn download(self: &Arc<Self>, artifact: &str) -> GaugeGuard {
        self.active_downloads.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut table) = self.artifacts.lock() {
            table.entry(artifact.to_owned()).or_default().requests += 1;
        }
        GaugeGuard {
            metrics: Arc::clone(self),
            which: Gauge::Downloads,
        }
    }

    /// Artifact bodies being sent now.
    pub fn active_downloads(&self) -> u64 {
        self.active_downloads.load(Ordering::Relaxed)
    }

    /// Counts `n` body bytes of `artifact` sent.
    pub fn sent(&self, artifact: &str, n: u64) {
        self.bytes_served.fetch_add(n, Ordering::Relaxed);
        if let Ok(mut table) = self.artifacts.lock() {
            if let Some(c) = table.get_mut(artifact) {
                c.bytes += n;
            }
        }
    }

    /// The current values.
    pub fn snapshot(&self) -> MetricsSnapshot {
        MetricsSnapshot {
            uptime_secs: self.uptime_secs(),
            requests: self.requests.load(Ordering::Relaxed),
            bytes_served: self.bytes_served.load(Ordering::Relaxed),
            active_connections: self.active_connections.load(Ordering::Relaxed),
            connections_total: self.connections_total.load(Ordering::Relaxed),
            connections_refused: self.connections_refused.load(Ordering::Relaxed),
            write_timeouts: self.write_timeouts.load(Ordering::Relaxed),
            active_downloads: self.active_downloads.load(Ordering::Relaxed),
            not_found: self.not_found.load(Ordering::Relaxed),
            artifacts: self.artifacts.lock().map(|t| t.clone()).unwrap_or_default(),
        }
    }

    /// The Prometheus text exposition of the counters (`plasmd_*` metric names).
    pub fn prometheus(&self) -> String {
        let s = self.snapshot();
        let mut out = String::with_capacity(1024);
        let mut metric = |name: &str, kind: &str, help: &str, value: u64| {
            let _ = write!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"
            );
        };
        metric(
            "plasmd_uptime_seconds",
            "gauge",
            "Seconds since plasmd started.",
            s.uptime_secs,
        );
        metric(
            "plasmd_requests_total",
            "counter",
            "HTTP requests received.",
            s.requests,
        );
        metric(
            "plasmd_bytes_served_total",
            "counter",
            "Artifact body bytes sent.",
            s.bytes_served,
        );
        metric(
            "plasmd_active_connections",
            "gauge",
            "Open connections.",
            s.active_connections,
        );
        metric(
            "plasmd_connections_total",
            "counter",
            "Connections accepted.",
            s.connections_total,
        );
        metric(
            "plasmd_connections_refused_total",
            "counter",
            "Connections closed at once: their address was at --max-connections-per-ip.",
            s.connections_refused,
        );
        metric(
            "plasmd_write_timeouts_total",
            "counter",
            "Connections dropped: the client stopped reading for --write-timeout.",
            s.write_timeouts,
        );
        metric(
            "plasmd_active_downloads",
            "gauge",
            "Artifact bodies being sent.",
            s.active_downloads,
        );
        metric(
            "plasmd_not_found_total",
            "counter",
            "Requests answered 404.",
            s.not_found,
        );
        out.push_str(
            "# HELP plasmd_artifact_requests_total Artifact bodies started, by artifact.\n",
        );
        out.push_str("# TYPE plasmd_artifact_requests_total counter\n");
        for (name, c) in &s.artifacts {
            let _ = writeln!(
                out,
                "plasmd_artifact_requests_total{{artifact=\"{name}\"}} {}",
                c.requests
            );
        }
        out.push_str("# HELP plasmd_artifact_bytes_total Artifact body bytes sent, by artifact.\n");
        out.push_str("# TYPE plasmd_artifact_bytes_total counter\n");
        for (name, c) in &s.artifacts {
            let _ = writeln!(
                out,
                "plasmd_artifact_bytes_total{{artifact=\"{name}\"}} {}",
                c.bytes
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guards_decrement_gauges_and_bytes_are_counted_per_artifact() {
        let m = Arc::new(Metrics::default());
        {
            let _c = m.connection();
            let _d = m.download("stable/x86_64/kernel");
            m.sent("stable/x86_64/kernel", 10);
            assert_eq!(m.snapshot().active_connections, 1);
            assert_eq!(m.active_downloads(), 1);
        }
        m.connection_refused();
        m.write_timeout();
        let s = m.snapshot();
        assert_eq!((s.connections_refused, s.write_timeouts), (1, 1));
        assert_eq!(
            (
                s.active_connections,
                s.active_downloads,
                s.connections_total
            ),
            (0, 0, 1)
        );
        assert_eq!(s.artifacts["stable/x86_64/kernel"].bytes, 10);
        let text = m.prometheus();
        assert!(text.contains("plasmd_bytes_served_total 10\n"), "{text}");
        assert!(
            text.contains("plasmd_connections_refused_total 1\n"),
            "{text}"
        );
        assert!(text.contains("plasmd_write_timeouts_total 1\n"), "{text}");
        assert!(
            text.contains("plasmd_artifact_bytes_total{artifact=\"stable/x86_64/kernel\"} 10\n")
        );
    }
}
