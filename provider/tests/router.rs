//! Router tests through `tower::ServiceExt::oneshot` (no socket): endpoints, manifests relayed
//! byte for byte, ETag/If-None-Match, HEAD, arch aliases, and the traversal table.

mod common;

use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use http_body_util::BodyExt;
use phase_provider::routes::{app, AppState};
use tower::ServiceExt;

async fn call(
    state: &Arc<AppState>,
    method: Method,
    uri: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, axum::http::HeaderMap, Vec<u8>) {
    let mut req = Request::builder().method(method).uri(uri);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = app(Arc::clone(state))
        .oneshot(req.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let (parts, body) = resp.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes().to_vec();
    (parts.status, parts.headers, bytes)
}

async fn get(state: &Arc<AppState>, uri: &str) -> (StatusCode, axum::http::HeaderMap, Vec<u8>) {
    call(state, Method::GET, uri, &[]).await
}

#[tokio::test]
async fn found_manifest_is_relayed_byte_for_byte_on_both_paths() {
    let dir = tempfile::tempdir().unwrap();
    let rel = common::tree(dir.path(), b"kernel-bytes", b"initramfs-bytes");
    common::sign_release(&rel);
    // Odd but valid formatting must survive: the provider never re-serialises.
    let original = std::fs::read(rel.join("manifest.json")).unwrap();
    let mut odd = b"  ".to_vec();
    odd.extend_from_slice(&original);
    std::fs::write(rel.join("manifest.json"), &odd).unwrap();
    let state = common::state(common::store_opts(dir.path()));
    for uri in [
        "/manifest.json",
        "/stable/x86_64/manifest.json",
        "/stable/amd64/manifest.json",
    ] {
        let (status, headers, body) = get(&state, uri).await;
        assert_eq!(status, StatusCode::OK, "{uri}");
        assert_eq!(body, odd, "{uri}");
        assert_eq!(headers[header::CONTENT_TYPE], "application/json");
    }
}

#[tokio::test]
async fn artifact_has_etag_of_its_hash_and_if_none_match_gives_304() {
    let dir = tempfile::tempdir().unwrap();
    let rel = common::tree(dir.path(), b"kernel-bytes", b"initramfs-bytes");
    common::sign_release(&rel);
    let state = common::state(common::store_opts(dir.path()));
    let (status, headers, body) = get(&state, "/stable/amd64/kernel").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, b"kernel-bytes");
    let etag = format!(
        "\"{}\"",
        phase_protocol::Sha256Digest::of(b"kernel-bytes").hex()
    );
    assert_eq!(headers[header::ETAG], etag.as_str());
    assert_eq!(headers[header::ACCEPT_RANGES], "bytes");
    assert_eq!(headers[header::CONTENT_LENGTH], "12");
    let (status, _, body) = call(
        &state,
        Method::GET,
        "/stable/x86_64/kernel",
        &[("if-none-match", &etag)],
    )
    .await;
    assert_eq!(status, StatusCode::NOT_MODIFIED);
    assert!(body.is_empty());
    let (status, _, _) = call(
        &state,
        Method::GET,
        "/stable/x86_64/kernel",
        &[("if-none-match", "\"other\"")],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn head_gives_headers_without_body() {
    let dir = tempfile::tempdir().unwrap();
    common::tree(dir.path(), b"kernel-bytes", b"i");
    let state = common::state(common::store_opts(dir.path()));
    let (status, headers, body) = call(&state, Method::HEAD, "/stable/x86_64/kernel", &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[header::CONTENT_LENGTH], "12");
    assert!(body.is_empty());
    let (status, _, _) = call(&state, Method::POST, "/stable/x86_64/kernel", &[]).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn missing_manifest_without_key_is_404_saying_why_but_artifacts_are_served() {
    let dir = tempfile::tempdir().unwrap();
    common::tree(dir.path(), b"k", b"i");
    let state = common::state(common::store_opts(dir.path()));
    let (status, _, body) = get(&state, "/stable/x86_64/manifest.json").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let text = String::from_utf8(body).unwrap();
    assert!(
        text.contains("no manifest.json") && text.contains("--key"),
        "{text}"
    );
    let (status, headers, _) = get(&state, "/stable/x86_64/kernel").await;
    assert_eq!(status, StatusCode::OK);
    // Hashed in the background: the ETag is there once hashing completed.
    assert!(headers.contains_key(header::ETAG));
}

#[tokio::test]
async fn flat_release_dir_serves_under_its_manifest_channel_and_arch() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("kernel"), b"k").unwrap();
    std::fs::write(dir.path().join("initramfs"), b"i").unwrap();
    common::sign_release(dir.path());
    let mut opts = common::store_opts(dir.path());
    opts.channels = vec!["other".into()];
    let state = common::state(opts);
    let (status, _, body) = get(&state, "/stable/x86_64/initramfs").await;
    assert_eq!((status, body.as_slice()), (StatusCode::OK, &b"i"[..]));
    // download_url relative to /manifest.json resolves too.
    let (status, _, body) = get(&state, "/kernel").await;
    assert_eq!((status, body.as_slice()), (StatusCode::OK, &b"k"[..]));
    let (status, _, _) = get(&state, "/manifest.json").await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn info_health_status_and_metrics_answer() {
    let dir = tempfile::tempdir().unwrap();
    let rel = common::tree(dir.path(), b"k", b"i");
    common::sign_release(&rel);
    let state = common::state(common::store_opts(dir.path()));
    let _ = get(&state, "/stable/x86_64/kernel").await;
    let (status, _, body) = get(&state, "/").await;
    assert_eq!(status, StatusCode::OK);
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["channels"][0], "stable");
    assert_eq!(v["arches"][0], "x86_64");
    assert_eq!(v["releases"][0]["version"], "1.2.3");
    let (status, _, body) = get(&state, "/health").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&body).unwrap()["status"],
        "ok"
    );
    let (_, _, body) = get(&state, "/status").await;
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["artifacts"]["stable/x86_64/kernel"]["bytes"], 1);
    assert!(v["requests"].as_u64().unwrap() >= 3);
    let (_, headers, body) = get(&state, "/metrics").await;
    assert!(headers[header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    assert!(String::from_utf8(body)
        .unwrap()
        .contains("plasmd_bytes_served_total 1\n"));
}

#[tokio::test]
async fn health_is_503_with_a_reason_when_nothing_can_be_served() {
    let dir = tempfile::tempdir().unwrap();
    let state = common::state(common::store_opts(&dir.path().join("missing")));
    let (status, _, body) = get(&state, "/health").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert!(
        v["reason"].as_str().unwrap().contains("cannot be read"),
        "{v}"
    );

    let empty = tempfile::tempdir().unwrap();
    let state = common::state(common::store_opts(empty.path()));
    let (status, _, body) = get(&state, "/health").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(String::from_utf8(body).unwrap().contains("no release"));
}

#[tokio::test]
async fn traversal_attempts_never_reach_files_outside() {
    let outer = tempfile::tempdir().unwrap();
    std::fs::write(outer.path().join("secret"), b"SECRET").unwrap();
    let root = outer.path().join("artifacts");
    let rel = common::tree(&root, b"k", b"i");
    std::fs::write(root.join("stable/top-secret"), b"SECRET").unwrap();
    std::fs::write(rel.join(".hidden"), b"SECRET").unwrap();
    std::os::unix::fs::symlink(outer.path().join("secret"), rel.join("rootfs")).unwrap();
    std::os::unix::fs::symlink("/etc", rel.join("etc")).unwrap();
    std::os::unix::fs::symlink(outer.path(), root.join("stable/aarch64")).unwrap();
    let state = common::state(common::store_opts(&root));
    let attempts = [
        "/stable/x86_64/../../../secret",
        "/stable/x86_64/..%2f..%2f..%2fsecret",
        "/stable/x86_64/%2e%2e/%2e%2e/secret",
        "/stable/x86_64/%2E%2E%2Fsecret",
        "/stable/x86_64/kernel%00",
        "/stable/x86_64/..\\..\\secret",
        "//etc/passwd",
        "/stable/x86_64//etc/passwd",
        "/stable/x86_64/.hidden",
        "/stable/x86_64/rootfs",
        "/stable/x86_64/etc",
        "/stable/x86_64/etc/passwd",
        "/stable/aarch64/secret",
        "/stable/top-secret",
        "/stable/x86_64",
        "/stable/x86_64/",
        "/stable",
        "/%2fetc%2fpasswd",
        "/.plasmd-hashes.json",
    ];
    for uri in attempts {
        let (status, _, body) = get(&state, uri).await;
        assert!(status.is_client_error(), "{uri} gave {status}");
        assert!(!body.windows(6).any(|w| w == b"SECRET"), "{uri} leaked");
    }
    // The same tree still serves its real files.
    let (status, _, body) = get(&state, "/stable/x86_64/kernel").await;
    assert_eq!((status, body.as_slice()), (StatusCode::OK, &b"k"[..]));
}

#[tokio::test]
async fn health_is_503_hashing_until_every_manifest_can_be_served() {
    use phase_provider::routes::ProviderInfo;
    use phase_provider::store::Store;
    let dir = tempfile::tempdir().unwrap();
    common::tree(dir.path(), b"kernel-bytes", b"initramfs-bytes");
    let mut opts = common::store_opts(dir.path());
    opts.key = Some(phase_protocol::signing::generate_key());
    // Listed but not hashed yet: the manifest is still to be generated.
    let store = Arc::new(Store::scan(opts));
    let state = AppState::new(
        Arc::clone(&store),
        ProviderInfo {
            name: "test".into(),
            advertise_url: "http://192.0.2.1:8080".into(),
        },
    );
    let (status, _, _) = get(&state, "/stable/x86_64/manifest.json").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "manifest pending");
    let (status, _, body) = get(&state, "/health").await;
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{v}");
    assert_eq!(
        (&v["status"], &v["reason"], &v["hashing"], &v["releases"]),
        (
            &serde_json::json!("starting"),
            &serde_json::json!("hashing"),
            &serde_json::json!(true),
            &serde_json::json!(1)
        ),
        "{v}"
    );
    // Positive control: once hashed and signed, the manifest and /health are both 200.
    store.complete();
    let (status, _, _) = get(&state, "/stable/x86_64/manifest.json").await;
    assert_eq!(status, StatusCode::OK, "manifest generated");
    let (status, _, body) = get(&state, "/health").await;
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(
        (&v["status"], &v["reason"]),
        (&serde_json::json!("ok"), &serde_json::Value::Null)
    );
}
