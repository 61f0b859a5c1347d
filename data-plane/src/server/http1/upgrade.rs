//! Handing an HTTP/1.1 connection over to a protocol upgrade (WebSocket): once the `101` is
//! written, the client stream and any bytes read past the request head go to whoever holds
//! the request's [`OnClientUpgrade`] (the proxy's tunnel). Rare, so a oneshot is fine here.

use super::wire::BoxIo;
use crate::l4::rewind::Rewind;
use futures::channel::oneshot;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The client side of a switched connection: the bytes already read, then the stream.
pub struct Upgraded(Rewind<BoxIo>);

impl Upgraded {
    pub fn new(io: BoxIo, read_ahead: Vec<u8>) -> Self {
        Upgraded(Rewind::new(read_ahead, io))
    }
}

/// Resolves to the client stream once the `101` answer is written; fails when the connection
/// did not switch (another answer, or the client went away first). Clone (request extensions
/// are): clones share the one stream, which the first to be polled to the end gets.
#[derive(Clone)]
pub struct OnClientUpgrade(Arc<Mutex<oneshot::Receiver<Upgraded>>>);

/// The connection's end of a pending upgrade.
pub struct UpgradeSender(oneshot::Sender<Upgraded>);

/// A pending upgrade: the connection keeps the sender, the request carries the receiver.
pub fn pending() -> (UpgradeSender, OnClientUpgrade) {
    let (tx, rx) = oneshot::channel();
    (UpgradeSender(tx), OnClientUpgrade(Arc::new(Mutex::new(rx))))
}

impl UpgradeSender {
    /// Whether someone still waits for the stream.
    pub fn is_wanted(&self) -> bool {
        !self.0.is_canceled()
    }

    pub fn send(self, upgraded: Upgraded) {
        // A receiver dropped meanwhile closes the stream with the value.
        let _ = self.0.send(upgraded);
    }
}

#[derive(Debug, thiserror::Error)]
#[error("the connection was not upgraded")]
pub struct NotUpgraded;

impl Future for OnClientUpgrade {
    type Output = Result<Upgraded, NotUpgraded>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut rx = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        Pin::new(&mut *rx).poll(cx).map_err(|_| NotUpgraded)
    }
}

impl AsyncRead for Upgraded {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for Upgraded {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}
