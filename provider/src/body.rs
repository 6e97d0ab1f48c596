//! Streaming an artifact (or a byte range of it) into a response body (issue 3 "Must have" 6).
//!
//! tower-http's `ServeFile` reads 64 KiB per trip through the blocking pool and reaches about
//! half of nginx's throughput. Here each trip reads one large chunk with `pread`
//! (`FileExt::read_at`) on a blocking thread. The chunk size follows a memory budget shared by
//! all downloads: [`READ_BUDGET_BYTES`] / (2 × active downloads), clamped to
//! [[`MIN_CHUNK`], [`MAX_CHUNK`]]. One or two downloads get 2 MiB reads; 64 concurrent downloads
//! get 64 KiB reads, so about two chunks per download (one being read, one being written) stay
//! within 8 MiB, for the RSS target of seed 001 / issue 3 (< 32 MB with 64 downloads).

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use axum::body::Body;
use bytes::{Bytes, BytesMut};

use crate::metrics::{GaugeGuard, Metrics};

/// Bytes of read buffers shared by all downloads (8 MiB).
pub const READ_BUDGET_BYTES: u64 = 8 << 20;
/// Smallest read per trip to the blocking pool (64 KiB).
pub const MIN_CHUNK: u64 = 64 << 10;
/// Largest read per trip to the blocking pool (2 MiB).
pub const MAX_CHUNK: u64 = 2 << 20;

/// Read size for the next chunk when `active` downloads run.
pub fn chunk_size(active: u64) -> u64 {
    (READ_BUDGET_BYTES / (2 * active.max(1))).clamp(MIN_CHUNK, MAX_CHUNK)
}

struct Reader {
    file: Arc<File>,
    pos: u64,
    remaining: u64,
    artifact: String,
    metrics: Arc<Metrics>,
    _guard: GaugeGuard,
}

/// A body that sends `len` bytes of `file` from offset `start`, counting them for `artifact`
/// in `metrics`. A file that shrinks while being sent ends the body with an I/O error, so the
/// client sees a truncated response rather than wrong bytes.
pub fn file_body(
    file: File,
    start: u64,
    len: u64,
    artifact: String,
    metrics: Arc<Metrics>,
) -> Body {
    let guard = metrics.download(&artifact);
    let reader = Reader {
        file: Arc::new(file),
        pos: start,
        remaining: len,
        artifact,
        metrics,
        _guard: guard,
    };
    let stream = futures::stream::try_unfold(reader, |mut r| async move {
        if r.remaining == 0 {
            return Ok(None);
        }
        let want = chunk_size(r.metrics.active_downloads()).min(r.remaining);
        let (file, pos) = (Arc::clone(&r.file), r.pos);
        let chunk = tokio::task::spawn_blocking(move || read_chunk(&file, pos, want))
            .await
            .map_err(std::io::Error::other)??;
        let n = chunk.len() as u64;
        r.pos += n;
        r.remaining -= n;
        r.metrics.sent(&r.artifact, n);
        Ok::<_, std::io::Error>(Some((chunk, r)))
    });
    Body::from_stream(stream)
}

/// Reads exactly `want` bytes at `pos` (fewer only at an early EOF, which is an error).
fn read_chunk(file: &File, pos: u64, want: u64) -> std::io::Result<Bytes> {
    let want = usize::try_from(want).map_err(std::io::Error::other)?;
    let mut buf = BytesMut::zeroed(want);
    let mut filled = 0;
    while filled < want {
        let n = file.read_at(&mut buf[filled..], pos + filled as u64)?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!(
                    "file shrank: {} bytes short at offset {}",
                    want - filled,
                    pos + filled as u64
                ),
            ));
        }
        filled += n;
    }
    Ok(buf.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[test]
    fn chunk_size_shrinks_with_concurrency_within_bounds() {
        assert_eq!(chunk_size(0), MAX_CHUNK);
        assert_eq!(chunk_size(1), MAX_CHUNK);
        assert_eq!(chunk_size(64), MIN_CHUNK);
        assert_eq!(chunk_size(10_000), MIN_CHUNK);
        assert!(chunk_size(16) < MAX_CHUNK);
    }

    #[tokio::test]
    async fn body_sends_exactly_the_range_and_counts_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let data: Vec<u8> = (0..5_000_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &data).unwrap();
        let metrics = Arc::new(Metrics::default());
        let body = file_body(
            File::open(&path).unwrap(),
            7,
            4_000_000,
            "a".into(),
            Arc::clone(&metrics),
        );
        let got = body.collect().await.unwrap().to_bytes();
        assert_eq!(&got[..], &data[7..4_000_007]);
        assert_eq!(metrics.snapshot().artifacts["a"].bytes, 4_000_000);
        assert_eq!(metrics.active_downloads(), 0);
    }

    #[tokio::test]
    async fn file_shorter_than_promised_ends_in_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"short").unwrap();
        let metrics = Arc::new(Metrics::default());
        let body = file_body(File::open(&path).unwrap(), 0, 100, "a".into(), metrics);
        assert!(body.collect().await.is_err());
    }
}
