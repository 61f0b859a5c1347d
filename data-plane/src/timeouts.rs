//! Client connection timeouts that hyper does not provide: a bound on a stalled write (a client
//! that stops reading) and idle tracking (no request in flight) for keep-alive connections.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// Fails a write (or flush) that makes no progress for `timeout`, so a client that stops reading
/// cannot hold a connection and its buffers forever. Progress re-arms the bound: a long, slowly
/// read stream is fine.
pub struct WriteStallBound<T> {
    inner: T,
    timeout: Option<Duration>,
    /// Allocated on the first stall only; reused after.
    timer: Option<Pin<Box<Sleep>>>,
    armed: bool,
}

impl<T> WriteStallBound<T> {
    pub fn new(inner: T, timeout: Option<Duration>) -> Self {
        WriteStallBound {
            inner,
            timeout,
            timer: None,
            armed: false,
        }
    }

    /// Called when the inner write is pending: starts the bound, or fails once it has passed.
    fn stalled<R>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<R>> {
        let Some(timeout) = self.timeout else {
            return Poll::Pending;
        };
        if !self.armed {
            let deadline = Instant::now() + timeout;
            match &mut self.timer {
                Some(timer) => timer.as_mut().reset(deadline),
                None => self.timer = Some(Box::pin(tokio::time::sleep_until(deadline))),
            }
            self.armed = true;
        }
        let expired = self
            .timer
            .as_mut()
            .is_some_and(|timer| timer.as_mut().poll(cx).is_ready());
        if expired {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "client stopped reading (write timeout)",
            )));
        }
        Poll::Pending
    }

    fn progressed<R>(&mut self, result: io::Result<R>) -> Poll<io::Result<R>> {
        self.armed = false;
        Poll::Ready(result)
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for WriteStallBound<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for WriteStallBound<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.inner).poll_write(cx, buf) {
            Poll::Pending => self.stalled(cx),
            Poll::Ready(r) => self.progressed(r),
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.inner).poll_write_vectored(cx, bufs) {
            Poll::Pending => self.stalled(cx),
            Poll::Ready(r) => self.progressed(r),
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match Pin::new(&mut self.inner).poll_flush(cx) {
            Poll::Pending => self.stalled(cx),
            Poll::Ready(r) => self.progressed(r),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match Pin::new(&mut self.inner).poll_shutdown(cx) {
            Poll::Pending => self.stalled(cx),
            Poll::Ready(r) => self.progressed(r),
        }
    }
}

/// Requests in flight on one connection and since when it has had none.
pub struct Activity {
    start: Instant,
    in_flight: AtomicUsize,
    /// Nanoseconds after `start` when the last request finished.
    idle_since: AtomicU64,
}

impl Default for Activity {
    fn default() -> Self {
        Activity {
            start: Instant::now(),
            in_flight: AtomicUsize::new(0),
            idle_since: AtomicU64::new(0),
        }
    }
}

/// Marks a request in flight until dropped.
pub struct InFlight(Arc<Activity>);

impl Activity {
    pub fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(self.clone())
    }

    /// When the connection will have been idle for `idle`, if nothing starts meanwhile; while
    /// requests are in flight, a time to look again.
    pub fn idle_deadline(&self, idle: Duration) -> Instant {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return Instant::now() + idle;
        }
        self.start + Duration::from_nanos(self.idle_since.load(Ordering::Acquire)) + idle
    }

    /// Whether no request has been in flight for at least `idle`.
    pub fn is_idle(&self, idle: Duration) -> bool {
        self.is_idle_at(idle, Instant::now())
    }

    fn is_idle_at(&self, idle: Duration, now: Instant) -> bool {
        self.in_flight.load(Ordering::Acquire) == 0 && self.idle_deadline(idle) <= now
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let nanos = u64::try_from(self.0.start.elapsed().as_nanos()).unwrap_or(u64::MAX);
        // Store before decrementing so a watcher that sees zero sees the new time.
        self.0.idle_since.fetch_max(nanos, Ordering::AcqRel);
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn a_write_stalled_past_the_bound_fails() {
        let (client, server) = tokio::io::duplex(64);
        let bound = Duration::from_millis(300);
        let mut io = WriteStallBound::new(server, Some(bound));
        // The peer never reads: the buffer fills, then the write stalls.
        let started = Instant::now();
        let error = loop {
            if let Err(e) = io.write(&[0u8; 32]).await {
                break e;
            }
        };
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() >= bound);
        drop(client);
    }

    #[tokio::test]
    async fn progress_rearms_the_bound() {
        let (mut client, server) = tokio::io::duplex(64);
        let mut io = WriteStallBound::new(server, Some(Duration::from_secs(2)));
        io.write_all(&[1u8; 64]).await.unwrap();
        // Two stalls of 1.2s each: longer than the bound together, each shorter alone.
        let reader = tokio::spawn(async move {
            let mut buf = [0u8; 64];
            for _ in 0..2 {
                tokio::time::sleep(Duration::from_millis(1200)).await;
                client.read_exact(&mut buf).await.unwrap();
            }
            client
        });
        io.write_all(&[2u8; 64]).await.unwrap();
        io.write_all(&[3u8; 64]).await.unwrap();
        let _client = reader.await.unwrap();
    }

    #[tokio::test]
    async fn no_bound_never_fails() {
        let (_client, server) = tokio::io::duplex(8);
        let mut io = WriteStallBound::new(server, None);
        io.write_all(&[0u8; 8]).await.unwrap();
        let stalled = tokio::time::timeout(Duration::from_millis(300), io.write(&[0u8; 8])).await;
        assert!(stalled.is_err(), "still pending, not failed");
    }

    #[test]
    fn idle_tracking() {
        let activity = Arc::new(Activity::default());
        let idle = Duration::from_secs(10);
        let later = |d: u64| Instant::now() + Duration::from_secs(d);
        assert!(!activity.is_idle_at(idle, Instant::now()));
        assert!(activity.is_idle_at(idle, later(10)), "no request yet");
        let a = activity.begin();
        let b = activity.begin();
        assert!(!activity.is_idle_at(idle, later(60)), "requests in flight");
        drop(a);
        assert!(!activity.is_idle_at(idle, later(60)), "one still in flight");
        drop(b);
        assert!(!activity.is_idle_at(idle, later(9)), "just finished");
        assert!(activity.is_idle_at(idle, later(11)));
    }
}
