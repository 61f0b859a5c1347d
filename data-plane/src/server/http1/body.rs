//! The request body of an HTTP/1.1 request: read from the client stream by whoever polls it,
//! straight off the connection's buffer (no task, no channel).

use super::codec::BodyFraming;
use super::wire::{BodyError, Piece, Wire};
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

pub struct RequestBody {
    /// None: no body (or read to its end).
    wire: Option<Arc<Wire>>,
    /// Bytes left of a Content-Length body.
    remaining: Option<u64>,
    /// The exchange this body belongs to (`WireState::exchange`).
    exchange: u64,
}

impl RequestBody {
    pub fn empty() -> Self {
        RequestBody {
            wire: None,
            remaining: None,
            exchange: 0,
        }
    }

    /// The body `framing` announces, read from `wire` (whose body state the connection set).
    pub fn new(framing: BodyFraming, wire: &Arc<Wire>, exchange: u64) -> Self {
        match framing {
            BodyFraming::Empty => Self::empty(),
            BodyFraming::Length(n) => RequestBody {
                wire: Some(wire.clone()),
                remaining: Some(n),
                exchange,
            },
            BodyFraming::Chunked => RequestBody {
                wire: Some(wire.clone()),
                remaining: None,
                exchange,
            },
        }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let Some(wire) = &self.wire else {
            return Poll::Ready(None);
        };
        let polled = {
            let mut state = wire.lock();
            if state.exchange != self.exchange {
                Poll::Ready(Some(Err(BodyError::Abandoned)))
            } else {
                let polled = state.poll_body(cx);
                if polled.is_pending() {
                    state.note_body_reader(cx.waker());
                }
                polled
            }
        };
        match polled {
            Poll::Pending => Poll::Pending,
            Poll::Ready(None) => {
                self.wire = None;
                Poll::Ready(None)
            }
            Poll::Ready(Some(Ok(Piece::Data(data)))) => {
                if let Some(left) = &mut self.remaining {
                    *left -= data.len() as u64;
                    if *left == 0 {
                        self.wire = None;
                    }
                }
                Poll::Ready(Some(Ok(Frame::data(data))))
            }
            Poll::Ready(Some(Ok(Piece::Trailers(trailers)))) => {
                Poll::Ready(Some(Ok(Frame::trailers(trailers))))
            }
            Poll::Ready(Some(Err(e))) => {
                self.wire = None;
                Poll::Ready(Some(Err(e)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.wire.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        match (&self.wire, self.remaining) {
            (None, _) => SizeHint::with_exact(0),
            (Some(_), Some(n)) => SizeHint::with_exact(n),
            (Some(_), None) => SizeHint::default(),
        }
    }
}
