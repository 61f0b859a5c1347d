//! Middleware rules typed per middleware type.
//!
//! Goma's CRD takes `rule` as free-form JSON and its gateway logs and skips a rule it cannot use,
//! so a typo in an auth middleware leaves the route open. Here every type has a struct with the
//! keys Goma's gateway reads (unknown keys rejected, required keys enforced), and
//! [`typed_rule`] turns `type` + `rule` into a [`MiddlewareRule`] or an error naming the field:
//! `spec.rule.secret: required for type jwt`.
//!
//! The same knowledge feeds the CRD: `rule` is published as the union of every type's keys (so
//! the API server rejects unknown keys and wrong value types), and [`REQUIRED_KEYS`] becomes one
//! CEL rule per type and required key, so `kubectl apply` catches a missing key too.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::de::{self, DeserializeOwned, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::MiddlewareType;

/// A rule that does not fit its middleware type. `field` is the full path (`spec.rule.users[0]`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct RuleError {
    pub field: String,
    pub message: String,
}

impl RuleError {
    /// An error at `spec.rule.<path>` (`path` empty: `spec.rule` itself).
    fn at(path: impl fmt::Display, message: impl Into<String>) -> Self {
        let path = path.to_string();
        let field = if path.is_empty() {
            "spec.rule".to_owned()
        } else {
            format!("spec.rule.{path}")
        };
        Self {
            field,
            message: message.into(),
        }
    }

    fn required(path: impl fmt::Display, middleware_type: MiddlewareType) -> Self {
        Self::at(path, format!("required for type {middleware_type}"))
    }
}

/// A middleware's rule, typed by its `type`.
#[derive(Clone, Debug, PartialEq)]
pub enum MiddlewareRule {
    Basic(BasicAuthRule),
    Ldap(LdapRule),
    Jwt(JwtRule),
    Oauth(OauthRule),
    ForwardAuth(ForwardAuthRule),
    RateLimit(RateLimitRule),
    Access(AccessRule),
    AccessPolicy(AccessPolicyRule),
    GeoBlock(GeoBlockRule),
    UserAgentBlock(UserAgentBlockRule),
    BodyLimit(BodyLimitRule),
    AddPrefix(AddPrefixRule),
    RewriteRegex(RewriteRegexRule),
    StripQuery(StripQueryRule),
    Redirect(RedirectRule),
    RedirectScheme(RedirectSchemeRule),
    RedirectRegex(RedirectRegexRule),
    HttpCache(HttpCacheRule),
    ResponseHeaders(ResponseHeadersRule),
    RequestHeaders(RequestHeadersRule),
    AccessLog(AccessLogRule),
    ErrorInterceptor(ErrorInterceptorRule),
}

/// Types `rule` for `middleware_type`. An absent (null) rule counts as `{}`.
pub fn typed_rule(
    middleware_type: MiddlewareType,
    rule: &Value,
) -> Result<MiddlewareRule, RuleError> {
    use MiddlewareRule as R;
    use MiddlewareType as T;
    let ty = middleware_type;
    Ok(match ty {
        T::Basic => R::Basic(parse(ty, rule)?),
        T::Ldap => R::Ldap(parse(ty, rule)?),
        T::Jwt => R::Jwt(parse(ty, rule)?),
        T::Oauth => R::Oauth(parse(ty, rule)?),
        T::ForwardAuth => R::ForwardAuth(parse(ty, rule)?),
        T::RateLimit => R::RateLimit(parse(ty, rule)?),
        T::Access => R::Access(parse(ty, rule)?),
        T::AccessPolicy => R::AccessPolicy(parse(ty, rule)?),
        T::GeoBlock => R::GeoBlock(parse(ty, rule)?),
        T::UserAgentBlock => R::UserAgentBlock(parse(ty, rule)?),
        T::BodyLimit => R::BodyLimit(parse(ty, rule)?),
        T::AddPrefix => R::AddPrefix(parse(ty, rule)?),
        T::RewriteRegex => R::RewriteRegex(parse(ty, rule)?),
        T::StripQuery => R::StripQuery(parse(ty, rule)?),
        T::Redirect => R::Redirect(parse(ty, rule)?),
        T::RedirectScheme => R::RedirectScheme(parse(ty, rule)?),
        T::RedirectRegex => R::RedirectRegex(parse(ty, rule)?),
        T::HttpCache => R::HttpCache(parse(ty, rule)?),
        T::ResponseHeaders => R::ResponseHeaders(parse(ty, rule)?),
        T::RequestHeaders => R::RequestHeaders(parse(ty, rule)?),
        T::AccessLog => R::AccessLog(parse(ty, rule)?),
        T::ErrorInterceptor => R::ErrorInterceptor(parse(ty, rule)?),
    })
}

/// Checks beyond the shape serde enforces.
trait CheckRule {
    fn check(&self, _ty: MiddlewareType) -> Result<(), RuleError> {
        Ok(())
    }
}

fn parse<T: DeserializeOwned + CheckRule>(
    ty: MiddlewareType,
    rule: &Value,
) -> Result<T, RuleError> {
    let empty = Value::Object(Map::new());
    let rule = match rule {
        Value::Null => &empty,
        Value::Object(_) => rule,
        other => {
            return Err(RuleError::at(
                "",
                format!(
                    "expected a mapping of {ty} settings, found {}",
                    kind_of(other)
                ),
            ));
        }
    };
    let typed: T = serde_path_to_error::deserialize(rule).map_err(|e| {
        let path = match e.path().to_string() {
            p if p == "." => String::new(),
            p => p,
        };
        let message = e.into_inner().to_string();
        let join = |key: &str| {
            if path.is_empty() {
                key.to_owned()
            } else {
                format!("{path}.{key}")
            }
        };
        if let Some(key) = quoted_after(&message, "missing field `") {
            RuleError::required(join(key), ty)
        } else if let Some(key) = quoted_after(&message, "unknown field `") {
            // serde: "unknown field `x`, expected one of `a`, `b`"
            let expected = message
                .split_once(", ")
                .map_or(String::new(), |(_, rest)| format!(" ({rest})"));
            // The path of an unknown key already ends with it.
            let field = if path == key || path.ends_with(&format!(".{key}")) {
                path.clone()
            } else {
                join(key)
            };
            RuleError::at(field, format!("not a {ty} setting{expected}"))
        } else {
            RuleError::at(path, message)
        }
    })?;
    typed.check(ty)?;
    Ok(typed)
}

/// `name` in "... `name`..." after `prefix`.
fn quoted_after<'a>(message: &'a str, prefix: &str) -> Option<&'a str> {
    let rest = message.strip_prefix(prefix)?;
    Some(&rest[..rest.find('`')?])
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

fn non_empty<T>(items: &[T], path: &str, ty: MiddlewareType) -> Result<(), RuleError> {
    if items.is_empty() {
        Err(RuleError::at(
            path,
            format!("at least one entry required for type {ty}"),
        ))
    } else {
        Ok(())
    }
}

fn non_blank(value: &str, path: impl fmt::Display, ty: MiddlewareType) -> Result<(), RuleError> {
    if value.trim().is_empty() {
        Err(RuleError::required(path, ty))
    } else {
        Ok(())
    }
}

fn check_regex(pattern: &str, path: &str) -> Result<(), RuleError> {
    regex::Regex::new(pattern).map(|_| ()).map_err(|e| {
        // The message ends with the reason after the pattern and a caret.
        let text = e.to_string();
        let reason = text
            .rsplit("error: ")
            .next()
            .unwrap_or(&text)
            .trim()
            .to_owned();
        RuleError::at(path, format!("not a valid regular expression: {reason}"))
    })
}

fn check_http_url(url: &str, path: &str, ty: MiddlewareType) -> Result<(), RuleError> {
    non_blank(url, path, ty)?;
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"));
    match rest {
        Some(rest) if !rest.is_empty() && !rest.starts_with('/') => Ok(()),
        _ => Err(RuleError::at(
            path,
            format!("{url:?} is not an http:// or https:// URL with a host"),
        )),
    }
}

/// Go's `time.ParseDuration` syntax: `300ms`, `10m`, `1h30m`.
fn check_duration(value: &str, path: &str) -> Result<(), RuleError> {
    let bad = || {
        RuleError::at(
            path,
            format!("{value:?} is not a duration such as 30s, 10m or 1h30m"),
        )
    };
    let mut rest = value;
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        if digits == 0 {
            return Err(bad());
        }
        rest = &rest[digits..];
        // `ms` before `m` and `s`: the first match wins.
        let unit = ["ns", "us", "µs", "ms", "s", "m", "h"]
            .into_iter()
            .find(|u| rest.starts_with(u))
            .ok_or_else(bad)?;
        rest = &rest[unit.len()..];
    }
    Ok(())
}

/// An HTTP status code, 100-599.
fn check_status(code: u16, path: &str) -> Result<(), RuleError> {
    if (100..=599).contains(&code) {
        Ok(())
    } else {
        Err(RuleError::at(
            path,
            format!("{code} is not an HTTP status (100-599)"),
        ))
    }
}

/// RFC 9110 token characters.
fn is_header_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

fn check_set_headers(
    headers: &BTreeMap<String, String>,
    path: &str,
    reject_hop_by_hop: bool,
) -> Result<(), RuleError> {
    for (name, value) in headers {
        let field = format!("{path}.{name}");
        if !is_header_name(name) {
            return Err(RuleError::at(field, "not a valid header name"));
        }
        if reject_hop_by_hop && HOP_BY_HOP.contains(&name.to_ascii_lowercase().as_str()) {
            return Err(RuleError::at(field, "hop-by-hop headers cannot be set"));
        }
        if value.contains(['\r', '\n']) {
            return Err(RuleError::at(
                field,
                "header values cannot contain CR or LF",
            ));
        }
    }
    Ok(())
}

fn check_header_names(names: &[String], path: &str) -> Result<(), RuleError> {
    for (i, name) in names.iter().enumerate() {
        if !is_header_name(name) {
            return Err(RuleError::at(
                format!("{path}[{i}]"),
                format!("{name:?} is not a valid header name"),
            ));
        }
    }
    Ok(())
}

fn default_realm() -> String {
    "Restricted".to_owned()
}

// ---------------------------------------------------------------------------------------------
// Authentication
// ---------------------------------------------------------------------------------------------

/// `basicAuth` (alias `basic`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BasicAuthRule {
    /// Realm of the `WWW-Authenticate` challenge (default `Restricted`).
    #[serde(default = "default_realm")]
    pub realm: String,
    /// Pass the authenticated user name upstream, in the `X-Forwarded-User` header.
    #[serde(default)]
    pub forward_username: bool,
    /// Accepted users: `{username, password}` or the older `"username:password"` string. Passwords
    /// may be bcrypt, apr1, {SHA}, md5-crypt hashes or plain text.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub users: Vec<BasicUser>,
    /// Sluice: a Secret in the Middleware's namespace with more users: key `users` holding
    /// htpasswd lines (`name:hash`), or keys `username` and `password` (a
    /// `kubernetes.io/basic-auth` Secret). Keeps passwords out of the Middleware.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub users_secret: Option<String>,
    /// Sluice: keep the `Authorization` header on the forwarded request. By default the gateway
    /// removes the credentials it checked (Goma forwards them).
    #[serde(default)]
    pub forward_authorization: bool,
}

impl CheckRule for BasicAuthRule {
    fn check(&self, ty: MiddlewareType) -> Result<(), RuleError> {
        match &self.users_secret {
            Some(name) => non_blank(name, "usersSecret", ty)?,
            None => non_empty(&self.users, "users", ty)?,
        }
        for (i, user) in self.users.iter().enumerate() {
            non_blank(&user.username, format!("users[{i}].username"), ty)?;
        }
        Ok(())
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BasicUser {
    pub username: String,
    pub password: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BasicUserFields {
    username: String,
    password: String,
}

impl<'de> Deserialize<'de> for BasicUser {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct UserVisitor;
        impl<'de> Visitor<'de> for UserVisitor {
            type Value = BasicUser;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("{username, password} or \"username:password\"")
            }

            fn visit_str<E: de::Error>(self, s: &str) -> Result<BasicUser, E> {
                let (username, password) = s.split_once(':').ok_or_else(|| {
                    E::custom("expected \"username:password\" or {username, password}")
                })?;
                Ok(BasicUser {
                    username: username.to_owned(),
                    password: password.to_owned(),
                })
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<BasicUser, A::Error> {
                let fields =
                    BasicUserFields::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(BasicUser {
                    username: fields.username,
                    password: fields.password,
                })
            }
        }
        deserializer.deserialize_any(UserVisitor)
    }
}

/// Either form is accepted, so the schema leaves the entry's shape open.
impl JsonSchema for BasicUser {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "BasicUser".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "{username, password}, or \"username:password\".",
            "x-kubernetes-preserve-unknown-fields": true
        })
    }
}

/// `ldap` (alias `ldapAuth`): a basic-auth challenge checked against an LDAP directory.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LdapRule {
    /// URL: the ldap:// or ldaps:// directory (ldap), the redirect target (redirect).
    pub url: String,
    /// Base DN of the user search.
    #[serde(rename = "baseDN")]
    pub base_dn: String,
    /// DN to bind as for the search.
    #[serde(rename = "bindDN", default, skip_serializing_if = "Option::is_none")]
    pub bind_dn: Option<String>,
    /// Password of `bindDN`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bind_pass: Option<String>,
    /// Search filter; `%s` is the user name (default `(uid=%s)`).
    #[serde(default = "default_user_filter")]
    pub user_filter: String,
    /// Upgrade the connection with StartTLS.
    #[serde(rename = "startTLS", default)]
    pub start_tls: bool,
    /// Skip verifying the directory's certificate (not recommended).
    #[serde(default)]
    pub insecure_skip_verify: bool,
    /// Realm of the `WWW-Authenticate` challenge (default `Restricted`).
    #[serde(default = "default_realm")]
    pub realm: String,
    /// Pass the authenticated user name upstream.
    #[serde(default)]
    pub forward_username: bool,
    /// Connection pool limits.
    #[serde(default)]
    pub conn_pool: LdapConnPool,
}

fn default_user_filter() -> String {
    "(uid=%s)".to_owned()
}

impl CheckRule for LdapRule {
    fn check(&self, ty: MiddlewareType) -> Result<(), RuleError> {
        non_blank(&self.url, "url", ty)?;
        if !(self.url.starts_with("ldap://") || self.url.starts_with("ldaps://")) {
            return Err(RuleError::at(
                "url",
                format!("{:?} is not an ldap:// or ldaps:// URL", self.url),
            ));
        }
        non_blank(&self.base_dn, "baseDN", ty)?;
        check_duration(&self.conn_pool.ttl, "connPool.ttl")
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LdapConnPool {
    /// Pooled connections (default 5).
    #[serde(default = "default_pool_size")]
    #[schemars(range(min = 1))]
    pub size: u32,
    /// Binds allowed in a burst (default 10).
    #[serde(default = "default_pool_burst")]
    #[schemars(range(min = 1))]
    pub burst: u32,
    /// Lifetime of a pooled connection (default `60s`).
    #[serde(default = "default_pool_ttl")]
    pub ttl: String,
}

fn default_pool_size() -> u32 {
    5
}

fn default_pool_burst() -> u32 {
    10
}

fn default_pool_ttl() -> String {
    "60s".to_owned()
}

impl Default for LdapConnPool {
    fn default() -> Self {
        Self {
            size: default_pool_size(),
            burst: default_pool_burst(),
            ttl: default_pool_ttl(),
        }
    }
}

/// `jwtAuth` (alias `jwt`): Bearer tokens checked against a key.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JwtRule {
    /// HMAC secret (one of secret, publicKey, jwksUrl, jwksFile is required).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// PEM public key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key: Option<String>,
    /// URL of a JWKS document.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_url: Option<String>,
    /// Path of a JWKS file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_file: Option<String>,
    /// Accepted algorithms (default: those of the key type).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub algorithms: Vec<String>,
    /// Deprecated: one algorithm; use algorithms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alg: Option<String>,
    /// Required `iss` claim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// Required `aud` claim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audience: Option<String>,
    /// Claim checks: Equals/Prefix/Contains/OneOf combined with `!`, `&&`, `||` and parentheses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claims_expression: Option<String>,
    /// Upstream header to claim path (`X-User-Id: sub`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub forward_headers: BTreeMap<String, String>,
    /// Pass the Authorization header upstream.
    #[serde(default)]
    pub forward_authorization: bool,
}

/// The algorithms JWT (RFC 7518) and EdDSA define.
pub const JWT_ALGORITHMS: [&str; 13] = [
    "HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "ES256", "ES384", "ES512", "PS256",
    "PS384", "PS512", "EdDSA",
];

impl CheckRule for JwtRule {
    fn check(&self, ty: MiddlewareType) -> Result<(), RuleError> {
        let sources = [
            &self.secret,
            &self.public_key,
            &self.jwks_url,
            &self.jwks_file,
        ];
        if !sources
            .iter()
            .any(|s| s.as_deref().is_some_and(|s| !s.trim().is_empty()))
        {
            return Err(RuleError::at(
                "secret",
                format!("required for type {ty} (or one of publicKey, jwksUrl, jwksFile)"),
            ));
        }
        if let Some(url) = &self.jwks_url {
            check_http_url(url, "jwksUrl", ty)?;
        }
        let algorithms = self
            .algorithms
            .iter()
            .enumerate()
            .map(|(i, a)| (format!("algorithms[{i}]"), a));
        for (path, alg) in algorithms.chain(self.alg.iter().map(|a| ("alg".to_owned(), a))) {
            if !JWT_ALGORITHMS.contains(&alg.as_str()) {
                return Err(RuleError::at(
                    path,
                    format!("{alg:?} is not one of {}", JWT_ALGORITHMS.join(", ")),
                ));
            }
        }
        for (header, claim) in &self.forward_headers {
            if !is_header_name(header) {
                return Err(RuleError::at(
                    format!("forwardHeaders.{header}"),
                    "not a valid header name",
                ));
            }
            non_blank(claim, format!("forwardHeaders.{header}"), ty)?;
        }
        Ok(())
    }
}

/// `oauth` (alias `oauth2`): an OAuth2 / OIDC browser login.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OauthRule {
    /// Client ID registered with the provider.
    pub client_id: String,
    /// Client secret registered with the provider.
    pub client_secret: String,
    /// Callback URL registered with the provider; its path is served by the gateway.
    pub redirect_url: String,
    /// Identity provider (default `custom`: give the endpoints).
    #[serde(default)]
    pub provider: OauthProvider,
    /// Endpoints of a custom provider.
    #[serde(default)]
    pub endpoint: OauthEndpoint,
    /// Requested scopes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scopes: Vec<String>,
    /// OAuth `state` value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// Where to send the user after login.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect_path: Option<String>,
    /// Path of the token cookies (default: the route's path).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cookie_path: Option<String>,
}

impl CheckRule for OauthRule {
    fn check(&self, ty: MiddlewareType) -> Result<(), RuleError> {
        non_blank(&self.client_id, "clientId", ty)?;
        non_blank(&self.client_secret, "clientSecret", ty)?;
        check_http_url(&self.redirect_url, "redirectUrl", ty)?;
        if self.provider == OauthProvider::Custom {
            for (path, url) in [
                ("endpoint.authUrl", &self.endpoint.auth_url),
                ("endpoint.tokenUrl", &self.endpoint.token_url),
            ] {
                match url {
                    Some(url) => check_http_url(url, path, ty)?,
                    None => {
                        return Err(RuleError::at(path, "required for provider custom"));
                    }
                }
            }
        }
        Ok(())
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum OauthProvider {
    Google,
    Github,
    Gitlab,
    Amazon,
    Facebook,
    #[default]
    Custom,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OauthEndpoint {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_info_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_url: Option<String>,
}

/// `forwardAuth`: asks an external service whether to let the request through.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ForwardAuthRule {
    /// URL of the auth service; only a 200 lets the request through.
    pub auth_url: String,
    /// Where a 401 redirects to (the original URL is appended after `?rd=`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_sign_in: Option<String>,
    /// Send the X-Forwarded-* headers to the auth service.
    #[serde(default)]
    pub forward_host_headers: bool,
    /// Skip verifying the TLS certificate (not recommended).
    #[serde(default)]
    pub insecure_skip_verify: bool,
    /// Request headers passed to the auth service.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub auth_request_headers: Vec<String>,
    /// Cookies of the auth response copied to the client response.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub add_auth_cookies_to_response: Vec<String>,
    /// Auth response headers copied upstream, `name` or `source:destination`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub auth_response_headers: Vec<String>,
    /// Auth response headers passed upstream as query parameters.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub auth_response_headers_as_params: Vec<String>,
    /// Sluice extension: how long the auth call may take (default `5s`); a slower or failed
    /// call refuses the request (Goma waits forever).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
}

impl CheckRule for ForwardAuthRule {
    fn check(&self, ty: MiddlewareType) -> Result<(), RuleError> {
        check_http_url(&self.auth_url, "authUrl", ty)?;
        check_header_names(&self.auth_request_headers, "authRequestHeaders")?;
        if let Some(timeout) = &self.timeout {
            check_duration(timeout, "timeout")?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Traffic control
// ---------------------------------------------------------------------------------------------

/// `rateLimit`: a token bucket per client.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RateLimitRule {
    /// Time unit of requestsPerUnit (default `second`).
    #[serde(default)]
    pub unit: RateUnit,
    /// Requests allowed per unit.
    #[schemars(range(min = 1))]
    pub requests_per_unit: u32,
    /// Extra requests allowed in a burst (default 0).
    #[serde(default)]
    pub burst: u32,
    /// Ban a client after this many rejected requests (default 0: never).
    #[serde(default)]
    pub ban_after: u32,
    /// Length of a ban (default `10m`).
    #[serde(default = "default_ban_duration")]
    pub ban_duration: String,
    /// What identifies a client (default: its IP).
    #[serde(default)]
    pub key_strategy: KeyStrategy,
}

fn default_ban_duration() -> String {
    "10m".to_owned()
}

impl CheckRule for RateLimitRule {
    fn check(&self, ty: MiddlewareType) -> Result<(), RuleError> {
        if self.requests_per_unit == 0 {
            return Err(RuleError::at("requestsPerUnit", "must be at least 1"));
        }
        check_duration(&self.ban_duration, "banDuration")?;
        if self.key_strategy.source != KeySource::Ip {
            non_blank(&self.key_strategy.name, "keyStrategy.name", ty)?;
        }
        Ok(())
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum RateUnit {
    #[default]
    Second,
    Minute,
    Hour,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KeyStrategy {
    /// `ip` (default), `header` or `cookie`; a request without the header or cookie falls back
    /// to its IP.
    #[serde(default)]
    pub source: KeySource,
    /// Header or cookie name.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum KeySource {
    #[default]
    Ip,
    Header,
    Cookie,
}

fn default_forbidden() -> u16 {
    403
}

/// `access`: refuses requests whose path matches the middleware's paths.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AccessRule {
    /// Status of the refusal (default 403).
    #[serde(default = "default_forbidden")]
    #[schemars(range(min = 100, max = 599))]
    pub status_code: u16,
}

impl CheckRule for AccessRule {
    fn check(&self, _: MiddlewareType) -> Result<(), RuleError> {
        check_status(self.status_code, "statusCode")
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum PolicyAction {
    #[default]
    Allow,
    Deny,
}

/// `accessPolicy`: allows or denies client IP ranges.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AccessPolicyRule {
    /// `ALLOW`: only the listed sources pass (the accessPolicy default); `DENY`: they are refused.
    #[serde(default)]
    pub action: PolicyAction,
    /// IPs, CIDRs or IPv4 ranges `a.b.c.d-e.f.g.h`.
    pub source_ranges: Vec<String>,
}

impl CheckRule for AccessPolicyRule {
    fn check(&self, ty: MiddlewareType) -> Result<(), RuleError> {
        non_empty(&self.source_ranges, "sourceRanges", ty)?;
        for (i, range) in self.source_ranges.iter().enumerate() {
            if !is_source_range(range.trim()) {
                return Err(RuleError::at(
                    format!("sourceRanges[{i}]"),
                    format!("{range:?} is not an IP, a CIDR or an IPv4 range a.b.c.d-e.f.g.h"),
                ));
            }
        }
        Ok(())
    }
}

fn is_source_range(s: &str) -> bool {
    if let Some((ip, bits)) = s.split_once('/') {
        let max = match ip.parse::<IpAddr>() {
            Ok(IpAddr::V4(_)) => 32,
            Ok(IpAddr::V6(_)) => 128,
            Err(_) => return false,
        };
        return bits.parse::<u8>().is_ok_and(|b| b <= max);
    }
    if let Some((from, to)) = s.split_once('-') {
        return matches!(
            (from.trim().parse::<IpAddr>(), to.trim().parse::<IpAddr>()),
            (Ok(IpAddr::V4(a)), Ok(IpAddr::V4(b))) if a <= b
        );
    }
    s.parse::<IpAddr>().is_ok()
}

/// `geoBlock`: allows or denies client countries (needs a GeoIP database).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GeoBlockRule {
    /// `ALLOW`: only the listed sources pass (the accessPolicy default); `DENY`: they are refused.
    pub action: PolicyAction,
    /// ISO 3166-1 alpha-2 country codes.
    pub countries: Vec<String>,
    /// Status of the refusal (default 403).
    #[serde(default = "default_forbidden")]
    #[schemars(range(min = 100, max = 599))]
    pub status_code: u16,
    /// Body of the refusal (default `Access denied from your region`).
    #[serde(default = "default_geo_message")]
    pub message: String,
    /// Let through clients whose country is unknown (default true).
    #[serde(default = "default_true")]
    pub allow_unknown: bool,
    /// Header that carries the client's country upstream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub add_country_header: Option<String>,
}

fn default_geo_message() -> String {
    "Access denied from your region".to_owned()
}

fn default_true() -> bool {
    true
}

impl CheckRule for GeoBlockRule {
    fn check(&self, ty: MiddlewareType) -> Result<(), RuleError> {
        non_empty(&self.countries, "countries", ty)?;
        for (i, c) in self.countries.iter().enumerate() {
            if !(c.len() == 2 && c.bytes().all(|b| b.is_ascii_alphabetic())) {
                return Err(RuleError::at(
                    format!("countries[{i}]"),
                    format!("{c:?} is not an ISO 3166-1 alpha-2 country code"),
                ));
            }
        }
        check_status(self.status_code, "statusCode")?;
        if let Some(h) = &self.add_country_header
            && !is_header_name(h)
        {
            return Err(RuleError::at(
                "addCountryHeader",
                format!("{h:?} is not a valid header name"),
            ));
        }
        Ok(())
    }
}

/// `userAgentBlock`: refuses requests whose User-Agent contains one of the strings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UserAgentBlockRule {
    /// Case-sensitive substrings.
    pub user_agents: Vec<String>,
}

impl CheckRule for UserAgentBlockRule {
    fn check(&self, ty: MiddlewareType) -> Result<(), RuleError> {
        non_empty(&self.user_agents, "userAgents", ty)
    }
}

/// `bodyLimit`: refuses request bodies above a size with 413.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BodyLimitRule {
    /// Largest body, e.g. `10Mi`, `512KB`, `1048576`.
    pub limit: String,
}

impl CheckRule for BodyLimitRule {
    fn check(&self, ty: MiddlewareType) -> Result<(), RuleError> {
        non_blank(&self.limit, "limit", ty)?;
        if parse_size(&self.limit).is_none() {
            return Err(RuleError::at(
                "limit",
                format!(
                    "{:?} is not a size such as 10Mi, 512KB or 1048576",
                    self.limit
                ),
            ));
        }
        Ok(())
    }
}

/// Bytes in a size such as `10Mi`, `1.5MB`, `512k` or `1048576` (units case-insensitive).
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let number: f64 = number.parse().ok()?;
    let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "ki" | "kib" => 1 << 10,
        "m" | "mb" => 1_000_000,
        "mi" | "mib" => 1 << 20,
        "g" | "gb" => 1_000_000_000,
        "gi" | "gib" => 1 << 30,
        _ => return None,
    };
    let bytes = number * multiplier as f64;
    (bytes.is_finite() && bytes >= 0.0 && bytes < u64::MAX as f64).then_some(bytes as u64)
}

// ---------------------------------------------------------------------------------------------
// Transformation and redirects
// ---------------------------------------------------------------------------------------------

/// `addPrefix`: prepends a prefix to the upstream path.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AddPrefixRule {
    /// Prefix prepended to the upstream path.
    #[serde(default)]
    pub prefix: String,
}

impl CheckRule for AddPrefixRule {}

/// `rewriteRegex`: rewrites the upstream path.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RewriteRegexRule {
    /// Regular expression matched against the path.
    #[serde(default)]
    pub pattern: String,
    /// Replacement: `$1`, `{{goma.headers.X}}`, `{{goma.query.Y}}`.
    #[serde(default)]
    pub replacement: String,
}

impl CheckRule for RewriteRegexRule {
    fn check(&self, _: MiddlewareType) -> Result<(), RuleError> {
        check_regex(&self.pattern, "pattern")
    }
}

/// `stripQuery`: removes query parameters before proxying.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StripQueryRule {
    /// Parameters to remove.
    pub params: Vec<String>,
    /// Only for these methods (default: all).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<String>,
    /// Only for paths matching this regular expression.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_pattern: Option<String>,
}

impl CheckRule for StripQueryRule {
    fn check(&self, ty: MiddlewareType) -> Result<(), RuleError> {
        non_empty(&self.params, "params", ty)?;
        match &self.path_pattern {
            Some(p) => check_regex(p, "pathPattern"),
            None => Ok(()),
        }
    }
}

/// `redirect`: redirects every request to a URL.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RedirectRule {
    /// URL: the ldap:// or ldaps:// directory (ldap), the redirect target (redirect).
    pub url: String,
    /// 301 instead of 302.
    #[serde(default)]
    pub permanent: bool,
}

impl CheckRule for RedirectRule {
    fn check(&self, ty: MiddlewareType) -> Result<(), RuleError> {
        non_blank(&self.url, "url", ty)
    }
}

/// `redirectScheme`: redirects to another scheme (HTTP to HTTPS).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RedirectSchemeRule {
    /// Scheme of the target.
    pub scheme: RedirectTarget,
    /// Port of the target (default: the scheme's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub port: Option<u16>,
    /// 301 instead of 302.
    #[serde(default)]
    pub permanent: bool,
}

impl CheckRule for RedirectSchemeRule {
    fn check(&self, _: MiddlewareType) -> Result<(), RuleError> {
        if self.port == Some(0) {
            return Err(RuleError::at("port", "must be 1-65535"));
        }
        Ok(())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum RedirectTarget {
    Http,
    Https,
}

/// `redirectRegex`: redirects URLs matching a regular expression.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RedirectRegexRule {
    /// Regular expression matched against the URL.
    pub pattern: String,
    /// Target, with `$1` for captured groups.
    pub replacement: String,
    /// 301 instead of 302.
    #[serde(default)]
    pub permanent: bool,
}

impl CheckRule for RedirectRegexRule {
    fn check(&self, ty: MiddlewareType) -> Result<(), RuleError> {
        non_blank(&self.pattern, "pattern", ty)?;
        check_regex(&self.pattern, "pattern")?;
        non_blank(&self.replacement, "replacement", ty)
    }
}

/// `httpCache`: caches GET responses.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpCacheRule {
    /// Longest time an entry is kept, in seconds (default 300).
    #[serde(default = "default_max_ttl")]
    #[schemars(range(min = 0))]
    pub max_ttl: i64,
    /// How long a stale entry may still be served, in seconds.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub max_stale: i64,
    /// Memory for the in-memory cache (default `500Mi`).
    #[serde(default = "default_memory_limit")]
    pub memory_limit: String,
    /// Omit the X-Cache-Status header.
    #[serde(default)]
    pub disable_cache_status_header: bool,
    /// Statuses that may be cached.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cacheable_status_codes: Vec<u16>,
    /// Statuses never cached: codes or ranges such as `500-599`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub excluded_response_codes: Vec<String>,
    /// Key entries by the query string too.
    #[serde(default)]
    pub include_query_in_key: bool,
    /// Query parameters that are part of the key.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub query_params_to_cache: Vec<String>,
}

fn default_max_ttl() -> i64 {
    300
}

fn default_memory_limit() -> String {
    "500Mi".to_owned()
}

impl CheckRule for HttpCacheRule {
    fn check(&self, _: MiddlewareType) -> Result<(), RuleError> {
        if self.max_ttl < 0 || self.max_stale < 0 {
            let path = if self.max_ttl < 0 {
                "maxTtl"
            } else {
                "maxStale"
            };
            return Err(RuleError::at(path, "must not be negative"));
        }
        if parse_size(&self.memory_limit).is_none() {
            return Err(RuleError::at(
                "memoryLimit",
                format!("{:?} is not a size such as 500Mi", self.memory_limit),
            ));
        }
        for (i, code) in self.cacheable_status_codes.iter().enumerate() {
            check_status(*code, &format!("cacheableStatusCodes[{i}]"))?;
        }
        for (i, codes) in self.excluded_response_codes.iter().enumerate() {
            let bounds: Option<Vec<u16>> =
                codes.split('-').map(|c| c.trim().parse().ok()).collect();
            let valid = match bounds.as_deref() {
                Some([c]) => (100..=599).contains(c),
                Some([a, b]) => (100..=599).contains(a) && (100..=599).contains(b) && a <= b,
                _ => false,
            };
            if !valid {
                return Err(RuleError::at(
                    format!("excludedResponseCodes[{i}]"),
                    format!("{codes:?} is not a status or a range such as 500-599"),
                ));
            }
        }
        Ok(())
    }
}

/// `responseHeaders`: CORS, headers and cookies on responses.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ResponseHeadersRule {
    /// CORS headers and preflight answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cors: Option<Cors>,
    /// Headers to set; an empty value removes the header.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub set_headers: BTreeMap<String, String>,
    /// Cookies to set.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub set_cookies: Vec<Cookie>,
    /// Cache-Control of the responses whose status is in cacheStatuses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_control: Option<String>,
    /// Statuses that get cacheControl.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cache_statuses: Vec<u16>,
}

impl CheckRule for ResponseHeadersRule {
    fn check(&self, ty: MiddlewareType) -> Result<(), RuleError> {
        check_set_headers(&self.set_headers, "setHeaders", true)?;
        if let Some(cors) = &self.cors {
            check_header_names(&cors.allowed_headers, "cors.allowedHeaders")?;
            check_header_names(&cors.expose_headers, "cors.exposeHeaders")?;
            check_set_headers(&cors.headers, "cors.headers", true)?;
        }
        for (i, cookie) in self.set_cookies.iter().enumerate() {
            non_blank(&cookie.name, format!("setCookies[{i}].name"), ty)?;
            if cookie.attributes.same_site == Some(SameSite::None) && !cookie.attributes.secure {
                return Err(RuleError::at(
                    format!("setCookies[{i}].attributes.secure"),
                    "sameSite None requires secure: true",
                ));
            }
            if cookie.value.contains(['\r', '\n', ';']) {
                return Err(RuleError::at(
                    format!("setCookies[{i}].value"),
                    "cookie values cannot contain CR, LF or ';'",
                ));
            }
        }
        if let Some(cc) = &self.cache_control
            && cc.contains(['\r', '\n'])
        {
            return Err(RuleError::at("cacheControl", "cannot contain CR or LF"));
        }
        for (i, code) in self.cache_statuses.iter().enumerate() {
            check_status(*code, &format!("cacheStatuses[{i}]"))?;
        }
        Ok(())
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Cors {
    #[serde(default)]
    pub enabled: bool,
    /// Allowed origins (`*` for any).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub origins: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_headers: Vec<String>,
    /// Extra headers set on CORS responses.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub expose_headers: Vec<String>,
    /// Seconds a preflight answer may be cached.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub max_age: i64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_methods: Vec<String>,
    #[serde(default)]
    pub allow_credentials: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Cookie {
    pub name: String,
    #[serde(default)]
    pub value: String,
    #[serde(default)]
    pub attributes: CookieAttributes,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CookieAttributes {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    /// Seconds; 0 is a session cookie, -1 deletes the cookie.
    #[serde(default)]
    #[schemars(range(min = -1))]
    pub max_age: i64,
    #[serde(default)]
    pub secure: bool,
    #[serde(default)]
    pub http_only: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub same_site: Option<SameSite>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum SameSite {
    Strict,
    Lax,
    None,
}

/// `requestHeaders`: sets and removes upstream request headers.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RequestHeadersRule {
    /// Headers to set; an empty value removes the header.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub set_headers: BTreeMap<String, String>,
    /// Headers to remove (applied before setHeaders).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remove_headers: Vec<String>,
}

impl CheckRule for RequestHeadersRule {
    fn check(&self, _: MiddlewareType) -> Result<(), RuleError> {
        check_set_headers(&self.set_headers, "setHeaders", false)?;
        check_header_names(&self.remove_headers, "removeHeaders")
    }
}

/// `accessLog`: adds request details to the access log.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AccessLogRule {
    /// Request headers to log.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<String>,
    /// Query parameters to log.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub query: Vec<String>,
    /// Cookies to log.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cookies: Vec<String>,
}

impl CheckRule for AccessLogRule {
    fn check(&self, _: MiddlewareType) -> Result<(), RuleError> {
        check_header_names(&self.headers, "headers")
    }
}

/// `errorInterceptor`: replaces upstream error bodies.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ErrorInterceptorRule {
    /// Replace the bodies of the listed errors.
    #[serde(default)]
    pub enabled: bool,
    /// Content-Type of the replacement bodies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    /// Replacement per upstream status.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<ErrorPage>,
}

impl CheckRule for ErrorInterceptorRule {
    fn check(&self, _: MiddlewareType) -> Result<(), RuleError> {
        for (i, page) in self.errors.iter().enumerate() {
            check_status(page.status_code, &format!("errors[{i}].statusCode"))?;
            if page.body.is_some() && page.file.is_some() {
                return Err(RuleError::at(
                    format!("errors[{i}].file"),
                    "body and file are mutually exclusive",
                ));
            }
        }
        Ok(())
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ErrorPage {
    #[schemars(range(min = 100, max = 599))]
    pub status_code: u16,
    /// Replacement body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// File holding the replacement body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// Schema and CEL for the CRD
// ---------------------------------------------------------------------------------------------

/// What a type's rule must contain.
#[derive(Clone, Copy, Debug)]
pub enum Required {
    /// The key.
    Key(&'static str),
    /// The key, a non-empty list.
    List(&'static str),
    /// At least one of the keys; errors name the first.
    AnyOf(&'static [&'static str]),
}

impl Required {
    /// The key an error names.
    pub fn key(self) -> &'static str {
        match self {
            Required::Key(k) | Required::List(k) => k,
            Required::AnyOf(keys) => keys[0],
        }
    }
}

/// Required rule keys per type. The CRD enforces them with CEL; [`typed_rule`] enforces them
/// through the rule structs (a test keeps the two in step).
pub const REQUIRED_KEYS: &[(MiddlewareType, &[Required])] = {
    use MiddlewareType as T;
    use Required::*;
    &[
        (T::Basic, &[AnyOf(&["users", "usersSecret"])]),
        (T::Ldap, &[Key("url"), Key("baseDN")]),
        (
            T::Jwt,
            &[AnyOf(&["secret", "publicKey", "jwksUrl", "jwksFile"])],
        ),
        (
            T::Oauth,
            &[Key("clientId"), Key("clientSecret"), Key("redirectUrl")],
        ),
        (T::ForwardAuth, &[Key("authUrl")]),
        (T::RateLimit, &[Key("requestsPerUnit")]),
        (T::AccessPolicy, &[List("sourceRanges")]),
        (T::GeoBlock, &[Key("action"), List("countries")]),
        (T::UserAgentBlock, &[List("userAgents")]),
        (T::BodyLimit, &[Key("limit")]),
        (T::StripQuery, &[List("params")]),
        (T::Redirect, &[Key("url")]),
        (T::RedirectScheme, &[Key("scheme")]),
        (T::RedirectRegex, &[Key("pattern"), Key("replacement")]),
    ]
};

/// One `x-kubernetes-validations` rule per type and required key, on the Middleware spec.
pub fn cel_rules() -> Vec<Value> {
    let mut rules = Vec::new();
    for (ty, required) in REQUIRED_KEYS {
        let names: Vec<String> = ty.names().map(|n| format!("'{n}'")).collect();
        for need in *required {
            let has = |key: &str| format!("has(self.rule.{key})");
            let present = match need {
                Required::Key(k) => has(k),
                Required::List(k) => format!("{} && size(self.rule.{k}) > 0", has(k)),
                Required::AnyOf(keys) => {
                    format!(
                        "({})",
                        keys.iter().map(|k| has(k)).collect::<Vec<_>>().join(" || ")
                    )
                }
            };
            let message = match need {
                Required::AnyOf(keys) => format!(
                    "required for type {ty} (or one of {})",
                    keys[1..].join(", ")
                ),
                _ => format!("required for type {ty}"),
            };
            rules.push(serde_json::json!({
                "rule": format!(
                    "!(self.type in [{}]) || (has(self.rule) && {present})",
                    names.join(", ")
                ),
                "message": message,
                "fieldPath": format!(".rule.{}", need.key()),
                "reason": "FieldValueRequired",
            }));
        }
    }
    rules
}

/// Adds [`cel_rules`] to the Middleware spec schema (a schemars container transform).
pub fn add_cel_rules(schema: &mut Schema) {
    schema.insert(
        "x-kubernetes-validations".to_owned(),
        Value::Array(cel_rules()),
    );
}

/// The schema of each type's rule.
fn rule_schemas(generator: &mut SchemaGenerator) -> Vec<(MiddlewareType, Schema)> {
    use MiddlewareType as T;
    MiddlewareType::ALL
        .into_iter()
        .map(|ty| {
            let schema = match ty {
                T::Basic => BasicAuthRule::json_schema(generator),
                T::Ldap => LdapRule::json_schema(generator),
                T::Jwt => JwtRule::json_schema(generator),
                T::Oauth => OauthRule::json_schema(generator),
                T::ForwardAuth => ForwardAuthRule::json_schema(generator),
                T::RateLimit => RateLimitRule::json_schema(generator),
                T::Access => AccessRule::json_schema(generator),
                T::AccessPolicy => AccessPolicyRule::json_schema(generator),
                T::GeoBlock => GeoBlockRule::json_schema(generator),
                T::UserAgentBlock => UserAgentBlockRule::json_schema(generator),
                T::BodyLimit => BodyLimitRule::json_schema(generator),
                T::AddPrefix => AddPrefixRule::json_schema(generator),
                T::RewriteRegex => RewriteRegexRule::json_schema(generator),
                T::StripQuery => StripQueryRule::json_schema(generator),
                T::Redirect => RedirectRule::json_schema(generator),
                T::RedirectScheme => RedirectSchemeRule::json_schema(generator),
                T::RedirectRegex => RedirectRegexRule::json_schema(generator),
                T::HttpCache => HttpCacheRule::json_schema(generator),
                T::ResponseHeaders => ResponseHeadersRule::json_schema(generator),
                T::RequestHeaders => RequestHeadersRule::json_schema(generator),
                T::AccessLog => AccessLogRule::json_schema(generator),
                T::ErrorInterceptor => ErrorInterceptorRule::json_schema(generator),
            };
            (ty, schema)
        })
        .collect()
}

/// The union of every type's rule keys. A key several types share must have one shape; `Err`
/// lists the keys whose shapes differ.
fn merge_rule_properties(
    schemas: &[(MiddlewareType, Schema)],
) -> Result<Map<String, Value>, Vec<String>> {
    let mut merged: BTreeMap<String, (Value, Vec<MiddlewareType>)> = BTreeMap::new();
    let mut conflicts = Vec::new();
    for (ty, schema) in schemas {
        let Some(properties) = schema.get("properties").and_then(Value::as_object) else {
            continue;
        };
        for (key, property) in properties {
            let mut property = property.clone();
            // A default would be written into the rule of every type, not only this one.
            if let Some(p) = property.as_object_mut() {
                p.remove("default");
            }
            match merged.get_mut(key) {
                None => {
                    merged.insert(key.clone(), (property, vec![*ty]));
                }
                Some((existing, types)) => {
                    if without_description(existing) != without_description(&property) {
                        conflicts.push(key.clone());
                    }
                    types.push(*ty);
                }
            }
        }
    }
    if !conflicts.is_empty() {
        return Err(conflicts);
    }
    Ok(merged
        .into_iter()
        .map(|(key, (mut property, types))| {
            let types: Vec<String> = types.iter().map(|t| t.to_string()).collect();
            let description = property
                .get("description")
                .and_then(Value::as_str)
                .map_or(String::new(), |d| format!(" {d}"));
            if let Some(p) = property.as_object_mut() {
                p.insert(
                    "description".to_owned(),
                    Value::String(format!("[{}]{description}", types.join(", "))),
                );
            }
            (key, property)
        })
        .collect())
}

fn without_description(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(o) = v.as_object_mut() {
        o.remove("description");
    }
    v
}

/// Schema of `spec.rule`: the union of every type's keys, each tagged with the types that read
/// it. Required keys are per type, so they are CEL rules on the spec ([`cel_rules`]).
pub fn rule_schema(generator: &mut SchemaGenerator) -> Schema {
    let description = "Settings of the middleware's type; the keys each type reads are tagged \
                       [type, ...]. Unknown keys and keys of other types are rejected.";
    match merge_rule_properties(&rule_schemas(generator)) {
        Ok(properties) => json_schema!({
            "type": "object",
            "description": description,
            "properties": properties,
        }),
        // Unreachable while the merge test passes; stay usable (typed_rule still checks) rather
        // than publish a wrong shape.
        Err(_) => json_schema!({
            "type": "object",
            "description": description,
            "x-kubernetes-preserve-unknown-fields": true,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A valid rule for every type, with every required key.
    fn valid_example(ty: MiddlewareType) -> Value {
        use MiddlewareType as T;
        match ty {
            T::Basic => {
                json!({"realm": "Admin", "users": [{"username": "admin", "password": "$2y$05$x"}, "ops:plain"]})
            }
            T::Ldap => {
                json!({"url": "ldap://ldap.example.com:389", "baseDN": "dc=example,dc=com", "bindDN": "cn=admin", "bindPass": "x", "connPool": {"size": 3}})
            }
            T::Jwt => {
                json!({"jwksUrl": "https://idp.example.com/.well-known/jwks.json", "algorithms": ["RS256"], "issuer": "https://idp", "forwardHeaders": {"X-User": "sub"}})
            }
            T::Oauth => {
                json!({"clientId": "id", "clientSecret": "s", "redirectUrl": "https://app.example.com/callback", "provider": "google", "scopes": ["openid"]})
            }
            T::ForwardAuth => {
                json!({"authUrl": "http://auth:8080/verify", "authSignIn": "https://login", "authResponseHeaders": ["X-User:X-Auth-User"], "timeout": "2s"})
            }
            T::RateLimit => {
                json!({"unit": "minute", "requestsPerUnit": 60, "burst": 10, "banAfter": 5, "banDuration": "1h30m", "keyStrategy": {"source": "header", "name": "X-Api-Key"}})
            }
            T::Access => json!({"statusCode": 404}),
            T::AccessPolicy => {
                json!({"action": "DENY", "sourceRanges": ["10.0.0.0/8", "192.168.1.1", "172.16.0.1-172.16.0.9", "::1"]})
            }
            T::GeoBlock => {
                json!({"action": "ALLOW", "countries": ["US", "fr"], "allowUnknown": false, "addCountryHeader": "X-Country"})
            }
            T::UserAgentBlock => json!({"userAgents": ["curl", "BadBot"]}),
            T::BodyLimit => json!({"limit": "10Mi"}),
            T::AddPrefix => json!({"prefix": "/v1"}),
            T::RewriteRegex => json!({"pattern": "^/api/(.*)$", "replacement": "/$1"}),
            T::StripQuery => {
                json!({"params": ["utm_source"], "methods": ["GET"], "pathPattern": "^/search"})
            }
            T::Redirect => json!({"url": "https://example.com", "permanent": true}),
            T::RedirectScheme => json!({"scheme": "https", "port": 8443}),
            T::RedirectRegex => {
                json!({"pattern": "^http://old/(.*)", "replacement": "https://new/$1"})
            }
            T::HttpCache => {
                json!({"maxTtl": 60, "memoryLimit": "100Mi", "excludedResponseCodes": ["500-599", "404"], "cacheableStatusCodes": [200]})
            }
            T::ResponseHeaders => {
                json!({"cors": {"enabled": true, "origins": ["*"], "allowMethods": ["GET"]}, "setHeaders": {"X-Frame-Options": "DENY", "Server": ""}, "setCookies": [{"name": "a", "value": "b", "attributes": {"sameSite": "None", "secure": true}}]})
            }
            T::RequestHeaders => {
                json!({"setHeaders": {"X-Env": "prod"}, "removeHeaders": ["Cookie"]})
            }
            T::AccessLog => {
                json!({"headers": ["User-Agent"], "query": ["q"], "cookies": ["session"]})
            }
            T::ErrorInterceptor => {
                json!({"enabled": true, "contentType": "application/json", "errors": [{"statusCode": 500, "body": "{\"error\":\"oops\"}"}]})
            }
        }
    }

    /// A mistake per type and the field its error must name.
    fn mistake(ty: MiddlewareType) -> (Value, &'static str) {
        use MiddlewareType as T;
        match ty {
            T::Basic => (json!({"users": ["no-colon"]}), "spec.rule.users[0]"),
            T::Ldap => (
                json!({"url": "http://ldap", "baseDN": "dc=x"}),
                "spec.rule.url",
            ),
            T::Jwt => (json!({"issuer": "x"}), "spec.rule.secret"),
            T::Oauth => (
                json!({"clientId": "id", "clientSecret": "s", "redirectUrl": "https://a/cb"}),
                "spec.rule.endpoint.authUrl",
            ),
            T::ForwardAuth => (json!({"authURL": "http://auth"}), "spec.rule.authURL"),
            T::RateLimit => (json!({"requestsPerUnit": 0}), "spec.rule.requestsPerUnit"),
            T::Access => (json!({"statusCode": 999}), "spec.rule.statusCode"),
            T::AccessPolicy => (
                json!({"sourceRanges": ["10.0.0.0/33"]}),
                "spec.rule.sourceRanges[0]",
            ),
            T::GeoBlock => (
                json!({"action": "BLOCK", "countries": ["US"]}),
                "spec.rule.action",
            ),
            T::UserAgentBlock => (json!({"userAgents": []}), "spec.rule.userAgents"),
            T::BodyLimit => (json!({"limit": "ten megs"}), "spec.rule.limit"),
            T::AddPrefix => (json!({"prefix": 5}), "spec.rule.prefix"),
            T::RewriteRegex => (json!({"pattern": "(unclosed"}), "spec.rule.pattern"),
            T::StripQuery => (
                json!({"params": ["a"], "pathPattern": "["}),
                "spec.rule.pathPattern",
            ),
            T::Redirect => (json!({"permanent": true}), "spec.rule.url"),
            T::RedirectScheme => (json!({"scheme": "ftp"}), "spec.rule.scheme"),
            T::RedirectRegex => (json!({"pattern": "^/a"}), "spec.rule.replacement"),
            T::HttpCache => (
                json!({"excludedResponseCodes": ["599-500"]}),
                "spec.rule.excludedResponseCodes[0]",
            ),
            T::ResponseHeaders => (
                json!({"setHeaders": {"Connection": "close"}}),
                "spec.rule.setHeaders.Connection",
            ),
            T::RequestHeaders => (
                json!({"setHeaders": {"X-A": "b\r\nX-Injected: 1"}}),
                "spec.rule.setHeaders.X-A",
            ),
            T::AccessLog => (json!({"headers": "User-Agent"}), "spec.rule.headers"),
            T::ErrorInterceptor => (
                json!({"errors": [{"body": "x"}]}),
                "spec.rule.errors[0].statusCode",
            ),
        }
    }

    #[test]
    fn every_type_accepts_its_example() {
        for ty in MiddlewareType::ALL {
            let rule = typed_rule(ty, &valid_example(ty));
            assert!(rule.is_ok(), "{ty}: {rule:?}");
        }
    }

    #[test]
    fn every_type_rejects_a_mistake_naming_the_field() {
        for ty in MiddlewareType::ALL {
            let (rule, field) = mistake(ty);
            let err = typed_rule(ty, &rule).expect_err(&format!("{ty} accepted {rule}"));
            assert_eq!(err.field, field, "{ty}: {err}");
        }
    }

    #[test]
    fn unknown_keys_are_rejected_with_the_keys_that_exist() {
        let err =
            typed_rule(MiddlewareType::Jwt, &json!({"secret": "s", "scret": "x"})).unwrap_err();
        assert_eq!(err.field, "spec.rule.scret");
        assert!(
            err.message
                .starts_with("not a jwt setting (expected one of"),
            "{err}"
        );
        let err = typed_rule(
            MiddlewareType::ResponseHeaders,
            &json!({"cors": {"origin": ["*"]}}),
        )
        .unwrap_err();
        assert_eq!(err.field, "spec.rule.cors.origin", "{err}");
        let err = typed_rule(
            MiddlewareType::Basic,
            &json!({"users": [{"username": "a", "pass": "b"}]}),
        )
        .unwrap_err();
        assert_eq!(err.field, "spec.rule.users[0].pass", "{err}");
        // A key of another type is unknown to this one.
        let err = typed_rule(
            MiddlewareType::Basic,
            &json!({"users": ["a:b"], "secret": "s"}),
        )
        .unwrap_err();
        assert_eq!(err.field, "spec.rule.secret");
    }

    #[test]
    fn missing_keys_read_like_the_api_server() {
        let err = typed_rule(MiddlewareType::Jwt, &Value::Null).unwrap_err();
        assert_eq!(
            err.to_string(),
            "spec.rule.secret: required for type jwt (or one of publicKey, jwksUrl, jwksFile)"
        );
        let err = typed_rule(MiddlewareType::Ldap, &json!({"url": "ldap://x"})).unwrap_err();
        assert_eq!(err.to_string(), "spec.rule.baseDN: required for type ldap");
        let err = typed_rule(
            MiddlewareType::RateLimit,
            &json!({"keyStrategy": {"source": "cookie"}}),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "spec.rule.requestsPerUnit: required for type rateLimit"
        );
        let err = typed_rule(MiddlewareType::Basic, &json!([1])).unwrap_err();
        assert_eq!(err.field, "spec.rule");
    }

    #[test]
    fn aliases_type_the_same_rule() {
        for (alias, canonical) in [
            ("basicAuth", "basic"),
            ("ldapAuth", "ldap"),
            ("jwtAuth", "jwt"),
            ("oauth2", "oauth"),
        ] {
            let a: MiddlewareType = serde_json::from_value(json!(alias)).unwrap();
            let c: MiddlewareType = serde_json::from_value(json!(canonical)).unwrap();
            assert_eq!(a, c);
            assert!(
                c.names().any(|n| n == alias),
                "{alias} missing from the schema enum"
            );
            assert_eq!(
                typed_rule(a, &valid_example(c)),
                typed_rule(c, &valid_example(c))
            );
        }
    }

    #[test]
    fn typed_rules_carry_goma_defaults() {
        let MiddlewareRule::RateLimit(r) =
            typed_rule(MiddlewareType::RateLimit, &json!({"requestsPerUnit": 5})).unwrap()
        else {
            panic!("not a rate limit");
        };
        assert_eq!(
            (r.unit, r.burst, r.ban_duration.as_str()),
            (RateUnit::Second, 0, "10m")
        );
        assert_eq!(r.key_strategy.source, KeySource::Ip);
        let MiddlewareRule::Basic(b) =
            typed_rule(MiddlewareType::Basic, &json!({"users": ["a:b:c"]})).unwrap()
        else {
            panic!("not basic auth");
        };
        assert_eq!(b.realm, "Restricted");
        assert_eq!(
            b.users,
            [BasicUser {
                username: "a".into(),
                password: "b:c".into()
            }]
        );
        let MiddlewareRule::GeoBlock(g) = typed_rule(
            MiddlewareType::GeoBlock,
            &json!({"action": "DENY", "countries": ["RU"]}),
        )
        .unwrap() else {
            panic!("not geoBlock");
        };
        assert!(g.allow_unknown);
        assert_eq!(
            (g.status_code, g.message.as_str()),
            (403, "Access denied from your region")
        );
    }

    /// The CEL rules and the typed check require the same keys.
    #[test]
    fn cel_required_keys_match_the_typed_check() {
        for ty in MiddlewareType::ALL {
            let required = REQUIRED_KEYS
                .iter()
                .find(|(t, _)| *t == ty)
                .map_or(&[][..], |(_, r)| *r);
            let example = valid_example(ty);
            for need in required {
                let mut rule = example.clone();
                let keys: &[&str] = match need {
                    Required::AnyOf(keys) => keys,
                    Required::Key(k) | Required::List(k) => std::slice::from_ref(k),
                };
                for k in keys {
                    rule.as_object_mut().unwrap().remove(*k);
                }
                let err = typed_rule(ty, &rule).expect_err(&format!("{ty} without {keys:?}"));
                assert_eq!(
                    err.field,
                    format!("spec.rule.{}", need.key()),
                    "{ty}: {err}"
                );
                if let Required::List(k) = need {
                    rule.as_object_mut()
                        .unwrap()
                        .insert((*k).to_owned(), json!([]));
                    let err = typed_rule(ty, &rule).expect_err(&format!("{ty} with empty {k}"));
                    assert_eq!(err.field, format!("spec.rule.{k}"));
                }
            }
            // Types without required keys take an empty rule.
            assert_eq!(
                typed_rule(ty, &json!({})).is_ok(),
                required.is_empty(),
                "{ty}"
            );
        }
    }

    #[test]
    fn cel_rules_cover_every_spelling_of_a_type() {
        let rules = cel_rules();
        let basic = rules
            .iter()
            .find(|r| r["fieldPath"] == ".rule.users")
            .expect("users rule");
        assert_eq!(
            basic["rule"],
            "!(self.type in ['basic', 'basicAuth']) || (has(self.rule) && (has(self.rule.users) || has(self.rule.usersSecret)))"
        );
        assert_eq!(
            basic["message"],
            "required for type basic (or one of usersSecret)"
        );
        let agents = rules
            .iter()
            .find(|r| r["fieldPath"] == ".rule.userAgents")
            .expect("userAgents rule");
        assert_eq!(
            agents["rule"],
            "!(self.type in ['userAgentBlock']) || (has(self.rule) && has(self.rule.userAgents) && size(self.rule.userAgents) > 0)"
        );
        let count: usize = REQUIRED_KEYS.iter().map(|(_, r)| r.len()).sum();
        assert_eq!(rules.len(), count);
    }

    #[test]
    fn rule_keys_shared_by_types_have_one_shape() {
        let mut generator = schemars::generate::SchemaSettings::openapi3()
            .with(|s| s.inline_subschemas = true)
            .into_generator();
        let properties = merge_rule_properties(&rule_schemas(&mut generator))
            .unwrap_or_else(|conflicts| panic!("keys with different shapes: {conflicts:?}"));
        // Tagged with every type that reads them; no per-type default leaks into the union.
        assert!(
            properties["statusCode"]["description"]
                .as_str()
                .unwrap()
                .starts_with("[access, geoBlock]")
        );
        assert!(properties["realm"].get("default").is_none());
        for (key, _) in properties.iter() {
            let owners = rule_schemas(&mut generator)
                .into_iter()
                .filter(|(_, s)| s.get("properties").and_then(|p| p.get(key)).is_some())
                .count();
            assert!(owners > 0, "{key}");
        }
    }

    #[test]
    fn sizes_and_durations() {
        assert_eq!(parse_size("10Mi"), Some(10 << 20));
        assert_eq!(parse_size("1.5kb"), Some(1500));
        assert_eq!(parse_size("1048576"), Some(1 << 20));
        assert_eq!(parse_size("10 Mi"), Some(10 << 20));
        assert_eq!(parse_size("Mi"), None);
        assert_eq!(parse_size("10Tb"), None);
        for ok in ["10m", "1h30m", "300ms", "1.5s", "2h"] {
            assert!(check_duration(ok, "d").is_ok(), "{ok}");
        }
        for bad in ["", "10", "m", "10x", "-1s"] {
            assert!(check_duration(bad, "d").is_err(), "{bad}");
        }
    }
}
