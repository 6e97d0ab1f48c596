//! The connection layer of `plasmd serve`: accept loop, connection limits, header-read and
//! write timeouts, optional TLS and graceful shutdown (issue 3 "Must have" 3, issue 15 §7;
//! axum `examples/graceful-shutdown`, hyper's `header_read_timeout`).
//!
//! Each accepted connection takes a permit of a semaphore of `max_connections`; when none is
//! left the loop stops accepting, so further clients wait in the kernel's listen backlog
//! instead of costing memory. The accepted connection then takes a slot of its client address
//! ([`ConnectionTracker`], `max_connections_per_ip`); an address that already holds that many
//! is closed at once, before any byte is read or written (the backlog cannot hold back one
//! address only, and an answer would cost what the cap saves; the global cap gives no HTTP
//! answer either). Each connection is served by hyper's HTTP/1.1 server with a Tokio timer,
//! so a client that does not finish its request head within `header_timeout` is disconnected
//! (slowloris), a client that stops reading is disconnected once writes have made no progress
//! for `write_timeout` ([`WriteTimeout`], on the socket below TLS), and hyper buffers at most
//! [`CONNECTION_BUFFER_BYTES`] per connection. On shutdown the listener closes, idle
//! keep-alive connections end at once, in-flight responses get `shutdown_timeout` to finish
//! and are then aborted.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tower::ServiceExt;

use crate::connections::ConnectionTracker;
use crate::metrics::Metrics;
use crate::write_timeout::{WriteStalled, WriteTimeout};

/// hyper's per-connection buffer limit (bytes): the request head it reads, and the body
/// chunks it queues for the socket before it asks the body for the next one (hyper's default
/// is about 400 KiB, up to 6 chunks of 64 KiB). At 64 KiB a download holds one queued chunk
/// plus the one being read; capping it cut plasmd's peak RSS with 64 slow downloads from about
/// 42 to about 30 MiB (issue 3 target < 32 MB; the malloc arena limit in `main` does the
/// rest), and throughput to one client did not change. A request head
/// over about 64 KiB is refused (431; hyper checks between reads, so the cut is not exact), as
/// nginx refuses one over 32 KiB by default.
pub const CONNECTION_BUFFER_BYTES: usize = 64 * 1024;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// A TLS file could not be read.
    #[error("cannot read TLS file {path}")]
    TlsRead {
        /// The PEM file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The PEM file holds no certificate or no private key.
    #[error("TLS file {path} holds no {what}")]
    TlsEmpty {
        /// The PEM file.
        path: PathBuf,
        /// `certificate` or `private key`.
        what: &'static str,
    },
    /// rustls refused the certificate/key pair.
    #[error("TLS certificate and key are not usable")]
    Tls(#[source] rustls::Error),
}

/// Connection-level settings.
#[derive(Clone)]
pub struct ServerOptions {
    /// Maximum simultaneous connections; more wait in the listen backlog.
    pub max_connections: usize,
    /// Maximum simultaneous connections from one client IP address; more are closed at once.
    pub max_connections_per_ip: usize,
    /// Time allowed to send a complete request head (and to finish a TLS handshake).
    pub header_timeout: Duration,
    /// Longest time writes to a client may make no progress before it is disconnected.
    pub write_timeout: Duration,
    /// Deadline for in-flight responses after shutdown begins.
    pub shutdown_timeout: Duration,
    /// TLS, when `--tls-cert`/`--tls-key` were given.
    pub tls: Option<tokio_rustls::TlsAcceptor>,
}

impl std::fmt::Debug for ServerOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerOptions")
            .field("max_connections", &self.max_connections)
            .field("max_connections_per_ip", &self.max_connections_per_ip)
            .field("header_timeout", &self.header_timeout)
            .field("write_timeout", &self.write_timeout)
            .field("shutdown_timeout", &self.shutdown_timeout)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

/// What happened at shutdown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Connections open when shutdown began (the `draining connections=N` log line),
    /// idle keep-alive connections included.
    pub draining: usize,
    /// Connections still open at the deadline and aborted.
    pub aborted: usize,
}

/// Builds a TLS acceptor from a PEM certificate chain and a PEM private key (PKCS#8, PKCS#1 or
/// SEC1), using rustls with the ring provider; HTTP/1.1 only.
///
/// # Errors
/// [`ServerError::TlsRead`], [`ServerError::TlsEmpty`], [`ServerError::Tls`].
pub fn load_tls(cert: &Path, key: &Path) -> Result<tokio_rustls::TlsAcceptor, ServerError> {
    let read = |p: &Path| {
        std::fs::read(p).map_err(|source| ServerError::TlsRead {
            path: p.to_owned(),
            source,
        })
    };
    let cert_pem = read(cert)?;
    let certs: Vec<_> = rustls_pemfile::certs(&mut cert_pem.as_slice())
        .collect::<Result<_, _>>()
        .map_err(|source| ServerError::TlsRead {
            path: cert.to_owned(),
            source,
        })?;
    if certs.is_empty() {
        return Err(ServerError::TlsEmpty {
            path: cert.to_owned(),
            what: "certificate",
        });
    }
    let key_pem = read(key)?;
    let key_der = rustls_pemfile::private_key(&mut key_pem.as_slice())
        .map_err(|source| ServerError::TlsRead {
            path: key.to_owned(),
            source,
        })?
        .ok_or_else(|| ServerError::TlsEmpty {
            path: key.to_owned(),
            what: "private key",
        })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(ServerError::Tls)?
        .with_no_client_auth()
        .with_single_cert(certs, key_der)
        .map_err(ServerError::Tls)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// Serves `router` on `listener` until `shutdown` resolves, then drains as described in the
/// module docs.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    opts: ServerOptions,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()>,
) -> ShutdownReport {
    let limit = Arc::new(Semaphore::new(opts.max_connections.max(1)));
    let tracker = ConnectionTracker::new(opts.max_connections_per_ip);
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            p = Arc::clone(&limit).acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            () = &mut shutdown => break,
        };
        let accepted = tokio::select! {
            a = listener.accept() => a,
            () = &mut shutdown => break,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // EMFILE and friends: back off briefly rather than spin.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let slot = match tracker.try_open(peer.ip()) {
            Ok(slot) => slot,
            Err(refused) => {
                // Dropping the socket unread closes it (RST if the request already arrived);
                // the global permit goes back with it. One line per episode, not per attempt.
                metrics.connection_refused();
                if refused.first {
                    tracing::warn!(peer = %refused.ip, limit = refused.limit, "connection refused: per-IP connection limit reached");
                } else {
                    tracing::debug!(peer = %refused.ip, limit = refused.limit, "connection refused: per-IP connection limit reached");
                }
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let stream = WriteTimeout::new(stream, opts.write_timeout);
        let guard = metrics.connection();
        let (router, opts, stop) = (router.clone(), opts.clone(), stop_rx.clone());
        let metrics = Arc::clone(&metrics);
        tasks.spawn(async move {
            let _permit = permit;
            let _slot = slot;
            let _guard = guard;
            match opts.tls.clone() {
                None => drive(stream, peer, router, &opts, &metrics, stop).await,
                Some(acceptor) => {
                    match tokio::time::timeout(opts.header_timeout, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => drive(tls, peer, router, &opts, &metrics, stop).await,
                        Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!("TLS handshake timed out"),
                    }
                }
            }
        });
        while tasks.try_join_next().is_some() {}
    }
    drop(listener);
    let _ = stop_tx.send(true);
    // Counted by the slots, which each connection gives back as its task ends: `tasks.len()`
    // would also count finished tasks not yet joined (downloads that are already over).
    let draining = tracker.open();
    if draining > 0 {
        tracing::info!(
            connections = draining,
            deadline_ms = opts.shutdown_timeout.as_millis() as u64,
            "draining"
        );
    }
    let drained = tokio::time::timeout(opts.shutdown_timeout, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    let aborted = if drained.is_err() { tracker.open() } else { 0 };
    tasks.abort_all();
    while tasks.join_next().await.is_some() {}
    ShutdownReport { draining, aborted }
}

async fn drive<I>(
    io: I,
    peer: SocketAddr,
    router: Router,
    opts: &ServerOptions,
    metrics: &Metrics,
    mut stop: watch::Receiver<bool>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
        router.clone().oneshot(req)
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(opts.header_timeout)
        .keep_alive(true)
        .max_buf_size(CONNECTION_BUFFER_BYTES);
    let conn = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        () = async { let _ = stop.wait_for(|s| *s).await; } => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        if let Some(stall) = WriteStalled::find(&e) {
            metrics.write_timeout();
            tracing::info!(
                peer = %peer,
                ms = stall.after.as_millis() as u64,
                "client stopped reading: connection dropped after the write timeout"
            );
        } else {
            tracing::debug!(error = %e, "connection ended with an error");
        }
    }
}

/// Resolves on SIGTERM or SIGINT (ctrl-c); logs which.
pub async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = term => tracing::info!("SIGTERM: shutting down"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: shutting down"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    fn options() -> ServerOptions {
        ServerOptions {
            max_connections: 16,
            max_connections_per_ip: 16,
            header_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(10),
            shutdown_timeout: Duration::from_secs(10),
            tls: None,
        }
    }

    /// Polls `cond` every 10 ms until it holds; false after 10 s.
    async fn wait_until(mut cond: impl FnMut() -> bool) -> bool {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while tokio::time::Instant::now() < deadline {
            if cond() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        cond()
    }

    #[tokio::test]
    async fn draining_counts_connections_still_open_not_finished_ones() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let router = Router::new().route("/", axum::routing::get(|| async { "hi" }));
        let metrics = Arc::new(Metrics::default());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(
            listener,
            router,
            options(),
            Arc::clone(&metrics),
            async move {
                let _ = stopped.await;
            },
        ));
        // Open 2: one kept alive after its answer...
        let mut kept = TcpStream::connect(addr).await.unwrap();
        kept.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 512];
        let n = kept.read(&mut buf).await.unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"), "kept-alive answered");
        // ...and one accepted after it that finishes: answered, then closed by the server.
        let mut done = TcpStream::connect(addr).await.unwrap();
        done.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut out = Vec::new();
        done.read_to_end(&mut out).await.unwrap();
        assert!(out.starts_with(b"HTTP/1.1 200"), "finished one answered");
        // Finish 1: wait until the server has let go of it (its task has ended, unjoined).
        assert!(
            wait_until(|| metrics.snapshot().active_connections == 1).await,
            "finished connection still counted as active"
        );
        stop.send(()).unwrap();
        let report = tokio::time::timeout(Duration::from_secs(20), server)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            report,
            ShutdownReport {
                draining: 1,
                aborted: 0
            }
        );
        drop(kept);
    }
}
