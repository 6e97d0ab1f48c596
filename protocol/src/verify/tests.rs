//! One test per refusal of [`super::verify`], plus the acceptance path.

use super::*;
use crate::manifest::tests::sample;
use crate::signing::sign_document;
use ed25519_dalek::SigningKey;

fn key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

fn now() -> DateTime<Utc> {
    "2026-11-21T12:00:00Z".parse().unwrap()
}

fn trust(seeds: &[u8], threshold: usize) -> TrustRoot {
    TrustRoot::new(seeds.iter().map(|s| key(*s).verifying_key()), threshold).unwrap()
}

fn signed_value(mut v: Value, seeds: &[u8]) -> Vec<u8> {
    for s in seeds {
        sign_document(&mut v, &key(*s), now()).unwrap();
    }
    serde_json::to_vec_pretty(&v).unwrap()
}

fn signed(seeds: &[u8]) -> Vec<u8> {
    signed_value(sample().to_value().unwrap(), seeds)
}

fn expect() -> Expectation {
    Expectation {
        channel: Some("stable".into()),
        arch: Some(Arch::X86_64),
        min_version: Some(semver::Version::new(1, 0, 0)),
        ..Expectation::default()
    }
}

#[test]
fn good_manifest_verifies_and_keeps_its_bytes() {
    let bytes = signed(&[1]);
    let v = verify(&bytes, &trust(&[1], 1), now(), &expect()).unwrap();
    assert_eq!(v.raw(), bytes.as_slice());
    assert_eq!(v.manifest().version, semver::Version::new(1, 2, 3));
    assert_eq!(
        v.signers(),
        &[hex::encode(key(1).verifying_key().to_bytes())]
    );
}

#[test]
fn bad_signature_is_refused() {
    let mut v: Value = serde_json::from_slice(&signed(&[1])).unwrap();
    let sig = v["signatures"][0]["signature"].as_str().unwrap().to_owned();
    let flipped = format!(
        "{}{}",
        if sig.starts_with('0') { "1" } else { "0" },
        &sig[1..]
    );
    v["signatures"][0]["signature"] = flipped.into();
    let err = verify(
        &serde_json::to_vec(&v).unwrap(),
        &trust(&[1], 1),
        now(),
        &expect(),
    )
    .unwrap_err();
    match err {
        VerifyError::Threshold {
            valid: 0,
            needed: 1,
            findings,
        } => {
            assert!(matches!(findings[0], SignatureFinding::BadSignature { .. }))
        }
        other => panic!("{other}"),
    }
}

#[test]
fn unknown_key_is_ignored_and_falls_short() {
    let err = verify(&signed(&[2]), &trust(&[1], 1), now(), &expect()).unwrap_err();
    assert!(err.to_string().contains("unknown key"), "{err}");
    assert!(matches!(err, VerifyError::Threshold { valid: 0, .. }));
}

#[test]
fn duplicate_key_counts_once_toward_the_threshold() {
    let err = verify(&signed(&[1, 1]), &trust(&[1, 2], 2), now(), &expect()).unwrap_err();
    match err {
        VerifyError::Threshold {
            valid: 1,
            needed: 2,
            findings,
        } => {
            assert!(matches!(findings[1], SignatureFinding::DuplicateKey { .. }))
        }
        other => panic!("{other}"),
    }
    verify(&signed(&[1, 2]), &trust(&[1, 2], 2), now(), &expect()).unwrap();
}

#[test]
fn unsigned_manifest_is_refused() {
    let bytes = serde_json::to_vec(&sample().to_value().unwrap()).unwrap();
    let err = verify(&bytes, &trust(&[1], 1), now(), &expect()).unwrap_err();
    assert!(err.to_string().contains("no signatures"), "{err}");
}

#[test]
fn expired_manifest_is_refused() {
    let later = "2028-01-01T00:00:00Z".parse().unwrap();
    let err = verify(&signed(&[1]), &trust(&[1], 1), later, &expect()).unwrap_err();
    assert!(matches!(err, VerifyError::Expired { .. }), "{err}");
}

#[test]
fn clock_behind_the_time_floor_counts_as_the_floor() {
    let floor = "2028-01-01T00:00:00Z".parse().unwrap();
    let e = Expectation {
        time_floor: Some(floor),
        ..expect()
    };
    let err = verify(&signed(&[1]), &trust(&[1], 1), now(), &e).unwrap_err();
    assert!(
        matches!(err, VerifyError::Expired { now, .. } if now == floor),
        "{err}"
    );
}

#[test]
fn created_in_the_future_beyond_skew_is_refused() {
    let early = "2026-10-31T23:50:00Z".parse().unwrap();
    let err = verify(&signed(&[1]), &trust(&[1], 1), early, &expect()).unwrap_err();
    assert!(matches!(err, VerifyError::FromTheFuture { .. }), "{err}");
    // Within the 5-minute skew it is fine.
    let close = "2026-10-31T23:56:00Z".parse().unwrap();
    verify(&signed(&[1]), &trust(&[1], 1), close, &expect()).unwrap();
}

#[test]
fn wrong_arch_is_refused_and_alias_accepted() {
    let e = Expectation {
        arch: Some(Arch::Aarch64),
        ..expect()
    };
    let err = verify(&signed(&[1]), &trust(&[1], 1), now(), &e).unwrap_err();
    assert!(matches!(err, VerifyError::WrongArch { .. }), "{err}");
    let mut m = sample();
    m.arch = "amd64".into();
    let bytes = signed_value(m.to_value().unwrap(), &[1]);
    verify(&bytes, &trust(&[1], 1), now(), &expect()).unwrap();
}

#[test]
fn wrong_channel_is_refused() {
    let e = Expectation {
        channel: Some("testing".into()),
        ..expect()
    };
    let err = verify(&signed(&[1]), &trust(&[1], 1), now(), &e).unwrap_err();
    assert!(matches!(err, VerifyError::WrongChannel { .. }), "{err}");
}

#[test]
fn rollback_is_refused() {
    let e = Expectation {
        min_version: Some(semver::Version::new(1, 2, 4)),
        ..expect()
    };
    let err = verify(&signed(&[1]), &trust(&[1], 1), now(), &e).unwrap_err();
    assert!(matches!(err, VerifyError::Rollback { .. }), "{err}");
    let same = Expectation {
        min_version: Some(semver::Version::new(1, 2, 3)),
        ..expect()
    };
    verify(&signed(&[1]), &trust(&[1], 1), now(), &same).unwrap();
}

#[test]
fn oversized_manifest_is_refused_before_parsing() {
    let mut v = sample().to_value().unwrap();
    v["padding"] = "x".repeat(MAX_MANIFEST_BYTES).into();
    let bytes = signed_value(v, &[1]);
    let err = verify(&bytes, &trust(&[1], 1), now(), &expect()).unwrap_err();
    assert!(matches!(err, VerifyError::TooLarge { .. }), "{err}");
}

#[test]
fn malformed_and_deeply_nested_json_are_refused() {
    let t = trust(&[1], 1);
    assert!(matches!(
        verify(b"{not json", &t, now(), &expect()),
        Err(VerifyError::Json(_))
    ));
    let deep = format!("{{\"a\":{}{}}}", "[".repeat(64), "]".repeat(64));
    assert!(matches!(
        verify(deep.as_bytes(), &t, now(), &expect()),
        Err(VerifyError::Json(JsonError::TooDeep { .. }))
    ));
    assert!(matches!(
        verify(b"[]", &t, now(), &expect()),
        Err(VerifyError::Canonical(_))
    ));
}

#[test]
fn duplicate_member_in_signed_bytes_is_refused() {
    // A signer and a verifier that kept different copies of a duplicated member would read
    // different documents out of the same bytes; the strict parser refuses them outright.
    let bytes = signed(&[1]);
    let text = String::from_utf8(bytes).unwrap();
    let doubled = text.replacen(
        "\"version\": \"1.2.3\"",
        "\"version\": \"1.2.3\", \"version\": \"9.9.9\"",
        1,
    );
    assert_ne!(doubled, text);
    let err = verify(doubled.as_bytes(), &trust(&[1], 1), now(), &expect()).unwrap_err();
    assert!(
        matches!(err, VerifyError::Json(JsonError::DuplicateKey { .. })),
        "{err}"
    );
}

#[test]
fn changing_an_unknown_field_breaks_the_signature() {
    let mut v = sample().to_value().unwrap();
    v["x-release-notes"] = "first".into();
    let bytes = signed_value(v, &[1]);
    verify(&bytes, &trust(&[1], 1), now(), &expect()).unwrap();
    let mut tampered: Value = serde_json::from_slice(&bytes).unwrap();
    tampered["x-release-notes"] = "second".into();
    let err = verify(
        &serde_json::to_vec(&tampered).unwrap(),
        &trust(&[1], 1),
        now(),
        &expect(),
    )
    .unwrap_err();
    assert!(matches!(err, VerifyError::Threshold { .. }), "{err}");
}

#[test]
fn changing_the_cmdline_breaks_the_signature() {
    let mut tampered: Value = serde_json::from_slice(&signed(&[1])).unwrap();
    tampered["cmdline"] = "console=ttyS0 init=/bin/sh".into();
    let err = verify(
        &serde_json::to_vec(&tampered).unwrap(),
        &trust(&[1], 1),
        now(),
        &expect(),
    )
    .unwrap_err();
    assert!(matches!(err, VerifyError::Threshold { .. }), "{err}");
}

#[test]
fn reformatting_and_reordering_keep_the_signature_valid() {
    let bytes = signed(&[1]);
    let v: Value = serde_json::from_slice(&bytes).unwrap();
    // Compact form, and members written in reverse order: the same canonical bytes.
    verify(
        &serde_json::to_vec(&v).unwrap(),
        &trust(&[1], 1),
        now(),
        &expect(),
    )
    .unwrap();
    let map = v.as_object().unwrap();
    let reversed: Vec<String> = map
        .iter()
        .rev()
        .map(|(k, v)| format!("{}: {}", serde_json::to_string(k).unwrap(), v))
        .collect();
    let text = format!("{{ {} }}", reversed.join(",\n  "));
    assert!(text.find("\"version\"").unwrap() < text.find("\"arch\"").unwrap());
    verify(text.as_bytes(), &trust(&[1], 1), now(), &expect()).unwrap();
}

#[test]
fn signed_but_invalid_manifest_is_refused() {
    let mut m = sample();
    m.artifacts.remove("initramfs");
    let bytes = signed_value(m.to_value().unwrap(), &[1]);
    let err = verify(&bytes, &trust(&[1], 1), now(), &expect()).unwrap_err();
    assert!(matches!(
        err,
        VerifyError::Invalid(ManifestError::MissingArtifact("initramfs"))
    ));
}

#[test]
fn uppercase_hex_key_id_is_malformed() {
    let mut v: Value = serde_json::from_slice(&signed(&[1])).unwrap();
    let upper = v["signatures"][0]["key_id"]
        .as_str()
        .unwrap()
        .to_uppercase();
    v["signatures"][0]["key_id"] = upper.into();
    let err = verify(
        &serde_json::to_vec(&v).unwrap(),
        &trust(&[1], 1),
        now(),
        &expect(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("lowercase hex"), "{err}");
}

#[test]
fn clock_below_floor_is_moved_forward_to_the_signed_created_at() {
    let rtc_1970 = DateTime::<Utc>::UNIX_EPOCH;
    // A trusted 1970 clock refuses the manifest as from the future (the issue-15 halt).
    let err = verify(&signed(&[1]), &trust(&[1], 1), rtc_1970, &expect()).unwrap_err();
    assert!(matches!(err, VerifyError::FromTheFuture { .. }), "{err}");
    // Known to be below its floors: the signed created_at is evidence of the time.
    let e = Expectation {
        clock: ClockTrust::BelowFloor,
        ..expect()
    };
    let m = verify(&signed(&[1]), &trust(&[1], 1), rtc_1970, &e).unwrap();
    assert_eq!(m.checked_at(), sample().created_at);
}

#[test]
fn clock_below_floor_still_refuses_expired_and_unsigned_manifests() {
    let e = Expectation {
        clock: ClockTrust::BelowFloor,
        time_floor: Some("2028-01-01T00:00:00Z".parse().unwrap()),
        ..expect()
    };
    let err = verify(
        &signed(&[1]),
        &trust(&[1], 1),
        DateTime::<Utc>::UNIX_EPOCH,
        &e,
    )
    .unwrap_err();
    assert!(matches!(err, VerifyError::Expired { .. }), "{err}");
    let e = Expectation {
        clock: ClockTrust::BelowFloor,
        ..expect()
    };
    let err = verify(
        &signed(&[2]),
        &trust(&[1], 1),
        DateTime::<Utc>::UNIX_EPOCH,
        &e,
    )
    .unwrap_err();
    assert!(matches!(err, VerifyError::Threshold { .. }), "{err}");
}

#[test]
fn clocks_at_chronos_limits_do_not_panic() {
    for now in [DateTime::<Utc>::MAX_UTC, DateTime::<Utc>::MIN_UTC] {
        assert!(verify(&signed(&[1]), &trust(&[1], 1), now, &expect()).is_err());
    }
    let mut v = sample().to_value().unwrap();
    v["created_at"] = "+262142-12-31T23:59:59Z".into();
    v["expires_at"] = "+262142-12-31T23:59:59.999Z".into();
    let bytes = signed_value(v, &[1]);
    let err = verify(&bytes, &trust(&[1], 1), now(), &expect()).unwrap_err();
    assert!(matches!(err, VerifyError::FromTheFuture { .. }), "{err}");
}
