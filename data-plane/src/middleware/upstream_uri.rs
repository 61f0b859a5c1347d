//! Small shared pieces of the middlewares that change the upstream request target (addPrefix,
//! rewriteRegex, stripQuery): replacing it, and checking what a configuration puts in a path.

use bytes::Bytes;
use http::Uri;
use http::request::Parts;
use http::uri::PathAndQuery;

/// Replaces the upstream path and query with `path_and_query`; false when it is not a valid
/// request target (the caller answers 400).
pub(super) fn replace(parts: &mut Parts, path_and_query: String) -> bool {
    match PathAndQuery::from_maybe_shared(Bytes::from(path_and_query)) {
        Ok(pq) if pq.as_str().starts_with('/') => {
            parts.uri = Uri::from(pq);
            true
        }
        _ => false,
    }
}

/// `path` followed by the query of the current upstream target, if it has one.
pub(super) fn with_query(mut path: String, parts: &Parts) -> String {
    if let Some(q) = parts.uri.query() {
        path.push('?');
        path.push_str(q);
    }
    path
}

/// Why `text` cannot be (part of) a path: whitespace, control characters, `?` or `#`.
pub(super) fn path_text_error(text: &str) -> Option<String> {
    if let Some(c) = text
        .chars()
        .find(|c| c.is_whitespace() || c.is_control() || matches!(c, '?' | '#'))
    {
        return Some(format!(
            "{text:?} cannot be part of a path (it contains {c:?})"
        ));
    }
    None
}

/// Appends `value` percent-encoded so it stays one path segment: every byte but the RFC 3986
/// unreserved characters is escaped (`/`, `?`, `%` and `$` included).
pub(super) fn push_segment_encoded(out: &mut String, value: &str) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push('%');
            out.push(HEX[usize::from(b >> 4)] as char);
            out.push(HEX[usize::from(b & 15)] as char);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding_keeps_one_segment() {
        let mut out = String::new();
        push_segment_encoded(&mut out, "a b/c?d%$1~é");
        assert_eq!(out, "a%20b%2Fc%3Fd%25%241~%C3%A9");
    }

    #[test]
    fn replace_keeps_only_valid_targets() {
        let (mut parts, ()) = http::Request::new(()).into_parts();
        assert!(replace(&mut parts, "/a/b?x=1".into()));
        assert_eq!(parts.uri, "/a/b?x=1");
        assert!(!replace(&mut parts, "no-slash".into()));
        assert!(!replace(&mut parts, "/a b".into()));
        assert_eq!(parts.uri, "/a/b?x=1", "unchanged after a refusal");
        assert_eq!(with_query("/c".into(), &parts), "/c?x=1");
        assert!(path_text_error("/v1/api").is_none());
        assert!(path_text_error("/a?b").is_some());
        assert!(path_text_error("/a b").is_some());
    }
}
