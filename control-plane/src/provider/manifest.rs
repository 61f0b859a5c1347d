//! One manifest (a JSON value, as read from a file or received from the API server) to an
//! [`Object`]: the parse path every provider shares, so a cluster and a directory are held to the
//! same rules and produce the same errors.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use serde_json::Value;

use crate::model::{DEFAULT_NAMESPACE, Kind, Object, ObjectKey, gateway_api, goma};

/// Why a manifest was not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// The object the manifest names, when it got far enough to name one.
    pub key: Option<ObjectKey>,
    /// Names the field: `spec.backends[1].endpoint: ...`. Without a key it describes the document.
    pub message: String,
    /// The manifest may be one of our objects that is merely broken (its identity could not be
    /// read): its absence must not be taken as a removal.
    pub ambiguous: bool,
}

/// `Route default/api: spec.backends[1].weight: ...`
impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(key) = &self.key {
            write!(f, "{key}: ")?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for ParseError {}

fn unattributed(message: String) -> ParseError {
    ParseError {
        key: None,
        message,
        ambiguous: true,
    }
}

/// Parses one manifest: resolves its kind and identity, checks its names, and types it (Goma and
/// Gateway API kinds, Services and EndpointSlices; Namespaces, Secrets and ConfigMaps are kept as
/// their JSON).
pub fn parse_object(doc: Value) -> Result<Object, ParseError> {
    let Some(map) = doc.as_object() else {
        return Err(unattributed(format!(
            "expected a manifest (a mapping), found {}",
            type_name(&doc)
        )));
    };
    let str_field = |name: &str| {
        map.get(name)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    };
    let (Some(api_version), Some(kind_name)) = (str_field("apiVersion"), str_field("kind")) else {
        let missing = if str_field("apiVersion").is_none() {
            "apiVersion"
        } else {
            "kind"
        };
        return Err(unattributed(format!("missing {missing}")));
    };
    let Some(kind) = Kind::from_type(api_version, kind_name) else {
        // A misspelt kind of ours may be an object we served: do not treat it as removed.
        let group = api_version.split_once('/').map_or("", |(g, _)| g);
        return Err(ParseError {
            key: None,
            message: format!("unknown kind {kind_name} (apiVersion {api_version}); ignored"),
            ambiguous: group == goma::GROUP || group == crate::model::GATEWAY_API_GROUP,
        });
    };
    let meta = map.get("metadata").and_then(Value::as_object);
    let Some(name) = meta
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
    else {
        return Err(unattributed(format!("{kind}: missing metadata.name")));
    };
    let namespace = match meta.and_then(|m| m.get("namespace")) {
        _ if !kind.is_namespaced() => String::new(),
        None | Some(Value::Null) => DEFAULT_NAMESPACE.to_owned(),
        Some(Value::String(ns)) if !ns.is_empty() => ns.clone(),
        Some(_) => {
            return Err(unattributed(format!(
                "{kind} {name}: metadata.namespace must be a non-empty string"
            )));
        }
    };
    let key = ObjectKey::new(kind, namespace, name);
    // Names end up in resource names (`route/<ns>/<name>`): hold them to Kubernetes' rules.
    for (field, value) in [
        ("metadata.name", &key.name),
        ("metadata.namespace", &key.namespace),
    ] {
        if !value.is_empty() && !is_dns_subdomain(value) {
            return Err(ParseError {
                message: format!(
                    "{field}: {value:?} is not a valid name (lowercase letters, digits, '-' and '.', at most 253)"
                ),
                key: Some(key.clone()),
                ambiguous: true,
            });
        }
    }
    typed_object(&key, doc).map_err(|message| ParseError {
        key: Some(key),
        message,
        ambiguous: false,
    })
}

fn typed_object(key: &ObjectKey, mut doc: Value) -> Result<Object, String> {
    // The namespace is part of the key: make the typed metadata agree with it.
    if let Some(meta) = doc.get_mut("metadata").and_then(Value::as_object_mut) {
        if key.namespace.is_empty() {
            meta.remove("namespace");
        } else {
            meta.insert("namespace".to_owned(), Value::String(key.namespace.clone()));
        }
    }
    let object = match key.kind {
        Kind::GomaGateway => Object::GomaGateway(Arc::new(from_value::<goma::Gateway>(doc)?)),
        Kind::GomaRoute => Object::GomaRoute(Arc::new(from_value::<goma::Route>(doc)?)),
        Kind::GomaMiddleware => {
            let middleware = from_value::<goma::Middleware>(doc)?;
            // A rule its type cannot use is an error here, not a middleware silently skipped.
            middleware.spec.typed_rule().map_err(|e| e.to_string())?;
            Object::GomaMiddleware(Arc::new(middleware))
        }
        kind if let Some(typed) = gateway_api::ApiObject::from_manifest(kind, &doc) => {
            Object::Api(Arc::new(typed?))
        }
        _ => {
            let labels = match doc.pointer("/metadata/labels") {
                None | Some(Value::Null) => BTreeMap::new(),
                Some(labels) => serde_json::from_value(labels.clone())
                    .map_err(|e| format!("metadata.labels: {e}"))?,
            };
            Object::Other {
                key: key.clone(),
                labels,
                body: doc,
            }
        }
    };
    Ok(object)
}

/// Deserialises a document, prefixing the error with the path of the offending field.
fn from_value<T: serde::de::DeserializeOwned>(doc: Value) -> Result<T, String> {
    T::deserialize(&doc).map_err(|e| {
        let message = e.to_string();
        match locate_error(&doc, &message) {
            Some(path) => format!("{path}: {message}"),
            None => message,
        }
    })
}

/// serde_json reports no path for `from_value`; recover it from the token the message quotes
/// (`unknown field `tagret``, `unknown variant `equal``, `invalid type: string "x"`).
fn locate_error(doc: &Value, message: &str) -> Option<String> {
    let quoted = |open: char, close: char| -> Option<&str> {
        let start = message.find(open)? + open.len_utf8();
        let len = message[start..].find(close)?;
        Some(&message[start..start + len])
    };
    let roots = ["spec", "metadata"];
    let search = |pred: &dyn Fn(&str, &Value) -> bool| {
        roots.iter().find_map(|root| {
            let value = doc.get(*root)?;
            find_path(value, root.to_string(), pred)
        })
    };
    if message.starts_with("unknown field") {
        let field = quoted('`', '`')?;
        search(&|key, _| key == field)
    } else if message.starts_with("unknown variant") {
        let variant = quoted('`', '`')?;
        search(&|_, v| v.as_str() == Some(variant))
    } else if message.starts_with("invalid type: string") {
        let s = quoted('"', '"')?;
        search(&|_, v| v.as_str() == Some(s))
    } else if message.starts_with("invalid type") || message.starts_with("invalid value") {
        let token = quoted('`', '`')?;
        let scalar = serde_json::from_str::<Value>(token)
            .ok()
            .filter(|t| !t.is_string())?;
        search(&|_, v| *v == scalar)
    } else {
        None
    }
}

/// Depth-first path (`spec.backends[1].weight`) of the first entry `pred(key, value)` accepts.
fn find_path(value: &Value, path: String, pred: &dyn Fn(&str, &Value) -> bool) -> Option<String> {
    match value {
        Value::Object(map) => map.iter().find_map(|(k, v)| {
            let child = format!("{path}.{k}");
            if pred(k, v) {
                Some(child)
            } else {
                find_path(v, child, pred)
            }
        }),
        Value::Array(items) => items.iter().enumerate().find_map(|(i, v)| {
            let child = format!("{path}[{i}]");
            if pred("", v) {
                Some(child)
            } else {
                find_path(v, child, pred)
            }
        }),
        _ => None,
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

/// RFC 1123 subdomain, as Kubernetes requires of most object names.
fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn errors_carry_the_key_and_whether_the_object_may_be_ours() {
        let e = parse_object(
            json!({"apiVersion": "gateway.jkaninda.dev/v1alpha1", "kind": "Route",
            "metadata": {"name": "api", "namespace": "prod"}, "spec": {"tagret": "x"}}),
        )
        .unwrap_err();
        assert_eq!(e.key, Some(ObjectKey::new(Kind::GomaRoute, "prod", "api")));
        assert!(!e.ambiguous);
        assert!(
            e.to_string()
                .starts_with("Route prod/api: spec.tagret: unknown field"),
            "{e}"
        );

        let e = parse_object(
            json!({"apiVersion": "gateway.jkaninda.dev/v1alpha1", "kind": "Rute",
            "metadata": {"name": "api"}}),
        )
        .unwrap_err();
        assert_eq!((e.key, e.ambiguous), (None, true));
        let e = parse_object(json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "api"}}))
        .unwrap_err();
        assert_eq!((e.key, e.ambiguous), (None, false));
        let e = parse_object(json!([1])).unwrap_err();
        assert_eq!(e.message, "expected a manifest (a mapping), found a list");
    }

    #[test]
    fn cluster_scoped_kinds_drop_the_namespace() {
        let o = parse_object(json!({"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": "prod", "namespace": "ignored", "labels": {"team": "a"}}}))
        .unwrap();
        assert_eq!(o.key(), ObjectKey::new(Kind::Namespace, "", "prod"));
        assert_eq!(o.labels().get("team").map(String::as_str), Some("a"));
    }
}
