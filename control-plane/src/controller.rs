//! Turns provider events into view changes, incrementally: only the objects that changed are
//! re-translated, and only the gateways they touch (before or after the change) are updated.

use crate::model::{Kind, Object, ObjectKey};
use crate::provider::ProviderEvent;
use crate::resource::{Encoded, type_index};
use crate::translate::goma::{translate_gateway, translate_route};
use crate::views::{ViewChanges, Views};
use sluice_proto::type_url;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use tokio::sync::mpsc;

/// What one translated object contributes to the views.
#[derive(Default, Clone)]
struct Contribution {
    /// Gateways ("ns/name") the object attaches to.
    gateways: BTreeSet<String>,
    resources: Vec<Arc<Encoded>>,
}

pub struct Controller {
    views: Arc<Views>,
    objects: BTreeMap<ObjectKey, Object>,
    /// Listeners of each gateway with a valid translation; a gateway exists for routing only here.
    gateways: HashMap<String, Vec<Arc<Encoded>>>,
    /// Last good translation of each route.
    routes: HashMap<ObjectKey, Contribution>,
    /// Routes naming each gateway in their spec, whether or not the gateway exists yet.
    routes_by_gateway: HashMap<String, BTreeSet<ObjectKey>>,
    synced: bool,
}

fn gateway_id(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}

impl Controller {
    pub fn new(views: Arc<Views>) -> Self {
        Self {
            views,
            objects: BTreeMap::new(),
            gateways: HashMap::new(),
            routes: HashMap::new(),
            routes_by_gateway: HashMap::new(),
            synced: false,
        }
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
        for event in events {
            match event {
                ProviderEvent::Apply(object) => {
                    let key = object.key();
                    if self.objects.get(&key) != Some(&object) {
                        self.objects.insert(key.clone(), object);
                        dirty.insert(key);
                    }
                }
                ProviderEvent::Delete(key) => {
                    if self.objects.remove(&key).is_some() {
                        dirty.insert(key);
                    }
                }
                ProviderEvent::Synced => self.synced = true,
            }
        }
        // Gateways first, so routes changed in the same batch attach to gateways that now exist.
        for key in dirty.iter().filter(|k| k.kind == Kind::GomaGateway) {
            self.gateway_changed(key);
        }
        for key in dirty.iter().filter(|k| k.kind == Kind::GomaRoute) {
            self.route_changed(key);
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
                tracing::info!(gateway = %id, "gateway removed");
            }
            return;
        };
        let listeners = match translate_gateway(gw) {
            Ok((listeners, warnings)) => {
                for w in warnings {
                    tracing::warn!(object = %key, "{w}");
                }
                listeners
                    .into_iter()
                    .map(|l| Encoded::new(type_url::LISTENER, l.name.clone(), &l))
                    .collect::<Vec<_>>()
            }
            Err(e) => {
                tracing::error!(object = %key, error = %e, kept_last_good = self.gateways.contains_key(&id), "invalid gateway");
                return;
            }
        };
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
        if !existed {
            // A new gateway picks up every valid route that already names it.
            for rk in self.routes_by_gateway.get(&id).into_iter().flatten() {
                if let Some(c) = self.routes.get(rk)
                    && c.gateways.contains(&id)
                {
                    changes.upserts.extend(c.resources.iter().cloned());
                }
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
                match translate_route(&route) {
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
                        Contribution {
                            gateways: named,
                            resources,
                        }
                    }
                    Ok(None) => Contribution::default(),
                    Err(e) if e.fails_closed() => {
                        tracing::error!(object = %key, error = %e, "route withdrawn: it asks for protection this gateway cannot enforce");
                        Contribution::default()
                    }
                    Err(e) => {
                        tracing::error!(object = %key, error = %e, kept_last_good = !old.resources.is_empty(), "invalid route");
                        return;
                    }
                }
            }
            _ => {
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
            self.views.apply(gw, changes);
        }
        if new.resources.is_empty() && new.gateways.is_empty() {
            self.routes.remove(key);
        } else {
            self.routes.insert(key.clone(), new);
        }
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
