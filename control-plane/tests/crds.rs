//! The committed CRDs under `crds/`: current with the Rust types, and carrying what `kubectl`
//! users and the API server rely on (printer columns, status subresource, validation).

use std::path::PathBuf;

use serde_json::Value;
use sluice_control_plane::model::goma::crd;

fn crds_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../crds")
}

fn read(name: &str) -> String {
    let path = crds_dir().join(name);
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}; run `just crds`", path.display()))
}

/// A committed CRD file, parsed the way a YAML tool would.
fn load(plural: &str) -> Value {
    let text = read(&format!("gateway.jkaninda.dev_{plural}.yaml"));
    let mut options = serde_saphyr::Options::default();
    options.strict_booleans = true;
    serde_saphyr::from_str_with_options(&text, options)
        .unwrap_or_else(|e| panic!("crds/{plural}: not YAML: {e}"))
}

fn version(crd: &Value) -> &Value {
    let versions = crd["spec"]["versions"].as_array().expect("versions");
    assert_eq!(versions.len(), 1);
    assert_eq!(versions[0]["name"], "v1alpha1");
    assert_eq!(versions[0]["served"], true);
    assert_eq!(versions[0]["storage"], true);
    &versions[0]
}

fn spec_schema(crd: &Value) -> &Value {
    &version(crd)["schema"]["openAPIV3Schema"]["properties"]["spec"]
}

/// The schema node at a dotted path of properties below `spec` (`service.httpPort`).
fn field<'a>(crd: &'a Value, path: &str) -> &'a Value {
    path.split('.').fold(spec_schema(crd), |node, key| {
        let node = if node["type"] == "array" {
            &node["items"]
        } else {
            node
        };
        let next = &node["properties"][key];
        assert!(!next.is_null(), "no spec.{path} (at {key})");
        next
    })
}

#[test]
fn committed_crds_are_current() {
    let files = crd::files().expect("render CRDs");
    for (name, content) in &files {
        let committed = std::fs::read_to_string(crds_dir().join(name)).unwrap_or_default();
        assert!(
            committed == *content,
            "crds/{name} is stale or missing: run `just crds` (or `cargo run -- crds --dir crds`) and commit the result"
        );
    }
    // Nothing generated-looking is left over from a renamed CRD.
    for entry in std::fs::read_dir(crds_dir()).expect("crds/") {
        let name = entry
            .expect("entry")
            .file_name()
            .to_string_lossy()
            .into_owned();
        assert!(
            name == "README.md" || files.iter().any(|(f, _)| *f == name),
            "crds/{name} is not generated any more: delete it"
        );
    }
}

#[test]
fn the_stream_holds_every_file() {
    let stream = crd::yaml_stream().expect("render");
    let docs: Vec<Value> = serde_saphyr::from_multiple(&stream).expect("multi-document YAML");
    let names: Vec<&str> = docs
        .iter()
        .map(|d| d["metadata"]["name"].as_str().expect("name"))
        .collect();
    assert_eq!(
        names,
        [
            "gateways.gateway.jkaninda.dev",
            "routes.gateway.jkaninda.dev",
            "middlewares.gateway.jkaninda.dev"
        ]
    );
    let kustomization = read("kustomization.yaml");
    for plural in ["gateways", "routes", "middlewares"] {
        assert!(
            kustomization.contains(&format!("- gateway.jkaninda.dev_{plural}.yaml\n")),
            "{kustomization}"
        );
    }
}

/// (plural, `kubectl get` header, (JSON path, type) of each column after NAME)
type Columns = (
    &'static str,
    &'static str,
    &'static [(&'static str, &'static str)],
);

/// `kubectl get` headers as the seed docs show them (NAME is implicit), with the JSON path and
/// type each column reads.
#[test]
fn printer_columns_match_the_seed_docs() {
    let expected: [Columns; 3] = [
        (
            "gateways",
            "NAME TYPE ADDRESS REPLICAS READY ROUTES AGE",
            &[
                (".spec.service.type", "string"),
                (".status.addresses[0]", "string"),
                (".status.replicas", "integer"),
                (".status.readyReplicas", "integer"),
                (".status.routes", "integer"),
                (".metadata.creationTimestamp", "date"),
            ],
        ),
        (
            "routes",
            "NAME GATEWAYS PATH TARGET READY AGE",
            &[
                (".spec.gateways", "string"),
                (".spec.path", "string"),
                (".spec.target", "string"),
                (".status.ready", "boolean"),
                (".metadata.creationTimestamp", "date"),
            ],
        ),
        (
            "middlewares",
            "NAME TYPE READY AGE",
            &[
                (".spec.type", "string"),
                (".status.ready", "boolean"),
                (".metadata.creationTimestamp", "date"),
            ],
        ),
    ];
    for (plural, header, paths) in expected {
        let crd = load(plural);
        let columns = version(&crd)["additionalPrinterColumns"]
            .as_array()
            .expect("printer columns");
        let shown: Vec<String> = std::iter::once("NAME".to_owned())
            .chain(
                columns
                    .iter()
                    .map(|c| c["name"].as_str().unwrap().to_uppercase()),
            )
            .collect();
        assert_eq!(shown.join(" "), header, "{plural}");
        let read: Vec<(&str, &str)> = columns
            .iter()
            .map(|c| (c["jsonPath"].as_str().unwrap(), c["type"].as_str().unwrap()))
            .collect();
        assert_eq!(read, paths, "{plural}");
    }
}

#[test]
fn every_kind_is_namespaced_with_a_status_subresource() {
    for (plural, kind) in [
        ("gateways", "Gateway"),
        ("routes", "Route"),
        ("middlewares", "Middleware"),
    ] {
        let crd = load(plural);
        assert_eq!(crd["spec"]["group"], "gateway.jkaninda.dev");
        assert_eq!(crd["spec"]["scope"], "Namespaced");
        assert_eq!(crd["spec"]["names"]["kind"], kind);
        assert_eq!(crd["spec"]["names"]["plural"], plural);
        assert!(
            version(&crd)["subresources"]["status"].is_object(),
            "{plural}: no status subresource"
        );
        let status = &version(&crd)["schema"]["openAPIV3Schema"]["properties"]["status"];
        let conditions = &status["properties"]["conditions"];
        assert_eq!(conditions["x-kubernetes-list-type"], "map", "{plural}");
        assert_eq!(
            conditions["x-kubernetes-list-map-keys"],
            serde_json::json!(["type"])
        );
        assert!(status["properties"]["observedGeneration"].is_object());
    }
}

fn rules(node: &Value) -> Vec<&str> {
    node["x-kubernetes-validations"]
        .as_array()
        .map(|r| r.iter().filter_map(|r| r["rule"].as_str()).collect())
        .unwrap_or_default()
}

#[test]
fn cel_rules_cover_what_a_schema_cannot_say() {
    let route = load("routes");
    let route_rules = rules(spec_schema(&route));
    assert!(
        route_rules
            .iter()
            .any(|r| r.contains("has(self.target) && has(self.backends)")),
        "target XOR backends: {route_rules:?}"
    );
    assert!(
        route_rules
            .iter()
            .any(|r| r.starts_with("has(self.target) ||")),
        "target or backends required: {route_rules:?}"
    );

    let middleware = load("middlewares");
    let spec = spec_schema(&middleware);
    let middleware_rules: Vec<&Value> = spec["x-kubernetes-validations"]
        .as_array()
        .expect("middleware CEL rules")
        .iter()
        .collect();
    for (field, message) in [
        (
            ".rule.users",
            "required for type basic (or one of usersSecret)",
        ),
        (".rule.url", "required for type ldap"),
        (".rule.baseDN", "required for type ldap"),
        (
            ".rule.secret",
            "required for type jwt (or one of publicKey, jwksUrl, jwksFile)",
        ),
        (".rule.redirectUrl", "required for type oauth"),
        (".rule.authUrl", "required for type forwardAuth"),
        (".rule.requestsPerUnit", "required for type rateLimit"),
        (".rule.countries", "required for type geoBlock"),
        (".rule.replacement", "required for type redirectRegex"),
    ] {
        let rule = middleware_rules
            .iter()
            .find(|r| r["fieldPath"] == field && r["message"] == message)
            .unwrap_or_else(|| panic!("no CEL rule for {field}: {message}"));
        assert_eq!(rule["reason"], "FieldValueRequired");
        // The field path must exist in the schema, or the API server rejects the CRD.
        let key = field.trim_start_matches(".rule.");
        assert!(
            spec["properties"]["rule"]["properties"][key].is_object(),
            "{field}"
        );
    }
    // Aliases are covered: the rule is keyed on every spelling of the type.
    assert!(
        middleware_rules.iter().any(|r| r["rule"]
            .as_str()
            .is_some_and(|r| r.contains("['jwt', 'jwtAuth']"))),
        "aliases"
    );

    let gateway = load("gateways");
    assert!(!rules(field(&gateway, "autoScaling")).is_empty());
    assert!(!rules(field(&gateway, "providers.http")).is_empty());
    assert!(!rules(field(&gateway, "providers.git")).is_empty());
}

#[test]
fn enums_minimums_defaults_and_required_fields_are_published() {
    let gateway = load("gateways");
    let route = load("routes");
    let middleware = load("middlewares");

    let enum_of = |crd: &Value, path: &str| -> Vec<String> {
        field(crd, path)["enum"]
            .as_array()
            .unwrap_or_else(|| panic!("spec.{path}: no enum"))
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect()
    };
    let types = enum_of(&middleware, "type");
    assert_eq!(types.len(), 26, "22 types and 4 aliases: {types:?}");
    for name in [
        "basicAuth",
        "basic",
        "jwtAuth",
        "oauth2",
        "ldapAuth",
        "geoBlock",
        "stripQuery",
        "redirect",
        "requestHeaders",
        "accessLog",
    ] {
        assert!(types.iter().any(|t| t == name), "{name}");
    }
    assert_eq!(
        enum_of(&gateway, "service.type"),
        ["ClusterIP", "NodePort", "LoadBalancer"]
    );
    assert_eq!(
        enum_of(&gateway, "server.logLevel"),
        ["info", "debug", "trace", "off"]
    );
    assert_eq!(
        enum_of(&gateway, "certManager.acme.challengeType"),
        ["http-01", "dns-01"]
    );
    assert_eq!(
        enum_of(&route, "backends.match.operator"),
        [
            "equals",
            "not_equals",
            "contains",
            "not_contains",
            "starts_with",
            "ends_with",
            "regex",
            "in"
        ]
    );
    assert_eq!(
        enum_of(&route, "backends.match.source"),
        ["header", "cookie", "query", "ip"]
    );
    assert_eq!(
        enum_of(&middleware, "rule.unit"),
        ["second", "minute", "hour"]
    );

    let number = |crd: &Value, path: &str, key: &str| -> f64 {
        field(crd, path)[key]
            .as_f64()
            .unwrap_or_else(|| panic!("spec.{path}: no {key}"))
    };
    assert_eq!(number(&gateway, "replicas", "minimum"), 0.0);
    assert_eq!(number(&gateway, "autoScaling.minReplicas", "minimum"), 1.0);
    assert_eq!(number(&gateway, "autoScaling.maxReplicas", "minimum"), 1.0);
    assert_eq!(number(&gateway, "service.httpPort", "maximum"), 65535.0);
    assert_eq!(number(&route, "maintenance.status", "minimum"), 100.0);
    assert_eq!(number(&route, "maintenance.status", "maximum"), 599.0);
    assert_eq!(number(&route, "gateways", "minItems"), 1.0);
    assert_eq!(number(&route, "path", "minLength"), 1.0);
    assert_eq!(number(&middleware, "rule.requestsPerUnit", "minimum"), 1.0);

    for (crd, path, default) in [
        (&gateway, "replicas", serde_json::json!(1)),
        (&gateway, "autoScaling.maxReplicas", serde_json::json!(10)),
        (&gateway, "server.logLevel", serde_json::json!("info")),
        (&gateway, "server.timeouts.read", serde_json::json!(30)),
        (&gateway, "server.timeouts.write", serde_json::json!(60)),
        (&gateway, "server.timeouts.idle", serde_json::json!(90)),
        (
            &gateway,
            "server.monitoring.metricsPath",
            serde_json::json!("/metrics"),
        ),
        (
            &gateway,
            "server.networking.transport.maxIdleConns",
            serde_json::json!(512),
        ),
        (&gateway, "service.type", serde_json::json!("ClusterIP")),
        (&gateway, "service.httpPort", serde_json::json!(8080)),
        (&gateway, "service.httpsPort", serde_json::json!(8443)),
        (
            &gateway,
            "providers.kubernetes.enabled",
            serde_json::json!(true),
        ),
        (
            &gateway,
            "certManager.acme.termsAccepted",
            serde_json::json!(true),
        ),
        (&route, "enabled", serde_json::json!(true)),
        (
            &route,
            "security.forwardHostHeaders",
            serde_json::json!(true),
        ),
        (&route, "healthCheck.interval", serde_json::json!("30s")),
        (&route, "healthCheck.timeout", serde_json::json!("5s")),
        (&route, "maintenance.status", serde_json::json!(503)),
    ] {
        assert_eq!(field(crd, path)["default"], default, "spec.{path}");
    }

    let required = |node: &Value| -> Vec<String> {
        node["required"]
            .as_array()
            .map(|r| {
                r.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    let route_required = required(spec_schema(&route));
    assert!(
        route_required.contains(&"gateways".to_owned())
            && route_required.contains(&"path".to_owned())
    );
    // A required field carries no default (the API server would refuse the CRD's default).
    assert!(field(&route, "path").get("default").is_none());
    assert_eq!(required(field(&route, "tls")), ["secretName"]);
    assert_eq!(required(field(&route, "healthCheck")), ["path"]);
    assert_eq!(required(field(&gateway, "certManager.acme")), ["email"]);
    assert_eq!(required(spec_schema(&middleware)), ["type"]);
    // Rule keys of one type carry no default into another type's rule.
    assert!(
        field(&middleware, "rule.statusCode")
            .get("default")
            .is_none()
    );
}

/// Kubernetes' structural-schema rules (apiextensions validation), checked on every node.
fn check_structural(node: &Value, path: &str, problems: &mut Vec<String>) {
    const ALLOWED: [&str; 30] = [
        "description",
        "type",
        "format",
        "title",
        "maximum",
        "minimum",
        "exclusiveMaximum",
        "exclusiveMinimum",
        "maxLength",
        "minLength",
        "pattern",
        "maxItems",
        "minItems",
        "multipleOf",
        "enum",
        "maxProperties",
        "minProperties",
        "required",
        "items",
        "allOf",
        "oneOf",
        "anyOf",
        "not",
        "properties",
        "additionalProperties",
        "default",
        "nullable",
        "uniqueItems",
        "x-kubernetes-validations",
        "example",
    ];
    let Some(object) = node.as_object() else {
        problems.push(format!("{path}: not a schema object"));
        return;
    };
    for key in object.keys() {
        if !ALLOWED.contains(&key.as_str()) && !key.starts_with("x-kubernetes-") {
            problems.push(format!("{path}: {key} is not allowed"));
        }
    }
    let preserve = object.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true));
    let int_or_string = object.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true));
    if object
        .get("type")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
        && !preserve
        && !int_or_string
    {
        problems.push(format!("{path}: no type"));
    }
    if object.get("uniqueItems") == Some(&Value::Bool(true)) {
        problems.push(format!("{path}: uniqueItems true"));
    }
    if object.contains_key("properties") && object.contains_key("additionalProperties") {
        problems.push(format!(
            "{path}: properties and additionalProperties together"
        ));
    }
    if object.get("type") == Some(&Value::String("array".into())) && !object.contains_key("items") {
        problems.push(format!("{path}: array without items"));
    }
    for junctor in ["allOf", "anyOf", "oneOf", "not"] {
        let branches: Vec<&Value> = match object.get(junctor) {
            Some(Value::Array(items)) => items.iter().collect(),
            Some(single) => vec![single],
            None => continue,
        };
        for b in branches {
            for banned in [
                "type",
                "description",
                "default",
                "nullable",
                "additionalProperties",
            ] {
                if b.get(banned).is_some() {
                    problems.push(format!(
                        "{path}.{junctor}: {banned} inside a logical junctor"
                    ));
                }
            }
        }
    }
    if let Some(Value::Object(properties)) = object.get("properties") {
        for (k, v) in properties {
            check_structural(v, &format!("{path}.{k}"), problems);
        }
    }
    if let Some(items) = object.get("items") {
        check_structural(items, &format!("{path}[]"), problems);
    }
    if let Some(additional @ Value::Object(_)) = object.get("additionalProperties") {
        check_structural(additional, &format!("{path}{{}}"), problems);
    }
}

#[test]
fn every_schema_is_structural() {
    for plural in ["gateways", "routes", "middlewares"] {
        let crd = load(plural);
        let root = &version(&crd)["schema"]["openAPIV3Schema"];
        let mut problems = Vec::new();
        check_structural(root, plural, &mut problems);
        assert!(problems.is_empty(), "{plural}:\n{}", problems.join("\n"));
        // The root is an object whose spec is required.
        assert_eq!(root["type"], "object");
    }
}

#[test]
fn the_structural_checker_catches_what_the_api_server_refuses() {
    let bad = serde_json::json!({
        "type": "object",
        "properties": {
            "untyped": {"description": "x"},
            "both": {"type": "object", "properties": {}, "additionalProperties": {"type": "string"}},
            "ref": {"$ref": "#/definitions/x", "type": "object"},
            "list": {"type": "array"},
            "junctor": {"type": "string", "anyOf": [{"type": "string"}]},
        }
    });
    let mut problems = Vec::new();
    check_structural(&bad, "bad", &mut problems);
    for expected in [
        "bad.untyped: no type",
        "bad.both: properties and additionalProperties together",
        "bad.ref: $ref is not allowed",
        "bad.list: array without items",
        "bad.junctor.anyOf: type inside a logical junctor",
    ] {
        assert!(
            problems.iter().any(|p| p == expected),
            "{expected}: {problems:?}"
        );
    }
}
