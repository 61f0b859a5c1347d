//! One HTTP/1.1 upstream connection, driven inline by the request's future: no connection task
//! and no channels, so a proxied request wakes only the task serving the client. The
//! connection owns its stream and a read buffer that outlives exchanges; response heads and
//! body chunks are split off that buffer without copies.
//!
//! One exchange at a time (never pipelined). The request body is written while the response is
//! read, so an upstream that answers early (before the whole body) is heard, and one that
//! streams its answer while reading the request works. A connection is reused only when the
//! response was read to its framed end, the request body was sent whole, neither side asked
//! for a close, and nothing arrived past the response.

use super::codec::{
    self, BodyHint, ChunkedDecoder, Decoded, ProtocolError, RequestFraming, ResponseFraming,
    ResponseHead,
};
use crate::upstream::client::{BoxError, UpstreamBody, empty_body};
use crate::upstream::connector::UpstreamStream;
use bytes::{Buf, Bytes, BytesMut};
use futures::FutureExt;
use http::{Request, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use std::collections::VecDeque;
use std::future::poll_fn;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll, Waker, ready};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Reads ask for at least this much room; more (up to `MAX_READ_SIZE`) while reads fill it, as
/// large bodies do, so they take fewer system calls.
const READ_SIZE: usize = 8 * 1024;
const MAX_READ_SIZE: usize = 128 * 1024;
/// A request body this small, already in hand when the head is written, goes in the same write.
const SMALL_BODY: usize = 16 * 1024;
/// Pieces per vectored write of the request body.
const MAX_SLICES: usize = 8;

/// Why an exchange on a connection failed.
#[derive(Debug, thiserror::Error)]
pub enum Http1Error {
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    #[error("upstream closed the connection before responding")]
    ClosedBeforeResponse,
    #[error("upstream closed the connection within the response head")]
    ClosedInHead,
    #[error("upstream closed the connection before the end of the response body")]
    ClosedInBody,
    #[error("upstream connection: {0}")]
    Io(#[from] io::Error),
    #[error("request body: {0}")]
    RequestBody(#[source] BoxError),
    #[error("request body longer than its Content-Length")]
    RequestBodyTooLong,
    #[error("request body shorter than its Content-Length")]
    RequestBodyTooShort,
}

/// A failed exchange.
pub enum ExchangeError {
    /// Nothing was written: the request, still the caller's, may go to another connection.
    NotSent(io::Error),
    /// The request was (perhaps partly) sent. `response_started`: some of a response arrived,
    /// so the upstream acted on the request.
    Failed {
        error: Http1Error,
        response_started: bool,
    },
}

pub struct Connection {
    io: UpstreamStream,
    read_buf: BytesMut,
    /// The room the next read asks for.
    read_size: usize,
    write_buf: BytesMut,
}

/// A response head and what follows it.
pub struct Exchanged {
    pub head: ResponseHead,
    pub body: ResponseStream,
}

// The body is the common case, and the value is taken apart at once: no box.
#[allow(clippy::large_enum_variant)]
pub enum ResponseStream {
    Body(Streaming),
    /// `101 Switching Protocols`: the connection is the upgraded protocol's now.
    Upgraded(Upgraded),
}

impl Connection {
    pub fn new(io: UpstreamStream) -> Self {
        Connection {
            io,
            read_buf: BytesMut::with_capacity(READ_SIZE),
            read_size: READ_SIZE,
            write_buf: BytesMut::new(),
        }
    }

    /// Whether an idle connection may take a request: nothing arrived while it was idle (a
    /// close, or bytes no request asked for). A non-blocking read that tokio answers from its
    /// readiness state, without a system call, unless the socket became readable.
    pub fn is_open_and_quiet(&mut self) -> bool {
        let mut cx = Context::from_waker(Waker::noop());
        self.poll_fill(&mut cx).is_pending() && self.read_buf.is_empty()
    }

    /// Reads into the read buffer; 0 at the end of the stream.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        // Never a zero-sized read: it would look like the end of the stream.
        self.read_buf.reserve(self.read_size);
        let n = ready!(tokio_util::io::poll_read_buf(
            Pin::new(&mut self.io),
            cx,
            &mut self.read_buf
        ))?;
        if n >= self.read_size {
            self.read_size = (self.read_size * 2).min(MAX_READ_SIZE);
        } else if n < self.read_size / 4 {
            self.read_size = (self.read_size / 2).max(READ_SIZE);
        }
        Poll::Ready(Ok(n))
    }

    /// Going idle: a read buffer grown by a large body is not kept.
    fn shrink(&mut self) {
        if self.read_buf.capacity() > 2 * READ_SIZE {
            self.read_buf = BytesMut::new();
        }
        self.read_size = READ_SIZE;
    }

    /// Sends `req` (origin-form URI, `Host` set) and reads the response head, writing the
    /// request body meanwhile; the body is taken from `req` once the head is written, so a
    /// request nothing of which was written is left whole. Borrowed, not moved: the future
    /// would otherwise hold the request twice (argument and local) and be copied with it.
    pub async fn exchange(
        mut self,
        req: &mut Request<UpstreamBody>,
    ) -> Result<Exchanged, ExchangeError> {
        let failed = |error: Http1Error| ExchangeError::Failed {
            error,
            response_started: false,
        };
        let hint = BodyHint {
            is_end_stream: req.body().is_end_stream(),
            exact_len: req.body().size_hint().exact(),
        };
        let encoded = codec::encode_request_head(
            req.method(),
            req.uri(),
            req.headers(),
            hint,
            &mut self.write_buf,
        )
        .map_err(|e| failed(e.into()))?;
        let mut outgoing = Outgoing::new(encoded.framing);
        let mut body_taken = false;
        if let Some(out) = &mut outgoing {
            // A small body already in hand goes with the head.
            if hint.exact_len.is_some_and(|len| len <= SMALL_BODY as u64)
                && let Some(first) = req.body_mut().frame().now_or_never()
            {
                body_taken = true;
                match first {
                    Some(Ok(frame)) => out.push_frame(frame).map_err(failed)?,
                    Some(Err(error)) => return Err(failed(Http1Error::RequestBody(error))),
                    None => out.finish().map_err(failed)?,
                }
                out.move_queue_into(&mut self.write_buf);
            }
        }
        // Written from the buffer, which is kept (with its allocation) for the next request.
        let written = write_all(&mut self.io, &self.write_buf).await;
        self.write_buf.clear();
        if let Err((error, written)) = written {
            if written == 0 && !body_taken {
                return Err(ExchangeError::NotSent(error));
            }
            return Err(failed(error.into()));
        }
        let method = req.method().clone();
        let wants_upgrade = encoded.upgrade;
        let request_closes = encoded.closes;
        let mut outgoing = outgoing.map(|mut out| {
            out.body = Some(std::mem::replace(req.body_mut(), empty_body()));
            Box::new(out)
        });
        if outgoing.as_ref().is_some_and(|out| out.is_sent()) {
            outgoing = None;
        }
        let mut received = false;
        let mut request_cut = false;
        let head = poll_fn(|cx| {
            if let Some(out) = &mut outgoing {
                match out.poll_send(&mut self.io, cx) {
                    Poll::Ready(Ok(())) => outgoing = None,
                    Poll::Ready(Err(SendFailure::Body(error))) => return Poll::Ready(Err(error)),
                    // An upstream that answered early may have stopped reading: its answer
                    // may already be on the way.
                    Poll::Ready(Err(SendFailure::Io(_))) => {
                        outgoing = None;
                        request_cut = true;
                    }
                    Poll::Pending => {}
                }
            }
            self.poll_head(cx, &mut received)
        })
        .await
        .map_err(|error| ExchangeError::Failed {
            error,
            response_started: received,
        })?;
        if head.status == StatusCode::SWITCHING_PROTOCOLS {
            if !wants_upgrade {
                return Err(ExchangeError::Failed {
                    error: ProtocolError::UnexpectedSwitch.into(),
                    response_started: true,
                });
            }
            let buffered = self.read_buf.split().freeze();
            return Ok(Exchanged {
                head,
                body: ResponseStream::Upgraded(Upgraded {
                    io: self.io,
                    buffered,
                }),
            });
        }
        let framing =
            codec::response_framing(&method, &head).map_err(|e| ExchangeError::Failed {
                error: e.into(),
                response_started: true,
            })?;
        let reusable = !request_closes
            && !request_cut
            && codec::response_keeps_alive(&head)
            && framing != ResponseFraming::UntilClose;
        let state = match framing {
            ResponseFraming::Empty => BodyState::Length(0),
            ResponseFraming::Length(len) => BodyState::Length(len),
            ResponseFraming::Chunked => BodyState::Chunked(ChunkedDecoder::new()),
            ResponseFraming::UntilClose => BodyState::UntilClose,
        };
        let mut body = Streaming {
            conn: Some(self),
            state,
            outgoing,
            reusable,
        };
        if let BodyState::Chunked(decoder) = &mut body.state
            && let Some(conn) = &mut body.conn
        {
            // A whole small body may have come with the head: see its end now.
            let _ = decoder.advance(&mut conn.read_buf);
        }
        Ok(Exchanged {
            head,
            body: ResponseStream::Body(body),
        })
    }

    /// Reads until a final response head (informational ones other than `101` are skipped).
    fn poll_head(
        &mut self,
        cx: &mut Context<'_>,
        received: &mut bool,
    ) -> Poll<Result<ResponseHead, Http1Error>> {
        loop {
            if !self.read_buf.is_empty() {
                *received = true;
                if let Some(head) = codec::parse_response_head(&mut self.read_buf)? {
                    if head.status.is_informational()
                        && head.status != StatusCode::SWITCHING_PROTOCOLS
                    {
                        continue;
                    }
                    return Poll::Ready(Ok(head));
                }
            }
            if ready!(self.poll_fill(cx))? == 0 {
                return Poll::Ready(Err(if *received {
                    Http1Error::ClosedInHead
                } else {
                    Http1Error::ClosedBeforeResponse
                }));
            }
        }
    }
}

/// Writes all of `bytes`; on an error, how many were written.
async fn write_all(io: &mut UpstreamStream, bytes: &[u8]) -> Result<(), (io::Error, usize)> {
    let mut written = 0;
    while written < bytes.len() {
        match poll_fn(|cx| Pin::new(&mut *io).poll_write(cx, &bytes[written..])).await {
            Ok(0) => return Err((io::ErrorKind::WriteZero.into(), written)),
            Ok(n) => written += n,
            Err(error) => return Err((error, written)),
        }
    }
    poll_fn(|cx| Pin::new(&mut *io).poll_flush(cx))
        .await
        .map_err(|e| (e, written))
}

/// The request body still to be written, encoded into a queue of pieces.
struct Outgoing {
    /// None until the head is written.
    body: Option<UpstreamBody>,
    chunked: bool,
    /// Bytes the Content-Length still announces (not chunked).
    remaining: u64,
    queue: VecDeque<Bytes>,
    /// The whole body is encoded into the queue.
    ended: bool,
}

enum SendFailure {
    /// The request body failed (or broke its framing): the exchange is off.
    Body(Http1Error),
    /// Writing failed.
    Io(io::Error),
}

static CRLF: &[u8] = b"\r\n";
static LAST_CHUNK: &[u8] = b"0\r\n\r\n";

impl Outgoing {
    fn new(framing: RequestFraming) -> Option<Outgoing> {
        let (chunked, remaining) = match framing {
            RequestFraming::Empty => return None,
            RequestFraming::Length(len) => (false, len),
            RequestFraming::Chunked => (true, 0),
        };
        Some(Outgoing {
            body: None,
            chunked,
            remaining,
            queue: VecDeque::new(),
            ended: false,
        })
    }

    fn is_sent(&self) -> bool {
        self.ended && self.queue.is_empty()
    }

    fn push_frame(&mut self, frame: Frame<Bytes>) -> Result<(), Http1Error> {
        match frame.into_data() {
            Ok(data) if data.is_empty() => {}
            Ok(data) if self.chunked => {
                self.queue.push_back(codec::chunk_size_line(data.len()));
                self.queue.push_back(data);
                self.queue.push_back(Bytes::from_static(CRLF));
            }
            Ok(data) => {
                let len = data.len() as u64;
                if len > self.remaining {
                    return Err(Http1Error::RequestBodyTooLong);
                }
                self.remaining -= len;
                self.queue.push_back(data);
                // Everything announced is there: the body is not read further.
                self.ended = self.remaining == 0;
            }
            Err(frame) => {
                if let Ok(trailers) = frame.into_trailers()
                    && self.chunked
                {
                    let mut section = b"0\r\n".to_vec();
                    for (name, value) in &trailers {
                        section.extend_from_slice(name.as_str().as_bytes());
                        section.extend_from_slice(b": ");
                        section.extend_from_slice(value.as_bytes());
                        section.extend_from_slice(CRLF);
                    }
                    section.extend_from_slice(CRLF);
                    self.queue.push_back(section.into());
                    self.ended = true;
                }
                // Trailers cannot travel with a Content-Length body: dropped.
            }
        }
        Ok(())
    }

    /// The body ended.
    fn finish(&mut self) -> Result<(), Http1Error> {
        if self.ended {
            return Ok(());
        }
        if self.chunked {
            self.queue.push_back(Bytes::from_static(LAST_CHUNK));
        } else if self.remaining > 0 {
            return Err(Http1Error::RequestBodyTooShort);
        }
        self.ended = true;
        Ok(())
    }

    /// Moves the queued pieces into `buf` (after the head) when they are small.
    fn move_queue_into(&mut self, buf: &mut BytesMut) {
        if self.queue.iter().map(Bytes::len).sum::<usize>() <= SMALL_BODY {
            for piece in self.queue.drain(..) {
                buf.extend_from_slice(&piece);
            }
        }
    }

    /// Writes the queue and reads the body on, until the body is written (and flushed) or
    /// either side waits.
    fn poll_send(
        &mut self,
        io: &mut UpstreamStream,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), SendFailure>> {
        loop {
            while !self.queue.is_empty() {
                let mut slices = [IoSlice::new(&[]); MAX_SLICES];
                let mut count = 0;
                for (slice, piece) in slices.iter_mut().zip(&self.queue) {
                    *slice = IoSlice::new(piece);
                    count += 1;
                }
                let written =
                    match ready!(Pin::new(&mut *io).poll_write_vectored(cx, &slices[..count])) {
                        Ok(0) => {
                            return Poll::Ready(Err(SendFailure::Io(
                                io::ErrorKind::WriteZero.into(),
                            )));
                        }
                        Ok(n) => n,
                        Err(error) => return Poll::Ready(Err(SendFailure::Io(error))),
                    };
                self.advance(written);
            }
            if self.ended {
                return Pin::new(&mut *io).poll_flush(cx).map_err(SendFailure::Io);
            }
            let Some(body) = self.body.as_mut() else {
                return Poll::Ready(Ok(()));
            };
            match Pin::new(body).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    self.push_frame(frame).map_err(SendFailure::Body)?
                }
                Poll::Ready(Some(Err(error))) => {
                    return Poll::Ready(Err(SendFailure::Body(Http1Error::RequestBody(error))));
                }
                Poll::Ready(None) => self.finish().map_err(SendFailure::Body)?,
                Poll::Pending => {
                    // What was written may sit in the TLS layer until flushed.
                    if let Poll::Ready(Err(error)) = Pin::new(&mut *io).poll_flush(cx) {
                        return Poll::Ready(Err(SendFailure::Io(error)));
                    }
                    return Poll::Pending;
                }
            }
        }
    }

    /// Drops `n` written bytes from the front of the queue.
    fn advance(&mut self, mut n: usize) {
        while n > 0 {
            let Some(front) = self.queue.front_mut() else {
                return;
            };
            if n < front.len() {
                front.advance(n);
                return;
            }
            n -= front.len();
            self.queue.pop_front();
        }
    }
}

/// A response body read from its connection, with the rest of the request body written
/// meanwhile.
pub struct Streaming {
    /// None once handed back (trailers may still be pending).
    conn: Option<Connection>,
    state: BodyState,
    /// Boxed: most requests have no body, and those that have one are sent whole before the
    /// response in most cases.
    outgoing: Option<Box<Outgoing>>,
    /// Neither side asked for a close, the framing has an end, and the request went whole.
    reusable: bool,
}

enum BodyState {
    /// This many bytes left.
    Length(u64),
    Chunked(ChunkedDecoder),
    /// Until the upstream closes; `Done` then.
    UntilClose,
    Done,
}

impl Streaming {
    /// Whether the response has been read to its framed end (its trailers may still be
    /// pending).
    pub fn is_complete(&self) -> bool {
        match &self.state {
            BodyState::Length(left) => *left == 0,
            BodyState::Chunked(decoder) => decoder.is_complete(),
            BodyState::UntilClose => false,
            BodyState::Done => true,
        }
    }

    pub fn is_end_stream(&self) -> bool {
        match &self.state {
            BodyState::Chunked(decoder) => decoder.is_end(),
            _ => self.is_complete(),
        }
    }

    pub fn size_hint(&self) -> SizeHint {
        match &self.state {
            BodyState::Length(left) => SizeHint::with_exact(*left),
            BodyState::Done => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }

    /// Takes the connection out of a complete response: Some when it can carry another
    /// request, else it closes.
    pub fn release(&mut self) -> Option<Connection> {
        let conn = self.conn.take()?;
        let clean = self.reusable
            && self.outgoing.is_none()
            && self.is_complete()
            && conn.read_buf.is_empty();
        self.outgoing = None;
        clean.then(|| {
            let mut conn = conn;
            conn.shrink();
            conn
        })
    }

    pub fn holds_connection(&self) -> bool {
        self.conn.is_some()
    }

    /// Writes more of the request body when it can. Failing there ends the request body, not
    /// the response (the connection is not reused).
    fn drive_outgoing(&mut self, cx: &mut Context<'_>) {
        let (Some(out), Some(conn)) = (self.outgoing.as_mut(), self.conn.as_mut()) else {
            return;
        };
        match out.poll_send(&mut conn.io, cx) {
            Poll::Ready(Ok(())) => self.outgoing = None,
            Poll::Ready(Err(failure)) => {
                let error = match failure {
                    SendFailure::Body(e) => e,
                    SendFailure::Io(e) => e.into(),
                };
                tracing::debug!(%error, "request body cut short after the response started");
                self.outgoing = None;
                self.reusable = false;
            }
            Poll::Pending => {}
        }
    }

    pub fn poll_frame(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Http1Error>>> {
        self.drive_outgoing(cx);
        loop {
            let Some(conn) = self.conn.as_mut() else {
                // Handed back: only trailers can be left.
                return Poll::Ready(match &mut self.state {
                    BodyState::Chunked(decoder) => match decoder.decode(&mut BytesMut::new()) {
                        Ok(Decoded::Trailers(t)) => Some(Ok(Frame::trailers(t))),
                        _ => None,
                    },
                    _ => None,
                });
            };
            match &mut self.state {
                BodyState::Done | BodyState::Length(0) => return Poll::Ready(None),
                BodyState::Length(left) => {
                    if !conn.read_buf.is_empty() {
                        let take = usize::try_from(*left)
                            .map_or(conn.read_buf.len(), |l| l.min(conn.read_buf.len()));
                        *left -= take as u64;
                        let data = conn.read_buf.split_to(take).freeze();
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                }
                BodyState::Chunked(decoder) => match decoder.decode(&mut conn.read_buf) {
                    Ok(Decoded::Data(data)) => {
                        // Sees the end right after the last data, so the connection goes
                        // back without another poll (an error shows at the next one).
                        let _ = decoder.advance(&mut conn.read_buf);
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                    Ok(Decoded::Trailers(trailers)) => {
                        return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
                    }
                    Ok(Decoded::End) => return Poll::Ready(None),
                    Ok(Decoded::More) => {}
                    Err(error) => return Poll::Ready(Some(Err(error.into()))),
                },
                BodyState::UntilClose => {
                    if !conn.read_buf.is_empty() {
                        let data = conn.read_buf.split().freeze();
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                }
            }
            match ready!(conn.poll_fill(cx)) {
                Ok(0) if matches!(self.state, BodyState::UntilClose) => {
                    self.state = BodyState::Done;
                    return Poll::Ready(None);
                }
                Ok(0) => return Poll::Ready(Some(Err(Http1Error::ClosedInBody))),
                Ok(_) => {}
                Err(error) => return Poll::Ready(Some(Err(error.into()))),
            }
        }
    }
}

/// The connection after a `101 Switching Protocols`: the bytes that came after the response
/// head, then the stream.
pub struct Upgraded {
    io: UpstreamStream,
    buffered: Bytes,
}

impl AsyncRead for Upgraded {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.buffered.is_empty() {
            let n = this.buffered.len().min(buf.remaining());
            buf.put_slice(&this.buffered.split_to(n));
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Upgraded {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::connector::{TcpConnector, UpstreamConnector};
    use crate::upstream::dns::CachingResolver;
    use http::HeaderMap;
    use http::header;
    use http_body_util::{Full, StreamBody};
    use std::net::SocketAddr;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};
    use tokio::sync::Semaphore;

    type Script = Arc<
        dyn Fn(TcpStream) -> Pin<Box<dyn std::future::Future<Output = ()> + Send>> + Send + Sync,
    >;

    /// A scripted upstream: each accepted connection runs `script`; accepted connections are
    /// counted.
    async fn scripted<F, Fut>(script: F) -> (SocketAddr, Arc<AtomicUsize>)
    where
        F: Fn(TcpStream) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let script: Script = Arc::new(move |s| Box::pin(script(s)));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(script(stream));
            }
        });
        (addr, accepted)
    }

    /// Reads one request head; None at the end of the stream.
    async fn read_head(stream: &mut TcpStream) -> Option<String> {
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            match stream.read(&mut byte).await {
                Ok(1) => head.push(byte[0]),
                _ => return None,
            }
        }
        Some(String::from_utf8_lossy(&head).into_owned())
    }

    async fn connect(addr: SocketAddr) -> Connection {
        let tcp = TcpConnector::new_with_resolver(CachingResolver::new(Duration::ZERO));
        let connector = UpstreamConnector::plain(tcp);
        let slot = Arc::new(Semaphore::new(1)).try_acquire_owned().unwrap();
        let target = connector.target(&addr.to_string().parse().unwrap());
        Connection::new(connector.connect(target, slot).await.expect("connect"))
    }

    fn request(method: Method, body: UpstreamBody) -> Request<UpstreamBody> {
        let mut req = Request::new(body);
        *req.method_mut() = method;
        *req.uri_mut() = Uri::from_static("/path?q=1");
        req.headers_mut()
            .insert(header::HOST, http::HeaderValue::from_static("upstream"));
        req
    }

    use http::{Method, Uri};

    fn full(bytes: impl Into<Bytes>) -> UpstreamBody {
        Full::new(bytes.into())
            .map_err(|never| match never {})
            .boxed_unsync()
    }

    /// A body of `chunks`, length unknown (sent chunked).
    fn streamed(chunks: Vec<Bytes>) -> UpstreamBody {
        let frames = chunks
            .into_iter()
            .map(|c| Ok::<_, BoxError>(Frame::data(c)));
        StreamBody::new(futures::stream::iter(frames)).boxed_unsync()
    }

    async fn exchange(
        conn: Connection,
        mut req: Request<UpstreamBody>,
    ) -> Result<Exchanged, Http1Error> {
        conn.exchange(&mut req).await.map_err(|e| match e {
            ExchangeError::NotSent(error) => error.into(),
            ExchangeError::Failed { error, .. } => error,
        })
    }

    fn streaming(exchanged: Exchanged) -> (ResponseHead, Streaming) {
        match exchanged.body {
            ResponseStream::Body(body) => (exchanged.head, body),
            ResponseStream::Upgraded(_) => panic!("not an upgrade"),
        }
    }

    /// Reads the whole body: data and trailers.
    async fn read_all(body: &mut Streaming) -> Result<(Vec<u8>, Option<HeaderMap>), Http1Error> {
        let mut data = Vec::new();
        let mut trailers = None;
        while let Some(frame) = poll_fn(|cx| body.poll_frame(cx)).await {
            match frame?.into_data() {
                Ok(d) => data.extend_from_slice(&d),
                Err(frame) => trailers = frame.into_trailers().ok(),
            }
        }
        Ok((data, trailers))
    }

    /// Answers each request on a connection with the next of `responses` (raw bytes), then
    /// waits for the connection to close.
    async fn answering(responses: &'static [&'static [u8]]) -> (SocketAddr, Arc<AtomicUsize>) {
        scripted(move |mut s| async move {
            for r in responses {
                if read_head(&mut s).await.is_none() {
                    return;
                }
                if s.write_all(r).await.is_err() {
                    return;
                }
            }
            let _ = s.read(&mut [0u8; 1]).await;
        })
        .await
    }

    #[tokio::test]
    async fn a_fully_read_response_leaves_the_connection_reusable() {
        let (addr, accepted) = answering(&[
            b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello",
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nx-t: 1\r\n\r\n",
            b"HTTP/1.1 204 No Content\r\ncontent-length: 10\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n",
        ])
        .await;
        let conn = connect(addr).await;
        let (head, mut body) = streaming(
            exchange(conn, request(Method::GET, empty_body()))
                .await
                .unwrap(),
        );
        assert_eq!(head.status, StatusCode::OK);
        assert_eq!(body.size_hint().exact(), Some(5));
        assert_eq!(read_all(&mut body).await.unwrap().0, b"hello");
        let conn = body
            .release()
            .expect("reusable after a Content-Length body");

        let (_, mut body) = streaming(
            exchange(conn, request(Method::GET, empty_body()))
                .await
                .unwrap(),
        );
        let (data, trailers) = read_all(&mut body).await.unwrap();
        assert_eq!(data, b"abc");
        assert_eq!(trailers.expect("trailers")["x-t"], "1");
        let conn = body.release().expect("reusable after a chunked body");

        // No body whatever the headers say: complete at once.
        let (_, mut body) = streaming(
            exchange(conn, request(Method::GET, empty_body()))
                .await
                .unwrap(),
        );
        assert!(body.is_complete() && body.is_end_stream());
        let conn = body.release().expect("reusable after a 204");
        let (_, mut body) = streaming(
            exchange(conn, request(Method::HEAD, empty_body()))
                .await
                .unwrap(),
        );
        assert!(body.is_end_stream(), "a HEAD response has no body");
        assert!(body.release().is_some());
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn responses_that_end_the_connection_are_not_reused() {
        for response in [
            &b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok"[..],
            b"HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\nok",
            // Bytes past the end of the response: the stream is out of step.
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nokHTTP/1.1 200 OK\r\n\r\n",
        ] {
            let (addr, _) = scripted(move |mut s| async move {
                read_head(&mut s).await;
                let _ = s.write_all(response).await;
                let _ = s.read(&mut [0u8; 1]).await;
            })
            .await;
            let conn = connect(addr).await;
            let (_, mut body) = streaming(
                exchange(conn, request(Method::GET, empty_body()))
                    .await
                    .unwrap(),
            );
            // The extra bytes may come in a later read than the body's.
            tokio::time::sleep(Duration::from_millis(20)).await;
            assert_eq!(read_all(&mut body).await.unwrap().0, b"ok");
            assert!(
                body.release().is_none(),
                "{}",
                String::from_utf8_lossy(response)
            );
        }
        // A request asking for a close too.
        let (addr, _) = answering(&[b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"]).await;
        let mut req = request(Method::GET, empty_body());
        req.headers_mut()
            .insert(header::CONNECTION, http::HeaderValue::from_static("close"));
        let (_, mut body) = streaming(exchange(connect(addr).await, req).await.unwrap());
        assert!(body.release().is_none());
    }

    #[tokio::test]
    async fn a_body_delimited_by_the_close_reads_to_the_end_of_the_stream() {
        let (addr, _) = scripted(|mut s| async move {
            read_head(&mut s).await;
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\n\r\npart one, ").await;
            tokio::time::sleep(Duration::from_millis(20)).await;
            let _ = s.write_all(b"part two").await;
        })
        .await;
        let (_, mut body) = streaming(
            exchange(connect(addr).await, request(Method::GET, empty_body()))
                .await
                .unwrap(),
        );
        assert_eq!(read_all(&mut body).await.unwrap().0, b"part one, part two");
        assert!(body.release().is_none());
    }

    #[tokio::test]
    async fn informational_responses_are_skipped() {
        let (addr, _) = answering(&[
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\nHTTP/1.1 201 Created\r\ncontent-length: 1\r\n\r\nx",
        ])
        .await;
        let (head, mut body) = streaming(
            exchange(connect(addr).await, request(Method::GET, empty_body()))
                .await
                .unwrap(),
        );
        assert_eq!(head.status, StatusCode::CREATED);
        assert!(head.headers.get("link").is_none());
        assert_eq!(read_all(&mut body).await.unwrap().0, b"x");
    }

    #[tokio::test]
    async fn malformed_and_smuggling_responses_are_errors() {
        let cases: [(&'static [u8], &str); 5] = [
            (
                b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n",
                "both Content-Length and Transfer-Encoding",
            ),
            (
                b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\ncontent-length: 30\r\n\r\n",
                "differing Content-Length",
            ),
            (
                b"HTTP/1.1 200 OK\r\ncontent-length: x\r\n\r\n",
                "invalid Content-Length",
            ),
            (b"HTTP/1.1 OK\r\n\r\n", "malformed response head"),
            (
                b"HTTP/1.1 101 Switching Protocols\r\n\r\n",
                "asked for no upgrade",
            ),
        ];
        for (response, reason) in cases {
            let (addr, _) = answering(std::slice::from_ref(Box::leak(Box::new(response)))).await;
            let error =
                match exchange(connect(addr).await, request(Method::GET, empty_body())).await {
                    Ok(_) => panic!("accepted: {}", String::from_utf8_lossy(response)),
                    Err(error) => error,
                };
            assert!(error.to_string().contains(reason), "{error} / {reason}");
        }
        // An endless head.
        let (addr, _) = scripted(|mut s| async move {
            read_head(&mut s).await;
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\n").await;
            let line = format!("x-filler: {}\r\n", "a".repeat(1000));
            for _ in 0..100 {
                if s.write_all(line.as_bytes()).await.is_err() {
                    return;
                }
            }
        })
        .await;
        let error = exchange(connect(addr).await, request(Method::GET, empty_body()))
            .await
            .err()
            .expect("too large");
        assert!(
            matches!(error, Http1Error::Protocol(ProtocolError::HeadTooLarge)),
            "{error}"
        );
        // A broken chunked body fails the body, and the connection goes with it.
        let (addr, _) = answering(&[
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\nabc\r\n0\r\n\r\n",
        ])
        .await;
        let (_, mut body) = streaming(
            exchange(connect(addr).await, request(Method::GET, empty_body()))
                .await
                .unwrap(),
        );
        assert!(matches!(
            read_all(&mut body).await,
            Err(Http1Error::Protocol(ProtocolError::ChunkSize))
        ));
        // A body shorter than announced.
        let (addr, _) = scripted(|mut s| async move {
            read_head(&mut s).await;
            let _ = s
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort")
                .await;
        })
        .await;
        let (_, mut body) = streaming(
            exchange(connect(addr).await, request(Method::GET, empty_body()))
                .await
                .unwrap(),
        );
        assert!(matches!(
            read_all(&mut body).await,
            Err(Http1Error::ClosedInBody)
        ));
        // A close before any response.
        let (addr, _) = scripted(|mut s| async move {
            read_head(&mut s).await;
        })
        .await;
        let error = exchange(connect(addr).await, request(Method::GET, empty_body()))
            .await
            .err()
            .expect("closed");
        assert!(matches!(error, Http1Error::ClosedBeforeResponse), "{error}");
    }

    /// Reads a request body the way the head frames it: Content-Length or chunked.
    async fn read_body(s: &mut TcpStream, head: &str) -> Vec<u8> {
        let lower = head.to_ascii_lowercase();
        if let Some(len) = lower
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
        {
            let mut body = vec![0u8; len.trim().parse().unwrap()];
            s.read_exact(&mut body).await.unwrap();
            return body;
        }
        assert!(lower.contains("transfer-encoding: chunked"), "{head}");
        let mut raw = Vec::new();
        let mut byte = [0u8; 1];
        while !raw.ends_with(b"\r\n0\r\n\r\n") && raw != b"0\r\n\r\n" {
            s.read_exact(&mut byte).await.unwrap();
            raw.push(byte[0]);
        }
        let mut buf = BytesMut::from(&raw[..]);
        let mut decoder = ChunkedDecoder::new();
        let mut body = Vec::new();
        while let Decoded::Data(d) = decoder.decode(&mut buf).unwrap() {
            body.extend_from_slice(&d);
        }
        body
    }

    #[tokio::test]
    async fn request_bodies_are_framed_by_length_or_chunked() {
        let (addr, _) = scripted(|mut s| async move {
            while let Some(head) = read_head(&mut s).await {
                let body = read_body(&mut s, &head).await;
                let framing = if head.contains("transfer-encoding: chunked") {
                    "chunked"
                } else {
                    "length"
                };
                let answer = format!("{framing}:{}", String::from_utf8_lossy(&body));
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{answer}",
                    answer.len()
                );
                if s.write_all(response.as_bytes()).await.is_err() {
                    return;
                }
            }
        })
        .await;
        let mut conn = connect(addr).await;
        let big = Bytes::from(vec![b'b'; 100_000]);
        let cases = [
            (full("small"), "length:small".to_owned()),
            (
                full(big.clone()),
                format!("length:{}", String::from_utf8_lossy(&big)),
            ),
            (
                streamed(vec!["one,".into(), Bytes::new(), "two".into()]),
                "chunked:one,two".to_owned(),
            ),
        ];
        for (body, expected) in cases {
            let (_, mut resp) =
                streaming(exchange(conn, request(Method::POST, body)).await.unwrap());
            assert_eq!(
                String::from_utf8(read_all(&mut resp).await.unwrap().0).unwrap(),
                expected
            );
            conn = resp.release().expect("reusable");
        }
    }

    #[tokio::test]
    async fn a_request_body_longer_than_its_length_is_not_sent_past_it() {
        let (addr, _) = answering(&[b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"]).await;
        let mut req = request(Method::POST, streamed(vec!["abc".into(), "def".into()]));
        req.headers_mut()
            .insert(header::CONTENT_LENGTH, http::HeaderValue::from_static("4"));
        let error = exchange(connect(addr).await, req)
            .await
            .err()
            .expect("too long");
        assert!(matches!(error, Http1Error::RequestBodyTooLong), "{error}");
    }

    /// The upstream answers after the head, without reading the (large) body: the answer
    /// arrives, the body stops, and the connection is not reused.
    #[tokio::test]
    async fn an_early_response_to_a_large_body_does_not_deadlock() {
        let (addr, _) = scripted(|mut s| async move {
            read_head(&mut s).await;
            let _ = s
                .write_all(b"HTTP/1.1 413 Content Too Large\r\ncontent-length: 3\r\n\r\nbig")
                .await;
            // Never reads the body; keeps the connection open.
            tokio::time::sleep(Duration::from_secs(30)).await;
        })
        .await;
        // Far more than the socket buffers hold.
        let chunks = (0..256)
            .map(|_| Bytes::from(vec![b'x'; 64 * 1024]))
            .collect();
        let req = request(Method::POST, streamed(chunks));
        let exchanged =
            tokio::time::timeout(Duration::from_secs(10), exchange(connect(addr).await, req))
                .await
                .expect("no deadlock")
                .unwrap();
        let (head, mut body) = streaming(exchanged);
        assert_eq!(head.status, StatusCode::PAYLOAD_TOO_LARGE);
        let read = tokio::time::timeout(Duration::from_secs(10), read_all(&mut body)).await;
        assert_eq!(read.expect("no deadlock").unwrap().0, b"big");
        assert!(body.release().is_none(), "the body was not sent whole");
    }

    /// The upstream streams its answer while it reads the request body (an echo): the body
    /// keeps going out while the response is read.
    #[tokio::test]
    async fn the_request_body_keeps_flowing_while_the_response_streams() {
        let (addr, _) = scripted(|mut s| async move {
            read_head(&mut s).await;
            let _ = s
                .write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
                .await;
            // Echoes each chunk-size line's data back as a chunk, until the last chunk.
            let mut buf = Vec::new();
            let mut byte = [0u8; 1];
            loop {
                if s.read_exact(&mut byte).await.is_err() {
                    return;
                }
                buf.push(byte[0]);
                if buf.ends_with(b"\r\n") && buf.len() > 2 {
                    let line = String::from_utf8_lossy(&buf[..buf.len() - 2]).into_owned();
                    buf.clear();
                    let Ok(size) = usize::from_str_radix(&line, 16) else {
                        continue;
                    };
                    if size == 0 {
                        let _ = s.write_all(b"0\r\n\r\n").await;
                        return;
                    }
                    let mut data = vec![0u8; size + 2];
                    s.read_exact(&mut data).await.unwrap();
                    let _ = s.write_all(format!("{size:x}\r\n").as_bytes()).await;
                    let _ = s.write_all(&data).await;
                }
            }
        })
        .await;
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, BoxError>>(1);
        let body = StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(rx)).boxed_unsync();
        tx.send(Ok(Frame::data("ping".into()))).await.unwrap();
        let (_, mut resp) = streaming(
            exchange(connect(addr).await, request(Method::POST, body))
                .await
                .unwrap(),
        );
        let first = poll_fn(|cx| resp.poll_frame(cx)).await.unwrap().unwrap();
        assert_eq!(first.into_data().unwrap(), "ping");
        tx.send(Ok(Frame::data("pong".into()))).await.unwrap();
        let second = poll_fn(|cx| resp.poll_frame(cx)).await.unwrap().unwrap();
        assert_eq!(second.into_data().unwrap(), "pong");
        drop(tx);
        assert!(read_all(&mut resp).await.unwrap().0.is_empty());
        assert!(resp.release().is_some(), "the whole exchange completed");
    }

    #[tokio::test]
    async fn an_upgrade_hands_over_the_stream_with_the_bytes_read_past_the_head() {
        let (addr, _) = scripted(|mut s| async move {
            read_head(&mut s).await;
            let _ = s
                .write_all(b"HTTP/1.1 101 Switching Protocols\r\nupgrade: echo\r\nconnection: upgrade\r\n\r\nhello")
                .await;
            let mut buf = [0u8; 4];
            if s.read_exact(&mut buf).await.is_ok() {
                let _ = s.write_all(&buf).await;
            }
        })
        .await;
        let mut req = request(Method::GET, empty_body());
        req.headers_mut()
            .insert(header::UPGRADE, http::HeaderValue::from_static("echo"));
        let exchanged = exchange(connect(addr).await, req).await.unwrap();
        assert_eq!(exchanged.head.status, StatusCode::SWITCHING_PROTOCOLS);
        let ResponseStream::Upgraded(mut io) = exchanged.body else {
            panic!("not upgraded");
        };
        let mut hello = [0u8; 5];
        io.read_exact(&mut hello).await.unwrap();
        assert_eq!(&hello, b"hello");
        io.write_all(b"ping").await.unwrap();
        let mut echo = [0u8; 4];
        io.read_exact(&mut echo).await.unwrap();
        assert_eq!(&echo, b"ping");
    }

    #[tokio::test]
    async fn an_idle_connection_the_upstream_closed_is_seen_closed() {
        let close = Arc::new(tokio::sync::Notify::new());
        let closing = close.clone();
        let (addr, _) = scripted(move |mut s| {
            let close = closing.clone();
            async move {
                read_head(&mut s).await;
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                    .await;
                close.notified().await;
            }
        })
        .await;
        let (_, mut body) = streaming(
            exchange(connect(addr).await, request(Method::GET, empty_body()))
                .await
                .unwrap(),
        );
        let mut conn = body.release().expect("reusable");
        assert!(conn.is_open_and_quiet());
        // The upstream closes; once the runtime has seen it, the check does.
        close.notify_one();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while conn.is_open_and_quiet() {
            assert!(tokio::time::Instant::now() < deadline, "close never seen");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}
