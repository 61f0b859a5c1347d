//! Choosing a route's backend (Goma canary semantics): exclusive pinned backends first, then
//! non-exclusive pinned ones, then weighted balancing over the ordinary (non-exclusive) backends.

use super::header_modifier::HeaderModifier;
use super::matcher::{RequestView, StringMatcher};
use http::HeaderName;
use sluice_proto::config as pb;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Where a canary condition reads its value.
#[derive(Debug)]
pub enum ConditionSource {
    Header(HeaderName),
    Cookie(Box<str>),
    Query(Box<str>),
    ClientIp,
}

#[derive(Debug)]
pub struct Condition {
    pub source: ConditionSource,
    pub value: StringMatcher,
}

impl Condition {
    fn holds(&self, req: &RequestView<'_>) -> bool {
        match &self.source {
            ConditionSource::Header(name) => self.value.eval_header(req.headers, name),
            ConditionSource::Cookie(name) => self.value.eval(req.cookie(name)),
            ConditionSource::Query(name) => self.value.eval(req.query_param(name).as_deref()),
            ConditionSource::ClientIp => {
                // An IP fits in 45 bytes; format on the stack instead of allocating a String.
                let mut buf = StackStr::<48>::new();
                let _ = write!(buf, "{}", req.client_ip);
                self.value.eval(Some(buf.as_str()))
            }
        }
    }
}

/// A compiled `WeightedBackend`.
#[derive(Debug)]
pub struct Backend {
    /// Empty: an unresolved reference, whose share is answered 500.
    pub cluster: Arc<str>,
    pub weight: u32,
    pub conditions: Vec<Condition>,
    pub exclusive: bool,
    pub priority: i32,
    /// Applied after the route's own modifiers, to this backend's requests (responses).
    pub request_headers: HeaderModifier,
    pub response_headers: HeaderModifier,
}

impl Backend {
    pub fn compile(b: &pb::WeightedBackend) -> Result<Backend, String> {
        use pb::backend_match::Source;
        let mut conditions = Vec::with_capacity(b.r#match.len());
        for (i, m) in b.r#match.iter().enumerate() {
            let source = match Source::try_from(m.source) {
                Ok(Source::Header) => {
                    ConditionSource::Header(HeaderName::from_bytes(m.name.as_bytes()).map_err(
                        |_| format!("match[{i}].name: invalid header name {:?}", m.name),
                    )?)
                }
                Ok(Source::Cookie) => ConditionSource::Cookie(m.name.as_str().into()),
                Ok(Source::Query) => ConditionSource::Query(m.name.as_str().into()),
                Ok(Source::Ip) => ConditionSource::ClientIp,
                Err(_) => return Err(format!("match[{i}].source: unknown value {}", m.source)),
            };
            let value = m
                .value
                .as_ref()
                .ok_or(format!("match[{i}].value: not set"))?;
            let value =
                StringMatcher::compile(value).map_err(|e| format!("match[{i}].value.{e}"))?;
            conditions.push(Condition { source, value });
        }
        Ok(Backend {
            cluster: b.cluster.as_str().into(),
            weight: b.weight,
            conditions,
            exclusive: b.exclusive,
            priority: b.priority,
            request_headers: HeaderModifier::compile(b.request_headers.as_ref())
                .map_err(|e| format!("request_headers.{e}"))?,
            response_headers: HeaderModifier::compile(b.response_headers.as_ref())
                .map_err(|e| format!("response_headers.{e}"))?,
        })
    }

    fn pinned(&self, req: &RequestView<'_>) -> bool {
        !self.conditions.is_empty() && self.conditions.iter().all(|c| c.holds(req))
    }
}

/// A route's backends plus the round-robin counter used when weights are all equal.
#[derive(Debug)]
pub struct BackendSet {
    pub backends: Vec<Backend>,
    rr: AtomicUsize,
}

impl BackendSet {
    pub fn new(backends: Vec<Backend>) -> Self {
        BackendSet {
            backends,
            rr: AtomicUsize::new(0),
        }
    }

    /// Whether no backend can receive ordinary traffic: every weight is 0 (or there is no
    /// backend at all).
    pub fn carries_nothing(&self) -> bool {
        self.backends.iter().all(|b| b.weight == 0)
    }

    /// Picks the backend for a request, or None when no backend may take it (500 when the
    /// route [carries nothing](Self::carries_nothing), else 503).
    pub fn select(&self, req: &RequestView<'_>, rng: &mut fastrand::Rng) -> Option<&Backend> {
        self.choose(self.pinned(req), rng, true, |_| true)
    }

    /// The backends whose conditions all hold for `req`, as a mask (backends past the 64th can
    /// only be reached through ordinary balancing). Computed once per request, so a retry
    /// chooses again without the request.
    pub fn pinned(&self, req: &RequestView<'_>) -> u64 {
        let mut pinned: u64 = 0;
        for (i, b) in self.backends.iter().enumerate().take(64) {
            if b.pinned(req) {
                pinned |= 1 << i;
            }
        }
        pinned
    }

    /// Picks among the backends `usable` admits (an unusable backend is treated as absent):
    /// the highest-priority pinned exclusive backend, else a weighted pick over the pinned
    /// non-exclusive ones, else over the ordinary (non-exclusive) ones. `rotate`: equal weights
    /// take turns; otherwise (a retry) the pick is random, so retries do not shift the turns of
    /// first attempts.
    pub fn choose(
        &self,
        pinned: u64,
        rng: &mut fastrand::Rng,
        rotate: bool,
        usable: impl Fn(&Backend) -> bool,
    ) -> Option<&Backend> {
        let is_pinned = |i: usize| i < 64 && pinned & (1 << i) != 0;
        let mut best_exclusive: Option<&Backend> = None;
        if pinned != 0 {
            for (i, b) in self.backends.iter().enumerate() {
                if is_pinned(i)
                    && b.exclusive
                    && best_exclusive.is_none_or(|e| b.priority > e.priority)
                    && usable(b)
                {
                    best_exclusive = Some(b);
                }
            }
        }
        if best_exclusive.is_some() {
            return best_exclusive;
        }
        let non_exclusive_pinned = |i: usize, b: &Backend| !b.exclusive && is_pinned(i);
        if pinned != 0
            && self
                .backends
                .iter()
                .enumerate()
                .any(|(i, b)| non_exclusive_pinned(i, b) && usable(b))
        {
            // Pinned backends receive traffic even at weight 0.
            return self.pick(
                |i, b| non_exclusive_pinned(i, b) && usable(b),
                true,
                rotate,
                rng,
            );
        }
        self.pick(|_, b| !b.exclusive && usable(b), false, rotate, rng)
    }

    /// Weighted pick among the backends `eligible` admits: round robin (with `rotate`) when all
    /// weights are equal, weighted random otherwise (weight 0 never chosen). Two passes, no
    /// allocation.
    fn pick(
        &self,
        eligible: impl Fn(usize, &Backend) -> bool,
        zero_ok: bool,
        rotate: bool,
        rng: &mut fastrand::Rng,
    ) -> Option<&Backend> {
        let mut count = 0usize;
        let mut total = 0u64;
        let mut first_weight = None;
        let mut equal = true;
        for (i, b) in self.backends.iter().enumerate() {
            if eligible(i, b) {
                count += 1;
                total += u64::from(b.weight);
                match first_weight {
                    None => first_weight = Some(b.weight),
                    Some(w) => equal &= w == b.weight,
                }
            }
        }
        if count == 0 || (total == 0 && !zero_ok) {
            return None;
        }
        let eligible_iter = self
            .backends
            .iter()
            .enumerate()
            .filter(|(i, b)| eligible(*i, b));
        if equal || total == 0 {
            let n = if rotate {
                self.rr.fetch_add(1, Ordering::Relaxed) % count
            } else {
                rng.usize(0..count)
            };
            return eligible_iter.map(|(_, b)| b).nth(n);
        }
        let mut point = rng.u64(0..total);
        for (_, b) in eligible_iter {
            let w = u64::from(b.weight);
            if point < w {
                return Some(b);
            }
            point -= w;
        }
        None
    }
}

/// A fixed-capacity string on the stack for formatting small values.
struct StackStr<const N: usize> {
    buf: [u8; N],
    len: usize,
}

impl<const N: usize> StackStr<N> {
    fn new() -> Self {
        StackStr {
            buf: [0; N],
            len: 0,
        }
    }

    fn as_str(&self) -> &str {
        std::str::from_utf8(&self.buf[..self.len]).unwrap_or("")
    }
}

impl<const N: usize> std::fmt::Write for StackStr<N> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let end = self.len + s.len();
        if end > N {
            return Err(std::fmt::Error);
        }
        self.buf[self.len..end].copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::router::host::NormalizedHost;
    use http::{HeaderMap, Method};
    use std::collections::HashMap;
    use std::net::IpAddr;

    fn exact(name: &str, source: pb::backend_match::Source, value: &str) -> pb::BackendMatch {
        pb::BackendMatch {
            source: source as i32,
            name: name.into(),
            value: Some(pb::StringMatch {
                value: value.into(),
                ..Default::default()
            }),
        }
    }

    fn backend(
        cluster: &str,
        weight: u32,
        m: Vec<pb::BackendMatch>,
        exclusive: bool,
        prio: i32,
    ) -> Backend {
        Backend::compile(&pb::WeightedBackend {
            cluster: cluster.into(),
            weight,
            r#match: m,
            exclusive,
            priority: prio,
            ..Default::default()
        })
        .unwrap()
    }

    fn pick(
        set: &BackendSet,
        headers: &[(&str, &str)],
        query: Option<&str>,
        rng: &mut fastrand::Rng,
    ) -> Option<String> {
        let mut map = HeaderMap::new();
        for (k, v) in headers {
            map.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        let host = NormalizedHost::new("h");
        let view = RequestView {
            host: host.as_str(),
            path: "/",
            query,
            method: &Method::GET,
            headers: &map,
            client_ip: IpAddr::from([10, 0, 0, 7]),
        };
        set.select(&view, rng).map(|b| b.cluster.to_string())
    }

    use pb::backend_match::Source;

    #[test]
    fn exclusive_canary_pinned_by_header() {
        let set = BackendSet::new(vec![
            backend("stable", 1, vec![], false, 0),
            backend(
                "canary-low",
                1,
                vec![exact("X-Canary", Source::Header, "1")],
                true,
                1,
            ),
            backend(
                "canary",
                1,
                vec![exact("x-canary", Source::Header, "1")],
                true,
                5,
            ),
        ]);
        let mut rng = fastrand::Rng::with_seed(1);
        for _ in 0..20 {
            assert_eq!(
                pick(&set, &[("x-canary", "1")], None, &mut rng).as_deref(),
                Some("canary")
            );
            // Unmatched traffic never reaches an exclusive backend.
            assert_eq!(
                pick(&set, &[("x-canary", "0")], None, &mut rng).as_deref(),
                Some("stable")
            );
            assert_eq!(pick(&set, &[], None, &mut rng).as_deref(), Some("stable"));
        }
    }

    #[test]
    fn non_exclusive_pinned_and_other_sources() {
        let set = BackendSet::new(vec![
            backend("stable", 1, vec![], false, 0),
            backend(
                "beta",
                0,
                vec![exact("beta", Source::Query, "on")],
                false,
                0,
            ),
            backend(
                "cookie",
                1,
                vec![exact("grp", Source::Cookie, "b")],
                false,
                0,
            ),
            backend(
                "ip",
                1,
                vec![
                    exact("", Source::Ip, "10.0.0.7"),
                    exact("x-ip", Source::Header, "y"),
                ],
                false,
                0,
            ),
        ]);
        let mut rng = fastrand::Rng::with_seed(2);
        // Pinned at weight 0 still receives its pinned traffic.
        assert_eq!(
            pick(&set, &[], Some("beta=on"), &mut rng).as_deref(),
            Some("beta")
        );
        assert_eq!(
            pick(&set, &[("cookie", "a=1; grp=b")], None, &mut rng).as_deref(),
            Some("cookie")
        );
        // Every condition must hold.
        assert_eq!(
            pick(&set, &[("x-ip", "y")], None, &mut rng).as_deref(),
            Some("ip")
        );
        let mut seen = HashMap::new();
        for _ in 0..300 {
            *seen
                .entry(pick(&set, &[], None, &mut rng).unwrap())
                .or_insert(0) += 1;
        }
        // Unpinned traffic balances over the non-exclusive backends; "beta" has weight 0.
        assert!(!seen.contains_key("beta"), "{seen:?}");
        assert!(
            seen["stable"] > 50 && seen["cookie"] > 50 && seen["ip"] > 50,
            "{seen:?}"
        );
    }

    #[test]
    fn weighted_80_20_and_zero_weight() {
        let set = BackendSet::new(vec![
            backend("a", 80, vec![], false, 0),
            backend("b", 20, vec![], false, 0),
            backend("z", 0, vec![], false, 0),
        ]);
        let mut rng = fastrand::Rng::with_seed(42);
        let mut a = 0;
        for _ in 0..10_000 {
            match pick(&set, &[], None, &mut rng).as_deref() {
                Some("a") => a += 1,
                Some("b") => {}
                other => panic!("unexpected pick {other:?}"),
            }
        }
        assert!((7_700..=8_300).contains(&a), "a got {a} of 10000");
    }

    #[test]
    fn equal_weights_round_robin() {
        let set = BackendSet::new(vec![
            backend("a", 3, vec![], false, 0),
            backend("b", 3, vec![], false, 0),
        ]);
        let mut rng = fastrand::Rng::with_seed(3);
        let picks: Vec<_> = (0..4)
            .map(|_| pick(&set, &[], None, &mut rng).unwrap())
            .collect();
        assert_eq!(picks, ["a", "b", "a", "b"]);
    }

    #[test]
    fn no_eligible_backend() {
        let only_exclusive = BackendSet::new(vec![backend(
            "c",
            1,
            vec![exact("x", Source::Header, "1")],
            true,
            0,
        )]);
        let zero = BackendSet::new(vec![
            backend("a", 0, vec![], false, 0),
            backend("b", 0, vec![], false, 0),
        ]);
        let mut rng = fastrand::Rng::with_seed(4);
        assert_eq!(pick(&only_exclusive, &[], None, &mut rng), None);
        assert_eq!(pick(&zero, &[], None, &mut rng), None);
    }

    #[test]
    fn unusable_backends_are_treated_as_absent() {
        let set = BackendSet::new(vec![
            backend("a", 1, vec![], false, 0),
            backend("b", 1, vec![], false, 0),
            backend(
                "canary",
                1,
                vec![exact("x-canary", Source::Header, "1")],
                true,
                0,
            ),
        ]);
        let mut map = HeaderMap::new();
        map.insert("x-canary", "1".parse().unwrap());
        let host = NormalizedHost::new("h");
        let view = RequestView {
            host: host.as_str(),
            path: "/",
            query: None,
            method: &Method::GET,
            headers: &map,
            client_ip: IpAddr::from([10, 0, 0, 7]),
        };
        let pinned = set.pinned(&view);
        assert_eq!(pinned, 0b100);
        let mut rng = fastrand::Rng::with_seed(5);
        let mut choose = |usable: &dyn Fn(&Backend) -> bool| {
            set.choose(pinned, &mut rng, true, usable)
                .map(|b| b.cluster.to_string())
        };
        assert_eq!(choose(&|_| true).as_deref(), Some("canary"));
        // A pinned canary that cannot serve falls back to ordinary balancing, which skips
        // unusable backends too.
        for _ in 0..4 {
            assert_eq!(
                choose(&|b| !matches!(&*b.cluster, "canary" | "a")).as_deref(),
                Some("b")
            );
        }
        assert_eq!(choose(&|_| false), None);
    }
}
