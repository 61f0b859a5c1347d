//! Transformation middlewares (addPrefix, rewriteRegex, stripQuery, the three redirects,
//! requestHeaders, responseHeaders, accessLog) to their messages. Pure.
//!
//! What the data plane would refuse is refused here with the Middleware's own field, so the
//! route is not served with it (a route that was keeps its last good version) and the reason is
//! clear, rather than NACKed. responseHeaders' Set-Cookie values
//! are rendered here, and the templates `{route.name}`, `{route.path}`, `{route.target}` and
//! `{gateway.version}` in its header and cookie values are expanded for the route.

use super::RouteContext;
use crate::model::goma::middleware_rule::{
    AccessLogRule, AddPrefixRule, Cookie, RedirectRegexRule, RedirectRule, RedirectSchemeRule,
    RedirectTarget, RequestHeadersRule, ResponseHeadersRule, RewriteRegexRule, SameSite,
    StripQueryRule,
};
use crate::translate::FieldError;
use sluice_proto::config as pb;
use sluice_proto::config::middleware::Kind;
use std::collections::BTreeMap;

type Result<T> = std::result::Result<T, Vec<FieldError>>;

/// An invalid rule at `spec.rule.<field>`: a route never served with this middleware is not
/// served; one that was keeps its last good version (with the last good rule).
fn error(field: impl std::fmt::Display, reason: impl Into<String>) -> Vec<FieldError> {
    vec![FieldError {
        field: format!("spec.rule.{field}"),
        reason: reason.into(),
        fail_closed: false,
    }]
}

/// Why `text` cannot be part of a path, if it cannot.
fn path_problem(text: &str) -> Option<String> {
    text.chars()
        .find(|c| c.is_whitespace() || c.is_control() || matches!(c, '?' | '#'))
        .map(|c| format!("{text:?} cannot be part of a path (it contains {c:?})"))
}

pub(super) fn add_prefix(rule: &AddPrefixRule) -> Result<Kind> {
    let prefix = rule.prefix.trim();
    if !prefix.starts_with('/') {
        return Err(error(
            "prefix",
            format!("{prefix:?} must be a path starting with \"/\""),
        ));
    }
    if let Some(p) = path_problem(prefix) {
        return Err(error("prefix", p));
    }
    Ok(Kind::AddPrefix(pb::AddPrefix {
        prefix: prefix.to_owned(),
    }))
}

pub(super) fn rewrite_regex(rule: &RewriteRegexRule) -> Result<Kind> {
    if let Some(p) = path_problem(&rule.replacement) {
        return Err(error("replacement", p));
    }
    let mut rest = rule.replacement.as_str();
    while let Some(start) = rest.find("{{goma.") {
        let token = &rest[start..];
        let Some(end) = token.find("}}") else {
            return Err(error(
                "replacement",
                format!("unterminated token at {token:?}"),
            ));
        };
        let inner = &token["{{goma.".len()..end];
        let header = inner.strip_prefix("headers.").is_some_and(is_token);
        let query = inner
            .strip_prefix("query.")
            .is_some_and(|n| !n.is_empty() && !n.contains(|c: char| c.is_whitespace()));
        if !header && !query {
            return Err(error(
                "replacement",
                format!(
                    "{{{{goma.{inner}}}}} is not {{{{goma.headers.NAME}}}} or {{{{goma.query.NAME}}}}"
                ),
            ));
        }
        rest = &token[end + 2..];
    }
    Ok(Kind::RewriteRegex(pb::RewriteRegex {
        pattern: rule.pattern.clone(),
        replacement: rule.replacement.clone(),
    }))
}

pub(super) fn strip_query(rule: &StripQueryRule) -> Result<Kind> {
    if let Some(i) = rule.params.iter().position(|p| p.trim().is_empty()) {
        return Err(error(format!("params[{i}]"), "must not be empty"));
    }
    let mut methods = Vec::with_capacity(rule.methods.len());
    for (i, m) in rule.methods.iter().enumerate() {
        let upper = m.trim().to_ascii_uppercase();
        if upper.is_empty() || !upper.bytes().all(|b| b.is_ascii_alphabetic()) {
            return Err(error(
                format!("methods[{i}]"),
                format!("{m:?} is not an HTTP method"),
            ));
        }
        methods.push(upper);
    }
    Ok(Kind::StripQuery(pb::StripQuery {
        params: rule.params.iter().map(|p| p.trim().to_owned()).collect(),
        methods,
        path_pattern: rule.path_pattern.clone().unwrap_or_default(),
    }))
}

/// Characters a URL in a Location header cannot hold.
fn url_problem(url: &str) -> Option<String> {
    url.chars()
        .find(|c| c.is_whitespace() || c.is_control() || !c.is_ascii())
        .map(|c| format!("{url:?} is not a URL (it contains {c:?})"))
}

pub(super) fn redirect(rule: &RedirectRule) -> Result<Kind> {
    let url = rule.url.trim();
    if let Some(p) = url_problem(url) {
        return Err(error("url", p));
    }
    Ok(Kind::Redirect(pb::RedirectTo {
        url: url.to_owned(),
        permanent: rule.permanent,
    }))
}

pub(super) fn redirect_scheme(rule: &RedirectSchemeRule) -> Result<Kind> {
    let scheme = match rule.scheme {
        RedirectTarget::Http => "http",
        RedirectTarget::Https => "https",
    };
    Ok(Kind::RedirectScheme(pb::RedirectScheme {
        scheme: scheme.to_owned(),
        port: rule.port.map_or(0, u32::from),
        permanent: rule.permanent,
    }))
}

pub(super) fn redirect_regex(rule: &RedirectRegexRule) -> Result<Kind> {
    if let Some(p) = url_problem(&rule.replacement) {
        return Err(error("replacement", p));
    }
    Ok(Kind::RedirectRegex(pb::RedirectRegex {
        pattern: rule.pattern.clone(),
        replacement: rule.replacement.clone(),
        permanent: rule.permanent,
    }))
}

/// Headers that frame the message or connection: the proxy owns them.
const FRAMING: [&str; 9] = [
    "connection",
    "content-length",
    "host",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

fn check_framing<'a>(field: &str, names: impl IntoIterator<Item = &'a String>) -> Result<()> {
    for name in names {
        if FRAMING.contains(&name.to_ascii_lowercase().as_str()) {
            return Err(error(
                format!("{field}.{name}"),
                "this header is managed by the gateway and cannot be changed by a middleware",
            ));
        }
    }
    Ok(())
}

/// Goma's header edits (remove first, then set; an empty value removes) as a HeaderModifier.
fn header_modifier(set: &BTreeMap<String, String>, remove: &[String]) -> pb::HeaderModifier {
    let mut m = pb::HeaderModifier::default();
    for (name, value) in set {
        if value.is_empty() {
            m.remove.push(name.clone());
        } else {
            m.set.push(pb::HeaderValue {
                name: name.clone(),
                value: value.clone(),
            });
        }
    }
    for name in remove {
        let set_later = m.set.iter().any(|s| s.name.eq_ignore_ascii_case(name));
        if !set_later && !m.remove.iter().any(|r| r.eq_ignore_ascii_case(name)) {
            m.remove.push(name.clone());
        }
    }
    m
}

pub(super) fn request_headers(rule: &RequestHeadersRule) -> Result<Kind> {
    check_framing("setHeaders", rule.set_headers.keys())?;
    if let Some((i, _)) = rule
        .remove_headers
        .iter()
        .enumerate()
        .find(|(_, n)| FRAMING.contains(&n.to_ascii_lowercase().as_str()))
    {
        return Err(error(
            format!("removeHeaders[{i}]"),
            "this header is managed by the gateway and cannot be changed by a middleware",
        ));
    }
    Ok(Kind::RequestHeaders(pb::RequestHeaders {
        headers: Some(header_modifier(&rule.set_headers, &rule.remove_headers)),
    }))
}

/// `{route.name}`, `{route.path}`, `{route.target}` and `{gateway.version}` in `value`.
fn expand_templates(value: &str, route: &RouteContext<'_>) -> String {
    if !value.contains('{') {
        return value.to_owned();
    }
    value
        .replace("{route.name}", route.route_name)
        .replace("{route.path}", route.route_path)
        .replace("{route.target}", route.route_target)
        .replace("{gateway.version}", env!("CARGO_PKG_VERSION"))
}

/// RFC 6265 cookie-octet.
fn is_cookie_octet(c: char) -> bool {
    matches!(c, '\x21' | '\x23'..='\x2b' | '\x2d'..='\x3a' | '\x3c'..='\x5b' | '\x5d'..='\x7e')
}

fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// A Set-Cookie value with its attributes.
fn render_cookie(i: usize, cookie: &Cookie, route: &RouteContext<'_>) -> Result<String> {
    let at = |key: &str| format!("setCookies[{i}].{key}");
    if !is_token(&cookie.name) {
        return Err(error(
            at("name"),
            format!("{:?} is not a cookie name", cookie.name),
        ));
    }
    let value = expand_templates(&cookie.value, route);
    if let Some(c) = value.chars().find(|c| !is_cookie_octet(*c)) {
        return Err(error(
            at("value"),
            format!("{value:?} cannot be a cookie value (it contains {c:?})"),
        ));
    }
    let mut out = format!("{}={value}", cookie.name);
    let a = &cookie.attributes;
    for (key, attr, text) in [
        ("attributes.path", "Path", &a.path),
        ("attributes.domain", "Domain", &a.domain),
    ] {
        if let Some(text) = text.as_deref().filter(|t| !t.is_empty()) {
            if text.contains(|c: char| c == ';' || c.is_control() || !c.is_ascii()) {
                return Err(error(at(key), format!("{text:?} is not a valid {attr}")));
            }
            out.push_str(&format!("; {attr}={text}"));
        }
    }
    match a.max_age {
        0 => {}
        age if age < 0 => out.push_str("; Max-Age=0"),
        age => out.push_str(&format!("; Max-Age={age}")),
    }
    if a.secure {
        out.push_str("; Secure");
    }
    if a.http_only {
        out.push_str("; HttpOnly");
    }
    if let Some(same_site) = a.same_site {
        out.push_str(match same_site {
            SameSite::Strict => "; SameSite=Strict",
            SameSite::Lax => "; SameSite=Lax",
            SameSite::None => "; SameSite=None",
        });
    }
    Ok(out)
}

pub(super) fn response_headers(
    rule: &ResponseHeadersRule,
    route: &RouteContext<'_>,
) -> Result<Kind> {
    let mut set_headers: BTreeMap<String, String> = rule
        .set_headers
        .iter()
        .map(|(k, v)| (k.clone(), expand_templates(v, route)))
        .collect();
    check_framing("setHeaders", set_headers.keys())?;
    let cors = match &rule.cors {
        Some(c) if c.enabled => {
            check_framing("cors.headers", c.headers.keys())?;
            // Goma sets these on every response once CORS is on.
            for (k, v) in &c.headers {
                set_headers
                    .entry(k.clone())
                    .or_insert_with(|| expand_templates(v, route));
            }
            Some(pb::Cors {
                allow_origins: c.origins.clone(),
                allow_methods: c.allow_methods.clone(),
                allow_headers: c.allowed_headers.clone(),
                expose_headers: c.expose_headers.clone(),
                allow_credentials: c.allow_credentials,
                max_age_seconds: u32::try_from(c.max_age).unwrap_or(u32::MAX),
            })
        }
        _ => None,
    };
    for (name, value) in &set_headers {
        if value.contains(['\r', '\n']) {
            return Err(error(
                format!("setHeaders.{name}"),
                "header values cannot contain CR or LF",
            ));
        }
    }
    let set_cookies = rule
        .set_cookies
        .iter()
        .enumerate()
        .map(|(i, c)| render_cookie(i, c, route))
        .collect::<Result<Vec<_>>>()?;
    Ok(Kind::ResponseHeaders(pb::ResponseHeaders {
        headers: Some(header_modifier(&set_headers, &[])),
        set_cookies,
        cors,
        cache_control: rule.cache_control.clone().unwrap_or_default(),
        cache_statuses: rule.cache_statuses.iter().map(|s| u32::from(*s)).collect(),
    }))
}

pub(super) fn access_log(rule: &AccessLogRule) -> Result<Kind> {
    for (field, list) in [("query", &rule.query), ("cookies", &rule.cookies)] {
        if let Some((i, n)) = list
            .iter()
            .enumerate()
            .find(|(_, n)| n.trim().is_empty() || n.trim().contains(char::is_whitespace))
        {
            return Err(error(
                format!("{field}[{i}]"),
                format!("{n:?} is not a name"),
            ));
        }
    }
    Ok(Kind::AccessLog(pb::AccessLogFields {
        headers: rule.headers.clone(),
        query: rule.query.iter().map(|q| q.trim().to_owned()).collect(),
        cookies: rule.cookies.iter().map(|c| c.trim().to_owned()).collect(),
    }))
}

#[cfg(test)]
mod tests {
    use super::super::{TranslatedMiddleware, translate_middleware};
    use super::*;
    use crate::model::goma;
    use serde_json::{Value, json};

    const ROUTE: RouteContext<'static> = RouteContext {
        namespace: "default",
        route_name: "api",
        route_path: "/api",
        route_target: "http://backend:8080",
    };

    fn translate(ty: &str, rule: Value) -> std::result::Result<TranslatedMiddleware, String> {
        let mw: goma::Middleware = serde_json::from_value(json!({
            "metadata": {"name": "m", "namespace": "default"},
            "spec": {"type": ty, "rule": rule},
        }))
        .expect("test middleware");
        translate_middleware(&mw, &ROUTE).map_err(|errors| {
            // Invalid, not unenforceable: a route keeps its last good version.
            assert!(errors.iter().all(|e| !e.fail_closed), "{errors:?}");
            errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ")
        })
    }

    fn kind(ty: &str, rule: Value) -> Kind {
        let t = translate(ty, rule).unwrap_or_else(|e| panic!("{ty}: {e}"));
        assert!(t.clusters.is_empty() && t.secrets.is_empty());
        t.middleware.kind.expect("kind set")
    }

    #[test]
    fn paths_and_redirects() {
        assert_eq!(
            kind("addPrefix", json!({"prefix": "/v1"})),
            Kind::AddPrefix(pb::AddPrefix {
                prefix: "/v1".into()
            })
        );
        assert_eq!(
            kind(
                "rewriteRegex",
                json!({"pattern": "^/api/(.*)", "replacement": "/{{goma.headers.X-Tenant}}/$1"})
            ),
            Kind::RewriteRegex(pb::RewriteRegex {
                pattern: "^/api/(.*)".into(),
                replacement: "/{{goma.headers.X-Tenant}}/$1".into(),
            })
        );
        assert_eq!(
            kind(
                "stripQuery",
                json!({"params": ["utm_source"], "methods": ["get"], "pathPattern": "^/s"})
            ),
            Kind::StripQuery(pb::StripQuery {
                params: vec!["utm_source".into()],
                methods: vec!["GET".into()],
                path_pattern: "^/s".into(),
            })
        );
        assert_eq!(
            kind(
                "redirect",
                json!({"url": "https://new.example.com/", "permanent": true})
            ),
            Kind::Redirect(pb::RedirectTo {
                url: "https://new.example.com/".into(),
                permanent: true
            })
        );
        assert_eq!(
            kind("redirectScheme", json!({"scheme": "https", "port": 8443})),
            Kind::RedirectScheme(pb::RedirectScheme {
                scheme: "https".into(),
                port: 8443,
                permanent: false
            })
        );
        assert_eq!(
            kind(
                "redirectRegex",
                json!({"pattern": "^http://old/(.*)", "replacement": "https://new/$1"})
            ),
            Kind::RedirectRegex(pb::RedirectRegex {
                pattern: "^http://old/(.*)".into(),
                replacement: "https://new/$1".into(),
                permanent: false
            })
        );
    }

    #[test]
    fn bad_rules_name_the_field() {
        for (ty, rule, want) in [
            ("addPrefix", json!({}), "spec.rule.prefix: "),
            ("addPrefix", json!({"prefix": "v1"}), "spec.rule.prefix: "),
            ("addPrefix", json!({"prefix": "/a b"}), "spec.rule.prefix: "),
            (
                "rewriteRegex",
                json!({"pattern": "^/", "replacement": "/x?y"}),
                "spec.rule.replacement: ",
            ),
            (
                "rewriteRegex",
                json!({"pattern": "^/", "replacement": "/{{goma.cookie.a}}"}),
                "spec.rule.replacement: ",
            ),
            (
                "rewriteRegex",
                json!({"pattern": "^/", "replacement": "/{{goma.query.a"}),
                "spec.rule.replacement: ",
            ),
            (
                "rewriteRegex",
                json!({"pattern": "^/", "replacement": "/{{goma.headers.a(b}}"}),
                "spec.rule.replacement: ",
            ),
            (
                "stripQuery",
                json!({"params": [" "]}),
                "spec.rule.params[0]: ",
            ),
            (
                "stripQuery",
                json!({"params": ["a"], "methods": ["G T"]}),
                "spec.rule.methods[0]: ",
            ),
            ("redirect", json!({"url": "https://a b"}), "spec.rule.url: "),
            (
                "redirectRegex",
                json!({"pattern": "^/", "replacement": "https://x/\u{e9}"}),
                "spec.rule.replacement: ",
            ),
            (
                "requestHeaders",
                json!({"setHeaders": {"Host": "x"}}),
                "spec.rule.setHeaders.Host: ",
            ),
            (
                "requestHeaders",
                json!({"removeHeaders": ["Content-Length"]}),
                "spec.rule.removeHeaders[0]: ",
            ),
            (
                "responseHeaders",
                json!({"setCookies": [{"name": "a", "value": "b c"}]}),
                "spec.rule.setCookies[0].value: ",
            ),
            (
                "responseHeaders",
                json!({"setCookies": [{"name": "a;b", "value": "c"}]}),
                "spec.rule.setCookies[0].name: ",
            ),
            (
                "responseHeaders",
                json!({"setCookies": [{"name": "a", "attributes": {"path": "/;x"}}]}),
                "spec.rule.setCookies[0].attributes.path: ",
            ),
            ("accessLog", json!({"query": [""]}), "spec.rule.query[0]: "),
        ] {
            let e = translate(ty, rule.clone()).expect_err(&format!("{ty} {rule}"));
            assert!(e.starts_with(want), "{ty} {rule}: {e}");
        }
    }

    #[test]
    fn request_headers_remove_first_then_set() {
        let Kind::RequestHeaders(r) = kind(
            "requestHeaders",
            json!({"setHeaders": {"X-Env": "prod", "X-Gone": ""}, "removeHeaders": ["x-env", "Cookie"]}),
        ) else {
            panic!("requestHeaders");
        };
        let m = r.headers.unwrap();
        assert_eq!(
            m.set,
            [pb::HeaderValue {
                name: "X-Env".into(),
                value: "prod".into()
            }]
        );
        assert_eq!(m.remove, ["X-Gone", "Cookie"]);
    }

    #[test]
    fn response_headers_templates_cookies_and_cors() {
        let Kind::ResponseHeaders(r) = kind(
            "responseHeaders",
            json!({
                "setHeaders": {"X-Route": "{route.name} {route.path} {route.target}", "X-Version": "{gateway.version}", "Server": ""},
                "setCookies": [
                    {"name": "route", "value": "{route.name}", "attributes": {"path": "/", "domain": "example.com", "maxAge": 60, "secure": true, "httpOnly": true, "sameSite": "None"}},
                    {"name": "gone", "attributes": {"maxAge": -1}},
                ],
                "cacheControl": "no-store",
                "cacheStatuses": [200, 201],
                "cors": {"enabled": true, "origins": ["https://app.example.com"], "allowMethods": ["GET"], "allowedHeaders": ["X-A"], "exposeHeaders": ["X-E"], "maxAge": 600, "allowCredentials": true, "headers": {"X-Cors": "1"}},
            }),
        ) else {
            panic!("responseHeaders");
        };
        let m = r.headers.unwrap();
        let set: Vec<(&str, &str)> = m
            .set
            .iter()
            .map(|h| (h.name.as_str(), h.value.as_str()))
            .collect();
        assert_eq!(
            set,
            [
                ("X-Cors", "1"),
                ("X-Route", "api /api http://backend:8080"),
                ("X-Version", env!("CARGO_PKG_VERSION")),
            ]
        );
        assert_eq!(m.remove, ["Server"]);
        assert_eq!(
            r.set_cookies,
            [
                "route=api; Path=/; Domain=example.com; Max-Age=60; Secure; HttpOnly; SameSite=None",
                "gone=; Max-Age=0",
            ]
        );
        assert_eq!(r.cache_control, "no-store");
        assert_eq!(r.cache_statuses, [200, 201]);
        assert_eq!(
            r.cors,
            Some(pb::Cors {
                allow_origins: vec!["https://app.example.com".into()],
                allow_methods: vec!["GET".into()],
                allow_headers: vec!["X-A".into()],
                expose_headers: vec!["X-E".into()],
                allow_credentials: true,
                max_age_seconds: 600,
            })
        );
        // CORS that is not enabled is not applied.
        let Kind::ResponseHeaders(r) = kind(
            "responseHeaders",
            json!({"cors": {"origins": ["*"], "headers": {"X-Cors": "1"}}}),
        ) else {
            panic!("responseHeaders");
        };
        assert_eq!(r.cors, None);
        assert!(r.headers.unwrap().set.is_empty());
    }

    #[test]
    fn access_log_fields() {
        assert_eq!(
            kind(
                "accessLog",
                json!({"headers": ["X-User"], "query": [" page "], "cookies": ["session"]})
            ),
            Kind::AccessLog(pb::AccessLogFields {
                headers: vec!["X-User".into()],
                query: vec!["page".into()],
                cookies: vec!["session".into()],
            })
        );
    }
}
