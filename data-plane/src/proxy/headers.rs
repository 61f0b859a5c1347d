//! Header handling between client and upstream: hop-by-hop removal and forwarding headers.

use super::client_ip::{X_FORWARDED_FOR, X_REAL_IP};
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use std::net::{IpAddr, SocketAddr};

static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
/// Goma's request id header, sent upstream and back to the client.
pub static X_GOMA_REQUEST_ID: HeaderName = HeaderName::from_static("x-goma-request-id");

/// Removes hop-by-hop headers (RFC 9110 §7.6.1): Connection and the names it lists, Keep-Alive,
/// Proxy-Connection, Transfer-Encoding, Upgrade and TE. On requests `TE: trailers` is kept, as
/// it is end-to-end meaningful (gRPC needs it).
pub fn strip_hop_by_hop(headers: &mut HeaderMap, is_request: bool) {
    // One pass over the names instead of a hashed lookup per hop-by-hop name: most requests
    // carry none, and most responses only `Connection: keep-alive`.
    let (mut connection, mut te, mut others) = (false, false, false);
    for name in headers.keys() {
        if name == header::CONNECTION {
            connection = true;
        } else if name == header::TE {
            te = true;
        } else if name == header::TRANSFER_ENCODING
            || name == header::UPGRADE
            || name == KEEP_ALIVE
            || name == PROXY_CONNECTION
        {
            others = true;
        }
    }
    if connection && let header::Entry::Occupied(entry) = headers.entry(header::CONNECTION) {
        // The usual values name no header: nothing to parse.
        let plain = entry.iter().all(|v| {
            let v = v.as_bytes();
            v.eq_ignore_ascii_case(b"keep-alive") || v.eq_ignore_ascii_case(b"close")
        });
        if plain {
            entry.remove();
        } else {
            let mut values = entry.remove_entry_mult().1;
            // Usually one value: the rest stays an empty, unallocated Vec.
            let first = values.next();
            let rest: Vec<HeaderValue> = values.collect();
            remove_listed(headers, first.into_iter().chain(rest), is_request);
        }
    }
    if others {
        headers.remove(&KEEP_ALIVE);
        headers.remove(&PROXY_CONNECTION);
        headers.remove(header::TRANSFER_ENCODING);
        headers.remove(header::UPGRADE);
    }
    if te {
        let trailers = is_request
            && headers.get_all(header::TE).iter().any(|v| {
                v.to_str().is_ok_and(|v| {
                    v.split(',')
                        .any(|t| t.trim().eq_ignore_ascii_case("trailers"))
                })
            });
        headers.remove(header::TE);
        if trailers {
            headers.insert(header::TE, HeaderValue::from_static("trailers"));
        }
    }
}

/// Removes the headers a Connection header's `values` list (on requests, `TE` stays).
fn remove_listed(
    headers: &mut HeaderMap,
    values: impl Iterator<Item = HeaderValue>,
    is_request: bool,
) {
    for value in values {
        let Ok(value) = value.to_str() else { continue };
        for token in value.split(',').map(str::trim) {
            // The common tokens: Keep-Alive was seen by the scan, `close` names no header.
            if token.eq_ignore_ascii_case("keep-alive") || token.eq_ignore_ascii_case("close") {
                continue;
            }
            match HeaderName::from_bytes(token.as_bytes()) {
                Ok(name) if is_request && name == header::TE => {}
                Ok(name) => {
                    headers.remove(name);
                }
                Err(_) => {}
            }
        }
    }
}

/// Who sent a request: the TCP peer, whether it is a trusted proxy, and the client address
/// derived from both (see [`super::client_ip`]).
#[derive(Debug, Clone, Copy)]
pub struct Origin {
    pub peer: IpAddr,
    pub peer_trusted: bool,
    pub client: IpAddr,
}

/// Adds X-Forwarded-For, X-Forwarded-Host, X-Forwarded-Proto (`https` when the client
/// connection is TLS) and X-Real-IP (the client). A trusted proxy's X-Forwarded-For is kept and
/// the peer appended, as every hop does; anyone else's is replaced by the peer, since an
/// untrusted client could have written anything there. `peer_value` is the peer's address as
/// a header value, rendered once per connection.
pub fn add_forwarded(
    headers: &mut HeaderMap,
    origin: Origin,
    peer_value: &HeaderValue,
    original_host: Option<HeaderValue>,
    https: bool,
) {
    let (xff, real_ip) = if origin.peer_trusted {
        let mut previous = headers
            .get_all(&X_FORWARDED_FOR)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .peekable();
        let xff = if previous.peek().is_none() {
            Some(peer_value.clone())
        } else {
            let mut joined = String::with_capacity(64);
            for v in previous {
                joined.push_str(v);
                joined.push_str(", ");
            }
            joined.push_str(peer_value.to_str().unwrap_or_default());
            HeaderValue::from_str(&joined).ok()
        };
        (xff, HeaderValue::from_str(&origin.client.to_string()).ok())
    } else {
        // Untrusted: the client is the peer.
        (Some(peer_value.clone()), Some(peer_value.clone()))
    };
    if let Some(v) = xff {
        headers.insert(X_FORWARDED_FOR.clone(), v);
    }
    if let Some(host) = original_host {
        headers.insert(X_FORWARDED_HOST.clone(), host);
    }
    let proto = if https { "https" } else { "http" };
    headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static(proto));
    if let Some(v) = real_ip {
        headers.insert(X_REAL_IP.clone(), v);
    }
}

/// A client connection's far end, with its address rendered once for the forwarding headers.
#[derive(Debug, Clone)]
pub struct Peer {
    pub addr: SocketAddr,
    /// The canonical IP (IPv4-mapped IPv6 shown as IPv4) as a header value.
    pub ip_value: HeaderValue,
}

impl Peer {
    pub fn new(addr: SocketAddr) -> Self {
        let ip = addr.ip().to_canonical();
        let ip_value =
            HeaderValue::from_str(&ip.to_string()).expect("an IP address is a valid header value");
        Peer { addr, ip_value }
    }
}

impl From<SocketAddr> for Peer {
    fn from(addr: SocketAddr) -> Self {
        Peer::new(addr)
    }
}

/// The request id of a request: the one a trusted proxy sent when it is sane (1 to 128 visible
/// ASCII characters), else a new random 128-bit id in hex.
///
/// Marked sensitive, which HTTP/2 encodes as never indexed: a value seen once would only fill
/// the HPACK dynamic table, pushing out entries that are reused, and h2 compares a new value
/// with every one indexed under its name before inserting it (~3k instructions per response
/// with the table full of ids).
pub fn request_id(supplied: Option<&HeaderValue>, peer_trusted: bool) -> HeaderValue {
    let mut id = match supplied {
        Some(v)
            if peer_trusted
                && (1..=128).contains(&v.len())
                && v.as_bytes().iter().all(|b| (0x21..=0x7e).contains(b)) =>
        {
            v.clone()
        }
        _ => new_request_id(fastrand::u128(..)),
    };
    id.set_sensitive(true);
    id
}

fn new_request_id(n: u128) -> HeaderValue {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut hex = [0u8; 32];
    for (pair, byte) in hex.chunks_exact_mut(2).zip(n.to_be_bytes()) {
        pair[0] = HEX[usize::from(byte >> 4)];
        pair[1] = HEX[usize::from(byte & 0xf)];
    }
    // Owned by the Bytes: one allocation, which the request's and the response's header share
    // (a copied slice would be allocated again on the first clone).
    HeaderValue::from_maybe_shared(Bytes::from_owner(hex))
        .expect("hex digits are a valid header value")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_hop_by_hop() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            "keep-alive, X-Secret, te".parse().unwrap(),
        );
        h.insert("x-secret", "1".parse().unwrap());
        h.insert("keep-alive", "timeout=5".parse().unwrap());
        h.insert("proxy-connection", "close".parse().unwrap());
        h.insert(header::TRANSFER_ENCODING, "chunked".parse().unwrap());
        h.insert(header::UPGRADE, "websocket".parse().unwrap());
        h.insert(header::TE, "gzip, trailers".parse().unwrap());
        h.insert(header::PROXY_AUTHORIZATION, "Basic x".parse().unwrap());
        h.insert("x-keep", "1".parse().unwrap());
        let mut resp = h.clone();
        strip_hop_by_hop(&mut h, true);
        let mut names: Vec<_> = h.keys().map(|k| k.as_str().to_string()).collect();
        names.sort();
        assert_eq!(names, ["proxy-authorization", "te", "x-keep"]);
        assert_eq!(h[header::TE], "trailers");
        strip_hop_by_hop(&mut resp, false);
        assert!(!resp.contains_key(header::TE) && !resp.contains_key("x-secret"));
    }

    #[test]
    fn common_connection_tokens() {
        // What upstreams send on almost every response.
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, "keep-alive".parse().unwrap());
        h.insert(header::CONTENT_LENGTH, "2".parse().unwrap());
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h.keys().collect::<Vec<_>>(), [header::CONTENT_LENGTH]);
        // Several Connection values, a listed name among common tokens, odd spacing and case.
        let mut h = HeaderMap::new();
        h.append(header::CONNECTION, "Close".parse().unwrap());
        h.append(header::CONNECTION, " Keep-Alive ,X-Hop".parse().unwrap());
        h.insert("x-hop", "1".parse().unwrap());
        h.insert("keep-alive", "timeout=5".parse().unwrap());
        h.insert("x-end", "1".parse().unwrap());
        strip_hop_by_hop(&mut h, true);
        assert_eq!(h.keys().collect::<Vec<_>>(), ["x-end"]);
        // Nothing hop-by-hop: nothing changes.
        let mut h = HeaderMap::new();
        h.insert(header::HOST, "a".parse().unwrap());
        h.insert(header::ACCEPT, "*/*".parse().unwrap());
        let before = h.clone();
        strip_hop_by_hop(&mut h, true);
        assert_eq!(h, before);
    }

    #[test]
    fn peers_render_their_canonical_ip() {
        let v4: SocketAddr = "203.0.113.7:4000".parse().unwrap();
        assert_eq!(Peer::new(v4).ip_value, "203.0.113.7");
        let mapped: SocketAddr = "[::ffff:203.0.113.7]:4000".parse().unwrap();
        assert_eq!(Peer::new(mapped).ip_value, "203.0.113.7");
        let v6: SocketAddr = "[2001:db8::1]:4000".parse().unwrap();
        assert_eq!(Peer::new(v6).ip_value, "2001:db8::1");
    }

    #[test]
    fn te_without_trailers_removed() {
        let mut h = HeaderMap::new();
        h.insert(header::TE, "gzip".parse().unwrap());
        strip_hop_by_hop(&mut h, true);
        assert!(h.is_empty());
    }

    #[test]
    fn forwarded_headers() {
        let direct = |ip: [u8; 4]| Origin {
            peer: IpAddr::from(ip),
            peer_trusted: false,
            client: IpAddr::from(ip),
        };
        let mut h = HeaderMap::new();
        let peer = HeaderValue::from_static("10.0.0.1");
        add_forwarded(
            &mut h,
            direct([10, 0, 0, 1]),
            &peer,
            Some(HeaderValue::from_static("a.com")),
            false,
        );
        assert_eq!(h["x-forwarded-for"], "10.0.0.1");
        assert_eq!(h["x-forwarded-host"], "a.com");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-real-ip"], "10.0.0.1");

        // An untrusted client's X-Forwarded-For and X-Real-IP are replaced.
        let mut h = HeaderMap::new();
        h.append("x-forwarded-for", "1.1.1.1".parse().unwrap());
        h.insert("x-real-ip", "1.1.1.1".parse().unwrap());
        add_forwarded(&mut h, direct([10, 0, 0, 1]), &peer, None, true);
        assert_eq!(h["x-forwarded-for"], "10.0.0.1");
        assert_eq!(h["x-real-ip"], "10.0.0.1");
        assert_eq!(h["x-forwarded-proto"], "https");

        // A trusted proxy's list is kept and the proxy appended; X-Real-IP is the client.
        let mut h = HeaderMap::new();
        h.append("x-forwarded-for", "1.1.1.1".parse().unwrap());
        h.append("x-forwarded-for", "2.2.2.2".parse().unwrap());
        let origin = Origin {
            peer: IpAddr::from([10, 0, 0, 1]),
            peer_trusted: true,
            client: IpAddr::from([2, 2, 2, 2]),
        };
        add_forwarded(&mut h, origin, &peer, None, false);
        assert_eq!(h["x-forwarded-for"], "1.1.1.1, 2.2.2.2, 10.0.0.1");
        assert_eq!(h["x-real-ip"], "2.2.2.2");
        // A trusted proxy that sent no list: the peer starts one.
        let mut h = HeaderMap::new();
        let origin = Origin {
            client: IpAddr::from([10, 0, 0, 1]),
            ..origin
        };
        add_forwarded(&mut h, origin, &peer, None, false);
        assert_eq!(h["x-forwarded-for"], "10.0.0.1");
        assert_eq!(h["x-real-ip"], "10.0.0.1");
    }

    #[test]
    fn request_ids() {
        assert_eq!(
            new_request_id(0x0123_4567_89ab_cdef_0011_2233_4455_6677),
            "0123456789abcdef0011223344556677"
        );
        assert_eq!(new_request_id(1), "00000000000000000000000000000001");
        let fresh = request_id(None, false);
        assert_eq!(fresh.len(), 32);
        // Never indexed by HTTP/2 (HPACK).
        assert!(fresh.is_sensitive());
        assert!(request_id(Some(&HeaderValue::from_static("id")), true).is_sensitive());
        assert_ne!(fresh, request_id(None, false));
        let supplied = HeaderValue::from_static("trace-abc_123");
        assert_eq!(request_id(Some(&supplied), true), supplied);
        // Only a trusted proxy's id is kept, and only a sane one.
        assert_ne!(request_id(Some(&supplied), false), supplied);
        for bad in ["", "has space", "\u{e9}t\u{e9}"] {
            let v = HeaderValue::from_bytes(bad.as_bytes()).unwrap();
            assert_eq!(request_id(Some(&v), true).len(), 32, "{bad:?}");
        }
        let long = HeaderValue::from_str(&"a".repeat(129)).unwrap();
        assert_eq!(request_id(Some(&long), true).len(), 32);
        let max = HeaderValue::from_str(&"a".repeat(128)).unwrap();
        assert_eq!(request_id(Some(&max), true), max);
    }
}
