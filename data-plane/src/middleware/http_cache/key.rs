//! The primary cache key of a request: route, scheme, host, path and (when configured) the
//! query in a normalised order. Request headers named by a response's Vary select a variant
//! under that key (see `entry::Record`); the method is not part of it (HEAD is answered from
//! GET entries, unsafe methods invalidate it).

use std::fmt::Write;

/// Which parts of the query are in the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueryKey {
    /// Goma's default: `/a?x=1` and `/a?x=2` share an entry.
    Ignored,
    /// Every parameter, in sorted order.
    All,
    /// Only these parameter names, in sorted order.
    Only(Vec<Box<str>>),
}

pub fn primary_key(
    route: &str,
    scheme: &str,
    host: &str,
    path: &str,
    query: Option<&str>,
    query_key: &QueryKey,
) -> String {
    let mut key = String::with_capacity(route.len() + host.len() + path.len() + 16);
    // The route name cannot hold '\n', so fields cannot run into each other.
    let _ = write!(key, "{route}\n{scheme}://{host}{path}");
    let Some(query) = query.filter(|q| !q.is_empty()) else {
        return key;
    };
    let mut params: Vec<&str> = match query_key {
        QueryKey::Ignored => return key,
        QueryKey::All => query.split('&').filter(|p| !p.is_empty()).collect(),
        QueryKey::Only(names) => query
            .split('&')
            .filter(|p| {
                let name = p.split_once('=').map_or(*p, |(n, _)| n);
                names.iter().any(|n| **n == *name)
            })
            .collect(),
    };
    if params.is_empty() {
        return key;
    }
    // Sorting whole "name=value" pairs orders by name, then value: `?b=1&a=2` = `?a=2&b=1`.
    params.sort_unstable();
    key.push('?');
    for (i, p) in params.iter().enumerate() {
        if i > 0 {
            key.push('&');
        }
        key.push_str(p);
    }
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_has_route_scheme_host_path_and_the_configured_query() {
        let k = |q: Option<&str>, qk: &QueryKey| primary_key("r", "http", "h", "/p", q, qk);
        assert_eq!(k(Some("b=1&a=2"), &QueryKey::Ignored), "r\nhttp://h/p");
        assert_eq!(k(Some("b=1&a=2"), &QueryKey::All), "r\nhttp://h/p?a=2&b=1");
        assert_eq!(
            k(Some("b=1&a=2"), &QueryKey::All),
            k(Some("a=2&&b=1"), &QueryKey::All)
        );
        let only = QueryKey::Only(vec!["page".into(), "q".into()]);
        assert_eq!(
            k(Some("utm=x&q=rust&page=2"), &only),
            "r\nhttp://h/p?page=2&q=rust"
        );
        assert_eq!(k(Some("utm=x"), &only), "r\nhttp://h/p");
        assert_ne!(
            primary_key("r", "https", "h", "/p", None, &QueryKey::All),
            primary_key("r", "http", "h", "/p", None, &QueryKey::All)
        );
        assert_ne!(
            primary_key("r", "http", "h", "/p", None, &QueryKey::All),
            primary_key("r", "http", "g", "/p", None, &QueryKey::All)
        );
        assert_ne!(
            primary_key("r1", "http", "h", "/p", None, &QueryKey::All),
            primary_key("r2", "http", "h", "/p", None, &QueryKey::All)
        );
    }
}
