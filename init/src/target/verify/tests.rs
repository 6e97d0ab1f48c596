use std::path::Path;

use chrono::{Duration, Utc};
use phase_protocol::signing::{generate_key, sign_document};
use phase_protocol::{Arch, Sha256Digest, TrustRoot};
use serde_json::json;

use super::*;

/// Writes a signed boot dir (`manifest.json`, `kernel`, `initramfs`, `rootfs`), the boot
/// stage's custody record and a trust file into `dir`; returns the trust file path.
pub(crate) fn signed_boot_dir(dir: &Path) -> PathBuf {
    let key = generate_key();
    let files: [(&str, &[u8]); 3] = [
        ("kernel", b"kernel bytes"),
        ("initramfs", b"initramfs bytes"),
        ("rootfs", b"squashfs bytes"),
    ];
    let mut artifacts = serde_json::Map::new();
    let mut record = crate::custody::Record::default();
    for (name, bytes) in files {
        record.entries.insert(
            name.to_owned(),
            (bytes.len() as u64, Sha256Digest::of(bytes)),
        );
        std::fs::write(dir.join(name), bytes).unwrap();
        artifacts.insert(
            name.to_owned(),
            json!({"filename": name, "size_bytes": bytes.len(), "hash": Sha256Digest::of(bytes).to_string(), "download_url": name}),
        );
    }
    let now = Utc::now();
    let mut doc = json!({
        "manifest_version": 1, "version": "0.1.0", "channel": "stable", "arch": "x86_64",
        "created_at": (now - Duration::minutes(1)).to_rfc3339(), "expires_at": (now + Duration::days(1)).to_rfc3339(),
        "cmdline": "console=ttyS0", "artifacts": artifacts,
    });
    sign_document(&mut doc, &key, now).unwrap();
    std::fs::write(dir.join(crate::custody::FILE), record.render()).unwrap();
    std::fs::write(dir.join("manifest.json"), serde_json::to_vec(&doc).unwrap()).unwrap();
    let trust = dir.join("trust.toml");
    std::fs::write(
        &trust,
        TrustRoot::new([key.verifying_key()], 1).unwrap().to_toml(),
    )
    .unwrap();
    trust
}

#[test]
fn intact_boot_dir_is_verified() {
    let dir = tempfile::tempdir().unwrap();
    let trust = signed_boot_dir(dir.path());
    let v = reverify(
        dir.path(),
        &trust,
        Utc::now(),
        ClockTrust::Trusted,
        Some("stable"),
        Some(Arch::X86_64),
    )
    .unwrap();
    assert_eq!(v.manifest().artifacts.len(), 3);
}

fn reverify_default(dir: &Path, trust: &Path) -> Result<VerifiedManifest, ReverifyError> {
    reverify(dir, trust, Utc::now(), ClockTrust::Trusted, None, None)
}

#[test]
fn handover_without_a_custody_record_is_hashed_and_a_tampered_rootfs_refused() {
    let dir = tempfile::tempdir().unwrap();
    let trust = signed_boot_dir(dir.path());
    std::fs::remove_file(dir.path().join(crate::custody::FILE)).unwrap();
    // An older boot stage's handover, intact: accepted after hashing.
    reverify_default(dir.path(), &trust).unwrap();
    // The same with other rootfs bytes of the same size: the hash catches it.
    std::fs::write(dir.path().join("rootfs"), b"squashfs BYTES").unwrap();
    let err = reverify_default(dir.path(), &trust).unwrap_err();
    assert!(
        matches!(err, ReverifyError::Hash { ref name, .. } if name == "rootfs"),
        "{err}"
    );
}

#[test]
fn unreadable_custody_record_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let trust = signed_boot_dir(dir.path());
    let path = dir.path().join(crate::custody::FILE);
    std::fs::remove_file(&path).unwrap();
    std::fs::create_dir(&path).unwrap();
    let err = reverify_default(dir.path(), &trust).unwrap_err();
    assert!(
        matches!(err, ReverifyError::Read { ref path, .. } if path.ends_with("verified")),
        "{err}"
    );
}

#[test]
fn custody_record_that_disagrees_with_the_manifest_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let trust = signed_boot_dir(dir.path());
    let path = dir.path().join(crate::custody::FILE);
    let good = std::fs::read_to_string(&path).unwrap();
    // The boot stage verified other rootfs bytes than the manifest names.
    let other = Sha256Digest::of(b"squashfs BYTES").to_string();
    let rootfs_hash = Sha256Digest::of(b"squashfs bytes").to_string();
    std::fs::write(&path, good.replace(&rootfs_hash, &other)).unwrap();
    let err = reverify_default(dir.path(), &trust).unwrap_err();
    assert!(
        matches!(&err, ReverifyError::Custody { source: crate::custody::CustodyError::Mismatch { name, .. }, .. } if name == "rootfs"),
        "{err}"
    );
    // A record that leaves an artifact out.
    let without: String = good
        .lines()
        .filter(|l| !l.starts_with("kernel "))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&path, without).unwrap();
    let err = reverify_default(dir.path(), &trust).unwrap_err();
    assert!(
        matches!(&err, ReverifyError::Custody { source: crate::custody::CustodyError::Missing(n), .. } if n == "kernel"),
        "{err}"
    );
    // A malformed one.
    std::fs::write(&path, "kernel twelve sha256:00\n").unwrap();
    let err = reverify_default(dir.path(), &trust).unwrap_err();
    assert!(
        matches!(
            &err,
            ReverifyError::Custody {
                source: crate::custody::CustodyError::Syntax { line: 1, .. },
                ..
            }
        ),
        "{err}"
    );
    std::fs::write(&path, good).unwrap();
    reverify_default(dir.path(), &trust).unwrap();
}

#[test]
fn truncated_artifact_is_refused_by_its_size() {
    let dir = tempfile::tempdir().unwrap();
    let trust = signed_boot_dir(dir.path());
    std::fs::write(dir.path().join("kernel"), b"kernel").unwrap();
    let err = reverify(
        dir.path(),
        &trust,
        Utc::now(),
        ClockTrust::Trusted,
        None,
        None,
    )
    .unwrap_err();
    assert!(
        matches!(err, ReverifyError::Size { ref name, found: 6, .. } if name == "kernel"),
        "{err}"
    );
}

#[test]
fn manifest_signed_by_an_untrusted_key_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    signed_boot_dir(dir.path());
    let other = dir.path().join("other.toml");
    std::fs::write(
        &other,
        TrustRoot::new([generate_key().verifying_key()], 1)
            .unwrap()
            .to_toml(),
    )
    .unwrap();
    let err = reverify(
        dir.path(),
        &other,
        Utc::now(),
        ClockTrust::Trusted,
        None,
        None,
    )
    .unwrap_err();
    assert!(matches!(err, ReverifyError::Manifest { .. }), "{err}");
}

#[test]
fn manifest_for_another_channel_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let trust = signed_boot_dir(dir.path());
    let err = reverify(
        dir.path(),
        &trust,
        Utc::now(),
        ClockTrust::Trusted,
        Some("beta"),
        None,
    )
    .unwrap_err();
    assert!(matches!(err, ReverifyError::Manifest { .. }), "{err}");
}

#[test]
fn missing_trust_file_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    signed_boot_dir(dir.path());
    let err = reverify(
        dir.path(),
        Path::new("/nonexistent/trust.toml"),
        Utc::now(),
        ClockTrust::Trusted,
        None,
        None,
    )
    .unwrap_err();
    assert!(matches!(err, ReverifyError::Trust { .. }), "{err}");
}

#[test]
fn clock_of_1970_verifies_by_signed_evidence_only_when_known_below_floor() {
    let dir = tempfile::tempdir().unwrap();
    let trust = signed_boot_dir(dir.path());
    let rtc = chrono::DateTime::<Utc>::UNIX_EPOCH;
    let err = reverify(dir.path(), &trust, rtc, ClockTrust::Trusted, None, None).unwrap_err();
    assert!(matches!(err, ReverifyError::Manifest { .. }), "{err}");
    let v = reverify(dir.path(), &trust, rtc, ClockTrust::BelowFloor, None, None).unwrap();
    assert_eq!(v.checked_at(), v.manifest().created_at);
}
