//! Keeps the worked example of docs/manifest.md true: the example manifest in
//! docs/examples/ verifies under the documented test key, and the canonical bytes and digest
//! printed in the doc are the ones the code computes. `PHASE_REGENERATE_DOC_EXAMPLE=1` rewrites
//! the example files.

use std::path::PathBuf;

use ed25519_dalek::SigningKey;
use phase_protocol::canonical::{signing_bytes, signing_digest};
use phase_protocol::signing::sign_document;
use phase_protocol::{verify, Expectation, Sha256Digest, TrustRoot};
use serde_json::json;

fn examples() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/examples")
}

/// The documented, deliberately public test key: seed = 32 bytes of 0x01. Never trust it.
fn example_key() -> SigningKey {
    SigningKey::from_bytes(&[1; 32])
}

fn build_example() -> Vec<u8> {
    let art = |n: &str, content: &str| json!({"filename": n, "size_bytes": content.len(), "hash": Sha256Digest::of(content.as_bytes()).to_string(), "download_url": n});
    let mut doc = json!({
        "manifest_version": 1,
        "version": "1.0.0",
        "channel": "stable",
        "arch": "x86_64",
        "created_at": "2026-11-01T00:00:00Z",
        "expires_at": "2036-11-01T00:00:00Z",
        "cmdline": "console=ttyS0,115200 panic=10",
        "artifacts": {
            "kernel": art("kernel", "kernel\n"),
            "initramfs": art("initramfs", "initramfs\n"),
            "rootfs": art("rootfs", "rootfs\n"),
        },
    });
    sign_document(
        &mut doc,
        &example_key(),
        "2026-11-01T00:00:00Z".parse().unwrap(),
    )
    .unwrap();
    let mut out = serde_json::to_vec_pretty(&doc).unwrap();
    out.push(b'\n');
    out
}

#[test]
fn documented_example_verifies_and_matches_the_code() {
    let dir = examples();
    if std::env::var_os("PHASE_REGENERATE_DOC_EXAMPLE").is_some() {
        let bytes = build_example();
        std::fs::write(dir.join("manifest.json"), &bytes).unwrap();
        let doc: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        std::fs::write(
            dir.join("manifest.signing-bytes.json"),
            signing_bytes(&doc).unwrap(),
        )
        .unwrap();
        let trust = TrustRoot::new([example_key().verifying_key()], 1).unwrap();
        std::fs::write(dir.join("trust.toml"), trust.to_toml()).unwrap();
    }
    let bytes = std::fs::read(dir.join("manifest.json")).unwrap();
    let trust = TrustRoot::load(&dir.join("trust.toml")).unwrap();
    let now = "2026-11-21T00:00:00Z".parse().unwrap();
    verify(&bytes, &trust, now, &Expectation::default()).unwrap();
    let doc: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    let canonical = std::fs::read(dir.join("manifest.signing-bytes.json")).unwrap();
    assert_eq!(signing_bytes(&doc).unwrap(), canonical);
    let doc_text = std::fs::read_to_string(dir.join("../manifest.md")).unwrap();
    let digest = hex::encode(signing_digest(&doc).unwrap());
    assert!(
        doc_text.contains(&digest),
        "docs/manifest.md must quote the digest {digest}"
    );
    assert!(doc_text.contains(doc["signatures"][0]["signature"].as_str().unwrap()));
}
