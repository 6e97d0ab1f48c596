//! Streaming download of one artifact with fallback and resume (DESIGN §7, issue 5
//! "Streaming", "Resume", "Errors and timeouts"; seed 003 "Verification Pipeline Pattern").
//!
//! Bytes are hashed (SHA-256; on a hashing thread when 2+ cores are available,
//! [`super::hashing`]) and counted as they arrive and appended to `<filename>.partial`;
//! a body is never allowed past `size_bytes`. When a source fails, the next one continues from
//! the byte count reached with `Range: bytes=<offset>-` and must answer 206 with exactly
//! `Content-Range: bytes <offset>-<size-1>/<size>`; a 200 restarts from byte 0 (never appended).
//! Sources are tried in rounds (at most `retries + 1`) until the total deadline.
//!
//! Blame, manifest v2 with two or more sources (issue 19 §1; a single source is streamed and
//! checked as in v1, hashing each byte once): every chunk is checked against the signed chunk
//! list as it completes ([`super::pieces`]) and written only when it matches, so resume points are chunk
//! boundaries and a bad chunk is pinned on the one source that sent it: that source is dropped
//! for this artifact (`fetch <artifact>: chunk <i> (bytes <offset>..) from <url> does not match
//! the manifest; dropping the source, resuming at byte <offset> from the next source`, or `no
//! other source left`), the verified chunks stay,
//! and the next source resumes at the bad chunk. The whole-file hash is still checked at the end.
//!
//! Blame, manifest v1: a hash mismatch is only known at the end. If one source delivered every
//! byte, it is dropped. If several contributed (after a resume), nobody can be blamed, so resume
//! is switched off for this artifact: each remaining source must then deliver the whole file
//! alone, which pins the next mismatch on exactly one source.
//!
//! Liveness (issue 15 §5): a source below the minimum rate ([`super::rate`], default 64 KiB/s
//! over 10 s) is cut off and the next source resumes from the verified offset, so one slow
//! source cannot spend the shared total deadline. The floor applies only while another source
//! that is neither failed for good nor slow is left; a slow source is skipped from then on, and
//! tried again without the floor only when nothing else is left (a slow source beats none).
//! Each cut prints `fetch <artifact>: dropping slow source <url>: <r> KiB/s over <w>ms, minimum
//! <m> KiB/s; resuming at byte <n> from the next source`.

use std::collections::BTreeSet;
use std::fmt;
use std::path::Path;
use std::time::Duration;

use phase_protocol::{Artifact, Sha256Digest};
use reqwest::header::{CONTENT_LENGTH, CONTENT_RANGE, RANGE};
use reqwest::{StatusCode, Url};
use tokio::time::{timeout_at, Instant};

use super::hashing::StreamHasher;
use super::pieces::ChunkGate;
use super::resume::{self, ChunkMap};

use super::partial::{LocalIoError, Partial};
use super::progress::Meter;
use super::rate::{kib, MinRate, RateWindow};
use crate::log;

/// Why one source failed for one attempt (listed in the final error).
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// An HTTP status that means "not here" (404, 410) or another refusal (4xx, 3xx left over).
    #[error("HTTP {0}")]
    Status(StatusCode),
    /// 5xx answers until the retries ran out.
    #[error("HTTP {status} after {tries} tries")]
    ServerError {
        /// The last status.
        status: StatusCode,
        /// Requests made to this source in this turn.
        tries: u32,
    },
    /// The request could not be sent or its headers not read (connect, TLS, redirect policy).
    #[error("request failed")]
    Request(#[source] reqwest::Error),
    /// The body broke off (connection reset, truncated chunk).
    #[error("body broke off at byte {offset}")]
    Body {
        /// Bytes of the artifact verified-so-far when it broke.
        offset: u64,
        /// The transport error.
        #[source]
        source: reqwest::Error,
    },
    /// No byte arrived for the idle timeout.
    #[error("no data for {ms}ms (idle timeout) at byte {offset}")]
    Idle {
        /// The idle timeout in ms.
        ms: u128,
        /// Bytes received so far.
        offset: u64,
    },
    /// The source stayed below the minimum rate over a whole window (issue 15 §5).
    #[error(
        "too slow: {} KiB/s over {window_ms}ms, minimum {} KiB/s (at byte {offset})",
        kib(*.rate),
        kib(*.min_rate)
    )]
    TooSlow {
        /// Measured average in bytes per second.
        rate: u64,
        /// The window measured, in ms.
        window_ms: u128,
        /// The floor in bytes per second.
        min_rate: u64,
        /// Bytes verified-so-far when it was cut (the next source resumes there).
        offset: u64,
    },
    /// The total timeout for this artifact passed.
    #[error("total timeout of {ms}ms reached")]
    Total {
        /// The total timeout in ms.
        ms: u128,
    },
    /// `Content-Length` does not match the bytes still needed.
    #[error("Content-Length {got} but {expected} bytes expected")]
    ContentLength {
        /// The header as sent.
        got: String,
        /// Bytes the manifest says remain.
        expected: u64,
    },
    /// A 206 whose `Content-Range` is not the range asked for.
    #[error("Content-Range {got:?} but {expected:?} expected")]
    ContentRange {
        /// The header as sent (None if missing).
        got: Option<String>,
        /// What was required.
        expected: String,
    },
    /// The body went past `size_bytes` (an endless or padded body).
    #[error("body longer than the manifest's {size} bytes")]
    TooLong {
        /// `size_bytes`.
        size: u64,
    },
    /// The body ended before `size_bytes`.
    #[error("body ended at byte {got} of {size}")]
    Short {
        /// Bytes received in total.
        got: u64,
        /// `size_bytes`.
        size: u64,
    },
    /// A v2 chunk's SHA-256 is not the manifest's (the chunk was not written).
    #[error("chunk {index} (bytes {offset}..) hash mismatch: got {got}, manifest says {expected}")]
    ChunkMismatch {
        /// Index of the chunk.
        index: u64,
        /// Its first byte's offset.
        offset: u64,
        /// The digest of the bytes received.
        got: Sha256Digest,
        /// The manifest's digest for the chunk.
        expected: Sha256Digest,
    },
    /// A peer's have-map (issue 19 §3) does not parse.
    #[error("bad have-map: {0}")]
    HaveMap(#[from] phase_protocol::chunks::HaveError),
    /// All bytes arrived but their SHA-256 is not the manifest's.
    #[error("hash mismatch: got {got}, manifest says {expected}")]
    HashMismatch {
        /// The digest of the bytes received.
        got: Sha256Digest,
        /// The manifest's digest.
        expected: Sha256Digest,
    },
}

/// One failed attempt: the URL and why.
#[derive(Debug)]
pub struct SourceFailure {
    /// The URL tried.
    pub url: Url,
    /// What went wrong.
    pub error: SourceError,
}

impl fmt::Display for SourceFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.url, crate::log::error_chain(&self.error))
    }
}

/// How a failure affects the source and the bytes so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Fate {
    /// Keep the source for a later round; keep the verified offset.
    Retry,
    /// Never ask this source again; keep the offset.
    Drop,
    /// Never ask this source again; throw away all bytes (they may be poisoned).
    DropAndRestart,
    /// Too slow: skip this source while a usable one is left; keep the offset.
    Slow,
}

impl SourceError {
    /// What this failure means for its source (and, streaming, for the bytes so far).
    pub(super) fn fate(&self) -> Fate {
        match self {
            SourceError::ServerError { .. }
            | SourceError::Request(_)
            | SourceError::Body { .. }
            | SourceError::Idle { .. }
            | SourceError::Short { .. }
            | SourceError::Total { .. } => Fate::Retry,
            SourceError::Status(_)
            | SourceError::ContentLength { .. }
            | SourceError::ContentRange { .. }
            | SourceError::ChunkMismatch { .. }
            | SourceError::HaveMap(_) => Fate::Drop,
            SourceError::TooLong { .. } | SourceError::HashMismatch { .. } => Fate::DropAndRestart,
            SourceError::TooSlow { .. } => Fate::Slow,
        }
    }
}

/// Timeouts and retries for one artifact.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Longest wait for the next bytes (headers or body).
    pub idle: Duration,
    /// Deadline for the whole artifact, all sources included.
    pub deadline: Instant,
    /// The total timeout the deadline came from (for messages).
    pub total: Duration,
    /// Extra tries on 5xx per source turn, and extra rounds over all sources.
    pub retries: u32,
    /// First backoff; doubles per retry, capped at 5 s.
    pub backoff: Duration,
    /// The minimum-rate floor of each artifact source ([`super::rate`]); off for a source with
    /// no usable alternative left, and not used for the manifest ([`fetch_capped`]).
    pub min_rate: MinRate,
}

/// The outcome of [`download`].
#[derive(Debug)]
pub enum Outcome {
    /// Verified and renamed: the open file and the failures seen on the way.
    Verified {
        /// The final file, rewound to byte 0.
        file: std::fs::File,
        /// Attempts that failed before success.
        failures: Vec<SourceFailure>,
    },
    /// Every source failed; nothing is left on disk.
    Failed(Vec<SourceFailure>),
}

/// The running state of one download.
struct Progress<'a> {
    part: Partial,
    hasher: StreamHasher,
    /// Bytes written and hashed (verified chunks only, for v2): where a resume starts.
    offset: u64,
    size: u64,
    contributors: BTreeSet<usize>,
    meter: &'a mut Meter,
    /// v2: holds each chunk back until it matches ([`super::pieces`]); `None` for v1.
    gate: Option<ChunkGate<'a>>,
    /// v2: the chunk map beside the partial file ([`super::resume`]); `None` for v1.
    map: Option<ChunkMap>,
    /// v2: the chunk size in bytes (0 for v1).
    chunk_size: u64,
    /// Reused list of checked bytes from the gate.
    ready: Vec<bytes::Bytes>,
}

impl Progress<'_> {
    fn restart(&mut self) -> Result<(), LocalIoError> {
        self.part.reset()?;
        self.hasher = StreamHasher::new();
        self.offset = 0;
        self.contributors.clear();
        if let Some(g) = self.gate.as_mut() {
            g.reset_to(0);
        }
        if let Some(m) = self.map.as_mut() {
            m.clear()?;
        }
        Ok(())
    }

    /// The SHA-256 of every byte hashed so far; the hasher starts afresh. Errors: the hashing
    /// thread was lost ([`LocalIoError`] with op `hash`).
    fn whole_digest(&mut self) -> Result<Sha256Digest, LocalIoError> {
        std::mem::take(&mut self.hasher)
            .finish()
            .map_err(|lost| LocalIoError {
                op: "hash",
                path: self.part.path().to_path_buf(),
                source: std::io::Error::other(lost),
            })
    }

    /// Bytes received in this attempt's position: written plus held back by the gate.
    fn position(&self) -> u64 {
        self.offset + self.gate.as_ref().map_or(0, ChunkGate::pending_len)
    }

    /// Hashes and writes `chunk` (v1), or passes it through the gate and hashes and writes the
    /// chunks it releases (v2).
    fn take(&mut self, chunk: bytes::Bytes) -> Result<(), AttemptError> {
        let Some(gate) = self.gate.as_mut() else {
            self.hasher.update(&chunk);
            self.part.write(&chunk)?;
            self.offset += chunk.len() as u64;
            return Ok(());
        };
        let checked = gate.feed(chunk, &mut self.ready);
        let before = self.offset;
        for piece in self.ready.drain(..) {
            self.hasher.update(&piece);
            self.part.write(&piece)?;
            self.offset += piece.len() as u64;
        }
        // Released bytes are whole chunks: record each one completed in the chunk map.
        if let (Some(map), true) = (self.map.as_mut(), self.chunk_size > 0) {
            for index in before / self.chunk_size..self.offset.div_ceil(self.chunk_size) {
                map.mark(index)?;
            }
        }
        checked.map_err(|m| {
            AttemptError::Source(SourceError::ChunkMismatch {
                index: m.index,
                offset: m.offset,
                got: m.got,
                expected: m.expected,
            })
        })
    }
}

/// Attempt error: a source failure or a local one (which ends the whole download).
enum AttemptError {
    Source(SourceError),
    Local(LocalIoError),
}

impl From<LocalIoError> for AttemptError {
    fn from(e: LocalIoError) -> Self {
        AttemptError::Local(e)
    }
}

impl From<SourceError> for AttemptError {
    fn from(e: SourceError) -> Self {
        AttemptError::Source(e)
    }
}

fn backoff(limits: &Limits, n: u32) -> Duration {
    limits
        .backoff
        .saturating_mul(1u32 << n.min(6))
        .min(Duration::from_secs(5))
}

/// Downloads `artifact` from `sources` into `<dir>/<filename>` (module docs for the rules).
///
/// # Errors
/// [`LocalIoError`] when the local file system fails (ENOSPC, ...): the partial is removed and
/// no other source is tried. Source failures are not errors but [`Outcome::Failed`].
pub async fn download(
    client: &reqwest::Client,
    artifact: &Artifact,
    sources: &[Url],
    dir: &Path,
    limits: Limits,
    meter: &mut Meter,
) -> Result<Outcome, LocalIoError> {
    let final_path = dir.join(&artifact.filename);
    // An older file at the final path is not verified by this run: it must not survive a failure.
    match std::fs::remove_file(&final_path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(LocalIoError {
                op: "remove",
                path: final_path,
                source,
            })
        }
    }
    let name = meter.name().to_owned();
    // Chunks are checked while streaming only when there is a second source to blame a bad one
    // against and resume on: with one source the whole-file hash alone decides, as in v1, and
    // the bytes are hashed once (checking chunks too doubles the SHA-256 work: +0.45 s of a
    // TCG boot's fetch stage for its 20 MB release).
    let chunking = artifact.chunking().filter(|_| sources.len() >= 2);
    let resumed = resume::open(dir, &name, artifact, chunking.is_some())?;
    let chunk_size = chunking.map_or(0, |(c, _)| c);
    // A resumed v2 partial continues after its verified prefix: those bytes are hashed again
    // into the whole-file digest (read back), and appending starts there.
    let prefix = resumed.prefix_bytes(artifact.size_bytes, chunk_size.max(1));
    let mut part = resumed.part;
    let mut hasher = StreamHasher::new();
    if prefix > 0 {
        let mut buf = vec![0u8; 1 << 20];
        let mut at = 0u64;
        while at < prefix {
            let n = (prefix - at).min(buf.len() as u64) as usize;
            part.read_exact_at(at, &mut buf[..n])?;
            hasher.update(&bytes::Bytes::copy_from_slice(&buf[..n]));
            at += n as u64;
        }
    }
    part.seek_to(prefix)?;
    let mut p = Progress {
        part,
        hasher,
        offset: prefix,
        size: artifact.size_bytes,
        contributors: BTreeSet::new(),
        meter,
        gate: chunking
            .map(|(chunk_size, list)| ChunkGate::new(artifact.size_bytes, chunk_size, list)),
        ready: Vec::new(),
        map: resumed.map,
        chunk_size,
    };
    let outcome = stream(client, artifact, sources, &final_path, limits, &mut p).await;
    match outcome {
        Ok(Outcome::Failed(f)) => {
            let Progress { part, map, .. } = p;
            resume::keep_or_remove(part, map);
            Ok(Outcome::Failed(f))
        }
        other => other,
    }
}

/// The source loop of [`download`] over the prepared progress `p`.
async fn stream(
    client: &reqwest::Client,
    artifact: &Artifact,
    sources: &[Url],
    final_path: &Path,
    limits: Limits,
    p: &mut Progress<'_>,
) -> Result<Outcome, LocalIoError> {
    if p.offset == p.size && p.size > 0 {
        // A resumed partial already holds every chunk, each verified again: check the whole.
        if p.whole_digest()? == artifact.hash {
            let file = p.part.finish(final_path)?;
            return Ok(Outcome::Verified {
                file,
                failures: Vec::new(),
            });
        }
        p.restart()?;
    }
    let mut failures = Vec::new();
    let mut dropped = vec![false; sources.len()];
    let mut slow = vec![false; sources.len()];
    let mut whole_file_only = false;

    for round in 0..=limits.retries {
        if round > 0 {
            let wait = backoff(&limits, round - 1);
            if Instant::now() + wait >= limits.deadline {
                break;
            }
            tokio::time::sleep(wait).await;
        }
        let mut tried = false;
        for (i, url) in sources.iter().enumerate() {
            if dropped[i] {
                continue;
            }
            // Somewhere else to go: another source neither dropped nor found slow.
            let alternative = (0..sources.len()).any(|j| j != i && !dropped[j] && !slow[j]);
            if slow[i] && alternative {
                continue;
            }
            if slow[i] {
                log::line(&format!(
                    "fetch {}: no other source left; retrying slow source {url} without the \
                     rate floor",
                    p.meter.name()
                ));
            }
            if Instant::now() >= limits.deadline {
                failures.push(SourceFailure {
                    url: url.clone(),
                    error: SourceError::Total {
                        ms: limits.total.as_millis(),
                    },
                });
                return Ok(Outcome::Failed(failures));
            }
            tried = true;
            if whole_file_only && p.offset > 0 {
                p.restart()?;
            }
            let started_at = p.offset;
            let result = attempt_with_5xx_retries(client, url, p, &limits, alternative).await;
            if p.offset > started_at || p.offset == p.size {
                p.contributors.insert(i);
            }
            let error = match result {
                Ok(()) => {
                    let got = p.whole_digest()?;
                    if got == artifact.hash {
                        let file = p.part.finish(final_path)?;
                        return Ok(Outcome::Verified { file, failures });
                    }
                    SourceError::HashMismatch {
                        got,
                        expected: artifact.hash,
                    }
                }
                Err(AttemptError::Local(e)) => return Err(e),
                Err(AttemptError::Source(e)) => e,
            };
            if let SourceError::ChunkMismatch { index, offset, .. } = &error {
                let next = if (0..sources.len()).any(|j| j != i && !dropped[j]) {
                    format!("resuming at byte {} from the next source", p.offset)
                } else {
                    "no other source left".to_owned()
                };
                log::line(&format!(
                    "fetch {}: chunk {index} (bytes {offset}..) from {url} does not match the \
                     manifest; dropping the source, {next}",
                    p.meter.name(),
                ));
            }
            match error.fate() {
                Fate::Retry => {}
                Fate::Drop => dropped[i] = true,
                Fate::Slow => {
                    slow[i] = true;
                    if let SourceError::TooSlow {
                        rate,
                        window_ms,
                        min_rate,
                        offset,
                    } = &error
                    {
                        log::line(&format!(
                            "fetch {}: dropping slow source {url}: {} KiB/s over {window_ms}ms, \
                             minimum {} KiB/s; resuming at byte {offset} from the next source",
                            p.meter.name(),
                            kib(*rate),
                            kib(*min_rate)
                        ));
                    }
                }
                Fate::DropAndRestart => {
                    let blamed = p.contributors.len() <= 1 || whole_file_only;
                    if matches!(error, SourceError::HashMismatch { .. }) && !blamed {
                        // Several sources contributed: nobody can be blamed; go whole-file only.
                        whole_file_only = true;
                    } else {
                        dropped[i] = true;
                    }
                    p.restart()?;
                }
            }
            failures.push(SourceFailure {
                url: url.clone(),
                error,
            });
        }
        if !tried {
            break;
        }
    }
    Ok(Outcome::Failed(failures))
}

async fn attempt_with_5xx_retries(
    client: &reqwest::Client,
    url: &Url,
    p: &mut Progress<'_>,
    limits: &Limits,
    rate_floor: bool,
) -> Result<(), AttemptError> {
    let mut tries = 0;
    loop {
        tries += 1;
        match attempt(client, url, p, limits, rate_floor).await {
            Err(AttemptError::Source(SourceError::Status(status))) if status.is_server_error() => {
                let wait = backoff(limits, tries - 1);
                if tries > limits.retries || Instant::now() + wait >= limits.deadline {
                    return Err(SourceError::ServerError { status, tries }.into());
                }
                tokio::time::sleep(wait).await;
            }
            other => return other,
        }
    }
}

/// Waits for `fut` until the idle timeout or the total deadline, whichever is first.
async fn bounded<T>(
    fut: impl std::future::Future<Output = T>,
    limits: &Limits,
    offset: u64,
) -> Result<T, SourceError> {
    let idle_at = Instant::now() + limits.idle;
    let at = idle_at.min(limits.deadline);
    timeout_at(at, fut).await.map_err(|_| {
        if at == limits.deadline && limits.deadline <= idle_at {
            SourceError::Total {
                ms: limits.total.as_millis(),
            }
        } else {
            SourceError::Idle {
                ms: limits.idle.as_millis(),
                offset,
            }
        }
    })
}

/// What [`next_chunk`] saw first.
enum Next {
    /// A chunk, or `None` at the end of the body.
    Chunk(Option<bytes::Bytes>),
    /// The rate window ended before any chunk arrived.
    WindowEnd,
}

/// Waits for the next body chunk until `idle_at`, the total deadline or the end of the rate
/// window `window_end`, whichever is first.
async fn next_chunk(
    resp: &mut reqwest::Response,
    limits: &Limits,
    idle_at: Instant,
    window_end: Option<Instant>,
    offset: u64,
) -> Result<Next, SourceError> {
    let at = idle_at.min(limits.deadline);
    let wake = window_end.map_or(at, |w| w.min(at));
    match timeout_at(wake, resp.chunk()).await {
        Ok(Ok(chunk)) => Ok(Next::Chunk(chunk)),
        Ok(Err(source)) => Err(SourceError::Body { offset, source }),
        // Woken for the rate window only while the idle and total limits still hold.
        Err(_) if Instant::now() < at => Ok(Next::WindowEnd),
        Err(_) if at == limits.deadline && limits.deadline <= idle_at => Err(SourceError::Total {
            ms: limits.total.as_millis(),
        }),
        Err(_) => Err(SourceError::Idle {
            ms: limits.idle.as_millis(),
            offset,
        }),
    }
}

/// One request to one source, streaming into `p` (module docs). With `rate_floor` the source
/// is cut with [`SourceError::TooSlow`] when a window ends below `limits.min_rate`.
async fn attempt(
    client: &reqwest::Client,
    url: &Url,
    p: &mut Progress<'_>,
    limits: &Limits,
    rate_floor: bool,
) -> Result<(), AttemptError> {
    if let Some(g) = p.gate.as_mut() {
        // Held-back bytes of another attempt are never mixed with this one's.
        g.reset_to(p.offset);
    }
    let mut req = client.get(url.clone());
    if p.offset > 0 {
        req = req.header(RANGE, format!("bytes={}-", p.offset));
    }
    let mut resp = bounded(req.send(), limits, p.offset)
        .await?
        .map_err(SourceError::Request)?;
    let status = resp.status();
    match status {
        StatusCode::OK => {
            if p.offset > 0 {
                // The server ignored Range: start over, never append a full body to a prefix.
                p.restart()?;
            }
        }
        StatusCode::PARTIAL_CONTENT if p.offset > 0 => {
            let expected = format!("bytes {}-{}/{}", p.offset, p.size - 1, p.size);
            let got = resp
                .headers()
                .get(CONTENT_RANGE)
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
            if got.as_deref() != Some(expected.as_str()) {
                return Err(SourceError::ContentRange { got, expected }.into());
            }
        }
        other => return Err(SourceError::Status(other).into()),
    }
    let remaining = p.size - p.offset;
    if let Some(cl) = resp.headers().get(CONTENT_LENGTH) {
        let text = String::from_utf8_lossy(cl.as_bytes()).into_owned();
        if text.trim().parse::<u64>().ok() != Some(remaining) {
            return Err(SourceError::ContentLength {
                got: text,
                expected: remaining,
            }
            .into());
        }
    }
    let mut window = if rate_floor {
        RateWindow::start(limits.min_rate, Instant::now(), p.offset)
    } else {
        None
    };
    let mut idle_at = Instant::now() + limits.idle;
    loop {
        let window_end = window.as_ref().map(RateWindow::ends_at);
        match next_chunk(&mut resp, limits, idle_at, window_end, p.position()).await? {
            Next::Chunk(None) => break,
            Next::Chunk(Some(chunk)) => {
                if chunk.len() as u64 > p.size - p.position() {
                    return Err(SourceError::TooLong { size: p.size }.into());
                }
                p.take(chunk)?;
                p.meter.tick(p.position());
                idle_at = Instant::now() + limits.idle;
            }
            Next::WindowEnd => {}
        }
        if p.position() == p.size {
            // Every byte is here: the pace no longer matters (and a window left behind would
            // wake the wait above at once, over and over, while the body's end is awaited).
            window = None;
        } else if let Some(w) = window.as_mut() {
            w.check(Instant::now(), p.position())
                .map_err(|slow| SourceError::TooSlow {
                    rate: slow.rate,
                    window_ms: slow.window_ms,
                    min_rate: slow.min_rate,
                    offset: p.offset,
                })?;
        }
    }
    if p.position() < p.size {
        return Err(SourceError::Short {
            got: p.position(),
            size: p.size,
        }
        .into());
    }
    Ok(())
}

/// Why [`fetch_capped`] failed.
#[derive(Debug)]
pub enum CappedError {
    /// The body is larger than the cap; at least this many bytes were announced or received.
    TooLarge(usize),
    /// The source failed.
    Source(SourceError),
}

/// GETs a small document (the manifest) into memory, refusing bodies over `cap` bytes (by
/// `Content-Length` before reading, or as soon as byte `cap + 1` arrives). 5xx is retried with
/// backoff up to `limits.retries` times, connection errors likewise.
///
/// # Errors
/// [`CappedError::TooLarge`], [`CappedError::Source`] with the last failure.
pub async fn fetch_capped(
    client: &reqwest::Client,
    url: &Url,
    cap: usize,
    limits: &Limits,
) -> Result<Vec<u8>, CappedError> {
    let mut tries = 0u32;
    loop {
        tries += 1;
        let err = match capped_once(client, url, cap, limits).await {
            Ok(body) => return Ok(body),
            Err(CappedError::TooLarge(n)) => return Err(CappedError::TooLarge(n)),
            Err(CappedError::Source(e)) => e,
        };
        let retry = matches!(
            err,
            SourceError::Request(_) | SourceError::Body { .. } | SourceError::Idle { .. }
        ) || matches!(err, SourceError::Status(s) if s.is_server_error());
        let wait = backoff(limits, tries - 1);
        if !retry || tries > limits.retries || Instant::now() + wait >= limits.deadline {
            return Err(CappedError::Source(match err {
                SourceError::Status(status) if status.is_server_error() => {
                    SourceError::ServerError { status, tries }
                }
                other => other,
            }));
        }
        tokio::time::sleep(wait).await;
    }
}

async fn capped_once(
    client: &reqwest::Client,
    url: &Url,
    cap: usize,
    limits: &Limits,
) -> Result<Vec<u8>, CappedError> {
    let src = CappedError::Source;
    let resp = bounded(client.get(url.clone()).send(), limits, 0)
        .await
        .map_err(src)?;
    let mut resp = resp.map_err(|e| src(SourceError::Request(e)))?;
    if resp.status() != StatusCode::OK {
        return Err(src(SourceError::Status(resp.status())));
    }
    if let Some(len) = resp.content_length() {
        if len > cap as u64 {
            return Err(CappedError::TooLarge(
                usize::try_from(len).unwrap_or(usize::MAX),
            ));
        }
    }
    let mut body = Vec::with_capacity(64 * 1024);
    loop {
        let chunk = bounded(resp.chunk(), limits, body.len() as u64)
            .await
            .map_err(src)?;
        match chunk {
            Ok(Some(c)) => {
                if body.len() + c.len() > cap {
                    return Err(CappedError::TooLarge(body.len() + c.len()));
                }
                body.extend_from_slice(&c);
            }
            Ok(None) => return Ok(body),
            Err(source) => {
                return Err(src(SourceError::Body {
                    offset: body.len() as u64,
                    source,
                }))
            }
        }
    }
}
