//! Path rewriting (`PathRewrite`): replace the matched prefix or the whole path, keeping the query.

use sluice_proto::config as pb;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rewrite {
    ReplacePrefix(Box<str>),
    ReplaceFull(Box<str>),
}

impl Rewrite {
    pub fn compile(r: &pb::PathRewrite) -> Result<Option<Rewrite>, String> {
        use pb::path_rewrite::Kind;
        match &r.kind {
            None => Ok(None),
            Some(Kind::ReplacePrefix(p)) => {
                check(p).map_err(|e| format!("replace_prefix: {e}"))?;
                Ok(Some(Rewrite::ReplacePrefix(p.as_str().into())))
            }
            Some(Kind::ReplaceFull(p)) => {
                check(p).map_err(|e| format!("replace_full: {e}"))?;
                Ok(Some(Rewrite::ReplaceFull(p.as_str().into())))
            }
        }
    }

    /// Rewrites `path` (without query). `matched_prefix` is the normalised prefix (no trailing
    /// `/`, root = "") of the PREFIX match that selected the route, None for other match kinds,
    /// in which case a prefix rewrite replaces the whole path.
    pub fn apply(&self, path: &str, query: Option<&str>, matched_prefix: Option<&str>) -> String {
        let mut out = String::with_capacity(path.len() + 16 + query.map_or(0, |q| q.len() + 1));
        match (self, matched_prefix) {
            (Rewrite::ReplacePrefix(with), Some(prefix)) => {
                let rest = path.get(prefix.len()..).unwrap_or("");
                join(&mut out, with, rest);
            }
            (Rewrite::ReplacePrefix(with), None) | (Rewrite::ReplaceFull(with), _) => {
                out.push_str(if with.is_empty() { "/" } else { with });
            }
        }
        if let Some(q) = query {
            out.push('?');
            out.push_str(q);
        }
        out
    }
}

/// `with` + `rest` where `rest` is empty or starts with `/`; never produces `//` at the join.
fn join(out: &mut String, with: &str, rest: &str) {
    let with = with.strip_suffix('/').unwrap_or(with);
    if rest.is_empty() {
        out.push_str(if with.is_empty() { "/" } else { with });
    } else {
        out.push_str(with);
        out.push_str(rest);
    }
}

fn check(p: &str) -> Result<(), String> {
    if !p.is_empty() && !p.starts_with('/') {
        return Err(format!("{p:?} must start with \"/\""));
    }
    if p.contains(['?', '#']) || p.bytes().any(|b| b.is_ascii_control() || b == b' ') {
        return Err(format!("{p:?} is not a valid path"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewrite_table() {
        let prefix = |s: &str| Rewrite::ReplacePrefix(s.into());
        let full = |s: &str| Rewrite::ReplaceFull(s.into());
        // (rewrite, matched prefix, path, query, expected)
        type Case<'a> = (Rewrite, Option<&'a str>, &'a str, Option<&'a str>, &'a str);
        let cases: &[Case] = &[
            (prefix("/"), Some("/api"), "/api/x", None, "/x"),
            (prefix("/"), Some("/api"), "/api", None, "/"),
            (prefix("/"), Some("/api"), "/api/", None, "/"),
            (prefix("/v2"), Some("/api"), "/api/x", None, "/v2/x"),
            (prefix("/v2/"), Some("/api"), "/api/x", None, "/v2/x"),
            (prefix("/v2"), Some("/api"), "/api", None, "/v2"),
            (
                prefix("/v2"),
                Some("/api"),
                "/api/x/y",
                Some("a=1&b=2"),
                "/v2/x/y?a=1&b=2",
            ),
            (prefix(""), Some("/api"), "/api/x", None, "/x"),
            (prefix(""), Some("/api"), "/api", None, "/"),
            (prefix("/v2"), Some(""), "/x", None, "/v2/x"),
            (prefix("/"), Some(""), "/x", Some("q"), "/x?q"),
            (prefix("/v2"), None, "/users/42", Some("q=1"), "/v2?q=1"),
            (
                full("/health"),
                Some("/api"),
                "/api/x",
                Some("a=b"),
                "/health?a=b",
            ),
            (full("/health"), None, "/anything", None, "/health"),
        ];
        for (rw, matched, path, query, want) in cases {
            assert_eq!(
                rw.apply(path, *query, *matched),
                *want,
                "{rw:?} {matched:?} {path} {query:?}"
            );
        }
    }

    #[test]
    fn rejects_relative_rewrite() {
        let err = Rewrite::compile(&pb::PathRewrite {
            kind: Some(pb::path_rewrite::Kind::ReplaceFull("x".into())),
        })
        .unwrap_err();
        assert!(err.starts_with("replace_full:"), "{err}");
    }
}
