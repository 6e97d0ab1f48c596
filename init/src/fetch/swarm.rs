//! Multi-source download of one manifest-v2 artifact (issue 19 §2-§3): its chunks are fetched
//! from every source at once with HTTP Range requests, each checked against the signed chunk
//! list before it is written at its offset, and (with a [`Shelf`]) offered to peers the moment
//! it is.
//!
//! Two kinds of source:
//! - **providers** (the manifest's location, `--provider`, mirror `urls`) hold every chunk;
//! - **peers** (`--peer`: machines fetching or booted from the same release, [`super::share`])
//!   hold some: each active peer's have-map (`<url>.have`) is polled every `have_interval`
//!   (a poll waits at most [`HAVE_TIMEOUT`]) until it holds everything; at most `max_peers`
//!   peers are active at once, in an order random per process but the same for every
//!   artifact, and one that is dropped is replaced by the next. An active peer that has not
//!   answered a have-map poll [`PEER_SILENT_AFTER`] after it was activated (its SYNs lost on
//!   a full link, a host that accepts and never answers) goes to the back of the waiting
//!   list when another peer waits, so a few silent peers cannot leave a client to the origin.
//!
//! Rules:
//! - **Order**: rarest first: a source with a free request slot gets, among the missing
//!   chunks it holds, one held by the fewest active peers (random among ties).
//! - **Providers last**: while peers are known, a provider has one request slot and gets a
//!   missing chunk only when the client is starved (no request in flight to any peer for
//!   [`STARVED_AFTER`]), or is under-supplied (fewer requests at peers than `per_source`) and
//!   no active peer holds the chunk; it gets an endgame copy only of a chunk in flight for
//!   [`ENDGAME_PROVIDER_AFTER`]. So a small swarm keeps the origin busy and a big one leaves
//!   it mostly idle; with no peers, providers are asked as freely as peers.
//! - **Origin share**: the under-supplied rule holds only while the chunks this client took
//!   from providers (delivered or in flight) are fewer than [`origin_share`]: about
//!   [`ORIGIN_SHARE`] times its fair part of one copy among the peers it knows. Past that, a
//!   provider is asked only when the client is starved. A storm of N machines then draws about
//!   `ORIGIN_SHARE` copies from the origin rather than one per machine whose few active peers
//!   lack a chunk (issue 19 §4: origin egress <= 3 F at N = 64).
//! - **Spread**: when this machine's own URL is known ([`Sources::own`]: `--serve <ip>:<port>`,
//!   the boot stage's advert), a provider gets, among the missing chunks equally rare at the
//!   active peers, the first at or after this machine's place `r * n / m` (`r`: its rank among
//!   the `m` URLs of the peers it knows and its own, sorted as strings; `n` chunks), wrapping
//!   round. Machines that know the same peers start at different chunks, so the origin's
//!   first round covers the release instead of repeating some chunks (64 random first picks
//!   of 64 chunks leave about a third unsent, which then trickle from the origin late). Ties
//!   at peers stay random.
//! - **Bounds**: at most `per_source` requests in flight per source and `max_in_flight` in
//!   all; a request holds at most one chunk (`chunk_size` bytes) in memory.
//! - **Endgame**: once no chunk is left unrequested, a source with a free slot asks for a chunk
//!   another source is still fetching (at most two copies); the first good copy wins and the
//!   other request is cancelled. A slow source cannot hold the last chunks back.
//! - **Blame**: a chunk whose SHA-256 differs pins the source that sent it: it is dropped for
//!   this artifact (`fetch <artifact>: chunk <i> (bytes <offset>..) from <url> does not match
//!   the manifest; dropping the source`) and the chunk goes to another source. A source that
//!   answers wrongly (4xx, a wrong `Content-Range` or length, a body past its range, a
//!   have-map that does not parse) is dropped; one that breaks off, stalls past the idle
//!   timeout or answers 5xx more than `retries + 1` times in a row is dropped; its chunks are
//!   requested again elsewhere. A peer whose have-map cannot be fetched (not listening yet,
//!   404 before it started this artifact) is asked again later, and dropped only after
//!   [`MAX_POLL_FAILS`] failed polls in a row.
//! - **End**: the whole-file SHA-256 is still checked over the finished file; only then is it
//!   renamed to its final path. `fetch <artifact>: <n> chunks from <url>` names what each
//!   source delivered.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::future::{AbortHandle, Abortable, BoxFuture, FutureExt};
use futures::stream::{FuturesUnordered, StreamExt};
use phase_protocol::chunks::{chunk_span, decode_have, HaveError};
use phase_protocol::{Artifact, Sha256Digest};
use rand::Rng;
use reqwest::header::{CONTENT_LENGTH, CONTENT_RANGE, RANGE};
use reqwest::{StatusCode, Url};
use sha2::{Digest, Sha256};
use tokio::time::{sleep_until, timeout_at, Instant};

use super::download::{Fate, Limits, Outcome, SourceError, SourceFailure};
use super::partial::{LocalIoError, Partial};
use super::progress::Meter;
use super::resume::{self, ChunkMap};
use super::share::Shelf;
use super::FoundPeers;
use crate::log;

/// While peers are known, a provider is asked for an endgame copy of a chunk only once the
/// chunk has been in flight this long (or the client is starved): a peer's copy is usually
/// on its way, and a stalled one is still overtaken.
pub const ENDGAME_PROVIDER_AFTER: Duration = Duration::from_secs(2);

/// A client is starved once no request has been in flight to any peer for this long; only
/// then is a provider asked for a missing chunk while peers are known (a fresh have-map often
/// ends a shorter gap).
pub const STARVED_AFTER: Duration = Duration::from_millis(300);

/// An active peer that has not answered a have-map poll this long after it was activated is
/// silent: it goes to the back of the waiting list when another peer waits. A lost SYN is
/// sent again after 1 s, so a peer reached on the second SYN is not counted silent.
pub const PEER_SILENT_AFTER: Duration = Duration::from_millis(1500);

/// Copies of an artifact a storm's clients draw from providers in all, by the origin-share
/// rule (module docs, [`origin_share`]).
pub const ORIGIN_SHARE: usize = 2;

/// Chunks a client takes from providers while under-supplied (module docs, "Origin share"):
/// `ceil(ORIGIN_SHARE * n_chunks / (known_peers + 1))`, at least 1. With no peer known it is
/// `ORIGIN_SHARE * n_chunks` (no limit in effect: providers are asked freely anyway).
#[must_use]
pub fn origin_share(n_chunks: usize, known_peers: usize) -> usize {
    (ORIGIN_SHARE * n_chunks).div_ceil(known_peers + 1).max(1)
}

/// Have-map polls of one peer that may fail in a row (refused, 404, timed out) before it is
/// dropped for the artifact: with the default 500 ms interval about 10 s of a peer that is
/// not there, so a fetch whose providers are gone fails instead of waiting on dead peers.
pub const MAX_POLL_FAILS: u32 = 20;

/// Longest wait for one have-map poll (headers and body). Not shorter: on a full link a new
/// connection's SYN may be lost and retried after 1 s and 3 s; a poll given up sooner never
/// connects, and its peer is never used.
pub const HAVE_TIMEOUT: Duration = Duration::from_secs(10);

/// Request bounds of a multi-source download.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SwarmOptions {
    /// Requests in flight per source (default 2).
    pub per_source: usize,
    /// Requests in flight in all (default 8); with 4 MiB chunks, at most 32 MiB held.
    pub max_in_flight: usize,
    /// Peers active at once (default 8): their have-maps are polled and their chunks asked.
    pub max_peers: usize,
    /// Time between two polls of one peer's have-map (default 500 ms).
    pub have_interval: Duration,
}

impl Default for SwarmOptions {
    fn default() -> Self {
        SwarmOptions {
            per_source: 2,
            max_in_flight: 8,
            max_peers: 8,
            have_interval: Duration::from_millis(500),
        }
    }
}

/// Where one swarm download gets its chunks from, and where it offers them.
#[derive(Debug, Clone, Copy)]
pub struct Sources<'a> {
    /// Full providers of the artifact, in order.
    pub providers: &'a [Url],
    /// Peers' URLs of the artifact (`<peer>/<channel>/<arch>/<filename>`).
    pub peers: &'a [Url],
    /// The shelf to offer verified chunks on, with this artifact's URL path there.
    pub share: Option<(&'a Shelf, &'a str)>,
    /// Peer base URLs (`http://192.0.2.11:7400`) found while this download runs (mDNS in the
    /// boot stage, [`crate::peers`]), with this artifact's path at a peer
    /// ([`super::sources::peer_path`]). Each new base becomes a waiting peer; the list only
    /// grows, and a closed channel just stops adding.
    pub found: Option<(&'a FoundPeers, &'a str)>,
    /// This machine's own URL of the artifact as its peers know it (module docs, "Spread").
    pub own: Option<&'a Url>,
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
    /// A peer's have-map (`None`: a provider, which holds every chunk).
    have: Option<Vec<bool>>,
    /// A peer whose map is polled and whose chunks are asked for.
    active: bool,
    /// When this peer was last activated (for [`PEER_SILENT_AFTER`]).
    activated_at: Option<Instant>,
    /// A have-map poll of this peer got an HTTP answer (a map or a status).
    answered: bool,
    /// A have-map request of this peer is running.
    polling: bool,
    /// When this peer's have-map is asked for next.
    poll_at: Instant,
    /// Have-map polls that failed in a row.
    poll_fails: u32,
}

impl Source {
    /// A source with nothing known yet: a provider (`have` `None`) or a peer.
    fn new(url: Url, have: Option<Vec<bool>>) -> Self {
        Source {
            url,
            in_flight: 0,
            out: None,
            fails: 0,
            served: 0,
            have,
            active: false,
            activated_at: None,
            answered: false,
            polling: false,
            poll_at: Instant::now(),
            poll_fails: 0,
        }
    }

    /// A peer whose have-map is not known yet (all chunks missing).
    fn peer(url: Url, n_chunks: usize) -> Self {
        Self::new(url, Some(vec![false; n_chunks]))
    }

    fn holds(&self, c: usize) -> bool {
        self.have
            .as_ref()
            .is_none_or(|h| h.get(c).copied().unwrap_or(false))
    }

    fn usable(&self) -> bool {
        self.out.is_none() && (self.have.is_none() || self.active)
    }

    /// When this active peer counts as silent ([`PEER_SILENT_AFTER`]); `None` once it has
    /// answered, or while it is not an active peer.
    fn silent_at(&self) -> Option<Instant> {
        if !self.active || self.answered || self.out.is_some() {
            return None;
        }
        self.activated_at.map(|t| t + PEER_SILENT_AFTER)
    }
}

enum Event {
    Chunk(
        usize,
        u64,
        Result<Result<Bytes, SourceError>, futures::future::Aborted>,
    ),
    Have(usize, Result<Vec<bool>, SourceError>),
    /// The list of found peers changed (`false`: its sender is gone).
    Found(bool),
}

/// Downloads the v2 `artifact` (its chunk list is required: `None` fails at once) from all
/// `sources` at once into `<dir>/<filename>` (module docs for the rules).
///
/// # Errors
/// [`LocalIoError`] when the local file system fails (ENOSPC, ...): the partial is removed.
/// Source failures are not errors but [`Outcome::Failed`] when no source is left.
pub async fn swarm_download(
    client: &reqwest::Client,
    artifact: &Artifact,
    sources: Sources<'_>,
    dir: &Path,
    limits: Limits,
    opts: SwarmOptions,
    meter: &mut Meter,
) -> Result<Outcome, LocalIoError> {
    let final_path = dir.join(&artifact.filename);
    let _ = std::fs::remove_file(&final_path);
    let Some(first) = sources.providers.first().or(sources.peers.first()) else {
        return Ok(Outcome::Failed(Vec::new()));
    };
    let Some((chunk_size, _)) = artifact.chunking() else {
        return Ok(Outcome::Failed(Vec::new()));
    };
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
        share: sources.share,
    };
    if let Some((shelf, path)) = sources.share {
        let file = job.part.try_clone_file()?;
        shelf.offer(
            path,
            file,
            artifact.size_bytes,
            chunk_size,
            resumed.verified,
        );
    }
    let whole = run(client, artifact, sources, limits, opts, meter, &mut job).await;
    let whole = match whole {
        Ok(w) => w,
        Err(e) => {
            withdraw(sources);
            return Err(e);
        }
    };
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
            withdraw(sources);
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
            withdraw(sources);
            resume::keep_or_remove(part, map);
            Ok(Outcome::Failed(failures))
        }
    }
}

fn withdraw(sources: Sources<'_>) {
    if let Some((shelf, path)) = sources.share {
        shelf.withdraw(path);
    }
}

/// The partial file, its chunk map, the chunk states and the failures of one swarm download.
struct Job<'a> {
    part: Partial,
    map: Option<ChunkMap>,
    chunks: Vec<Chunk>,
    failures: Vec<SourceFailure>,
    share: Option<(&'a Shelf, &'a str)>,
}

/// The request loop of [`swarm_download`]: `Some(whole-file digest)` once every chunk is
/// verified and written, `None` when no source is left or the deadline passed (the reason is
/// in `job.failures`).
async fn run(
    client: &reqwest::Client,
    artifact: &Artifact,
    sources: Sources<'_>,
    limits: Limits,
    opts: SwarmOptions,
    meter: &mut Meter,
    job: &mut Job<'_>,
) -> Result<Option<Sha256Digest>, LocalIoError> {
    let Some((chunk_size, expected)) = artifact.chunking() else {
        return Ok(None);
    };
    let size = artifact.size_bytes;
    let n_chunks = expected.len();
    let Job {
        part,
        map,
        chunks,
        failures,
        share,
    } = job;
    let mut rng = rand::thread_rng();
    let mut srcs: Vec<Source> = sources
        .providers
        .iter()
        .map(|url| Source::new(url.clone(), None))
        .chain(
            sources
                .peers
                .iter()
                .map(|url| Source::peer(url.clone(), n_chunks)),
        )
        .collect();
    // A random subset of the peers is active; the rest wait to replace dropped ones. The
    // order is random per process but the same for every artifact, so a machine uses the same
    // few peers (and their connections) for all its artifacts.
    let mut waiting: Vec<usize> = (sources.providers.len()..srcs.len()).collect();
    waiting.sort_by_key(|s| peer_rank(&srcs[*s].url));
    let mut found = sources.found.map(|(rx, path)| (rx.clone(), path));
    if let Some((rx, path)) = found.as_mut() {
        add_found(&mut srcs, &mut waiting, rx, path, n_chunks, meter.name());
    }
    activate(&mut srcs, &mut waiting, opts.max_peers);
    let resumed = chunks.iter().filter(|c| **c == Chunk::Done).count();
    log::line(&format!(
        "fetch {}: {} chunks of {chunk_size} bytes from {} providers and {} peers{}",
        meter.name(),
        n_chunks,
        sources.providers.len(),
        sources.peers.len(),
        if resumed > 0 {
            format!(" ({resumed} already verified)")
        } else {
            String::new()
        }
    ));
    let mut running: FuturesUnordered<BoxFuture<'static, Event>> = FuturesUnordered::new();
    let mut requests: HashMap<(usize, u64), (AbortHandle, Instant)> = HashMap::new();
    let mut whole = Sha256::new();
    let mut hashed = hash_in_order(&mut whole, part, chunks, 0, size, chunk_size)?;
    let mut done_bytes: u64 = (0..chunks.len() as u64)
        .filter(|i| chunks[*i as usize] == Chunk::Done)
        .filter_map(|i| chunk_span(size, chunk_size, i))
        .map(|(_, len)| len)
        .sum();
    let mut next_source = 0usize;
    // Since when no request is in flight to a peer (while peers are known).
    let mut starved_since: Option<Instant> = None;

    loop {
        // The peers known change only between rounds (Found events).
        let spread = sources
            .own
            .and_then(|own| spread_start(&srcs, own, chunks.len()));
        while requests.len() < opts.max_in_flight.max(1) {
            if requests.keys().any(|(s, _)| srcs[*s].have.is_some()) {
                starved_since = None;
            } else if starved_since.is_none() {
                starved_since = Some(Instant::now());
            }
            let starved = starved_since.is_some_and(|t| t.elapsed() >= STARVED_AFTER);
            let Some((s, c)) = pick(
                chunks,
                &srcs,
                &requests,
                Turn { starved, spread },
                opts,
                &mut next_source,
                &mut rng,
            ) else {
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
            requests.insert((s, c), (handle, Instant::now()));
            let want = expected[c as usize];
            let req = fetch_chunk(
                client.clone(),
                srcs[s].url.clone(),
                c,
                (offset, len),
                size,
                want,
                limits,
            );
            running.push(async move { Event::Chunk(s, c, Abortable::new(req, reg).await) }.boxed());
        }
        if chunks.iter().all(|c| *c == Chunk::Done) {
            break;
        }
        // Silent peers make way first, so the peers that replace them are polled at once.
        let silent = rotate_silent(&mut srcs, &mut waiting, opts.max_peers, meter.name());
        let now = Instant::now();
        let mut next_poll: Option<Instant> = None;
        for (s, src) in srcs.iter_mut().enumerate() {
            let Some(have) = src.have.as_ref() else {
                continue;
            };
            if !src.usable() || src.polling || have.iter().all(|h| *h) {
                continue;
            }
            if src.poll_at <= now {
                src.polling = true;
                let req = fetch_have(client.clone(), src.url.clone(), n_chunks as u64, limits);
                running.push(async move { Event::Have(s, req.await) }.boxed());
            } else {
                next_poll = Some(next_poll.map_or(src.poll_at, |t| t.min(src.poll_at)));
            }
        }
        // A provider becomes askable once the client has been starved long enough.
        let starving = starved_since
            .map(|t| t + STARVED_AFTER)
            .filter(|t| *t > Instant::now());
        if running.is_empty() && next_poll.is_none() && starving.is_none() {
            // No request, no poll and no provider to come: every source is out.
            break;
        }
        let wake = [next_poll, starving, silent]
            .into_iter()
            .flatten()
            .fold(limits.deadline, Instant::min);
        let next = tokio::select! {
            n = running.next(), if !running.is_empty() => n,
            open = found_changed(&mut found) => Some(Event::Found(open)),
            () = sleep_until(wake) => None,
        };
        let Some(event) = next else {
            if Instant::now() >= limits.deadline {
                failures.push(SourceFailure {
                    url: srcs[0].url.clone(),
                    error: SourceError::Total {
                        ms: limits.total.as_millis(),
                    },
                });
                return Ok(None);
            }
            continue;
        };
        let (s, c, result) = match event {
            Event::Chunk(s, c, result) => (s, c, result),
            Event::Found(open) => {
                match found.as_mut().filter(|_| open) {
                    Some((rx, path)) => {
                        add_found(&mut srcs, &mut waiting, rx, path, n_chunks, meter.name());
                        activate(&mut srcs, &mut waiting, opts.max_peers);
                    }
                    None => found = None,
                }
                continue;
            }
            Event::Have(s, result) => {
                let src = &mut srcs[s];
                src.polling = false;
                src.poll_at = Instant::now() + opts.have_interval;
                let error = match result {
                    Ok(have) => {
                        src.have = Some(have);
                        src.poll_fails = 0;
                        src.answered = true;
                        continue;
                    }
                    Err(error) => error,
                };
                if matches!(error, SourceError::Status(_)) {
                    src.answered = true;
                }
                src.poll_fails += 1;
                // A map that does not parse drops the peer at once. One that cannot be fetched
                // (not listening yet, 404 before the peer started this artifact) is asked
                // again later, up to MAX_POLL_FAILS times in a row.
                let why = match error {
                    SourceError::HaveMap(_) => "sent a bad have-map",
                    _ if src.poll_fails >= MAX_POLL_FAILS => "its have-map polls kept failing",
                    _ => continue,
                };
                log::line(&format!(
                    "fetch {}: dropping peer {}: {why} ({error})",
                    meter.name(),
                    src.url
                ));
                src.out = Some(why);
                failures.push(SourceFailure {
                    url: src.url.clone(),
                    error,
                });
                activate(&mut srcs, &mut waiting, opts.max_peers);
                continue;
            }
        };
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
                if let Some((shelf, path)) = share {
                    shelf.mark(path, c);
                }
                chunks[c as usize] = Chunk::Done;
                for other in 0..srcs.len() {
                    if let Some((h, _)) = requests.get(&(other, c)) {
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
                if let (Some(why), false) =
                    (src.out, matches!(error, SourceError::ChunkMismatch { .. }))
                {
                    log::line(&format!(
                        "fetch {}: dropping {}: {why} ({error})",
                        meter.name(),
                        src.url
                    ));
                }
                if src.out.is_some() {
                    // Its other requests go elsewhere too.
                    for ((other, _), (h, _)) in &requests {
                        if *other == s {
                            h.abort();
                        }
                    }
                    activate(&mut srcs, &mut waiting, opts.max_peers);
                }
                failures.push(SourceFailure {
                    url: srcs[s].url.clone(),
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
            "fetch {}: {} chunks from {}{}",
            meter.name(),
            src.served,
            if src.have.is_some() { "peer " } else { "" },
            src.url
        ));
    }
    Ok(Some(Sha256Digest(whole.finalize().into())))
}

/// Waits until the found-peer list changes (`true`) or its sender is gone (`false`); never
/// returns without a list.
async fn found_changed(found: &mut Option<(FoundPeers, &str)>) -> bool {
    match found.as_mut() {
        Some((rx, _)) => rx.changed().await.is_ok(),
        None => std::future::pending().await,
    }
}

/// Adds each base URL of the `found` list (marking it seen) that is not yet a source as a
/// waiting peer of this artifact (at `<base><path>`), logging `fetch <name>: peer found
/// <url>`. Waiting peers are taken from the end of `waiting`, so a new one is tried before
/// older spares.
fn add_found(
    srcs: &mut Vec<Source>,
    waiting: &mut Vec<usize>,
    found: &mut FoundPeers,
    path: &str,
    n_chunks: usize,
    name: &str,
) {
    let bases = found.borrow_and_update().clone();
    for base in &bases {
        let Ok(url) =
            super::sources::parse_http_url(&format!("{}{path}", base.trim_end_matches('/')))
        else {
            continue;
        };
        if srcs.iter().any(|s| s.url == url) {
            continue;
        }
        log::line(&format!("fetch {name}: peer found {url}"));
        waiting.push(srcs.len());
        srcs.push(Source::peer(url, n_chunks));
    }
}

/// A per-process random rank of a peer (by host and port); [`activate`] takes the lowest last.
fn peer_rank(url: &Url) -> u64 {
    use std::hash::BuildHasher;
    static SEED: std::sync::OnceLock<std::collections::hash_map::RandomState> =
        std::sync::OnceLock::new();
    SEED.get_or_init(std::collections::hash_map::RandomState::new)
        .hash_one((url.host_str(), url.port_or_known_default()))
}

/// Activates waiting peers (in their shuffled order) until `max_peers` usable peers are active.
fn activate(srcs: &mut [Source], waiting: &mut Vec<usize>, max_peers: usize) {
    let active = |srcs: &[Source]| {
        srcs.iter()
            .filter(|s| s.have.is_some() && s.active && s.out.is_none())
            .count()
    };
    while active(srcs) < max_peers.max(1) {
        let Some(s) = waiting.pop() else {
            return;
        };
        srcs[s].active = true;
        srcs[s].activated_at = Some(Instant::now());
    }
}

/// This machine's place in a storm (module docs, "Spread"): with `own` the rank among the
/// known peers' URLs and itself, sorted as strings (`r` of `m`), the chunk index
/// `r * n_chunks / m` (`0..n_chunks`). `None` with no peer known.
fn spread_start(srcs: &[Source], own: &Url, n_chunks: usize) -> Option<usize> {
    let peers = srcs.iter().filter(|s| s.have.is_some() && s.url != *own);
    let (rank, m) = peers.fold((0usize, 1usize), |(r, m), s| {
        (r + usize::from(s.url.as_str() < own.as_str()), m + 1)
    });
    (m > 1).then(|| rank * n_chunks / m)
}

/// Moves each silent active peer ([`Source::silent_at`] passed) to the front of `waiting`
/// (tried last) while another peer waits, logs it, and activates the next; returns when the
/// next active peer turns silent, if one may.
fn rotate_silent(
    srcs: &mut [Source],
    waiting: &mut Vec<usize>,
    max_peers: usize,
    name: &str,
) -> Option<Instant> {
    let now = Instant::now();
    for s in 0..srcs.len() {
        if waiting.is_empty() {
            break;
        }
        if srcs[s].silent_at().is_some_and(|t| t <= now) {
            log::line(&format!(
                "fetch {name}: peer {} has not answered in {} ms; trying another",
                srcs[s].url,
                PEER_SILENT_AFTER.as_millis()
            ));
            srcs[s].active = false;
            srcs[s].activated_at = None;
            waiting.insert(0, s);
            activate(srcs, waiting, max_peers);
        }
    }
    if waiting.is_empty() {
        return None;
    }
    srcs.iter().filter_map(Source::silent_at).min()
}

/// What [`pick`] knows of this client besides its chunks, sources and requests.
#[derive(Debug, Clone, Copy)]
struct Turn {
    /// No request has been in flight at any peer for [`STARVED_AFTER`].
    starved: bool,
    /// This machine's place in the storm ([`spread_start`]), when its own URL is known.
    spread: Option<usize>,
}

/// The next (source, chunk) to request, or `None` when nothing can be asked now (module docs:
/// rarest first for peers, unheld chunks for providers, endgame copies last).
fn pick(
    chunks: &[Chunk],
    srcs: &[Source],
    requests: &HashMap<(usize, u64), (AbortHandle, Instant)>,
    turn: Turn,
    opts: SwarmOptions,
    next_source: &mut usize,
    rng: &mut impl Rng,
) -> Option<(usize, u64)> {
    let n = srcs.len();
    // How many usable peers hold each chunk.
    let mut avail = vec![0u32; chunks.len()];
    for src in srcs.iter().filter(|s| s.usable()) {
        if let Some(have) = &src.have {
            for (a, h) in avail.iter_mut().zip(have) {
                *a += u32::from(*h);
            }
        }
    }
    let any_missing = chunks.contains(&Chunk::Missing);
    // Starved: no request in flight to any peer. Only then is a provider asked (so the origin
    // of a storm stays mostly idle and sends each chunk about once), and only for one chunk
    // at a time while there are peers.
    let to_peers = requests
        .keys()
        .filter(|(s, _)| srcs[*s].have.is_some())
        .count();
    let starved = turn.starved && to_peers == 0;
    // Under-supplied: fewer requests at peers than one peer's slots. Then a provider may also
    // take a chunk no active peer holds (a small swarm keeps the origin busy, a big one not).
    // ...but only within this client's origin share (module docs).
    let known_peers = srcs.iter().filter(|s| s.have.is_some()).count();
    let from_providers: usize = srcs
        .iter()
        .filter(|s| s.have.is_none())
        .map(|s| s.served as usize + s.in_flight)
        .sum();
    let hungry = to_peers < opts.per_source.max(1)
        && from_providers < origin_share(chunks.len(), known_peers);
    let any_peers = srcs.iter().any(|s| s.have.is_some() && s.usable());
    for step in 0..n {
        let s = (*next_source + step) % n;
        let src = &srcs[s];
        let peer = src.have.is_some();
        let slots = if peer || !any_peers {
            opts.per_source.max(1)
        } else {
            1
        };
        if !src.usable() || src.in_flight >= slots {
            continue;
        }
        let chunk = if any_missing {
            let wanted = |c: usize| {
                chunks[c] == Chunk::Missing
                    && src.holds(c)
                    && (peer || !any_peers || starved || (hungry && avail[c] == 0))
            };
            let rarest = (0..chunks.len())
                .filter(|c| wanted(*c))
                .map(|c| avail[c])
                .min();
            rarest.and_then(|r| {
                let ties: Vec<usize> = (0..chunks.len())
                    .filter(|c| wanted(*c) && avail[*c] == r)
                    .collect();
                match turn.spread.filter(|_| !peer) {
                    // A provider: the first tie at or after this machine's place (Spread).
                    Some(start) => ties
                        .iter()
                        .min_by_key(|c| (**c + chunks.len() - start) % chunks.len())
                        .map(|c| *c as u64),
                    None => ties
                        .get(rng.gen_range(0..ties.len().max(1)))
                        .map(|c| *c as u64),
                }
            })
        } else {
            // A provider copies only a chunk in flight for ENDGAME_PROVIDER_AFTER already.
            let late = |c: u64| {
                peer || !any_peers
                    || starved
                    || requests.iter().any(|((_, rc), (_, at))| {
                        *rc == c && at.elapsed() >= ENDGAME_PROVIDER_AFTER
                    })
            };
            (0..chunks.len())
                .find(|c| {
                    chunks[*c] == Chunk::InFlight(1)
                        && src.holds(*c)
                        && !requests.contains_key(&(s, *c as u64))
                        && late(*c as u64)
                })
                .map(|c| c as u64)
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
    client: reqwest::Client,
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

/// A peer's have-map for an artifact of `chunks` chunks, from `<url>.have`: 200 with exactly
/// the map's bytes (a longer body is refused as soon as it is), within the idle timeout.
async fn fetch_have(
    client: reqwest::Client,
    url: Url,
    chunks: u64,
    limits: Limits,
) -> Result<Vec<bool>, SourceError> {
    let Ok(url) = Url::parse(&format!("{url}.have")) else {
        return Err(SourceError::Status(StatusCode::BAD_REQUEST));
    };
    let cap = chunks.div_ceil(8) as usize;
    // A map older than a few poll intervals is of little use: give up sooner than on a chunk.
    let wait = limits.idle.min(HAVE_TIMEOUT);
    let deadline = Instant::now() + wait;
    let mut resp = timeout_at(deadline, client.get(url).send())
        .await
        .map_err(|_| SourceError::Idle {
            ms: wait.as_millis(),
            offset: 0,
        })?
        .map_err(SourceError::Request)?;
    if resp.status() != StatusCode::OK {
        return Err(SourceError::Status(resp.status()));
    }
    let mut body = Vec::with_capacity(cap);
    loop {
        let next = timeout_at(deadline, resp.chunk())
            .await
            .map_err(|_| SourceError::Idle {
                ms: wait.as_millis(),
                offset: body.len() as u64,
            })?
            .map_err(|source| SourceError::Body {
                offset: body.len() as u64,
                source,
            })?;
        let Some(piece) = next else { break };
        if body.len() + piece.len() > cap {
            return Err(SourceError::HaveMap(HaveError::Length {
                got: body.len() + piece.len(),
                chunks,
                expected: cap as u64,
            }));
        }
        body.extend_from_slice(&piece);
    }
    Ok(decode_have(&body, chunks)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(url: &str, have: Option<Vec<bool>>) -> Source {
        Source {
            url: Url::parse(url).unwrap(),
            in_flight: 0,
            out: None,
            fails: 0,
            served: 0,
            have,
            active: true,
            activated_at: None,
            answered: false,
            polling: false,
            poll_at: Instant::now(),
            poll_fails: 0,
        }
    }

    type Requests = HashMap<(usize, u64), (AbortHandle, Instant)>;

    /// [`pick`] with the default options and no place in the storm.
    fn ask(
        chunks: &[Chunk],
        srcs: &[Source],
        reqs: &Requests,
        starved: bool,
        next: &mut usize,
        rng: &mut impl Rng,
    ) -> Option<(usize, u64)> {
        let turn = Turn {
            starved,
            spread: None,
        };
        pick(chunks, srcs, reqs, turn, SwarmOptions::default(), next, rng)
    }

    fn request(reqs: &mut Requests, srcs: &mut [Source], s: usize, c: u64, age: Duration) {
        srcs[s].in_flight += 1;
        let at = Instant::now().checked_sub(age).unwrap();
        reqs.insert((s, c), (AbortHandle::new_pair().0, at));
    }

    #[test]
    fn a_peer_gets_the_rarest_chunk_it_holds() {
        let chunks = vec![Chunk::Missing; 4];
        // Peer 1 holds 0, 1, 2; peer 2 holds 0 and 1: chunk 2 is the rarest peer 1 holds.
        let srcs = vec![
            source("http://192.0.2.11/a", Some(vec![true, true, true, false])),
            source("http://192.0.2.12/a", Some(vec![true, true, false, false])),
        ];
        let mut rng = rand::thread_rng();
        for _ in 0..20 {
            let mut next = 0;
            let got = ask(&chunks, &srcs, &HashMap::new(), false, &mut next, &mut rng);
            assert_eq!(got, Some((0, 2)));
        }
    }

    #[test]
    fn the_provider_waits_while_peers_supply_and_serves_when_starved() {
        let chunks = vec![
            Chunk::Missing,
            Chunk::Missing,
            Chunk::InFlight(1),
            Chunk::InFlight(1),
        ];
        let mut srcs = vec![
            source("http://192.0.2.1/a", None),
            source("http://192.0.2.11/a", Some(vec![true, true, true, true])),
        ];
        let mut reqs = Requests::new();
        // The peer already has its two slots busy (chunks 2 and 3): not hungry, not starved.
        request(&mut reqs, &mut srcs, 1, 2, Duration::ZERO);
        request(&mut reqs, &mut srcs, 1, 3, Duration::ZERO);
        let mut rng = rand::thread_rng();
        let mut next = 0;
        assert_eq!(ask(&chunks, &srcs, &reqs, true, &mut next, &mut rng), None);
        // A chunk no peer holds, while the peers are under-supplied: the provider takes it.
        srcs[1].have = Some(vec![true, false, true, true]);
        reqs.remove(&(1, 3));
        // (The peer's slots stay full, so only the provider can be picked.)
        let got = ask(&chunks, &srcs, &reqs, false, &mut next, &mut rng);
        assert_eq!(
            got,
            Some((0, 1)),
            "chunk 0 is held by the peer, chunk 1 by none"
        );
        // Starved (no request at any peer): the provider takes any missing chunk.
        let mut idle = Requests::new();
        srcs[1].in_flight = 0;
        srcs[1].out = Some("gone");
        let got = ask(&chunks, &srcs, &idle, true, &mut next, &mut rng);
        assert!(matches!(got, Some((0, 0 | 1))), "{got:?}");
        // With no usable peer the provider is asked freely even before STARVED_AFTER.
        let got = ask(&chunks, &srcs, &idle, false, &mut next, &mut rng);
        assert!(matches!(got, Some((0, 0 | 1))), "{got:?}");
        // Endgame: a provider copies a chunk only once it has been in flight long enough.
        srcs[1].out = None;
        let done = vec![Chunk::Done, Chunk::Done, Chunk::InFlight(1), Chunk::Done];
        request(&mut idle, &mut srcs, 1, 2, Duration::ZERO);
        assert_eq!(ask(&done, &srcs, &idle, true, &mut next, &mut rng), None);
        let mut old = Requests::new();
        srcs[1].in_flight = 0;
        request(&mut old, &mut srcs, 1, 2, ENDGAME_PROVIDER_AFTER);
        assert_eq!(
            ask(&done, &srcs, &old, false, &mut next, &mut rng),
            Some((0, 2))
        );
    }

    #[test]
    fn past_its_origin_share_a_client_asks_a_provider_only_when_starved() {
        // Four peers known: the share is ceil(2 * 4 / 5) = 2 chunks from providers.
        assert_eq!(origin_share(4, 4), 2);
        assert_eq!(origin_share(64, 63), 2);
        assert_eq!(origin_share(64, 0), 128);
        let chunks = vec![
            Chunk::Missing,
            Chunk::Missing,
            Chunk::InFlight(1),
            Chunk::Done,
        ];
        let mut srcs = vec![source("http://192.0.2.1/a", None)];
        for i in 11..15 {
            srcs.push(source(
                &format!("http://192.0.2.{i}/a"),
                Some(vec![false, false, true, true]),
            ));
        }
        let mut reqs = Requests::new();
        // One request at a peer: under-supplied, and no peer holds chunks 0 and 1.
        request(&mut reqs, &mut srcs, 1, 2, Duration::ZERO);
        let mut rng = rand::thread_rng();
        let mut next = 0;
        let got = ask(&chunks, &srcs, &reqs, false, &mut next, &mut rng);
        assert!(matches!(got, Some((0, 0 | 1))), "{got:?}");
        // Its share taken (two delivered; its one slot free): the provider waits.
        srcs[0].served = 2;
        assert_eq!(ask(&chunks, &srcs, &reqs, false, &mut next, &mut rng), None);
        // Starved (nothing in flight at any peer): it is asked again.
        let idle = Requests::new();
        srcs[1].in_flight = 0;
        let got = ask(&chunks, &srcs, &idle, true, &mut next, &mut rng);
        assert!(matches!(got, Some((0, 0 | 1))), "{got:?}");
    }

    #[test]
    fn a_machines_place_is_its_rank_among_the_peers_it_knows() {
        let own = Url::parse("http://192.0.2.13:7400/a").unwrap();
        let mut srcs = vec![
            source("http://192.0.2.1:8080/a", None),
            source("http://192.0.2.11:7400/a", Some(vec![false; 4])),
            source("http://192.0.2.14:7400/a", Some(vec![false; 4])),
            source("http://192.0.2.12:7400/a", Some(vec![false; 4])),
        ];
        // Rank 2 of 4 (.11, .12 before .13; the provider does not count): chunk 2 * 64 / 4.
        assert_eq!(spread_start(&srcs, &own, 64), Some(32));
        // Listed as its own peer: not counted twice.
        srcs.push(source("http://192.0.2.13:7400/a", Some(vec![false; 4])));
        assert_eq!(spread_start(&srcs, &own, 64), Some(32));
        // No peer known: no place.
        assert_eq!(spread_start(&srcs[..1], &own, 64), None);
    }

    #[test]
    fn a_provider_is_asked_first_for_the_chunk_at_this_machines_place() {
        // Peers hold nothing yet, so every chunk is equally rare and the provider may take
        // any (under-supplied); with a place it takes the one there, then the next free one.
        let mut chunks = vec![Chunk::Missing; 64];
        let srcs = vec![
            source("http://192.0.2.1:8080/a", None),
            source("http://192.0.2.11:7400/a", Some(vec![false; 64])),
        ];
        let mut rng = rand::thread_rng();
        let mut first_pick = |chunks: &[Chunk], spread: Option<usize>| {
            let turn = Turn {
                starved: false,
                spread,
            };
            let opts = SwarmOptions::default();
            pick(chunks, &srcs, &HashMap::new(), turn, opts, &mut 0, &mut rng)
        };
        for _ in 0..20 {
            assert_eq!(first_pick(&chunks, Some(40)), Some((0, 40)));
        }
        chunks[40] = Chunk::InFlight(1);
        chunks[41] = Chunk::Done;
        assert_eq!(first_pick(&chunks, Some(40)), Some((0, 42)));
        // Wrapping round past the last chunk.
        assert_eq!(first_pick(&chunks, Some(63)), Some((0, 63)));
        chunks[63] = Chunk::Done;
        assert_eq!(first_pick(&chunks, Some(63)), Some((0, 0)));
        // Without a place the provider's pick is random among the ties: not always chunk 42.
        let picks: std::collections::HashSet<_> =
            (0..20).map(|_| first_pick(&chunks, None)).collect();
        assert!(picks.len() > 1, "{picks:?}");
    }
}
