//! Goma Middlewares to the `Middleware` messages of the Routes that name them. Pure: no I/O.
//!
//! A middleware is translated per route that uses it (its `paths` are relative to the route's
//! path, and the services it calls become Clusters of that route), but its identity and
//! `state_key` do not depend on the route, so every route using it shares its state in the data
//! plane. The `state_key` hashes the type and rule: editing the rule resets the state, editing
//! anything else (or another route) keeps it.
//!
//! `paths` follow Goma: each entry is an unanchored regular expression (when it is one), and
//! also an exact path or a `/x/*` prefix, both as written and under the route's path. Unlike
//! Goma, a middleware without `paths` applies to the whole route for every type (Goma switches
//! auth, access and cache middlewares off then, which serves the route unprotected).

mod basic_auth;
mod cache;
mod claims_expression;
mod error_interceptor;
mod forward_auth;
mod jwt;
mod ldap;
mod oauth;
mod traffic;
mod transform;

use super::FieldError;
use crate::model::goma::middleware_rule::MiddlewareRule;
use crate::model::goma::{self, MiddlewareType};
use crate::model::{Kind, ObjectKey};
use sluice_proto::config as pb;

/// Looks up the Middlewares a Route names (same namespace).
pub trait MiddlewareSource {
    fn middleware(&self, namespace: &str, name: &str) -> Option<&goma::Middleware>;
}

/// No Middlewares at all: every reference is missing.
impl MiddlewareSource for () {
    fn middleware(&self, _: &str, _: &str) -> Option<&goma::Middleware> {
        None
    }
}

/// The route a middleware is translated for.
pub struct RouteContext<'a> {
    pub namespace: &'a str,
    pub route_name: &'a str,
    /// The route's normalized path ("/api").
    pub route_path: &'a str,
    /// The route's `spec.target` ("" when it has backends instead).
    pub route_target: &'a str,
}

impl RouteContext<'_> {
    /// `route/<ns>/<route>/middleware/<middleware>/<purpose>`: a Cluster a middleware calls
    /// (one per route, so it comes and goes with the route).
    pub fn cluster_name(&self, middleware: &str, purpose: &str) -> String {
        format!(
            "route/{}/{}/middleware/{middleware}/{purpose}",
            self.namespace, self.route_name
        )
    }
}

/// What one middleware contributes to one route.
#[derive(Clone, Debug, PartialEq)]
pub struct TranslatedMiddleware {
    pub middleware: pb::Middleware,
    /// Clusters of the services it calls.
    pub clusters: Vec<pb::Cluster>,
    /// Secret resources (`<ns>/<name>`) it reads.
    pub secrets: Vec<String>,
}

/// Translates `mw` for `route`. Errors name the Middleware's own fields (`spec.rule.users`).
pub fn translate_middleware(
    mw: &goma::Middleware,
    route: &RouteContext<'_>,
) -> Result<TranslatedMiddleware, Vec<FieldError>> {
    let rule = mw.spec.typed_rule().map_err(|e| {
        vec![FieldError {
            field: e.field,
            reason: e.message,
            fail_closed: false,
        }]
    })?;
    let name = &mw.metadata.name;
    let mut out = TranslatedMiddleware {
        middleware: pb::Middleware {
            id: ObjectKey::new(Kind::GomaMiddleware, &mw.metadata.namespace, name).to_string(),
            state_key: state_key(&mw.spec),
            scope: scope(&mw.spec.paths, route.route_path),
            kind: None,
        },
        clusters: Vec::new(),
        secrets: Vec::new(),
    };
    let kind = translate_rule(&rule, mw, route, &mut out)?;
    out.middleware.kind = Some(kind);
    Ok(out)
}

/// The type-specific part. `out` collects clusters and secrets the type needs.
fn translate_rule(
    rule: &MiddlewareRule,
    mw: &goma::Middleware,
    route: &RouteContext<'_>,
    out: &mut TranslatedMiddleware,
) -> Result<pb::middleware::Kind, Vec<FieldError>> {
    use MiddlewareRule as R;
    match rule {
        R::Basic(rule) => basic_auth::translate(rule, mw, &mut out.secrets),
        R::Ldap(rule) => ldap::translate(rule, mw),
        R::Jwt(rule) => jwt::translate(rule, mw, route, out),
        R::Oauth(rule) => oauth::translate(rule, mw, route, out),
        R::ForwardAuth(rule) => forward_auth::translate(rule, mw, route, out),
        R::RateLimit(r) => traffic::rate_limit(r),
        R::Access(r) => traffic::access(r, mw),
        R::AccessPolicy(r) => traffic::access_policy(r),
        R::GeoBlock(r) => traffic::geo_block(r),
        R::UserAgentBlock(r) => traffic::user_agent_block(r),
        R::BodyLimit(r) => traffic::body_limit(r),
        R::AddPrefix(r) => transform::add_prefix(r),
        R::RewriteRegex(r) => transform::rewrite_regex(r),
        R::StripQuery(r) => transform::strip_query(r),
        R::Redirect(r) => transform::redirect(r),
        R::RedirectScheme(r) => transform::redirect_scheme(r),
        R::RedirectRegex(r) => transform::redirect_regex(r),
        R::HttpCache(rule) => cache::translate(rule),
        R::ResponseHeaders(r) => transform::response_headers(r, route),
        R::RequestHeaders(r) => transform::request_headers(r),
        R::AccessLog(r) => transform::access_log(r),
        R::ErrorInterceptor(rule) => error_interceptor::translate(rule),
    }
}

/// An HTTP service a middleware calls at `url` (`scheme://host[:port][/path][?query]`): the
/// Cluster that reaches it (named `route.cluster_name(mw, purpose)`) is pushed into `out`.
/// `insecure_skip_verify` turns off certificate checks of an https service.
pub(crate) fn service_from_url(
    url: &str,
    mw: &goma::Middleware,
    route: &RouteContext<'_>,
    purpose: &str,
    insecure_skip_verify: bool,
    out: &mut TranslatedMiddleware,
) -> Result<pb::HttpService, String> {
    use crate::translate::goma::{cluster, parse_endpoint};
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err(format!("{url:?} is not an http:// or https:// URL"));
    };
    if !matches!(scheme, "http" | "https") {
        return Err(format!("{url:?} is not an http:// or https:// URL"));
    }
    if url.contains('#') {
        return Err(format!("{url:?}: a fragment is not supported"));
    }
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(end);
    let endpoint = parse_endpoint(&format!("{scheme}://{authority}"))?;
    let path = match path {
        "" => "/".to_owned(),
        p if p.starts_with('?') => format!("/{p}"),
        p => p.to_owned(),
    };
    let name = route.cluster_name(&mw.metadata.name, purpose);
    let source = ObjectKey::new(
        Kind::GomaMiddleware,
        &mw.metadata.namespace,
        &mw.metadata.name,
    )
    .to_string();
    let tls = pb::UpstreamTls {
        insecure_skip_verify,
        ..Default::default()
    };
    out.clusters
        .push(cluster(name.clone(), &source, endpoint, &tls));
    Ok(pb::HttpService {
        cluster: name,
        authority: authority.to_ascii_lowercase(),
        path,
        timeout: None,
        scheme: scheme.to_owned(),
    })
}

/// An invalid value at `spec.rule.<field>`: a route keeps its last good version (protected by
/// the middleware's last good rule); a route without one is not served.
fn rule_error(field: &str, reason: impl Into<String>) -> Vec<FieldError> {
    vec![FieldError {
        field: format!("spec.rule.{field}"),
        reason: reason.into(),
        fail_closed: false,
    }]
}

/// A valid setting this version cannot enforce at `spec.rule.<field>`: routes naming the
/// middleware are withdrawn.
fn unenforceable(field: &str, reason: impl Into<String>) -> Vec<FieldError> {
    vec![FieldError {
        field: format!("spec.rule.{field}"),
        reason: reason.into(),
        fail_closed: true,
    }]
}

/// Hash of the type and rule (serde_json orders object keys, so equal rules hash equal).
fn state_key(spec: &goma::MiddlewareSpec) -> String {
    let rule = serde_json::to_string(&spec.rule).unwrap_or_default();
    let ty: &MiddlewareType = &spec.middleware_type;
    let hash = xxhash_rust::xxh3::xxh3_64(format!("{ty}\n{rule}").as_bytes());
    format!("{hash:016x}")
}

/// Goma `paths` as a PathScope; empty paths leave the scope unset (the whole route).
fn scope(paths: &[String], route_path: &str) -> Option<pb::PathScope> {
    if paths.is_empty() {
        return None;
    }
    let mut s = pb::PathScope::default();
    let base = route_path.trim_end_matches('/');
    for p in paths {
        let p = p.trim();
        if p.is_empty() {
            continue;
        }
        if regex::Regex::new(p).is_ok() {
            s.regexes.push(p.to_owned());
        }
        let (literal, prefix) = match p.strip_suffix("/*") {
            Some(stem) => (stem, true),
            None => (p, false),
        };
        if !literal.starts_with('/') {
            continue;
        }
        let list = if prefix {
            &mut s.prefixes
        } else {
            &mut s.exact
        };
        let bare = if literal.is_empty() { "/" } else { literal };
        for candidate in [bare.to_owned(), format!("{base}{literal}")] {
            let candidate = if candidate.is_empty() {
                "/".to_owned()
            } else {
                candidate
            };
            if !list.contains(&candidate) {
                list.push(candidate);
            }
        }
    }
    Some(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn goma_paths_become_regexes_exact_paths_and_prefixes() {
        let s = scope(
            &["/admin/*".into(), "/login".into(), "^/v[0-9]+/".into()],
            "/api",
        )
        .unwrap();
        assert_eq!(s.regexes, ["/admin/*", "/login", "^/v[0-9]+/"]);
        assert_eq!(s.exact, ["/login", "/api/login"]);
        assert_eq!(s.prefixes, ["/admin", "/api/admin"]);
        assert_eq!(scope(&[], "/api"), None);
        // The route at "/" adds nothing new.
        let s = scope(&["/x".into()], "/").unwrap();
        assert_eq!(s.exact, ["/x"]);
    }

    fn middleware(ty: &str, rule: serde_json::Value) -> goma::Middleware {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "auth", "namespace": "team"},
            "spec": {"type": ty, "rule": rule},
        }))
        .unwrap()
    }

    const API: RouteContext<'static> = RouteContext {
        namespace: "team",
        route_name: "api",
        route_path: "/api",
        route_target: "",
    };

    fn kind(t: &TranslatedMiddleware) -> &pb::middleware::Kind {
        t.middleware.kind.as_ref().unwrap()
    }

    #[test]
    fn basic_auth_users_secret_forwarded_name_and_authorization() {
        let mw = middleware(
            "basicAuth",
            serde_json::json!({"realm": "Ops", "forwardUsername": true,
                               "users": ["ann:{SHA}x"], "usersSecret": "htpasswd"}),
        );
        let t = translate_middleware(&mw, &API).unwrap();
        assert_eq!(t.secrets, ["team/htpasswd"]);
        let pb::middleware::Kind::BasicAuth(b) = kind(&t) else {
            panic!("{t:?}")
        };
        assert_eq!(b.realm, "Ops");
        assert_eq!(b.username_header, "X-Forwarded-User");
        assert_eq!(b.users_secret, "team/htpasswd");
        assert!(!b.forward_authorization);
        assert_eq!(b.users[0].username, "ann");
        // A Secret alone is enough; neither is an error naming users.
        let only_secret = middleware("basic", serde_json::json!({"usersSecret": "h"}));
        assert!(translate_middleware(&only_secret, &API).is_ok());
        let neither = middleware("basic", serde_json::json!({"realm": "x"}));
        let e = translate_middleware(&neither, &API).unwrap_err();
        assert_eq!(e[0].field, "spec.rule.users");
        let quote = middleware(
            "basic",
            serde_json::json!({"realm": "a\"b", "users": ["a:b"]}),
        );
        assert_eq!(
            translate_middleware(&quote, &API).unwrap_err()[0].field,
            "spec.rule.realm"
        );
    }

    #[test]
    fn jwt_jwks_url_becomes_a_cluster_and_the_expression_a_tree() {
        let mw = middleware(
            "jwtAuth",
            serde_json::json!({"jwksUrl": "http://127.0.0.1:9000/keys", "alg": "RS256",
                               "algorithms": ["RS256", "EdDSA"], "issuer": "idp", "audience": "api",
                               "claimsExpression": "Equals(`role`, `admin`) && !Prefix(`sub`, `svc-`)",
                               "forwardHeaders": {"X-User": "sub"}}),
        );
        let t = translate_middleware(&mw, &API).unwrap();
        assert_eq!(t.clusters.len(), 1);
        assert_eq!(t.clusters[0].name, "route/team/api/middleware/auth/jwks");
        let pb::middleware::Kind::Jwt(j) = kind(&t) else {
            panic!("{t:?}")
        };
        let remote = j.remote_jwks.as_ref().unwrap().service.as_ref().unwrap();
        assert_eq!(
            (remote.cluster.as_str(), remote.path.as_str()),
            (t.clusters[0].name.as_str(), "/keys")
        );
        assert_eq!(j.algorithms, ["RS256", "EdDSA"]);
        assert_eq!((j.issuer.as_str(), j.audience.as_str()), ("idp", "api"));
        assert!(matches!(
            j.claims.as_ref().and_then(|c| c.check.as_ref()),
            Some(pb::claims_check::Check::All(_))
        ));
        assert_eq!(j.forward_headers[0].header, "X-User");
        assert!(!j.forward_authorization);
    }

    #[test]
    fn jwt_errors_name_the_field() {
        let cases = [
            (
                serde_json::json!({"secret": "s", "claimsExpression": "Equals(`a`)"}),
                "spec.rule.claimsExpression",
            ),
            (
                serde_json::json!({"secret": "s", "publicKey": "-----BEGIN PUBLIC KEY-----"}),
                "spec.rule.publicKey",
            ),
            (
                serde_json::json!({"secret": "s", "algorithms": ["HS256", "ES512"]}),
                "spec.rule.algorithms[1]",
            ),
            (
                serde_json::json!({"publicKey": "not pem"}),
                "spec.rule.publicKey",
            ),
            (
                serde_json::json!({"jwksUrl": "http://a/b#c"}),
                "spec.rule.jwksUrl",
            ),
        ];
        for (rule, field) in cases {
            let e = translate_middleware(&middleware("jwt", rule.clone()), &API).unwrap_err();
            assert_eq!(e[0].field, field, "{rule}: {e:?}");
        }
        let t = translate_middleware(
            &middleware(
                "jwt",
                serde_json::json!({"jwksFile": "/etc/jwks.json", "forwardAuthorization": true}),
            ),
            &API,
        )
        .unwrap();
        let pb::middleware::Kind::Jwt(j) = kind(&t) else {
            panic!("{t:?}")
        };
        assert_eq!(j.jwks_file, "/etc/jwks.json");
        assert!(j.forward_authorization && t.clusters.is_empty());
    }

    #[test]
    fn service_from_url_splits_the_endpoint_from_the_path() {
        let mw = middleware("jwt", serde_json::json!({"secret": "s"}));
        let mut out = translate_middleware(&mw, &API).unwrap();
        let s = service_from_url(
            "https://IdP.example.com:8443/realms/x/certs?a=1",
            &mw,
            &API,
            "jwks",
            false,
            &mut out,
        )
        .unwrap();
        let c = &out.clusters[0];
        assert_eq!(s.authority, "idp.example.com:8443");
        assert_eq!(s.path, "/realms/x/certs?a=1");
        assert_eq!(s.scheme, "https");
        assert_eq!(s.cluster, c.name);
        assert_eq!(c.endpoints[0].address, "idp.example.com");
        assert_eq!(c.endpoints[0].port, 8443);
        assert_eq!(c.tls.as_ref().unwrap().server_name, "idp.example.com");
        for bad in ["ftp://x/y", "http:///jwks", "http://a/b#frag", "jwks.json"] {
            assert!(
                service_from_url(bad, &mw, &API, "jwks", false, &mut out).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn an_access_middleware_needs_paths() {
        let mw = |paths: Vec<String>| {
            let mut m: goma::Middleware = serde_json::from_value(serde_json::json!({
                "metadata": {"name": "block", "namespace": "default"},
                "spec": {"type": "access", "rule": {"statusCode": 404}},
            }))
            .unwrap();
            m.spec.paths = paths;
            m
        };
        let route = RouteContext {
            namespace: "default",
            route_name: "api",
            route_path: "/api",
            route_target: "",
        };
        let errors = translate_middleware(&mw(vec![]), &route).unwrap_err();
        assert_eq!(
            errors[0].to_string(),
            "spec.paths: required for type access"
        );
        let t = translate_middleware(&mw(vec!["/admin/*".into()]), &route).unwrap();
        assert_eq!(t.middleware.id, "Middleware default/block");
        assert_eq!(
            t.middleware.kind,
            Some(pb::middleware::Kind::Access(pb::AccessBlock {
                status: 404
            }))
        );
        assert_eq!(
            t.middleware.scope.unwrap().prefixes,
            ["/admin", "/api/admin"]
        );
    }

    #[test]
    fn state_key_follows_the_rule_only() {
        let spec = |rule: serde_json::Value, paths: Vec<String>| goma::MiddlewareSpec {
            middleware_type: MiddlewareType::RateLimit,
            paths,
            rule,
        };
        let a = state_key(&spec(
            serde_json::json!({"requestsPerUnit": 5, "unit": "second"}),
            vec![],
        ));
        let b = state_key(&spec(
            serde_json::json!({"unit": "second", "requestsPerUnit": 5}),
            vec!["/x".into()],
        ));
        let c = state_key(&spec(serde_json::json!({"requestsPerUnit": 6}), vec![]));
        assert_eq!(a, b);
        assert_ne!(a, c);
    }
}
