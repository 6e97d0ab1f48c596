//! The HTTP client every fetch uses (DESIGN §7, issue 5 "Schemes" and "HTTPS").
//!
//! reqwest over rustls (no OpenSSL, so the binary links statically) trusting the webpki roots
//! plus the PEM certificates of `--ca-file` (operators run private CAs). Redirects are followed
//! at most [`MAX_REDIRECTS`] times and only to `http`/`https`; a redirect from https down to
//! http is refused too. No proxy from the environment is used: an initramfs has none, and a
//! stray `HTTP_PROXY` must not reroute a boot. Compression is not negotiated, so the bytes
//! hashed are the bytes of the file.

use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::redirect::{Attempt, Policy};

/// Most redirects followed for one request.
pub const MAX_REDIRECTS: usize = 5;

/// Why the client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// `--ca-file` could not be read.
    #[error("cannot read CA file {path}")]
    ReadCa {
        /// The path given.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// `--ca-file` holds no usable PEM certificate.
    #[error("CA file {path} holds no valid PEM certificate")]
    BadCa {
        /// The path given.
        path: PathBuf,
        /// reqwest's complaint, if any.
        #[source]
        source: Option<reqwest::Error>,
    },
    /// reqwest refused the configuration (TLS backend).
    #[error("cannot build the HTTP client")]
    Build(#[source] reqwest::Error),
}

fn redirect_policy() -> Policy {
    Policy::custom(|attempt: Attempt<'_>| {
        if attempt.previous().len() >= MAX_REDIRECTS {
            return attempt.error(format!("more than {MAX_REDIRECTS} redirects"));
        }
        let scheme = attempt.url().scheme().to_owned();
        let from_https = attempt
            .previous()
            .last()
            .is_some_and(|u| u.scheme() == "https");
        match scheme.as_str() {
            "https" => attempt.follow(),
            "http" if !from_https => attempt.follow(),
            "http" => attempt.error("redirect from https to http refused"),
            other => attempt.error(format!("redirect to scheme {other:?} refused")),
        }
    })
}

/// Builds the client: rustls + webpki roots + the certificates in `ca_file`, the redirect
/// policy of the module docs, `connect_timeout` for TCP + TLS setup.
///
/// # Errors
/// [`ClientError::ReadCa`], [`ClientError::BadCa`], [`ClientError::Build`].
pub fn build(
    ca_file: Option<&Path>,
    connect_timeout: Duration,
) -> Result<reqwest::Client, ClientError> {
    let mut builder = reqwest::Client::builder()
        .use_rustls_tls()
        .connect_timeout(connect_timeout)
        .redirect(redirect_policy())
        .no_proxy()
        .tcp_nodelay(true)
        // Idle keep-alive connections are closed after 5 s: a fetch reuses its connections
        // within that, and peers serve a bounded number of connections (fetch::share).
        .pool_idle_timeout(Duration::from_secs(5))
        .user_agent(concat!("phase/", env!("CARGO_PKG_VERSION")));
    if let Some(path) = ca_file {
        let pem = std::fs::read(path).map_err(|source| ClientError::ReadCa {
            path: path.to_owned(),
            source,
        })?;
        let certs =
            reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| ClientError::BadCa {
                path: path.to_owned(),
                source: Some(e),
            })?;
        if certs.is_empty() {
            return Err(ClientError::BadCa {
                path: path.to_owned(),
                source: None,
            });
        }
        for cert in certs {
            builder = builder.add_root_certificate(cert);
        }
    }
    builder.build().map_err(ClientError::Build)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_or_empty_ca_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("none.pem");
        assert!(matches!(
            build(Some(&missing), Duration::from_secs(1)),
            Err(ClientError::ReadCa { .. })
        ));
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "no certificates here\n").unwrap();
        assert!(matches!(
            build(Some(&empty), Duration::from_secs(1)),
            Err(ClientError::BadCa { .. })
        ));
        assert!(build(None, Duration::from_secs(1)).is_ok());
    }
}
