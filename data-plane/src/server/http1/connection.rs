//! One downstream HTTP/1.1 connection: reads request heads, hands each request to the service
//! and writes its response, one exchange at a time (pipelined requests wait in the buffer and
//! are served in order). No task per request and no channels: the request body reads the
//! client stream itself, and the response is written by this future.
//!
//! Memory: an idle connection holds no read buffer (it waits for readability first and takes
//! one when bytes arrive) and no write buffer, and each exchange (the service's future and the
//! response's writing) is one allocation for the time of its request.

use super::body::RequestBody;
use super::codec::{
    self, Persistence, Rejection, RequestHead, ResponseFraming, encode_last_chunk,
    encode_rejection, encode_response_head, response_framing,
};
use super::date;
use super::upgrade::{self, Upgraded};
use super::wire::{BodyRead, BoxIo, Continue, DISCARD_BYTES, Unread, Wire, WireState};
use crate::in_place;
use crate::timeouts::Activity;
use crate::upstream::client::BoxError;
use crate::upstream::http1::codec::has_close;
use bytes::{Buf, Bytes};
use http::{HeaderMap, Request, Response, StatusCode, Version};
use http_body::Body;
use std::future::Future;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;
use tokio::io::AsyncWrite;
use tokio::sync::watch;
use tokio::time::Instant;

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Response bytes gathered (small body frames copied after the head) before a write.
const COALESCE: usize = 16 * 1024;
/// Body frames smaller than this are copied next to the head rather than written from their
/// own buffer.
const COPY_BELOW: usize = 4 * 1024;
/// Before closing with bytes of the client's unread, they are discarded for this long (at most
/// `LINGER_BYTES`) so that the close does not reset the connection before it reads the answer.
/// Also how long a short unread body is waited for to keep the connection.
const LINGER: Duration = Duration::from_secs(1);
const LINGER_BYTES: usize = 256 * 1024;

/// What ends a connection's requests, and the accounting they share with the listener.
pub struct Lifecycle {
    /// Becomes true (or its sender goes away) when the listener stops: the connection closes
    /// when idle, and after its current exchange otherwise (`Connection: close`).
    pub stop: watch::Receiver<bool>,
    /// A connection with no request in flight for this long is closed.
    pub idle_timeout: Option<Duration>,
    pub activity: Arc<Activity>,
}

impl Lifecycle {
    fn stopping(&self) -> bool {
        *self.stop.borrow() || self.stop.has_changed().is_err()
    }
}

/// How a connection ended.
pub enum Ended {
    Closed,
    /// Switched protocols: the stream went to the request's upgrade.
    Upgraded,
    /// HTTP/2 with prior knowledge: the stream and the bytes read off it so far.
    Http2 {
        io: BoxIo,
        read: Bytes,
    },
}

/// What waiting for the next request brought. Returned by value once per request (boxing the
/// head would cost an allocation per request).
#[allow(clippy::large_enum_variant)]
enum Next {
    Head(RequestHead),
    Http2,
    Reject(Rejection),
    /// End of stream, stop or idle timeout.
    Close,
    Failed(io::Error),
}

/// Serves HTTP/1.1 on `io` until the connection closes. With `sniff_h2`, a connection whose
/// first bytes are the HTTP/2 preface is returned as [`Ended::Http2`].
pub async fn serve<S, F, B>(
    io: BoxIo,
    sniff_h2: bool,
    max_head_bytes: usize,
    lifecycle: &mut Lifecycle,
    mut service: S,
) -> io::Result<Ended>
where
    S: FnMut(Request<RequestBody>) -> F,
    F: Future<Output = Response<B>>,
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    let wire = Arc::new(Wire::new(io));
    let mut out = Vec::new();
    let mut sniff = sniff_h2;
    let mut idle = IdleTimer::default();
    // One wait for the stop signal for the connection's life: a wait begun per request
    // registers with the signal (a lock and a list insert) and leaves it again each time.
    let mut stop = lifecycle.stop.clone();
    // Fused: once ready it stays pending, and `stopping()` ends the connection instead.
    let mut stopped = std::pin::pin!(futures::FutureExt::fuse(stop.changed()));
    loop {
        let next = next_head(
            &wire,
            &mut out,
            &mut sniff,
            max_head_bytes,
            lifecycle,
            &mut idle,
            stopped.as_mut(),
        );
        let head = match next.await {
            Next::Head(head) => head,
            Next::Close => break,
            Next::Failed(e) => return Err(e),
            Next::Http2 => {
                let mut state = wire.lock();
                let io = state
                    .io
                    .take()
                    .ok_or_else(|| io::Error::other("stream gone"))?;
                let read = std::mem::take(&mut state.buf).freeze();
                return Ok(Ended::Http2 { io, read });
            }
            Next::Reject(rejection) => {
                tracing::debug!(status = %rejection.status, reason = rejection.reason, "request rejected");
                encode_rejection(rejection, &date::now(), &mut out);
                write_all(&wire, &mut [IoSlice::new(&out)]).await?;
                linger(&wire).await;
                return Ok(Ended::Closed);
            }
        };
        // The exchange (the service's future and the response's writing, several KiB) lives in
        // one allocation per request, so a connection waiting for its next request holds none
        // of it. Built in the call, after the allocation: a future built before it is copied
        // into it whole (see `in_place`).
        let exchange = in_place::boxed(
            Box::new_uninit(),
            exchange(
                &wire,
                &mut out,
                head,
                &mut service,
                lifecycle,
                max_head_bytes,
            ),
        );
        match exchange.await? {
            After::KeepAlive => {}
            After::Close => break,
            After::CloseUnread => {
                linger(&wire).await;
                return Ok(Ended::Closed);
            }
            After::ClientGone => return Ok(Ended::Closed),
            After::Upgraded => return Ok(Ended::Upgraded),
        }
    }
    wire.lock().body = BodyRead::Broken;
    // Best effort: a FIN (and TLS close_notify) after the last response.
    let _ = std::future::poll_fn(|cx| match wire.lock().io() {
        Ok(io) => Pin::new(io).poll_shutdown(cx),
        Err(e) => Poll::Ready(Err(e)),
    })
    .await;
    Ok(Ended::Closed)
}

/// What the connection does after an exchange.
enum After {
    /// Read the next request.
    KeepAlive,
    /// Close the connection (shutting down its write side).
    Close,
    /// Close it with the request body not read to its end: the client may still be sending.
    CloseUnread,
    /// The client went away before the response: nothing left to write.
    ClientGone,
    /// The stream went to the request's upgrade.
    Upgraded,
}

/// One request: hands it to the service, writes the response, and settles what is left of the
/// request body.
async fn exchange<S, F, B>(
    wire: &Arc<Wire>,
    out: &mut Vec<u8>,
    head: RequestHead,
    service: &mut S,
    lifecycle: &Lifecycle,
    max_head_bytes: usize,
) -> io::Result<After>
where
    S: FnMut(Request<RequestBody>) -> F,
    F: Future<Output = Response<B>>,
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    let RequestHead {
        request,
        framing,
        keep_alive,
        expect_continue,
        accepts_trailers,
        wants_upgrade,
    } = head;
    let exchange = {
        let mut state = wire.lock();
        state.exchange += 1;
        state.body = BodyRead::new(framing);
        state.expect = if expect_continue {
            Continue::Pending
        } else {
            Continue::None
        };
        state.exchange
    };
    let mut request = request.map(|()| RequestBody::new(framing, wire, exchange));
    let upgrade = wants_upgrade.then(|| {
        let (sender, on_upgrade) = upgrade::pending();
        request.extensions_mut().insert(on_upgrade);
        sender
    });
    let method = request.method().clone();
    let version = request.version();
    let response = {
        // While the request is served, a client that goes away ends it (recorded as 499).
        let mut answer = std::pin::pin!(service(request));
        let answered = std::future::poll_fn(|cx| {
            if let Poll::Ready(response) = answer.as_mut().poll(cx) {
                return Poll::Ready(Some(response));
            }
            match wire.lock().poll_client_gone(cx, max_head_bytes) {
                Poll::Ready(()) => Poll::Ready(None),
                Poll::Pending => Poll::Pending,
            }
        })
        .await;
        let Some(response) = answered else {
            tracing::debug!("client went away before the response");
            return Ok(After::ClientGone);
        };
        response
    };
    let (parts, body) = response.into_parts();
    std::future::poll_fn(|cx| wire.lock().poll_settle_continue(cx)).await?;
    let switching = parts.status == StatusCode::SWITCHING_PROTOCOLS;
    let framing = response_framing(
        &method,
        version,
        parts.status,
        &parts.headers,
        body.size_hint().exact(),
    );
    // A body nobody read to its end: a short rest is discarded after the response to keep the
    // connection; a longer one closes it, and the response must say so, or the client would
    // send its next request on a connection being closed.
    let unread = wire.lock().unread_body();
    let keep_alive = keep_alive
        && !switching
        && unread != Unread::TooMuch
        && framing != ResponseFraming::UntilClose
        && !has_close(&parts.headers)
        && !lifecycle.stopping();
    let persistence = match (keep_alive, version) {
        (false, _) => Persistence::Close,
        (true, Version::HTTP_10) => Persistence::KeepAlive,
        (true, _) => Persistence::Default,
    };
    encode_response_head(
        parts.status,
        &parts.headers,
        framing,
        persistence,
        &date::now(),
        out,
    );
    let complete = write_response(wire, out, framing, body, accepts_trailers).await?;
    if switching {
        let Some(upgrade) = upgrade.filter(|u| u.is_wanted()) else {
            return Ok(After::Close);
        };
        let mut state = wire.lock();
        let Some(io) = state.io.take() else {
            return Ok(After::ClientGone);
        };
        let read_ahead = std::mem::take(&mut state.buf).to_vec();
        state.body = BodyRead::Broken;
        upgrade.send(Upgraded::new(io, read_ahead));
        return Ok(After::Upgraded);
    }
    drop(upgrade);
    if complete && keep_alive && discard_body(wire).await {
        return Ok(After::KeepAlive);
    }
    let mut state = wire.lock();
    let unread = !matches!(state.body, BodyRead::Done);
    state.body = BodyRead::Broken;
    state.take_body_back();
    Ok(if unread {
        After::CloseUnread
    } else {
        After::Close
    })
}

/// Reads and drops what is left of the request body (bounded in bytes and time, no timer when
/// it was read): whether it ended.
async fn discard_body(wire: &Wire) -> bool {
    {
        let mut state = wire.lock();
        if matches!(state.body, BodyRead::Done) {
            return true;
        }
        state.take_body_back();
    }
    let mut budget = DISCARD_BYTES;
    let discard = std::future::poll_fn(|cx| wire.lock().poll_discard_body(cx, &mut budget));
    tokio::time::timeout(LINGER, discard).await.unwrap_or(false)
}

/// Waits for the next request head, the stop signal or the idle timeout. While it waits, the
/// connection holds no buffers: the read buffer is released by the stream, `out` here.
async fn next_head<S: Future>(
    wire: &Wire,
    out: &mut Vec<u8>,
    sniff: &mut bool,
    max_head_bytes: usize,
    lifecycle: &Lifecycle,
    idle: &mut IdleTimer,
    stopped: Pin<&mut S>,
) -> Next {
    if lifecycle.stopping() {
        return Next::Close;
    }
    let Lifecycle {
        idle_timeout,
        activity,
        ..
    } = lifecycle;
    let read = std::future::poll_fn(|cx| {
        let polled = poll_head(&mut wire.lock(), cx, sniff, max_head_bytes);
        if polled.is_pending() && out.capacity() != 0 {
            *out = Vec::new();
        }
        polled
    });
    tokio::select! {
        biased;
        next = read => next,
        _ = stopped => Next::Close,
        () = idle.expired(*idle_timeout, activity) => {
            tracing::debug!("idle connection closed");
            Next::Close
        }
    }
}

fn poll_head(
    state: &mut WireState,
    cx: &mut Context<'_>,
    sniff: &mut bool,
    max_head_bytes: usize,
) -> Poll<Next> {
    loop {
        if !state.buf.is_empty() {
            if *sniff {
                let n = state.buf.len().min(H2_PREFACE.len());
                if state.buf[..n] != H2_PREFACE[..n] {
                    *sniff = false;
                } else if n == H2_PREFACE.len() {
                    return Poll::Ready(Next::Http2);
                }
            }
            if !*sniff {
                match codec::parse_request_head(&mut state.buf, max_head_bytes) {
                    Ok(Some(head)) => return Poll::Ready(Next::Head(head)),
                    Ok(None) => {}
                    Err(rejection) => return Poll::Ready(Next::Reject(rejection)),
                }
            }
        }
        let filled = if state.buf.is_empty() {
            ready!(state.poll_fill_idle(cx))
        } else {
            ready!(state.poll_fill(cx))
        };
        match filled {
            Ok(0) => return Poll::Ready(Next::Close),
            Ok(_) => {}
            Err(e) => return Poll::Ready(Next::Failed(e)),
        }
    }
}

/// The idle timeout's timer, kept across requests: the deadline moves later with each request,
/// so the timer is moved on when it fires rather than re-registered per request.
#[derive(Default)]
struct IdleTimer {
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl IdleTimer {
    async fn expired(&mut self, timeout: Option<Duration>, activity: &Activity) {
        let Some(timeout) = timeout else {
            return std::future::pending().await;
        };
        let timer = self.timer.get_or_insert_with(|| {
            Box::pin(tokio::time::sleep_until(activity.idle_deadline(timeout)))
        });
        loop {
            timer.as_mut().await;
            if activity.is_idle(timeout) {
                return;
            }
            let next: Instant = activity.idle_deadline(timeout);
            timer.as_mut().reset(next);
        }
    }
}

/// Writes the response body (the head is in `out`) as `framing` says. Whether the body was
/// sent whole (a body that failed or did not match its length leaves the stream unusable).
async fn write_response<B>(
    wire: &Wire,
    out: &mut Vec<u8>,
    framing: ResponseFraming,
    mut body: B,
    accepts_trailers: bool,
) -> io::Result<bool>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    let declared = match framing {
        ResponseFraming::None { .. } | ResponseFraming::Head(_) => {
            write_all(wire, &mut [IoSlice::new(out)]).await?;
            flush(wire).await?;
            return Ok(true);
        }
        ResponseFraming::Length(n) => Some(n),
        ResponseFraming::Chunked | ResponseFraming::UntilClose => None,
    };
    let chunked = framing == ResponseFraming::Chunked;
    let vectored = wire.lock().is_write_vectored();
    let mut sent: u64 = 0;
    let mut trailers: Option<HeaderMap> = None;
    let mut ended = body.is_end_stream();
    while !ended {
        // A frame ready now joins the bytes gathered so far; otherwise they go out first.
        let polled =
            std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut body).poll_frame(cx))).await;
        let frame = match polled {
            Poll::Ready(frame) => frame,
            Poll::Pending => {
                if !out.is_empty() {
                    write_all(wire, &mut [IoSlice::new(out)]).await?;
                    out.clear();
                }
                flush(wire).await?;
                std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await
            }
        };
        let frame = match frame {
            None => break,
            Some(Ok(frame)) => frame,
            Some(Err(error)) => {
                let error: BoxError = error.into();
                tracing::debug!(%error, "response body failed");
                return Ok(false);
            }
        };
        let mut data = match frame.into_data() {
            Ok(data) => data,
            Err(frame) => {
                if let Ok(t) = frame.into_trailers() {
                    trailers = Some(t);
                }
                ended = body.is_end_stream();
                continue;
            }
        };
        ended = body.is_end_stream();
        if data.is_empty() {
            continue;
        }
        if let Some(declared) = declared {
            let room = declared - sent;
            if data.len() as u64 > room {
                tracing::debug!(declared, "response body longer than its Content-Length");
                data.truncate(usize::try_from(room).unwrap_or(0));
                put_data(wire, out, false, vectored, data).await?;
                flush(wire).await?;
                return Ok(false);
            }
        }
        sent += data.len() as u64;
        put_data(wire, out, chunked, vectored, data).await?;
    }
    if declared.is_some_and(|declared| sent != declared) {
        tracing::debug!(
            ?declared,
            sent,
            "response body shorter than its Content-Length"
        );
        write_all(wire, &mut [IoSlice::new(out)]).await?;
        flush(wire).await?;
        return Ok(false);
    }
    if chunked {
        encode_last_chunk(trailers.as_ref().filter(|_| accepts_trailers), out);
    }
    write_all(wire, &mut [IoSlice::new(out)]).await?;
    out.clear();
    flush(wire).await?;
    Ok(true)
}

/// Adds a data frame: copied into `out` when small, else written with it in one vectored write.
async fn put_data(
    wire: &Wire,
    out: &mut Vec<u8>,
    chunked: bool,
    vectored: bool,
    data: Bytes,
) -> io::Result<()> {
    let mut size = [0; 18];
    let size_line: &[u8] = if chunked {
        codec::chunk_size_line(data.len(), &mut size)
    } else {
        &[]
    };
    let suffix: &[u8] = if chunked { b"\r\n" } else { b"" };
    if data.len() < COPY_BELOW || !vectored {
        out.extend_from_slice(size_line);
        out.extend_from_slice(&data);
        out.extend_from_slice(suffix);
        if out.len() >= COALESCE {
            write_all(wire, &mut [IoSlice::new(out)]).await?;
            out.clear();
        }
        return Ok(());
    }
    write_all(
        wire,
        &mut [
            IoSlice::new(out),
            IoSlice::new(size_line),
            IoSlice::new(data.chunk()),
            IoSlice::new(suffix),
        ],
    )
    .await?;
    out.clear();
    Ok(())
}

async fn write_all(wire: &Wire, slices: &mut [IoSlice<'_>]) -> io::Result<()> {
    let mut slices = slices;
    std::future::poll_fn(|cx| {
        loop {
            IoSlice::advance_slices(&mut slices, 0);
            if slices.is_empty() {
                return Poll::Ready(Ok(()));
            }
            let n = ready!(wire.lock().poll_write_vectored(cx, slices))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            IoSlice::advance_slices(&mut slices, n);
        }
    })
    .await
}

async fn flush(wire: &Wire) -> io::Result<()> {
    std::future::poll_fn(|cx| wire.lock().poll_flush(cx)).await
}

/// Closing with the client still sending: stop writing, then read and discard what it sends
/// (bounded) so that its unread bytes do not turn the close into a reset that loses the answer.
async fn linger(wire: &Wire) {
    let mut shut = false;
    let mut discarded = 0;
    let drain = std::future::poll_fn(|cx| {
        let mut state = wire.lock();
        if !shut {
            if let Ok(io) = state.io() {
                let _ = ready!(Pin::new(io).poll_shutdown(cx));
            }
            shut = true;
        }
        loop {
            state.buf.clear();
            match ready!(state.poll_fill(cx)) {
                Ok(0) | Err(_) => return Poll::Ready(()),
                Ok(n) => {
                    discarded += n;
                    if discarded > LINGER_BYTES {
                        return Poll::Ready(());
                    }
                }
            }
        }
    });
    let _ = tokio::time::timeout(LINGER, drain).await;
}

impl WireState {
    /// While a request whose body is read is served: ready once the client closed (or reset)
    /// its end. Bytes it pipelines meanwhile are kept for the next head, up to a head's worth.
    /// Costs no system call while the socket has nothing new: a short read cleared readiness.
    fn poll_client_gone(&mut self, cx: &mut Context<'_>, max_head_bytes: usize) -> Poll<()> {
        while matches!(self.body, BodyRead::Done) && self.buf.len() < max_head_bytes {
            match ready!(self.poll_fill(cx)) {
                Ok(0) | Err(_) => return Poll::Ready(()),
                Ok(_) => {}
            }
        }
        Poll::Pending
    }

    /// Before a response head: a `100 Continue` half written is finished; one not begun is no
    /// longer sent (the final answer goes instead).
    fn poll_settle_continue(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.expect {
            Continue::Pending => {
                self.expect = Continue::Skipped;
                Poll::Ready(Ok(()))
            }
            Continue::Writing(_) => self.poll_continue(cx),
            Continue::None | Continue::Skipped => Poll::Ready(Ok(())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::http1::OnClientUpgrade;
    use http_body_util::{BodyExt, Empty, Full, StreamBody};
    use std::sync::atomic::{AtomicBool, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

    impl super::super::Io for DuplexStream {}

    type TestBody = http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>;

    /// How the body reader of `/early` ended.
    static EARLY_READER_DONE: tokio::sync::Notify = tokio::sync::Notify::const_new();
    static EARLY_READER_FAILED: AtomicBool = AtomicBool::new(false);

    fn full(s: &str) -> TestBody {
        Full::new(Bytes::from(s.to_owned()))
            .map_err(|e| match e {})
            .boxed_unsync()
    }

    /// Answers by path: `/echo` the request body (400 when it fails), `/head` a 5-byte body,
    /// `/empty` 204, `/stream` two frames of unknown length plus a trailer, `/upgrade` 101 and
    /// an echo tunnel; otherwise the method and version.
    fn service(
        req: Request<RequestBody>,
    ) -> Pin<Box<dyn Future<Output = Response<TestBody>> + Send>> {
        Box::pin(async move {
            let path = req.uri().path().to_owned();
            match path.as_str() {
                "/echo" => match req.into_body().collect().await {
                    Ok(body) => {
                        let trailers = body.trailers().map(|t| format!("{t:?}"));
                        let text = String::from_utf8_lossy(&body.to_bytes()).into_owned();
                        Response::new(full(&format!("{text}{}", trailers.unwrap_or_default())))
                    }
                    Err(_) => {
                        let mut resp = Response::new(full("bad body"));
                        *resp.status_mut() = StatusCode::BAD_REQUEST;
                        resp
                    }
                },
                "/head" => Response::new(full("hello")),
                "/early" => {
                    // Answers once a task of its own has read the first bytes of the body and
                    // waits for more.
                    let (first, got_first) = tokio::sync::oneshot::channel();
                    tokio::spawn(async move {
                        let mut body = req.into_body();
                        let _ = body.frame().await;
                        let _ = first.send(());
                        let rest = body.collect().await;
                        EARLY_READER_FAILED.store(rest.is_err(), Ordering::SeqCst);
                        EARLY_READER_DONE.notify_one();
                    });
                    let _ = got_first.await;
                    Response::new(full("early"))
                }
                "/hang" => std::future::pending().await,
                "/empty" => {
                    let mut resp = Response::new(full(""));
                    *resp.status_mut() = StatusCode::NO_CONTENT;
                    resp
                }
                "/stream" => {
                    let mut trailers = HeaderMap::new();
                    trailers.insert("x-sum", "42".parse().unwrap());
                    let frames = futures::stream::iter(vec![
                        Ok::<_, BoxError>(http_body::Frame::data(Bytes::from_static(b"ab"))),
                        Ok(http_body::Frame::data(Bytes::from(vec![b'c'; 5000]))),
                        Ok(http_body::Frame::trailers(trailers)),
                    ]);
                    Response::new(StreamBody::new(frames).boxed_unsync())
                }
                "/upgrade" => {
                    let on_upgrade = req.extensions().get::<OnClientUpgrade>().cloned();
                    tokio::spawn(async move {
                        let mut io = on_upgrade.expect("asked to upgrade").await.unwrap();
                        let mut buf = [0u8; 64];
                        let n = io.read(&mut buf).await.unwrap();
                        io.write_all(&buf[..n]).await.unwrap();
                    });
                    let mut resp =
                        Response::new(Empty::new().map_err(|e| match e {}).boxed_unsync());
                    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
                    resp.headers_mut()
                        .insert("upgrade", "echo".parse().unwrap());
                    resp.headers_mut()
                        .insert("connection", "upgrade".parse().unwrap());
                    resp
                }
                _ => Response::new(full(&format!("{} {:?}", req.method(), req.version()))),
            }
        })
    }

    struct Server {
        client: DuplexStream,
        stop: watch::Sender<bool>,
        ended: tokio::task::JoinHandle<io::Result<Ended>>,
    }

    fn start() -> Server {
        start_with(None)
    }

    fn start_with(idle_timeout: Option<Duration>) -> Server {
        let (client, server) = tokio::io::duplex(64 * 1024);
        let (stop, rx) = watch::channel(false);
        let ended = tokio::spawn(async move {
            let activity = Arc::new(Activity::default());
            let mut lifecycle = Lifecycle {
                stop: rx,
                idle_timeout,
                activity: activity.clone(),
            };
            // In flight while the service answers, as the listener's service counts requests.
            let counted = move |req| {
                let in_flight = activity.begin();
                let answer = service(req);
                Box::pin(async move {
                    let response = answer.await;
                    drop(in_flight);
                    response
                })
            };
            serve(Box::new(server), true, 64 * 1024, &mut lifecycle, counted).await
        });
        Server {
            client,
            stop,
            ended,
        }
    }

    /// Reads until `needle` has been seen `times` times (or the stream ends).
    async fn read_until(client: &mut DuplexStream, needle: &str, times: usize) -> String {
        let mut seen = Vec::new();
        let mut buf = [0u8; 16 * 1024];
        loop {
            let text = String::from_utf8_lossy(&seen).into_owned();
            if text.matches(needle).count() >= times {
                return text;
            }
            let n = tokio::time::timeout(Duration::from_secs(5), client.read(&mut buf))
                .await
                .expect("an answer in time")
                .unwrap();
            if n == 0 {
                return text;
            }
            seen.extend_from_slice(&buf[..n]);
        }
    }

    async fn read_to_end(client: &mut DuplexStream) -> String {
        let mut all = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), client.read_to_end(&mut all))
            .await
            .expect("closed in time")
            .unwrap();
        String::from_utf8_lossy(&all).into_owned()
    }

    #[tokio::test]
    async fn pipelined_requests_are_answered_in_order_on_one_connection() {
        let mut s = start();
        s.client
            .write_all(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nPOST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nxyzGET /c HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let text = read_until(&mut s.client, "HTTP/1.1 200 OK", 3).await;
        let a = text.find("GET HTTP/1.1").unwrap();
        let b = text.find("\r\n\r\nxyz").unwrap();
        let c = text.rfind("GET HTTP/1.1").unwrap();
        assert!(a < b && b < c, "{text}");
        assert!(text.contains("content-length: 12\r\n"), "{text}");
        assert!(text.contains("date: "), "{text}");
        assert!(!text.contains("connection:"), "{text}");
        // Still open: one more request on the same connection.
        s.client
            .write_all(b"GET /d HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let text = read_to_end(&mut s.client).await;
        assert!(
            text.starts_with("HTTP/1.1 200 OK\r\n") && text.contains("connection: close\r\n"),
            "{text}"
        );
        assert!(matches!(s.ended.await.unwrap(), Ok(Ended::Closed)));
    }

    #[tokio::test]
    async fn head_and_no_content_responses_have_no_body() {
        let mut s = start();
        s.client.write_all(b"HEAD /head HTTP/1.1\r\nHost: x\r\n\r\nGET /empty HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await.unwrap();
        let text = read_to_end(&mut s.client).await;
        let (head, rest) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 200 OK"), "{text}");
        assert!(
            head.contains("content-length: 5"),
            "the GET's length: {text}"
        );
        assert!(
            rest.starts_with("HTTP/1.1 204 No Content\r\n"),
            "HEAD sent no body: {text}"
        );
        assert!(
            rest.ends_with("\r\n\r\n") && !rest.contains("content-length"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn http10_persists_only_when_asked_and_unknown_lengths_end_by_closing() {
        let mut s = start();
        s.client
            .write_all(b"GET /a HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            .await
            .unwrap();
        let text = read_until(&mut s.client, "HTTP/1.0", 1).await;
        assert!(text.contains("connection: keep-alive\r\n"), "{text}");
        s.client
            .write_all(b"GET /stream HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            .await
            .unwrap();
        let text = read_to_end(&mut s.client).await;
        assert!(text.contains("connection: close\r\n"), "{text}");
        assert!(!text.contains("transfer-encoding"), "{text}");
        assert!(
            text.ends_with(&"c".repeat(5000)),
            "close-delimited, no trailers: {text}"
        );

        let mut s = start();
        s.client
            .write_all(b"GET /a HTTP/1.0\r\n\r\n")
            .await
            .unwrap();
        let text = read_to_end(&mut s.client).await;
        assert!(
            text.contains("connection: close\r\n") && text.ends_with("GET HTTP/1.0"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn chunked_responses_carry_trailers_only_when_accepted() {
        let mut s = start();
        s.client
            .write_all(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let text = read_until(&mut s.client, "0\r\n\r\n", 1).await;
        assert!(text.contains("transfer-encoding: chunked\r\n"), "{text}");
        let body = text.split_once("\r\n\r\n").unwrap().1;
        assert_eq!(
            body,
            format!("2\r\nab\r\n1388\r\n{}\r\n0\r\n\r\n", "c".repeat(5000))
        );
        s.client
            .write_all(
                b"GET /stream HTTP/1.1\r\nHost: x\r\nTE: trailers\r\nConnection: close\r\n\r\n",
            )
            .await
            .unwrap();
        let text = read_to_end(&mut s.client).await;
        assert!(text.ends_with("\r\n0\r\nx-sum: 42\r\n\r\n"), "{text}");
    }

    #[tokio::test]
    async fn chunked_request_bodies_are_decoded_and_bad_chunks_close() {
        let mut s = start();
        s.client.write_all(b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;ext=1\r\nde\r\n0\r\nx-t: 1\r\n\r\n").await.unwrap();
        let text = read_until(&mut s.client, "abcde", 1).await;
        assert!(text.contains("x-t"), "trailers reach the service: {text}");
        s.client.write_all(b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n").await.unwrap();
        let text = read_to_end(&mut s.client).await;
        assert!(
            text.starts_with("HTTP/1.1 400 Bad Request\r\n") && text.contains("connection: close"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn framing_conflicts_are_rejected_and_close() {
        for (head, status) in [
            (
                "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
                "400",
            ),
            ("GET / HTTP/1.1\r\n\r\n", "400"),
            (
                "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n",
                "501",
            ),
        ] {
            let mut s = start();
            s.client.write_all(head.as_bytes()).await.unwrap();
            let text = read_to_end(&mut s.client).await;
            assert!(text.starts_with(&format!("HTTP/1.1 {status} ")), "{text}");
            assert!(
                text.contains("connection: close\r\n") && text.contains("content-length: 0\r\n"),
                "{text}"
            );
        }
        let s = start();
        let big = "a".repeat(70 * 1024);
        let request = format!("GET / HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\n\r\n");
        // The server answers before reading it all; the client keeps writing meanwhile.
        let (mut read, mut write) = tokio::io::split(s.client);
        let writer = tokio::spawn(async move {
            let _ = write.write_all(request.as_bytes()).await;
        });
        let mut all = Vec::new();
        read.read_to_end(&mut all).await.unwrap();
        assert!(
            all.starts_with(b"HTTP/1.1 431 "),
            "{}",
            String::from_utf8_lossy(&all)
        );
        writer.await.unwrap();
    }

    #[tokio::test]
    async fn expect_continue_is_answered_when_the_body_is_read() {
        let mut s = start();
        s.client.write_all(b"PUT /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n").await.unwrap();
        let text = read_until(&mut s.client, "\r\n\r\n", 1).await;
        assert_eq!(text, "HTTP/1.1 100 Continue\r\n\r\n");
        s.client.write_all(b"data").await.unwrap();
        let text = read_until(&mut s.client, "data", 1).await;
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
        // Not read by the service: no 100, and the connection closes after the answer.
        s.client
            .write_all(
                b"PUT /a HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n",
            )
            .await
            .unwrap();
        let text = read_to_end(&mut s.client).await;
        assert!(
            text.starts_with("HTTP/1.1 200 OK\r\n") && !text.contains("100 Continue"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn an_unread_buffered_body_is_skipped_and_the_connection_reused() {
        let mut s = start();
        s.client.write_all(b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nbodyGET /b HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await.unwrap();
        let text = read_to_end(&mut s.client).await;
        assert_eq!(text.matches("HTTP/1.1 200 OK").count(), 2, "{text}");
    }

    /// A response that did not wait for its body (a 413, an auth failure): the rest of a short
    /// body is read and dropped after it, and the connection serves the next request.
    #[tokio::test]
    async fn an_unread_body_still_arriving_is_discarded_and_the_connection_reused() {
        for (head, first, rest) in [
            ("Content-Length: 10", "0123", "456789"),
            (
                "Transfer-Encoding: chunked",
                "4\r\n0123\r\n",
                "6\r\n456789\r\n0\r\n\r\n",
            ),
        ] {
            let mut s = start();
            let request = format!("POST /a HTTP/1.1\r\nHost: x\r\n{head}\r\n\r\n{first}");
            s.client.write_all(request.as_bytes()).await.unwrap();
            let text = read_until(&mut s.client, "POST HTTP/1.1", 1).await;
            assert!(
                text.starts_with("HTTP/1.1 200 OK\r\n") && !text.contains("connection:"),
                "{head}: kept alive: {text}"
            );
            s.client.write_all(rest.as_bytes()).await.unwrap();
            s.client
                .write_all(b"GET /b HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .await
                .unwrap();
            let text = read_to_end(&mut s.client).await;
            assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{head}: {text}");
            assert!(text.ends_with("GET HTTP/1.1"), "{head}: {text}");
        }
    }

    /// The response went out while another task still reads the body: the connection takes
    /// the stream back to discard the rest, and that task learns its body was abandoned rather
    /// than waiting forever (the stream wakes only its latest reader).
    #[tokio::test]
    async fn a_body_still_read_elsewhere_is_abandoned_when_its_rest_is_discarded() {
        let mut s = start();
        s.client
            .write_all(b"POST /early HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n0123")
            .await
            .unwrap();
        let text = read_until(&mut s.client, "early", 1).await;
        assert!(!text.contains("connection:"), "{text}");
        s.client
            .write_all(b"456789GET /b HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let text = read_to_end(&mut s.client).await;
        assert!(
            text.starts_with("HTTP/1.1 200 OK\r\n") && text.ends_with("GET HTTP/1.1"),
            "{text}"
        );
        tokio::time::timeout(Duration::from_secs(5), EARLY_READER_DONE.notified())
            .await
            .expect("the body's reader was woken");
        assert!(EARLY_READER_FAILED.load(Ordering::SeqCst));
    }

    /// A rest too long to discard: the response says close (a client must not reuse the
    /// connection), and it is read whole although the client is still sending.
    #[tokio::test]
    async fn a_long_unread_body_closes_and_the_answer_still_arrives() {
        for (head, body) in [
            (
                format!("Content-Length: {}", 1024 * 1024),
                vec![b'x'; 1024 * 1024],
            ),
            ("Transfer-Encoding: chunked".to_owned(), {
                let chunk = format!("1000\r\n{}\r\n", "x".repeat(0x1000));
                chunk.repeat(64).into_bytes()
            }),
        ] {
            let s = start();
            let (mut read, mut write) = tokio::io::split(s.client);
            let request = format!("POST /a HTTP/1.1\r\nHost: x\r\n{head}\r\n\r\n");
            let writer = tokio::spawn(async move {
                write.write_all(request.as_bytes()).await.unwrap();
                let _ = write.write_all(&body).await;
                write
            });
            let mut all = Vec::new();
            tokio::time::timeout(Duration::from_secs(5), read.read_to_end(&mut all))
                .await
                .expect("closed in time")
                .unwrap();
            let text = String::from_utf8_lossy(&all);
            assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{head}: {text}");
            let says_close = text.contains("connection: close\r\n");
            // A chunked body's length is unknown at the answer: it is discarded up to the bound,
            // then the connection closes.
            assert!(says_close || head.starts_with("Transfer"), "{head}: {text}");
            assert!(text.ends_with("POST HTTP/1.1"), "{head}: {text}");
            drop(writer.await.unwrap());
            assert!(matches!(s.ended.await.unwrap(), Ok(Ended::Closed)));
        }
    }

    #[tokio::test]
    async fn upgrades_hand_the_stream_over_with_the_bytes_read_ahead() {
        let mut s = start();
        s.client.write_all(b"GET /upgrade HTTP/1.1\r\nHost: x\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\nping").await.unwrap();
        let text = read_until(&mut s.client, "ping", 1).await;
        assert!(
            text.starts_with(
                "HTTP/1.1 101 Switching Protocols\r\nupgrade: echo\r\nconnection: upgrade\r\n"
            ),
            "{text}"
        );
        assert!(matches!(s.ended.await.unwrap(), Ok(Ended::Upgraded)));
    }

    #[tokio::test]
    async fn a_client_that_leaves_ends_its_request() {
        let mut s = start();
        s.client
            .write_all(b"GET /hang HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!s.ended.is_finished());
        drop(s.client);
        let ended = tokio::time::timeout(Duration::from_secs(5), s.ended).await;
        assert!(matches!(
            ended.expect("noticed").unwrap(),
            Ok(Ended::Closed)
        ));
    }

    #[tokio::test]
    async fn the_http2_preface_is_handed_over() {
        let mut s = start();
        s.client
            .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0")
            .await
            .unwrap();
        match s.ended.await.unwrap() {
            Ok(Ended::Http2 { read, .. }) => assert!(read.starts_with(H2_PREFACE)),
            _ => panic!("not handed over"),
        }
        // Not sniffed past the first bytes: a preface-like start is just a bad request later.
        let mut s = start();
        s.client
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\nPRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            .await
            .unwrap();
        let text = read_to_end(&mut s.client).await;
        assert!(
            text.contains("HTTP/1.1 200") && text.contains("HTTP/1.1 400"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn stop_closes_idle_connections_and_the_last_response_says_close() {
        let mut s = start();
        s.client
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        read_until(&mut s.client, "HTTP/1.1", 1).await;
        s.stop.send(true).unwrap();
        assert_eq!(read_to_end(&mut s.client).await, "", "idle: closed");
        assert!(matches!(s.ended.await.unwrap(), Ok(Ended::Closed)));

        let mut s = start();
        s.stop.send(true).unwrap();
        s.client
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let _ = read_to_end(&mut s.client).await;
    }

    #[tokio::test]
    async fn idle_connections_are_closed_after_the_idle_timeout() {
        let mut s = start_with(Some(Duration::from_millis(600)));
        for _ in 0..2 {
            s.client
                .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                .await
                .unwrap();
            read_until(&mut s.client, "HTTP/1.1", 1).await;
            tokio::time::sleep(Duration::from_millis(400)).await;
        }
        assert!(
            !s.ended.is_finished(),
            "the second request moved the deadline on"
        );
        let started = Instant::now();
        assert_eq!(read_to_end(&mut s.client).await, "");
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    #[tokio::test]
    async fn an_idle_connection_holds_no_read_buffer() {
        let (mut client, server) = tokio::io::duplex(1024);
        let wire = Wire::new(Box::new(server));
        client
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut sniff = false;
        let head =
            std::future::poll_fn(|cx| poll_head(&mut wire.lock(), cx, &mut sniff, 1024)).await;
        assert!(matches!(head, Next::Head(_)));
        assert!(wire.lock().buf.capacity() > 0);
        let waker = futures::task::noop_waker();
        let polled = poll_head(
            &mut wire.lock(),
            &mut Context::from_waker(&waker),
            &mut sniff,
            1024,
        );
        assert!(polled.is_pending());
        assert_eq!(wire.lock().buf.capacity(), 0, "released while waiting");
    }

    /// What an idle connection costs is mostly this future: it must stay small (each exchange
    /// is boxed, buffers are released while idle).
    #[tokio::test]
    async fn the_connection_future_is_small() {
        let (_client, server) = tokio::io::duplex(64);
        let (_stop, rx) = watch::channel(false);
        let mut lifecycle = Lifecycle {
            stop: rx,
            idle_timeout: Some(Duration::from_secs(60)),
            activity: Arc::new(Activity::default()),
        };
        let future = serve(Box::new(server), true, 64 * 1024, &mut lifecycle, service);
        let size = std::mem::size_of_val(&future);
        println!("HTTP/1.1 connection future: {size} bytes");
        assert!(size <= 1024, "{size} bytes");
    }
}
