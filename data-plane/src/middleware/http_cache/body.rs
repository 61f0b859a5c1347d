//! A response body streamed to the client while a copy is kept for the cache: the client is
//! never delayed, and the copy is abandoned when it grows past the bound, the stream fails, a
//! trailer arrives, or the client goes away before the end.

use crate::proxy::response::ProxyBody;
use crate::upstream::client::BoxError;
use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use std::pin::Pin;
use std::task::{Context, Poll};

pub type Commit = Box<dyn FnOnce(Bytes) + Send>;

pub struct TeeBody {
    inner: ProxyBody,
    copy: BytesMut,
    limit: usize,
    /// The body's announced length: a server writing a Content-Length body stops polling once
    /// it has that many bytes, so the copy is complete then.
    expected: Option<u64>,
    /// None once abandoned or committed.
    commit: Option<Commit>,
}

impl TeeBody {
    pub fn new(inner: ProxyBody, limit: usize, commit: Commit) -> TeeBody {
        let expected = inner.size_hint().exact();
        TeeBody {
            inner,
            copy: BytesMut::new(),
            limit,
            expected,
            commit: Some(commit),
        }
    }

    fn abandon(&mut self) {
        self.commit = None;
        self.copy = BytesMut::new();
    }
}

impl Body for TeeBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) if this.commit.is_some() => match frame.data_ref() {
                Some(data) if this.copy.len() + data.len() <= this.limit => {
                    this.copy.extend_from_slice(data);
                    let complete =
                        this.expected == Some(this.copy.len() as u64) || this.inner.is_end_stream();
                    if complete && let Some(commit) = this.commit.take() {
                        commit(std::mem::take(&mut this.copy).freeze());
                    }
                }
                // Over the bound, or trailers (not stored).
                _ => this.abandon(),
            },
            Poll::Ready(Some(Err(_))) => this.abandon(),
            // A body that ends early (shorter than announced) is not the response.
            Poll::Ready(None) if this.expected.is_some_and(|e| e != this.copy.len() as u64) => {
                this.abandon()
            }
            Poll::Ready(None) => {
                if let Some(commit) = this.commit.take() {
                    commit(std::mem::take(&mut this.copy).freeze());
                }
            }
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        // Polled once more at the end so the copy is committed.
        self.commit.is_none() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::response::full;
    use http_body_util::{BodyExt, StreamBody};
    use std::sync::{Arc, Mutex};

    fn chunks(parts: &[&'static str]) -> ProxyBody {
        let frames: Vec<Result<Frame<Bytes>, BoxError>> = parts
            .iter()
            .map(|p| Ok(Frame::data(Bytes::from_static(p.as_bytes()))))
            .collect();
        StreamBody::new(futures::stream::iter(frames)).boxed_unsync()
    }

    fn tee(inner: ProxyBody, limit: usize) -> (TeeBody, Arc<Mutex<Option<Bytes>>>) {
        let seen = Arc::new(Mutex::new(None));
        let s = seen.clone();
        let body = TeeBody::new(
            inner,
            limit,
            Box::new(move |b| *s.lock().unwrap() = Some(b)),
        );
        (body, seen)
    }

    #[tokio::test]
    async fn the_client_gets_everything_and_the_copy_is_committed_at_the_end() {
        let (body, seen) = tee(chunks(&["hel", "lo"]), 5);
        assert_eq!(body.collect().await.unwrap().to_bytes(), "hello");
        assert_eq!(seen.lock().unwrap().as_deref(), Some(&b"hello"[..]));
        let (body, seen) = tee(full(Bytes::from_static(b"x")), 5);
        assert_eq!(body.collect().await.unwrap().to_bytes(), "x");
        assert!(seen.lock().unwrap().is_some());
    }

    #[tokio::test]
    async fn a_body_of_announced_length_is_committed_with_its_last_byte() {
        // Servers stop polling a Content-Length body once they have every byte.
        let (mut body, seen) = tee(full(Bytes::from_static(b"abc")), 5);
        assert_eq!(
            body.frame().await.unwrap().unwrap().into_data().unwrap(),
            "abc"
        );
        assert_eq!(seen.lock().unwrap().as_deref(), Some(&b"abc"[..]));
    }

    #[tokio::test]
    async fn over_the_bound_or_dropped_early_nothing_is_committed() {
        let (body, seen) = tee(chunks(&["hel", "lo", "!"]), 5);
        assert_eq!(body.collect().await.unwrap().to_bytes(), "hello!");
        assert!(seen.lock().unwrap().is_none());
        let (mut body, seen) = tee(chunks(&["hel", "lo"]), 5);
        let first = body.frame().await.unwrap().unwrap();
        assert_eq!(first.into_data().unwrap(), "hel");
        drop(body);
        assert!(seen.lock().unwrap().is_none());
    }
}
