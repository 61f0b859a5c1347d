//! Reading the server name (SNI) from a TLS ClientHello without terminating TLS, for
//! passthrough listeners. Pure: works on the bytes buffered so far and says whether more are
//! needed. The ClientHello may span several TLS records; the caller bounds the buffer.

use crate::router::NormalizedHost;
use std::borrow::Cow;

/// TLS record content type of handshake messages.
const HANDSHAKE: u8 = 22;
const CLIENT_HELLO: u8 = 1;
const SERVER_NAME_EXTENSION: u16 = 0;
const HOST_NAME: u8 = 0;
/// Largest TLS plaintext record body (RFC 8446 §5.1).
const MAX_RECORD: usize = 1 << 14;

/// What the buffered bytes say.
#[derive(Debug, PartialEq, Eq)]
pub enum Hello {
    /// More bytes are needed to read the whole ClientHello.
    Incomplete,
    /// A complete ClientHello; its server name normalised (lowercase, no trailing dot), if it
    /// sent one.
    Complete(Option<String>),
}

/// Why the bytes are not a ClientHello we can route.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum NotClientHello {
    #[error("not a TLS handshake record")]
    NotHandshake,
    #[error("first handshake message is not a ClientHello")]
    NotClientHello,
    #[error("malformed ClientHello: {0}")]
    Malformed(&'static str),
}

/// Parses the ClientHello at the start of `buf` (TLS records as received).
pub fn client_hello(buf: &[u8]) -> Result<Hello, NotClientHello> {
    let Some(message) = handshake_message(buf)? else {
        return Ok(Hello::Incomplete);
    };
    server_name(&message).map(Hello::Complete)
}

/// The first handshake message (type, length and body), reassembled from as many records as it
/// spans; None while incomplete. Borrowed when it fits in the first record (the usual case).
fn handshake_message(buf: &[u8]) -> Result<Option<Cow<'_, [u8]>>, NotClientHello> {
    let mut joined: Cow<'_, [u8]> = Cow::Borrowed(&[]);
    let mut at = 0;
    loop {
        let Some(header) = buf.get(at..at + 5) else {
            // The first byte alone already tells a non-TLS client apart.
            if buf.get(at) != Some(&HANDSHAKE) && at < buf.len() {
                return Err(NotClientHello::NotHandshake);
            }
            return Ok(None);
        };
        if header[0] != HANDSHAKE {
            return Err(NotClientHello::NotHandshake);
        }
        let len = usize::from(u16::from_be_bytes([header[3], header[4]]));
        if len == 0 || len > MAX_RECORD {
            return Err(NotClientHello::Malformed("record length"));
        }
        let Some(body) = buf.get(at + 5..at + 5 + len) else {
            return Ok(None);
        };
        joined = if joined.is_empty() {
            Cow::Borrowed(body)
        } else {
            let mut v = joined.into_owned();
            v.extend_from_slice(body);
            Cow::Owned(v)
        };
        at += 5 + len;
        if joined[0] != CLIENT_HELLO {
            return Err(NotClientHello::NotClientHello);
        }
        if joined.len() >= 4 {
            let need = 4
                + (usize::from(joined[1]) << 16 | usize::from(joined[2]) << 8)
                + usize::from(joined[3]);
            if joined.len() >= need {
                return Ok(Some(match joined {
                    Cow::Borrowed(b) => Cow::Borrowed(&b[..need]),
                    Cow::Owned(mut v) => {
                        v.truncate(need);
                        Cow::Owned(v)
                    }
                }));
            }
        }
    }
}

/// Bounds-checked reading of big-endian fields.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn bytes(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], NotClientHello> {
        if self.0.len() < n {
            return Err(NotClientHello::Malformed(what));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn u8(&mut self, what: &'static str) -> Result<usize, NotClientHello> {
        Ok(usize::from(self.bytes(1, what)?[0]))
    }

    fn u16(&mut self, what: &'static str) -> Result<usize, NotClientHello> {
        let b = self.bytes(2, what)?;
        Ok(usize::from(u16::from_be_bytes([b[0], b[1]])))
    }

    /// A field prefixed by its one- or two-byte length.
    fn vec8(&mut self, what: &'static str) -> Result<&'a [u8], NotClientHello> {
        let n = self.u8(what)?;
        self.bytes(n, what)
    }

    fn vec16(&mut self, what: &'static str) -> Result<&'a [u8], NotClientHello> {
        let n = self.u16(what)?;
        self.bytes(n, what)
    }
}

/// The host_name entry of the server_name extension of a complete ClientHello message.
fn server_name(message: &[u8]) -> Result<Option<String>, NotClientHello> {
    // Type (1) and length (3) were checked by the caller.
    let mut r = Reader(message.get(4..).unwrap_or_default());
    r.bytes(2, "legacy_version")?;
    r.bytes(32, "random")?;
    r.vec8("legacy_session_id")?;
    r.vec16("cipher_suites")?;
    r.vec8("legacy_compression_methods")?;
    if r.0.is_empty() {
        // No extensions at all (an old TLS 1.0 client): no SNI.
        return Ok(None);
    }
    let mut extensions = Reader(r.vec16("extensions")?);
    while !extensions.0.is_empty() {
        let kind = extensions.u16("extension type")?;
        let data = extensions.vec16("extension data")?;
        if kind != usize::from(SERVER_NAME_EXTENSION) {
            continue;
        }
        let mut data = Reader(data);
        let mut list = Reader(data.vec16("server_name_list")?);
        while !list.0.is_empty() {
            let name_type = list.u8("server name type")?;
            let name = list.vec16("server name")?;
            if name_type != usize::from(HOST_NAME) {
                continue;
            }
            let name = std::str::from_utf8(name)
                .ok()
                .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_graphic()))
                .ok_or(NotClientHello::Malformed(
                    "server name is not an ASCII host name",
                ))?;
            return Ok(Some(NormalizedHost::new(name).as_str().to_owned()));
        }
        return Ok(None);
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::ServerName;
    use std::sync::Arc;

    /// The first flight of a real rustls client connecting to `sni` (None: an IP, so no SNI).
    fn rustls_hello(sni: Option<&str>) -> Vec<u8> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        let name = match sni {
            Some(s) => ServerName::try_from(s.to_owned()).unwrap(),
            None => ServerName::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()),
        };
        let mut conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
        let mut out = Vec::new();
        while conn.wants_write() {
            conn.write_tls(&mut out).unwrap();
        }
        out
    }

    #[test]
    fn reads_sni_from_rustls_client_hello() {
        let hello = rustls_hello(Some("API.Example.com"));
        assert_eq!(
            client_hello(&hello),
            Ok(Hello::Complete(Some("api.example.com".into())))
        );
        assert_eq!(client_hello(&rustls_hello(None)), Ok(Hello::Complete(None)));
    }

    #[test]
    fn every_prefix_is_incomplete_and_never_panics() {
        let hello = rustls_hello(Some("a.test"));
        for n in 0..hello.len() {
            assert_eq!(
                client_hello(&hello[..n]),
                Ok(Hello::Incomplete),
                "prefix {n}"
            );
        }
        // Trailing bytes (the client's next flight) do not matter.
        let mut more = hello.clone();
        more.extend_from_slice(b"\x17\x03\x03\x00\x01x");
        assert_eq!(
            client_hello(&more),
            Ok(Hello::Complete(Some("a.test".into())))
        );
    }

    #[test]
    fn reassembles_a_hello_split_over_records() {
        let hello = rustls_hello(Some("split.test"));
        let body = &hello[5..];
        let (a, b) = body.split_at(40);
        let mut split = Vec::new();
        for part in [a, b] {
            split.extend_from_slice(&[HANDSHAKE, 3, 1]);
            split.extend_from_slice(&(part.len() as u16).to_be_bytes());
            split.extend_from_slice(part);
        }
        assert_eq!(
            client_hello(&split[..split.len() - 1]),
            Ok(Hello::Incomplete)
        );
        assert_eq!(
            client_hello(&split),
            Ok(Hello::Complete(Some("split.test".into())))
        );
    }

    #[test]
    fn refuses_what_is_not_a_client_hello() {
        assert_eq!(
            client_hello(b"GET / HTTP/1.1\r\n"),
            Err(NotClientHello::NotHandshake)
        );
        assert_eq!(client_hello(b"G"), Err(NotClientHello::NotHandshake));
        // A ServerHello (type 2).
        assert_eq!(
            client_hello(&[HANDSHAKE, 3, 3, 0, 4, 2, 0, 0, 0]),
            Err(NotClientHello::NotClientHello)
        );
        assert_eq!(
            client_hello(&[HANDSHAKE, 3, 3, 0, 0]),
            Err(NotClientHello::Malformed("record length"))
        );
    }

    #[test]
    fn corrupted_hellos_never_panic() {
        let hello = rustls_hello(Some("fuzz.example.com"));
        let mut rng = fastrand::Rng::with_seed(7);
        for _ in 0..20_000 {
            let mut bytes = hello.clone();
            for _ in 0..rng.usize(1..6) {
                let i = rng.usize(0..bytes.len());
                bytes[i] = rng.u8(..);
            }
            let cut = rng.usize(0..=bytes.len());
            let _ = client_hello(&bytes[..cut]);
        }
        for len in 0..64 {
            let random: Vec<u8> = (0..len).map(|_| rng.u8(..)).collect();
            let _ = client_hello(&random);
        }
    }
}
