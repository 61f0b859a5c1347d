//! Route middlewares (Goma's Middleware CRD): authentication, traffic control and
//! transformations, compiled once per route version and run per request.
//!
//! A route's [`Chain`] runs in list order once the route matched, after exploit protection and
//! before the request is forwarded (Goma's order; maintenance answers and CORS preflights run
//! none). Each middleware in scope may change the request, answer it itself (a refusal, a
//! redirect, a cached response) or let it through; on the way out, every middleware that ran
//! sees the response in reverse order. Middleware state (buckets, caches, keys) lives in
//! [`state::States`], outside snapshots.
//!
//! A middleware type this data plane cannot compile NACKs its route: the route is never served
//! without it.

pub mod access;
pub mod basic_auth;
pub mod body_limit;
mod client_url;
pub mod error_interceptor;
pub mod forward_auth;
pub mod geo_block;
mod header_rules;
pub mod headers;
pub mod http_cache;
pub mod jwt;
pub mod ldap;
pub mod log_fields;
pub mod oauth;
pub mod password_hash;
pub mod rate_limit;
pub mod redirects;
pub mod rewrite_path;
pub mod scope;
pub mod state;
pub mod strip_query;
pub mod subrequest;
#[cfg(test)]
mod transform_testing;
mod upstream_uri;

use crate::proxy::response::ProxyBody;
use crate::router::CompiledRoute;
use crate::shared_store::SharedStore;
use crate::snapshot::Snapshot;
use futures::future::BoxFuture;
use http::request::Parts;
use http::{Response, Uri};
use scope::PathScope;
use sluice_proto::config as pb;
use state::States;
use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

/// At most this many middlewares per route (a request tracks which ran in a 64-bit mask).
pub const MAX_PER_ROUTE: usize = 64;

/// What a middleware decided about a request.
pub enum Decision {
    /// Let it through to the next middleware.
    Continue,
    /// Answer it with this response; later middlewares do not run, earlier ones see it.
    Respond(Response<ProxyBody>),
    /// The decision needs I/O: the chain awaits [`Middleware::decide_async`].
    Async,
}

/// Runs on the way out, once (registered per request by [`RequestCtx::on_response`]).
pub type ResponseHook = Box<dyn FnOnce(&mut Response<ProxyBody>) + Send>;

/// One compiled middleware type. Implementations keep per-request work allocation-free where
/// they can: `decide` is synchronous, and only a middleware that must wait (a network call)
/// returns [`Decision::Async`].
pub trait Middleware: Send + Sync + fmt::Debug {
    fn decide(&self, ctx: &mut RequestCtx<'_>) -> Decision;

    /// Called instead of continuing when `decide` returned [`Decision::Async`]; must not return
    /// `Async` itself.
    fn decide_async<'a>(&'a self, _ctx: &'a mut RequestCtx<'_>) -> BoxFuture<'a, Decision> {
        Box::pin(async { Decision::Continue })
    }

    /// Sees the route's response (upstream or the gateway's own) when this middleware ran.
    fn on_response(&self, _ctx: &ResponseCtx<'_>, _resp: &mut Response<ProxyBody>) {}
}

/// Everything a middleware may read or change about a request.
pub struct RequestCtx<'a> {
    pub snapshot: &'a Arc<Snapshot>,
    pub route: &'a CompiledRoute,
    /// The request as it will be forwarded: forwarding headers added, the route's header
    /// modifier applied, `uri` holding the upstream path and query.
    pub parts: &'a mut Parts,
    /// The request target as the client sent it (scopes, redirects and auth calls use it).
    pub client_uri: &'a Uri,
    /// The host the client asked for, lower case, without port.
    pub host: &'a str,
    /// "http" or "https": the client connection's scheme.
    pub scheme: &'static str,
    /// The port the request arrived on.
    pub port: u16,
    /// The client's address (from trusted proxies' headers when the peer is one).
    pub client_ip: IpAddr,
    /// The largest request body allowed (bodyLimit); the smallest set wins.
    pub body_limit: Option<u64>,
    /// Extra fields for this request's access-log line.
    pub log_fields: Vec<(Arc<str>, String)>,
    hooks: Vec<ResponseHook>,
}

impl<'a> RequestCtx<'a> {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        snapshot: &'a Arc<Snapshot>,
        route: &'a CompiledRoute,
        parts: &'a mut Parts,
        client_uri: &'a Uri,
        host: &'a str,
        scheme: &'static str,
        port: u16,
        client_ip: IpAddr,
    ) -> Self {
        RequestCtx {
            snapshot,
            route,
            parts,
            client_uri,
            host,
            scheme,
            port,
            client_ip,
            body_limit: None,
            log_fields: Vec::new(),
            hooks: Vec::new(),
        }
    }

    /// Runs `hook` on this request's response (after the `on_response` of the middlewares
    /// that ran after the one registering it).
    pub fn on_response(&mut self, hook: ResponseHook) {
        self.hooks.push(hook);
    }

    /// Lowers the request body limit to `limit` bytes.
    pub fn limit_body(&mut self, limit: u64) {
        self.body_limit = Some(self.body_limit.map_or(limit, |l| l.min(limit)));
    }
}

/// What a middleware sees of the request on the way out.
pub struct ResponseCtx<'a> {
    pub client_uri: &'a Uri,
    pub method: &'a http::Method,
    /// Whether the response came from the upstream (not the gateway or a middleware).
    pub from_upstream: bool,
}

/// What the request phase leaves for the response phase.
pub struct Ran {
    /// Bit i: middleware i ran.
    mask: u64,
    hooks: Vec<ResponseHook>,
    pub body_limit: Option<u64>,
    pub log_fields: Vec<(Arc<str>, String)>,
}

impl Ran {
    pub fn none() -> Ran {
        Ran {
            mask: 0,
            hooks: Vec::new(),
            body_limit: None,
            log_fields: Vec::new(),
        }
    }
}

/// One middleware of a route: identity, scope and behaviour.
#[derive(Debug)]
pub struct Compiled {
    pub id: Arc<str>,
    scope: Option<PathScope>,
    behaviour: Box<dyn Middleware>,
}

/// A route's middlewares, in order. Empty for most routes (no cost beyond a length check).
#[derive(Debug, Default)]
pub struct Chain {
    items: Vec<Compiled>,
    /// Secret resources the middlewares read (the route recompiles when one changes).
    secrets: Vec<Arc<str>>,
}

/// What compiling a middleware may use besides its own message.
pub struct CompileEnv<'a> {
    /// State registry: use `states.get_or_insert(id, state_key, ..)` for anything that must
    /// survive recompiles.
    pub states: &'a mut States,
    pub secrets: &'a BTreeMap<String, Arc<pb::Secret>>,
    /// The gateway's shared store, when it has one.
    pub shared_store: Option<&'a Arc<SharedStore>>,
    /// GeoIP country database (MaxMind .mmdb) path given to the data plane, if any.
    pub geoip_database: Option<&'a std::path::Path>,
    /// Secret resources read so far (filled by [`CompileEnv::secret`]).
    used_secrets: Vec<Arc<str>>,
}

impl<'a> CompileEnv<'a> {
    pub fn new(
        states: &'a mut States,
        secrets: &'a BTreeMap<String, Arc<pb::Secret>>,
        shared_store: Option<&'a Arc<SharedStore>>,
        geoip_database: Option<&'a std::path::Path>,
    ) -> Self {
        CompileEnv {
            states,
            secrets,
            shared_store,
            geoip_database,
            used_secrets: Vec::new(),
        }
    }

    /// A Secret resource the middleware depends on (recorded so a rotation recompiles the
    /// route); an error naming it when it does not exist.
    pub fn secret(&mut self, name: &str) -> Result<&'a pb::Secret, String> {
        let secrets = self.secrets;
        let secret = secrets
            .get(name)
            .ok_or_else(|| format!("secret {name:?} does not exist"))?;
        if !self.used_secrets.iter().any(|s| &**s == name) {
            self.used_secrets.push(name.into());
        }
        Ok(secret)
    }
}

impl Chain {
    /// Compiles a route's middlewares; an error names the middleware and field
    /// (`middlewares[1].rate_limit.unit: ...`).
    pub fn compile(list: &[pb::Middleware], env: &mut CompileEnv<'_>) -> Result<Chain, String> {
        if list.len() > MAX_PER_ROUTE {
            return Err(format!(
                "middlewares: {} middlewares, at most {MAX_PER_ROUTE} per route",
                list.len()
            ));
        }
        env.used_secrets.clear();
        let mut items = Vec::with_capacity(list.len());
        for (i, m) in list.iter().enumerate() {
            let at = |e: String| format!("middlewares[{i}].{e}");
            if m.id.is_empty() {
                return Err(at("id: empty".into()));
            }
            let scope =
                PathScope::compile(m.scope.as_ref()).map_err(|e| at(format!("scope.{e}")))?;
            let behaviour =
                compile_kind(m, env).map_err(|e| format!("middlewares[{i}] ({}): {e}", m.id))?;
            items.push(Compiled {
                id: m.id.as_str().into(),
                scope,
                behaviour,
            });
        }
        Ok(Chain {
            items,
            secrets: std::mem::take(&mut env.used_secrets),
        })
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Secret resources the chain was compiled from.
    pub fn secrets(&self) -> &[Arc<str>] {
        &self.secrets
    }

    /// Runs the request phase. `Err` carries the response that ends the request (the
    /// response phase still has to run on it, with the returned [`Ran`]).
    pub async fn request(&self, ctx: &mut RequestCtx<'_>) -> (Ran, Option<Response<ProxyBody>>) {
        let mut mask = 0u64;
        let mut answer = None;
        let path = ctx.client_uri.path();
        for (i, m) in self.items.iter().enumerate() {
            if m.scope.as_ref().is_some_and(|s| !s.matches(path)) {
                continue;
            }
            mask |= 1 << i;
            let decision = match m.behaviour.decide(ctx) {
                Decision::Async => m.behaviour.decide_async(ctx).await,
                d => d,
            };
            match decision {
                Decision::Continue | Decision::Async => {}
                Decision::Respond(resp) => {
                    answer = Some(resp);
                    break;
                }
            }
        }
        let ran = Ran {
            mask,
            hooks: std::mem::take(&mut ctx.hooks),
            body_limit: ctx.body_limit,
            log_fields: std::mem::take(&mut ctx.log_fields),
        };
        (ran, answer)
    }

    /// Runs the response phase: registered hooks (latest first), then the `on_response` of
    /// every middleware that ran, last to first.
    pub fn response(&self, ran: &mut Ran, ctx: &ResponseCtx<'_>, resp: &mut Response<ProxyBody>) {
        while let Some(hook) = ran.hooks.pop() {
            hook(resp);
        }
        for (i, m) in self.items.iter().enumerate().rev() {
            if ran.mask & (1 << i) != 0 {
                m.behaviour.on_response(ctx, resp);
            }
        }
    }
}

/// The behaviour of one middleware message.
fn compile_kind(
    m: &pb::Middleware,
    env: &mut CompileEnv<'_>,
) -> Result<Box<dyn Middleware>, String> {
    use pb::middleware::Kind as K;
    let Some(kind) = &m.kind else {
        return Err("kind: not set".into());
    };
    let _ = (&m.state_key, &env);
    match kind {
        K::BasicAuth(rule) => basic_auth::compile(m, rule, env),
        K::Ldap(l) => ldap::compile(m, l, env),
        K::Jwt(rule) => jwt::compile(m, rule, env),
        K::Oauth(o) => oauth::compile(m, o),
        K::ForwardAuth(fa) => forward_auth::compile(m, fa),
        K::RateLimit(rl) => rate_limit::compile(m, rl, env).map_err(|e| format!("rate_limit.{e}")),
        K::Access(a) => access::compile_access(a).map_err(|e| format!("access.{e}")),
        K::AccessPolicy(p) => {
            access::compile_access_policy(p).map_err(|e| format!("access_policy.{e}"))
        }
        K::GeoBlock(g) => geo_block::compile(&m.id, g, env).map_err(|e| format!("geo_block.{e}")),
        K::UserAgentBlock(u) => {
            access::compile_user_agent_block(u).map_err(|e| format!("user_agent_block.{e}"))
        }
        K::BodyLimit(b) => body_limit::compile(b).map_err(|e| format!("body_limit.{e}")),
        K::AddPrefix(p) => boxed(rewrite_path::AddPrefix::compile(p)),
        K::RewriteRegex(r) => boxed(rewrite_path::RewriteRegex::compile(r)),
        K::StripQuery(s) => boxed(strip_query::StripQuery::compile(s)),
        K::Redirect(r) => boxed(redirects::RedirectTo::compile(r)),
        K::RedirectScheme(r) => boxed(redirects::RedirectScheme::compile(r)),
        K::RedirectRegex(r) => boxed(redirects::RedirectRegex::compile(r)),
        K::HttpCache(rule) => http_cache::compile(m, rule, env),
        K::ResponseHeaders(h) => boxed(headers::ResponseHeaders::compile(h)),
        K::RequestHeaders(h) => boxed(headers::RequestHeaders::compile(h)),
        K::AccessLog(a) => boxed(log_fields::LogFields::compile(a)),
        K::ErrorInterceptor(rule) => error_interceptor::compile(rule, env),
    }
}

/// A compiled middleware, boxed.
fn boxed<M: Middleware + 'static>(m: Result<M, String>) -> Result<Box<dyn Middleware>, String> {
    Ok(Box::new(m?))
}
