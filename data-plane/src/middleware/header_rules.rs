//! Header modifiers of the `requestHeaders` and `responseHeaders` middlewares: Goma's
//! semantics (remove first, then set; a set with an empty value removes) compiled into the
//! router's [`HeaderModifier`], refusing headers that decide message framing.

use crate::router::header_modifier::HeaderModifier;
use sluice_proto::config as pb;

/// Headers a middleware may not set or remove: they frame the message or the connection, which
/// the proxy owns.
const FRAMING: [&str; 9] = [
    "connection",
    "content-length",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
];

/// Compiles `m` with Goma's order; `field` prefixes errors (`request_headers.headers`).
pub(super) fn compile(
    m: Option<&pb::HeaderModifier>,
    field: &str,
) -> Result<HeaderModifier, String> {
    let Some(m) = m else {
        return Ok(HeaderModifier::default());
    };
    let named = |list: &str, i: usize, name: &str| -> Result<(), String> {
        if FRAMING.contains(&name.to_ascii_lowercase().as_str()) {
            return Err(format!(
                "{field}.{list}[{i}]: {name:?} cannot be changed by a middleware"
            ));
        }
        Ok(())
    };
    let mut set = Vec::with_capacity(m.set.len());
    let mut remove = Vec::with_capacity(m.remove.len());
    for (i, h) in m.set.iter().enumerate() {
        named("set", i, &h.name)?;
        if h.value.is_empty() {
            remove.push(h.name.clone());
        } else {
            set.push(h.clone());
        }
    }
    for (i, h) in m.add.iter().enumerate() {
        named("add", i, &h.name)?;
    }
    for (i, name) in m.remove.iter().enumerate() {
        named("remove", i, name)?;
        // Removing first and then setting leaves the set value: removing is then a no-op.
        if !set.iter().any(|s| s.name.eq_ignore_ascii_case(name)) {
            remove.push(name.clone());
        }
    }
    HeaderModifier::compile(Some(&pb::HeaderModifier {
        set,
        add: m.add.clone(),
        remove,
    }))
    .map_err(|e| format!("{field}.{e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderMap, HeaderValue};

    fn hv(name: &str, value: &str) -> pb::HeaderValue {
        pb::HeaderValue {
            name: name.into(),
            value: value.into(),
        }
    }

    #[test]
    fn remove_then_set_and_empty_values_remove() {
        let m = compile(
            Some(&pb::HeaderModifier {
                set: vec![hv("X-Env", "prod"), hv("X-Gone", ""), hv("Cookie", "c=1")],
                remove: vec!["cookie".into(), "X-Internal".into()],
                ..Default::default()
            }),
            "request_headers.headers",
        )
        .unwrap();
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("x-env", "dev"),
            ("x-gone", "1"),
            ("cookie", "a=b"),
            ("x-internal", "secret"),
            ("x-kept", "k"),
        ] {
            h.append(k, HeaderValue::from_static(v));
        }
        m.apply(&mut h);
        assert_eq!(h["x-env"], "prod");
        assert_eq!(h["cookie"], "c=1");
        assert!(!h.contains_key("x-gone"));
        assert!(!h.contains_key("x-internal"));
        assert_eq!(h["x-kept"], "k");
    }

    #[test]
    fn framing_headers_and_bad_names_are_refused() {
        let e = compile(
            Some(&pb::HeaderModifier {
                set: vec![hv("Transfer-Encoding", "chunked")],
                ..Default::default()
            }),
            "request_headers.headers",
        )
        .unwrap_err();
        assert!(e.starts_with("request_headers.headers.set[0]: "), "{e}");
        let e = compile(
            Some(&pb::HeaderModifier {
                remove: vec!["bad name".into()],
                ..Default::default()
            }),
            "response_headers.headers",
        )
        .unwrap_err();
        assert!(e.starts_with("response_headers.headers.remove[0]: "), "{e}");
    }
}
