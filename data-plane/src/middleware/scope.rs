//! Which requests of a route a middleware applies to (`PathScope`): any unanchored regex that
//! matches the client's path, an exact path, or a segment-aware prefix.

use regex::RegexSet;
use sluice_proto::config as pb;

#[derive(Debug)]
pub struct PathScope {
    regexes: Option<RegexSet>,
    exact: Vec<Box<str>>,
    prefixes: Vec<Box<str>>,
}

impl PathScope {
    /// None when the scope is unset (the middleware applies to every request).
    pub fn compile(scope: Option<&pb::PathScope>) -> Result<Option<PathScope>, String> {
        let Some(s) = scope else {
            return Ok(None);
        };
        let regexes = if s.regexes.is_empty() {
            None
        } else {
            for (i, r) in s.regexes.iter().enumerate() {
                regex::Regex::new(r)
                    .map_err(|e| format!("regexes[{i}]: {r:?} is not a valid regex: {e}"))?;
            }
            Some(RegexSet::new(&s.regexes).map_err(|e| format!("regexes: {e}"))?)
        };
        for (field, list) in [("exact", &s.exact), ("prefixes", &s.prefixes)] {
            if let Some(i) = list.iter().position(|p| !p.starts_with('/')) {
                return Err(format!(
                    "{field}[{i}]: {:?} does not start with '/'",
                    list[i]
                ));
            }
        }
        Ok(Some(PathScope {
            regexes,
            exact: s.exact.iter().map(|p| p.as_str().into()).collect(),
            prefixes: s
                .prefixes
                .iter()
                .map(|p| p.trim_end_matches('/').into())
                .collect(),
        }))
    }

    pub fn matches(&self, path: &str) -> bool {
        self.exact.iter().any(|e| **e == *path)
            || self.prefixes.iter().any(|p| {
                path.strip_prefix(&**p)
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
            })
            || self.regexes.as_ref().is_some_and(|r| r.is_match(path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope(regexes: &[&str], exact: &[&str], prefixes: &[&str]) -> PathScope {
        let strings = |v: &[&str]| v.iter().map(|s| s.to_string()).collect();
        PathScope::compile(Some(&pb::PathScope {
            regexes: strings(regexes),
            exact: strings(exact),
            prefixes: strings(prefixes),
        }))
        .unwrap()
        .unwrap()
    }

    #[test]
    fn exact_prefix_and_regex() {
        let s = scope(&["^/v[0-9]+/admin"], &["/login"], &["/admin", "/root/"]);
        assert!(s.matches("/login"));
        assert!(!s.matches("/login/x"));
        assert!(s.matches("/admin"));
        assert!(s.matches("/admin/users"));
        assert!(!s.matches("/administrator"));
        assert!(s.matches("/root"));
        assert!(s.matches("/root/x"));
        assert!(s.matches("/v2/admin/x"));
        assert!(!s.matches("/public"));
    }

    #[test]
    fn unset_scope_and_errors() {
        assert!(PathScope::compile(None).unwrap().is_none());
        let bad = pb::PathScope {
            regexes: vec!["(".into()],
            ..Default::default()
        };
        let err = PathScope::compile(Some(&bad)).unwrap_err();
        assert!(err.starts_with("regexes[0]:"), "{err}");
        let bad = pb::PathScope {
            exact: vec!["login".into()],
            ..Default::default()
        };
        assert!(
            PathScope::compile(Some(&bad))
                .unwrap_err()
                .starts_with("exact[0]")
        );
    }
}
