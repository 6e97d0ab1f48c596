//! The chain-of-custody record the boot stage hands to the target stage (issue 18 §3;
//! docs/security.md "What the target stage trusts").
//!
//! The boot stage hashes every artifact while the bytes come in (network) or while it copies
//! them from the cache disk into RAM (so a disk that answers a second read differently cannot
//! slip other bytes in). It then writes, beside the manifest in the appended initrd cpio,
//! `phase/boot/verified`: one line per artifact it verified,
//!
//! ```text
//! <name> <size in bytes> sha256:<64 hex digits>
//! ```
//!
//! in name order, ending with a newline. The target stage does not hash the artifacts again:
//! they arrive in the same initrd as its own `/init` and trust root, composed by the boot stage
//! in a sealed memfd, so nobody who could change them could not also change the code that would
//! re-check them. It checks instead that the record names every artifact of the (signature-
//! checked) manifest with the manifest's size and hash, and that each file has that size: a
//! handover by a boot stage that did not verify, or verified something else, is refused.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use phase_protocol::{BootManifest, Sha256Digest};

/// The record's file name in `/phase/boot`.
pub const FILE: &str = "verified";

/// The largest record accepted, in bytes (a release has a handful of artifacts).
pub const MAX_BYTES: usize = 16 * 1024;

/// The most lines (artifacts) a record may hold.
pub const MAX_ENTRIES: usize = 64;

/// Why a custody record was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CustodyError {
    /// Over [`MAX_BYTES`] or [`MAX_ENTRIES`].
    #[error("custody record too large ({0})")]
    TooLarge(String),
    /// A line that is not `<name> <size> sha256:<hex>`.
    #[error("custody record line {line}: {why}")]
    Syntax {
        /// 1-based line number.
        line: usize,
        /// What is wrong with it.
        why: String,
    },
    /// The same artifact twice.
    #[error("custody record names {0} twice")]
    Duplicate(String),
    /// A manifest artifact the boot stage did not record as verified.
    #[error("artifact {0} is in the manifest but the boot stage did not record it as verified")]
    Missing(String),
    /// A recorded size or hash that is not the manifest's.
    #[error("artifact {name}: the boot stage verified {recorded}, the manifest says {expected}")]
    Mismatch {
        /// Artifact name.
        name: String,
        /// `<size> sha256:<hex>` as recorded.
        recorded: String,
        /// `<size> sha256:<hex>` from the manifest.
        expected: String,
    },
}

/// Artifact name -> (size in bytes, SHA-256), as the boot stage verified them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Record {
    /// Entries by artifact name.
    pub entries: BTreeMap<String, (u64, Sha256Digest)>,
}

impl Record {
    /// The record's text (see the module docs): one line per entry, in name order.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for (name, (size, hash)) in &self.entries {
            let _ = writeln!(out, "{name} {size} {hash}");
        }
        out
    }

    /// Parses a record. Names are 1-64 bytes of `[A-Za-z0-9._-]` (manifest artifact names).
    ///
    /// # Errors
    /// [`CustodyError::TooLarge`], [`CustodyError::Syntax`], [`CustodyError::Duplicate`].
    pub fn parse(bytes: &[u8]) -> Result<Self, CustodyError> {
        if bytes.len() > MAX_BYTES {
            return Err(CustodyError::TooLarge(format!(
                "{} bytes, at most {MAX_BYTES}",
                bytes.len()
            )));
        }
        let text = std::str::from_utf8(bytes).map_err(|e| CustodyError::Syntax {
            line: 1 + bytes[..e.valid_up_to()]
                .iter()
                .filter(|b| **b == b'\n')
                .count(),
            why: "not UTF-8".into(),
        })?;
        let mut entries = BTreeMap::new();
        for (i, line) in text.lines().enumerate() {
            let syntax = |why: &str| CustodyError::Syntax {
                line: i + 1,
                why: why.to_string(),
            };
            if entries.len() == MAX_ENTRIES {
                return Err(CustodyError::TooLarge(format!(
                    "more than {MAX_ENTRIES} entries"
                )));
            }
            let mut words = line.split(' ');
            let (Some(name), Some(size), Some(hash), None) =
                (words.next(), words.next(), words.next(), words.next())
            else {
                return Err(syntax("expected <name> <size> sha256:<hex>"));
            };
            if name.is_empty()
                || name.len() > 64
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
            {
                return Err(syntax("bad artifact name"));
            }
            if size.is_empty() || !size.bytes().all(|b| b.is_ascii_digit()) {
                return Err(syntax("size is not a decimal number"));
            }
            let size: u64 = size.parse().map_err(|_| syntax("size out of range"))?;
            let hash: Sha256Digest = hash.parse().map_err(|e| syntax(&format!("{e}")))?;
            if entries.insert(name.to_string(), (size, hash)).is_some() {
                return Err(CustodyError::Duplicate(name.to_string()));
            }
        }
        Ok(Record { entries })
    }

    /// Checks that every artifact of `m` is recorded with the manifest's size and hash.
    /// Entries the manifest does not name are ignored.
    ///
    /// # Errors
    /// [`CustodyError::Missing`], [`CustodyError::Mismatch`].
    pub fn check(&self, m: &BootManifest) -> Result<(), CustodyError> {
        for (name, a) in &m.artifacts {
            let (size, hash) = self
                .entries
                .get(name)
                .ok_or_else(|| CustodyError::Missing(name.clone()))?;
            if *size != a.size_bytes || *hash != a.hash {
                return Err(CustodyError::Mismatch {
                    name: name.clone(),
                    recorded: format!("{size} {hash}"),
                    expected: format!("{} {}", a.size_bytes, a.hash),
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(b: u8) -> Sha256Digest {
        Sha256Digest([b; 32])
    }

    fn record() -> Record {
        let mut r = Record::default();
        r.entries.insert("kernel".into(), (12, d(1)));
        r.entries.insert("rootfs".into(), (5000, d(2)));
        r
    }

    #[test]
    fn render_then_parse_round_trips_in_name_order() {
        let text = record().render();
        assert_eq!(text, format!("kernel 12 {}\nrootfs 5000 {}\n", d(1), d(2)));
        assert_eq!(Record::parse(text.as_bytes()).unwrap(), record());
        assert_eq!(Record::parse(b"").unwrap(), Record::default());
    }

    #[test]
    fn malformed_records_are_refused_naming_the_line() {
        let h = d(3).to_string();
        let cases: Vec<(String, &str)> = vec![
            (format!("kernel 12 {h} extra\n"), "line 1"),
            ("kernel 12\n".to_string(), "line 1"),
            (format!("kernel 12 {h}\nrootfs -1 {h}\n"), "line 2"),
            (format!("kernel 1e3 {h}\n"), "decimal"),
            (format!("kernel 99999999999999999999999 {h}\n"), "range"),
            (format!("ker/nel 12 {h}\n"), "name"),
            (format!(" 12 {h}\n"), "name"),
            ("kernel 12 sha256:00\n".to_string(), "sha256"),
            (format!("kernel  12 {h}\n"), "line 1"),
        ];
        for (text, want) in cases {
            let e = Record::parse(text.as_bytes()).unwrap_err().to_string();
            assert!(e.contains(want), "{text:?}: {e}");
        }
        let e = Record::parse(format!("kernel 1 {h}\nkernel 1 {h}\n").as_bytes()).unwrap_err();
        assert_eq!(e, CustodyError::Duplicate("kernel".into()));
        let e = Record::parse(b"kernel 1 \xff\n").unwrap_err().to_string();
        assert!(e.contains("UTF-8"), "{e}");
    }

    #[test]
    fn oversized_records_are_refused() {
        let big = vec![b'a'; MAX_BYTES + 1];
        assert!(matches!(
            Record::parse(&big),
            Err(CustodyError::TooLarge(_))
        ));
        let h = d(4).to_string();
        let many: String = (0..=MAX_ENTRIES).map(|i| format!("a{i} 1 {h}\n")).collect();
        assert!(many.len() <= MAX_BYTES);
        assert!(matches!(
            Record::parse(many.as_bytes()),
            Err(CustodyError::TooLarge(_))
        ));
    }
}
