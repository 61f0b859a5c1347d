//! Host names: request-host normalisation, hostname patterns (exact or leading wildcard) and their
//! intersection (a route's hostname seen through a listener's hostname).

use std::borrow::Cow;

/// A request host reduced to what routing compares: port stripped, lowercased, trailing dot removed.
/// Borrowed from the request when it is already in that form (as hosts nearly always are); a
/// host with capitals is lowercased into its own string. Small, so returning it copies little.
pub struct NormalizedHost<'a>(Cow<'a, str>);

impl<'a> NormalizedHost<'a> {
    pub fn new(raw: &'a str) -> Self {
        let host = strip_port(raw);
        let host = host.strip_suffix('.').unwrap_or(host);
        NormalizedHost(if host.bytes().any(|b| b.is_ascii_uppercase()) {
            Cow::Owned(host.to_ascii_lowercase())
        } else {
            Cow::Borrowed(host)
        })
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Strips a `:port` suffix, keeping IPv6 literals (`[::1]:80` -> `[::1]`) intact.
fn strip_port(raw: &str) -> &str {
    if raw.starts_with('[') {
        return match raw.find(']') {
            Some(end) => &raw[..=end],
            None => raw,
        };
    }
    match raw.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => raw,
    }
}

/// A hostname pattern from a Listener or Route.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HostPattern {
    /// Matches every host.
    Any,
    /// Lowercased exact host.
    Exact(Box<str>),
    /// `*.example.com` stored as `example.com`: needs at least one more label in front.
    Wildcard(Box<str>),
}

impl HostPattern {
    /// Parses a validated hostname; empty means any host.
    pub fn parse(raw: &str) -> HostPattern {
        let lower = raw.trim_end_matches('.').to_ascii_lowercase();
        if lower.is_empty() {
            HostPattern::Any
        } else if let Some(suffix) = lower.strip_prefix("*.") {
            HostPattern::Wildcard(suffix.into())
        } else {
            HostPattern::Exact(lower.into())
        }
    }

    /// Whether a normalised request host matches.
    pub fn matches(&self, host: &str) -> bool {
        match self {
            HostPattern::Any => true,
            HostPattern::Exact(h) => **h == *host,
            HostPattern::Wildcard(suffix) => wildcard_matches(suffix, host),
        }
    }

    /// Specificity for route precedence: exact > wildcard with more labels > wildcard > any.
    pub fn specificity(&self) -> u16 {
        match self {
            HostPattern::Any => 0,
            HostPattern::Wildcard(suffix) => wildcard_specificity(suffix),
            HostPattern::Exact(_) => u16::MAX,
        }
    }

    /// The hosts both patterns accept, as one pattern, or None when they are disjoint.
    /// Used to restrict a route's hostnames by the hostname of the listener it is reached through.
    pub fn intersect(&self, other: &HostPattern) -> Option<HostPattern> {
        use HostPattern::*;
        match (self, other) {
            (Any, p) | (p, Any) => Some(p.clone()),
            (Exact(a), Exact(b)) => (a == b).then(|| self.clone()),
            (Exact(h), Wildcard(s)) | (Wildcard(s), Exact(h)) => {
                wildcard_matches(s, h).then(|| Exact(h.clone()))
            }
            (Wildcard(a), Wildcard(b)) => {
                if a == b || wildcard_matches(b, a) {
                    // `*.x.example.com` is inside `*.example.com`.
                    Some(Wildcard(a.clone()))
                } else if wildcard_matches(a, b) {
                    Some(Wildcard(b.clone()))
                } else {
                    None
                }
            }
        }
    }
}

/// Specificity of `*.suffix`: more labels is more specific, always below an exact host.
pub fn wildcard_specificity(suffix: &str) -> u16 {
    let labels = suffix.split('.').count().min(usize::from(u16::MAX - 2));
    1 + labels as u16
}

/// `host` ends with `.suffix` and has at least one label before it.
fn wildcard_matches(suffix: &str, host: &str) -> bool {
    host.len() > suffix.len() + 1
        && host.ends_with(suffix)
        && host.as_bytes()[host.len() - suffix.len() - 1] == b'.'
}

/// The wildcard suffixes a host could be indexed under, most specific first:
/// `a.b.example.com` -> `b.example.com`, `example.com`, `com`.
pub fn wildcard_suffixes(host: &str) -> impl Iterator<Item = &str> {
    host.char_indices()
        .filter(|&(_, c)| c == '.')
        .map(move |(i, _)| &host[i + 1..])
        .filter(|s| !s.is_empty())
}

/// Checks a configured hostname: empty, an exact DNS name, or `*.` followed by one.
pub fn validate_hostname(raw: &str) -> Result<(), String> {
    if raw.is_empty() {
        return Ok(());
    }
    let name = raw.strip_prefix("*.").unwrap_or(raw);
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.is_empty() || name.len() > 253 {
        return Err(format!("invalid hostname {raw:?}: wrong length"));
    }
    for label in name.split('.') {
        let ok = !label.is_empty()
            && label.len() <= 63
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-');
        if !ok {
            return Err(format!(
                "invalid hostname {raw:?}: label {label:?} is not a DNS label (a wildcard must be a leading \"*.\")"
            ));
        }
    }
    Ok(())
}

/// The host a request addresses: URI authority (HTTP/2 `:authority`, absolute-form) or the Host header.
pub fn request_host<'a>(uri: &'a http::Uri, headers: &'a http::HeaderMap) -> Cow<'a, str> {
    Cow::Borrowed(request_host_and_header(uri, headers).0)
}

/// [`request_host`], and the Host header when that is where it came from.
pub fn request_host_and_header<'a>(
    uri: &'a http::Uri,
    headers: &'a http::HeaderMap,
) -> (&'a str, Option<&'a http::HeaderValue>) {
    if let Some(a) = uri.authority() {
        return (a.as_str(), None);
    }
    match headers.get(http::header::HOST) {
        Some(h) => (h.to_str().unwrap_or_default(), Some(h)),
        None => ("", None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_request_hosts() {
        assert_eq!(
            NormalizedHost::new("Example.COM:8080").as_str(),
            "example.com"
        );
        assert_eq!(NormalizedHost::new("example.com.").as_str(), "example.com");
        assert_eq!(NormalizedHost::new("[::1]:80").as_str(), "[::1]");
        assert_eq!(NormalizedHost::new("").as_str(), "");
        let long = "a".repeat(300);
        assert_eq!(NormalizedHost::new(&long).as_str(), long);
        // Already normalized: borrowed from the request, nothing copied.
        let raw = "example.com:8080";
        assert!(std::ptr::eq(NormalizedHost::new(raw).as_str(), &raw[..11]));
        assert!(matches!(
            NormalizedHost::new("Example.com").0,
            Cow::Owned(_)
        ));
    }

    #[test]
    fn wildcard_needs_one_more_label() {
        let p = HostPattern::parse("*.Example.com");
        assert!(p.matches("a.example.com"));
        assert!(p.matches("a.b.example.com"));
        assert!(!p.matches("example.com"));
        assert!(!p.matches("aexample.com"));
        assert!(!p.matches(".example.com"));
        assert!(HostPattern::parse("").matches("anything"));
        assert!(HostPattern::parse("a.example.com").matches("a.example.com"));
        assert!(!HostPattern::parse("a.example.com").matches("b.example.com"));
    }

    #[test]
    fn specificity_orders_patterns() {
        let exact = HostPattern::parse("a.b.example.com").specificity();
        let deep = HostPattern::parse("*.b.example.com").specificity();
        let wild = HostPattern::parse("*.example.com").specificity();
        let any = HostPattern::parse("").specificity();
        assert!(exact > deep && deep > wild && wild > any);
    }

    #[test]
    fn intersects_patterns() {
        let p = HostPattern::parse;
        assert_eq!(p("").intersect(&p("a.com")), Some(p("a.com")));
        assert_eq!(p("x.a.com").intersect(&p("*.a.com")), Some(p("x.a.com")));
        assert_eq!(p("*.a.com").intersect(&p("a.com")), None);
        assert_eq!(
            p("*.x.a.com").intersect(&p("*.a.com")),
            Some(p("*.x.a.com"))
        );
        assert_eq!(
            p("*.a.com").intersect(&p("*.x.a.com")),
            Some(p("*.x.a.com"))
        );
        assert_eq!(p("*.a.com").intersect(&p("*.b.com")), None);
        assert_eq!(p("a.com").intersect(&p("b.com")), None);
    }

    #[test]
    fn suffixes_most_specific_first() {
        let v: Vec<_> = wildcard_suffixes("a.b.example.com").collect();
        assert_eq!(v, ["b.example.com", "example.com", "com"]);
        assert_eq!(wildcard_suffixes("localhost").count(), 0);
    }

    #[test]
    fn validates_hostnames() {
        assert!(validate_hostname("").is_ok());
        assert!(validate_hostname("api.example.com").is_ok());
        assert!(validate_hostname("*.example.com").is_ok());
        assert!(validate_hostname("a.*.com").is_err());
        assert!(validate_hostname("*").is_err());
        assert!(validate_hostname("exa mple.com").is_err());
        assert!(validate_hostname("host:80").is_err());
    }
}
