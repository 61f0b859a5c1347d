//! Locally generated responses: proxy errors, 404/405 and direct responses.

use crate::router::route::DirectResponse;
use crate::upstream::client::BoxError;
use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};

/// Body of every response the proxy returns: upstream bodies streamed through, or local bytes.
/// Its error is boxed: upstream bodies fail with our HTTP/1.1 codec's errors or hyper's.
pub type ProxyBody = UnsyncBoxBody<Bytes, BoxError>;

pub fn full(bytes: Bytes) -> ProxyBody {
    Full::new(bytes)
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// No body (a `101 Switching Protocols` answer): the same boxed empty body as an upstream
/// request's, one type on both sides.
pub use crate::upstream::client::empty_body as empty;

/// A plain-text local response.
pub fn text(status: StatusCode, body: &'static str) -> Response<ProxyBody> {
    let mut resp = Response::new(full(Bytes::from_static(body.as_bytes())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

pub fn not_found() -> Response<ProxyBody> {
    text(StatusCode::NOT_FOUND, "no route\n")
}

/// The request's host is served by another certificate than this TLS connection's (RFC 9110 §15.5.20).
pub fn misdirected() -> Response<ProxyBody> {
    text(StatusCode::MISDIRECTED_REQUEST, "misdirected request\n")
}

pub fn method_not_allowed(allow: Option<&HeaderValue>) -> Response<ProxyBody> {
    let mut resp = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
    if let Some(allow) = allow {
        resp.headers_mut().insert(header::ALLOW, allow.clone());
    }
    resp
}

/// Refused by exploit protection.
pub fn blocked() -> Response<ProxyBody> {
    text(StatusCode::FORBIDDEN, "request blocked\n")
}

/// An HTTP/2 request body stalled past the read timeout before any response began.
pub fn request_timeout() -> Response<ProxyBody> {
    text(
        StatusCode::REQUEST_TIMEOUT,
        "request body not received in time\n",
    )
}

pub fn uri_too_long() -> Response<ProxyBody> {
    text(StatusCode::URI_TOO_LONG, "URI too long\n")
}

pub fn bad_request() -> Response<ProxyBody> {
    text(StatusCode::BAD_REQUEST, "bad request\n")
}

pub fn no_upstream() -> Response<ProxyBody> {
    text(StatusCode::SERVICE_UNAVAILABLE, "no healthy upstream\n")
}

/// The share of an unresolved backend reference, or a route with no backend to send to.
pub fn invalid_backend() -> Response<ProxyBody> {
    text(
        StatusCode::INTERNAL_SERVER_ERROR,
        "backend reference is invalid or has no weight\n",
    )
}

pub fn connect_error() -> Response<ProxyBody> {
    text(StatusCode::BAD_GATEWAY, "upstream connect error\n")
}

pub fn upstream_error() -> Response<ProxyBody> {
    text(StatusCode::BAD_GATEWAY, "upstream error\n")
}

pub fn timeout() -> Response<ProxyBody> {
    text(StatusCode::GATEWAY_TIMEOUT, "upstream timeout\n")
}

pub fn direct(d: &DirectResponse) -> Response<ProxyBody> {
    // Bytes clone is a refcount bump: the body is shared with the compiled route.
    let mut resp = Response::new(full(d.body.clone()));
    *resp.status_mut() = d.status;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, d.content_type.clone());
    resp
}

/// A redirect answer (no body).
pub fn redirect(status: StatusCode, location: HeaderValue) -> Response<ProxyBody> {
    let mut resp = Response::new(empty());
    *resp.status_mut() = status;
    resp.headers_mut().insert(header::LOCATION, location);
    resp
}

/// The gateway's answer to a CORS preflight request: 200 with `headers` (none when the origin
/// is not allowed).
pub fn preflight(headers: http::HeaderMap) -> Response<ProxyBody> {
    let mut resp = Response::new(empty());
    *resp.headers_mut() = headers;
    resp
}

/// gRPC's answer when no route matches: UNIMPLEMENTED, trailers-only (the status travels in
/// the headers of an empty response).
pub fn grpc_unimplemented() -> Response<ProxyBody> {
    let mut resp = Response::new(empty());
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    h.insert("grpc-status", HeaderValue::from_static("12"));
    h.insert(
        "grpc-message",
        HeaderValue::from_static("no route for this service or method"),
    );
    resp
}
