//! Manifest bytes from a provider or the cache disk through `phase_protocol::verify`, end to
//! end, against a fixed trust root: the documented public test key (Ed25519 seed = 32 bytes of
//! 0x01, docs/manifest.md), so `docs/examples/manifest.json` in the seeds verifies.
//!
//! Input: `[now: i64 s, u32 ns][flags u8][manifest bytes]`. Flags choose the expectation:
//! bit 0 channel `stable`, bit 1 arch x86_64, bit 2 rollback floor 1.0.0, bit 3 time floor
//! 2026-11-01, bit 4 clock below floor. Bit 7 re-signs: the bytes are parsed as JSON, their
//! `signatures` dropped and the document signed with the trusted key, so that mutations get
//! past the signature check to the schema, validity window and expectation checks.
#![no_main]

use ed25519_dalek::SigningKey;
use libfuzzer_sys::fuzz_target;
use phase_fuzz::Input;
use phase_protocol::signing::sign_document;
use phase_protocol::verify::ClockTrust;
use phase_protocol::{verify, Arch, Expectation, TrustRoot};

fuzz_target!(|data: &[u8]| {
    let key = SigningKey::from_bytes(&[1u8; 32]);
    let trust = TrustRoot::new([key.verifying_key()], 1).expect("one key, threshold 1");
    let mut input = Input::new(data);
    let now = input.datetime();
    let flags = input.u8();
    let floor = "2026-11-01T00:00:00Z".parse().expect("a valid date");
    let expect = Expectation {
        channel: (flags & 1 != 0).then(|| "stable".to_owned()),
        arch: (flags & 2 != 0).then_some(Arch::X86_64),
        min_version: (flags & 4 != 0).then(|| semver::Version::new(1, 0, 0)),
        time_floor: (flags & 8 != 0).then_some(floor),
        clock: if flags & 16 != 0 {
            ClockTrust::BelowFloor
        } else {
            ClockTrust::Trusted
        },
        ..Expectation::default()
    };
    let mut bytes = input.rest().to_vec();
    if flags & 0x80 != 0 {
        let Ok(mut doc) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
            return;
        };
        if let Some(map) = doc.as_object_mut() {
            map.remove("signatures");
        }
        if sign_document(&mut doc, &key, floor).is_err() {
            return;
        }
        bytes = serde_json::to_vec(&doc).expect("a JSON value serialises");
    }
    if let Ok(v) = verify(&bytes, &trust, now, &expect) {
        let m = v.manifest();
        assert!(m.validate().is_ok());
        let _ = m.total_bytes();
        let _ = m.arch();
        let _ = m.artifact("kernel");
        let _ = v.checked_at();
    }
});
