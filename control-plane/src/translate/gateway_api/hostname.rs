//! Gateway API hostname rules: a leading `*.` matches one or more labels; a route's hostnames
//! are intersected with its listener's.

/// Whether `wildcard` ("*.example.com") matches `name` (exact or a more specific wildcard).
fn wildcard_covers(wildcard: &str, name: &str) -> bool {
    let Some(suffix) = wildcard.strip_prefix('*') else {
        return false;
    };
    // "*.example.com" covers "a.example.com", "a.b.example.com", "*.a.example.com", not
    // "example.com".
    let name = name.strip_prefix('*').unwrap_or(name);
    name.len() > suffix.len() && name.ends_with(suffix)
}

/// The hostnames a route serves on a listener: `None` when they do not intersect (the route
/// does not attach there), `Some(empty)` for "any host".
pub fn intersect(listener: Option<&str>, route: &[String]) -> Option<Vec<String>> {
    let listener = listener.filter(|l| !l.is_empty());
    match (listener, route.is_empty()) {
        (None, _) => Some(route.to_vec()),
        (Some(l), true) => Some(vec![l.to_owned()]),
        (Some(l), false) => {
            let mut out: Vec<String> = Vec::new();
            for r in route {
                let picked = if r == l || wildcard_covers(l, r) {
                    Some(r.as_str())
                } else if wildcard_covers(r, l) {
                    Some(l)
                } else {
                    None
                };
                if let Some(p) = picked
                    && !out.iter().any(|o| o == p)
                {
                    out.push(p.to_owned());
                }
            }
            (!out.is_empty()).then_some(out)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn listener_without_hostname_accepts_the_routes_hostnames() {
        assert_eq!(intersect(None, &v(&["a.test"])), Some(v(&["a.test"])));
        assert_eq!(intersect(None, &[]), Some(vec![]));
    }

    #[test]
    fn route_without_hostnames_takes_the_listeners() {
        assert_eq!(intersect(Some("*.test"), &[]), Some(v(&["*.test"])));
    }

    #[test]
    fn exact_and_wildcard_intersections() {
        assert_eq!(
            intersect(
                Some("*.example.com"),
                &v(&[
                    "a.example.com",
                    "a.b.example.com",
                    "example.com",
                    "other.org"
                ])
            ),
            Some(v(&["a.example.com", "a.b.example.com"]))
        );
        assert_eq!(
            intersect(Some("foo.example.com"), &v(&["*.example.com"])),
            Some(v(&["foo.example.com"]))
        );
        assert_eq!(
            intersect(Some("*.example.com"), &v(&["*.foo.example.com"])),
            Some(v(&["*.foo.example.com"]))
        );
        assert_eq!(
            intersect(Some("*.foo.example.com"), &v(&["*.example.com"])),
            Some(v(&["*.foo.example.com"]))
        );
        assert_eq!(intersect(Some("a.test"), &v(&["b.test"])), None);
        assert_eq!(intersect(Some("*.example.com"), &v(&["example.com"])), None);
    }
}
