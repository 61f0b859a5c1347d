//! `stripQuery`: removes query parameters from the upstream target, for some methods and paths
//! only if configured. The other parameters keep their order and their encoding byte for byte.

use super::upstream_uri::replace;
use super::{Decision, Middleware, RequestCtx};
use crate::proxy::response;
use crate::router::matcher::decode;
use http::Method;
use regex::Regex;
use sluice_proto::config as pb;

#[derive(Debug)]
pub struct StripQuery {
    /// Decoded parameter names.
    params: Vec<Box<str>>,
    /// Empty: every method.
    methods: Vec<Method>,
    /// Matched (unanchored) against the client's path.
    path_pattern: Option<Regex>,
}

impl StripQuery {
    pub fn compile(m: &pb::StripQuery) -> Result<StripQuery, String> {
        if m.params.is_empty() {
            return Err("strip_query.params: at least one parameter is required".into());
        }
        if let Some(i) = m.params.iter().position(|p| p.is_empty()) {
            return Err(format!("strip_query.params[{i}]: empty"));
        }
        let methods = m
            .methods
            .iter()
            .enumerate()
            .map(|(i, raw)| {
                Method::from_bytes(raw.trim().to_ascii_uppercase().as_bytes())
                    .map_err(|_| format!("strip_query.methods[{i}]: {raw:?} is not a method"))
            })
            .collect::<Result<_, _>>()?;
        let path_pattern = match m.path_pattern.as_str() {
            "" => None,
            p => Some(Regex::new(p).map_err(|e| {
                format!("strip_query.path_pattern: {p:?} is not a valid regex: {e}")
            })?),
        };
        Ok(StripQuery {
            params: m.params.iter().map(|p| p.as_str().into()).collect(),
            methods,
            path_pattern,
        })
    }

    fn strips(&self, pair: &str) -> bool {
        let name = pair.split_once('=').map_or(pair, |(k, _)| k);
        let name = decode(name);
        self.params.iter().any(|p| **p == *name)
    }
}

impl Middleware for StripQuery {
    fn decide(&self, ctx: &mut RequestCtx<'_>) -> Decision {
        if !self.methods.is_empty() && !self.methods.contains(&ctx.parts.method) {
            return Decision::Continue;
        }
        if let Some(p) = &self.path_pattern
            && !p.is_match(ctx.client_uri.path())
        {
            return Decision::Continue;
        }
        let Some(query) = ctx.parts.uri.query() else {
            return Decision::Continue;
        };
        if !query.split('&').any(|pair| self.strips(pair)) {
            return Decision::Continue;
        }
        let path = ctx.parts.uri.path();
        let mut out = String::with_capacity(path.len() + query.len() + 1);
        out.push_str(path);
        let mut first = true;
        for pair in query.split('&').filter(|pair| !self.strips(pair)) {
            out.push(if first { '?' } else { '&' });
            out.push_str(pair);
            first = false;
        }
        if replace(ctx.parts, out) {
            Decision::Continue
        } else {
            Decision::Respond(response::bad_request())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::middleware::transform_testing::{Harness, decide};

    fn strip(params: &[&str], methods: &[&str], pattern: &str) -> StripQuery {
        StripQuery::compile(&pb::StripQuery {
            params: params.iter().map(|s| s.to_string()).collect(),
            methods: methods.iter().map(|s| s.to_string()).collect(),
            path_pattern: pattern.into(),
        })
        .unwrap()
    }

    fn run(m: &StripQuery, method: &str, target: &str) -> String {
        let mut h = Harness::with_method(method, target, &[]);
        assert!(matches!(decide(m, &mut h), Decision::Continue));
        h.parts.uri.to_string()
    }

    #[test]
    fn removes_only_the_named_params_keeping_order_and_encoding() {
        let m = strip(&["utm_source", "utm medium"], &[], "");
        assert_eq!(
            run(
                &m,
                "GET",
                "/s?q=a%20b&utm_source=x&p=1&utm+medium=y&utm_source=z&r=%2F"
            ),
            "/s?q=a%20b&p=1&r=%2F"
        );
        assert_eq!(run(&m, "GET", "/s?utm_source=x"), "/s");
        assert_eq!(run(&m, "GET", "/s?utm_source"), "/s");
        assert_eq!(run(&m, "GET", "/s?utm%5Fsource=1&k"), "/s?k");
        assert_eq!(run(&m, "GET", "/s?keep=1"), "/s?keep=1");
        assert_eq!(run(&m, "GET", "/s"), "/s");
    }

    #[test]
    fn methods_and_path_pattern_limit_it() {
        let m = strip(&["t"], &["get"], "^/search");
        assert_eq!(run(&m, "GET", "/search/x?t=1&a=2"), "/search/x?a=2");
        assert_eq!(run(&m, "POST", "/search/x?t=1&a=2"), "/search/x?t=1&a=2");
        assert_eq!(run(&m, "GET", "/other?t=1"), "/other?t=1");
    }

    #[test]
    fn errors_name_the_field() {
        let err = |m: pb::StripQuery| StripQuery::compile(&m).unwrap_err();
        assert!(err(pb::StripQuery::default()).starts_with("strip_query.params:"));
        let e = err(pb::StripQuery {
            params: vec!["a".into()],
            path_pattern: "(".into(),
            ..Default::default()
        });
        assert!(e.starts_with("strip_query.path_pattern: "), "{e}");
        let e = err(pb::StripQuery {
            params: vec!["a".into()],
            methods: vec!["G T".into()],
            ..Default::default()
        });
        assert!(e.starts_with("strip_query.methods[0]: "), "{e}");
    }
}
