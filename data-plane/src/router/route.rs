//! A compiled Route: hostnames, matches, allowed methods and its action, built once per resource
//! version and shared by every snapshot while the resource is unchanged.

use super::backend::{Backend, BackendSet};
use super::cors::Cors;
use super::header_modifier::HeaderModifier;
use super::host::{HostPattern, validate_hostname};
use super::matcher::{CompiledMatch, parse_method};
use super::redirect::Redirect;
use super::rewrite::Rewrite;
use crate::metrics::RouteStats;
use crate::middleware::Chain;
use bytes::Bytes;
use http::{HeaderValue, Method, StatusCode};
use sluice_proto::config as pb;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug)]
pub struct CompiledRoute {
    pub name: Arc<str>,
    pub priority: i32,
    /// Tie-break before the name: smaller wins (Gateway API: the oldest route).
    pub creation_order: i64,
    /// Shared with the Compiler's allocation of each listener name (see
    /// [`CompiledRoute::share_listener_names`]).
    pub listeners: Box<[Arc<str>]>,
    /// Empty means any host.
    pub hostnames: Vec<HostPattern>,
    /// TlsCertificate Secret served for this route's hostnames on TLS listeners.
    pub certificate_secret: Option<Arc<str>>,
    /// Never empty: a route without matches gets one match-everything entry.
    pub matches: Vec<CompiledMatch>,
    pub allowed_methods: Vec<Method>,
    /// Precomputed `Allow` header for 405 answers.
    pub allow: Option<HeaderValue>,
    pub action: RouteAction,
    /// Block SQL injection, XSS and path traversal attempts (see `proxy::exploit`).
    pub exploit_protection: bool,
    /// Applied to the request (after the forwarding headers) before it is forwarded and mirrored.
    pub request_headers: HeaderModifier,
    /// Applied to every response of this route, the gateway's own answers included.
    pub response_headers: HeaderModifier,
    pub mirrors: Vec<Mirror>,
    /// Boxed: rare, and ~200 bytes inline in every route.
    pub cors: Option<Box<Cors>>,
    /// Metric handles, set by a Compiler that records metrics; None when `disable_metrics`.
    pub stats: Option<Arc<RouteStats>>,
    /// Set by the Compiler (middlewares need its state registry); empty from `compile`.
    pub middlewares: Chain,
}

#[derive(Debug)]
pub enum RouteAction {
    Direct(DirectResponse),
    Forward(Forward),
    Redirect(Redirect),
}

/// A compiled `RequestMirror`: a copy of `numerator` in `denominator` requests goes to `cluster`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mirror {
    pub cluster: Arc<str>,
    pub numerator: u32,
    /// Never 0 (0 in the resource means every request: 1 in 1).
    pub denominator: u32,
}

impl Mirror {
    fn compile(m: &pb::RequestMirror) -> Result<Mirror, String> {
        if m.cluster.is_empty() {
            return Err("cluster: empty".into());
        }
        let (numerator, denominator) = match m.denominator {
            0 => (1, 1),
            d if m.numerator > d => {
                return Err(format!(
                    "numerator: {} is more than the denominator {d}",
                    m.numerator
                ));
            }
            d => (m.numerator, d),
        };
        Ok(Mirror {
            cluster: m.cluster.as_str().into(),
            numerator,
            denominator,
        })
    }

    /// Whether this request is mirrored (`roll` uniform in 0..denominator).
    pub fn takes(&self, roll: u32) -> bool {
        roll < self.numerator
    }
}

#[derive(Debug)]
pub struct DirectResponse {
    pub status: StatusCode,
    pub body: Bytes,
    pub content_type: HeaderValue,
}

#[derive(Debug)]
pub struct Forward {
    pub backends: BackendSet,
    pub rewrite: Option<Rewrite>,
    pub preserve_host: bool,
    /// Host sent upstream (URLRewrite hostname); wins over `preserve_host`.
    pub host_rewrite: Option<HeaderValue>,
    /// The whole request, retries included.
    pub timeout: Option<Duration>,
    /// One attempt, until the response headers.
    pub backend_timeout: Option<Duration>,
    pub retry: Retry,
}

/// A compiled `RetryPolicy`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retry {
    /// Retries after the first attempt.
    pub attempts: u32,
    /// Statuses retried when the request can be replayed (idempotent, empty body).
    pub statuses: Vec<StatusCode>,
    /// Wait before the first retry; doubled for each further one.
    pub backoff: Duration,
    /// Whether a retry may go back to an endpoint already tried when no other is left.
    pub reuse_endpoint: bool,
}

/// More retries than this only prolong an outage (and the retry budget caps them anyway).
pub const MAX_RETRY_ATTEMPTS: u32 = 10;
const DEFAULT_BACKOFF: Duration = Duration::from_millis(25);

impl Default for Retry {
    /// Without a policy a request whose connection failed is retried once on another endpoint
    /// (it never reached a backend, so that is safe for every method); nothing else is.
    fn default() -> Self {
        Retry {
            attempts: 1,
            statuses: Vec::new(),
            backoff: DEFAULT_BACKOFF,
            reuse_endpoint: false,
        }
    }
}

impl Retry {
    fn compile(p: &pb::RetryPolicy) -> Result<Retry, String> {
        if p.attempts > MAX_RETRY_ATTEMPTS {
            return Err(format!(
                "attempts: {} is more than {MAX_RETRY_ATTEMPTS}",
                p.attempts
            ));
        }
        let mut statuses = Vec::with_capacity(p.statuses.len());
        for (i, s) in p.statuses.iter().enumerate() {
            let status = u16::try_from(*s)
                .ok()
                .filter(|s| (100..=599).contains(s))
                .and_then(|s| StatusCode::from_u16(s).ok())
                .ok_or(format!("statuses[{i}]: {s} is not in 100..=599"))?;
            statuses.push(status);
        }
        let backoff = match &p.backoff {
            None => DEFAULT_BACKOFF,
            Some(d) => to_duration(d).map_err(|e| format!("backoff: {e}"))?,
        };
        Ok(Retry {
            attempts: p.attempts,
            statuses,
            backoff,
            reuse_endpoint: true,
        })
    }
}

impl CompiledRoute {
    /// Compiles everything that depends on the route alone; references are checked elsewhere.
    /// Errors name the offending field.
    pub fn compile(r: &pb::Route) -> Result<CompiledRoute, String> {
        if r.name.is_empty() {
            return Err("name: empty".into());
        }
        let mut hostnames = Vec::with_capacity(r.hostnames.len());
        for (i, h) in r.hostnames.iter().enumerate() {
            validate_hostname(h).map_err(|e| format!("hostnames[{i}]: {e}"))?;
            if h.is_empty() {
                return Err(format!("hostnames[{i}]: empty"));
            }
            hostnames.push(HostPattern::parse(h));
        }
        let mut matches = Vec::with_capacity(r.matches.len().max(1));
        for (i, m) in r.matches.iter().enumerate() {
            matches.push(CompiledMatch::compile(m).map_err(|e| format!("matches[{i}].{e}"))?);
        }
        if matches.is_empty() {
            matches.push(CompiledMatch::match_all());
        }
        let mut allowed_methods = Vec::with_capacity(r.allowed_methods.len());
        for (i, m) in r.allowed_methods.iter().enumerate() {
            allowed_methods
                .push(parse_method(m).map_err(|e| format!("allowed_methods[{i}]: {e}"))?);
        }
        let allow = if allowed_methods.is_empty() {
            None
        } else {
            let joined: Vec<&str> = allowed_methods.iter().map(Method::as_str).collect();
            Some(
                HeaderValue::from_str(&joined.join(", "))
                    .map_err(|_| "allowed_methods: not a valid header value".to_string())?,
            )
        };
        let action = match &r.action {
            None => return Err("action: not set (forward or direct_response required)".into()),
            Some(pb::route::Action::DirectResponse(d)) => {
                RouteAction::Direct(compile_direct(d).map_err(|e| format!("direct_response.{e}"))?)
            }
            Some(pb::route::Action::Forward(f)) => {
                RouteAction::Forward(compile_forward(f).map_err(|e| format!("forward.{e}"))?)
            }
            Some(pb::route::Action::Redirect(d)) => {
                RouteAction::Redirect(Redirect::compile(d).map_err(|e| format!("redirect.{e}"))?)
            }
        };
        let request_headers = HeaderModifier::compile(r.request_headers.as_ref())
            .map_err(|e| format!("request_headers.{e}"))?;
        let response_headers = HeaderModifier::compile(r.response_headers.as_ref())
            .map_err(|e| format!("response_headers.{e}"))?;
        let mut mirrors = Vec::with_capacity(r.mirrors.len());
        for (i, m) in r.mirrors.iter().enumerate() {
            mirrors.push(Mirror::compile(m).map_err(|e| format!("mirrors[{i}].{e}"))?);
        }
        let cors = match &r.cors {
            Some(c) => Some(Box::new(Cors::compile(c).map_err(|e| format!("cors.{e}"))?)),
            None => None,
        };
        Ok(CompiledRoute {
            name: r.name.as_str().into(),
            priority: r.priority,
            creation_order: r.creation_order,
            listeners: r.listeners.iter().map(|l| Arc::from(l.as_str())).collect(),
            hostnames,
            certificate_secret: (!r.certificate_secret.is_empty())
                .then(|| r.certificate_secret.as_str().into()),
            matches,
            allowed_methods,
            allow,
            action,
            exploit_protection: r.exploit_protection,
            request_headers,
            response_headers,
            mirrors,
            cors,
            stats: None,
            middlewares: Chain::default(),
        })
    }

    /// Points backend and mirror cluster names at `shared`'s allocation of the same name (the
    /// compiled clusters' own), so 10,000 routes do not hold 10,000 more copies.
    pub fn share_cluster_names(&mut self, shared: impl Fn(&str) -> Option<Arc<str>>) {
        let share = |name: &mut Arc<str>| {
            if let Some(s) = shared(name) {
                *name = s;
            }
        };
        if let RouteAction::Forward(f) = &mut self.action {
            f.backends
                .backends
                .iter_mut()
                .for_each(|b| share(&mut b.cluster));
        }
        self.mirrors.iter_mut().for_each(|m| share(&mut m.cluster));
    }

    /// Points listener names at `shared`'s allocation of the same name: every route of a
    /// gateway names the same few listeners.
    pub fn share_listener_names(&mut self, shared: impl Fn(&str) -> Option<Arc<str>>) {
        for name in self.listeners.iter_mut() {
            if let Some(s) = shared(name) {
                *name = s;
            }
        }
    }

    /// The `name` label of a route's metrics.
    pub fn metrics_label(r: &pb::Route) -> &str {
        if r.metrics_name.is_empty() {
            &r.name
        } else {
            &r.metrics_name
        }
    }

    pub fn allows(&self, method: &Method) -> bool {
        self.allowed_methods.is_empty() || self.allowed_methods.contains(method)
    }

    /// The cluster names this route sends requests to (backends and mirrors); unresolved
    /// backends (empty names) are left out.
    pub fn clusters(&self) -> impl Iterator<Item = &str> {
        let backends: &[Backend] = match &self.action {
            RouteAction::Forward(f) => &f.backends.backends,
            RouteAction::Direct(_) | RouteAction::Redirect(_) => &[],
        };
        backends
            .iter()
            .map(|b| &*b.cluster)
            .filter(|c| !c.is_empty())
            .chain(self.mirrors.iter().map(|m| &*m.cluster))
    }
}

fn compile_direct(d: &pb::DirectResponse) -> Result<DirectResponse, String> {
    let status = u16::try_from(d.status)
        .ok()
        .filter(|s| (100..=599).contains(s))
        .and_then(|s| StatusCode::from_u16(s).ok())
        .ok_or(format!("status: {} is not in 100..=599", d.status))?;
    let content_type = if d.content_type.is_empty() {
        HeaderValue::from_static("text/plain; charset=utf-8")
    } else {
        HeaderValue::from_str(&d.content_type).map_err(|_| {
            format!(
                "content_type: {:?} is not a valid header value",
                d.content_type
            )
        })?
    };
    Ok(DirectResponse {
        status,
        body: Bytes::from(d.body.clone()),
        content_type,
    })
}

fn compile_forward(f: &pb::ForwardAction) -> Result<Forward, String> {
    // No backends is valid (Gateway API: a rule whose references all failed): answered 500.
    let mut backends = Vec::with_capacity(f.backends.len());
    for (i, b) in f.backends.iter().enumerate() {
        backends.push(Backend::compile(b).map_err(|e| format!("backends[{i}].{e}"))?);
    }
    let rewrite = match &f.path_rewrite {
        Some(r) => Rewrite::compile(r).map_err(|e| format!("path_rewrite.{e}"))?,
        None => None,
    };
    // A zero timeout is treated as unset rather than failing every request (both timeouts).
    let timeout = match &f.timeout {
        None => None,
        Some(d) => {
            Some(to_duration(d).map_err(|e| format!("timeout: {e}"))?).filter(|d| !d.is_zero())
        }
    };
    let backend_timeout = match &f.backend_timeout {
        None => None,
        Some(d) => Some(to_duration(d).map_err(|e| format!("backend_timeout: {e}"))?)
            .filter(|d| !d.is_zero()),
    };
    let host_rewrite = if f.host_rewrite.is_empty() {
        None
    } else {
        validate_hostname(&f.host_rewrite)
            .ok()
            .filter(|_| !f.host_rewrite.starts_with("*."))
            .and_then(|_| HeaderValue::from_str(&f.host_rewrite).ok())
            .map(Some)
            .ok_or(format!(
                "host_rewrite: {:?} is not a valid hostname",
                f.host_rewrite
            ))?
    };
    let retry = match &f.retry {
        None => Retry::default(),
        Some(p) => Retry::compile(p).map_err(|e| format!("retry.{e}"))?,
    };
    Ok(Forward {
        backends: BackendSet::new(backends),
        rewrite,
        preserve_host: f.preserve_host,
        host_rewrite,
        timeout,
        backend_timeout,
        retry,
    })
}

/// Converts a protobuf Duration, rejecting negative or out-of-range values.
pub fn to_duration(d: &prost_types::Duration) -> Result<Duration, String> {
    if d.seconds < 0 || d.nanos < 0 || d.nanos >= 1_000_000_000 {
        return Err(format!("invalid duration {}s {}ns", d.seconds, d.nanos));
    }
    Ok(Duration::new(d.seconds as u64, d.nanos as u32))
}
