//! Kubernetes Secrets to Secret resources: `kubernetes.io/tls` becomes a TlsCertificate, any other
//! Secret with a `ca.crt` key a CaBundle (the form `spec.security.tls.rootCAsSecret` needs; other
//! keys are dropped), anything else Opaque data. A `kubernetes.io/tls` Secret's `ca.crt` is not
//! usable as a CA bundle: put the CA in an Opaque Secret. Pure: no I/O.

use super::{Errors, TranslateError};
use crate::model::gateway_api::gateway::GatewaySpec;
use crate::model::gateway_api::{ApiObject, ObjectReference};
use crate::model::{Kind, Object, ObjectKey};
use base64::Engine;
use sluice_proto::config as pb;
use std::collections::{BTreeMap, BTreeSet};

const TLS_TYPE: &str = "kubernetes.io/tls";

/// The Secret resource for a Kubernetes Secret `body` (its JSON form), named `<ns>/<name>`.
pub fn translate_secret(
    key: &ObjectKey,
    body: &serde_json::Value,
) -> Result<pb::Secret, TranslateError> {
    let object = key.to_string();
    let mut errors = Errors::default();
    let data = secret_data(body, &mut errors);
    let kind = body
        .get("type")
        .and_then(|t| t.as_str())
        .unwrap_or("Opaque");
    let name = super::goma::secret_resource_name(&key.namespace, &key.name);
    let kind = if kind == TLS_TYPE {
        let pem = |field: &str, errors: &mut Errors| match data.get(field) {
            Some(v) if !v.is_empty() => v.clone(),
            _ => {
                errors.push(
                    format!("data[{field:?}]"),
                    "required for a kubernetes.io/tls Secret",
                );
                Vec::new()
            }
        };
        let certificate_chain = pem("tls.crt", &mut errors);
        let private_key = pem("tls.key", &mut errors);
        pb::secret::Kind::TlsCertificate(pb::TlsCertificate {
            certificate_chain,
            private_key,
        })
    } else if let Some(ca) = data.get("ca.crt") {
        pb::secret::Kind::CaBundle(pb::CaBundle { pem: ca.clone() })
    } else {
        pb::secret::Kind::Opaque(pb::Opaque { data })
    };
    errors.into_result(&object)?;
    Ok(pb::Secret {
        name,
        source: object,
        kind: Some(kind),
    })
}

/// `data` (base64) merged with `stringData` (plain, wins on conflict), as the API server does.
fn secret_data(body: &serde_json::Value, errors: &mut Errors) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    if let Some(data) = body.get("data").and_then(|d| d.as_object()) {
        for (k, v) in data {
            let text = v.as_str().unwrap_or_default();
            // Values may be wrapped over several lines in manifests.
            let compact: String = text.split_whitespace().collect();
            match base64::engine::general_purpose::STANDARD.decode(compact) {
                Ok(bytes) => {
                    out.insert(k.clone(), bytes);
                }
                Err(e) => errors.push(format!("data[{k:?}]"), format!("not valid base64: {e}")),
            }
        }
    }
    if let Some(data) = body.get("stringData").and_then(|d| d.as_object()) {
        for (k, v) in data {
            match v.as_str() {
                Some(s) => {
                    out.insert(k.clone(), s.as_bytes().to_vec());
                }
                None => errors.push(format!("stringData[{k:?}]"), "must be a string"),
            }
        }
    }
    out
}

/// The Secrets `object` names, wherever a data plane may need them: Goma Gateway
/// `spec.server.tls[].secretName`, Route `spec.tls.secretName` and `spec.security.tls`
/// `rootCAsSecret` / `clientCertSecret`; Gateway API Gateway listener `tls.certificateRefs`,
/// `spec.tls.backend.clientCertificateRef` and the frontend `validation.caCertificateRefs`;
/// BackendTLSPolicy `spec.validation.caCertificateRefs`. Only references to core Secrets count,
/// plus the core ConfigMaps the CA references name (they hold CA bundles and are gated the same
/// way). Whether a reference is allowed (ReferenceGrant) is the translator's business: this only
/// says which objects a provider must make available. Goma Middlewares name no Secret.
pub fn referenced_secrets(object: &Object) -> BTreeSet<ObjectKey> {
    let mut out = BTreeSet::new();
    let mut local = |namespace: &str, name: &str| {
        let name = name.trim();
        if !name.is_empty() && !name.contains('/') {
            out.insert(ObjectKey::new(Kind::Secret, namespace, name));
        }
    };
    match object {
        Object::GomaGateway(gw) => {
            for t in &gw.spec.server.tls {
                local(&gw.metadata.namespace, &t.secret_name);
            }
        }
        Object::GomaRoute(route) => {
            let ns = &route.metadata.namespace;
            if let Some(tls) = &route.spec.tls {
                local(ns, &tls.secret_name);
            }
            if let Some(tls) = &route.spec.security.tls {
                for name in [&tls.root_cas_secret, &tls.client_cert_secret]
                    .into_iter()
                    .flatten()
                {
                    local(ns, name);
                }
            }
        }
        Object::GomaMiddleware(_) | Object::Other { .. } => {}
        Object::Api(api) => match &**api {
            ApiObject::Gateway(gw) => {
                gateway_api_gateway_refs(&gw.metadata.namespace, &gw.spec, &mut out)
            }
            ApiObject::BackendTlsPolicy(policy) => {
                for r in &policy.spec.validation.ca_certificate_refs {
                    // A LocalObjectReference: always the policy's namespace.
                    let referenced = secret_ref(&policy.metadata.namespace, r, false)
                        .or_else(|| config_map_ref(&policy.metadata.namespace, r));
                    if let Some(k) = referenced {
                        out.insert(ObjectKey::new(k.kind, &policy.metadata.namespace, k.name));
                    }
                }
            }
            _ => {}
        },
    }
    out
}

fn gateway_api_gateway_refs(namespace: &str, spec: &GatewaySpec, out: &mut BTreeSet<ObjectKey>) {
    for listener in &spec.listeners {
        for r in listener.tls.iter().flat_map(|t| &t.certificate_refs) {
            out.extend(secret_ref(namespace, r, true));
        }
    }
    let Some(tls) = &spec.tls else { return };
    if let Some(r) = tls
        .backend
        .as_ref()
        .and_then(|b| b.client_certificate_ref.as_ref())
    {
        out.extend(secret_ref(namespace, r, true));
    }
    let frontend = tls.frontend.iter();
    let validations = frontend
        .clone()
        .filter_map(|f| f.default.as_ref())
        .chain(frontend.flat_map(|f| f.per_port.iter().map(|p| &p.tls)))
        .filter_map(|t| t.validation.as_ref());
    for validation in validations {
        for r in &validation.ca_certificate_refs {
            // An ObjectReference: the kind is required, Secret or ConfigMap.
            out.extend(secret_ref(namespace, r, false).or_else(|| config_map_ref(namespace, r)));
        }
    }
}

/// A Gateway API reference to a core Secret (group "" and kind Secret; `kind_defaults_to_secret`
/// for SecretObjectReference, whose kind may be omitted). The namespace defaults to the
/// referrer's.
pub(crate) fn secret_ref(
    namespace: &str,
    r: &ObjectReference,
    kind_defaults_to_secret: bool,
) -> Option<ObjectKey> {
    let group_is_core = r.group.as_deref().is_none_or(str::is_empty);
    let kind_is_secret = match r.kind.as_deref() {
        Some(kind) => kind == "Secret",
        None => kind_defaults_to_secret,
    };
    let name = Some(r.name.as_str()).filter(|n| !n.is_empty())?;
    (group_is_core && kind_is_secret).then(|| {
        let ns = r
            .namespace
            .as_deref()
            .filter(|n| !n.is_empty())
            .unwrap_or(namespace);
        ObjectKey::new(Kind::Secret, ns, name)
    })
}

/// A Gateway API reference to a core ConfigMap (a CA bundle); the namespace defaults to the
/// referrer's.
fn config_map_ref(namespace: &str, r: &ObjectReference) -> Option<ObjectKey> {
    let is_config_map =
        r.group.as_deref().is_none_or(str::is_empty) && r.kind.as_deref() == Some("ConfigMap");
    (is_config_map && !r.name.is_empty()).then(|| {
        let ns = r
            .namespace
            .as_deref()
            .filter(|n| !n.is_empty())
            .unwrap_or(namespace);
        ObjectKey::new(Kind::ConfigMap, ns, &r.name)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Kind;
    use serde_json::json;

    fn key() -> ObjectKey {
        ObjectKey::new(Kind::Secret, "default", "site")
    }

    #[test]
    fn tls_secret_from_base64_data_or_string_data() {
        let body = json!({"type": "kubernetes.io/tls", "data": {"tls.crt": "Q0VSVA==", "tls.key": "S0VZ\n"}});
        let s = translate_secret(&key(), &body).unwrap();
        assert_eq!(s.name, "default/site");
        assert_eq!(
            s.kind,
            Some(pb::secret::Kind::TlsCertificate(pb::TlsCertificate {
                certificate_chain: b"CERT".to_vec(),
                private_key: b"KEY".to_vec(),
            }))
        );
        let body =
            json!({"type": "kubernetes.io/tls", "stringData": {"tls.crt": "C", "tls.key": "K"}});
        assert!(matches!(
            translate_secret(&key(), &body).unwrap().kind,
            Some(pb::secret::Kind::TlsCertificate(_))
        ));
    }

    #[test]
    fn errors_name_the_field() {
        let body = json!({"type": "kubernetes.io/tls", "data": {"tls.crt": "%%%"}});
        let e = translate_secret(&key(), &body).unwrap_err().to_string();
        assert!(e.starts_with("Secret default/site: "), "{e}");
        assert!(e.contains("data[\"tls.crt\"]: not valid base64"), "{e}");
        assert!(e.contains("data[\"tls.key\"]: required"), "{e}");
    }

    #[test]
    fn ca_bundle_and_opaque() {
        let ca = translate_secret(&key(), &json!({"stringData": {"ca.crt": "PEM"}})).unwrap();
        assert!(matches!(ca.kind, Some(pb::secret::Kind::CaBundle(_))));
        // Extra keys (as cert-manager writes them) do not hide the CA.
        let ca = translate_secret(
            &key(),
            &json!({"type": "Opaque", "stringData": {"ca.crt": "PEM", "note": "x"}}),
        )
        .unwrap();
        assert_eq!(
            ca.kind,
            Some(pb::secret::Kind::CaBundle(pb::CaBundle {
                pem: b"PEM".to_vec()
            }))
        );
        let tls = json!({"type": "kubernetes.io/tls", "stringData": {"tls.crt": "C", "tls.key": "K", "ca.crt": "PEM"}});
        assert!(matches!(
            translate_secret(&key(), &tls).unwrap().kind,
            Some(pb::secret::Kind::TlsCertificate(_))
        ));
        let opaque =
            translate_secret(&key(), &json!({"stringData": {"user": "a", "pass": "b"}})).unwrap();
        let Some(pb::secret::Kind::Opaque(o)) = opaque.kind else {
            panic!("opaque expected")
        };
        assert_eq!(o.data.get("pass").map(Vec::as_slice), Some(&b"b"[..]));
    }

    fn parse(yaml: &str) -> Object {
        let (mut objects, diags) =
            crate::provider::file::parse_manifests(std::path::Path::new("t.yaml"), yaml);
        assert!(diags.is_empty(), "{diags:?}");
        objects.remove(0)
    }

    fn names(refs: BTreeSet<ObjectKey>) -> Vec<String> {
        refs.into_iter()
            .map(|k| format!("{}/{}", k.namespace, k.name))
            .collect()
    }

    #[test]
    fn goma_references() {
        let gw = parse(
            "apiVersion: gateway.jkaninda.dev/v1alpha1\nkind: Gateway\nmetadata: {name: gw, namespace: edge}\nspec:\n  server: {tls: [{secretName: a}, {secretName: b}]}\n",
        );
        assert_eq!(names(referenced_secrets(&gw)), ["edge/a", "edge/b"]);
        let route = parse(
            "apiVersion: gateway.jkaninda.dev/v1alpha1\nkind: Route\nmetadata: {name: r}\nspec:\n  gateways: [gw]\n  path: /\n  target: https://b\n  tls: {secretName: cert}\n  security: {tls: {rootCAsSecret: ca, clientCertSecret: other/c}}\n",
        );
        // `other/c` is not a name in the route's namespace: the translator rejects it.
        assert_eq!(
            names(referenced_secrets(&route)),
            ["default/ca", "default/cert"]
        );
    }

    #[test]
    fn gateway_api_references() {
        let gw = parse(
            "apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: infra}
spec:
  gatewayClassName: sluice
  listeners:
  - name: https
    port: 443
    protocol: HTTPS
    tls:
      certificateRefs:
      - {name: site}
      - {kind: Secret, group: '', name: shared, namespace: certs}
      - {kind: ConfigMap, name: not-a-secret}
      - {group: example.com, kind: Secret, name: not-core}
  - {name: http, port: 80, protocol: HTTP}
  tls:
    backend: {clientCertificateRef: {name: client}}
    frontend:
      default: {validation: {caCertificateRefs: [{kind: Secret, group: '', name: ca}, {kind: ConfigMap, group: '', name: ca-cm}]}}
      perPort:
      - port: 8443
        tls: {validation: {caCertificateRefs: [{kind: Secret, group: '', name: ca2, namespace: certs}]}}
",
        );
        assert_eq!(
            names(referenced_secrets(&gw)),
            [
                "certs/ca2",
                "certs/shared",
                "infra/ca",
                "infra/client",
                "infra/site",
                "infra/ca-cm"
            ]
        );
        let policy = parse(
            "apiVersion: gateway.networking.k8s.io/v1
kind: BackendTLSPolicy
metadata: {name: p, namespace: apps}
spec:
  targetRefs: [{group: '', kind: Service, name: api}]
  validation:
    hostname: api.test
    caCertificateRefs: [{group: '', kind: Secret, name: ca}, {group: '', kind: ConfigMap, name: cm}]
",
        );
        assert_eq!(names(referenced_secrets(&policy)), ["apps/ca", "apps/cm"]);
        let http_route = parse(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: r}\nspec: {}\n",
        );
        assert!(referenced_secrets(&http_route).is_empty());
    }
}
