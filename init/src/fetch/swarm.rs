//! Multi-source download of one manifest-v2 artifact (issue 19 §2): its chunks are fetched from
//! every source at once with HTTP Range requests, each checked against the signed chunk list
//! before it is written at its offset.
//!
//! Rules:
//! - **Order**: a source with a free request slot gets a missing chunk chosen at random (every
//!   source is a full provider today, so rarest-first reduces to random order; peers that hold
//!   part of an artifact and a have-bitmap, issue 19 §3, are not built).
//! - **Bounds**: at most `per_source` requests in flight per source and `max_in_flight` in
//!   all; a request holds at most one chunk (`chunk_size` bytes) in memory.
//! - **Endgame**: once no chunk is left unrequested, a source with a free slot asks for a chunk
//!   another source is still fetching (at most two copies); the first good copy wins and the
//!   other request is cancelled. A slow source cannot hold the last chunks back.
//! - **Blame**: a chunk whose SHA-256 differs pins the source that sent it: it is dropped for
//!   this artifact (`fetch <artifact>: chunk <i> (bytes <offset>..) from <url> does not match
//!   the manifest; dropping the source`) and the chunk goes to another source. A source that
//!   answers wrongly (4xx, a wrong `Content-Range` or length, a body past its range) is dropped;
//!   one that breaks off, stalls past the idle timeout or answers 5xx more than `retries + 1`
//!   times in a row is dropped; its chunks are requested again elsewhere.
//! - **End**: the whole-file SHA-256 is still checked over the finished file; only then is it
//!   renamed to its final path. `fetch <artifact>: <n> chunks from <url>` names what each
//!   source delivered.

use std::collections::HashMap;
use std::path::Path;

use bytes::{Bytes, BytesMut};
use futures::future::{AbortHandle, Abortable};
use futures::stream::{FuturesUnordered, StreamExt};
use phase_protocol::chunks::chunk_span;
use phase_protocol::{Artifact, Sha256Digest};
use rand::Rng;
use reqwest::header::{CONTENT_LENGTH, CONTENT_RANGE, RANGE};
use reqwest::{StatusCode, Url};
use sha2::{Digest, Sha256};
use tokio::time::{timeout_at, Instant};

use super::download::{Fate, Limits, Outcome, SourceError, SourceFailure};
use super::partial::{LocalIoError, Partial};
use super::progress::Meter;
use super::resume::{self, ChunkMap};
use crate::log;

/// Request bounds of a multi-source download.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SwarmOptions {
    /// Requests in flight per source (default 2).
    pub per_source: usize,
    /// Requests in flight in all (default 8); with 4 MiB chunks, at most 32 MiB held.
    pub max_in_flight: usize,
}

impl Default for SwarmOptions {
    fn default() -> Self {
        SwarmOptions {
            per_source: 2,
            max_in_flight: 8,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    Missing,
    /// Requested from this many sources at once (1, or 2 in the endgame).
    InFlight(u8),
    Done,
}

#[derive(Debug)]
struct Source {
    url: Url,
    in_flight: usize,
    /// Why it is out for this artifact; `None` while usable.
    out: Option<&'static str>,
    /// Failed requests in a row.
    fails: u32,
    /// Chunks it delivered that matched.
    served: u64,
}

type Done = (
    usize,
    u64,
    Result<Result<Bytes, SourceError>, futures::future::Aborted>,
);

/// Downloads the v2 `artifact` (its chunk list is required: `None` fails at once) from all
/// `sources` at once into `<dir>/<filename>` (module docs for the rules).
///
/// # Errors
/// [`LocalIoError`] when the local file system fails (ENOSPC, ...): the partial is removed.
/// Source failures are not errors but [`Outcome::Failed`] when no source is left.
pub async fn swarm_download(
    client: &reqwest::Client,
    artifact: &Artifact,
    sources: &[Url],
    dir: &Path,
    limits: Limits,
    opts: SwarmOptions,
    meter: &mut Meter,
) -> Result<Outcome, LocalIoError> {
    let final_path = dir.join(&artifact.filename);
    let _ = std::fs::remove_file(&final_path);
    let Some(first) = sources.first() else {
        return Ok(Outcome::Failed(Vec::new()));
    };
    if artifact.chunking().is_none() {
        return Ok(Outcome::Failed(Vec::new()));
    }
    let name = meter.name().to_owned();
    let resumed = resume::open(dir, &name, artifact, true)?;
    let mut job = Job {
        part: resumed.part,
        map: resumed.map,
        // Chunks a previous fetch verified (checked again by `resume::open`) are not asked for.
        chunks: resumed
            .verified
            .iter()
            .map(|v| if *v { Chunk::Done } else { Chunk::Missing })
            .collect(),
        failures: Vec::new(),
    };
    job.part.set_len(artifact.size_bytes)?;
    let whole = run(client, artifact, sources, limits, opts, meter, &mut job).await?;
    let Job {
        mut part,
        map,
        mut failures,
        ..
    } = job;
    match whole {
        Some(got) if got == artifact.hash => {
            let file = part.finish(&final_path)?;
            drop(map);
            Ok(Outcome::Verified { file, failures })
        }
        Some(got) => {
            // Every chunk matched but the whole file does not: the signed chunk list and hash
            // disagree. Fail closed; no source is to blame, and nothing is kept to resume from.
            failures.push(SourceFailure {
                url: first.clone(),
                error: SourceError::HashMismatch {
                    got,
                    expected: artifact.hash,
                },
            });
            drop((part, map));
            Ok(Outcome::Failed(failures))
        }
        None => {
            resume::keep_or_remove(part, map);
            Ok(Outcome::Failed(failures))
        }
    }
}

/// The partial file, its chunk map, the chunk states and the failures of one swarm download.
struct Job {
    part: Partial,
    map: Option<ChunkMap>,
    chunks: Vec<Chunk>,
    failures: Vec<SourceFailure>,
}

/// The request loop of [`swarm_download`]: `Some(whole-file digest)` once every chunk is
/// verified and written, `None` when no source is left or the deadline passed (the reason is
/// in `job.failures`).
async fn run(
    client: &reqwest::Client,
    artifact: &Artifact,
    sources: &[Url],
    limits: Limits,
    opts: SwarmOptions,
    meter: &mut Meter,
    job: &mut Job,
) -> Result<Option<Sha256Digest>, LocalIoError> {
    let Some((chunk_size, expected)) = artifact.chunking() else {
        return Ok(None);
    };
    let size = artifact.size_bytes;
    let Job {
        part,
        map,
        chunks,
        failures,
    } = job;
    let mut srcs: Vec<Source> = sources
        .iter()
        .map(|url| Source {
            url: url.clone(),
            in_flight: 0,
            out: None,
            fails: 0,
            served: 0,
        })
        .collect();
    let resumed = chunks.iter().filter(|c| **c == Chunk::Done).count();
    log::line(&format!(
        "fetch {}: {} chunks of {chunk_size} bytes from {} sources{}",
        meter.name(),
        expected.len(),
        srcs.len(),
        if resumed > 0 {
            format!(" ({resumed} already verified)")
        } else {
            String::new()
        }
    ));
    let mut running = FuturesUnordered::new();
    let mut requests: HashMap<(usize, u64), AbortHandle> = HashMap::new();
    let mut whole = Sha256::new();
    let mut hashed = hash_in_order(&mut whole, part, chunks, 0, size, chunk_size)?;
    let mut done_bytes: u64 = (0..chunks.len() as u64)
        .filter(|i| chunks[*i as usize] == Chunk::Done)
        .filter_map(|i| chunk_span(size, chunk_size, i))
        .map(|(_, len)| len)
        .sum();
    let mut rng = rand::thread_rng();
    let mut next_source = 0usize;

    loop {
        while running.len() < opts.max_in_flight.max(1) {
            let Some((s, c)) = pick(chunks, &srcs, &requests, opts, &mut next_source, &mut rng)
            else {
                break;
            };
            let Some((offset, len)) = chunk_span(size, chunk_size, c) else {
                break;
            };
            chunks[c as usize] = match chunks[c as usize] {
                Chunk::InFlight(n) => Chunk::InFlight(n + 1),
                _ => Chunk::InFlight(1),
            };
            srcs[s].in_flight += 1;
            let (handle, reg) = AbortHandle::new_pair();
            requests.insert((s, c), handle);
            let want = expected[c as usize];
            let req = fetch_chunk(
                client,
                srcs[s].url.clone(),
                c,
                (offset, len),
                size,
                want,
                limits,
            );
            running.push(async move { (s, c, Abortable::new(req, reg).await) as Done });
        }
        if chunks.iter().all(|c| *c == Chunk::Done) {
            break;
        }
        let next = match timeout_at(limits.deadline, running.next()).await {
            Ok(Some(n)) => n,
            Ok(None) => break,
            Err(_) => {
                failures.push(SourceFailure {
                    url: srcs[0].url.clone(),
                    error: SourceError::Total {
                        ms: limits.total.as_millis(),
                    },
                });
                return Ok(None);
            }
        };
        let (s, c, result) = next;
        requests.remove(&(s, c));
        srcs[s].in_flight -= 1;
        let copies = match chunks[c as usize] {
            Chunk::InFlight(n) => n - 1,
            _ => 0,
        };
        let restore = |chunks: &mut Vec<Chunk>| {
            if chunks[c as usize] != Chunk::Done {
                chunks[c as usize] = if copies == 0 {
                    Chunk::Missing
                } else {
                    Chunk::InFlight(copies)
                };
            }
        };
        match result {
            // Cancelled: another copy of the chunk won.
            Err(futures::future::Aborted) => restore(chunks),
            Ok(Ok(bytes)) => {
                if chunks[c as usize] == Chunk::Done {
                    continue;
                }
                let (offset, _) = chunk_span(size, chunk_size, c).unwrap_or((0, 0));
                part.write_at(offset, &bytes)?;
                if let Some(m) = map.as_mut() {
                    m.mark(c)?;
                }
                chunks[c as usize] = Chunk::Done;
                for other in 0..srcs.len() {
                    if let Some(h) = requests.get(&(other, c)) {
                        h.abort();
                    }
                }
                srcs[s].served += 1;
                srcs[s].fails = 0;
                done_bytes += bytes.len() as u64;
                meter.tick(done_bytes);
                hashed = hash_in_order(&mut whole, part, chunks, hashed, size, chunk_size)?;
            }
            Ok(Err(error)) => {
                restore(chunks);
                let src = &mut srcs[s];
                match (&error, error.fate()) {
                    (SourceError::ChunkMismatch { index, offset, .. }, _) => {
                        log::line(&format!(
                            "fetch {}: chunk {index} (bytes {offset}..) from {} does not match \
                             the manifest; dropping the source",
                            meter.name(),
                            src.url
                        ));
                        src.out = Some("sent a bad chunk");
                    }
                    (_, Fate::Drop | Fate::DropAndRestart) => src.out = Some("answered wrongly"),
                    _ => {
                        src.fails += 1;
                        if src.fails > limits.retries {
                            src.out = Some("failed too often");
                        }
                    }
                }
                if src.out.is_some() {
                    // Its other requests go elsewhere too.
                    for ((other, _), h) in &requests {
                        if *other == s {
                            h.abort();
                        }
                    }
                }
                failures.push(SourceFailure {
                    url: src.url.clone(),
                    error,
                });
            }
        }
    }
    if chunks.iter().any(|c| *c != Chunk::Done) || hashed != chunks.len() {
        return Ok(None);
    }
    for src in srcs.iter().filter(|s| s.served > 0) {
        log::line(&format!(
            "fetch {}: {} chunks from {}",
            meter.name(),
            src.served,
            src.url
        ));
    }
    Ok(Some(Sha256Digest(whole.finalize().into())))
}

/// The next (source, chunk) to request, or `None` when nothing can be asked now: a missing
/// chunk at random for the next usable source with a free slot (round robin), else in the
/// endgame a chunk in flight at one source only, from another source.
fn pick(
    chunks: &[Chunk],
    srcs: &[Source],
    requests: &HashMap<(usize, u64), AbortHandle>,
    opts: SwarmOptions,
    next_source: &mut usize,
    rng: &mut impl Rng,
) -> Option<(usize, u64)> {
    let n = srcs.len();
    for step in 0..n {
        let s = (*next_source + step) % n;
        let src = &srcs[s];
        if src.out.is_some() || src.in_flight >= opts.per_source.max(1) {
            continue;
        }
        let missing = chunks.iter().filter(|c| **c == Chunk::Missing).count();
        let chunk = if missing > 0 {
            let k = rng.gen_range(0..missing);
            chunks
                .iter()
                .enumerate()
                .filter(|(_, c)| **c == Chunk::Missing)
                .nth(k)
                .map(|(i, _)| i as u64)
        } else {
            chunks
                .iter()
                .enumerate()
                .find(|(i, c)| **c == Chunk::InFlight(1) && !requests.contains_key(&(s, *i as u64)))
                .map(|(i, _)| i as u64)
        };
        if let Some(c) = chunk {
            *next_source = (s + 1) % n;
            return Some((s, c));
        }
    }
    None
}

/// Feeds the chunks done in order from index `from` into the whole-file hash, reading them back
/// from the partial file; returns the first index not yet hashed.
fn hash_in_order(
    whole: &mut Sha256,
    part: &Partial,
    chunks: &[Chunk],
    mut from: usize,
    size: u64,
    chunk_size: u64,
) -> Result<usize, LocalIoError> {
    let mut buf = Vec::new();
    while from < chunks.len() && chunks[from] == Chunk::Done {
        let Some((offset, len)) = chunk_span(size, chunk_size, from as u64) else {
            break;
        };
        buf.resize(len as usize, 0);
        part.read_exact_at(offset, &mut buf)?;
        whole.update(&buf);
        from += 1;
    }
    Ok(from)
}

/// One ranged request for chunk `index`, bytes `offset..offset+len` of an artifact of `size`
/// bytes; the body must be exactly that range (206 with its `Content-Range`, or 200 when the
/// range is the whole file) and hash to `want`.
async fn fetch_chunk(
    client: &reqwest::Client,
    url: Url,
    index: u64,
    (offset, len): (u64, u64),
    size: u64,
    want: Sha256Digest,
    limits: Limits,
) -> Result<Bytes, SourceError> {
    let end = offset + len - 1;
    let idle = |at: u64| SourceError::Idle {
        ms: limits.idle.as_millis(),
        offset: at,
    };
    let send = client
        .get(url)
        .header(RANGE, format!("bytes={offset}-{end}"))
        .send();
    let mut resp = timeout_at(Instant::now() + limits.idle, send)
        .await
        .map_err(|_| idle(offset))?
        .map_err(SourceError::Request)?;
    let status = resp.status();
    let expected_range = format!("bytes {offset}-{end}/{size}");
    match status {
        StatusCode::PARTIAL_CONTENT => {
            let got = resp
                .headers()
                .get(CONTENT_RANGE)
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
            if got.as_deref() != Some(expected_range.as_str()) {
                return Err(SourceError::ContentRange {
                    got,
                    expected: expected_range,
                });
            }
        }
        StatusCode::OK if offset == 0 && len == size => {}
        StatusCode::OK => {
            return Err(SourceError::ContentRange {
                got: None,
                expected: expected_range,
            })
        }
        s if s.is_server_error() => {
            return Err(SourceError::ServerError {
                status: s,
                tries: 1,
            })
        }
        other => return Err(SourceError::Status(other)),
    }
    if let Some(cl) = resp.headers().get(CONTENT_LENGTH) {
        let text = String::from_utf8_lossy(cl.as_bytes()).into_owned();
        if text.trim().parse::<u64>().ok() != Some(len) {
            return Err(SourceError::ContentLength {
                got: text,
                expected: len,
            });
        }
    }
    let mut body = BytesMut::with_capacity(len as usize);
    let mut hasher = Sha256::new();
    loop {
        let at = offset + body.len() as u64;
        let next = timeout_at(Instant::now() + limits.idle, resp.chunk())
            .await
            .map_err(|_| idle(at))?
            .map_err(|source| SourceError::Body { offset: at, source })?;
        let Some(piece) = next else { break };
        if (body.len() + piece.len()) as u64 > len {
            return Err(SourceError::TooLong { size });
        }
        hasher.update(&piece);
        body.extend_from_slice(&piece);
    }
    if (body.len() as u64) < len {
        return Err(SourceError::Short {
            got: offset + body.len() as u64,
            size,
        });
    }
    let got = Sha256Digest(hasher.finalize().into());
    if got != want {
        return Err(SourceError::ChunkMismatch {
            index,
            offset,
            got,
            expected: want,
        });
    }
    Ok(body.freeze())
}
