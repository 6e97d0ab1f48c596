//! The response write timeout of `plasmd serve` (issue 15 §7): a client that stops reading is
//! dropped after a bounded time without progress.
//!
//! A client that sends a request and never reads the answer keeps its TCP receive window
//! full; the kernel then stops taking bytes from us and, without this guard, the connection
//! (its task, buffers, file handle and a connection slot) would live forever. The guard sits
//! on the socket itself, below TLS and below hyper, so it covers everything written on the
//! connection (response head, body, TLS records and close-notify) with one rule, instead of a
//! body wrapper that would see neither the head nor hyper's own buffer.
//!
//! [`WriteTimeout`] wraps the socket. When a write is refused (`Pending`: the kernel's send
//! buffer is full) a timer starts; every write the kernel accepts (at least one byte) stops
//! it. If the timer reaches the limit while a write is still refused, the write fails with
//! [`std::io::ErrorKind::TimedOut`] carrying [`WriteStalled`]; hyper then ends the connection
//! and `server` logs it. A reader that is slow but steady opens its window again and again, so
//! each stall is short and it is never dropped, however long the whole download takes.
//! Reads are not timed here: an idle keep-alive connection has nothing to write.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// The error inside the [`io::ErrorKind::TimedOut`] that a stalled write returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("no byte could be written for {} ms: the client stopped reading (write timeout)", .after.as_millis())]
pub struct WriteStalled {
    /// How long writes were refused (the configured limit).
    pub after: Duration,
}

impl WriteStalled {
    /// Finds a [`WriteStalled`] in `err` or its `source()` chain (hyper wraps the I/O error of
    /// a failed write in its own error).
    pub fn find(err: &(dyn std::error::Error + 'static)) -> Option<WriteStalled> {
        let mut cur = Some(err);
        while let Some(e) = cur {
            if let Some(s) = e.downcast_ref::<WriteStalled>() {
                return Some(*s);
            }
            if let Some(s) = e
                .downcast_ref::<io::Error>()
                .and_then(|io| io.get_ref())
                .and_then(|inner| inner.downcast_ref::<WriteStalled>())
            {
                return Some(*s);
            }
            cur = e.source();
        }
        None
    }
}

/// A socket whose writes fail with [`WriteStalled`] once they have made no progress for
/// `limit` (see the module docs). Reads pass through unchanged.
#[derive(Debug)]
pub struct WriteTimeout<I> {
    inner: I,
    limit: Duration,
    stall: Pin<Box<Sleep>>,
    /// True while a write is refused and `stall` runs.
    armed: bool,
}

impl<I> WriteTimeout<I> {
    /// Wraps `inner`; `limit` is the longest time writes may be refused in a row. Needs a
    /// Tokio runtime with the time driver.
    pub fn new(inner: I, limit: Duration) -> Self {
        WriteTimeout {
            inner,
            limit,
            stall: Box::pin(tokio::time::sleep(limit)),
            armed: false,
        }
    }

    /// The wrapped socket.
    pub fn get_ref(&self) -> &I {
        &self.inner
    }

    /// Runs the stall timer around one write-side poll: `progressed` tells whether a ready
    /// result means the kernel took bytes.
    fn timed<T>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<T>>,
        progressed: impl FnOnce(&T) -> bool,
    ) -> Poll<io::Result<T>> {
        match polled {
            Poll::Ready(Ok(v)) => {
                if progressed(&v) {
                    self.armed = false;
                }
                Poll::Ready(Ok(v))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                if !self.armed {
                    self.armed = true;
                    self.stall.as_mut().reset(Instant::now() + self.limit);
                }
                // Registers the waker with the timer too, so the task wakes at the deadline.
                match self.stall.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        WriteStalled { after: self.limit },
                    ))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for WriteTimeout<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for WriteTimeout<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.timed(cx, polled, |n| *n > 0)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.timed(cx, polled, |n| *n > 0)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    // A finished flush or shutdown is not counted as progress: only bytes the kernel takes
    // are, so a caller that flushes between refused writes cannot keep the timer from firing.
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.inner).poll_flush(cx);
        self.timed(cx, polled, |()| false)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.timed(cx, polled, |()| false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const LIMIT: Duration = Duration::from_millis(200);

    #[tokio::test]
    async fn writer_to_a_peer_that_never_reads_fails_after_the_limit() {
        // A 4 KiB pipe the peer never drains: writes stall once it is full.
        let (ours, _peer) = tokio::io::duplex(4096);
        let mut w = WriteTimeout::new(ours, LIMIT);
        let started = std::time::Instant::now();
        let err = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                if let Err(e) = w.write_all(&[0u8; 1024]).await {
                    return e;
                }
            }
        })
        .await
        .expect("write never timed out");
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert_eq!(
            WriteStalled::find(&err),
            Some(WriteStalled { after: LIMIT })
        );
        assert!(started.elapsed() >= LIMIT, "{:?}", started.elapsed());
    }

    #[tokio::test]
    async fn writer_to_a_slow_steady_reader_is_never_cut() {
        // Positive control: the peer reads 1 KiB every 20 ms (10x under the limit), so the
        // whole transfer takes about 0.6 s, three times the limit, and must still succeed.
        let (ours, mut peer) = tokio::io::duplex(4096);
        let mut w = WriteTimeout::new(ours, LIMIT);
        let total = 32 * 1024;
        let reader = tokio::spawn(async move {
            let mut got = 0;
            let mut buf = [0u8; 1024];
            while got < total {
                let n = peer.read(&mut buf).await.unwrap();
                assert!(n > 0, "pipe closed after {got} bytes");
                got += n;
                // The reader's pace, not a wait for a condition.
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            got
        });
        let data = vec![7u8; total];
        w.write_all(&data).await.expect("slow reader was cut");
        assert_eq!(reader.await.unwrap(), total);
    }

    #[test]
    fn stall_is_found_through_wrapping_errors() {
        #[derive(Debug, thiserror::Error)]
        #[error("connection error")]
        struct Outer(#[source] io::Error);
        let io = io::Error::new(io::ErrorKind::TimedOut, WriteStalled { after: LIMIT });
        assert_eq!(
            WriteStalled::find(&Outer(io)),
            Some(WriteStalled { after: LIMIT })
        );
        let other = io::Error::new(io::ErrorKind::TimedOut, "header read timeout");
        assert_eq!(WriteStalled::find(&Outer(other)), None);
    }
}
