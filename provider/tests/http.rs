//! Real-socket tests of `plasmd serve` on 127.0.0.1: the Range table (RFC 9110 §14), If-Range,
//! the slowloris header timeout, the request head limit, graceful shutdown, 32 concurrent
//! 64 MiB downloads, the write timeout and the per-IP connection cap (issue 15 §7).

mod common;

use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const BODY: &[u8] = b"0123456789abcdefghij"; // 20 bytes

#[tokio::test]
async fn range_table_over_a_real_socket() {
    let dir = tempfile::tempdir().unwrap();
    let rel = common::tree(dir.path(), BODY, b"i");
    common::sign_release(&rel);
    let server = common::serve(dir.path(), |_| {}).await;
    let client = reqwest::Client::new();
    let url = server.url("/stable/x86_64/kernel");
    // (Range, status, body, Content-Range)
    let table: &[(&str, u16, &[u8], Option<&str>)] = &[
        ("bytes=0-0", 206, b"0", Some("bytes 0-0/20")),
        ("bytes=-1", 206, b"j", Some("bytes 19-19/20")),
        ("bytes=15-", 206, b"fghij", Some("bytes 15-19/20")),
        ("bytes=19-", 206, b"j", Some("bytes 19-19/20")),
        ("bytes=20-", 416, b"", Some("bytes */20")),
        ("bytes=1000-", 416, b"", Some("bytes */20")),
        ("bytes=5-2", 200, BODY, None),
        ("garbage", 200, BODY, None),
        ("bytes=0-1,4-5", 200, BODY, None),
        ("bytes=10-1000", 206, b"abcdefghij", Some("bytes 10-19/20")),
    ];
    for (range, status, body, content_range) in table {
        let resp = client
            .get(&url)
            .header("range", *range)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), *status, "{range}");
        let cr = resp
            .headers()
            .get("content-range")
            .map(|v| v.to_str().unwrap().to_owned());
        assert_eq!(cr.as_deref(), *content_range, "{range}");
        assert_eq!(resp.headers()["accept-ranges"], "bytes");
        let got = resp.bytes().await.unwrap();
        if *status != 416 {
            assert_eq!(&got[..], *body, "{range}");
        }
    }
    server.stop().await;
}

#[tokio::test]
async fn if_range_with_a_stale_etag_gets_the_full_body() {
    let dir = tempfile::tempdir().unwrap();
    let rel = common::tree(dir.path(), BODY, b"i");
    common::sign_release(&rel);
    let server = common::serve(dir.path(), |_| {}).await;
    let client = reqwest::Client::new();
    let url = server.url("/stable/x86_64/kernel");
    let etag = format!("\"{}\"", phase_protocol::Sha256Digest::of(BODY).hex());
    let resp = client
        .get(&url)
        .header("range", "bytes=10-")
        .header("if-range", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 206);
    assert_eq!(&resp.bytes().await.unwrap()[..], b"abcdefghij");
    let stale = format!("\"{}\"", phase_protocol::Sha256Digest::of(b"old").hex());
    let resp = client
        .get(&url)
        .header("range", "bytes=10-")
        .header("if-range", &stale)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(&resp.bytes().await.unwrap()[..], BODY);
    server.stop().await;
}

#[tokio::test]
async fn slowloris_client_is_disconnected_after_the_header_timeout() {
    let dir = tempfile::tempdir().unwrap();
    common::tree(dir.path(), BODY, b"i");
    let server = common::serve(dir.path(), |c| {
        c.header_timeout = Duration::from_millis(500)
    })
    .await;
    let mut slow = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    slow.write_all(b"GET /stable/x86_64/kernel HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    // Never finish the head; the server must close within a bounded time.
    let mut buf = [0u8; 1024];
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match slow.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {} // a 408 may precede the close
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "slow client still connected after 10 s");
    // A well-behaved client is still served.
    let resp = reqwest::get(server.url("/stable/x86_64/kernel"))
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    server.stop().await;
}

/// Sends one GET with an `X-Pad` header of `pad` bytes; returns the response's first line
/// (empty if the server closed without answering).
async fn status_line_with_header_of(addr: std::net::SocketAddr, pad: usize) -> String {
    let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "GET /health HTTP/1.1\r\nHost: x\r\nX-Pad: {}\r\nConnection: close\r\n\r\n",
        "a".repeat(pad)
    );
    // The server may answer and close before it has read all of an oversized head.
    let _ = c.write_all(head.as_bytes()).await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), c.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out)
        .lines()
        .next()
        .unwrap_or("")
        .to_owned()
}

#[tokio::test]
async fn request_head_over_the_connection_buffer_is_refused_and_one_under_is_served() {
    let dir = tempfile::tempdir().unwrap();
    common::tree(dir.path(), BODY, b"i");
    let server = common::serve(dir.path(), |_| {}).await;
    let limit = phase_provider::server::CONNECTION_BUFFER_BYTES;
    let ok = status_line_with_header_of(server.addr, limit / 2).await;
    assert!(
        ok.starts_with("HTTP/1.1 200"),
        "head of {} bytes: {ok:?}",
        limit / 2
    );
    // hyper checks the limit between reads, so a head a little over it may still parse.
    let refused = status_line_with_header_of(server.addr, 2 * limit).await;
    assert!(
        refused.starts_with("HTTP/1.1 431"),
        "head of {} bytes: {refused:?}",
        2 * limit
    );
    server.stop().await;
}

#[tokio::test]
async fn connection_limit_holds_extra_clients_until_a_slot_frees() {
    let dir = tempfile::tempdir().unwrap();
    common::tree(dir.path(), BODY, b"i");
    let server = common::serve(dir.path(), |c| c.max_connections = 1).await;
    let mut first = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    first
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = first.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 "), "first client served");
    // The only slot is taken by the kept-alive first connection: a second request waits.
    let url = server.url("/health");
    let second = tokio::spawn(async move { reqwest::get(url).await.map(|r| r.status().as_u16()) });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !second.is_finished(),
        "second client served beyond the limit"
    );
    drop(first);
    let status = tokio::time::timeout(Duration::from_secs(10), second)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(status, 200);
    server.stop().await;
}

#[tokio::test]
async fn graceful_shutdown_finishes_quick_downloads_and_aborts_stalled_ones() {
    let dir = tempfile::tempdir().unwrap();
    let big = common::pattern(16 << 20, 7);
    common::tree(dir.path(), &big, b"i");
    let server = common::serve(dir.path(), |c| {
        c.shutdown_timeout = Duration::from_millis(1500)
    })
    .await;
    common::wait_ready(&server).await;
    // A stalled client: sends a request and never reads, so its response cannot finish.
    let mut stalled = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    stalled
        .write_all(b"GET /stable/x86_64/kernel HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut first = [0u8; 16];
    stalled.read_exact(&mut first).await.unwrap();
    // A normal client mid-download when shutdown begins.
    let resp = reqwest::get(server.url("/stable/x86_64/kernel"))
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let addr = server.addr;
    let stopping = tokio::spawn(server.stop());
    let body = resp.bytes().await.unwrap();
    assert_eq!(
        Sha256::digest(&body),
        Sha256::digest(&big),
        "in-flight download completed intact"
    );
    let report = tokio::time::timeout(Duration::from_secs(20), stopping)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        report.aborted, 1,
        "the stalled download was cut at the deadline"
    );
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "listener closed"
    );
    drop(stalled);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_two_concurrent_clients_each_get_64_mib_with_matching_hash() {
    const SIZE: usize = 64 << 20;
    let dir = tempfile::tempdir().unwrap();
    let data = common::pattern(SIZE, 42);
    let want: [u8; 32] = Sha256::digest(&data).into();
    let rel = common::tree(dir.path(), &data, b"i");
    drop(data);
    common::sign_release(&rel);
    let server = common::serve(dir.path(), |_| {}).await;
    let client = reqwest::Client::new();
    let url = server.url("/stable/x86_64/kernel");
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..32 {
        let (client, url) = (client.clone(), url.clone());
        tasks.spawn(async move {
            let mut resp = client.get(&url).send().await.unwrap();
            assert_eq!(resp.status().as_u16(), 200);
            let mut hasher = Sha256::new();
            let mut n = 0usize;
            while let Some(chunk) = resp.chunk().await.unwrap() {
                n += chunk.len();
                hasher.update(&chunk);
            }
            (n, <[u8; 32]>::from(hasher.finalize()))
        });
    }
    let all = tokio::time::timeout(Duration::from_secs(400), async {
        let mut out = Vec::new();
        while let Some(r) = tasks.join_next().await {
            out.push(r.unwrap());
        }
        out
    })
    .await
    .expect("32 x 64 MiB did not finish within 400 s");
    assert_eq!(all.len(), 32);
    for (n, hash) in all {
        assert_eq!(n, SIZE);
        assert_eq!(hash, want);
    }
    let status: serde_json::Value = serde_json::from_slice(
        &reqwest::get(server.url("/status"))
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        status["artifacts"]["stable/x86_64/kernel"]["bytes"],
        32 * SIZE as u64
    );
    server.stop().await;
}

/// `/status` of `server` as JSON (over a fresh `Connection: close` request); `None` when the
/// request fails (e.g. refused by the per-IP cap).
async fn status_json(server: &common::Server) -> Option<serde_json::Value> {
    let resp = reqwest::Client::new()
        .get(server.url("/status"))
        .header("connection", "close")
        .send()
        .await
        .ok()?;
    serde_json::from_slice(&resp.bytes().await.ok()?).ok()
}

/// Polls `/status` every 25 ms until `cond` holds on it; panics naming `what` after 20 s.
async fn wait_for_status(
    server: &common::Server,
    what: &str,
    cond: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let v = status_json(server).await.unwrap_or_default();
        if cond(&v) {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not within 20 s; /status {v}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test]
async fn client_that_stops_reading_is_dropped_after_the_write_timeout() {
    const SIZE: usize = 16 << 20; // more than every socket buffer on the way
    let limit = Duration::from_millis(500);
    let dir = tempfile::tempdir().unwrap();
    common::tree(dir.path(), &common::pattern(SIZE, 3), b"i");
    let server = common::serve(dir.path(), |c| c.write_timeout = limit).await;
    // A small receive buffer, so the window is full after a few KiB.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stalled = socket.connect(server.addr).await.unwrap();
    let started = tokio::time::Instant::now();
    stalled
        .write_all(b"GET /stable/x86_64/kernel HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut head = [0u8; 12];
    stalled.read_exact(&mut head).await.unwrap();
    assert_eq!(&head, b"HTTP/1.1 200");
    // Never read again: the server must give up on this download by itself.
    let v = wait_for_status(&server, "stalled download dropped", |v| {
        v["write_timeouts"] == 1 && v["active_downloads"] == 0
    })
    .await;
    assert!(started.elapsed() >= limit, "dropped before the limit: {v}");
    // What the kernel had queued still arrives, then the connection ends short of the body.
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(20), stalled.read_to_end(&mut rest))
        .await
        .expect("connection still open after the write timeout");
    assert!(
        rest.len() < SIZE,
        "whole body sent ({} bytes) to a client that stopped reading",
        rest.len()
    );
    server.stop().await;
}

#[tokio::test]
async fn slow_steady_reader_gets_the_whole_body_despite_the_write_timeout() {
    const SIZE: usize = 16 << 20;
    let limit = Duration::from_secs(1);
    let dir = tempfile::tempdir().unwrap();
    let data = common::pattern(SIZE, 4);
    common::tree(dir.path(), &data, b"i");
    let server = common::serve(dir.path(), |c| c.write_timeout = limit).await;
    let mut c = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let started = tokio::time::Instant::now();
    c.write_all(b"GET /stable/x86_64/kernel HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    // At most 64 KiB per read, one read per 8 ms: at least 256 reads, about 2 s in all (twice
    // the limit), while the server's writes wait only milliseconds each time.
    let mut out = Vec::with_capacity(SIZE + 512);
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = c.read(&mut buf).await.expect("slow reader was cut");
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
        // The reader's pace, not a wait for a condition.
        tokio::time::sleep(Duration::from_millis(8)).await;
    }
    assert!(
        started.elapsed() > limit,
        "transfer did not outlast the limit"
    );
    let at = out.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    assert!(out.starts_with(b"HTTP/1.1 200"));
    assert_eq!(out.len() - at, SIZE, "whole body received");
    assert_eq!(Sha256::digest(&out[at..]), Sha256::digest(&data));
    assert_eq!(status_json(&server).await.unwrap()["write_timeouts"], 0);
    server.stop().await;
}

/// Connects, sends `GET /health` (keep-alive) and reads the answer's first bytes: `None` when
/// the server closed the connection without answering.
async fn health_on_new_connection(
    addr: std::net::SocketAddr,
) -> (tokio::net::TcpStream, Option<Vec<u8>>) {
    let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
    // The server may already have closed it; then the write or the read fails.
    let _ = c
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    let mut buf = vec![0u8; 4096];
    let got = match tokio::time::timeout(Duration::from_secs(10), c.read(&mut buf)).await {
        Ok(Ok(n)) if n > 0 => Some(buf[..n].to_vec()),
        Ok(_) => None,
        Err(_) => panic!("neither answered nor closed within 10 s"),
    };
    (c, got)
}

#[tokio::test]
async fn connection_over_the_per_ip_cap_is_closed_and_a_freed_slot_is_reused() {
    let dir = tempfile::tempdir().unwrap();
    common::tree(dir.path(), BODY, b"i");
    let cap = 2;
    let server = common::serve(dir.path(), |c| c.max_connections_per_ip = cap).await;
    // `cap` connections from 127.0.0.1, answered and held open (keep-alive).
    let mut held = Vec::new();
    for i in 0..cap {
        let (c, got) = health_on_new_connection(server.addr).await;
        let got = got.unwrap_or_else(|| panic!("connection {i} under the cap was refused"));
        assert!(got.starts_with(b"HTTP/1.1 "), "connection {i} answered");
        held.push(c);
    }
    // One more: closed without an answer.
    let (_extra, got) = health_on_new_connection(server.addr).await;
    assert!(
        got.is_none(),
        "connection over the cap was answered: {:?}",
        String::from_utf8_lossy(&got.unwrap_or_default())
    );
    // Positive control: once one closes, a new connection is served (retried until the
    // server has seen the close, within a deadline).
    drop(held.remove(0));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (_c, got) = health_on_new_connection(server.addr).await;
        if let Some(got) = got {
            assert!(got.starts_with(b"HTTP/1.1 "), "freed slot served");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no connection accepted within 20 s after one closed"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    drop(held);
    wait_for_status(&server, "refusal counted on /status", |v| {
        v["connections_refused"].as_u64() >= Some(1)
    })
    .await;
    server.stop().await;
}
