//! `forwardAuth`: the auth URL becomes a Cluster and an `HttpService`; header lists are checked
//! here so a typo withdraws the route instead of being ignored by the data plane.

use super::{RouteContext, TranslatedMiddleware, rule_error, service_from_url};
use crate::model::goma;
use crate::model::goma::middleware_rule::ForwardAuthRule;
use crate::translate::{FieldError, parse_go_duration, pb_duration};
use sluice_proto::config as pb;

pub(super) fn translate(
    rule: &ForwardAuthRule,
    mw: &goma::Middleware,
    route: &RouteContext<'_>,
    out: &mut TranslatedMiddleware,
) -> Result<pb::middleware::Kind, Vec<FieldError>> {
    let mut service = service_from_url(
        &rule.auth_url,
        mw,
        route,
        "auth",
        rule.insecure_skip_verify,
        out,
    )
    .map_err(|e| rule_error("authUrl", e))?;
    if let Some(timeout) = &rule.timeout {
        match parse_go_duration(timeout) {
            Ok(d) if !d.is_zero() => service.timeout = Some(pb_duration(d)),
            Ok(_) => return Err(rule_error("timeout", "must be more than 0")),
            Err(e) => return Err(rule_error("timeout", e)),
        }
    }
    let sign_in_url = match &rule.auth_sign_in {
        None => String::new(),
        Some(url)
            if url.starts_with("http://")
                || url.starts_with("https://")
                || url.starts_with('/') =>
        {
            url.clone()
        }
        Some(url) => {
            return Err(rule_error(
                "authSignIn",
                format!("{url:?} is not an http(s) URL or a path"),
            ));
        }
    };
    let copies = |list: &[String], field: &str| -> Result<Vec<pb::HeaderCopy>, Vec<FieldError>> {
        list.iter()
            .enumerate()
            .map(|(i, entry)| {
                header_copy(entry).map_err(|e| rule_error(&format!("{field}[{i}]"), e))
            })
            .collect()
    };
    for (i, name) in rule.add_auth_cookies_to_response.iter().enumerate() {
        if !is_token(name) {
            return Err(rule_error(
                &format!("addAuthCookiesToResponse[{i}]"),
                format!("{name:?} is not a cookie name"),
            ));
        }
    }
    Ok(pb::middleware::Kind::ForwardAuth(pb::ForwardAuth {
        service: Some(service),
        sign_in_url,
        forward_host_headers: rule.forward_host_headers,
        request_headers: rule.auth_request_headers.clone(),
        response_cookies: rule.add_auth_cookies_to_response.clone(),
        response_headers: copies(&rule.auth_response_headers, "authResponseHeaders")?,
        response_headers_as_params: copies(
            &rule.auth_response_headers_as_params,
            "authResponseHeadersAsParams",
        )?,
    }))
}

/// `name` copies a header under its own name; `source:destination` renames it.
fn header_copy(entry: &str) -> Result<pb::HeaderCopy, String> {
    let (from, to) = match entry.split_once(':') {
        Some((from, to)) => (from.trim(), to.trim()),
        None => (entry.trim(), entry.trim()),
    };
    for name in [from, to] {
        if !is_token(name) {
            return Err(format!(
                "{entry:?}: {name:?} is not a header name (expected name or source:destination)"
            ));
        }
    }
    Ok(pb::HeaderCopy {
        from: from.to_owned(),
        to: to.to_owned(),
    })
}

/// An RFC 9110 token (header and cookie names).
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::translate::middleware::translate_middleware;

    fn middleware(rule: serde_json::Value) -> goma::Middleware {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "gateway.jkaninda.dev/v1alpha1",
            "kind": "Middleware",
            "metadata": {"name": "fa", "namespace": "default"},
            "spec": {"type": "forwardAuth", "rule": rule},
        }))
        .unwrap()
    }

    const ROUTE: RouteContext<'static> = RouteContext {
        namespace: "default",
        route_name: "api",
        route_path: "/api",
        route_target: "",
    };

    #[test]
    fn auth_url_becomes_a_cluster_and_service() {
        let mw = middleware(serde_json::json!({
            "authUrl": "https://auth.example.com:8443/verify?x=1",
            "authSignIn": "https://login.example.com/",
            "insecureSkipVerify": true,
            "forwardHostHeaders": true,
            "authRequestHeaders": ["Authorization"],
            "authResponseHeaders": ["X-User", "X-Auth-Email:X-Email"],
            "authResponseHeadersAsParams": ["X-Tenant:tenant"],
            "addAuthCookiesToResponse": ["session"],
            "timeout": "1500ms",
        }));
        let t = translate_middleware(&mw, &ROUTE).unwrap();
        let Some(pb::middleware::Kind::ForwardAuth(fa)) = &t.middleware.kind else {
            panic!("{:?}", t.middleware.kind);
        };
        let service = fa.service.as_ref().unwrap();
        assert_eq!(service.cluster, "route/default/api/middleware/fa/auth");
        assert_eq!(service.authority, "auth.example.com:8443");
        assert_eq!(service.path, "/verify?x=1");
        assert_eq!(service.scheme, "https");
        assert_eq!(
            service.timeout,
            Some(prost_types::Duration {
                seconds: 1,
                nanos: 500_000_000
            })
        );
        assert_eq!(t.clusters.len(), 1);
        let cluster = &t.clusters[0];
        assert_eq!(cluster.name, service.cluster);
        assert_eq!(cluster.endpoints[0].port, 8443);
        let tls = cluster.tls.as_ref().unwrap();
        assert!(tls.insecure_skip_verify);
        assert_eq!(tls.server_name, "auth.example.com");
        assert_eq!(fa.response_headers[1].from, "X-Auth-Email");
        assert_eq!(fa.response_headers[1].to, "X-Email");
        assert_eq!(fa.response_headers[0].to, "X-User");
        assert_eq!(fa.response_headers_as_params[0].to, "tenant");
        assert_eq!(fa.sign_in_url, "https://login.example.com/");
    }

    #[test]
    fn bad_entries_name_the_field_and_fail_closed() {
        let mw = middleware(serde_json::json!({
            "authUrl": "http://auth:9000/",
            "authResponseHeaders": ["X-User", "bad header:x"],
        }));
        let err = translate_middleware(&mw, &ROUTE).unwrap_err();
        assert_eq!(err[0].field, "spec.rule.authResponseHeaders[1]");
        assert!(!err[0].fail_closed, "invalid: the last good version stays");
        let mw = middleware(serde_json::json!({"authUrl": "http://auth:0/"}));
        let err = translate_middleware(&mw, &ROUTE).unwrap_err();
        assert_eq!(err[0].field, "spec.rule.authUrl");
        let mw = middleware(serde_json::json!({"authUrl": "http://auth/", "authSignIn": "login"}));
        let err = translate_middleware(&mw, &ROUTE).unwrap_err();
        assert_eq!(err[0].field, "spec.rule.authSignIn");
    }
}
