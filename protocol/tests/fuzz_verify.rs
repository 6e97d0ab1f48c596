//! Property tests for `verify` (issue 2 §4): arbitrary bytes and mutated valid manifests never
//! panic and never verify. Bounded (a fixed number of cases) so it runs in `make test`.

use ed25519_dalek::SigningKey;
use phase_protocol::signing::sign_document;
use phase_protocol::{verify, Expectation, Sha256Digest, TrustRoot};
use proptest::prelude::*;
use serde_json::json;

fn key() -> SigningKey {
    SigningKey::from_bytes(&[9; 32])
}

fn trust() -> TrustRoot {
    TrustRoot::new([key().verifying_key()], 1).unwrap()
}

fn now() -> chrono::DateTime<chrono::Utc> {
    "2026-11-21T00:00:00Z".parse().unwrap()
}

fn signed_manifest() -> Vec<u8> {
    let art = |n: &str, s: u64| json!({"filename": n, "size_bytes": s, "hash": Sha256Digest::of(n.as_bytes()).to_string()});
    let mut doc = json!({
        "manifest_version": 1, "version": "2.0.0", "channel": "stable", "arch": "x86_64",
        "created_at": "2026-11-01T00:00:00Z", "expires_at": "2027-11-01T00:00:00Z",
        "cmdline": "console=ttyS0",
        "artifacts": {"kernel": art("kernel", 1), "initramfs": art("initramfs", 2), "rootfs": art("rootfs", 3)},
    });
    sign_document(&mut doc, &key(), now()).unwrap();
    serde_json::to_vec(&doc).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, .. ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_verify(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        prop_assert!(verify(&bytes, &trust(), now(), &Expectation::default()).is_err());
    }

    #[test]
    fn mutated_manifest_never_verifies(pos in any::<prop::sample::Index>(), byte in any::<u8>()) {
        let good = signed_manifest();
        let mut bad = good.clone();
        let i = pos.index(bad.len());
        prop_assume!(bad[i] != byte);
        bad[i] = byte;
        // A mutation may be harmless only where it changes no signed meaning: whitespace
        // between tokens, or the informational `signed_at` of a signature entry (entries are
        // outside the signed bytes, DESIGN §5). Everything else must fail; nothing may panic.
        if let Ok(v) = verify(&bad, &trust(), now(), &Expectation::default()) {
            let strip = |bytes: &[u8]| {
                let mut doc: serde_json::Value = serde_json::from_slice(bytes).unwrap();
                doc["signatures"][0].as_object_mut().unwrap().remove("signed_at");
                doc
            };
            prop_assert_eq!(strip(&good), strip(v.raw()), "a mutation that changed meaning verified");
        }
    }

    #[test]
    fn truncated_manifest_never_verifies(cut in 0usize..4096) {
        let good = signed_manifest();
        let cut = cut % good.len();
        prop_assert!(verify(&good[..cut], &trust(), now(), &Expectation::default()).is_err());
    }
}
