//! The chunk gate of manifest v2 (issue 19 §1-§2; [`phase_protocol::chunks`]): bytes of a v2
//! artifact are held back until the chunk they belong to is complete and its SHA-256 matches
//! the signed chunk list; only then are they handed on (to the whole-file hash and the partial
//! file). A chunk that does not match is dropped whole and reported with its index, so the
//! source that sent it can be named and dropped, and the next source resumes at that chunk's
//! first byte: nothing unverified is ever written, and verified chunks are kept.
//!
//! Memory: at most one chunk (`chunk_size` bytes, 1-4 MiB by default) is held per artifact.
//! The held bytes are `Bytes` handles of the received buffers, not copies.

use bytes::Bytes;
use phase_protocol::chunks::chunk_span;
use phase_protocol::Sha256Digest;
use sha2::{Digest, Sha256};

/// A chunk whose SHA-256 is not the manifest's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkMismatch {
    /// Index of the chunk (0-based).
    pub index: u64,
    /// Its first byte's offset in the artifact.
    pub offset: u64,
    /// The digest of the bytes received.
    pub got: Sha256Digest,
    /// The manifest's digest for it.
    pub expected: Sha256Digest,
}

/// Holds back the bytes of the chunk being received until its digest is checked.
#[derive(Debug)]
pub struct ChunkGate<'a> {
    size: u64,
    chunk_size: u64,
    expected: &'a [Sha256Digest],
    /// Index of the chunk being assembled.
    next: u64,
    current: Sha256,
    pending: Vec<Bytes>,
    pending_len: u64,
}

impl<'a> ChunkGate<'a> {
    /// A gate for an artifact of `size` bytes in chunks of `chunk_size` bytes (non-zero) with
    /// the manifest's digests `expected` (one per chunk, as validated), starting at byte 0.
    pub fn new(size: u64, chunk_size: u64, expected: &'a [Sha256Digest]) -> Self {
        ChunkGate {
            size,
            chunk_size: chunk_size.max(1),
            expected,
            next: 0,
            current: Sha256::new(),
            pending: Vec::new(),
            pending_len: 0,
        }
    }

    /// Drops the held bytes and starts over at `offset`, which must be a chunk boundary (a
    /// verified offset always is); another offset is rounded down to one.
    pub fn reset_to(&mut self, offset: u64) {
        self.next = offset / self.chunk_size;
        self.current = Sha256::new();
        self.pending.clear();
        self.pending_len = 0;
    }

    /// Bytes held back: received but not yet checked.
    pub fn pending_len(&self) -> u64 {
        self.pending_len
    }

    /// Takes `data`, the next bytes of the artifact. Every chunk it completes is checked; the
    /// bytes of each matching chunk are appended to `ready`, in order, for the caller to hash
    /// and write. Bytes past the artifact's end are the caller's to refuse before feeding.
    ///
    /// # Errors
    /// [`ChunkMismatch`] for the first completed chunk whose digest differs; its bytes are
    /// dropped and the gate stays at that chunk (call [`reset_to`](Self::reset_to) before
    /// feeding again).
    pub fn feed(&mut self, mut data: Bytes, ready: &mut Vec<Bytes>) -> Result<(), ChunkMismatch> {
        while !data.is_empty() {
            let Some((offset, len)) = chunk_span(self.size, self.chunk_size, self.next) else {
                // Past the last chunk: nothing is checked there, so nothing is passed on.
                return Ok(());
            };
            let room = (len - self.pending_len).min(data.len() as u64) as usize;
            let piece = data.split_to(room);
            self.current.update(&piece);
            self.pending.push(piece);
            self.pending_len += room as u64;
            if self.pending_len < len {
                continue;
            }
            let got = Sha256Digest(std::mem::take(&mut self.current).finalize().into());
            let expected = self
                .expected
                .get(self.next as usize)
                .copied()
                .unwrap_or(Sha256Digest([0; 32]));
            self.pending_len = 0;
            if got != expected || self.next as usize >= self.expected.len() {
                self.pending.clear();
                return Err(ChunkMismatch {
                    index: self.next,
                    offset,
                    got,
                    expected,
                });
            }
            ready.append(&mut self.pending);
            self.next += 1;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHUNK: usize = 64;

    fn setup(data: &[u8]) -> Vec<Sha256Digest> {
        data.chunks(CHUNK).map(Sha256Digest::of).collect()
    }

    fn joined(parts: &[Bytes]) -> Vec<u8> {
        parts.iter().flat_map(|b| b.iter().copied()).collect()
    }

    #[test]
    fn good_bytes_pass_in_order_whatever_the_slicing() {
        let data: Vec<u8> = (0..(3 * CHUNK + 10)).map(|i| i as u8).collect();
        let digests = setup(&data);
        for slice in [1, 7, CHUNK, CHUNK + 1, data.len()] {
            let mut gate = ChunkGate::new(data.len() as u64, CHUNK as u64, &digests);
            let mut ready = Vec::new();
            for piece in data.chunks(slice) {
                gate.feed(Bytes::copy_from_slice(piece), &mut ready)
                    .unwrap();
            }
            assert_eq!(joined(&ready), data, "slice {slice}");
            assert_eq!(gate.pending_len(), 0);
        }
    }

    #[test]
    fn a_chunk_is_held_until_complete() {
        let data = vec![9u8; 2 * CHUNK];
        let digests = setup(&data);
        let mut gate = ChunkGate::new(data.len() as u64, CHUNK as u64, &digests);
        let mut ready = Vec::new();
        gate.feed(Bytes::copy_from_slice(&data[..CHUNK - 1]), &mut ready)
            .unwrap();
        assert!(
            ready.is_empty(),
            "nothing passes before the chunk is checked"
        );
        assert_eq!(gate.pending_len(), CHUNK as u64 - 1);
        gate.feed(
            Bytes::copy_from_slice(&data[CHUNK - 1..CHUNK + 1]),
            &mut ready,
        )
        .unwrap();
        assert_eq!(joined(&ready).len(), CHUNK);
        assert_eq!(gate.pending_len(), 1);
    }

    #[test]
    fn a_bad_chunk_is_named_and_dropped_and_good_ones_before_it_pass() {
        let data: Vec<u8> = (0..(3 * CHUNK)).map(|i| (i * 3) as u8).collect();
        let digests = setup(&data);
        let mut bad = data.clone();
        bad[CHUNK + 5] ^= 0x80;
        let mut gate = ChunkGate::new(data.len() as u64, CHUNK as u64, &digests);
        let mut ready = Vec::new();
        let err = gate.feed(Bytes::from(bad), &mut ready).unwrap_err();
        assert_eq!((err.index, err.offset), (1, CHUNK as u64));
        assert_eq!(err.expected, digests[1]);
        assert_ne!(err.got, err.expected);
        assert_eq!(joined(&ready), &data[..CHUNK], "only chunk 0 passed");
        // Resume at the bad chunk with good bytes from elsewhere.
        gate.reset_to(CHUNK as u64);
        ready.clear();
        gate.feed(Bytes::copy_from_slice(&data[CHUNK..]), &mut ready)
            .unwrap();
        assert_eq!(joined(&ready), &data[CHUNK..]);
    }

    #[test]
    fn bytes_past_the_end_pass_nothing_and_a_short_list_fails_closed() {
        let data = vec![1u8; CHUNK + 3];
        let digests = setup(&data);
        let mut gate = ChunkGate::new(data.len() as u64, CHUNK as u64, &digests);
        let mut ready = Vec::new();
        let mut long = data.clone();
        long.extend_from_slice(b"extra");
        gate.feed(Bytes::from(long), &mut ready).unwrap();
        assert_eq!(joined(&ready), data);
        // A list with one digest too few (never passes validation) refuses the last chunk.
        let mut gate = ChunkGate::new(data.len() as u64, CHUNK as u64, &digests[..1]);
        ready.clear();
        let err = gate
            .feed(Bytes::copy_from_slice(&data), &mut ready)
            .unwrap_err();
        assert_eq!(err.index, 1);
    }
}
