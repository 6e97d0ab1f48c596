//! A small HTTP/1.1 client for `plasmd provider status|list` (seed 000 "Query provider status").
//!
//! Plain `http://` only (the operator queries a provider on the LAN or loopback); bodies are
//! capped at 4 MiB and the whole exchange at 10 s.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;

/// Longest reply body accepted, in bytes (4 MiB).
pub const MAX_BODY: usize = 4 << 20;
/// Time allowed for connect, request and reply.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// Why a provider could not be queried.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The address is not `http://host:port[/]` or `host:port`.
    #[error("provider address {0:?} is not http://HOST:PORT or HOST:PORT")]
    BadAddr(String),
    /// TCP connect failed.
    #[error("cannot connect to {addr}")]
    Connect {
        /// host:port.
        addr: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The HTTP exchange failed.
    #[error("HTTP request to {url} failed")]
    Http {
        /// The URL.
        url: String,
        /// The hyper error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// No answer in time.
    #[error("no answer from {url} within {}s", TIMEOUT.as_secs())]
    Timeout {
        /// The URL.
        url: String,
    },
}

/// Splits `addr` into `host:port` (port 8080 if absent).
///
/// # Errors
/// [`ClientError::BadAddr`].
pub fn host_port(addr: &str) -> Result<String, ClientError> {
    let bad = || ClientError::BadAddr(addr.to_owned());
    if addr.starts_with("https://") {
        return Err(bad());
    }
    let rest = addr
        .strip_prefix("http://")
        .unwrap_or(addr)
        .trim_end_matches('/');
    if rest.is_empty() || rest.contains('/') || rest.contains(char::is_whitespace) {
        return Err(bad());
    }
    let has_port = rest
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
        && !rest.ends_with(']');
    Ok(if has_port {
        rest.to_owned()
    } else {
        format!("{rest}:8080")
    })
}

/// GETs `path` from the provider at `addr`; returns the status code and body.
///
/// # Errors
/// [`ClientError`].
pub async fn get(addr: &str, path: &str) -> Result<(u16, Bytes), ClientError> {
    let hp = host_port(addr)?;
    let url = format!("http://{hp}{path}");
    tokio::time::timeout(TIMEOUT, get_inner(&hp, &url, path))
        .await
        .map_err(|_| ClientError::Timeout { url: url.clone() })?
}

async fn get_inner(hp: &str, url: &str, path: &str) -> Result<(u16, Bytes), ClientError> {
    let http = |e: Box<dyn std::error::Error + Send + Sync>| ClientError::Http {
        url: url.to_owned(),
        source: e,
    };
    let stream =
        tokio::net::TcpStream::connect(hp)
            .await
            .map_err(|source| ClientError::Connect {
                addr: hp.to_owned(),
                source,
            })?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| http(e.into()))?;
    let driver = tokio::spawn(conn);
    let req = hyper::Request::get(path)
        .header(hyper::header::HOST, hp)
        .header(
            hyper::header::USER_AGENT,
            concat!("plasmd/", env!("CARGO_PKG_VERSION")),
        )
        .body(Empty::<Bytes>::new())
        .map_err(|e| http(e.into()))?;
    let resp = sender.send_request(req).await.map_err(|e| http(e.into()))?;
    let status = resp.status().as_u16();
    let body = Limited::new(resp.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(http)?
        .to_bytes();
    driver.abort();
    Ok((status, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_normalise_to_host_port() {
        assert_eq!(
            host_port("http://192.0.2.1:8080/").unwrap(),
            "192.0.2.1:8080"
        );
        assert_eq!(host_port("127.0.0.1:9").unwrap(), "127.0.0.1:9");
        assert_eq!(host_port("example.org").unwrap(), "example.org:8080");
        for bad in ["", "https://x:1", "http://x:1/path", "a b"] {
            assert!(host_port(bad).is_err(), "{bad:?}");
        }
    }
}
