//! Reading a bounded prefix of a request body for inspection, then streaming the whole body on:
//! the prefix is replayed before the rest, so nothing beyond the bound is ever buffered.

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};

/// A body whose first frames were already read: they are yielded again, then the rest.
pub struct PrefixedBody<B> {
    read: VecDeque<Frame<Bytes>>,
    rest: B,
}

impl<B> PrefixedBody<B> {
    /// A body nothing was read from (no allocation).
    pub fn unread(body: B) -> Self {
        PrefixedBody {
            read: VecDeque::new(),
            rest: body,
        }
    }
}

/// Reads frames of `body` until at least `limit` data bytes or the end. Returns the data seen
/// (contiguous, for scanning) and a body that yields every frame, read or not.
pub async fn read_prefix<B>(mut body: B, limit: usize) -> Result<(Bytes, PrefixedBody<B>), B::Error>
where
    B: Body<Data = Bytes> + Unpin,
{
    let mut read = VecDeque::new();
    let mut seen = BytesMut::new();
    while seen.len() < limit {
        let Some(frame) = body.frame().await else {
            break;
        };
        let frame = frame?;
        if let Some(data) = frame.data_ref() {
            seen.extend_from_slice(&data[..data.len().min(limit - seen.len())]);
        }
        read.push_back(frame);
    }
    Ok((seen.freeze(), PrefixedBody { read, rest: body }))
}

impl<B> Body for PrefixedBody<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        if let Some(frame) = self.read.pop_front() {
            return Poll::Ready(Some(Ok(frame)));
        }
        Pin::new(&mut self.rest).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.read.is_empty() && self.rest.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let buffered: u64 = self
            .read
            .iter()
            .filter_map(|f| f.data_ref())
            .map(|d| d.len() as u64)
            .sum();
        let rest = self.rest.size_hint();
        let mut hint = SizeHint::new();
        hint.set_lower(rest.lower() + buffered);
        if let Some(upper) = rest.upper() {
            hint.set_upper(upper + buffered);
        }
        hint
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::StreamBody;
    use std::convert::Infallible;

    fn chunks(parts: &[&'static str]) -> impl Body<Data = Bytes, Error = Infallible> + Unpin {
        let frames: Vec<Result<Frame<Bytes>, Infallible>> = parts
            .iter()
            .map(|p| Ok(Frame::data(Bytes::from_static(p.as_bytes()))))
            .collect();
        StreamBody::new(futures::stream::iter(frames))
    }

    #[tokio::test]
    async fn reads_at_most_about_the_limit_and_replays_everything() {
        let (seen, body) = read_prefix(chunks(&["abc", "def", "ghi", "jkl"]), 5)
            .await
            .unwrap();
        // Whole frames are read until the bound is reached; only `limit` bytes are kept.
        assert_eq!(&seen[..], b"abcde");
        assert_eq!(body.read.len(), 2);
        let all = body.collect().await.unwrap().to_bytes();
        assert_eq!(&all[..], b"abcdefghijkl");
    }

    #[tokio::test]
    async fn short_bodies_are_read_whole() {
        let (seen, body) = read_prefix(chunks(&["ab", "c"]), 64).await.unwrap();
        assert_eq!(&seen[..], b"abc");
        assert_eq!(body.size_hint().lower(), 3);
        let all = body.collect().await.unwrap().to_bytes();
        assert_eq!(&all[..], b"abc");
    }
}
