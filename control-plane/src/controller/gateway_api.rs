//! Gateway API side of the controller: which Gateway API Gateways an event can affect, and
//! applying one Gateway's translation to its view and to the status board.
//!
//! Work per change is proportional to the affected Gateways' routes, not the cluster's: routes
//! are indexed by the Gateways their parentRefs name, each route's translation is kept with the
//! keys it read (reused until one of them changes or the Gateway's listeners do), and status
//! reports are merged only for the routes a Gateway reports on.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use sluice_proto::type_url;

use super::{Controller, gateway_id};
use crate::model::gateway_api::ApiObject;
use crate::model::{Kind, Object, ObjectKey};
use crate::resource::{Encoded, type_index};
use crate::status::gateway_api::{ApiStatus, CONTROLLER_NAME, ParentReport};
use crate::translate::gateway_api::index::grants_of;
use crate::translate::gateway_api::{
    Index, ParentReports, RouteInputs, RouteTranslation, SharedBackends, assemble,
    gateway_class_status, gateway_frame, route_parent_gateways, translate_route,
};
use crate::views::ViewChanges;
use crate::xds::held::HeldSet;

/// What the controller remembers of one Gateway API Gateway.
#[derive(Default)]
pub(super) struct ApiGateway {
    /// Resources in the gateway's view.
    resources: GatewayResources,
    /// Kubernetes Secret resources referenced.
    secrets: BTreeSet<String>,
    /// Objects the last translation read (its routes' reads included, but not the routes
    /// themselves: the parent index finds the Gateways of a changed route).
    dependencies: BTreeSet<ObjectKey>,
    /// The Gateway inputs `routes` were translated with.
    route_inputs: RouteInputs,
    /// Each attached route's last translation; also the routes this Gateway last reported on.
    routes: BTreeMap<ObjectKey, RouteMemo>,
    /// Policies this Gateway last reported on.
    reported_policies: BTreeSet<ObjectKey>,
}

/// One gateway's resources as last applied to its view, by type and name. Entries are the
/// view's own `Arc`s (8 bytes each, no copy of the name), and a re-translation that encodes the
/// same bytes again keeps the held `Arc` (`reuse`), so the memo, this and the view share one copy.
#[derive(Default)]
struct GatewayResources([HeldSet; type_url::ALL.len()]);

impl GatewayResources {
    /// Records `resource`, replacing what was held under its type and name.
    fn insert(&mut self, resource: Arc<Encoded>) {
        if let Some(t) = type_index(resource.type_url) {
            self.0[t].insert(resource);
        }
    }

    fn contains(&self, type_index: usize, name: &str) -> bool {
        self.0[type_index].contains(name)
    }

    /// The held resource when it has `resource`'s name and version, else `resource`.
    fn reuse(&self, resource: Arc<Encoded>) -> Arc<Encoded> {
        let held = type_index(resource.type_url)
            .and_then(|t| self.0[t].get(&resource.name))
            .filter(|held| held.version == resource.version);
        match held {
            Some(held) => held.clone(),
            None => resource,
        }
    }

    /// Every resource, with its type index.
    fn iter(&self) -> impl Iterator<Item = (usize, &Arc<Encoded>)> {
        self.0
            .iter()
            .enumerate()
            .flat_map(|(t, set)| set.iter().map(move |r| (t, r)))
    }

    fn len(&self) -> usize {
        self.0.iter().map(HeldSet::len).sum()
    }
}

impl ApiGateway {
    /// Forgets the route memo (memory attribution only: the next translation starts over).
    pub(super) fn release_memo(&mut self) {
        self.routes = BTreeMap::new();
    }
}

/// One route translated for one Gateway, with what it read: valid while neither the route nor
/// any of `reads` changes and the Gateway's `RouteInputs` stay the same.
pub(super) struct RouteMemo {
    /// The objects read besides the route itself; sorted, without duplicates.
    reads: Box<[ObjectKey]>,
    /// Its `routes` moved to `encoded`.
    translation: RouteTranslation,
    /// The route's Route resources, encoded: the very `Arc`s the gateway's view holds.
    encoded: Box<[Arc<Encoded>]>,
}

/// Whether `kind` is a Gateway API route kind.
pub(super) fn is_api_route(kind: Kind) -> bool {
    matches!(
        kind,
        Kind::HttpRoute | Kind::GrpcRoute | Kind::TlsRoute | Kind::TcpRoute | Kind::UdpRoute
    )
}

/// Every key a translation may have recorded as read that `dirty` changes: the changed objects,
/// the Services whose EndpointSlices or BackendTLSPolicies changed (those are looked up by
/// Service), and the grants of each namespace whose ReferenceGrants changed.
pub(super) fn touched_keys(
    dirty: &BTreeSet<ObjectKey>,
    before: &BTreeMap<ObjectKey, Object>,
    objects: &BTreeMap<ObjectKey, Object>,
) -> BTreeSet<ObjectKey> {
    let mut out = dirty.clone();
    for key in dirty {
        match key.kind {
            Kind::EndpointSlice | Kind::BackendTlsPolicy => {
                out.extend(service_keys(objects.get(key)));
                out.extend(service_keys(before.get(key)));
            }
            Kind::ReferenceGrant => {
                out.insert(grants_of(&key.namespace));
            }
            _ => {}
        }
    }
    out
}

/// Per route (or policy): each of our gateways' reports about it.
pub(super) type Reports = BTreeMap<ObjectKey, ReportsByGateway>;

/// One object's reports by gateway id, sorted by id: usually one gateway, so an exact-size
/// vector (a map's node would cost ~1 KiB per route), and the id is shared by all the routes
/// the gateway reports on.
#[derive(Default)]
pub(super) struct ReportsByGateway(Vec<(Arc<str>, GatewayReport)>);

/// A gateway's report on one object: the object's generation and its entries.
type GatewayReport = (Option<i64>, ParentReports);

impl ReportsByGateway {
    fn get(&self, id: &str) -> Option<&GatewayReport> {
        let i = self.0.binary_search_by(|(g, _)| (**g).cmp(id)).ok()?;
        Some(&self.0[i].1)
    }

    fn insert(&mut self, id: &Arc<str>, report: GatewayReport) {
        match self.0.binary_search_by(|(g, _)| (**g).cmp(id)) {
            Ok(i) => self.0[i].1 = report,
            Err(i) => {
                self.0.reserve_exact(1);
                self.0.insert(i, (id.clone(), report));
            }
        }
    }

    fn remove(&mut self, id: &str) -> bool {
        match self.0.binary_search_by(|(g, _)| (**g).cmp(id)) {
            Ok(i) => {
                self.0.remove(i);
                self.0.shrink_to_fit();
                true
            }
            Err(_) => false,
        }
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The object's status: every gateway's entries, in gateway order.
    fn combined(&self) -> (Option<i64>, Vec<ParentReport>) {
        let generation = self.0.iter().find_map(|(_, (g, _))| *g);
        let mut parents = Vec::with_capacity(self.0.iter().map(|(_, (_, p))| p.len()).sum());
        parents.extend(self.0.iter().flat_map(|(_, (_, p))| p.iter().cloned()));
        (generation, parents)
    }
}

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

/// Translates one route for Gateway `gateway`, recording what it read (the route included).
/// A Route resource whose encoding `held` already has (the gateway's resources as last
/// applied to its view) is that same `Arc`, so the memo and the view share one copy.
fn translate_memo(
    objects: &BTreeMap<ObjectKey, Object>,
    inputs: &RouteInputs,
    gateway: &ObjectKey,
    key: &ObjectKey,
    object: &Object,
    held: &GatewayResources,
) -> Option<RouteMemo> {
    let index = Index::new(objects);
    let mut translation = translate_route(&index, inputs, gateway, object)?;
    let mut reads = index.into_dependencies();
    // The route itself is the memo's key.
    reads.remove(key);
    // Kept encoded only: the messages are not needed again. Collected by reference: an
    // in-place collect would keep the messages' allocation (KiBs) for 8-byte Arcs.
    let routes = std::mem::take(&mut translation.routes);
    let encoded = routes
        .iter()
        .map(|r| held.reuse(Encoded::new(type_url::ROUTE, r.name.clone(), r)))
        .collect();
    Some(RouteMemo {
        reads: reads.into_iter().collect(),
        translation,
        encoded,
    })
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

    /// Keeps `api_routes_by_gateway` current for the routes in `dirty`: `before` holds their
    /// versions as of the last batch (absent when new).
    pub(super) fn index_api_routes(
        &mut self,
        dirty: &BTreeSet<ObjectKey>,
        before: &BTreeMap<ObjectKey, Object>,
    ) {
        for key in dirty.iter().filter(|k| is_api_route(k.kind)) {
            let was = before
                .get(key)
                .map(route_parent_gateways)
                .unwrap_or_default();
            let now = self
                .objects
                .get(key)
                .map(route_parent_gateways)
                .unwrap_or_default();
            for gateway in was.difference(&now) {
                if let Some(routes) = self.api_routes_by_gateway.get_mut(gateway) {
                    routes.remove(key);
                    if routes.is_empty() {
                        self.api_routes_by_gateway.remove(gateway);
                    }
                }
            }
            for gateway in now {
                self.api_routes_by_gateway
                    .entry(gateway)
                    .or_default()
                    .insert(key.clone());
            }
        }
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
            removals: resources.iter().map(|(t, r)| (t, r.name.clone())).collect(),
        };
        self.reference_secrets(id, &secrets, &BTreeSet::new(), &mut changes);
        self.views.apply(id, changes);
    }

    /// Re-translates Gateway API Gateway `key` and applies the difference. Routes whose memo
    /// read none of `touched` (and whose Gateway inputs are unchanged) are not re-translated.
    pub(super) fn api_gateway_changed(&mut self, key: &ObjectKey, touched: &BTreeSet<ObjectKey>) {
        let id = gateway_id(&key.namespace, &key.name);
        #[cfg(test)]
        self.api_translated.push(key.clone());
        let mut old = self.api_gateways.remove(key).unwrap_or_default();
        let mut state = ApiGateway::default();
        let mut retranslated = Vec::new();
        let mut detached = BTreeMap::new();
        let index = Index::new(&self.objects);
        let translation = gateway_frame(&index, key).map(|frame| {
            // Listeners decide where every route lands: when they change, all start over.
            let mut reusable = if old.route_inputs == frame.inputs {
                std::mem::take(&mut old.routes)
            } else {
                BTreeMap::new()
            };
            let attached = self.api_routes_by_gateway.get(key).into_iter().flatten();
            for route_key in attached {
                let Some(object) = self.objects.get(route_key) else {
                    continue;
                };
                let memo = match reusable.remove(route_key) {
                    Some(memo)
                        if !touched.contains(route_key)
                            && !memo.reads.iter().any(|k| touched.contains(k)) =>
                    {
                        Some(memo)
                    }
                    _ => {
                        retranslated.push(route_key.clone());
                        translate_memo(
                            &self.objects,
                            &frame.inputs,
                            key,
                            route_key,
                            object,
                            &old.resources,
                        )
                    }
                };
                if let Some(memo) = memo {
                    state.routes.insert(route_key.clone(), memo);
                }
            }
            // Memos of routes no longer attached: reported on last time, not now.
            detached = reusable;
            let mut shared = SharedBackends::default();
            for memo in state.routes.values_mut() {
                memo.translation.share_backends(&mut shared);
            }
            state.route_inputs = frame.inputs.clone();
            let translations: Vec<(&ObjectKey, &RouteTranslation)> = state
                .routes
                .iter()
                .map(|(k, m)| (k, &m.translation))
                .collect();
            assemble(&index, frame, &translations)
        });
        state.dependencies = index.into_dependencies();
        for memo in state.routes.values() {
            state.dependencies.extend(memo.reads.iter().cloned());
        }
        let retranslated_count = retranslated.len();
        #[cfg(test)]
        self.api_route_translations
            .extend(retranslated.iter().cloned());
        let mut resources = GatewayResources::default();
        let mut secrets = BTreeSet::new();
        let mut route_reports = BTreeMap::new();
        let mut policy_reports = BTreeMap::new();
        // Only our Gateways are remembered; any other is found again through its own or its
        // class's events.
        let ours = translation.is_some();
        match translation {
            Some(t) => {
                let held = &old.resources;
                for l in &t.listeners {
                    resources.insert(held.reuse(Encoded::new(
                        type_url::LISTENER,
                        l.name.clone(),
                        l,
                    )));
                }
                if t.served {
                    for e in state.routes.values().flat_map(|m| &m.encoded) {
                        resources.insert(e.clone());
                    }
                }
                for c in &t.clusters {
                    resources.insert(held.reuse(Encoded::new(
                        type_url::CLUSTER,
                        c.name.clone(),
                        c,
                    )));
                }
                for s in &t.ca_bundles {
                    resources.insert(held.reuse(Encoded::new(type_url::SECRET, s.name.clone(), s)));
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
                    routes = state.routes.len(),
                    retranslated = retranslated_count,
                    "translated Gateway API gateway"
                );
            }
            None => self.api_board.remove(key),
        }
        let mut changes = ViewChanges::default();
        for (t, r) in old.resources.iter() {
            if !resources.contains(t, &r.name) {
                changes.removals.push((t, r.name.clone()));
            }
        }
        changes
            .upserts
            .extend(resources.iter().map(|(_, r)| r.clone()));
        self.reference_secrets(&id, &old.secrets, &secrets, &mut changes);
        if !changes.is_empty() {
            self.views.apply(&id, changes);
        }
        state.reported_policies = policy_reports.keys().cloned().collect();
        let shared_id: Arc<str> = Arc::from(id.as_str());
        // Every memoised route was reported on (and only those): all of them are among the old
        // memos not reused (in `old.routes` or `detached`) and the routes re-translated.
        let previously_reported = old
            .routes
            .keys()
            .chain(detached.keys())
            .chain(retranslated.iter());
        Self::merge_reports(
            &mut self.api_route_parents,
            &shared_id,
            previously_reported,
            route_reports,
            |generation, parents| ApiStatus::Route {
                generation,
                parents,
            },
            &self.api_board,
        );
        Self::merge_reports(
            &mut self.api_policy_ancestors,
            &shared_id,
            old.reported_policies.iter(),
            policy_reports,
            |generation, ancestors| ApiStatus::Policy {
                generation,
                ancestors,
            },
            &self.api_board,
        );
        if ours {
            state.resources = resources;
            state.secrets = secrets;
            self.api_gateways.insert(key.clone(), state);
        }
    }

    /// Replaces gateway `id`'s reports (it last reported on `previous`) and rewrites the status
    /// of every object whose reports changed: all our gateways' reports together, or nothing
    /// once none reports it.
    fn merge_reports<'a>(
        all: &mut Reports,
        id: &Arc<str>,
        previous: impl Iterator<Item = &'a ObjectKey>,
        new: BTreeMap<ObjectKey, GatewayReport>,
        status: impl Fn(Option<i64>, Vec<ParentReport>) -> ApiStatus,
        board: &crate::status::gateway_api::GatewayApiBoard,
    ) {
        let mut touched = BTreeSet::new();
        for k in previous.filter(|k| !new.contains_key(*k)) {
            if let Some(by_gateway) = all.get_mut(k)
                && by_gateway.remove(id)
            {
                touched.insert(k.clone());
            }
        }
        for (k, report) in new {
            let by_gateway = all.entry(k.clone()).or_default();
            if by_gateway.get(id) != Some(&report) {
                by_gateway.insert(id, report);
                touched.insert(k);
            }
        }
        for k in touched {
            match all.get(&k).filter(|by_gateway| !by_gateway.is_empty()) {
                Some(by_gateway) => {
                    let (generation, parents) = by_gateway.combined();
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

#[cfg(test)]
#[path = "gateway_api_tests.rs"]
mod tests;
