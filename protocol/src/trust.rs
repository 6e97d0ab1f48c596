//! Trust roots: Ed25519 public keys and a threshold (DESIGN §5).
//!
//! The trust root is built into the initramfs (`/etc/phase/trust.toml`) and given to `phase
//! verify --trust FILE`. File format (TOML):
//!
//! ```toml
//! # Phase Boot trust root
//! threshold = 1
//! keys = ["<64 hex digits of an Ed25519 public key>"]
//! ```
//!
//! Each key counts once toward the threshold, however many signatures it made.

use std::collections::BTreeSet;
use std::path::Path;

use ed25519_dalek::VerifyingKey;
use serde::{Deserialize, Serialize};

/// A set of trusted Ed25519 public keys and how many of them must sign.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustRoot {
    keys: BTreeSet<[u8; 32]>,
    threshold: usize,
}

/// A trust root that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    /// The file could not be read.
    #[error("cannot read trust file {path}")]
    Read {
        /// The path given.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML of the documented shape.
    #[error("trust file is not valid (expected `threshold = N` and `keys = [\"<hex>\", ...]`)")]
    Parse(#[source] toml::de::Error),
    /// A key is not 64 hex digits of a valid Ed25519 point.
    #[error("trust key {0:?} is not a valid Ed25519 public key in hex")]
    BadKey(String),
    /// The threshold is 0 or larger than the number of distinct keys.
    #[error("threshold {threshold} is impossible with {keys} distinct key(s)")]
    BadThreshold {
        /// The threshold given.
        threshold: usize,
        /// The number of distinct keys.
        keys: usize,
    },
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TrustFile {
    threshold: usize,
    keys: Vec<String>,
}

/// Parses 64 hex digits into an Ed25519 public key.
///
/// # Errors
/// [`TrustError::BadKey`] if it is not hex or not a valid curve point.
pub fn parse_public_key(hex_key: &str) -> Result<VerifyingKey, TrustError> {
    let bad = || TrustError::BadKey(hex_key.to_owned());
    let mut bytes = [0u8; 32];
    hex::decode_to_slice(hex_key.trim(), &mut bytes).map_err(|_| bad())?;
    VerifyingKey::from_bytes(&bytes).map_err(|_| bad())
}

impl TrustRoot {
    /// A trust root of `keys` (duplicates count once) needing `threshold` of them.
    ///
    /// # Errors
    /// [`TrustError::BadThreshold`] when `threshold` is 0 or exceeds the distinct keys.
    pub fn new(
        keys: impl IntoIterator<Item = VerifyingKey>,
        threshold: usize,
    ) -> Result<Self, TrustError> {
        let keys: BTreeSet<[u8; 32]> = keys.into_iter().map(|k| k.to_bytes()).collect();
        if threshold == 0 || threshold > keys.len() {
            return Err(TrustError::BadThreshold {
                threshold,
                keys: keys.len(),
            });
        }
        Ok(TrustRoot { keys, threshold })
    }

    /// Parses the TOML trust file format described in the module docs.
    ///
    /// # Errors
    /// [`TrustError::Parse`], [`TrustError::BadKey`], [`TrustError::BadThreshold`].
    pub fn from_toml(text: &str) -> Result<Self, TrustError> {
        let file: TrustFile = toml::from_str(text).map_err(TrustError::Parse)?;
        let keys = file
            .keys
            .iter()
            .map(|k| parse_public_key(k))
            .collect::<Result<Vec<_>, _>>()?;
        TrustRoot::new(keys, file.threshold)
    }

    /// Reads and parses a trust file.
    ///
    /// # Errors
    /// [`TrustError::Read`] and those of [`TrustRoot::from_toml`].
    pub fn load(path: &Path) -> Result<Self, TrustError> {
        let text = std::fs::read_to_string(path).map_err(|source| TrustError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_toml(&text)
    }

    /// The trust file text for this root.
    pub fn to_toml(&self) -> String {
        let keys: Vec<String> = self.keys.iter().map(hex::encode).collect();
        let list = keys
            .iter()
            .map(|k| format!("\"{k}\""))
            .collect::<Vec<_>>()
            .join(", ");
        format!(
            "# Phase Boot trust root (docs/manifest.md)\nthreshold = {}\nkeys = [{list}]\n",
            self.threshold
        )
    }

    /// How many distinct trusted keys must sign.
    pub fn threshold(&self) -> usize {
        self.threshold
    }

    /// The trusted keys, as 32-byte public keys.
    pub fn keys(&self) -> impl Iterator<Item = &[u8; 32]> {
        self.keys.iter()
    }

    /// True when the 32-byte public key is trusted.
    pub fn trusts(&self, key: &[u8; 32]) -> bool {
        self.keys.contains(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::SigningKey;

    fn key(seed: u8) -> VerifyingKey {
        SigningKey::from_bytes(&[seed; 32]).verifying_key()
    }

    #[test]
    fn toml_round_trips() {
        let root = TrustRoot::new([key(1), key(2)], 2).unwrap();
        let back = TrustRoot::from_toml(&root.to_toml()).unwrap();
        assert_eq!(back, root);
        assert!(back.trusts(&key(1).to_bytes()));
        assert!(!back.trusts(&key(3).to_bytes()));
    }

    #[test]
    fn duplicate_keys_count_once_for_the_threshold() {
        let err = TrustRoot::new([key(1), key(1)], 2).unwrap_err();
        assert!(matches!(
            err,
            TrustError::BadThreshold {
                threshold: 2,
                keys: 1
            }
        ));
        assert!(TrustRoot::new([key(1)], 0).is_err());
    }

    #[test]
    fn bad_files_are_refused() {
        assert!(matches!(
            TrustRoot::from_toml("threshold = 1\nkeys = [\"zz\"]"),
            Err(TrustError::BadKey(_))
        ));
        assert!(matches!(
            TrustRoot::from_toml("keys = []"),
            Err(TrustError::Parse(_))
        ));
        assert!(matches!(
            TrustRoot::from_toml("threshold = 1\nkeys = []\nextra = 1"),
            Err(TrustError::Parse(_))
        ));
    }
}
