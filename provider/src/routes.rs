//! The HTTP API of `plasmd serve` (DESIGN §8, seed 000 "HTTP Endpoints", issue 3 "Must have" 2-3).
//!
//! [`app`] builds the axum router; tests drive it with `tower::ServiceExt::oneshot` and no
//! socket, `server` drives it with hyper. Routes:
//! - `GET /` info, `/health`, `/status`, `/metrics`, `/manifest.json` (default release);
//! - `/{channel}/{arch}/manifest.json` and `/{channel}/{arch}/{artifact}` (arch in any alias,
//!   artifact by filename or by manifest artifact name);
//! - `/{file}`: a file of the default release, so that `download_url`s relative to
//!   `/manifest.json` resolve too.
//!
//! Path safety: the raw (still percent-encoded) path is split on `/` and every segment must be
//! `[A-Za-z0-9._+-]{1,128}` not starting with `.`; anything else (`..`, `%2e%2e`, `%00`, `\`,
//! empty segments from `//`) is answered 400 before any file system access. Only files listed
//! by the store are served, and the store re-checks that each resolves under the root.

use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde_json::json;

use crate::body::file_body;
use crate::hashcache::FileStamp;
use crate::metrics::Metrics;
use crate::range::{decide, RangeDecision};
use crate::store::{Release, Store};

/// What `GET /` tells about this provider.
#[derive(Debug, Clone)]
pub struct ProviderInfo {
    /// Provider name (host name by default).
    pub name: String,
    /// Base URL others should use, without a trailing `/`.
    pub advertise_url: String,
}

/// Shared state of all requests.
#[derive(Debug)]
pub struct AppState {
    /// The artifact store.
    pub store: Arc<Store>,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// Name and URL.
    pub info: ProviderInfo,
    /// libp2p peer id once the DHT runs.
    pub peer_id: Mutex<Option<String>>,
}

impl AppState {
    /// State over `store` with fresh counters.
    pub fn new(store: Arc<Store>, info: ProviderInfo) -> Arc<AppState> {
        Arc::new(AppState {
            store,
            metrics: Arc::new(Metrics::default()),
            info,
            peer_id: Mutex::new(None),
        })
    }
}

/// The router of the provider API.
pub fn app(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/", get(info))
        .route("/health", get(health))
        .route("/status", get(status))
        .route("/metrics", get(metrics))
        .route("/manifest.json", get(default_manifest))
        .fallback(files)
        .with_state(state)
}

fn text(status: StatusCode, msg: impl Into<String>) -> Response {
    let mut body = msg.into();
    body.push('\n');
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body,
    )
        .into_response()
}

fn not_found(state: &AppState, msg: impl Into<String>) -> Response {
    state.metrics.not_found();
    text(StatusCode::NOT_FOUND, msg)
}

fn releases_json(state: &AppState) -> Vec<serde_json::Value> {
    let snap = state.store.snapshot();
    snap.releases
        .values()
        .map(|r| {
            json!({
                "channel": r.channel,
                "arch": r.arch.as_str(),
                "version": r.manifest.version(),
                "manifest_url": format!("{}/{}/{}/manifest.json", state.info.advertise_url, r.channel, r.arch),
                "artifacts": r.files.keys().collect::<Vec<_>>(),
            })
        })
        .collect()
}

async fn info(State(state): State<Arc<AppState>>) -> Response {
    state.metrics.request();
    let snap = state.store.snapshot();
    let mut channels: Vec<&str> = snap.releases.keys().map(|(c, _)| c.as_str()).collect();
    channels.dedup();
    let mut arches: Vec<&str> = snap.releases.keys().map(|(_, a)| a.as_str()).collect();
    arches.sort_unstable();
    arches.dedup();
    let peer_id = state.peer_id.lock().ok().and_then(|p| p.clone());
    axum::Json(json!({
        "name": state.info.name,
        "service": "plasmd",
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_secs": state.metrics.uptime_secs(),
        "advertise_url": state.info.advertise_url,
        "channels": channels,
        "arches": arches,
        "peer_id": peer_id,
        "releases": releases_json(&state),
    }))
    .into_response()
}

/// `GET /health`: `200` when every release can be served, `503` otherwise, as JSON
/// `{"status","reason","hashing","releases","problems"}`.
///
/// `503` with `"status":"unavailable"` and a sentence as `reason` when the artifacts directory
/// cannot be read or holds no release; `503` with `"status":"starting","reason":"hashing"`
/// while any release's manifest is still being generated (its manifest URL answers `503` too),
/// so a load balancer or test waiting for `200` never sends a client to a manifest that cannot
/// be served yet (issue 15 §7). `200` with `"status":"starting"` while only ETags are still
/// being hashed (every manifest can be served), else `"status":"ok"`.
async fn health(State(state): State<Arc<AppState>>) -> Response {
    use crate::store::ManifestState;
    state.metrics.request();
    let snap = state.store.snapshot();
    let root_ok = state
        .store
        .root()
        .is_some_and(|r| std::fs::read_dir(r).is_ok());
    let unavailable = if !root_ok {
        Some("artifacts directory cannot be read".to_owned())
    } else if snap.releases.is_empty() {
        Some(
            snap.problems
                .first()
                .cloned()
                .unwrap_or_else(|| "no release to serve".into()),
        )
    } else {
        None
    };
    let manifest_pending = snap
        .releases
        .values()
        .any(|r| matches!(r.manifest, ManifestState::Pending));
    let hashing = state.store.hashing();
    let (code, status, reason) = match unavailable {
        Some(why) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable", Some(why)),
        None if manifest_pending => (
            StatusCode::SERVICE_UNAVAILABLE,
            "starting",
            Some("hashing".to_owned()),
        ),
        None if hashing => (StatusCode::OK, "starting", None),
        None => (StatusCode::OK, "ok", None),
    };
    let body = json!({
        "status": status,
        "reason": reason,
        "hashing": hashing,
        "releases": snap.releases.len(),
        "problems": snap.problems,
    });
    (code, axum::Json(body)).into_response()
}

async fn status(State(state): State<Arc<AppState>>) -> Response {
    state.metrics.request();
    let m = state.metrics.snapshot();
    axum::Json(json!({
        "name": state.info.name,
        "version": env!("CARGO_PKG_VERSION"),
        "hashing": state.store.hashing(),
        "uptime_secs": m.uptime_secs,
        "requests": m.requests,
        "bytes_served": m.bytes_served,
        "active_connections": m.active_connections,
        "connections_total": m.connections_total,
        "connections_refused": m.connections_refused,
        "write_timeouts": m.write_timeouts,
        "active_downloads": m.active_downloads,
        "not_found": m.not_found,
        "artifacts": m.artifacts,
        "releases": releases_json(&state),
    }))
    .into_response()
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    state.metrics.request();
    let body = state.metrics.prometheus();
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

async fn default_manifest(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    state.metrics.request();
    let snap = state.store.snapshot();
    let Some(key) = state.store.default_release(&snap) else {
        return not_found(
            &state,
            format!(
                "no default release: nothing found for channel/arch {}/{} ({})",
                snap.releases.keys().next().map_or("-", |k| k.0.as_str()),
                state.store.default_arch(),
                snap.problems.join("; ")
            ),
        );
    };
    match snap.releases.get(&key) {
        Some(release) => manifest_response(&state, release, &headers),
        None => not_found(&state, "no default release"),
    }
}

fn manifest_response(state: &AppState, release: &Release, headers: &HeaderMap) -> Response {
    use crate::store::ManifestState;
    let bytes = match &release.manifest {
        ManifestState::Pending => {
            return text(
                StatusCode::SERVICE_UNAVAILABLE,
                "manifest is being generated (hashing artifacts); retry shortly",
            )
        }
        ManifestState::Absent { reason } => return not_found(state, reason.clone()),
        ManifestState::Found { bytes, .. } | ManifestState::Generated { bytes, .. } => {
            bytes.clone()
        }
    };
    let etag = format!("\"{}\"", phase_protocol::Sha256Digest::of(&bytes).hex());
    let mut resp = if if_none_match(headers, &etag) {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        Response::new(Body::from(bytes))
    };
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, v);
    }
    resp
}

/// True when `If-None-Match` lists `etag` (weak comparison, RFC 9110 §13.1.2) or is `*`.
fn if_none_match(headers: &HeaderMap, etag: &str) -> bool {
    let Some(v) = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    v.split(',')
        .map(str::trim)
        .any(|t| t == "*" || t.trim_start_matches("W/") == etag)
}

/// True for a path segment that may name a channel, arch or file.
fn safe_segment(s: &str) -> bool {
    (1..=128).contains(&s.len())
        && !s.starts_with('.')
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'+'))
}

async fn files(State(state): State<Arc<AppState>>, req: Request) -> Response {
    state.metrics.request();
    let method = req.method().clone();
    if method != Method::GET && method != Method::HEAD {
        let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD");
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    let path = req.uri().path();
    let segments: Vec<&str> = path.strip_prefix('/').unwrap_or(path).split('/').collect();
    if !segments.iter().all(|s| safe_segment(s)) {
        return text(
            StatusCode::BAD_REQUEST,
            "bad path: segments must be [A-Za-z0-9._+-] and not start with '.'",
        );
    }
    let snap = state.store.snapshot();
    let (release, name) = match segments.as_slice() {
        [name] => match state
            .store
            .default_release(&snap)
            .and_then(|k| snap.releases.get(&k))
        {
            Some(r) => (r, *name),
            None => return not_found(&state, "not found"),
        },
        [channel, arch, name] => match snap.release(channel, arch) {
            Some(r) => (r, *name),
            None => {
                return not_found(
                    &state,
                    format!("no release for channel {channel:?} and arch {arch:?}"),
                )
            }
        },
        _ => return not_found(&state, "not found (directory listings are not served)"),
    };
    if name == "manifest.json" {
        let mut resp = manifest_response(&state, release, req.headers());
        if method == Method::HEAD {
            *resp.body_mut() = Body::empty();
        }
        return resp;
    }
    let Some((filename, entry)) = release.file(name) else {
        return not_found(
            &state,
            format!(
                "{name:?} is not an artifact of {}/{}",
                release.channel, release.arch
            ),
        );
    };
    let counter = format!("{}/{}/{filename}", release.channel, release.arch);
    let (entry, store) = (entry.clone(), Arc::clone(&state.store));
    let opened =
        tokio::task::spawn_blocking(move || store.open(&entry).map(|(f, m)| (f, m, entry))).await;
    let (file, meta, entry) = match opened {
        Ok(Ok(x)) => x,
        Ok(Err(e)) => {
            tracing::warn!(error = %crate::error_chain(&e), "artifact not served");
            return not_found(&state, format!("{name:?} is not available"));
        }
        Err(e) => {
            return text(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("open task failed: {e}"),
            )
        }
    };
    let size = meta.len();
    // The hash is only this file's ETag while the file is what was hashed.
    let etag = entry
        .sha256
        .filter(|_| FileStamp::of(&meta) == entry.stamp)
        .map(|d| format!("\"{}\"", d.hex()));
    artifact_response(&state, req.headers(), &method, file, size, etag, counter)
}

/// How to answer the `Range` and `If-Range` headers of a request for a representation of
/// `size` bytes whose ETag is `etag` (`"<sha256 hex>"`, if known). `If-Range` (RFC 9110
/// §13.1.5): the range only applies while the ETag still matches (strong comparison); a date or
/// a stale tag means "send it all". `Range`: [`decide`]. A header that is not visible ASCII is
/// treated as absent. Untrusted network input: also the entry point of the `http_range` fuzz
/// target (fuzz/).
pub fn range_for(headers: &HeaderMap, etag: Option<&str>, size: u64) -> RangeDecision {
    let range_header = headers.get(header::RANGE).and_then(|v| v.to_str().ok());
    let if_range_ok = match headers.get(header::IF_RANGE).and_then(|v| v.to_str().ok()) {
        None => true,
        Some(v) => etag == Some(v.trim()),
    };
    if if_range_ok {
        decide(range_header, size)
    } else {
        RangeDecision::Full
    }
}

fn artifact_response(
    state: &AppState,
    headers: &HeaderMap,
    method: &Method,
    file: std::fs::File,
    size: u64,
    etag: Option<String>,
    counter: String,
) -> Response {
    let mut builder = Response::builder()
        .header(header::ACCEPT_RANGES, "bytes")
        .header(header::CONTENT_TYPE, "application/octet-stream");
    if let Some(tag) = &etag {
        builder = builder.header(header::ETAG, tag.as_str());
        if if_none_match(headers, tag) {
            return builder
                .status(StatusCode::NOT_MODIFIED)
                .body(Body::empty())
                .unwrap_or_default();
        }
    }
    let (status, start, len) = match range_for(headers, etag.as_deref(), size) {
        RangeDecision::Full => (StatusCode::OK, 0, size),
        RangeDecision::Partial { start, end } => {
            builder = builder.header(header::CONTENT_RANGE, format!("bytes {start}-{end}/{size}"));
            (StatusCode::PARTIAL_CONTENT, start, end - start + 1)
        }
        RangeDecision::Unsatisfiable => {
            return builder
                .status(StatusCode::RANGE_NOT_SATISFIABLE)
                .header(header::CONTENT_RANGE, format!("bytes */{size}"))
                .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
                .body(Body::from(format!(
                    "range not satisfiable: the file has {size} bytes\n"
                )))
                .unwrap_or_default();
        }
    };
    builder = builder.status(status).header(header::CONTENT_LENGTH, len);
    let body = if *method == Method::HEAD || len == 0 {
        Body::empty()
    } else {
        file_body(file, start, len, counter, Arc::clone(&state.metrics))
    };
    builder.body(body).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_segments_are_safe() {
        for ok in ["stable", "x86_64", "kernel", "rootfs.squashfs", "linux+1"] {
            assert!(safe_segment(ok), "{ok}");
        }
        for bad in [
            "",
            ".",
            "..",
            ".hidden",
            "%2e%2e",
            "a%00",
            "a\\b",
            "a b",
            &"x".repeat(129),
        ] {
            assert!(!safe_segment(bad), "{bad:?}");
        }
    }

    #[test]
    fn if_none_match_accepts_lists_weak_tags_and_star() {
        let mut h = HeaderMap::new();
        assert!(!if_none_match(&h, "\"a\""));
        h.insert(
            header::IF_NONE_MATCH,
            HeaderValue::from_static("\"b\", W/\"a\""),
        );
        assert!(if_none_match(&h, "\"a\""));
        h.insert(header::IF_NONE_MATCH, HeaderValue::from_static("*"));
        assert!(if_none_match(&h, "\"z\""));
        h.insert(header::IF_NONE_MATCH, HeaderValue::from_static("\"b\""));
        assert!(!if_none_match(&h, "\"a\""));
    }
}
