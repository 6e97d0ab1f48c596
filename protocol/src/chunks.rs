//! Piece digests of manifest v2 (issue 19 §1; BitTorrent v2, BEP 52, splits content the same
//! way, with a Merkle tree where we keep a flat list).
//!
//! An artifact of `size_bytes` bytes is cut into `ceil(size_bytes / chunk_size)` chunks of
//! `chunk_size` bytes each (the last one may be shorter; an empty artifact has no chunk). The
//! manifest lists the SHA-256 of every chunk in order, inside the signed bytes, so a client can
//! check a chunk the moment it arrives and name the peer that sent a bad one. The whole-file
//! `hash` stays and is checked as well.

use sha2::{Digest, Sha256};

use crate::digest::Sha256Digest;

/// Smallest `chunk_size` a manifest may declare, in bytes (64 KiB).
pub const MIN_CHUNK_SIZE: u64 = 64 << 10;
/// Largest `chunk_size` a manifest may declare, in bytes (16 MiB).
pub const MAX_CHUNK_SIZE: u64 = 16 << 20;

/// The chunk size the release tool picks for an artifact of `size` bytes: 1 MiB up to 256 MiB,
/// 2 MiB up to 1 GiB, 4 MiB above (at most about 73 bytes of manifest per chunk, so a 16 GiB
/// artifact still fits in a 1 MiB manifest).
pub fn default_chunk_size(size: u64) -> u64 {
    match size {
        s if s <= 256 << 20 => 1 << 20,
        s if s <= 1 << 30 => 2 << 20,
        _ => 4 << 20,
    }
}

/// True for a `chunk_size` a manifest may declare: a power of two in
/// [`MIN_CHUNK_SIZE`]..=[`MAX_CHUNK_SIZE`].
pub fn valid_chunk_size(chunk_size: u64) -> bool {
    chunk_size.is_power_of_two() && (MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&chunk_size)
}

/// How many chunks an artifact of `size` bytes has at `chunk_size` (0 for an empty artifact).
/// `chunk_size` must be non-zero.
pub fn chunk_count(size: u64, chunk_size: u64) -> u64 {
    size.div_ceil(chunk_size)
}

/// The byte span `(offset, len)` of chunk `index`, or `None` past the last chunk.
pub fn chunk_span(size: u64, chunk_size: u64, index: u64) -> Option<(u64, u64)> {
    let offset = index.checked_mul(chunk_size)?;
    (offset < size).then(|| (offset, chunk_size.min(size - offset)))
}

/// The whole-file digest and the chunk digests of one byte stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkList {
    /// SHA-256 of all the bytes (the manifest's `hash`).
    pub whole: Sha256Digest,
    /// SHA-256 of each chunk, in order (the manifest's `chunks`).
    pub chunks: Vec<Sha256Digest>,
    /// Bytes seen.
    pub size: u64,
}

/// Computes [`ChunkList`] over bytes fed in any slicing: one pass, two SHA-256 states (the
/// whole file's and the current chunk's).
#[derive(Debug, Clone)]
pub struct ChunkDigester {
    chunk_size: u64,
    whole: Sha256,
    current: Sha256,
    in_current: u64,
    size: u64,
    chunks: Vec<Sha256Digest>,
}

impl ChunkDigester {
    /// A digester for chunks of `chunk_size` bytes. A zero `chunk_size` is taken as 1 (callers
    /// pass a validated size).
    pub fn new(chunk_size: u64) -> Self {
        ChunkDigester {
            chunk_size: chunk_size.max(1),
            whole: Sha256::new(),
            current: Sha256::new(),
            in_current: 0,
            size: 0,
            chunks: Vec::new(),
        }
    }

    /// Feeds `data`; every chunk it completes is appended to [`completed`](Self::completed).
    pub fn update(&mut self, mut data: &[u8]) {
        self.whole.update(data);
        self.size += data.len() as u64;
        while !data.is_empty() {
            let room = (self.chunk_size - self.in_current).min(data.len() as u64) as usize;
            self.current.update(&data[..room]);
            self.in_current += room as u64;
            data = &data[room..];
            if self.in_current == self.chunk_size {
                let done = std::mem::take(&mut self.current);
                self.chunks.push(Sha256Digest(done.finalize().into()));
                self.in_current = 0;
            }
        }
    }

    /// The digests of the chunks completed so far, in order.
    pub fn completed(&self) -> &[Sha256Digest] {
        &self.chunks
    }

    /// Ends the stream: a partial last chunk is completed and the whole digest taken.
    pub fn finish(mut self) -> ChunkList {
        if self.in_current > 0 {
            self.chunks
                .push(Sha256Digest(self.current.finalize().into()));
        }
        ChunkList {
            whole: Sha256Digest(self.whole.finalize().into()),
            chunks: self.chunks,
            size: self.size,
        }
    }
}

/// [`ChunkList`] of everything `reader` yields, read in 1 MiB blocks.
///
/// # Errors
/// The reader's I/O error.
pub fn chunk_list_of(
    mut reader: impl std::io::Read,
    chunk_size: u64,
) -> std::io::Result<ChunkList> {
    let mut digester = ChunkDigester::new(chunk_size);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        digester.update(&buf[..n]);
    }
    Ok(digester.finish())
}

/// The have-map of a peer (issue 19 §3): which chunks of one artifact it holds verified, one
/// bit per chunk, chunk `i` in bit `7 - i % 8` of byte `i / 8` (most significant bit first, as
/// BitTorrent's bitfield, BEP 3). The map of `n` chunks is exactly `ceil(n / 8)` bytes and its
/// spare bits are zero.
pub fn encode_have(have: &[bool]) -> Vec<u8> {
    let mut out = vec![0u8; have.len().div_ceil(8)];
    for (i, _) in have.iter().enumerate().filter(|(_, h)| **h) {
        out[i / 8] |= 0x80 >> (i % 8);
    }
    out
}

/// Why a have-map from the network was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HaveError {
    /// Not `ceil(chunks / 8)` bytes.
    #[error("have-map of {got} bytes for {chunks} chunks; expected {expected} bytes")]
    Length {
        /// Bytes received.
        got: usize,
        /// Chunks of the artifact.
        chunks: u64,
        /// Bytes a map of that many chunks has.
        expected: u64,
    },
    /// A bit past the last chunk is set.
    #[error("have-map sets a bit past chunk {chunks}")]
    SpareBits {
        /// Chunks of the artifact.
        chunks: u64,
    },
}

/// Parses the have-map `bytes` of an artifact of `chunks` chunks (format: [`encode_have`]).
/// Bytes from a peer: strict, no allocation beyond `chunks` flags, never panics (fuzz target
/// `have_map`).
///
/// # Errors
/// [`HaveError::Length`] for a map of the wrong size, [`HaveError::SpareBits`] when a bit
/// past the last chunk is set.
pub fn decode_have(bytes: &[u8], chunks: u64) -> Result<Vec<bool>, HaveError> {
    let expected = chunks.div_ceil(8);
    if bytes.len() as u64 != expected {
        return Err(HaveError::Length {
            got: bytes.len(),
            chunks,
            expected,
        });
    }
    let n = chunks as usize;
    let bit = |i: usize| bytes[i / 8] & (0x80 >> (i % 8)) != 0;
    if (n..bytes.len() * 8).any(bit) {
        return Err(HaveError::SpareBits { chunks });
    }
    Ok((0..n).map(bit).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn by_hand(data: &[u8], chunk: usize) -> Vec<Sha256Digest> {
        data.chunks(chunk).map(Sha256Digest::of).collect()
    }

    #[test]
    fn digests_match_a_plain_split_whatever_the_feeding() {
        let data: Vec<u8> = (0..(3 * 65536 + 17)).map(|i| (i * 7 % 251) as u8).collect();
        for feed in [1usize, 1000, 65536, 65537, data.len()] {
            let mut d = ChunkDigester::new(65536);
            for piece in data.chunks(feed) {
                d.update(piece);
            }
            let list = d.finish();
            assert_eq!(list.chunks, by_hand(&data, 65536), "feed {feed}");
            assert_eq!(list.whole, Sha256Digest::of(&data));
            assert_eq!(list.size, data.len() as u64);
        }
    }

    #[test]
    fn exact_multiple_has_no_empty_tail_chunk_and_empty_has_none() {
        let data = vec![5u8; 2 * 65536];
        let list = chunk_list_of(&data[..], 65536).unwrap();
        assert_eq!(list.chunks.len(), 2);
        assert_eq!(chunk_count(data.len() as u64, 65536), 2);
        let empty = chunk_list_of(&[][..], 65536).unwrap();
        assert!(empty.chunks.is_empty());
        assert_eq!(chunk_count(0, 65536), 0);
    }

    #[test]
    fn spans_cover_the_file_and_stop_at_its_end() {
        assert_eq!(chunk_span(150, 64, 0), Some((0, 64)));
        assert_eq!(chunk_span(150, 64, 2), Some((128, 22)));
        assert_eq!(chunk_span(150, 64, 3), None);
        assert_eq!(chunk_span(10, 64, u64::MAX), None);
        assert_eq!(chunk_count(150, 64), 3);
    }

    #[test]
    fn chunk_size_rules() {
        assert!(valid_chunk_size(1 << 20));
        assert!(valid_chunk_size(MIN_CHUNK_SIZE));
        assert!(valid_chunk_size(MAX_CHUNK_SIZE));
        assert!(!valid_chunk_size(0));
        assert!(!valid_chunk_size(MIN_CHUNK_SIZE / 2));
        assert!(!valid_chunk_size(MAX_CHUNK_SIZE * 2));
        assert!(!valid_chunk_size((1 << 20) + 1));
        assert_eq!(default_chunk_size(10), 1 << 20);
        assert_eq!(default_chunk_size(1 << 30), 2 << 20);
        assert_eq!(default_chunk_size((1 << 30) + 1), 4 << 20);
        assert!(valid_chunk_size(default_chunk_size(u64::MAX)));
    }

    #[test]
    fn have_maps_round_trip_and_bad_ones_are_refused() {
        for n in [0usize, 1, 7, 8, 9, 16, 70] {
            let have: Vec<bool> = (0..n).map(|i| i % 3 == 0).collect();
            let bytes = encode_have(&have);
            assert_eq!(bytes.len(), n.div_ceil(8));
            assert_eq!(decode_have(&bytes, n as u64), Ok(have), "n {n}");
        }
        // MSB first: chunk 0 is 0x80, chunk 9 is 0x40 of byte 1.
        let mut have = vec![false; 10];
        have[0] = true;
        have[9] = true;
        assert_eq!(encode_have(&have), vec![0x80, 0x40]);
        assert!(matches!(
            decode_have(&[0xff], 9),
            Err(HaveError::Length {
                got: 1,
                expected: 2,
                ..
            })
        ));
        assert!(matches!(
            decode_have(&[0, 0, 0], 9),
            Err(HaveError::Length { .. })
        ));
        // Chunk 9 of 9 (the 10th bit) does not exist.
        assert_eq!(
            decode_have(&[0xff, 0x40], 9),
            Err(HaveError::SpareBits { chunks: 9 })
        );
        assert_eq!(decode_have(&[0xff, 0x80], 9).map(|h| h.len()), Ok(9));
    }
}
