//! Gateway API header modifiers (`HeaderModifier`): set, add and remove, compiled once into
//! header names and values so applying them allocates only what the map itself needs.

use http::{HeaderMap, HeaderName, HeaderValue};
use sluice_proto::config as pb;

/// A compiled `HeaderModifier`; empty when the route has none. One pointer wide: every route
/// and backend carries two, and nearly all are empty.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct HeaderModifier(Option<Box<Edits>>);

#[derive(Debug, Clone, PartialEq, Eq)]
struct Edits {
    set: Vec<(HeaderName, HeaderValue)>,
    add: Vec<(HeaderName, HeaderValue)>,
    remove: Vec<HeaderName>,
}

impl HeaderModifier {
    /// Compiles `m`; errors name the field (`set[1].value: ...`).
    pub fn compile(m: Option<&pb::HeaderModifier>) -> Result<HeaderModifier, String> {
        let Some(m) = m else {
            return Ok(HeaderModifier::default());
        };
        let pairs = |field: &str, values: &[pb::HeaderValue]| {
            values
                .iter()
                .enumerate()
                .map(|(i, h)| {
                    let name = HeaderName::from_bytes(h.name.as_bytes()).map_err(|_| {
                        format!("{field}[{i}].name: {:?} is not a valid header name", h.name)
                    })?;
                    let value = HeaderValue::from_str(&h.value).map_err(|_| {
                        format!(
                            "{field}[{i}].value: {:?} is not a valid header value",
                            h.value
                        )
                    })?;
                    Ok((name, value))
                })
                .collect::<Result<Vec<_>, String>>()
        };
        let remove = m
            .remove
            .iter()
            .enumerate()
            .map(|(i, n)| {
                HeaderName::from_bytes(n.as_bytes())
                    .map_err(|_| format!("remove[{i}]: {n:?} is not a valid header name"))
            })
            .collect::<Result<Vec<_>, String>>()?;
        let edits = Edits {
            set: pairs("set", &m.set)?,
            add: pairs("add", &m.add)?,
            remove,
        };
        let empty = edits.set.is_empty() && edits.add.is_empty() && edits.remove.is_empty();
        Ok(HeaderModifier((!empty).then(|| Box::new(edits))))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_none()
    }

    /// Applies the modifier: `set` replaces every value, `add` appends a value next to the
    /// existing ones (separate header lines, which HTTP treats as one comma-joined value),
    /// `remove` drops the header. Names are case-insensitive by construction.
    pub fn apply(&self, headers: &mut HeaderMap) {
        let Some(edits) = &self.0 else {
            return;
        };
        for (name, value) in &edits.set {
            headers.insert(name.clone(), value.clone());
        }
        for (name, value) in &edits.add {
            headers.append(name.clone(), value.clone());
        }
        for name in &edits.remove {
            headers.remove(name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hv(name: &str, value: &str) -> pb::HeaderValue {
        pb::HeaderValue {
            name: name.into(),
            value: value.into(),
        }
    }

    #[test]
    fn set_add_remove() {
        let m = HeaderModifier::compile(Some(&pb::HeaderModifier {
            set: vec![hv("X-Set", "one")],
            add: vec![hv("x-add", "new")],
            remove: vec!["X-Gone".into()],
        }))
        .unwrap();
        let mut h = HeaderMap::new();
        h.append("x-set", HeaderValue::from_static("a"));
        h.append("x-set", HeaderValue::from_static("b"));
        h.append("x-add", HeaderValue::from_static("old"));
        h.append("x-gone", HeaderValue::from_static("bye"));
        h.append("x-kept", HeaderValue::from_static("k"));
        m.apply(&mut h);
        let all =
            |n: &str| -> Vec<&str> { h.get_all(n).iter().map(|v| v.to_str().unwrap()).collect() };
        assert_eq!(all("x-set"), ["one"]);
        assert_eq!(all("x-add"), ["old", "new"]);
        assert!(all("x-gone").is_empty());
        assert_eq!(all("x-kept"), ["k"]);
        // Adding a header that is absent creates it.
        let mut empty = HeaderMap::new();
        m.apply(&mut empty);
        assert_eq!(empty["x-add"], "new");
        assert_eq!(empty["x-set"], "one");
    }

    #[test]
    fn errors_name_the_field() {
        let err = HeaderModifier::compile(Some(&pb::HeaderModifier {
            add: vec![hv("ok", "v"), hv("bad name", "v")],
            ..Default::default()
        }))
        .unwrap_err();
        assert!(err.starts_with("add[1].name: "), "{err}");
        let err = HeaderModifier::compile(Some(&pb::HeaderModifier {
            set: vec![hv("x", "a\nb")],
            ..Default::default()
        }))
        .unwrap_err();
        assert!(err.starts_with("set[0].value: "), "{err}");
        let err = HeaderModifier::compile(Some(&pb::HeaderModifier {
            remove: vec![String::new()],
            ..Default::default()
        }))
        .unwrap_err();
        assert!(err.starts_with("remove[0]: "), "{err}");
        assert!(HeaderModifier::compile(None).unwrap().is_empty());
    }
}
