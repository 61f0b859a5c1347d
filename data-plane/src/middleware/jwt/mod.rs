//! jwt (Goma jwtAuth): `Authorization: Bearer` tokens verified against an HMAC secret, a PEM
//! public key, a JWKS (inline, from a file, or fetched from a URL), then their claims.
//!
//! A fetched JWKS belongs to the middleware's state: the first request fetches it (never the
//! compile), it is used for `cache_duration`, refetched when a token names an unknown `kid`
//! (at most every [`MIN_REFETCH`]), and the last good set keeps serving while the IdP is down.
//! Refusals are 401 with `WWW-Authenticate: Bearer` (no token) or `Bearer
//! error="invalid_token"`; 503 when keys were never obtained.

pub mod claims;
pub mod keys;

use super::subrequest::Service;
use super::{CompileEnv, Decision, Middleware, RequestCtx};
use crate::proxy::response::{ProxyBody, full};
use crate::router::route::to_duration;
use arc_swap::ArcSwapOption;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use claims::{Expr, Refusal};
use futures::future::BoxFuture;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Response, StatusCode, header};
use keys::{Alg, AlgSet, Key};
use serde_json::Value;
use sluice_proto::config as pb;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How long fetched keys are used when the message does not say.
const DEFAULT_CACHE_DURATION: Duration = Duration::from_secs(300);
/// Fetches of one JWKS happen at most this often (unknown `kid`, stale keys, failures).
pub const MIN_REFETCH: Duration = Duration::from_secs(5);
/// Largest JWKS file read.
const MAX_JWKS_FILE: u64 = 1 << 20;

#[derive(Debug)]
enum KeySource {
    Static(Vec<Key>),
    Remote {
        service: Service,
        cache_duration: Duration,
        state: Arc<JwksState>,
    },
}

/// A fetched key set.
pub struct Fetched {
    keys: Vec<Key>,
    at: Instant,
}

/// The fetched JWKS of one middleware (id + config), shared by its routes across recompiles.
#[derive(Default)]
pub struct JwksState {
    current: ArcSwapOption<Fetched>,
    last_attempt: Mutex<Option<Instant>>,
    /// Completed fetch attempts (a waiter that sees it move does not fetch again).
    attempts: AtomicU64,
    fetching: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for JwksState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JwksState")
    }
}

impl JwksState {
    fn may_fetch(&self) -> bool {
        let last = self.last_attempt.lock().unwrap_or_else(|p| p.into_inner());
        last.is_none_or(|at| at.elapsed() >= MIN_REFETCH)
    }

    /// Fetches the key set unless another request just did; failures keep the last good set.
    async fn refresh(&self, id: &str, service: &Service, snapshot: &crate::snapshot::Snapshot) {
        let seen = self.attempts.load(Ordering::Acquire);
        let _one_at_a_time = self.fetching.lock().await;
        if self.attempts.load(Ordering::Acquire) != seen || !self.may_fetch() {
            return;
        }
        *self.last_attempt.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
        let mut headers = HeaderMap::new();
        headers.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
        let result = match service
            .call(snapshot, Method::GET, None, headers, Bytes::new())
            .await
        {
            Ok(reply) if reply.status.is_success() => keys::parse_jwks(&reply.body),
            Ok(reply) => Err(format!("{}: status {}", service.url(), reply.status)),
            Err(e) => Err(e),
        };
        match result {
            Ok((keys, skipped)) => {
                if !skipped.is_empty() {
                    tracing::info!(middleware = id, url = %service.url(), ?skipped, "JWKS keys left out");
                }
                tracing::debug!(middleware = id, url = %service.url(), keys = keys.len(), "JWKS fetched");
                self.current.store(Some(Arc::new(Fetched {
                    keys,
                    at: Instant::now(),
                })));
            }
            Err(error) => {
                tracing::warn!(middleware = id, url = %service.url(), %error, "JWKS fetch failed; keeping the last good keys");
            }
        }
        self.attempts.fetch_add(1, Ordering::Release);
    }
}

#[derive(Debug)]
pub struct Jwt {
    id: Arc<str>,
    keys: KeySource,
    algorithms: AlgSet,
    issuer: Option<String>,
    audience: Option<String>,
    claims: Option<Expr>,
    forward_headers: Vec<(HeaderName, String)>,
    forward_authorization: bool,
}

pub fn compile(
    m: &pb::Middleware,
    rule: &pb::JwtAuth,
    env: &mut CompileEnv<'_>,
) -> Result<Box<dyn Middleware>, String> {
    let sources = [
        !rule.hmac_secret.is_empty(),
        !rule.public_key_pem.is_empty(),
        !rule.jwks_json.is_empty(),
        rule.remote_jwks.is_some(),
        !rule.jwks_file.is_empty(),
    ];
    match sources.iter().filter(|s| **s).count() {
        1 => {}
        0 => {
            return Err("jwt: no key (hmac_secret, public_key_pem, jwks_json, remote_jwks or jwks_file required)".into());
        }
        _ => {
            return Err("jwt: more than one of hmac_secret, public_key_pem, jwks_json, remote_jwks, jwks_file".into());
        }
    }
    let keys = if !rule.hmac_secret.is_empty() {
        KeySource::Static(vec![Key::hmac(&rule.hmac_secret)])
    } else if !rule.public_key_pem.is_empty() {
        let key = keys::parse_pem_public_key(&rule.public_key_pem)
            .map_err(|e| format!("jwt.public_key_pem: {e}"))?;
        KeySource::Static(vec![key])
    } else if !rule.jwks_json.is_empty() {
        let (keys, _) = keys::parse_jwks(rule.jwks_json.as_bytes())
            .map_err(|e| format!("jwt.jwks_json: {e}"))?;
        KeySource::Static(keys)
    } else if !rule.jwks_file.is_empty() {
        KeySource::Static(
            read_jwks_file(&rule.jwks_file).map_err(|e| format!("jwt.jwks_file: {e}"))?,
        )
    } else {
        let remote = rule.remote_jwks.as_ref().ok_or("jwt.remote_jwks: unset")?;
        let service = remote
            .service
            .as_ref()
            .ok_or_else(|| "jwt.remote_jwks.service: unset".to_owned())
            .and_then(|s| {
                Service::compile(s).map_err(|e| format!("jwt.remote_jwks.service.{e}"))
            })?;
        let cache_duration = match &remote.cache_duration {
            None => DEFAULT_CACHE_DURATION,
            Some(d) => to_duration(d)
                .map_err(|e| format!("jwt.remote_jwks.cache_duration: {e}"))?
                .max(Duration::from_secs(1)),
        };
        let state = env
            .states
            .get_or_insert(&m.id, &m.state_key, JwksState::default);
        KeySource::Remote {
            service,
            cache_duration,
            state,
        }
    };
    let mut algorithms = AlgSet::default();
    for (i, name) in rule.algorithms.iter().enumerate() {
        algorithms.insert(Alg::parse(name).map_err(|e| format!("jwt.algorithms[{i}]: {e}"))?);
    }
    if let KeySource::Static(keys) = &keys {
        let usable = AlgSet::of_keys(keys);
        if algorithms.is_empty() {
            algorithms = usable;
        } else if !Alg::ALL
            .iter()
            .any(|a| algorithms.contains(*a) && usable.contains(*a))
        {
            return Err(format!(
                "jwt.algorithms: {:?} cannot verify with the configured key",
                rule.algorithms
            ));
        }
    } else if algorithms.is_empty() {
        algorithms = AlgSet::asymmetric();
    }
    let claims = match (&rule.claims, rule.claims_expression.is_empty()) {
        (Some(c), _) => Some(Expr::compile(c).map_err(|e| format!("jwt.{e}"))?),
        (None, true) => None,
        (None, false) => {
            return Err(
                "jwt.claims: claims_expression is set but its parsed form is missing".into(),
            );
        }
    };
    let mut forward_headers = Vec::with_capacity(rule.forward_headers.len());
    for (i, f) in rule.forward_headers.iter().enumerate() {
        let name = HeaderName::try_from(f.header.as_str()).map_err(|_| {
            format!(
                "jwt.forward_headers[{i}].header: {:?} is not a header name",
                f.header
            )
        })?;
        if f.claim.is_empty() {
            return Err(format!("jwt.forward_headers[{i}].claim: empty"));
        }
        forward_headers.push((name, f.claim.clone()));
    }
    let non_empty = |s: &str| (!s.is_empty()).then(|| s.to_owned());
    Ok(Box::new(Jwt {
        id: m.id.as_str().into(),
        keys,
        algorithms,
        issuer: non_empty(&rule.issuer),
        audience: non_empty(&rule.audience),
        claims,
        forward_headers,
        forward_authorization: rule.forward_authorization,
    }))
}

/// A JWKS file of the data plane's host (read when the route compiles; off the request path).
fn read_jwks_file(path: &str) -> Result<Vec<Key>, String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("{path}: {e}"))?;
    if meta.len() > MAX_JWKS_FILE {
        return Err(format!("{path}: larger than {MAX_JWKS_FILE} bytes"));
    }
    let bytes = std::fs::read(path).map_err(|e| format!("{path}: {e}"))?;
    keys::parse_jwks(&bytes)
        .map(|(keys, _)| keys)
        .map_err(|e| format!("{path}: {e}"))
}

/// What checking a request's token found.
#[derive(Debug)]
enum Outcome {
    Valid(Value),
    Missing,
    /// The token names a `kid` no key has.
    UnknownKey,
    Invalid(&'static str),
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// The token of an `Authorization: Bearer` header.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let scheme = v.get(..7)?;
    scheme
        .eq_ignore_ascii_case("bearer ")
        .then(|| v[7..].trim())
        .filter(|t| !t.is_empty())
}

fn decode_json(part: &str) -> Option<Value> {
    let bytes = URL_SAFE_NO_PAD.decode(part).ok()?;
    serde_json::from_slice(&bytes).ok()
}

impl Jwt {
    fn check(&self, headers: &HeaderMap, keys: &[Key]) -> Outcome {
        let Some(token) = bearer(headers) else {
            return Outcome::Missing;
        };
        let mut parts = token.split('.');
        let (Some(h), Some(p), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Outcome::Invalid("not a JWS compact token");
        };
        let Some(head) = decode_json(h).filter(Value::is_object) else {
            return Outcome::Invalid("header is not base64url JSON");
        };
        if head.get("crit").is_some() {
            return Outcome::Invalid("critical header extensions are not supported");
        }
        let Some(Ok(alg)) = head.get("alg").and_then(Value::as_str).map(Alg::parse) else {
            return Outcome::Invalid("unsupported or missing alg");
        };
        if !self.algorithms.contains(alg) {
            return Outcome::Invalid("algorithm not accepted");
        }
        let Ok(signature) = URL_SAFE_NO_PAD.decode(s) else {
            return Outcome::Invalid("signature is not base64url");
        };
        let kid = head.get("kid").and_then(Value::as_str);
        let message = &token.as_bytes()[..h.len() + 1 + p.len()];
        let mut candidates = keys
            .iter()
            .filter(|k| {
                k.verifies(alg) && (kid.is_none() || k.kid.is_none() || k.kid.as_deref() == kid)
            })
            .peekable();
        if candidates.peek().is_none() {
            return if kid.is_some() {
                Outcome::UnknownKey
            } else {
                Outcome::Invalid("no key for the algorithm")
            };
        }
        if !candidates.any(|k| k.verify(alg, message, &signature)) {
            return Outcome::Invalid("bad signature");
        }
        let Some(claims) = decode_json(p).filter(Value::is_object) else {
            return Outcome::Invalid("payload is not a JSON object");
        };
        match claims::check_registered(
            &claims,
            now_secs(),
            self.issuer.as_deref(),
            self.audience.as_deref(),
        ) {
            Ok(()) => {}
            Err(Refusal::Expired) => return Outcome::Invalid("expired"),
            Err(Refusal::NotYetValid) => return Outcome::Invalid("not yet valid"),
            Err(Refusal::Issuer) => return Outcome::Invalid("issuer"),
            Err(Refusal::Audience) => return Outcome::Invalid("audience"),
            Err(Refusal::Expression) => return Outcome::Invalid("claims"),
            Err(Refusal::Malformed(_)) => return Outcome::Invalid("malformed time claim"),
        }
        if let Some(expr) = &self.claims
            && !expr.eval(&claims)
        {
            return Outcome::Invalid("claims expression");
        }
        Outcome::Valid(claims)
    }

    fn finish(&self, ctx: &mut RequestCtx<'_>, outcome: Outcome) -> Decision {
        let claims = match outcome {
            Outcome::Valid(claims) => claims,
            Outcome::Missing => return refuse(HeaderValue::from_static("Bearer")),
            Outcome::UnknownKey => return self.invalid("unknown kid"),
            Outcome::Invalid(reason) => return self.invalid(reason),
        };
        let headers = &mut ctx.parts.headers;
        for (name, path) in &self.forward_headers {
            // The client's own value never reaches the upstream.
            headers.remove(name);
            if let Some(value) = claims::lookup(&claims, path)
                .and_then(claims::header_text)
                .and_then(|t| HeaderValue::try_from(t).ok())
            {
                headers.insert(name.clone(), value);
            }
        }
        if !self.forward_authorization {
            headers.remove(header::AUTHORIZATION);
        }
        Decision::Continue
    }

    fn invalid(&self, reason: &'static str) -> Decision {
        tracing::debug!(middleware = %self.id, reason, "jwt refused");
        refuse(HeaderValue::from_static("Bearer error=\"invalid_token\""))
    }
}

fn refuse(challenge: HeaderValue) -> Decision {
    let mut resp = Response::new(full(Bytes::from_static(b"unauthorized\n")));
    *resp.status_mut() = StatusCode::UNAUTHORIZED;
    resp.headers_mut()
        .insert(header::WWW_AUTHENTICATE, challenge);
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    Decision::Respond(resp)
}

fn keys_unavailable() -> Decision {
    let mut resp: Response<ProxyBody> = Response::new(full(Bytes::from_static(
        b"authentication keys unavailable\n",
    )));
    *resp.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    Decision::Respond(resp)
}

impl Middleware for Jwt {
    fn decide(&self, ctx: &mut RequestCtx<'_>) -> Decision {
        match &self.keys {
            KeySource::Static(keys) => {
                let outcome = self.check(&ctx.parts.headers, keys);
                self.finish(ctx, outcome)
            }
            KeySource::Remote {
                cache_duration,
                state,
                ..
            } => {
                // No token: refused without touching the IdP.
                if bearer(&ctx.parts.headers).is_none() {
                    return self.finish(ctx, Outcome::Missing);
                }
                let Some(fetched) = state.current.load_full() else {
                    return Decision::Async;
                };
                if fetched.at.elapsed() >= *cache_duration && state.may_fetch() {
                    return Decision::Async;
                }
                match self.check(&ctx.parts.headers, &fetched.keys) {
                    Outcome::UnknownKey if state.may_fetch() => Decision::Async,
                    outcome => self.finish(ctx, outcome),
                }
            }
        }
    }

    fn decide_async<'a>(&'a self, ctx: &'a mut RequestCtx<'_>) -> BoxFuture<'a, Decision> {
        Box::pin(async move {
            let KeySource::Remote { service, state, .. } = &self.keys else {
                return self.decide(ctx);
            };
            state.refresh(&self.id, service, ctx.snapshot).await;
            let Some(fetched) = state.current.load_full() else {
                return keys_unavailable();
            };
            let outcome = self.check(&ctx.parts.headers, &fetched.keys);
            self.finish(ctx, outcome)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::middleware::state::States;
    use std::collections::BTreeMap;

    fn compile_rule(rule: pb::JwtAuth) -> Result<Box<dyn Middleware>, String> {
        let mut states = States::default();
        let secrets = BTreeMap::new();
        let mut env = CompileEnv::new(&mut states, &secrets, None, None);
        let m = pb::Middleware {
            id: "Middleware default/jwt".into(),
            state_key: "k".into(),
            ..Default::default()
        };
        compile(&m, &rule, &mut env)
    }

    #[test]
    fn compile_refuses_ambiguous_or_unenforceable_rules() {
        let hs = || pb::JwtAuth {
            hmac_secret: b"s".to_vec(),
            ..Default::default()
        };
        assert!(compile_rule(hs()).is_ok());
        let err = |rule| compile_rule(rule).unwrap_err();
        assert!(err(pb::JwtAuth::default()).contains("no key"));
        assert!(
            err(pb::JwtAuth {
                jwks_file: "/x".into(),
                ..hs()
            })
            .contains("more than one")
        );
        assert!(
            err(pb::JwtAuth {
                algorithms: vec!["ES512".into()],
                ..hs()
            })
            .starts_with("jwt.algorithms[0]: ES512")
        );
        assert!(
            err(pb::JwtAuth {
                algorithms: vec!["RS256".into()],
                ..hs()
            })
            .contains("cannot verify with the configured key")
        );
        // A claims expression the control plane did not parse is never skipped.
        assert!(
            err(pb::JwtAuth {
                claims_expression: "Equals(`a`, `b`)".into(),
                ..hs()
            })
            .starts_with("jwt.claims")
        );
        assert!(
            err(pb::JwtAuth {
                jwks_file: "/nonexistent/jwks.json".into(),
                ..Default::default()
            })
            .starts_with("jwt.jwks_file: /nonexistent/jwks.json")
        );
    }

    #[test]
    fn bearer_tokens_only() {
        let mut h = HeaderMap::new();
        assert_eq!(bearer(&h), None);
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("bearer  a.b.c "),
        );
        assert_eq!(bearer(&h), Some("a.b.c"));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Basic a.b.c"),
        );
        assert_eq!(bearer(&h), None);
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer "));
        assert_eq!(bearer(&h), None);
    }
}
