//! HTTP/1.1 server message syntax, free of I/O (RFC 9112): the request head we parse (with its
//! body framing, persistence and expectations) and the response head we write.
//!
//! Strict where leniency lets two parties disagree on where a request ends (request
//! smuggling): Content-Length with Transfer-Encoding, differing Content-Length values, a
//! Transfer-Encoding whose last coding is not `chunked`, Transfer-Encoding in HTTP/1.0,
//! obs-folded fields (httparse refuses them in requests) are all rejected, and the connection
//! closes after the rejection.

use crate::upstream::http1::codec::{
    Chunked, chunked_position, content_length, field_name, fill_prefix, format_u64, has_close,
    itoa_buf,
};
use bytes::{Bytes, BytesMut};
use http::header::{
    CONNECTION, CONTENT_LENGTH, DATE, EXPECT, HOST, TE, TRANSFER_ENCODING, UPGRADE,
};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode, Uri, Version};
use std::mem::MaybeUninit;

/// Header fields a request may carry; more get 431 (hyper's default too).
pub const MAX_HEADERS: usize = 100;

/// A request that cannot be served: answered with `status`, then the connection closes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rejection {
    pub status: StatusCode,
    pub reason: &'static str,
}

impl Rejection {
    fn bad(reason: &'static str) -> Self {
        Rejection {
            status: StatusCode::BAD_REQUEST,
            reason,
        }
    }

    fn too_large(reason: &'static str) -> Self {
        Rejection {
            status: StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            reason,
        }
    }
}

/// How the request body is delimited (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    Empty,
    Length(u64),
    Chunked,
}

/// A parsed request head: the request (with an empty body) and what the connection must know.
#[derive(Debug)]
pub struct RequestHead {
    pub request: Request<()>,
    pub framing: BodyFraming,
    /// The client lets the connection persist after this exchange (RFC 9112 §9.3).
    pub keep_alive: bool,
    /// `Expect: 100-continue` on a request with a body.
    pub expect_continue: bool,
    /// `TE: trailers`: the client accepts a trailer section in a chunked response.
    pub accepts_trailers: bool,
    /// HTTP/1.1 with `Upgrade` and `Connection: upgrade` (RFC 9110 §7.8).
    pub wants_upgrade: bool,
}

/// Start and end offsets of a field's name or value in its head.
type Span = (u32, u32);

/// Parses a request head at the start of `buf`, consuming it. `Ok(None)`: not complete yet (and
/// within `max_bytes`).
pub fn parse_request_head(
    buf: &mut BytesMut,
    max_bytes: usize,
) -> Result<Option<RequestHead>, Rejection> {
    // Uninitialised: zeroing 100 fields per parse costs more than parsing a small head.
    let mut fields =
        [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut []);
    let len = match parsed.parse_with_uninit_headers(buf, &mut fields) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() >= max_bytes => {
            return Err(Rejection::too_large("request head too large"));
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(Rejection::too_large("too many header fields"));
        }
        Err(_) => return Err(Rejection::bad("malformed request head")),
    };
    if len > max_bytes {
        return Err(Rejection::too_large("request head too large"));
    }
    let base = buf.as_ptr() as usize;
    // Offsets into the head, so that fields become slices of one shared buffer (no copies).
    // Within the head (at most `max_bytes`, far below 4 GiB): u32 keeps the spans array small.
    let span = |s: &[u8]| {
        let start = s.as_ptr() as usize - base;
        (start as u32, (start + s.len()) as u32)
    };
    let method = parsed.method.unwrap_or_default();
    let method = Method::from_bytes(method.as_bytes())
        .map_err(|_| Rejection::bad("invalid request method"))?;
    let (target_start, target_end) = span(parsed.path.unwrap_or_default().as_bytes());
    let version = match parsed.version {
        Some(0) => Version::HTTP_10,
        _ => Version::HTTP_11,
    };
    // (name, value) spans, kept on the stack: the fields borrow `buf`, which is split next.
    let mut slots = [const { MaybeUninit::uninit() }; MAX_HEADERS];
    let spans: &[(Span, Span)] = fill_prefix(
        &mut slots,
        parsed
            .headers
            .iter()
            .map(|field| (span(field.name.as_bytes()), span(field.value))),
    );
    let head = buf.split_to(len).freeze();
    // Room for what the proxy adds (X-Forwarded-*, X-Real-IP, the request ID): growing the
    // map rehashes it, which costs more than the larger allocation.
    let mut headers = HeaderMap::with_capacity(spans.len() + 12);
    // Which fields that matter here are present, noted while building the map: most requests
    // carry none but Host, and each lookup afterwards would hash its name again.
    let mut seen = Seen::default();
    for &((name_start, name_end), (value_start, value_end)) in spans {
        let name = field_name(&head[name_start as usize..name_end as usize])
            .map_err(|_| Rejection::bad("invalid header field name"))?;
        let value = head.slice(value_start as usize..value_end as usize);
        // SAFETY: httparse accepted the value, which admits only HTAB, SP, VCHAR and obs-text:
        // a subset of what a HeaderValue allows (no validation pass again, as hyper).
        let value = unsafe { HeaderValue::from_maybe_shared_unchecked(value) };
        seen.note(&name);
        headers.append(name, value);
    }
    let uri = parse_target(
        &method,
        head.slice(target_start as usize..target_end as usize),
    )?;
    check_host(version, &uri, seen.hosts)?;
    let framing = framing(version, &headers, &seen)?;
    let keep_alive = keeps_alive(version, &headers, &seen);
    let expect_continue = seen.expect
        && version == Version::HTTP_11
        && framing != BodyFraming::Empty
        && headers
            .get(EXPECT)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    let accepts_trailers = seen.te && has_token(&headers, TE, b"trailers");
    let wants_upgrade = seen.upgrade
        && seen.connection
        && version == Version::HTTP_11
        && has_token(&headers, CONNECTION, b"upgrade");
    let mut request = Request::new(());
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    *request.version_mut() = version;
    *request.headers_mut() = headers;
    Ok(Some(RequestHead {
        request,
        framing,
        keep_alive,
        expect_continue,
        accepts_trailers,
        wants_upgrade,
    }))
}

/// The request target (RFC 9112 §3.2): origin-form, absolute-form, authority-form (CONNECT
/// only) or asterisk-form (OPTIONS only).
fn parse_target(method: &Method, target: Bytes) -> Result<Uri, Rejection> {
    if target.as_ref() == b"*" && method != Method::OPTIONS {
        return Err(Rejection::bad("asterisk-form target outside OPTIONS"));
    }
    let uri =
        Uri::from_maybe_shared(target).map_err(|_| Rejection::bad("invalid request target"))?;
    let authority_form = uri.scheme().is_none() && uri.authority().is_some();
    if authority_form != (method == Method::CONNECT) {
        return Err(Rejection::bad("authority-form target only for CONNECT"));
    }
    Ok(uri)
}

/// The fields of a request head that decide its framing, persistence and expectations.
#[derive(Default)]
struct Seen {
    hosts: usize,
    content_length: bool,
    transfer_encoding: bool,
    connection: bool,
    expect: bool,
    te: bool,
    upgrade: bool,
}

impl Seen {
    fn note(&mut self, name: &HeaderName) {
        if *name == HOST {
            self.hosts += 1;
        } else if *name == CONTENT_LENGTH {
            self.content_length = true;
        } else if *name == TRANSFER_ENCODING {
            self.transfer_encoding = true;
        } else if *name == CONNECTION {
            self.connection = true;
        } else if *name == EXPECT {
            self.expect = true;
        } else if *name == TE {
            self.te = true;
        } else if *name == UPGRADE {
            self.upgrade = true;
        }
    }
}

/// HTTP/1.1 requests carry exactly one Host (RFC 9112 §3.2); HTTP/1.0 may carry none.
fn check_host(version: Version, uri: &Uri, hosts: usize) -> Result<(), Rejection> {
    match hosts {
        0 if version == Version::HTTP_11 && uri.authority().is_none() => {
            Err(Rejection::bad("HTTP/1.1 request without Host"))
        }
        0 | 1 => Ok(()),
        _ => Err(Rejection::bad("more than one Host field")),
    }
}

fn framing(version: Version, headers: &HeaderMap, seen: &Seen) -> Result<BodyFraming, Rejection> {
    if seen.transfer_encoding {
        if version == Version::HTTP_10 {
            return Err(Rejection::bad("Transfer-Encoding in an HTTP/1.0 request"));
        }
        if seen.content_length {
            return Err(Rejection::bad("both Content-Length and Transfer-Encoding"));
        }
        return match chunked_position(headers) {
            Chunked::Last => Ok(BodyFraming::Chunked),
            Chunked::NotLast | Chunked::Absent => Err(Rejection {
                status: StatusCode::NOT_IMPLEMENTED,
                reason: "Transfer-Encoding other than a final chunked",
            }),
        };
    }
    if !seen.content_length {
        return Ok(BodyFraming::Empty);
    }
    match content_length(headers.get_all(CONTENT_LENGTH).iter()) {
        Ok(None | Some(0)) => Ok(BodyFraming::Empty),
        Ok(Some(n)) => Ok(BodyFraming::Length(n)),
        Err(_) => Err(Rejection::bad("invalid Content-Length")),
    }
}

/// HTTP/1.1 persists unless `close` is asked; HTTP/1.0 only with `keep-alive`.
fn keeps_alive(version: Version, headers: &HeaderMap, seen: &Seen) -> bool {
    if !seen.connection {
        return version == Version::HTTP_11;
    }
    if has_close(headers) {
        return false;
    }
    version == Version::HTTP_11 || has_token(headers, CONNECTION, b"keep-alive")
}

/// Whether a comma-separated field lists `token` (case-insensitively).
fn has_token(headers: &HeaderMap, name: HeaderName, token: &[u8]) -> bool {
    headers.get_all(name).iter().any(|v| {
        v.as_bytes()
            .split(|b| *b == b',')
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(token))
    })
}

/// How the response body goes on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseFraming {
    /// No body is sent (1xx, 204, 304); `keep_length`: the response's own Content-Length
    /// describes the body it would have had (304) and is kept.
    None {
        keep_length: bool,
    },
    /// A HEAD response: no body; the response's Content-Length is kept, else the length of
    /// the body it would have had is given when known.
    Head(Option<u64>),
    Length(u64),
    Chunked,
    /// HTTP/1.0 with an unknown length: the body ends when the connection closes.
    UntilClose,
}

/// Chooses the response framing: none where the method or status has no body, the body's known
/// length, else the response's own Content-Length, else chunked (HTTP/1.1) or until close.
pub fn response_framing(
    request_method: &Method,
    request_version: Version,
    status: StatusCode,
    headers: &HeaderMap,
    exact_len: Option<u64>,
) -> ResponseFraming {
    if status.is_informational() || status == StatusCode::NO_CONTENT {
        return ResponseFraming::None { keep_length: false };
    }
    if *request_method == Method::HEAD {
        return ResponseFraming::Head(exact_len);
    }
    if status == StatusCode::NOT_MODIFIED {
        return ResponseFraming::None { keep_length: true };
    }
    // The body's own exact length first: it is what will be sent (a proxied body's comes from
    // the same field; a stale field left by a transformation would break the framing), and
    // most responses then need no lookup.
    let declared = || {
        content_length(headers.get_all(CONTENT_LENGTH).iter())
            .ok()
            .flatten()
    };
    match exact_len.or_else(declared) {
        Some(n) => ResponseFraming::Length(n),
        None if request_version == Version::HTTP_11 => ResponseFraming::Chunked,
        None => ResponseFraming::UntilClose,
    }
}

/// What the connection adds to a response head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Persistence {
    /// HTTP/1.1 keep-alive: nothing to say.
    Default,
    /// HTTP/1.0 keep-alive: `Connection: keep-alive`.
    KeepAlive,
    Close,
}

/// Writes a response head into `out` (cleared first). Framing fields are ours: the response's
/// Content-Length and Transfer-Encoding are replaced by what `framing` says, and Connection by
/// `persistence` unless the upgrade (101) needs it. `date` is added unless the response has one.
pub fn encode_response_head(
    status: StatusCode,
    headers: &HeaderMap,
    framing: ResponseFraming,
    persistence: Persistence,
    date: &HeaderValue,
    out: &mut Vec<u8>,
) {
    out.clear();
    out.reserve(128 + headers.len() * 32);
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    let switching = status == StatusCode::SWITCHING_PROTOCOLS;
    let keep_length = matches!(
        framing,
        ResponseFraming::None { keep_length: true } | ResponseFraming::Head(_)
    );
    let mut has_date = false;
    for (name, value) in headers {
        let ours = (*name == CONTENT_LENGTH && !keep_length)
            || *name == TRANSFER_ENCODING
            || (*name == CONNECTION && !switching);
        has_date |= *name == DATE;
        if !ours {
            put_field(out, name.as_str().as_bytes(), value.as_bytes());
        }
    }
    match framing {
        ResponseFraming::Length(n) => {
            let mut digits = itoa_buf();
            put_field(out, b"content-length", format_u64(n, &mut digits));
        }
        ResponseFraming::Chunked => put_field(out, b"transfer-encoding", b"chunked"),
        ResponseFraming::Head(Some(n)) if !headers.contains_key(CONTENT_LENGTH) => {
            let mut digits = itoa_buf();
            put_field(out, b"content-length", format_u64(n, &mut digits));
        }
        ResponseFraming::None { .. } | ResponseFraming::Head(_) | ResponseFraming::UntilClose => {}
    }
    if !switching {
        match persistence {
            Persistence::Default => {}
            Persistence::KeepAlive => put_field(out, b"connection", b"keep-alive"),
            Persistence::Close => put_field(out, b"connection", b"close"),
        }
    }
    if !has_date {
        put_field(out, b"date", date.as_bytes());
    }
    out.extend_from_slice(b"\r\n");
}

/// The head of a rejection: no body, the connection closes.
pub fn encode_rejection(rejection: Rejection, date: &HeaderValue, out: &mut Vec<u8>) {
    let mut headers = HeaderMap::new();
    headers.insert(CONTENT_LENGTH, HeaderValue::from_static("0"));
    encode_response_head(
        rejection.status,
        &headers,
        ResponseFraming::None { keep_length: true },
        Persistence::Close,
        date,
        out,
    );
}

fn put_field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// A chunk-size line for `len` bytes (hex, CRLF), written at the end of `buf`.
pub fn chunk_size_line(len: usize, buf: &mut [u8; 18]) -> &[u8] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut i = buf.len() - 2;
    buf[i..].copy_from_slice(b"\r\n");
    let mut n = len;
    loop {
        i -= 1;
        buf[i] = HEX[n & 0xf];
        n >>= 4;
        if n == 0 {
            return &buf[i..];
        }
    }
}

/// The last chunk and the trailer section (RFC 9112 §7.1.2), appended to `out`.
pub fn encode_last_chunk(trailers: Option<&HeaderMap>, out: &mut Vec<u8>) {
    out.extend_from_slice(b"0\r\n");
    for (name, value) in trailers.into_iter().flatten() {
        put_field(out, name.as_str().as_bytes(), value.as_bytes());
    }
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: usize = 64 * 1024;

    fn parse(bytes: &str) -> Result<Option<RequestHead>, Rejection> {
        parse_request_head(&mut BytesMut::from(bytes), MAX)
    }

    fn head(bytes: &str) -> RequestHead {
        parse(bytes).expect("valid").expect("complete")
    }

    fn rejected(bytes: &str) -> StatusCode {
        parse(bytes).expect_err("rejected").status
    }

    #[test]
    fn parses_a_head_and_leaves_what_follows() {
        let mut buf = BytesMut::from(
            "POST /a?b=c HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nX-Two: 1\r\nx-two: 2\r\n\r\nabcGET",
        );
        let h = parse_request_head(&mut buf, MAX).unwrap().unwrap();
        assert_eq!(&buf[..], b"abcGET");
        assert_eq!(h.request.method(), Method::POST);
        assert_eq!(h.request.uri(), "/a?b=c");
        assert_eq!(h.request.version(), Version::HTTP_11);
        assert_eq!(h.request.headers().get_all("x-two").iter().count(), 2);
        assert_eq!(h.framing, BodyFraming::Length(3));
        assert!(h.keep_alive && !h.expect_continue && !h.wants_upgrade);
        // Incomplete: nothing consumed.
        let mut partial = BytesMut::from("GET / HTTP/1.1\r\nHost: x\r\n");
        assert!(parse_request_head(&mut partial, MAX).unwrap().is_none());
        assert_eq!(partial.len(), 25);
    }

    #[test]
    fn bare_lf_line_ends_are_tolerated() {
        let h = head("GET / HTTP/1.1\nHost: x\n\n");
        assert_eq!(h.request.headers()["host"], "x");
    }

    #[test]
    fn request_target_forms() {
        let h = head("GET http://example.com/p HTTP/1.1\r\n\r\n");
        assert_eq!(
            h.request.uri().host(),
            Some("example.com"),
            "absolute-form needs no Host"
        );
        let h = head("OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(h.request.uri(), "*");
        let h = head("CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n");
        assert_eq!(h.request.uri().port_u16(), Some(443));
        assert_eq!(rejected("GET * HTTP/1.1\r\nHost: x\r\n\r\n"), 400);
        assert_eq!(
            rejected("GET example.com:80 HTTP/1.1\r\nHost: x\r\n\r\n"),
            400
        );
        assert_eq!(rejected("GET /a b HTTP/1.1\r\nHost: x\r\n\r\n"), 400);
    }

    #[test]
    fn host_rules() {
        assert_eq!(rejected("GET / HTTP/1.1\r\n\r\n"), 400);
        assert_eq!(
            rejected("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"),
            400
        );
        assert!(head("GET / HTTP/1.0\r\n\r\n").request.headers().is_empty());
    }

    #[test]
    fn smuggling_defences() {
        let both =
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(rejected(both), 400);
        assert_eq!(
            rejected("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, gzip\r\n\r\n"),
            501
        );
        assert_eq!(
            rejected("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n"),
            501
        );
        assert_eq!(
            rejected(
                "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n"
            ),
            501,
            "chunked applied twice"
        );
        assert_eq!(
            rejected("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"),
            400
        );
        assert_eq!(
            rejected(
                "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n"
            ),
            400
        );
        assert_eq!(
            rejected("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n"),
            400
        );
        assert_eq!(
            rejected("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0x10\r\n\r\n"),
            400
        );
        // Identical repeats are one length (RFC 9110 §8.6).
        let h =
            head("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n");
        assert_eq!(h.framing, BodyFraming::Length(3));
        let h = head("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n");
        assert_eq!(h.framing, BodyFraming::Chunked);
        // obs-fold and whitespace before the colon.
        assert_eq!(
            rejected("GET / HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n 2\r\n\r\n"),
            400
        );
        assert_eq!(rejected("GET / HTTP/1.1\r\nHost : x\r\n\r\n"), 400);
    }

    #[test]
    fn size_limits_answer_431() {
        let many: String = (0..=MAX_HEADERS).map(|i| format!("X-{i}: v\r\n")).collect();
        assert_eq!(
            rejected(&format!("GET / HTTP/1.1\r\nHost: x\r\n{many}\r\n")),
            431
        );
        let big = "a".repeat(MAX);
        let mut partial = BytesMut::from(format!("GET / HTTP/1.1\r\nX: {big}").as_str());
        let e = parse_request_head(&mut partial, MAX).unwrap_err();
        assert_eq!(e.status, 431);
        let complete = format!("GET / HTTP/1.1\r\nHost: x\r\nX: {big}\r\n\r\n");
        assert_eq!(rejected(&complete), 431);
    }

    #[test]
    fn persistence_expectations_and_upgrades() {
        assert!(!head("GET / HTTP/1.1\r\nHost: x\r\nConnection: Close\r\n\r\n").keep_alive);
        assert!(!head("GET / HTTP/1.0\r\n\r\n").keep_alive);
        assert!(head("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").keep_alive);
        let h =
            head("PUT / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-Continue\r\n\r\n");
        assert!(h.expect_continue);
        let h = head("GET / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n\r\n");
        assert!(!h.expect_continue, "nothing to continue without a body");
        let h = head("GET / HTTP/1.1\r\nHost: x\r\nTE: trailers\r\n\r\n");
        assert!(h.accepts_trailers);
        let h = head(
            "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\n\r\n",
        );
        assert!(h.wants_upgrade);
        let h = head("GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\r\n");
        assert!(!h.wants_upgrade);
    }

    fn encoded(
        status: u16,
        headers: &[(&str, &str)],
        framing: ResponseFraming,
        p: Persistence,
    ) -> String {
        let mut map = HeaderMap::new();
        for (k, v) in headers {
            map.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        let mut out = Vec::new();
        let date = HeaderValue::from_static("Tue, 24 Nov 2026 09:00:00 GMT");
        encode_response_head(
            StatusCode::from_u16(status).unwrap(),
            &map,
            framing,
            p,
            &date,
            &mut out,
        );
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn response_heads() {
        let s = encoded(
            200,
            &[
                ("x-a", "1"),
                ("content-length", "9"),
                ("transfer-encoding", "chunked"),
            ],
            ResponseFraming::Length(5),
            Persistence::Default,
        );
        assert_eq!(
            s,
            "HTTP/1.1 200 OK\r\nx-a: 1\r\ncontent-length: 5\r\ndate: Tue, 24 Nov 2026 09:00:00 GMT\r\n\r\n"
        );
        let s = encoded(
            404,
            &[("date", "then"), ("connection", "x")],
            ResponseFraming::Chunked,
            Persistence::Close,
        );
        assert_eq!(
            s,
            "HTTP/1.1 404 Not Found\r\ndate: then\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n"
        );
        let s = encoded(
            200,
            &[("content-length", "7")],
            ResponseFraming::None { keep_length: true },
            Persistence::KeepAlive,
        );
        assert!(
            s.contains("content-length: 7\r\nconnection: keep-alive\r\n"),
            "{s}"
        );
        let s = encoded(
            204,
            &[("content-length", "7")],
            ResponseFraming::None { keep_length: false },
            Persistence::Default,
        );
        assert!(!s.contains("content-length"), "{s}");
        let s = encoded(
            101,
            &[("upgrade", "websocket"), ("connection", "upgrade")],
            ResponseFraming::None { keep_length: false },
            Persistence::Close,
        );
        assert!(s.starts_with("HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\ndate"), "{s}");
    }

    #[test]
    fn head_responses_give_the_length_they_would_have_had() {
        let s = encoded(
            200,
            &[],
            ResponseFraming::Head(Some(5)),
            Persistence::Default,
        );
        assert!(s.contains("content-length: 5\r\n"), "{s}");
        let own = [("content-length", "7")];
        let s = encoded(
            200,
            &own,
            ResponseFraming::Head(Some(5)),
            Persistence::Default,
        );
        assert!(
            s.contains("content-length: 7\r\n") && !s.contains(": 5"),
            "{s}"
        );
    }

    #[test]
    fn framing_choices() {
        let none = HeaderMap::new();
        let get = Method::GET;
        let v11 = Version::HTTP_11;
        assert_eq!(
            response_framing(&Method::HEAD, v11, StatusCode::OK, &none, Some(3)),
            ResponseFraming::Head(Some(3))
        );
        assert_eq!(
            response_framing(&get, v11, StatusCode::NOT_MODIFIED, &none, None),
            ResponseFraming::None { keep_length: true }
        );
        assert_eq!(
            response_framing(&get, v11, StatusCode::NO_CONTENT, &none, None),
            ResponseFraming::None { keep_length: false }
        );
        assert_eq!(
            response_framing(&get, v11, StatusCode::OK, &none, Some(3)),
            ResponseFraming::Length(3)
        );
        assert_eq!(
            response_framing(&get, v11, StatusCode::OK, &none, None),
            ResponseFraming::Chunked
        );
        assert_eq!(
            response_framing(&get, Version::HTTP_10, StatusCode::OK, &none, None),
            ResponseFraming::UntilClose
        );
        let mut declared = HeaderMap::new();
        declared.insert(CONTENT_LENGTH, HeaderValue::from_static("10"));
        assert_eq!(
            response_framing(&get, v11, StatusCode::OK, &declared, None),
            ResponseFraming::Length(10)
        );
        // A body of known length is framed by it, whatever a field left behind says.
        assert_eq!(
            response_framing(&get, v11, StatusCode::OK, &declared, Some(4)),
            ResponseFraming::Length(4)
        );
    }

    #[test]
    fn chunk_lines() {
        let mut buf = [0; 18];
        assert_eq!(chunk_size_line(0x1a2b, &mut buf), b"1a2b\r\n");
        assert_eq!(
            chunk_size_line(usize::MAX, &mut buf),
            b"ffffffffffffffff\r\n"
        );
        let mut out = Vec::new();
        let mut t = HeaderMap::new();
        t.insert("grpc-status", HeaderValue::from_static("0"));
        encode_last_chunk(Some(&t), &mut out);
        assert_eq!(out, b"0\r\ngrpc-status: 0\r\n\r\n");
    }
}
