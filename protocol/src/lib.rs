//! `phase-protocol`: the data and crypto every other Phase Boot part stands on.
//!
//! Pure data and crypto, no sockets and no async runtime (DESIGN §2):
//! - [`manifest`]: the boot manifest schema, v1 and v2, and its validation (DESIGN §5, seed 003
//!   "Boot Manifest Schema Pattern"); [`chunks`]: v2's piece digests (issue 19).
//! - [`canonical`] and [`json`]: RFC 8785 (JCS) signing bytes over the *received* JSON value, with
//!   a strict parser (size cap, nesting limit, duplicate keys refused).
//! - [`signing`] and [`trust`]: Ed25519 over SHA-256 of the canonical bytes; a trust root of keys
//!   and a threshold.
//! - [`verify()`]: the one entry point that turns bytes into a [`VerifiedManifest`].
//! - [`record`] and [`mdns`]: the DHT record and the mDNS TXT schema (seeds 002, 004).
//! - [`arch`] and [`mode`]: architecture aliases and boot-mode policy (seed 003, DESIGN §4).
#![forbid(unsafe_code)]

pub mod arch;
pub mod canonical;
pub mod chunks;
pub mod digest;
pub mod json;
pub mod manifest;
pub mod mdns;
pub mod mode;
pub mod range;
pub mod record;
pub mod signing;
pub mod trust;
pub mod verify;

pub use arch::Arch;
pub use digest::Sha256Digest;
pub use manifest::{Artifact, BootManifest, ManifestError, SignatureEntry};
pub use mode::BootMode;
pub use record::{ManifestRecord, PeerRecord};
pub use trust::TrustRoot;
pub use verify::{
    verify, ClockTrust, Expectation, VerifiedManifest, VerifyError, MAX_MANIFEST_BYTES,
};
