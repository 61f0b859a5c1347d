//! Gateway API side of the controller: which Gateway API Gateways an event can affect, and
//! applying one Gateway's translation to its view and to the status board.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use sluice_proto::type_url;

use super::{Controller, SECRET, gateway_id};
use crate::model::gateway_api::ApiObject;
use crate::model::{Kind, Object, ObjectKey};
use crate::resource::{Encoded, type_index};
use crate::status::gateway_api::{ApiStatus, CONTROLLER_NAME, ParentReport};
use crate::translate::gateway_api::{
    gateway_class_status, route_parent_gateways, translate_gateway,
};
use crate::views::ViewChanges;

/// What the controller remembers of one Gateway API Gateway.
#[derive(Default)]
pub(super) struct ApiGateway {
    /// Resources in the gateway's view, by (type index, name).
    resources: BTreeMap<(usize, String), Arc<Encoded>>,
    /// Kubernetes Secret resources referenced.
    secrets: BTreeSet<String>,
    /// Objects the last translation read.
    dependencies: BTreeSet<ObjectKey>,
}

/// Per route (or policy): each of our gateways' reports about it, by gateway id.
pub(super) type Reports = BTreeMap<ObjectKey, BTreeMap<String, (Option<i64>, Vec<ParentReport>)>>;

fn api(object: Option<&Object>) -> Option<&ApiObject> {
    match object {
        Some(Object::Api(a)) => Some(a),
        _ => None,
    }
}

/// The Service keys an EndpointSlice or BackendTLSPolicy version points at.
fn service_keys(object: Option<&Object>) -> Vec<ObjectKey> {
    match api(object) {
        Some(ApiObject::EndpointSlice(s)) => s
            .service_name()
            .map(|name| ObjectKey::new(Kind::Service, &s.metadata.namespace, name))
            .into_iter()
            .collect(),
        Some(ApiObject::BackendTlsPolicy(p)) => p
            .spec
            .target_refs
            .iter()
            .filter(|t| t.group.is_empty() && t.kind == "Service")
            .map(|t| ObjectKey::new(Kind::Service, &p.metadata.namespace, &t.name))
            .collect(),
        _ => Vec::new(),
    }
}

impl Controller {
    /// Gateway API Gateways that `dirty` can affect; `before` holds the previous version of
    /// each changed object.
    pub(super) fn api_affected(
        &self,
        dirty: &BTreeSet<ObjectKey>,
        before: &BTreeMap<ObjectKey, Object>,
    ) -> BTreeSet<ObjectKey> {
        let mut out = BTreeSet::new();
        let depending_on = |key: &ObjectKey, out: &mut BTreeSet<ObjectKey>| {
            for (gw, state) in &self.api_gateways {
                if state.dependencies.contains(key) {
                    out.insert(gw.clone());
                }
            }
        };
        for key in dirty {
            match key.kind {
                Kind::Gateway => {
                    out.insert(key.clone());
                }
                // Coarse inputs: every Gateway.
                Kind::GatewayClass | Kind::ReferenceGrant | Kind::Namespace => {
                    out.extend(
                        self.objects
                            .keys()
                            .filter(|k| k.kind == Kind::Gateway)
                            .cloned(),
                    );
                    out.extend(self.api_gateways.keys().cloned());
                }
                Kind::HttpRoute
                | Kind::GrpcRoute
                | Kind::TlsRoute
                | Kind::TcpRoute
                | Kind::UdpRoute => {
                    depending_on(key, &mut out);
                    for object in [self.objects.get(key), before.get(key)]
                        .into_iter()
                        .flatten()
                    {
                        out.extend(route_parent_gateways(object));
                    }
                }
                Kind::EndpointSlice | Kind::BackendTlsPolicy => {
                    depending_on(key, &mut out);
                    for service in service_keys(self.objects.get(key))
                        .into_iter()
                        .chain(service_keys(before.get(key)))
                    {
                        depending_on(&service, &mut out);
                    }
                }
                // A Middleware reaches HTTPRoutes through ExtensionRef filters.
                Kind::Service
                | Kind::ConfigMap
                | Kind::Secret
                | Kind::GomaGateway
                | Kind::GomaMiddleware => {
                    depending_on(key, &mut out);
                }
                Kind::GomaRoute => {}
            }
        }
        out
    }

    /// Records the status of a GatewayClass: ours get Accepted, others nothing at all.
    pub(super) fn api_class_changed(&mut self, key: &ObjectKey) {
        match api(self.objects.get(key)) {
            Some(ApiObject::GatewayClass(c)) if c.spec.controller_name == CONTROLLER_NAME => {
                self.api_board
                    .insert(key.clone(), gateway_class_status(&c.metadata, &c.spec));
            }
            _ => self.api_board.remove(key),
        }
    }

    /// Takes a served Gateway API gateway out of its view (a Goma Gateway is taking the id).
    pub(super) fn api_withdraw(&mut self, key: &ObjectKey) {
        let Some(state) = self.api_gateways.get_mut(key) else {
            return;
        };
        let id = &gateway_id(&key.namespace, &key.name);
        let resources = std::mem::take(&mut state.resources);
        let secrets = std::mem::take(&mut state.secrets);
        let mut changes = ViewChanges {
            upserts: vec![],
            removals: resources.into_keys().collect(),
        };
        self.reference_secrets(id, &secrets, &BTreeSet::new(), &mut changes);
        self.views.apply(id, changes);
    }

    /// Re-translates Gateway API Gateway `key` and applies the difference.
    pub(super) fn api_gateway_changed(&mut self, key: &ObjectKey) {
        let id = gateway_id(&key.namespace, &key.name);
        let (translation, dependencies) = translate_gateway(&self.objects, key);
        #[cfg(test)]
        self.api_translated.push(key.clone());
        let old = self.api_gateways.remove(key).unwrap_or_default();
        let mut resources = BTreeMap::new();
        let mut secrets = BTreeSet::new();
        let mut route_reports = BTreeMap::new();
        let mut policy_reports = BTreeMap::new();
        // Only our Gateways are remembered; any other is found again through its own or its
        // class's events.
        let ours = translation.is_some();
        match translation {
            Some(t) => {
                for l in &t.listeners {
                    let e = Encoded::new(type_url::LISTENER, l.name.clone(), l);
                    resources.insert((type_index(e.type_url).unwrap_or(0), e.name.clone()), e);
                }
                for r in &t.routes {
                    let e = Encoded::new(type_url::ROUTE, r.name.clone(), r);
                    resources.insert((type_index(e.type_url).unwrap_or(0), e.name.clone()), e);
                }
                for c in &t.clusters {
                    let e = Encoded::new(type_url::CLUSTER, c.name.clone(), c);
                    resources.insert((type_index(e.type_url).unwrap_or(0), e.name.clone()), e);
                }
                for s in &t.ca_bundles {
                    let e = Encoded::new(type_url::SECRET, s.name.clone(), s);
                    resources.insert((SECRET, e.name.clone()), e);
                }
                secrets = t.secrets;
                if let Some(status) = t.gateway_status {
                    self.api_board.insert(key.clone(), status);
                }
                route_reports = t.route_parents;
                policy_reports = t.policy_ancestors;
                tracing::debug!(
                    gateway = %id,
                    served = t.served,
                    resources = resources.len(),
                    "translated Gateway API gateway"
                );
            }
            None => self.api_board.remove(key),
        }
        let mut changes = ViewChanges::default();
        for name in old.resources.keys() {
            if !resources.contains_key(name) {
                changes.removals.push(name.clone());
            }
        }
        changes.upserts.extend(resources.values().cloned());
        self.reference_secrets(&id, &old.secrets, &secrets, &mut changes);
        if !changes.is_empty() {
            self.views.apply(&id, changes);
        }
        Self::merge_reports(
            &mut self.api_route_parents,
            &id,
            route_reports,
            |generation, parents| ApiStatus::Route {
                generation,
                parents,
            },
            &self.api_board,
        );
        Self::merge_reports(
            &mut self.api_policy_ancestors,
            &id,
            policy_reports,
            |generation, ancestors| ApiStatus::Policy {
                generation,
                ancestors,
            },
            &self.api_board,
        );
        if ours {
            self.api_gateways.insert(
                key.clone(),
                ApiGateway {
                    resources,
                    secrets,
                    dependencies,
                },
            );
        }
    }

    /// Replaces gateway `id`'s reports and rewrites the status of every object whose reports
    /// changed: all our gateways' reports together, or nothing once none reports it.
    fn merge_reports(
        all: &mut Reports,
        id: &str,
        new: BTreeMap<ObjectKey, (Option<i64>, Vec<ParentReport>)>,
        status: impl Fn(Option<i64>, Vec<ParentReport>) -> ApiStatus,
        board: &crate::status::gateway_api::GatewayApiBoard,
    ) {
        let mut touched: BTreeSet<ObjectKey> = all
            .iter_mut()
            .filter_map(|(k, by_gateway)| by_gateway.remove(id).map(|_| k.clone()))
            .collect();
        for (k, report) in new {
            all.entry(k.clone())
                .or_default()
                .insert(id.to_owned(), report);
            touched.insert(k);
        }
        for k in touched {
            match all.get(&k).filter(|by_gateway| !by_gateway.is_empty()) {
                Some(by_gateway) => {
                    let generation = by_gateway.values().find_map(|(g, _)| *g);
                    let parents = by_gateway
                        .values()
                        .flat_map(|(_, p)| p.iter().cloned())
                        .collect();
                    board.insert(k, status(generation, parents));
                }
                None => {
                    all.remove(&k);
                    board.remove(&k);
                }
            }
        }
    }
}
