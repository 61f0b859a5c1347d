//! Route rules to Route resources: one per rule (per distinct hostname set of its listeners),
//! named `{kind}/{namespace}/{name}/{rule:04}`.

use sluice_proto::config as pb;

use super::backend::{Backends, Unresolved};
use super::index::Index;
use crate::model::gateway_api::route::{
    GrpcRouteRule, HeaderFilter, HttpBackendRef, HttpRouteFilter, HttpRouteMatch, HttpRouteRetry,
    HttpRouteRule, L4RouteRule, PathModifier, StringMatch,
};
use crate::model::{Kind, Object};
use crate::translate::middleware;
use crate::translate::{parse_go_duration, pb_duration};

/// Where a route's rules go: each group of listeners sharing the same effective hostnames.
pub struct Placement {
    pub listeners: Vec<String>,
    pub hostnames: Vec<String>,
}

/// The identity every rule of one route shares.
pub struct RouteContext<'a> {
    /// "HTTPRoute", ...
    pub kind: &'static str,
    pub namespace: &'a str,
    pub name: &'a str,
    pub creation_order: i64,
    pub placements: &'a [Placement],
}

/// What translating a route's rules found besides the resources.
#[derive(Default)]
pub struct RuleProblems {
    /// Backend references that did not resolve (ResolvedRefs=False; their share answers 500).
    pub unresolved: Vec<Unresolved>,
    /// Rules that cannot be served: (reason, message). Some → PartiallyInvalid, all → not Accepted.
    pub invalid: Vec<(&'static str, String)>,
}

impl RouteContext<'_> {
    fn place(&self, rule: usize, template: pb::Route, out: &mut Vec<pb::Route>) {
        let base = format!(
            "{}/{}/{}/{rule:04}",
            self.kind.to_ascii_lowercase(),
            self.namespace,
            self.name
        );
        for (g, p) in self.placements.iter().enumerate() {
            let mut r = template.clone();
            r.name = if g == 0 {
                base.clone()
            } else {
                format!("{base}/{g}")
            };
            r.source = format!("{} {}/{}", self.kind, self.namespace, self.name);
            r.listeners = p.listeners.clone();
            r.hostnames = p.hostnames.clone();
            r.creation_order = self.creation_order;
            out.push(r);
        }
    }
}

fn string_match(m: &StringMatch, field: &str) -> Result<pb::StringMatch, String> {
    match m.type_.as_deref().unwrap_or("Exact") {
        "Exact" => Ok(pb::StringMatch {
            kind: pb::string_match::Kind::Exact as i32,
            value: m.value.clone(),
            ..Default::default()
        }),
        "RegularExpression" => {
            // Whole-value semantics, like the path regex.
            let anchored = format!("^(?:{})$", m.value);
            regex::Regex::new(&anchored)
                .map_err(|e| format!("{field}.value: invalid regular expression: {e}"))?;
            Ok(pb::StringMatch {
                kind: pb::string_match::Kind::Regex as i32,
                value: anchored,
                ..Default::default()
            })
        }
        other => Err(format!("{field}.type: {other:?} is not supported")),
    }
}

/// Header matches, keeping only the first of names that compare equal (case-insensitive).
fn header_matches(headers: &[StringMatch], field: &str) -> Result<Vec<pb::HeaderMatch>, String> {
    let mut out: Vec<pb::HeaderMatch> = Vec::new();
    for (i, h) in headers.iter().enumerate() {
        if out.iter().any(|o| o.name.eq_ignore_ascii_case(&h.name)) {
            continue;
        }
        out.push(pb::HeaderMatch {
            name: h.name.clone(),
            value: Some(string_match(h, &format!("{field}.headers[{i}]"))?),
        });
    }
    Ok(out)
}

fn http_match(m: &HttpRouteMatch, field: &str) -> Result<pb::RouteMatch, String> {
    let path = m.path.as_ref();
    let value = path
        .and_then(|p| p.value.clone())
        .unwrap_or_else(|| "/".into());
    let kind = match path
        .and_then(|p| p.type_.as_deref())
        .unwrap_or("PathPrefix")
    {
        "PathPrefix" => pb::path_match::Kind::Prefix,
        "Exact" => pb::path_match::Kind::Exact,
        "RegularExpression" => {
            regex::Regex::new(&value)
                .map_err(|e| format!("{field}.path.value: invalid regular expression: {e}"))?;
            pb::path_match::Kind::Regex
        }
        other => return Err(format!("{field}.path.type: {other:?} is not supported")),
    };
    let mut query_params: Vec<pb::QueryParamMatch> = Vec::new();
    for (i, q) in m.query_params.iter().enumerate() {
        // Query parameter names are case-sensitive; the first of equal names counts.
        if query_params.iter().any(|o| o.name == q.name) {
            continue;
        }
        query_params.push(pb::QueryParamMatch {
            name: q.name.clone(),
            value: Some(string_match(q, &format!("{field}.queryParams[{i}]"))?),
        });
    }
    Ok(pb::RouteMatch {
        path: Some(pb::PathMatch {
            kind: kind as i32,
            value,
        }),
        method: m.method.clone().unwrap_or_default(),
        headers: header_matches(&m.headers, field)?,
        query_params,
    })
}

fn header_modifier(f: &HeaderFilter) -> pb::HeaderModifier {
    let values = |v: &[crate::model::gateway_api::route::HttpHeader]| {
        v.iter()
            .map(|h| pb::HeaderValue {
                name: h.name.clone(),
                value: h.value.clone(),
            })
            .collect()
    };
    pb::HeaderModifier {
        set: values(&f.set),
        add: values(&f.add),
        remove: f.remove.clone(),
    }
}

fn path_rewrite(p: &PathModifier, field: &str) -> Result<pb::PathRewrite, String> {
    let kind = match p.type_.as_str() {
        "ReplaceFullPath" => pb::path_rewrite::Kind::ReplaceFull(
            p.replace_full_path.clone().unwrap_or_else(|| "/".into()),
        ),
        "ReplacePrefixMatch" => pb::path_rewrite::Kind::ReplacePrefix(
            p.replace_prefix_match.clone().unwrap_or_else(|| "/".into()),
        ),
        other => return Err(format!("{field}.type: {other:?} is not supported")),
    };
    Ok(pb::PathRewrite { kind: Some(kind) })
}

/// Forwarding, unless no backend resolved: then every request is answered 500 by the gateway
/// itself (the same answer each unresolved share gets, without naming a cluster).
/// Gateway API backends see the client's Host (`:authority`), as with every conformant
/// implementation; only URLRewrite's hostname changes it.
fn pass_host() -> pb::ForwardAction {
    pb::ForwardAction {
        preserve_host: true,
        ..Default::default()
    }
}

fn forward_or_500(forward: pb::ForwardAction) -> pb::route::Action {
    if forward.backends.iter().all(|b| b.cluster.is_empty()) {
        direct(500)
    } else {
        pb::route::Action::Forward(forward)
    }
}

fn direct(status: u32) -> pb::route::Action {
    pb::route::Action::DirectResponse(pb::DirectResponse {
        status,
        ..Default::default()
    })
}

/// Rule filters applied to `route`; returns the redirect, if any.
#[allow(clippy::too_many_arguments)]
fn apply_filters(
    index: &Index,
    backends: &mut Backends,
    ctx: &RouteContext,
    filters: &[HttpRouteFilter],
    field: &str,
    route: &mut pb::Route,
    forward: &mut pb::ForwardAction,
    problems: &mut RuleProblems,
) -> Result<Option<pb::Redirect>, (&'static str, String)> {
    let mut redirect = None;
    let has = |t: &str| filters.iter().any(|f| f.type_ == t);
    if has("RequestRedirect") && has("URLRewrite") {
        return Err((
            "IncompatibleFilters",
            format!("{field}: RequestRedirect and URLRewrite cannot be combined"),
        ));
    }
    for (i, f) in filters.iter().enumerate() {
        let at = format!("{field}[{i}]");
        let missing = || {
            (
                "UnsupportedValue",
                format!("{at}: {} needs its configuration", f.type_),
            )
        };
        match f.type_.as_str() {
            "RequestHeaderModifier" => {
                route.request_headers = Some(header_modifier(
                    f.request_header_modifier.as_ref().ok_or_else(missing)?,
                ));
            }
            "ResponseHeaderModifier" => {
                route.response_headers = Some(header_modifier(
                    f.response_header_modifier.as_ref().ok_or_else(missing)?,
                ));
            }
            "RequestRedirect" => {
                let r = f.request_redirect.as_ref().ok_or_else(missing)?;
                redirect = Some(pb::Redirect {
                    scheme: r.scheme.clone().unwrap_or_default(),
                    hostname: r.hostname.clone().unwrap_or_default(),
                    port: r.port.and_then(|p| u32::try_from(p).ok()).unwrap_or(0),
                    path: match &r.path {
                        Some(p) => Some(
                            path_rewrite(p, &format!("{at}.requestRedirect.path"))
                                .map_err(|m| ("UnsupportedValue", m))?,
                        ),
                        None => None,
                    },
                    status: r
                        .status_code
                        .and_then(|s| u32::try_from(s).ok())
                        .unwrap_or(302),
                });
            }
            "URLRewrite" => {
                let r = f.url_rewrite.as_ref().ok_or_else(missing)?;
                forward.host_rewrite = r.hostname.clone().unwrap_or_default();
                if let Some(p) = &r.path {
                    forward.path_rewrite = Some(
                        path_rewrite(p, &format!("{at}.urlRewrite.path"))
                            .map_err(|m| ("UnsupportedValue", m))?,
                    );
                }
            }
            "RequestMirror" => {
                let m = f.request_mirror.as_ref().ok_or_else(missing)?;
                let (numerator, denominator) = match (&m.percent, &m.fraction) {
                    (Some(p), _) => (*p, 100),
                    (None, Some(fr)) => (fr.numerator, fr.denominator.unwrap_or(100)),
                    (None, None) => (0, 0),
                };
                match backends.resolve(
                    index,
                    ctx.kind,
                    ctx.namespace,
                    &format!("{at}.requestMirror.backendRef"),
                    &m.backend_ref,
                    ctx.kind == "GRPCRoute",
                ) {
                    Ok(cluster) => route.mirrors.push(pb::RequestMirror {
                        cluster,
                        numerator: u32::try_from(numerator).unwrap_or(0),
                        denominator: u32::try_from(denominator).unwrap_or(0),
                    }),
                    // An unresolved mirror is dropped; the request itself is unaffected.
                    Err(u) => problems.unresolved.push(u),
                }
            }
            "CORS" => {
                let c = f.cors.as_ref().ok_or_else(missing)?;
                route.cors = Some(pb::Cors {
                    allow_origins: c.allow_origins.clone(),
                    allow_methods: c.allow_methods.clone(),
                    allow_headers: c.allow_headers.clone(),
                    expose_headers: c.expose_headers.clone(),
                    allow_credentials: c.allow_credentials.unwrap_or(false),
                    max_age_seconds: c.max_age.and_then(|m| u32::try_from(m).ok()).unwrap_or(5),
                });
            }
            other => {
                return Err((
                    "UnsupportedValue",
                    format!("{at}.type: {other:?} filters are not supported"),
                ));
            }
        }
    }
    Ok(redirect)
}

/// Weighted backends of a rule; unresolved references keep their share, answered 500.
#[allow(clippy::too_many_arguments)]
fn weighted_backends(
    index: &Index,
    backends: &mut Backends,
    ctx: &RouteContext,
    refs: &[HttpBackendRef],
    field: &str,
    grpc: bool,
    problems: &mut RuleProblems,
) -> Result<Vec<pb::WeightedBackend>, (&'static str, String)> {
    let mut out = Vec::new();
    for (i, b) in refs.iter().enumerate() {
        let at = format!("{field}[{i}]");
        let cluster = match backends.resolve(index, ctx.kind, ctx.namespace, &at, &b.backend, grpc)
        {
            Ok(c) => c,
            Err(u) => {
                problems.unresolved.push(u);
                String::new()
            }
        };
        let mut backend = pb::WeightedBackend {
            cluster,
            weight: b
                .backend
                .weight
                .and_then(|w| u32::try_from(w).ok())
                .unwrap_or(1),
            ..Default::default()
        };
        for (j, f) in b.filters.iter().enumerate() {
            let ff = format!("{at}.filters[{j}]");
            match (
                f.type_.as_str(),
                &f.request_header_modifier,
                &f.response_header_modifier,
            ) {
                ("RequestHeaderModifier", Some(m), _) => {
                    backend.request_headers = Some(header_modifier(m))
                }
                ("ResponseHeaderModifier", _, Some(m)) => {
                    backend.response_headers = Some(header_modifier(m))
                }
                (other, _, _) => {
                    return Err((
                        "UnsupportedValue",
                        format!("{ff}.type: {other:?} is not supported on a backendRef"),
                    ));
                }
            }
        }
        out.push(backend);
    }
    Ok(out)
}

fn timeout(
    text: &Option<String>,
    field: &str,
) -> Result<Option<prost_types::Duration>, (&'static str, String)> {
    match text {
        None => Ok(None),
        Some(t) => {
            let d =
                parse_go_duration(t).map_err(|e| ("UnsupportedValue", format!("{field}: {e}")))?;
            // "0s" disables the timeout.
            Ok((!d.is_zero()).then(|| pb_duration(d)))
        }
    }
}

/// `rules[].retry`: retries after the first attempt (unset: one), on these statuses (400-599;
/// the data plane retries them for idempotent requests only), waiting at least `backoff`.
fn retry(r: &HttpRouteRetry, field: &str) -> Result<pb::RetryPolicy, (&'static str, String)> {
    let attempts = match r.attempts {
        None => 1,
        Some(n) if (1..=10).contains(&n) => n as u32,
        Some(n) => {
            return Err((
                "UnsupportedValue",
                format!("{field}.attempts: {n} is outside 1-10"),
            ));
        }
    };
    let mut statuses = Vec::with_capacity(r.codes.len());
    for (i, code) in r.codes.iter().enumerate() {
        match u32::try_from(*code) {
            Ok(c) if (400..=599).contains(&c) => statuses.push(c),
            _ => {
                return Err((
                    "UnsupportedValue",
                    format!("{field}.codes[{i}]: {code} is not a status in 400-599"),
                ));
            }
        }
    }
    Ok(pb::RetryPolicy {
        attempts,
        statuses,
        backoff: timeout(&r.backoff, &format!("{field}.backoff"))?,
    })
}

/// One rule of an HTTPRoute or GRPCRoute into a Route; Err makes the rule invalid.
pub type RuleTranslator<R> = fn(
    &Index,
    &mut Backends,
    &RouteContext,
    &R,
    &str,
    &mut RuleProblems,
) -> Result<pb::Route, (&'static str, String)>;

/// Translates every rule with `translate`, placing the valid ones on the route's listeners and
/// recording the invalid ones.
pub fn rules<R>(
    index: &Index,
    backends: &mut Backends,
    ctx: &RouteContext,
    rules: &[R],
    translate: RuleTranslator<R>,
    out: &mut Vec<pb::Route>,
    problems: &mut RuleProblems,
) {
    for (i, rule) in rules.iter().enumerate() {
        let field = format!("spec.rules[{i}]");
        match translate(index, backends, ctx, rule, &field, problems) {
            Ok(route) => ctx.place(i, route, out),
            Err(e) => problems.invalid.push(e),
        }
    }
}

pub fn http_rule(
    index: &Index,
    backends: &mut Backends,
    ctx: &RouteContext,
    rule: &HttpRouteRule,
    field: &str,
    problems: &mut RuleProblems,
) -> Result<pb::Route, (&'static str, String)> {
    let matches = if rule.matches.is_empty() {
        vec![http_match(&HttpRouteMatch::default(), field).map_err(|m| ("UnsupportedValue", m))?]
    } else {
        rule.matches
            .iter()
            .enumerate()
            .map(|(j, m)| http_match(m, &format!("{field}.matches[{j}]")))
            .collect::<Result<_, _>>()
            .map_err(|m| ("UnsupportedValue", m))?
    };
    let mut route = pb::Route {
        matches,
        ..Default::default()
    };
    let mut forward = pass_host();
    if let Some(t) = &rule.timeouts {
        forward.timeout = timeout(&t.request, &format!("{field}.timeouts.request"))?;
        forward.backend_timeout = timeout(
            &t.backend_request,
            &format!("{field}.timeouts.backendRequest"),
        )?;
    }
    if let Some(r) = &rule.retry {
        forward.retry = Some(retry(r, &format!("{field}.retry"))?);
    }
    // ExtensionRef filters name Goma Middlewares. One that cannot run must not be skipped: the
    // requests it would have processed get an error instead.
    for (i, f) in rule.filters.iter().enumerate() {
        if f.type_ != "ExtensionRef" {
            continue;
        }
        match extension_middleware(index, backends, ctx, f, &format!("{field}.filters[{i}]")) {
            Ok(m) => route.middlewares.push(m),
            Err(unresolved) => {
                problems.unresolved.push(unresolved);
                route.middlewares.clear();
                route.action = Some(direct(500));
                return Ok(route);
            }
        }
    }
    let redirect = apply_filters(
        index,
        backends,
        ctx,
        &rule.filters,
        &format!("{field}.filters"),
        &mut route,
        &mut forward,
        problems,
    )?;
    route.action = Some(match redirect {
        Some(r) => pb::route::Action::Redirect(r),
        None if rule.backend_refs.is_empty() => direct(500),
        None => {
            forward.backends = weighted_backends(
                index,
                backends,
                ctx,
                &rule.backend_refs,
                &format!("{field}.backendRefs"),
                false,
                problems,
            )?;
            forward_or_500(forward)
        }
    });
    Ok(route)
}

/// An ExtensionRef filter naming a Goma Middleware of the route's namespace, translated for this
/// route (its Clusters and Secrets join the gateway's).
fn extension_middleware(
    index: &Index,
    backends: &mut Backends,
    ctx: &RouteContext,
    filter: &HttpRouteFilter,
    at: &str,
) -> Result<pb::Middleware, Unresolved> {
    let field = |key: &str| {
        filter
            .extension_ref
            .as_ref()
            .and_then(|r| r.get(key))
            .and_then(|v| v.as_str())
            .unwrap_or_default()
    };
    let (group, kind, name) = (field("group"), field("kind"), field("name"));
    if group != crate::model::goma::GROUP || kind != "Middleware" {
        return Err(Unresolved {
            reason: "InvalidKind",
            message: format!(
                "{at}.extensionRef: {group:?}/{kind:?} is not supported (only {}/Middleware); the rule answers 500",
                crate::model::goma::GROUP
            ),
        });
    }
    let Some(Object::GomaMiddleware(mw)) = index.get(Kind::GomaMiddleware, ctx.namespace, name)
    else {
        return Err(Unresolved {
            reason: "BackendNotFound",
            message: format!(
                "{at}.extensionRef: Middleware {}/{name} not found; the rule answers 500",
                ctx.namespace
            ),
        });
    };
    let route_name = format!("{}/{}", ctx.kind.to_ascii_lowercase(), ctx.name);
    let context = middleware::RouteContext {
        namespace: ctx.namespace,
        route_name: &route_name,
        route_path: "/",
        // An HTTPRoute rule has backendRefs, not one target URL.
        route_target: "",
    };
    let t = middleware::translate_middleware(mw, &context).map_err(|errors| {
        let reasons: Vec<String> = errors.iter().map(ToString::to_string).collect();
        Unresolved {
            reason: "InvalidKind",
            message: format!(
                "{at}.extensionRef: Middleware {}/{name} cannot be applied ({}); the rule answers 500",
                ctx.namespace,
                reasons.join("; ")
            ),
        }
    })?;
    for c in t.clusters {
        backends.clusters.insert(c.name.clone(), c);
    }
    backends.secrets.extend(t.secrets);
    Ok(t.middleware)
}

/// A gRPC method match as a path match on `/{service}/{method}`.
fn grpc_path(
    m: &crate::model::gateway_api::route::GrpcMethodMatch,
    field: &str,
) -> Result<pb::PathMatch, String> {
    let service = m.service.as_deref().filter(|s| !s.is_empty());
    let method = m.method.as_deref().filter(|s| !s.is_empty());
    match m.type_.as_deref().unwrap_or("Exact") {
        "Exact" => Ok(match (service, method) {
            (Some(s), Some(me)) => pb::PathMatch {
                kind: pb::path_match::Kind::Exact as i32,
                value: format!("/{s}/{me}"),
            },
            (Some(s), None) => pb::PathMatch {
                kind: pb::path_match::Kind::Prefix as i32,
                value: format!("/{s}"),
            },
            (None, Some(me)) => pb::PathMatch {
                kind: pb::path_match::Kind::Regex as i32,
                value: format!("/[^/]+/{}", regex::escape(me)),
            },
            (None, None) => pb::PathMatch {
                kind: pb::path_match::Kind::Prefix as i32,
                value: "/".into(),
            },
        }),
        "RegularExpression" => {
            let value = format!(
                "/{}/{}",
                service.unwrap_or("[^/]+"),
                method.unwrap_or("[^/]+")
            );
            regex::Regex::new(&value)
                .map_err(|e| format!("{field}: invalid regular expression: {e}"))?;
            Ok(pb::PathMatch {
                kind: pb::path_match::Kind::Regex as i32,
                value,
            })
        }
        other => Err(format!("{field}.type: {other:?} is not supported")),
    }
}

pub fn grpc_rule(
    index: &Index,
    backends: &mut Backends,
    ctx: &RouteContext,
    rule: &GrpcRouteRule,
    field: &str,
    problems: &mut RuleProblems,
) -> Result<pb::Route, (&'static str, String)> {
    let mut matches = Vec::new();
    for (j, m) in rule.matches.iter().enumerate() {
        let at = format!("{field}.matches[{j}]");
        let path = match &m.method {
            Some(method) => grpc_path(method, &format!("{at}.method")),
            None => Ok(pb::PathMatch {
                kind: pb::path_match::Kind::Prefix as i32,
                value: "/".into(),
            }),
        }
        .map_err(|e| ("UnsupportedValue", e))?;
        matches.push(pb::RouteMatch {
            path: Some(path),
            headers: header_matches(&m.headers, &at).map_err(|e| ("UnsupportedValue", e))?,
            ..Default::default()
        });
    }
    let mut route = pb::Route {
        matches,
        ..Default::default()
    };
    let mut forward = pass_host();
    let allowed = [
        "RequestHeaderModifier",
        "ResponseHeaderModifier",
        "RequestMirror",
    ];
    if let Some((k, f)) = rule
        .filters
        .iter()
        .enumerate()
        .find(|(_, f)| !allowed.contains(&f.type_.as_str()))
    {
        return Err((
            "UnsupportedValue",
            format!(
                "{field}.filters[{k}].type: {:?} is not supported on a GRPCRoute",
                f.type_
            ),
        ));
    }
    apply_filters(
        index,
        backends,
        ctx,
        &rule.filters,
        &format!("{field}.filters"),
        &mut route,
        &mut forward,
        problems,
    )?;
    route.action = Some(if rule.backend_refs.is_empty() {
        direct(500)
    } else {
        forward.backends = weighted_backends(
            index,
            backends,
            ctx,
            &rule.backend_refs,
            &format!("{field}.backendRefs"),
            true,
            problems,
        )?;
        forward_or_500(forward)
    });
    Ok(route)
}

/// TLSRoute, TCPRoute, UDPRoute rules: weighted forwarding only.
pub fn l4_rules(
    index: &Index,
    backends: &mut Backends,
    ctx: &RouteContext,
    rules: &[L4RouteRule],
    out: &mut Vec<pb::Route>,
    problems: &mut RuleProblems,
) {
    for (i, rule) in rules.iter().enumerate() {
        let mut forward = pb::ForwardAction::default();
        for (j, b) in rule.backend_refs.iter().enumerate() {
            let at = format!("spec.rules[{i}].backendRefs[{j}]");
            let cluster = match backends.resolve(index, ctx.kind, ctx.namespace, &at, b, false) {
                Ok(c) => c,
                Err(u) => {
                    problems.unresolved.push(u);
                    String::new()
                }
            };
            forward.backends.push(pb::WeightedBackend {
                cluster,
                weight: b.weight.and_then(|w| u32::try_from(w).ok()).unwrap_or(1),
                ..Default::default()
            });
        }
        let route = pb::Route {
            action: Some(pb::route::Action::Forward(forward)),
            ..Default::default()
        };
        ctx.place(i, route, out);
    }
}
