//! basicAuth: `Authorization: Basic` checked against users given inline and from a Secret.
//!
//! Fast formats (plain, {SHA}, md5-crypt) are checked inline. bcrypt runs on a blocking thread,
//! a few at a time, and its successes are cached (bounded, keyed by a SHA-256 of user, stored
//! hash and presented password, never the password itself) so a client sending the same
//! credentials does not pay it per request. Failures are never cached as successes.
//!
//! The Authorization header is removed from the forwarded request unless
//! `forward_authorization` is set (the gateway consumed the credentials; Goma forwards them).

use super::password_hash::{StoredPassword, sha256};
use super::{CompileEnv, Decision, Middleware, RequestCtx};
use crate::proxy::response::full;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use futures::future::BoxFuture;
use http::{HeaderName, HeaderValue, Response, StatusCode, header};
use sluice_proto::config as pb;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// Cached bcrypt successes per middleware, and how long one stays valid.
const CACHE_CAPACITY: usize = 4096;
const CACHE_TTL: Duration = Duration::from_secs(300);
/// bcrypt checks running at once per middleware (each holds a blocking thread ~50-100 ms).
const CONCURRENT_SLOW_CHECKS: usize = 4;
/// Longest decoded `user:password` accepted (decoded on the stack).
const MAX_CREDENTIALS: usize = 1024;

#[derive(Debug)]
struct User {
    password: StoredPassword,
    /// The name as a header value, when it is forwarded.
    header_value: Option<HeaderValue>,
}

/// State that survives recompiles: the cache of bcrypt successes and the bcrypt limiter.
pub struct SlowCheckState {
    verified: Mutex<HashMap<[u8; 32], Instant>>,
    permits: Semaphore,
}

impl SlowCheckState {
    fn new() -> Self {
        SlowCheckState {
            verified: Mutex::new(HashMap::new()),
            permits: Semaphore::new(CONCURRENT_SLOW_CHECKS),
        }
    }

    fn is_verified(&self, key: &[u8; 32]) -> bool {
        let map = self.verified.lock().unwrap_or_else(|p| p.into_inner());
        map.get(key).is_some_and(|at| at.elapsed() < CACHE_TTL)
    }

    fn remember(&self, key: [u8; 32]) {
        let mut map = self.verified.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= CACHE_CAPACITY {
            map.retain(|_, at| at.elapsed() < CACHE_TTL);
            if map.len() >= CACHE_CAPACITY {
                // Still full of live entries: drop one (any) rather than grow.
                if let Some(k) = map.keys().next().copied() {
                    map.remove(&k);
                }
            }
        }
        map.insert(key, Instant::now());
    }
}

#[derive(Debug)]
pub struct BasicAuth {
    users: HashMap<Box<str>, User>,
    challenge: HeaderValue,
    username_header: Option<HeaderName>,
    forward_authorization: bool,
    slow: Arc<SlowCheckState>,
    /// A slow (bcrypt) hash an unknown user name is checked against, so that refusing an
    /// unknown name costs what refusing a wrong password does (no user enumeration by timing).
    decoy: Option<StoredPassword>,
}

impl std::fmt::Debug for SlowCheckState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SlowCheckState")
    }
}

pub fn compile(
    m: &pb::Middleware,
    rule: &pb::BasicAuth,
    env: &mut CompileEnv<'_>,
) -> Result<Box<dyn Middleware>, String> {
    let username_header = match rule.username_header.as_str() {
        "" => None,
        h => Some(
            HeaderName::try_from(h)
                .map_err(|_| format!("basic_auth.username_header: {h:?} is not a header name"))?,
        ),
    };
    let realm = if rule.realm.is_empty() {
        "Restricted"
    } else {
        &rule.realm
    };
    if realm.contains(['"', '\\']) {
        return Err(format!(
            "basic_auth.realm: {realm:?} must not contain quotes or backslashes"
        ));
    }
    let challenge = HeaderValue::try_from(format!("Basic realm=\"{realm}\""))
        .map_err(|_| format!("basic_auth.realm: {realm:?} is not valid in a header"))?;

    let mut entries: Vec<(String, String, String)> = Vec::new();
    for (i, u) in rule.users.iter().enumerate() {
        entries.push((
            u.username.clone(),
            u.password.clone(),
            format!("basic_auth.users[{i}]"),
        ));
    }
    if !rule.users_secret.is_empty() {
        let name = &rule.users_secret;
        let secret = env
            .secret(name)
            .map_err(|e| format!("basic_auth.users_secret: {e}"))?;
        let at = |e: String| format!("basic_auth.users_secret: secret {name:?}: {e}");
        entries.extend(secret_users(secret).map_err(at)?);
    }
    if entries.is_empty() {
        return Err("basic_auth.users: no users (inline or from users_secret)".into());
    }
    let mut users = HashMap::with_capacity(entries.len());
    for (username, password, field) in entries {
        if username.is_empty() || username.contains(':') {
            return Err(format!(
                "{field}.username: {username:?} must be non-empty without \":\""
            ));
        }
        let password =
            StoredPassword::parse(&password).map_err(|e| format!("{field}.password: {e}"))?;
        let header_value = match &username_header {
            None => None,
            Some(_) => Some(HeaderValue::try_from(username.as_str()).map_err(|_| {
                format!("{field}.username: {username:?} cannot be sent in a header")
            })?),
        };
        if users
            .insert(
                username.clone().into_boxed_str(),
                User {
                    password,
                    header_value,
                },
            )
            .is_some()
        {
            return Err(format!(
                "{field}.username: user {username:?} is given twice"
            ));
        }
    }
    let slow = env
        .states
        .get_or_insert(&m.id, &m.state_key, SlowCheckState::new);
    let decoy = users
        .values()
        .map(|u| &u.password)
        .find(|p| p.is_slow())
        .cloned();
    Ok(Box::new(BasicAuth {
        users,
        challenge,
        username_header,
        forward_authorization: rule.forward_authorization,
        slow,
        decoy,
    }))
}

/// Users of an Opaque Secret: key `users` (htpasswd lines), or `username` + `password`.
fn secret_users(secret: &pb::Secret) -> Result<Vec<(String, String, String)>, String> {
    let Some(pb::secret::Kind::Opaque(opaque)) = &secret.kind else {
        return Err("not an Opaque Secret".into());
    };
    let text = |key: &str| -> Result<Option<&str>, String> {
        opaque
            .data
            .get(key)
            .map(|v| std::str::from_utf8(v).map_err(|_| format!("key {key:?} is not UTF-8")))
            .transpose()
    };
    if let Some(lines) = text("users")? {
        let mut out = Vec::new();
        for (n, line) in lines.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (user, hash) = line
                .split_once(':')
                .ok_or_else(|| format!("key \"users\" line {}: expected \"name:hash\"", n + 1))?;
            out.push((
                user.to_owned(),
                hash.to_owned(),
                format!("users_secret[users line {}]", n + 1),
            ));
        }
        return Ok(out);
    }
    match (text("username")?, text("password")?) {
        (Some(u), Some(p)) => Ok(vec![(
            u.to_owned(),
            p.to_owned(),
            "users_secret".to_owned(),
        )]),
        _ => Err("has neither key \"users\" nor keys \"username\" and \"password\"".into()),
    }
}

/// `user:password` of an `Authorization: Basic` header, decoded into `buf`.
fn credentials<'b>(value: &HeaderValue, buf: &'b mut [u8]) -> Option<(&'b str, &'b [u8])> {
    let v = value.as_bytes();
    let scheme = v.get(..6)?;
    if !scheme.eq_ignore_ascii_case(b"basic ") {
        return None;
    }
    let encoded = v[6..].trim_ascii();
    let n = STANDARD.decode_slice(encoded, buf).ok()?;
    let decoded = &buf[..n];
    let colon = decoded.iter().position(|&b| b == b':')?;
    let user = std::str::from_utf8(&decoded[..colon]).ok()?;
    Some((user, &decoded[colon + 1..]))
}

/// The cache key of a bcrypt success.
fn cache_key(user: &str, stored: &StoredPassword, password: &[u8]) -> [u8; 32] {
    let mut material = Vec::with_capacity(user.len() + 34 + password.len());
    material.extend_from_slice(user.as_bytes());
    material.push(0);
    material.extend_from_slice(&stored.fingerprint());
    material.push(0);
    material.extend_from_slice(password);
    sha256(&material)
}

enum Check {
    Allowed,
    Refused,
    /// bcrypt not in the cache.
    Slow,
}

impl BasicAuth {
    fn check(&self, ctx: &RequestCtx<'_>) -> (Check, Option<&User>) {
        let mut buf = [0u8; MAX_CREDENTIALS];
        let Some(value) = ctx.parts.headers.get(header::AUTHORIZATION) else {
            return (Check::Refused, None);
        };
        let Some((name, password)) = credentials(value, &mut buf) else {
            return (Check::Refused, None);
        };
        let Some(user) = self.users.get(name) else {
            let check = if self.decoy.is_some() {
                Check::Slow
            } else {
                Check::Refused
            };
            return (check, None);
        };
        if user.password.is_slow() {
            if self
                .slow
                .is_verified(&cache_key(name, &user.password, password))
            {
                return (Check::Allowed, Some(user));
            }
            return (Check::Slow, Some(user));
        }
        if user.password.verify(password) {
            (Check::Allowed, Some(user))
        } else {
            (Check::Refused, None)
        }
    }

    fn allow(&self, ctx: &mut RequestCtx<'_>, user: &User) -> Decision {
        if let (Some(h), Some(v)) = (&self.username_header, &user.header_value) {
            ctx.parts.headers.insert(h.clone(), v.clone());
        }
        if !self.forward_authorization {
            ctx.parts.headers.remove(header::AUTHORIZATION);
        }
        Decision::Continue
    }

    fn refuse(&self) -> Decision {
        let mut resp = Response::new(full(Bytes::from_static(b"unauthorized\n")));
        *resp.status_mut() = StatusCode::UNAUTHORIZED;
        let h = resp.headers_mut();
        h.insert(header::WWW_AUTHENTICATE, self.challenge.clone());
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        Decision::Respond(resp)
    }

    /// A bcrypt check on a blocking thread; a success is cached.
    async fn check_slow(&self, headers: &http::HeaderMap) -> bool {
        let mut buf = [0u8; MAX_CREDENTIALS];
        let Some(value) = headers.get(header::AUTHORIZATION) else {
            return false;
        };
        let Some((name, password)) = credentials(value, &mut buf) else {
            return false;
        };
        let Some(user) = self.users.get(name) else {
            // Unknown name: spend a bcrypt check anyway, then refuse.
            if let (Some(decoy), Ok(_permit)) = (&self.decoy, self.slow.permits.acquire().await) {
                let decoy = decoy.clone();
                let password = password.to_vec();
                let _ = tokio::task::spawn_blocking(move || decoy.verify(&password)).await;
            }
            return false;
        };
        let key = cache_key(name, &user.password, password);
        let Ok(_permit) = self.slow.permits.acquire().await else {
            return false;
        };
        // Another request may have verified the same credentials while this one waited.
        if self.slow.is_verified(&key) {
            return true;
        }
        let stored = user.password.clone();
        let password = password.to_vec();
        let ok = tokio::task::spawn_blocking(move || stored.verify(&password))
            .await
            .unwrap_or(false);
        if ok {
            self.slow.remember(key);
        }
        ok
    }
}

impl Middleware for BasicAuth {
    fn decide(&self, ctx: &mut RequestCtx<'_>) -> Decision {
        match self.check(ctx) {
            (Check::Allowed, Some(user)) => self.allow(ctx, user),
            (Check::Slow, _) => Decision::Async,
            _ => self.refuse(),
        }
    }

    fn decide_async<'a>(&'a self, ctx: &'a mut RequestCtx<'_>) -> BoxFuture<'a, Decision> {
        Box::pin(async move {
            if !self.check_slow(&ctx.parts.headers).await {
                return self.refuse();
            }
            // Verified: find the user again for the forwarded name.
            let mut buf = [0u8; MAX_CREDENTIALS];
            let user = ctx
                .parts
                .headers
                .get(header::AUTHORIZATION)
                .and_then(|v| credentials(v, &mut buf))
                .and_then(|(name, _)| self.users.get(name));
            match user {
                Some(user) => self.allow(ctx, user),
                None => self.refuse(),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compile_rule(
        rule: pb::BasicAuth,
        secrets: &std::collections::BTreeMap<String, Arc<pb::Secret>>,
    ) -> Result<Box<dyn Middleware>, String> {
        let mut states = crate::middleware::state::States::default();
        let mut env = CompileEnv::new(&mut states, secrets, None, None);
        let m = pb::Middleware {
            id: "Middleware default/basic".into(),
            state_key: "k".into(),
            ..Default::default()
        };
        compile(&m, &rule, &mut env)
    }

    #[test]
    fn compile_errors_name_the_field() {
        let user = |u: &str, p: &str| pb::BasicUser {
            username: u.into(),
            password: p.into(),
        };
        let none = Default::default();
        let err = |rule| compile_rule(rule, &none).unwrap_err();
        assert!(err(pb::BasicAuth::default()).starts_with("basic_auth.users: no users"));
        let e = err(pb::BasicAuth {
            users: vec![user("a", "x"), user("a", "y")],
            ..Default::default()
        });
        assert!(e.starts_with("basic_auth.users[1].username"), "{e}");
        let e = err(pb::BasicAuth {
            users: vec![user("a", "$apr1$bad")],
            ..Default::default()
        });
        assert!(e.starts_with("basic_auth.users[0].password: $apr1$"), "{e}");
        let e = err(pb::BasicAuth {
            users_secret: "default/absent".into(),
            ..Default::default()
        });
        assert!(
            e.starts_with("basic_auth.users_secret: secret \"default/absent\""),
            "{e}"
        );
        let e = err(pb::BasicAuth {
            realm: "a\"b".into(),
            users: vec![user("a", "x")],
            ..Default::default()
        });
        assert!(e.starts_with("basic_auth.realm"), "{e}");
        let ok = compile_rule(
            pb::BasicAuth {
                users: vec![user("a", "x")],
                username_header: "X-Forwarded-User".into(),
                ..Default::default()
            },
            &none,
        );
        assert!(ok.is_ok());
    }

    #[test]
    fn credentials_parse_basic_only() {
        let mut buf = [0u8; MAX_CREDENTIALS];
        let v = HeaderValue::from_static("Basic YWxpY2U6cDpx"); // alice:p:q
        let (u, p) = credentials(&v, &mut buf).unwrap();
        assert_eq!((u, p), ("alice", &b"p:q"[..]));
        let mut buf = [0u8; MAX_CREDENTIALS];
        let v = HeaderValue::from_static("bAsIc   YWxpY2U6  ");
        assert_eq!(credentials(&v, &mut buf).unwrap().0, "alice");
        for bad in [
            "Bearer YWxpY2U6cA==",
            "Basic !!!",
            "Basic YWxpY2U=",
            "Basic",
        ] {
            let mut buf = [0u8; MAX_CREDENTIALS];
            assert!(credentials(&HeaderValue::from_static(bad), &mut buf).is_none());
        }
        // Longer than the buffer: refused, no panic.
        let long = format!("Basic {}", STANDARD.encode(vec![b'a'; 2000]));
        let mut buf = [0u8; MAX_CREDENTIALS];
        assert!(credentials(&HeaderValue::try_from(long).unwrap(), &mut buf).is_none());
    }

    #[test]
    fn secret_users_htpasswd_and_basic_auth_kinds() {
        let opaque = |pairs: &[(&str, &str)]| pb::Secret {
            name: "default/users".into(),
            source: String::new(),
            kind: Some(pb::secret::Kind::Opaque(pb::Opaque {
                data: pairs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
                    .collect(),
            })),
        };
        let users =
            secret_users(&opaque(&[("users", "# team\nalice:{SHA}x\n\nbob:pw\n")])).unwrap();
        assert_eq!(users.len(), 2);
        assert_eq!((users[1].0.as_str(), users[1].1.as_str()), ("bob", "pw"));
        let users = secret_users(&opaque(&[("username", "carol"), ("password", "pw")])).unwrap();
        assert_eq!(users[0].0, "carol");
        assert!(secret_users(&opaque(&[("users", "nocolon")])).is_err());
        assert!(secret_users(&opaque(&[("other", "x")])).is_err());
    }

    /// Runs the whole decision (the slow path included) for a request with `authorization`.
    async fn status_for(m: &dyn Middleware, authorization: &str) -> (bool, Option<u16>) {
        use crate::middleware::transform_testing::Harness;
        let mut h = Harness::new("/", &[("authorization", authorization)]);
        let mut ctx = RequestCtx::new(
            &h.snapshot,
            &h.route,
            &mut h.parts,
            &h.client_uri,
            &h.host,
            h.scheme,
            h.port,
            std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
        );
        let (slow, decision) = match m.decide(&mut ctx) {
            Decision::Async => (true, m.decide_async(&mut ctx).await),
            d => (false, d),
        };
        let status = match decision {
            Decision::Respond(r) => Some(r.status().as_u16()),
            _ => None,
        };
        (slow, status)
    }

    #[tokio::test]
    async fn an_unknown_user_costs_a_bcrypt_check_like_a_wrong_password() {
        let hash = bcrypt::hash("right", 4).unwrap();
        let m = compile_rule(
            pb::BasicAuth {
                users: vec![pb::BasicUser {
                    username: "alice".into(),
                    password: hash,
                }],
                ..Default::default()
            },
            &Default::default(),
        )
        .unwrap();
        let basic = |user_pass: &str| format!("Basic {}", STANDARD.encode(user_pass));
        // A wrong password and an unknown name both take the slow path and are refused.
        assert_eq!(
            status_for(&*m, &basic("alice:wrong")).await,
            (true, Some(401))
        );
        assert_eq!(
            status_for(&*m, &basic("mallory:right")).await,
            (true, Some(401))
        );
        // The right password passes (then from the cache, without the slow path).
        assert_eq!(status_for(&*m, &basic("alice:right")).await, (true, None));
        assert_eq!(status_for(&*m, &basic("alice:right")).await, (false, None));
    }

    #[tokio::test]
    async fn without_slow_hashes_an_unknown_user_is_refused_at_once() {
        let m = compile_rule(
            pb::BasicAuth {
                users: vec![pb::BasicUser {
                    username: "alice".into(),
                    password: "{SHA}qvTGHdzF6KLavt4PO0gs2a6pQ00=".into(),
                }],
                ..Default::default()
            },
            &Default::default(),
        )
        .unwrap();
        let unknown = format!("Basic {}", STANDARD.encode("mallory:hello"));
        assert_eq!(status_for(&*m, &unknown).await, (false, Some(401)));
        let known = format!("Basic {}", STANDARD.encode("alice:hello"));
        assert_eq!(status_for(&*m, &known).await, (false, None));
    }

    #[test]
    fn cache_is_bounded_and_keys_depend_on_the_stored_hash() {
        let state = SlowCheckState::new();
        for i in 0..CACHE_CAPACITY + 10 {
            state.remember(sha256(&i.to_le_bytes()));
        }
        assert!(state.verified.lock().unwrap().len() <= CACHE_CAPACITY);
        let a = StoredPassword::parse("one").unwrap();
        let b = StoredPassword::parse("two").unwrap();
        assert_ne!(cache_key("u", &a, b"p"), cache_key("u", &b, b"p"));
        assert_ne!(cache_key("u", &a, b"p"), cache_key("v", &a, b"p"));
    }
}
