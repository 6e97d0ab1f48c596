//! The connection layer of `plasmd serve`: accept loop, connection limit, header-read timeout,
//! optional TLS and graceful shutdown (issue 3 "Must have" 3; axum `examples/graceful-shutdown`,
//! hyper's `header_read_timeout`).
//!
//! Each accepted connection takes a permit of a semaphore of `max_connections`; when none is
//! left the loop stops accepting, so further clients wait in the kernel's listen backlog
//! instead of costing memory. Each connection is served by hyper's HTTP/1.1 server with a
//! Tokio timer, so a client that does not finish its request head within `header_timeout` is
//! disconnected (slowloris), and hyper buffers at most [`CONNECTION_BUFFER_BYTES`] per
//! connection. On shutdown the listener closes, idle keep-alive connections end
//! at once, in-flight responses get `shutdown_timeout` to finish and are then aborted.

use std::future::Future;
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

use crate::metrics::Metrics;

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
    /// Maximum simultaneous connections.
    pub max_connections: usize,
    /// Time allowed to send a complete request head (and to finish a TLS handshake).
    pub header_timeout: Duration,
    /// Deadline for in-flight responses after shutdown begins.
    pub shutdown_timeout: Duration,
    /// TLS, when `--tls-cert`/`--tls-key` were given.
    pub tls: Option<tokio_rustls::TlsAcceptor>,
}

impl std::fmt::Debug for ServerOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerOptions")
            .field("max_connections", &self.max_connections)
            .field("header_timeout", &self.header_timeout)
            .field("shutdown_timeout", &self.shutdown_timeout)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

/// What happened at shutdown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShutdownReport {
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
        let stream = match accepted {
            Ok((stream, _peer)) => stream,
            Err(e) => {
                // EMFILE and friends: back off briefly rather than spin.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let guard = metrics.connection();
        let (router, opts, stop) = (router.clone(), opts.clone(), stop_rx.clone());
        tasks.spawn(async move {
            let _permit = permit;
            let _guard = guard;
            match opts.tls.clone() {
                None => drive(stream, router, &opts, stop).await,
                Some(acceptor) => {
                    match tokio::time::timeout(opts.header_timeout, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => drive(tls, router, &opts, stop).await,
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
    let in_flight = tasks.len();
    if in_flight > 0 {
        tracing::info!(
            connections = in_flight,
            deadline_ms = opts.shutdown_timeout.as_millis() as u64,
            "draining"
        );
    }
    let drained = tokio::time::timeout(opts.shutdown_timeout, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    let aborted = if drained.is_err() { tasks.len() } else { 0 };
    tasks.abort_all();
    while tasks.join_next().await.is_some() {}
    ShutdownReport { aborted }
}

async fn drive<I>(io: I, router: Router, opts: &ServerOptions, mut stop: watch::Receiver<bool>)
where
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
        tracing::debug!(error = %e, "connection ended with an error");
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
