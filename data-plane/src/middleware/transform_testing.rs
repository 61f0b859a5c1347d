//! Test support for the transformation middlewares: a request context built from a target and
//! headers, without a proxy.

use super::{Decision, Middleware, Ran, RequestCtx, ResponseCtx};
use crate::proxy::response::{self, ProxyBody};
use crate::router::CompiledRoute;
use crate::snapshot::Snapshot;
use http::request::Parts;
use http::{Response, Uri};
use sluice_proto::config as pb;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

/// One request: `parts` is what will be forwarded (it starts as the client's request).
pub struct Harness {
    pub snapshot: Arc<Snapshot>,
    pub route: CompiledRoute,
    pub parts: Parts,
    pub client_uri: Uri,
    pub host: String,
    pub scheme: &'static str,
    pub port: u16,
    pub log_fields: Vec<(Arc<str>, String)>,
    pub hooks: Ran,
}

impl Harness {
    pub fn new(target: &str, headers: &[(&str, &str)]) -> Harness {
        Harness::with_method("GET", target, headers)
    }

    pub fn with_method(method: &str, target: &str, headers: &[(&str, &str)]) -> Harness {
        let mut req = http::Request::builder().method(method).uri(target);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let (parts, ()) = req.body(()).expect("test request").into_parts();
        let route = CompiledRoute::compile(&pb::Route {
            name: "route/default/test".into(),
            action: Some(pb::route::Action::DirectResponse(pb::DirectResponse {
                status: 200,
                ..Default::default()
            })),
            ..Default::default()
        })
        .expect("test route");
        Harness {
            snapshot: Arc::new(Snapshot::empty()),
            route,
            client_uri: parts.uri.clone(),
            parts,
            host: "example.com".into(),
            scheme: "http",
            port: 80,
            log_fields: Vec::new(),
            hooks: Ran::none(),
        }
    }
}

/// Runs `m`'s request phase on `h` (response hooks are kept in `h.hooks`).
pub fn decide(m: &dyn Middleware, h: &mut Harness) -> Decision {
    let mut ctx = RequestCtx::new(
        &h.snapshot,
        &h.route,
        &mut h.parts,
        &h.client_uri,
        &h.host,
        h.scheme,
        h.port,
        IpAddr::V4(Ipv4Addr::LOCALHOST),
    );
    let decision = m.decide(&mut ctx);
    h.log_fields.append(&mut ctx.log_fields);
    h.hooks.hooks.append(&mut ctx.hooks);
    decision
}

/// Runs the response phase of `m` (hooks registered by its `decide` first) on `resp`.
pub fn respond(m: &dyn Middleware, h: &mut Harness, resp: &mut Response<ProxyBody>) {
    while let Some(hook) = h.hooks.hooks.pop() {
        hook(resp);
    }
    let ctx = ResponseCtx {
        client_uri: &h.client_uri,
        method: &h.parts.method,
        from_upstream: true,
    };
    m.on_response(&ctx, resp);
}

/// An upstream-like response with `status`.
pub fn upstream(status: u16) -> Response<ProxyBody> {
    let mut resp = Response::new(response::empty());
    *resp.status_mut() = http::StatusCode::from_u16(status).expect("test status");
    resp
}
