//! `bodyLimit`: request bodies above a size get 413. A declared Content-Length above the limit
//! is refused before the upstream is contacted; any other body is counted as it streams
//! ([`LimitedBody`]), never buffered, and aborts the upstream request once it passes the limit
//! (Goma reads the whole body into memory first).

use super::{Decision, Middleware, RequestCtx};
use crate::proxy::response::ProxyBody;
use crate::upstream::client::BoxError;
use bytes::Bytes;
use http::{Response, StatusCode, header};
use http_body::{Body, Frame, SizeHint};
use sluice_proto::config as pb;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

#[derive(Debug)]
pub struct BodyLimit {
    max_bytes: u64,
}

pub fn compile(m: &pb::BodyLimit) -> Result<Box<dyn Middleware>, String> {
    Ok(Box::new(BodyLimit {
        max_bytes: m.max_bytes,
    }))
}

impl Middleware for BodyLimit {
    fn decide(&self, ctx: &mut RequestCtx<'_>) -> Decision {
        let declared = ctx
            .parts
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        if declared.is_some_and(|len| len > self.max_bytes) {
            tracing::debug!(route = %ctx.route.name, client = %ctx.client_ip, limit = self.max_bytes, "request body too large");
            return Decision::Respond(too_large());
        }
        ctx.limit_body(self.max_bytes);
        Decision::Continue
    }
}

/// The answer to a body over the limit.
pub fn too_large() -> Response<ProxyBody> {
    crate::proxy::response::text(StatusCode::PAYLOAD_TOO_LARGE, "request body too large\n")
}

/// The body passed its limit while streaming.
#[derive(Debug, thiserror::Error)]
#[error("request body larger than {0} bytes")]
pub struct TooLarge(u64);

/// A request body counted as it streams: past `limit` bytes it fails (aborting the upstream
/// request it feeds) and raises the shared flag, so the proxy can answer 413 when no response
/// has started. Without a limit it passes frames through untouched.
pub struct LimitedBody<B> {
    inner: B,
    limit: Option<Limit>,
}

struct Limit {
    max: u64,
    seen: u64,
    exceeded: Arc<AtomicBool>,
}

impl<B> LimitedBody<B> {
    /// `body` limited to `max` bytes (none: unlimited), and the flag raised when it passes.
    pub fn new(body: B, max: Option<u64>) -> (LimitedBody<B>, Option<Arc<AtomicBool>>) {
        let limit = max.map(|max| Limit {
            max,
            seen: 0,
            exceeded: Arc::new(AtomicBool::new(false)),
        });
        let flag = limit.as_ref().map(|l| l.exceeded.clone());
        (LimitedBody { inner: body, limit }, flag)
    }
}

impl<B> Body for LimitedBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if let Some(l) = &this.limit
            && l.seen > l.max
        {
            return Poll::Ready(Some(Err(Box::new(TooLarge(l.max)))));
        }
        let polled = match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(Some(Ok(frame))) => frame,
            Poll::Ready(None) => return Poll::Ready(None),
            Poll::Pending => return Poll::Pending,
        };
        if let Some(l) = &mut this.limit
            && let Some(data) = polled.data_ref()
        {
            l.seen = l.seen.saturating_add(data.len() as u64);
            if l.seen > l.max {
                l.exceeded.store(true, Ordering::Release);
                return Poll::Ready(Some(Err(Box::new(TooLarge(l.max)))));
            }
        }
        Poll::Ready(Some(Ok(polled)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, StreamBody};
    use std::convert::Infallible;

    fn chunks(sizes: &[usize]) -> impl Body<Data = Bytes, Error = Infallible> + Unpin {
        let frames: Vec<Result<Frame<Bytes>, Infallible>> = sizes
            .iter()
            .map(|n| Ok(Frame::data(Bytes::from(vec![b'x'; *n]))))
            .collect();
        StreamBody::new(futures::stream::iter(frames))
    }

    #[tokio::test]
    async fn a_body_within_the_limit_streams_whole() {
        let (body, flag) = LimitedBody::new(chunks(&[4, 4, 2]), Some(10));
        let all = body.collect().await.unwrap().to_bytes();
        assert_eq!(all.len(), 10);
        assert!(!flag.unwrap().load(Ordering::Acquire));
    }

    #[tokio::test]
    async fn a_body_past_the_limit_fails_and_raises_the_flag() {
        let (mut body, flag) = LimitedBody::new(chunks(&[4, 4, 4, 4]), Some(10));
        let flag = flag.unwrap();
        let mut passed = 0;
        let error = loop {
            match body.frame().await {
                Some(Ok(f)) => passed += f.into_data().map_or(0, |d| d.len()),
                Some(Err(e)) => break e,
                None => panic!("the body ended without an error"),
            }
        };
        assert_eq!(passed, 8, "no byte past the limit is passed on");
        assert!(
            error.to_string().contains("larger than 10 bytes"),
            "{error}"
        );
        assert!(flag.load(Ordering::Acquire));
        // It stays failed.
        assert!(matches!(body.frame().await, Some(Err(_))));
    }

    #[tokio::test]
    async fn no_limit_passes_everything() {
        let (body, flag) = LimitedBody::new(chunks(&[1 << 20, 1 << 20]), None);
        assert!(flag.is_none());
        assert_eq!(body.collect().await.unwrap().to_bytes().len(), 2 << 20);
    }
}
