//! The body of an upstream response. On HTTP/1.1 it reads from its connection and hands the
//! connection back to the pool once read to its end; dropped before that, the connection
//! closes (its state is unknown). On HTTP/2 its stream counts as in flight until then.

use super::client::BoxError;
use super::http1::EndpointPool;
use super::http1::connection::{Streaming, Upgraded};
use super::http2::InFlight;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

pub struct ResponseBody {
    kind: Kind,
}

// HTTP/1.1 bodies are the common case; the others must not cost them an allocation.
#[allow(clippy::large_enum_variant)]
enum Kind {
    /// Nothing (more) to read.
    Empty,
    Http1 {
        body: Streaming,
        pool: Arc<EndpointPool>,
    },
    Http2 {
        inner: Incoming,
        in_flight: Option<InFlight>,
    },
    /// The connection of a `101 Switching Protocols`, until the upgrade takes it.
    Upgraded(Upgraded),
}

impl std::fmt::Debug for ResponseBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match &self.kind {
            Kind::Empty => "empty",
            Kind::Http1 { .. } => "http1",
            Kind::Http2 { .. } => "http2",
            Kind::Upgraded(_) => "upgraded",
        };
        f.debug_struct("ResponseBody")
            .field("kind", &kind)
            .finish_non_exhaustive()
    }
}

impl ResponseBody {
    /// The body of an HTTP/2 stream, in flight until it ends.
    pub fn stream(inner: Incoming, in_flight: InFlight) -> Self {
        ResponseBody {
            kind: Kind::Http2 {
                inner,
                in_flight: Some(in_flight),
            },
        }
    }

    /// An HTTP/1.1 body read from its connection, which goes back to `pool` at the end. A body
    /// already complete (no body, or all of it read with the head) hands it back at once.
    pub(super) fn http1(mut body: Streaming, pool: &Arc<EndpointPool>) -> Self {
        if body.is_complete() {
            if let Some(conn) = body.release() {
                pool.put(conn);
            }
            if body.is_end_stream() {
                return ResponseBody { kind: Kind::Empty };
            }
        }
        ResponseBody {
            kind: Kind::Http1 {
                body,
                pool: pool.clone(),
            },
        }
    }

    pub(super) fn upgraded(io: Upgraded) -> Self {
        ResponseBody {
            kind: Kind::Upgraded(io),
        }
    }

    /// The upstream connection of a `101 Switching Protocols` response, for the tunnel.
    pub fn into_upgraded(self) -> Option<Upgraded> {
        match self.kind {
            Kind::Upgraded(io) => Some(io),
            _ => None,
        }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match &mut this.kind {
            Kind::Empty | Kind::Upgraded(_) => Poll::Ready(None),
            Kind::Http1 { body, pool } => {
                let frame = ready!(body.poll_frame(cx));
                if matches!(frame, Some(Err(_))) {
                    // The connection closes with the body.
                    this.kind = Kind::Empty;
                } else {
                    if body.holds_connection()
                        && body.is_complete()
                        && let Some(conn) = body.release()
                    {
                        pool.put(conn);
                    }
                    if frame.is_none() || body.is_end_stream() {
                        this.kind = Kind::Empty;
                    }
                }
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            Kind::Http2 { inner, in_flight } => {
                let frame = ready!(Pin::new(&mut *inner).poll_frame(cx));
                let ended = match &frame {
                    None | Some(Err(_)) => true,
                    // Trailers close a message.
                    Some(Ok(frame)) => frame.is_trailers() || inner.is_end_stream(),
                };
                if ended {
                    in_flight.take();
                }
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Empty | Kind::Upgraded(_) => true,
            Kind::Http1 { body, .. } => body.is_end_stream(),
            Kind::Http2 { inner, .. } => inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Empty | Kind::Upgraded(_) => SizeHint::with_exact(0),
            Kind::Http1 { body, .. } => body.size_hint(),
            Kind::Http2 { inner, .. } => inner.size_hint(),
        }
    }
}
