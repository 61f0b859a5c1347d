//! Why an upstream exchange failed, in the terms retries care about: whether anything reached
//! the upstream.

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// No connection could be set up: nothing was sent.
    #[error("connect: {0}")]
    Connect(#[source] BoxError),
    /// The HTTP/1.1 handshake on a new connection failed: nothing was sent.
    #[error("handshake: {0}")]
    Handshake(#[source] hyper::Error),
    /// The connection closed before the request was written: nothing was sent.
    #[error("connection closed before the request was sent: {0}")]
    NotSent(#[source] hyper::Error),
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

    /// An error of hyper-util's client (HTTP/2 upstreams), with its causes spelled out: its
    /// own message only names the kind ("client error (Connect)").
    pub fn from_legacy(error: hyper_util::client::legacy::Error) -> Self {
        let connect = error.is_connect();
        let text = with_causes(&error).into();
        if connect {
            UpstreamError::Connect(text)
        } else {
            UpstreamError::Exchange(text)
        }
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

/// `error` and its causes on one line.
fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("client error (Connect)")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn only_exchange_errors_may_have_reached_the_upstream() {
        let refused = || std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        assert!(UpstreamError::Connect(refused().into()).nothing_sent());
        assert!(!UpstreamError::Exchange(refused().into()).nothing_sent());
        assert_eq!(
            with_causes(&Outer(refused())),
            "client error (Connect): refused"
        );
    }
}
