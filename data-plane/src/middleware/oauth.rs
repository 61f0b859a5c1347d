//! `oauth` (alias `oauth2`): an OAuth2 / OIDC authorization-code login in front of a route.
//!
//! * A request with a valid session cookie (`goma_access_token`) passes; the check is
//!   synchronous (an HMAC over the cookie) and contacts nobody.
//! * Any other GET/HEAD is redirected (302) to the provider's authorization URL with
//!   `client_id`, `redirect_uri`, `response_type=code`, `scope` and a random `state`; the state
//!   and the original path go into a signed cookie (`goma_oauth_state`, 10 minutes, Path = the
//!   callback path). Other methods get 401: a redirect would lose their body.
//! * The callback (the path of `redirectUrl`) checks the state against that cookie, exchanges
//!   the code at the token endpoint (POST form, client_secret_post) and, when a user-info
//!   endpoint is configured, asks it with the access token (a token the provider does not
//!   accept there logs nobody in). It then sets the session cookie and redirects back.
//!
//! Cookies are `payload.mac`, the MAC an HMAC-SHA256 keyed from the middleware's identity and
//! client credentials: a client cannot forge or extend one, every replica with the same
//! configuration accepts the others', and changing the client secret logs everyone out. The
//! session lasts the token's `expires_in` (1 hour when absent, at most 24 hours); the
//! provider's access token itself never reaches the browser.

use super::subrequest::Service;
use super::{Decision, Middleware, RequestCtx};
use crate::proxy::response::{self, ProxyBody};
use crate::snapshot::Snapshot;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use futures::future::BoxFuture;
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode, header};
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};
use sluice_proto::config as pb;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

pub const SESSION_COOKIE: &str = "goma_access_token";
pub const STATE_COOKIE: &str = "goma_oauth_state";
const STATE_LIFETIME_SECS: u64 = 600;
const DEFAULT_SESSION_SECS: u64 = 3600;
const MAX_SESSION_SECS: u64 = 24 * 3600;

pub struct OAuth {
    id: Arc<str>,
    client_id: Box<str>,
    client_secret: Box<str>,
    auth_url: Box<str>,
    token: Service,
    user_info: Option<Service>,
    redirect_url: Box<str>,
    callback_path: Box<str>,
    /// Space-separated, as the `scope` parameter wants.
    scopes: Box<str>,
    redirect_path: Option<Box<str>>,
    cookie_path: Box<str>,
    key: hmac::Key,
}

impl std::fmt::Debug for OAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OAuth")
            .field("id", &self.id)
            .field("client_id", &self.client_id)
            .field("auth_url", &self.auth_url)
            .field("callback_path", &self.callback_path)
            .finish_non_exhaustive()
    }
}

pub fn compile(m: &pb::Middleware, o: &pb::OAuth) -> Result<Box<dyn Middleware>, String> {
    for (field, value) in [
        ("client_id", &o.client_id),
        ("client_secret", &o.client_secret),
        ("auth_url", &o.auth_url),
        ("redirect_url", &o.redirect_url),
    ] {
        if value.is_empty() {
            return Err(format!("oauth.{field}: empty"));
        }
    }
    if o.jwks.is_some() {
        return Err("oauth.jwks: verifying tokens against a JWKS is not supported".into());
    }
    let auth_url = http::Uri::try_from(o.auth_url.as_str())
        .ok()
        .filter(|u| matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some())
        .ok_or_else(|| {
            format!(
                "oauth.auth_url: {:?} is not an absolute http(s) URL",
                o.auth_url
            )
        })?;
    let redirect = http::Uri::try_from(o.redirect_url.as_str())
        .ok()
        .filter(|u| matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some())
        .ok_or_else(|| {
            format!(
                "oauth.redirect_url: {:?} is not an absolute http(s) URL",
                o.redirect_url
            )
        })?;
    let token = o
        .token
        .as_ref()
        .ok_or_else(|| "oauth.token: not set".to_owned())
        .and_then(|s| Service::compile(s).map_err(|e| format!("oauth.token.{e}")))?;
    let user_info = o
        .user_info
        .as_ref()
        .map(|s| Service::compile(s).map_err(|e| format!("oauth.user_info.{e}")))
        .transpose()?;
    for (field, value) in [
        ("redirect_path", &o.redirect_path),
        ("cookie_path", &o.cookie_path),
    ] {
        if !value.is_empty() && (!value.starts_with('/') || HeaderValue::from_str(value).is_err()) {
            return Err(format!("oauth.{field}: {value:?} is not a path"));
        }
    }
    if o.scopes.iter().any(|s| s.is_empty() || s.contains(' ')) {
        return Err("oauth.scopes: a scope is empty or contains a space".into());
    }
    // Keyed by what the cookies must not outlive: identity and client credentials.
    let secret = ring::digest::digest(
        &ring::digest::SHA256,
        format!(
            "sluice oauth cookies v1\0{}\0{}\0{}",
            m.id, o.client_id, o.client_secret
        )
        .as_bytes(),
    );
    Ok(Box::new(OAuth {
        id: m.id.as_str().into(),
        client_id: o.client_id.as_str().into(),
        client_secret: o.client_secret.as_str().into(),
        auth_url: auth_url.to_string().into(),
        token,
        user_info,
        redirect_url: o.redirect_url.as_str().into(),
        callback_path: redirect.path().into(),
        scopes: o.scopes.join(" ").into(),
        redirect_path: (!o.redirect_path.is_empty()).then(|| o.redirect_path.as_str().into()),
        cookie_path: if o.cookie_path.is_empty() {
            "/".into()
        } else {
            o.cookie_path.as_str().into()
        },
        key: hmac::Key::new(hmac::HMAC_SHA256, secret.as_ref()),
    }))
}

impl Middleware for OAuth {
    fn decide(&self, ctx: &mut RequestCtx<'_>) -> Decision {
        if ctx.client_uri.path() == &*self.callback_path {
            return Decision::Async;
        }
        let now = unix_now();
        let session = cookie(&ctx.parts.headers, SESSION_COOKIE)
            .and_then(|c| open(&self.key, b's', c))
            .and_then(|payload| Session::parse(&payload));
        if session.is_some_and(|s| s.expires > now) {
            return Decision::Continue;
        }
        Decision::Respond(self.login(ctx, now))
    }

    fn decide_async<'a>(&'a self, ctx: &'a mut RequestCtx<'_>) -> BoxFuture<'a, Decision> {
        Box::pin(async move { Decision::Respond(self.callback(ctx).await) })
    }
}

/// What the session cookie holds.
struct Session {
    expires: u64,
}

impl Session {
    fn parse(payload: &[u8]) -> Option<Session> {
        let text = std::str::from_utf8(payload).ok()?;
        let expires = text.split('\n').next()?.parse().ok()?;
        Some(Session { expires })
    }
}

impl OAuth {
    /// The redirect to the provider (GET/HEAD) or 401.
    fn login(&self, ctx: &RequestCtx<'_>, now: u64) -> Response<ProxyBody> {
        if !matches!(ctx.parts.method, Method::GET | Method::HEAD) {
            return response::text(StatusCode::UNAUTHORIZED, "login required\n");
        }
        let mut nonce = [0u8; 18];
        if SystemRandom::new().fill(&mut nonce).is_err() {
            tracing::error!(middleware = %self.id, "no randomness for an OAuth state");
            return response::text(StatusCode::INTERNAL_SERVER_ERROR, "login unavailable\n");
        }
        let state = URL_SAFE_NO_PAD.encode(nonce);
        let back = ctx.client_uri.path_and_query().map_or("/", |p| p.as_str());
        let payload = format!("{}\n{state}\n{back}", now + STATE_LIFETIME_SECS);
        let state_cookie = self.cookie(
            ctx,
            STATE_COOKIE,
            &seal(&self.key, b't', payload.as_bytes()),
            &self.callback_path,
            STATE_LIFETIME_SECS,
        );
        let mut query = form_urlencoded::Serializer::new(String::new());
        query
            .append_pair("client_id", &self.client_id)
            .append_pair("redirect_uri", &self.redirect_url)
            .append_pair("response_type", "code")
            .append_pair("state", &state);
        if !self.scopes.is_empty() {
            query.append_pair("scope", &self.scopes);
        }
        let separator = if self.auth_url.contains('?') {
            '&'
        } else {
            '?'
        };
        let location = format!("{}{separator}{}", self.auth_url, query.finish());
        self.redirect(&location, [state_cookie])
    }

    async fn callback(&self, ctx: &mut RequestCtx<'_>) -> Response<ProxyBody> {
        let (mut code, mut state, mut error) = (None, None, None);
        for (k, v) in form_urlencoded::parse(ctx.client_uri.query().unwrap_or("").as_bytes()) {
            match &*k {
                "code" => code = Some(v.into_owned()),
                "state" => state = Some(v.into_owned()),
                "error" => error = Some(v.into_owned()),
                _ => {}
            }
        }
        if let Some(error) = error {
            tracing::info!(middleware = %self.id, %error, "the provider refused the login");
            return response::text(StatusCode::UNAUTHORIZED, "login refused by the provider\n");
        }
        let now = unix_now();
        let remembered = cookie(&ctx.parts.headers, STATE_COOKIE)
            .and_then(|c| open(&self.key, b't', c))
            .and_then(|p| String::from_utf8(p).ok());
        let back = remembered.as_deref().and_then(|p| {
            let mut parts = p.splitn(3, '\n');
            let expires: u64 = parts.next()?.parse().ok()?;
            let nonce = parts.next()?;
            let back = parts.next()?;
            (expires > now && Some(nonce) == state.as_deref()).then(|| back.to_owned())
        });
        let (Some(back), Some(code)) = (back, code) else {
            return response::text(
                StatusCode::BAD_REQUEST,
                "invalid or expired login state; start again\n",
            );
        };
        let lifetime = match self.exchange(ctx.snapshot, &code).await {
            Ok(lifetime) => lifetime,
            Err(error) => {
                tracing::warn!(middleware = %self.id, %error, "OAuth login failed");
                return response::text(StatusCode::BAD_GATEWAY, "login failed\n");
            }
        };
        let session = format!("{}\n", now + lifetime);
        let session_cookie = self.cookie(
            ctx,
            SESSION_COOKIE,
            &seal(&self.key, b's', session.as_bytes()),
            &self.cookie_path,
            lifetime,
        );
        let clear_state = self.cookie(ctx, STATE_COOKIE, "", &self.callback_path, 0);
        let target = if back == *self.callback_path
            || back.starts_with(&format!("{}?", self.callback_path))
        {
            self.redirect_path
                .as_deref()
                .unwrap_or(&self.cookie_path)
                .to_owned()
        } else {
            back
        };
        self.redirect(&target, [session_cookie, clear_state])
    }

    /// Exchanges the code for a token (and checks it at the user-info endpoint); the session
    /// lifetime in seconds.
    async fn exchange(&self, snapshot: &Snapshot, code: &str) -> Result<u64, String> {
        let form = form_urlencoded::Serializer::new(String::new())
            .append_pair("grant_type", "authorization_code")
            .append_pair("code", code)
            .append_pair("redirect_uri", &self.redirect_url)
            .append_pair("client_id", &self.client_id)
            .append_pair("client_secret", &self.client_secret)
            .finish();
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-www-form-urlencoded"),
        );
        headers.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
        let reply = self
            .token
            .call(snapshot, Method::POST, None, headers, Bytes::from(form))
            .await?;
        if !reply.status.is_success() {
            return Err(format!("token endpoint answered {}", reply.status));
        }
        let body: serde_json::Value = serde_json::from_slice(&reply.body)
            .map_err(|e| format!("token endpoint answer is not JSON: {e}"))?;
        let token = body
            .get("access_token")
            .and_then(|t| t.as_str())
            .filter(|t| !t.is_empty())
            .ok_or("token endpoint answer has no access_token")?;
        let lifetime = body
            .get("expires_in")
            .and_then(|e| e.as_u64().or_else(|| e.as_str()?.parse().ok()))
            .filter(|e| *e > 0)
            .unwrap_or(DEFAULT_SESSION_SECS)
            .min(MAX_SESSION_SECS);
        if let Some(user_info) = &self.user_info {
            let mut headers = HeaderMap::new();
            let bearer = HeaderValue::from_str(&format!("Bearer {token}"))
                .map_err(|_| "the access token is not a valid header value")?;
            headers.insert(header::AUTHORIZATION, bearer);
            headers.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
            let reply = user_info
                .call(snapshot, Method::GET, None, headers, Bytes::new())
                .await?;
            if !reply.status.is_success() {
                return Err(format!("user-info endpoint answered {}", reply.status));
            }
        }
        Ok(lifetime)
    }

    fn cookie(
        &self,
        ctx: &RequestCtx<'_>,
        name: &str,
        value: &str,
        path: &str,
        max_age: u64,
    ) -> String {
        let secure = if ctx.scheme == "https" {
            "; Secure"
        } else {
            ""
        };
        format!("{name}={value}; Path={path}; Max-Age={max_age}; HttpOnly; SameSite=Lax{secure}")
    }

    fn redirect<const N: usize>(
        &self,
        location: &str,
        cookies: [String; N],
    ) -> Response<ProxyBody> {
        let Ok(location) = HeaderValue::from_str(location) else {
            return response::text(StatusCode::INTERNAL_SERVER_ERROR, "invalid redirect\n");
        };
        let mut resp = response::redirect(StatusCode::FOUND, location);
        for c in cookies {
            if let Ok(v) = HeaderValue::from_str(&c) {
                resp.headers_mut().append(header::SET_COOKIE, v);
            }
        }
        resp.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        resp
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `b64(payload).b64(mac)`, the MAC covering a one-byte purpose tag and the payload.
fn seal(key: &hmac::Key, purpose: u8, payload: &[u8]) -> String {
    let mut ctx = hmac::Context::with_key(key);
    ctx.update(&[purpose]);
    ctx.update(payload);
    let tag = ctx.sign();
    format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(payload),
        URL_SAFE_NO_PAD.encode(tag.as_ref())
    )
}

/// The payload of a cookie made by [`seal`] with the same key and purpose.
fn open(key: &hmac::Key, purpose: u8, value: &str) -> Option<Vec<u8>> {
    let (payload, mac) = value.split_once('.')?;
    let payload = URL_SAFE_NO_PAD.decode(payload).ok()?;
    let mac = URL_SAFE_NO_PAD.decode(mac).ok()?;
    let mut signed = Vec::with_capacity(payload.len() + 1);
    signed.push(purpose);
    signed.extend_from_slice(&payload);
    hmac::verify(key, &signed, &mac).ok()?;
    Some(payload)
}

/// The value of cookie `name` in the request's Cookie headers.
fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (k, v) = pair.trim().split_once('=')?;
            (k == name).then_some(v)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_only_with_the_same_key_and_purpose() {
        let key = hmac::Key::new(hmac::HMAC_SHA256, b"k1");
        let other = hmac::Key::new(hmac::HMAC_SHA256, b"k2");
        let sealed = seal(&key, b's', b"123\n");
        assert_eq!(open(&key, b's', &sealed).as_deref(), Some(&b"123\n"[..]));
        assert_eq!(open(&other, b's', &sealed), None);
        assert_eq!(open(&key, b't', &sealed), None);
        // Tampering with the payload (a later expiry) breaks the MAC.
        let (_, mac) = sealed.split_once('.').unwrap();
        let forged = format!("{}.{mac}", URL_SAFE_NO_PAD.encode(b"999999999999\n"));
        assert_eq!(open(&key, b's', &forged), None);
        assert_eq!(open(&key, b's', "garbage"), None);
    }

    #[test]
    fn cookies_are_found_among_several_headers() {
        let mut headers = HeaderMap::new();
        headers.append(
            header::COOKIE,
            HeaderValue::from_static("a=1; goma_access_token=xyz"),
        );
        headers.append(header::COOKIE, HeaderValue::from_static("b=2"));
        assert_eq!(cookie(&headers, SESSION_COOKIE), Some("xyz"));
        assert_eq!(cookie(&headers, "b"), Some("2"));
        assert_eq!(cookie(&headers, "c"), None);
    }

    #[test]
    fn session_payload() {
        assert_eq!(Session::parse(b"42\n").map(|s| s.expires), Some(42));
        assert!(Session::parse(b"x\n").is_none());
    }
}
