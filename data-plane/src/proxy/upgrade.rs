//! HTTP/1.1 protocol upgrades (WebSocket and any other `Upgrade:` token, RFC 9110 §7.8,
//! RFC 6455 §4): the upgrade headers are hop-by-hop, so they are carried across explicitly, and a
//! `101 Switching Protocols` from the upstream turns the two connections into a byte tunnel.
//!
//! Only HTTP/1.1 requests on HTTP/1.1 upstreams are upgraded; everything else is forwarded as a
//! plain request (the upgrade headers are stripped like any hop-by-hop header). `Upgrade: h2c` is
//! never passed on: an HTTP/2 tunnel to the backend would carry requests the gateway never
//! routed ("h2c smuggling").

use super::response::ProxyBody;
use crate::server::http1::OnClientUpgrade;
use crate::upstream::ResponseBody;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Response, StatusCode, Version, request};
use std::sync::Arc;

static UPGRADE_TOKEN: HeaderValue = HeaderValue::from_static("upgrade");

/// A client's pending upgrade: the protocols it asked for and the handle on its connection,
/// which our HTTP/1.1 server attaches to requests asking for an upgrade (HTTP/2 has none).
pub struct ClientUpgrade {
    protocols: HeaderValue,
    on_upgrade: OnClientUpgrade,
}

/// Takes the upgrade a request asks for: HTTP/1.1, an `Upgrade` header and `upgrade` listed in
/// `Connection`. Costs a header lookup on requests that ask for none.
pub fn take_request(parts: &mut request::Parts) -> Option<ClientUpgrade> {
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
    Some(ClientUpgrade {
        protocols,
        on_upgrade,
    })
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
        headers.insert(header::UPGRADE, self.protocols.clone());
        headers.insert(header::CONNECTION, UPGRADE_TOKEN.clone());
    }

    /// Answers the client with the upstream's `101` (hop-by-hop headers stripped, the upgrade
    /// headers kept) and spawns the tunnel that copies bytes both ways once the client side
    /// switched (the upstream side already has).
    pub fn switch(self, upstream: Response<ResponseBody>, route: Arc<str>) -> Response<ProxyBody> {
        debug_assert_eq!(upstream.status(), StatusCode::SWITCHING_PROTOCOLS);
        let (mut parts, body) = upstream.into_parts();
        let Some(mut upstream) = body.into_upgraded() else {
            tracing::warn!(%route, "101 from an upstream connection that cannot be upgraded");
            return super::response::upstream_error();
        };
        let protocol = parts.headers.get(header::UPGRADE).cloned();
        super::headers::strip_hop_by_hop(&mut parts.headers, false);
        parts
            .headers
            .insert(header::UPGRADE, protocol.unwrap_or(self.protocols));
        parts
            .headers
            .insert(header::CONNECTION, UPGRADE_TOKEN.clone());
        let client_io = self.on_upgrade;
        tokio::spawn(async move {
            // The client side switches once the connection has written the 101 returned below.
            let mut client = match client_io.await {
                Ok(client) => client,
                Err(error) => {
                    tracing::debug!(%route, %error, "upgrade did not complete");
                    return;
                }
            };
            match tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
                Ok((up, down)) => {
                    tracing::debug!(%route, bytes_up = up, bytes_down = down, "upgraded connection closed");
                }
                Err(error) => tracing::debug!(%route, %error, "upgraded connection ended"),
            }
        });
        Response::from_parts(parts, super::response::empty())
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
