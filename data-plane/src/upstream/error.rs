//! Why an upstream exchange failed, in the terms retries care about: whether anything reached
//! the upstream.

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// No connection could be set up: nothing was sent.
    #[error("connect: {0}")]
    Connect(#[source] BoxError),
    /// The HTTP/2 handshake on a new connection failed: nothing was sent.
    #[error("handshake: {0}")]
    Handshake(#[source] hyper::Error),
    /// The connection closed before the request was written: nothing was sent.
    #[error("connection closed before the request was sent: {0}")]
    NotSent(#[source] BoxError),
    /// The exchange failed after the request was (perhaps partly) sent.
    #[error("{0}")]
    Exchange(#[source] BoxError),
}

impl UpstreamError {
    /// Whether the request never reached the upstream, so it may go to another endpoint
    /// whatever its method.
    pub fn nothing_sent(&self) -> bool {
        !matches!(self, UpstreamError::Exchange(_))
    }
}

/// A failed send. A request that never left comes back, so a retry can send it elsewhere
/// without a copy having been kept.
pub struct SendError<R> {
    pub error: UpstreamError,
    pub unsent: Option<R>,
}

impl<R> SendError<R> {
    pub fn new(error: UpstreamError) -> Self {
        SendError {
            error,
            unsent: None,
        }
    }

    pub fn unsent(error: UpstreamError, request: R) -> Self {
        SendError {
            error,
            unsent: Some(request),
        }
    }
}

impl<R> std::fmt::Debug for SendError<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SendError")
            .field("error", &self.error)
            .field("unsent", &self.unsent.is_some())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_exchange_errors_may_have_reached_the_upstream() {
        let refused = || std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        assert!(UpstreamError::Connect(refused().into()).nothing_sent());
        assert!(!UpstreamError::Exchange(refused().into()).nothing_sent());
    }
}
