//! Sign in one process, verify in another (issue 2 §3): seed 003 hashed `serde_json::to_string`
//! of a struct holding a `HashMap`, whose iteration order differs from process to process. Here
//! the child process builds a manifest from a `HashMap` of 3+ artifacts (so its in-memory order
//! is random per process), signs it and prints it; this process re-parses and verifies it.

use std::collections::HashMap;
use std::process::Command;

use ed25519_dalek::SigningKey;
use phase_protocol::signing::sign_document;
use phase_protocol::{verify, Arch, Expectation, Sha256Digest, TrustRoot};
use serde_json::{json, Value};

const CHILD_ENV: &str = "PHASE_PROTOCOL_SIGN_CHILD";

fn key() -> SigningKey {
    SigningKey::from_bytes(&[42; 32])
}

/// Builds the manifest through a `HashMap` (random order per process) and signs it.
fn sign_in_this_process() -> Vec<u8> {
    let mut artifacts: HashMap<String, Value> = HashMap::new();
    for (name, size) in [
        ("kernel", 11u64),
        ("initramfs", 22),
        ("rootfs", 33),
        ("dtb", 44),
    ] {
        artifacts.insert(
            name.to_owned(),
            json!({
                "filename": name,
                "size_bytes": size,
                "hash": Sha256Digest::of(name.as_bytes()).to_string(),
                "download_url": name,
            }),
        );
    }
    let mut doc = json!({
        "manifest_version": 1,
        "version": "1.0.0",
        "channel": "stable",
        "arch": "x86_64",
        "created_at": "2026-11-01T00:00:00Z",
        "expires_at": "2027-11-01T00:00:00Z",
        "cmdline": "console=ttyS0",
        "artifacts": artifacts,
    });
    sign_document(&mut doc, &key(), "2026-11-01T00:00:00Z".parse().unwrap()).unwrap();
    serde_json::to_vec_pretty(&doc).unwrap()
}

#[test]
fn child_signer() {
    // Only does work when started by the parent test below.
    if std::env::var_os(CHILD_ENV).is_some() {
        let bytes = sign_in_this_process();
        println!("BEGIN{}END", String::from_utf8(bytes).unwrap());
    }
}

#[test]
fn manifest_signed_in_another_process_verifies_here() {
    let trust = TrustRoot::new([key().verifying_key()], 1).unwrap();
    let now = "2026-11-21T00:00:00Z".parse().unwrap();
    let expect = Expectation {
        arch: Some(Arch::X86_64),
        ..Expectation::default()
    };
    for _ in 0..3 {
        let out = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "child_signer",
                "--nocapture",
                "--test-threads",
                "1",
            ])
            .env(CHILD_ENV, "1")
            .output()
            .unwrap();
        let stdout = String::from_utf8(out.stdout).unwrap();
        let start = stdout.find("BEGIN").expect("child printed a manifest") + 5;
        let end = stdout.find("END").unwrap();
        let bytes = &stdout.as_bytes()[start..end];
        let verified = verify(bytes, &trust, now, &expect).unwrap();
        assert_eq!(verified.manifest().artifacts.len(), 4);
        // Re-serialising in this process (other order, other whitespace) verifies too.
        let v: Value = serde_json::from_slice(bytes).unwrap();
        verify(&serde_json::to_vec(&v).unwrap(), &trust, now, &expect).unwrap();
    }
}
