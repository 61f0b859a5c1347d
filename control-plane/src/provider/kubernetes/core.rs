//! The pure core of the Kubernetes provider: watcher events in, provider batches out. No I/O, so
//! tests feed it synthetic events (add, modify, delete, relist, a kind that is not installed).
//!
//! Each object goes through the same parse path as a file manifest ([`parse_object`]). An
//! invalid version is logged, recorded in [`ObjectErrors`] and not forwarded: the store keeps the
//! last good one. A relist (`Init` .. `InitDone`) deletes what vanished during the gap and sends
//! nothing for objects whose resourceVersion did not change. `Synced` is sent once, when every
//! watch has finished its first list.

use std::collections::{HashMap, HashSet};

use kube::api::DynamicObject;
use kube::runtime::watcher;
use serde_json::{Map, Value};

use super::secrets::SecretGate;
use super::watches::{WatchId, WatchSpec};
use crate::model::{DEFAULT_NAMESPACE, Kind, ObjectKey};
use crate::provider::object_errors::{ObjectError, ObjectErrors};
use crate::provider::{ProviderEvent, parse_object};
use crate::translate::secret::referenced_secrets;

/// What one watch currently sees.
struct WatchState {
    spec: WatchSpec,
    /// The first list completed (or the kind is not installed).
    synced: bool,
    /// Keys listed since the last `Init`, while a (re)list is under way.
    relisting: Option<HashSet<ObjectKey>>,
    objects: HashMap<ObjectKey, Seen>,
}

struct Seen {
    resource_version: String,
    /// A valid version was forwarded (or, for a Secret, is held by the gate).
    valid: bool,
}

pub struct WatchCore {
    watches: Vec<WatchState>,
    secrets: SecretGate,
    errors: ObjectErrors,
    synced: bool,
}

impl WatchCore {
    pub fn new(specs: Vec<WatchSpec>, errors: ObjectErrors) -> Self {
        Self {
            watches: specs
                .into_iter()
                .map(|spec| WatchState {
                    spec,
                    synced: false,
                    relisting: None,
                    objects: HashMap::new(),
                })
                .collect(),
            secrets: SecretGate::default(),
            errors,
            synced: false,
        }
    }

    /// True once every watch has finished its first list.
    pub fn is_synced(&self) -> bool {
        self.synced
    }

    /// The watches still waiting for their first list, for the "waiting for" log.
    pub fn pending(&self) -> Vec<&WatchSpec> {
        self.watches
            .iter()
            .filter(|w| !w.synced)
            .map(|w| &w.spec)
            .collect()
    }

    /// Applies one watcher event of watch `id`, appending what the store must learn to `out`.
    pub fn handle(
        &mut self,
        id: WatchId,
        event: watcher::Event<DynamicObject>,
        out: &mut Vec<ProviderEvent>,
    ) {
        if id >= self.watches.len() {
            tracing::error!(watch = id, "event for an unknown watch ignored");
            return;
        }
        match event {
            watcher::Event::Init => self.watches[id].relisting = Some(HashSet::new()),
            watcher::Event::InitApply(object) | watcher::Event::Apply(object) => {
                self.apply(id, object, out)
            }
            watcher::Event::Delete(object) => {
                if let Some(key) = self.key_of(id, &object) {
                    self.remove(id, &key, out);
                }
            }
            watcher::Event::InitDone => {
                if let Some(listed) = self.watches[id].relisting.take() {
                    let vanished: Vec<ObjectKey> = self.watches[id]
                        .objects
                        .keys()
                        .filter(|k| !listed.contains(k))
                        .cloned()
                        .collect();
                    for key in vanished {
                        self.remove(id, &key, out);
                    }
                }
                self.mark_synced(id, out);
            }
        }
    }

    /// The watch's resource is not served (its CRD is not installed): it holds nothing, and it
    /// must not hold back readiness. When the CRD appears, the watch lists it like any other.
    pub fn not_installed(&mut self, id: WatchId, out: &mut Vec<ProviderEvent>) {
        let Some(watch) = self.watches.get_mut(id) else {
            return;
        };
        watch.relisting = None;
        let keys: Vec<ObjectKey> = watch.objects.keys().cloned().collect();
        for key in keys {
            self.remove(id, &key, out);
        }
        self.mark_synced(id, out);
    }

    fn mark_synced(&mut self, id: WatchId, out: &mut Vec<ProviderEvent>) {
        self.watches[id].synced = true;
        if !self.synced && self.watches.iter().all(|w| w.synced) {
            self.synced = true;
            out.push(ProviderEvent::Synced);
        }
    }

    /// The key of an object of watch `id`, as the parse path will compute it.
    fn key_of(&self, id: WatchId, object: &DynamicObject) -> Option<ObjectKey> {
        let kind = self.watches[id].spec.kind;
        let Some(name) = object.metadata.name.as_deref().filter(|n| !n.is_empty()) else {
            tracing::error!(watch = %self.watches[id].spec, "object without metadata.name ignored");
            return None;
        };
        let namespace = if kind.is_namespaced() {
            object
                .metadata
                .namespace
                .as_deref()
                .filter(|n| !n.is_empty())
                .unwrap_or(DEFAULT_NAMESPACE)
        } else {
            ""
        };
        Some(ObjectKey::new(kind, namespace, name))
    }

    fn apply(&mut self, id: WatchId, object: DynamicObject, out: &mut Vec<ProviderEvent>) {
        let Some(key) = self.key_of(id, &object) else {
            return;
        };
        let watch = &mut self.watches[id];
        if let Some(listed) = &mut watch.relisting {
            listed.insert(key.clone());
        }
        let resource_version = object.metadata.resource_version.clone().unwrap_or_default();
        let previous = watch.objects.get(&key);
        if !resource_version.is_empty()
            && previous.is_some_and(|p| p.resource_version == resource_version)
        {
            return;
        }
        let was_valid = previous.is_some_and(|p| p.valid);
        let generation = object.metadata.generation;
        let parsed = parse_object(manifest(&watch.spec, object));
        let valid = parsed.is_ok() || was_valid;
        watch.objects.insert(
            key.clone(),
            Seen {
                resource_version,
                valid,
            },
        );
        match parsed {
            Ok(object) => {
                self.errors.remove(&key);
                if is_gated(key.kind) {
                    self.secrets.secret_applied(object, out);
                } else {
                    self.secrets
                        .references_changed(&key, referenced_secrets(&object), out);
                    out.push(ProviderEvent::Apply(object));
                }
            }
            Err(e) => {
                tracing::error!(object = %key, error = %e.message, kept_last_good = was_valid, "invalid object");
                self.errors.insert(
                    key,
                    ObjectError {
                        message: e.message,
                        generation,
                    },
                );
            }
        }
    }

    fn remove(&mut self, id: WatchId, key: &ObjectKey, out: &mut Vec<ProviderEvent>) {
        self.errors.remove(key);
        let Some(seen) = self.watches[id].objects.remove(key) else {
            return;
        };
        if !seen.valid {
            return;
        }
        if is_gated(key.kind) {
            self.secrets.secret_deleted(key, out);
        } else {
            self.secrets
                .references_changed(key, Default::default(), out);
            out.push(ProviderEvent::Delete(key.clone()));
        }
    }
}

/// Kinds that reach the store only while an object references them: Secrets, and ConfigMaps
/// (CA bundles) for the same reasons.
fn is_gated(kind: Kind) -> bool {
    matches!(kind, Kind::Secret | Kind::ConfigMap)
}

/// The object as a manifest: `apiVersion` and `kind` of the watched resource (list items of
/// built-in kinds come without them), `metadata` without `managedFields`, and the rest as sent.
fn manifest(spec: &WatchSpec, object: DynamicObject) -> Value {
    let ar = spec.api_resource();
    let DynamicObject {
        mut metadata, data, ..
    } = object;
    metadata.managed_fields = None;
    let mut map = match data {
        Value::Object(map) => map,
        _ => Map::new(),
    };
    map.insert("apiVersion".into(), Value::String(ar.api_version));
    map.insert("kind".into(), Value::String(ar.kind));
    // ObjectMeta is plain data: serialising it cannot fail; if it ever did, the parse path
    // reports the missing metadata.name against the object.
    map.insert(
        "metadata".into(),
        serde_json::to_value(&metadata).unwrap_or(Value::Null),
    );
    Value::Object(map)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Object;
    use crate::provider::kubernetes::watches::{OPAQUE_SECRETS, TLS_SECRETS, watch_specs};
    use serde_json::json;
    use std::collections::BTreeMap;

    /// A core over every watch, and the id of each.
    struct Fixture {
        core: WatchCore,
        errors: ObjectErrors,
        ids: Vec<WatchSpec>,
    }

    impl Fixture {
        fn new() -> Self {
            let errors = ObjectErrors::default();
            let ids = watch_specs();
            Self {
                core: WatchCore::new(ids.clone(), errors.clone()),
                errors,
                ids,
            }
        }

        fn id(&self, kind: Kind, selector: Option<&str>) -> WatchId {
            self.ids
                .iter()
                .position(|s| s.kind == kind && s.field_selector == selector)
                .expect("watched")
        }

        fn send(&mut self, id: WatchId, event: watcher::Event<DynamicObject>) -> Vec<String> {
            let mut out = Vec::new();
            self.core.handle(id, event, &mut out);
            summary(&out)
        }

        /// Completes the first list of every watch with nothing in it.
        fn sync_all_empty(&mut self) -> Vec<String> {
            let mut all = Vec::new();
            for id in 0..self.ids.len() {
                all.extend(self.send(id, watcher::Event::Init));
                all.extend(self.send(id, watcher::Event::InitDone));
            }
            all
        }
    }

    /// `+Route default/api`, `-Secret default/site`, `synced`; applied objects also show a
    /// distinguishing field (a route's target, a secret's certificate).
    fn summary(events: &[ProviderEvent]) -> Vec<String> {
        events
            .iter()
            .map(|e| match e {
                ProviderEvent::Apply(o) => format!("+{}{}", o.key(), detail(o)),
                ProviderEvent::Delete(k) => format!("-{k}"),
                ProviderEvent::Synced => "synced".into(),
            })
            .collect()
    }

    fn detail(o: &Object) -> String {
        match o {
            Object::GomaRoute(r) => format!(" -> {}", r.spec.target.clone().unwrap_or_default()),
            Object::Other { key, body, .. } if key.kind == Kind::Secret => body
                .pointer("/stringData/tls.crt")
                .and_then(Value::as_str)
                .map(|c| format!(" = {c}"))
                .unwrap_or_default(),
            _ => String::new(),
        }
    }

    /// An object as the API server sends it: no apiVersion/kind (list items of built-in kinds
    /// carry none), metadata with a resourceVersion and managedFields.
    fn object(ns: &str, name: &str, rv: &str, rest: Value) -> DynamicObject {
        let mut value = json!({
            "metadata": {
                "name": name,
                "namespace": ns,
                "resourceVersion": rv,
                "generation": 3,
                "managedFields": [{"manager": "kubectl", "operation": "Apply"}],
            }
        });
        if let (Some(map), Value::Object(rest)) = (value.as_object_mut(), rest) {
            map.extend(rest);
        }
        serde_json::from_value(value).expect("a valid DynamicObject")
    }

    fn route(name: &str, rv: &str, target: &str) -> DynamicObject {
        object(
            "default",
            name,
            rv,
            json!({"spec": {"gateways": ["gw"], "path": "/", "target": target}}),
        )
    }

    fn tls_secret(name: &str, rv: &str, cert: &str) -> DynamicObject {
        object(
            "default",
            name,
            rv,
            json!({"type": "kubernetes.io/tls", "stringData": {"tls.crt": cert, "tls.key": "k"}}),
        )
    }

    fn goma_gateway(rv: &str, secrets: &[&str]) -> DynamicObject {
        let tls: Vec<Value> = secrets.iter().map(|s| json!({"secretName": s})).collect();
        object(
            "default",
            "gw",
            rv,
            json!({"spec": {"server": {"tls": tls}}}),
        )
    }

    #[test]
    fn add_modify_delete() {
        let mut f = Fixture::new();
        let routes = f.id(Kind::GomaRoute, None);
        assert_eq!(
            f.send(routes, watcher::Event::Apply(route("api", "1", "http://a"))),
            ["+Route default/api -> http://a"]
        );
        // The same resourceVersion again (a watch restart replaying it) changes nothing.
        assert!(
            f.send(routes, watcher::Event::Apply(route("api", "1", "http://a")))
                .is_empty()
        );
        assert_eq!(
            f.send(routes, watcher::Event::Apply(route("api", "2", "http://b"))),
            ["+Route default/api -> http://b"]
        );
        assert_eq!(
            f.send(
                routes,
                watcher::Event::Delete(route("api", "3", "http://b"))
            ),
            ["-Route default/api"]
        );
        // Deleting what is not there sends nothing.
        assert!(
            f.send(
                routes,
                watcher::Event::Delete(route("api", "4", "http://b"))
            )
            .is_empty()
        );
    }

    #[test]
    fn objects_are_parsed_like_manifests_without_managed_fields() {
        let mut f = Fixture::new();
        let services = f.id(Kind::Service, None);
        let mut out = Vec::new();
        f.core.handle(
            services,
            watcher::Event::Apply(object(
                "apps",
                "api",
                "7",
                json!({"spec": {"ports": [{"port": 80}]}}),
            )),
            &mut out,
        );
        let [ProviderEvent::Apply(Object::Api(service))] = out.as_slice() else {
            panic!("one Service expected: {out:?}")
        };
        assert_eq!(service.key(), ObjectKey::new(Kind::Service, "apps", "api"));
        let crate::model::gateway_api::ApiObject::Service(service) = &**service else {
            panic!("a typed Service expected: {service:?}")
        };
        assert_eq!(service.spec.ports[0].port, 80);
        // Cluster-scoped kinds have no namespace in their key.
        let namespaces = f.id(Kind::Namespace, None);
        let ns = object("ignored", "apps", "1", json!({}));
        assert_eq!(
            f.send(namespaces, watcher::Event::Apply(ns)),
            ["+Namespace apps"]
        );
    }

    #[test]
    fn relist_deletes_what_vanished_and_resends_only_what_changed() {
        let mut f = Fixture::new();
        let routes = f.id(Kind::GomaRoute, None);
        f.send(routes, watcher::Event::Init);
        for (name, rv) in [("a", "1"), ("b", "2"), ("c", "3")] {
            f.send(
                routes,
                watcher::Event::InitApply(route(name, rv, "http://x")),
            );
        }
        f.send(routes, watcher::Event::InitDone);
        // The watch broke; meanwhile b was deleted, c changed and d created.
        let mut events = f.send(routes, watcher::Event::Init);
        events.extend(f.send(
            routes,
            watcher::Event::InitApply(route("a", "1", "http://x")),
        ));
        events.extend(f.send(
            routes,
            watcher::Event::InitApply(route("c", "9", "http://y")),
        ));
        events.extend(f.send(
            routes,
            watcher::Event::InitApply(route("d", "10", "http://z")),
        ));
        assert_eq!(
            events,
            [
                "+Route default/c -> http://y",
                "+Route default/d -> http://z"
            ]
        );
        assert_eq!(
            f.send(routes, watcher::Event::InitDone),
            ["-Route default/b"]
        );
    }

    #[test]
    fn synced_once_after_every_watch_listed() {
        let mut f = Fixture::new();
        let routes = f.id(Kind::GomaRoute, None);
        let opaque = f.id(Kind::Secret, Some(OPAQUE_SECRETS));
        let tcp = f.id(Kind::TcpRoute, None);
        let mut seen = Vec::new();
        for id in 0..f.ids.len() {
            assert!(!f.core.is_synced());
            if id == tcp {
                // Its CRD is not installed: counts as listed, empty.
                let mut out = Vec::new();
                f.core.not_installed(id, &mut out);
                seen.extend(summary(&out));
                continue;
            }
            seen.extend(f.send(id, watcher::Event::Init));
            if id == routes {
                seen.extend(f.send(id, watcher::Event::InitApply(route("a", "1", "http://x"))));
            }
            // The last watch is still listing: nothing is complete yet.
            if id == opaque {
                assert!(f.core.pending().iter().any(|s| s.kind == Kind::Secret));
            }
            seen.extend(f.send(id, watcher::Event::InitDone));
        }
        assert_eq!(seen, ["+Route default/a -> http://x", "synced"]);
        assert!(f.core.is_synced() && f.core.pending().is_empty());
        // A later relist completes without a second Synced.
        f.send(routes, watcher::Event::Init);
        assert!(
            f.send(routes, watcher::Event::InitDone)
                .iter()
                .all(|e| e != "synced")
        );
    }

    #[test]
    fn a_kind_that_becomes_unserved_is_emptied_and_served_again_later() {
        let mut f = Fixture::new();
        let tcp = f.id(Kind::TcpRoute, None);
        let tcp_route = || {
            object(
                "default",
                "db",
                "5",
                json!({"spec": {"parentRefs": [{"name": "gw"}], "rules": [{"backendRefs": [{"name": "db", "port": 5432}]}]}}),
            )
        };
        f.send(tcp, watcher::Event::Apply(tcp_route()));
        let mut out = Vec::new();
        f.core.not_installed(tcp, &mut out);
        assert_eq!(summary(&out), ["-TCPRoute default/db"]);
        // The CRD is installed again: the watch lists it like any other.
        f.send(tcp, watcher::Event::Init);
        assert_eq!(
            f.send(tcp, watcher::Event::InitApply(tcp_route())),
            ["+TCPRoute default/db"]
        );
    }

    #[test]
    fn an_invalid_version_keeps_the_last_good_one_and_is_recorded() {
        let mut f = Fixture::new();
        let routes = f.id(Kind::GomaRoute, None);
        let key = ObjectKey::new(Kind::GomaRoute, "default", "api");
        f.send(routes, watcher::Event::Apply(route("api", "1", "http://a")));
        let bad = object(
            "default",
            "api",
            "2",
            json!({"spec": {"gateways": ["gw"], "path": "/", "tagret": "http://b"}}),
        );
        assert!(f.send(routes, watcher::Event::Apply(bad)).is_empty());
        let error = f.errors.get(&key).expect("recorded");
        assert!(
            error.message.starts_with("spec.tagret: unknown field"),
            "{error:?}"
        );
        assert_eq!(error.generation, Some(3));
        // A relist that still lists it (invalid, unchanged) neither deletes nor resends it.
        f.send(routes, watcher::Event::Init);
        let bad_again = object(
            "default",
            "api",
            "2",
            json!({"spec": {"gateways": ["gw"], "path": "/", "tagret": "http://b"}}),
        );
        assert!(
            f.send(routes, watcher::Event::InitApply(bad_again))
                .is_empty()
        );
        assert!(f.send(routes, watcher::Event::InitDone).is_empty());
        // Fixed: served and the error cleared.
        assert_eq!(
            f.send(routes, watcher::Event::Apply(route("api", "3", "http://c"))),
            ["+Route default/api -> http://c"]
        );
        assert!(f.errors.get(&key).is_none());

        // An object that was never valid is never sent, not even its deletion.
        let never = object("default", "never", "4", json!({"spec": {"path": 5}}));
        assert!(
            f.send(routes, watcher::Event::Apply(never.clone()))
                .is_empty()
        );
        assert_eq!(f.errors.len(), 1);
        assert!(f.send(routes, watcher::Event::Delete(never)).is_empty());
        assert!(f.errors.is_empty());
    }

    #[test]
    fn secrets_are_forwarded_only_while_referenced() {
        let mut f = Fixture::new();
        let tls = f.id(Kind::Secret, Some(TLS_SECRETS));
        let gateways = f.id(Kind::GomaGateway, None);
        // Watched but referenced by nothing: held back.
        assert!(
            f.send(tls, watcher::Event::Apply(tls_secret("site", "1", "c1")))
                .is_empty()
        );
        assert!(
            f.send(tls, watcher::Event::Apply(tls_secret("other", "2", "o1")))
                .is_empty()
        );
        // Referenced late: the held Secret goes first, then its user.
        assert_eq!(
            f.send(
                gateways,
                watcher::Event::Apply(goma_gateway("3", &["site"]))
            ),
            ["+Secret default/site = c1", "+Gateway default/gw"]
        );
        // Rotation (cert-manager renewal) is forwarded; an unreferenced Secret's is not.
        assert_eq!(
            f.send(tls, watcher::Event::Apply(tls_secret("site", "4", "c2"))),
            ["+Secret default/site = c2"]
        );
        assert!(
            f.send(tls, watcher::Event::Apply(tls_secret("other", "5", "o2")))
                .is_empty()
        );
        // The last reference goes: the Secret leaves the store.
        assert_eq!(
            f.send(gateways, watcher::Event::Apply(goma_gateway("6", &[]))),
            ["-Secret default/site", "+Gateway default/gw"]
        );
        assert!(
            f.send(tls, watcher::Event::Apply(tls_secret("site", "7", "c3")))
                .is_empty()
        );
    }

    #[test]
    fn config_maps_are_forwarded_only_while_a_policy_names_them() {
        let mut f = Fixture::new();
        let config_maps = f.id(Kind::ConfigMap, None);
        let policies = f.id(Kind::BackendTlsPolicy, None);
        let ca = |rv: &str| object("apps", "ca", rv, json!({"data": {"ca.crt": "PEM"}}));
        let other = object("apps", "unrelated", "2", json!({"data": {"x": "y"}}));
        assert!(
            f.send(config_maps, watcher::Event::Apply(ca("1")))
                .is_empty()
        );
        assert!(f.send(config_maps, watcher::Event::Apply(other)).is_empty());
        let policy = |rv: &str, refs: Value| {
            object(
                "apps",
                "p",
                rv,
                json!({"spec": {"targetRefs": [{"group": "", "kind": "Service", "name": "api"}],
                    "validation": {"hostname": "api.test", "caCertificateRefs": refs}}}),
            )
        };
        assert_eq!(
            f.send(
                policies,
                watcher::Event::Apply(policy(
                    "3",
                    json!([{"group": "", "kind": "ConfigMap", "name": "ca"}])
                ))
            ),
            ["+ConfigMap apps/ca", "+BackendTLSPolicy apps/p"]
        );
        assert_eq!(
            f.send(config_maps, watcher::Event::Apply(ca("4"))),
            ["+ConfigMap apps/ca"]
        );
        assert_eq!(
            f.send(policies, watcher::Event::Apply(policy("5", json!([])))),
            ["-ConfigMap apps/ca", "+BackendTLSPolicy apps/p"]
        );
    }

    #[test]
    fn a_secret_shared_by_two_objects_stays_until_both_let_go() {
        let mut f = Fixture::new();
        let tls = f.id(Kind::Secret, Some(TLS_SECRETS));
        let gateways = f.id(Kind::GomaGateway, None);
        let routes = f.id(Kind::GomaRoute, None);
        // Referenced before it exists: forwarded when it arrives.
        f.send(
            gateways,
            watcher::Event::Apply(goma_gateway("1", &["site"])),
        );
        assert_eq!(
            f.send(tls, watcher::Event::Apply(tls_secret("site", "2", "c1"))),
            ["+Secret default/site = c1"]
        );
        let with_tls = object(
            "default",
            "r",
            "3",
            json!({"spec": {"gateways": ["gw"], "path": "/", "target": "http://a", "tls": {"secretName": "site"}}}),
        );
        assert_eq!(
            f.send(routes, watcher::Event::Apply(with_tls.clone())),
            ["+Route default/r -> http://a"]
        );
        assert_eq!(
            f.send(
                gateways,
                watcher::Event::Delete(goma_gateway("4", &["site"]))
            ),
            ["-Gateway default/gw"]
        );
        assert_eq!(
            f.send(routes, watcher::Event::Delete(with_tls)),
            ["-Secret default/site", "-Route default/r"]
        );
        // Deleted while referenced: leaves the store; back when it is created again.
        f.send(
            gateways,
            watcher::Event::Apply(goma_gateway("5", &["site"])),
        );
        assert_eq!(
            f.send(tls, watcher::Event::Delete(tls_secret("site", "6", "c1"))),
            ["-Secret default/site"]
        );
        assert_eq!(
            f.send(tls, watcher::Event::Apply(tls_secret("site", "7", "c9"))),
            ["+Secret default/site = c9"]
        );
    }

    #[test]
    fn a_secret_that_vanished_during_a_relist_is_deleted() {
        let mut f = Fixture::new();
        let opaque = f.id(Kind::Secret, Some(OPAQUE_SECRETS));
        let tls = f.id(Kind::Secret, Some(TLS_SECRETS));
        let gateways = f.id(Kind::GomaGateway, None);
        f.send(
            gateways,
            watcher::Event::Apply(goma_gateway("1", &["site"])),
        );
        f.send(tls, watcher::Event::Apply(tls_secret("site", "2", "c1")));
        // A relist of the other Secret watch does not touch this one's Secrets.
        f.send(opaque, watcher::Event::Init);
        assert!(f.send(opaque, watcher::Event::InitDone).is_empty());
        f.send(tls, watcher::Event::Init);
        assert_eq!(
            f.send(tls, watcher::Event::InitDone),
            ["-Secret default/site"]
        );
        assert!(f.sync_all_empty().contains(&"synced".to_string()));
    }

    /// Resource names by type (Secret, Cluster, Listener, Route) and a Secret's version.
    fn view(views: &crate::views::Views, gw: &str) -> (Vec<Vec<String>>, BTreeMap<String, String>) {
        views.gateway(gw).read(|v| {
            let names = v
                .resources
                .iter()
                .map(|m| m.keys().cloned().collect())
                .collect();
            let secrets = v.resources[0]
                .iter()
                .map(|(n, r)| (n.clone(), r.version.clone()))
                .collect();
            (names, secrets)
        })
    }

    /// Watch events through the real controller: what each gateway's xDS view holds.
    #[test]
    fn watch_events_reach_the_gateway_views() {
        use crate::controller::Controller;
        use crate::views::Views;
        use std::sync::Arc;

        let mut f = Fixture::new();
        let views = Arc::new(Views::default());
        let mut controller = Controller::new(views.clone());
        let mut feed = |f: &mut Fixture, id: WatchId, event| {
            let mut out = Vec::new();
            f.core.handle(id, event, &mut out);
            controller.apply(out);
        };
        let gateways = f.id(Kind::GomaGateway, None);
        let routes = f.id(Kind::GomaRoute, None);
        let tls = f.id(Kind::Secret, Some(TLS_SECRETS));
        let plain_gateway = || object("default", "plain", "2", json!({"spec": {}}));
        for id in 0..f.ids.len() {
            feed(&mut f, id, watcher::Event::Init);
            if id == gateways {
                feed(
                    &mut f,
                    id,
                    watcher::Event::InitApply(goma_gateway("1", &["site"])),
                );
                feed(&mut f, id, watcher::Event::InitApply(plain_gateway()));
            }
            if id == routes {
                let r = object(
                    "default",
                    "api",
                    "3",
                    json!({"spec": {"gateways": ["plain"], "path": "/", "target": "http://127.0.0.1:1"}}),
                );
                feed(&mut f, id, watcher::Event::InitApply(r));
            }
            if id == tls {
                feed(
                    &mut f,
                    id,
                    watcher::Event::InitApply(tls_secret("site", "4", "c1")),
                );
                feed(
                    &mut f,
                    id,
                    watcher::Event::InitApply(tls_secret("unused", "5", "u1")),
                );
            }
            assert!(!views.is_ready(), "not ready before every watch listed");
            feed(&mut f, id, watcher::Event::InitDone);
        }
        assert!(views.is_ready());
        let (gw, gw_secrets) = view(&views, "default/gw");
        assert_eq!(gw[0], ["default/site"]);
        assert_eq!(gw[2], ["http", "https"]);
        let (plain, _) = view(&views, "default/plain");
        assert!(
            plain[0].is_empty(),
            "no Secret for a gateway that references none"
        );
        assert_eq!(plain[3].len(), 1, "the route: {plain:?}");
        assert!(!plain[1].is_empty(), "its cluster");

        // cert-manager renews the certificate: only the gateway that uses it changes.
        let plain_revision = views.gateway("default/plain").read(|v| v.revision);
        feed(
            &mut f,
            tls,
            watcher::Event::Apply(tls_secret("site", "6", "c2")),
        );
        let (_, rotated) = view(&views, "default/gw");
        assert_ne!(rotated["default/site"], gw_secrets["default/site"]);
        assert_eq!(
            views.gateway("default/plain").read(|v| v.revision),
            plain_revision
        );
        // A Secret nobody references reaches no view, whatever happens to it.
        feed(
            &mut f,
            tls,
            watcher::Event::Apply(tls_secret("unused", "7", "u2")),
        );
        for gw in views.ids() {
            assert!(!view(&views, &gw).1.contains_key("default/unused"), "{gw}");
        }
        // The gateway drops TLS: its certificate leaves its view.
        feed(
            &mut f,
            gateways,
            watcher::Event::Apply(goma_gateway("8", &[])),
        );
        assert!(view(&views, "default/gw").0[0].is_empty());

        // The status writer's own updates (status only, new resourceVersion, same generation)
        // change nothing: no re-translation, no new view revision, hence no write loop.
        let revision = views.gateway("default/plain").read(|v| v.revision);
        let with_status = object(
            "default",
            "api",
            "9",
            json!({
                "spec": {"gateways": ["plain"], "path": "/", "target": "http://127.0.0.1:1"},
                "status": {"ready": true, "synced": true, "conditions": []},
            }),
        );
        feed(&mut f, routes, watcher::Event::Apply(with_status));
        assert_eq!(
            views.gateway("default/plain").read(|v| v.revision),
            revision
        );
    }
}
