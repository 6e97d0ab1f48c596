//! Serving verified chunks while fetching (issue 19 §3): a machine that fetches a v2 artifact
//! chunk by chunk ([`super::swarm`]) offers every chunk it has verified to its peers, so the
//! next machine of a boot storm can take it from here instead of from the origin provider.
//!
//! The paths are those `plasmd serve` answers, `/<channel>/<arch>/<filename>`, so a peer is
//! used like a provider, plus the have-map `/<channel>/<arch>/<filename>.have`
//! ([`phase_protocol::chunks::encode_have`], `application/octet-stream`, never cached).
//! Rules:
//! - Only `GET` and `HEAD`. A `Range` (RFC 9110 §14, [`phase_protocol::range::decide`]) must
//!   lie within chunks held verified, else `404` (the have-map says what is held; bits only
//!   ever go from 0 to 1, so a client that asks for what the map showed is never refused).
//! - One answer carries at most one chunk's size of the artifact (clients ask chunk by chunk;
//!   never more than [`MAX_ANSWER_BYTES`]): a larger range, or a request without `Range` for a
//!   larger file, gets `416` (`plasmd` serves whole files). The bytes are streamed from the file
//!   in [`READ_BLOCK`] blocks, not read into memory first, so a LAN that opens every
//!   connection and asks for the largest ranges costs little memory in the boot stage's PID 1.
//! - At most [`MAX_CONNECTIONS`] connections; a request head must arrive within
//!   [`HEADER_TIMEOUT`]. Nothing is written: the server only reads the files it was given.
//!
//! Trust: a peer's chunks are checked against the signed chunk list by the client that
//! fetches them, like any source's; serving changes nothing there. What a client may learn
//! from this server is what the signed manifest already lists.

use std::collections::HashMap;
use std::fs::File;
use std::net::SocketAddr;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper::header::{ACCEPT_RANGES, CACHE_CONTROL, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use phase_protocol::chunks::{chunk_count, encode_have, MAX_CHUNK_SIZE};
use phase_protocol::range::{decide, RangeDecision};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::log;

/// Largest body one answer carries, in bytes (16 MiB, the largest chunk size); an artifact's
/// own chunk size caps it further.
pub const MAX_ANSWER_BYTES: u64 = MAX_CHUNK_SIZE;
/// Bytes read from the file at a time while a body is sent (64 KiB).
pub const READ_BLOCK: usize = 64 * 1024;
/// Connections served at once; more wait in the listen backlog. A storm client keeps about
/// three connections to each peer it uses (have-map polls and two chunk requests).
pub const MAX_CONNECTIONS: usize = 256;
/// Time a client has to send a request head (also the keep-alive idle limit).
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// The artifacts this machine offers, by URL path, with the chunks it holds verified.
/// Cloning shares the same shelf.
#[derive(Debug, Clone, Default)]
pub struct Shelf {
    held: Arc<Mutex<HashMap<String, Held>>>,
    sent: Arc<AtomicU64>,
}

#[derive(Debug)]
struct Held {
    file: Arc<File>,
    size: u64,
    chunk_size: u64,
    have: Vec<bool>,
}

/// One answer, before it becomes an HTTP response (kept apart so it can be unit-tested).
#[derive(Debug)]
pub struct Answer {
    /// Status code.
    pub status: StatusCode,
    /// `(name, value)` headers besides `Content-Length`.
    pub headers: Vec<(&'static str, String)>,
    /// A small body held in memory (a have-map; empty for `HEAD`, errors and file ranges).
    pub body: Vec<u8>,
    /// A body streamed from the artifact's file: `(file, first byte, length in bytes)`.
    pub range: Option<(Arc<File>, u64, u64)>,
}

impl Answer {
    fn status(status: StatusCode) -> Self {
        Answer {
            status,
            headers: Vec::new(),
            body: Vec::new(),
            range: None,
        }
    }

    /// The body's length in bytes (`Content-Length`).
    pub fn len(&self) -> u64 {
        self.range
            .as_ref()
            .map_or(self.body.len() as u64, |(_, _, len)| *len)
    }

    /// True when the body is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The whole body, read into memory (for tests and logs; the server streams it).
    ///
    /// # Errors
    /// The file cannot be read.
    pub fn read_body(&self) -> std::io::Result<Vec<u8>> {
        match &self.range {
            Some((file, start, len)) => {
                let mut buf = vec![0u8; *len as usize];
                file.read_exact_at(&mut buf, *start)?;
                Ok(buf)
            }
            None => Ok(self.body.clone()),
        }
    }
}

impl Shelf {
    /// An empty shelf.
    pub fn new() -> Self {
        Shelf::default()
    }

    /// Offers the artifact of `size` bytes in chunks of `chunk_size` bytes at URL `path`,
    /// reading it from `file` (the partial file: its descriptor stays valid across the rename
    /// to the final path); `have` flags the chunks already verified. Replaces an earlier offer
    /// of the same path.
    pub fn offer(&self, path: &str, file: File, size: u64, chunk_size: u64, have: Vec<bool>) {
        let held = Held {
            file: Arc::new(file),
            size,
            chunk_size: chunk_size.max(1),
            have,
        };
        self.lock().insert(path.to_owned(), held);
    }

    /// Records chunk `index` of `path` as verified and written: it is served from now on.
    pub fn mark(&self, path: &str, index: u64) {
        if let Some(flag) = self
            .lock()
            .get_mut(path)
            .and_then(|h| h.have.get_mut(index as usize))
        {
            *flag = true;
        }
    }

    /// Stops offering `path` (its fetch failed and the partial file is gone).
    pub fn withdraw(&self, path: &str) {
        self.lock().remove(path);
    }

    /// Body bytes sent to peers so far.
    pub fn sent_bytes(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Held>> {
        // A panic while holding the lock cannot leave the map half-changed (each change is
        // one insert, remove or flag), so a poisoned lock is still usable.
        self.held.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The answer to `method path` with the `Range` header `range` (module docs).
    pub fn answer(&self, method: &Method, path: &str, range: Option<&str>) -> Answer {
        let head = match *method {
            Method::GET => false,
            Method::HEAD => true,
            _ => {
                let mut a = Answer::status(StatusCode::METHOD_NOT_ALLOWED);
                a.headers.push(("allow", "GET, HEAD".to_owned()));
                return a;
            }
        };
        let mut answer = self.answer_get(path, range);
        if head {
            answer.body.clear();
            answer.range = None;
        }
        answer
    }

    fn answer_get(&self, path: &str, range: Option<&str>) -> Answer {
        if let Some(base) = path.strip_suffix(".have") {
            let shelf = self.lock();
            let Some(held) = shelf.get(base) else {
                return Answer::status(StatusCode::NOT_FOUND);
            };
            return Answer {
                status: StatusCode::OK,
                headers: vec![
                    (CONTENT_TYPE.as_str(), "application/octet-stream".to_owned()),
                    (CACHE_CONTROL.as_str(), "no-store".to_owned()),
                ],
                body: encode_have(&held.have),
                range: None,
            };
        }
        let (file, size, start, end, full) = {
            let shelf = self.lock();
            let Some(held) = shelf.get(path) else {
                return Answer::status(StatusCode::NOT_FOUND);
            };
            let size = held.size;
            let (start, end, full) = match decide(range, size) {
                RangeDecision::Partial { start, end } => (start, end, false),
                RangeDecision::Full if size > 0 => (0, size - 1, true),
                RangeDecision::Full | RangeDecision::Unsatisfiable => {
                    return unsatisfiable(size);
                }
            };
            if end - start + 1 > held.chunk_size.min(MAX_ANSWER_BYTES) {
                return unsatisfiable(size);
            }
            let first = start / held.chunk_size;
            let last = end / held.chunk_size;
            if (first..=last).any(|c| !held.have.get(c as usize).copied().unwrap_or(false)) {
                return Answer::status(StatusCode::NOT_FOUND);
            }
            (Arc::clone(&held.file), size, start, end, full)
        };
        // No Range, or one that does not parse (ignored, RFC 9110 §14.2): the whole file, 200.
        let whole = full;
        let mut headers = vec![
            (ACCEPT_RANGES.as_str(), "bytes".to_owned()),
            (CONTENT_TYPE.as_str(), "application/octet-stream".to_owned()),
        ];
        if !whole {
            headers.push((
                CONTENT_RANGE.as_str(),
                format!("bytes {start}-{end}/{size}"),
            ));
        }
        Answer {
            status: if whole {
                StatusCode::OK
            } else {
                StatusCode::PARTIAL_CONTENT
            },
            headers,
            body: Vec::new(),
            range: Some((file, start, end - start + 1)),
        }
    }

    /// The have-map of `path` as flags, if offered (for logs and tests).
    pub fn have(&self, path: &str) -> Option<Vec<bool>> {
        self.lock().get(path).map(|h| h.have.clone())
    }

    /// Chunks of an offered artifact (for tests).
    pub fn chunks(&self, path: &str) -> Option<u64> {
        self.lock()
            .get(path)
            .map(|h| chunk_count(h.size, h.chunk_size))
    }
}

fn unsatisfiable(size: u64) -> Answer {
    Answer {
        status: StatusCode::RANGE_NOT_SATISFIABLE,
        headers: vec![(CONTENT_RANGE.as_str(), format!("bytes */{size}"))],
        body: Vec::new(),
        range: None,
    }
}

/// Binds `addr` for [`serve`].
///
/// # Errors
/// The bind error (address in use, not local).
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Serves `shelf` on `listener` until the task is dropped (module docs for the rules). A
/// connection's errors end that connection only.
pub async fn serve(listener: TcpListener, shelf: Shelf) {
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(permit) = Arc::clone(&permits).acquire_owned().await else {
            return;
        };
        let (stream, _) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                // EMFILE and friends: wait a little rather than spin.
                log::line(&format!("serve: accept failed: {e}"));
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let shelf = shelf.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let shelf = shelf.clone();
                async move {
                    let range = req
                        .headers()
                        .get(hyper::header::RANGE)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned);
                    let a = shelf.answer(req.method(), req.uri().path(), range.as_deref());
                    if a.status.is_success() && *req.method() == Method::GET {
                        shelf.sent.fetch_add(a.len(), Ordering::Relaxed);
                    }
                    Ok::<_, std::convert::Infallible>(response(a))
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

type Body = BoxBody<Bytes, std::io::Error>;

/// The file range `(file, start, len)` as a body of [`READ_BLOCK`]-byte frames, read as the
/// connection takes them. A read error ends the body early (the client sees a short answer
/// and drops the chunk, as for any source).
fn file_body(file: Arc<File>, start: u64, len: u64) -> Body {
    let blocks =
        futures::stream::unfold((file, start, start + len), |(file, at, end)| async move {
            if at >= end {
                return None;
            }
            let n = (end - at).min(READ_BLOCK as u64) as usize;
            let mut buf = vec![0u8; n];
            let frame = file
                .read_exact_at(&mut buf, at)
                .map(|()| Frame::data(Bytes::from(buf)));
            let next = if frame.is_ok() { at + n as u64 } else { end };
            Some((frame, (file, next, end)))
        });
    StreamBody::new(blocks).boxed()
}

fn response(a: Answer) -> Response<Body> {
    let len = a.len();
    let body = match a.range {
        Some((file, start, n)) => file_body(file, start, n),
        None => Full::new(Bytes::from(a.body))
            .map_err(|never| match never {})
            .boxed(),
    };
    let mut resp = Response::new(body);
    *resp.status_mut() = a.status;
    let h = resp.headers_mut();
    for (name, value) in a.headers {
        if let Ok(v) = value.parse() {
            h.insert(name, v);
        }
    }
    h.insert(CONTENT_LENGTH, len.into());
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    const CHUNK: u64 = 64 << 10;
    const PATH: &str = "/stable/x86_64/rootfs.squashfs";

    fn shelf_with(data: &[u8], have: Vec<bool>) -> Shelf {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(data).unwrap();
        let shelf = Shelf::new();
        shelf.offer(PATH, f, data.len() as u64, CHUNK, have);
        shelf
    }

    fn data() -> Vec<u8> {
        (0..(3 * CHUNK + 100)).map(|i| (i % 251) as u8).collect()
    }

    #[test]
    fn only_verified_chunks_are_served() {
        let data = data();
        let shelf = shelf_with(&data, vec![true, false, false, false]);
        let get = |r: &str| shelf.answer(&Method::GET, PATH, Some(r));
        let a = get(&format!("bytes=0-{}", CHUNK - 1));
        assert_eq!(a.status, StatusCode::PARTIAL_CONTENT);
        assert!(
            a.read_body().unwrap() == data[..CHUNK as usize],
            "chunk 0's bytes"
        );
        assert!(a.headers.contains(&(
            "content-range",
            format!("bytes 0-{}/{}", CHUNK - 1, data.len())
        )));
        // One byte of chunk 1, not yet verified: refused.
        assert_eq!(
            get(&format!("bytes=1-{CHUNK}")).status,
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            get(&format!("bytes={CHUNK}-{}", 2 * CHUNK - 1)).status,
            StatusCode::NOT_FOUND
        );
        shelf.mark(PATH, 1);
        let a = get(&format!("bytes={CHUNK}-{}", 2 * CHUNK - 1));
        assert_eq!(a.status, StatusCode::PARTIAL_CONTENT);
        assert!(a.read_body().unwrap() == data[CHUNK as usize..2 * CHUNK as usize]);
        // Without Range: a file of one chunk whole (200), once that chunk is held.
        let small = shelf_with(&data[..100], vec![false]);
        let whole = || small.answer(&Method::GET, PATH, None);
        assert_eq!(whole().status, StatusCode::NOT_FOUND);
        small.mark(PATH, 0);
        let a = whole();
        assert_eq!(a.status, StatusCode::OK);
        assert!(a.read_body().unwrap() == data[..100]);
    }

    #[test]
    fn the_have_map_follows_the_marks() {
        let shelf = shelf_with(&data(), vec![false; 4]);
        let have = |s: &Shelf| s.answer(&Method::GET, &format!("{PATH}.have"), None);
        assert_eq!(have(&shelf).body, vec![0]);
        shelf.mark(PATH, 0);
        shelf.mark(PATH, 3);
        shelf.mark(PATH, 99); // past the end: ignored
        let a = have(&shelf);
        assert_eq!(a.status, StatusCode::OK);
        assert_eq!(a.body, vec![0x90]);
        assert_eq!(shelf.chunks(PATH), Some(4));
        shelf.withdraw(PATH);
        assert_eq!(have(&shelf).status, StatusCode::NOT_FOUND);
        assert_eq!(
            shelf.answer(&Method::GET, PATH, None).status,
            StatusCode::NOT_FOUND
        );
    }

    #[test]
    fn bad_requests_are_refused() {
        let data = data();
        let shelf = shelf_with(&data, vec![true; 4]);
        assert_eq!(
            shelf.answer(&Method::POST, PATH, None).status,
            StatusCode::METHOD_NOT_ALLOWED
        );
        assert_eq!(
            shelf
                .answer(&Method::GET, "/stable/x86_64/other", None)
                .status,
            StatusCode::NOT_FOUND
        );
        let a = shelf.answer(&Method::GET, PATH, Some("bytes=999999999-"));
        assert_eq!(a.status, StatusCode::RANGE_NOT_SATISFIABLE);
        assert!(a
            .headers
            .contains(&("content-range", format!("bytes */{}", data.len()))));
        let head = shelf.answer(&Method::HEAD, PATH, Some("bytes=0-9"));
        assert_eq!(head.status, StatusCode::PARTIAL_CONTENT);
        assert!(head.is_empty() && head.range.is_none());
    }

    #[test]
    fn an_answer_is_capped_at_the_largest_chunk() {
        // A sparse file of MAX_ANSWER_BYTES + 1 bytes, all held.
        let f = tempfile::tempfile().unwrap();
        let size = MAX_ANSWER_BYTES + 1;
        f.set_len(size).unwrap();
        let shelf = Shelf::new();
        let chunks = chunk_count(size, MAX_CHUNK_SIZE) as usize;
        shelf.offer(PATH, f, size, MAX_CHUNK_SIZE, vec![true; chunks]);
        let refused = shelf.answer(&Method::GET, PATH, None);
        assert_eq!(refused.status, StatusCode::RANGE_NOT_SATISFIABLE);
        let ok = shelf.answer(&Method::GET, PATH, Some("bytes=1-"));
        assert_eq!(ok.status, StatusCode::PARTIAL_CONTENT);
        assert_eq!(ok.len(), MAX_ANSWER_BYTES);
    }

    #[test]
    fn an_answer_is_capped_at_one_chunk_of_the_artifact() {
        let data = data();
        let shelf = shelf_with(&data, vec![true; 4]);
        let get = |r: &str| shelf.answer(&Method::GET, PATH, Some(r));
        assert_eq!(get(&format!("bytes=0-{}", CHUNK - 1)).len(), CHUNK);
        // One chunk's worth across a chunk boundary is fine; one byte more is not.
        assert_eq!(
            get(&format!("bytes=1-{CHUNK}")).status,
            StatusCode::PARTIAL_CONTENT
        );
        let two = get(&format!("bytes=0-{CHUNK}"));
        assert_eq!(two.status, StatusCode::RANGE_NOT_SATISFIABLE);
        assert!(two.is_empty());
        let all = shelf.answer(&Method::GET, PATH, None);
        assert_eq!(all.status, StatusCode::RANGE_NOT_SATISFIABLE);
    }

    #[tokio::test]
    async fn it_answers_over_http() {
        let data = data();
        let shelf = shelf_with(&data, vec![true, true, false, false]);
        let listener = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(serve(listener, shelf.clone()));
        let client = reqwest::Client::new();
        let url = format!("http://{addr}{PATH}");
        let r = client
            .get(&url)
            .header("range", "bytes=10-19")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), reqwest::StatusCode::PARTIAL_CONTENT);
        assert_eq!(r.bytes().await.unwrap(), data[10..20]);
        // A whole chunk's worth across two READ_BLOCK reads, streamed from the file.
        let r = client
            .get(&url)
            .header("range", format!("bytes=10-{}", CHUNK + 9))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), reqwest::StatusCode::PARTIAL_CONTENT);
        assert_eq!(r.content_length(), Some(CHUNK));
        assert!(r.bytes().await.unwrap() == data[10..CHUNK as usize + 10]);
        let have = client
            .get(format!("{url}.have"))
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        assert_eq!(have.as_ref(), &[0xc0]);
        assert_eq!(shelf.sent_bytes(), 10 + CHUNK + 1);
        server.abort();
    }
}
