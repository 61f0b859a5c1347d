//! httpCache: a shared HTTP cache (RFC 9111) in front of the route's upstream.
//!
//! * GET responses with a cacheable status are stored; HEAD is answered from GET entries.
//!   Freshness follows the response (s-maxage, max-age, Expires; `maxTtl` when it states none)
//!   capped by `maxTtl`; a stale entry is kept and served (`STALE`) for `maxStale` more, unless
//!   the response says must-revalidate. Requests may ask for `no-cache` (refetch and store),
//!   `no-store` (bypass), `max-age`, `min-fresh` and `max-stale=N`.
//! * Not stored: no-store, private, no-cache, `Vary: *`, Set-Cookie, and responses to requests
//!   with Authorization or Cookie unless the response allows sharing (public, s-maxage,
//!   must-revalidate; RFC 9111 §3.5); such requests are only answered from shareable entries.
//! * Key: route, scheme, host, path, and the query when configured; the request values of the
//!   headers named by the response's Vary select a variant.
//! * POST, PUT, PATCH and DELETE answered 2xx/3xx by the upstream invalidate the key.
//! * `X-Cache-Status` and `X-Goma-Cache`: HIT, STALE, MISS or BYPASS (unless disabled); `Age`
//!   on entries served.
//! * The body streams to the client while a copy is kept; over the entry bound
//!   ([`MAX_ENTRY_BYTES`], or a quarter of `memoryLimit`) the copy is dropped.
//! * Memory: a byte-bounded LRU per middleware (in `States`, so it survives recompiles).
//!   Shared: with `shared` and a gateway shared store (Redis), records live there for every
//!   replica; while Redis fails (and for a second after each failure, so an unreachable Redis
//!   does not add its timeout to every request), this replica's memory store serves and stores
//!   instead.
//! * Concurrent misses on one key all go upstream (no request coalescing).

mod body;
pub mod entry;
pub mod key;
pub mod memory;
pub mod policy;
mod shared;

use super::{CompileEnv, Decision, Middleware, RequestCtx, ResponseCtx};
use crate::proxy::response::{ProxyBody, empty, full};
use bytes::Bytes;
use entry::{Entry, Record};
use futures::future::BoxFuture;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Response, StatusCode, header};
use http_body::Body;
use key::QueryKey;
use memory::MemoryStore;
use policy::{RequestDirectives, Times, Usable};
use shared::SharedRecords;
use sluice_proto::config as pb;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// The largest body stored.
pub const MAX_ENTRY_BYTES: usize = 8 << 20;
/// Goma's defaults: `maxTtl` 300 s, `memoryLimit` 500Mi.
const DEFAULT_MAX_TTL: Duration = Duration::from_secs(300);
const DEFAULT_MEMORY_LIMIT: u64 = 500 << 20;
/// Statuses cacheable by default (RFC 9110 §15.1 "heuristically cacheable").
const DEFAULT_CACHEABLE: [u16; 10] = [200, 203, 204, 300, 301, 404, 405, 410, 414, 501];

static X_CACHE_STATUS: HeaderName = HeaderName::from_static("x-cache-status");
static X_GOMA_CACHE: HeaderName = HeaderName::from_static("x-goma-cache");

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Hit,
    Stale,
    Miss,
    Bypass,
}

impl Status {
    fn value(self) -> HeaderValue {
        HeaderValue::from_static(match self {
            Status::Hit => "HIT",
            Status::Stale => "STALE",
            Status::Miss => "MISS",
            Status::Bypass => "BYPASS",
        })
    }
}

/// Statuses 0..=639 as bits.
#[derive(Debug, Default)]
struct StatusSet([u64; 10]);

impl StatusSet {
    fn insert(&mut self, s: u16) {
        self.0[usize::from(s / 64)] |= 1 << (s % 64);
    }
    fn remove(&mut self, s: u16) {
        self.0[usize::from(s / 64)] &= !(1 << (s % 64));
    }
    fn contains(&self, s: StatusCode) -> bool {
        let s = s.as_u16();
        s < 640 && self.0[usize::from(s / 64)] & (1 << (s % 64)) != 0
    }
}

#[derive(Debug)]
struct Config {
    max_ttl: u64,
    max_stale: u64,
    status_header: bool,
    cacheable: StatusSet,
    query_key: QueryKey,
    max_entry: usize,
}

#[derive(Debug)]
pub struct HttpCache {
    id: Arc<str>,
    config: Arc<Config>,
    memory: Arc<MemoryStore>,
    shared: Option<Arc<SharedRecords>>,
}

fn seconds(d: Option<&prost_types::Duration>, field: &str) -> Result<Option<u64>, String> {
    let Some(d) = d else { return Ok(None) };
    if d.seconds < 0 || d.nanos < 0 {
        return Err(format!("http_cache.{field}: must not be negative"));
    }
    Ok(Some(d.seconds as u64))
}

/// Compiles an httpCache message; errors name the field (`http_cache.cacheable_statuses[1]`).
pub fn compile(
    m: &pb::Middleware,
    rule: &pb::HttpCache,
    env: &mut CompileEnv<'_>,
) -> Result<Box<dyn Middleware>, String> {
    let max_ttl = seconds(rule.max_ttl.as_ref(), "max_ttl")?.unwrap_or(DEFAULT_MAX_TTL.as_secs());
    let max_stale = seconds(rule.max_stale.as_ref(), "max_stale")?.unwrap_or(0);
    let status = |s: u32, field: String| -> Result<u16, String> {
        u16::try_from(s)
            .ok()
            .filter(|s| (100..=599).contains(s))
            .ok_or_else(|| format!("http_cache.{field}: {s} is not an HTTP status (100-599)"))
    };
    let mut cacheable = StatusSet::default();
    if rule.cacheable_statuses.is_empty() {
        DEFAULT_CACHEABLE.iter().for_each(|s| cacheable.insert(*s));
    }
    for (i, s) in rule.cacheable_statuses.iter().enumerate() {
        cacheable.insert(status(*s, format!("cacheable_statuses[{i}]"))?);
    }
    for (i, r) in rule.excluded_statuses.iter().enumerate() {
        let from = status(r.from, format!("excluded_statuses[{i}].from"))?;
        let to = status(r.to, format!("excluded_statuses[{i}].to"))?;
        if from > to {
            return Err(format!(
                "http_cache.excluded_statuses[{i}]: {from}-{to} is an empty range"
            ));
        }
        (from..=to).for_each(|s| cacheable.remove(s));
    }
    // Listing parameters implies keying by them: a narrower key could serve wrong content.
    let query_key = if !rule.query_params.is_empty() {
        if let Some(i) = rule.query_params.iter().position(|p| p.is_empty()) {
            return Err(format!("http_cache.query_params[{i}]: empty"));
        }
        QueryKey::Only(
            rule.query_params
                .iter()
                .map(|p| p.as_str().into())
                .collect(),
        )
    } else if rule.include_query_in_key {
        QueryKey::All
    } else {
        QueryKey::Ignored
    };
    let memory_limit = match rule.memory_limit_bytes {
        0 => DEFAULT_MEMORY_LIMIT,
        n => n,
    };
    let memory_limit = usize::try_from(memory_limit).unwrap_or(usize::MAX);
    let config = Config {
        max_ttl,
        max_stale,
        status_header: !rule.disable_status_header,
        cacheable,
        query_key,
        max_entry: MAX_ENTRY_BYTES.min(memory_limit / 4),
    };
    let memory = env
        .states
        .get_or_insert(&m.id, &m.state_key, || MemoryStore::new(memory_limit));
    let shared = match (rule.shared, env.shared_store) {
        (true, Some(store)) => Some(Arc::new(SharedRecords::new(
            store.clone(),
            &m.id,
            &m.state_key,
        ))),
        _ => None,
    };
    Ok(Box::new(HttpCache {
        id: m.id.as_str().into(),
        config: Arc::new(config),
        memory,
        shared,
    }))
}

/// What the response phase must do for a request the cache did not answer.
#[derive(Clone)]
enum Action {
    Bypass,
    /// Looked up and missed (or refetching): store the response if it qualifies.
    Miss {
        key: Arc<str>,
        /// The request's headers (the response's Vary names which ones matter).
        request: Option<Box<HeaderMap>>,
        credentials: bool,
        previous: Option<Arc<Record>>,
    },
    Invalidate {
        key: Arc<str>,
    },
}

/// Actions carried from the request to the response phase, by middleware (its address).
#[derive(Clone, Default)]
struct Pending(Vec<(usize, Action)>);

fn is_lookup(method: &Method) -> bool {
    method == Method::GET || method == Method::HEAD
}

fn is_unsafe(method: &Method) -> bool {
    [Method::POST, Method::PUT, Method::PATCH, Method::DELETE].contains(method)
}

impl HttpCache {
    fn owner(&self) -> usize {
        self as *const HttpCache as usize
    }

    fn key(&self, ctx: &RequestCtx<'_>) -> Arc<str> {
        key::primary_key(
            &ctx.route.name,
            ctx.scheme,
            ctx.host,
            ctx.client_uri.path(),
            ctx.client_uri.query(),
            &self.config.query_key,
        )
        .into()
    }

    fn defer(&self, ctx: &mut RequestCtx<'_>, action: Action) {
        let owner = self.owner();
        ctx.on_response(Box::new(move |resp| {
            resp.extensions_mut()
                .get_or_insert_default::<Pending>()
                .0
                .push((owner, action));
        }));
    }

    fn take(&self, resp: &mut Response<ProxyBody>) -> Option<Action> {
        let pending = resp.extensions_mut().get_mut::<Pending>()?;
        let at = pending.0.iter().position(|(o, _)| *o == self.owner())?;
        Some(pending.0.swap_remove(at).1)
    }

    fn mark(&self, headers: &mut HeaderMap, status: Status) {
        if self.config.status_header {
            headers.insert(X_CACHE_STATUS.clone(), status.value());
            headers.insert(X_GOMA_CACHE.clone(), status.value());
        }
    }

    /// Answers from `record` when it holds a usable variant; otherwise defers a miss.
    fn answer_or_miss(
        &self,
        ctx: &mut RequestCtx<'_>,
        key: Arc<str>,
        record: Option<Arc<Record>>,
        req: &RequestDirectives,
    ) -> Decision {
        let now = policy::now_ms(SystemTime::now());
        let credentials = policy::has_credentials(&ctx.parts.headers);
        if !req.no_cache
            && let Some(entry) = record.as_ref().and_then(|r| r.find(&ctx.parts.headers))
            && (entry.shareable || !credentials)
        {
            let status = match entry.times.usable(now, req) {
                Usable::Fresh => Some(Status::Hit),
                Usable::Stale => Some(Status::Stale),
                Usable::No => None,
            };
            if let Some(status) = status {
                return Decision::Respond(self.serve(
                    entry,
                    ctx.parts.method == Method::HEAD,
                    status,
                    now,
                ));
            }
        }
        let request =
            (ctx.parts.method == Method::GET).then(|| Box::new(ctx.parts.headers.clone()));
        self.defer(
            ctx,
            Action::Miss {
                key,
                request,
                credentials,
                previous: record,
            },
        );
        Decision::Continue
    }

    fn serve(&self, entry: &Entry, head: bool, status: Status, now: u64) -> Response<ProxyBody> {
        let body = if head {
            empty()
        } else {
            full(entry.body.clone())
        };
        let mut resp = Response::new(body);
        *resp.status_mut() = entry.status;
        let headers = resp.headers_mut();
        *headers = entry.headers.clone();
        if !(entry.status == StatusCode::NO_CONTENT || entry.status == StatusCode::NOT_MODIFIED) {
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(entry.body.len()));
        }
        headers.insert(header::AGE, HeaderValue::from(entry.times.age(now)));
        self.mark(headers, status);
        resp
    }

    /// Starts storing an upstream response to a GET, if it qualifies.
    fn store(
        &self,
        resp: &mut Response<ProxyBody>,
        key: Arc<str>,
        request: &HeaderMap,
        credentials: bool,
        previous: Option<Arc<Record>>,
    ) {
        let now = SystemTime::now();
        let status = resp.status();
        let Ok(lifetime) = policy::storable(
            self.config.cacheable.contains(status),
            resp.headers(),
            credentials,
            now,
            self.config.max_ttl,
        ) else {
            return;
        };
        let Some(vary) = policy::vary_names(resp.headers()) else {
            return;
        };
        let limit = self.config.max_entry;
        if resp.body().size_hint().lower() > limit as u64 {
            return;
        }
        let now_ms = policy::now_ms(now);
        let vary_values = vary
            .iter()
            .map(|n| policy::vary_value(request, n).map(Bytes::from))
            .collect();
        let headers = stored_headers(resp.headers());
        let times = Times::new(now_ms, &lifetime, self.config.max_stale);
        let sink = Sink {
            id: self.id.clone(),
            memory: self.memory.clone(),
            shared: self.shared.clone(),
        };
        let commit = move |body: Bytes| {
            let entry = Entry {
                vary_values,
                status,
                headers,
                body,
                times,
                shareable: lifetime.shareable,
            };
            sink.put(
                Record::with(previous.as_deref(), key, vary, entry, now_ms),
                now_ms,
            );
        };
        if resp.body().is_end_stream() {
            commit(Bytes::new());
            return;
        }
        let upstream = std::mem::replace(resp.body_mut(), empty());
        *resp.body_mut() = http_body_util::BodyExt::boxed_unsync(body::TeeBody::new(
            upstream,
            limit,
            Box::new(commit),
        ));
    }
}

/// Where a finished copy goes.
struct Sink {
    id: Arc<str>,
    memory: Arc<MemoryStore>,
    shared: Option<Arc<SharedRecords>>,
}

impl Sink {
    fn put(self, record: Record, now_ms: u64) {
        let Some(shared) = self.shared.filter(|s| s.usable(now_ms)) else {
            self.memory.put(record);
            return;
        };
        // Storing never delays the client: the shared store is written in the background.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            self.memory.put(record);
            return;
        };
        runtime.spawn(async move {
            if let Err(e) = shared.put(&record, now_ms).await {
                shared.failed(&self.id, "write", &e, now_ms);
                self.memory.put(record);
            }
        });
    }
}

/// The response headers kept with an entry: not the connection's, not the ones set per answer.
fn stored_headers(headers: &HeaderMap) -> HeaderMap {
    let mut kept = headers.clone();
    let listed: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for name in listed {
        kept.remove(name);
    }
    for name in [
        header::CONNECTION,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
        header::TE,
        header::TRAILER,
        header::PROXY_AUTHENTICATE,
        header::AGE,
        header::CONTENT_LENGTH,
    ] {
        kept.remove(name);
    }
    for name in ["keep-alive", "proxy-connection"] {
        kept.remove(name);
    }
    kept.remove(&X_CACHE_STATUS);
    kept.remove(&X_GOMA_CACHE);
    kept
}

impl Middleware for HttpCache {
    fn decide(&self, ctx: &mut RequestCtx<'_>) -> Decision {
        let method = &ctx.parts.method;
        if is_lookup(method) {
            let req = policy::request_directives(&ctx.parts.headers);
            if req.no_store {
                self.defer(ctx, Action::Bypass);
                return Decision::Continue;
            }
            if self.shared.is_some() {
                return Decision::Async;
            }
            let key = self.key(ctx);
            let record = self.memory.get(&key, policy::now_ms(SystemTime::now()));
            self.answer_or_miss(ctx, key, record, &req)
        } else if is_unsafe(method) {
            if self.shared.is_some() {
                return Decision::Async;
            }
            let key = self.key(ctx);
            self.defer(ctx, Action::Invalidate { key });
            Decision::Continue
        } else {
            self.defer(ctx, Action::Bypass);
            Decision::Continue
        }
    }

    fn decide_async<'a>(&'a self, ctx: &'a mut RequestCtx<'_>) -> BoxFuture<'a, Decision> {
        Box::pin(async move {
            let Some(shared) = &self.shared else {
                return Decision::Continue;
            };
            let key = self.key(ctx);
            let now = policy::now_ms(SystemTime::now());
            if is_unsafe(&ctx.parts.method) {
                // Dropped before forwarding too, so the writer's next read cannot see it; the
                // response phase drops it again (what concurrent readers stored meanwhile).
                self.memory.remove(&key);
                if let Err(e) = shared.remove(&key).await {
                    shared.failed(&self.id, "delete", &e, now);
                }
                self.defer(ctx, Action::Invalidate { key });
                return Decision::Continue;
            }
            let req = policy::request_directives(&ctx.parts.headers);
            let record = match shared.get(&key).await {
                Ok(record) => record.map(Arc::new),
                Err(e) => {
                    shared.failed(&self.id, "read", &e, now);
                    self.memory.get(&key, now)
                }
            };
            self.answer_or_miss(ctx, key, record, &req)
        })
    }

    fn on_response(&self, ctx: &ResponseCtx<'_>, resp: &mut Response<ProxyBody>) {
        let Some(action) = self.take(resp) else {
            // Answered by this cache (HIT/STALE), or by a middleware before it ran.
            return;
        };
        let status = match action {
            Action::Bypass => Status::Bypass,
            Action::Invalidate { key } => {
                let s = resp.status();
                if ctx.from_upstream && (s.is_success() || s.is_redirection()) {
                    self.memory.remove(&key);
                    if let Some(shared) = self.shared.clone()
                        && let Ok(runtime) = tokio::runtime::Handle::try_current()
                    {
                        let id = self.id.clone();
                        runtime.spawn(async move {
                            if let Err(e) = shared.remove(&key).await {
                                let now = policy::now_ms(SystemTime::now());
                                shared.failed(&id, "delete", &e, now);
                            }
                        });
                    }
                }
                Status::Bypass
            }
            Action::Miss {
                key,
                request,
                credentials,
                previous,
            } => {
                // The gateway's own answers (upstream down, timeouts) are never stored.
                if ctx.from_upstream
                    && let Some(request) = request
                {
                    self.store(resp, key, &request, credentials, previous);
                }
                Status::Miss
            }
        };
        self.mark(resp.headers_mut(), status);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::middleware::state::States;
    use std::collections::BTreeMap;

    fn middleware(state_key: &str, rule: pb::HttpCache) -> pb::Middleware {
        pb::Middleware {
            id: "Middleware default/cache".into(),
            state_key: state_key.into(),
            scope: None,
            kind: Some(pb::middleware::Kind::HttpCache(rule)),
        }
    }

    fn compile_in(states: &mut States, m: &pb::Middleware) -> Result<Box<dyn Middleware>, String> {
        let secrets = BTreeMap::new();
        let mut env = CompileEnv::new(states, &secrets, None, None);
        let Some(pb::middleware::Kind::HttpCache(rule)) = &m.kind else {
            unreachable!()
        };
        compile(m, rule, &mut env)
    }

    #[test]
    fn bad_rules_name_the_field() {
        let mut states = States::default();
        let err = |rule: pb::HttpCache| {
            let mut states = States::default();
            compile_in(&mut states, &middleware("k", rule)).unwrap_err()
        };
        assert_eq!(
            err(pb::HttpCache {
                cacheable_statuses: vec![200, 99],
                ..Default::default()
            }),
            "http_cache.cacheable_statuses[1]: 99 is not an HTTP status (100-599)"
        );
        assert_eq!(
            err(pb::HttpCache {
                excluded_statuses: vec![pb::StatusRange { from: 599, to: 500 }],
                ..Default::default()
            }),
            "http_cache.excluded_statuses[0]: 599-500 is an empty range"
        );
        assert_eq!(
            err(pb::HttpCache {
                max_ttl: Some(prost_types::Duration {
                    seconds: -1,
                    nanos: 0
                }),
                ..Default::default()
            }),
            "http_cache.max_ttl: must not be negative"
        );
        assert!(compile_in(&mut states, &middleware("k", pb::HttpCache::default())).is_ok());
    }

    #[test]
    fn statuses_default_list_minus_exclusions() {
        let mut set = StatusSet::default();
        DEFAULT_CACHEABLE.iter().for_each(|s| set.insert(*s));
        (400..=499).for_each(|s| set.remove(s));
        assert!(set.contains(StatusCode::OK));
        assert!(set.contains(StatusCode::NOT_IMPLEMENTED));
        assert!(!set.contains(StatusCode::NOT_FOUND));
        assert!(!set.contains(StatusCode::INTERNAL_SERVER_ERROR));
    }

    #[test]
    fn the_memory_store_survives_recompiles_and_resets_with_the_rule() {
        let mut states = States::default();
        let a = middleware("k1", pb::HttpCache::default());
        let first = compile_in(&mut states, &a).unwrap();
        let again = compile_in(&mut states, &a).unwrap();
        let changed = compile_in(&mut states, &middleware("k2", pb::HttpCache::default())).unwrap();
        assert_eq!(states.len(), 2, "one store per (id, state_key)");
        drop((first, changed));
        states.retain_used();
        assert_eq!(
            states.len(),
            1,
            "the recompiled middleware still holds its store"
        );
        drop(again);
        states.retain_used();
        assert!(states.is_empty());
    }
}
