//! Request mirroring (`RequestMirror`): a copy of the request goes to another cluster through
//! its ordinary connection pool, its response is discarded, and nothing about it can delay or
//! fail the client's request. The client's body is teed frame by frame into a bounded queue per
//! mirror; a mirror that cannot keep up is abandoned (its request aborted), never waited for.

use super::forward::{Target, upstream_request};
use crate::router::route::Mirror;
use crate::snapshot::Snapshot;
use crate::upstream::client::{BoxError, empty_body};
use crate::upstream::cluster::Eligibility;
use bytes::Bytes;
use http::request::Parts;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::AbortHandle;

/// Body frames a mirror may lag behind the client before it is abandoned.
const MIRROR_QUEUE: usize = 16;
/// A mirror request still running after this long is dropped.
const MIRROR_TIMEOUT: Duration = Duration::from_secs(30);

/// Starts the mirrors of a route that take this request (after the route's request header
/// modifier: `head` is the request as it will be forwarded, its Host kept when
/// `host_preserved`) and returns the client's body, teed to them when it has one.
///
/// Inlined: most routes have no mirror, and their body is then only wrapped in place.
#[inline]
pub fn start<B>(
    snapshot: &Arc<Snapshot>,
    route: &Arc<str>,
    mirrors: &[Mirror],
    head: &Parts,
    host_preserved: bool,
    body: B,
) -> TeeBody<B>
where
    B: Body<Data = Bytes, Error = BoxError> + Unpin,
{
    let mut tee = TeeBody {
        inner: body,
        copies: Vec::new(),
    };
    if !mirrors.is_empty() {
        start_copies(snapshot, route, mirrors, head, host_preserved, &mut tee);
    }
    tee
}

fn start_copies<B>(
    snapshot: &Arc<Snapshot>,
    route: &Arc<str>,
    mirrors: &[Mirror],
    head: &Parts,
    host_preserved: bool,
    tee: &mut TeeBody<B>,
) where
    B: Body<Data = Bytes, Error = BoxError> + Unpin,
{
    let mut rng = fastrand::Rng::new();
    for mirror in mirrors {
        if !mirror.takes(rng.u32(0..mirror.denominator)) {
            continue;
        }
        let Some(cluster) = snapshot.cluster(&mirror.cluster) else {
            continue;
        };
        let Some(endpoint) = cluster.choose(0, Eligibility::Available) else {
            tracing::debug!(%route, cluster = %mirror.cluster, "mirror skipped: no available endpoint");
            continue;
        };
        let mut parts = head.clone();
        parts.extensions = http::Extensions::new();
        let target = Target {
            cluster: cluster.clone(),
            endpoint,
            backend: None,
        };
        let (body, copy) = if tee.inner.is_end_stream() {
            let empty = empty_body();
            (empty, None)
        } else {
            let (tx, rx) = mpsc::channel(MIRROR_QUEUE);
            let complete = Arc::new(AtomicBool::new(false));
            let body = MirrorBody {
                rx,
                complete: complete.clone(),
                size_hint: tee.inner.size_hint(),
            };
            (body.boxed_unsync(), Some((tx, complete)))
        };
        let request = upstream_request(parts, body, &target, host_preserved, None);
        let route = route.clone();
        let task = tokio::spawn(async move {
            let cluster = &target.cluster;
            let sent = cluster.send(target.endpoint, request);
            match tokio::time::timeout(MIRROR_TIMEOUT, sent).await {
                Ok(Ok(resp)) => {
                    // Read to the end so the connection goes back to the pool.
                    let _ = tokio::time::timeout(MIRROR_TIMEOUT, resp.into_body().collect()).await;
                }
                Ok(Err(failed)) => {
                    tracing::debug!(%route, cluster = %cluster.name, error = %failed.error, "mirror request failed");
                }
                Err(_) => {
                    tracing::debug!(%route, cluster = %cluster.name, "mirror request timed out")
                }
            }
        });
        if let Some((tx, complete)) = copy {
            tee.copies.push(Copy {
                tx,
                complete,
                task: task.abort_handle(),
            });
        }
    }
}

/// The queue feeding one mirror's body.
struct Copy {
    tx: mpsc::Sender<Bytes>,
    /// Set once the client's body ended normally: only then may the mirror's body end.
    complete: Arc<AtomicBool>,
    task: AbortHandle,
}

impl Copy {
    fn abandon(&self) {
        self.task.abort();
    }
}

/// The client's body, copying each data frame to the mirrors still keeping up.
pub struct TeeBody<B> {
    inner: B,
    copies: Vec<Copy>,
}

impl<B> Body for TeeBody<B>
where
    B: Body<Data = Bytes, Error = BoxError> + Unpin,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if this.copies.is_empty() {
            return polled;
        }
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.copies.retain(|c| {
                        let kept = c.tx.try_send(data.clone()).is_ok();
                        if !kept {
                            c.abandon();
                        }
                        kept
                    });
                }
                // A body that knows it is done may never be polled for its end.
                if this.inner.is_end_stream() {
                    for c in this.copies.drain(..) {
                        c.complete.store(true, Ordering::Release);
                    }
                }
            }
            Poll::Ready(None) => {
                for c in this.copies.drain(..) {
                    c.complete.store(true, Ordering::Release);
                }
            }
            Poll::Ready(Some(Err(_))) => {
                for c in this.copies.drain(..) {
                    c.abandon();
                }
            }
            Poll::Pending => {}
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

impl<B> Drop for TeeBody<B> {
    /// The client's body was not read to its end (client gone, or the request answered
    /// without it): the mirrors cannot get a whole body either.
    fn drop(&mut self) {
        for c in &self.copies {
            c.abandon();
        }
    }
}

/// A mirror's copy of the body.
struct MirrorBody {
    rx: mpsc::Receiver<Bytes>,
    complete: Arc<AtomicBool>,
    size_hint: SizeHint,
}

impl Body for MirrorBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.rx.poll_recv(cx) {
            Poll::Ready(Some(data)) => Poll::Ready(Some(Ok(Frame::data(data)))),
            // The sender is gone: a whole body ends here; a partial one never does (the task
            // is being aborted, and a truncated body must not look complete upstream).
            Poll::Ready(None) if self.complete.load(Ordering::Acquire) => Poll::Ready(None),
            Poll::Ready(None) => Poll::Pending,
            Poll::Pending => Poll::Pending,
        }
    }

    fn size_hint(&self) -> SizeHint {
        self.size_hint
    }
}
