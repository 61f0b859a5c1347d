//! `rateLimit`: a token bucket per client. A bucket holds `requests_per_unit + burst` tokens and
//! gains `requests_per_unit` per `unit`; a request takes one or gets 429 (with Retry-After and
//! RateLimit-* headers). With `ban_after`, that many refusals in a row (since the bucket was
//! last full) ban the client for `ban_duration`: 403 until it ends.
//!
//! Clients are keyed by IP, or by a header or cookie value (a request without it, or with a
//! value over [`MAX_KEY_LEN`] bytes, is keyed by its IP).
//!
//! Local buckets live in the middleware's [`States`](super::state::States) entry, so they survive
//! recompiles: sharded maps (one short lock per request, no global lock), bounded per
//! middleware; idle buckets (full again, not banned: the same as no bucket) are evicted first,
//! then the least recently used. Goma never evicts, which leaks memory under IP churn.
//!
//! Shared buckets (`shared`, when the gateway has a shared store) are one Redis hash per client,
//! updated by one atomic Lua script on the Redis clock, so every replica sees one bucket. Keys
//! are `sluice:ratelimit:<id>:<state_key>:<client>`: a changed middleware starts afresh, the same
//! one keeps its buckets whatever else changes. When Redis fails the request is decided by the
//! local buckets instead (as Goma does), with a throttled warning and the
//! `sluice_rate_limit_store_fallbacks_total` counter, and the store is left alone for
//! [`STORE_RETRY`] so a hanging Redis does not add its timeout to every request.

use super::{CompileEnv, Decision, Middleware, RequestCtx};
use crate::proxy::response::{self, ProxyBody};
use crate::router::route::to_duration;
use crate::shared_store::{Reply, SharedStore};
use futures::future::BoxFuture;
use http::header::HeaderName;
use http::{HeaderMap, HeaderValue, Response, StatusCode, header};
use sluice_proto::config as pb;
use std::collections::HashMap;
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Header or cookie values longer than this do not key a bucket (the IP does).
pub const MAX_KEY_LEN: usize = 256;
/// Buckets kept per middleware (local state).
const MAX_BUCKETS: usize = 100_000;
const SHARDS: usize = 32;
/// At most one "shared store unreachable" warning per middleware per this long.
const WARN_EVERY: Duration = Duration::from_secs(10);
/// After a shared-store failure, requests skip the store for this long (a store that hangs
/// would otherwise add its timeout to every request).
const STORE_RETRY: Duration = Duration::from_secs(1);

/// Requests decided by local buckets because the shared store failed (all middlewares).
pub static STORE_FALLBACKS: AtomicU64 = AtomicU64::new(0);

/// The bucket parameters, in microseconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Policy {
    /// Tokens a full bucket holds.
    pub capacity: u32,
    /// Tokens gained per microsecond.
    pub per_us: f64,
    /// Refusals in a row that ban a client (0: never).
    pub ban_after: u32,
    pub ban_us: u64,
}

/// What a bucket says about one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Let through; tokens left (rounded down) and microseconds until the bucket is full.
    Allowed { remaining: u32, full_in_us: u64 },
    /// 429: microseconds until a token is available.
    Limited { retry_us: u64 },
    /// 403: microseconds until the ban ends.
    Banned { retry_us: u64 },
}

/// One client's bucket.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bucket {
    tokens: f64,
    /// Microseconds (on the owner's clock) of the last update.
    last_us: u64,
    strikes: u32,
    banned_until_us: u64,
}

impl Bucket {
    pub fn full(policy: &Policy, now_us: u64) -> Bucket {
        Bucket {
            tokens: f64::from(policy.capacity),
            last_us: now_us,
            strikes: 0,
            banned_until_us: 0,
        }
    }

    /// Takes a token for a request at `now_us`.
    pub fn take(&mut self, policy: &Policy, now_us: u64) -> Verdict {
        if self.banned_until_us > now_us {
            return Verdict::Banned {
                retry_us: self.banned_until_us - now_us,
            };
        }
        let capacity = f64::from(policy.capacity);
        let elapsed = now_us.saturating_sub(self.last_us) as f64;
        self.tokens = (self.tokens + elapsed * policy.per_us).min(capacity);
        self.last_us = self.last_us.max(now_us);
        if self.tokens >= capacity {
            self.strikes = 0;
        }
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return Verdict::Allowed {
                remaining: self.tokens as u32,
                full_in_us: ((capacity - self.tokens) / policy.per_us).ceil() as u64,
            };
        }
        self.strikes = self.strikes.saturating_add(1);
        if policy.ban_after > 0 && self.strikes >= policy.ban_after {
            self.strikes = 0;
            self.banned_until_us = now_us.saturating_add(policy.ban_us);
            return Verdict::Banned {
                retry_us: policy.ban_us,
            };
        }
        Verdict::Limited {
            retry_us: ((1.0 - self.tokens) / policy.per_us).ceil() as u64,
        }
    }

    /// Whether the bucket is the same as no bucket at `now_us` (full again, not banned).
    fn idle(&self, policy: &Policy, now_us: u64) -> bool {
        self.banned_until_us <= now_us
            && self.tokens + now_us.saturating_sub(self.last_us) as f64 * policy.per_us
                >= f64::from(policy.capacity)
    }
}

/// What identifies a client in a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum ClientKey<'a> {
    Ip(IpAddr),
    Named(&'a [u8]),
}

#[derive(Debug)]
enum KeySource {
    Ip,
    Header(HeaderName),
    Cookie(Box<str>),
}

impl KeySource {
    fn key<'a>(&self, headers: &'a HeaderMap, ip: IpAddr) -> ClientKey<'a> {
        let named = match self {
            KeySource::Ip => None,
            KeySource::Header(name) => headers.get(name).map(HeaderValue::as_bytes),
            KeySource::Cookie(name) => cookie(headers, name),
        };
        match named {
            Some(v) if !v.is_empty() && v.len() <= MAX_KEY_LEN => ClientKey::Named(v),
            _ => ClientKey::Ip(ip),
        }
    }
}

/// The value of cookie `name` in the request's Cookie headers.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a [u8]> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b';'))
        .find_map(|pair| {
            let pair = pair.trim_ascii();
            let eq = pair.iter().position(|b| *b == b'=')?;
            (pair[..eq].trim_ascii() == name.as_bytes()).then(|| {
                let value = pair[eq + 1..].trim_ascii();
                value
                    .strip_prefix(b"\"")
                    .and_then(|v| v.strip_suffix(b"\""))
                    .unwrap_or(value)
            })
        })
}

/// The local buckets of one middleware (its state entry).
pub struct LocalBuckets {
    shards: Box<[Mutex<Shard>]>,
    /// Picks the shard; seeded per process (keys come from clients).
    hasher: RandomState,
    epoch: Instant,
    max_per_shard: usize,
}

#[derive(Default)]
struct Shard {
    by_ip: HashMap<IpAddr, Bucket>,
    by_name: HashMap<Box<[u8]>, Bucket>,
}

impl Shard {
    fn len(&self) -> usize {
        self.by_ip.len() + self.by_name.len()
    }

    /// Makes room for one more bucket: idle buckets go first, then the least recently used
    /// quarter.
    fn evict(&mut self, policy: &Policy, now_us: u64, max: usize) {
        self.by_ip.retain(|_, b| !b.idle(policy, now_us));
        self.by_name.retain(|_, b| !b.idle(policy, now_us));
        if self.len() < max {
            return;
        }
        let mut lasts: Vec<u64> = self
            .by_ip
            .values()
            .chain(self.by_name.values())
            .map(|b| b.last_us)
            .collect();
        // Everything up to the quarter's last-use time goes: at least one bucket, even when
        // many share a timestamp.
        let cut = lasts.len() / 4;
        let (_, threshold, _) = lasts.select_nth_unstable(cut);
        let threshold = *threshold;
        self.by_ip.retain(|_, b| b.last_us > threshold);
        self.by_name.retain(|_, b| b.last_us > threshold);
    }
}

impl std::fmt::Debug for LocalBuckets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalBuckets").finish_non_exhaustive()
    }
}

impl LocalBuckets {
    pub fn new(max_buckets: usize) -> LocalBuckets {
        LocalBuckets {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            hasher: RandomState::new(),
            epoch: Instant::now(),
            max_per_shard: max_buckets.div_ceil(SHARDS).max(4),
        }
    }

    fn now_us(&self) -> u64 {
        self.epoch.elapsed().as_micros() as u64
    }

    fn take(&self, key: ClientKey<'_>, policy: &Policy) -> Verdict {
        let now = self.now_us();
        let shard = &self.shards[(self.hasher.hash_one(key) as usize) % self.shards.len()];
        let mut shard = shard.lock().unwrap_or_else(|e| e.into_inner());
        let existing = match key {
            ClientKey::Ip(ip) => shard.by_ip.get_mut(&ip),
            ClientKey::Named(name) => shard.by_name.get_mut(name),
        };
        if let Some(bucket) = existing {
            return bucket.take(policy, now);
        }
        if shard.len() >= self.max_per_shard {
            shard.evict(policy, now, self.max_per_shard);
        }
        let mut bucket = Bucket::full(policy, now);
        let verdict = bucket.take(policy, now);
        match key {
            ClientKey::Ip(ip) => shard.by_ip.insert(ip, bucket),
            ClientKey::Named(name) => shard.by_name.insert(name.into(), bucket),
        };
        verdict
    }

    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).len())
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[derive(Debug)]
struct Shared {
    store: Arc<SharedStore>,
    /// `sluice:ratelimit:<id>:<state_key>:`
    prefix: String,
    /// Seconds since the Unix epoch of the last fallback warning.
    warned_at: AtomicU64,
    /// Milliseconds since the Unix epoch until which the store is not asked.
    skip_until_ms: AtomicU64,
}

#[derive(Debug)]
pub struct RateLimit {
    /// The middleware's id (logs).
    id: Arc<str>,
    policy: Policy,
    /// `RateLimit-Limit`.
    limit: HeaderValue,
    key: KeySource,
    local: Arc<LocalBuckets>,
    shared: Option<Shared>,
}

pub fn compile(
    m: &pb::Middleware,
    rl: &pb::RateLimit,
    env: &mut CompileEnv<'_>,
) -> Result<Box<dyn Middleware>, String> {
    let policy = policy(rl)?;
    let key = match (
        pb::client_key::Source::try_from(rl.key.as_ref().map_or(0, |k| k.source)),
        rl.key.as_ref().map_or("", |k| k.name.as_str()),
    ) {
        (Ok(pb::client_key::Source::Ip), _) => KeySource::Ip,
        (Ok(pb::client_key::Source::Header), name) => KeySource::Header(
            HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| format!("key.name: {name:?} is not a header name"))?,
        ),
        (Ok(pb::client_key::Source::Cookie), name) => {
            if name.is_empty() || name.contains([';', '=', ' ']) {
                return Err(format!("key.name: {name:?} is not a cookie name"));
            }
            KeySource::Cookie(name.into())
        }
        (Err(_), _) => return Err("key.source: unknown source".into()),
    };
    let local = env
        .states
        .get_or_insert(&m.id, &m.state_key, || LocalBuckets::new(MAX_BUCKETS));
    let shared = match env.shared_store {
        Some(store) if rl.shared => Some(Shared {
            store: store.clone(),
            prefix: format!("sluice:ratelimit:{}:{}:", m.id, m.state_key),
            warned_at: AtomicU64::new(0),
            skip_until_ms: AtomicU64::new(0),
        }),
        _ => None,
    };
    Ok(Box::new(RateLimit {
        id: m.id.as_str().into(),
        policy,
        limit: HeaderValue::from(policy.capacity),
        key,
        local,
        shared,
    }))
}

fn policy(rl: &pb::RateLimit) -> Result<Policy, String> {
    if rl.requests_per_unit == 0 {
        return Err("requests_per_unit: must be at least 1".into());
    }
    let unit = match &rl.unit {
        None => Duration::from_secs(1),
        Some(d) => to_duration(d).map_err(|e| format!("unit: {e}"))?,
    };
    if unit.is_zero() {
        return Err("unit: must be longer than zero".into());
    }
    let ban = match &rl.ban_duration {
        None => Duration::ZERO,
        Some(d) => to_duration(d).map_err(|e| format!("ban_duration: {e}"))?,
    };
    if rl.ban_after > 0 && ban.is_zero() {
        return Err("ban_duration: required when ban_after is set".into());
    }
    Ok(Policy {
        capacity: rl.requests_per_unit.saturating_add(rl.burst),
        per_us: f64::from(rl.requests_per_unit) / unit.as_micros() as f64,
        ban_after: rl.ban_after,
        ban_us: ban.as_micros().min(u128::from(u64::MAX)) as u64,
    })
}

/// Atomic token bucket on the Redis clock. KEYS[1]: the client's hash; ARGV: capacity, tokens
/// per microsecond, ban_after, ban length (µs). Returns {verdict (0 allowed, 1 limited,
/// 2 banned), tokens left, µs (until full / until a token / until the ban ends)}.
const SCRIPT: &str = r#"
-- Redis 3.2-4 need effects replication for writes after TIME (a no-op from Redis 5 on).
if redis.replicate_commands then redis.replicate_commands() end
local capacity = tonumber(ARGV[1])
local rate = tonumber(ARGV[2])
local ban_after = tonumber(ARGV[3])
local ban_us = tonumber(ARGV[4])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local h = redis.call('HMGET', KEYS[1], 'tokens', 'ts', 'strikes', 'banned')
local tokens = tonumber(h[1]) or capacity
local ts = tonumber(h[2]) or now
local strikes = tonumber(h[3]) or 0
local banned = tonumber(h[4]) or 0
if banned > now then
  return {2, 0, banned - now}
end
tokens = math.min(capacity, tokens + math.max(0, now - ts) * rate)
if tokens >= capacity then strikes = 0 end
local result
if tokens >= 1 then
  tokens = tokens - 1
  result = {0, math.floor(tokens), math.ceil((capacity - tokens) / rate)}
else
  strikes = strikes + 1
  if ban_after > 0 and strikes >= ban_after then
    strikes = 0
    banned = now + ban_us
    result = {2, 0, ban_us}
  else
    result = {1, 0, math.ceil((1 - tokens) / rate)}
  end
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', now, 'strikes', strikes, 'banned', banned)
local full_ms = math.ceil((capacity - tokens) / rate / 1000)
local ban_ms = math.ceil(math.max(0, banned - now) / 1000)
redis.call('PEXPIRE', KEYS[1], math.max(full_ms, ban_ms) + 1000)
return result
"#;

impl Shared {
    async fn take(&self, key: ClientKey<'_>, policy: &Policy) -> Result<Verdict, String> {
        let client = match key {
            ClientKey::Ip(ip) => format!("ip:{ip}"),
            ClientKey::Named(v) => match std::str::from_utf8(v) {
                Ok(s) => format!("k:{s}"),
                Err(_) => format!("x:{}", hex(v)),
            },
        };
        let redis_key = format!("{}{client}", self.prefix);
        let args = [
            policy.capacity.to_string(),
            policy.per_us.to_string(),
            policy.ban_after.to_string(),
            policy.ban_us.to_string(),
        ];
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let reply = self
            .store
            .eval(SCRIPT, &[&redis_key], &args)
            .await
            .map_err(|e| e.to_string())?;
        let to_u64 = |n: i64| u64::try_from(n).unwrap_or(0);
        match reply {
            Reply::Array(items) => match items.as_slice() {
                [Reply::Int(0), Reply::Int(left), Reply::Int(us)] => Ok(Verdict::Allowed {
                    remaining: u32::try_from(*left).unwrap_or(0),
                    full_in_us: to_u64(*us),
                }),
                [Reply::Int(1), _, Reply::Int(us)] => Ok(Verdict::Limited {
                    retry_us: to_u64(*us),
                }),
                [Reply::Int(2), _, Reply::Int(us)] => Ok(Verdict::Banned {
                    retry_us: to_u64(*us),
                }),
                _ => Err(format!("unexpected reply {items:?}")),
            },
            Reply::Error(e) => Err(e),
            other => Err(format!("unexpected reply {other:?}")),
        }
    }

    /// Whether to ask the store (it has not failed within [`STORE_RETRY`]); counts a fallback
    /// when not.
    fn usable(&self) -> bool {
        let skip = self.skip_until_ms.load(Ordering::Relaxed);
        if skip == 0 || unix_ms() >= skip {
            return true;
        }
        STORE_FALLBACKS.fetch_add(1, Ordering::Relaxed);
        false
    }

    /// The store failed: counted, skipped for a while, warned about at most once per
    /// [`WARN_EVERY`].
    fn failed(&self, id: &str, error: &str) {
        STORE_FALLBACKS.fetch_add(1, Ordering::Relaxed);
        let now_ms = unix_ms();
        self.skip_until_ms.store(
            now_ms.saturating_add(STORE_RETRY.as_millis() as u64),
            Ordering::Relaxed,
        );
        let now = now_ms / 1000;
        let last = self.warned_at.load(Ordering::Relaxed);
        if now >= last.saturating_add(WARN_EVERY.as_secs())
            && self
                .warned_at
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(middleware = %id, store = %self.store.address(), %error, "rate limit shared store failed: using this pod's buckets");
        }
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl RateLimit {
    fn answer(&self, verdict: Verdict) -> Decision {
        match verdict {
            Verdict::Allowed { .. } => Decision::Continue,
            Verdict::Limited { retry_us } => {
                let mut resp = response::text(StatusCode::TOO_MANY_REQUESTS, "too many requests\n");
                let h = resp.headers_mut();
                let secs = HeaderValue::from(retry_us.div_ceil(1_000_000).max(1));
                h.insert(header::RETRY_AFTER, secs.clone());
                h.insert(RATELIMIT_LIMIT.clone(), self.limit.clone());
                h.insert(RATELIMIT_REMAINING.clone(), HeaderValue::from_static("0"));
                h.insert(RATELIMIT_RESET.clone(), secs);
                Decision::Respond(resp)
            }
            Verdict::Banned { retry_us } => Decision::Respond(banned(retry_us)),
        }
    }
}

fn banned(retry_us: u64) -> Response<ProxyBody> {
    let mut resp = response::text(StatusCode::FORBIDDEN, "too many requests: client banned\n");
    resp.headers_mut().insert(
        header::RETRY_AFTER,
        HeaderValue::from(retry_us.div_ceil(1_000_000).max(1)),
    );
    resp
}

static RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("ratelimit-limit");
static RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("ratelimit-remaining");
static RATELIMIT_RESET: HeaderName = HeaderName::from_static("ratelimit-reset");

impl Middleware for RateLimit {
    fn decide(&self, ctx: &mut RequestCtx<'_>) -> Decision {
        if self.shared.as_ref().is_some_and(Shared::usable) {
            return Decision::Async;
        }
        let key = self.key.key(&ctx.parts.headers, ctx.client_ip);
        let verdict = self.local.take(key, &self.policy);
        self.answer(verdict)
    }

    fn decide_async<'a>(&'a self, ctx: &'a mut RequestCtx<'_>) -> BoxFuture<'a, Decision> {
        Box::pin(async move {
            let key = self.key.key(&ctx.parts.headers, ctx.client_ip);
            let verdict = match &self.shared {
                None => self.local.take(key, &self.policy),
                Some(shared) => match shared.take(key, &self.policy).await {
                    Ok(v) => v,
                    Err(error) => {
                        shared.failed(&self.id, &error);
                        self.local.take(key, &self.policy)
                    }
                },
            };
            self.answer(verdict)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(rpu: u32, unit: Duration, burst: u32, ban_after: u32, ban: Duration) -> Policy {
        super::policy(&pb::RateLimit {
            requests_per_unit: rpu,
            unit: Some(prost_types::Duration {
                seconds: unit.as_secs() as i64,
                nanos: unit.subsec_nanos() as i32,
            }),
            burst,
            ban_after,
            ban_duration: Some(prost_types::Duration {
                seconds: ban.as_secs() as i64,
                nanos: 0,
            }),
            ..Default::default()
        })
        .unwrap()
    }

    const S: u64 = 1_000_000;

    #[test]
    fn capacity_is_rate_plus_burst_and_refills_at_the_rate() {
        let p = policy(2, Duration::from_secs(1), 1, 0, Duration::ZERO);
        let mut b = Bucket::full(&p, 0);
        assert!(matches!(
            b.take(&p, 0),
            Verdict::Allowed { remaining: 2, .. }
        ));
        assert!(matches!(
            b.take(&p, 0),
            Verdict::Allowed { remaining: 1, .. }
        ));
        assert!(matches!(
            b.take(&p, 0),
            Verdict::Allowed { remaining: 0, .. }
        ));
        // Empty: the next token comes in half a second.
        assert_eq!(b.take(&p, 0), Verdict::Limited { retry_us: S / 2 });
        assert_eq!(b.take(&p, S / 4), Verdict::Limited { retry_us: S / 4 });
        assert!(matches!(b.take(&p, S / 2), Verdict::Allowed { .. }));
        // A long pause refills to capacity, not beyond.
        let mut allowed = 0;
        while let Verdict::Allowed { .. } = b.take(&p, 100 * S) {
            allowed += 1;
        }
        assert_eq!(allowed, 3);
    }

    #[test]
    fn strikes_ban_and_the_ban_ends() {
        let p = policy(1, Duration::from_secs(60), 0, 2, Duration::from_secs(10));
        let mut b = Bucket::full(&p, 0);
        assert!(matches!(b.take(&p, 0), Verdict::Allowed { .. }));
        assert!(matches!(b.take(&p, 1), Verdict::Limited { .. }));
        assert_eq!(b.take(&p, 2), Verdict::Banned { retry_us: 10 * S });
        assert_eq!(
            b.take(&p, 3 * S),
            Verdict::Banned {
                retry_us: 7 * S + 2
            }
        );
        // After the ban the bucket still refills at its own pace.
        assert!(matches!(b.take(&p, 10 * S + 2), Verdict::Limited { .. }));
        assert!(matches!(b.take(&p, 60 * S), Verdict::Allowed { .. }));
    }

    #[test]
    fn strikes_reset_once_the_bucket_is_full_again() {
        let p = policy(1, Duration::from_secs(1), 0, 2, Duration::from_secs(10));
        let mut b = Bucket::full(&p, 0);
        assert!(matches!(b.take(&p, 0), Verdict::Allowed { .. }));
        assert!(matches!(b.take(&p, 1), Verdict::Limited { .. }));
        // Full again: the earlier refusal is forgiven.
        assert!(matches!(b.take(&p, 2 * S), Verdict::Allowed { .. }));
        assert!(matches!(b.take(&p, 2 * S + 1), Verdict::Limited { .. }));
    }

    #[test]
    fn keys_fall_back_to_the_ip() {
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let mut h = HeaderMap::new();
        h.insert("x-api-key", HeaderValue::from_static("k1"));
        h.append(
            header::COOKIE,
            HeaderValue::from_static("a=1; session=\"s2\""),
        );
        let by_header = KeySource::Header(HeaderName::from_static("x-api-key"));
        assert_eq!(by_header.key(&h, ip), ClientKey::Named(b"k1"));
        let by_cookie = KeySource::Cookie("session".into());
        assert_eq!(by_cookie.key(&h, ip), ClientKey::Named(b"s2"));
        let missing = KeySource::Cookie("other".into());
        assert_eq!(missing.key(&h, ip), ClientKey::Ip(ip));
        h.insert(
            "x-api-key",
            HeaderValue::from_str(&"k".repeat(MAX_KEY_LEN + 1)).unwrap(),
        );
        assert_eq!(by_header.key(&h, ip), ClientKey::Ip(ip));
        assert_eq!(KeySource::Ip.key(&h, ip), ClientKey::Ip(ip));
    }

    #[test]
    fn local_buckets_stay_bounded_under_churn() {
        let p = policy(1, Duration::from_secs(3600), 0, 0, Duration::ZERO);
        let buckets = LocalBuckets::new(64);
        for i in 0..10_000u32 {
            let ip = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            assert!(matches!(
                buckets.take(ClientKey::Ip(ip), &p),
                Verdict::Allowed { .. }
            ));
            let bound = buckets.max_per_shard * SHARDS;
            assert!(buckets.len() <= bound, "{} > {bound}", buckets.len());
        }
    }

    #[test]
    fn eviction_drops_idle_buckets_before_busy_ones() {
        let p = policy(1, Duration::from_secs(1), 0, 0, Duration::ZERO);
        let mut shard = Shard::default();
        let busy: IpAddr = "198.51.100.1".parse().unwrap();
        let mut empty = Bucket::full(&p, 0);
        empty.take(&p, 10 * S);
        shard.by_ip.insert(busy, empty);
        for i in 0..7u8 {
            // Used long ago, full again by now.
            let mut b = Bucket::full(&p, 0);
            b.take(&p, 0);
            shard.by_name.insert(vec![i].into(), b);
        }
        shard.evict(&p, 10 * S, 8);
        assert_eq!(shard.len(), 1);
        assert!(shard.by_ip.contains_key(&busy));
        // With no idle bucket, the least recently used quarter goes (and at least one).
        let mut shard = Shard::default();
        for i in 0..8u8 {
            let mut b = Bucket::full(&p, 0);
            b.take(&p, u64::from(i) * 1000);
            shard.by_name.insert(vec![i].into(), b);
        }
        shard.evict(&p, 8000, 8);
        assert_eq!(shard.len(), 5);
        assert!(!shard.by_name.contains_key(&[0u8][..]));
        assert!(shard.by_name.contains_key(&[7u8][..]));
    }

    #[tokio::test]
    async fn a_failed_store_is_left_alone_for_a_while() {
        let shared = Shared {
            store: Arc::new(SharedStore::new("127.0.0.1:1", "")),
            prefix: "sluice:ratelimit:t:k:".into(),
            warned_at: AtomicU64::new(0),
            skip_until_ms: AtomicU64::new(0),
        };
        let p = policy(1, Duration::from_secs(1), 0, 0, Duration::ZERO);
        assert!(shared.usable());
        let ip = ClientKey::Ip("192.0.2.1".parse().unwrap());
        let error = shared.take(ip, &p).await.unwrap_err();
        shared.failed("Middleware default/rl", &error);
        let before = STORE_FALLBACKS.load(Ordering::Relaxed);
        assert!(!shared.usable());
        assert!(STORE_FALLBACKS.load(Ordering::Relaxed) > before);
        shared
            .skip_until_ms
            .store(unix_ms().saturating_sub(1), Ordering::Relaxed);
        assert!(shared.usable());
    }

    #[test]
    fn config_errors_name_the_field() {
        let err = |rl: pb::RateLimit| super::policy(&rl).unwrap_err();
        assert!(err(pb::RateLimit::default()).starts_with("requests_per_unit"));
        assert!(
            err(pb::RateLimit {
                requests_per_unit: 1,
                unit: Some(prost_types::Duration::default()),
                ..Default::default()
            })
            .starts_with("unit:")
        );
        assert!(
            err(pb::RateLimit {
                requests_per_unit: 1,
                ban_after: 3,
                ..Default::default()
            })
            .starts_with("ban_duration:")
        );
    }
}
