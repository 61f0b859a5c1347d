//! Upstream path changes: `addPrefix` prepends a prefix, `rewriteRegex` replaces what a regular
//! expression matched (`$1` groups, and `{{goma.headers.X}}` / `{{goma.query.Y}}` tokens filled
//! from the request). Both act on the upstream target (after the route's own rewrite) and keep
//! its query.

use super::upstream_uri::{path_text_error, push_segment_encoded, replace, with_query};
use super::{Decision, Middleware, RequestCtx};
use crate::proxy::response;
use crate::router::matcher::decode;
use http::HeaderName;
use regex::Regex;
use sluice_proto::config as pb;
use std::borrow::Cow;

/// A compiled `AddPrefix`.
#[derive(Debug)]
pub struct AddPrefix {
    /// Starts with `/`, no trailing `/` (so `/v1` + `/users` gives `/v1/users`).
    prefix: Box<str>,
}

impl AddPrefix {
    pub fn compile(m: &pb::AddPrefix) -> Result<AddPrefix, String> {
        let at = |e: String| format!("add_prefix.prefix: {e}");
        if !m.prefix.starts_with('/') {
            return Err(at(format!("{:?} must start with \"/\"", m.prefix)));
        }
        if let Some(e) = path_text_error(&m.prefix) {
            return Err(at(e));
        }
        Ok(AddPrefix {
            prefix: m.prefix.trim_end_matches('/').into(),
        })
    }
}

impl Middleware for AddPrefix {
    fn decide(&self, ctx: &mut RequestCtx<'_>) -> Decision {
        if self.prefix.is_empty() {
            return Decision::Continue;
        }
        let path = ctx.parts.uri.path();
        let mut out = String::with_capacity(
            self.prefix.len() + path.len() + ctx.parts.uri.query().map_or(0, |q| q.len() + 1),
        );
        out.push_str(&self.prefix);
        out.push_str(path);
        let out = with_query(out, ctx.parts);
        if replace(ctx.parts, out) {
            Decision::Continue
        } else {
            Decision::Respond(response::bad_request())
        }
    }
}

/// A compiled `RewriteRegex`.
#[derive(Debug)]
pub struct RewriteRegex {
    pattern: Regex,
    replacement: Replacement,
}

/// The replacement: regex syntax (`$1`, `${name}`, `$$`) in its literal parts.
#[derive(Debug)]
enum Replacement {
    /// No tokens: used as is.
    Fixed(Box<str>),
    /// Tokens filled per request.
    Template(Vec<Piece>),
}

#[derive(Debug)]
enum Piece {
    Literal(Box<str>),
    Header(HeaderName),
    Query(Box<str>),
}

const TOKEN_OPEN: &str = "{{goma.";

impl RewriteRegex {
    pub fn compile(m: &pb::RewriteRegex) -> Result<RewriteRegex, String> {
        let pattern = Regex::new(&m.pattern).map_err(|e| {
            format!(
                "rewrite_regex.pattern: {:?} is not a valid regex: {e}",
                m.pattern
            )
        })?;
        let at = |e: String| format!("rewrite_regex.replacement: {e}");
        if let Some(e) = path_text_error(&m.replacement) {
            return Err(at(e));
        }
        let pieces = parse_template(&m.replacement).map_err(at)?;
        let replacement = match pieces.as_slice() {
            [] => Replacement::Fixed("".into()),
            [Piece::Literal(l)] => Replacement::Fixed(l.clone()),
            _ => Replacement::Template(pieces),
        };
        Ok(RewriteRegex {
            pattern,
            replacement,
        })
    }

    /// The replacement for this request: tokens filled with percent-encoded values (so a value
    /// can neither add path segments nor regex group references). None when a value is a dot
    /// segment ("." or ".."), which would climb out of the rewritten path.
    fn replacement<'s>(&'s self, ctx: &RequestCtx<'_>) -> Option<Cow<'s, str>> {
        let pieces = match &self.replacement {
            Replacement::Fixed(s) => return Some(Cow::Borrowed(s)),
            Replacement::Template(pieces) => pieces,
        };
        let mut out = String::with_capacity(64);
        for piece in pieces {
            let value: Cow<'_, str> = match piece {
                Piece::Literal(l) => {
                    out.push_str(l);
                    continue;
                }
                Piece::Header(name) => ctx
                    .parts
                    .headers
                    .get(name)
                    .map(|v| String::from_utf8_lossy(v.as_bytes()))
                    .unwrap_or_default(),
                Piece::Query(name) => query_param(ctx.parts.uri.query(), name).unwrap_or_default(),
            };
            if value == "." || value == ".." {
                return None;
            }
            push_segment_encoded(&mut out, &value);
        }
        Some(Cow::Owned(out))
    }
}

impl Middleware for RewriteRegex {
    fn decide(&self, ctx: &mut RequestCtx<'_>) -> Decision {
        if !self.pattern.is_match(ctx.parts.uri.path()) {
            return Decision::Continue;
        }
        let Some(replacement) = self.replacement(ctx) else {
            return Decision::Respond(response::bad_request());
        };
        let rewritten = self
            .pattern
            .replace_all(ctx.parts.uri.path(), &*replacement);
        let mut path = String::with_capacity(rewritten.len() + 1);
        if !rewritten.starts_with('/') {
            path.push('/');
        }
        path.push_str(&rewritten);
        let out = with_query(path, ctx.parts);
        if replace(ctx.parts, out) {
            Decision::Continue
        } else {
            tracing::debug!(route = %ctx.route.name, "rewriteRegex produced an invalid path");
            Decision::Respond(response::bad_request())
        }
    }
}

/// The first value of query parameter `name` (names and values percent-decoded).
fn query_param<'q>(query: Option<&'q str>, name: &str) -> Option<Cow<'q, str>> {
    query?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (decode(k) == name).then(|| decode(v))
    })
}

/// Splits a replacement into literals and `{{goma.headers.X}}` / `{{goma.query.Y}}` tokens.
fn parse_template(text: &str) -> Result<Vec<Piece>, String> {
    let mut pieces = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find(TOKEN_OPEN) {
        if start > 0 {
            pieces.push(Piece::Literal(rest[..start].into()));
        }
        let token_start = &rest[start..];
        let end = token_start
            .find("}}")
            .ok_or_else(|| format!("unterminated token at {token_start:?}"))?;
        let token = &token_start[TOKEN_OPEN.len()..end];
        let piece = if let Some(name) = token.strip_prefix("headers.") {
            Piece::Header(
                HeaderName::from_bytes(name.trim().as_bytes()).map_err(|_| {
                    format!("{name:?} in {{{{goma.{token}}}}} is not a header name")
                })?,
            )
        } else if let Some(name) = token.strip_prefix("query.").filter(|n| !n.is_empty()) {
            Piece::Query(name.trim().into())
        } else {
            return Err(format!(
                "{{{{goma.{token}}}}} is not {{{{goma.headers.NAME}}}} or {{{{goma.query.NAME}}}}"
            ));
        };
        pieces.push(piece);
        rest = &token_start[end + 2..];
    }
    if !rest.is_empty() {
        pieces.push(Piece::Literal(rest.into()));
    }
    Ok(pieces)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::middleware::transform_testing::{Harness, decide};

    fn add_prefix(p: &str) -> Result<AddPrefix, String> {
        AddPrefix::compile(&pb::AddPrefix { prefix: p.into() })
    }

    fn rewrite(pattern: &str, replacement: &str) -> Result<RewriteRegex, String> {
        RewriteRegex::compile(&pb::RewriteRegex {
            pattern: pattern.into(),
            replacement: replacement.into(),
        })
    }

    #[test]
    fn add_prefix_prepends_and_keeps_the_query() {
        let m = add_prefix("/v1/").unwrap();
        let mut h = Harness::new("/users?page=2", &[]);
        assert!(matches!(decide(&m, &mut h), Decision::Continue));
        assert_eq!(h.parts.uri, "/v1/users?page=2");
        let mut h = Harness::new("/", &[]);
        decide(&m, &mut h);
        assert_eq!(h.parts.uri, "/v1/");
        assert!(
            add_prefix("v1")
                .unwrap_err()
                .starts_with("add_prefix.prefix: ")
        );
        assert!(add_prefix("/a b").is_err());
        assert!(add_prefix("").is_err());
    }

    #[test]
    fn rewrite_regex_groups_and_tokens() {
        let m = rewrite("^/api/(.*)$", "/v2/$1").unwrap();
        let mut h = Harness::new("/api/users/7?x=1", &[]);
        decide(&m, &mut h);
        assert_eq!(h.parts.uri, "/v2/users/7?x=1");
        // No match: unchanged.
        let mut h = Harness::new("/other", &[]);
        decide(&m, &mut h);
        assert_eq!(h.parts.uri, "/other");

        let m = rewrite(
            "^/t/(.*)$",
            "/tenants/{{goma.headers.X-Tenant}}/{{goma.query.lang}}/$1",
        )
        .unwrap();
        let mut h = Harness::new("/t/a?lang=en%20GB&k=v", &[("x-tenant", "acme/../$2")]);
        decide(&m, &mut h);
        assert_eq!(
            h.parts.uri,
            "/tenants/acme%2F..%2F%242/en%20GB/a?lang=en%20GB&k=v"
        );
        // Missing values are empty.
        let mut h = Harness::new("/t/a", &[]);
        decide(&m, &mut h);
        assert_eq!(h.parts.uri, "/tenants///a");
        // A dot segment is refused rather than climbing out of the rewritten path.
        let mut h = Harness::new("/t/a", &[("x-tenant", "..")]);
        match decide(&m, &mut h) {
            Decision::Respond(r) => assert_eq!(r.status(), 400),
            _ => panic!("a dot segment must be refused"),
        }
        // A result without a leading slash gets one.
        let m = rewrite("^/old/", "").unwrap();
        let mut h = Harness::new("/old/x", &[]);
        decide(&m, &mut h);
        assert_eq!(h.parts.uri, "/x");
    }

    #[test]
    fn rewrite_regex_errors_name_the_field() {
        let e = rewrite("(", "/x").unwrap_err();
        assert!(e.starts_with("rewrite_regex.pattern: "), "{e}");
        for bad in [
            "/x?y",
            "/a b",
            "/{{goma.cookie.a}}",
            "/{{goma.headers.a",
            "/{{goma.headers.bad name}}",
        ] {
            let e = rewrite("^/", bad).unwrap_err();
            assert!(e.starts_with("rewrite_regex.replacement: "), "{bad}: {e}");
        }
    }
}
