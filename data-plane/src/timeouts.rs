//! Client connection timeouts, per connection: the HTTP/1 request-head bound (slowloris), a
//! bound on a stalled write (a client that stops reading) and idle tracking (no request in
//! flight). The head bound starts at the first byte of a request, not when a kept-alive
//! connection begins to wait for its next one (that wait is the idle timeout's), as Go's
//! net/http does.

use bytes::Bytes;
use futures::task::AtomicWaker;
use http_body::{Body, Frame, SizeHint};
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// What a connection speaks, as far as the head bound cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// Not known yet: decided by the first bytes (the HTTP/2 preface or not).
    Sniff,
    Http1,
    /// HTTP/2 frames (pings, settings) arrive without requests: no head bound.
    Http2,
}

/// A lazily allocated, reusable deadline.
#[derive(Default)]
struct Deadline {
    timer: Option<Pin<Box<Sleep>>>,
    /// The armed deadline. The timer may be set earlier: deadlines move later request after
    /// request, so it is moved on when it fires rather than re-registered each time.
    at: Option<Instant>,
}

impl Deadline {
    fn arm(&mut self, after: Duration) {
        self.arm_at(Instant::now() + after);
    }

    fn arm_at(&mut self, at: Instant) {
        match &mut self.timer {
            Some(timer) if timer.deadline() <= at => {}
            Some(timer) => timer.as_mut().reset(at),
            None => self.timer = Some(Box::pin(tokio::time::sleep_until(at))),
        }
        self.at = Some(at);
    }

    fn disarm(&mut self) {
        self.at = None;
    }

    fn is_armed(&self) -> bool {
        self.at.is_some()
    }

    /// Whether the armed deadline has passed (registering for a wake-up if not).
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        let (Some(at), Some(timer)) = (self.at, &mut self.timer) else {
            return false;
        };
        if timer.as_mut().poll(cx).is_pending() {
            return false;
        }
        if timer.deadline() >= at {
            return true;
        }
        // It fired at an earlier deadline: on to the armed one.
        timer.as_mut().reset(at);
        timer.as_mut().poll(cx).is_ready()
    }
}

/// The client side of a connection (above TLS), enforcing the head and write bounds.
pub struct ClientIo<T> {
    inner: T,
    activity: Arc<Activity>,
    protocol: Protocol,
    /// Bytes of the preface matched so far while sniffing.
    sniffed: usize,
    head_timeout: Option<Duration>,
    head: Deadline,
    /// `Activity::started` when the head bound was armed: a new request ends it.
    head_of: u64,
    /// Bound on an HTTP/1 request body waiting for bytes (the read timeout too).
    body: Deadline,
    write_timeout: Option<Duration>,
    write: Deadline,
}

impl<T> ClientIo<T> {
    pub fn new(
        inner: T,
        activity: Arc<Activity>,
        protocol: Protocol,
        head_timeout: Option<Duration>,
        write_timeout: Option<Duration>,
    ) -> Self {
        ClientIo {
            inner,
            activity,
            protocol,
            sniffed: 0,
            head_timeout,
            head: Deadline::default(),
            head_of: 0,
            body: Deadline::default(),
            write_timeout,
            write: Deadline::default(),
        }
    }

    pub fn get_ref(&self) -> &T {
        &self.inner
    }

    fn sniff(&mut self, data: &[u8]) {
        let want = &H2_PREFACE[self.sniffed..];
        let n = want.len().min(data.len());
        if data[..n] != want[..n] {
            self.protocol = Protocol::Http1;
        } else if n == want.len() {
            self.protocol = Protocol::Http2;
        } else {
            self.sniffed += n;
        }
    }

    /// Bytes arrived: with no request in flight they start a request head, which must be
    /// complete (the request begun) within the head timeout.
    fn on_read(&mut self, data: &[u8]) {
        self.body.disarm();
        if self.protocol == Protocol::Sniff {
            self.sniff(data);
        }
        let Some(timeout) = self.head_timeout else {
            return;
        };
        if self.protocol == Protocol::Http2 || self.activity.upgraded.load(Ordering::Acquire) {
            self.head.disarm();
            return;
        }
        let started = self.activity.started();
        if self.head.is_armed() && started != self.head_of {
            self.head.disarm();
        }
        if !self.head.is_armed() && self.activity.in_flight() == 0 {
            self.head.arm(timeout);
            self.head_of = started;
        }
    }

    /// A read is pending: whether an unfinished head, or a body that waits for bytes, has
    /// outlived its bound.
    fn read_expired(&mut self, cx: &mut Context<'_>) -> Option<&'static str> {
        if self.head.is_armed() && self.activity.started() != self.head_of {
            self.head.disarm();
        }
        if self.head.expired(cx) {
            return Some("request head not received in time (read timeout)");
        }
        let timeout = self.head_timeout?;
        self.activity.reader.register(cx.waker());
        if self.activity.bodies_waiting.load(Ordering::Acquire) == 0 {
            self.body.disarm();
            return None;
        }
        if !self.body.is_armed() {
            self.body.arm(timeout);
        }
        self.body
            .expired(cx)
            .then_some("request body stalled (read timeout)")
    }

    /// Called when the inner write is pending: starts the bound, or fails once it has passed.
    fn write_stalled<R>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<R>> {
        let Some(timeout) = self.write_timeout else {
            return Poll::Pending;
        };
        if !self.write.is_armed() {
            self.write.arm(timeout);
        }
        if self.write.expired(cx) {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "client stopped reading (write timeout)",
            )));
        }
        Poll::Pending
    }

    fn wrote<R>(&mut self, result: io::Result<R>) -> Poll<io::Result<R>> {
        self.write.disarm();
        Poll::Ready(result)
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for ClientIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let data = &buf.filled()[before..];
                if !data.is_empty() {
                    self.on_read(data);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending => match self.read_expired(cx) {
                Some(reason) => Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, reason))),
                None => Poll::Pending,
            },
            other => other,
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for ClientIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.inner).poll_write(cx, buf) {
            Poll::Pending => self.write_stalled(cx),
            Poll::Ready(r) => self.wrote(r),
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.inner).poll_write_vectored(cx, bufs) {
            Poll::Pending => self.write_stalled(cx),
            Poll::Ready(r) => self.wrote(r),
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match Pin::new(&mut self.inner).poll_flush(cx) {
            Poll::Pending => self.write_stalled(cx),
            Poll::Ready(r) => self.wrote(r),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match Pin::new(&mut self.inner).poll_shutdown(cx) {
            Poll::Pending => self.write_stalled(cx),
            Poll::Ready(r) => self.wrote(r),
        }
    }
}

/// How a request body's waits for client bytes are bounded (the read timeout).
pub enum BodyBound {
    /// Not bounded (read timeout off, or nothing to read).
    None,
    /// HTTP/1: the connection's reader fails the read (and the connection) once the body has
    /// waited too long, so a body only reports that it waits.
    Connection(Arc<Activity>),
    /// HTTP/2: a stalled stream must not end its connection's other streams, so the body keeps
    /// its own timer and signals the stream's end through `BodyStall`.
    Stream {
        timeout: Duration,
        stall: Arc<BodyStall>,
    },
}

/// Set once an HTTP/2 request body has waited for client bytes past the read timeout: the
/// request is then answered with 408 or, when its response has begun, the stream is reset.
pub struct BodyStall {
    stalled: AtomicBool,
    waker: AtomicWaker,
    created: Instant,
    /// Nanoseconds after `created` of the last response frame (0: none yet). A stream whose
    /// response flows is not stalled (a gRPC bidirectional stream may leave its request side
    /// quiet for long), as with Envoy's stream idle timeout.
    responded: AtomicU64,
}

impl Default for BodyStall {
    fn default() -> Self {
        BodyStall {
            stalled: AtomicBool::new(false),
            waker: AtomicWaker::new(),
            created: Instant::now(),
            responded: AtomicU64::new(0),
        }
    }
}

impl BodyStall {
    fn fire(&self) {
        self.stalled.store(true, Ordering::Release);
        self.waker.wake();
    }

    fn record_response(&self) {
        let nanos = u64::try_from(self.created.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.responded.fetch_max(nanos.max(1), Ordering::AcqRel);
    }

    /// When the last response frame went out, if any did.
    fn last_response(&self) -> Option<Instant> {
        match self.responded.load(Ordering::Acquire) {
            0 => None,
            nanos => Some(self.created + Duration::from_nanos(nanos)),
        }
    }

    pub fn is_stalled(&self) -> bool {
        self.stalled.load(Ordering::Acquire)
    }

    /// Whether the body stalled; registers `cx` to be woken when it does.
    pub fn poll_stalled(&self, cx: &mut Context<'_>) -> bool {
        if self.stalled.load(Ordering::Acquire) {
            return true;
        }
        self.waker.register(cx.waker());
        self.stalled.load(Ordering::Acquire)
    }

    /// Resolves once the body stalled.
    pub async fn stalled(&self) {
        std::future::poll_fn(|cx| {
            if self.poll_stalled(cx) {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await
    }
}

/// The reason a stalled request body gives (logs, the 408 body, the stream reset).
pub const BODY_STALLED: &str = "request body stalled (read timeout)";

/// A request body bounded by the read timeout while it waits for client bytes, while a slow
/// upstream (which simply does not poll it) never is. HTTP/1 tells its connection's stream, which
/// fails the body's own read (`server::http1` bodies read the stream themselves); HTTP/2 times
/// each stream itself.
pub struct WaitingBody<B> {
    inner: B,
    bound: BodyBound,
    waiting: bool,
    /// HTTP/2: the armed bound of the current wait.
    deadline: Deadline,
}

impl<B> WaitingBody<B> {
    pub fn new(inner: B, bound: BodyBound) -> Self {
        WaitingBody {
            inner,
            bound,
            waiting: false,
            deadline: Deadline::default(),
        }
    }

    fn set_waiting(&mut self, waiting: bool) {
        if self.waiting == waiting {
            return;
        }
        self.waiting = waiting;
        match &self.bound {
            BodyBound::None => {}
            BodyBound::Connection(activity) => {
                if waiting {
                    activity.bodies_waiting.fetch_add(1, Ordering::AcqRel);
                    activity.reader.wake();
                } else {
                    activity.bodies_waiting.fetch_sub(1, Ordering::AcqRel);
                }
            }
            BodyBound::Stream { timeout, .. } => {
                if waiting {
                    self.deadline.arm(*timeout);
                } else {
                    self.deadline.disarm();
                }
            }
        }
    }
}

impl<B> WaitingBody<B> {
    /// An HTTP/2 wait outlived the bound: the stream stalled unless its response moved on
    /// within the bound. A stalled stream ends from the service side (408 or reset); until then
    /// this body stays pending rather than reporting a truncated upload as complete.
    fn stream_wait_expired(&mut self, cx: &mut Context<'_>) {
        let BodyBound::Stream { timeout, stall } = &self.bound else {
            return;
        };
        match stall.last_response().map(|at| at + *timeout) {
            Some(until) if until > Instant::now() => {
                self.deadline.arm_at(until);
                // Registers the timer for the new deadline.
                if self.deadline.expired(cx) {
                    stall.fire();
                }
            }
            _ => stall.fire(),
        }
    }
}

impl<B> Drop for WaitingBody<B> {
    fn drop(&mut self) {
        self.set_waiting(false);
    }
}

impl<B> Body for WaitingBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = Bytes;
    /// Boxed: the proxy takes HTTP/1 (our own) and HTTP/2 (hyper's) bodies alike.
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx).map_err(Into::into);
        self.set_waiting(polled.is_pending());
        if polled.is_pending() && self.deadline.expired(cx) {
            self.stream_wait_expired(cx);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Requests in flight on one connection and since when it has had none.
pub struct Activity {
    start: Instant,
    in_flight: AtomicUsize,
    /// Requests begun so far.
    started: AtomicU64,
    /// Nanoseconds after `start` when the last request finished.
    idle_since: AtomicU64,
    /// HTTP/1 request bodies waiting for bytes from the client.
    bodies_waiting: AtomicUsize,
    /// The connection became a tunnel (101): its bytes are no longer requests.
    upgraded: AtomicBool,
    /// The connection's reader, woken when a body starts waiting so it arms the body bound.
    reader: AtomicWaker,
}

impl Default for Activity {
    fn default() -> Self {
        Activity {
            start: Instant::now(),
            in_flight: AtomicUsize::new(0),
            started: AtomicU64::new(0),
            idle_since: AtomicU64::new(0),
            bodies_waiting: AtomicUsize::new(0),
            upgraded: AtomicBool::new(false),
            reader: AtomicWaker::new(),
        }
    }
}

/// Marks a request in flight until dropped.
pub struct InFlight(Arc<Activity>);

impl Activity {
    pub fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.started.fetch_add(1, Ordering::AcqRel);
        InFlight(self.clone())
    }

    fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    fn started(&self) -> u64 {
        self.started.load(Ordering::Acquire)
    }

    /// When the connection will have been idle for `idle`, if nothing starts meanwhile; while
    /// requests are in flight, a time to look again.
    pub fn idle_deadline(&self, idle: Duration) -> Instant {
        if self.in_flight() > 0 {
            return Instant::now() + idle;
        }
        self.start + Duration::from_nanos(self.idle_since.load(Ordering::Acquire)) + idle
    }

    /// Whether no request has been in flight for at least `idle`.
    pub fn is_idle(&self, idle: Duration) -> bool {
        self.is_idle_at(idle, Instant::now())
    }

    fn is_idle_at(&self, idle: Duration, now: Instant) -> bool {
        self.in_flight() == 0 && self.idle_deadline(idle) <= now
    }
}

/// A response body that keeps its request in flight until it is finished or dropped, so a
/// long stream (SSE, gRPC) counts as activity for the idle timeout. When its HTTP/2 request
/// body stalls, it fails, so hyper resets the stream (the connection's other streams go on).
pub struct InFlightBody<B> {
    inner: B,
    _in_flight: InFlight,
    stall: Option<Arc<BodyStall>>,
}

impl<B> InFlightBody<B> {
    pub fn new(inner: B, in_flight: InFlight, stall: Option<Arc<BodyStall>>) -> Self {
        InFlightBody {
            inner,
            _in_flight: in_flight,
            stall,
        }
    }
}

impl<B> Body for InFlightBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        let Some(stall) = &this.stall else {
            return Pin::new(&mut this.inner).poll_frame(cx).map_err(Into::into);
        };
        if stall.poll_stalled(cx) {
            return Poll::Ready(Some(Err(BODY_STALLED.into())));
        }
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(_))) = &polled {
            stall.record_response();
        }
        polled.map_err(Into::into)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl InFlight {
    /// Called before this request's `101 Switching Protocols` answer is written: from then on
    /// the connection carries a tunnel, which only the write bound applies to.
    pub fn upgrade(&self) {
        self.0.upgraded.store(true, Ordering::Release);
    }
}

/// Keeps its connection active (never idle-closed) while held: the HTTP/2 listener attaches one
/// to each extended CONNECT (RFC 8441), and the tunnel that stream becomes holds it until it
/// closes, as an upgraded HTTP/1.1 connection is never idle-closed either. Clone, as request
/// extensions are; the last clone ends it.
#[derive(Clone)]
pub struct TunnelActivity {
    _in_flight: Arc<InFlight>,
}

impl TunnelActivity {
    pub fn new(in_flight: InFlight) -> Self {
        TunnelActivity {
            _in_flight: Arc::new(in_flight),
        }
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

    fn writer<T>(io: T, write_timeout: Option<Duration>) -> ClientIo<T> {
        let activity = Arc::new(Activity::default());
        ClientIo::new(io, activity, Protocol::Http1, None, write_timeout)
    }

    /// A server side with a 300ms head bound, and its client end.
    fn reader(
        protocol: Protocol,
    ) -> (
        tokio::io::DuplexStream,
        ClientIo<tokio::io::DuplexStream>,
        Arc<Activity>,
    ) {
        let (client, server) = tokio::io::duplex(1024);
        let activity = Arc::new(Activity::default());
        let io = ClientIo::new(
            server,
            activity.clone(),
            protocol,
            Some(Duration::from_millis(300)),
            None,
        );
        (client, io, activity)
    }

    /// Reads until an error; returns it.
    async fn read_error(io: &mut ClientIo<tokio::io::DuplexStream>) -> io::Error {
        let mut buf = [0u8; 64];
        loop {
            if let Err(e) = io.read(&mut buf).await {
                return e;
            }
        }
    }

    /// Re-arming leaves the timer at the earlier deadline; when it fires there, the deadline
    /// armed last still holds.
    #[tokio::test]
    async fn a_rearmed_deadline_holds_past_the_earlier_one() {
        let mut deadline = Deadline::default();
        deadline.arm(Duration::from_millis(100));
        tokio::time::sleep(Duration::from_millis(50)).await;
        deadline.arm(Duration::from_millis(100));
        let rearmed = Instant::now();
        std::future::poll_fn(|cx| {
            if deadline.expired(cx) {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await;
        assert!(rearmed.elapsed() >= Duration::from_millis(100));
        deadline.disarm();
        assert!(!std::future::poll_fn(|cx| Poll::Ready(deadline.expired(cx))).await);
    }

    #[tokio::test]
    async fn an_unfinished_head_fails_after_the_bound() {
        let (mut client, mut io, _activity) = reader(Protocol::Sniff);
        // Waiting with nothing sent is idleness, not a slow head: no failure.
        let mut buf = [0u8; 64];
        let waited = tokio::time::timeout(Duration::from_millis(600), io.read(&mut buf)).await;
        assert!(
            waited.is_err(),
            "idle wait is not bounded by the head timeout"
        );
        client
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        let started = Instant::now();
        assert_eq!(read_error(&mut io).await.kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() >= Duration::from_millis(300));
    }

    #[tokio::test]
    async fn a_begun_request_ends_the_head_bound() {
        let (mut client, mut io, activity) = reader(Protocol::Sniff);
        client.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        let mut buf = [0u8; 64];
        io.read_exact(&mut buf[..18]).await.unwrap();
        // The server parsed the head and called the service.
        let request = activity.begin();
        drop(request);
        let waited = tokio::time::timeout(Duration::from_millis(600), io.read(&mut buf)).await;
        assert!(waited.is_err(), "no failure once the request began");
    }

    #[tokio::test]
    async fn http2_has_no_head_bound() {
        let (mut client, mut io, _activity) = reader(Protocol::Sniff);
        // The preface split across reads, then a frame that is no request.
        client.write_all(&H2_PREFACE[..10]).await.unwrap();
        let mut buf = [0u8; 64];
        io.read_exact(&mut buf[..10]).await.unwrap();
        client.write_all(&H2_PREFACE[10..]).await.unwrap();
        client
            .write_all(&[0, 0, 8, 6, 0, 0, 0, 0, 0])
            .await
            .unwrap();
        io.read_exact(&mut buf[..23]).await.unwrap();
        assert_eq!(io.protocol, Protocol::Http2);
        let waited = tokio::time::timeout(Duration::from_millis(600), io.read(&mut buf)).await;
        assert!(
            waited.is_err(),
            "pings and settings without requests are fine"
        );
    }

    #[tokio::test]
    async fn a_write_stalled_past_the_bound_fails() {
        let (client, server) = tokio::io::duplex(64);
        let bound = Duration::from_millis(300);
        let mut io = writer(server, Some(bound));
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
        let mut io = writer(server, Some(Duration::from_secs(2)));
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
        let mut io = writer(server, None);
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

    type FrameTx = futures::channel::mpsc::Sender<Result<Frame<Bytes>, std::convert::Infallible>>;
    type FrameRx = futures::channel::mpsc::Receiver<Result<Frame<Bytes>, std::convert::Infallible>>;

    /// An HTTP/2 request body fed by `tx`, bounded at `timeout`, and its stall signal.
    fn stream_body(
        timeout: Duration,
    ) -> (
        FrameTx,
        WaitingBody<http_body_util::StreamBody<FrameRx>>,
        Arc<BodyStall>,
    ) {
        let (tx, rx) = futures::channel::mpsc::channel(4);
        let stall = Arc::new(BodyStall::default());
        let bound = BodyBound::Stream {
            timeout,
            stall: stall.clone(),
        };
        let body = WaitingBody::new(http_body_util::StreamBody::new(rx), bound);
        (tx, body, stall)
    }

    /// Polls `body` for a frame for at most `wait` (None: still pending).
    async fn next_frame<B: Body<Data = Bytes> + Unpin>(body: &mut B, wait: Duration) -> Option<()> {
        let frame = std::future::poll_fn(|cx| Pin::new(&mut *body).poll_frame(cx));
        tokio::time::timeout(wait, frame).await.ok().map(|_| ())
    }

    #[tokio::test]
    async fn a_stalled_http2_body_signals_its_stream_but_not_a_trickling_one() {
        use futures::SinkExt;
        let (mut tx, mut body, stall) = stream_body(Duration::from_millis(400));
        // Bytes every 200ms keep a 400ms bound from firing.
        for _ in 0..3 {
            assert!(
                next_frame(&mut body, Duration::from_millis(200))
                    .await
                    .is_none()
            );
            tx.send(Ok(Frame::data(Bytes::from_static(b"x"))))
                .await
                .unwrap();
            assert!(
                next_frame(&mut body, Duration::from_millis(50))
                    .await
                    .is_some()
            );
        }
        assert!(!stall.is_stalled());
        // Then nothing: the wait outlives the bound, the body stays pending (never a truncated
        // end) and the stream is told.
        assert!(
            next_frame(&mut body, Duration::from_millis(700))
                .await
                .is_none()
        );
        assert!(stall.is_stalled());
    }

    #[tokio::test]
    async fn a_flowing_response_keeps_a_quiet_http2_request_side_alive() {
        use futures::SinkExt;
        let (_tx, mut body, stall) = stream_body(Duration::from_millis(400));
        let (mut resp_tx, resp_rx) = futures::channel::mpsc::channel(4);
        let activity = Arc::new(Activity::default());
        let mut response = InFlightBody::new(
            http_body_util::StreamBody::new(resp_rx),
            activity.begin(),
            Some(stall.clone()),
        );
        // Polled as an upstream sender waiting for request bytes would.
        let request_side = tokio::spawn(async move {
            let _ = next_frame(&mut body, Duration::from_secs(10)).await;
            body
        });
        // A response frame every 200ms: the request side may stay quiet past the bound.
        for _ in 0..4 {
            tokio::time::sleep(Duration::from_millis(200)).await;
            resp_tx
                .send(Ok::<_, std::convert::Infallible>(Frame::data(
                    Bytes::from_static(b"y"),
                )))
                .await
                .unwrap();
            assert!(
                next_frame(&mut response, Duration::from_millis(50))
                    .await
                    .is_some()
            );
        }
        assert!(!stall.is_stalled(), "the response moved on: not stalled");
        // The response stops too: the stream stalls, and its response body fails (a reset).
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert!(stall.is_stalled());
        let frame = std::future::poll_fn(|cx| Pin::new(&mut response).poll_frame(cx)).await;
        assert!(matches!(frame, Some(Err(_))), "the stream is reset");
        request_side.abort();
    }
}
