//! Protocol upgrades (WebSocket and any other `Upgrade:` token, RFC 9110 §7.8, RFC 6455 §4):
//! the upgrade headers are hop-by-hop, so they are carried across explicitly, and a `101
//! Switching Protocols` from the upstream turns the client's stream and the upstream
//! connection into a byte tunnel (`tunnel`).
//!
//! HTTP/1.1 requests are upgraded on HTTP/1.1 upstreams; an HTTP/2 client's WebSocket (RFC 8441
//! extended CONNECT) is translated to the HTTP/1.1 handshake (`websocket_h2`). Everything else is
//! forwarded as a plain request (the upgrade headers are stripped like any hop-by-hop header).
//! `Upgrade: h2c` is never passed on: an HTTP/2 tunnel to the backend would carry requests the
//! gateway never routed ("h2c smuggling").

mod tunnel;
pub mod websocket_h2;

use super::response::ProxyBody;
use crate::server::http1::OnClientUpgrade;
use crate::upstream::ResponseBody;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Response, StatusCode, Version, request};
use std::sync::Arc;

static UPGRADE_TOKEN: HeaderValue = HeaderValue::from_static("upgrade");

/// A client's pending upgrade.
pub struct ClientUpgrade(Kind);

enum Kind {
    /// The protocols an HTTP/1.1 client asked for and the handle on its connection, which our
    /// HTTP/1.1 server attaches to requests asking for an upgrade.
    Http1 {
        protocols: HeaderValue,
        on_upgrade: OnClientUpgrade,
    },
    /// An HTTP/2 client's WebSocket ([`websocket_h2::prepare`] made the request a GET).
    WebSocketOverH2(websocket_h2::Pending),
}

/// Takes the upgrade a request asks for: HTTP/1.1, an `Upgrade` header and `upgrade` listed in
/// `Connection`; or HTTP/2 prepared by [`websocket_h2::prepare`]. Costs a header lookup on
/// requests that ask for none.
pub fn take_request(parts: &mut request::Parts) -> Option<ClientUpgrade> {
    if parts.version == Version::HTTP_2 {
        return parts
            .extensions
            .remove::<websocket_h2::Pending>()
            .map(|pending| ClientUpgrade(Kind::WebSocketOverH2(pending)));
    }
    if parts.version != Version::HTTP_11 {
        return None;
    }
    let protocols = parts.headers.get(header::UPGRADE)?;
    if !has_token(parts.headers.get_all(header::CONNECTION), "upgrade")
        || has_token(parts.headers.get_all(header::UPGRADE), "h2c")
    {
        return None;
    }
    let protocols = protocols.clone();
    let on_upgrade = parts.extensions.remove::<OnClientUpgrade>()?;
    Some(ClientUpgrade(Kind::Http1 {
        protocols,
        on_upgrade,
    }))
}

/// Whether a comma-separated header lists `token` (case-insensitively, ignoring a `/version`).
fn has_token(values: header::GetAll<'_, HeaderValue>, token: &str) -> bool {
    values.iter().any(|v| {
        v.to_str().is_ok_and(|v| {
            v.split(',').any(|t| {
                let t = t.trim();
                let name = t.split_once('/').map_or(t, |(name, _)| name);
                name.eq_ignore_ascii_case(token)
            })
        })
    })
}

impl ClientUpgrade {
    /// Puts the upgrade request headers back after hop-by-hop stripping.
    pub fn restore_request_headers(&self, headers: &mut HeaderMap) {
        match &self.0 {
            Kind::Http1 { protocols, .. } => {
                headers.insert(header::UPGRADE, protocols.clone());
                headers.insert(header::CONNECTION, UPGRADE_TOKEN.clone());
            }
            Kind::WebSocketOverH2(pending) => pending.handshake_headers(headers),
        }
    }

    /// Answers the client with the upstream's `101` (hop-by-hop headers stripped, the upgrade
    /// headers kept) and spawns the tunnel that copies bytes both ways once the client side
    /// switched (the upstream side already has). An HTTP/2 client's `101` becomes its `200` in
    /// [`websocket_h2::answer`].
    pub fn switch(self, upstream: Response<ResponseBody>, route: Arc<str>) -> Response<ProxyBody> {
        debug_assert_eq!(upstream.status(), StatusCode::SWITCHING_PROTOCOLS);
        let (protocols, on_upgrade) = match self.0 {
            Kind::Http1 {
                protocols,
                on_upgrade,
            } => (protocols, on_upgrade),
            Kind::WebSocketOverH2(pending) => return pending.switch(upstream, route),
        };
        let (mut parts, body) = upstream.into_parts();
        let Some(upstream) = body.into_upgraded() else {
            tracing::warn!(%route, "101 from an upstream connection that cannot be upgraded");
            return super::response::upstream_error();
        };
        let protocol = parts.headers.get(header::UPGRADE).cloned();
        super::headers::strip_hop_by_hop(&mut parts.headers, false);
        parts
            .headers
            .insert(header::UPGRADE, protocol.unwrap_or(protocols));
        parts
            .headers
            .insert(header::CONNECTION, UPGRADE_TOKEN.clone());
        // The client side switches once the connection has written the 101 returned below.
        tunnel::spawn(route, on_upgrade, upstream, ());
        Response::from_parts(parts, super::response::empty())
    }

    /// Whether an upstream that does not speak HTTP/1.1 must not be sent the request at all:
    /// an HTTP/1.1 client's upgrade goes there as a plain request (whose answer, not a `101`,
    /// tells the client it was not switched), but an HTTP/2 client's WebSocket as a plain GET
    /// could only end in an answer that is no tunnel.
    pub fn requires_http1_upstream(&self) -> bool {
        matches!(self.0, Kind::WebSocketOverH2(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Request;

    fn parts(version: Version, headers: &[(&str, &str)], pending: bool) -> request::Parts {
        let mut req = Request::builder().version(version).uri("/ws");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let (mut parts, ()) = req.body(()).unwrap().into_parts();
        if pending {
            // The handle our HTTP/1.1 server attaches to a request asking for an upgrade.
            let (_switch, on_upgrade) = crate::server::http1::upgrade::pending();
            parts.extensions.insert(on_upgrade);
        }
        parts
    }

    #[test]
    fn recognises_upgrade_requests() {
        let ws = [
            ("upgrade", "websocket"),
            ("connection", "keep-alive, Upgrade"),
        ];
        let mut p = parts(Version::HTTP_11, &ws, true);
        let up = take_request(&mut p).expect("an upgrade");
        assert!(p.extensions.get::<OnClientUpgrade>().is_none(), "taken");
        let mut h = HeaderMap::new();
        up.restore_request_headers(&mut h);
        assert_eq!(h[header::UPGRADE], "websocket");
        assert_eq!(h[header::CONNECTION], "upgrade");

        // `Upgrade` without `Connection: upgrade` is not a request to switch (RFC 9110 §7.8).
        let mut p = parts(Version::HTTP_11, &[("upgrade", "websocket")], true);
        assert!(take_request(&mut p).is_none());
        // h2c is refused wherever it is listed.
        let h2c = [("upgrade", "foo/2, H2C"), ("connection", "Upgrade")];
        assert!(take_request(&mut parts(Version::HTTP_11, &h2c, true)).is_none());
        let other = [("upgrade", "foo/2, h2cx"), ("connection", "Upgrade")];
        assert!(take_request(&mut parts(Version::HTTP_11, &other, true)).is_some());
        // HTTP/1.0 and HTTP/2 cannot upgrade this way.
        assert!(take_request(&mut parts(Version::HTTP_10, &ws, true)).is_none());
        assert!(take_request(&mut parts(Version::HTTP_2, &ws, true)).is_none());
        // No handle on the client connection (server without upgrades): nothing to switch.
        assert!(take_request(&mut parts(Version::HTTP_11, &ws, false)).is_none());
        assert!(take_request(&mut parts(Version::HTTP_11, &[], true)).is_none());
    }
}
