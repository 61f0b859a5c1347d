//! The admin `/config_dump`: the resources this data plane holds (accepted from the control
//! plane) with their versions, as proto3 JSON through the descriptor set sluice-proto embeds, so
//! every field is shown without hand-written serialisers. Secrets show name, source and kind
//! only: never key material or opaque data.
//!
//! Routes and clusters are the held entries themselves (shared allocations: the view costs a
//! pointer per resource), rendered from the bytes the control plane sent.

use crate::resources::{HeldMap, Resources};
use crate::snapshot::Changed;
use prost::Message;
use prost_reflect::{DescriptorPool, DynamicMessage};
use serde_json::{Value, json};
use sluice_proto::config as pb;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock};

#[derive(Debug, Clone)]
struct Held<T> {
    version: String,
    resource: Arc<T>,
}

type Held4 = (
    BTreeMap<String, Held<pb::Listener>>,
    HeldMap<pb::Route>,
    HeldMap<pb::Cluster>,
    BTreeMap<String, Held<pb::Secret>>,
);

/// The resources being served, updated by the xDS client after each applied response (in
/// proportion to the change) and read by the admin endpoint.
#[derive(Debug, Default)]
pub struct ActiveConfig {
    held: Mutex<Held4>,
}

/// Looks up the version of a held resource.
pub trait Versions {
    fn version(&self, type_url: &str, name: &str) -> Option<&str>;
}

impl ActiveConfig {
    /// Brings the held copy up to date with `resources` for the `changed` names.
    pub fn update(&self, resources: &Resources, versions: &dyn Versions, changed: &Changed) {
        use sluice_proto::type_url;
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        if changed.listeners {
            held.0 = resources
                .listeners
                .iter()
                .map(|(n, r)| (n.clone(), entry(versions, type_url::LISTENER, n, r)))
                .collect();
        }
        share(&mut held.1, &resources.routes, &changed.routes);
        share(&mut held.2, &resources.clusters, &changed.clusters);
        sync(
            &mut held.3,
            &resources.secrets,
            &changed.secrets,
            versions,
            type_url::SECRET,
        );
    }

    /// The dump as JSON: `{listeners, routes, clusters, secrets}`, each a list of
    /// `{name, version, resource}` in name order.
    pub fn render(&self) -> Value {
        // Clone the (shared) entries so serialisation runs without the lock.
        let (listeners, routes, clusters, secrets) =
            self.held.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let secrets: Vec<Value> = secrets
            .iter()
            .map(|(name, h)| {
                json!({
                    "name": name,
                    "version": h.version,
                    "source": h.resource.source,
                    "kind": secret_kind(&h.resource),
                })
            })
            .collect();
        json!({
            "listeners": dump(&listeners, "sluice.config.v1.Listener"),
            "routes": dump_encoded(&routes, "sluice.config.v1.Route"),
            "clusters": dump_encoded(&clusters, "sluice.config.v1.Cluster"),
            "secrets": secrets,
        })
    }
}

fn entry<T>(versions: &dyn Versions, type_url: &str, name: &str, r: &Arc<T>) -> Held<T> {
    Held {
        version: versions
            .version(type_url, name)
            .unwrap_or_default()
            .to_owned(),
        resource: r.clone(),
    }
}

/// Points the view at the held entries of the `changed` names.
fn share<T>(
    view: &mut HeldMap<T>,
    current: &HeldMap<T>,
    changed: &std::collections::BTreeSet<String>,
) {
    for name in changed {
        match current.held(name) {
            Some(h) => view.put(h.clone()),
            None => {
                view.remove(name);
            }
        }
    }
}

fn sync<T>(
    held: &mut BTreeMap<String, Held<T>>,
    current: &BTreeMap<String, Arc<T>>,
    changed: &std::collections::BTreeSet<String>,
    versions: &dyn Versions,
    type_url: &str,
) {
    for name in changed {
        match current.get(name) {
            Some(r) => {
                held.insert(name.clone(), entry(versions, type_url, name, r));
            }
            None => {
                held.remove(name);
            }
        }
    }
}

fn secret_kind(s: &pb::Secret) -> &'static str {
    match s.kind {
        Some(pb::secret::Kind::TlsCertificate(_)) => "tls_certificate",
        Some(pb::secret::Kind::CaBundle(_)) => "ca_bundle",
        Some(pb::secret::Kind::Opaque(_)) => "opaque",
        None => "none",
    }
}

fn pool() -> Option<&'static DescriptorPool> {
    static POOL: OnceLock<Option<DescriptorPool>> = OnceLock::new();
    POOL.get_or_init(|| match DescriptorPool::decode(sluice_proto::FILE_DESCRIPTOR_SET) {
        Ok(p) => Some(p),
        Err(error) => {
            tracing::error!(%error, "cannot load the embedded descriptor set; config_dump shows names only");
            None
        }
    })
    .as_ref()
}

/// `message` in `encoded` as proto3 JSON (null when it cannot be shown).
fn to_json(message: Option<&prost_reflect::MessageDescriptor>, encoded: &[u8]) -> Value {
    message
        .and_then(|d| DynamicMessage::decode(d.clone(), encoded).ok())
        .and_then(|m| serde_json::to_value(&m).ok())
        .unwrap_or(Value::Null)
}

fn dump<T: Message>(held: &BTreeMap<String, Held<T>>, message: &str) -> Vec<Value> {
    let desc = pool().and_then(|p| p.get_message_by_name(message));
    held.iter()
        .map(|(name, h)| {
            let resource = to_json(desc.as_ref(), &h.resource.encode_to_vec());
            json!({"name": name, "version": h.version, "resource": resource})
        })
        .collect()
}

fn dump_encoded<T>(held: &HeldMap<T>, message: &str) -> Vec<Value> {
    let desc = pool().and_then(|p| p.get_message_by_name(message));
    held.iter()
        .map(|h| {
            let resource = to_json(desc.as_ref(), h.encoded());
            json!({"name": h.name(), "version": h.version(), "resource": resource})
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::Held;
    use crate::tls::test_certs::self_signed;

    struct V;
    impl Versions for V {
        fn version(&self, _: &str, _: &str) -> Option<&str> {
            Some("v1")
        }
    }

    #[test]
    fn dumps_resources_as_json_without_key_material() {
        let mut res = Resources::default();
        res.add_http_listener("http", 8080)
            .add_cluster("backend", &[("127.0.0.1", 9000)]);
        let api = pb::Route {
            name: "api".into(),
            listeners: vec!["http".into()],
            disable_metrics: true,
            ..Default::default()
        };
        // Routes and clusters carry the version they were received with.
        res.routes
            .put(Held::new("api", "v7", &api.encode_to_vec()).expect("small"));
        let cert = self_signed(&["a.test"]);
        res.secrets
            .insert("cert".into(), Arc::new(cert.secret("cert")));
        let active = ActiveConfig::default();
        let all = Changed {
            listeners: true,
            clusters: ["backend".to_string()].into(),
            routes: ["api".to_string()].into(),
            secrets: ["cert".to_string()].into(),
        };
        active.update(&res, &V, &all);
        let dump = active.render();
        assert_eq!(dump["listeners"][0]["resource"]["port"], 8080);
        assert_eq!(dump["routes"][0]["name"], "api");
        assert_eq!(dump["routes"][0]["version"], "v7");
        assert_eq!(dump["routes"][0]["resource"]["disableMetrics"], true);
        assert_eq!(
            dump["clusters"][0]["resource"]["endpoints"][0]["address"],
            "127.0.0.1"
        );
        assert_eq!(dump["secrets"][0]["kind"], "tls_certificate");
        let text = dump.to_string();
        assert!(
            !text.contains("PRIVATE KEY") && !text.contains("privateKey"),
            "{text}"
        );

        // Removal follows the changed names only.
        res.routes.clear();
        let removed = Changed {
            routes: ["api".to_string()].into(),
            ..Default::default()
        };
        active.update(&res, &V, &removed);
        let dump = active.render();
        assert_eq!(dump["routes"], json!([]));
        assert_eq!(dump["clusters"].as_array().map(Vec::len), Some(1));
    }
}
