//! Kubernetes Secrets to Secret resources: `kubernetes.io/tls` becomes a TlsCertificate, any other
//! Secret with a `ca.crt` key a CaBundle (the form `spec.security.tls.rootCAsSecret` needs; other
//! keys are dropped), anything else Opaque data. A `kubernetes.io/tls` Secret's `ca.crt` is not
//! usable as a CA bundle: put the CA in an Opaque Secret. Pure: no I/O.

use super::{Errors, TranslateError};
use crate::model::ObjectKey;
use base64::Engine;
use sluice_proto::config as pb;
use std::collections::BTreeMap;

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
}
