//! Turns provider events into view changes, incrementally: only the objects that changed are
//! re-translated, and only the gateways they touch (before or after the change) are updated.

use crate::model::{Kind, Object, ObjectKey};
use crate::provider::ProviderEvent;
use crate::resource::{Encoded, type_index};
use crate::status::gateway_api::GatewayApiBoard;
use crate::status::{Record, ResourceRef, StatusBoard, Verdict};
use crate::translate::goma::{translate_gateway, translate_route};
use crate::translate::middleware::MiddlewareSource;
use crate::translate::secret::translate_secret;
use crate::views::{ViewChanges, Views};
use sluice_proto::type_url;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use tokio::sync::mpsc;

mod gateway_api;

/// What one translated object contributes to the views.
#[derive(Default, Clone)]
struct Contribution {
    /// Gateways ("ns/name") the object attaches to.
    gateways: BTreeSet<String>,
    resources: Vec<Arc<Encoded>>,
    /// Secret resources it references.
    secrets: BTreeSet<String>,
}

/// Index of the Secret type in make-before-break order.
const SECRET: usize = 0;

pub struct Controller {
    views: Arc<Views>,
    objects: BTreeMap<ObjectKey, Object>,
    /// Listeners of each gateway with a valid translation; a gateway exists for routing only here.
    gateways: HashMap<String, Vec<Arc<Encoded>>>,
    /// Last good translation of each route.
    routes: HashMap<ObjectKey, Contribution>,
    /// Routes naming each gateway in their spec, whether or not the gateway exists yet.
    routes_by_gateway: HashMap<String, BTreeSet<ObjectKey>>,
    /// Last good translation of each Secret, by resource name ("ns/name").
    secrets: HashMap<String, Arc<Encoded>>,
    /// Per gateway: Secret resource name -> how many of its listeners and routes reference it.
    /// A Secret reaches a gateway only while this count is positive.
    secret_refs: HashMap<String, HashMap<String, usize>>,
    /// Secrets referenced by each gateway's own listeners.
    listener_secrets: HashMap<String, BTreeSet<String>>,
    /// Translation verdicts, for status.
    board: StatusBoard,
    /// Gateway API status from translation.
    api_board: GatewayApiBoard,
    /// Gateway API Gateways translated (ours, or waiting for an input that may make them ours).
    api_gateways: HashMap<ObjectKey, gateway_api::ApiGateway>,
    /// Gateway API routes by the Gateways their parentRefs name, whether or not those exist.
    api_routes_by_gateway: HashMap<ObjectKey, BTreeSet<ObjectKey>>,
    /// Each route's parent reports from each of our gateways.
    api_route_parents: gateway_api::Reports,
    /// Each BackendTLSPolicy's ancestor reports from each of our gateways.
    api_policy_ancestors: gateway_api::Reports,
    /// Every Gateway API translation run, in order (tests check what an event re-translates).
    #[cfg(test)]
    api_translated: Vec<ObjectKey>,
    /// Every Gateway API route translation run (memo misses), in order.
    #[cfg(test)]
    api_route_translations: Vec<ObjectKey>,
    synced: bool,
}

/// Middlewares resolve against the objects the controller holds.
impl MiddlewareSource for BTreeMap<ObjectKey, Object> {
    fn middleware(&self, namespace: &str, name: &str) -> Option<&crate::model::goma::Middleware> {
        match self.get(&ObjectKey::new(Kind::GomaMiddleware, namespace, name)) {
            Some(Object::GomaMiddleware(m)) => Some(m),
            _ => None,
        }
    }
}

fn gateway_id(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}

fn refs(resources: &[Arc<Encoded>]) -> Vec<ResourceRef> {
    resources.iter().map(|r| ResourceRef::of(r)).collect()
}

/// The invalid fields of a translation error, without the object (status is on the object).
fn field_errors(e: &crate::translate::TranslateError) -> String {
    e.errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

impl Controller {
    pub fn new(views: Arc<Views>) -> Self {
        Self::with_boards(views, StatusBoard::default(), GatewayApiBoard::default())
    }

    /// A controller that records Goma verdicts on `board` and Gateway API status on `api_board`.
    pub fn with_boards(views: Arc<Views>, board: StatusBoard, api_board: GatewayApiBoard) -> Self {
        Self {
            views,
            objects: BTreeMap::new(),
            gateways: HashMap::new(),
            routes: HashMap::new(),
            routes_by_gateway: HashMap::new(),
            secrets: HashMap::new(),
            secret_refs: HashMap::new(),
            listener_secrets: HashMap::new(),
            board,
            api_board,
            api_gateways: HashMap::new(),
            api_routes_by_gateway: HashMap::new(),
            api_route_parents: BTreeMap::new(),
            api_policy_ancestors: BTreeMap::new(),
            #[cfg(test)]
            api_translated: Vec::new(),
            #[cfg(test)]
            api_route_translations: Vec::new(),
            synced: false,
        }
    }

    /// Drops the controller one part at a time, calling `after(part)` once each part is gone, so
    /// a counting allocator can attribute memory (tests/gateway_api_memory.rs). A resource shared
    /// by several parts is freed with the last of them: `views` is dropped here only if the
    /// caller holds no other handle.
    #[doc(hidden)]
    pub fn release_in_parts(self, mut after: impl FnMut(&'static str)) {
        let Self {
            views,
            objects,
            gateways,
            routes,
            routes_by_gateway,
            secrets,
            secret_refs,
            listener_secrets,
            board,
            api_board,
            mut api_gateways,
            api_routes_by_gateway,
            api_route_parents,
            api_policy_ancestors,
            ..
        } = self;
        for state in api_gateways.values_mut() {
            state.release_memo();
        }
        after("route memo");
        drop(api_gateways);
        after("gateway state");
        drop((api_route_parents, api_policy_ancestors, api_board, board));
        after("status");
        drop(api_routes_by_gateway);
        after("parent index");
        drop((gateways, routes, routes_by_gateway, secrets, secret_refs));
        drop(listener_secrets);
        after("goma state");
        drop(views);
        after("views");
        drop(objects);
        after("model store");
    }

    /// Applies provider batches until the channel closes. Everything already queued is applied
    /// together: a burst that arrives while a batch is translated becomes the next batch, so
    /// bursts are batched without adding a fixed delay to a lone change. Marks the views ready
    /// after the providers' initial sync has been translated in full.
    pub async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Vec<ProviderEvent>>) {
        while let Some(mut events) = rx.recv().await {
            while let Ok(more) = rx.try_recv() {
                events.extend(more);
            }
            let started = std::time::Instant::now();
            let count = events.len();
            self.apply(events);
            tracing::debug!(
                events = count,
                elapsed_us = started.elapsed().as_micros() as u64,
                "applied batch"
            );
        }
    }

    pub fn apply(&mut self, events: Vec<ProviderEvent>) {
        let mut dirty: BTreeSet<ObjectKey> = BTreeSet::new();
        // The version of each changed object before this batch (for what it used to reference).
        let mut before: BTreeMap<ObjectKey, Object> = BTreeMap::new();
        for event in events {
            match event {
                ProviderEvent::Apply(object) => {
                    let key = object.key();
                    if self.objects.get(&key) != Some(&object) {
                        if let Some(old) = self.objects.insert(key.clone(), object)
                            && !dirty.contains(&key)
                        {
                            before.insert(key.clone(), old);
                        }
                        dirty.insert(key);
                    }
                }
                ProviderEvent::Delete(key) => {
                    if let Some(old) = self.objects.remove(&key) {
                        if !dirty.contains(&key) {
                            before.insert(key.clone(), old);
                        }
                        dirty.insert(key);
                    }
                }
                ProviderEvent::Synced => self.synced = true,
            }
        }
        // Secrets, then gateways, then routes: what is referenced is current before its users.
        for key in dirty.iter().filter(|k| k.kind == Kind::Secret) {
            self.secret_changed(key);
        }
        // Gateways before routes, so routes changed in the same batch attach to gateways that now exist.
        for key in dirty.iter().filter(|k| k.kind == Kind::GomaGateway) {
            // A Goma Gateway owns its id: a Gateway API Gateway of the same name leaves the view
            // first (it is re-translated below, as not served, or served again once Goma's goes).
            self.api_withdraw(&ObjectKey::new(Kind::Gateway, &key.namespace, &key.name));
            self.gateway_changed(key);
        }
        // Middlewares are translated with the routes that name them: a changed middleware
        // re-translates those routes (only those).
        let mut routes: BTreeSet<ObjectKey> = dirty
            .iter()
            .filter(|k| k.kind == Kind::GomaRoute)
            .cloned()
            .collect();
        for key in dirty.iter().filter(|k| k.kind == Kind::GomaMiddleware) {
            match self.objects.get(key) {
                Some(Object::GomaMiddleware(m)) => {
                    let verdict = match m.spec.typed_rule() {
                        Ok(_) => Verdict::Served(Vec::new()),
                        Err(e) => Verdict::Invalid {
                            message: e.to_string(),
                            last_good: Vec::new(),
                        },
                    };
                    self.board
                        .insert(key.clone(), Record::new(m.metadata.generation, verdict));
                }
                _ => self.board.remove(key),
            }
            routes.extend(self.routes_naming(key));
        }
        for key in &routes {
            self.route_changed(key);
        }
        for key in dirty.iter().filter(|k| k.kind == Kind::GatewayClass) {
            self.api_class_changed(key);
        }
        self.index_api_routes(&dirty, &before);
        let touched = gateway_api::touched_keys(&dirty, &before, &self.objects);
        for key in self.api_affected(&dirty, &before) {
            self.api_gateway_changed(&key, &touched);
        }
        if self.synced && !self.views.is_ready() {
            tracing::info!(
                gateways = self.gateways.len(),
                routes = self.routes.len(),
                "initial translation complete; serving configuration"
            );
            self.views.set_ready();
        }
    }

    fn gateway_changed(&mut self, key: &ObjectKey) {
        let id = gateway_id(&key.namespace, &key.name);
        let Some(Object::GomaGateway(gw)) = self.objects.get(key) else {
            self.board.remove(key);
            // Deleted: its data planes lose everything.
            if self.gateways.remove(&id).is_some() {
                let removals = self
                    .views
                    .existing(&id)
                    .map(|v| {
                        v.read(|s| {
                            s.resources
                                .iter()
                                .enumerate()
                                .flat_map(|(t, m)| m.keys().map(move |n| (t, n.clone())))
                                .collect()
                        })
                    })
                    .unwrap_or_default();
                self.views.apply(
                    &id,
                    ViewChanges {
                        upserts: vec![],
                        removals,
                    },
                );
                self.secret_refs.remove(&id);
                self.listener_secrets.remove(&id);
                tracing::info!(gateway = %id, "gateway removed");
            }
            return;
        };
        let (listeners, secrets) = match translate_gateway(gw) {
            Ok((listeners, warnings)) => {
                for w in warnings {
                    tracing::warn!(object = %key, "{w}");
                }
                let secrets: BTreeSet<String> = listeners
                    .iter()
                    .filter_map(|l| l.tls.as_ref())
                    .flat_map(|t| t.certificate_secrets.iter().cloned())
                    .collect();
                let listeners = listeners
                    .into_iter()
                    .map(|l| Encoded::new(type_url::LISTENER, l.name.clone(), &l))
                    .collect::<Vec<_>>();
                (listeners, secrets)
            }
            Err(e) => {
                tracing::error!(object = %key, error = %e, kept_last_good = self.gateways.contains_key(&id), "invalid gateway");
                let last_good = self.gateways.get(&id).map(|l| refs(l)).unwrap_or_default();
                self.board.insert(
                    key.clone(),
                    Record::new(
                        gw.metadata.generation,
                        Verdict::Invalid {
                            message: field_errors(&e),
                            last_good,
                        },
                    ),
                );
                return;
            }
        };
        self.board.insert(
            key.clone(),
            Record::new(gw.metadata.generation, Verdict::Served(refs(&listeners))),
        );
        let mut changes = ViewChanges::default();
        let existed = match self.gateways.insert(id.clone(), listeners.clone()) {
            Some(old) => {
                for l in old {
                    if !listeners.iter().any(|n| n.name == l.name) {
                        changes
                            .removals
                            .push((type_index(l.type_url).unwrap_or(0), l.name.clone()));
                    }
                }
                true
            }
            None => false,
        };
        let old_secrets = self.listener_secrets.insert(id.clone(), secrets.clone());
        self.reference_secrets(
            &id,
            &old_secrets.unwrap_or_default(),
            &secrets,
            &mut changes,
        );
        if !existed {
            // A new gateway picks up every valid route that already names it.
            let attached: Vec<Contribution> = self
                .routes_by_gateway
                .get(&id)
                .into_iter()
                .flatten()
                .filter_map(|rk| self.routes.get(rk))
                .filter(|c| c.gateways.contains(&id))
                .cloned()
                .collect();
            for c in attached {
                changes.upserts.extend(c.resources.iter().cloned());
                self.reference_secrets(&id, &BTreeSet::new(), &c.secrets, &mut changes);
            }
        }
        changes.upserts.extend(listeners);
        self.views.apply(&id, changes);
    }

    fn route_changed(&mut self, key: &ObjectKey) {
        let old = self.routes.get(key).cloned().unwrap_or_default();
        let new = match self.objects.get(key).cloned() {
            Some(Object::GomaRoute(route)) => {
                let named: BTreeSet<String> = route
                    .spec
                    .gateways
                    .iter()
                    .map(|g| gateway_id(&key.namespace, g))
                    .collect();
                self.index_route(key, &named);
                let record = |verdict| Record {
                    generation: route.metadata.generation,
                    verdict,
                    gateways: named.iter().cloned().collect(),
                    middlewares: route.spec.middlewares.clone(),
                };
                match translate_route(&route, &self.objects) {
                    Ok(Some(t)) => {
                        for w in &t.warnings {
                            tracing::warn!(object = %key, "{w}");
                        }
                        let mut resources: Vec<Arc<Encoded>> = t
                            .clusters
                            .iter()
                            .map(|c| Encoded::new(type_url::CLUSTER, c.name.clone(), c))
                            .collect();
                        resources.push(Encoded::new(
                            type_url::ROUTE,
                            t.route.name.clone(),
                            &t.route,
                        ));
                        // The route's certificate, its clusters' TLS Secrets and those its
                        // middlewares read travel with it.
                        let secrets =
                            std::iter::once(&t.route.certificate_secret)
                                .chain(t.clusters.iter().filter_map(|c| c.tls.as_ref()).flat_map(
                                    |tls| [&tls.ca_secret, &tls.client_certificate_secret],
                                ))
                                .chain(&t.middleware_secrets)
                                .filter(|s| !s.is_empty())
                                .cloned()
                                .collect();
                        self.board
                            .insert(key.clone(), record(Verdict::Served(refs(&resources))));
                        Contribution {
                            gateways: named,
                            resources,
                            secrets,
                        }
                    }
                    Ok(None) => {
                        self.board.insert(key.clone(), record(Verdict::Disabled));
                        Contribution::default()
                    }
                    Err(e) if e.fails_closed() => {
                        tracing::error!(object = %key, error = %e, "route withdrawn: it asks for protection this gateway cannot enforce");
                        self.board
                            .insert(key.clone(), record(Verdict::Withdrawn(field_errors(&e))));
                        Contribution::default()
                    }
                    Err(e) => {
                        tracing::error!(object = %key, error = %e, kept_last_good = !old.resources.is_empty(), "invalid route");
                        let verdict = Verdict::Invalid {
                            message: field_errors(&e),
                            last_good: refs(&old.resources),
                        };
                        self.board.insert(key.clone(), record(verdict));
                        return;
                    }
                }
            }
            _ => {
                self.board.remove(key);
                self.index_route(key, &BTreeSet::new());
                Contribution::default()
            }
        };
        for gw in old.gateways.union(&new.gateways) {
            if !self.gateways.contains_key(gw) {
                continue;
            }
            let mut changes = ViewChanges::default();
            let keep: &[Arc<Encoded>] = if new.gateways.contains(gw) {
                &new.resources
            } else {
                &[]
            };
            if old.gateways.contains(gw) {
                for r in &old.resources {
                    if !keep
                        .iter()
                        .any(|n| n.type_url == r.type_url && n.name == r.name)
                    {
                        changes
                            .removals
                            .push((type_index(r.type_url).unwrap_or(0), r.name.clone()));
                    }
                }
            }
            changes.upserts.extend(keep.iter().cloned());
            let empty = BTreeSet::new();
            let before = if old.gateways.contains(gw) {
                &old.secrets
            } else {
                &empty
            };
            let after = if new.gateways.contains(gw) {
                &new.secrets
            } else {
                &empty
            };
            self.reference_secrets(gw, before, after, &mut changes);
            self.views.apply(gw, changes);
        }
        if new.resources.is_empty() && new.gateways.is_empty() {
            self.routes.remove(key);
        } else {
            self.routes.insert(key.clone(), new);
        }
    }

    /// A Secret object changed: re-translate it and update the gateways that reference it. An
    /// invalid new version keeps the last good one serving (a bad rotation breaks nothing).
    fn secret_changed(&mut self, key: &ObjectKey) {
        let name = crate::translate::goma::secret_resource_name(&key.namespace, &key.name);
        let current = match self.objects.get(key) {
            Some(Object::Other { body, .. }) => match translate_secret(key, body) {
                Ok(s) => Some(Encoded::new(type_url::SECRET, name.clone(), &s)),
                Err(e) => {
                    tracing::error!(object = %key, error = %e, kept_last_good = self.secrets.contains_key(&name), "invalid secret");
                    return;
                }
            },
            _ => None,
        };
        match &current {
            Some(s) => self.secrets.insert(name.clone(), s.clone()),
            None => self.secrets.remove(&name),
        };
        let users: Vec<String> = self
            .secret_refs
            .iter()
            .filter(|(_, refs)| refs.contains_key(&name))
            .map(|(gw, _)| gw.clone())
            .collect();
        for gw in users {
            let changes = match &current {
                Some(s) => ViewChanges {
                    upserts: vec![s.clone()],
                    removals: vec![],
                },
                None => ViewChanges {
                    upserts: vec![],
                    removals: vec![(SECRET, name.clone())],
                },
            };
            self.views.apply(&gw, changes);
        }
    }

    /// Moves `gw`'s references from `before` to `after`, queueing each Secret that becomes used
    /// (if it exists) or unused. Only gateways that reference a Secret ever receive it.
    fn reference_secrets(
        &mut self,
        gw: &str,
        before: &BTreeSet<String>,
        after: &BTreeSet<String>,
        changes: &mut ViewChanges,
    ) {
        let refs = self.secret_refs.entry(gw.to_string()).or_default();
        for s in after {
            let n = refs.entry(s.clone()).or_insert(0);
            *n += 1;
            if *n == 1
                && let Some(r) = self.secrets.get(s)
            {
                changes.upserts.push(r.clone());
            }
        }
        for s in before {
            if let Some(n) = refs.get_mut(s) {
                *n -= 1;
                if *n == 0 {
                    refs.remove(s);
                    changes.removals.push((SECRET, s.clone()));
                }
            }
        }
    }

    /// The Goma Routes (of the middleware's namespace) that list `middleware`.
    fn routes_naming(&self, middleware: &ObjectKey) -> Vec<ObjectKey> {
        let start = ObjectKey::new(Kind::GomaRoute, &middleware.namespace, "");
        self.objects
            .range(start..)
            .take_while(|(k, _)| k.kind == Kind::GomaRoute && k.namespace == middleware.namespace)
            .filter(|(_, o)| {
                matches!(o, Object::GomaRoute(r) if r.spec.middlewares.contains(&middleware.name))
            })
            .map(|(k, _)| k.clone())
            .collect()
    }

    fn index_route(&mut self, key: &ObjectKey, named: &BTreeSet<String>) {
        self.routes_by_gateway.retain(|gw, set| {
            if !named.contains(gw) {
                set.remove(key);
            }
            !set.is_empty()
        });
        for gw in named {
            self.routes_by_gateway
                .entry(gw.clone())
                .or_default()
                .insert(key.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::file::parse_manifests;
    use crate::status::gateway_api::ApiStatus;
    use std::path::Path;

    pub(super) fn apply(c: &mut Controller, yaml: &str) {
        let (objects, diags) = parse_manifests(Path::new("test.yaml"), yaml);
        assert!(diags.is_empty(), "{diags:?}");
        c.apply(objects.into_iter().map(ProviderEvent::Apply).collect());
    }

    fn delete(c: &mut Controller, kind: Kind, name: &str) {
        c.apply(vec![ProviderEvent::Delete(ObjectKey::new(
            kind, "default", name,
        ))]);
    }

    /// Secret name -> version in a gateway's view.
    fn secrets(views: &Views, gw: &str) -> BTreeMap<String, String> {
        views.gateway(gw).read(|v| {
            v.resources[SECRET]
                .iter()
                .map(|(n, r)| (n.clone(), r.version.clone()))
                .collect()
        })
    }

    fn secret(name: &str, cert: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}}}\ntype: kubernetes.io/tls\nstringData: {{tls.crt: {cert}, tls.key: key}}\n---\n"
        )
    }

    const GATEWAYS: &str = "apiVersion: gateway.jkaninda.dev/v1alpha1\nkind: Gateway\nmetadata: {name: tls}\nspec:\n  server: {tls: [{secretName: site}]}\n---\napiVersion: gateway.jkaninda.dev/v1alpha1\nkind: Gateway\nmetadata: {name: plain}\nspec: {}\n---\n";

    fn route(gateway: &str) -> String {
        format!(
            "apiVersion: gateway.jkaninda.dev/v1alpha1\nkind: Route\nmetadata: {{name: r}}\nspec:\n  gateways: [{gateway}]\n  path: /\n  hosts: [a.test]\n  target: http://127.0.0.1:1\n  tls: {{secretName: own}}\n"
        )
    }

    #[test]
    fn secrets_reach_only_the_gateways_that_reference_them() {
        let views = Arc::new(Views::default());
        let mut c = Controller::new(views.clone());
        let all = format!(
            "{GATEWAYS}{}{}{}{}",
            secret("site", "v1"),
            secret("own", "o1"),
            secret("unused", "u1"),
            route("plain")
        );
        apply(&mut c, &all);
        let tls = secrets(&views, "default/tls");
        assert_eq!(tls.keys().collect::<Vec<_>>(), ["default/site"]);
        assert_eq!(
            secrets(&views, "default/plain").keys().collect::<Vec<_>>(),
            ["default/own"]
        );

        // Rotation reaches the gateway that uses the Secret, and only it.
        let plain_rev = views.gateway("default/plain").read(|v| v.revision);
        apply(&mut c, &secret("site", "v2"));
        assert_ne!(
            secrets(&views, "default/tls")["default/site"],
            tls["default/site"]
        );
        assert_eq!(
            views.gateway("default/plain").read(|v| v.revision),
            plain_rev
        );

        // An invalid rotation keeps the last good version.
        let good = secrets(&views, "default/tls");
        apply(
            &mut c,
            "apiVersion: v1\nkind: Secret\nmetadata: {name: site}\ntype: kubernetes.io/tls\nstringData: {tls.crt: only}\n",
        );
        assert_eq!(secrets(&views, "default/tls"), good);

        // The route moves: its certificate moves with it.
        apply(&mut c, &route("tls"));
        assert_eq!(
            secrets(&views, "default/tls").keys().collect::<Vec<_>>(),
            ["default/own", "default/site"]
        );
        assert!(secrets(&views, "default/plain").is_empty());

        // The Secret is deleted: gone from the gateway; created again: back.
        delete(&mut c, Kind::Secret, "own");
        assert_eq!(
            secrets(&views, "default/tls").keys().collect::<Vec<_>>(),
            ["default/site"]
        );
        apply(&mut c, &secret("own", "o2"));
        assert!(secrets(&views, "default/tls").contains_key("default/own"));

        // The gateway stops using TLS: its listener certificate leaves, the route's stays.
        apply(
            &mut c,
            "apiVersion: gateway.jkaninda.dev/v1alpha1\nkind: Gateway\nmetadata: {name: tls}\nspec: {}\n",
        );
        assert_eq!(
            secrets(&views, "default/tls").keys().collect::<Vec<_>>(),
            ["default/own"]
        );
        let listeners = views
            .gateway("default/tls")
            .read(|v| v.resources[2].keys().cloned().collect::<Vec<_>>());
        assert_eq!(listeners, ["http"]);
    }

    fn upstream_tls_route(security: &str) -> String {
        format!(
            "apiVersion: gateway.jkaninda.dev/v1alpha1\nkind: Route\nmetadata: {{name: up}}\nspec:\n  gateways: [plain]\n  path: /\n  target: https://backend.test\n{security}"
        )
    }

    #[test]
    fn upstream_tls_secrets_follow_the_route() {
        let views = Arc::new(Views::default());
        let mut c = Controller::new(views.clone());
        let all = format!(
            "{GATEWAYS}{}apiVersion: v1\nkind: Secret\nmetadata: {{name: ca}}\nstringData: {{ca.crt: pem}}\n---\n{}",
            secret("client", "c1"),
            upstream_tls_route(
                "  security: {tls: {rootCAsSecret: ca, clientCertSecret: client}}\n"
            )
        );
        apply(&mut c, &all);
        assert_eq!(
            secrets(&views, "default/plain").keys().collect::<Vec<_>>(),
            ["default/ca", "default/client"]
        );
        assert!(!secrets(&views, "default/tls").contains_key("default/ca"));

        // Rotating the CA reaches the gateway.
        let before = secrets(&views, "default/plain");
        apply(
            &mut c,
            "apiVersion: v1\nkind: Secret\nmetadata: {name: ca}\nstringData: {ca.crt: other}\n",
        );
        assert_ne!(
            secrets(&views, "default/plain")["default/ca"],
            before["default/ca"]
        );

        // Only the CA stays referenced; then nothing is.
        apply(
            &mut c,
            &upstream_tls_route("  security: {tls: {rootCAsSecret: ca}}\n"),
        );
        assert_eq!(
            secrets(&views, "default/plain").keys().collect::<Vec<_>>(),
            ["default/ca"]
        );
        apply(&mut c, &upstream_tls_route(""));
        assert!(secrets(&views, "default/plain").is_empty());
    }

    pub(super) const API_CLASS: &str = "apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {name: sluice}\nspec: {controllerName: sluice.dev/gateway-controller}\n---\n";

    pub(super) fn api_gateway(name: &str, ns: &str) -> String {
        format!(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n  gatewayClassName: sluice\n  listeners: [{{name: http, port: 80, protocol: HTTP, allowedRoutes: {{namespaces: {{from: All}}}}}}]\n---\n"
        )
    }

    pub(super) fn service(name: &str, ns: &str, ip: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: {ns}}}\nspec: {{ports: [{{port: 80}}]}}\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: {name}-1, namespace: {ns}, labels: {{kubernetes.io/service-name: {name}}}}}\naddressType: IPv4\nports: [{{port: 8080}}]\nendpoints: [{{addresses: [{ip}]}}]\n---\n"
        )
    }

    pub(super) fn http_route(name: &str, ns: &str, gateway: &str, backend: &str) -> String {
        format!(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n  parentRefs: [{{name: {gateway}, namespace: default}}]\n  rules: [{{backendRefs: [{backend}]}}]\n---\n"
        )
    }

    pub(super) fn names(views: &Views, gw: &str, type_index: usize) -> Vec<String> {
        views
            .gateway(gw)
            .read(|v| v.resources[type_index].keys().cloned().collect())
    }

    /// The clusters a route forwards to, or `["500"]` when it answers 500 itself.
    pub(super) fn route_backends(views: &Views, gw: &str, name: &str) -> Vec<String> {
        use prost::Message;
        let bytes = views
            .gateway(gw)
            .read(|v| v.resources[3][name].bytes.clone());
        let route = sluice_proto::config::Route::decode(bytes.as_slice()).expect("route");
        match route.action {
            Some(sluice_proto::config::route::Action::Forward(f)) => {
                f.backends.into_iter().map(|b| b.cluster).collect()
            }
            Some(sluice_proto::config::route::Action::DirectResponse(d)) => {
                vec![d.status.to_string()]
            }
            other => panic!("forward expected: {other:?}"),
        }
    }

    #[test]
    fn an_endpoint_change_reaches_only_the_gateway_using_the_service() {
        let views = Arc::new(Views::default());
        let board = GatewayApiBoard::default();
        let mut c = Controller::with_boards(views.clone(), StatusBoard::default(), board.clone());
        apply(
            &mut c,
            &format!(
                "{API_CLASS}{}{}{}{}{}{}",
                api_gateway("a", "default"),
                api_gateway("b", "default"),
                service("one", "default", "10.0.0.1"),
                service("two", "default", "10.0.0.2"),
                http_route("ra", "default", "a", "{name: one, port: 80}"),
                http_route("rb", "default", "b", "{name: two, port: 80}"),
            ),
        );
        assert_eq!(names(&views, "default/a", 2), ["http"]);
        assert_eq!(names(&views, "default/a", 1), ["service/default/one/80"]);
        assert_eq!(names(&views, "default/a", 3), ["httproute/default/ra/0000"]);
        assert_eq!(names(&views, "default/b", 1), ["service/default/two/80"]);
        let (rev_a, rev_b) = (
            views.gateway("default/a").read(|v| v.revision),
            views.gateway("default/b").read(|v| v.revision),
        );
        c.api_translated.clear();
        apply(&mut c, &service("one", "default", "10.0.0.9"));
        // Only the gateway whose route uses the Service was translated again.
        assert_eq!(
            c.api_translated,
            [ObjectKey::new(Kind::Gateway, "default", "a")]
        );
        assert!(views.gateway("default/a").read(|v| v.revision) > rev_a);
        assert_eq!(views.gateway("default/b").read(|v| v.revision), rev_b);
        // Status: the class, both gateways and both routes.
        let keys: Vec<String> = board.snapshot().keys().map(ToString::to_string).collect();
        assert_eq!(
            keys,
            [
                "GatewayClass sluice",
                "Gateway.gateway.networking.k8s.io default/a",
                "Gateway.gateway.networking.k8s.io default/b",
                "HTTPRoute default/ra",
                "HTTPRoute default/rb",
            ]
        );
        // The route moves to gateway b: it leaves a, and both routes are on b.
        apply(
            &mut c,
            &http_route("ra", "default", "b", "{name: one, port: 80}"),
        );
        assert!(names(&views, "default/a", 3).is_empty());
        assert!(names(&views, "default/a", 1).is_empty());
        assert_eq!(
            names(&views, "default/b", 3),
            ["httproute/default/ra/0000", "httproute/default/rb/0000"]
        );
        // Deleting the gateway empties its view and its status.
        c.apply(vec![ProviderEvent::Delete(ObjectKey::new(
            Kind::Gateway,
            "default",
            "b",
        ))]);
        assert!(
            !c.api_gateways
                .contains_key(&ObjectKey::new(Kind::Gateway, "default", "b"))
        );
        assert!(
            names(&views, "default/b", 2).is_empty() && names(&views, "default/b", 3).is_empty()
        );
        assert!(
            board
                .get(&ObjectKey::new(Kind::Gateway, "default", "b"))
                .is_none()
        );
        assert!(
            board
                .get(&ObjectKey::new(Kind::HttpRoute, "default", "rb"))
                .is_none()
        );
    }

    #[test]
    fn a_route_on_two_gateways_reports_both_parents() {
        let views = Arc::new(Views::default());
        let board = GatewayApiBoard::default();
        let mut c = Controller::with_boards(views.clone(), StatusBoard::default(), board.clone());
        let route = "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: r, generation: 7}\nspec:\n  parentRefs: [{name: a}, {name: b}]\n  rules: [{backendRefs: [{name: one, port: 80}]}]\n---\n";
        apply(
            &mut c,
            &format!(
                "{API_CLASS}{}{}{}{route}",
                api_gateway("a", "default"),
                api_gateway("b", "default"),
                service("one", "default", "10.0.0.1"),
            ),
        );
        let parents = |board: &GatewayApiBoard| match board.get(&ObjectKey::new(
            Kind::HttpRoute,
            "default",
            "r",
        )) {
            Some(ApiStatus::Route {
                generation,
                parents,
            }) => {
                assert_eq!(generation, Some(7));
                parents
                    .into_iter()
                    .map(|p| p.parent_ref.name)
                    .collect::<Vec<_>>()
            }
            other => panic!("route status expected: {other:?}"),
        };
        assert_eq!(parents(&board), ["a", "b"]);
        c.apply(vec![ProviderEvent::Delete(ObjectKey::new(
            Kind::Gateway,
            "default",
            "a",
        ))]);
        assert_eq!(parents(&board), ["b"]);
        // Translating one gateway leaves the other's report in place.
        apply(&mut c, &service("one", "default", "10.0.0.2"));
        assert_eq!(parents(&board), ["b"]);
    }

    #[test]
    fn revoking_a_reference_grant_withdraws_the_backend() {
        let views = Arc::new(Views::default());
        let mut c = Controller::new(views.clone());
        let grant = "apiVersion: gateway.networking.k8s.io/v1beta1\nkind: ReferenceGrant\nmetadata: {name: g, namespace: apps}\nspec:\n  from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: default}]\n  to: [{group: '', kind: Service}]\n---\n";
        apply(
            &mut c,
            &format!(
                "{API_CLASS}{}{}{}{grant}",
                api_gateway("gw", "default"),
                service("echo", "apps", "10.0.0.1"),
                http_route(
                    "r",
                    "default",
                    "gw",
                    "{name: echo, namespace: apps, port: 80}"
                ),
            ),
        );
        assert_eq!(
            route_backends(&views, "default/gw", "httproute/default/r/0000"),
            ["service/apps/echo/80"]
        );
        c.apply(vec![ProviderEvent::Delete(ObjectKey::new(
            Kind::ReferenceGrant,
            "apps",
            "g",
        ))]);
        // Requests are answered 500 and the cluster leaves the view.
        assert_eq!(
            route_backends(&views, "default/gw", "httproute/default/r/0000"),
            ["500"]
        );
        assert!(names(&views, "default/gw", 1).is_empty());
        apply(&mut c, grant);
        assert_eq!(
            route_backends(&views, "default/gw", "httproute/default/r/0000"),
            ["service/apps/echo/80"]
        );
    }

    #[test]
    fn a_goma_gateway_takes_the_id_and_gives_it_back() {
        let views = Arc::new(Views::default());
        let board = GatewayApiBoard::default();
        let mut c = Controller::with_boards(views.clone(), StatusBoard::default(), board.clone());
        apply(
            &mut c,
            &format!(
                "{API_CLASS}{}{}{}",
                api_gateway("gw", "default"),
                service("echo", "default", "10.0.0.1"),
                http_route("r", "default", "gw", "{name: echo, port: 80}"),
            ),
        );
        assert_eq!(names(&views, "default/gw", 3), ["httproute/default/r/0000"]);
        apply(
            &mut c,
            "apiVersion: gateway.jkaninda.dev/v1alpha1\nkind: Gateway\nmetadata: {name: gw}\nspec: {}\n",
        );
        // Only Goma's listener is left; the Gateway API gateway says why it is not served.
        assert_eq!(names(&views, "default/gw", 2), ["http"]);
        assert!(
            names(&views, "default/gw", 3).is_empty() && names(&views, "default/gw", 1).is_empty()
        );
        let Some(ApiStatus::Gateway { conditions, .. }) =
            board.get(&ObjectKey::new(Kind::Gateway, "default", "gw"))
        else {
            panic!("gateway status")
        };
        assert!(conditions.iter().any(|c| c.type_ == "Programmed"
            && !c.status
            && c.message.contains("Goma Gateway default/gw")));
        delete(&mut c, Kind::GomaGateway, "gw");
        assert_eq!(names(&views, "default/gw", 3), ["httproute/default/r/0000"]);
        assert_eq!(names(&views, "default/gw", 1), ["service/default/echo/80"]);
    }

    #[test]
    fn listener_certificates_reach_only_their_gateway() {
        let views = Arc::new(Views::default());
        let mut c = Controller::new(views.clone());
        let https = "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: tls}\nspec:\n  gatewayClassName: sluice\n  listeners: [{name: https, port: 443, protocol: HTTPS, tls: {certificateRefs: [{name: site}]}}]\n---\n";
        apply(
            &mut c,
            &format!(
                "{API_CLASS}{https}{}{}",
                api_gateway("plain", "default"),
                secret("site", "v1")
            ),
        );
        assert_eq!(
            secrets(&views, "default/tls").keys().collect::<Vec<_>>(),
            ["default/site"]
        );
        assert!(secrets(&views, "default/plain").is_empty());
        // Rotation reaches it.
        let before = secrets(&views, "default/tls");
        apply(&mut c, &secret("site", "v2"));
        assert_ne!(secrets(&views, "default/tls"), before);
        // The class stops being ours: the gateway is no longer served at all.
        apply(
            &mut c,
            "apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {name: sluice}\nspec: {controllerName: example.com/other}\n",
        );
        assert!(secrets(&views, "default/tls").is_empty());
        assert!(names(&views, "default/tls", 2).is_empty());
    }
}
