//! Signing manifests and key files (DESIGN §5; seed 003 "Manifest Signing Pattern", fixed).
//!
//! A signature is Ed25519 over SHA-256 of [`crate::canonical::signing_bytes`]: the RFC 8785
//! canonical form of the document without `signatures`. Signing appends an entry to the
//! `signatures` array of the JSON value and leaves every other byte of meaning alone, so a
//! second signer can sign the same document and both signatures verify.
//!
//! Key files: the secret key file holds the 32-byte Ed25519 seed as 64 hex digits and a newline
//! (mode 0600); `FILE.pub` holds the public key the same way.

use std::path::Path;

use chrono::{DateTime, SecondsFormat, Utc};
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use serde_json::Value;

use crate::canonical::{signing_digest, CanonicalError, SIGNATURES_FIELD};
use crate::manifest::SignatureEntry;

/// Why a document could not be signed or a key read.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    /// The document could not be canonicalised.
    #[error(transparent)]
    Canonical(#[from] CanonicalError),
    /// `signatures` exists but is not an array.
    #[error("`signatures` is not an array")]
    SignaturesNotArray,
    /// The key file could not be read.
    #[error("cannot read key file {path}")]
    ReadKey {
        /// The path given.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The key file does not hold 64 hex digits.
    #[error("key file {path} does not hold a 64-hex-digit Ed25519 key")]
    BadKey {
        /// The path given.
        path: String,
    },
}

/// Signs `document` with `key` and appends `{algorithm, key_id, signature, signed_at}` to its
/// `signatures` array (created if absent). A second signature by the same key is appended all
/// the same; verifiers count each key once.
///
/// # Errors
/// [`SignError::Canonical`] if `document` is not an object; [`SignError::SignaturesNotArray`].
pub fn sign_document(
    document: &mut Value,
    key: &SigningKey,
    signed_at: DateTime<Utc>,
) -> Result<SignatureEntry, SignError> {
    let digest = signing_digest(document)?;
    let entry = SignatureEntry {
        algorithm: "ed25519".to_owned(),
        key_id: hex::encode(key.verifying_key().to_bytes()),
        signature: hex::encode(key.sign(&digest).to_bytes()),
        signed_at: signed_at.to_rfc3339_opts(SecondsFormat::Secs, true),
    };
    let Value::Object(map) = document else {
        return Err(CanonicalError::NotAnObject.into());
    };
    let sigs = map
        .entry(SIGNATURES_FIELD)
        .or_insert_with(|| Value::Array(vec![]));
    let Value::Array(list) = sigs else {
        return Err(SignError::SignaturesNotArray);
    };
    list.push(serde_json::to_value(&entry).map_err(CanonicalError::Jcs)?);
    Ok(entry)
}

/// A fresh random signing key.
pub fn generate_key() -> SigningKey {
    SigningKey::generate(&mut rand::rngs::OsRng)
}

/// The secret key file text: the 32-byte seed as hex plus a newline.
pub fn secret_key_text(key: &SigningKey) -> String {
    format!("{}\n", hex::encode(key.to_bytes()))
}

/// The public key file text: the 32-byte public key as hex plus a newline.
pub fn public_key_text(key: &VerifyingKey) -> String {
    format!("{}\n", hex::encode(key.to_bytes()))
}

/// Reads a secret key file written by `plasmd keygen`.
///
/// # Errors
/// [`SignError::ReadKey`], [`SignError::BadKey`].
pub fn load_signing_key(path: &Path) -> Result<SigningKey, SignError> {
    let text = std::fs::read_to_string(path).map_err(|source| SignError::ReadKey {
        path: path.display().to_string(),
        source,
    })?;
    let mut seed = [0u8; 32];
    hex::decode_to_slice(text.trim(), &mut seed).map_err(|_| SignError::BadKey {
        path: path.display().to_string(),
    })?;
    Ok(SigningKey::from_bytes(&seed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signing_appends_and_keeps_other_members() {
        let mut doc = serde_json::json!({"a": 1, "z": {"k": [1, 2]}});
        let key = SigningKey::from_bytes(&[7; 32]);
        let now = "2026-11-21T00:00:00Z".parse().unwrap();
        let first = sign_document(&mut doc, &key, now).unwrap();
        sign_document(&mut doc, &SigningKey::from_bytes(&[8; 32]), now).unwrap();
        assert_eq!(doc["signatures"].as_array().unwrap().len(), 2);
        assert_eq!(doc["z"]["k"][1], 2);
        assert_eq!(first.key_id, hex::encode(key.verifying_key().to_bytes()));
        assert_eq!(first.signed_at, "2026-11-21T00:00:00Z");
        // Both signatures cover the same bytes, so the second did not change the first's message.
        assert_eq!(signing_digest(&doc).unwrap(), {
            let mut d = doc.clone();
            d.as_object_mut().unwrap().remove("signatures");
            signing_digest(&d).unwrap()
        });
    }

    #[test]
    fn key_files_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let key = generate_key();
        let path = dir.path().join("k");
        std::fs::write(&path, secret_key_text(&key)).unwrap();
        assert_eq!(load_signing_key(&path).unwrap().to_bytes(), key.to_bytes());
        std::fs::write(&path, "nothex").unwrap();
        assert!(matches!(
            load_signing_key(&path),
            Err(SignError::BadKey { .. })
        ));
    }
}
