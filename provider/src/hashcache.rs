//! SHA-256 of artifact files, cached by (path, size, mtime) so a restart of `plasmd serve` does
//! not rehash gigabytes (issue 3 "Must have" 1), with the chunk digests of manifest v2 (issue 19
//! §1) when a generated manifest needed them.
//!
//! The hashes give generated manifests their `hash` and artifact responses their `ETag`. The
//! cache is a JSON file (`<artifacts>/.plasmd-hashes.json` by default); a file whose size or
//! mtime changed is hashed again. Failing to write the cache is not fatal (a read-only
//! artifacts directory, as in a booted target, just means hashing again next time).

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::UNIX_EPOCH;

use phase_protocol::chunks::{chunk_list_of, ChunkList};
use phase_protocol::Sha256Digest;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Read size while hashing, in bytes (1 MiB).
const HASH_CHUNK: usize = 1 << 20;

/// Why a file could not be hashed or the cache saved.
#[derive(Debug, thiserror::Error)]
pub enum HashError {
    /// The file could not be opened, stat'ed or read.
    #[error("cannot hash {path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The cache file could not be written.
    #[error("cannot write hash cache {path}")]
    Save {
        /// The cache file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// One cached hash and what it was computed for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheEntry {
    /// Size in bytes when hashed.
    pub size: u64,
    /// Modification time in nanoseconds since the Unix epoch when hashed.
    pub mtime_ns: u128,
    /// The file's SHA-256.
    pub sha256: Sha256Digest,
    /// Its chunk digests at one chunk size, if a v2 manifest needed them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunks: Option<CachedChunks>,
}

/// Chunk digests of one file at one chunk size ([`phase_protocol::chunks`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CachedChunks {
    /// Chunk size in bytes.
    pub chunk_size: u64,
    /// SHA-256 of every chunk, in order.
    pub digests: Vec<Sha256Digest>,
}

/// The (size, mtime) identity of a file, as compared against [`CacheEntry`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileStamp {
    /// Size in bytes.
    pub size: u64,
    /// Modification time in nanoseconds since the Unix epoch (0 if unknown).
    pub mtime_ns: u128,
}

impl FileStamp {
    /// The stamp of `meta`.
    pub fn of(meta: &std::fs::Metadata) -> Self {
        let mtime_ns = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos());
        FileStamp {
            size: meta.len(),
            mtime_ns,
        }
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct CacheFile {
    entries: BTreeMap<PathBuf, CacheEntry>,
}

/// The hash cache: in memory, loaded from and saved to one JSON file.
#[derive(Debug)]
pub struct HashCache {
    path: PathBuf,
    entries: Mutex<BTreeMap<PathBuf, CacheEntry>>,
}

impl HashCache {
    /// Loads the cache at `path`; a missing or unreadable file gives an empty cache.
    pub fn load(path: impl Into<PathBuf>) -> Self {
        let path = path.into();
        let entries = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice::<CacheFile>(&b).ok())
            .map(|f| f.entries)
            .unwrap_or_default();
        HashCache {
            path,
            entries: Mutex::new(entries),
        }
    }

    /// The cached hash of `file` if its current stamp matches, without reading the file.
    pub fn cached(&self, file: &Path, stamp: FileStamp) -> Option<Sha256Digest> {
        let entries = self.entries.lock().ok()?;
        entries
            .get(file)
            .filter(|e| e.size == stamp.size && e.mtime_ns == stamp.mtime_ns)
            .map(|e| e.sha256)
    }

    /// The hash and stamp of `file`: from the cache when (size, mtime) match, else read whole.
    /// Blocking; call from a blocking thread.
    ///
    /// # Errors
    /// [`HashError::Io`].
    pub fn hash(&self, file: &Path) -> Result<(Sha256Digest, FileStamp), HashError> {
        let io = |source| HashError::Io {
            path: file.to_owned(),
            source,
        };
        let meta = std::fs::metadata(file).map_err(io)?;
        let stamp = FileStamp::of(&meta);
        if let Some(h) = self.cached(file, stamp) {
            return Ok((h, stamp));
        }
        let digest = hash_file(file)?;
        if let Ok(mut entries) = self.entries.lock() {
            entries.insert(
                file.to_owned(),
                CacheEntry {
                    size: stamp.size,
                    mtime_ns: stamp.mtime_ns,
                    sha256: digest,
                    chunks: None,
                },
            );
        }
        Ok((digest, stamp))
    }

    /// The whole-file hash and the digests of every `chunk_size`-byte chunk of `file`, with its
    /// stamp: from the cache when (size, mtime, chunk size) match, else read whole once (both
    /// digests in one pass). Blocking; call from a blocking thread.
    ///
    /// # Errors
    /// [`HashError::Io`].
    pub fn chunk_list(
        &self,
        file: &Path,
        chunk_size: u64,
    ) -> Result<(ChunkList, FileStamp), HashError> {
        let io = |source| HashError::Io {
            path: file.to_owned(),
            source,
        };
        let meta = std::fs::metadata(file).map_err(io)?;
        let stamp = FileStamp::of(&meta);
        if let Ok(entries) = self.entries.lock() {
            let hit = entries
                .get(file)
                .filter(|e| e.size == stamp.size && e.mtime_ns == stamp.mtime_ns);
            if let Some((e, c)) = hit.and_then(|e| Some((e, e.chunks.as_ref()?))) {
                if c.chunk_size == chunk_size {
                    let list = ChunkList {
                        whole: e.sha256,
                        chunks: c.digests.clone(),
                        size: e.size,
                    };
                    return Ok((list, stamp));
                }
            }
        }
        let list = chunk_list_of(std::fs::File::open(file).map_err(io)?, chunk_size).map_err(io)?;
        if list.size != stamp.size {
            return Err(io(std::io::Error::other(format!(
                "changed while hashed: {} bytes read, {} bytes at stat",
                list.size, stamp.size
            ))));
        }
        if let Ok(mut entries) = self.entries.lock() {
            entries.insert(
                file.to_owned(),
                CacheEntry {
                    size: stamp.size,
                    mtime_ns: stamp.mtime_ns,
                    sha256: list.whole,
                    chunks: Some(CachedChunks {
                        chunk_size,
                        digests: list.chunks.clone(),
                    }),
                },
            );
        }
        Ok((list, stamp))
    }

    /// Writes the cache file (to a temporary name, then renamed).
    ///
    /// # Errors
    /// [`HashError::Save`].
    pub fn save(&self) -> Result<(), HashError> {
        let save = |source| HashError::Save {
            path: self.path.clone(),
            source,
        };
        let entries = self.entries.lock().map(|e| e.clone()).unwrap_or_default();
        let bytes = serde_json::to_vec_pretty(&CacheFile { entries })
            .map_err(|e| save(std::io::Error::other(e)))?;
        let tmp = self.path.with_extension("tmp");
        std::fs::write(&tmp, bytes).map_err(save)?;
        std::fs::rename(&tmp, &self.path).map_err(save)
    }
}

/// SHA-256 of the whole file at `path`, read in 1 MiB chunks. Blocking.
///
/// # Errors
/// [`HashError::Io`].
pub fn hash_file(path: &Path) -> Result<Sha256Digest, HashError> {
    let io = |source| HashError::Io {
        path: path.to_owned(),
        source,
    };
    let mut file = std::fs::File::open(path).map_err(io)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; HASH_CHUNK];
    loop {
        let n = file.read(&mut buf).map_err(io)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(Sha256Digest(hasher.finalize().into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_survives_a_restart_and_notices_a_changed_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("kernel");
        std::fs::write(&file, b"abc").unwrap();
        let cache_path = dir.path().join("cache.json");
        let cache = HashCache::load(&cache_path);
        let (h, stamp) = cache.hash(&file).unwrap();
        assert_eq!(h, Sha256Digest::of(b"abc"));
        cache.save().unwrap();

        let reloaded = HashCache::load(&cache_path);
        assert_eq!(reloaded.cached(&file, stamp), Some(h));
        // A different size is a different file: the cached hash is not used.
        assert_eq!(reloaded.cached(&file, FileStamp { size: 4, ..stamp }), None);
        std::fs::write(&file, b"abcd").unwrap();
        let (h2, _) = reloaded.hash(&file).unwrap();
        assert_eq!(h2, Sha256Digest::of(b"abcd"));
    }

    #[test]
    fn chunk_lists_are_cached_per_chunk_size_and_redone_for_a_changed_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("rootfs");
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 253) as u8).collect();
        std::fs::write(&file, &data).unwrap();
        let cache_path = dir.path().join("cache.json");
        let cache = HashCache::load(&cache_path);
        let (list, _) = cache.chunk_list(&file, 65536).unwrap();
        let by_hand: Vec<_> = data.chunks(65536).map(Sha256Digest::of).collect();
        assert_eq!(list.chunks, by_hand);
        assert_eq!(list.whole, Sha256Digest::of(&data));
        cache.save().unwrap();
        let reloaded = HashCache::load(&cache_path);
        assert_eq!(reloaded.chunk_list(&file, 65536).unwrap().0, list);
        // Another chunk size is computed, not taken from the cache.
        let (bigger, _) = reloaded.chunk_list(&file, 1 << 17).unwrap();
        assert_eq!(bigger.chunks.len(), 2);
        std::fs::write(&file, &data[..70_000]).unwrap();
        let (shorter, _) = reloaded.chunk_list(&file, 65536).unwrap();
        assert_eq!(shorter.chunks.len(), 2);
        assert_eq!(shorter.whole, Sha256Digest::of(&data[..70_000]));
    }

    #[test]
    fn corrupt_cache_file_gives_an_empty_cache() {
        let dir = tempfile::tempdir().unwrap();
        let cache_path = dir.path().join("cache.json");
        std::fs::write(&cache_path, b"{not json").unwrap();
        let cache = HashCache::load(&cache_path);
        let stamp = FileStamp {
            size: 0,
            mtime_ns: 0,
        };
        assert_eq!(cache.cached(Path::new("/x"), stamp), None);
        assert!(matches!(
            hash_file(&dir.path().join("missing")),
            Err(HashError::Io { .. })
        ));
    }
}
