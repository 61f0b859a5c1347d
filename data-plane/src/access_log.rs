//! Access logs: one `tracing` event per request (target `access`, level INFO), in the process's
//! log format (text or JSON). Emitted when the response body has been sent (or the exchange was
//! abandoned), so `duration_ms` and `response_bytes` cover the whole body, which is streamed and
//! never buffered.

use http::uri::Authority;
use http::{HeaderMap, HeaderValue, Method, Request};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

/// The request id header Goma sets (and Sluice forwards).
pub const REQUEST_ID: &str = "x-goma-request-id";

/// What an access log line needs from the request, captured before the request is forwarded.
/// Cheap clones only: header values and the URI share their bytes.
#[derive(Debug)]
pub struct AccessRecord {
    method: Method,
    uri: http::Uri,
    host: Option<HeaderValue>,
    pub(crate) client_ip: IpAddr,
    request_id: Option<HeaderValue>,
    pub(crate) status: u16,
    pub(crate) route: Option<Arc<str>>,
    pub(crate) cluster: Option<Arc<str>>,
    pub(crate) endpoint: Option<Authority>,
}

impl AccessRecord {
    pub fn new<B>(req: &Request<B>, client_ip: IpAddr) -> Self {
        // HTTP/2 carries the host in the URI (:authority), HTTP/1.1 in the Host header.
        let host = req.headers().get(http::header::HOST).cloned().or_else(|| {
            req.uri()
                .authority()
                .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        });
        AccessRecord {
            method: req.method().clone(),
            uri: req.uri().clone(),
            host,
            client_ip,
            request_id: req.headers().get(REQUEST_ID).cloned(),
            status: 0,
            route: None,
            cluster: None,
            endpoint: None,
        }
    }

    /// Takes the request id from the response when the request had none (the proxy made one).
    pub fn response_headers(&mut self, headers: &HeaderMap) {
        if self.request_id.is_none() {
            self.request_id = headers.get(REQUEST_ID).cloned();
        }
    }

    pub fn emit(&self, elapsed: Duration, request_bytes: u64, response_bytes: u64) {
        tracing::info!(
            target: "access",
            method = %self.method,
            path = self.uri.path(),
            host = header_text(&self.host),
            status = self.status,
            route = self.route.as_deref().unwrap_or("-"),
            cluster = self.cluster.as_deref().unwrap_or("-"),
            endpoint = self.endpoint.as_ref().map_or("-", |a| a.as_str()),
            duration_ms = elapsed.as_secs_f64() * 1e3,
            request_bytes,
            response_bytes,
            client_ip = %self.client_ip,
            request_id = header_text(&self.request_id),
            "request"
        );
    }
}

/// A header value as text; "-" when absent or not visible ASCII.
fn header_text(v: &Option<HeaderValue>) -> &str {
    v.as_ref().and_then(|v| v.to_str().ok()).unwrap_or("-")
}
