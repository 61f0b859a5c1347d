//! The client stream of one HTTP/1.1 connection, shared by the connection (which reads heads and
//! writes responses) and the current request's body (which reads itself, on whichever task
//! polls it: the request's own, or an upstream HTTP/2 connection's). A mutex that is never held
//! across an await point: each poll takes it briefly, and requests on one connection come one at
//! a time, so it is uncontended but for a body streaming while its response is written.

use super::codec::BodyFraming;
use crate::upstream::http1::codec::{ChunkedDecoder, Decoded, ProtocolError};
use bytes::{Bytes, BytesMut};
use http::HeaderMap;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::{Mutex, MutexGuard};
use std::task::{Context, Poll, Waker, ready};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A read buffer starts at this size (most request heads fit; a small buffer taken and freed
/// per request leaves less behind in the allocator than hyper's 8 KiB)...
pub const READ_SIZE: usize = 2 * 1024;
/// ...and doubles while reads fill it (a body streaming in) up to this, as hyper's does: fewer,
/// larger body frames.
const MAX_READ_SIZE: usize = 64 * 1024;
/// At most this much of a request body nobody read is read and dropped after its response to
/// keep the connection; a longer rest closes it (`Connection: close`).
pub const DISCARD_BYTES: usize = 64 * 1024;
/// Bytes read into the stack while waiting for a request on a stream that cannot report
/// readiness, so that an idle connection holds no buffer.
const PROBE_SIZE: usize = 1024;

static CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// A client stream (plain or TLS, with the connection's timeouts and accounting).
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {
    /// Waits until the stream has bytes (or an error) without reading them. Streams that cannot
    /// tell (TLS may hold decrypted bytes) return `None` and are read into a small probe.
    fn poll_read_ready(&mut self, _cx: &mut Context<'_>) -> Option<Poll<io::Result<()>>> {
        None
    }
}

pub type BoxIo = Box<dyn Io>;

/// Why a request body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("reading the request body: {0}")]
    Io(#[from] io::Error),
    #[error("request body: {0}")]
    Framing(#[from] ProtocolError),
    #[error("connection closed before the request body ended")]
    Incomplete,
    #[error("request body abandoned by its connection")]
    Abandoned,
}

/// Where the current request body stands.
#[derive(Debug)]
pub enum BodyRead {
    /// Complete (or none).
    Done,
    Length(u64),
    Chunked(Box<ChunkedDecoder>),
    /// Failed or abandoned: the connection cannot be reused.
    Broken,
}

impl BodyRead {
    pub fn new(framing: BodyFraming) -> Self {
        match framing {
            BodyFraming::Empty => BodyRead::Done,
            BodyFraming::Length(n) => BodyRead::Length(n),
            BodyFraming::Chunked => BodyRead::Chunked(Box::default()),
        }
    }
}

/// `Expect: 100-continue` for the current request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Continue {
    /// Not asked, sent, or no longer to be sent.
    None,
    /// To be sent when the body is first read.
    Pending,
    /// This many bytes of it are written.
    Writing(usize),
    /// The response began before the body was read: the client may or may not send it.
    Skipped,
}

/// A request body's rest that nobody read when the response is ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unread {
    Nothing,
    /// Short enough (or buffered already) to read and drop after the response.
    Discard,
    /// Too long, unknown, or maybe never sent (`Expect: 100-continue` not answered): the
    /// response says `Connection: close`.
    TooMuch,
}

/// A body frame read off the wire.
pub enum Piece {
    Data(Bytes),
    Trailers(HeaderMap),
}

pub struct WireState {
    /// None once handed to an upgraded tunnel or an HTTP/2 server.
    pub io: Option<BoxIo>,
    pub buf: BytesMut,
    pub body: BodyRead,
    pub expect: Continue,
    /// Counts requests, so a body outliving its exchange cannot read the next one's.
    pub exchange: u64,
    /// The task last left waiting for body bytes. The stream wakes only its latest reader, so
    /// when the connection reads again this task is woken to learn its body was abandoned.
    body_reader: Option<Waker>,
    /// What the next read asks for (adaptive, between READ_SIZE and MAX_READ_SIZE).
    read_size: usize,
}

pub struct Wire(Mutex<WireState>);

impl Wire {
    pub fn new(io: BoxIo) -> Self {
        Wire(Mutex::new(WireState {
            io: Some(io),
            buf: BytesMut::new(),
            body: BodyRead::Done,
            expect: Continue::None,
            exchange: 0,
            body_reader: None,
            read_size: READ_SIZE,
        }))
    }

    /// The state; a poisoned lock (a panic elsewhere mid-poll) still holds consistent buffers.
    pub fn lock(&self) -> MutexGuard<'_, WireState> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

fn gone() -> io::Error {
    io::Error::new(io::ErrorKind::NotConnected, "client stream handed over")
}

impl WireState {
    pub fn io(&mut self) -> io::Result<&mut BoxIo> {
        self.io.as_mut().ok_or_else(gone)
    }

    /// Reads more bytes into `buf`; `Ok(0)` at the end of the stream.
    pub fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.buf.capacity() - self.buf.len() < self.read_size / 4 {
            self.buf.reserve(self.read_size);
        }
        let room = self.buf.capacity() - self.buf.len();
        let io = self.io.as_mut().ok_or_else(gone)?;
        let n = ready!(tokio_util::io::poll_read_buf(
            Pin::new(io),
            cx,
            &mut self.buf
        ))?;
        if n == room && self.read_size < MAX_READ_SIZE {
            self.read_size *= 2;
        }
        Poll::Ready(Ok(n))
    }

    /// Releases the read buffer (nothing is buffered): an idle connection holds none.
    fn release(&mut self) {
        self.buf = BytesMut::new();
        self.read_size = READ_SIZE;
    }

    /// Waits for the next request's first bytes with no buffer held while there are none:
    /// buffers are released and taken again when bytes arrive. `Ok(0)`: end of stream.
    pub fn poll_fill_idle(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if !self.buf.is_empty() {
            return self.poll_fill(cx);
        }
        let io = self.io.as_mut().ok_or_else(gone)?;
        match io.poll_read_ready(cx) {
            Some(Poll::Pending) => {
                self.release();
                return Poll::Pending;
            }
            Some(Poll::Ready(result)) => {
                result?;
                return self.poll_fill(cx);
            }
            None => {}
        }
        let mut probe = [0u8; PROBE_SIZE];
        let mut read = ReadBuf::new(&mut probe);
        match Pin::new(io).poll_read(cx, &mut read) {
            Poll::Pending => {
                self.release();
                Poll::Pending
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Ready(Ok(())) => {
                let n = read.filled().len();
                if n > 0 {
                    self.buf.reserve(READ_SIZE);
                    self.buf.extend_from_slice(read.filled());
                }
                Poll::Ready(Ok(n))
            }
        }
    }

    pub fn poll_write_vectored(
        &mut self,
        cx: &mut Context<'_>,
        slices: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(self.io()?).poll_write_vectored(cx, slices)
    }

    pub fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(self.io()?).poll_flush(cx)
    }

    pub fn is_write_vectored(&self) -> bool {
        self.io.as_ref().is_some_and(|io| io.is_write_vectored())
    }

    /// Writes `100 Continue` if it is due.
    pub(super) fn poll_continue(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            let written = match self.expect {
                Continue::Pending => 0,
                Continue::Writing(n) => n,
                Continue::None | Continue::Skipped => return Poll::Ready(Ok(())),
            };
            if written == CONTINUE.len() {
                self.expect = Continue::None;
                return ready!(self.poll_flush(cx)).into();
            }
            let n = ready!(Pin::new(self.io()?).poll_write(cx, &CONTINUE[written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.expect = Continue::Writing(written + n);
        }
    }

    /// The next piece of the request body: `None` once it is complete.
    pub fn poll_body(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Piece, BodyError>>> {
        let result = self.poll_body_inner(cx);
        if let Poll::Ready(Some(Err(_))) = &result {
            self.body = BodyRead::Broken;
        }
        result
    }

    fn poll_body_inner(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Piece, BodyError>>> {
        loop {
            if let Some(piece) = self.take_buffered() {
                return Poll::Ready(piece.transpose());
            }
            if matches!(self.body, BodyRead::Broken) {
                return Poll::Ready(Some(Err(BodyError::Abandoned)));
            }
            if let Err(e) = ready!(self.poll_continue(cx)) {
                return Poll::Ready(Some(Err(e.into())));
            }
            match ready!(self.poll_fill(cx)) {
                Ok(0) => return Poll::Ready(Some(Err(BodyError::Incomplete))),
                Ok(_) => {}
                Err(e) => return Poll::Ready(Some(Err(e.into()))),
            }
        }
    }

    /// A piece from what is buffered: `Some(Ok(None))` at the end, `None` when more bytes are
    /// needed.
    fn take_buffered(&mut self) -> Option<Result<Option<Piece>, BodyError>> {
        match &mut self.body {
            BodyRead::Done => Some(Ok(None)),
            BodyRead::Broken => None,
            BodyRead::Length(left) => {
                if self.buf.is_empty() {
                    return None;
                }
                let take = usize::try_from(*left).map_or(self.buf.len(), |l| l.min(self.buf.len()));
                let data = self.buf.split_to(take).freeze();
                *left -= take as u64;
                if *left == 0 {
                    self.body = BodyRead::Done;
                }
                Some(Ok(Some(Piece::Data(data))))
            }
            BodyRead::Chunked(decoder) => match decoder.decode(&mut self.buf) {
                Ok(Decoded::Data(data)) => Some(Ok(Some(Piece::Data(data)))),
                Ok(Decoded::Trailers(trailers)) => {
                    if decoder.is_end() {
                        self.body = BodyRead::Done;
                    }
                    Some(Ok(Some(Piece::Trailers(trailers))))
                }
                Ok(Decoded::End) => {
                    self.body = BodyRead::Done;
                    Some(Ok(None))
                }
                Ok(Decoded::More) => None,
                Err(e) => Some(Err(e.into())),
            },
        }
    }

    /// A body's reader waits for bytes (see `body_reader`).
    pub fn note_body_reader(&mut self, waker: &Waker) {
        if !self
            .body_reader
            .as_ref()
            .is_some_and(|w| w.will_wake(waker))
        {
            self.body_reader = Some(waker.clone());
        }
    }

    /// The connection reads the stream itself again: a body still read elsewhere is abandoned
    /// (its next poll fails) and its waiting reader woken, not left waiting forever.
    pub fn take_body_back(&mut self) {
        self.exchange += 1;
        if let Some(reader) = self.body_reader.take() {
            reader.wake();
        }
    }

    /// When the response is ready: what becomes of the part of the request body not read yet.
    pub fn unread_body(&self) -> Unread {
        match &self.body {
            BodyRead::Done => Unread::Nothing,
            BodyRead::Broken => Unread::TooMuch,
            BodyRead::Length(left) if self.buf.len() as u64 >= *left => Unread::Discard,
            // Told nothing, the client may still be waiting to send it: nothing to discard.
            _ if self.expect == Continue::Skipped => Unread::TooMuch,
            BodyRead::Length(left) if *left > DISCARD_BYTES as u64 => Unread::TooMuch,
            BodyRead::Length(_) | BodyRead::Chunked(_) => Unread::Discard,
        }
    }

    /// After the response: reads and drops the rest of the request body, at most
    /// `DISCARD_BYTES` of it. Ready with whether the body ended, so the next request's head
    /// starts where expected; without a system call when the rest is buffered already.
    pub fn poll_discard_body(&mut self, cx: &mut Context<'_>, budget: &mut usize) -> Poll<bool> {
        loop {
            match ready!(self.poll_body(cx)) {
                None => return Poll::Ready(true),
                Some(Ok(Piece::Data(data))) => match budget.checked_sub(data.len()) {
                    Some(left) => *budget = left,
                    None => return Poll::Ready(false),
                },
                Some(Ok(Piece::Trailers(_))) => {}
                Some(Err(_)) => return Poll::Ready(false),
            }
        }
    }
}
