//! The libp2p peer key (`--identity FILE`): a stable identity for providers, DHT nodes and the
//! init in internet/local mode, or a fresh one per run (private mode, DESIGN §4).
//!
//! The file holds the protobuf encoding of a libp2p keypair (`Keypair::to_protobuf_encoding`),
//! the format rust-libp2p and kubo tools use. It is created with mode 0600 when absent.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use libp2p::identity::Keypair;

/// Errors loading or creating an identity file.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// Reading the file failed.
    #[error("reading identity {path}")]
    Read {
        /// The identity file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a protobuf-encoded libp2p keypair.
    #[error("identity {path} is not a protobuf-encoded libp2p keypair")]
    Decode {
        /// The identity file.
        path: PathBuf,
        /// The decoding error.
        #[source]
        source: libp2p::identity::DecodingError,
    },
    /// Creating or writing the file failed.
    #[error("writing identity {path}")]
    Write {
        /// The identity file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Encoding the new key failed.
    #[error("encoding a new identity for {path}")]
    Encode {
        /// The identity file.
        path: PathBuf,
        /// The encoding error.
        #[source]
        source: libp2p::identity::DecodingError,
    },
}

/// A fresh Ed25519 keypair, never written anywhere (ephemeral / private mode).
pub fn ephemeral() -> Keypair {
    Keypair::generate_ed25519()
}

/// Loads the keypair in `path`, or creates a new Ed25519 one there (mode 0600, parent directory
/// must exist) when the file does not exist.
///
/// # Errors
/// [`IdentityError`] naming `path` when the file cannot be read, decoded or written.
pub fn load_or_create(path: &Path) -> Result<Keypair, IdentityError> {
    match std::fs::read(path) {
        Ok(bytes) => {
            Keypair::from_protobuf_encoding(&bytes).map_err(|source| IdentityError::Decode {
                path: path.to_owned(),
                source,
            })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = Keypair::generate_ed25519();
            let bytes = key
                .to_protobuf_encoding()
                .map_err(|source| IdentityError::Encode {
                    path: path.to_owned(),
                    source,
                })?;
            let write = || -> std::io::Result<()> {
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(path)?;
                f.write_all(&bytes)?;
                f.sync_all()
            };
            write().map_err(|source| IdentityError::Write {
                path: path.to_owned(),
                source,
            })?;
            Ok(key)
        }
        Err(source) => Err(IdentityError::Read {
            path: path.to_owned(),
            source,
        }),
    }
}

/// [`load_or_create`] for `Some(path)`, [`ephemeral`] for `None`.
///
/// # Errors
/// As [`load_or_create`].
pub fn load_or_ephemeral(path: Option<&Path>) -> Result<Keypair, IdentityError> {
    path.map_or_else(|| Ok(ephemeral()), load_or_create)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn identity_is_created_0600_and_stable_across_loads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("identity.key");
        let a = load_or_create(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let b = load_or_create(&path).unwrap();
        assert_eq!(a.public().to_peer_id(), b.public().to_peer_id());
    }

    #[test]
    fn garbage_identity_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("identity.key");
        std::fs::write(&path, b"not a key").unwrap();
        assert!(matches!(
            load_or_create(&path),
            Err(IdentityError::Decode { .. })
        ));
    }
}
