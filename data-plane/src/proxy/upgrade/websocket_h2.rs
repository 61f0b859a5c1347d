//! WebSocket over HTTP/2 (RFC 8441). An extended CONNECT (`:method CONNECT`, `:protocol
//! websocket`) stands for the HTTP/1.1 opening handshake `GET :path` on `:authority`: it is routed
//! and filtered as that GET, sent to an HTTP/1.1 upstream as an RFC 6455 handshake with a key of
//! our own, and the upstream's `101` (its accept checked against that key) answers the client
//! `200`, after which the stream's DATA frames carry the WebSocket bytes.
//!
//! A `:protocol` other than `websocket` gets 501: we know no other to translate, and passing an
//! unknown one on would open a tunnel nothing routed. A plain CONNECT (no `:protocol`) is not
//! touched here.

use super::{UPGRADE_TOKEN, tunnel};
use crate::proxy::headers::X_GOMA_REQUEST_ID;
use crate::proxy::response::{self, ProxyBody};
use crate::timeouts::TunnelActivity;
use crate::upstream::ResponseBody;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use hyper::ext::Protocol;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use std::sync::Arc;

/// RFC 6455 §1.3: appended to the key before hashing.
const ACCEPT_GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
const WEBSOCKET: &str = "websocket";
static WEBSOCKET_TOKEN: HeaderValue = HeaderValue::from_static(WEBSOCKET);
static SEC_WEBSOCKET_KEY: HeaderName = HeaderName::from_static("sec-websocket-key");
static SEC_WEBSOCKET_ACCEPT: HeaderName = HeaderName::from_static("sec-websocket-accept");

/// An HTTP/2 client's pending WebSocket, carried in the request's extensions from
/// [`prepare`] (before routing) to forwarding. Clone, as request extensions are.
#[derive(Clone)]
pub(super) struct Pending {
    /// Our `Sec-WebSocket-Key` for the upstream handshake.
    key: HeaderValue,
    /// The client's stream, once the `200` is written.
    on_upgrade: OnUpgrade,
    /// The listener's hold on the connection's activity, kept by the tunnel.
    activity: Option<TunnelActivity>,
}

/// What [`prepare`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Prepared {
    /// Not an extended CONNECT (a plain CONNECT included): nothing changed.
    Other,
    /// A WebSocket, now the GET it stands for: its answer goes through [`answer`].
    WebSocket,
    /// A `:protocol` we cannot serve: answer [`unsupported`].
    Unsupported,
}

/// Turns an extended CONNECT for WebSocket into the GET it stands for, so routing, middlewares
/// and forwarding treat it as an HTTP/1.1 upgrade.
pub fn prepare<B>(req: &mut Request<B>) -> Prepared {
    if req.method() != Method::CONNECT {
        return Prepared::Other;
    }
    let extensions = req.extensions_mut();
    let Some(protocol) = extensions.remove::<Protocol>() else {
        return Prepared::Other;
    };
    let on_upgrade = extensions.remove::<OnUpgrade>();
    let (true, Some(on_upgrade)) = (
        protocol.as_str().eq_ignore_ascii_case(WEBSOCKET),
        on_upgrade,
    ) else {
        tracing::debug!(protocol = protocol.as_str(), "extended CONNECT refused");
        return Prepared::Unsupported;
    };
    let activity = extensions.remove::<TunnelActivity>();
    extensions.insert(Pending {
        key: new_key(),
        on_upgrade,
        activity,
    });
    *req.method_mut() = Method::GET;
    Prepared::WebSocket
}

/// The answer to an extended CONNECT whose `:protocol` we cannot serve.
pub fn unsupported() -> Response<ProxyBody> {
    response::text(
        StatusCode::NOT_IMPLEMENTED,
        "extended CONNECT protocol not supported\n",
    )
}

impl Pending {
    /// Makes the upstream request (already a GET, hop-by-hop headers stripped) an RFC 6455
    /// opening handshake. The client's `Sec-WebSocket-Version`, `-Protocol` and `-Extensions`
    /// are end-to-end headers and travel as they are.
    pub(super) fn handshake_headers(&self, headers: &mut HeaderMap) {
        headers.insert(header::UPGRADE, WEBSOCKET_TOKEN.clone());
        headers.insert(header::CONNECTION, UPGRADE_TOKEN.clone());
        headers.insert(SEC_WEBSOCKET_KEY.clone(), self.key.clone());
    }

    /// Takes the upstream's `101`: checks it completes our handshake, spawns the tunnel that
    /// copies bytes both ways once the client's stream is switched, and returns the `101` (hop-
    /// by-hop headers stripped) for the response filters, which [`answer`] then turns into the
    /// client's `200`. A handshake that does not check out is a 502.
    pub(super) fn switch(
        self,
        upstream: Response<ResponseBody>,
        route: Arc<str>,
    ) -> Response<ProxyBody> {
        let (mut parts, body) = upstream.into_parts();
        if let Err(problem) = check_handshake(&parts.headers, &self.key) {
            tracing::warn!(%route, problem, "upstream WebSocket handshake refused");
            return response::text(
                StatusCode::BAD_GATEWAY,
                "upstream WebSocket handshake failed\n",
            );
        }
        let Some(upstream) = body.into_upgraded() else {
            tracing::warn!(%route, "101 from an upstream connection that cannot be upgraded");
            return response::upstream_error();
        };
        crate::proxy::headers::strip_hop_by_hop(&mut parts.headers, false);
        parts
            .headers
            .insert(header::UPGRADE, WEBSOCKET_TOKEN.clone());
        parts
            .headers
            .insert(header::CONNECTION, UPGRADE_TOKEN.clone());
        let client = async move { self.on_upgrade.await.map(TokioIo::new) };
        tunnel::spawn(route, client, upstream, self.activity);
        Response::from_parts(parts, response::empty())
    }
}

/// The answer to an extended CONNECT for WebSocket: the `101` of a switch becomes `200`
/// without the HTTP/1.1 handshake's headers (the stream is the tunnel now). Any other 2xx would
/// tell the client a tunnel is open where there is none: 502. Other answers pass as they are.
pub fn answer(mut resp: Response<ProxyBody>) -> Response<ProxyBody> {
    let status = resp.status();
    if status == StatusCode::SWITCHING_PROTOCOLS {
        *resp.status_mut() = StatusCode::OK;
        let headers = resp.headers_mut();
        for name in [
            header::UPGRADE,
            header::CONNECTION,
            header::CONTENT_LENGTH,
            header::TRANSFER_ENCODING,
        ] {
            headers.remove(name);
        }
        headers.remove(&SEC_WEBSOCKET_ACCEPT);
        *resp.body_mut() = response::empty();
        return resp;
    }
    if status.is_success() {
        tracing::debug!(%status, "WebSocket handshake answered without a protocol switch");
        let mut refused = response::text(
            StatusCode::BAD_GATEWAY,
            "upstream did not switch to WebSocket\n",
        );
        // The id, so the client can quote it; the rest belonged to an answer not relayed.
        if let Some(id) = resp.headers_mut().remove(&X_GOMA_REQUEST_ID) {
            refused.headers_mut().insert(X_GOMA_REQUEST_ID.clone(), id);
        }
        return refused;
    }
    resp
}

/// A fresh `Sec-WebSocket-Key`: 16 random bytes, base64 (RFC 6455 §4.1).
fn new_key() -> HeaderValue {
    let mut nonce = [0u8; 16];
    fastrand::fill(&mut nonce);
    let encoded = BASE64.encode(nonce);
    HeaderValue::from_str(&encoded).unwrap_or_else(|_| unreachable!("base64 is a valid header"))
}

/// `Sec-WebSocket-Accept` for `key` (RFC 6455 §4.2.2): base64 of the SHA-1 of key + GUID.
pub fn accept_key(key: &[u8]) -> String {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY);
    ctx.update(key);
    ctx.update(ACCEPT_GUID);
    BASE64.encode(ctx.finish().as_ref())
}

/// Whether a `101` completes the handshake we opened with `key` (RFC 6455 §4.1: `Upgrade:
/// websocket` and the accept for our key; the client would fail the connection otherwise).
fn check_handshake(headers: &HeaderMap, key: &HeaderValue) -> Result<(), &'static str> {
    let upgrade = headers.get(header::UPGRADE).map(HeaderValue::as_bytes);
    if !upgrade.is_some_and(|u| u.eq_ignore_ascii_case(WEBSOCKET.as_bytes())) {
        return Err("101 without Upgrade: websocket");
    }
    let mut accepts = headers.get_all(&SEC_WEBSOCKET_ACCEPT).iter();
    match (accepts.next(), accepts.next()) {
        (Some(accept), None) if accept.as_bytes() == accept_key(key.as_bytes()).as_bytes() => {
            Ok(())
        }
        (None, _) => Err("101 without Sec-WebSocket-Accept"),
        _ => Err("Sec-WebSocket-Accept does not match the key sent"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Version;

    const RFC_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
    const RFC_ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

    #[test]
    fn accept_key_matches_rfc_6455_example() {
        // RFC 6455 §1.3.
        assert_eq!(accept_key(RFC_KEY.as_bytes()), RFC_ACCEPT);
    }

    #[test]
    fn keys_are_16_fresh_random_bytes() {
        let (a, b) = (new_key(), new_key());
        assert_ne!(a, b);
        let decoded = BASE64.decode(a.as_bytes()).expect("base64");
        assert_eq!(decoded.len(), 16);
    }

    fn extended_connect(protocol: Option<&'static str>) -> Request<()> {
        let mut req = Request::builder()
            .method(Method::CONNECT)
            .version(Version::HTTP_2)
            .uri("https://ws.example.com/chat?room=1")
            .header("sec-websocket-version", "13")
            .header("sec-websocket-protocol", "chat, superchat")
            .body(())
            .unwrap();
        if let Some(p) = protocol {
            req.extensions_mut().insert(Protocol::from_static(p));
        }
        // What hyper's HTTP/2 server attaches to a CONNECT (an unfulfillable one here).
        let on_upgrade = hyper::upgrade::on(Request::new(()));
        req.extensions_mut().insert(on_upgrade);
        req
    }

    #[test]
    fn an_extended_connect_for_websocket_becomes_the_get_it_stands_for() {
        let mut req = extended_connect(Some("websocket"));
        assert_eq!(prepare(&mut req), Prepared::WebSocket);
        assert_eq!(req.method(), Method::GET);
        assert_eq!(req.uri(), "https://ws.example.com/chat?room=1");
        assert!(req.extensions().get::<Protocol>().is_none());
        let pending = req.extensions().get::<Pending>().expect("pending");

        // The upstream handshake: the client's WebSocket headers kept, ours added.
        let mut headers = req.headers().clone();
        headers.insert(
            SEC_WEBSOCKET_KEY.clone(),
            HeaderValue::from_static("forged"),
        );
        pending.handshake_headers(&mut headers);
        assert_eq!(headers[header::UPGRADE], "websocket");
        assert_eq!(headers[header::CONNECTION], "upgrade");
        assert_eq!(headers[&SEC_WEBSOCKET_KEY], pending.key);
        assert_eq!(headers["sec-websocket-version"], "13");
        assert_eq!(headers["sec-websocket-protocol"], "chat, superchat");
    }

    #[test]
    fn other_protocols_get_501_and_plain_connect_is_left_alone() {
        let mut req = extended_connect(Some("connect-udp"));
        assert_eq!(prepare(&mut req), Prepared::Unsupported);
        assert_eq!(unsupported().status(), StatusCode::NOT_IMPLEMENTED);

        let mut plain = extended_connect(None);
        assert_eq!(prepare(&mut plain), Prepared::Other);
        assert_eq!(plain.method(), Method::CONNECT);
        assert!(plain.extensions().get::<OnUpgrade>().is_some(), "untouched");

        let mut get = Request::get("/").body(()).unwrap();
        assert_eq!(prepare(&mut get), Prepared::Other);
    }

    #[test]
    fn the_upstream_101_must_carry_the_accept_for_our_key() {
        let key = HeaderValue::from_static(RFC_KEY);
        let mut headers = HeaderMap::new();
        headers.insert(header::UPGRADE, HeaderValue::from_static("WebSocket"));
        assert_eq!(
            check_handshake(&headers, &key),
            Err("101 without Sec-WebSocket-Accept")
        );
        headers.insert(&SEC_WEBSOCKET_ACCEPT, HeaderValue::from_static(RFC_ACCEPT));
        assert_eq!(check_handshake(&headers, &key), Ok(()));
        let other = HeaderValue::from_static("x3JJHMbDL1EzLkh9GBhXDw==");
        assert_eq!(
            check_handshake(&headers, &other),
            Err("Sec-WebSocket-Accept does not match the key sent")
        );
        headers.append(&SEC_WEBSOCKET_ACCEPT, HeaderValue::from_static(RFC_ACCEPT));
        assert!(check_handshake(&headers, &key).is_err(), "two accepts");
        headers.remove(&SEC_WEBSOCKET_ACCEPT);
        headers.insert(&SEC_WEBSOCKET_ACCEPT, HeaderValue::from_static(RFC_ACCEPT));
        headers.insert(header::UPGRADE, HeaderValue::from_static("h2c"));
        assert_eq!(
            check_handshake(&headers, &key),
            Err("101 without Upgrade: websocket")
        );
    }

    fn with_status(status: StatusCode, headers: &[(&str, &str)]) -> Response<ProxyBody> {
        let mut resp = Response::builder().status(status);
        for (k, v) in headers {
            resp = resp.header(*k, *v);
        }
        resp.body(response::empty()).unwrap()
    }

    #[test]
    fn the_switch_answers_200_and_other_successes_502() {
        let switched = answer(with_status(
            StatusCode::SWITCHING_PROTOCOLS,
            &[
                ("upgrade", "websocket"),
                ("connection", "upgrade"),
                ("sec-websocket-accept", RFC_ACCEPT),
                ("sec-websocket-protocol", "chat"),
                ("sec-websocket-extensions", "permessage-deflate"),
                ("x-goma-request-id", "id-1"),
            ],
        ));
        assert_eq!(switched.status(), StatusCode::OK);
        let mut names: Vec<&str> = switched.headers().keys().map(|n| n.as_str()).collect();
        names.sort_unstable();
        assert_eq!(
            names,
            [
                "sec-websocket-extensions",
                "sec-websocket-protocol",
                "x-goma-request-id"
            ]
        );

        let not_switched = answer(with_status(
            StatusCode::OK,
            &[("x-goma-request-id", "id-2"), ("set-cookie", "a=b")],
        ));
        assert_eq!(not_switched.status(), StatusCode::BAD_GATEWAY);
        assert_eq!(not_switched.headers()["x-goma-request-id"], "id-2");
        assert!(!not_switched.headers().contains_key("set-cookie"));

        for status in [
            StatusCode::FORBIDDEN,
            StatusCode::NOT_FOUND,
            StatusCode::FOUND,
        ] {
            assert_eq!(answer(with_status(status, &[])).status(), status);
        }
    }
}
