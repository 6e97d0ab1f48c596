//! Test support for the fetch tests: a fault-injecting HTTP/1.1 server on 127.0.0.1 and signed
//! test releases.
//!
//! The server is raw tokio TCP rather than hyper/axum on purpose: the faults under test (a
//! Content-Length of 2^63, a body longer than its headers promise, a TCP RST mid-body, a wrong
//! Content-Range) are framing errors that a well-behaved HTTP library refuses to produce.
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{Duration as ChronoDuration, Utc};
use ed25519_dalek::SigningKey;
use phase_protocol::{signing, Sha256Digest, TrustRoot};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the server does for one path.
#[derive(Clone)]
pub enum Behaviour {
    /// Honest: 200, or 206 with the right Content-Range for `Range: bytes=N-`.
    Serve(Arc<Vec<u8>>),
    /// Always this status with an empty body.
    Status(u16),
    /// `status` for the first `times` requests, then `then`.
    StatusThen {
        status: u16,
        times: Arc<AtomicUsize>,
        then: Box<Behaviour>,
    },
    /// No Content-Length, `Connection: close`, the data and then zeros forever.
    Endless(Arc<Vec<u8>>),
    /// No Content-Length, the first `n` bytes, then a clean close.
    Short(Arc<Vec<u8>>, usize),
    /// `Content-Length: 9223372036854775808`, then the data.
    HugeLength(Arc<Vec<u8>>),
    /// 200 with the whole data even when a Range is asked for.
    IgnoreRange(Arc<Vec<u8>>),
    /// 206 with a Content-Range one byte off.
    WrongRange(Arc<Vec<u8>>),
    /// Honest headers, one byte every `gap`.
    Trickle(Arc<Vec<u8>>, Duration),
    /// Honest headers and body (ranged too), `chunk` bytes every `gap`: a steady rate of
    /// `chunk / gap` (1 KiB/s is `Paced(d, 256, 250ms)`). Bounded by the data's length.
    Paced(Arc<Vec<u8>>, usize, Duration),
    /// Honest headers for the (ranged) data; after `n` body bytes a TCP RST.
    ResetAfter(Arc<Vec<u8>>, usize),
    /// Honest, but a fraction of requests get 503, get reset mid-body, or wait `latency`;
    /// `faults` counts the 503s and resets served.
    Chaos {
        data: Arc<Vec<u8>>,
        p503: f64,
        preset: f64,
        latency: Duration,
        seed: Arc<AtomicUsize>,
        faults: Arc<AtomicUsize>,
    },
}

/// One request as seen by the server: path and Range header.
#[derive(Debug, Clone)]
pub struct Hit {
    /// Request path.
    pub path: String,
    /// The Range header value, if any.
    pub range: Option<String>,
}

/// The fault-injecting server; stops when dropped.
pub struct Server {
    /// Where it listens.
    pub addr: SocketAddr,
    routes: Arc<Mutex<HashMap<String, Behaviour>>>,
    hits: Arc<Mutex<Vec<Hit>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Server {
    /// Starts a server on 127.0.0.1 with an ephemeral port.
    pub async fn start() -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let routes: Arc<Mutex<HashMap<String, Behaviour>>> = Arc::default();
        let hits: Arc<Mutex<Vec<Hit>>> = Arc::default();
        let (r, h) = (routes.clone(), hits.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((sock, _)) = listener.accept().await else {
                    continue;
                };
                let (r, h) = (r.clone(), h.clone());
                tokio::spawn(async move {
                    let _ = handle(sock, r, h).await;
                });
            }
        });
        Server {
            addr,
            routes,
            hits,
            task,
        }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The URL of `path` (which starts with `/`).
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base())
    }

    /// Sets what `path` does.
    pub fn route(&self, path: &str, b: Behaviour) {
        self.routes.lock().unwrap().insert(path.to_owned(), b);
    }

    /// Requests seen so far.
    pub fn hits(&self) -> Vec<Hit> {
        self.hits.lock().unwrap().clone()
    }

    /// Requests seen for `path`.
    pub fn hits_for(&self, path: &str) -> Vec<Hit> {
        self.hits().into_iter().filter(|h| h.path == path).collect()
    }
}

async fn handle(
    mut sock: TcpStream,
    routes: Arc<Mutex<HashMap<String, Behaviour>>>,
    hits: Arc<Mutex<Vec<Hit>>>,
) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(4096);
    let mut tmp = [0u8; 4096];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = sock.read(&mut tmp).await?;
        if n == 0 || buf.len() > 16384 {
            return Ok(());
        }
        buf.extend_from_slice(&tmp[..n]);
    }
    let text = String::from_utf8_lossy(&buf).into_owned();
    let path = text.split_whitespace().nth(1).unwrap_or("/").to_owned();
    let range = text.lines().find_map(|l| {
        l.to_ascii_lowercase()
            .strip_prefix("range:")
            .map(|v| v.trim().to_owned())
    });
    hits.lock().unwrap().push(Hit {
        path: path.clone(),
        range: range.clone(),
    });
    // `bytes=N-` (open) or `bytes=N-M` (closed, inclusive; served by the honest behaviours).
    let spec = range
        .as_deref()
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.split_once('-'));
    let from: Option<usize> = spec.and_then(|(a, _)| a.parse().ok());
    let end: Option<usize> = spec.and_then(|(_, b)| b.parse().ok());
    let behaviour = routes.lock().unwrap().get(&path).cloned();
    match behaviour {
        None => status(&mut sock, 404).await,
        Some(b) => respond(&mut sock, b, from, end).await,
    }
}

async fn status(sock: &mut TcpStream, code: u16) -> std::io::Result<()> {
    let head = format!("HTTP/1.1 {code} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    sock.write_all(head.as_bytes()).await?;
    sock.shutdown().await
}

async fn honest(
    sock: &mut TcpStream,
    data: &[u8],
    from: Option<usize>,
    end: Option<usize>,
) -> std::io::Result<()> {
    let (head, body) = honest_head(data, from, end);
    sock.write_all(head.as_bytes()).await?;
    sock.write_all(body).await?;
    sock.shutdown().await
}

fn honest_head(data: &[u8], from: Option<usize>, end: Option<usize>) -> (String, &[u8]) {
    if let (Some(n), Some(e)) = (from, end) {
        if n <= e && e < data.len() {
            return (
                format!(
                    "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes {n}-{e}/{}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    data.len(),
                    e + 1 - n
                ),
                &data[n..=e],
            );
        }
    }
    match from {
        Some(n) if n >= data.len() => (
            format!("HTTP/1.1 416 X\r\nContent-Range: bytes */{}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n", data.len()),
            &[][..],
        ),
        Some(n) => (
            format!(
                "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes {n}-{}/{}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                data.len() - 1,
                data.len(),
                data.len() - n
            ),
            &data[n..],
        ),
        None => (
            format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", data.len()),
            data,
        ),
    }
}

async fn reset_after(
    sock: &mut TcpStream,
    data: &[u8],
    from: Option<usize>,
    end: Option<usize>,
    n: usize,
) -> std::io::Result<()> {
    let (head, body) = honest_head(data, from, end);
    sock.write_all(head.as_bytes()).await?;
    sock.write_all(&body[..n.min(body.len())]).await?;
    sock.flush().await?;
    tokio::time::sleep(Duration::from_millis(20)).await;
    // SO_LINGER 0: close sends RST instead of FIN.
    sock.set_zero_linger()?;
    Ok(())
}

fn respond(
    sock: &mut TcpStream,
    b: Behaviour,
    from: Option<usize>,
    end: Option<usize>,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = std::io::Result<()>> + Send + '_>> {
    Box::pin(async move {
        match b {
            Behaviour::Serve(d) => honest(sock, &d, from, end).await,
            Behaviour::Status(c) => status(sock, c).await,
            Behaviour::StatusThen {
                status: code,
                times,
                then,
            } => {
                let left = times.load(Ordering::SeqCst);
                if left > 0 {
                    times.store(left - 1, Ordering::SeqCst);
                    status(sock, code).await
                } else {
                    respond(sock, *then, from, end).await
                }
            }
            Behaviour::Endless(d) => {
                sock.write_all(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n")
                    .await?;
                sock.write_all(&d).await?;
                let zeros = vec![0u8; 65536];
                // Bounded: 64 MiB at most, far past any test artifact.
                for _ in 0..1024 {
                    sock.write_all(&zeros).await?;
                }
                Ok(())
            }
            Behaviour::Short(d, n) => {
                sock.write_all(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n")
                    .await?;
                sock.write_all(&d[..n]).await?;
                sock.shutdown().await
            }
            Behaviour::HugeLength(d) => {
                sock.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 9223372036854775808\r\nConnection: close\r\n\r\n").await?;
                sock.write_all(&d).await?;
                sock.shutdown().await
            }
            Behaviour::IgnoreRange(d) => honest(sock, &d, None, None).await,
            Behaviour::WrongRange(d) => {
                let n = from.unwrap_or(0);
                let head = format!(
                    "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes {}-{}/{}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    n + 1,
                    d.len() - 1,
                    d.len(),
                    d.len() - n - 1
                );
                sock.write_all(head.as_bytes()).await?;
                sock.write_all(&d[n + 1..]).await?;
                sock.shutdown().await
            }
            Behaviour::Trickle(d, gap) => {
                let (head, body) = honest_head(&d, from, end);
                sock.write_all(head.as_bytes()).await?;
                for byte in body.iter().take(30) {
                    sock.write_all(&[*byte]).await?;
                    tokio::time::sleep(gap).await;
                }
                Ok(())
            }
            Behaviour::Paced(d, chunk, gap) => {
                let (head, body) = honest_head(&d, from, end);
                sock.write_all(head.as_bytes()).await?;
                for part in body.chunks(chunk.max(1)) {
                    sock.write_all(part).await?;
                    sock.flush().await?;
                    tokio::time::sleep(gap).await;
                }
                sock.shutdown().await
            }
            Behaviour::ResetAfter(d, n) => reset_after(sock, &d, from, end, n).await,
            Behaviour::Chaos {
                data,
                p503,
                preset,
                latency,
                seed,
                faults,
            } => {
                let roll = |salt: u64| {
                    // splitmix64 over a per-route counter: deterministic per route.
                    let mut z = (seed.fetch_add(1, Ordering::SeqCst) as u64)
                        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
                        ^ salt;
                    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
                    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
                    ((z ^ (z >> 31)) % 1000) as f64 / 1000.0
                };
                if roll(17) < 0.5 {
                    tokio::time::sleep(latency).await;
                }
                if roll(31) < p503 {
                    faults.fetch_add(1, Ordering::SeqCst);
                    return status(sock, 503).await;
                }
                if roll(47) < preset {
                    let len = data.len() - from.unwrap_or(0);
                    let cut = (roll(59) * len as f64) as usize;
                    faults.fetch_add(1, Ordering::SeqCst);
                    return reset_after(sock, &data, from, end, cut).await;
                }
                honest(sock, &data, from, end).await
            }
        }
    })
}

/// Deterministic pseudo-random bytes (xorshift), so each artifact's content differs.
pub fn data(len: usize, seed: u64) -> Arc<Vec<u8>> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut v = Vec::with_capacity(len);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    Arc::new(v)
}

/// A signing key and its one-key trust root.
pub struct Signer {
    /// The key.
    pub key: SigningKey,
    /// threshold 1, this key.
    pub trust: TrustRoot,
}

impl Signer {
    /// A fresh key.
    pub fn new() -> Signer {
        let key = signing::generate_key();
        let trust = TrustRoot::new([key.verifying_key()], 1).unwrap();
        Signer { key, trust }
    }

    /// A signed manifest (JSON bytes) for `artifacts` = (name, bytes, mirror URLs), version
    /// `version`, channel stable, arch `arch`, created an hour ago, valid for a day.
    pub fn manifest(
        &self,
        version: &str,
        arch: &str,
        artifacts: &[(&str, &[u8], Vec<String>)],
    ) -> Vec<u8> {
        let now = Utc::now();
        self.manifest_at(
            version,
            arch,
            artifacts,
            now - ChronoDuration::hours(1),
            now + ChronoDuration::days(1),
        )
    }

    /// Like [`Signer::manifest`] with explicit created_at and expires_at.
    pub fn manifest_at(
        &self,
        version: &str,
        arch: &str,
        artifacts: &[(&str, &[u8], Vec<String>)],
        created: chrono::DateTime<Utc>,
        expires: chrono::DateTime<Utc>,
    ) -> Vec<u8> {
        self.manifest_with(version, arch, artifacts, created, expires, None)
    }

    /// A signed manifest v2 like [`Signer::manifest`], every artifact in chunks of
    /// `chunk_size` bytes with the digest of each.
    pub fn manifest_v2(
        &self,
        version: &str,
        arch: &str,
        artifacts: &[(&str, &[u8], Vec<String>)],
        chunk_size: u64,
    ) -> Vec<u8> {
        let now = Utc::now();
        self.manifest_with(
            version,
            arch,
            artifacts,
            now - ChronoDuration::hours(1),
            now + ChronoDuration::days(1),
            Some(chunk_size),
        )
    }

    fn manifest_with(
        &self,
        version: &str,
        arch: &str,
        artifacts: &[(&str, &[u8], Vec<String>)],
        created: chrono::DateTime<Utc>,
        expires: chrono::DateTime<Utc>,
        chunk_size: Option<u64>,
    ) -> Vec<u8> {
        let mut arts = serde_json::Map::new();
        for (name, bytes, urls) in artifacts {
            let mut a = serde_json::json!({
                "filename": name, "size_bytes": bytes.len(),
                "hash": Sha256Digest::of(bytes).to_string(),
                "download_url": name, "urls": urls,
            });
            if let Some(size) = chunk_size {
                let chunks: Vec<String> = bytes
                    .chunks(size as usize)
                    .map(|c| Sha256Digest::of(c).to_string())
                    .collect();
                a["chunk_size"] = size.into();
                a["chunks"] = chunks.into();
            }
            arts.insert((*name).to_owned(), a);
        }
        let mut doc = serde_json::json!({
            "manifest_version": if chunk_size.is_some() { 2 } else { 1 },
            "version": version, "channel": "stable", "arch": arch,
            "created_at": created.to_rfc3339(), "expires_at": expires.to_rfc3339(),
            "cmdline": "console=ttyS0", "artifacts": arts,
        });
        signing::sign_document(&mut doc, &self.key, Utc::now()).unwrap();
        serde_json::to_vec_pretty(&doc).unwrap()
    }
}

/// Fetch options for the fault tests: output in `out`, idle 5 s, total 60 s, `retries` extra
/// tries and rounds, 10 ms backoff, no progress lines.
pub fn test_options(
    trust: &TrustRoot,
    out: std::path::PathBuf,
    retries: u32,
) -> phase_init::fetch::FetchOptions {
    let mut opts = phase_init::fetch::FetchOptions::new(trust.clone(), out);
    opts.idle_timeout = Duration::from_secs(5);
    opts.total_timeout = Duration::from_secs(60);
    opts.retries = retries;
    opts.backoff = Duration::from_millis(10);
    opts.progress = false;
    opts
}

/// Files in `dir` (names), sorted.
pub fn listing(dir: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}
