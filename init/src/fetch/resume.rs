//! Resume of a manifest-v2 download across runs and sources (issue 19 §2): beside
//! `<filename>.partial` a chunk map `<filename>.partial.chunks` records which chunks were
//! verified and written. A later fetch of the same artifact (the same hash, size and chunk
//! size) re-checks every recorded chunk against the signed list, reading it back from the
//! partial file, and keeps only those that still match; the rest are fetched again.
//!
//! The map is bytes from a disk, so it is parsed strictly ([`parse_map`], fuzz target
//! `chunk_map`) and never trusted: a chunk it names counts only after its digest matched again.
//! Map format (little-endian): `PHCHNK01` (8 bytes), the artifact's SHA-256 (32), `size_bytes`
//! (u64), `chunk_size` (u64), then one byte per chunk: 1 verified, 0 not.
//!
//! A v1 artifact (no chunk list), or a v2 one streamed from a single source, never resumes
//! this way: its partial is always started afresh.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use phase_protocol::chunks::chunk_span;
use phase_protocol::{Artifact, Sha256Digest};

use super::partial::{LocalIoError, Partial};

/// First bytes of a chunk map.
pub const MAP_MAGIC: &[u8; 8] = b"PHCHNK01";
/// Bytes before the per-chunk flags: magic, hash, size, chunk size.
pub const MAP_HEADER: usize = 8 + 32 + 8 + 8;

/// The map's flags if `bytes` is a chunk map for exactly this artifact (`hash`, `size`,
/// `chunk_size`, one flag of 0 or 1 per chunk); `None` for anything else. Pure; no I/O.
pub fn parse_map(
    bytes: &[u8],
    hash: &Sha256Digest,
    size: u64,
    chunk_size: u64,
) -> Option<Vec<bool>> {
    let chunks = usize::try_from(size.div_ceil(chunk_size.max(1))).ok()?;
    if bytes.len() != MAP_HEADER.checked_add(chunks)? || &bytes[..8] != MAP_MAGIC {
        return None;
    }
    let u64_at = |at: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&bytes[at..at + 8]);
        u64::from_le_bytes(b)
    };
    if bytes[8..40] != hash.0 || u64_at(40) != size || u64_at(48) != chunk_size {
        return None;
    }
    bytes[MAP_HEADER..]
        .iter()
        .map(|b| match b {
            0 => Some(false),
            1 => Some(true),
            _ => None,
        })
        .collect()
}

/// The header of a fresh map for this artifact, followed by `chunks` zero flags.
pub fn fresh_map(hash: &Sha256Digest, size: u64, chunk_size: u64, chunks: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(MAP_HEADER + chunks);
    out.extend_from_slice(MAP_MAGIC);
    out.extend_from_slice(&hash.0);
    out.extend_from_slice(&size.to_le_bytes());
    out.extend_from_slice(&chunk_size.to_le_bytes());
    out.resize(MAP_HEADER + chunks, 0);
    out
}

/// The open chunk map of one download; its file is removed when dropped, unless
/// [`keep_or_remove`] kept it.
#[derive(Debug)]
pub struct ChunkMap {
    path: PathBuf,
    file: File,
    keep: bool,
    /// Chunks flagged verified (re-checked ones and those marked since).
    flagged: usize,
    chunks: usize,
}

impl Drop for ChunkMap {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

impl ChunkMap {
    /// Records chunk `index` as verified and written (one `pwrite` of one byte; no fsync: a
    /// torn or lost flag only costs a re-fetch, since every flag is re-checked on resume).
    ///
    /// # Errors
    /// [`LocalIoError`] with op `write`.
    pub fn mark(&mut self, index: u64) -> Result<(), LocalIoError> {
        self.flagged += 1;
        self.file
            .write_all_at(&[1], MAP_HEADER as u64 + index)
            .map_err(|source| LocalIoError {
                op: "write",
                path: self.path.clone(),
                source,
            })
    }

    /// Clears every flag (the partial file was emptied).
    ///
    /// # Errors
    /// [`LocalIoError`] with op `write`.
    pub fn clear(&mut self) -> Result<(), LocalIoError> {
        self.flagged = 0;
        self.file
            .write_all_at(&vec![0u8; self.chunks], MAP_HEADER as u64)
            .map_err(|source| LocalIoError {
                op: "write",
                path: self.path.clone(),
                source,
            })
    }

    /// True when some chunk is flagged verified.
    pub fn any(&self) -> bool {
        self.flagged > 0
    }
}

/// After a failed fetch: a v2 partial that holds at least one verified chunk is kept, with its
/// map, for the next fetch of the same artifact; anything else is removed.
pub fn keep_or_remove(part: Partial, map: Option<ChunkMap>) {
    match map {
        Some(mut m) if m.any() => {
            m.keep = true;
            part.keep();
        }
        _ => drop(part),
    }
}

/// A partial file ready to continue: the chunks already verified (re-checked now), and the map
/// that records new ones. `map` is `None` for a v1 artifact.
#[derive(Debug)]
pub struct Resumed {
    /// The partial file (existing, or created empty).
    pub part: Partial,
    /// The chunk map (v2 only).
    pub map: Option<ChunkMap>,
    /// Per chunk: verified and in the partial file (all false for a fresh start or v1).
    pub verified: Vec<bool>,
}

impl Resumed {
    /// Bytes of the verified prefix: the chunks verified from chunk 0 on without a gap.
    pub fn prefix_bytes(&self, size: u64, chunk_size: u64) -> u64 {
        let n = self.verified.iter().take_while(|v| **v).count() as u64;
        n.saturating_mul(chunk_size).min(size)
    }
}

/// Opens `<dir>/<filename>.partial` for `artifact`: with `chunked` (a v2 artifact fetched
/// chunk by chunk), an existing partial whose map
/// matches (hash, size, chunk size) is kept and every chunk the map names is read back and
/// checked against the manifest; any other partial is started afresh with a new map. Prints
/// `fetch <name>: resuming with <n> of <m> chunks verified again from <path>` when it resumes.
///
/// # Errors
/// [`LocalIoError`] when the partial or the map cannot be created, read or written.
pub fn open(
    dir: &Path,
    name: &str,
    artifact: &Artifact,
    chunked: bool,
) -> Result<Resumed, LocalIoError> {
    let part_path = dir.join(format!("{}.partial", artifact.filename));
    let Some((chunk_size, expected)) = artifact.chunking().filter(|_| chunked) else {
        let mut part = Partial::create(part_path)?;
        // On tmpfs, full length from the start (a hole), for 2 MiB pages on a huge tmpfs; a
        // file written front to back elsewhere just grows.
        if part.on_tmpfs() {
            part.presize(artifact.size_bytes)?;
        }
        return Ok(Resumed {
            part,
            map: None,
            verified: Vec::new(),
        });
    };
    let map_path = dir.join(format!("{}.partial.chunks", artifact.filename));
    let size = artifact.size_bytes;
    let io = |op: &'static str, path: &Path| {
        let path = path.to_owned();
        move |source| LocalIoError { op, path, source }
    };
    let previous = std::fs::read(&map_path)
        .ok()
        .and_then(|b| parse_map(&b, &artifact.hash, size, chunk_size))
        .filter(|flags| flags.iter().any(|f| *f));
    let same_size = std::fs::metadata(&part_path)
        .map(|m| m.len() == size)
        .unwrap_or(false);
    if let (Some(flags), true) = (previous, same_size) {
        let mut part = Partial::open_existing(part_path.clone())?;
        // Already `size` bytes long; kept so across a restart.
        part.presize(size)?;
        let mut verified = vec![false; flags.len()];
        let mut buf = Vec::new();
        for (i, flag) in flags.iter().enumerate() {
            let Some((offset, len)) = chunk_span(size, chunk_size, i as u64).filter(|_| *flag)
            else {
                continue;
            };
            buf.resize(len as usize, 0);
            part.read_exact_at(offset, &mut buf)?;
            verified[i] = expected.get(i) == Some(&Sha256Digest::of(&buf));
        }
        // The map is written afresh with only what matched again.
        let mut bytes = fresh_map(&artifact.hash, size, chunk_size, flags.len());
        for (i, v) in verified.iter().enumerate() {
            bytes[MAP_HEADER + i] = u8::from(*v);
        }
        let file = write_map(&map_path, &bytes).map_err(io("write", &map_path))?;
        let kept = verified.iter().filter(|v| **v).count();
        crate::log::line(&format!(
            "fetch {name}: resuming with {kept} of {} chunks verified again from {}",
            verified.len(),
            part_path.display()
        ));
        let chunks = verified.len();
        return Ok(Resumed {
            part,
            map: Some(ChunkMap {
                path: map_path,
                file,
                keep: false,
                flagged: kept,
                chunks,
            }),
            verified,
        });
    }
    let mut part = Partial::create(part_path)?;
    // Full length from the start (a sparse file): a kept partial is recognised by its size,
    // and a huge tmpfs backs it with 2 MiB pages.
    part.presize(size)?;
    let chunks = expected.len();
    let file = write_map(
        &map_path,
        &fresh_map(&artifact.hash, size, chunk_size, chunks),
    )
    .map_err(io("create", &map_path))?;
    Ok(Resumed {
        part,
        map: Some(ChunkMap {
            path: map_path,
            file,
            keep: false,
            flagged: 0,
            chunks,
        }),
        verified: vec![false; chunks],
    })
}

fn write_map(path: &Path, bytes: &[u8]) -> std::io::Result<File> {
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)?;
    f.write_all(bytes)?;
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h() -> Sha256Digest {
        Sha256Digest::of(b"artifact")
    }

    #[test]
    fn a_map_parses_only_for_its_own_artifact() {
        let mut m = fresh_map(&h(), 150, 64, 3);
        m[MAP_HEADER + 1] = 1;
        assert_eq!(parse_map(&m, &h(), 150, 64), Some(vec![false, true, false]));
        assert_eq!(parse_map(&m, &Sha256Digest::of(b"other"), 150, 64), None);
        assert_eq!(parse_map(&m, &h(), 151, 64), None);
        assert_eq!(parse_map(&m, &h(), 150, 128), None);
        assert_eq!(parse_map(&m[..m.len() - 1], &h(), 150, 64), None);
        let mut bad = m.clone();
        bad[MAP_HEADER] = 2;
        assert_eq!(parse_map(&bad, &h(), 150, 64), None);
        let mut bad = m.clone();
        bad[0] = b'X';
        assert_eq!(parse_map(&bad, &h(), 150, 64), None);
        assert_eq!(parse_map(&[], &h(), 150, 64), None);
        assert_eq!(parse_map(&m, &h(), u64::MAX, 1), None);
    }

    /// Issue 18 §4: a chunked partial always starts at its full length (a hole: a kept one is
    /// recognised by its size); one written front to back does only on a tmpfs, where the boot
    /// stage's `huge=within_size` backs it with 2 MiB pages (`Partial::presize`), and grows
    /// elsewhere (on vfat a presized file is written twice).
    #[test]
    fn a_fresh_partial_starts_at_the_artifact_size_when_chunked_or_on_tmpfs() {
        let data = vec![7u8; 150];
        let v1 = Artifact {
            filename: "rootfs".into(),
            size_bytes: 150,
            hash: Sha256Digest::of(&data),
            download_url: None,
            urls: Vec::new(),
            chunk_size: None,
            chunks: None,
            extra: Default::default(),
        };
        let v2 = Artifact {
            filename: "kernel".into(),
            chunk_size: Some(64),
            chunks: Some(data.chunks(64).map(Sha256Digest::of).collect()),
            ..v1.clone()
        };
        // /dev/shm is a tmpfs and /tmp a disk on the machines `make test` runs on.
        let dirs = [tempfile::tempdir_in("/dev/shm"), tempfile::tempdir()];
        let mut kinds = Vec::new();
        for dir in dirs.iter().flatten() {
            let tmpfs = super::super::partial::on_tmpfs(&File::open(dir.path()).unwrap());
            kinds.push(tmpfs);
            for (artifact, chunked) in [(&v1, false), (&v2, true), (&v2, false)] {
                let r = open(dir.path(), "t", artifact, chunked).unwrap();
                let len = std::fs::metadata(r.part.path()).unwrap().len();
                let want = if chunked || tmpfs { 150 } else { 0 };
                assert_eq!(
                    len,
                    want,
                    "{:?} chunked={chunked} tmpfs={tmpfs}",
                    r.part.path()
                );
            }
        }
        if kinds != [true, false] {
            eprintln!("note: tmpfs/disk test dirs were {kinds:?}, not [true, false]");
        }
    }
}
