//! `ldap` (alias `ldapAuth`): HTTP Basic credentials checked against a directory.
//!
//! Per attempt: bind as `bindDN` (anonymously when unset), search `baseDN`'s subtree with
//! `userFilter` (`%s` = the user name, escaped per RFC 4515), and bind as the one entry found
//! with the given password. No entry, several entries, or a refused bind answer 401 with the
//! Basic challenge; an empty password is refused before the directory is asked (it would be an
//! unauthenticated bind, which succeeds for any DN). A directory that cannot be reached, or
//! that refuses the service bind, answers 503: never a pass.
//!
//! Connections are pooled per middleware state (at most `pool_size` idle, each reused for at
//! most `pool_ttl`), at most `pool_burst` directory checks run at once, and each check is
//! bounded by a 5s timeout. Successful checks are remembered for 30s, keyed by the user name
//! with a salted SHA-256 of the password (never the password itself).

mod ber;
mod conn;
mod filter;

use super::state::States;
use super::{CompileEnv, Decision, Middleware, RequestCtx};
use crate::proxy::response::{self, ProxyBody};
use crate::router::route::to_duration;
use crate::upstream::tls::{Alpn, TlsInputs, client_config};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use conn::{Conn, Target, Tls};
use futures::future::BoxFuture;
use http::header::{self, HeaderName};
use http::{HeaderValue, Response, StatusCode};
use ring::rand::{SecureRandom, SystemRandom};
use sluice_proto::config as pb;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

const CHECK_TIMEOUT: Duration = Duration::from_secs(5);
const CACHE_TTL: Duration = Duration::from_secs(30);
const CACHE_MAX: usize = 10_000;
const DEFAULT_POOL_SIZE: usize = 5;
const DEFAULT_POOL_BURST: usize = 10;
const DEFAULT_POOL_TTL: Duration = Duration::from_secs(60);

#[derive(Debug)]
pub struct LdapAuth {
    id: Arc<str>,
    target: Target,
    base_dn: Box<str>,
    bind_dn: Box<str>,
    bind_password: Box<str>,
    user_filter: Box<str>,
    challenge: HeaderValue,
    username_header: Option<HeaderName>,
    pool_size: usize,
    pool_ttl: Duration,
    directory: Arc<Directory>,
}

/// What outlives recompiles: pooled connections, the concurrency limit and the cache.
pub struct Directory {
    idle: Mutex<Vec<Conn>>,
    checks: Semaphore,
    /// User name -> (salted password hash, valid until).
    cache: Mutex<HashMap<Box<str>, Remembered>>,
    salt: [u8; 16],
}

type Remembered = ([u8; 32], Instant);

impl std::fmt::Debug for Directory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Directory").finish_non_exhaustive()
    }
}

pub fn compile(
    m: &pb::Middleware,
    l: &pb::LdapAuth,
    env: &mut CompileEnv<'_>,
) -> Result<Box<dyn Middleware>, String> {
    let (host, port, ldaps) = parse_url(&l.url).map_err(|e| format!("ldap.url: {e}"))?;
    let tls = if ldaps || l.start_tls {
        let inputs = TlsInputs {
            settings: pb::UpstreamTls {
                insecure_skip_verify: l.insecure_skip_verify,
                ..Default::default()
            },
            ca: None,
            client_certificate: None,
        };
        let config = Arc::new(client_config(&inputs, Alpn::None).map_err(|e| format!("ldap.{e}"))?);
        if ldaps {
            if l.start_tls {
                return Err("ldap.start_tls: an ldaps:// URL is already TLS".into());
            }
            Tls::Direct(config)
        } else {
            Tls::Upgrade(config)
        }
    } else {
        Tls::None
    };
    if l.base_dn.is_empty() {
        return Err("ldap.base_dn: empty".into());
    }
    let user_filter = if l.user_filter.is_empty() {
        "(uid=%s)"
    } else {
        &l.user_filter
    };
    if !user_filter.contains("%s") {
        return Err(format!("ldap.user_filter: {user_filter:?} has no %s"));
    }
    filter::user_filter(user_filter, "user").map_err(|e| format!("ldap.user_filter: {e}"))?;
    let realm = if l.realm.is_empty() {
        "Restricted"
    } else {
        &l.realm
    };
    let challenge = HeaderValue::from_str(&format!(
        "Basic realm=\"{}\"",
        realm.replace(['"', '\\'], "")
    ))
    .map_err(|_| format!("ldap.realm: {realm:?} is not valid in a header"))?;
    let username_header = match l.username_header.as_str() {
        "" => None,
        h => Some(
            HeaderName::try_from(h)
                .map_err(|_| format!("ldap.username_header: {h:?} is not a header name"))?,
        ),
    };
    let pool_ttl = match &l.pool_ttl {
        None => DEFAULT_POOL_TTL,
        Some(d) => to_duration(d).map_err(|e| format!("ldap.pool_ttl: {e}"))?,
    };
    let pool_size = match l.pool_size {
        0 => DEFAULT_POOL_SIZE,
        n => n as usize,
    };
    let burst = match l.pool_burst {
        0 => DEFAULT_POOL_BURST,
        n => n as usize,
    };
    let directory = directory(env.states, m, burst);
    Ok(Box::new(LdapAuth {
        id: m.id.as_str().into(),
        target: Target { host, port, tls },
        base_dn: l.base_dn.as_str().into(),
        bind_dn: l.bind_dn.as_str().into(),
        bind_password: l.bind_password.as_str().into(),
        user_filter: user_filter.into(),
        challenge,
        username_header,
        pool_size,
        pool_ttl,
        directory,
    }))
}

fn directory(states: &mut States, m: &pb::Middleware, burst: usize) -> Arc<Directory> {
    states.get_or_insert(&m.id, &m.state_key, || {
        let mut salt = [0u8; 16];
        // Without randomness the salt stays zero: the cache key is then a plain hash, still
        // never the password.
        let _ = SystemRandom::new().fill(&mut salt);
        Directory {
            idle: Mutex::new(Vec::new()),
            checks: Semaphore::new(burst),
            cache: Mutex::new(HashMap::new()),
            salt,
        }
    })
}

/// `ldap[s]://host[:port][/...]` to (host, port, ldaps).
fn parse_url(url: &str) -> Result<(String, u16, bool), String> {
    let (rest, ldaps) = if let Some(r) = url.strip_prefix("ldaps://") {
        (r, true)
    } else if let Some(r) = url.strip_prefix("ldap://") {
        (r, false)
    } else {
        return Err(format!("{url:?} is not an ldap:// or ldaps:// URL"));
    };
    let authority = rest.split(['/', '?']).next().unwrap_or("");
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (ip, after) = v6
            .split_once(']')
            .ok_or_else(|| format!("{url:?}: unterminated IPv6 address"))?;
        (ip, after.strip_prefix(':'))
    } else {
        match authority.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err(format!("{url:?}: the host is missing"));
    }
    let port = match port {
        None => {
            if ldaps {
                636
            } else {
                389
            }
        }
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| format!("{url:?}: {p:?} is not a port"))?,
    };
    Ok((host.to_owned(), port, ldaps))
}

/// User name and password of a Basic Authorization header.
fn basic_credentials(value: &HeaderValue) -> Option<(String, String)> {
    let text = value.to_str().ok()?;
    let (scheme, token) = text.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = STANDARD.decode(token.trim()).ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (user, password) = decoded.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

impl Middleware for LdapAuth {
    fn decide(&self, ctx: &mut RequestCtx<'_>) -> Decision {
        let Some((user, password)) = ctx
            .parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(basic_credentials)
        else {
            return Decision::Respond(self.unauthorized());
        };
        if user.is_empty() || password.is_empty() {
            return Decision::Respond(self.unauthorized());
        }
        if self.directory.remembered(&user, &password) {
            return self.admit(ctx, &user);
        }
        Decision::Async
    }

    fn decide_async<'a>(&'a self, ctx: &'a mut RequestCtx<'_>) -> BoxFuture<'a, Decision> {
        Box::pin(async move {
            let Some((user, password)) = ctx
                .parts
                .headers
                .get(header::AUTHORIZATION)
                .and_then(basic_credentials)
            else {
                return Decision::Respond(self.unauthorized());
            };
            let checked = tokio::time::timeout(CHECK_TIMEOUT, self.check(&user, &password)).await;
            match checked {
                Ok(Ok(true)) => {
                    self.directory.remember(&user, &password);
                    self.admit(ctx, &user)
                }
                Ok(Ok(false)) => {
                    tracing::debug!(middleware = %self.id, user = %user, "LDAP authentication refused");
                    Decision::Respond(self.unauthorized())
                }
                Ok(Err(error)) => {
                    tracing::warn!(middleware = %self.id, %error, "LDAP directory unavailable; request refused");
                    Decision::Respond(unavailable())
                }
                Err(_) => {
                    tracing::warn!(middleware = %self.id, timeout = ?CHECK_TIMEOUT, "LDAP check timed out; request refused");
                    Decision::Respond(unavailable())
                }
            }
        })
    }
}

fn unavailable() -> Response<ProxyBody> {
    response::text(
        StatusCode::SERVICE_UNAVAILABLE,
        "authentication directory unavailable\n",
    )
}

impl LdapAuth {
    fn unauthorized(&self) -> Response<ProxyBody> {
        let mut resp = response::text(StatusCode::UNAUTHORIZED, "unauthorized\n");
        resp.headers_mut()
            .insert(header::WWW_AUTHENTICATE, self.challenge.clone());
        resp
    }

    fn admit(&self, ctx: &mut RequestCtx<'_>, user: &str) -> Decision {
        if let Some(name) = &self.username_header {
            // Only the gateway may assert who the user is.
            ctx.parts.headers.remove(name);
            match HeaderValue::from_str(user) {
                Ok(v) => {
                    ctx.parts.headers.insert(name.clone(), v);
                }
                Err(_) => return Decision::Respond(self.unauthorized()),
            }
        }
        Decision::Continue
    }

    /// Ok(true) when the directory accepts the credentials. A pooled connection that fails is
    /// replaced by a fresh one once (the directory may have closed it while idle).
    async fn check(&self, user: &str, password: &str) -> Result<bool, String> {
        let _permit = self
            .directory
            .checks
            .acquire()
            .await
            .map_err(|_| "the check limiter is closed".to_owned())?;
        if let Some(mut conn) = self.directory.take_idle(self.pool_ttl)
            && let Ok(result) = self.run(&mut conn, user, password).await
        {
            self.directory.put_idle(conn, self.pool_size);
            return Ok(result);
        }
        let mut conn = Conn::open(&self.target).await?;
        let result = self.run(&mut conn, user, password).await?;
        self.directory.put_idle(conn, self.pool_size);
        Ok(result)
    }

    async fn run(&self, conn: &mut Conn, user: &str, password: &str) -> Result<bool, String> {
        if !conn.bind(&self.bind_dn, &self.bind_password).await? {
            return Err(format!(
                "the directory refused the search bind as {:?} (invalid credentials)",
                &*self.bind_dn
            ));
        }
        let filter = filter::user_filter(&self.user_filter, user)?;
        let found = conn.search(&self.base_dn, &filter, 5).await?;
        let [dn] = found.as_slice() else {
            tracing::debug!(middleware = %self.id, user, entries = found.len(), "LDAP user search did not find exactly one entry");
            return Ok(false);
        };
        let dn = String::from_utf8(dn.clone()).map_err(|_| "an entry's DN is not UTF-8")?;
        conn.bind(&dn, password).await
    }
}

impl Directory {
    fn key(&self, password: &str) -> [u8; 32] {
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        ctx.update(&self.salt);
        ctx.update(password.as_bytes());
        let mut out = [0u8; 32];
        out.copy_from_slice(ctx.finish().as_ref());
        out
    }

    fn remembered(&self, user: &str, password: &str) -> bool {
        let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        let Some((hash, until)) = cache.get(user) else {
            return false;
        };
        // Compare hashes in constant time.
        let key = self.key(password);
        let differ = hash
            .iter()
            .zip(key.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        *until > Instant::now() && differ == 0
    }

    fn remember(&self, user: &str, password: &str) {
        let key = self.key(password);
        let now = Instant::now();
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= CACHE_MAX {
            cache.retain(|_, (_, until)| *until > now);
            if cache.len() >= CACHE_MAX {
                cache.clear();
            }
        }
        cache.insert(user.into(), (key, now + CACHE_TTL));
    }

    fn take_idle(&self, ttl: Duration) -> Option<Conn> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        while let Some(conn) = idle.pop() {
            if conn.created.elapsed() < ttl {
                return Some(conn);
            }
        }
        None
    }

    fn put_idle(&self, conn: Conn, size: usize) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < size {
            idle.push(conn);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(parse_url("ldap://dir").unwrap(), ("dir".into(), 389, false));
        assert_eq!(
            parse_url("ldaps://dir.example.com:1636/dc=x").unwrap(),
            ("dir.example.com".into(), 1636, true)
        );
        assert_eq!(
            parse_url("ldap://[::1]:10389").unwrap(),
            ("::1".into(), 10389, false)
        );
        assert!(parse_url("http://dir").is_err());
        assert!(parse_url("ldap://:389").is_err());
        assert!(parse_url("ldap://dir:0").is_err());
    }

    #[test]
    fn basic_credentials_parse() {
        let v = HeaderValue::from_str(&format!("Basic {}", STANDARD.encode("bob:pa:ss"))).unwrap();
        assert_eq!(basic_credentials(&v), Some(("bob".into(), "pa:ss".into())));
        assert_eq!(
            basic_credentials(&HeaderValue::from_static("Bearer x")),
            None
        );
        assert_eq!(
            basic_credentials(&HeaderValue::from_static("Basic !!!")),
            None
        );
    }

    #[test]
    fn cache_remembers_only_the_same_password_until_expiry() {
        let d = Directory {
            idle: Mutex::new(Vec::new()),
            checks: Semaphore::new(1),
            cache: Mutex::new(HashMap::new()),
            salt: [7; 16],
        };
        assert!(!d.remembered("bob", "pw"));
        d.remember("bob", "pw");
        assert!(d.remembered("bob", "pw"));
        assert!(!d.remembered("bob", "other"));
        assert!(!d.remembered("alice", "pw"));
        d.cache.lock().unwrap().get_mut("bob").unwrap().1 = Instant::now();
        assert!(!d.remembered("bob", "pw"));
    }

    #[test]
    fn compile_checks_fields_and_shares_state() {
        let mut states = States::default();
        let secrets = Default::default();
        let m = pb::Middleware {
            id: "Middleware default/ldap".into(),
            state_key: "k".into(),
            ..Default::default()
        };
        let mut l = pb::LdapAuth {
            url: "ldap://127.0.0.1:10389".into(),
            base_dn: "dc=example,dc=org".into(),
            user_filter: "(&(objectClass=person)(uid=%s))".into(),
            ..Default::default()
        };
        let mut env = CompileEnv::new(&mut states, &secrets, None, None);
        assert!(compile(&m, &l, &mut env).is_ok());
        assert!(compile(&m, &l, &mut env).is_ok());
        assert_eq!(env.states.len(), 1);
        l.user_filter = "(uid=%s".into();
        let err = compile(&m, &l, &mut env).unwrap_err();
        assert!(err.starts_with("ldap.user_filter"), "{err}");
        l.user_filter = "(uid=x)".into();
        assert!(
            compile(&m, &l, &mut env)
                .unwrap_err()
                .starts_with("ldap.user_filter")
        );
        l.user_filter.clear();
        l.url = "ldaps://dir".into();
        l.start_tls = true;
        assert!(
            compile(&m, &l, &mut env)
                .unwrap_err()
                .starts_with("ldap.start_tls")
        );
    }
}
