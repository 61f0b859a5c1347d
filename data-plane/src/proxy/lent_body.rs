//! The client's request body, lent to one upstream attempt at a time. The body stays in a
//! shared slot until the attempt first reads it, so when the attempt fails before sending
//! anything (a connect failure) the body is still there for a retry on another endpoint. A body
//! is never buffered to be replayed.

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

/// Holds the body between attempts.
pub struct Slot<B>(Arc<Mutex<Option<B>>>);

impl<B> Slot<B> {
    pub fn new(body: B) -> Self {
        Slot(Arc::new(Mutex::new(Some(body))))
    }

    /// Whether the body is still unread (an attempt that failed to connect never read it).
    pub fn is_available(&self) -> bool {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).is_some()
    }

    /// Lends the body to an attempt; None when an earlier attempt started reading it.
    pub fn lend(&self) -> Option<LentBody<B>>
    where
        B: Body,
    {
        let guard = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let body = guard.as_ref()?;
        Some(LentBody {
            slot: self.0.clone(),
            body: None,
            end_stream: body.is_end_stream(),
            size_hint: body.size_hint(),
        })
    }
}

/// The body as one attempt sees it: taken from the slot on the first read.
pub struct LentBody<B> {
    slot: Arc<Mutex<Option<B>>>,
    body: Option<B>,
    // Answered for the body while it is still in the slot (hyper asks before reading).
    end_stream: bool,
    size_hint: SizeHint,
}

impl<B> Body for LentBody<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = &mut *self;
        if this.body.is_none() {
            this.body = this.slot.lock().unwrap_or_else(|e| e.into_inner()).take();
        }
        match &mut this.body {
            Some(body) => Pin::new(body).poll_frame(cx),
            // Another attempt holds the body: this one must not send a partial copy.
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.body {
            Some(body) => body.is_end_stream(),
            None => self.end_stream,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.body {
            Some(body) => body.size_hint(),
            None => self.size_hint,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, Full};

    #[tokio::test]
    async fn an_unread_loan_returns_the_body() {
        let slot = Slot::new(Full::new(Bytes::from_static(b"payload")));
        let unread = slot.lend().expect("lent");
        assert_eq!(unread.size_hint().exact(), Some(7));
        assert!(!unread.is_end_stream());
        drop(unread);
        assert!(slot.is_available());
        let read = slot.lend().expect("still there");
        assert_eq!(
            read.collect().await.unwrap().to_bytes(),
            Bytes::from_static(b"payload")
        );
        // Once read, the body is gone: no second attempt may send it again.
        assert!(slot.lend().is_none());
        assert!(!slot.is_available());
    }
}
