//! HTTP/1.1 client message syntax, free of I/O (RFC 9112): the request head we write, the
//! response head we parse, how the response body is delimited (§6.3), whether the connection
//! persists (§9.3), and the chunked body decoder (§7.1).
//!
//! Strict where leniency lets two parties disagree on where a message ends (response
//! smuggling): both Content-Length and Transfer-Encoding, differing Content-Length values,
//! Transfer-Encoding in HTTP/1.0, chunk lines not ended by CRLF, oversized heads are all errors.

use bytes::{BufMut, Bytes, BytesMut};
use http::header::{
    self, CONNECTION, CONTENT_LENGTH, HeaderName, HeaderValue, InvalidHeaderName,
    TRANSFER_ENCODING, UPGRADE,
};
use http::{HeaderMap, Method, StatusCode, Uri, Version};
use std::mem::MaybeUninit;

/// The largest response head (status line and header fields) accepted.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;
/// The most header fields in a response head (or a trailer section).
pub const MAX_HEADERS: usize = 100;
/// The longest chunk-size line (size and extensions).
const MAX_CHUNK_LINE: usize = 4096;
/// The largest trailer section.
const MAX_TRAILER_BYTES: usize = 64 * 1024;

/// Why an upstream's message cannot be read (or a request cannot be framed).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    #[error("malformed response head: {0}")]
    Head(httparse::Error),
    #[error("response head larger than {MAX_HEAD_BYTES} bytes")]
    HeadTooLarge,
    #[error("response head with more than {MAX_HEADERS} header fields")]
    TooManyHeaders,
    #[error("invalid response header field {0:?}")]
    HeaderField(String),
    #[error("response with both Content-Length and Transfer-Encoding")]
    LengthAndTransferEncoding,
    #[error("invalid Content-Length in the response")]
    InvalidContentLength,
    #[error("differing Content-Length values in the response")]
    DifferingContentLengths,
    #[error("Transfer-Encoding in an HTTP/1.0 response")]
    TransferEncodingInHttp10,
    #[error("response Transfer-Encoding applies chunked other than last")]
    ChunkedNotLast,
    #[error("101 Switching Protocols to a request that asked for no upgrade")]
    UnexpectedSwitch,
    #[error("malformed chunk size line")]
    ChunkSize,
    #[error("chunk size line longer than {MAX_CHUNK_LINE} bytes")]
    ChunkLineTooLong,
    #[error("chunk data not followed by CRLF")]
    ChunkDataEnd,
    #[error("malformed trailer section: {0}")]
    Trailers(httparse::Error),
    #[error("trailer section larger than {MAX_TRAILER_BYTES} bytes")]
    TrailersTooLarge,
    #[error("invalid Content-Length in the request")]
    RequestContentLength,
}

/// How the request body is delimited on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestFraming {
    /// No body.
    Empty,
    Length(u64),
    Chunked,
}

/// What is known of the request body before it is read.
#[derive(Debug, Clone, Copy)]
pub struct BodyHint {
    pub is_end_stream: bool,
    pub exact_len: Option<u64>,
}

/// Writes the request head (origin-form target, HTTP/1.1) into `out` and says how the body
/// follows: the request's own Content-Length when it has one, else the body's known length,
/// else chunked. A Transfer-Encoding header is never passed through: we frame the body.
pub fn encode_request_head(
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: BodyHint,
    out: &mut BytesMut,
) -> Result<EncodedRequest, ProtocolError> {
    let start = out.len();
    let target = uri.path_and_query().map_or("/", |p| p.as_str());
    let target = if target.is_empty() { "/" } else { target };
    out.reserve(64 + target.len() + headers.len() * 32);
    out.put_slice(method.as_str().as_bytes());
    out.put_u8(b' ');
    out.put_slice(target.as_bytes());
    out.put_slice(b" HTTP/1.1\r\n");
    // The fields that matter here are noted as they are written: most requests carry none of
    // them, and each lookup would hash its name again.
    let (mut has_length, mut connection, mut upgrade) = (false, false, false);
    for (name, value) in headers {
        if name == TRANSFER_ENCODING {
            continue;
        }
        has_length |= name == CONTENT_LENGTH;
        connection |= name == CONNECTION;
        upgrade |= name == UPGRADE;
        put_field(out, name.as_str().as_bytes(), value.as_bytes());
    }
    let framing = if has_length {
        let Some(len) = content_length(headers.get_all(CONTENT_LENGTH).iter())
            .ok()
            .flatten()
        else {
            out.truncate(start);
            return Err(ProtocolError::RequestContentLength);
        };
        if len == 0 {
            RequestFraming::Empty
        } else {
            RequestFraming::Length(len)
        }
    } else if body.is_end_stream {
        RequestFraming::Empty
    } else {
        match body.exact_len {
            Some(0) => RequestFraming::Empty,
            Some(len) => RequestFraming::Length(len),
            None => RequestFraming::Chunked,
        }
    };
    match framing {
        RequestFraming::Length(len) if !has_length => {
            let mut digits = itoa_buf();
            put_field(out, b"content-length", format_u64(len, &mut digits));
        }
        RequestFraming::Chunked => put_field(out, b"transfer-encoding", b"chunked"),
        // Methods that define a meaning for content say it is empty (RFC 9110 §8.6).
        RequestFraming::Empty
            if !has_length && matches!(*method, Method::POST | Method::PUT | Method::PATCH) =>
        {
            put_field(out, b"content-length", b"0");
        }
        _ => {}
    }
    out.put_slice(b"\r\n");
    Ok(EncodedRequest {
        framing,
        closes: connection && has_close(headers),
        upgrade,
    })
}

/// A request head as written, and what its fields said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EncodedRequest {
    pub framing: RequestFraming,
    /// Its Connection field lists `close`.
    pub closes: bool,
    /// It carries an Upgrade field.
    pub upgrade: bool,
}

fn put_field(out: &mut BytesMut, name: &[u8], value: &[u8]) {
    out.put_slice(name);
    out.put_slice(b": ");
    out.put_slice(value);
    out.put_slice(b"\r\n");
}

pub fn itoa_buf() -> [u8; 20] {
    [0; 20]
}

/// `n` in decimal, written at the end of `buf`.
pub fn format_u64(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[i..];
        }
    }
}

/// Writes a chunk-size line for `len` bytes of data.
pub fn chunk_size_line(len: usize) -> Bytes {
    Bytes::from(format!("{len:x}\r\n"))
}

/// A parsed response head.
#[derive(Debug)]
pub struct ResponseHead {
    pub status: StatusCode,
    pub version: Version,
    pub headers: HeaderMap,
    /// Which framing fields are present, noted while the map was built: most responses carry
    /// only Content-Length, and a lookup afterwards hashes the name again.
    framing_fields: FramingFields,
}

#[derive(Debug, Default, Clone, Copy)]
struct FramingFields {
    content_length: bool,
    transfer_encoding: bool,
    /// A Connection field kept in the map (one that lists more than keep-alive and close).
    connection: bool,
    /// `close` was among the tokens of a Connection field that was not kept.
    close: bool,
}

impl FramingFields {
    /// Notes a field; false when it is a Connection field of only `keep-alive` and `close`,
    /// which is not kept: such a field concerns this hop alone, and the proxy would remove it
    /// from the relayed response anyway (at a cost of a hashed insert and removal per response).
    fn note(&mut self, name: &HeaderName, value: &[u8]) -> bool {
        if *name == CONTENT_LENGTH {
            self.content_length = true;
        } else if *name == TRANSFER_ENCODING {
            self.transfer_encoding = true;
        } else if *name == CONNECTION {
            let mut close = false;
            let plain = value.split(|b| *b == b',').all(|token| {
                let token = token.trim_ascii();
                if token.eq_ignore_ascii_case(b"close") {
                    close = true;
                    return true;
                }
                token.eq_ignore_ascii_case(b"keep-alive")
            });
            if plain {
                self.close |= close;
                return false;
            }
            self.connection = true;
        }
        true
    }
}

/// Writes `items` into the start of `slots` and returns them. For per-head scratch arrays on the
/// stack: written only as far as a head uses them (zeroing 100 slots per head costs more than
/// parsing a small one).
pub fn fill_prefix<T: Copy>(slots: &mut [MaybeUninit<T>], items: impl Iterator<Item = T>) -> &[T] {
    let mut written = 0;
    for (slot, item) in slots.iter_mut().zip(items) {
        slot.write(item);
        written += 1;
    }
    // SAFETY: the first `written` slots were just initialised.
    unsafe { std::slice::from_raw_parts(slots.as_ptr().cast(), written) }
}

/// A field name off the wire as a `HeaderName`. The common fields, spelled as most senders spell
/// them (or lowercase), are matched by a comparison tree on their bytes: `from_bytes` would
/// lowercase each name through a table and then look it up (about 100 instructions a field).
pub fn field_name(raw: &[u8]) -> Result<HeaderName, InvalidHeaderName> {
    Ok(match raw {
        b"Host" | b"host" => header::HOST,
        b"User-Agent" | b"user-agent" => header::USER_AGENT,
        b"Accept" | b"accept" => header::ACCEPT,
        b"Accept-Encoding" | b"accept-encoding" => header::ACCEPT_ENCODING,
        b"Accept-Language" | b"accept-language" => header::ACCEPT_LANGUAGE,
        b"Connection" | b"connection" => header::CONNECTION,
        b"Content-Length" | b"content-length" => header::CONTENT_LENGTH,
        b"Content-Type" | b"content-type" => header::CONTENT_TYPE,
        b"Cookie" | b"cookie" => header::COOKIE,
        b"Authorization" | b"authorization" => header::AUTHORIZATION,
        b"Referer" | b"referer" => header::REFERER,
        b"Origin" | b"origin" => header::ORIGIN,
        b"Cache-Control" | b"cache-control" => header::CACHE_CONTROL,
        b"Upgrade" | b"upgrade" => header::UPGRADE,
        b"If-None-Match" | b"if-none-match" => header::IF_NONE_MATCH,
        b"If-Modified-Since" | b"if-modified-since" => header::IF_MODIFIED_SINCE,
        b"Transfer-Encoding" | b"transfer-encoding" => header::TRANSFER_ENCODING,
        b"Expect" | b"expect" => header::EXPECT,
        b"Pragma" | b"pragma" => header::PRAGMA,
        b"TE" | b"te" => header::TE,
        b"Server" | b"server" => header::SERVER,
        b"Date" | b"date" => header::DATE,
        b"Last-Modified" | b"last-modified" => header::LAST_MODIFIED,
        b"ETag" | b"etag" => header::ETAG,
        b"Accept-Ranges" | b"accept-ranges" => header::ACCEPT_RANGES,
        b"Vary" | b"vary" => header::VARY,
        b"Content-Encoding" | b"content-encoding" => header::CONTENT_ENCODING,
        b"Set-Cookie" | b"set-cookie" => header::SET_COOKIE,
        b"Location" | b"location" => header::LOCATION,
        b"Expires" | b"expires" => header::EXPIRES,
        b"Age" | b"age" => header::AGE,
        _ => return HeaderName::from_bytes(raw),
    })
}

/// Parses a response head at the start of `buf`, consuming it when complete. None: more bytes
/// are needed (an error when the head is already too large).
pub fn parse_response_head(buf: &mut BytesMut) -> Result<Option<ResponseHead>, ProtocolError> {
    let mut fields = [const { MaybeUninit::uninit() }; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut []);
    // Uninitialised fields: no 3 KiB of zeroes per response.
    let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut response,
        buf,
        &mut fields,
    );
    let len = match parsed {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() >= MAX_HEAD_BYTES => {
            return Err(ProtocolError::HeadTooLarge);
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(ProtocolError::TooManyHeaders),
        Err(error) => return Err(ProtocolError::Head(error)),
    };
    if len > MAX_HEAD_BYTES {
        return Err(ProtocolError::HeadTooLarge);
    }
    let status = response
        .code
        .and_then(|c| StatusCode::from_u16(c).ok())
        .ok_or(ProtocolError::Head(httparse::Error::Status))?;
    let version = match response.version {
        Some(0) => Version::HTTP_10,
        _ => Version::HTTP_11,
    };
    // Offsets of names and values: the values share the head's bytes once it is split off the
    // read buffer (no copy, no allocation besides the map).
    let base = buf.as_ptr() as usize;
    let mut slots = [const { MaybeUninit::uninit() }; MAX_HEADERS];
    let spans = fill_prefix(
        &mut slots,
        response.headers.iter().map(|field| {
            let name = field.name.as_ptr() as usize - base;
            let value = field.value.as_ptr() as usize - base;
            // Within MAX_HEAD_BYTES: the casts cannot truncate.
            (
                name as u32,
                field.name.len() as u32,
                value as u32,
                field.value.len() as u32,
            )
        }),
    );
    let head = buf.split_to(len).freeze();
    let mut headers = HeaderMap::with_capacity(spans.len());
    let mut framing_fields = FramingFields::default();
    for &(name, name_len, value, value_len) in spans {
        let name = &head[name as usize..(name + name_len) as usize];
        let name = field_name(name)
            .map_err(|_| ProtocolError::HeaderField(String::from_utf8_lossy(name).into()))?;
        let value = value as usize..(value + value_len) as usize;
        if !framing_fields.note(&name, &head[value.clone()]) {
            continue;
        }
        // SAFETY: httparse accepted the value, which admits only HTAB, SP, VCHAR and obs-text:
        // a subset of what a HeaderValue allows (no second validation pass, as in hyper).
        let value = unsafe { HeaderValue::from_maybe_shared_unchecked(head.slice(value)) };
        headers.append(name, value);
    }
    Ok(Some(ResponseHead {
        status,
        version,
        headers,
        framing_fields,
    }))
}

/// How a response body is delimited (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseFraming {
    /// No body whatever the headers say: HEAD, 1xx, 204, 304.
    Empty,
    Length(u64),
    Chunked,
    /// Read until the upstream closes the connection.
    UntilClose,
}

pub fn response_framing(
    method: &Method,
    head: &ResponseHead,
) -> Result<ResponseFraming, ProtocolError> {
    let status = head.status;
    if *method == Method::HEAD
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        return Ok(ResponseFraming::Empty);
    }
    let has_te = head.framing_fields.transfer_encoding;
    let length = if head.framing_fields.content_length {
        content_length(head.headers.get_all(CONTENT_LENGTH).iter())?
    } else {
        None
    };
    if has_te {
        if length.is_some() {
            return Err(ProtocolError::LengthAndTransferEncoding);
        }
        if head.version == Version::HTTP_10 {
            return Err(ProtocolError::TransferEncodingInHttp10);
        }
        return match chunked_position(&head.headers) {
            Chunked::Last => Ok(ResponseFraming::Chunked),
            Chunked::Absent => Ok(ResponseFraming::UntilClose),
            Chunked::NotLast => Err(ProtocolError::ChunkedNotLast),
        };
    }
    Ok(match length {
        Some(0) => ResponseFraming::Empty,
        Some(len) => ResponseFraming::Length(len),
        None => ResponseFraming::UntilClose,
    })
}

pub enum Chunked {
    Absent,
    Last,
    NotLast,
}

/// Where `chunked` is among the transfer codings (it may only be applied once, last).
pub fn chunked_position(headers: &HeaderMap) -> Chunked {
    let mut codings = headers
        .get_all(TRANSFER_ENCODING)
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b','))
        .map(|c| c.trim_ascii())
        .filter(|c| !c.is_empty())
        .peekable();
    let mut seen = false;
    while let Some(coding) = codings.next() {
        if coding.eq_ignore_ascii_case(b"chunked") {
            if seen || codings.peek().is_some() {
                return Chunked::NotLast;
            }
            seen = true;
        }
    }
    if seen { Chunked::Last } else { Chunked::Absent }
}

/// The Content-Length of a message: None without one; every value (repeated fields, comma
/// lists) must be the same decimal number.
pub fn content_length<'a>(
    values: impl Iterator<Item = &'a HeaderValue>,
) -> Result<Option<u64>, ProtocolError> {
    let mut length = None;
    for value in values {
        for item in value.as_bytes().split(|b| *b == b',') {
            let item = item.trim_ascii();
            if item.is_empty() || item.len() > 19 || !item.iter().all(u8::is_ascii_digit) {
                return Err(ProtocolError::InvalidContentLength);
            }
            let n = item.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
            match length {
                Some(seen) if seen != n => return Err(ProtocolError::DifferingContentLengths),
                _ => length = Some(n),
            }
        }
    }
    Ok(length)
}

/// Whether a message's Connection field lists `close`.
pub fn has_close(headers: &HeaderMap) -> bool {
    headers.get_all(CONNECTION).iter().any(|v| {
        v.as_bytes()
            .split(|b| *b == b',')
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"))
    })
}

/// Whether the connection may carry another request after this response (RFC 9112 §9.3): an
/// HTTP/1.1 response without `Connection: close` (HTTP/1.0 keep-alive is not honoured: rare,
/// and closing is always safe).
pub fn response_keeps_alive(head: &ResponseHead) -> bool {
    head.version == Version::HTTP_11
        && !head.framing_fields.close
        && !(head.framing_fields.connection && has_close(&head.headers))
}

/// Decodes a chunked body (RFC 9112 §7.1) from a buffer the caller fills.
#[derive(Debug)]
pub struct ChunkedDecoder {
    state: ChunkState,
    /// Parsed trailers not yet handed out.
    trailers: Option<HeaderMap>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    /// Expecting a chunk-size line.
    Size,
    /// Inside chunk data: this many bytes left.
    Data(u64),
    /// Expecting the CRLF after chunk data.
    DataEnd,
    /// After the last chunk: expecting the trailer section (or its empty line).
    Trailers,
    Done,
}

/// What the decoder found next.
#[derive(Debug, PartialEq)]
pub enum Decoded {
    Data(Bytes),
    Trailers(HeaderMap),
    /// The body is complete.
    End,
    /// More input is needed.
    More,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl ChunkedDecoder {
    pub fn new() -> Self {
        ChunkedDecoder {
            state: ChunkState::Size,
            trailers: None,
        }
    }

    /// Whether every byte of the body has been consumed (trailers may still be handed out).
    pub fn is_complete(&self) -> bool {
        self.state == ChunkState::Done
    }

    /// Whether nothing is left to hand out.
    pub fn is_end(&self) -> bool {
        self.state == ChunkState::Done && self.trailers.is_none()
    }

    /// Consumes framing (size lines, CRLFs, the trailer section) until chunk data, the end, or
    /// the end of `buf`. Leaves the state unchanged on an error.
    pub fn advance(&mut self, buf: &mut BytesMut) -> Result<(), ProtocolError> {
        loop {
            match self.state {
                ChunkState::Size => {
                    let Some(size) = chunk_size(buf)? else {
                        return Ok(());
                    };
                    self.state = if size == 0 {
                        ChunkState::Trailers
                    } else {
                        ChunkState::Data(size)
                    };
                }
                ChunkState::DataEnd => {
                    if buf.len() < 2 {
                        if buf.first().is_some_and(|b| *b != b'\r') {
                            return Err(ProtocolError::ChunkDataEnd);
                        }
                        return Ok(());
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err(ProtocolError::ChunkDataEnd);
                    }
                    let _ = buf.split_to(2);
                    self.state = ChunkState::Size;
                }
                ChunkState::Trailers => {
                    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
                    match httparse::parse_headers(buf, &mut fields) {
                        Ok(httparse::Status::Complete((len, fields))) => {
                            if len > MAX_TRAILER_BYTES {
                                return Err(ProtocolError::TrailersTooLarge);
                            }
                            let mut trailers = HeaderMap::new();
                            for field in fields.iter() {
                                let name = field_name(field.name.as_bytes())
                                    .map_err(|_| ProtocolError::HeaderField(field.name.into()))?;
                                let value = HeaderValue::from_bytes(field.value)
                                    .map_err(|_| ProtocolError::HeaderField(field.name.into()))?;
                                trailers.append(name, value);
                            }
                            let _ = buf.split_to(len);
                            self.trailers = (!trailers.is_empty()).then_some(trailers);
                            self.state = ChunkState::Done;
                        }
                        Ok(httparse::Status::Partial) if buf.len() > MAX_TRAILER_BYTES => {
                            return Err(ProtocolError::TrailersTooLarge);
                        }
                        Ok(httparse::Status::Partial) => return Ok(()),
                        Err(error) => return Err(ProtocolError::Trailers(error)),
                    }
                }
                ChunkState::Data(_) | ChunkState::Done => return Ok(()),
            }
        }
    }

    /// The next piece of the body from `buf`.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Decoded, ProtocolError> {
        self.advance(buf)?;
        match self.state {
            ChunkState::Data(left) if !buf.is_empty() => {
                let take = usize::try_from(left).map_or(buf.len(), |l| l.min(buf.len()));
                let data = buf.split_to(take).freeze();
                let left = left - take as u64;
                self.state = if left == 0 {
                    ChunkState::DataEnd
                } else {
                    ChunkState::Data(left)
                };
                Ok(Decoded::Data(data))
            }
            ChunkState::Done => Ok(match self.trailers.take() {
                Some(trailers) => Decoded::Trailers(trailers),
                None => Decoded::End,
            }),
            _ => Ok(Decoded::More),
        }
    }
}

/// Parses a chunk-size line (`1a;name=value\r\n`) at the start of `buf`, consuming it. None:
/// the line is not complete yet.
fn chunk_size(buf: &mut BytesMut) -> Result<Option<u64>, ProtocolError> {
    let Some(lf) = memchr::memchr(b'\n', buf) else {
        if buf.len() > MAX_CHUNK_LINE {
            return Err(ProtocolError::ChunkLineTooLong);
        }
        return Ok(None);
    };
    if lf + 1 > MAX_CHUNK_LINE {
        return Err(ProtocolError::ChunkLineTooLong);
    }
    let line = match buf[..lf].strip_suffix(b"\r") {
        Some(line) => line,
        None => return Err(ProtocolError::ChunkSize),
    };
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 || digits > 16 {
        return Err(ProtocolError::ChunkSize);
    }
    let rest = line[digits..].trim_ascii_start();
    // Extensions are ignored, but must be extensions (and hold no bare CR).
    if !(rest.is_empty() || rest[0] == b';') || rest.contains(&b'\r') {
        return Err(ProtocolError::ChunkSize);
    }
    let size = line[..digits].iter().fold(0u64, |n, d| {
        let v = match d {
            b'0'..=b'9' => d - b'0',
            b'a'..=b'f' => d - b'a' + 10,
            _ => d - b'A' + 10,
        };
        (n << 4) | u64::from(v)
    });
    let _ = buf.split_to(lf + 1);
    Ok(Some(size))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(bytes: &str) -> Result<Option<ResponseHead>, ProtocolError> {
        parse_response_head(&mut BytesMut::from(bytes))
    }

    fn framing(method: Method, bytes: &str) -> Result<ResponseFraming, ProtocolError> {
        response_framing(&method, &head(bytes)?.expect("complete head"))
    }

    #[test]
    fn field_names_match_the_general_parse_in_every_spelling() {
        let names = [
            "Host",
            "User-Agent",
            "Accept",
            "Accept-Encoding",
            "Accept-Language",
            "Connection",
            "Content-Length",
            "Content-Type",
            "Cookie",
            "Authorization",
            "Referer",
            "Origin",
            "Cache-Control",
            "Upgrade",
            "If-None-Match",
            "If-Modified-Since",
            "Transfer-Encoding",
            "Expect",
            "Pragma",
            "TE",
            "Server",
            "Date",
            "Last-Modified",
            "ETag",
            "Accept-Ranges",
            "Vary",
            "Content-Encoding",
            "Set-Cookie",
            "Location",
            "Expires",
            "Age",
            "Keep-Alive",
            "X-Forwarded-For",
            "Warning",
            "Via",
        ];
        for name in names {
            for spelling in [
                name.to_owned(),
                name.to_ascii_lowercase(),
                name.to_ascii_uppercase(),
                format!("{name}x"),
            ] {
                let raw = spelling.as_bytes();
                assert_eq!(
                    field_name(raw).ok(),
                    Some(HeaderName::from_bytes(raw).unwrap()),
                    "{spelling}"
                );
            }
        }
        for bad in ["", "Host:", "Content Type", "Da\x7fte"] {
            assert!(field_name(bad.as_bytes()).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn request_heads_carry_their_framing() {
        let encode = |method: Method, headers: &[(&str, &str)], hint: BodyHint| {
            let mut map = HeaderMap::new();
            for (k, v) in headers {
                map.append(
                    HeaderName::from_bytes(k.as_bytes()).unwrap(),
                    v.parse().unwrap(),
                );
            }
            let mut out = BytesMut::new();
            let uri: Uri = "/a?b=1".parse().unwrap();
            let encoded = encode_request_head(&method, &uri, &map, hint, &mut out);
            (
                encoded.map(|e| e.framing),
                String::from_utf8(out.to_vec()).unwrap(),
            )
        };
        let none = BodyHint {
            is_end_stream: true,
            exact_len: Some(0),
        };
        let (f, text) = encode(Method::GET, &[("host", "up")], none);
        assert_eq!(f, Ok(RequestFraming::Empty));
        assert_eq!(text, "GET /a?b=1 HTTP/1.1\r\nhost: up\r\n\r\n");
        // POST without a body says so.
        let (_, text) = encode(Method::POST, &[("host", "up")], none);
        assert_eq!(
            text,
            "POST /a?b=1 HTTP/1.1\r\nhost: up\r\ncontent-length: 0\r\n\r\n"
        );
        let known = BodyHint {
            is_end_stream: false,
            exact_len: Some(1234),
        };
        let (f, text) = encode(Method::PUT, &[], known);
        assert_eq!(f, Ok(RequestFraming::Length(1234)));
        assert!(text.ends_with("content-length: 1234\r\n\r\n"), "{text}");
        // The request's own length wins; Transfer-Encoding is ours to write.
        let (f, text) = encode(
            Method::POST,
            &[("content-length", "5"), ("transfer-encoding", "chunked")],
            known,
        );
        assert_eq!(f, Ok(RequestFraming::Length(5)));
        assert_eq!(text, "POST /a?b=1 HTTP/1.1\r\ncontent-length: 5\r\n\r\n");
        let unknown = BodyHint {
            is_end_stream: false,
            exact_len: None,
        };
        let (f, text) = encode(Method::POST, &[], unknown);
        assert_eq!(f, Ok(RequestFraming::Chunked));
        assert!(
            text.ends_with("transfer-encoding: chunked\r\n\r\n"),
            "{text}"
        );
        let (f, text) = encode(Method::POST, &[("content-length", "5, 6")], unknown);
        assert_eq!(f, Err(ProtocolError::RequestContentLength));
        assert_eq!(text, "", "nothing of a refused head stays in the buffer");
        // What the fields say is noted while they are written.
        let mut map = HeaderMap::new();
        let mut out = BytesMut::new();
        let uri: Uri = "/".parse().unwrap();
        let said = |map: &HeaderMap, out: &mut BytesMut| {
            let e = encode_request_head(&Method::GET, &uri, map, none, out).unwrap();
            (e.closes, e.upgrade)
        };
        assert_eq!(said(&map, &mut out), (false, false));
        map.insert(CONNECTION, HeaderValue::from_static("keep-alive, Close"));
        map.insert(UPGRADE, HeaderValue::from_static("websocket"));
        assert_eq!(said(&map, &mut out), (true, true));
        map.insert(CONNECTION, HeaderValue::from_static("upgrade"));
        assert_eq!(said(&map, &mut out), (false, true));
        assert_eq!(format_u64(0, &mut itoa_buf()), b"0");
        assert_eq!(
            format_u64(u64::MAX, &mut itoa_buf()),
            u64::MAX.to_string().as_bytes()
        );
    }

    #[test]
    fn response_heads_parse_without_copying_values() {
        let mut buf =
            BytesMut::from("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-A: 1\r\nx-a: 2\r\n\r\nok");
        let h = parse_response_head(&mut buf).unwrap().unwrap();
        assert_eq!(h.status, StatusCode::OK);
        assert_eq!(h.version, Version::HTTP_11);
        assert_eq!(h.headers["content-length"], "2");
        let xa: Vec<_> = h.headers.get_all("x-a").iter().collect();
        assert_eq!(xa, ["1", "2"]);
        assert_eq!(&buf[..], b"ok", "the head is consumed, the body left");
        assert!(head("HTTP/1.1 200 OK\r\nContent-Le").unwrap().is_none());
        assert!(matches!(
            head("HTTP/2 200\r\n\r\n"),
            Err(ProtocolError::Head(_))
        ));
        assert!(matches!(
            head("HTTP/1.1 200 OK\r\nbad header\r\n\r\n"),
            Err(ProtocolError::Head(_))
        ));
        // Obsolete line folding is refused.
        assert!(head("HTTP/1.1 200 OK\r\na: 1\r\n b\r\n\r\n").is_err());
    }

    #[test]
    fn oversized_heads_are_refused() {
        let long = format!("HTTP/1.1 200 OK\r\nx: {}\r\n", "a".repeat(MAX_HEAD_BYTES));
        assert_eq!(head(&long).unwrap_err(), ProtocolError::HeadTooLarge);
        let many: String = (0..=MAX_HEADERS).map(|i| format!("h{i}: v\r\n")).collect();
        assert_eq!(
            head(&format!("HTTP/1.1 200 OK\r\n{many}\r\n")).unwrap_err(),
            ProtocolError::TooManyHeaders
        );
    }

    #[test]
    fn response_bodies_are_delimited_per_rfc_9112() {
        use ResponseFraming::*;
        let get = |h: &str| framing(Method::GET, h);
        assert_eq!(
            get("HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n"),
            Ok(Length(10))
        );
        assert_eq!(
            get("HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"),
            Ok(Empty)
        );
        assert_eq!(
            get("HTTP/1.1 200 OK\r\ncontent-length: 7, 7\r\ncontent-length: 7\r\n\r\n"),
            Ok(Length(7))
        );
        assert_eq!(
            get("HTTP/1.1 200 OK\r\ntransfer-encoding: Chunked\r\n\r\n"),
            Ok(Chunked)
        );
        assert_eq!(
            get("HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\ntransfer-encoding: chunked\r\n\r\n"),
            Ok(Chunked)
        );
        assert_eq!(
            get("HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\n"),
            Ok(UntilClose)
        );
        assert_eq!(get("HTTP/1.1 200 OK\r\n\r\n"), Ok(UntilClose));
        assert_eq!(get("HTTP/1.0 200 OK\r\n\r\n"), Ok(UntilClose));
        // No body whatever the headers say.
        for h in [
            "HTTP/1.1 204 No Content\r\ncontent-length: 5\r\n\r\n",
            "HTTP/1.1 304 Not Modified\r\ntransfer-encoding: chunked\r\n\r\n",
            "HTTP/1.1 100 Continue\r\n\r\n",
        ] {
            assert_eq!(get(h), Ok(Empty), "{h}");
        }
        assert_eq!(
            framing(
                Method::HEAD,
                "HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n"
            ),
            Ok(Empty)
        );
    }

    #[test]
    fn ambiguous_framing_is_refused() {
        let get = |h: &str| framing(Method::GET, h);
        assert_eq!(
            get("HTTP/1.1 200 OK\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n"),
            Err(ProtocolError::LengthAndTransferEncoding)
        );
        assert_eq!(
            get("HTTP/1.1 200 OK\r\ncontent-length: 3\r\ncontent-length: 4\r\n\r\n"),
            Err(ProtocolError::DifferingContentLengths)
        );
        assert_eq!(
            get("HTTP/1.1 200 OK\r\ncontent-length: 3, 4\r\n\r\n"),
            Err(ProtocolError::DifferingContentLengths)
        );
        for bad in ["-1", "+3", "0x10", "3 4", "", "99999999999999999999"] {
            assert_eq!(
                get(&format!("HTTP/1.1 200 OK\r\ncontent-length: {bad}\r\n\r\n")),
                Err(ProtocolError::InvalidContentLength),
                "{bad:?}"
            );
        }
        assert_eq!(
            get("HTTP/1.0 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"),
            Err(ProtocolError::TransferEncodingInHttp10)
        );
        assert_eq!(
            get("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked, gzip\r\n\r\n"),
            Err(ProtocolError::ChunkedNotLast)
        );
        assert_eq!(
            get("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked, chunked\r\n\r\n"),
            Err(ProtocolError::ChunkedNotLast)
        );
    }

    #[test]
    fn persistence_follows_version_and_connection() {
        let alive = |h: &str| response_keeps_alive(&head(h).unwrap().unwrap());
        assert!(alive("HTTP/1.1 200 OK\r\n\r\n"));
        assert!(alive("HTTP/1.1 200 OK\r\nconnection: keep-alive\r\n\r\n"));
        assert!(!alive(
            "HTTP/1.1 200 OK\r\nconnection: keep-alive, Close\r\n\r\n"
        ));
        assert!(!alive("HTTP/1.0 200 OK\r\nconnection: keep-alive\r\n\r\n"));
        assert!(!alive("HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n"));
        assert!(!alive(
            "HTTP/1.1 200 OK\r\nconnection: keep-alive\r\nconnection: x-hop, close\r\n\r\n"
        ));
        assert!(alive(
            "HTTP/1.1 200 OK\r\nconnection: keep-alive, x-hop\r\n\r\n"
        ));
    }

    #[test]
    fn fill_prefix_returns_what_it_wrote_and_no_more_than_fits() {
        let mut slots = [const { MaybeUninit::uninit() }; 4];
        assert_eq!(fill_prefix(&mut slots, [7u32, 8].into_iter()), [7, 8]);
        assert_eq!(fill_prefix(&mut slots, 0u32..10), [0, 1, 2, 3]);
        assert!(fill_prefix(&mut slots, std::iter::empty::<u32>()).is_empty());
    }

    /// A Connection field of only `keep-alive`/`close` is noted, not kept (it concerns this hop
    /// alone); one naming other fields stays for the relay to remove what it lists.
    #[test]
    fn plain_connection_fields_are_not_kept() {
        let kept = |h: &str| {
            head(h)
                .unwrap()
                .unwrap()
                .headers
                .get_all(CONNECTION)
                .iter()
                .map(|v| v.to_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        };
        assert!(kept("HTTP/1.1 200 OK\r\nConnection: Keep-Alive\r\n\r\n").is_empty());
        assert!(kept("HTTP/1.1 200 OK\r\nconnection: close , keep-alive\r\n\r\n").is_empty());
        assert_eq!(
            kept("HTTP/1.1 200 OK\r\nconnection: close, x-hop\r\n\r\n"),
            ["close, x-hop"]
        );
        assert_eq!(
            kept("HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\n\r\n"),
            ["upgrade"]
        );
        assert_eq!(
            kept("HTTP/1.1 200 OK\r\nconnection: close\r\nconnection: x-hop\r\n\r\n"),
            ["x-hop"]
        );
    }

    /// Decodes `input` fed in pieces of `step` bytes.
    fn decode_all(
        input: &[u8],
        step: usize,
    ) -> Result<(Vec<u8>, Option<HeaderMap>), ProtocolError> {
        let mut decoder = ChunkedDecoder::new();
        let mut buf = BytesMut::new();
        let mut body = Vec::new();
        let mut trailers = None;
        let mut fed = 0;
        loop {
            match decoder.decode(&mut buf)? {
                Decoded::Data(d) => body.extend_from_slice(&d),
                Decoded::Trailers(t) => trailers = Some(t),
                Decoded::End => {
                    assert!(buf.is_empty(), "nothing past the end was consumed or left");
                    return Ok((body, trailers));
                }
                Decoded::More => {
                    assert!(fed < input.len(), "input ended before the body");
                    let next = (fed + step).min(input.len());
                    buf.extend_from_slice(&input[fed..next]);
                    fed = next;
                }
            }
        }
    }

    #[test]
    fn chunked_bodies_decode_whatever_the_read_sizes() {
        let input = b"5\r\nhello\r\n7;ext=\"v\"\r\n, world\r\nA \r\n0123456789\r\n0\r\ngrpc-status: 0\r\nx: y\r\n\r\n";
        for step in [1, 2, 3, 7, input.len()] {
            let (body, trailers) = decode_all(input, step).unwrap();
            assert_eq!(body, b"hello, world0123456789", "step {step}");
            let trailers = trailers.expect("trailers");
            assert_eq!(trailers["grpc-status"], "0");
            assert_eq!(trailers["x"], "y");
        }
        let (body, trailers) = decode_all(b"0\r\n\r\n", 1).unwrap();
        assert!(body.is_empty() && trailers.is_none());
    }

    #[test]
    fn malformed_chunked_bodies_are_errors() {
        let cases: [(&[u8], ProtocolError); 6] = [
            (b"5\nhello\r\n0\r\n\r\n", ProtocolError::ChunkSize),
            (b"zz\r\n", ProtocolError::ChunkSize),
            (b"5 x\r\nhello\r\n", ProtocolError::ChunkSize),
            (b"11111111111111111\r\n", ProtocolError::ChunkSize),
            (b"5\r\nhelloXX0\r\n\r\n", ProtocolError::ChunkDataEnd),
            (
                b"2\r\nhi\r\n0\r\nbad trailer\r\n\r\n",
                ProtocolError::Trailers(httparse::Error::HeaderName),
            ),
        ];
        for (input, expected) in cases {
            for step in [1, input.len()] {
                assert_eq!(
                    decode_all(input, step).map(|_| ()),
                    Err(expected.clone()),
                    "{input:?}"
                );
            }
        }
        let long = format!("1;{}\r\n", "x".repeat(MAX_CHUNK_LINE));
        assert_eq!(
            decode_all(long.as_bytes(), long.len()).map(|_| ()),
            Err(ProtocolError::ChunkLineTooLong)
        );
    }

    #[test]
    fn the_decoder_sees_the_end_right_after_the_last_data() {
        let mut decoder = ChunkedDecoder::new();
        let mut buf = BytesMut::from(&b"2\r\nhi\r\n0\r\n\r\n"[..]);
        assert_eq!(
            decoder.decode(&mut buf).unwrap(),
            Decoded::Data("hi".into())
        );
        assert!(!decoder.is_complete());
        decoder.advance(&mut buf).unwrap();
        assert!(decoder.is_end());
        assert!(buf.is_empty());
    }
}
