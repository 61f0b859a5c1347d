//! `forwardAuth`: asks an HTTP service whether a request may pass, like nginx `auth_request`.
//!
//! The auth call is `GET <authUrl>` through the middleware's Cluster. It carries the client
//! headers named in `authRequestHeaders`, or every client header when the list is empty
//! (Cookie and Authorization included, so the common session check needs no configuration;
//! the gateway's forwarding headers are sent only with `forwardHostHeaders`). With
//! `forwardHostHeaders` it also carries X-Forwarded-Host/Method/Proto/For/Uri, X-Original-URL
//! and X-Real-IP.
//!
//! Any 2xx lets the request through (Goma: only 200; nginx and Traefik accept 2xx). A 401 with
//! `authSignIn` set redirects (302) to the sign-in URL with `?rd=<original URL>`; 401 and 403
//! are passed on, with the service's body and challenge; any other answer becomes 401. A
//! transport error or a timeout (5s) answers 502 and never lets the request through.

use super::client_url::{original_url, with_query_param};
use super::subrequest::{Reply, Service};
use super::{Decision, Middleware, RequestCtx};
use crate::proxy::response::{self, ProxyBody};
use bytes::Bytes;
use futures::future::BoxFuture;
use http::header::{self, HeaderName};
use http::uri::PathAndQuery;
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode};
use sluice_proto::config as pb;
use std::sync::Arc;

#[derive(Debug)]
pub struct ForwardAuth {
    id: Arc<str>,
    service: Service,
    sign_in_url: Option<Box<str>>,
    forward_host_headers: bool,
    /// Empty: every client header.
    request_headers: Vec<HeaderName>,
    response_cookies: Vec<Box<str>>,
    response_headers: Vec<(HeaderName, HeaderName)>,
    response_params: Vec<(HeaderName, Box<str>)>,
}

/// Headers the gateway itself sets on the auth call (with `forwardHostHeaders`), never copied
/// from the client.
const FORWARDING: [&str; 7] = [
    "x-forwarded-host",
    "x-forwarded-method",
    "x-forwarded-proto",
    "x-forwarded-for",
    "x-forwarded-uri",
    "x-original-url",
    "x-real-ip",
];

pub fn compile(m: &pb::Middleware, fa: &pb::ForwardAuth) -> Result<Box<dyn Middleware>, String> {
    let service = fa
        .service
        .as_ref()
        .ok_or_else(|| "forward_auth.service: not set".to_owned())
        .and_then(|s| Service::compile(s).map_err(|e| format!("forward_auth.service.{e}")))?;
    let name = |field: &str, i: usize, v: &str| {
        HeaderName::try_from(v)
            .map_err(|_| format!("forward_auth.{field}[{i}]: {v:?} is not a header name"))
    };
    let request_headers = fa
        .request_headers
        .iter()
        .enumerate()
        .map(|(i, h)| name("request_headers", i, h))
        .collect::<Result<_, _>>()?;
    let response_headers = fa
        .response_headers
        .iter()
        .enumerate()
        .map(|(i, c)| {
            Ok((
                name("response_headers", i, &c.from)?,
                name("response_headers", i, &c.to)?,
            ))
        })
        .collect::<Result<_, String>>()?;
    let response_params = fa
        .response_headers_as_params
        .iter()
        .enumerate()
        .map(|(i, c)| {
            if c.to.is_empty() {
                return Err(format!(
                    "forward_auth.response_headers_as_params[{i}].to: empty"
                ));
            }
            Ok((
                name("response_headers_as_params", i, &c.from)?,
                c.to.as_str().into(),
            ))
        })
        .collect::<Result<_, String>>()?;
    Ok(Box::new(ForwardAuth {
        id: m.id.as_str().into(),
        service,
        sign_in_url: (!fa.sign_in_url.is_empty()).then(|| fa.sign_in_url.as_str().into()),
        forward_host_headers: fa.forward_host_headers,
        request_headers,
        response_cookies: fa
            .response_cookies
            .iter()
            .map(|c| c.as_str().into())
            .collect(),
        response_headers,
        response_params,
    }))
}

impl Middleware for ForwardAuth {
    fn decide(&self, _ctx: &mut RequestCtx<'_>) -> Decision {
        Decision::Async
    }

    fn decide_async<'a>(&'a self, ctx: &'a mut RequestCtx<'_>) -> BoxFuture<'a, Decision> {
        Box::pin(async move {
            let headers = self.auth_request_headers(ctx);
            let reply = self
                .service
                .call(ctx.snapshot, Method::GET, None, headers, Bytes::new())
                .await;
            match reply {
                Ok(reply) if reply.status.is_success() => {
                    self.admit(ctx, &reply);
                    Decision::Continue
                }
                Ok(reply) => {
                    tracing::debug!(middleware = %self.id, status = %reply.status, "forward auth refused the request");
                    Decision::Respond(self.refusal(ctx, reply))
                }
                Err(error) => {
                    tracing::warn!(middleware = %self.id, %error, "forward auth service unavailable; request refused");
                    Decision::Respond(response::text(
                        StatusCode::BAD_GATEWAY,
                        "authentication service unavailable\n",
                    ))
                }
            }
        })
    }
}

impl ForwardAuth {
    fn auth_request_headers(&self, ctx: &RequestCtx<'_>) -> HeaderMap {
        let client = &ctx.parts.headers;
        let mut headers = HeaderMap::new();
        if self.request_headers.is_empty() {
            for (name, value) in client {
                let skip = name == header::HOST
                    || name == header::CONTENT_LENGTH
                    || name == header::TRANSFER_ENCODING
                    || name == header::EXPECT
                    || FORWARDING.contains(&name.as_str());
                if !skip {
                    headers.append(name.clone(), value.clone());
                }
            }
        } else {
            for name in &self.request_headers {
                if FORWARDING.contains(&name.as_str()) && self.forward_host_headers {
                    continue; // set below from what the gateway knows
                }
                for value in client.get_all(name) {
                    headers.append(name.clone(), value.clone());
                }
            }
        }
        if self.forward_host_headers {
            let set = |headers: &mut HeaderMap, name: &'static str, value: Option<HeaderValue>| {
                if let Some(v) = value {
                    headers.insert(HeaderName::from_static(name), v);
                }
            };
            let url = original_url(ctx);
            let host = client
                .get("x-forwarded-host")
                .cloned()
                .or_else(|| HeaderValue::from_str(ctx.host).ok());
            set(&mut headers, "x-forwarded-host", host);
            set(
                &mut headers,
                "x-forwarded-method",
                HeaderValue::from_str(ctx.parts.method.as_str()).ok(),
            );
            set(
                &mut headers,
                "x-forwarded-proto",
                Some(HeaderValue::from_static(ctx.scheme)),
            );
            set(
                &mut headers,
                "x-forwarded-for",
                client.get("x-forwarded-for").cloned(),
            );
            set(
                &mut headers,
                "x-forwarded-uri",
                ctx.client_uri
                    .path_and_query()
                    .and_then(|p| HeaderValue::from_str(p.as_str()).ok()),
            );
            set(
                &mut headers,
                "x-original-url",
                HeaderValue::from_str(&url).ok(),
            );
            set(
                &mut headers,
                "x-real-ip",
                HeaderValue::from_str(&ctx.client_ip.to_string()).ok(),
            );
        }
        headers
    }

    /// Copies what the service granted onto the forwarded request and the client's response.
    fn admit(&self, ctx: &mut RequestCtx<'_>, reply: &Reply) {
        for (from, to) in &self.response_headers {
            // A client must not be able to claim what only the auth service may assert.
            ctx.parts.headers.remove(to);
            for value in reply.headers.get_all(from) {
                ctx.parts.headers.append(to.clone(), value.clone());
            }
        }
        if !self.response_params.is_empty() {
            let mut extra = form_urlencoded::Serializer::new(String::new());
            let mut any = false;
            for (from, param) in &self.response_params {
                if let Some(v) = reply.headers.get(from).and_then(|v| v.to_str().ok()) {
                    extra.append_pair(param, v);
                    any = true;
                }
            }
            if any {
                let extra = extra.finish();
                let current = ctx.parts.uri.path_and_query().map_or("/", |p| p.as_str());
                let separator = if current.contains('?') { '&' } else { '?' };
                match PathAndQuery::try_from(format!("{current}{separator}{extra}")) {
                    Ok(pq) => ctx.parts.uri = http::Uri::from(pq),
                    Err(error) => {
                        tracing::debug!(middleware = %self.id, %error, "auth response values do not fit in a query")
                    }
                }
            }
        }
        let cookies: Vec<HeaderValue> = reply
            .headers
            .get_all(header::SET_COOKIE)
            .iter()
            .filter(|c| {
                cookie_name(c).is_some_and(|n| self.response_cookies.iter().any(|w| **w == *n))
            })
            .cloned()
            .collect();
        if !cookies.is_empty() {
            ctx.on_response(Box::new(move |resp: &mut Response<ProxyBody>| {
                for c in cookies {
                    resp.headers_mut().append(header::SET_COOKIE, c);
                }
            }));
        }
    }

    fn refusal(&self, ctx: &RequestCtx<'_>, reply: Reply) -> Response<ProxyBody> {
        if reply.status == StatusCode::UNAUTHORIZED
            && let Some(sign_in) = &self.sign_in_url
        {
            let target = with_query_param(sign_in, "rd", &original_url(ctx));
            if let Ok(location) = HeaderValue::from_str(&target) {
                return response::redirect(StatusCode::FOUND, location);
            }
        }
        let status = match reply.status {
            StatusCode::FORBIDDEN => StatusCode::FORBIDDEN,
            _ => StatusCode::UNAUTHORIZED,
        };
        let mut resp = Response::new(response::full(reply.body));
        *resp.status_mut() = status;
        for name in [header::CONTENT_TYPE, header::WWW_AUTHENTICATE] {
            for v in reply.headers.get_all(&name) {
                resp.headers_mut().append(name.clone(), v.clone());
            }
        }
        resp
    }
}

/// The name of a `Set-Cookie` value (`name=value; attributes`).
fn cookie_name(value: &HeaderValue) -> Option<&str> {
    let text = value.to_str().ok()?;
    let (name, _) = text.split_once('=')?;
    Some(name.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_cookie_names() {
        assert_eq!(
            cookie_name(&HeaderValue::from_static("session=abc; Path=/; HttpOnly")),
            Some("session")
        );
        assert_eq!(cookie_name(&HeaderValue::from_static("broken")), None);
    }

    #[test]
    fn compile_names_bad_fields() {
        let m = pb::Middleware {
            id: "Middleware default/fa".into(),
            ..Default::default()
        };
        let mut fa = pb::ForwardAuth::default();
        let err = compile(&m, &fa).unwrap_err();
        assert!(err.starts_with("forward_auth.service"), "{err}");
        fa.service = Some(pb::HttpService {
            cluster: "c".into(),
            authority: "auth".into(),
            path: "/check".into(),
            ..Default::default()
        });
        fa.response_headers = vec![pb::HeaderCopy {
            from: "X-User".into(),
            to: "bad header".into(),
        }];
        let err = compile(&m, &fa).unwrap_err();
        assert!(err.starts_with("forward_auth.response_headers[0]"), "{err}");
        fa.response_headers.clear();
        assert!(compile(&m, &fa).is_ok());
    }
}
