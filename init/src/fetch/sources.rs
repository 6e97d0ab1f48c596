//! Candidate URLs for one artifact (DESIGN §7, issue 5 "Candidate URLs").
//!
//! Order: `download_url` (or the filename) resolved against the manifest URL, then against each
//! extra provider base's `{channel}/{arch}/manifest.json` URL, then the manifest's absolute
//! `urls` mirrors. Duplicates are dropped; only `http` and `https` survive.

use phase_protocol::{Artifact, BootManifest};
use reqwest::Url;

/// Why a URL cannot be used as a source.
#[derive(Debug, thiserror::Error)]
pub enum SourceUrlError {
    /// The text does not parse as a URL.
    #[error("cannot parse URL {url:?}")]
    Parse {
        /// The text given.
        url: String,
        /// The parser's complaint.
        #[source]
        source: url::ParseError,
    },
    /// Not `http` or `https`.
    #[error("URL {url} has scheme {scheme:?}; only http and https are fetched")]
    Scheme {
        /// The URL.
        url: String,
        /// Its scheme.
        scheme: String,
    },
}

/// Parses `text` and refuses every scheme but `http` and `https`.
///
/// # Errors
/// [`SourceUrlError::Parse`], [`SourceUrlError::Scheme`].
pub fn parse_http_url(text: &str) -> Result<Url, SourceUrlError> {
    let url = Url::parse(text).map_err(|source| SourceUrlError::Parse {
        url: text.to_owned(),
        source,
    })?;
    check_scheme(url)
}

fn check_scheme(url: Url) -> Result<Url, SourceUrlError> {
    match url.scheme() {
        "http" | "https" => Ok(url),
        other => Err(SourceUrlError::Scheme {
            url: url.to_string(),
            scheme: other.to_owned(),
        }),
    }
}

/// The manifest URL a provider base serves for (channel, arch):
/// `<base>/{channel}/{arch}/manifest.json`.
///
/// # Errors
/// [`SourceUrlError`] when `base` is not an http(s) URL.
pub fn provider_manifest_url(base: &str, channel: &str, arch: &str) -> Result<Url, SourceUrlError> {
    parse_http_url(&format!(
        "{}/{channel}/{arch}/manifest.json",
        base.trim_end_matches('/')
    ))
}

/// Every candidate URL for `artifact` of `manifest`, in the order they are tried (module docs).
/// Unusable candidates (a provider base that does not parse) are skipped: the others may work.
pub fn candidates(
    manifest: &BootManifest,
    artifact: &Artifact,
    manifest_url: &Url,
    providers: &[String],
) -> Vec<Url> {
    let rel = artifact
        .download_url
        .as_deref()
        .unwrap_or(&artifact.filename);
    let mut out: Vec<Url> = Vec::new();
    let mut push = |url: Url| {
        if !out.contains(&url) {
            out.push(url);
        }
    };
    let mut bases = vec![manifest_url.clone()];
    for p in providers {
        if let Ok(u) = provider_manifest_url(p, &manifest.channel, &manifest.arch) {
            bases.push(u);
        }
    }
    for base in bases {
        if let Ok(u) = base
            .join(rel)
            .map_err(|_| ())
            .and_then(|u| check_scheme(u).map_err(|_| ()))
        {
            push(u);
        }
    }
    for mirror in &artifact.urls {
        if let Ok(u) = parse_http_url(mirror) {
            push(u);
        }
    }
    out
}

/// The URL path a peer serves `artifact` at, `/<channel>/<arch>/<filename>` (the path
/// `plasmd serve` uses; [`super::share`]). Always by filename: a `download_url` may point
/// elsewhere.
pub fn peer_path(manifest: &BootManifest, artifact: &Artifact) -> String {
    format!(
        "/{}/{}/{}",
        manifest.channel, manifest.arch, artifact.filename
    )
}

/// The URL of `artifact` at each peer base URL (`http://192.0.2.11:7400`):
/// `<base>` + [`peer_path`]. Bases that do not parse, or are not http, are skipped.
pub fn peer_urls(manifest: &BootManifest, artifact: &Artifact, peers: &[String]) -> Vec<Url> {
    let path = peer_path(manifest, artifact);
    let mut out: Vec<Url> = Vec::new();
    for p in peers {
        let url = match parse_http_url(&format!("{}{path}", p.trim_end_matches('/'))) {
            Ok(u) if u.path() == path && !out.contains(&u) => u,
            _ => continue,
        };
        out.push(url);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest_with(download_url: Option<&str>, urls: &[&str]) -> BootManifest {
        let json = serde_json::json!({
            "manifest_version": 1, "version": "1.0.0", "channel": "stable", "arch": "amd64",
            "created_at": "2026-01-01T00:00:00Z", "expires_at": "2027-01-01T00:00:00Z",
            "artifacts": {
                "kernel": {"filename": "kernel", "size_bytes": 1,
                  "hash": format!("sha256:{}", "0".repeat(64)),
                  "download_url": download_url, "urls": urls},
                "initramfs": {"filename": "initramfs", "size_bytes": 1,
                  "hash": format!("sha256:{}", "0".repeat(64))}
            }
        });
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn candidates_are_manifest_relative_then_providers_then_mirrors() {
        let m = manifest_with(Some("kernel"), &["https://mirror.example/k", "ftp://x/k"]);
        let murl = Url::parse("http://192.0.2.1:8080/stable/amd64/manifest.json").unwrap();
        let got = candidates(
            &m,
            &m.artifacts["kernel"],
            &murl,
            &[
                "http://192.0.2.2:8080/".into(),
                "http://192.0.2.1:8080".into(),
                "not a url".into(),
            ],
        );
        let got: Vec<String> = got.iter().map(ToString::to_string).collect();
        assert_eq!(
            got,
            [
                "http://192.0.2.1:8080/stable/amd64/kernel",
                "http://192.0.2.2:8080/stable/amd64/kernel",
                "https://mirror.example/k",
            ]
        );
    }

    #[test]
    fn missing_download_url_falls_back_to_the_filename() {
        let m = manifest_with(None, &[]);
        let murl = Url::parse("http://192.0.2.1/a/b/manifest.json").unwrap();
        let got = candidates(&m, &m.artifacts["initramfs"], &murl, &[]);
        assert_eq!(got[0].as_str(), "http://192.0.2.1/a/b/initramfs");
    }

    #[test]
    fn non_http_schemes_are_refused() {
        assert!(matches!(
            parse_http_url("file:///etc/passwd"),
            Err(SourceUrlError::Scheme { .. })
        ));
        assert!(matches!(
            parse_http_url("::"),
            Err(SourceUrlError::Parse { .. })
        ));
        assert!(parse_http_url("https://a.example/x").is_ok());
    }

    #[test]
    fn peer_urls_use_the_filename_under_channel_and_arch() {
        let m = manifest_with(Some("https://elsewhere.example/k"), &[]);
        let a = &m.artifacts["kernel"];
        assert_eq!(peer_path(&m, a), "/stable/amd64/kernel");
        let got = peer_urls(
            &m,
            a,
            &[
                "http://192.0.2.11:7400/".into(),
                "http://192.0.2.11:7400".into(),
                "ftp://192.0.2.12".into(),
                "http://192.0.2.13:7400/sub".into(),
                "not a url".into(),
            ],
        );
        let got: Vec<String> = got.iter().map(ToString::to_string).collect();
        assert_eq!(got, ["http://192.0.2.11:7400/stable/amd64/kernel"]);
    }
}
