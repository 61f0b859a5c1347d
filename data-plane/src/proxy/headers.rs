//! Header handling between client and upstream: hop-by-hop removal and forwarding headers.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use std::net::IpAddr;

static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");

/// Removes hop-by-hop headers (RFC 9110 §7.6.1): Connection and the names it lists, Keep-Alive,
/// Proxy-Connection, Transfer-Encoding, Upgrade and TE. On requests `TE: trailers` is kept, as
/// it is end-to-end meaningful (gRPC needs it).
pub fn strip_hop_by_hop(headers: &mut HeaderMap, is_request: bool) {
    if headers.contains_key(header::CONNECTION) {
        // Rare path: only HTTP/1 clients that name extra hop-by-hop headers allocate here.
        let listed: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
            .collect();
        for name in listed {
            if !(is_request && name == header::TE) {
                headers.remove(name);
            }
        }
        headers.remove(header::CONNECTION);
    }
    headers.remove(&KEEP_ALIVE);
    headers.remove(&PROXY_CONNECTION);
    headers.remove(header::TRANSFER_ENCODING);
    headers.remove(header::UPGRADE);
    if headers.contains_key(header::TE) {
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

/// Adds X-Forwarded-For (appended), X-Forwarded-Host, X-Forwarded-Proto (`https` when the
/// client connection is TLS) and X-Real-IP.
pub fn add_forwarded(
    headers: &mut HeaderMap,
    client_ip: IpAddr,
    original_host: Option<HeaderValue>,
    https: bool,
) {
    let ip = client_ip.to_string();
    // One header value serves X-Real-IP and, when the client sent none, X-Forwarded-For.
    let ip_value = HeaderValue::from_str(&ip).ok();
    let xff = {
        let mut previous = headers
            .get_all(&X_FORWARDED_FOR)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .peekable();
        if previous.peek().is_none() {
            ip_value.clone()
        } else {
            let mut joined = String::with_capacity(64);
            for v in previous {
                joined.push_str(v);
                joined.push_str(", ");
            }
            joined.push_str(&ip);
            HeaderValue::from_str(&joined).ok()
        }
    };
    if let Some(v) = xff {
        headers.insert(X_FORWARDED_FOR.clone(), v);
    }
    if let Some(host) = original_host {
        headers.insert(X_FORWARDED_HOST.clone(), host);
    }
    let proto = if https { "https" } else { "http" };
    headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static(proto));
    if let Some(v) = ip_value {
        headers.insert(X_REAL_IP.clone(), v);
    }
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
    fn te_without_trailers_removed() {
        let mut h = HeaderMap::new();
        h.insert(header::TE, "gzip".parse().unwrap());
        strip_hop_by_hop(&mut h, true);
        assert!(h.is_empty());
    }

    #[test]
    fn forwarded_headers() {
        let mut h = HeaderMap::new();
        add_forwarded(
            &mut h,
            IpAddr::from([10, 0, 0, 1]),
            Some(HeaderValue::from_static("a.com")),
            false,
        );
        assert_eq!(h["x-forwarded-for"], "10.0.0.1");
        assert_eq!(h["x-forwarded-host"], "a.com");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-real-ip"], "10.0.0.1");
        let mut h = HeaderMap::new();
        h.append("x-forwarded-for", "1.1.1.1".parse().unwrap());
        h.append("x-forwarded-for", "2.2.2.2".parse().unwrap());
        add_forwarded(&mut h, IpAddr::from([10, 0, 0, 1]), None, true);
        assert_eq!(h["x-forwarded-for"], "1.1.1.1, 2.2.2.2, 10.0.0.1");
        assert_eq!(h["x-forwarded-proto"], "https");
    }
}
