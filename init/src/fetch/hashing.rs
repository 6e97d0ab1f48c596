//! The SHA-256 of a download as it streams in, on the receiving thread or on a hashing thread
//! fed by a bounded channel (issue 18 §4).
//!
//! On one core, receiving, hashing and writing share it and a second thread only adds hand-offs;
//! with two or more cores in this process's CPU affinity mask, a hashing thread lets the
//! receiving thread go on reading the socket and writing the partial file while the previous
//! chunks are hashed. The channel holds at most [`CHANNEL_CHUNKS`] chunks (`Bytes`, shared, not
//! copied): when the hasher falls behind, `update` blocks, so memory stays bounded and the
//! download simply runs at the hash rate. Either way the digest is of exactly the bytes given to
//! [`StreamHasher::update`], in order.

use std::sync::mpsc::{sync_channel, SyncSender};
use std::thread::JoinHandle;

use bytes::Bytes;
use phase_protocol::Sha256Digest;
use sha2::{Digest, Sha256};

/// Chunks in flight to the hashing thread (a chunk is what one socket read gave, typically
/// 8-64 KiB, so at most a few MiB).
pub const CHANNEL_CHUNKS: usize = 64;

/// The hashing thread ended without a digest (it panicked); the download must not be trusted.
#[derive(Debug, thiserror::Error)]
#[error("the hashing thread ended without a digest")]
pub struct HashThreadLost;

/// SHA-256 over a stream of chunks, inline or on its own thread ([`StreamHasher::new`] picks).
#[derive(Debug)]
pub enum StreamHasher {
    /// Hashes on the caller's thread.
    Inline(Sha256),
    /// Sends each chunk to a hashing thread.
    Thread {
        /// The bounded channel; `None` once the thread was found gone.
        tx: Option<SyncSender<Bytes>>,
        /// The thread, which returns the digest when the channel closes.
        handle: JoinHandle<Sha256Digest>,
    },
}

impl Default for StreamHasher {
    fn default() -> Self {
        Self::new()
    }
}

impl StreamHasher {
    /// A hashing thread when this process may run on 2+ CPUs
    /// (`std::thread::available_parallelism`, which follows the affinity mask), else inline.
    pub fn new() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        if cores >= 2 {
            Self::threaded()
        } else {
            Self::Inline(Sha256::new())
        }
    }

    /// Hashing on a thread of its own (inline if the thread cannot be started).
    pub fn threaded() -> Self {
        let (tx, rx) = sync_channel::<Bytes>(CHANNEL_CHUNKS);
        let spawned = std::thread::Builder::new()
            .name("phase-sha256".into())
            .spawn(move || {
                let mut h = Sha256::new();
                for chunk in rx {
                    h.update(&chunk);
                }
                Sha256Digest(h.finalize().into())
            });
        match spawned {
            Ok(handle) => Self::Thread {
                tx: Some(tx),
                handle,
            },
            Err(_) => Self::Inline(Sha256::new()),
        }
    }

    /// Adds `chunk` (blocks while [`CHANNEL_CHUNKS`] chunks wait for the hashing thread).
    pub fn update(&mut self, chunk: &Bytes) {
        match self {
            Self::Inline(h) => h.update(chunk),
            Self::Thread { tx, .. } => {
                // A send fails only if the thread is gone; finish() then reports it.
                if tx.as_ref().is_some_and(|t| t.send(chunk.clone()).is_err()) {
                    *tx = None;
                }
            }
        }
    }

    /// The digest of every chunk given, in order.
    ///
    /// # Errors
    /// [`HashThreadLost`] when the hashing thread died (a chunk may be missing from its digest).
    pub fn finish(self) -> Result<Sha256Digest, HashThreadLost> {
        match self {
            Self::Inline(h) => Ok(Sha256Digest(h.finalize().into())),
            Self::Thread { tx, handle } => {
                let intact = tx.is_some();
                drop(tx);
                let digest = handle.join().map_err(|_| HashThreadLost)?;
                if intact {
                    Ok(digest)
                } else {
                    Err(HashThreadLost)
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunks() -> Vec<Bytes> {
        // Uneven sizes, some empty, over several channel capacities' worth.
        (0..(3 * CHANNEL_CHUNKS))
            .map(|i| Bytes::from(vec![(i % 251) as u8; (i * 37) % 5000]))
            .collect()
    }

    #[test]
    fn threaded_and_inline_digests_equal_the_digest_of_the_concatenation() {
        let all: Vec<u8> = chunks().iter().flat_map(|c| c.to_vec()).collect();
        let want = Sha256Digest::of(&all);
        let mut inline = StreamHasher::Inline(Sha256::new());
        let mut thread = StreamHasher::threaded();
        assert!(matches!(thread, StreamHasher::Thread { .. }));
        for c in chunks() {
            inline.update(&c);
            thread.update(&c);
        }
        assert_eq!(inline.finish().unwrap(), want);
        assert_eq!(thread.finish().unwrap(), want);
        assert_eq!(
            StreamHasher::threaded().finish().unwrap(),
            Sha256Digest::of(b"")
        );
    }

    #[test]
    fn a_lost_hashing_thread_is_an_error_not_a_digest() {
        let (tx, rx) = sync_channel::<Bytes>(1);
        // A thread that stops reading after one chunk and returns a digest of it alone.
        let handle = std::thread::spawn(move || {
            let first = rx.recv().unwrap();
            drop(rx);
            Sha256Digest::of(&first)
        });
        let mut h = StreamHasher::Thread {
            tx: Some(tx),
            handle,
        };
        h.update(&Bytes::from_static(b"one"));
        // Give the thread time to hang up; the next sends then fail.
        std::thread::sleep(std::time::Duration::from_millis(50));
        h.update(&Bytes::from_static(b"two"));
        h.update(&Bytes::from_static(b"three"));
        assert!(h.finish().is_err(), "a digest missing chunks was returned");
    }
}
