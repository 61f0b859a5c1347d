//! Compiled request conditions: string matches (headers, query parameters, canary conditions), path
//! matches and whole `RouteMatch`es, evaluated against a borrowed view of the request.

use super::host::NormalizedHost;
use http::{HeaderMap, HeaderName, Method};
use regex::Regex;
use sluice_proto::config as pb;
use std::borrow::Cow;
use std::net::IpAddr;

/// What matching needs from a request, borrowed so evaluation allocates nothing.
pub struct RequestView<'a> {
    pub host: &'a str,
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub method: &'a Method,
    pub headers: &'a HeaderMap,
    pub client_ip: IpAddr,
}

impl<'a> RequestView<'a> {
    /// Borrows from an `http` request; `host` comes from [`NormalizedHost`].
    pub fn new<B>(req: &'a http::Request<B>, host: &'a NormalizedHost, client_ip: IpAddr) -> Self {
        RequestView {
            host: host.as_str(),
            path: req.uri().path(),
            query: req.uri().query(),
            method: req.method(),
            headers: req.headers(),
            client_ip,
        }
    }

    /// The first value of query parameter `name`, percent-decoded only when it needs to be.
    pub fn query_param(&self, name: &str) -> Option<Cow<'a, str>> {
        let query = self.query?;
        for pair in query.split('&') {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            if decode(k) == name {
                return Some(decode(v));
            }
        }
        None
    }

    /// The value of cookie `name` from the Cookie header(s).
    pub fn cookie(&self, name: &str) -> Option<&'a str> {
        for header in self.headers.get_all(http::header::COOKIE) {
            let Ok(header) = header.to_str() else {
                continue;
            };
            for pair in header.split(';') {
                if let Some((k, v)) = pair.trim().split_once('=')
                    && k == name
                {
                    return Some(v.trim_matches('"'));
                }
            }
        }
        None
    }
}

/// Form-style percent decoding (`+` is a space); borrows when there is nothing to decode.
pub(crate) fn decode(s: &str) -> Cow<'_, str> {
    if !s.bytes().any(|b| b == b'%' || b == b'+') {
        return Cow::Borrowed(s);
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = |b: u8| (b as char).to_digit(16);
                match (
                    bytes.get(i + 1).and_then(|&b| hex(b)),
                    bytes.get(i + 2).and_then(|&b| hex(b)),
                ) {
                    (Some(h), Some(l)) => {
                        out.push((h * 16 + l) as u8);
                        i += 2;
                    }
                    _ => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    Cow::Owned(String::from_utf8_lossy(&out).into_owned())
}

/// A compiled `StringMatch`.
#[derive(Debug)]
pub struct StringMatcher {
    kind: StringKind,
    invert: bool,
}

#[derive(Debug)]
enum StringKind {
    Exact(Box<str>),
    Prefix(Box<str>),
    Suffix(Box<str>),
    Contains(Box<str>),
    Regex(Regex),
    OneOf(Box<[Box<str>]>),
}

impl StringMatcher {
    pub fn compile(m: &pb::StringMatch) -> Result<StringMatcher, String> {
        use pb::string_match::Kind;
        let kind = Kind::try_from(m.kind).map_err(|_| format!("kind: unknown value {}", m.kind))?;
        let value = || m.value.as_str().into();
        let kind = match kind {
            Kind::Exact => StringKind::Exact(value()),
            Kind::Prefix => StringKind::Prefix(value()),
            Kind::Suffix => StringKind::Suffix(value()),
            Kind::Contains => StringKind::Contains(value()),
            Kind::Regex => StringKind::Regex(
                Regex::new(&m.value).map_err(|e| format!("value: invalid regex: {e}"))?,
            ),
            Kind::OneOf => StringKind::OneOf(m.values.iter().map(|v| v.as_str().into()).collect()),
        };
        Ok(StringMatcher {
            kind,
            invert: m.invert,
        })
    }

    /// Evaluates against a value that may be absent: absent fails, and `invert` flips the result.
    pub fn eval(&self, value: Option<&str>) -> bool {
        let hit = value.is_some_and(|v| self.hit(v));
        hit != self.invert
    }

    fn hit(&self, v: &str) -> bool {
        match &self.kind {
            StringKind::Exact(s) => v == &**s,
            StringKind::Prefix(s) => v.starts_with(&**s),
            StringKind::Suffix(s) => v.ends_with(&**s),
            StringKind::Contains(s) => v.contains(&**s),
            StringKind::Regex(r) => r.is_match(v),
            StringKind::OneOf(set) => set.iter().any(|s| v == &**s),
        }
    }

    /// Header form: any of the header's values may satisfy the match.
    pub fn eval_header(&self, headers: &HeaderMap, name: &HeaderName) -> bool {
        let hit = headers
            .get_all(name)
            .iter()
            .any(|v| v.to_str().is_ok_and(|v| self.hit(v)));
        hit != self.invert
    }
}

/// A compiled `PathMatch`.
#[derive(Debug)]
pub enum PathMatcher {
    /// Normalised without trailing `/` ("/" becomes ""), so "/api/" and "/api" behave alike.
    Prefix(Box<str>),
    Exact(Box<str>),
    Regex(Regex),
}

impl PathMatcher {
    pub fn compile(p: Option<&pb::PathMatch>) -> Result<PathMatcher, String> {
        use pb::path_match::Kind;
        let Some(p) = p else {
            return Ok(PathMatcher::Prefix("".into()));
        };
        let kind = Kind::try_from(p.kind).map_err(|_| format!("kind: unknown value {}", p.kind))?;
        match kind {
            Kind::Prefix | Kind::Exact if !p.value.is_empty() && !p.value.starts_with('/') => {
                Err(format!("value: {:?} must start with \"/\"", p.value))
            }
            Kind::Prefix => Ok(PathMatcher::Prefix(p.value.trim_end_matches('/').into())),
            Kind::Exact if p.value.is_empty() => Ok(PathMatcher::Exact("/".into())),
            Kind::Exact => Ok(PathMatcher::Exact(p.value.as_str().into())),
            Kind::Regex => {
                // Anchored over the whole path: wrap so alternations stay inside the anchors.
                let anchored = format!("^(?:{})$", p.value);
                Regex::new(&anchored)
                    .map(PathMatcher::Regex)
                    .map_err(|e| format!("value: invalid regex: {e}"))
            }
        }
    }

    pub fn matches(&self, path: &str) -> bool {
        match self {
            PathMatcher::Prefix(p) => prefix_matches(p, path),
            PathMatcher::Exact(p) => **p == *path,
            PathMatcher::Regex(r) => r.is_match(path),
        }
    }

    /// Rank within precedence: EXACT > longer PREFIX > REGEX.
    fn specificity(&self) -> u32 {
        const LEN: u32 = (1 << 30) - 1;
        match self {
            PathMatcher::Exact(_) => 3 << 30,
            // The root prefix counts as one byte ("/"), so it still beats a regex.
            PathMatcher::Prefix(p) => (2 << 30) | (p.len() as u32 + 1).min(LEN),
            PathMatcher::Regex(_) => 1 << 30,
        }
    }
}

/// Segment-aware prefix test on a normalised prefix (no trailing `/`).
pub fn prefix_matches(prefix: &str, path: &str) -> bool {
    path.starts_with(prefix) && matches!(path.as_bytes().get(prefix.len()), None | Some(b'/'))
}

/// A compiled `RouteMatch` (or the implicit match-everything of a route without matches).
#[derive(Debug)]
pub struct CompiledMatch {
    pub path: PathMatcher,
    pub method: Option<Method>,
    pub headers: Vec<(HeaderName, StringMatcher)>,
    pub query: Vec<(Box<str>, StringMatcher)>,
}

impl CompiledMatch {
    pub fn match_all() -> CompiledMatch {
        CompiledMatch {
            path: PathMatcher::Prefix("".into()),
            method: None,
            headers: Vec::new(),
            query: Vec::new(),
        }
    }

    pub fn compile(m: &pb::RouteMatch) -> Result<CompiledMatch, String> {
        let path = PathMatcher::compile(m.path.as_ref()).map_err(|e| format!("path.{e}"))?;
        let method = if m.method.is_empty() {
            None
        } else {
            Some(parse_method(&m.method).map_err(|e| format!("method: {e}"))?)
        };
        let mut headers = Vec::with_capacity(m.headers.len());
        for (i, h) in m.headers.iter().enumerate() {
            let name = HeaderName::from_bytes(h.name.as_bytes())
                .map_err(|_| format!("headers[{i}].name: invalid header name {:?}", h.name))?;
            let value = h
                .value
                .as_ref()
                .ok_or(format!("headers[{i}].value: not set"))?;
            let value =
                StringMatcher::compile(value).map_err(|e| format!("headers[{i}].value.{e}"))?;
            headers.push((name, value));
        }
        let mut query = Vec::with_capacity(m.query_params.len());
        for (i, q) in m.query_params.iter().enumerate() {
            if q.name.is_empty() {
                return Err(format!("query_params[{i}].name: empty"));
            }
            let value = q
                .value
                .as_ref()
                .ok_or(format!("query_params[{i}].value: not set"))?;
            let value = StringMatcher::compile(value)
                .map_err(|e| format!("query_params[{i}].value.{e}"))?;
            query.push((q.name.as_str().into(), value));
        }
        Ok(CompiledMatch {
            path,
            method,
            headers,
            query,
        })
    }

    /// Everything but the path, which the index has already checked for exact and prefix matches.
    pub fn matches_rest(&self, req: &RequestView<'_>) -> bool {
        if let Some(m) = &self.method
            && m != req.method
        {
            return false;
        }
        self.headers
            .iter()
            .all(|(name, m)| m.eval_header(req.headers, name))
            && self
                .query
                .iter()
                .all(|(name, m)| m.eval(req.query_param(name).as_deref()))
    }

    /// Precedence after priority and host, packed so a larger number wins:
    /// path (EXACT > longer PREFIX > REGEX), method set, header count, query count.
    pub fn rank(&self) -> u64 {
        let headers = self.headers.len().min(0x7fff) as u64;
        let query = self.query.len().min(0xffff) as u64;
        (u64::from(self.path.specificity()) << 32)
            | (u64::from(self.method.is_some()) << 31)
            | (headers << 16)
            | query
    }
}

impl CompiledMatch {
    /// For a regex path: the directory made of whole literal segments every match must start
    /// with ("/items/[0-9]+" -> "/items"), so the index can try the regex only under it.
    /// Conservative: "" (the root) whenever unsure.
    pub fn regex_dir(&self) -> &str {
        let PathMatcher::Regex(r) = &self.path else {
            return "";
        };
        let pattern = r
            .as_str()
            .strip_prefix("^(?:")
            .and_then(|p| p.strip_suffix(")$"))
            .unwrap_or("");
        literal_dir(pattern)
    }
}

fn literal_dir(pattern: &str) -> &str {
    // An alternation anywhere could make the leading literal optional.
    if pattern.contains('|') {
        return "";
    }
    let end = pattern
        .find(|c| "\\.+*?()[]{}^$".contains(c))
        .unwrap_or(pattern.len());
    let mut literal = &pattern[..end];
    // A quantifier after the literal makes its last character optional.
    if matches!(pattern.as_bytes().get(end), Some(b'?' | b'*' | b'{')) {
        literal = match literal.char_indices().last() {
            Some((i, _)) => &literal[..i],
            None => literal,
        };
    }
    match literal.rfind('/') {
        Some(i) => &literal[..i],
        None => "",
    }
}

pub fn parse_method(m: &str) -> Result<Method, String> {
    Method::from_bytes(m.as_bytes()).map_err(|_| format!("invalid method {m:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sm(
        kind: pb::string_match::Kind,
        value: &str,
        values: &[&str],
        invert: bool,
    ) -> StringMatcher {
        StringMatcher::compile(&pb::StringMatch {
            kind: kind as i32,
            value: value.into(),
            values: values.iter().map(|s| s.to_string()).collect(),
            invert,
        })
        .unwrap()
    }

    #[test]
    fn string_match_kinds() {
        use pb::string_match::Kind::*;
        assert!(sm(Exact, "abc", &[], false).eval(Some("abc")));
        assert!(!sm(Exact, "abc", &[], false).eval(Some("abcd")));
        assert!(sm(Prefix, "ab", &[], false).eval(Some("abc")));
        assert!(!sm(Prefix, "bc", &[], false).eval(Some("abc")));
        assert!(sm(Suffix, "bc", &[], false).eval(Some("abc")));
        assert!(!sm(Suffix, "ab", &[], false).eval(Some("abc")));
        assert!(sm(Contains, "b", &[], false).eval(Some("abc")));
        assert!(!sm(Contains, "x", &[], false).eval(Some("abc")));
        // REGEX is unanchored.
        assert!(sm(Regex, "b+", &[], false).eval(Some("abbc")));
        assert!(!sm(Regex, "^b", &[], false).eval(Some("abc")));
        assert!(sm(OneOf, "", &["x", "y"], false).eval(Some("y")));
        assert!(!sm(OneOf, "", &["x", "y"], false).eval(Some("z")));
        // invert negates; a missing value fails unless inverted.
        assert!(!sm(Exact, "abc", &[], true).eval(Some("abc")));
        assert!(sm(Contains, "x", &[], true).eval(Some("abc")));
        assert!(!sm(Exact, "abc", &[], false).eval(None));
        assert!(sm(Exact, "abc", &[], true).eval(None));
    }

    #[test]
    fn bad_regex_names_field() {
        let err = StringMatcher::compile(&pb::StringMatch {
            kind: pb::string_match::Kind::Regex as i32,
            value: "(".into(),
            ..Default::default()
        })
        .unwrap_err();
        assert!(err.starts_with("value: invalid regex"), "{err}");
    }

    #[test]
    fn segment_aware_prefix() {
        assert!(prefix_matches("/api", "/api"));
        assert!(prefix_matches("/api", "/api/"));
        assert!(prefix_matches("/api", "/api/x"));
        assert!(!prefix_matches("/api", "/apix"));
        assert!(prefix_matches("", "/anything"));
        let p = PathMatcher::compile(Some(&pb::PathMatch {
            kind: pb::path_match::Kind::Prefix as i32,
            value: "/api/".into(),
        }))
        .unwrap();
        assert!(p.matches("/api") && p.matches("/api/x") && !p.matches("/apix"));
    }

    #[test]
    fn regex_path_is_anchored() {
        let p = PathMatcher::compile(Some(&pb::PathMatch {
            kind: pb::path_match::Kind::Regex as i32,
            value: "/users/[0-9]+|/u".into(),
        }))
        .unwrap();
        assert!(p.matches("/users/42"));
        assert!(!p.matches("/users/42/x"));
        assert!(!p.matches("/x/users/42"));
        assert!(p.matches("/u") && !p.matches("/ux"));
    }

    #[test]
    fn regex_literal_dir() {
        assert_eq!(literal_dir("/items/[0-9]+"), "/items");
        assert_eq!(literal_dir("/api/v1/users/.*"), "/api/v1/users");
        assert_eq!(literal_dir("/api/v1"), "/api");
        assert_eq!(literal_dir("/api/?x"), "");
        assert_eq!(literal_dir("/api/x?"), "/api");
        assert_eq!(literal_dir("/a|/b/c"), "");
        assert_eq!(literal_dir("(?i)/api/x"), "");
        assert_eq!(literal_dir(".*"), "");
        assert_eq!(literal_dir("/a\\.b/c"), "");
        let m = CompiledMatch::compile(&pb::RouteMatch {
            path: Some(pb::PathMatch {
                kind: pb::path_match::Kind::Regex as i32,
                value: "/users/[0-9]+".into(),
            }),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(m.regex_dir(), "/users");
    }

    #[test]
    fn query_and_cookie_lookup() {
        let mut headers = HeaderMap::new();
        headers.insert(http::header::COOKIE, "a=1; canary=yes".parse().unwrap());
        let host = NormalizedHost::new("h");
        let view = RequestView {
            host: host.as_str(),
            path: "/",
            query: Some("x=1&name=J%C3%B6rg+B&flag"),
            method: &Method::GET,
            headers: &headers,
            client_ip: IpAddr::from([127, 0, 0, 1]),
        };
        assert_eq!(view.query_param("x").as_deref(), Some("1"));
        assert_eq!(view.query_param("name").as_deref(), Some("Jörg B"));
        assert_eq!(view.query_param("flag").as_deref(), Some(""));
        assert_eq!(view.query_param("nope"), None);
        assert_eq!(view.cookie("canary"), Some("yes"));
        assert_eq!(view.cookie("b"), None);
    }
}
