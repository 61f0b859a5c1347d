//! Server-Sent Events: `data: <name> <i>` for i in 1..=N, each sent as its own body frame.

use super::{Echo, EchoBody};
use bytes::Bytes;
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use hyper::Response;
use hyper::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderValue};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::sync::mpsc;

/// Streams `count` events; the last waits for a release permit (see the module doc of `echo`).
pub(super) fn events(echo: Arc<Echo>, count: u32) -> Response<EchoBody> {
    let (tx, rx) = mpsc::channel::<Bytes>(1);
    tokio::spawn(async move {
        for i in 1..=count {
            if i == count {
                match echo.sse_release.acquire().await {
                    Ok(permit) => permit.forget(),
                    Err(_) => return,
                }
            }
            let event = format!("id: {i}\ndata: {} {i}\n\n", echo.name);
            if tx.send(Bytes::from(event)).await.is_err() {
                return;
            }
        }
    });
    let mut resp = Response::new(ChannelBody(rx).boxed_unsync());
    let headers = resp.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

/// A body whose frames are the chunks sent on a channel; it ends when the sender is dropped.
struct ChannelBody(mpsc::Receiver<Bytes>);

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = super::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        self.0
            .poll_recv(cx)
            .map(|chunk| chunk.map(|b| Ok(Frame::data(b))))
    }
}
