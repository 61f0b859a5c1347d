//! `oauth` (alias `oauth2`): the browser login flow. The provider's token and user-info
//! endpoints become Clusters; the authorization URL stays a string (the browser goes there).
//!
//! The callback (`redirectUrl`'s path) is answered by the middleware itself, so it must be a
//! request of this route: its path has to be under the route's path, and it is added to the
//! middleware's scope when `paths` narrow it. A callback elsewhere withdraws the route with a
//! clear error (a separate callback Route is not generated): the route is withdrawn.
//!
//! Goma's static `state` value is not used: every login gets a random state bound to a signed,
//! short-lived cookie (a fixed state gives no CSRF protection).

use super::{RouteContext, TranslatedMiddleware, rule_error, service_from_url, unenforceable};
use crate::model::goma;
use crate::model::goma::middleware_rule::{OauthProvider, OauthRule};
use crate::translate::FieldError;
use sluice_proto::config as pb;

/// Authorization, token and user-info URLs of the well-known providers.
fn provider_endpoints(
    provider: OauthProvider,
) -> Option<(&'static str, &'static str, &'static str)> {
    Some(match provider {
        OauthProvider::Google => (
            "https://accounts.google.com/o/oauth2/v2/auth",
            "https://oauth2.googleapis.com/token",
            "https://openidconnect.googleapis.com/v1/userinfo",
        ),
        OauthProvider::Github => (
            "https://github.com/login/oauth/authorize",
            "https://github.com/login/oauth/access_token",
            "https://api.github.com/user",
        ),
        OauthProvider::Gitlab => (
            "https://gitlab.com/oauth/authorize",
            "https://gitlab.com/oauth/token",
            "https://gitlab.com/oauth/userinfo",
        ),
        OauthProvider::Amazon => (
            "https://www.amazon.com/ap/oa",
            "https://api.amazon.com/auth/o2/token",
            "https://api.amazon.com/user/profile",
        ),
        OauthProvider::Facebook => (
            "https://www.facebook.com/v19.0/dialog/oauth",
            "https://graph.facebook.com/v19.0/oauth/access_token",
            "https://graph.facebook.com/me",
        ),
        OauthProvider::Custom => return None,
    })
}

pub(super) fn translate(
    rule: &OauthRule,
    mw: &goma::Middleware,
    route: &RouteContext<'_>,
    out: &mut TranslatedMiddleware,
) -> Result<pb::middleware::Kind, Vec<FieldError>> {
    let defaults = provider_endpoints(rule.provider);
    let pick = |given: &Option<String>, default: Option<&'static str>, field: &str| {
        given
            .clone()
            .or_else(|| default.map(str::to_owned))
            .ok_or_else(|| rule_error(field, "required for provider custom"))
    };
    let auth_url = pick(
        &rule.endpoint.auth_url,
        defaults.map(|d| d.0),
        "endpoint.authUrl",
    )?;
    let token_url = pick(
        &rule.endpoint.token_url,
        defaults.map(|d| d.1),
        "endpoint.tokenUrl",
    )?;
    let user_info_url = rule
        .endpoint
        .user_info_url
        .clone()
        .or_else(|| defaults.map(|d| d.2.to_owned()));
    if rule.endpoint.jwks_url.is_some() {
        return Err(unenforceable(
            "endpoint.jwksUrl",
            "verifying tokens against a JWKS is not supported by this version; remove it (tokens are checked at the user-info endpoint)",
        ));
    }
    if !(auth_url.starts_with("https://") || auth_url.starts_with("http://")) {
        return Err(rule_error(
            "endpoint.authUrl",
            format!("{auth_url:?} is not an http:// or https:// URL"),
        ));
    }
    let token = service_from_url(&token_url, mw, route, "token", false, out)
        .map_err(|e| rule_error("endpoint.tokenUrl", e))?;
    let user_info = match &user_info_url {
        Some(url) => Some(
            service_from_url(url, mw, route, "userinfo", false, out)
                .map_err(|e| rule_error("endpoint.userInfoUrl", e))?,
        ),
        None => None,
    };
    let callback = callback_path(&rule.redirect_url).map_err(|e| rule_error("redirectUrl", e))?;
    if !under(&callback, route.route_path) {
        return Err(unenforceable(
            "redirectUrl",
            format!(
                "the callback path {callback:?} is not under the route's path {:?}; the route serves its own callback",
                route.route_path
            ),
        ));
    }
    if let Some(scope) = &mut out.middleware.scope
        && !scope.exact.contains(&callback)
    {
        scope.exact.push(callback.clone());
    }
    for (field, value) in [
        ("redirectPath", &rule.redirect_path),
        ("cookiePath", &rule.cookie_path),
    ] {
        if let Some(v) = value
            && !v.starts_with('/')
        {
            return Err(rule_error(field, format!("{v:?} must start with \"/\"")));
        }
    }
    Ok(pb::middleware::Kind::Oauth(pb::OAuth {
        client_id: rule.client_id.clone(),
        client_secret: rule.client_secret.clone(),
        auth_url,
        token: Some(token),
        user_info,
        redirect_url: rule.redirect_url.clone(),
        scopes: rule.scopes.clone(),
        redirect_path: rule.redirect_path.clone().unwrap_or_default(),
        cookie_path: rule
            .cookie_path
            .clone()
            .unwrap_or_else(|| route.route_path.to_owned()),
        jwks: None,
    }))
}

/// The path of an absolute callback URL (query and fragment dropped).
fn callback_path(url: &str) -> Result<String, String> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or_else(|| format!("{url:?} is not an http:// or https:// URL"))?;
    let path = rest.find('/').map_or("/", |i| &rest[i..]);
    let path = path.split(['?', '#']).next().unwrap_or("/");
    Ok(if path.is_empty() { "/" } else { path }.to_owned())
}

/// Segment-aware: "/api/callback" is under "/api", "/apix" is not; everything is under "/".
fn under(path: &str, prefix: &str) -> bool {
    let prefix = prefix.trim_end_matches('/');
    path.strip_prefix(prefix)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::translate::middleware::translate_middleware;

    fn middleware(rule: serde_json::Value, paths: &[&str]) -> goma::Middleware {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "gateway.jkaninda.dev/v1alpha1",
            "kind": "Middleware",
            "metadata": {"name": "login", "namespace": "default"},
            "spec": {"type": "oauth2", "paths": paths, "rule": rule},
        }))
        .unwrap()
    }

    const ROUTE: RouteContext<'static> = RouteContext {
        namespace: "default",
        route_name: "app",
        route_path: "/app",
        route_target: "",
    };

    fn custom(redirect: &str) -> serde_json::Value {
        serde_json::json!({
            "clientId": "id", "clientSecret": "secret",
            "redirectUrl": redirect,
            "endpoint": {
                "authUrl": "https://idp.example.com/authorize",
                "tokenUrl": "http://127.0.0.1:9000/token",
                "userInfoUrl": "http://127.0.0.1:9000/userinfo",
            },
            "scopes": ["openid", "email"],
        })
    }

    #[test]
    fn custom_provider_endpoints_callback_in_scope_and_cookie_path() {
        let mw = middleware(
            custom("https://app.example.com/app/callback?x"),
            &["/private/*"],
        );
        let t = translate_middleware(&mw, &ROUTE).unwrap();
        let Some(pb::middleware::Kind::Oauth(o)) = &t.middleware.kind else {
            panic!("{:?}", t.middleware.kind)
        };
        assert_eq!(o.auth_url, "https://idp.example.com/authorize");
        assert_eq!(o.token.as_ref().unwrap().path, "/token");
        assert_eq!(o.user_info.as_ref().unwrap().path, "/userinfo");
        assert_eq!(o.cookie_path, "/app");
        assert_eq!(t.clusters.len(), 2);
        assert!(
            t.middleware
                .scope
                .as_ref()
                .unwrap()
                .exact
                .contains(&"/app/callback".to_owned())
        );
    }

    #[test]
    fn well_known_provider_gets_default_endpoints() {
        let mw = middleware(
            serde_json::json!({"clientId": "id", "clientSecret": "s", "provider": "github",
                "redirectUrl": "https://x.example.com/app/cb"}),
            &[],
        );
        let t = translate_middleware(&mw, &ROUTE).unwrap();
        let Some(pb::middleware::Kind::Oauth(o)) = &t.middleware.kind else {
            panic!()
        };
        assert_eq!(o.auth_url, "https://github.com/login/oauth/authorize");
        assert_eq!(o.token.as_ref().unwrap().authority, "github.com");
        assert!(t.middleware.scope.is_none());
    }

    #[test]
    fn callback_outside_the_route_and_jwks_are_refused() {
        let mw = middleware(custom("https://app.example.com/callback"), &[]);
        let err = translate_middleware(&mw, &ROUTE).unwrap_err();
        assert_eq!(err[0].field, "spec.rule.redirectUrl");
        assert!(err[0].fail_closed, "unenforceable: withdrawn");
        let mut rule = custom("https://app.example.com/app/cb");
        rule["endpoint"]["jwksUrl"] = "https://idp/jwks".into();
        let err = translate_middleware(&middleware(rule, &[]), &ROUTE).unwrap_err();
        assert_eq!(err[0].field, "spec.rule.endpoint.jwksUrl");
        assert!(err[0].fail_closed);
        let mut rule = custom("https://app.example.com/app/cb");
        rule["cookiePath"] = "app".into();
        let err = translate_middleware(&middleware(rule, &[]), &ROUTE).unwrap_err();
        assert_eq!(err[0].field, "spec.rule.cookiePath");
        assert!(!err[0].fail_closed, "invalid: the last good version stays");
        assert!(under("/app", "/"));
        assert!(!under("/apix", "/app"));
    }
}
